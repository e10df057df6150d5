/* pagelab.h: the fault engine's private header. Every C file of the engine includes it; nothing else does.
 *
 * WHY NATIVE. A fault taken by a managed thread and resolved by another managed thread deadlocks with the
 * .NET GC whenever the faulting instruction is not a GC safe point (docs/DESIGN.md). So every fault on
 * guest memory is resolved here, in the faulting thread's signal handler (a vectored exception handler on
 * Windows), and the handler never waits for a managed thread, never allocates and never calls back.
 *
 * FILES (one concern each, as the kernel's mm/ is split), in floors: a file calls only files on its own
 * floor's lower lines or on floors below it, never one above (scripts/c-floors.py checks it in CI).
 *   pagelab.h     this protocol, the shared structs, the few functions the files share
 *   -- 0. ground floor: the OS and the primitives --
 *   osfail.c      the OS layer's seeded failure injector (fail the Nth call of a kind, at random, short
 *                 reads and writes) and its per-kind counts
 *   os_linux.c    the OS layer on Linux (memfd views, mprotect, madvise, pread/pwrite, fallocate, the
 *                 userfaultfd, process_vm_readv, sigaction): every OS call the engine makes
 *   os_windows.c  the OS layer on Windows (placeholders, section views, VirtualProtect, vectored handler)
 *   base.c        the ticket lock, the async-signal-safe log line
 *   hash.c        the content hash
 *   -- 1. frames and address space --
 *   arena.c       host frames: the frame-state table, the free bitmap, allocate / release / retire
 *   addrspace.c   where guest memory is placed: windows of address space, destroyed regions quarantined
 *   -- 2. regions --
 *   region.c      regions (one VM's guest physical memory): entering by id, tables, settings, the event ring
 *   -- 3. mappings --
 *   mapping.c     guest views and their budget: the mapping-count model, the one commit sequence every
 *                 page change goes through (change_pages), the poison-marker probe (kernel_poisoned)
 *   -- 4. mechanisms --
 *   hostswap.c    where a fault gets a frame: pool, free arena frame, or a victim page host-swapped out;
 *                 a fault's mapping kept within the budget (fault_map)
 *   share.c       content-based page sharing: shared frames with N sharers, merge, copy-on-write breaks
 *   parity.c      protection: parity groups, protect, inject, recover, contain, scrub (the hash is hash.c)
 *   mce.c         memory errors the kernel delivers: their recovery, and the kernel-backed injectors
 *   -- 5. the handlers and the exported API --
 *   handler.c     the SIGSEGV handler (vectored on Windows): finds the region, resolves, chains
 *   sigbus.c      the SIGBUS entry: the pages the kernel names, handed to mce.c, or chained
 *   api.c         the calls that change a VM's pages (create, map, unmap, pool, sampling, destroy), install
 *   -- beside the engine (they call only the ground floor) --
 *   appheap.c     the guest application heap: malloc over a run of a VM's guest pages, bookkeeping outside them
 *   appsqlite.c   SQLite's allocator (SQLITE_CONFIG_MALLOC) over that heap, process-wide
 *   appvfs.c      a shim over SQLite's default VFS: file I/O and paths pass through ordinary memory
 *   check.c       consistency checks of the tables, recomputed from scratch (tests, the anomaly campaign)
 *
 * OWNERSHIP OF FRAMES (the truth is arena.c's table; C# reads it and changes it only through pl_* calls)
 *   state     owner                      who may move it, and where
 *   FREE      the arena (free bitmap)    pl_frames_alloc -> HELD; the handler -> GUEST (a demand fault)
 *   HELD      the C# caller holding it   pl_map / pl_pool_push -> GUEST; pl_frames_release -> FREE
 *                                        (punched first); pl_frames_move <-> PARITY; pl_frames_retire.
 *                                        A call consuming HELD frames reserves them first (owner
 *                                        PL_RESERVED, arena_reserve_held), so a second consumer is refused
 *   GUEST     one region (owner = its VM id): mapped at one page, waiting in its pool, or being reused
 *                                        by host swap. pl_unmap / pl_map (old frame) / pl_pool_take ->
 *                                        HELD; a poisoned frame -> RETIRED, never back to HELD or FREE
 *   PARITY    one parity group           pl_frames_move -> HELD (after pl_parity_rebuild / group free)
 *   RETIRED   nobody, forever            nothing moves it (its memory is given back to the OS)
 *   SHARED    its sharers (sharers[f] guest pages of any VMs, mapped read-only; see SHARING below)
 *
 * PAGE STATES (state[page], 32-bit words read by C# with acquire loads)
 *   UNBACKED  no frame; an anonymous PROT_NONE hole. A touch is a demand-zero fault.
 *   BACKED    p2m[page] mapped read-write.
 *   SAMPLED   p2m[page] mapped PROT_NONE for working-set sampling; the first touch marks the page touched.
 *   TRACKED   p2m[page] mapped read-only and protected (hash recorded; covered by its group's parity and/or
 *             a clean disk copy). A write takes a fault that keeps parity true.
 *   POISONED  p2m[page] holds an uncorrected error; PROT_NONE so no access sees the bad bytes.
 *   SWAPPED   host-swapped: no frame, the content is at page * page_size in the region's host swap file.
 *   SHARED    p2m[page] is a SHARED frame, mapped read-only; a write takes a copy-on-write fault.
 *
 * LOCKS AND ORDER
 *   - Each region has a spin lock; state[], p2m[], flags, pool, groups and the region's mapping count
 *     change only under it, in the handler or in a pl_* call. The arena has one spin lock for the frame
 *     table. Order: region lock, then arena lock; never the other way, and never a wait for a second
 *     region lock (a fault on a full arena only *tries* another VM's lock, hostswap.c), so no cycle of
 *     waits can form.
 *   - A pl_* call runs in preemptive mode (the GC never stops it half way) and never touches guest memory
 *     or caller memory that could be guest memory while it holds a lock, so a lock holder always makes
 *     progress and the handler may spin.
 *   - Every page change is one transaction (region.c: change_pages): compute the mapping-count delta,
 *     take budget, make the OS call, and only then store p2m, then state (release). A failed OS call
 *     gives the budget back and leaves the tables as they were.
 *   - Parity: a covered page is read-only; its content leaves the parity while it is still read-only
 *     (XOR out, then make writable), so no write can slip in between.
 *
 * LIFETIMES
 *   A region id is (generation << 8 | slot). Slots are static and never freed: the handler reads their
 *   base and size without touching a region. Every pl_* call and every handler run counts itself in the
 *   slot (`inside`) before it loads the region; pl_region_destroy unpublishes the region, waits until
 *   nobody is inside, then frees it and bumps the generation, so a stale id is refused (PL_ENOREGION)
 *   and never reaches another VM's pages.
 *   An arena is a header in a static table (pl_arenas, never freed; headers are reused round-robin, the
 *   latest destroyed last) whose pointer is the arena's handle. Every pl_* call on an arena counts itself
 *   in (ENTER_ARENA) and is refused (PL_ENOARENA) unless the arena is live; pl_arena_destroy marks it
 *   dying, waits until nobody is inside, and refuses (PL_EBUSY, live again) while it has regions: a
 *   region counts itself in its arena (`regions`, inside pl_region_create, before it reserves its range)
 *   and out only after its last frame went back, so the arena's tables outlive every region using them.
 *   A destroyed region's guest range is never unmapped: its views are replaced by one inaccessible
 *   (PROT_NONE, MAP_NORESERVE) reservation kept for the process's life (quarantine), and new regions are
 *   placed further on in a window of address space reserved for guest memory (region.c), never at an
 *   address a stale pointer into a destroyed VM could hold. A touch there is chained with a message.
 *   Quarantined ranges cost no memory and, next to each other in the window, merge into one mapping.
 * FAULT-AROUND (pl_set_fault_around; off, 1 page, unless asked). A demand fault on a page that has never
 *   had a frame also maps the never-used pages next to it in its aligned block of fault_around pages, as
 *   the kernel maps a huge page or a file's neighbouring pages on one fault: one signal and one mmap
 *   instead of one each per page. Only frames that cost nothing extra are used (the VM's pool, then free
 *   frames under its frame limit; never a host swap or an overcommit), only pages that never had a frame
 *   and that the host never unmapped (PL_PF_USED clear: a page the balloon or free page reporting gave
 *   back is never refilled behind the guest's back), and all are zero. When no spare frame is left, the
 *   faulting page alone is mapped, as without fault-around.
 *
 * A FAULT IS ALWAYS RESOLVED when the machine has any frame to give: the handler takes the VM's pool
 * frame, else a free arena frame while the VM is under its frame limit, else it host-swaps one of the VM's
 * own pages out (a clock over backed pages; a victim whose swap write fails is left as it was and the next
 * one tried, up to 8) and reuses its frame, else a free frame past the limit, else (the arena is full) it
 * host-swaps a page of another VM, one past its limit first, whose lock it can take at once: it never
 * waits for a second region lock. One search per fault (take_frame), whose answer is the fault's:
 * PL_EAGAIN when every candidate's lock was held (the fault returns unresolved and re-runs, counted as
 * spurious, so the holder finishes and the next try succeeds; SIGSEGV and SIGBUS alike), PL_ENOFRAME
 * when there is no frame at all. A poisoned page gets that one frame: its content is rebuilt into it if
 * it can be (parity, then the disk copy, hash-checked); only if recovery says the content is gone
 * (PL_ELOST), or the page had no good copy, is it contained in the same frame: zeroed, flagged lost, the
 * bad frame retired, and C# hears of it (handler events) to end the guest context that used it. A busy
 * lock or a failed OS call never turns into a lost page. Nothing reads corrupted bytes as good data.
 *   The mapping a fault adds stays within the mapping budget (fault_map, hostswap.c): past it, a frame
 * that joins a neighbour's VMA, else a victim page whose hole merges with a hole beside it (host-swapped;
 * without host swap its context ends: unbacked, flagged lost, PL_EV_MAP_LIMIT, a log line naming
 * vm.max_map_count). Only when no page can give a mapping back is the budget's headroom below
 * vm.max_map_count used (and said). Victims whose own hole would need budget are passed over.
 *
 * SHARING (share.c; opt-in per region, pl_set_sharing)
 *   A SHARED frame holds content that several guest pages (of one or several VMs) have in common. Its
 *   sharer count (arena->sharers[f]) changes only under the arena lock; a frame whose count is 0 is dying
 *   and no page may join it. Every page mapping it is SHARED and read-only, so the frame never changes
 *   while shared (only an injected error writes it, through the host view).
 *   - create (pl_share_create): a BACKED page's own frame GUEST -> SHARED, 1 sharer.
 *   - merge (pl_share_page): under the page's region lock, the page is made read-only first, its bytes are
 *     compared with the shared frame's byte by byte, and only if they are equal is it remapped onto the
 *     shared frame (one more sharer, taken before the compare so the frame cannot die meanwhile); its old
 *     frame is punched and freed. A page that differs is made writable again, unchanged.
 *   - copy-on-write (the handler, cow_break): a write to a SHARED page copies the frame into a frame
 *     found as for a demand fault (pool, free frame, host swap), maps it read-write (BACKED), and drops
 *     one sharer. The last sharer leaving punches the frame and frees it. The copy is checked against the
 *     hash recorded at creation: a frame that no longer matches is never copied (the page gets a zero
 *     frame, is flagged lost, and C# hears of it with a SHARED_LOST event); a zero frame is never copied
 *     at all (the page gets a zero frame, losing nothing).
 *   - unmap / remap / region destroy drop the page's sharer (no frame goes back to the caller for it).
 *   - an error in a shared frame (pl_share_report): no new sharer may join (the count's high bit), every
 *     sharer page in every region is unbacked and, unless the frame was created from a zero page, flagged
 *     lost with a SHARED_LOST event (one per page); the last one leaving retires the frame. A sharer whose
 *     unbacking fails (at the mapping limit) is flagged lost and announced at once, keeps its sharer, and is
 *     unbacked by the next report of the same frame (C# makes one for the event). Protected pages (in a parity
 *     group or with a disk copy) are never shared, so parity never covers a shared frame.
 *   Only one region lock is ever held: a merge needs no lock of the other sharers' regions because the
 *   shared frame's bytes cannot change.
 */
