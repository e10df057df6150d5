/* mapping.c: guest views and their budget. The mapping-count model kept under vm.max_map_count, the one
 * commit sequence every page change goes through (change_pages: budget, OS call, then the tables), and
 * the probe that tells whether a page's mapping fails a kernel read (a poison marker). Calls only the
 * ground floor. */
#include "pagelab.h"
#include <errno.h>

_Atomic int64_t maps_in_use;
_Atomic int64_t map_budget = 60000;

static int is_hole(uint32_t st) { return st == PL_UNBACKED || st == PL_SWAPPED; }

static int os_change(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, const uint32_t *frames,
                     uint32_t frame0, uint64_t breaks);


/* Which VMA a page of state st can share with its neighbour: 0 for a hole (unbacked or host-swapped
 * pages share one anonymous VMA), else 1 + its protection (and then only with the next frame). A table
 * rather than branches: the mapping-count model looks up every page of a change and its two neighbours. */
static uint32_t vma_kind(uint32_t st)
{
    static const uint8_t kind[8] = {
        [PL_UNBACKED] = 0, [PL_BACKED] = 1 + (PROT_READ | PROT_WRITE), [PL_SAMPLED] = 1 + PROT_NONE,
        [PL_TRACKED] = 1 + PROT_READ, [PL_POISONED] = 1 + PROT_NONE, [PL_SWAPPED] = 0, [PL_SHARED] = 1 + PROT_READ,
        [7] = 1 + PROT_NONE,
    };
    return st < 8 ? kind[st] : 1 + PROT_NONE; /* as is_hole / prot_of say for any other value */
}

/* Is there a VMA boundary between two neighbouring pages, given their kinds and frames? */
static int splits_kind(uint32_t k0, uint32_t f0, uint32_t k1, uint32_t f1)
{
    return k0 != k1 || (k0 != 0 && f1 != f0 + 1);
}

static int splits(uint32_t s0, uint32_t f0, uint32_t s1, uint32_t f1)
{
    return splits_kind(vma_kind(s0), f0, vma_kind(s1), f1);
}

static uint32_t new_frame(uint64_t i, const uint32_t *frames, uint32_t frame0, uint32_t old)
{
    return frames ? frames[i] : frame0 == PL_KEEP_FRAME ? old : frame0 + (uint32_t)i;
}

/* Change in VMA count if pages [first, first+count) take state st and the given frames. The boundaries
 * that can change are those inside the run and at its two edges. Inside the run both sides take the
 * same state, so a boundary is there afterwards only if st is mapped and the frames do not follow on:
 * `breaks` times for frames[] (frame_breaks), never for frame0 + i. */
static int64_t maps_delta(struct pl_region *r, uint64_t first, uint64_t count, uint32_t st, const uint32_t *frames,
                          uint32_t frame0, uint64_t breaks)
{
    uint64_t end = first + count; /* one past the run */
    int64_t before = 0, after = 0;
    /* As they are: the boundaries between page i and i+1 for i from the page before the run to the
     * run's last page (or the one before it, if the run ends the region). */
    uint64_t lo = first ? first - 1 : 0, hi = end < r->pages ? end : r->pages - 1;
    uint32_t k0 = vma_kind(st_of(r, lo)), f0 = fr_of(r, lo);
    for (uint64_t i = lo; i < hi; i++) {
        uint32_t k1 = vma_kind(st_of(r, i + 1)), f1 = fr_of(r, i + 1);
        before += splits_kind(k0, f0, k1, f1);
        k0 = k1;
        f0 = f1;
    }
    /* As they will be: the two edges, then the inside. */
    if (first > 0)
        after += splits(st_of(r, first - 1), fr_of(r, first - 1), st, new_frame(0, frames, frame0, fr_of(r, first)));
    if (end < r->pages)
        after += splits(st, new_frame(count - 1, frames, frame0, fr_of(r, end - 1)), st_of(r, end), fr_of(r, end));
    if (!is_hole(st) && frames) {
        after += (int64_t)breaks;
    } else if (!is_hole(st) && frame0 == PL_KEEP_FRAME) {
        for (uint64_t g = first + 1; g < end; g++) after += fr_of(r, g) != fr_of(r, g - 1) + 1;
    }
    return after - before;
}

