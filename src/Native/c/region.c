/* region.c: regions, one VM's guest physical memory each. Their lifetime (generation-tagged ids over
 * static slots), the mapping-count model kept under vm.max_map_count, the one commit sequence every
 * page change goes through (change_pages), and the calls that map, unmap, pool and sample pages. */
#include "pagelab.h"

struct pl_slot pl_slots[PL_MAX_REGIONS];
_Atomic int64_t maps_in_use;
_Atomic int64_t map_budget = 60000;


#define PL_MAP_BACK 1u            /* pl_map: every page must be unbacked (checked under the lock) */

static int is_hole(uint32_t st) { return st == PL_UNBACKED || st == PL_SWAPPED; }

/* ---- lifetimes ---- */

struct pl_region *region_enter(int id)
{
    if (id <= 0) return NULL;
    struct pl_slot *s = &pl_slots[id & (PL_MAX_REGIONS - 1)];
    atomic_fetch_add(&s->inside, 1);
    struct pl_region *r = atomic_load(&s->region);
    if (!r || r == PL_DYING || atomic_load(&s->gen) != (uint32_t)id >> 8) {
        atomic_fetch_sub(&s->inside, 1);
        return NULL;
    }
    return r;
}

void region_leave(struct pl_region **r)
{
    if (*r) atomic_fetch_sub(&(*r)->slot->inside, 1);
}

/* ---- mapping-count model ---- */

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

static int take_budget(int64_t delta)
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

static int os_change(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, const uint32_t *frames,
                     uint32_t frame0, uint64_t breaks);

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

/* A full ring drops the oldest Recovered event (it only says a page was repaired; the handler already
 * did everything). Events C# must act on -- Contained, SharedLost (end a guest context), Reported (recover
 * a page) -- are dropped only when nothing else is left to drop; each such drop is counted in
 * ev_losses_dropped (pl_events_losses_dropped), so C# knows to scan the pages' lost flags. */
void push_event(struct pl_region *r, uint64_t page, uint32_t frame, uint32_t kind)
{
    if (r->ev_count == PL_EVENTS) {
        atomic_fetch_add_explicit(&r->counters.events_dropped, 1, memory_order_relaxed);
        uint32_t i = 0;
        while (i < PL_EVENTS && r->events[(r->ev_head + i) % PL_EVENTS].kind != PL_EV_RECOVERED) i++;
        if (i == PL_EVENTS && kind == PL_EV_RECOVERED) return; /* the new one is the least of them */
        if (i == PL_EVENTS) {
            i = 0; /* all must be acted on: the oldest goes, and C# hears that one did */
            atomic_fetch_add_explicit(&r->ev_losses_dropped, 1, memory_order_relaxed);
        }
        for (; i > 0; i--) r->events[(r->ev_head + i) % PL_EVENTS] = r->events[(r->ev_head + i - 1) % PL_EVENTS];
        r->ev_head = (r->ev_head + 1) % PL_EVENTS;
        r->ev_count--;
    }
    struct pl_event *e = &r->events[(r->ev_head + r->ev_count) % PL_EVENTS];
    e->page = page;
    e->frame = frame;
    e->kind = kind;
    r->ev_count++;
}

/* ---- process-wide API ---- */

PL_EXPORT void pl_set_map_budget(int64_t budget) { atomic_store(&map_budget, budget); }
PL_EXPORT int64_t pl_map_budget(void) { return atomic_load(&map_budget); }
PL_EXPORT int64_t pl_maps_in_use(void) { return atomic_load(&maps_in_use); }

/* ---- region lifetime ---- */

/* Reserves a region of `pages` guest pages, all unbacked, whose frames come from `arena` and carry
 * `owner` (the VM id) in the frame table. */
