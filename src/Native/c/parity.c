/* parity.c: protection. Content hashes, parity groups (a covered page is read-only; its content is in
 * the group's parity frame), the protector, error injection, recovery (rebuild from parity or refill
 * from the clean disk copy, verified against the hash) and containment, and the scrubbers.
 *   PARITY INVARIANT: parity[grp] == XOR of the content of every covered member, and a covered member is
 *   TRACKED or POISONED (its frame cannot change unseen). A POISONED member's frame is not its content:
 *   nothing recomputes or checks parity from it (scrubs skip the group until the page is recovered).
 * Callers hold the region lock. */
#include "pagelab.h"

static void xor_into(uint8_t *dst, const uint8_t *src)
{
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *s = (const uint64_t *)src;
    for (size_t i = 0; i < page_size / 8; i++) d[i] ^= s[i];
}

static uint8_t *page_bytes(struct pl_region *r, uint64_t g) { return frame_bytes(r->arena, fr_of(r, g)); }

static int member_index(const struct pl_group *grp, uint64_t g)
{
    for (uint32_t i = 0; i < grp->n; i++)
        if (grp->members[i] == g) return (int)i;
    return -1;
}

/* Can page g's frame be trusted as its content? (Not poisoned, and for a TRACKED page its hash holds.) */
static int trustworthy(struct pl_region *r, uint64_t g)
{
    uint32_t st = st_of(r, g);
    if (st == PL_POISONED) return 0;
    return st != PL_TRACKED || page_hash(page_bytes(r, g), page_size) == r->hash[g];
}

/* Every covered member trustworthy: only then may parity be recomputed or judged from the members. */
static int members_trustworthy(struct pl_region *r, const struct pl_group *grp)
{
    for (uint32_t i = 0; i < grp->n; i++)
        if ((grp->covered & (1u << i)) && !trustworthy(r, grp->members[i])) return 0;
    return 1;
}

/* dst := XOR of every covered member's frame. */
static void recompute_parity(struct pl_region *r, const struct pl_group *grp, uint8_t *dst)
{
    memset(dst, 0, page_size);
    for (uint32_t i = 0; i < grp->n; i++)
        if (grp->covered & (1u << i)) xor_into(dst, page_bytes(r, grp->members[i]));
}

/* Rebuilds covered page g from its group's parity and the other covered members; -1 if g is not covered. */
static int rebuild_from_parity(struct pl_region *r, uint64_t g, uint8_t *dst)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return -1;
    struct pl_group *grp = &r->groups[gi];
    int self = member_index(grp, g);
    if (self < 0 || !(grp->covered & (1u << self))) return -1;
    memcpy(dst, frame_bytes(r->arena, grp->parity_frame), page_size);
    for (uint32_t i = 0; i < grp->n; i++)
        if ((int)i != self && (grp->covered & (1u << i))) xor_into(dst, page_bytes(r, grp->members[i]));
    return 0;
}

/* Takes page g out of its parity (it stays a member). Its content is XOR-ed out if good; if not (the
 * page is poisoned), the parity is recomputed from the other covered members, which is the same value
 * when they are sound. Call while g is still read-only or inaccessible. */
int uncover(struct pl_region *r, uint64_t g, int content_good)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return 0;
    struct pl_group *grp = &r->groups[gi];
    int i = member_index(grp, g);
    if (i < 0 || !(grp->covered & (1u << i))) return 0;
    grp->covered &= ~(1u << i);
    if (content_good) {
        xor_into(frame_bytes(r->arena, grp->parity_frame), page_bytes(r, g));
        return 1;
    }
    /* Recomputed from the members whose frames can be trusted; a second bad member cannot be rebuilt
     * once g's content is gone anyway, so it leaves the parity too rather than poison it. */
    for (uint32_t m = 0; m < grp->n; m++)
        if ((grp->covered & (1u << m)) && !trustworthy(r, grp->members[m])) grp->covered &= ~(1u << m);
    recompute_parity(r, grp, frame_bytes(r->arena, grp->parity_frame));
    return 1;
}

/* Puts page g (TRACKED, read-only) back into its group's parity. */
static void cover(struct pl_region *r, uint64_t g)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return;
    struct pl_group *grp = &r->groups[gi];
    int i = member_index(grp, g);
    if (i < 0 || (grp->covered & (1u << i))) return;
    xor_into(frame_bytes(r->arena, grp->parity_frame), page_bytes(r, g));
    grp->covered |= 1u << i;
}