/* Places in frames[0..count) where a frame does not follow on from the one before (0: one run). */
static uint64_t frame_breaks(const uint32_t *frames, uint64_t count)
{
    uint64_t breaks = 0;
    for (uint64_t i = 1; i < count; i++) breaks += frames[i] != frames[i - 1] + 1;
    return breaks;
}

int take_budget(int64_t delta)
{
    if (delta <= 0) return 0;
    int64_t now = atomic_fetch_add(&maps_in_use, delta) + delta;
    if (now > atomic_load(&map_budget)) {
        atomic_fetch_sub(&maps_in_use, delta);
        return PL_EMAPLIMIT;
    }
    return 0;
}

/* Puts pages back as the tables say (undoing a partial change). A failure here leaves a page whose
 * mapping disagrees with the tables; the handler repairs such a page from the tables on its next fault. */
static void restore_from_tables(struct pl_region *r, uint64_t first, uint64_t count)
{
    for (uint64_t g = first; g < first + count; g++) {
        uint32_t st = st_of(r, g);
        /* A page the kernel poisoned (a marker on its mapping): a remap would drop the marker and show the
         * bad frame as good data. It is put back poisoned in the tables instead (inaccessible; its next
         * touch repairs it, C# hears of it as of a scrub's report), as an action-optional error makes it. */
        int kpoison = (r->flags[g] & PL_PF_KPOISON) && (st == PL_BACKED || st == PL_TRACKED);
        uint32_t put = kpoison ? PL_POISONED : st;
        int64_t delta = kpoison ? maps_delta(r, g, 1, PL_POISONED, NULL, fr_of(r, g), 0) : 0;
        int rc = -1;
        for (int tries = 0; rc != 0 && tries < 16; tries++) /* a failure here is a shortage that usually passes */
            rc = is_hole(put) ? map_anonymous(r, g, 1) : map_frames(r, g, 1, fr_of(r, g), prot_of(put));
        if (rc == 0 && kpoison) {
            atomic_fetch_add(&maps_in_use, delta);
            r->maps += delta;
            if (st != PL_TRACKED) r->hash[g] = 0; /* an unprotected page has no good copy */
            set_page(r, g, fr_of(r, g), PL_POISONED);
            push_event(r, g, fr_of(r, g), PL_EV_REPORTED);
        }
        if (rc != 0) {
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            say("could not undo a failed page change; the page is repaired on its next fault", (uint64_t)r->owner, g);
        }
    }
}

/* The one commit sequence for a page change (caller holds the lock): the mapping-count delta, the
 * budget, the OS call, then the settled count. The caller stores p2m and state afterwards (set_page),
 * which cannot fail. On failure nothing changed. With `force`, a change that needs more mappings is
 * charged past the budget (used where undoing must not fail). frames[] per page, or frame0 + i, or
 * PL_KEEP_FRAME for a protection change of mapped pages. */
int change_pages(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, const uint32_t *frames,
                 uint32_t frame0, int force)
{
    uint64_t breaks = frames ? frame_breaks(frames, count) : 0;
    int64_t delta = maps_delta(r, first, count, new_state, frames, frame0, breaks);
    int rc = 0;
    if (force && delta > 0) atomic_fetch_add(&maps_in_use, delta);
    else if ((rc = take_budget(delta)) != 0) return rc;
    /* A forced change is one that must not fail (an undo, a fault being resolved): an OS call that fails
     * there is a shortage that usually passes, so it is tried again a few times (nothing changed meanwhile). */
    for (int tries = 0; tries < (force ? 16 : 1); tries++) {
        if (tries) os_yield();
        if ((rc = os_change(r, first, count, new_state, frames, frame0, breaks)) == 0) break;
    }
    if (rc != 0) {
        if (delta > 0) atomic_fetch_sub(&maps_in_use, delta);
        return rc;
    }
    if (delta < 0) atomic_fetch_add(&maps_in_use, delta);
    r->maps += delta;
    return 0;
}

