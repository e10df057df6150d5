/* handler.c: the fault handler. Finds the region a faulting address belongs to through the static
 * slots (never a region that may be freed), resolves the fault under the region lock, and chains every
 * fault that is not ours (or that cannot be resolved) to the runtime's handler. Async-signal-safe. */
#include "pagelab.h"
#ifndef _WIN32
#include <errno.h>
#include <signal.h>
#include <ucontext.h>
#endif

_Atomic uint64_t chained_faults;
static _Atomic int installed;

/* A fault on a page whose tables say there is nothing to do: another thread got there first (the access
 * simply re-runs), or the page's mapping disagrees with the tables, which a repeat shows; then the page
 * is mapped again from the tables. Endless repeats are not ours to hide: chain. */
static int spurious(struct pl_region *r, uint64_t g)
{
    atomic_fetch_add_explicit(&r->counters.spurious, 1, memory_order_relaxed);
    if (r->spurious_page != g) {
        r->spurious_page = g;
        r->spurious_streak = 0;
    }
    if (++r->spurious_streak >= PL_SPURIOUS_LIMIT) {
        say("a fault repeats on a page the tables say is accessible", (uint64_t)r->owner, g);
        return 0;
    }
    /* Racing threads make a few in a row; dozens mean the mapping is not what the tables say (a page
     * with no frame is left alone: its hole is what the tables say). */
    if (r->spurious_streak >= 64 && fr_of(r, g) != PL_NO_FRAME) (void)map_frames(r, g, 1, fr_of(r, g), prot_of(st_of(r, g)));
    return 1;
}

/* A page fault-around may fill: no frame now and never one before (see pagelab.h, FAULT-AROUND). */
static int never_used(struct pl_region *r, uint64_t p)
{
    return st_of(r, p) == PL_UNBACKED && !(r->flags[p] & PL_PF_USED);
}

/* The never-used pages around g in its aligned block get spare zero frames: as many as the VM can spare,
 * pages after g first (guests allocate upwards), then before. The frames (g's own `fg` among them; all
 * read zero) are sorted so that pages in order get frames in order: the run is usually one mmap and one
 * VMA. Returns the run's first page and length; frames[] gets its frames. */
static uint64_t around(struct pl_region *r, uint64_t g, uint32_t fg, uint32_t *frames, uint64_t *first)
{
    uint64_t w = r->fault_around, lo = g - g % w, hi = lo + w < r->pages ? lo + w : r->pages;
    uint64_t ahead = 0, behind = 0, n = 1;
    frames[0] = fg;
    if (!(r->flags[g] & PL_PF_USED)) {
        while (g + 1 + ahead < hi && never_used(r, g + 1 + ahead)) ahead++;
        while (g - behind > lo && never_used(r, g - behind - 1)) behind++;
    }
    while (n < 1 + ahead + behind && take_spare_frame(r, &frames[n]) == 0) n++;
    if (ahead > n - 1) ahead = n - 1;
    behind = n - 1 - ahead;
    for (uint64_t i = 1; i < n; i++) { /* insertion sort: at most PL_MAX_AROUND frames */
        uint32_t f = frames[i];
        uint64_t j = i;
        for (; j > 0 && frames[j - 1] > f; j--) frames[j] = frames[j - 1];
        frames[j] = f;
    }
    *first = g - behind;
    return n;
}

static int demand_zero(struct pl_region *r, uint64_t g)
{
    uint32_t f, frames[PL_MAX_AROUND];
    int zero;
    if (take_frame(r, g, &f, &zero) != 0) return 0;
    if (!zero) memset(frame_bytes(r->arena, f), 0, page_size); /* a host-swapped victim's old content */
    uint64_t first = g, n = r->fault_around > 1 ? around(r, g, f, frames, &first) : 1;
    if (n > 1 && change_pages(r, first, n, PL_BACKED, frames, 0, 0) != 0) {
        /* Past the mapping budget (or a failed call): the spares go back, and g alone is mapped below. */
        for (uint64_t i = 0; i < n; i++)
            if (frames[i] != f) drop_frame(r, frames[i], 1);
        first = g;
        n = 1;
    }
    if (n == 1 && change_pages(r, g, 1, PL_BACKED, NULL, f, 1) != 0) {
        drop_frame(r, f, 1);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) set_page(r, first + i, n == 1 ? f : frames[i], PL_BACKED);
    atomic_fetch_add_explicit(&r->counters.demand_faults, 1, memory_order_relaxed);
    if (n > 1) atomic_fetch_add_explicit(&r->counters.faulted_around, n - 1, memory_order_relaxed);
    return 1;
}

