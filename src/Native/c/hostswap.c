/* hostswap.c: where a fault gets a frame. The VM's demand pool first; then a free arena frame while the
 * VM holds fewer frames than its limit; then one of the VM's own pages swapped out to the host swap file
 * (what ESX does when ballooning is not enough), its frame reused; then a free frame past the limit;
 * last, on a full arena, a page of another VM swapped out and its frame handed over. Swapped pages come
 * back the same way on their next touch. Callers hold the region lock. */
#include "pagelab.h"

/* Victims a failed swap write may be followed by in one search (a full disk refuses new slots while
 * old ones still take writes: another page may go). */
#define PL_SWAP_WRITE_TRIES 8

/* May page v of r be host-swapped out (or, at the mapping budget, given up) to free its frame? Only a
 * plain guest page: never a protected, poisoned, shared or host-swapped one, nor the faulting page; nor
 * one the kernel poisoned: its frame is not its content, and written to swap it would come back as good
 * data. It stays mapped, so the guest's touch takes the SIGBUS (mce.c). A SAMPLED page's mapping cannot
 * be probed (PROT_NONE): its flag alone keeps it. */
static int victim_ok(struct pl_region *r, uint64_t v, uint64_t except)
{
    uint32_t st = st_of(r, v);
    if (v == except || (st != PL_BACKED && st != PL_SAMPLED)) return 0;
    return !((r->flags[v] & PL_PF_KPOISON) && (st == PL_SAMPLED || kernel_poisoned(r, v)));
}

/* Swaps victim v out to the host swap file, at v * page_size. The page becomes a hole first, so once
 * that call returns no CPU can still write the frame through the guest view and the copy written is
 * final. 0 and its frame (still the VM's) in *out; on failure v is as it was. */
static int swap_out(struct pl_region *r, uint64_t v, int force, uint32_t *out)
{
    uint32_t st = st_of(r, v), f = fr_of(r, v);
    int rc = change_pages(r, v, 1, PL_SWAPPED, NULL, PL_KEEP_FRAME, force);
    if (rc != 0) return rc;
    set_page(r, v, PL_NO_FRAME, PL_SWAPPED);
    if ((rc = os_write_file(r->swap, frame_bytes(r->arena, f), page_size, (int64_t)(v * page_size))) != 0) {
        /* The swap file refused (disk full): the page keeps its frame and content. The tables take the
         * frame back even if the mapping could not be restored: the handler maps a page again from the
         * tables when its faults repeat. */
        if (change_pages(r, v, 1, st, NULL, f, 1) != 0)
            say("host swap failed and the page could not be mapped back yet", (uint64_t)r->owner, v);
        set_page(r, v, f, st);
        atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
        return rc;
    }
    atomic_fetch_add_explicit(&r->counters.host_swap_outs, 1, memory_order_relaxed);
    *out = f;
    return 0;
}

/* Evicts one victim page of r other than `except` (a clock over the VM's pages) to the host swap file;
 * its frame stays the VM's and goes to *out. A victim whose swap write fails is left as it was and the
 * next one tried (up to PL_SWAP_WRITE_TRIES). Victims whose hole would need mappings past the budget are
 * passed over for ones that need none; only if every victim needs some is the first of them charged
 * past the budget (the budget's headroom below vm.max_map_count is for this). */
static int evict(struct pl_region *r, uint64_t except, uint32_t *out)
{
    if (r->swap < 0) return PL_ENOFRAME;
    uint64_t over = r->pages;
    int failed_writes = 0;
    for (uint64_t tries = 0; tries < r->pages && failed_writes < PL_SWAP_WRITE_TRIES; tries++) {
        uint64_t v = r->clock_hand;
        r->clock_hand = (v + 1) % r->pages;
        if (!victim_ok(r, v, except)) continue;
        int rc = swap_out(r, v, 0, out);
        if (rc == 0) return 0;
        if (rc == PL_EMAPLIMIT) {
            if (over == r->pages) over = v;
        } else {
            failed_writes++;
        }
    }
    if (over < r->pages && failed_writes < PL_SWAP_WRITE_TRIES && swap_out(r, over, 1, out) == 0) return 0;
    return PL_ENOFRAME;
}

