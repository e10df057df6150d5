/* arena.c: host physical memory's frames. The one table of every frame's state and owner (the truth;
 * C# reads it, see pagelab.h for who may move a frame where), the free bitmap, and the calls that
 * allocate, release, retire and move frames. Free frames are punched holes: they read as zero.
 * An arena's lifetime: headers in static slots, every call counted in (pagelab.h, LIFETIMES). */
#include "pagelab.h"

/* Arena headers are static and never freed (only their tables are), so a call that races destroy or
 * comes after it counts itself in a header that still exists and is refused, never a use after free. */
struct pl_arena pl_arenas[PL_MAX_ARENAS];
enum { ARENA_FREE = 0, ARENA_TAKEN = 1, ARENA_LIVE = 2, ARENA_DYING = 3 };
static struct {
    _Atomic uint32_t life;   /* ARENA_*: only a LIVE arena may be entered */
    _Atomic uint32_t inside; /* pl_* calls using the arena now */
} arena_use[PL_MAX_ARENAS];
static _Atomic uint32_t arena_cursor; /* headers are taken round-robin: a destroyed one is reused last */

static int arena_index(const struct pl_arena *a, size_t *i)
{
    uintptr_t at = (uintptr_t)a, first = (uintptr_t)pl_arenas;
    if (at < first || (at - first) % sizeof *a != 0 || (at - first) / sizeof *a >= PL_MAX_ARENAS) return 0;
    *i = (at - first) / sizeof *a;
    return 1;
}

struct pl_arena *arena_enter(struct pl_arena *a)
{
    size_t i;
    if (!arena_index(a, &i)) return NULL;
    atomic_fetch_add(&arena_use[i].inside, 1);
    /* Sequentially consistent with destroy's store of DYING and its load of `inside`: either destroy
     * sees this call inside and waits, or this call sees DYING and leaves. */
    if (atomic_load(&arena_use[i].life) != ARENA_LIVE) {
        atomic_fetch_sub(&arena_use[i].inside, 1);
        return NULL;
    }
    return a;
}

void arena_leave(struct pl_arena **a)
{
    size_t i;
    if (*a && arena_index(*a, &i)) atomic_fetch_sub(&arena_use[i].inside, 1);
}


/* First frame >= from that is free (want_free) or not; a->frames if none. Caller holds the lock. */
static uint32_t next(const struct pl_arena *a, uint32_t from, int want_free)
{
    if (from >= a->frames) return a->frames;
    uint32_t w = from / 64, words = (a->frames + 63) / 64;
    uint64_t word = (want_free ? a->free_bits[w] : ~a->free_bits[w]) & (~0ull << (from % 64));
    while (word == 0) {
        if (++w == words) return a->frames;
        word = want_free ? a->free_bits[w] : ~a->free_bits[w];
    }
    uint32_t f = w * 64 + (uint32_t)__builtin_ctzll(word);
    return f < a->frames ? f : a->frames;
}

void arena_set(struct pl_arena *a, uint32_t f, uint32_t st, int32_t owner)
{
    uint32_t old = atomic_load_explicit(&a->fstate[f], memory_order_relaxed);
    if (old == PL_F_FREE) a->free_bits[f / 64] &= ~(1ull << (f % 64));
    if (st == PL_F_FREE) {
        a->free_bits[f / 64] |= 1ull << (f % 64);
        if (f < a->hint) a->hint = f;
    }
    a->counts[old]--;
    a->counts[st]++;
    atomic_store_explicit(&a->owner[f], st == PL_F_GUEST ? owner : 0, memory_order_relaxed);
    atomic_store_explicit(&a->fstate[f], (uint8_t)st, memory_order_release);
}

/* arena_set for each of frames[0..n) (PL_NO_FRAME entries skipped) to state `to`, for a batch whose
 * frames are expected in state `from`: those are counted and the counts settled once at the end (so a
 * run of frames does not update the same two counters frame by frame); a frame in any other state goes
 * through arena_set. Neither `from` nor `to` may be FREE: the free bitmap is not touched here. Returns
 * how many frames were set. Needs the lock. */
uint64_t arena_set_many(struct pl_arena *a, const uint32_t *frames, uint64_t n, uint32_t from, uint32_t to,
                        int32_t owner)
{
    uint64_t set = 0, usual = 0;
    int32_t own = to == PL_F_GUEST ? owner : 0;
    _Atomic uint8_t *fstate = a->fstate; /* locals: the byte stores below would make the compiler reload a->... */
    _Atomic int32_t *owners = a->owner;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t f = frames[i];
        if (f == PL_NO_FRAME) continue;
        set++;
        if (atomic_load_explicit(&fstate[f], memory_order_relaxed) != from) {
            arena_set(a, f, to, owner);
            continue;
        }
        usual++;
        atomic_store_explicit(&owners[f], own, memory_order_relaxed);
        atomic_store_explicit(&fstate[f], (uint8_t)to, memory_order_release);
    }
    a->counts[from] -= (int64_t)usual;
    a->counts[to] += (int64_t)usual;
    return set;
}