/* A write to a protected page. Its content leaves the parity while the page is still read-only, so a
 * second writer on another CPU faults too (and waits on the lock) instead of writing unseen. */
static int tracked_write(struct pl_region *r, uint64_t g)
{
    if (page_hash(frame_bytes(r->arena, fr_of(r, g)), page_size) != r->hash[g]) {
        /* Silently corrupt: never XOR bad bytes out of the parity; recover first (or contain). */
        if (!recover_in_handler(r, g) && !contain_in_handler(r, g)) return 0;
        if (st_of(r, g) == PL_BACKED) return 1; /* contained: now a zero page, read-write */
    }
    int was_covered = uncover(r, g, 1);
    if (change_pages(r, g, 1, PL_BACKED, NULL, PL_KEEP_FRAME, 1) != 0) {
        if (was_covered) {
            /* Still read-only: put its content back into the parity. */
            uint32_t gi = r->group_of[g];
            struct pl_group *grp = &r->groups[gi];
            uint64_t *p = (uint64_t *)frame_bytes(r->arena, grp->parity_frame);
            const uint64_t *s = (const uint64_t *)frame_bytes(r->arena, fr_of(r, g));
            for (size_t i = 0; i < page_size / 8; i++) p[i] ^= s[i];
            for (uint32_t i = 0; i < grp->n; i++)
                if (grp->members[i] == g) grp->covered |= 1u << i;
        }
        return 0;
    }
    r->disk_off[g] = -1;
    atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
    atomic_fetch_add_explicit(&r->counters.tracked_writes, 1, memory_order_relaxed);
    return 1;
}

/* Resolves a fault on page g of r. Returns 1 if resolved (the access re-runs), 0 to chain. */
int resolve(struct pl_region *r, uint64_t g, int is_write)
{
    pl_lock(&r->lock);
    uint32_t st = st_of(r, g);
    int done = 0, was_spurious = 0;
    r->frame_busy = 0;
    uint64_t os_failed = atomic_load_explicit(&os_failures, memory_order_relaxed);
    const char *why = NULL;
    switch (st) {
    case PL_UNBACKED:
        if (!(done = demand_zero(r, g))) why = "demand fault found no frame: no pool frame, no free frame, nothing to swap out";
        break;
    case PL_SWAPPED:
        if (!(done = swap_in(r, g) == 0)) why = "a host-swapped page could not be brought back";
        break;
    case PL_SAMPLED:
        if ((done = change_pages(r, g, 1, PL_BACKED, NULL, PL_KEEP_FRAME, 1) == 0)) {
            atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
            r->flags[g] |= PL_PF_TOUCHED;
            atomic_fetch_add_explicit(&r->counters.sample_touches, 1, memory_order_relaxed);
        } else {
            why = "sampled page could not be restored";
        }
        break;
    case PL_TRACKED:
        if (!is_write) done = was_spurious = spurious(r, g); /* a read raced with a recovery that has just mapped the page */
        else if (!(done = tracked_write(r, g))) why = "protected page could not be made writable";
        break;
    case PL_SHARED: /* copy-on-write (share.c) */
        if (!is_write) done = was_spurious = spurious(r, g);
        else if (!(done = cow_break(r, g))) why = "a write to a shared page found no frame to copy it into";
        break;
    case PL_POISONED:
        done = recover_in_handler(r, g) || contain_in_handler(r, g);
        if (!done) why = "poisoned page: no frame to recover or contain it into";
        break;
    default:
        done = was_spurious = spurious(r, g);
        break;
    }
    /* No frame only because another VM's lock was held, or an OS call failed meanwhile (a shortage that
     * passes, or the failure injector): let the access re-run (the holder is never waiting for us; the
     * tables are as they were), counted in a row as spurious faults are, so an endless repeat still chains. */
    int retry = !done && (r->frame_busy || atomic_load_explicit(&os_failures, memory_order_relaxed) != os_failed);
    if (retry) done = was_spurious = spurious(r, g);
    /* Any real resolution ends a streak: spurious faults are counted in a row, across threads. */
    if (done && !was_spurious) r->spurious_streak = 0;
    if (!done && why) atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
    pl_unlock(&r->lock);
    if (retry) os_yield(); /* let the lock's holder finish before the access faults again */
    if (why && !done) say(why, (uint64_t)r->owner, g);
    return done;
}