/* One page of another VM on r's arena host-swapped out, its frame handed to r (still holding that VM's
 * bytes: the caller zeroes or overwrites it, as for its own victims). VMs past their frame limit first,
 * as ESX reclaims from VMs above their target. The other region's lock is only tried, never waited for:
 * two faults in two VMs, each holding its own lock, would otherwise wait for each other. *busy says a
 * region was skipped because its lock was held (the fault may retry once the holder is done). */
static int evict_elsewhere(struct pl_region *r, uint32_t *out, int *busy)
{
    struct pl_arena *a = r->arena;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < PL_MAX_REGIONS; i++) {
            struct pl_slot *s = &pl_slots[i];
            atomic_fetch_add(&s->inside, 1); /* as region_at: a destroy waits for us, or we see it dying */
            struct pl_region *o = atomic_load(&s->region);
            int rc = PL_ENOFRAME;
            if (o && o != PL_DYING && o != r && o->arena == a && o->swap >= 0 &&
                (pass == 1 || (uint64_t)o->owned > o->frame_limit)) {
                if (!pl_trylock(&o->lock)) {
                    *busy = 1;
                } else {
                    if ((rc = evict(o, o->pages, out)) == 0) {
                        pl_lock(&a->lock);
                        arena_set(a, *out, PL_F_GUEST, r->owner);
                        o->owned--;
                        r->owned++;
                        pl_unlock(&a->lock);
                    }
                    pl_unlock(&o->lock);
                }
            }
            atomic_fetch_sub(&s->inside, 1);
            if (rc == 0) return 0;
        }
    }
    return PL_ENOFRAME;
}

static int take_free(struct pl_region *r, uint32_t *out)
{
    struct pl_arena *a = r->arena;
    pl_lock(&a->lock);
    int rc = arena_take_free(a, out);
    if (rc == 0) {
        arena_set(a, *out, PL_F_GUEST, r->owner);
        r->owned++;
    }
    pl_unlock(&a->lock);
    return rc;
}

static int pool_pop(struct pl_region *r, uint32_t *out)
{
    if (r->pool_count == 0) return PL_ENOFRAME;
    *out = r->pool[r->pool_head];
    r->pool_head = (r->pool_head + 1) % r->pool_capacity;
    r->pool_count--;
    return 0;
}

/* A frame for page g: the VM's (GUEST), mapped nowhere. *zero says whether it already reads as zero
 * (pool and free frames are punched holes; a host-swapped victim's frame still holds its old content).
 * PL_EAGAIN: no frame only because another VM's lock was held (the fault re-runs, the holder finishes);
 * PL_ENOFRAME: none at all. One search per fault: its answer is the fault's. */
int take_frame(struct pl_region *r, uint64_t g, uint32_t *out, int *zero)
{
    *zero = 1;
    if (pool_pop(r, out) == 0) return 0;
    atomic_fetch_add_explicit(&r->counters.pool_empty, 1, memory_order_relaxed);
    int over = (uint64_t)r->owned >= r->frame_limit;
    if (!over && take_free(r, out) == 0) return 0;
    *zero = 0;
    if (evict(r, g, out) == 0) return 0;
    *zero = 1;
    if (take_free(r, out) == 0) {
        if (over) atomic_fetch_add_explicit(&r->counters.overcommits, 1, memory_order_relaxed);
        return 0;
    }
    *zero = 0;
    int busy = 0;
    if (evict_elsewhere(r, out, &busy) == 0) {
        atomic_fetch_add_explicit(&r->counters.taken_from_others, 1, memory_order_relaxed);
        return 0;
    }
    return busy ? PL_EAGAIN : PL_ENOFRAME;
}

/* A zero frame for a page no fault asked for yet (fault-around): the pool's, or a free frame while the VM
 * is under its limit. Never a host swap or an overcommit: those cost more than the fault they would save. */
int take_spare_frame(struct pl_region *r, uint32_t *out)
{
    if (pool_pop(r, out) == 0) return 0;
    if ((uint64_t)r->owned >= r->frame_limit) return PL_ENOFRAME;
    return take_free(r, out);
}

/* A frame take_frame gave that could not be used: back to the pool if it has room and the frame is
 * zero, else made zero (frame_zero) and freed. */
