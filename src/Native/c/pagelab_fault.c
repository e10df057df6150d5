/* pagelab_fault.c: PageLab's fault engine. Guest physical memory regions, their page-state table,
 * and the SIGSEGV handler that resolves guest faults inside the handler, never in managed code.
 *
 * WHY NATIVE. A fault taken by a managed thread and resolved by another managed thread deadlocks with
 * the .NET GC whenever the faulting instruction is not a GC safe point (docs/DESIGN.md). So every fault
 * on guest memory is resolved here, in the faulting thread's signal handler, and the handler never
 * waits for a managed thread.
 *
 * OBJECTS
 *   region  one VM's guest physical memory: a reserved range of `pages` pages at `base`, an arena fd,
 *           and three tables in native memory: state[page], p2m[page] (host frame or PL_NO_FRAME)
 *           and the demand pool (frames C# gave us for demand-zero faults).
 *
 * PAGE STATES (state[page], a 32-bit word so a waiter could futex on it)
 *   UNBACKED  no frame; the range is anonymous PROT_NONE. A touch is a demand-zero fault: the handler
 *             pops a frame from the pool (frames in the pool are punched holes, so they read as zero),
 *             maps it RW and marks the page BACKED.
 *   BACKED    p2m[page] mapped RW (MAP_SHARED|MAP_FIXED view of the arena).
 *   SAMPLED   p2m[page] mapped PROT_NONE for working-set sampling. The first touch counts one
 *             sample_touch, restores RW and marks the page BACKED.
 *   TRACKED   p2m[page] mapped read-only and protected: its content hash is recorded, and it is covered
 *             by its parity group's parity frame and/or has a clean copy on disk. A write faults; the
 *             handler checks the hash (a corrupt page is recovered first, never written over), XORs
 *             the old content out of the parity, forgets the disk copy, makes the page RW and BACKED.
 *   POISONED  the frame holds an uncorrected error (injected through the host view); mapped PROT_NONE
 *             so no access sees the bad bytes. A touch before the host handles the report is
 *             recovered in the handler (frame from the pool) if the page is protected; else chained.
 *
 * RECOVERY (all inside one pl_* call or the handler, under the region lock, so a guest thread that
 * touches the page meanwhile waits on the lock in its handler, never on a managed thread):
 *   parity: new = parity XOR every other covered member; disk: pread of the recorded copy. Either
 *   result must match the recorded hash before it is mapped (read-only, TRACKED) in place of the bad
 *   frame; the bad frame goes back to C# to be retired.
 *   PARITY INVARIANT: parity[grp] == XOR of the content of every member whose covered bit is set,
 *   and a covered member is TRACKED (read-only), so its content cannot change unseen.
 *
 * WHO MAY CHANGE WHAT, AND IN WHICH ORDER
 *   - state[], p2m[], the pool and the region's mapping count change only while holding the region's
 *     spin lock, either in the handler or inside a pl_* call made from C#. A P/Invoke runs in
 *     preemptive mode, so the GC never stops a lock holder half way, and no pl_* call touches guest
 *     memory, so a lock holder never faults. Hence the handler may spin on the lock: its holder always
 *     makes progress.
 *   - Each change is: take lock, compute the mapping-count delta, check the budget, make the OS call,
 *     then store p2m, then state (release), then release the lock. A failed OS call leaves the tables
 *     as they were.
 *   - The handler reads state without the lock only to pick its path; it re-reads under the lock.
 *   - C# reads state[] and p2m[] directly (acquire loads) and never writes them.
 *   - A region is destroyed only by its owner, after no guest thread can touch it any more.
 *
 * MAPPING COUNT. vm.max_map_count bounds the number of VMAs. We keep, per region, the number of
 * VMAs its pages need (the kernel merges neighbours with the same protection and contiguous arena
 * offsets, and all unbacked pages into one anonymous VMA), and a process-wide sum that must stay
 * within a budget C# sets below the sysctl. An operation that would pass it fails with PL_EMAPLIMIT
 * and changes nothing. (On Windows the same model is kept; it is harmless there.)
 *
 * TWO OPERATING SYSTEMS. Everything above is shared. What differs sits in the "OS layer" section
 * below, behind a few static functions (map frames at a page, make a page a hole, change protection,
 * reserve and release a region, read the disk copy, install the handler):
 *   Linux    the arena is a memfd; a guest page is a MAP_SHARED|MAP_FIXED view of it; a hole is
 *            anonymous PROT_NONE memory; protection is mprotect; the handler is a SIGSEGV sigaction
 *            that chains to the runtime's.
 *   Windows  the arena is a pagefile-backed section; the region is a placeholder reservation split
 *            into one placeholder per guest page at create (a view can only be unmapped whole); a
 *            page is mapped with MapViewOfFile3(MEM_REPLACE_PLACEHOLDER) and made a hole again with
 *            UnmapViewOfFile2(MEM_PRESERVE_PLACEHOLDER), which faults on access like PROT_NONE;
 *            protection is VirtualProtect; the handler is a first vectored exception handler that
 *            returns EXCEPTION_CONTINUE_SEARCH for what it does not resolve (the Windows way of
 *            chaining to the runtime). Remapping a page is unmap + map, not one atomic call; both
 *            run under the region lock, so a guest touching the page in between faults, waits on the
 *            lock in the handler and re-runs its access on the new frame. (Wine 10 breaks this one
 *            guarantee: its MapViewOfFile3 makes the placeholder readable, as zeros, before it maps
 *            the section in, so a concurrent reader can see zeros during a remap; measured.)
 */
#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#define PL_EXPORT __declspec(dllexport)
/* Portable protection bits (the Linux values); the Windows layer translates them. */
#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#else
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define PL_EXPORT __attribute__((visibility("default")))
#endif

enum { PL_UNBACKED = 0, PL_BACKED = 1, PL_SAMPLED = 2, PL_TRACKED = 3, PL_POISONED = 4 };
#define PL_MAX_K 32
#define PL_NO_GROUP 0xFFFFFFFFu
#define PL_NO_FRAME 0xFFFFFFFFu
#define PL_MAX_REGIONS 256

/* Status codes: 0 or a positive count on success, -errno from a failed OS call, or these. */
#define PL_EINVAL (-100000)     /* bad argument (C# validates first; this is the backstop) */
#define PL_EMAPLIMIT (-100001)  /* would pass the mapping budget */
#define PL_ENOREGION (-100002)  /* no such region */
#define PL_EFULL (-100003)      /* region table full */
#define PL_ESTATE (-100004)     /* a page is not in the state the call needs */
#define PL_ELOST (-100005)      /* no good copy: parity and disk both failed the hash check */

struct pl_counters {
    _Atomic uint64_t demand_faults;   /* demand-zero faults resolved */
    _Atomic uint64_t sample_touches;  /* first touches of SAMPLED pages */
    _Atomic uint64_t pool_empty;      /* demand faults that found no frame (fatal, chained) */
    _Atomic uint64_t map_failures;    /* handler mmap/mprotect failures or budget hits (fatal) */
    _Atomic uint64_t tracked_writes;  /* write faults on TRACKED pages (parity kept true) */
    _Atomic uint64_t handler_recoveries; /* corrupt pages recovered inside the handler */
};

