/* addrspace.c: where guest memory lives in the address space. Regions are placed one after another
 * (a guard page between them) in large windows reserved PROT_NONE for guest memory, and a destroyed
 * region's range stays reserved and inaccessible there for the process's life (quarantine): no region
 * is ever placed where a stale span or pointer into a destroyed VM could still reach. */
#include "pagelab.h"

/* Quarantined ranges next to each other and alike merge into one mapping: no cost in mappings or
 * memory, only address space (1 TiB a window, a few of them in a 128 TiB user space). Windows (the OS)
 * keeps each region's own reservation, quarantined in place: it has no mapping limit to save. */
#define PL_WINDOW_BYTES (1ull << 40)
#define PL_MAX_WINDOWS 64
#define PL_QUARANTINE_LOG 64 /* the latest destroyed ranges, for the message a stale touch gets */
#ifndef _WIN32
static struct pl_spin window_lock;
static uint8_t *window_next, *window_end;
#endif
static struct { _Atomic uintptr_t base, end; } windows[PL_MAX_WINDOWS];
static _Atomic int window_count;
static struct { _Atomic uintptr_t base, end; _Atomic int32_t owner; } quarantine_log[PL_QUARANTINE_LOG];
static _Atomic uint32_t quarantine_next;

int in_window(uintptr_t addr)
{
    int n = atomic_load(&window_count);
    for (int i = 0; i < n; i++)
        if (addr >= atomic_load(&windows[i].base) && addr < atomic_load(&windows[i].end)) return 1;
    return 0;
}

/* r->base := a range of r->pages pages never used before. */
int place_region(struct pl_region *r)
{
#ifdef _WIN32
    return os_reserve(r);
#else
    size_t bytes = r->pages * page_size, need = bytes + page_size; /* and its guard page */
    pl_lock(&window_lock);
    if (!window_next || (size_t)(window_end - window_next) < need) {
        struct pl_region w;
        memset(&w, 0, sizeof w);
        w.pages = (need > PL_WINDOW_BYTES ? need : PL_WINDOW_BYTES) / page_size;
        int n = atomic_load(&window_count);
        if (n == PL_MAX_WINDOWS || os_reserve(&w) != 0) {
            /* No window (an address-space limit): the region's own reservation, also never unmapped. */
            pl_unlock(&window_lock);
            return os_reserve(r);
        }
        atomic_store(&windows[n].base, (uintptr_t)w.base);
        atomic_store(&windows[n].end, (uintptr_t)w.base + w.pages * page_size);
        atomic_store(&window_count, n + 1);
        window_next = w.base;
        window_end = w.base + w.pages * page_size;
    }
    r->base = window_next; /* already PROT_NONE anonymous: the region's holes as os_reserve makes them */
    window_next += need;
    pl_unlock(&window_lock);
    return 0;
#endif
}

/* Undoes place_region for a region that never got a slot (nothing was mapped in it). */
void unplace_region(struct pl_region *r)
{
    if (!in_window((uintptr_t)r->base)) os_release(r); /* a range in a window just stays reserved */
}

/* Mappings a destroyed region's quarantined range keeps for good: none in a window (it merges with its
 * neighbours) or on Windows (no mapping limit there); one for a range reserved on its own. */
int quarantine_maps(struct pl_region *r)
{
#ifdef _WIN32
    (void)r;
    return 0;
#else
    return in_window((uintptr_t)r->base) ? 0 : 1;
#endif
}

/* Remembers a destroyed region's range for the message a stale touch gets. */
void log_quarantined(struct pl_region *r)
{
    uint32_t q = atomic_fetch_add(&quarantine_next, 1) % PL_QUARANTINE_LOG;
    atomic_store(&quarantine_log[q].base, 0); /* no match while the entry changes */
    atomic_store(&quarantine_log[q].owner, r->owner);
    atomic_store(&quarantine_log[q].end, (uintptr_t)r->base + r->pages * page_size);
    atomic_store(&quarantine_log[q].base, (uintptr_t)r->base);
}

/* 1 if addr lies in a destroyed region's quarantined range or a guard page (async-signal-safe). owner,
 * page: the destroyed VM's id and guest page if it is still logged, else 0. */
int region_quarantined(uintptr_t addr, int32_t *owner, uint64_t *page)
{
    *owner = 0;
    *page = 0;
    for (int i = 0; i < PL_QUARANTINE_LOG; i++) {
        uintptr_t b = atomic_load(&quarantine_log[i].base);
        if (b && addr >= b && addr < atomic_load(&quarantine_log[i].end)) {
            *owner = atomic_load(&quarantine_log[i].owner);
            *page = (addr - b) / page_size;
            return 1;
        }
    }
    return in_window(addr);
}
