/* parity_stress.c: four writer threads on one page of a parity group while the main thread re-protects
 * the group and scrubs its parity in a loop, straight against the fault engine (no .NET). Parity must
 * never be found broken, and at the end a sibling page's error must rebuild bit-exact from it.
 * Build and run (from the repository root; .ci/run does this):
 *   cc -O2 -std=c11 -pthread -o parity_stress tests/native/parity_stress.c src/Native/c/[a-z]*.c && ./parity_stress 10
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
int pl_frames_alloc(struct pl_arena *a, uint32_t count, uint32_t *out);
int pl_frames_move(struct pl_arena *a, const uint32_t *frames, uint32_t n, uint32_t from, uint32_t to);
int pl_region_create(struct pl_arena *arena, int32_t owner, uint64_t pages, uint32_t pool_capacity, int *out_id, void **out_base);
int pl_map(int id, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out, uint32_t flags);
int pl_group_create(int id, const uint64_t *pages, uint32_t k, uint32_t parity_frame);
int pl_protect(int id, const uint64_t *pages, uint32_t n, const int64_t *disk_offsets);
int pl_scrub_parity(int id, uint32_t *bad, uint32_t cap);
int pl_inject(int id, uint64_t page, uint32_t offset, const uint8_t *mask, uint32_t len, int require_tracked, uint32_t *hit);
int pl_recover(int id, uint64_t page, uint32_t bad, uint32_t fresh, uint32_t *old);
int pl_region_counters(int id, uint64_t *out, int n);

enum { PAGES = 16, K = 8, HOT = 3, SIBLING = 5, WRITERS = 4 };
static uint8_t *base;
static size_t psz;
static atomic_int stop;

static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "parity_stress: %s failed: %d\n", what, rc);
        exit(2);
    }
}

static void *writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    volatile uint8_t *page = base + HOT * psz;
    for (uint64_t n = 0; !atomic_load_explicit(&stop, memory_order_relaxed); n++)
        page[w * 64 + (int)(n % 64)] = (uint8_t)n; /* each writer its own bytes; a write fault whenever covered */
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
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    psz = (size_t)sysconf(_SC_PAGESIZE);
    check(pl_install(), "pl_install");
    int fd = memfd_create("parity-stress", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, 64 * (off_t)psz) != 0) return 2;
    void *view = mmap(NULL, 64 * psz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) return 2;
    struct pl_arena *arena;
    check(pl_arena_create(fd, view, 64, &arena), "pl_arena_create");
    int id;
    void *b;
    check(pl_region_create(arena, 1, PAGES, 8, &id, &b), "pl_region_create");
    base = b;
    uint32_t frames[PAGES], parity, fresh;
    check(pl_frames_alloc(arena, PAGES, frames), "pl_frames_alloc");
    check(pl_map(id, 0, PAGES, frames, NULL, 0), "pl_map");
    for (int g = 0; g < PAGES; g++) memset(base + g * psz, 0x10 + g, psz);
    check(pl_frames_alloc(arena, 1, &parity), "parity frame");
    check(pl_frames_move(arena, &parity, 1, 1, 3), "HELD -> PARITY");
    uint64_t members[K];
    for (int i = 0; i < K; i++) members[i] = (uint64_t)i;
    check(pl_group_create(id, members, K, parity), "pl_group_create");
    check(pl_protect(id, members, K, NULL), "pl_protect");

    pthread_t t[WRITERS];
    for (int w = 0; w < WRITERS; w++) pthread_create(&t[w], NULL, writer, (void *)(intptr_t)w);
    long passes = 0, broken = 0;
    uint32_t bad[8];
    /* For the time asked and at least 1,000 write faults (a loaded machine gives the writers little CPU),
     * but never more than a minute past the time asked. */
    uint64_t counters[12];
    double start = now(), end = start + seconds;
    for (;; passes++) {
        check(pl_protect(id, members, K, NULL), "pl_protect");
        int n = pl_scrub_parity(id, bad, 8);
        check(n, "pl_scrub_parity");
        broken += n;
        if (passes % 256 != 0) continue;
        check(pl_region_counters(id, counters, 12), "pl_region_counters");
        double t = now();
        if ((t >= end && counters[4] >= 1000) || t >= end + 60) break;
    }
    seconds = now() - start;
    atomic_store(&stop, 1);
    for (int w = 0; w < WRITERS; w++) pthread_join(t[w], NULL);

    check(pl_protect(id, members, K, NULL), "pl_protect");
    uint8_t mask[16];
    memset(mask, 0xFF, sizeof mask);
    uint32_t hit, old;
    check(pl_inject(id, SIBLING, 128, mask, sizeof mask, 1, &hit), "pl_inject");
    check(pl_frames_alloc(arena, 1, &fresh), "fresh frame");
    int rc = pl_recover(id, SIBLING, hit, fresh, &old);
    int exact = rc == 0;
    for (size_t i = 0; exact && i < psz; i++) exact = base[SIBLING * psz + i] == 0x10 + SIBLING;
    check(pl_region_counters(id, counters, 12), "pl_region_counters");
    if (getenv("PARITY_STRESS_VERBOSE"))
        for (int i = 0; i < 12; i++) fprintf(stderr, "counter %d = %llu\n", i, (unsigned long long)counters[i]);
    printf("parity_stress: %d writers on one page for %.0f s: %ld protect/scrub passes, %llu write faults, "
           "%ld broken parities; sibling rebuilt %s\n",
           WRITERS, seconds, passes, (unsigned long long)counters[4], broken, exact ? "bit-exact" : "WRONG");
    return broken == 0 && exact && counters[4] >= 1000 ? 0 : 1;
}