struct pl_group {
    uint32_t parity_frame;
    uint32_t n;
    uint32_t covered; /* bit i: members[i] is in the parity */
    uint32_t members[PL_MAX_K];
};

struct pl_region {
    uint8_t *base;
    uint64_t pages;
    uint64_t arena_frames;
    intptr_t arena;                                /* memfd (Linux) or section HANDLE (Windows) */
    _Atomic uint32_t *state;
    _Atomic uint32_t *p2m;
    uint32_t *pool;
    uint32_t pool_capacity, pool_head, pool_count; /* ring, under lock */
    int64_t maps;                                  /* VMAs this region needs, under lock */
    uint8_t *host_view;                            /* the whole arena, for parity and rebuilds */
    uint32_t *group_of;                            /* page -> group or PL_NO_GROUP */
    struct pl_group *groups;
    uint32_t group_capacity, group_count;
    int64_t *disk_off;                             /* page -> offset of its clean copy, or -1 */
    intptr_t disk;                                 /* fd (Linux) or file HANDLE (Windows); -1: none */
    uint64_t *hash;                                /* page -> content hash while TRACKED */
    uint32_t *retired;                             /* bad frames the handler replaced, for C# */
    uint32_t retired_count;
    atomic_flag lock;
    struct pl_counters counters;
    size_t tables_bytes;
#ifdef _WIN32
    uint8_t *view_mapped;                          /* page -> 1 if a view (not a placeholder) is there */
#endif
};

static struct pl_region *_Atomic regions[PL_MAX_REGIONS];
static _Atomic int64_t maps_in_use;
static _Atomic int64_t map_budget = 60000;
static _Atomic uint64_t chained_faults;
static _Atomic int installed;
static size_t page_size;

/* ---- small helpers (all async-signal-safe) ---- */

static void os_yield(void);
static void os_write_stderr(const char *buf, size_t n);

static void lock(struct pl_region *r)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&r->lock, memory_order_acquire))
        if (++spins % 64 == 0) os_yield();
}

static void unlock(struct pl_region *r) { atomic_flag_clear_explicit(&r->lock, memory_order_release); }

static void say(const char *what, uint64_t region, uint64_t page)
{
    /* write(2) is async-signal-safe; snprintf is not, so format by hand. */
    char buf[160], num[24];
    size_t n = 0;
    const char *parts[] = {"pagelab: ", what, " (region ", NULL, ", guest page ", NULL, ")\n"};
    uint64_t vals[] = {0, 0, 0, region, 0, page, 0};
    for (int i = 0; i < 7; i++) {
        const char *s = parts[i];
        if (!s) {
            int k = 0;
            uint64_t v = vals[i];
            do { num[k++] = (char)('0' + v % 10); v /= 10; } while (v && k < 20);
            while (k && n < sizeof buf) buf[n++] = num[--k];
            continue;
        }
        while (*s && n < sizeof buf) buf[n++] = *s++;
    }
    os_write_stderr(buf, n);
}

static struct pl_region *region_of(int id)
{
    if (id < 0 || id >= PL_MAX_REGIONS) return NULL;
    return atomic_load_explicit(&regions[id], memory_order_acquire);
}

/* ---- mapping-count model ---- */

/* The protection a page's VMA has; UNBACKED pages share one anonymous VMA. */
static int prot_of(uint32_t st)
{
    return st == PL_BACKED ? PROT_READ | PROT_WRITE : st == PL_TRACKED ? PROT_READ : PROT_NONE;
}

/* Is there a VMA boundary between pages i and i+1, given their states and frames? */
static int splits(uint32_t s0, uint32_t f0, uint32_t s1, uint32_t f1)
{
    if ((s0 == PL_UNBACKED) != (s1 == PL_UNBACKED)) return 1;
    if (s0 == PL_UNBACKED) return 0;
    return prot_of(s0) != prot_of(s1) || f1 != f0 + 1;
}

/* Change in VMA count if pages [first, first+count) take states new_st[] and frames new_f[]
 * (new_f may be NULL: frames unchanged). Caller holds the lock. */
static int64_t maps_delta(struct pl_region *r, uint64_t first, uint64_t count, const uint32_t *new_st,
                          uint32_t same_st, const uint32_t *new_f)
{
    int64_t delta = 0;
    uint64_t lo = first ? first - 1 : 0;
    uint64_t hi = first + count < r->pages ? first + count : r->pages - 1; /* last boundary's left page */
    for (uint64_t i = lo; i < hi; i++) {
        uint32_t s0 = atomic_load_explicit(&r->state[i], memory_order_relaxed);
        uint32_t f0 = atomic_load_explicit(&r->p2m[i], memory_order_relaxed);
        uint32_t s1 = atomic_load_explicit(&r->state[i + 1], memory_order_relaxed);
        uint32_t f1 = atomic_load_explicit(&r->p2m[i + 1], memory_order_relaxed);
        int before = splits(s0, f0, s1, f1);
        if (i >= first && i < first + count) {
            s0 = new_st ? new_st[i - first] : same_st;
            if (new_f) f0 = new_f[i - first];
        }
        if (i + 1 >= first && i + 1 < first + count) {
            s1 = new_st ? new_st[i + 1 - first] : same_st;
            if (new_f) f1 = new_f[i + 1 - first];
        }
        delta += splits(s0, f0, s1, f1) - before;
    }
    return delta;
}

/* Reserve `delta` mappings from the process budget; 0 on success. */
static int take_budget(int64_t delta)
{
    if (delta <= 0) return 0;
    int64_t now = atomic_fetch_add(&maps_in_use, delta) + delta;
    if (now > atomic_load(&map_budget)) {
        atomic_fetch_sub(&maps_in_use, delta);
        return PL_EMAPLIMIT;
    }
    return 0;
}

static void settle_budget(struct pl_region *r, int64_t delta)
{
    if (delta < 0) atomic_fetch_add(&maps_in_use, delta);
    r->maps += delta;
}

/* ---- OS layer: the only OS-specific code (callers hold the region lock) ----
 * map_frames          pages [page, page+count) := views of frames [frame, frame+count) with prot
 * map_anonymous       pages [page, page+count) := holes (any access faults)
 * protect_pages       change the protection of mapped pages
 * os_tables_alloc/free  zeroed private memory for a region's tables
 * os_reserve/os_release the region's address range (all holes)
 * os_read_disk        read the clean disk copy of a page
 * os_install          install the fault handler (Linux: SIGSEGV; Windows: vectored exception handler)
 * plus os_page_size, os_yield and os_write_stderr. Status: 0 on success, -errno / -GetLastError(). */

#ifndef _WIN32

static struct sigaction previous;

static size_t os_page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }
static void os_yield(void) { sched_yield(); }
static int os_last_error(void) { return -errno; }

static void os_write_stderr(const char *buf, size_t n)
{
    ssize_t ignored = write(STDERR_FILENO, buf, n);
    (void)ignored; /* nothing more can be done about a failed diagnostic */
}

static int map_frames(struct pl_region *r, uint64_t page, uint64_t count, uint32_t frame, int prot)
{
    void *at = r->base + page * page_size;
    void *got = mmap(at, count * page_size, prot, MAP_SHARED | MAP_FIXED, (int)r->arena, (off_t)frame * (off_t)page_size);
    return got == MAP_FAILED ? -errno : 0;
}

