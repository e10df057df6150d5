/* cow_floor.c: the C floor of the copy-on-write benchmark. Every page of a range maps one shared memfd
 * frame read-only; a write faults into a C SIGSEGV handler that copies the shared frame into the next
 * pre-made pool frame (through the host view), maps that frame read-write at the page (mmap
 * MAP_FIXED|MAP_SHARED of one memfd page) and returns, and the write re-runs. No page tables, locks,
 * sharer counts or accounting. bl_cow_reshare maps every page back onto the shared frame and punches the
 * pool (done outside the measured round, as PageLab's merges are). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "segv_chain.h"

static struct floor_handler handler;
static uint8_t *volatile range;       /* the guest-like range, NULL when disarmed */
static size_t range_pages, page;
static int memfd;
static uint8_t *host_view;
static uint32_t shared_frame;         /* the frame every page maps read-only */
static uint32_t pool_first;           /* the pool is frames [pool_first, pool_first + range_pages) */
static _Atomic uint32_t pool_next;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    uint8_t *a = (uint8_t *)info->si_addr, *base = range;
    if (floor_is_fault(info) && base && a >= base && a < base + range_pages * page) {
        uint32_t f = atomic_fetch_add_explicit(&pool_next, 1, memory_order_relaxed);
        void *at = base + (size_t)(a - base) / page * page;
        if (f < pool_first + range_pages) {
            memcpy(host_view + (size_t)f * page, host_view + (size_t)shared_frame * page, page);
            if (mmap(at, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, (off_t)f * (off_t)page) != MAP_FAILED) {
                errno = saved_errno;
                return;
            }
        }
    }
    errno = saved_errno;
    floor_chain(&handler, sig, info, ctx);
}

/* Arms [base, base + pages pages) over memfd fd (host view `view`): frame `shared` is the shared one,
 * frames [pool, pool + pages) the pool. Installs the handler in front of the current one. 0 or -errno. */
__attribute__((visibility("default"))) int bl_cow_install(void *base, size_t pages, int fd, void *view, uint32_t shared,
                                                          uint32_t pool)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    range_pages = pages;
    memfd = fd;
    host_view = view;
    shared_frame = shared;
    pool_first = pool;
    range = base;
    return floor_install(&handler, on_segv);
}

__attribute__((visibility("default"))) int bl_cow_uninstall(void)
{
    range = NULL;
    return floor_uninstall(&handler, on_segv);
}

/* Every page back onto the shared frame, read-only (one mmap per page: they all map the same offset),
 * and the pool punched and refilled. 0 or -errno. */
__attribute__((visibility("default"))) int bl_cow_reshare(void)
{
    for (size_t i = 0; i < range_pages; i++)
        if (mmap(range + i * page, page, PROT_READ, MAP_SHARED | MAP_FIXED, memfd, (off_t)shared_frame * (off_t)page) == MAP_FAILED)
            return -errno;
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)pool_first * (off_t)page,
                  (off_t)range_pages * (off_t)page) != 0)
        return -errno;
    atomic_store_explicit(&pool_next, pool_first, memory_order_relaxed);
    return 0;
}

/* One write per page: each faults, is copied and mapped, and re-runs. */
__attribute__((visibility("default"))) void bl_cow_round(void)
{
    volatile uint8_t *p = range;
    for (size_t i = 0; i < range_pages; i++) p[i * page] = 0;
}
