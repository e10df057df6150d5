/* check.c: consistency checks of the engine's own tables, recomputed from scratch, for tests and the
 * anomaly campaign: the arena's free bitmap, counts and sharer totals against its frame-state table, and
 * a region's mapping count, frames, pool and parity groups against its page tables. Reads only. */
#include "pagelab.h"
#include <stdarg.h>
#include <stdio.h>

struct problems {
    char text[512]; /* the first problem found */
    int n;
};

static void problem(struct problems *p, const char *fmt, ...)
{
    if (p->n++ != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text, sizeof p->text, fmt, ap);
    va_end(ap);
}

/* Copied out after every lock is dropped: `why` is caller memory. */
static int report(const struct problems *p, char *why, uint32_t cap)
{
    if (cap) snprintf(why, cap, "%s", p->n ? p->text : "");
    return p->n;
}

static void check_arena_locked(struct pl_arena *a, struct problems *p)
{
    int64_t counts[PL_F_STATES] = {0}, share_pages = 0;
    for (uint32_t f = 0; f < a->frames; f++) {
        uint32_t st = atomic_load_explicit(&a->fstate[f], memory_order_relaxed);
        int free_bit = (a->free_bits[f / 64] >> (f % 64)) & 1;
        if (st >= PL_F_STATES) { problem(p, "frame %u has state %u", f, st); continue; }
        counts[st]++;
        if (free_bit != (st == PL_F_FREE)) problem(p, "frame %u is state %u but its free bit is %d", f, st, free_bit);
        if (st != PL_F_GUEST && atomic_load_explicit(&a->owner[f], memory_order_relaxed) != 0)
            problem(p, "frame %u is state %u but has owner %d", f, st, atomic_load_explicit(&a->owner[f], memory_order_relaxed));
        if (st == PL_F_GUEST && atomic_load_explicit(&a->owner[f], memory_order_relaxed) <= 0) problem(p, "guest frame %u has no owner", f);
        if (st == PL_F_SHARED) {
            uint32_t n = a->sharers[f] & ~PL_SHARE_DYING;
            if (n == 0) problem(p, "shared frame %u has no sharer", f);
            share_pages += n;
        } else if (a->sharers[f] != 0) {
            problem(p, "frame %u is state %u but counts %u sharers", f, st, a->sharers[f]);
        }
    }
    for (int s = 0; s < PL_F_STATES; s++)
        if (counts[s] != a->counts[s]) problem(p, "%lld frames are state %d but the count says %lld", (long long)counts[s], s, (long long)a->counts[s]);
    if (a->hint > a->frames) problem(p, "free hint %u past the arena's %u frames", a->hint, a->frames);
    else if (a->hint > 0 && a->counts[PL_F_FREE] > 0) {
        for (uint32_t f = 0; f < a->hint; f++)
            if ((a->free_bits[f / 64] >> (f % 64)) & 1) { problem(p, "free frame %u below the free hint %u", f, a->hint); break; }
    }
    if (share_pages != a->share_pages) problem(p, "shared frames count %lld sharers in all, the total says %lld", (long long)share_pages, (long long)a->share_pages);
}

/* The arena's free bitmap, per-state counts, owners and sharer totals against its frame-state table.
 * Returns how many problems (0: consistent); the first is described in why (up to cap bytes). */
PL_EXPORT int pl_check_arena(struct pl_arena *a, char *why, uint32_t cap)
{
    struct problems p = {{0}, 0};
    pl_lock(&a->lock);
    check_arena_locked(a, &p);
    pl_unlock(&a->lock);
    return report(&p, why, cap);
}

/* As region.c's mapping model sees a page: 0 a hole, else 1 + its protection. */
static uint32_t kind_of(uint32_t st) { return st == PL_UNBACKED || st == PL_SWAPPED ? 0 : 1 + (uint32_t)prot_of(st); }

/* Region `id`'s tables against each other and the arena: its mapping count recounted from the page
 * states and frames, every page with a frame exactly when its state has one, every mapped frame and pool
 * frame the region's (GUEST, its owner; SHARED for a shared page), its frame and shared-page counts, its
 * parity groups' membership. Returns how many problems (the first in why), or PL_ENOREGION. */
