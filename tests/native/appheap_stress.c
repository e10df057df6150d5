/* appheap_stress.c: the guest application heap (appheap.c, appsqlite.c) under three allocating threads
 * while the main thread keeps taking wholly free pages away (pl_app_release), scribbling on them as the
 * guest OS would, and giving them back (pl_app_acquire), straight against the fault engine (no .NET).
 * Every block is filled with a pattern of its own and checked before every realloc and free, so a block
 * the heap handed out twice, or over a page it had given away, shows as a wrong byte. At the end the heap's
 * byte count must equal the sum of the sizes the threads hold (the shadow model), a block larger than the
 * run must fail, and blocks made before the heap existed must be counted outside it.
 * Build and run (from the repository root; .ci/run does this):
 *   cc -O2 -std=c11 -pthread -o appheap_stress tests/native/appheap_stress.c src/Native/c/[a-z]*.c && ./appheap_stress 5
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
int pl_region_create(struct pl_arena *arena, int32_t owner, uint64_t pages, uint32_t pool_capacity, int *out_id, void **out_base);
int pl_region_destroy(int id);
int pl_app_create(int id, uint64_t first, uint64_t pages);
int pl_app_destroy(int id);
int pl_app_release(int id, uint64_t *out, uint32_t max);
int pl_app_acquire(int id, const uint64_t *pages, uint32_t n);
int pl_app_stats(int id, int64_t *out, int n);
void *pl_app_any_malloc(int n);
void pl_app_any_free(void *p);
void *pl_app_any_realloc(void *p, int n);
int pl_app_any_size(void *p);

enum { PAGES = 512, FIRST = 64, RUN = 384, FRAMES = 1024, THREADS = 3, LIVE = 150 };
static uint8_t *base;
static size_t psz;
static atomic_int stop;
static atomic_long wrong, nomem, ops;
static atomic_int published;
static _Atomic int64_t held_bytes[THREADS];

static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "appheap_stress: %s failed: %d\n", what, rc);
        exit(2);
    }
}

static uint8_t pat(uint32_t tag, size_t i) { return (uint8_t)(tag * 31u + i * 7u + (i >> 8)); }
static void fill(uint8_t *p, size_t n, uint32_t tag) { for (size_t i = 0; i < n; i++) p[i] = pat(tag, i); }
static int good(const uint8_t *p, size_t n, uint32_t tag)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(tag, i)) return 0;
    return 1;
}

static uint64_t rnd(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static int size_for(uint64_t *s)
{
    uint64_t r = rnd(s) % 100;
    if (r < 70) return 1 + (int)(rnd(s) % 300);                 /* SQLite's many small blocks */
    if (r < 95) return 300 + (int)(rnd(s) % 1800);
    return 2049 + (int)(rnd(s) % (3 * psz));                     /* page-cache sized and larger */
}

struct block { uint8_t *p; int n; uint32_t tag; };