static int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count)
{
    void *at = r->base + page * page_size;
    void *got = mmap(at, count * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return got == MAP_FAILED ? -errno : 0;
}

static int protect_pages(struct pl_region *r, uint64_t page, uint64_t count, int prot)
{
    return mprotect(r->base + page * page_size, count * page_size, prot) == 0 ? 0 : -errno;
}

static void *os_tables_alloc(size_t bytes)
{
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return mem == MAP_FAILED ? NULL : mem;
}

static void os_tables_free(void *mem, size_t bytes) { munmap(mem, bytes); }

static int os_reserve(struct pl_region *r)
{
    void *base = mmap(NULL, r->pages * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return -errno;
    r->base = base;
    return 0;
}

static void os_release(struct pl_region *r) { munmap(r->base, r->pages * page_size); }

static int os_read_disk(intptr_t disk, uint8_t *dst, size_t bytes, int64_t offset)
{
    return pread((int)disk, dst, bytes, (off_t)offset) == (ssize_t)bytes ? 0 : -1;
}

static void on_segv(int sig, siginfo_t *info, void *ctx);

static int os_install(void)
{
    struct sigaction sa;
    if (sigaction(SIGSEGV, NULL, &previous) != 0) return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_mask = previous.sa_mask; /* same blocking discipline as the runtime's handler */
    sa.sa_flags = (previous.sa_flags & ~(int)SA_RESETHAND) | SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    if (sigaction(SIGSEGV, &sa, NULL) != 0) return -errno;
    return 0;
}

static int64_t os_previous_flags(void) { return (int64_t)previous.sa_flags; }

#else /* _WIN32 */

#ifndef MEM_RESERVE_PLACEHOLDER
#define MEM_RESERVE_PLACEHOLDER 0x00040000
#endif
#ifndef MEM_REPLACE_PLACEHOLDER
#define MEM_REPLACE_PLACEHOLDER 0x00004000
#endif
#ifndef MEM_PRESERVE_PLACEHOLDER
#define MEM_PRESERVE_PLACEHOLDER 0x00000002
#endif
#ifndef MEM_COALESCE_PLACEHOLDERS
#define MEM_COALESCE_PLACEHOLDERS 0x00000001
#endif

/* The placeholder functions live in kernelbase.dll (not every import library has them), so they are
 * resolved once at install. */
typedef PVOID(WINAPI *virtual_alloc2_fn)(HANDLE, PVOID, SIZE_T, ULONG, ULONG, void *, ULONG);
typedef PVOID(WINAPI *map_view3_fn)(HANDLE, HANDLE, PVOID, ULONG64, SIZE_T, ULONG, ULONG, void *, ULONG);
typedef BOOL(WINAPI *unmap_view2_fn)(HANDLE, PVOID, ULONG);
static virtual_alloc2_fn virtual_alloc2;
static map_view3_fn map_view3;
static unmap_view2_fn unmap_view2;

static size_t os_page_size(void)
{
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwPageSize;
}

static void os_yield(void) { SwitchToThread(); }
static int os_last_error(void) { return -(int)GetLastError(); }

static void os_write_stderr(const char *buf, size_t n)
{
    DWORD written;
    /* nothing more can be done about a failed diagnostic */
    (void)WriteFile(GetStdHandle(STD_ERROR_HANDLE), buf, (DWORD)n, &written, NULL);
}

static DWORD win_prot(int prot)
{
    return prot == (PROT_READ | PROT_WRITE) ? PAGE_READWRITE : prot == PROT_READ ? PAGE_READONLY : PAGE_NOACCESS;
}

static uint8_t *page_at(struct pl_region *r, uint64_t g) { return r->base + g * page_size; }

/* Page g back to its placeholder (a hole). */
static int hole_one(struct pl_region *r, uint64_t g)
{
    if (!r->view_mapped[g]) return 0;
    if (!unmap_view2(GetCurrentProcess(), page_at(r, g), MEM_PRESERVE_PLACEHOLDER)) return os_last_error();
    r->view_mapped[g] = 0;
    return 0;
}

/* Page g := a view of `frame` with protection prot (mapped read-write, then narrowed: MapViewOfFile3
 * refuses PAGE_NOACCESS). */
static int map_one(struct pl_region *r, uint64_t g, uint32_t frame, int prot)
{
    int rc = hole_one(r, g);
    if (rc != 0) return rc;
    void *got = map_view3((HANDLE)r->arena, GetCurrentProcess(), page_at(r, g), (ULONG64)frame * page_size, page_size,
                          MEM_REPLACE_PLACEHOLDER, PAGE_READWRITE, NULL, 0);
    if (got == NULL) return os_last_error();
    r->view_mapped[g] = 1;
    DWORD old;
    if (prot != (PROT_READ | PROT_WRITE) && !VirtualProtect(got, page_size, win_prot(prot), &old)) {
        rc = os_last_error();
        (void)hole_one(r, g); /* already failing: a hole is safer than an over-permissive view */
        return rc;
    }
    return 0;
}

/* Page g as the tables say (state and p2m still hold the old values while the OS calls are made). */
static void restore_one(struct pl_region *r, uint64_t g)
{
    uint32_t st = atomic_load_explicit(&r->state[g], memory_order_relaxed);
    if (st == PL_UNBACKED) (void)hole_one(r, g);
    else (void)map_one(r, g, atomic_load_explicit(&r->p2m[g], memory_order_relaxed), prot_of(st));
}

/* A view can only be unmapped whole, so every page is its own view. A failure part way puts the
 * pages already changed back, so the call is all or nothing as on Linux. */
static int map_frames(struct pl_region *r, uint64_t page, uint64_t count, uint32_t frame, int prot)
{
    for (uint64_t i = 0; i < count; i++) {
        int rc = map_one(r, page + i, frame + (uint32_t)i, prot);
        if (rc != 0) {
            for (uint64_t j = 0; j <= i; j++) restore_one(r, page + j);
            return rc;
        }
    }
    return 0;
}

static int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        int rc = hole_one(r, page + i);
        if (rc != 0) {
            for (uint64_t j = 0; j < i; j++) restore_one(r, page + j);
            return rc;
        }
    }
    return 0;
}

static int protect_pages(struct pl_region *r, uint64_t page, uint64_t count, int prot)
{
    DWORD old;
    return VirtualProtect(page_at(r, page), count * page_size, win_prot(prot), &old) ? 0 : os_last_error();
}

static void *os_tables_alloc(size_t bytes) { return VirtualAlloc(NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE); }
static void os_tables_free(void *mem, size_t bytes) { (void)bytes; VirtualFree(mem, 0, MEM_RELEASE); }

/* Frees a region's placeholders: its first `split` pages are one-page placeholders, the rest is one
 * more. Coalesced into one and released, or released one by one if coalescing is refused. */
static void release_placeholders(uint8_t *base, uint64_t pages, uint64_t split)
{
    if (split == 0 || VirtualFree(base, pages * page_size, MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS)) {
        VirtualFree(base, 0, MEM_RELEASE);
        return;
    }
    for (uint64_t g = 0; g <= split && g < pages; g++) VirtualFree(base + g * page_size, 0, MEM_RELEASE);
}

