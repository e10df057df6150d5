/* handler.c: the fault handler. Finds the region a faulting address belongs to through the static
 * slots (never a region that may be freed), resolves the fault under the region lock, and chains every
 * fault that is not ours (or that cannot be resolved) to the runtime's handler. Async-signal-safe. */
#include "pagelab.h"
#include <errno.h>
#ifndef _WIN32
#include <signal.h>
#include <ucontext.h>
#endif

_Atomic uint64_t chained_faults;

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
    for (uint64_t i = 1; i < n; i++) { /* insertion sort: at most PL_MAX_AROUND frames */
        uint32_t f = frames[i];
        uint64_t j = i;
        for (; j > 0 && frames[j - 1] > f; j--) frames[j] = frames[j - 1];
        frames[j] = f;
    }
    /* Only the run of consecutive frames that holds g's own is used, so the block is one mmap: a failed
     * MAP_FIXED leaves none of it accessible. With two runs, a failure in the second would unmap the
     * first after a guest thread could have written it (its write lost, and its frame back in the pool
     * as "zero"). */
    uint64_t run_at = 0, run = 0;
    for (uint64_t i = 1, at = 0; i <= n && run == 0; i++)
        if (i == n || frames[i] != frames[i - 1] + 1) {
            if (fg >= frames[at] && fg <= frames[i - 1]) run_at = at, run = i - at;
            at = i;
        }
    for (uint64_t i = 0; i < n; i++)
        if (i < run_at || i >= run_at + run) drop_frame(r, frames[i], 1); /* never mapped: zero */
    memmove(frames, frames + run_at, run * sizeof *frames);
    n = run;
    if (ahead > n - 1) ahead = n - 1;
    behind = n - 1 - ahead;
    *first = g - behind;
    return n;
}

/* A demand-zero fault on page g (with fault-around, its never-used neighbours too). 0 or a status. */
static int demand_zero(struct pl_region *r, uint64_t g)
{
    uint32_t f, frames[PL_MAX_AROUND];
    int zero, rc = take_frame(r, g, &f, &zero);
    if (rc != 0) return rc;
    if (!zero) memset(frame_bytes(r->arena, f), 0, page_size); /* a host-swapped victim's old content */
    uint64_t first = g, n = r->fault_around > 1 ? around(r, g, f, frames, &first) : 1;
    if (n > 1 && change_pages(r, first, n, PL_BACKED, frames, 0, 0) != 0) {
        /* Past the mapping budget (or a failed call, which left none of the run accessible: one mmap):
         * the spares go back, and g alone is mapped below. */
        for (uint64_t i = 0; i < n; i++)
            if (frames[i] != f) drop_frame(r, frames[i], 1);
        first = g;
        n = 1;
    }
    if (n == 1 && (rc = fault_map(r, g, PL_BACKED, &f, 1)) != 0) {
        drop_frame(r, f, 1);
        return rc;
    }
    for (uint64_t i = 0; i < n; i++) set_page(r, first + i, n == 1 ? f : frames[i], PL_BACKED);
    atomic_fetch_add_explicit(&r->counters.demand_faults, 1, memory_order_relaxed);
    if (n > 1) atomic_fetch_add_explicit(&r->counters.faulted_around, n - 1, memory_order_relaxed);
    return 0;
}

/* A write to a protected page. Its content leaves the parity while the page is still read-only, so a
 * second writer on another CPU faults too (and waits on the lock) instead of writing unseen. */
static int tracked_write(struct pl_region *r, uint64_t g)
{
    if (page_hash(frame_bytes(r->arena, fr_of(r, g)), page_size) != r->hash[g]) {
        /* Silently corrupt: never XOR bad bytes out of the parity; recover first (or contain). */
        int rc = repair_in_handler(r, g, 1);
        if (rc != 0) return rc;
        if (st_of(r, g) == PL_BACKED) return 0; /* contained: now a zero page, read-write */
    }
    int was_covered = uncover(r, g, 1);
    uint32_t keep = PL_KEEP_FRAME;
    int rc = fault_map(r, g, PL_BACKED, &keep, 0);
    if (rc != 0) {
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
        return rc;
    }
    r->disk_off[g] = -1;
    atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
    atomic_fetch_add_explicit(&r->counters.tracked_writes, 1, memory_order_relaxed);
    return 0;
}