/* The region whose slot covers addr, entered (the caller leaves it), or NULL. */
struct pl_region *region_at(uintptr_t addr, struct pl_slot **slot)
{
    for (int i = 0; i < PL_MAX_REGIONS; i++) {
        struct pl_slot *s = &pl_slots[i];
        uintptr_t b = atomic_load(&s->base);
        if (!b || addr < b || addr - b >= atomic_load(&s->bytes)) continue;
        atomic_fetch_add(&s->inside, 1);
        struct pl_region *r = atomic_load(&s->region);
        if (r && r != PL_DYING && addr >= (uintptr_t)r->base && addr - (uintptr_t)r->base < r->pages * page_size) {
            *slot = s;
            return r;
        }
        atomic_fetch_sub(&s->inside, 1); /* destroyed, or the slot was reused meanwhile */
    }
    return NULL;
}

/* 1: the fault at addr was on guest memory and is resolved; 0: chain it. */
static int handle(uintptr_t addr, int is_write)
{
    struct pl_slot *s;
    struct pl_region *r = region_at(addr, &s);
    if (!r) return 0;
    int ok = resolve(r, (uint64_t)(addr - (uintptr_t)r->base) / page_size, is_write);
    atomic_fetch_sub(&s->inside, 1);
    return ok;
}

#ifndef _WIN32
extern struct sigaction pl_previous;

/* Hands a signal that is not ours to the handler installed before ours (SIGSEGV's or SIGBUS's). */
void chain_to(const struct sigaction *previous, int sig, siginfo_t *info, void *ctx)
{
    atomic_fetch_add_explicit(&chained_faults, 1, memory_order_relaxed);
    if (previous->sa_flags & SA_SIGINFO) {
        previous->sa_sigaction(sig, info, ctx);
    } else if (previous->sa_handler == SIG_DFL || previous->sa_handler == SIG_IGN) {
        /* The default action, as without us: a real fault re-runs and terminates the process; a signal
         * sent by kill is raised again and is delivered when this handler returns. */
        os_signal_default(sig, info->si_code <= 0);
    } else {
        previous->sa_handler(sig);
    }
}

static void chain(int sig, siginfo_t *info, void *ctx) { chain_to(&pl_previous, sig, info, ctx); }

void pl_on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno; /* the interrupted code may be between a call and its errno check */
    /* Only a fault the kernel raised carries a fault address (si_code > 0); kill/tgkill/sigqueue do not. */
    if (info->si_code > 0) {
#if defined(__x86_64__)
        int is_write = (((ucontext_t *)ctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
        int is_write = 1; /* unknown here: treat as a write, which is always safe for TRACKED pages */
#endif
        if (handle((uintptr_t)info->si_addr, is_write)) {
            errno = saved_errno;
            return;
        }
    }
    errno = saved_errno;
    chain(sig, info, ctx);
}
#else
/* Windows: the first vectored handler. Resolves access violations on guest pages and passes every other
 * exception on (EXCEPTION_CONTINUE_SEARCH) to the runtime's handler, as the Linux handler chains. */
LONG CALLBACK pl_on_access_violation(EXCEPTION_POINTERS *ep)
{
    EXCEPTION_RECORD *er = ep->ExceptionRecord;
    if (er->ExceptionCode != EXCEPTION_ACCESS_VIOLATION || er->NumberParameters < 2) return EXCEPTION_CONTINUE_SEARCH;
    DWORD saved_error = GetLastError(); /* the interrupted code may be between a call and its error check */
    int is_write = er->ExceptionInformation[0] == 1; /* 0 read, 1 write, 8 execute */
    int ok = handle((uintptr_t)er->ExceptionInformation[1], is_write);
    SetLastError(saved_error);
    if (ok) return EXCEPTION_CONTINUE_EXECUTION;
    atomic_fetch_add_explicit(&chained_faults, 1, memory_order_relaxed);
    return EXCEPTION_CONTINUE_SEARCH;
}
#endif

/* ---- API for C# ---- */

/* Installs the handler once, after the runtime installed its own (we chain to it). */
PL_EXPORT int pl_install(void)
{
    if (atomic_load(&installed)) return 0;
    page_size = os_page_size();
#ifdef _WIN32
    int rc = os_install((void *)pl_on_access_violation);
#else
    int rc = os_install((void *)pl_on_segv);
    if (rc == 0) rc = mce_install(); /* SIGBUS: memory errors the kernel delivers (mce.c) */
#endif
    if (rc != 0) return rc;
    atomic_store(&installed, 1);
    return 0;
}

PL_EXPORT int pl_installed(void) { return atomic_load(&installed); }

/* Flags of the handler we chain to (for `pagelab info`), or -1 before install. */
PL_EXPORT int64_t pl_previous_flags(void) { return atomic_load(&installed) ? os_previous_flags() : -1; }

PL_EXPORT uint64_t pl_chained_faults(void) { return atomic_load(&chained_faults); }