/* One placeholder per guest page, so that each page can be mapped and unmapped on its own. */
static int os_reserve(struct pl_region *r)
{
    uint8_t *base = virtual_alloc2(GetCurrentProcess(), NULL, r->pages * page_size,
                                   MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS, NULL, 0);
    if (base == NULL) return os_last_error();
    for (uint64_t g = 0; g + 1 < r->pages; g++) {
        if (!VirtualFree(base + g * page_size, page_size, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER)) {
            int rc = os_last_error();
            release_placeholders(base, r->pages, g);
            return rc;
        }
    }
    r->base = base;
    return 0;
}

static void os_release(struct pl_region *r)
{
    for (uint64_t g = 0; g < r->pages; g++) (void)hole_one(r, g);
    release_placeholders(r->base, r->pages, r->pages - 1);
}

static int os_read_disk(intptr_t disk, uint8_t *dst, size_t bytes, int64_t offset)
{
    OVERLAPPED at;
    memset(&at, 0, sizeof at);
    at.Offset = (DWORD)(uint64_t)offset;
    at.OffsetHigh = (DWORD)((uint64_t)offset >> 32);
    DWORD got = 0;
    return ReadFile((HANDLE)disk, dst, (DWORD)bytes, &got, &at) && got == bytes ? 0 : -1;
}

static LONG CALLBACK on_access_violation(EXCEPTION_POINTERS *ep);

static int os_install(void)
{
    HMODULE kb = GetModuleHandleW(L"kernelbase.dll");
    if (kb == NULL) kb = LoadLibraryW(L"kernelbase.dll");
    if (kb == NULL) return os_last_error();
    virtual_alloc2 = (virtual_alloc2_fn)(void (*)(void))GetProcAddress(kb, "VirtualAlloc2");
    map_view3 = (map_view3_fn)(void (*)(void))GetProcAddress(kb, "MapViewOfFile3");
    unmap_view2 = (unmap_view2_fn)(void (*)(void))GetProcAddress(kb, "UnmapViewOfFile2");
    if (!virtual_alloc2 || !map_view3 || !unmap_view2) return -(int)ERROR_PROC_NOT_FOUND;
    /* First = 1: ahead of the runtime's own handler, which then sees every fault we do not resolve. */
    return AddVectoredExceptionHandler(1, on_access_violation) ? 0 : os_last_error();
}

static int64_t os_previous_flags(void) { return 0; /* a vectored handler has no flags */ }

#endif


/* Changes page g's protection to that of `new_state` (same frame), within the mapping budget; with
 * `force`, a change that splits a mapping is charged even past the budget (used when undoing a
 * protection must not fail). 0 or a status; the caller stores the new state. Caller holds the lock. */
static int reprotect(struct pl_region *r, uint64_t g, uint32_t new_state, int force)
{
    int64_t delta = maps_delta(r, g, 1, &new_state, 0, NULL);
    int rc = 0;
    if (force && delta > 0) atomic_fetch_add(&maps_in_use, delta);
    else rc = take_budget(delta);
    if (rc == 0 && (rc = protect_pages(r, g, 1, prot_of(new_state))) != 0 && delta > 0)
        atomic_fetch_sub(&maps_in_use, delta);
    if (rc == 0) settle_budget(r, delta);
    return rc;
}

/* ---- protection: hashes, parity, rebuilds (callers hold the lock) ---- */

static uint8_t *frame_bytes(struct pl_region *r, uint32_t f) { return r->host_view + (size_t)f * page_size; }

/* The content hash recorded for protected pages (four independent FNV-style lanes, so it runs at
 * memory speed). Exported so C# hashes with the very same function. */
PL_EXPORT uint64_t pl_page_hash(const void *p, uint64_t bytes)
{
    const uint64_t *w = (const uint64_t *)p;
    uint64_t h[4] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull, 0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full};
    for (uint64_t i = 0; i + 4 <= bytes / 8; i += 4)
        for (int l = 0; l < 4; l++) h[l] = (h[l] ^ w[i + l]) * 0x100000001b3ull;
    uint64_t x = h[0] ^ (h[1] << 1 | h[1] >> 63) ^ (h[2] << 2 | h[2] >> 62) ^ (h[3] << 3 | h[3] >> 61);
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33;
    return x;
}

static void xor_into(uint8_t *dst, const uint8_t *src)
{
    uint64_t *d = (uint64_t *)dst;
    const uint64_t *s = (const uint64_t *)src;
    for (size_t i = 0; i < page_size / 8; i++) d[i] ^= s[i];
}

static int member_index(const struct pl_group *grp, uint64_t g)
{
    for (uint32_t i = 0; i < grp->n; i++)
        if (grp->members[i] == g) return (int)i;
    return -1;
}

/* parity := XOR of every covered member's frame. */
static void recompute_parity(struct pl_region *r, struct pl_group *grp, uint8_t *dst)
{
    memset(dst, 0, page_size);
    for (uint32_t i = 0; i < grp->n; i++)
        if (grp->covered & (1u << i))
            xor_into(dst, frame_bytes(r, atomic_load_explicit(&r->p2m[grp->members[i]], memory_order_relaxed)));
}

/* Rebuilds covered page g from its group's parity and the other covered members; -1 if g is not covered. */
static int rebuild_from_parity(struct pl_region *r, uint64_t g, uint8_t *dst)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return -1;
    struct pl_group *grp = &r->groups[gi];
    int self = member_index(grp, g);
    if (self < 0 || !(grp->covered & (1u << self))) return -1;
    memcpy(dst, frame_bytes(r, grp->parity_frame), page_size);
    for (uint32_t i = 0; i < grp->n; i++)
        if ((int)i != self && (grp->covered & (1u << i)))
            xor_into(dst, frame_bytes(r, atomic_load_explicit(&r->p2m[grp->members[i]], memory_order_relaxed)));
    return 0;
}

/* Takes page g out of its parity: XOR its (good) content out, or, if its content is not trustworthy
 * (poisoned), recompute the parity from the other covered members. */
static void uncover(struct pl_region *r, uint64_t g, int content_good)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return;
    struct pl_group *grp = &r->groups[gi];
    int i = member_index(grp, g);
    if (i < 0 || !(grp->covered & (1u << i))) return;
    grp->covered &= ~(1u << i);
    if (content_good)
        xor_into(frame_bytes(r, grp->parity_frame), frame_bytes(r, atomic_load_explicit(&r->p2m[g], memory_order_relaxed)));
    else
        recompute_parity(r, grp, frame_bytes(r, grp->parity_frame));
}

/* Removes page g from its group for good (it is being unmapped or remapped). */
static void leave_group(struct pl_region *r, uint64_t g)
{
    uint32_t gi = r->group_of[g];
    if (gi == PL_NO_GROUP) return;
    uint32_t st = atomic_load_explicit(&r->state[g], memory_order_relaxed);
    uncover(r, g, st == PL_TRACKED);
    struct pl_group *grp = &r->groups[gi];
    int i = member_index(grp, g);
    uint32_t last = grp->n - 1;
    grp->members[i] = grp->members[last];
    if (grp->covered & (1u << last)) grp->covered = (grp->covered & ~(1u << last)) | (1u << i);
    else grp->covered &= ~(1u << i);
    grp->n = last;
    r->group_of[g] = PL_NO_GROUP;
}