void drop_frame(struct pl_region *r, uint32_t f, int zero)
{
    if (zero && r->pool_count < r->pool_capacity) {
        r->pool_head = (r->pool_head + r->pool_capacity - 1) % r->pool_capacity;
        r->pool[r->pool_head] = f;
        r->pool_count++;
        return;
    }
    frame_zero(r->arena, f, 1);
    arena_take_region(r, f, PL_F_FREE);
}

/* Brings a SWAPPED page back into a frame, read-write. */
int swap_in(struct pl_region *r, uint64_t g)
{
    uint32_t f;
    int zero, rc = take_frame(r, g, &f, &zero);
    if (rc != 0) return rc;
    rc = os_read_file(r->swap, frame_bytes(r->arena, f), page_size, (int64_t)(g * page_size));
    if (rc == 0) rc = fault_map(r, g, PL_BACKED, &f, 1);
    if (rc != 0) {
        drop_frame(r, f, 0);
        return rc;
    }
    set_page(r, g, f, PL_BACKED);
    atomic_fetch_add_explicit(&r->counters.host_swap_ins, 1, memory_order_relaxed);
    return 0;
}

/* The host swaps out up to n of the VM's backed pages now (what the handler does one at a time when
 * it has no frame); their frames go back to the arena. Returns how many. */
PL_EXPORT int pl_host_swap_out(int id, uint32_t n)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    uint32_t done = 0;
    uint32_t f;
    while (done < n && evict(r, r->pages, &f) == 0) {
        drop_frame(r, f, 0);
        done++;
    }
    pl_unlock(&r->lock);
    return (int)done;
}

/* ---- room for a fault's mapping (the mapping budget, region.c) ---- */

/* Would page p's VMA take a page of state st next to it, given the right frame? */
static int joins(struct pl_region *r, uint64_t p, uint32_t st)
{
    uint32_t ps = st_of(r, p);
    return ps != PL_UNBACKED && ps != PL_SWAPPED && prot_of(ps) == prot_of(st) && fr_of(r, p) != PL_NO_FRAME;
}

/* A frame that puts page g (state st) in one VMA with a neighbour: the one after the left neighbour's
 * frame or the one before the right's, taken for r if it waits in r's pool or is free. */
static int take_adjacent(struct pl_region *r, uint64_t g, uint32_t st, uint32_t *out)
{
    struct pl_arena *a = r->arena;
    uint32_t want[2];
    int n = 0;
    if (g > 0 && joins(r, g - 1, st) && fr_of(r, g - 1) + 1 < a->frames) want[n++] = fr_of(r, g - 1) + 1;
    if (g + 1 < r->pages && joins(r, g + 1, st) && fr_of(r, g + 1) > 0) want[n++] = fr_of(r, g + 1) - 1;
    for (int i = 0; i < n; i++) {
        for (uint32_t k = 0; k < r->pool_count; k++) {
            uint32_t at = (r->pool_head + k) % r->pool_capacity;
            if (r->pool[at] != want[i]) continue;
            r->pool[at] = r->pool[r->pool_head]; /* the head takes its place and is popped */
            r->pool_head = (r->pool_head + 1) % r->pool_capacity;
            r->pool_count--;
            *out = want[i];
            return 0;
        }
        pl_lock(&a->lock);
        int is_free = atomic_load_explicit(&a->fstate[want[i]], memory_order_relaxed) == PL_F_FREE;
        if (is_free) {
            arena_set(a, want[i], PL_F_GUEST, r->owner);
            r->owned++;
        }
        pl_unlock(&a->lock);
        if (is_free) {
            *out = want[i];
            return 0;
        }
    }
    return PL_ENOFRAME;
}

/* At the mapping budget with nothing to host-swap: victim v's context ends, as for an uncorrectable
 * error in an unprotected page. Flagged lost before its mapping goes (whoever sees the hole can see
 * why), unbacked, its frame punched and freed, and C# told (PL_EV_MAP_LIMIT) to end the guest context
 * that used it. */