#ifndef PAGELAB_H
#define PAGELAB_H

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#define PL_EXPORT __declspec(dllexport)
/* Portable protection bits (the Linux values); the Windows layer translates them. */
#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#else
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/mman.h>
#define PL_EXPORT __attribute__((visibility("default")))
#endif
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The handler relies on these being plain instructions, never a hidden lock. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "atomic int must be lock-free in a signal handler");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "atomic 64-bit must be lock-free in a signal handler");
_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "atomic pointers must be lock-free in a signal handler");

enum { PL_UNBACKED = 0, PL_BACKED = 1, PL_SAMPLED = 2, PL_TRACKED = 3, PL_POISONED = 4, PL_SWAPPED = 5, PL_SHARED = 6 };
enum { PL_F_FREE = 0, PL_F_HELD = 1, PL_F_GUEST = 2, PL_F_PARITY = 3, PL_F_RETIRED = 4, PL_F_SHARED = 5, PL_F_STATES = 6 };

/* Per-page flags (flags[page], under the region lock). */
#define PL_PF_SAMPLING 1u /* in the current sampling period's sample */
#define PL_PF_TOUCHED 2u  /* sampled and touched since */
#define PL_PF_LOST 4u     /* its content was lost to an uncorrected error (contained) */
#define PL_PF_USED 8u     /* has had a frame, or the host unmapped it: never fault-around's to fill */