/* Replaces page g's frame with `fresh` holding its recovered content (parity first, then the disk
 * copy), verified against the recorded hash, mapped read-only (TRACKED). The bad frame goes to *old. */
static int recover_locked(struct pl_region *r, uint64_t g, uint32_t fresh, uint32_t *old)
{
    uint8_t *dst = frame_bytes(r, fresh);
    int ok = rebuild_from_parity(r, g, dst) == 0 && pl_page_hash(dst, page_size) == r->hash[g];
    if (!ok && r->disk_off[g] >= 0)
        ok = os_read_disk(r->disk, dst, page_size, r->disk_off[g]) == 0 && pl_page_hash(dst, page_size) == r->hash[g];
    if (!ok) return PL_ELOST;
    uint32_t nst = PL_TRACKED;
    int64_t delta = maps_delta(r, g, 1, &nst, 0, &fresh);
    if (take_budget(delta) != 0) return PL_EMAPLIMIT;
    int rc = map_frames(r, g, 1, fresh, PROT_READ);
    if (rc != 0) {
        if (delta > 0) atomic_fetch_sub(&maps_in_use, delta);
        return rc;
    }
    settle_budget(r, delta);
    *old = atomic_load_explicit(&r->p2m[g], memory_order_relaxed);
    atomic_store_explicit(&r->p2m[g], fresh, memory_order_relaxed);
    atomic_store_explicit(&r->state[g], PL_TRACKED, memory_order_release);
    return 0;
}

/* In the handler: recover page g into a pool frame; the bad frame waits in `retired` for C#. */
static int recover_in_handler(struct pl_region *r, uint64_t g)
{
    if (r->pool_count == 0 || r->retired_count >= r->pool_capacity) return 0;
    uint32_t fresh = r->pool[r->pool_head], old;
    if (recover_locked(r, g, fresh, &old) != 0) return 0;
    r->pool_head = (r->pool_head + 1) % r->pool_capacity;
    r->pool_count--;
    r->retired[r->retired_count++] = old;
    atomic_fetch_add_explicit(&r->counters.handler_recoveries, 1, memory_order_relaxed);
    return 1;
}

/* ---- the handler ---- */

#ifndef _WIN32
static void chain(int sig, siginfo_t *info, void *ctx)
{
    atomic_fetch_add_explicit(&chained_faults, 1, memory_order_relaxed);
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, ctx);
    } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
        /* Ignoring SIGSEGV would re-fault forever: restore the default action and let the
         * faulting instruction re-run and terminate the process, as it would have without us. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
    } else {
        previous.sa_handler(sig);
    }
}
#endif

/* Resolve a fault on page g of region r. Returns 1 if resolved (the access re-runs), 0 to chain. */
static int resolve(struct pl_region *r, int id, uint64_t g, int is_write)
{
    lock(r);
    uint32_t st = atomic_load_explicit(&r->state[g], memory_order_relaxed);
    int done = 0;
    if (st == PL_BACKED) {
        done = 1; /* another thread or a pl_* call got there first; the access simply re-runs */
    } else if (st == PL_UNBACKED) {
        if (r->pool_count == 0) {
            atomic_fetch_add_explicit(&r->counters.pool_empty, 1, memory_order_relaxed);
            unlock(r);
            say("demand fault found the pool empty; keep the pool filled", (uint64_t)id, g);
            return 0;
        }
        uint32_t frame = r->pool[r->pool_head];
        uint32_t nst = PL_BACKED;
        int64_t delta = maps_delta(r, g, 1, &nst, 0, &frame);
        if (take_budget(delta) != 0 || map_frames(r, g, 1, frame, PROT_READ | PROT_WRITE) != 0) {
            if (delta > 0) atomic_fetch_sub(&maps_in_use, delta);
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            unlock(r);
            say("demand fault could not map a frame (mapping budget or mmap)", (uint64_t)id, g);
            return 0;
        }
        settle_budget(r, delta);
        r->pool_head = (r->pool_head + 1) % r->pool_capacity;
        r->pool_count--;
        atomic_store_explicit(&r->p2m[g], frame, memory_order_relaxed);
        atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
        atomic_fetch_add_explicit(&r->counters.demand_faults, 1, memory_order_relaxed);
        done = 1;
    } else if (st == PL_SAMPLED) {
        if (reprotect(r, g, PL_BACKED, 0) != 0) {
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            unlock(r);
            say("sampled page could not be restored", (uint64_t)id, g);
            return 0;
        }
        atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
        atomic_fetch_add_explicit(&r->counters.sample_touches, 1, memory_order_relaxed);
        done = 1;
    } else if (st == PL_TRACKED && !is_write) {
        done = 1; /* a read raced with a recovery that has just mapped the page again */
    } else if (st == PL_TRACKED) {
        uint32_t f = atomic_load_explicit(&r->p2m[g], memory_order_relaxed);
        /* Never XOR a corrupt page out of the parity: recover it first, then take the write. */
        if (pl_page_hash(frame_bytes(r, f), page_size) != r->hash[g] && !recover_in_handler(r, g)) {
            unlock(r);
            say("write to a corrupt protected page that could not be recovered", (uint64_t)id, g);
            return 0;
        }
        if (reprotect(r, g, PL_BACKED, 0) != 0) {
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            unlock(r);
            say("protected page could not be made writable", (uint64_t)id, g);
            return 0;
        }
        uncover(r, g, 1);
        r->disk_off[g] = -1;
        atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
        atomic_fetch_add_explicit(&r->counters.tracked_writes, 1, memory_order_relaxed);
        done = 1;
    } else if (st == PL_POISONED) {
        done = recover_in_handler(r, g);
        if (!done) {
            unlock(r);
            say("access to a poisoned page with no good copy", (uint64_t)id, g);
            return 0;
        }
    }
    unlock(r);
    return done;
}