PL_EXPORT int pl_region_create(struct pl_arena *arena, int32_t owner, uint64_t pages, uint32_t pool_capacity, int *out_id,
                               void **out_base)
{
    if (!arena || pages == 0 || pages > (1ull << 32) || pool_capacity == 0 || owner <= 0) return PL_EINVAL;
    ENTER_ARENA(arena);
    if (take_budget(1) != 0) return PL_EMAPLIMIT;
    uint32_t group_capacity = (uint32_t)(pages / 2 + 1);
    size_t tables = sizeof(struct pl_region) + pages * (3 * sizeof(uint32_t) + 2 * sizeof(uint64_t) + 1) +
                    (size_t)pool_capacity * sizeof(uint32_t) + (size_t)group_capacity * sizeof(struct pl_group) +
                    PL_EVENTS * sizeof(struct pl_event) + 64;
#ifdef _WIN32
    tables += pages; /* view_mapped[] */
#endif
    tables = (tables + page_size - 1) / page_size * page_size;
    uint8_t *mem = os_tables_alloc(tables);
    if (mem == NULL) {
        int e = os_last_error();
        atomic_fetch_sub(&maps_in_use, 1);
        return e;
    }
    struct pl_region *r = (struct pl_region *)mem;
    r->arena = arena;
    r->owner = owner;
    r->pages = pages;
    uint8_t *at = mem + ((sizeof *r + 7) & ~(size_t)7);
    r->disk_off = (int64_t *)at;           at += pages * sizeof(int64_t);
    r->hash = (uint64_t *)at;              at += pages * sizeof(uint64_t);
    r->events = (struct pl_event *)at;     at += PL_EVENTS * sizeof(struct pl_event);
    r->groups = (struct pl_group *)at;     at += (size_t)group_capacity * sizeof(struct pl_group);
    r->state = (_Atomic uint32_t *)at;     at += pages * sizeof(uint32_t);
    r->p2m = (_Atomic uint32_t *)at;       at += pages * sizeof(uint32_t);
    r->group_of = (uint32_t *)at;          at += pages * sizeof(uint32_t);
    r->pool = (uint32_t *)at;              at += (size_t)pool_capacity * sizeof(uint32_t);
    r->flags = at;                         at += pages;
#ifdef _WIN32
    r->view_mapped = at;
#endif
    r->group_capacity = group_capacity;
    r->disk = -1;
    r->swap = -1;
    r->frame_limit = UINT64_MAX;
    r->fault_around = 1;
    r->pool_capacity = pool_capacity;
    r->maps = 1;
    r->tables_bytes = tables;
    for (uint64_t i = 0; i < pages; i++) {
        atomic_store_explicit(&r->p2m[i], PL_NO_FRAME, memory_order_relaxed);
        r->group_of[i] = PL_NO_GROUP;
        r->disk_off[i] = -1;
    }
    for (uint32_t i = 0; i < group_capacity; i++) r->groups[i].parity_frame = PL_NO_FRAME;
    /* Counted in the arena before its range exists: from here on the arena cannot be destroyed under it. */
    atomic_fetch_add(&arena->regions, 1);
    int rc = place_region(r);
    if (rc != 0) {
        atomic_fetch_sub(&arena->regions, 1);
        os_tables_free(mem, tables);
        atomic_fetch_sub(&maps_in_use, 1);
        return rc;
    }
    for (int i = 0; i < PL_MAX_REGIONS; i++) {
        struct pl_slot *s = &pl_slots[i];
        struct pl_region *expected = NULL;
        r->slot = s;
        if (!atomic_compare_exchange_strong(&s->region, &expected, r)) continue;
        uint32_t gen = atomic_load(&s->gen);
        if (gen == 0 || gen >= (1u << 23)) atomic_store(&s->gen, gen = 1); /* ids stay positive ints */
        atomic_store(&s->bytes, pages * page_size);
        atomic_store(&s->base, (uintptr_t)r->base);
        *out_id = (int)(gen << 8 | (uint32_t)i);
        *out_base = r->base;
        return 0;
    }
    unplace_region(r);
    atomic_fetch_sub(&arena->regions, 1);
    os_tables_free(mem, tables);
    atomic_fetch_sub(&maps_in_use, 1);
    return PL_EFULL;
}

/* Gives back the frames of pages [from, to) and runs of frames: a poisoned frame is retired, any other
 * frame is punched and freed (runs of consecutive frames in one call). The guest views are gone. */