#define PL_MAX_K 32
#define PL_MAX_AROUND 64 /* fault-around's largest block: its frame lists live on the signal stack */
#define PL_NO_GROUP 0xFFFFFFFFu
#define PL_NO_FRAME 0xFFFFFFFFu
#define PL_KEEP_FRAME 0xFFFFFFFEu /* change_pages: frames stay as they are (a protection change) */
#define PL_MAX_REGIONS 256
#define PL_MAX_ARENAS 256
#define PL_RESERVED INT32_MIN /* owner[f] of a HELD frame a call is consuming (arena_reserve_held) */
#define PL_EVENTS 4096           /* handler events kept for C#; when full, Recovered ones are dropped first */
#define PL_SPURIOUS_LIMIT 4096   /* faults in a row on one page with nothing to do: not ours, chain */

/* Status codes: 0 or a positive count on success, -errno from a failed OS call, or these. */
#define PL_EINVAL (-100000)     /* bad argument (C# validates first; this is the backstop) */
#define PL_EMAPLIMIT (-100001)  /* would pass the mapping budget */
#define PL_ENOREGION (-100002)  /* no such region (destroyed, or a stale id) */
#define PL_EFULL (-100003)      /* arena, region or group table full */
#define PL_ESTATE (-100004)     /* a page or frame is not in the state the call needs */
#define PL_ELOST (-100005)      /* no good copy: parity and disk both failed the hash check */
#define PL_ENOFRAME (-100006)   /* the arena has no free frame (and nothing could be swapped out) */
#define PL_EBUSY (-100007)      /* the arena still has regions */
#define PL_ENOSHARE (-100008)   /* the region has not opted in to page sharing */
#define PL_EAGAIN (-100009)     /* no frame now only because another VM's lock was held: retry (the fault re-runs) */
#define PL_ENOARENA (-100016)   /* no such arena (destroyed, being destroyed, or not an arena) */

