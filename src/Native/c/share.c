/* share.c: content-based page sharing. Shared frames with N sharers (the count lives in the arena's
 * table beside the frame's state), merging a page onto a shared frame after a byte-by-byte compare, the
 * copy-on-write break a write to a shared page takes inside the fault handler, and containment of an
 * error in a shared frame for every sharer. The protocol is at the top of pagelab.h (SHARING). */
#include "pagelab.h"

/* One sharer more for SHARED frame f, unless it is dying (0 sharers or an error reported). Needs no lock. */
static int share_get(struct pl_arena *a, uint32_t f)
{
    int ok = 0;
    pl_lock(&a->lock);
    if (f < a->frames && atomic_load_explicit(&a->fstate[f], memory_order_relaxed) == PL_F_SHARED) {
        uint32_t n = a->sharers[f];
        if (n != 0 && !(n & PL_SHARE_DYING)) {
            a->sharers[f] = n + 1;
            a->share_pages++;
            ok = 1;
        }
    }
    pl_unlock(&a->lock);
    return ok;
}

/* One sharer fewer. The last one makes the frame zero (nobody maps it and nobody may join it: its count
 * is 0) and frees it; a frame with a reported error is retired instead. */
void share_put(struct pl_arena *a, uint32_t f)
{
    pl_lock(&a->lock);
    uint32_t n = a->sharers[f] - 1;
    a->sharers[f] = n;
    a->share_pages--;
    pl_unlock(&a->lock);
    if ((n & ~PL_SHARE_DYING) != 0) return;
    int dying = (n & PL_SHARE_DYING) != 0;
    if (dying) (void)os_discard(a, f, 1); /* retired: its content is never used again; a failure only costs memory */
    else frame_zero(a, f, 1);
    pl_lock(&a->lock);
    a->sharers[f] = 0;
    a->share_zero[f] = 0;
    arena_set(a, f, dying ? PL_F_RETIRED : PL_F_FREE, 0);
    pl_unlock(&a->lock);
}

static int page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < page_size / 8; i++)
        if (w[i]) return 0;
    return 1;
}

/* A write to a SHARED page (handler or pl_unshare; region lock held): the content is copied into a frame
 * found as for a demand fault, mapped read-write, and the page drops its sharer. A zero frame is not
 * copied (the new frame is zeroed); a frame whose bytes no longer match the hash recorded when it became
 * shared holds an error, as does one the caller says is bad (frame_bad: hardware poison, never read):
 * its bytes are never copied, the page gets a zero frame, is flagged lost and C# is told
 * (PL_EV_SHARED_LOST), which reports the frame for its other sharers. 0 done, else the status of the
 * frame search or the mapping (PL_EAGAIN: another VM's lock was held; retry). */
static int cow(struct pl_region *r, uint64_t g, int frame_bad)
{
    struct pl_arena *a = r->arena;
    uint32_t shared = fr_of(r, g), f;
    int zero;
    /* Stable while this page holds its sharer: written under the arena lock before the page became SHARED. */
    int zero_frame = a->share_zero[shared];
    int bad = !zero_frame && (frame_bad || page_hash(frame_bytes(a, shared), page_size) != a->share_hash[shared]);
    int rc = take_frame(r, g, &f, &zero); /* may host-swap another page of r: never a SHARED one */
    if (rc != 0) return rc;
    if (zero_frame || bad) {
        if (!zero) memset(frame_bytes(a, f), 0, page_size); /* a host-swapped victim's old content */
    } else {
        memcpy(frame_bytes(a, f), frame_bytes(a, shared), page_size);
    }
    /* Flagged lost before the zero frame is mapped, as contain_in_handler does: whoever sees its zeros can
     * also see why. (The event may follow the map: C# takes events under this region's lock.) */
    uint8_t flags = r->flags[g];
    if (bad) atomic_store_explicit((_Atomic uint8_t *)&r->flags[g], (uint8_t)(flags | PL_PF_LOST), memory_order_release);
    if ((rc = fault_map(r, g, PL_BACKED, &f, 1)) != 0) {
        r->flags[g] = flags;
        drop_frame(r, f, 0);
        return rc;
    }
    set_page(r, g, f, PL_BACKED);
    r->shared--;
    if (bad) {
        push_event(r, g, shared, PL_EV_SHARED_LOST);
        atomic_fetch_add_explicit(&r->counters.contained, 1, memory_order_relaxed);
    }
    share_put(a, shared);
    atomic_fetch_add_explicit(&r->counters.cow_breaks, 1, memory_order_relaxed);
    return 0;
}

