/* share_stress.c: two regions (VMs) whose pages the main thread keeps merging onto shared frames while
 * two writer threads per region write, straight against the fault engine (no .NET). Each writer owns
 * half of its region's pages; per page it writes its region's own pattern, checks it, then writes a value
 * common to both regions (so the page can be merged) and checks it. A page must never read anything but
 * what its only writer wrote last (never the other region's pattern), every merge must copy-on-write
 * correctly, and at the end the frame counts must add up with no shared frame left.
 * Build and run (from the repository root; .ci/run does this):
 *   cc -O2 -std=c11 -pthread -o share_stress tests/native/share_stress.c src/Native/c/[a-z]*.c && ./share_stress 5
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct pl_arena;
int pl_install(void);
int pl_arena_create(intptr_t os, void *view, uint64_t frames, struct pl_arena **out);
int pl_arena_counts(struct pl_arena *a, int64_t *out);
int pl_frames_alloc(struct pl_arena *a, uint32_t count, uint32_t *out);
int pl_region_create(struct pl_arena *arena, int32_t owner, uint64_t pages, uint32_t pool_capacity, int *out_id, void **out_base);
int pl_region_destroy(int id);
int pl_map(int id, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out, uint32_t flags);
int pl_region_counters(int id, uint64_t *out, int n);
int64_t pl_arena_owned(struct pl_arena *a, int32_t owner);
int pl_set_sharing(int id, int on);
int pl_share_create(int id, uint64_t page, uint32_t *frame);
int pl_share_page(int id, uint64_t page, uint32_t frame);
int pl_unshare(int id, uint64_t first, uint64_t count);
int pl_share_counts(struct pl_arena *a, int64_t *out);

enum { PAGES = 16, WRITERS_PER_VM = 2, FRAMES = 256 };
static uint8_t *base[2];
static size_t psz;
static atomic_int stop;
static atomic_long wrong;

static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "share_stress: %s failed: %d\n", what, rc);
        exit(2);
    }
}

static int reads(const uint8_t *p, uint64_t v)
{
    const volatile uint64_t *w = (const volatile uint64_t *)p;
    for (size_t i = 0; i < psz / 8; i++)
        if (w[i] != v) return 0;
    return 1;
}

static void fill(uint8_t *p, uint64_t v)
{
    volatile uint64_t *w = (volatile uint64_t *)p;
    for (size_t i = 0; i < psz / 8; i++) w[i] = v;
}

static void *writer(void *arg)
{
    int k = (int)(intptr_t)arg, vm = k / WRITERS_PER_VM, mine = k % WRITERS_PER_VM;
    uint64_t own = 0xA000000000000000ull | (uint64_t)(vm + 1) << 48;
    for (uint64_t round = 0; !atomic_load_explicit(&stop, memory_order_relaxed); round++)
        for (int g = mine; g < PAGES; g += WRITERS_PER_VM) {
            uint8_t *p = base[vm] + (size_t)g * psz;
            uint64_t common = 0xC0DE000000000000ull | (uint64_t)g; /* the same in both regions */
            /* The first write to a page that may be being merged is the region's own pattern: lost in a
             * frame the merge is about to free, the check below would read the common value. */
            fill(p, own | round);
            if (!reads(p, own | round)) atomic_fetch_add(&wrong, 1);
            fill(p, common);
            if (!reads(p, common)) atomic_fetch_add(&wrong, 1);
            for (volatile int s = 0; s < 2000; s++) {} /* leave the page mergeable for a while */
        }
    return NULL;
}

/* Phase 2: one writer on one page of region 0 that the main thread merges onto region 1's copy of the
 * common value over and over. Its first write after each check is a new value: if a merge let a write
 * land in the frame it then freed, the next check reads the common value instead. */
static atomic_long hot_rounds;