/* Removes page g from its group for good (it is being unmapped or remapped). */
void leave_group(struct pl_region *r, uint64_t g)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return;
    uncover(r, g, trustworthy(r, g) && st_of(r, g) == PL_TRACKED);
    struct pl_group *grp = &r->groups[gi];
    int i = member_index(grp, g);
    uint32_t last = grp->n - 1;
    grp->members[i] = grp->members[last];
    if (grp->covered & (1u << last)) grp->covered = (grp->covered & ~(1u << last)) | (1u << i);
    else grp->covered &= ~(1u << i);
    grp->n = last;
    r->group_of[g] = PL_NO_GROUP;
}

/* Replaces page g's frame with `fresh` (already the VM's) holding its recovered content (parity first,
 * then the disk copy), verified against the recorded hash, mapped read-only (TRACKED). The bad frame is
 * retired; it goes to *old. PL_ELOST if no copy passes the hash check. */
/* A copy of page g read from its recorded disk location. A read that fails is not a copy that fails the
 * hash check: asked again a few times (a shortage that passes), so a page with a good copy is never
 * declared lost for it. */
static int from_disk(struct pl_region *r, uint64_t g, uint8_t *dst)
{
    if (r->disk_off[g] < 0 || r->disk < 0) return PL_ELOST;
    int rc = os_read_file(r->disk, dst, page_size, r->disk_off[g]);
    for (int tries = 0; rc != 0 && tries < 16; tries++) rc = os_read_file(r->disk, dst, page_size, r->disk_off[g]);
    return rc;
}

/* Where a protected page's content can be found again, in the order recovery tries them: a protection
 * kind is one entry here (and its ProtectionPolicy category on the C# side). A source writes its copy
 * into dst or says it has none; whether the copy is the page's is recovery's check (the recorded hash),
 * never the source's, so a stale parity or a rewritten disk block is passed over for the next source. */
static int (*const copy_sources[])(struct pl_region *r, uint64_t g, uint8_t *dst) = {
    rebuild_from_parity, /* Protection.Parity: the group's parity XOR the other covered members */
    from_disk,           /* Protection.DiskCopy: a clean page's recorded disk location (page-cache pages too) */
};

int recover_locked(struct pl_region *r, uint64_t g, uint32_t fresh, uint32_t *old)
{
    uint8_t *dst = frame_bytes(r->arena, fresh);
    int ok = 0;
    for (size_t i = 0; r->hash[g] != 0 && !ok && i < sizeof copy_sources / sizeof copy_sources[0]; i++)
        ok = copy_sources[i](r, g, dst) == 0 && page_hash(dst, page_size) == r->hash[g];
    if (!ok) return PL_ELOST;
    int rc = fault_map(r, g, PL_TRACKED, &fresh, 0); /* the caller's frame, never another */
    if (rc != 0) return rc;
    *old = fr_of(r, g);
    set_page(r, g, fresh, PL_TRACKED); /* same content as the parity holds: coverage is unchanged */
    arena_retire(r, *old);
    return 0;
}

/* In the handler: page g is poisoned (or a protected page is silently corrupt). One frame search, then
 * (if `recoverable`: a recorded hash) its content is rebuilt into that frame and the page remapped
 * read-only (PL_EV_RECOVERED). Only if recovery says the content is gone (PL_ELOST: no copy passes the
 * hash check), or there was nothing to recover from, is the page contained in the same frame: zeroed,
 * flagged lost, mapped read-write (PL_EV_CONTAINED), so C# ends the guest context that used it. The
 * bad frame is retired either way; no thread ever reads its bytes. A search that found no frame only
 * because another VM's lock was held returns PL_EAGAIN (the fault re-runs: nothing is lost for a lock);
 * any other failure leaves the page poisoned, as it was. */