int cow_break(struct pl_region *r, uint64_t g) { return cow(r, g, 0); }

/* The kernel says SHARED page g's mapping fails (mce.c; region lock held). The page leaves the frame as on
 * a write: a private copy if the frame still matches its hash (a poison marker on this one mapping), else
 * (or with frame_bad: the physical frame is bad, so it is never read) a zero frame, flagged lost, and
 * PL_EV_SHARED_LOST so C# reports the frame for its other sharers. The new mapping replaces the bad one,
 * so the access that faulted re-runs once and never faults again on it. 0 done, else as cow_break. */
int share_memory_error(struct pl_region *r, uint64_t g, int frame_bad) { return cow(r, g, frame_bad); }

/* Can page g of r be shared? BACKED and unprotected (no parity group, no disk copy, no loss flag), and
 * not poisoned by the kernel: its frame is not its content (a merge would compare bad bytes, a shared
 * frame would spread them, and a read of the marked mapping would fault on a page the handler found
 * readable). */
static int shareable(struct pl_region *r, uint64_t g)
{
    return st_of(r, g) == PL_BACKED && r->group_of[g] == PL_NO_GROUP && r->disk_off[g] < 0 &&
           !(r->flags[g] & (PL_PF_LOST | PL_PF_SAMPLING)) && !kernel_poisoned(r, g);
}

/* ---- API for C# ---- */

/* Opts a region in to (or out of) sharing. Opting out stops new merges; pages already shared stay so. */
PL_EXPORT int pl_set_sharing(int id, int on)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    r->share_ok = on != 0;
    pl_unlock(&r->lock);
    return 0;
}

/* Makes a BACKED page's own frame a SHARED frame with one sharer (the page, now read-only). *frame gets
 * it. PL_ESTATE if the page cannot be shared (see shareable), PL_ENOSHARE if the region did not opt in. */
PL_EXPORT int pl_share_create(int id, uint64_t page, uint32_t *frame)
{
    ENTER_REGION(r, id);
    if (page >= r->pages) return PL_EINVAL;
    struct pl_arena *a = r->arena;
    pl_lock(&r->lock);
    int rc = !r->share_ok ? PL_ENOSHARE : shareable(r, page) ? 0 : PL_ESTATE;
    uint32_t f = fr_of(r, page);
    if (rc == 0) rc = change_pages(r, page, 1, PL_SHARED, NULL, PL_KEEP_FRAME, 0); /* read-only from here */
    if (rc == 0) {
        int zero = page_is_zero(frame_bytes(a, f)); /* read-only now: the content is final */
        uint64_t hash = page_hash(frame_bytes(a, f), page_size);
        pl_lock(&a->lock);
        arena_set(a, f, PL_F_SHARED, 0);
        a->sharers[f] = 1;
        a->share_zero[f] = (uint8_t)zero;
        a->share_hash[f] = hash;
        a->share_pages++;
        r->owned--;
        pl_unlock(&a->lock);
        set_page(r, page, f, PL_SHARED);
        r->shared++;
        atomic_fetch_add_explicit(&r->counters.pages_merged, 1, memory_order_relaxed);
    }
    pl_unlock(&r->lock);
    if (rc == 0) *frame = f; /* caller memory: written outside the lock */
    return rc;
}

/* Merges a BACKED page onto SHARED frame `frame` if their bytes are equal: the page is made read-only,
 * compared byte by byte, then remapped onto the shared frame; its old frame is punched and freed.
 * Returns 1 merged, 0 the bytes differ (the page is left as it was), PL_ESTATE if the page cannot be
 * shared or the frame is not a live shared frame, PL_ENOSHARE if the region did not opt in. */
