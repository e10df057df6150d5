/* os_linux.c: the fault engine's OS layer on Linux, the ground floor: every OS call the engine makes is
 * made here, after asking the failure injector (osfail.c). The arena is a memfd; a guest page is a
 * MAP_SHARED|MAP_FIXED view of one of its frames; a hole is anonymous PROT_NONE memory; protection is
 * mprotect; frames go back to the OS by fallocate(PUNCH_HOLE); the handler is a SIGSEGV sigaction
 * installed after the runtime's, which it chains to (SIGBUS likewise, mce.c, installed by pl_install).
 * Callers hold the region lock where one applies. Calls nothing above it. */
#ifndef _WIN32
#include "pagelab.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

struct sigaction pl_previous;
size_t page_size; /* the OS's, set once by pl_install / pl_arena_create (os_page_size) */
_Atomic uint64_t os_failures;

/* -e, counted: every failed call passes through here. */
static int failed_with(int e)
{
    atomic_fetch_add_explicit(&os_failures, 1, memory_order_relaxed);
    return -e;
}

/* ---- the system calls, each behind the injector (errno set as the call would) ---- */

static void *sys_mmap(void *at, size_t bytes, int prot, int flags, int fd, off_t off)
{
    int e = osfail_hit(PL_OS_MAP);
    if (e) { errno = e; return MAP_FAILED; }
    return mmap(at, bytes, prot, flags, fd, off);
}

static int sys_munmap(void *at, size_t bytes)
{
    int e = osfail_hit(PL_OS_UNMAP);
    if (e) { errno = e; return -1; }
    return munmap(at, bytes);
}

size_t os_page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }
void os_yield(void) { sched_yield(); }
int os_last_error(void) { return -errno; }

void os_write_stderr(const char *buf, size_t n)
{
    ssize_t ignored = write(STDERR_FILENO, buf, n);
    (void)ignored; /* nothing more can be done about a failed diagnostic */
}

int map_frames(struct pl_region *r, uint64_t page, uint64_t count, uint32_t frame, int prot)
{
    void *at = r->base + page * page_size;
    void *got = sys_mmap(at, count * page_size, prot, MAP_SHARED | MAP_FIXED, (int)r->arena->os, (off_t)frame * (off_t)page_size);
    return got == MAP_FAILED ? failed_with(errno) : 0;
}

int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count)
{
    void *at = r->base + page * page_size;
    void *got = sys_mmap(at, count * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return got == MAP_FAILED ? failed_with(errno) : 0;
}

int os_protect(void *at, size_t bytes, int prot)
{
    int e = osfail_hit(PL_OS_PROTECT);
    if (e) return failed_with(e);
    return mprotect(at, bytes, prot) == 0 ? 0 : failed_with(errno);
}

int protect_pages(struct pl_region *r, uint64_t page, uint64_t count, int prot)
{
    return os_protect(r->base + page * page_size, count * page_size, prot);
}

int os_advise(void *at, size_t bytes, int advice)
{
    int e = osfail_hit(PL_OS_ADVISE);
    if (e) return failed_with(e);
    return madvise(at, bytes, advice) == 0 ? 0 : failed_with(errno);
}

void *os_tables_alloc(size_t bytes)
{
    void *mem = sys_mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) (void)failed_with(errno); /* errno stays for os_last_error */
    return mem == MAP_FAILED ? NULL : mem;
}

/* A failure only keeps the memory (the tables are never touched again). */
void os_tables_free(void *mem, size_t bytes)
{
    if (sys_munmap(mem, bytes) != 0) (void)failed_with(errno);
}

