/* baseline.c: the C floor of the write-fault benchmark: a plain SIGSEGV handler that makes a faulting
 * page of its armed range writable again (mprotect) and returns. Nothing else. */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "segv_chain.h"

static struct floor_handler handler;
static uint8_t *volatile armed_base;
static volatile size_t armed_len;
static size_t page;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    uint8_t *a = (uint8_t *)info->si_addr, *base = armed_base;
    if (floor_is_fault(info) && base && a >= base && a < base + armed_len) {
        mprotect((void *)((uintptr_t)a & ~(uintptr_t)(page - 1)), page, PROT_READ | PROT_WRITE);
        errno = saved_errno;
        return;
    }
    errno = saved_errno;
    floor_chain(&handler, sig, info, ctx);
}

/* Arms [base, base+len) and installs the handler in front of the current one. 0 or -errno. */
__attribute__((visibility("default"))) int bl_install(void *base, size_t len)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    armed_len = len;
    armed_base = base;
    return floor_install(&handler, on_segv);
}

/* Disarms the range and restores the previous handler (see floor_uninstall). */
__attribute__((visibility("default"))) int bl_uninstall(void)
{
    armed_base = NULL;
    armed_len = 0;
    return floor_uninstall(&handler, on_segv);
}

/* One round trip, all in C: protect the page read-only, write to it (fault, handler, mprotect RW). */
__attribute__((visibility("default"))) void bl_round_trip(volatile uint8_t *p)
{
    mprotect((void *)p, page, PROT_READ);
    p[0]++;
}