#ifndef _WIN32
static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno; /* the interrupted code may be between a call and its errno check */
    uint8_t *addr = (uint8_t *)info->si_addr;
    for (int id = 0; id < PL_MAX_REGIONS; id++) {
        struct pl_region *r = atomic_load_explicit(&regions[id], memory_order_acquire);
        if (!r || addr < r->base || addr >= r->base + r->pages * page_size) continue;
#if defined(__x86_64__)
        int is_write = (((ucontext_t *)ctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
        int is_write = 1; /* unknown here: treat as a write, which is always safe for TRACKED pages */
#endif
        int ok = resolve(r, id, (uint64_t)(addr - r->base) / page_size, is_write);
        errno = saved_errno;
        if (!ok) chain(sig, info, ctx);
        return;
    }
    errno = saved_errno;
    chain(sig, info, ctx);
}
#else
/* Windows: the first vectored handler. Resolves access violations on guest pages and passes every
 * other exception on (EXCEPTION_CONTINUE_SEARCH) to the runtime's handler, as the Linux handler chains. */
static LONG CALLBACK on_access_violation(EXCEPTION_POINTERS *ep)
{
    EXCEPTION_RECORD *er = ep->ExceptionRecord;
    if (er->ExceptionCode != EXCEPTION_ACCESS_VIOLATION || er->NumberParameters < 2) return EXCEPTION_CONTINUE_SEARCH;
    DWORD saved_error = GetLastError(); /* the interrupted code may be between a call and its error check */
    uint8_t *addr = (uint8_t *)er->ExceptionInformation[1];
    int is_write = er->ExceptionInformation[0] == 1; /* 0 read, 1 write, 8 execute */
    int ok = 0;
    for (int id = 0; id < PL_MAX_REGIONS; id++) {
        struct pl_region *r = atomic_load_explicit(&regions[id], memory_order_acquire);
        if (!r || addr < r->base || addr >= r->base + r->pages * page_size) continue;
        ok = resolve(r, id, (uint64_t)(addr - r->base) / page_size, is_write);
        break;
    }
    SetLastError(saved_error);
    if (ok) return EXCEPTION_CONTINUE_EXECUTION;
    atomic_fetch_add_explicit(&chained_faults, 1, memory_order_relaxed);
    return EXCEPTION_CONTINUE_SEARCH;
}
#endif

/* ---- API for C# ---- */

/* Install the handler once, after the runtime installed its own (we chain to it). */
PL_EXPORT int pl_install(void)
{
    if (atomic_load(&installed)) return 0;
    page_size = os_page_size();
    int rc = os_install();
    if (rc != 0) return rc;
    atomic_store(&installed, 1);
    return 0;
}

PL_EXPORT int pl_installed(void) { return atomic_load(&installed); }

/* Flags of the handler we chain to (for `pagelab info`), or -1 before install. */
PL_EXPORT int64_t pl_previous_flags(void) { return atomic_load(&installed) ? os_previous_flags() : -1; }

PL_EXPORT void pl_set_map_budget(int64_t budget) { atomic_store(&map_budget, budget); }
PL_EXPORT int64_t pl_map_budget(void) { return atomic_load(&map_budget); }
PL_EXPORT int64_t pl_maps_in_use(void) { return atomic_load(&maps_in_use); }
PL_EXPORT uint64_t pl_chained_faults(void) { return atomic_load(&chained_faults); }

/* Reserve a region of `pages` guest pages backed by frames of the arena (memfd or section handle). */
PL_EXPORT int pl_region_create(intptr_t arena, void *host_view, uint64_t arena_frames, uint64_t pages, uint32_t pool_capacity,
                               int *out_id, void **out_base)
{
    if (!atomic_load(&installed) || !host_view || pages == 0 || pool_capacity == 0 || arena_frames == 0 ||
        arena_frames > PL_NO_FRAME)
        return PL_EINVAL;
    if (take_budget(1) != 0) return PL_EMAPLIMIT;
    /* One anonymous mapping for every table; pages of it cost memory only once touched. */
    uint32_t group_capacity = (uint32_t)(pages / 2 + 1);
    size_t tables = sizeof(struct pl_region) + pages * (3 * sizeof(uint32_t) + 2 * sizeof(uint64_t)) +
                    2 * (size_t)pool_capacity * sizeof(uint32_t) + (size_t)group_capacity * sizeof(struct pl_group) + 64;
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
    r->pages = pages;
    r->arena_frames = arena_frames;
    r->arena = arena;
    r->state = (_Atomic uint32_t *)(mem + sizeof *r);
    r->p2m = r->state + pages;
    r->group_of = (uint32_t *)(r->p2m + pages);
    r->pool = r->group_of + pages;
    r->retired = r->pool + pool_capacity;
    uint8_t *aligned = (uint8_t *)(((uintptr_t)(r->retired + pool_capacity) + 7) & ~(uintptr_t)7);
    r->disk_off = (int64_t *)aligned;
    r->hash = (uint64_t *)(r->disk_off + pages);
    r->groups = (struct pl_group *)(r->hash + pages);
    r->group_capacity = group_capacity;
#ifdef _WIN32
    r->view_mapped = (uint8_t *)(r->groups + group_capacity);
#endif
    r->host_view = host_view;
    r->disk = -1;
    r->pool_capacity = pool_capacity;
    r->maps = 1;
    r->tables_bytes = tables;
    atomic_flag_clear(&r->lock);
    for (uint64_t i = 0; i < pages; i++) {
        atomic_store_explicit(&r->p2m[i], PL_NO_FRAME, memory_order_relaxed);
        r->group_of[i] = PL_NO_GROUP;
        r->disk_off[i] = -1;
    }
    int rc = os_reserve(r);
    if (rc != 0) {
        os_tables_free(mem, tables);
        atomic_fetch_sub(&maps_in_use, 1);
        return rc;
    }
    for (int id = 0; id < PL_MAX_REGIONS; id++) {
        struct pl_region *expected = NULL;
        if (atomic_compare_exchange_strong(&regions[id], &expected, r)) {
            *out_id = id;
            *out_base = r->base;
            return 0;
        }
    }
    os_release(r);
    os_tables_free(mem, tables);
    atomic_fetch_sub(&maps_in_use, 1);
    return PL_EFULL;
}

/* Unregister and unmap a region. The caller guarantees no guest thread can touch it any more. */
PL_EXPORT int pl_region_destroy(int id)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    atomic_store_explicit(&regions[id], NULL, memory_order_release);
    lock(r); /* wait out a handler that found the region before it was unregistered */
    atomic_fetch_sub(&maps_in_use, r->maps);
    os_release(r);
    os_tables_free(r, r->tables_bytes);
    return 0;
}

/* Read-only views of the tables for C#. */
PL_EXPORT int pl_region_tables(int id, uint32_t **state, uint32_t **p2m)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    *state = (uint32_t *)r->state;
    *p2m = (uint32_t *)r->p2m;
    return 0;
}

PL_EXPORT int64_t pl_region_maps(int id)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    lock(r);
    int64_t m = r->maps;
    unlock(r);
    return m;
}

/* counters[0..5] = demand_faults, sample_touches, pool_empty, map_failures, tracked_writes, handler_recoveries */
PL_EXPORT int pl_region_counters(int id, uint64_t *out, int n)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    _Atomic uint64_t *c[] = {&r->counters.demand_faults, &r->counters.sample_touches, &r->counters.pool_empty,
                             &r->counters.map_failures, &r->counters.tracked_writes, &r->counters.handler_recoveries};
    for (int i = 0; i < n && i < 6; i++) out[i] = atomic_load_explicit(c[i], memory_order_relaxed);
    return 0;
}

/* Map pages [first, first+count) onto frames[] (back or remap), RW. Old frames (PL_NO_FRAME where the
 * page was unbacked) go to old_out so C# can account for them. All or nothing. */