static void *worker(void *arg)
{
    int k = (int)(intptr_t)arg;
    struct block b[LIVE] = {{0}};
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(k + 1);
    uint32_t tag = (uint32_t)k << 24;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct block *x = &b[rnd(&s) % LIVE];
        if (x->p && !good(x->p, (size_t)x->n, x->tag)) atomic_fetch_add(&wrong, 1);
        if (x->p && rnd(&s) % 4 == 0) { /* realloc keeps the prefix */
            int n = size_for(&s);
            uint8_t *q = pl_app_any_realloc(x->p, n);
            if (!q) { atomic_fetch_add(&nomem, 1); continue; }
            int keep = n < x->n ? n : x->n;
            if (!good(q, (size_t)keep, x->tag)) atomic_fetch_add(&wrong, 1);
            x->p = q;
            x->n = n;
            fill(q, (size_t)n, x->tag = ++tag);
        } else if (x->p) {
            pl_app_any_free(x->p);
            x->p = NULL;
        } else {
            int n = size_for(&s);
            x->p = pl_app_any_malloc(n);
            if (!x->p) { atomic_fetch_add(&nomem, 1); continue; }
            if (pl_app_any_size(x->p) < n) atomic_fetch_add(&wrong, 1);
            x->n = n;
            fill(x->p, (size_t)n, x->tag = ++tag);
        }
        atomic_fetch_add(&ops, 1);
    }
    int64_t sum = 0;
    for (int i = 0; i < LIVE; i++)
        if (b[i].p) {
            if (!good(b[i].p, (size_t)b[i].n, b[i].tag)) atomic_fetch_add(&wrong, 1);
            sum += pl_app_any_size(b[i].p);
        }
    atomic_store(&held_bytes[k], sum);
    atomic_fetch_add(&published, 1);
    while (atomic_load(&stop) < 2) usleep(1000); /* hold the blocks until main has compared the counts */
    for (int i = 0; i < LIVE; i++) pl_app_any_free(b[i].p);
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
    int fd = memfd_create("appheap-stress", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, FRAMES * (off_t)psz) != 0) return 2;
    void *view = mmap(NULL, FRAMES * psz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) return 2;
    struct pl_arena *arena;
    check(pl_arena_create(fd, view, FRAMES, &arena), "pl_arena_create");
    int id;
    void *b;
    check(pl_region_create(arena, 1, PAGES, 8, &id, &b), "pl_region_create");
    base = b;
    /* Before the heap: counted outside guest memory. */
    void *early = pl_app_any_malloc(1000);
    if (!early) return 2;
    check(pl_app_create(id, FIRST, RUN), "pl_app_create");
    if (pl_app_create(id, 0, 1) != -100007) { fprintf(stderr, "appheap_stress: a second heap was not refused\n"); return 1; }
    int64_t st[9];
    check(pl_app_stats(id, st, 9), "pl_app_stats");
    if (st[7] != 1000 || st[8] != 1) { fprintf(stderr, "appheap_stress: outside %lld bytes in %lld blocks, want 1000 in 1\n", (long long)st[7], (long long)st[8]); return 1; }
    if (pl_app_any_malloc((int)(RUN * psz + 1)) != NULL) { fprintf(stderr, "appheap_stress: a block larger than the run succeeded\n"); return 1; }
    pl_app_any_free(early);
    pthread_t t[THREADS];
    for (int k = 0; k < THREADS; k++) pthread_create(&t[k], NULL, worker, (void *)(intptr_t)k);
    uint64_t away[RUN];
    long released = 0, rounds = 0;
    double end = now() + seconds;
    while (now() < end) {
        int n = pl_app_release(id, away, RUN); /* every wholly free page: the ones next to live blocks too */
        check(n, "pl_app_release");
        for (int i = 0; i < n; i++) {
            if (away[i] < FIRST || away[i] >= FIRST + RUN) { fprintf(stderr, "appheap_stress: released page %llu outside the run\n", (unsigned long long)away[i]); return 1; }
            memset(base + away[i] * psz, 0xEE, psz); /* the guest OS uses the page meanwhile */
        }
        released += n;
        usleep(200);
        if (n > 0 && pl_app_acquire(id, away, (uint32_t)n) != n) { fprintf(stderr, "appheap_stress: pl_app_acquire failed\n"); return 1; }
        if (n > 0 && pl_app_acquire(id, away, 1) != -100004) { fprintf(stderr, "appheap_stress: acquiring a held page was not refused\n"); return 1; }
        rounds++;
    }
    atomic_store(&stop, 1);
    int64_t sum = 0;
    while (atomic_load(&published) < THREADS) usleep(1000);
    for (int k = 0; k < THREADS; k++) sum += atomic_load(&held_bytes[k]);
    check(pl_app_stats(id, st, 9), "pl_app_stats");
    int bad = 0;
    if (st[0] != sum) { fprintf(stderr, "appheap_stress: heap counts %lld bytes, the threads hold %lld\n", (long long)st[0], (long long)sum); bad = 1; }
    atomic_store(&stop, 2);
    for (int k = 0; k < THREADS; k++) pthread_join(t[k], NULL);
    check(pl_app_stats(id, st, 9), "pl_app_stats");
    if (st[0] != 0 || st[1] != 0) { fprintf(stderr, "appheap_stress: %lld bytes in %lld blocks left after every free\n", (long long)st[0], (long long)st[1]); bad = 1; }
    if (st[3] != RUN || st[4] != RUN) { fprintf(stderr, "appheap_stress: %lld pages held, %lld wholly free, want %d\n", (long long)st[3], (long long)st[4], RUN); bad = 1; }
    check(pl_app_destroy(id), "pl_app_destroy");
    check(pl_region_destroy(id), "pl_region_destroy");
    printf("appheap_stress: %ld operations, %ld pages released and taken back in %ld rounds, %ld NOMEM, %ld wrong bytes\n",
           atomic_load(&ops), released, rounds, atomic_load(&nomem), atomic_load(&wrong));
    return bad || atomic_load(&wrong) != 0 || released == 0 ? 1 : 0;
}
