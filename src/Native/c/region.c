/* region.c: regions, one VM's guest physical memory each: their lifetime (generation-tagged ids over
 * static slots, entered by every call and handler run), their tables, settings, counters and the event
 * ring C# reads. Calls only the floors below (address space, frames, the ground floor). */
#include "pagelab.h"

struct pl_slot pl_slots[PL_MAX_REGIONS];

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

/* ---- region lifetime ---- */

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

/* The first n counters (n <= PL_COUNTERS) in struct pl_counters order, each copied by name. C# passes its
 * mirror of the struct (n = all of them); asking for more counters than the engine keeps is PL_EINVAL. */
PL_EXPORT int pl_region_counters(int id, uint64_t *out, int n)
{
    if (n < 0 || n > PL_COUNTERS || (n > 0 && !out)) return PL_EINVAL;
    ENTER_REGION(r, id);
    int i = 0;
#define PL_COUNTER_COPY(name) \
    if (i < n) out[i] = atomic_load_explicit(&r->counters.name, memory_order_relaxed); \
    i++;
    PL_COUNTER_FIELDS(PL_COUNTER_COPY)
#undef PL_COUNTER_COPY
    return 0;
}

/* The layout of struct pl_counters, for the test that C#'s mirror of it agrees: up to cap field names and
 * byte offsets, in declaration order, and the struct's size. Returns how many fields the struct has. */
PL_EXPORT int pl_counters_layout(const char **names, uint32_t *offsets, int cap, uint32_t *size)
{
    if (cap < 0 || (cap > 0 && (!names || !offsets))) return PL_EINVAL;
    int i = 0;
#define PL_COUNTER_ENTRY(name) \
    if (i < cap) { names[i] = #name; offsets[i] = (uint32_t)offsetof(struct pl_counters, name); } \
    i++;
    PL_COUNTER_FIELDS(PL_COUNTER_ENTRY)
#undef PL_COUNTER_ENTRY
    if (size) *size = (uint32_t)sizeof(struct pl_counters);
    return i;
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

/* ---- working-set sampling ---- */