PL_EXPORT int pl_map(int id, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (count == 0 || first >= r->pages || count > r->pages - first) return PL_EINVAL;
    for (uint64_t i = 0; i < count; i++)
        if (frames[i] >= r->arena_frames) return PL_EINVAL;
    lock(r);
    int64_t delta = maps_delta(r, first, count, NULL, PL_BACKED, frames);
    int rc = take_budget(delta);
    uint64_t done = 0;
    while (rc == 0 && done < count) {
        uint64_t run = 1; /* one mmap per run of consecutive frames */
        while (done + run < count && frames[done + run] == frames[done] + run) run++;
        rc = map_frames(r, first + done, run, frames[done], PROT_READ | PROT_WRITE);
        if (rc == 0) done += run;
    }
    if (rc != 0) {
        /* Put back what we changed so the VM is exactly as it was. */
        for (uint64_t i = 0; i < done; i++) {
            uint64_t g = first + i;
            uint32_t st = atomic_load_explicit(&r->state[g], memory_order_relaxed);
            if (st == PL_UNBACKED) map_anonymous(r, g, 1);
            else map_frames(r, g, 1, atomic_load_explicit(&r->p2m[g], memory_order_relaxed), prot_of(st));
        }
        if (delta > 0 && rc != PL_EMAPLIMIT) atomic_fetch_sub(&maps_in_use, delta);
        unlock(r);
        return rc;
    }
    settle_budget(r, delta);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t g = first + i;
        leave_group(r, g); /* the old frame's content leaves the parity with it */
        r->disk_off[g] = -1;
        if (old_out) old_out[i] = atomic_load_explicit(&r->p2m[g], memory_order_relaxed);
        atomic_store_explicit(&r->p2m[g], frames[i], memory_order_relaxed);
        atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
    }
    unlock(r);
    return 0;
}

/* Unback pages [first, first+count): the range becomes anonymous PROT_NONE again (a later touch is a
 * demand-zero fault). Old frames go to old_out. */
PL_EXPORT int pl_unmap(int id, uint64_t first, uint64_t count, uint32_t *old_out)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (count == 0 || first >= r->pages || count > r->pages - first) return PL_EINVAL;
    lock(r);
    int64_t delta = maps_delta(r, first, count, NULL, PL_UNBACKED, NULL);
    int rc = take_budget(delta);
    if (rc == 0) rc = map_anonymous(r, first, count);
    if (rc != 0) {
        if (delta > 0 && rc != PL_EMAPLIMIT) atomic_fetch_sub(&maps_in_use, delta);
        unlock(r);
        return rc;
    }
    settle_budget(r, delta);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t g = first + i;
        leave_group(r, g);
        r->disk_off[g] = -1;
        if (old_out) old_out[i] = atomic_load_explicit(&r->p2m[g], memory_order_relaxed);
        atomic_store_explicit(&r->p2m[g], PL_NO_FRAME, memory_order_relaxed);
        atomic_store_explicit(&r->state[g], PL_UNBACKED, memory_order_release);
    }
    unlock(r);
    return 0;
}

/* Give the demand pool frames (each must be a punched, hence zero, frame). Returns how many fit. */
PL_EXPORT int pl_pool_push(int id, const uint32_t *frames, uint32_t n)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    for (uint32_t i = 0; i < n; i++)
        if (frames[i] >= r->arena_frames) return PL_EINVAL;
    lock(r);
    uint32_t pushed = 0;
    while (pushed < n && r->pool_count < r->pool_capacity) {
        r->pool[(r->pool_head + r->pool_count) % r->pool_capacity] = frames[pushed++];
        r->pool_count++;
    }
    unlock(r);
    return (int)pushed;
}

/* Take up to cap frames back out of the pool (newest first). Returns how many. */
PL_EXPORT int pl_pool_take(int id, uint32_t *out, uint32_t cap)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    lock(r);
    uint32_t n = 0;
    while (n < cap && r->pool_count > 0) {
        r->pool_count--;
        out[n++] = r->pool[(r->pool_head + r->pool_count) % r->pool_capacity];
    }
    unlock(r);
    return (int)n;
}

PL_EXPORT int pl_pool_count(int id)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    lock(r);
    int n = (int)r->pool_count;
    unlock(r);
    return n;
}

/* Working-set sampling: make BACKED pages among pages[] PROT_NONE (SAMPLED). Returns how many. */
PL_EXPORT int pl_sample(int id, const uint64_t *pages, uint32_t n)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= r->pages) return PL_EINVAL;
    lock(r);
    int sampled = 0, rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        uint64_t g = pages[i];
        if (atomic_load_explicit(&r->state[g], memory_order_relaxed) != PL_BACKED) continue;
        if ((rc = reprotect(r, g, PL_SAMPLED, 0)) != 0) break;
        atomic_store_explicit(&r->state[g], PL_SAMPLED, memory_order_release);
        sampled++;
    }
    unlock(r);
    return rc != 0 && sampled == 0 ? rc : sampled;
}

/* End a sampling period: touched[i] = 1 if pages[i] was touched since pl_sample (or is no longer
 * sampled), 0 if still SAMPLED, in which case it is restored to BACKED. Returns the touched count. */
PL_EXPORT int pl_sample_collect(int id, const uint64_t *pages, uint32_t n, uint8_t *touched)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= r->pages) return PL_EINVAL;
    lock(r);
    int count = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t g = pages[i];
        touched[i] = 1;
        if (atomic_load_explicit(&r->state[g], memory_order_relaxed) == PL_SAMPLED) {
            /* Restoring usually merges VMAs back, but between two still-sampled neighbours it splits
             * one more. It must not fail for want of budget, so it is forced. */
            if (reprotect(r, g, PL_BACKED, 1) == 0)
                atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
            touched[i] = 0;
        }
        count += touched[i];
    }
    unlock(r);
    return count;
}

/* ---- protection API ---- */

/* The file that disk offsets given to pl_protect refer to (the guest's swap file): an fd on Linux,
 * a HANDLE on Windows; -1 for none. */
PL_EXPORT int pl_set_disk_fd(int id, intptr_t disk)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    lock(r);
    r->disk = disk;
    unlock(r);
    return 0;
}

/* Makes pages[0..k) a parity group over `parity_frame` (zeroed here). Members join uncovered unless
 * already TRACKED, in which case their content goes into the parity now. Returns the group index. */
PL_EXPORT int pl_group_create(int id, const uint64_t *pages, uint32_t k, uint32_t parity_frame)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (k == 0 || k > PL_MAX_K || parity_frame >= r->arena_frames) return PL_EINVAL;
    for (uint32_t i = 0; i < k; i++) {
        if (pages[i] >= r->pages) return PL_EINVAL;
        for (uint32_t j = 0; j < i; j++)
            if (pages[j] == pages[i]) return PL_EINVAL;
    }
    lock(r);
    int rc = r->group_count < r->group_capacity ? 0 : PL_EFULL;
    for (uint32_t i = 0; i < k && rc == 0; i++)
        if (r->group_of[pages[i]] != PL_NO_GROUP) rc = PL_ESTATE;
    if (rc != 0) { unlock(r); return rc; }
    uint32_t gi = r->group_count++;
    struct pl_group *grp = &r->groups[gi];
    grp->parity_frame = parity_frame;
    grp->n = k;
    grp->covered = 0;
    memset(frame_bytes(r, parity_frame), 0, page_size);
    for (uint32_t i = 0; i < k; i++) {
        grp->members[i] = (uint32_t)pages[i];
        r->group_of[pages[i]] = gi;
        if (atomic_load_explicit(&r->state[pages[i]], memory_order_relaxed) == PL_TRACKED) {
            xor_into(frame_bytes(r, parity_frame), frame_bytes(r, atomic_load_explicit(&r->p2m[pages[i]], memory_order_relaxed)));
            grp->covered |= 1u << i;
        }
    }
    unlock(r);
    return (int)gi;
}