int repair_in_handler(struct pl_region *r, uint64_t g, int recoverable)
{
    uint32_t f, old;
    int zero, rc = take_frame(r, g, &f, &zero);
    if (rc != 0) return rc;
    if (recoverable && r->hash[g] != 0) {
        rc = recover_locked(r, g, f, &old);
        if (rc == 0) {
            push_event(r, g, old, PL_EV_RECOVERED);
            atomic_fetch_add_explicit(&r->counters.handler_recoveries, 1, memory_order_relaxed);
            return 0;
        }
        if (rc != PL_ELOST) { /* the copy is good but could not be mapped: the page stays poisoned */
            drop_frame(r, f, 0);
            return rc;
        }
        zero = 0; /* the failed rebuild wrote into the frame */
    }
    if (!zero) memset(frame_bytes(r->arena, f), 0, page_size);
    /* Flagged lost before the zero frame is mapped: whoever sees its zeros can also see why. */
    uint8_t flags = r->flags[g];
    atomic_store_explicit((_Atomic uint8_t *)&r->flags[g], (uint8_t)(flags | PL_PF_LOST), memory_order_release);
    if ((rc = fault_map(r, g, PL_BACKED, &f, 1)) != 0) {
        r->flags[g] = flags;
        drop_frame(r, f, 1);
        return rc;
    }
    old = fr_of(r, g);
    uncover(r, g, 0);
    r->hash[g] = 0;
    r->disk_off[g] = -1;
    set_page(r, g, f, PL_BACKED);
    arena_retire(r, old);
    push_event(r, g, old, PL_EV_CONTAINED);
    atomic_fetch_add_explicit(&r->counters.contained, 1, memory_order_relaxed);
    return 0;
}

/* ---- API for C# ---- */

/* The file that disk offsets given to pl_protect refer to (the guest's swap file): an fd on Linux, a
 * HANDLE on Windows, kept open by the caller while the region lives; -1 for none. */
PL_EXPORT int pl_set_disk_fd(int id, intptr_t disk)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    r->disk = disk;
    pl_unlock(&r->lock);
    return 0;
}

static int parity_frame_ok(struct pl_region *r, uint32_t f)
{
    return f < r->arena->frames && atomic_load_explicit(&r->arena->fstate[f], memory_order_acquire) == PL_F_PARITY;
}

/* Makes pages[0..k) a parity group over `parity_frame` (a PARITY frame, zeroed here). Members join
 * uncovered unless already TRACKED, in which case their content goes into the parity now. Returns the
 * group index. */
PL_EXPORT int pl_group_create(int id, const uint64_t *pages, uint32_t k, uint32_t parity_frame)
{
    ENTER_REGION(r, id);
    if (k == 0 || k > PL_MAX_K || !parity_frame_ok(r, parity_frame)) return PL_EINVAL;
    for (uint32_t i = 0; i < k; i++) {
        if (pages[i] >= r->pages) return PL_EINVAL;
        for (uint32_t j = 0; j < i; j++)
            if (pages[j] == pages[i]) return PL_EINVAL;
    }
    pl_lock(&r->lock);
    uint32_t gi = 0;
    while (gi < r->group_capacity && r->groups[gi].parity_frame != PL_NO_FRAME) gi++;
    int rc = gi < r->group_capacity ? 0 : PL_EFULL;
    for (uint32_t i = 0; i < k && rc == 0; i++)
        if (r->group_of[pages[i]] != PL_NO_GROUP) rc = PL_ESTATE;
    if (rc != 0) { pl_unlock(&r->lock); return rc; }
    struct pl_group *grp = &r->groups[gi];
    grp->parity_frame = parity_frame;
    grp->n = k;
    grp->covered = 0;
    memset(frame_bytes(r->arena, parity_frame), 0, page_size);
    for (uint32_t i = 0; i < k; i++) {
        grp->members[i] = (uint32_t)pages[i];
        r->group_of[pages[i]] = gi;
        if (st_of(r, pages[i]) == PL_TRACKED && trustworthy(r, pages[i])) cover(r, pages[i]);
    }
    pl_unlock(&r->lock);
    return (int)gi;
}

/* Dissolves a group: its members leave it (protected pages stay read-only, kept by their disk copy if
 * they have one), and its parity frame goes to *parity for the caller to free. */
PL_EXPORT int pl_group_free(int id, uint32_t group, uint32_t *parity)
{
    ENTER_REGION(r, id);
    pl_lock(&r->lock);
    int rc = group < r->group_capacity && r->groups[group].parity_frame != PL_NO_FRAME ? 0 : PL_EINVAL;
    if (rc == 0) {
        struct pl_group *grp = &r->groups[group];
        for (uint32_t i = 0; i < grp->n; i++) r->group_of[grp->members[i]] = PL_NO_GROUP;
        *parity = grp->parity_frame;
        grp->n = grp->covered = 0;
        grp->parity_frame = PL_NO_FRAME;
    }
    pl_unlock(&r->lock);
    return rc;
}