int os_reserve(struct pl_region *r)
{
    void *base = sys_mmap(NULL, r->pages * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return failed_with(errno);
    r->base = base;
    return 0;
}

/* The region's range goes back to the OS. Its frames are about to be freed for other VMs, so no view of
 * one may outlive this call: if munmap fails, the range is covered by one anonymous PROT_NONE mapping
 * instead (which replaces every view and needs no new VMA; the address space stays reserved, a leak, said
 * so), and both are tried a few times, since a failure here is a shortage that passes. */
void os_release(struct pl_region *r)
{
    static const char leak[] = "pagelab: could not unmap a destroyed region's range; it stays reserved, inaccessible\n";
    static const char lost[] = "pagelab: could not unmap a destroyed region's range nor cover it; its views remain\n";
    for (int tries = 0; tries < 64; tries++) {
        if (sys_munmap(r->base, r->pages * page_size) == 0) return;
        (void)failed_with(errno);
        if (map_anonymous(r, 0, r->pages) == 0) {
            os_write_stderr(leak, sizeof leak - 1);
            return;
        }
    }
    os_write_stderr(lost, sizeof lost - 1);
}

/* One anonymous PROT_NONE reservation over the whole range (the views go; the address stays ours). */
int os_quarantine(struct pl_region *r) { return map_anonymous(r, 0, r->pages); }

/* pread / pwrite are async-signal-safe: the handler uses them for disk copies and host swap. A short
 * transfer (the kernel may return fewer bytes; the injector makes it do so) asks again for the rest. */
int os_read_file(intptr_t file, uint8_t *dst, size_t bytes, int64_t offset)
{
    size_t done = 0;
    while (done < bytes) {
        int e = osfail_hit(PL_OS_READ);
        if (e) return failed_with(e);
        size_t want = osfail_short(PL_OS_READ, bytes - done);
        ssize_t n = pread((int)file, dst + done, want, (off_t)offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return failed_with(n == 0 ? EIO : errno);
        done += (size_t)n;
    }
    return 0;
}

int os_write_file(intptr_t file, const uint8_t *src, size_t bytes, int64_t offset)
{
    size_t done = 0;
    while (done < bytes) {
        int e = osfail_hit(PL_OS_WRITE);
        if (e) return failed_with(e);
        size_t want = osfail_short(PL_OS_WRITE, bytes - done);
        ssize_t n = pwrite((int)file, src + done, want, (off_t)offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return failed_with(n == 0 ? EIO : errno);
        done += (size_t)n;
    }
    return 0;
}

/* The frames read as zero afterwards and cost no memory (MADV_DONTNEED does not free shared pages). */
int os_discard(struct pl_arena *a, uint32_t frame, uint32_t count)
{
    int e = osfail_hit(PL_OS_DISCARD);
    if (e) return failed_with(e);
    int rc = fallocate((int)a->os, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)frame * (off_t)page_size,
                       (off_t)count * (off_t)page_size);
    return rc == 0 ? 0 : failed_with(errno);
}

/* ---- the userfaultfd and kernel reads (mce.c) ---- */

int os_uffd_open(int *how)
{
    int e = osfail_hit(PL_OS_UFFD);
    *how = 0;
    if (e) return failed_with(e);
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd >= 0) return fd;
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    *how = 1;
    if (fd >= 0) return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    *how = 2;
    if (dev < 0) return failed_with(errno);
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    e = errno;
    close(dev);
    return fd >= 0 ? fd : failed_with(e);
}

int os_uffd_ioctl(int fd, unsigned long request, void *arg)
{
    int e = osfail_hit(PL_OS_UFFD);
    if (e) return failed_with(e);
    return ioctl(fd, request, arg) == 0 ? 0 : failed_with(errno);
}

void os_close(int fd) { (void)close(fd); }

/* A kernel read of one byte of the process's own memory: fails with EFAULT instead of raising SIGBUS on
 * a poison marker or a hardware-poisoned page. */
int os_peek(const void *addr)
{
    int e = osfail_hit(PL_OS_PEEK);
    if (e) return failed_with(e);
    uint8_t byte;
    struct iovec local = {&byte, 1}, remote = {(void *)addr, 1};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    return n == 1 ? 0 : failed_with(n < 0 ? errno : EFAULT);
}

int os_sysctl_digit(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[16] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? buf[0] - '0' : -1;
}

int os_has_cap_sys_admin(void)
{
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return geteuid() == 0;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return geteuid() == 0;
    buf[n] = 0;
    const char *p = strstr(buf, "CapEff:");
    if (!p) return geteuid() == 0;
    unsigned long long caps = strtoull(p + 7, NULL, 16);
    return (caps >> 21) & 1; /* CAP_SYS_ADMIN */
}

int os_exists(const char *path) { return access(path, F_OK) == 0; }

/* Installs `fn` for sig after the runtime's handler, which goes to *previous (ours chains to it): the
 * same mask and flags as the runtime's, plus SA_SIGINFO and SA_RESTART, and SA_ONSTACK when asked. */
int os_sigaction(int sig, void (*fn)(int, siginfo_t *, void *), struct sigaction *previous, int onstack)
{
    struct sigaction sa;
    if (sigaction(sig, NULL, previous) != 0) return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_mask = previous->sa_mask; /* same blocking discipline as the runtime's handler */
    sa.sa_flags = (previous->sa_flags & ~(int)SA_RESETHAND) | SA_SIGINFO | SA_RESTART | (onstack ? SA_ONSTACK : 0);
    return sigaction(sig, &sa, NULL) == 0 ? 0 : -errno;
}

/* The default action for sig from now on, as without us; raised again if a kill sent it. */
void os_signal_default(int sig, int raise_again)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    if (raise_again) raise(sig);
}

/* The SIGSEGV handler `fault` (handler.c's, passed in by pl_install, which then installs mce.c's SIGBUS
 * one): this layer calls nothing above it. */
int os_install(void *fault)
{
    return os_sigaction(SIGSEGV, (void (*)(int, siginfo_t *, void *))fault, &pl_previous, 1);
}

int64_t os_previous_flags(void) { return (int64_t)pl_previous.sa_flags; }
#endif
