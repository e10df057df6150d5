/* os_linux.c: the fault engine's OS layer on Linux. The arena is a memfd; a guest page is a
 * MAP_SHARED|MAP_FIXED view of one of its frames; a hole is anonymous PROT_NONE memory; protection is
 * mprotect; frames go back to the OS by fallocate(PUNCH_HOLE); the handler is a SIGSEGV sigaction
 * installed after the runtime's, which it chains to (SIGBUS likewise, mce.c). Callers hold the region lock where one applies. */
#ifndef _WIN32
#include "pagelab.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

struct sigaction pl_previous;

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
    void *got = mmap(at, count * page_size, prot, MAP_SHARED | MAP_FIXED, (int)r->arena->os, (off_t)frame * (off_t)page_size);
    return got == MAP_FAILED ? -errno : 0;
}

int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count)
{
    void *at = r->base + page * page_size;
    void *got = mmap(at, count * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return got == MAP_FAILED ? -errno : 0;
}

int protect_pages(struct pl_region *r, uint64_t page, uint64_t count, int prot)
{
    return mprotect(r->base + page * page_size, count * page_size, prot) == 0 ? 0 : -errno;
}

void *os_tables_alloc(size_t bytes)
{
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return mem == MAP_FAILED ? NULL : mem;
}

void os_tables_free(void *mem, size_t bytes) { munmap(mem, bytes); }

int os_reserve(struct pl_region *r)
{
    void *base = mmap(NULL, r->pages * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return -errno;
    r->base = base;
    return 0;
}

void os_release(struct pl_region *r) { munmap(r->base, r->pages * page_size); }

/* One anonymous PROT_NONE reservation over the whole range (the views go; the address stays ours). */
int os_quarantine(struct pl_region *r) { return map_anonymous(r, 0, r->pages); }

/* pread / pwrite are async-signal-safe: the handler uses them for disk copies and host swap. */
int os_read_file(intptr_t file, uint8_t *dst, size_t bytes, int64_t offset)
{
    size_t done = 0;
    while (done < bytes) {
        ssize_t n = pread((int)file, dst + done, bytes - done, (off_t)offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 ? -EIO : -errno;
        done += (size_t)n;
    }
    return 0;
}

int os_write_file(intptr_t file, const uint8_t *src, size_t bytes, int64_t offset)
{
    size_t done = 0;
    while (done < bytes) {
        ssize_t n = pwrite((int)file, src + done, bytes - done, (off_t)offset + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 ? -EIO : -errno;
        done += (size_t)n;
    }
    return 0;
}

/* The frames read as zero afterwards and cost no memory (MADV_DONTNEED does not free shared pages). */
int os_discard(struct pl_arena *a, uint32_t frame, uint32_t count)
{
    int rc = fallocate((int)a->os, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)frame * (off_t)page_size,
                       (off_t)count * (off_t)page_size);
    return rc == 0 ? 0 : -errno;
}

void pl_on_segv(int sig, siginfo_t *info, void *ctx);

int os_install(void)
{
    struct sigaction sa;
    if (sigaction(SIGSEGV, NULL, &pl_previous) != 0) return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = pl_on_segv;
    sa.sa_mask = pl_previous.sa_mask; /* same blocking discipline as the runtime's handler */
    sa.sa_flags = (pl_previous.sa_flags & ~(int)SA_RESETHAND) | SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    if (sigaction(SIGSEGV, &sa, NULL) != 0) return -errno;
    return mce_install(); /* SIGBUS: memory errors the kernel delivers (mce.c) */
}

int64_t os_previous_flags(void) { return (int64_t)pl_previous.sa_flags; }
#endif