/* change_pages' OS calls: all of them, or (on failure) the range put back as the tables say. */
static int os_change(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, const uint32_t *frames,
                     uint32_t frame0, uint64_t breaks)
{
    int rc = 0;
    if (is_hole(new_state)) {
        /* A failed call may have changed part of the range: put all of it back as the tables say. */
        if ((rc = map_anonymous(r, first, count)) != 0 && count > 1) restore_from_tables(r, first, count);
    } else if (!frames && frame0 == PL_KEEP_FRAME) {
        if ((rc = protect_pages(r, first, count, prot_of(new_state))) != 0 && count > 1) restore_from_tables(r, first, count);
    } else if (breaks == 0) { /* one run of consecutive frames (frame0 + i always is): one call */
        /* A failed MAP_FIXED may leave the range unmapped: put it back as the tables say. */
        if ((rc = map_frames(r, first, count, new_frame(0, frames, frame0, 0), prot_of(new_state))) != 0)
            restore_from_tables(r, first, count);
    } else {
        uint64_t done = 0, run = 0;
        while (rc == 0 && done < count) {
            run = 1; /* one call per run of consecutive frames */
            uint32_t f = frames[done];
            while (done + run < count && frames[done + run] == f + run) run++;
            if ((rc = map_frames(r, first + done, run, f, prot_of(new_state))) == 0) done += run;
        }
        /* The runs already mapped, and the one whose call failed (a failed MAP_FIXED may leave it unmapped). */
        if (rc != 0) restore_from_tables(r, first, done + run);
    }
    return rc;
}

/* The mapping-count change pages [first, first+count) would make taking state st and frames frame0 + i
 * (or their own, PL_KEEP_FRAME): the fault path's victim choice asks it before it changes anything. */
int64_t change_delta(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, uint32_t frame0)
{
    return maps_delta(r, first, count, new_state, NULL, frame0, 0);
}

void set_page(struct pl_region *r, uint64_t g, uint32_t frame, uint32_t st)
{
    if (frame != PL_NO_FRAME) r->flags[g] |= PL_PF_USED;
    atomic_store_explicit(&r->p2m[g], frame, memory_order_relaxed);
    atomic_store_explicit(&r->state[g], st, memory_order_release);
}

PL_EXPORT void pl_set_map_budget(int64_t budget) { atomic_store(&map_budget, budget); }

PL_EXPORT int64_t pl_map_budget(void) { return atomic_load(&map_budget); }

PL_EXPORT int64_t pl_maps_in_use(void) { return atomic_load(&maps_in_use); }

#ifndef _WIN32
/* Does the page's current mapping fail a read? A kernel read (copy from the process's own memory) fails
 * with EFAULT on a poison marker or a hardware-poisoned page instead of raising SIGBUS. Called only for
 * pages the tables say are readable (Backed or Tracked), so a failure means poison. If the call itself is
 * refused (seccomp) every time, the answer is yes: the page is then treated as bad, which never shows bad
 * bytes. */
int mapping_fails(const void *addr)
{
    /* EFAULT is the answer (the mapping is poisoned); any other failure is the question not being
     * answered (a shortage, a refusal): asked again a few times before the page is taken as bad, since a
     * page taken as bad by mistake loses its content (contained) when it is not protected. */
    int rc = os_peek(addr);
    for (int tries = 0; rc != 0 && rc != -EFAULT && tries < 16; tries++) rc = os_peek(addr);
    return rc != 0;
}

int kernel_poisoned(struct pl_region *r, uint64_t g)
{
    if (!(r->flags[g] & PL_PF_KPOISON)) return 0;
    uint32_t st = st_of(r, g);
    if ((st == PL_BACKED || st == PL_TRACKED) && mapping_fails(r->base + g * page_size)) return 1;
    r->flags[g] &= (uint8_t)~PL_PF_KPOISON; /* replaced since (or not readable, so not ours to judge) */
    return 0;
}
#else
/* Windows has no poison markers: no mapping is poisoned by the kernel. */
int kernel_poisoned(struct pl_region *r, uint64_t g) { (void)r, (void)g; return 0; }
#endif