/* The protector: makes BACKED pages read-only and protected (TRACKED): hash recorded, content into the
 * group's parity, disk_offsets[i] (if not NULL and >= 0) recorded as the clean copy. Pages with neither a
 * group nor a disk copy are left alone. Returns how many pages were protected. */
PL_EXPORT int pl_protect(int id, const uint64_t *pages, uint32_t n, const int64_t *disk_offsets)
{
    ENTER_REGION(r, id);
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= r->pages) return PL_EINVAL;
    pl_lock(&r->lock);
    int done = 0, rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t g = pages[i];
        int64_t off = disk_offsets ? disk_offsets[i] : -1;
        if (st_of(r, g) != PL_BACKED) continue;
        if (r->group_of[g] == PL_NO_GROUP && (off < 0 || r->disk < 0)) continue;
        if (kernel_poisoned(r, g)) continue; /* the kernel says its bytes are bad: never record them as good */
        /* Read-only first: once mprotect returns no CPU can still write the page, so the hash and the
         * parity below see its final content. */
        if ((rc = change_pages(r, g, 1, PL_TRACKED, NULL, PL_KEEP_FRAME, 0)) != 0) break;
        r->hash[g] = page_hash(page_bytes(r, g), page_size);
        r->disk_off[g] = off;
        atomic_store_explicit(&r->state[g], PL_TRACKED, memory_order_release);
        cover(r, g);
        done++;
    }
    pl_unlock(&r->lock);
    return rc != 0 && done == 0 ? rc : done;
}

/* Error injection, as memory hardware would do it: XOR mask[0..len) into the page's frame at `offset`
 * and poison the page (inaccessible) so no access sees the bad bytes until it is handled. With
 * require_tracked, only a protected page is hit (PL_ESTATE otherwise). *hit is the frame corrupted: the
 * one to report (a guest access may replace it at once). */
PL_EXPORT int pl_inject(int id, uint64_t page, uint32_t offset, const uint8_t *mask, uint32_t len, int require_tracked,
                        uint32_t *hit)
{
    ENTER_REGION(r, id);
    if (page >= r->pages || len == 0 || offset >= page_size || len > page_size - offset) return PL_EINVAL;
    pl_lock(&r->lock);
    uint32_t st = st_of(r, page);
    if ((st != PL_BACKED && st != PL_TRACKED && st != PL_SAMPLED) || (require_tracked && st != PL_TRACKED)) {
        pl_unlock(&r->lock);
        return PL_ESTATE;
    }
    int rc = change_pages(r, page, 1, PL_POISONED, NULL, PL_KEEP_FRAME, 1);
    if (rc != 0) { pl_unlock(&r->lock); return rc; }
    if (st != PL_TRACKED) r->hash[page] = 0; /* an unprotected page has no good copy to check against */
    uint32_t f = fr_of(r, page);
    uint8_t *bytes = frame_bytes(r->arena, f) + offset;
    for (uint32_t i = 0; i < len; i++) bytes[i] ^= mask[i];
    atomic_store_explicit(&r->state[page], PL_POISONED, memory_order_release);
    pl_unlock(&r->lock);
    *hit = f;
    return 0;
}

/* The report handler: recovers a POISONED (or silently corrupt TRACKED) page backed by `bad` into the
 * HELD frame `fresh`, or, with fresh = PL_NO_FRAME (the arena had none to give), into a frame found the
 * way the handler finds one (pool, free frame, host swap). On success the bad frame is retired (in *old)
 * and the page is TRACKED again. PL_ELOST leaves the page as it was (fresh stays HELD). PL_ESTATE if the
 * page is no longer backed by `bad` (a guest access already had the handler recover or contain it). */