/* Says why a fault could not be resolved: what the fault was, and the cause (the status). */
static void say_unresolved(const char *what, int rc, struct pl_region *r, uint64_t g)
{
    const char *why = rc == PL_ENOFRAME ? ": no frame (no pool frame, no free frame, nothing to swap out)"
                      : rc == PL_EMAPLIMIT ? ": past the mapping budget"
                      : rc == -ENOMEM ? ": the kernel refused a mapping (ENOMEM: vm.max_map_count reached?)"
                      : rc == PL_ELOST ? ": no good copy"
                                       : ": an OS call failed";
    char buf[160];
    size_t n = 0;
    while (*what && n < sizeof buf - 1) buf[n++] = *what++;
    while (*why && n < sizeof buf - 1) buf[n++] = *why++;
    buf[n] = 0;
    say(buf, (uint64_t)r->owner, g);
}

/* Resolves a fault on page g of r. Returns 1 if resolved (the access re-runs), 0 to chain. */
int resolve(struct pl_region *r, uint64_t g, int is_write)
{
    pl_lock(&r->lock);
    uint32_t st = st_of(r, g), keep = PL_KEEP_FRAME;
    int rc = 0, nothing = 0;
    uint64_t os_failed = atomic_load_explicit(&os_failures, memory_order_relaxed);
    const char *what = NULL;
    switch (st) {
    case PL_UNBACKED:
        rc = demand_zero(r, g);
        what = "a demand fault";
        break;
    case PL_SWAPPED:
        rc = swap_in(r, g);
        what = "a host-swapped page could not be brought back";
        break;
    case PL_SAMPLED:
        if ((rc = fault_map(r, g, PL_BACKED, &keep, 0)) == 0) {
            atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
            r->flags[g] |= PL_PF_TOUCHED;
            atomic_fetch_add_explicit(&r->counters.sample_touches, 1, memory_order_relaxed);
        }
        what = "sampled page could not be restored";
        break;
    case PL_TRACKED:
        if (!is_write) nothing = 1; /* a read raced with a recovery that has just mapped the page */
        else rc = tracked_write(r, g);
        what = "protected page could not be made writable";
        break;
    case PL_SHARED: /* copy-on-write (share.c) */
        if (!is_write) nothing = 1;
        else rc = cow_break(r, g);
        what = "a write to a shared page could not be given its copy";
        break;
    case PL_POISONED:
        rc = repair_in_handler(r, g, r->hash[g] != 0);
        what = "poisoned page could not be recovered or contained";
        break;
    default:
        nothing = 1;
        break;
    }
    /* No frame only because another VM's lock was held, or an OS call failed meanwhile (a shortage that
     * passes, or the failure injector): let the access re-run (the holder is never waiting for us; the
     * tables are as they were), counted in a row as spurious faults are, so an endless repeat still chains. */
    int retry = !nothing && rc != 0 &&
                (rc == PL_EAGAIN || atomic_load_explicit(&os_failures, memory_order_relaxed) != os_failed), done;
    if (nothing || retry) {
        done = spurious(r, g);
    } else {
        done = rc == 0;
        if (done) r->spurious_streak = 0; /* a real resolution ends a streak (counted in a row, across threads) */
        else atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
    }
    pl_unlock(&r->lock);
    if (retry) os_yield(); /* let the lock's holder finish before the access faults again */
    if (!done && !nothing && !retry) say_unresolved(what, rc, r, g);
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
    int32_t gone;
    uint64_t page;
    if (!r && region_quarantined(addr, &gone, &page))
        say("a touch of a destroyed VM's guest memory (a stale span or pointer; quarantined, never another VM's): not ours to resolve",
            (uint64_t)gone, page);
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
