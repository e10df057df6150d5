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
 *   Further states are added here, with their handler case, by the mechanisms that need them.
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
 * and changes nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PL_EXPORT __attribute__((visibility("default")))

enum { PL_UNBACKED = 0, PL_BACKED = 1, PL_SAMPLED = 2 };
#define PL_NO_FRAME 0xFFFFFFFFu
#define PL_MAX_REGIONS 256

/* Status codes: 0 or a positive count on success, -errno from a failed OS call, or these. */
#define PL_EINVAL (-100000)     /* bad argument (C# validates first; this is the backstop) */
#define PL_EMAPLIMIT (-100001)  /* would pass the mapping budget */
#define PL_ENOREGION (-100002)  /* no such region */
#define PL_EFULL (-100003)      /* region table full */

struct pl_counters {
    _Atomic uint64_t demand_faults;   /* demand-zero faults resolved */
    _Atomic uint64_t sample_touches;  /* first touches of SAMPLED pages */
    _Atomic uint64_t pool_empty;      /* demand faults that found no frame (fatal, chained) */
    _Atomic uint64_t map_failures;    /* handler mmap/mprotect failures or budget hits (fatal) */
};

struct pl_region {
    uint8_t *base;
    uint64_t pages;
    uint64_t arena_frames;
    int fd;
    _Atomic uint32_t *state;
    _Atomic uint32_t *p2m;
    uint32_t *pool;
    uint32_t pool_capacity, pool_head, pool_count; /* ring, under lock */
    int64_t maps;                                  /* VMAs this region needs, under lock */
    atomic_flag lock;
    struct pl_counters counters;
    size_t tables_bytes;
};

static struct pl_region *_Atomic regions[PL_MAX_REGIONS];
static _Atomic int64_t maps_in_use;
static _Atomic int64_t map_budget = 60000;
static _Atomic uint64_t chained_faults;
static struct sigaction previous;
static _Atomic int installed;
static size_t page_size;

/* ---- small helpers (all async-signal-safe) ---- */

static void lock(struct pl_region *r)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&r->lock, memory_order_acquire))
        if (++spins % 64 == 0) sched_yield();
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
    ssize_t ignored = write(STDERR_FILENO, buf, n);
    (void)ignored; /* nothing more can be done about a failed diagnostic */
}

static struct pl_region *region_of(int id)
{
    if (id < 0 || id >= PL_MAX_REGIONS) return NULL;
    return atomic_load_explicit(&regions[id], memory_order_acquire);
}

/* ---- mapping-count model ---- */

/* The protection a page's VMA has; UNBACKED pages share one anonymous VMA. */
static int prot_of(uint32_t st) { return st == PL_BACKED ? PROT_READ | PROT_WRITE : PROT_NONE; }

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

static int map_frames(struct pl_region *r, uint64_t page, uint64_t count, uint32_t frame, int prot)
{
    void *at = r->base + page * page_size;
    void *got = mmap(at, count * page_size, prot, MAP_SHARED | MAP_FIXED, r->fd, (off_t)frame * (off_t)page_size);
    return got == MAP_FAILED ? -errno : 0;
}

static int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count)
{
    void *at = r->base + page * page_size;
    void *got = mmap(at, count * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    return got == MAP_FAILED ? -errno : 0;
}

/* ---- the handler ---- */

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

/* Resolve a fault on page g of region r. Returns 1 if resolved (the access re-runs), 0 to chain. */
static int resolve(struct pl_region *r, int id, uint64_t g)
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
        uint32_t nst = PL_BACKED;
        int64_t delta = maps_delta(r, g, 1, &nst, 0, NULL);
        if (take_budget(delta) != 0 || mprotect(r->base + g * page_size, page_size, PROT_READ | PROT_WRITE) != 0) {
            if (delta > 0) atomic_fetch_sub(&maps_in_use, delta);
            atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
            unlock(r);
            say("sampled page could not be restored", (uint64_t)id, g);
            return 0;
        }
        settle_budget(r, delta);
        atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
        atomic_fetch_add_explicit(&r->counters.sample_touches, 1, memory_order_relaxed);
        done = 1;
    }
    unlock(r);
    return done;
}

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno; /* the interrupted code may be between a call and its errno check */
    uint8_t *addr = (uint8_t *)info->si_addr;
    for (int id = 0; id < PL_MAX_REGIONS; id++) {
        struct pl_region *r = atomic_load_explicit(&regions[id], memory_order_acquire);
        if (!r || addr < r->base || addr >= r->base + r->pages * page_size) continue;
        int ok = resolve(r, id, (uint64_t)(addr - r->base) / page_size);
        errno = saved_errno;
        if (!ok) chain(sig, info, ctx);
        return;
    }
    errno = saved_errno;
    chain(sig, info, ctx);
}

/* ---- API for C# ---- */