static void free_frames(struct pl_region *r, const uint32_t *frames, uint64_t n, const _Atomic uint32_t *states,
                        int views_gone)
{
    struct pl_arena *a = r->arena;
    for (uint64_t i = 0; i < n;) {
        uint32_t f = frames[i];
        uint32_t st = states ? atomic_load_explicit(&states[i], memory_order_relaxed) : PL_BACKED;
        if (f == PL_NO_FRAME) { i++; continue; }
        if (st == PL_POISONED) { arena_retire(r, f); i++; continue; }
        if (st == PL_SHARED) { share_put(a, f); i++; continue; } /* one sharer fewer; the frame is not ours */
        uint64_t run = 1;
        while (i + run < n && frames[i + run] == f + run &&
               (!states || (atomic_load_explicit(&states[i + run], memory_order_relaxed) != PL_POISONED &&
                            atomic_load_explicit(&states[i + run], memory_order_relaxed) != PL_SHARED)))
            run++;
        /* Frames a stale view may still map are never handed to another VM: retired. */
        int rc = views_gone ? os_discard(a, f, (uint32_t)run) : -1;
        pl_lock(&a->lock);
        for (uint64_t k = 0; k < run; k++) {
            /* A frame that could not be punched may hold this VM's data: retire it rather than free it. */
            arena_set(a, f + (uint32_t)k, rc == 0 ? PL_F_FREE : PL_F_RETIRED, 0);
            r->owned--;
        }
        pl_unlock(&a->lock);
        i += run;
    }
}

/* Unregisters a region, waits until no call or handler is inside it, quarantines its guest memory
 * (the views go, the range stays reserved and inaccessible: see LIFETIMES) and gives every frame back
 * (poisoned ones retired). Parity frames are the caller's (PARITY state) and stay. */
PL_EXPORT int pl_region_destroy(int id)
{
    if (id <= 0) return PL_ENOREGION;
    struct pl_slot *s = &pl_slots[id & (PL_MAX_REGIONS - 1)];
    struct pl_region *r = atomic_load(&s->region);
    if (!r || r == PL_DYING || atomic_load(&s->gen) != (uint32_t)id >> 8) return PL_ENOREGION;
    /* The slot stays taken (DYING) until the generation has moved on, so no create can reuse it and
     * hand out the id being destroyed. */
    if (!atomic_compare_exchange_strong(&s->region, &r, PL_DYING)) return PL_ENOREGION;
    log_quarantined(r);
    atomic_store(&s->base, 0);
    atomic_store(&s->bytes, 0);
    while (atomic_load(&s->inside) != 0) os_yield();
    /* No view of a frame may outlive this: a frame freed below may be another VM's next. If the range
     * cannot be made a hole, it is made inaccessible; if not even that, its frames are retired. */
    int views_gone = os_quarantine(r) == 0;
    if (!views_gone) {
        views_gone = protect_pages(r, 0, r->pages, PROT_NONE) == 0;
        say(views_gone ? "could not quarantine a destroyed region; its views are inaccessible instead"
                       : "could not quarantine a destroyed region; its frames are retired", (uint64_t)r->owner, 0);
    }
    free_frames(r, (const uint32_t *)r->p2m, r->pages, r->state, views_gone);
    for (uint32_t i = 0; i < r->pool_count; i++) {
        uint32_t f = r->pool[(r->pool_head + i) % r->pool_capacity];
        free_frames(r, &f, 1, NULL, 1); /* never mapped */
    }
    atomic_fetch_sub(&maps_in_use, r->maps - quarantine_maps(r));
    atomic_fetch_sub(&r->arena->regions, 1); /* the last use of the arena */
    atomic_fetch_add(&s->gen, 1); /* the old id is stale from here on */
    os_tables_free(r, r->tables_bytes);
    atomic_store(&s->region, NULL); /* only now may a create take the slot */
    return 0;
}

/* Frames an owner's regions hold in `arena` (mapped, pooled, or being reused by host swap). */
PL_EXPORT int64_t pl_arena_owned(struct pl_arena *a, int32_t owner)
{
    ENTER_ARENA(a);
    int64_t n = 0;
    for (int i = 0; i < PL_MAX_REGIONS; i++) {
        struct pl_region *r = region_enter((int)(atomic_load(&pl_slots[i].gen) << 8 | (uint32_t)i));
        if (!r) continue;
        if (r->arena == a && r->owner == owner) {
            pl_lock(&a->lock);
            n += r->owned;
            pl_unlock(&a->lock);
        }
        region_leave(&r);
    }
    return n;
}