/* What the handler did that C# must hear about (pl_events_take). */
enum {
    PL_EV_RECOVERED = 1,
    PL_EV_CONTAINED = 2,
    PL_EV_SHARED_LOST = 3, /* a sharer of a bad shared frame */
    PL_EV_MAP_LIMIT = 4,   /* a page whose context ends because the mapping budget is spent (frame: PL_NO_FRAME) */
};
struct pl_event {
    uint64_t page;
    uint32_t frame; /* the bad frame, now RETIRED */
    uint32_t kind;
};

/* Per-region counters, one list: the struct's fields, their count, and the names and offsets
 * pl_counters_layout reports are all made from it. C# mirrors the struct field by field
 * (Interop.PageLab.RegionCounters) and a test compares the two layouts by name and offset, so a counter
 * added on one side only fails that test. Add one here, then in C# under the same name in PascalCase. */
#define PL_COUNTER_FIELDS(X) \
    X(demand_faults)      /* demand-zero faults resolved */ \
    X(sample_touches)     /* first touches of SAMPLED pages */ \
    X(pool_empty)         /* faults that found the pool empty (resolved another way) */ \
    X(map_failures)       /* handler OS-call failures or budget hits */ \
    X(tracked_writes)     /* write faults on TRACKED pages (parity kept true) */ \
    X(handler_recoveries) /* corrupt pages recovered inside the handler */ \
    X(host_swap_outs)     /* pages the host swapped out to free a frame */ \
    X(host_swap_ins)      /* SWAPPED pages brought back on a touch */ \
    X(contained)          /* poisoned pages with no good copy given a zero frame, flagged lost */ \
    X(overcommits)        /* free frames taken past the VM's frame limit (nothing to swap) */ \
    X(spurious)           /* faults on pages with nothing to do (raced, or repaired) */ \
    X(events_dropped)     /* handler events C# did not collect in time */ \
    X(cow_breaks)         /* writes to SHARED pages given a private copy (handler or pl_unshare) */ \
    X(pages_merged)       /* pages merged onto a shared frame (pl_share_create / pl_share_page) */ \
    X(faulted_around)     /* never-used pages a demand fault mapped besides its own */ \
    X(taken_from_others)  /* frames a fault took by host-swapping another VM's page (arena full) */

