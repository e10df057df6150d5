/* api.c: the exported calls that change a VM's pages from C# -- map, unmap, the demand pool, working-set
 * sampling, region destroy -- and the handlers' installation. The top floor: each call enters its region
 * and uses the mechanisms below (mappings, frames, parity groups, sharing) under the region's lock. */
#include "pagelab.h"

static _Atomic int installed;

#define PL_MAP_BACK 1u            /* pl_map: every page must be unbacked (checked under the lock) */

/* Gives back the frames of pages [from, to) and runs of frames: a poisoned frame is retired, any other
 * frame is made zero (frame_zero: punched, or zeroed if the punch fails) and freed, runs of consecutive
 * frames in one call; if the guest views could not be made to go, retired instead. */
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
        if (views_gone) frame_zero(a, f, (uint32_t)run);
        else (void)os_discard(a, f, (uint32_t)run); /* a failure only costs memory */
        pl_lock(&a->lock);
        for (uint64_t k = 0; k < run; k++) {
            arena_set(a, f + (uint32_t)k, views_gone ? PL_F_FREE : PL_F_RETIRED, 0);
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

/* Flags of the SIGBUS handler we chain to (for `pagelab info`), or -1 before install. */
PL_EXPORT int64_t pl_previous_bus_flags(void) { return pl_installed() ? mce_previous_flags() : -1; }

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