int arena_take_free(struct pl_arena *a, uint32_t *out)
{
    uint32_t f = next(a, a->hint, 1);
    if (f >= a->frames) return PL_ENOFRAME;
    a->hint = f + 1;
    *out = f;
    return 0;
}

void arena_give_region(struct pl_region *r, uint32_t f)
{
    pl_lock(&r->arena->lock);
    arena_set(r->arena, f, PL_F_GUEST, r->owner);
    r->owned++;
    pl_unlock(&r->arena->lock);
}

void arena_take_region(struct pl_region *r, uint32_t f, uint32_t st)
{
    pl_lock(&r->arena->lock);
    arena_set(r->arena, f, st, 0);
    r->owned--;
    pl_unlock(&r->arena->lock);
}

/* Frames [f, f + n) made to read as zero for their next user: punched (their memory goes back to the OS),
 * or, when the punch fails (a passing shortage, the injector), zeroed through the host view. A failed
 * punch only costs memory; retiring the frame instead would shrink the arena for good on every passing
 * failure until no fault finds a frame. Never for a frame a stale view may still map or one with a
 * reported error: those are retired. */
void frame_zero(struct pl_arena *a, uint32_t f, uint32_t n)
{
    if (os_discard(a, f, n) != 0) memset(frame_bytes(a, f), 0, (size_t)n * page_size);
}

void arena_retire(struct pl_region *r, uint32_t f)
{
    arena_take_region(r, f, PL_F_RETIRED);
    (void)os_discard(r->arena, f, 1); /* its content is garbage and never used again; a failure only costs memory */
}

/* ---- API for C# ---- */

PL_EXPORT int pl_arena_create(intptr_t os, void *view, uint64_t frames, struct pl_arena **out)
{
    if (!view || frames == 0 || frames >= PL_NO_FRAME) return PL_EINVAL;
    if (!page_size) page_size = os_page_size();
    struct pl_arena *a = NULL;
    size_t slot = 0;
    uint32_t from = atomic_fetch_add(&arena_cursor, 1);
    for (uint32_t k = 0; k < PL_MAX_ARENAS && !a; k++) {
        uint32_t expected = ARENA_FREE;
        slot = (from + k) % PL_MAX_ARENAS;
        if (atomic_compare_exchange_strong(&arena_use[slot].life, &expected, ARENA_TAKEN)) a = &pl_arenas[slot];
    }
    if (!a) return PL_EFULL;
    atomic_store(&arena_cursor, (uint32_t)slot + 1);
    size_t words = (size_t)(frames + 63) / 64;
    size_t bytes = words * 8 + (size_t)frames * (sizeof(uint64_t) + 2 * sizeof(int32_t) + 2) + 64;
    bytes = (bytes + page_size - 1) / page_size * page_size;
    uint8_t *mem = os_tables_alloc(bytes);
    if (!mem) {
        int e = os_last_error();
        atomic_store(&arena_use[slot].life, ARENA_FREE);
        return e;
    }
    memset(a, 0, sizeof *a); /* TAKEN: nobody else reads the header (a stale call only counts in arena_use) */
    a->os = os;
    a->view = view;
    a->frames = (uint32_t)frames;
    a->free_bits = (uint64_t *)mem; /* the start of the tables: what destroy frees */
    a->share_hash = a->free_bits + words;
    a->owner = (_Atomic int32_t *)(a->share_hash + frames);
    a->sharers = (uint32_t *)(a->owner + frames);
    a->fstate = (_Atomic uint8_t *)(a->sharers + frames);
    a->share_zero = (uint8_t *)(a->fstate + frames);
    a->tables_bytes = bytes;
    for (uint64_t f = 0; f < frames; f++) a->free_bits[f / 64] |= 1ull << (f % 64); /* fstate 0 = FREE */
    a->counts[PL_F_FREE] = (int64_t)frames;
    atomic_store(&arena_use[slot].life, ARENA_LIVE);
    *out = a;
    return 0;
}

/* Frees the arena's tables once no call is inside it. PL_EBUSY (nothing changed) while it has regions
 * (a region counts itself in before it reserves its range, and out after its last frame went back);
 * PL_ENOARENA if it is destroyed already, or being destroyed by another call. */