/* Frames one region holds: pl_arena_owned for the region at hand, without a walk of every slot (the
 * scheduler asks for every VM's count on each demand-pool refill). */
PL_EXPORT int64_t pl_region_owned(int id)
{
    ENTER_REGION(r, id);
    pl_lock(&r->arena->lock);
    int64_t n = r->owned;
    pl_unlock(&r->arena->lock);
    return n;
}

/* Read-only views of the tables for C#: valid while the caller keeps the region alive. */
PL_EXPORT int pl_region_tables(int id, uint32_t **state, uint32_t **p2m)
{
    ENTER_REGION(r, id);
    *state = (uint32_t *)r->state;
    *p2m = (uint32_t *)r->p2m;
    return 0;
}

PL_EXPORT int64_t pl_region_maps(int id)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    int64_t m = r->maps;
    pl_unlock(&r->lock);
    return m;
}

/* counters[0..PL_COUNTERS) in struct pl_counters order. */
PL_EXPORT int pl_region_counters(int id, uint64_t *out, int n)
{
    ENTER_REGION(r, id);
    const _Atomic uint64_t *c = &r->counters.demand_faults;
    for (int i = 0; i < n && i < PL_COUNTERS; i++) out[i] = atomic_load_explicit(&c[i], memory_order_relaxed);
    return 0;
}

/* Past `limit` frames the handler host-swaps one of the VM's pages before it takes a free frame. */
PL_EXPORT int pl_set_frame_limit(int id, uint64_t limit)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    r->frame_limit = limit;
    pl_unlock(&r->lock);
    return 0;
}

/* A demand fault maps up to `pages` never-used pages of its aligned block of that many (1: only its own).
 * A power of two, at most PL_MAX_AROUND. */
PL_EXPORT int pl_set_fault_around(int id, uint32_t pages)
{
    if (pages == 0 || pages > PL_MAX_AROUND || (pages & (pages - 1)) != 0) return PL_EINVAL;
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    r->fault_around = pages;
    pl_unlock(&r->lock);
    return 0;
}

/* The host swap file (fd / HANDLE, kept open by the caller while the region lives); -1: no host swap. */
PL_EXPORT int pl_set_host_swap(int id, intptr_t file)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    r->swap = file;
    pl_unlock(&r->lock);
    return 0;
}

/* What the handler did that C#, not the handler, must finish: up to cap events, oldest first. */
PL_EXPORT int pl_events_take(int id, struct pl_event *out, uint32_t cap)
{
    ENTER_REGION(r, id);
    struct pl_event local[64];
    if (cap > 64) cap = 64; /* copied out after the lock: `out` is caller memory */
    pl_lock(&r->lock);
    uint32_t n = 0;
    while (n < cap && r->ev_count > 0) {
        local[n++] = r->events[r->ev_head];
        r->ev_head = (r->ev_head + 1) % PL_EVENTS;
        r->ev_count--;
    }
    pl_unlock(&r->lock);
    memcpy(out, local, n * sizeof *local);
    return (int)n;
}

/* Contained, SharedLost or Reported events the full ring had to drop (push_event): when it is not 0, C#
 * finds the pages they were about by their lost flags (pl_page_flags). */
PL_EXPORT int64_t pl_events_losses_dropped(int id)
{
    ENTER_REGION(r, id);
    return (int64_t)atomic_load_explicit(&r->ev_losses_dropped, memory_order_relaxed);
}

PL_EXPORT int pl_page_flags(int id, uint64_t page)
{
    ENTER_REGION(r, id);
    if (page >= r->pages) return PL_EINVAL;
    return r->flags[page];
}

/* ---- mapping ---- */