static void *hot_writer(void *arg)
{
    (void)arg;
    uint8_t *p = base[0];
    for (uint64_t n = 1; !atomic_load_explicit(&stop, memory_order_relaxed); n++) {
        fill(p, 0xB000000000000000ull | n);
        if (!reads(p, 0xB000000000000000ull | n)) atomic_fetch_add(&wrong, 1);
        fill(p, 0xC0DE000000000000ull);
        if (!reads(p, 0xC0DE000000000000ull)) atomic_fetch_add(&wrong, 1);
        for (volatile int s = 0; s < 500; s++) {} /* mergeable for a moment; then a new value, at any instant */
        atomic_fetch_add_explicit(&hot_rounds, 1, memory_order_relaxed);
    }
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5;
    psz = (size_t)sysconf(_SC_PAGESIZE);
    check(pl_install(), "pl_install");
    int fd = memfd_create("share-stress", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, FRAMES * (off_t)psz) != 0) return 2;
    void *view = mmap(NULL, FRAMES * psz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) return 2;
    struct pl_arena *arena;
    check(pl_arena_create(fd, view, FRAMES, &arena), "pl_arena_create");
    int id[2];
    for (int v = 0; v < 2; v++) {
        void *b;
        uint32_t frames[PAGES];
        check(pl_region_create(arena, v + 1, PAGES, 8, &id[v], &b), "pl_region_create");
        base[v] = b;
        check(pl_frames_alloc(arena, PAGES, frames), "pl_frames_alloc");
        check(pl_map(id[v], 0, PAGES, frames, NULL, 0), "pl_map");
        check(pl_set_sharing(id[v], 1), "pl_set_sharing");
    }
    pthread_t t[2 * WRITERS_PER_VM];
    for (int k = 0; k < 2 * WRITERS_PER_VM; k++) pthread_create(&t[k], NULL, writer, (void *)(intptr_t)k);
    long merges = 0, attempts = 0;
    double end = now() + seconds;
    unsigned seed = 1;
    while (now() < end) {
        uint64_t g = (uint64_t)(rand_r(&seed) % PAGES);
        uint32_t f;
        if (pl_share_create(id[0], g, &f) != 0) continue; /* not backed this instant (a write is breaking it) */
        attempts++;
        int rc = pl_share_page(id[1], g, f);
        if (rc == -100004) continue; /* PL_ESTATE: b's page is shared already, or a write made f die meanwhile */
        check(rc, "pl_share_page");
        merges += rc == 1;
        if (rand_r(&seed) % 8 == 0) check(pl_unshare(id[1], g, 1), "pl_unshare");
    }
    atomic_store(&stop, 1);
    for (int k = 0; k < 2 * WRITERS_PER_VM; k++) pthread_join(t[k], NULL);

    /* Phase 2 (see hot_writer). */
    check(pl_unshare(id[0], 0, PAGES), "pl_unshare all");
    check(pl_unshare(id[1], 0, PAGES), "pl_unshare all");
    fill(base[1], 0xC0DE000000000000ull);
    uint32_t hot;
    check(pl_share_create(id[1], 0, &hot), "pl_share_create (hot)");
    atomic_store(&stop, 0);
    pthread_t hw;
    pthread_create(&hw, NULL, hot_writer, NULL);
    long hot_merges = 0;
    end = now() + seconds / 2;
    while (now() < end) {
        int rc = pl_share_page(id[0], 0, hot);
        if (rc == -100004) continue; /* still shared from the last merge: the writer has not written yet */
        check(rc, "pl_share_page (hot)");
        hot_merges += rc == 1;
    }
    atomic_store(&stop, 1);
    pthread_join(hw, NULL);
    printf("share_stress: hot page: %ld merges, %ld writer rounds\n", hot_merges, atomic_load(&hot_rounds));
    merges += hot_merges;

    uint64_t c[2][14];
    for (int v = 0; v < 2; v++) check(pl_region_counters(id[v], c[v], 14), "pl_region_counters");
    for (int v = 0; v < 2; v++) check(pl_unshare(id[v], 0, PAGES), "pl_unshare all");
    int64_t counts[6], share[2];
    check(pl_arena_counts(arena, counts), "pl_arena_counts");
    check(pl_share_counts(arena, share), "pl_share_counts");
    int64_t owned = pl_arena_owned(arena, 1) + pl_arena_owned(arena, 2);
    long cow = (long)(c[0][12] + c[1][12]);
    printf("share_stress: %.0f s, %ld share attempts, %ld merges, %ld copy-on-write breaks, %ld wrong reads; "
           "after unsharing: %lld shared frames, %lld sharers, %lld guest frames (VMs own %lld), %lld free\n",
           seconds, attempts, merges, cow, atomic_load(&wrong), (long long)share[0], (long long)share[1],
           (long long)counts[2], (long long)owned, (long long)counts[0]);
    int ok = atomic_load(&wrong) == 0 && merges > 100 && cow > 100 && share[0] == 0 && share[1] == 0 && counts[5] == 0 &&
             counts[2] == owned && counts[0] + counts[2] == FRAMES;
    for (int v = 0; v < 2; v++) check(pl_region_destroy(id[v]), "pl_region_destroy");
    check(pl_arena_counts(arena, counts), "pl_arena_counts");
    ok = ok && counts[0] == FRAMES;
    if (!ok) fprintf(stderr, "share_stress: FAILED\n");
    return ok ? 0 : 1;
}
