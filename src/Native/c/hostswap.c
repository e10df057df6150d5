/* hostswap.c: where a fault gets a frame. The VM's demand pool first; then a free arena frame while the
 * VM holds fewer frames than its limit; then one of the VM's own pages swapped out to the host swap file
 * (what ESX does when ballooning is not enough), its frame reused; then a free frame past the limit;
 * last, on a full arena, a page of another VM swapped out and its frame handed over. Swapped pages come
 * back the same way on their next touch. Callers hold the region lock. */
#include "pagelab.h"

/* Evicts one BACKED (or SAMPLED) page of r other than `except` (a clock over the VM's pages) to the host swap file,
 * at page * page_size. The page becomes a hole first, so once that call returns no CPU can still write
 * the frame through the guest view and the copy written is final. The frame stays the VM's. */
static int evict(struct pl_region *r, uint64_t except, uint32_t *out)
{
    if (r->swap < 0) return PL_ENOFRAME;
    for (uint64_t tries = 0; tries < r->pages; tries++) {
        uint64_t v = r->clock_hand;
        r->clock_hand = (v + 1) % r->pages;
        uint32_t st = st_of(r, v);
        if (v == except || (st != PL_BACKED && st != PL_SAMPLED)) continue; /* never a protected or poisoned page */
        /* Nor one the kernel poisoned: its frame is not its content, and written to swap it would come back
         * as good data. It stays mapped, so the guest's touch takes the SIGBUS (mce.c). A SAMPLED page's
         * mapping cannot be probed (PROT_NONE): its flag alone keeps it. */
        if ((r->flags[v] & PL_PF_KPOISON) && (st == PL_SAMPLED || kernel_poisoned(r, v))) continue;
        uint32_t f = fr_of(r, v);
        if (change_pages(r, v, 1, PL_SWAPPED, NULL, PL_KEEP_FRAME, 1) != 0) continue;
        set_page(r, v, PL_NO_FRAME, PL_SWAPPED);
        if (os_write_file(r->swap, frame_bytes(r->arena, f), page_size, (int64_t)(v * page_size)) != 0) {
            /* The swap file refused (disk full): the page keeps its frame and content. */
            /* The tables take the frame back even if the mapping could not be restored: the handler maps
             * a page again from the tables when its faults repeat. */
            if (change_pages(r, v, 1, st, NULL, f, 1) != 0)
                say("host swap failed and the page could not be mapped back yet", (uint64_t)r->owner, v);
            set_page(r, v, f, st);
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            return PL_ENOFRAME;
        }
        atomic_fetch_add_explicit(&r->counters.host_swap_outs, 1, memory_order_relaxed);
        *out = f;
        return 0;
    }
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
 * (pool and free frames are punched holes; a host-swapped victim's frame still holds its old content). */
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
    r->frame_busy = busy;
    return PL_ENOFRAME;
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
 * zero, else punched and freed. */
void drop_frame(struct pl_region *r, uint32_t f, int zero)
{
    if (zero && r->pool_count < r->pool_capacity) {
        r->pool_head = (r->pool_head + r->pool_capacity - 1) % r->pool_capacity;
        r->pool[r->pool_head] = f;
        r->pool_count++;
        return;
    }
    if (os_discard(r->arena, f, 1) == 0) arena_take_region(r, f, PL_F_FREE);
    else arena_retire(r, f); /* could not be made zero: never hand it out again */
}

/* Brings a SWAPPED page back into a frame, read-write. */
int swap_in(struct pl_region *r, uint64_t g)
{
    uint32_t f;
    int zero, rc = take_frame(r, g, &f, &zero);
    if (rc != 0) return rc;
    rc = os_read_file(r->swap, frame_bytes(r->arena, f), page_size, (int64_t)(g * page_size));
    if (rc == 0) rc = change_pages(r, g, 1, PL_BACKED, NULL, f, 1);
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