/* Pages [first, first+count) lose their frames and, with frames != NULL, take frames[i] (HELD, already
 * mapped there by change_pages) instead. Each page leaves its parity group, disk copy and flags; a
 * poisoned frame is retired (and C# told); every other old frame becomes HELD for the caller and every
 * new frame the VM's (GUEST), under one hold of the arena lock per 64 pages (not two per page).
 * old_out[i] gets what the caller now holds for page i (PL_NO_FRAME if nothing). p2m and state are not
 * stored here: the caller stores them (set_page) afterwards. Caller holds the region lock. */
static void swap_frames(struct pl_region *r, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out)
{
    struct pl_arena *a = r->arena;
    uint8_t *flags = r->flags;
    int64_t *disk_off = r->disk_off;
    uint32_t held[64]; /* the old frames that go back to the caller, 64 pages at a time */
    for (uint64_t at = 0; at < count; at += 64) {
        uint64_t n = count - at < 64 ? count - at : 64;
        for (uint64_t k = 0; k < n; k++) {
            uint64_t g = first + at + k;
            uint32_t old = fr_of(r, g);
            if (r->group_of[g] != PL_NO_GROUP) leave_group(r, g);
            disk_off[g] = -1;
            flags[g] &= PL_PF_USED; /* the page's history stays: fault-around never refills it */
            if (old != PL_NO_FRAME && st_of(r, g) == PL_POISONED) {
                arena_retire(r, old); /* takes the arena lock itself (rare: an unmap or remap of a poisoned page) */
                push_event(r, g, old, PL_EV_CONTAINED);
                old = PL_NO_FRAME;
            } else if (old != PL_NO_FRAME && st_of(r, g) == PL_SHARED) {
                share_put(a, old); /* the frame stays shared by the others (or dies): never the caller's */
                r->shared--;
                old = PL_NO_FRAME;
            }
            held[k] = old;
            if (old_out) old_out[at + k] = old;
        }
        pl_lock(&a->lock);
        r->owned -= (int64_t)arena_set_many(a, held, n, PL_F_GUEST, PL_F_HELD, 0);
        if (frames) r->owned += (int64_t)arena_set_many(a, frames + at, n, PL_F_HELD, PL_F_GUEST, r->owner);
        pl_unlock(&a->lock);
    }
}

/* Maps pages [first, first+count) onto HELD frames[] (they become the VM's), read-write. Old frames go
 * to old_out (PL_NO_FRAME where there was none, or where a poisoned frame was retired). With
 * PL_MAP_BACK every page must be unbacked (PL_ESTATE otherwise). All or nothing. */
PL_EXPORT int pl_map(int id, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out, uint32_t flags)
{
    ENTER_REGION(r, id);
    if (count == 0 || first >= r->pages || count > r->pages - first) return PL_EINVAL;
    pl_lock(&r->lock);
    /* Reserved until swap_frames makes them the VM's: a racing release of the same frames is refused. */
    if (!arena_reserve_held(r->arena, frames, count)) { pl_unlock(&r->lock); return PL_ESTATE; }
    int rc = 0;
    for (uint64_t i = 0; rc == 0 && (flags & PL_MAP_BACK) && i < count; i++)
        if (st_of(r, first + i) != PL_UNBACKED) rc = PL_ESTATE;
    if (rc == 0) rc = change_pages(r, first, count, PL_BACKED, frames, 0, 0);
    if (rc == 0) {
        swap_frames(r, first, count, frames, old_out);
        for (uint64_t i = 0; i < count; i++) set_page(r, first + i, frames[i], PL_BACKED);
    } else {
        arena_unreserve(r->arena, frames, count);
    }
    pl_unlock(&r->lock);
    return rc;
}

/* Unbacks pages [first, first+count): they become holes again (a later touch is a demand-zero fault).
 * Old frames go to old_out as in pl_map. */
PL_EXPORT int pl_unmap(int id, uint64_t first, uint64_t count, uint32_t *old_out)
{
    ENTER_REGION(r, id);
    if (count == 0 || first >= r->pages || count > r->pages - first) return PL_EINVAL;
    pl_lock(&r->lock);
    int rc = change_pages(r, first, count, PL_UNBACKED, NULL, PL_KEEP_FRAME, 0);
    if (rc == 0) {
        swap_frames(r, first, count, NULL, old_out);
        for (uint64_t i = 0; i < count; i++) {
            set_page(r, first + i, PL_NO_FRAME, PL_UNBACKED);
            r->flags[first + i] |= PL_PF_USED; /* the host said it holds nothing: only its own touch backs it */
        }
    }
    pl_unlock(&r->lock);
    return rc;
}