/* Install the handler once, after the runtime installed its own (we chain to it). */
PL_EXPORT int pl_install(void)
{
    if (atomic_load(&installed)) return 0;
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    if (sigaction(SIGSEGV, NULL, &previous) != 0) return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_mask = previous.sa_mask; /* same blocking discipline as the runtime's handler */
    sa.sa_flags = (previous.sa_flags & ~(int)SA_RESETHAND) | SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    if (sigaction(SIGSEGV, &sa, NULL) != 0) return -errno;
    atomic_store(&installed, 1);
    return 0;
}

PL_EXPORT int pl_installed(void) { return atomic_load(&installed); }

/* Flags of the handler we chain to (for `pagelab info`), or -1 before install. */
PL_EXPORT int64_t pl_previous_flags(void) { return atomic_load(&installed) ? (int64_t)previous.sa_flags : -1; }

PL_EXPORT void pl_set_map_budget(int64_t budget) { atomic_store(&map_budget, budget); }
PL_EXPORT int64_t pl_map_budget(void) { return atomic_load(&map_budget); }
PL_EXPORT int64_t pl_maps_in_use(void) { return atomic_load(&maps_in_use); }
PL_EXPORT uint64_t pl_chained_faults(void) { return atomic_load(&chained_faults); }

/* Reserve a region of `pages` guest pages backed by frames of the arena `fd`. */
PL_EXPORT int pl_region_create(int fd, uint64_t arena_frames, uint64_t pages, uint32_t pool_capacity,
                               int *out_id, void **out_base)
{
    if (!atomic_load(&installed) || pages == 0 || pool_capacity == 0 || arena_frames == 0 ||
        arena_frames > PL_NO_FRAME)
        return PL_EINVAL;
    if (take_budget(1) != 0) return PL_EMAPLIMIT;
    size_t tables = sizeof(struct pl_region) + pages * 2 * sizeof(uint32_t) + pool_capacity * sizeof(uint32_t);
    tables = (tables + page_size - 1) / page_size * page_size;
    uint8_t *mem = mmap(NULL, tables, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { atomic_fetch_sub(&maps_in_use, 1); return -errno; }
    void *base = mmap(NULL, pages * page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        int e = -errno;
        munmap(mem, tables);
        atomic_fetch_sub(&maps_in_use, 1);
        return e;
    }
    struct pl_region *r = (struct pl_region *)mem;
    r->base = base;
    r->pages = pages;
    r->arena_frames = arena_frames;
    r->fd = fd;
    r->state = (_Atomic uint32_t *)(mem + sizeof *r);
    r->p2m = r->state + pages;
    r->pool = (uint32_t *)(r->p2m + pages);
    r->pool_capacity = pool_capacity;
    r->maps = 1;
    r->tables_bytes = tables;
    atomic_flag_clear(&r->lock);
    for (uint64_t i = 0; i < pages; i++) atomic_store_explicit(&r->p2m[i], PL_NO_FRAME, memory_order_relaxed);
    for (int id = 0; id < PL_MAX_REGIONS; id++) {
        struct pl_region *expected = NULL;
        if (atomic_compare_exchange_strong(&regions[id], &expected, r)) {
            *out_id = id;
            *out_base = base;
            return 0;
        }
    }
    munmap(base, pages * page_size);
    munmap(mem, tables);
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
    munmap(r->base, r->pages * page_size);
    munmap(r, r->tables_bytes);
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

/* counters[0..3] = demand_faults, sample_touches, pool_empty, map_failures */
PL_EXPORT int pl_region_counters(int id, uint64_t *out, int n)
{
    struct pl_region *r = region_of(id);
    if (!r) return PL_ENOREGION;
    _Atomic uint64_t *c[] = {&r->counters.demand_faults, &r->counters.sample_touches, &r->counters.pool_empty,
                             &r->counters.map_failures};
    for (int i = 0; i < n && i < 4; i++) out[i] = atomic_load_explicit(c[i], memory_order_relaxed);
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
        uint32_t nst = PL_SAMPLED;
        int64_t delta = maps_delta(r, g, 1, &nst, 0, NULL);
        rc = take_budget(delta);
        if (rc == 0 && mprotect(r->base + g * page_size, page_size, PROT_NONE) != 0) {
            rc = -errno;
            if (delta > 0) atomic_fetch_sub(&maps_in_use, delta);
        }
        if (rc != 0) break;
        settle_budget(r, delta);
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
            uint32_t nst = PL_BACKED;
            int64_t delta = maps_delta(r, g, 1, &nst, 0, NULL);
            /* Restoring usually merges VMAs back, but between two still-sampled neighbours it splits
             * one more. It must not fail for want of budget, so a positive delta is charged as is. */
            if (mprotect(r->base + g * page_size, page_size, PROT_READ | PROT_WRITE) == 0) {
                if (delta > 0) atomic_fetch_add(&maps_in_use, delta);
                settle_budget(r, delta);
                atomic_store_explicit(&r->state[g], PL_BACKED, memory_order_release);
            }
            touched[i] = 0;
        }
        count += touched[i];
    }
    unlock(r);
    return count;
}
