/* hostswap_floor.c: the C floor of the host-swap benchmark. One round does what a PageLab round
 * (GuestVm.HostSwapOut of every page, then one touch of each) must do at the OS level, by the same
 * mechanism, and nothing else. Swap-out, per page: an anonymous PROT_NONE mmap over it (a hole, so no
 * CPU can write the frame any more), a pwrite of its frame through the host view to the swap file at
 * page * page_size, a fallocate punch of the frame. Swap-in: one byte written to each page; each write
 * faults into a C SIGSEGV handler that preads the page back into its frame through the host view and
 * maps the frame there (mmap MAP_FIXED|MAP_SHARED, RW); the write re-runs. Page i always uses frame i.
 * No tables, locks, clock or accounting. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "segv_chain.h"

static struct floor_handler handler;
static uint8_t *volatile range;       /* the guest-like range, NULL when disarmed */
static uint8_t *host;                 /* the host view of the memfd */
static size_t range_pages, page;
static int memfd, swapfd;

/* pread of the whole page (a short read is retried, as libpagelab's os_read_file does). 0 or -errno. */
static int read_page(uint8_t *dst, off_t at)
{
    size_t done = 0;
    while (done < page) {
        ssize_t n = pread(swapfd, dst + done, page - done, at + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 ? -EIO : -errno;
        done += (size_t)n;
    }
    return 0;
}

static int write_page(const uint8_t *src, off_t at)
{
    size_t done = 0;
    while (done < page) {
        ssize_t n = pwrite(swapfd, src + done, page - done, at + (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n == 0 ? -EIO : -errno;
        done += (size_t)n;
    }
    return 0;
}

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    uint8_t *a = (uint8_t *)info->si_addr, *base = range;
    if (floor_is_fault(info) && base && a >= base && a < base + range_pages * page) {
        size_t g = (size_t)(a - base) / page;
        void *at = base + g * page;
        if (read_page(host + g * page, (off_t)(g * page)) == 0 &&
            mmap(at, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, (off_t)(g * page)) != MAP_FAILED) {
            errno = saved_errno;
            return;
        }
    }
    errno = saved_errno;
    floor_chain(&handler, sig, info, ctx);
}

/* Arms the range [base, base + pages pages), whose page i is mapped on frame i of memfd fd (host: the
 * host view of fd), with swap file sfd, and installs the handler in front of the current one.
 * 0 or -errno. */
__attribute__((visibility("default"))) int bl_swap_install(void *base, size_t pages, int fd, void *host_view, int sfd)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    range_pages = pages;
    memfd = fd;
    swapfd = sfd;
    host = host_view;
    range = base;
    return floor_install(&handler, on_segv);
}

__attribute__((visibility("default"))) int bl_swap_uninstall(void)
{
    range = NULL;
    return floor_uninstall(&handler, on_segv);
}

/* One round over the whole range: every page swapped out, then touched (and swapped in by the handler).
 * 0, or -errno of the failed call. */
__attribute__((visibility("default"))) int bl_swap_round(void)
{
    uint8_t *base = range;
    for (size_t g = 0; g < range_pages; g++) {
        void *at = base + g * page;
        if (mmap(at, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) return -errno;
        int rc = write_page(host + g * page, (off_t)(g * page));
        if (rc != 0) return rc;
        if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(g * page), (off_t)page) != 0)
            return -errno;
    }
    volatile uint8_t *p = base;
    for (size_t g = 0; g < range_pages; g++) p[g * page] = (uint8_t)g;   /* each write: fault, pread, map, re-run */
    return 0;
}
