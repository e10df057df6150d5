/* sigbus_floor.c: the C floor of the kernel-delivered memory error benchmark. One round:
 *   poison:  a userfaultfd poison marker under the page, with the very calls libpagelab's injector makes
 *            (UFFDIO_REGISTER MISSING, MADV_DONTNEED, UFFDIO_POISON, UFFDIO_UNREGISTER, mprotect to merge
 *            the VMA back);
 *   access:  a read of the page, which raises SIGBUS (BUS_ADRERR here; BUS_MCEERR_AR with
 *            CONFIG_MEMORY_FAILURE); the handler maps the other of two frames over the page (one mmap
 *            MAP_FIXED, which also clears the marker) and returns; the read re-runs and must see the fill.
 * No page tables, lock, probe, parity rebuild, hash or frame retirement: what any SIGBUS-driven recovery
 * must pay at least. The handler is installed after the runtime's SIGBUS handler and chains what is not
 * its page, as libpagelab does, and is uninstalled when the benchmark is done. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
struct floor_uffdio_poison {
    struct uffdio_range range;
    uint64_t mode;
    int64_t updated;
};
#define FLOOR_UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct floor_uffdio_poison)

static volatile uint8_t *guest;
static size_t page;
static int memfd, uffd = -1, current;
static struct sigaction previous;
static int installed;

static void on_sigbus(int sig, siginfo_t *info, void *ctx)
{
    int saved = errno;
    if (info->si_code > 0 && (uintptr_t)info->si_addr - (uintptr_t)guest < page) {
        current ^= 1;
        if (mmap((void *)guest, page, PROT_READ, MAP_SHARED | MAP_FIXED, memfd, (off_t)current * (off_t)page) != MAP_FAILED) {
            errno = saved;
            return;
        }
    }
    errno = saved;
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, ctx);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        if (info->si_code <= 0) raise(sig);
    }
}

/* guest_page: one page of address space; fd: a memfd of at least 2 frames, both filled with `fill`.
 * 0, or -errno (no userfaultfd, or no UFFD_FEATURE_POISON: Linux 6.6+). */
__attribute__((visibility("default"))) int bl_sigbus_init(void *guest_page, int fd)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    guest = guest_page;
    memfd = fd;
    current = 0;
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (uffd < 0) return -errno;
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_POISON | UFFD_FEATURE_MISSING_SHMEM};
    if (ioctl(uffd, UFFDIO_API, &api) != 0) return -errno;
    if (mmap(guest_page, page, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) return -errno;
    if (installed) return 0;
    struct sigaction sa;
    if (sigaction(SIGBUS, NULL, &previous) != 0) return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_mask = previous.sa_mask;
    sa.sa_flags = (previous.sa_flags & ~(int)SA_RESETHAND) | SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    if (sigaction(SIGBUS, &sa, NULL) != 0) return -errno;
    installed = 1;
    return 0;
}

__attribute__((visibility("default"))) int bl_sigbus_uninstall(void)
{
    if (uffd >= 0) close(uffd);
    uffd = -1;
    if (!installed) return 0;
    installed = 0;
    return sigaction(SIGBUS, &previous, NULL) == 0 ? 0 : -errno;
}

/* One poison + SIGBUS + remap round: the byte read after recovery, or -errno of a failed call. */
__attribute__((visibility("default"))) int bl_sigbus_round(void)
{
    void *at = (void *)guest;
    struct uffdio_register reg = {.range = {(uintptr_t)at, page}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return -errno;
    if (madvise(at, page, MADV_DONTNEED) != 0) return -errno;
    struct floor_uffdio_poison po = {{(uintptr_t)at, page}, 0, 0};
    if (ioctl(uffd, FLOOR_UFFDIO_POISON, &po) != 0) return -errno;
    struct uffdio_range range = {(uintptr_t)at, page};
    if (ioctl(uffd, UFFDIO_UNREGISTER, &range) != 0) return -errno;
    if (mprotect(at, page, PROT_READ) != 0) return -errno;
    return guest[64]; /* SIGBUS, remapped by the handler, read again */
}