/* The protector: makes BACKED pages read-only and protected (TRACKED): hash recorded, content into
 * the group's parity, disk_offsets[i] (if not NULL and >= 0) recorded as the clean copy. Pages with
 * neither a group nor a disk copy are left alone. Returns how many pages were protected. */
PL_EXPORT int pl_protect(int id, const uint64_t *pages, uint32_t n, const int64_t *disk_offsets)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    for (uint32_t i = 0; i < n; i++)
        if (pages[i] >= r->pages) return PL_EINVAL;
    lock(r);
    int done = 0, rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t g = pages[i];
        int64_t off = disk_offsets ? disk_offsets[i] : -1;
        if (atomic_load_explicit(&r->state[g], memory_order_relaxed) != PL_BACKED) continue;
        if (r->group_of[g] == PL_NO_GROUP && (off < 0 || r->disk < 0)) continue;
        /* Read-only first: once mprotect returns no CPU can still write the page, so the hash and
         * the parity below see its final content. */
        if ((rc = reprotect(r, g, PL_TRACKED, 0)) != 0) break;
        uint8_t *content = frame_bytes(r, atomic_load_explicit(&r->p2m[g], memory_order_relaxed));
        r->hash[g] = pl_page_hash(content, page_size);
        r->disk_off[g] = off;
        uint32_t gi = r->group_of[g];
        if (gi != PL_NO_GROUP) {
            struct pl_group *grp = &r->groups[gi];
            xor_into(frame_bytes(r, grp->parity_frame), content);
            grp->covered |= 1u << member_index(grp, g);
        }
        atomic_store_explicit(&r->state[g], PL_TRACKED, memory_order_release);
        done++;
    }
    unlock(r);
    return rc != 0 && done == 0 ? rc : done;
}

/* Error injection, as memory hardware would do it: XOR mask[0..len) into the page's frame at
 * `offset` and poison the page (PROT_NONE) so no access sees the bad bytes until it is handled.
 * With require_tracked, only a protected page is hit (checked under the lock; PL_ESTATE otherwise).
 * *hit is the frame that was corrupted: the one to report (a guest access may replace it at once). */
PL_EXPORT int pl_inject(int id, uint64_t page, uint32_t offset, const uint8_t *mask, uint32_t len, int require_tracked,
                        uint32_t *hit)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (page >= r->pages || len == 0 || offset >= page_size || len > page_size - offset) return PL_EINVAL;
    lock(r);
    uint32_t st = atomic_load_explicit(&r->state[page], memory_order_relaxed);
    if ((st != PL_BACKED && st != PL_TRACKED && st != PL_SAMPLED) || (require_tracked && st != PL_TRACKED)) {
        unlock(r);
        return PL_ESTATE;
    }
    int rc = reprotect(r, page, PL_POISONED, 0);
    if (rc != 0) { unlock(r); return rc; }
    if (st != PL_TRACKED) r->hash[page] = 0; /* an unprotected page has no good copy to check against */
    *hit = atomic_load_explicit(&r->p2m[page], memory_order_relaxed);
    uint8_t *bytes = frame_bytes(r, *hit) + offset;
    for (uint32_t i = 0; i < len; i++) bytes[i] ^= mask[i];
    atomic_store_explicit(&r->state[page], PL_POISONED, memory_order_release);
    unlock(r);
    return 0;
}

/* The report handler: recovers a POISONED (or silently corrupt TRACKED) page into `fresh`. On success
 * the bad frame is in *old and the page is TRACKED again; PL_ELOST leaves it POISONED. PL_ESTATE if
 * the page is no longer backed by `bad` (a guest access already had the handler recover it). */
PL_EXPORT int pl_recover(int id, uint64_t page, uint32_t bad, uint32_t fresh, uint32_t *old)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (page >= r->pages || fresh >= r->arena_frames) return PL_EINVAL;
    lock(r);
    uint32_t st = atomic_load_explicit(&r->state[page], memory_order_relaxed);
    int rc = (st == PL_POISONED || st == PL_TRACKED) && atomic_load_explicit(&r->p2m[page], memory_order_relaxed) == bad
                 ? recover_locked(r, page, fresh, old)
                 : PL_ESTATE;
    unlock(r);
    return rc;
}

/* Rebuilds a group's parity into `fresh` from its covered members; the old parity frame goes to *old. */
PL_EXPORT int pl_parity_rebuild(int id, uint32_t group, uint32_t fresh, uint32_t *old)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (fresh >= r->arena_frames) return PL_EINVAL;
    lock(r);
    if (group >= r->group_count) { unlock(r); return PL_EINVAL; }
    struct pl_group *grp = &r->groups[group];
    recompute_parity(r, grp, frame_bytes(r, fresh));
    *old = grp->parity_frame;
    grp->parity_frame = fresh;
    unlock(r);
    return 0;
}

/* The scrubber: pages in [first, first+count) that are TRACKED but whose content no longer matches
 * their hash (silent corruption) go to bad[] (up to cap). Returns how many were found. */
PL_EXPORT int pl_scrub(int id, uint64_t first, uint64_t count, uint64_t *bad, uint32_t cap)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (first >= r->pages || count > r->pages - first) return PL_EINVAL;
    int found = 0;
    for (uint64_t g = first; g < first + count && (uint32_t)found < cap; g++) {
        lock(r); /* page by page, so guest faults wait at most one hash */
        if (atomic_load_explicit(&r->state[g], memory_order_relaxed) == PL_TRACKED &&
            pl_page_hash(frame_bytes(r, atomic_load_explicit(&r->p2m[g], memory_order_relaxed)), page_size) != r->hash[g])
            bad[found++] = g;
        unlock(r);
    }
    return found;
}

/* Groups whose parity frame no longer equals the XOR of their covered members (up to cap). */
PL_EXPORT int pl_scrub_parity(int id, uint32_t *bad, uint32_t cap)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    uint8_t scratch[65536];
    if (page_size > sizeof scratch) return PL_EINVAL;
    int found = 0;
    lock(r);
    uint32_t groups = r->group_count;
    unlock(r);
    for (uint32_t gi = 0; gi < groups && (uint32_t)found < cap; gi++) {
        lock(r);
        struct pl_group *grp = &r->groups[gi];
        recompute_parity(r, grp, scratch);
        if (memcmp(scratch, frame_bytes(r, grp->parity_frame), page_size) != 0) bad[found++] = gi;
        unlock(r);
    }
    return found;
}

/* Group membership of a page: its group index, or -1. */
PL_EXPORT int pl_group_of(int id, uint64_t page)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    if (page >= r->pages) return PL_EINVAL;
    return r->group_of[page] == PL_NO_GROUP ? -1 : (int)r->group_of[page];
}

/* Frames the handler took out of service while recovering; C# retires them. */
PL_EXPORT int pl_retired_take(int id, uint32_t *out, uint32_t cap)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    lock(r);
    uint32_t n = 0;
    while (n < cap && r->retired_count > 0) out[n++] = r->retired[--r->retired_count];
    unlock(r);
    return (int)n;
}