PL_EXPORT int pl_arena_destroy(struct pl_arena *a)
{
    size_t i;
    uint32_t live = ARENA_LIVE;
    if (!arena_index(a, &i) || !atomic_compare_exchange_strong(&arena_use[i].life, &live, ARENA_DYING)) return PL_ENOARENA;
    while (atomic_load(&arena_use[i].inside) != 0) os_yield();
    if (atomic_load(&a->regions) != 0) {
        atomic_store(&arena_use[i].life, ARENA_LIVE);
        return PL_EBUSY;
    }
    os_tables_free(a->free_bits, a->tables_bytes);
    atomic_store(&arena_use[i].life, ARENA_FREE); /* only now may a create take the header */
    return 0;
}

/* Read-only views for C#: fstate[frame] (PL_F_*) and owner[frame] (VM id while GUEST). */
PL_EXPORT int pl_arena_tables(struct pl_arena *a, uint8_t **fstate, int32_t **owner)
{
    ENTER_ARENA(a);
    *fstate = (uint8_t *)a->fstate;
    *owner = (int32_t *)a->owner;
    return 0;
}

PL_EXPORT int pl_arena_counts(struct pl_arena *a, int64_t *out)
{
    ENTER_ARENA(a);
    pl_lock(&a->lock);
    for (int i = 0; i < PL_F_STATES; i++) out[i] = a->counts[i];
    pl_unlock(&a->lock);
    return 0;
}

/* Takes `count` free frames (HELD now): one contiguous run if the arena has one long enough (fewer guest
 * mappings), else the lowest free frames. Returns count, or PL_ENOFRAME with nothing taken. */
PL_EXPORT int pl_frames_alloc(struct pl_arena *a, uint32_t count, uint32_t *out)
{
    ENTER_ARENA(a);
    if (count == 0 || count > a->frames || count > INT32_MAX) return PL_EINVAL;
    pl_lock(&a->lock);
    if ((uint64_t)a->counts[PL_F_FREE] < count) {
        pl_unlock(&a->lock);
        return PL_ENOFRAME;
    }
    uint32_t run_at = a->frames;
    for (uint32_t at = next(a, a->hint, 1); at < a->frames;) {
        uint32_t end = next(a, at, 0);
        if (end - at >= count) { run_at = at; break; }
        at = next(a, end, 1);
    }
    if (run_at < a->frames) {
        for (uint32_t i = 0; i < count; i++) out[i] = run_at + i;
    } else {
        uint32_t n = 0;
        for (uint32_t f = next(a, a->hint, 1); n < count; f = next(a, f + 1, 1)) out[n++] = f;
    }
    for (uint32_t i = 0; i < count; i++) arena_set(a, out[i], PL_F_HELD, 0);
    a->hint = next(a, a->hint, 1);
    pl_unlock(&a->lock);
    return (int)count;
}

/* A HELD frame its holder may use: not reserved by a call that is consuming it (released, mapped,
 * pushed to a pool), so a second consumer of the same frames is refused meanwhile. Needs the lock. */
int arena_held(struct pl_arena *a, uint32_t f)
{
    return f < a->frames && atomic_load_explicit(&a->fstate[f], memory_order_relaxed) == PL_F_HELD &&
           atomic_load_explicit(&a->owner[f], memory_order_relaxed) == 0;
}

static int all_in(struct pl_arena *a, const uint32_t *frames, uint32_t n, uint32_t st)
{
    for (uint32_t i = 0; i < n; i++) {
        if (frames[i] >= a->frames || atomic_load_explicit(&a->fstate[frames[i]], memory_order_relaxed) != st) return 0;
        if (st == PL_F_HELD && !arena_held(a, frames[i])) return 0;
    }
    return 1;
}

/* The check-and-reserve step of a call that consumes HELD frames (takes the lock): 1 if every frame was
 * HELD and unreserved, now reserved for the caller (owner PL_RESERVED, still HELD); 0 with nothing
 * reserved otherwise (a repeated frame included). The caller commits with arena_set / arena_set_many,
 * which store the new owner, or gives them back with arena_unreserve. */
int arena_reserve_held(struct pl_arena *a, const uint32_t *frames, uint64_t n)
{
    pl_lock(&a->lock);
    uint64_t marked = 0;
    while (marked < n && arena_held(a, frames[marked]))
        atomic_store_explicit(&a->owner[frames[marked++]], PL_RESERVED, memory_order_relaxed);
    int ok = marked == n;
    if (!ok)
        while (marked > 0) atomic_store_explicit(&a->owner[frames[--marked]], 0, memory_order_relaxed);
    pl_unlock(&a->lock);
    return ok;
}