PL_EXPORT int pl_recover(int id, uint64_t page, uint32_t bad, uint32_t fresh, uint32_t *old)
{
    ENTER_REGION(r, id);
    if (page >= r->pages || (fresh >= r->arena->frames && fresh != PL_NO_FRAME)) return PL_EINVAL;
    pl_lock(&r->lock);
    uint32_t st = st_of(r, page);
    int rc = (st == PL_POISONED || st == PL_TRACKED) && fr_of(r, page) == bad ? 0 : PL_ESTATE;
    if (rc == 0 && fresh == PL_NO_FRAME) {
        int zero;
        /* Another VM's lock held: this is not a signal handler, so let go of ours and try again. */
        for (int tries = 0; tries < 1000 && (rc = take_frame(r, page, &fresh, &zero)) == PL_EAGAIN; tries++) {
            pl_unlock(&r->lock);
            os_yield();
            pl_lock(&r->lock);
            st = st_of(r, page);
            if ((st != PL_POISONED && st != PL_TRACKED) || fr_of(r, page) != bad) {
                rc = PL_ESTATE; /* replaced meanwhile (a guest touch recovered or contained it) */
                break;
            }
        }
        if (rc == PL_EAGAIN) rc = PL_ENOFRAME;
        /* A failed rebuild has written into the frame: it is no longer zero. */
        if (rc == 0 && (rc = recover_locked(r, page, fresh, old)) != 0) drop_frame(r, fresh, 0);
    } else if (rc == 0) {
        if (!arena_reserve_held(r->arena, &fresh, 1)) rc = PL_EINVAL; /* arena_give_region commits it */
        if (rc == 0) {
            arena_give_region(r, fresh);
            rc = recover_locked(r, page, fresh, old);
            if (rc != 0) arena_take_region(r, fresh, PL_F_HELD);
        }
    }
    pl_unlock(&r->lock);
    return rc;
}

/* Rebuilds a group's parity into `fresh` (a PARITY frame) from its covered members; the old parity frame
 * goes to *old. PL_ESTATE while a covered member is poisoned or corrupt: recover it first. */
PL_EXPORT int pl_parity_rebuild(int id, uint32_t group, uint32_t fresh, uint32_t *old)
{
    ENTER_REGION(r, id);
    if (!parity_frame_ok(r, fresh)) return PL_EINVAL;
    pl_lock(&r->lock);
    int rc = group < r->group_capacity && r->groups[group].parity_frame != PL_NO_FRAME ? 0 : PL_EINVAL;
    struct pl_group *grp = &r->groups[group];
    if (rc == 0 && !members_trustworthy(r, grp)) rc = PL_ESTATE;
    if (rc == 0) {
        recompute_parity(r, grp, frame_bytes(r->arena, fresh));
        *old = grp->parity_frame;
        grp->parity_frame = fresh;
    }
    pl_unlock(&r->lock);
    return rc;
}

/* The page scrubber: pages in [first, first+count) that are POISONED, or TRACKED with content that no
 * longer matches their hash (silent corruption), go to bad[] (up to cap). Returns how many. */
PL_EXPORT int pl_scrub(int id, uint64_t first, uint64_t count, uint64_t *bad, uint32_t cap)
{
    ENTER_REGION(r, id);
    if (first >= r->pages || count > r->pages - first) return PL_EINVAL;
    int found = 0;
    for (uint64_t g = first; g < first + count && (uint32_t)found < cap; g++) {
        pl_lock(&r->lock); /* page by page, so guest faults wait at most one hash */
        uint32_t st = st_of(r, g);
        int is_bad = (st == PL_TRACKED || st == PL_POISONED) && !trustworthy(r, g);
        pl_unlock(&r->lock);
        if (is_bad) bad[found++] = g; /* caller memory: written outside the lock */
    }
    return found;
}

/* Groups whose parity frame no longer equals the XOR of their covered members (up to cap). A group with
 * a poisoned or corrupt member is skipped: its parity is what will rebuild that member. */
PL_EXPORT int pl_scrub_parity(int id, uint32_t *bad, uint32_t cap)
{
    ENTER_REGION(r, id);
    uint8_t scratch[65536];
    if (page_size > sizeof scratch) return PL_EINVAL;
    int found = 0;
    for (uint32_t gi = 0; gi < r->group_capacity && (uint32_t)found < cap; gi++) {
        pl_lock(&r->lock);
        struct pl_group *grp = &r->groups[gi];
        int is_bad = 0;
        if (grp->parity_frame != PL_NO_FRAME && members_trustworthy(r, grp)) {
            recompute_parity(r, grp, scratch);
            is_bad = memcmp(scratch, frame_bytes(r->arena, grp->parity_frame), page_size) != 0;
        }
        pl_unlock(&r->lock);
        if (is_bad) bad[found++] = gi;
    }
    return found;
}

/* Group membership of a page: its group index, or -1. */
PL_EXPORT int pl_group_of(int id, uint64_t page)
{
    ENTER_REGION(r, id);
    if (page >= r->pages) return PL_EINVAL;
    pl_lock(&r->lock);
    uint32_t gi = r->group_of[page];
    pl_unlock(&r->lock);
    return gi == PL_NO_GROUP ? -1 : (int)gi;
}