struct pl_counters {
#define PL_COUNTER_FIELD(name) _Atomic uint64_t name;
    PL_COUNTER_FIELDS(PL_COUNTER_FIELD)
#undef PL_COUNTER_FIELD
};
#define PL_COUNTER_ONE(name) +1
enum { PL_COUNTERS = 0 PL_COUNTER_FIELDS(PL_COUNTER_ONE) };
#undef PL_COUNTER_ONE
/* C# reads the counters as plain 64-bit words: an _Atomic uint64_t must be one, with no padding. */
_Static_assert(sizeof(_Atomic uint64_t) == sizeof(uint64_t), "an atomic counter is a plain 64-bit word");
_Static_assert(sizeof(struct pl_counters) == PL_COUNTERS * sizeof(uint64_t), "struct pl_counters has no padding");

/* A ticket lock: waiters are served in arrival order, so a host loop that keeps calling into the engine
 * cannot starve a guest thread waiting in its fault handler (a test-and-set lock did, measured with four
 * writers on one page against a protect/scrub loop). All zero is unlocked. */
struct pl_spin {
    _Atomic uint32_t next;
    _Atomic uint32_t serving;
};

struct pl_arena {
    intptr_t os;              /* memfd (Linux) or section HANDLE (Windows) */
    uint8_t *view;            /* the whole arena, read-write */
    uint32_t frames;
    _Atomic uint8_t *fstate;  /* frame -> PL_F_* */
    _Atomic int32_t *owner;   /* frame -> owning VM id while GUEST, else 0 */
    uint64_t *free_bits;      /* bit set: FREE */
    uint32_t hint;            /* no free frame below it */
    int64_t counts[PL_F_STATES];
    uint32_t *sharers;        /* frame -> guest pages mapping it while SHARED (PL_SHARE_DYING: no joins) */
    uint8_t *share_zero;      /* frame -> 1 if SHARED and created from a zero page */
    uint64_t *share_hash;     /* frame -> content hash recorded when it became SHARED */
    int64_t share_pages;      /* sum of sharers[] over SHARED frames */
    _Atomic int regions;
    struct pl_spin lock;
    size_t tables_bytes;
};

struct pl_group {
    uint32_t parity_frame;    /* PL_NO_FRAME: the slot is free */
    uint32_t n;
    uint32_t covered;         /* bit i: members[i] is in the parity */
    uint32_t members[PL_MAX_K];
};

struct pl_slot;

struct pl_region {
    struct pl_slot *slot;
    struct pl_arena *arena;
    int32_t owner;            /* the VM id frames of this region carry */
    uint8_t *base;
    uint64_t pages;
    _Atomic uint32_t *state;
    _Atomic uint32_t *p2m;
    uint8_t *flags;
    uint32_t *pool;
    uint32_t pool_capacity, pool_head, pool_count;
    int64_t maps;             /* VMAs this region needs */
    int64_t owned;            /* GUEST frames of this region (mapped + pool + in reuse), under arena lock */
    uint64_t frame_limit;     /* past it the handler host-swaps before it takes a free frame */
    uint32_t fault_around;    /* a demand fault maps up to this many never-used pages of its aligned block */
    uint32_t *group_of;       /* page -> group or PL_NO_GROUP */
    struct pl_group *groups;
    uint32_t group_capacity;
    int64_t *disk_off;        /* page -> offset of its clean copy, or -1 */
    intptr_t disk;            /* fd / HANDLE of the clean copies; -1: none */
    intptr_t swap;            /* fd / HANDLE of the host swap file; -1: none (no host swap) */
    uint64_t clock_hand;      /* next page the host-swap clock looks at */
    uint64_t *hash;           /* page -> content hash while TRACKED or POISONED */
    struct pl_event *events;  /* ring of PL_EVENTS */
    uint32_t ev_head, ev_count;
    _Atomic uint64_t ev_losses_dropped; /* events C# must act on that a full ring dropped (push_event) */
    uint64_t spurious_page;
    uint32_t spurious_streak;
    struct pl_spin lock;
    struct pl_counters counters;
    size_t tables_bytes;
    int64_t shared;           /* pages of this region in state SHARED */
    int share_ok;             /* opted in to page sharing */
#ifdef _WIN32
    uint8_t *view_mapped;     /* page -> 1 if a view (not a placeholder) is there */
#endif
};

struct pl_slot {
    _Atomic uintptr_t base;   /* read by the handler without entering */
    _Atomic uint64_t bytes;
    _Atomic uint32_t gen;
    _Atomic uint32_t inside;  /* pl_* calls and handlers using the region now */
    struct pl_region *_Atomic region;
};