PL_EXPORT int pl_share_page(int id, uint64_t page, uint32_t frame)
{
    ENTER_REGION(r, id);
    if (page >= r->pages) return PL_EINVAL;
    struct pl_arena *a = r->arena;
    pl_lock(&r->lock);
    int rc = !r->share_ok ? PL_ENOSHARE : shareable(r, page) && fr_of(r, page) != frame ? 0 : PL_ESTATE;
    if (rc == 0 && !share_get(a, frame)) rc = PL_ESTATE; /* from here the frame cannot die */
    if (rc != 0) { pl_unlock(&r->lock); return rc; }
    uint32_t old = fr_of(r, page);
    /* Read-only first, so no write can slip in between the compare and the switch (a writer faults and
     * waits on this region's lock, then finds the page shared and takes its own copy). */
    if ((rc = change_pages(r, page, 1, PL_SHARED, NULL, PL_KEEP_FRAME, 0)) != 0) goto undo_ref;
    set_page(r, page, old, PL_SHARED); /* the handler reads state only under the lock: it never sees this */
    if (memcmp(frame_bytes(a, old), frame_bytes(a, frame), page_size) != 0) {
        rc = 0;
        goto undo_protect;
    }
    if ((rc = change_pages(r, page, 1, PL_SHARED, NULL, frame, 0)) != 0) goto undo_protect;
    set_page(r, page, frame, PL_SHARED);
    r->shared++;
    drop_frame(r, old, 0); /* punched and freed: no other VM ever gets its bytes */
    atomic_fetch_add_explicit(&r->counters.pages_merged, 1, memory_order_relaxed);
    pl_unlock(&r->lock);
    return 1;
undo_protect:
    /* Writable again: forced, since undoing must not fail for want of budget. A failure leaves the page
     * read-only with a BACKED table entry, which the handler repairs on its next fault. */
    (void)change_pages(r, page, 1, PL_BACKED, NULL, PL_KEEP_FRAME, 1);
    set_page(r, page, old, PL_BACKED);
undo_ref:
    pl_unlock(&r->lock);
    share_put(a, frame);
    return rc;
}

/* Gives SHARED pages among [first, first+count) private copies now, as a write would. Returns how many. */
PL_EXPORT int pl_unshare(int id, uint64_t first, uint64_t count)
{
    ENTER_REGION(r, id);
    if (count == 0 || first >= r->pages || count > r->pages - first) return PL_EINVAL;
    int done = 0;
    for (uint64_t g = first; g < first + count; g++) {
        int rc;
        for (int tries = 0;; tries++) { /* another VM's lock held (PL_EAGAIN): not a handler, so let go and retry */
            pl_lock(&r->lock);
            rc = st_of(r, g) != PL_SHARED ? 0 : (rc = cow_break(r, g)) == 0 ? 1 : rc;
            pl_unlock(&r->lock);
            if (rc != PL_EAGAIN || tries == 1000) break;
            os_yield();
        }
        if (rc == PL_EAGAIN) rc = PL_ENOFRAME;
        if (rc < 0) return done ? done : rc;
        done += rc;
    }
    return done;
}

/* Every SHARED page of r on frame f is unbacked (a hole; a touch reads zero); unless the frame was a
 * zero page, it is flagged lost and C# hears of it (PL_EV_SHARED_LOST). A page whose unbacking fails (at
 * the mapping limit every split does) still maps the bad frame read-only: it is flagged lost and
 * announced all the same, so its guest context ends now (a write to it is a copy-on-write, which never
 * copies a frame that fails its hash), and it keeps its sharer, so the frame stays until a later report
 * (C# makes one for the event) unbacks it, announcing nothing twice. A SHARED page is never flagged lost
 * otherwise (shareable). Returns how many pages were unbacked. */
