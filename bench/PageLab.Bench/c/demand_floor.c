/* demand_floor.c: the C floor of the demand-fault benchmark. One round does what a PageLab round
 * (Unback + demand faults + RefillPool) must do at the OS level and nothing else: unmap the range
 * (one anonymous PROT_NONE mmap), punch the frames it had (one fallocate), then write one byte to each
 * page; each write faults into a C SIGSEGV handler that maps the next pre-made pool frame there
 * (mmap MAP_FIXED|MAP_SHARED of one memfd page, RW) and returns, and the write re-runs. No page
 * tables, locks, states or accounting. */
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
static uint32_t pool_frames;          /* the pool is frames [0, pool_frames) of the memfd */
static _Atomic uint32_t pool_next;    /* next pool frame to hand out */

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    uint8_t *a = (uint8_t *)info->si_addr, *base = range;
    if (floor_is_fault(info) && base && a >= base && a < base + range_pages * page) {
        uint32_t f = atomic_fetch_add_explicit(&pool_next, 1, memory_order_relaxed);
        void *at = base + (size_t)(a - base) / page * page;
        if (f < pool_frames &&
            mmap(at, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, (off_t)f * (off_t)page) != MAP_FAILED) {
            errno = saved_errno;
            return;
        }
    }
    errno = saved_errno;
    floor_chain(&handler, sig, info, ctx);
}

/* Arms the range [base, base + pages pages) over memfd fd, whose first pool frames are the pool, and
 * installs the handler in front of the current one. 0 or -errno. */
__attribute__((visibility("default"))) int bl_demand_install(void *base, size_t pages, int fd, uint32_t pool)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    range_pages = pages;
    memfd = fd;
    pool_frames = pool;
    atomic_store(&pool_next, pool);   /* empty until the first round punches and refills it */
    range = base;
    return floor_install(&handler, on_segv);
}

__attribute__((visibility("default"))) int bl_demand_uninstall(void)
{
    range = NULL;
    return floor_uninstall(&handler, on_segv);
}

/* One round over the whole range. 0, or -errno of the failed call. The pool must hold at least as many
 * frames as the range has pages. */
__attribute__((visibility("default"))) int bl_demand_round(void)
{
    uint8_t *base = range;
    if (mmap(base, range_pages * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
        return -errno;
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)pool_frames * (off_t)page) != 0)
        return -errno;
    atomic_store_explicit(&pool_next, 0, memory_order_relaxed);   /* refill: the punched frames are zero again */
    volatile uint8_t *p = base;
    for (size_t i = 0; i < range_pages; i++) p[i * page] = (uint8_t)i;   /* each write: fault, map, re-run */
    return 0;
}