extern struct pl_slot pl_slots[PL_MAX_REGIONS];
extern struct pl_arena pl_arenas[PL_MAX_ARENAS];
/* A slot whose region is being destroyed: taken, but nobody may enter it. */
#define PL_DYING ((struct pl_region *)(uintptr_t)1)
extern size_t page_size;
extern _Atomic int64_t maps_in_use;
extern _Atomic int64_t map_budget;
extern _Atomic uint64_t chained_faults;

/* ---- OS layer (os_linux.c / os_windows.c). Status: 0 or -errno / -GetLastError(). ----
 * The ground floor: every OS call the engine makes is made here, and only here, and each one first asks
 * the failure injector (osfail.c) whether to fail, by kind: */
enum {
    PL_OS_MAP,     /* mmap / MapViewOfFile3 / VirtualAlloc: a guest page's view, a hole, a reservation, tables */
    PL_OS_UNMAP,   /* munmap / UnmapViewOfFile2 / VirtualFree: a region's range, tables */
    PL_OS_PROTECT, /* mprotect / VirtualProtect */
    PL_OS_ADVISE,  /* madvise (MADV_DONTNEED, MADV_HWPOISON) */
    PL_OS_DISCARD, /* fallocate(PUNCH_HOLE) / zeroing + MEM_RESET: a frame back to zero */
    PL_OS_READ,    /* pread / ReadFile: disk copies, host swap-in */
    PL_OS_WRITE,   /* pwrite / WriteFile: host swap-out */
    PL_OS_UFFD,    /* the userfaultfd: its creation and every ioctl on it */
    PL_OS_PEEK,    /* process_vm_readv: the kernel read that tells a poisoned mapping */
    PL_OS_KINDS
};
extern _Atomic int pl_osfail_on;
int osfail_slow(int kind);                   /* osfail.c: 0, or the positive error to fail with */
size_t osfail_short(int kind, size_t want);  /* osfail.c: how many bytes this read or write may move */
/* 0: make the call; else the error to fail it with. Off, one relaxed load. */
static inline int osfail_hit(int kind)
{
    return atomic_load_explicit(&pl_osfail_on, memory_order_relaxed) ? osfail_slow(kind) : 0;
}
/* Every failed OS call, real or injected: a fault whose call failed re-runs (handler.c) instead of dying,
 * since the next try usually succeeds (a transient shortage, an injected failure). */
extern _Atomic uint64_t os_failures;
size_t os_page_size(void);
void os_yield(void);
int os_last_error(void);
void os_write_stderr(const char *buf, size_t n);
int map_frames(struct pl_region *r, uint64_t page, uint64_t count, uint32_t frame, int prot);
int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count);
int protect_pages(struct pl_region *r, uint64_t page, uint64_t count, int prot);
void *os_tables_alloc(size_t bytes);
void os_tables_free(void *mem, size_t bytes);
int os_reserve(struct pl_region *r);
void os_release(struct pl_region *r);
int os_quarantine(struct pl_region *r); /* views gone, the range kept reserved and inaccessible */
int os_read_file(intptr_t file, uint8_t *dst, size_t bytes, int64_t offset);
int os_write_file(intptr_t file, const uint8_t *src, size_t bytes, int64_t offset);
int os_discard(struct pl_arena *a, uint32_t frame, uint32_t count);
int os_install(void *fault);       /* the SIGSEGV handler / first vectored handler `fault` (pl_install passes
                                     handler.c's, then installs mce.c's SIGBUS one) */
int64_t os_previous_flags(void);
#ifndef _WIN32
/* For the kernel injectors and the SIGBUS handler (mce.c): the userfaultfd, madvise, mprotect of one
 * address, and a kernel read that fails (0 bytes) instead of signalling on a poisoned mapping. */
int os_uffd_open(int *how);       /* fd, or -errno; *how: 0 syscall user-mode-only, 1 syscall, 2 /dev/userfaultfd */
int os_uffd_ioctl(int fd, unsigned long request, void *arg); /* 0 or -errno */
void os_close(int fd);
int os_advise(void *at, size_t bytes, int advice);
int os_protect(void *at, size_t bytes, int prot);
int os_peek(const void *addr);    /* 0: one byte read fine; -errno: the kernel could not read it */
int os_sysctl_digit(const char *path); /* first digit of a /proc file, or -1 */
int os_has_cap_sys_admin(void);
int os_exists(const char *path);
#include <signal.h>
int os_sigaction(int sig, void (*fn)(int, siginfo_t *, void *), struct sigaction *previous, int onstack);
void os_signal_default(int sig, int raise_again);
#endif