int share_report_region(struct pl_region *r, uint32_t f, int zero)
{
    int n = 0;
    pl_lock(&r->lock);
    for (uint64_t g = 0; g < r->pages; g++) {
        if (st_of(r, g) != PL_SHARED || fr_of(r, g) != f) continue;
        int announce = !(r->flags[g] & PL_PF_LOST);
        /* Flagged before the hole is mapped: whoever sees its zeros can also see why. */
        if (announce && !zero) atomic_store_explicit((_Atomic uint8_t *)&r->flags[g], (uint8_t)(r->flags[g] | PL_PF_LOST), memory_order_release);
        /* A failed unmap (a shortage that passes, or the failure injector) is tried again, bounded. */
        int rc = change_pages(r, g, 1, PL_UNBACKED, NULL, PL_KEEP_FRAME, 1);
        for (int tries = 0; rc != 0 && tries < 64; tries++) {
            os_yield();
            rc = change_pages(r, g, 1, PL_UNBACKED, NULL, PL_KEEP_FRAME, 1);
        }
        /* Still on the bad frame: lost even if it was a zero page (its bytes are the error's now). */
        if (rc != 0 && announce) atomic_store_explicit((_Atomic uint8_t *)&r->flags[g], (uint8_t)(r->flags[g] | PL_PF_LOST), memory_order_release);
        if (announce && (!zero || rc != 0)) {
            push_event(r, g, f, PL_EV_SHARED_LOST);
            atomic_fetch_add_explicit(&r->counters.contained, 1, memory_order_relaxed);
        }
        if (rc != 0) {
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            say("a sharer of a bad shared frame could not be unbacked yet: flagged lost", (uint64_t)r->owner, g);
            continue;
        }
        set_page(r, g, PL_NO_FRAME, PL_UNBACKED);
        r->shared--;
        share_put(r->arena, f);
        n++;
    }
    pl_unlock(&r->lock);
    return n;
}

/* An uncorrected error in SHARED frame f: no page may join it any more; every sharer in every region of
 * the arena is unbacked (flagged lost unless it was a zero page, whose content a hole gives back bit
 * for bit); the last one leaving retires the frame. A frame already reported may be reported again: the
 * sharers a failed unbacking left on it are unbacked now. Returns how many pages were unbacked,
 * PL_ESTATE if f is not SHARED. *was_zero says whether the sharers lost nothing. */
PL_EXPORT int pl_share_report(struct pl_arena *a, uint32_t f, int *was_zero)
{
    ENTER_ARENA(a);
    if (f >= a->frames) return PL_EINVAL;
    pl_lock(&a->lock);
    int ok = atomic_load_explicit(&a->fstate[f], memory_order_relaxed) == PL_F_SHARED && (a->sharers[f] & ~PL_SHARE_DYING) != 0;
    int zero = a->share_zero[f];
    if (ok) {
        a->sharers[f] = (a->sharers[f] + 1) | PL_SHARE_DYING; /* our own reference keeps it until the sweep ends */
        a->share_pages++;
    }
    pl_unlock(&a->lock);
    if (!ok) return PL_ESTATE;
    int n = 0;
    for (int i = 0; i < PL_MAX_REGIONS; i++) {
        struct pl_region *r = region_enter((int)(atomic_load(&pl_slots[i].gen) << 8 | (uint32_t)i));
        if (!r) continue;
        if (r->arena == a) n += share_report_region(r, f, zero);
        region_leave(&r);
    }
    share_put(a, f); /* retires it once the last sharer left (a region being destroyed may still hold one) */
    *was_zero = zero;
    return n;
}

/* Read-only view for C#: sharers[frame] (PL_SHARE_DYING set while an error is being handled). */
PL_EXPORT int pl_share_tables(struct pl_arena *a, uint32_t **sharers)
{
    ENTER_ARENA(a);
    *sharers = a->sharers;
    return 0;
}

/* out[0] SHARED frames, out[1] guest pages mapping them. */
PL_EXPORT int pl_share_counts(struct pl_arena *a, int64_t *out)
{
    ENTER_ARENA(a);
    pl_lock(&a->lock);
    out[0] = a->counts[PL_F_SHARED];
    out[1] = a->share_pages;
    pl_unlock(&a->lock);
    return 0;
}

/* Pages of the region now SHARED. */
PL_EXPORT int64_t pl_region_shared(int id)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    int64_t n = r->shared;
    pl_unlock(&r->lock);
    return n;
}
