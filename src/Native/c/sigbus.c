/* sigbus.c: the SIGBUS entry for memory errors the kernel delivers (top floor, beside handler.c). It finds
 * the guest pages the kernel names and hands each to mce.c's recovery; what is not ours goes on to the
 * handler installed before ours. Linux only: Windows delivers no such signal. Async-signal-safe. */
#include "pagelab.h"

#ifndef _WIN32
#include <errno.h>
#include <signal.h>

#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#define BUS_MCEERR_AO 5
#endif

static struct sigaction pl_previous_bus;

/* Every guest page in the poisoned range [addr rounded down to 2^lsb, + 2^lsb) (a huge page reports
 * more than one); 1 if the page at addr was handled. */
static int memory_error_at(uintptr_t addr, int lsb, int optional, int code)
{
    struct pl_slot *s;
    struct pl_region *r = region_at(addr, &s);
    if (!r) return 0;
    uintptr_t base = (uintptr_t)r->base, end = base + r->pages * page_size;
    uintptr_t span = lsb > 12 && lsb < 40 ? (uintptr_t)1 << lsb : page_size;
    uintptr_t lo = addr & ~(span - 1), hi = lo + span;
    if (lo < base) lo = base;
    if (hi > end) hi = end;
    int ok = 1;
    for (uintptr_t a = lo & ~(page_size - 1); a < hi; a += page_size) {
        int handled = memory_error(r, (uint64_t)(a - base) / page_size, optional, code);
        if (addr - a < page_size) ok = handled;
    }
    atomic_fetch_sub(&s->inside, 1);
    return ok;
}

static void chain_bus(int sig, siginfo_t *info, void *ctx)
{
    mce_count(PL_MCE_CHAINED);
    chain_to(&pl_previous_bus, sig, info, ctx);
}

static void pl_on_sigbus(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    int code = info->si_code, handled = 0;
    /* Codes the kernel uses for memory that cannot be read: a hardware error (MCEERR_AR / AO), and a
     * poison marker or a mapping with no page behind it (ADRERR, OBJERR). ADRALN and codes sent by
     * kill (<= 0) are never ours. */
    if (code == BUS_MCEERR_AR || code == BUS_ADRERR || code == BUS_OBJERR || code == BUS_MCEERR_AO) {
        int lsb = code == BUS_MCEERR_AR || code == BUS_MCEERR_AO ? info->si_addr_lsb : 0;
        handled = memory_error_at((uintptr_t)info->si_addr, lsb, code == BUS_MCEERR_AO, code);
    }
    errno = saved_errno;
    if (!handled) chain_bus(sig, info, ctx);
}

/* Called by pl_install after the SIGSEGV handler: the runtime's SIGBUS mask and flags. Not SA_ONSTACK
 * unless the runtime asked for it (its SIGBUS handler, unlike its SIGSEGV one, runs on the thread's own
 * stack, measured: SA_SIGINFO|SA_RESTORER|SA_RESTART), since we chain to it. */
int mce_install(void) { return os_sigaction(SIGBUS, pl_on_sigbus, &pl_previous_bus, 0); }

int64_t mce_previous_flags(void) { return (int64_t)pl_previous_bus.sa_flags; }

#else
int mce_install(void) { return 0; }
int64_t mce_previous_flags(void) { return -1; }
#endif