void arena_unreserve(struct pl_arena *a, const uint32_t *frames, uint64_t n)
{
    pl_lock(&a->lock);
    for (uint64_t i = 0; i < n; i++) atomic_store_explicit(&a->owner[frames[i]], 0, memory_order_relaxed);
    pl_unlock(&a->lock);
}

/* HELD frames go back to the arena: punched first (while still the caller's, so no fault can map one
 * before it reads as zero), then FREE. One transaction: check and reserve them (a racing release or map
 * of the same frames is refused), punch, then commit (FREE) or undo (unreserved, still HELD; what was
 * punched reads as zero). All or nothing: PL_ESTATE if one is not HELD (or repeated). */
static int release(struct pl_arena *a, const uint32_t *frames, uint32_t n, int or_zero)
{
    if (!arena_reserve_held(a, frames, n)) return PL_ESTATE;
    for (uint32_t i = 0; i < n;) {
        uint32_t run = 1;
        while (i + run < n && frames[i + run] == frames[i] + run) run++;
        if (or_zero) {
            frame_zero(a, frames[i], run);
        } else {
            int rc = os_discard(a, frames[i], run);
            if (rc != 0) {
                arena_unreserve(a, frames, n);
                return rc;
            }
        }
        i += run;
    }
    pl_lock(&a->lock);
    for (uint32_t i = 0; i < n; i++) arena_set(a, frames[i], PL_F_FREE, 0);
    pl_unlock(&a->lock);
    return 0;
}

PL_EXPORT int pl_frames_release(struct pl_arena *a, const uint32_t *frames, uint32_t n)
{
    ENTER_ARENA(a);
    return release(a, frames, n, 0);
}

/* As pl_frames_release, for paths that must end with the frames gone (an undo, a release after the work
 * is done): a run the OS refuses to punch is zeroed through the host view instead (frame_zero), so the
 * frames are freed either way and read as zero. PL_ESTATE (nothing changed) if one is not HELD. */
PL_EXPORT int pl_frames_release_or_zero(struct pl_arena *a, const uint32_t *frames, uint32_t n)
{
    ENTER_ARENA(a);
    return release(a, frames, n, 1);
}

/* A FREE or HELD frame out of service for good (its memory goes back to the OS). */
PL_EXPORT int pl_frames_retire(struct pl_arena *a, uint32_t frame)
{
    ENTER_ARENA(a);
    if (frame >= a->frames) return PL_EINVAL;
    pl_lock(&a->lock);
    uint32_t st = atomic_load_explicit(&a->fstate[frame], memory_order_relaxed);
    int rc = st == PL_F_FREE || arena_held(a, frame) ? 0 : PL_ESTATE;
    if (rc == 0) arena_set(a, frame, PL_F_RETIRED, 0);
    pl_unlock(&a->lock);
    if (rc == 0) (void)os_discard(a, frame, 1); /* a failure only costs memory */
    return rc;
}

/* A FREE frame out of service for good (an error reported in a frame nobody holds). PL_ESTATE if it is
 * not free any more: someone took it meanwhile, and the report must follow it there. */
PL_EXPORT int pl_frames_retire_free(struct pl_arena *a, uint32_t frame)
{
    ENTER_ARENA(a);
    if (frame >= a->frames) return PL_EINVAL;
    pl_lock(&a->lock);
    int rc = atomic_load_explicit(&a->fstate[frame], memory_order_relaxed) == PL_F_FREE ? 0 : PL_ESTATE;
    if (rc == 0) arena_set(a, frame, PL_F_RETIRED, 0);
    pl_unlock(&a->lock);
    if (rc == 0) (void)os_discard(a, frame, 1); /* a failure only costs memory */
    return rc;
}

/* HELD <-> PARITY (the only moves C# makes itself; GUEST moves happen inside region calls). */
PL_EXPORT int pl_frames_move(struct pl_arena *a, const uint32_t *frames, uint32_t n, uint32_t from, uint32_t to)
{
    int allowed = (from == PL_F_HELD && to == PL_F_PARITY) || (from == PL_F_PARITY && to == PL_F_HELD);
    if (!allowed) return PL_EINVAL;
    ENTER_ARENA(a);
    pl_lock(&a->lock);
    int ok = all_in(a, frames, n, from);
    if (ok)
        for (uint32_t i = 0; i < n; i++) arena_set(a, frames[i], to, 0);
    pl_unlock(&a->lock);
    return ok ? 0 : PL_ESTATE;
}