/* ---- shared helpers (base.c, hash.c: ground floor) ---- */
void pl_lock(struct pl_spin *l);
int pl_trylock(struct pl_spin *l); /* 1: taken; 0: held by someone, nothing changed */
void pl_unlock(struct pl_spin *l);
void say(const char *what, uint64_t region, uint64_t page);
static inline uint8_t *frame_bytes(struct pl_arena *a, uint32_t f) { return a->view + (size_t)f * page_size; }
static inline uint32_t st_of(struct pl_region *r, uint64_t g) { return atomic_load_explicit(&r->state[g], memory_order_relaxed); }
static inline uint32_t fr_of(struct pl_region *r, uint64_t g) { return atomic_load_explicit(&r->p2m[g], memory_order_relaxed); }
/* The protection a page state's mapping has. */
static inline int prot_of(uint32_t st)
{
    return st == PL_BACKED ? PROT_READ | PROT_WRITE : st == PL_TRACKED || st == PL_SHARED ? PROT_READ : PROT_NONE;
}
uint64_t page_hash(const void *p, uint64_t bytes);

/* mapping.c (guest views and their budget; calls only the ground floor) */
int take_budget(int64_t delta); /* 0, or PL_EMAPLIMIT with nothing taken */
int change_pages(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, const uint32_t *frames,
                 uint32_t frame0, int force);
int64_t change_delta(struct pl_region *r, uint64_t first, uint64_t count, uint32_t new_state, uint32_t frame0);
void set_page(struct pl_region *r, uint64_t g, uint32_t frame, uint32_t st);

/* region.c */
struct pl_region *region_enter(int id);
void region_leave(struct pl_region **r);
/* Enters region `id` for the rest of the enclosing block (left automatically on every return). */
#define ENTER_REGION(r, id)                                                      \
    struct pl_region *r __attribute__((cleanup(region_leave))) = region_enter(id); \
    if (!r) return PL_ENOREGION
void push_event(struct pl_region *r, uint64_t page, uint32_t frame, uint32_t kind);

/* addrspace.c (where regions are placed; destroyed ones stay quarantined there) */
int place_region(struct pl_region *r);   /* r->base := a range never used before */
void unplace_region(struct pl_region *r); /* undo for a region that never got a slot */
int in_window(uintptr_t addr);
void log_quarantined(struct pl_region *r);
int quarantine_maps(struct pl_region *r); /* mappings its quarantined range keeps charged for good */
int region_quarantined(uintptr_t addr, int32_t *owner, uint64_t *page); /* 1: a destroyed region's range */