/* Gives the demand pool HELD frames (each punched, hence zero); they become the VM's. Returns how many
 * fit; the rest stay HELD. */
PL_EXPORT int pl_pool_push(int id, const uint32_t *frames, uint32_t n)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    if (!arena_reserve_held(r->arena, frames, n)) { pl_unlock(&r->lock); return PL_ESTATE; }
    uint32_t pushed = 0;
    while (pushed < n && r->pool_count < r->pool_capacity) {
        arena_give_region(r, frames[pushed]); /* commits the reservation */
        r->pool[(r->pool_head + r->pool_count) % r->pool_capacity] = frames[pushed++];
        r->pool_count++;
    }
    arena_unreserve(r->arena, frames + pushed, n - pushed); /* the rest stay the caller's */
    pl_unlock(&r->lock);
    return (int)pushed;
}

/* Takes up to cap frames back out of the pool (newest first); they become HELD. Returns how many. */
PL_EXPORT int pl_pool_take(int id, uint32_t *out, uint32_t cap)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    uint32_t n = 0;
    while (n < cap && r->pool_count > 0) {
        r->pool_count--;
        out[n] = r->pool[(r->pool_head + r->pool_count) % r->pool_capacity];
        arena_take_region(r, out[n++], PL_F_HELD);
    }
    pl_unlock(&r->lock);
    return (int)n;
}

PL_EXPORT int pl_pool_count(int id)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    int n = (int)r->pool_count;
    pl_unlock(&r->lock);
    return n;
}

/* ---- working-set sampling ---- */

/* Makes BACKED pages among pages[] PROT_NONE (SAMPLED) and starts their sampling period. Returns how many. */
PL_EXPORT int pl_sample(int id, const uint64_t *pages, uint32_t n)
{
    ENTER_REGION(r, id);
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= r->pages) return PL_EINVAL;
    pl_lock(&r->lock);
    int sampled = 0, rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        uint64_t g = pages[i];
        if (st_of(r, g) != PL_BACKED) continue;
        if ((rc = change_pages(r, g, 1, PL_SAMPLED, NULL, PL_KEEP_FRAME, 0)) != 0) break;
        r->flags[g] = (uint8_t)((r->flags[g] & ~PL_PF_TOUCHED) | PL_PF_SAMPLING);
        atomic_store_explicit(&r->state[g], PL_SAMPLED, memory_order_release);
        sampled++;
    }
    pl_unlock(&r->lock);
    return rc != 0 && sampled == 0 ? rc : sampled;
}

/* Ends a sampling period. touched[i] = 1 if the guest touched pages[i] since pl_sample, 0 if not (a
 * still-SAMPLED page is restored to BACKED), 2 if the page left the sample without a guest touch
 * (the host unbacked, remapped or swapped it: not activity). Returns the count of 1s. */
PL_EXPORT int pl_sample_collect(int id, const uint64_t *pages, uint32_t n, uint8_t *touched)
{
    ENTER_REGION(r, id);
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= r->pages) return PL_EINVAL;
    int count = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t g = pages[i];
        uint8_t t;
        pl_lock(&r->lock);
        uint8_t f = r->flags[g];
        if (!(f & PL_PF_SAMPLING)) {
            t = 2;
        } else if (st_of(r, g) == PL_SAMPLED) {
            /* Restoring usually merges VMAs back, but between two still-sampled neighbours it splits
             * one more. It must not fail for want of budget, so it is forced. */
            if (change_pages(r, g, 1, PL_BACKED, NULL, PL_KEEP_FRAME, 1) == 0)
                atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
            t = 0;
        } else {
            t = (f & PL_PF_TOUCHED) ? 1 : 2;
        }
        r->flags[g] = (uint8_t)(f & ~(PL_PF_SAMPLING | PL_PF_TOUCHED));
        pl_unlock(&r->lock);
        touched[i] = t; /* caller memory: written outside the lock */
        count += t == 1;
    }
    return count;
}