PL_EXPORT int pl_check_region(int id, char *why, uint32_t cap)
{
    ENTER_REGION(r, id);
    struct problems p = {{0}, 0};
    struct pl_arena *a = r->arena;
    pl_lock(&r->lock);
    pl_lock(&a->lock);
    int64_t maps = 1, owned = 0, shared = 0;
    for (uint64_t g = 0; g < r->pages; g++) {
        uint32_t st = st_of(r, g), f = fr_of(r, g);
        if (st > PL_SHARED) { problem(&p, "page %llu has state %u", (unsigned long long)g, st); continue; }
        if (g > 0) {
            uint32_t k0 = kind_of(st_of(r, g - 1)), k1 = kind_of(st);
            maps += k0 != k1 || (k1 != 0 && f != fr_of(r, g - 1) + 1);
        }
        if ((kind_of(st) == 0) != (f == PL_NO_FRAME)) {
            problem(&p, "page %llu is state %u with frame %u", (unsigned long long)g, st, f);
            continue;
        }
        if (f == PL_NO_FRAME) continue;
        if (f >= a->frames) { problem(&p, "page %llu maps frame %u past the arena", (unsigned long long)g, f); continue; }
        uint32_t fs = atomic_load_explicit(&a->fstate[f], memory_order_relaxed);
        if (st == PL_SHARED) {
            shared++;
            if (fs != PL_F_SHARED) problem(&p, "shared page %llu maps frame %u in state %u", (unsigned long long)g, f, fs);
        } else {
            owned++;
            if (fs != PL_F_GUEST || atomic_load_explicit(&a->owner[f], memory_order_relaxed) != r->owner)
                problem(&p, "page %llu maps frame %u in state %u of owner %d", (unsigned long long)g, f, fs,
                        atomic_load_explicit(&a->owner[f], memory_order_relaxed));
        }
        uint32_t gi = r->group_of[g];
        if (gi != PL_NO_GROUP && (gi >= r->group_capacity || r->groups[gi].parity_frame == PL_NO_FRAME))
            problem(&p, "page %llu is in group %u, which is free", (unsigned long long)g, gi);
    }
    for (uint32_t i = 0; i < r->pool_count; i++) {
        uint32_t f = r->pool[(r->pool_head + i) % r->pool_capacity];
        owned++;
        if (f >= a->frames || atomic_load_explicit(&a->fstate[f], memory_order_relaxed) != PL_F_GUEST ||
            atomic_load_explicit(&a->owner[f], memory_order_relaxed) != r->owner)
            problem(&p, "pool frame %u is not the region's", f);
    }
    for (uint32_t gi = 0; gi < r->group_capacity; gi++) {
        const struct pl_group *grp = &r->groups[gi];
        if (grp->parity_frame == PL_NO_FRAME) continue;
        if (atomic_load_explicit(&a->fstate[grp->parity_frame], memory_order_relaxed) != PL_F_PARITY)
            problem(&p, "group %u's parity frame %u is not PARITY", gi, grp->parity_frame);
        for (uint32_t i = 0; i < grp->n; i++) {
            uint32_t g = grp->members[i];
            if (g >= r->pages || r->group_of[g] != gi) problem(&p, "group %u lists page %u, which is not in it", gi, g);
            else if ((grp->covered >> i & 1) && st_of(r, g) != PL_TRACKED && st_of(r, g) != PL_POISONED)
                problem(&p, "group %u covers page %u, which is state %u", gi, g, st_of(r, g));
        }
    }
    if (maps != r->maps) problem(&p, "the tables make %lld mappings, the count says %lld", (long long)maps, (long long)r->maps);
    if (owned != r->owned) problem(&p, "the tables hold %lld frames (mapped and pooled), the count says %lld", (long long)owned, (long long)r->owned);
    if (shared != r->shared) problem(&p, "%lld pages are shared, the count says %lld", (long long)shared, (long long)r->shared);
    pl_unlock(&a->lock);
    pl_unlock(&r->lock);
    return report(&p, why, cap);
}