/* arena.c (callers hold the arena lock where it says so) */
struct pl_arena *arena_enter(struct pl_arena *a); /* counted in, or NULL if a is not a live arena */
void arena_leave(struct pl_arena **a);
/* Enters arena `a` for the rest of the enclosing block (left automatically on every return). */
#define ENTER_ARENA(a)                                                                      \
    struct pl_arena *a##_entered __attribute__((cleanup(arena_leave))) = arena_enter(a);   \
    if (!a##_entered) return PL_ENOARENA
int arena_held(struct pl_arena *a, uint32_t f);                         /* HELD, not reserved; needs lock */
int arena_reserve_held(struct pl_arena *a, const uint32_t *frames, uint64_t n); /* all HELD -> reserved; takes lock */
void arena_unreserve(struct pl_arena *a, const uint32_t *frames, uint64_t n);   /* undo; takes lock */
int arena_take_free(struct pl_arena *a, uint32_t *out);                 /* FREE -> caller; needs lock */
void arena_set(struct pl_arena *a, uint32_t f, uint32_t st, int32_t owner); /* needs lock */
uint64_t arena_set_many(struct pl_arena *a, const uint32_t *frames, uint64_t n, uint32_t from, uint32_t to,
                        int32_t owner);                                 /* needs lock; neither state FREE */
void arena_give_region(struct pl_region *r, uint32_t f);                /* f -> GUEST of r; takes lock */
void arena_take_region(struct pl_region *r, uint32_t f, uint32_t st);   /* GUEST of r -> st; takes lock */
void arena_retire(struct pl_region *r, uint32_t f);                     /* GUEST of r -> RETIRED, discarded */
void frame_zero(struct pl_arena *a, uint32_t f, uint32_t n);            /* punched, else zeroed: reads as zero */

/* hostswap.c */
int take_frame(struct pl_region *r, uint64_t g, uint32_t *out, int *zero); /* 0, PL_ENOFRAME or PL_EAGAIN */
int fault_map(struct pl_region *r, uint64_t g, uint32_t st, uint32_t *frame, int may_move);
int take_spare_frame(struct pl_region *r, uint32_t *out);
int swap_in(struct pl_region *r, uint64_t g);
void drop_frame(struct pl_region *r, uint32_t f, int zero);

/* parity.c */
int recover_locked(struct pl_region *r, uint64_t g, uint32_t fresh, uint32_t *old);
int repair_in_handler(struct pl_region *r, uint64_t g, int recoverable); /* 0, PL_EAGAIN, or a failure */
void leave_group(struct pl_region *r, uint64_t g);
int uncover(struct pl_region *r, uint64_t g, int content_good);

/* share.c (callers hold the region lock; share_put takes the arena lock) */
#define PL_SHARE_DYING 0x80000000u
void share_put(struct pl_arena *a, uint32_t f);
int cow_break(struct pl_region *r, uint64_t g);
int share_memory_error(struct pl_region *r, uint64_t g, int frame_bad); /* a SIGBUS on a SHARED page */
int share_report_region(struct pl_region *r, uint32_t f, int zero);

/* handler.c */
int resolve(struct pl_region *r, uint64_t g, int is_write);
struct pl_region *region_at(uintptr_t addr, struct pl_slot **slot); /* entered (caller leaves slot), or NULL */
#ifndef _WIN32
#include <signal.h>
void chain_to(const struct sigaction *previous, int sig, siginfo_t *info, void *ctx); /* to the handler before ours */
void pl_on_segv(int sig, siginfo_t *info, void *ctx);
#else
LONG CALLBACK pl_on_access_violation(EXCEPTION_POINTERS *ep);
#endif

/* ---- memory errors the kernel delivers (mce.c) ----
 * SIGBUS on a guest page whose mapping fails a kernel read: BUS_MCEERR_AR (a hardware error the access
 * needs), BUS_ADRERR / BUS_OBJERR (a poison marker: what this kernel, without CONFIG_MEMORY_FAILURE,
 * sends for UFFDIO_POISON) are recovered or contained inside the handler like a POISONED page;
 * BUS_MCEERR_AO (found by a scrub) makes the page POISONED and queues PL_EV_REPORTED for C# to handle as a
 * report. The bad frame is the faulting page's p2m entry. Other codes, other addresses: chained. */
#define PL_EV_REPORTED 16 /* event kind: the kernel reported the page bad (AO); C# handles it as a report */
enum { PL_KI_UFFD_POISON = 1, PL_KI_HWPOISON = 2 }; /* kernel injectors (bits of pl_kernel_injectors) */
/* pl_memory_error_counts order: AR handled, marker (ADRERR/OBJERR) handled, AO queued, nothing to do,
 * chained, AO deferred (the region lock was taken when it arrived: handled by pl_memory_errors_drain).
 * C# mirrors them as a struct (Interop.PageLab.KernelErrorCounts); pl_memory_error_counts_layout names
 * them for the test that compares the two, so add a count here, in mce.c's names and in C# together. */
enum { PL_MCE_AR, PL_MCE_MARKER, PL_MCE_QUEUED, PL_MCE_SPURIOUS, PL_MCE_CHAINED, PL_MCE_DEFERRED, PL_MCE_COUNTS };
#define PL_MCE_PENDING 256
/* Per-page flag set by the kernel injector: the page's mapping may carry a poison marker, so its frame
 * is not its content; the protector, host swap (evict) and sharing (shareable) probe such a page and
 * leave it alone while it fails (a SAMPLED page cannot be probed: its flag alone keeps it), so only a
 * guest access, which takes the SIGBUS, handles it. A hint only: cleared when the probe reads fine, and
 * with all flags when the page is mapped again. */
#define PL_PF_KPOISON 0x80u
int kernel_poisoned(struct pl_region *r, uint64_t g); /* region lock held (mapping.c) */
int mapping_fails(const void *addr);                   /* a kernel read of addr fails: poison (mapping.c) */
/* mce.c: the recovery a kernel-delivered error gets (region lock taken inside, only tried in a handler) */
int memory_error(struct pl_region *r, uint64_t g, int optional, int code); /* 1 handled */
void mce_count(int which);
/* sigbus.c (top floor) */
int mce_install(void);           /* the SIGBUS handler; pl_install calls it after os_install (SIGSEGV's) */
int64_t mce_previous_flags(void);
/* api.c */
int pl_installed(void);

#endif