static int end_for_budget(struct pl_region *r, uint64_t v)
{
    uint32_t f = fr_of(r, v);
    uint8_t flags = r->flags[v];
    atomic_store_explicit((_Atomic uint8_t *)&r->flags[v], (uint8_t)(flags | PL_PF_LOST), memory_order_release);
    int rc = change_pages(r, v, 1, PL_UNBACKED, NULL, PL_KEEP_FRAME, 0);
    if (rc != 0) {
        r->flags[v] = flags;
        return rc;
    }
    set_page(r, v, PL_NO_FRAME, PL_UNBACKED);
    /* Out of any sample (it left without a touch), and never refilled by fault-around. */
    r->flags[v] = (uint8_t)((flags & ~(PL_PF_SAMPLING | PL_PF_TOUCHED)) | PL_PF_LOST | PL_PF_USED);
    drop_frame(r, f, 0);
    push_event(r, v, PL_NO_FRAME, PL_EV_MAP_LIMIT);
    atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
    say("mapping budget (vm.max_map_count) spent, no host swap: this page's context ends", (uint64_t)r->owner, v);
    return 0;
}

/* Victim v made a hole to give mappings back: host-swapped (pass 0: its frame freed) or its context
 * ended (pass 1). 0 done; else v is as it was. */
static int give_back(struct pl_region *r, uint64_t v, int pass)
{
    uint32_t f;
    if (pass == 1) return end_for_budget(r, v);
    int rc = swap_out(r, v, 0, &f);
    if (rc == 0) drop_frame(r, f, 0);
    return rc;
}

/* Gives mappings back for fault page g, which needs `need` more than the budget has: a victim whose
 * page, made a hole, merges with a hole beside it (one that gives back `need` at once if there is one,
 * so fewer pages go). Host-swapped if r has a swap file; else, or if every write failed, its context
 * ends (end_for_budget). Never g's neighbours: g's own mapping would cost what they give back.
 * PL_EMAPLIMIT if no page can. */
static int make_room(struct pl_region *r, uint64_t g, int64_t need)
{
    for (int pass = r->swap >= 0 ? 0 : 1; pass < 2; pass++) {
        int failed_writes = 0;
        uint64_t best = r->pages;
        int64_t best_delta = 0;
        for (uint64_t tries = 0; tries < r->pages && failed_writes < PL_SWAP_WRITE_TRIES; tries++) {
            uint64_t v = r->clock_hand;
            r->clock_hand = (v + 1) % r->pages;
            if (!victim_ok(r, v, g) || v + 1 == g || v == g + 1) continue;
            int64_t d = change_delta(r, v, 1, PL_SWAPPED, PL_KEEP_FRAME);
            if (d >= 0) continue;
            if (-d < need) { /* gives some back: kept in case no page gives enough */
                if (d < best_delta) best = v, best_delta = d;
                continue;
            }
            if (give_back(r, v, pass) == 0) return 0;
            failed_writes++;
        }
        if (best < r->pages && give_back(r, best, pass) == 0) return 0;
    }
    return PL_EMAPLIMIT;
}

/* Maps fault page g onto *frame in state st (PL_KEEP_FRAME: a protection change) within the mapping
 * budget, where a fault used to be charged past it until the kernel's mmap failed (ENOMEM at
 * vm.max_map_count) and the process died. Past the budget: a frame that adds no mapping (with
 * may_move, *frame's content is copied there and *frame freed), then victims that give mappings back
 * (make_room). Only when no page can is the budget's headroom below vm.max_map_count used, and said. */
int fault_map(struct pl_region *r, uint64_t g, uint32_t st, uint32_t *frame, int may_move)
{
    int rc = change_pages(r, g, 1, st, NULL, *frame, 0);
    uint32_t alt;
    if (rc == PL_EMAPLIMIT && may_move && *frame != PL_KEEP_FRAME && take_adjacent(r, g, st, &alt) == 0) {
        memcpy(frame_bytes(r->arena, alt), frame_bytes(r->arena, *frame), page_size);
        drop_frame(r, *frame, 0);
        *frame = alt;
        rc = change_pages(r, g, 1, st, NULL, *frame, 0);
    }
    for (int tries = 0; rc == PL_EMAPLIMIT && tries < 4; tries++) {
        int64_t need = change_delta(r, g, 1, st, *frame) - (atomic_load(&map_budget) - atomic_load(&maps_in_use));
        if (make_room(r, g, need > 0 ? need : 1) != 0) break;
        rc = change_pages(r, g, 1, st, NULL, *frame, 0);
    }
    if (rc == PL_EMAPLIMIT) {
        atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
        say("past the mapping budget: no page could give a mapping back (headroom below vm.max_map_count used)",
            (uint64_t)r->owner, g);
        rc = change_pages(r, g, 1, st, NULL, *frame, 1);
    }
    return rc;
}
