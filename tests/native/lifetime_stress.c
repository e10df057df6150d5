/* lifetime_stress.c: arena and region lifetimes against the fault engine (no .NET): an arena destroyed
 * while other threads call into it, destroyed twice, a stale pointer into a destroyed region's guest
 * memory, and the same frames released twice at once (or released while mapped).
 * Each check is named after the defect it guards; any crash of this program is a failure. A stale access
 * runs in a forked child, which must die of SIGSEGV and never read or write another VM's page.
 * Build and run (from the repository root; .ci/run does this):
 *   cc -O2 -std=c11 -pthread -o lifetime_stress tests/native/lifetime_stress.c src/Native/c/[a-z]*.c && ./lifetime_stress 20
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct pl_arena;
int pl_install(void);
int pl_arena_create(intptr_t os, void *view, uint64_t frames, struct pl_arena **out);
int pl_arena_destroy(struct pl_arena *a);
int pl_arena_counts(struct pl_arena *a, int64_t *out);
int pl_frames_alloc(struct pl_arena *a, uint32_t count, uint32_t *out);
int pl_frames_release(struct pl_arena *a, const uint32_t *frames, uint32_t n);
int pl_region_create(struct pl_arena *arena, int32_t owner, uint64_t pages, uint32_t pool_capacity, int *out_id, void **out_base);
int pl_region_destroy(int id);
int pl_map(int id, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out, uint32_t flags);
int pl_unmap(int id, uint64_t first, uint64_t count, uint32_t *old_out);
int64_t pl_arena_owned(struct pl_arena *a, int32_t owner);
int pl_share_counts(struct pl_arena *a, int64_t *out);

#define PL_ENOARENA (-100016)
#define PL_EBUSY (-100007)
#define PL_ESTATE (-100004)
enum { F_FREE, F_HELD, F_GUEST, F_PARITY, F_RETIRED, F_SHARED, F_STATES };

static size_t psz;
static int failures;

static void fail(const char *test, const char *what, long v)
{
    fprintf(stderr, "lifetime_stress: %s: %s (%ld)\n", test, what, v);
    failures++;
}

static void must(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "lifetime_stress: %s failed: %d\n", what, rc);
        exit(2);
    }
}

struct memfd { int fd; uint8_t *view; uint64_t frames; };

static struct memfd memfd_of(uint64_t frames)
{
    struct memfd m = {memfd_create("lifetime-stress", MFD_CLOEXEC), NULL, frames};
    if (m.fd < 0 || ftruncate(m.fd, (off_t)(frames * psz)) != 0) { perror("memfd"); exit(2); }
    m.view = mmap(NULL, frames * psz, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd, 0);
    if (m.view == MAP_FAILED) { perror("mmap"); exit(2); }
    return m;
}

static void memfd_close(struct memfd *m)
{
    munmap(m->view, m->frames * psz);
    close(m->fd);
}

static int64_t counts_sum(const int64_t *c)
{
    int64_t s = 0;
    for (int i = 0; i < F_STATES; i++) s += c[i];
    return s;
}

/* ---- Arena_destroy_racing_calls_never_frees_the_tables_under_them ---- */

static struct pl_arena *shared_arena;
static atomic_int closing;
static atomic_long calls_done, calls_refused;

static void *caller(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    struct pl_arena *a = shared_arena;
    for (;;) {
        int rc = 0, op = (int)(rand_r(&seed) % 5);
        uint32_t fr[4];
        int64_t c[F_STATES];
        if (op == 0) {
            uint32_t n = 1 + rand_r(&seed) % 4;
            rc = pl_frames_alloc(a, n, fr);
            if (rc > 0) {
                int r2 = pl_frames_release(a, fr, n);
                if (r2 != 0 && r2 != PL_ENOARENA) fail("destroy racing calls", "release of own frames failed", r2);
            }
        } else if (op == 1) {
            rc = pl_arena_counts(a, c);
        } else if (op == 2 && !atomic_load(&closing)) {
            int id;
            void *base;
            rc = pl_region_create(a, 7, 8, 4, &id, &base);
            if (rc == 0) {
                if (pl_frames_alloc(a, 1, fr) == 1) {
                    if (pl_map(id, 0, 1, fr, NULL, 0) == 0) ((volatile uint8_t *)base)[0] = 1; /* the frame is mapped: a real write */
                    else pl_frames_release(a, fr, 1);
                }
                if (pl_region_destroy(id) != 0) fail("destroy racing calls", "region destroy failed", id);
            }
        } else if (op == 3) {
            rc = (int)pl_arena_owned(a, 7);
        } else {
            rc = pl_share_counts(a, c);
        }
        if (rc == PL_ENOARENA) { atomic_fetch_add(&calls_refused, 1); return NULL; }
        if (rc < 0 && !(op == 0 && rc == -100006)) fail("destroy racing calls", "unexpected status", rc);
        atomic_fetch_add(&calls_done, 1);
    }
}

static void destroy_racing_calls(int rounds)
{
    const char *t = "Arena_destroy_racing_calls_never_frees_the_tables_under_them";
    for (int round = 0; round < rounds; round++) {
        struct memfd m = memfd_of(64);
        must(pl_arena_create(m.fd, m.view, m.frames, &shared_arena), "pl_arena_create");
        atomic_store(&closing, 0);
        pthread_t th[3];
        for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, caller, (void *)(uintptr_t)(round * 7 + i + 1));
        struct timespec nap = {0, 200000 + (round % 10) * 100000};
        nanosleep(&nap, NULL);
        atomic_store(&closing, 1);
        int rc, busy = 0;
        while ((rc = pl_arena_destroy(shared_arena)) == PL_EBUSY) { busy++; sched_yield(); }
        if (rc != 0) fail(t, "destroy failed", rc);
        for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
        /* A second destroy, and any call after it, is refused: never a double free. */
        if ((rc = pl_arena_destroy(shared_arena)) != PL_ENOARENA) fail(t, "a second destroy was not refused", rc);
        int64_t c[F_STATES];
        if ((rc = pl_arena_counts(shared_arena, c)) != PL_ENOARENA) fail(t, "a call after destroy was not refused", rc);
        memfd_close(&m);
    }
    printf("%s: %d rounds, %ld calls done, %ld refused after destroy\n", t, rounds, atomic_load(&calls_done),
           atomic_load(&calls_refused));
}

/* ---- A_stale_pointer_into_a_destroyed_region_faults_and_never_reaches_the_next_vm ---- */

static int overlaps(uintptr_t a, size_t an, uintptr_t b, size_t bn) { return a < b + bn && b < a + an; }

static long maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

/* In a child: VM A writes its page, is destroyed; VM B is created and writes its own; then the stale
 * pointer into A is used (read or write). The child must die of SIGSEGV. */
static void stale_child(int write)
{
    struct memfd m = memfd_of(16);
    struct pl_arena *a;
    must(pl_arena_create(m.fd, m.view, m.frames, &a), "pl_arena_create");
    int ida, idb;
    void *ba, *bb;
    uint32_t f;
    must(pl_region_create(a, 1, 4, 4, &ida, &ba), "region A");
    must(pl_frames_alloc(a, 1, &f), "frame A");
    must(pl_map(ida, 0, 1, &f, NULL, 0), "map A");
    memset(ba, 'A', psz);
    volatile uint8_t *stale = ba;
    must(pl_region_destroy(ida), "destroy A");
    must(pl_region_create(a, 2, 4, 4, &idb, &bb), "region B");
    must(pl_frames_alloc(a, 1, &f), "frame B");
    must(pl_map(idb, 0, 1, &f, NULL, 0), "map B");
    memset(bb, 'B', psz);
    if (overlaps((uintptr_t)ba, 4 * psz, (uintptr_t)bb, 4 * psz)) printf("  child: B placed over destroyed A at %p\n", bb);
    fflush(stdout);
    uint8_t got = 0;
    if (write) stale[0] = 'X';
    else got = stale[0];
    /* Reaching here is the defect: the stale pointer worked. */
    printf("  child: stale %s succeeded (read '%c'; B's first byte now '%c')\n", write ? "write" : "read", got ? got : '-',
           ((uint8_t *)bb)[0]);
    fflush(stdout);
    _exit(3);
}

static void stale_pointer(int cycles)
{
    const char *t = "A_stale_pointer_into_a_destroyed_region_faults_and_never_reaches_the_next_vm";
    for (int write = 0; write < 2; write++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) stale_child(write);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
            fail(t, write ? "a stale write did not fault (child exit status)" : "a stale read did not fault (child exit status)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    }
    /* Many lifetimes: no new region at an address of a destroyed one, and the quarantine costs no
     * mapping per destroyed region (its reservations merge). */
    struct memfd m = memfd_of(64);
    struct pl_arena *a;
    must(pl_arena_create(m.fd, m.view, m.frames, &a), "pl_arena_create");
    uintptr_t *gone = calloc((size_t)cycles, sizeof *gone);
    size_t *gone_n = calloc((size_t)cycles, sizeof *gone_n);
    long before = maps_lines(), reused = 0;
    for (int i = 0; i < cycles; i++) {
        int id;
        void *b;
        uint64_t pages = 1 + (uint64_t)(i * 7919 % 64);
        must(pl_region_create(a, 3, pages, 4, &id, &b), "region");
        for (int k = 0; k < i; k++)
            if (overlaps((uintptr_t)b, pages * psz, gone[k], gone_n[k])) { reused++; break; }
        uint32_t f;
        must(pl_frames_alloc(a, 1, &f), "frame");
        must(pl_map(id, pages / 2, 1, &f, NULL, 0), "map");
        ((volatile uint8_t *)b)[pages / 2 * psz] = 1;
        gone[i] = (uintptr_t)b;
        gone_n[i] = pages * psz;
        must(pl_region_destroy(id), "destroy");
    }
    long after = maps_lines();
    if (reused) fail(t, "new regions placed over destroyed ones", reused);
    if (after - before > 16) fail(t, "quarantined regions cost mappings", after - before);
    int64_t c[F_STATES];
    must(pl_arena_counts(a, c), "counts");
    if (c[F_FREE] != 64) fail(t, "frames not all free after the cycles", c[F_FREE]);
    must(pl_arena_destroy(a), "arena destroy");
    memfd_close(&m);
    free(gone);
    free(gone_n);
    printf("%s: stale read and write run in children; %d lifetimes, %ld placed over a destroyed region, /proc/self/maps %+ld lines\n",
           t, cycles, reused, after - before);
}

/* ---- Frames_released_twice_at_once_are_freed_once (pl_frames_release re-checks what it reserved) ---- */

static struct pl_arena *rel_arena;
static pthread_barrier_t bar;
static uint32_t rel_frames[4];
static int rel_id;
static atomic_int rel_rc[2];
static atomic_int rel_stop;
static int rel_mode; /* 0: two releases; 1: a release and a map of the same frames */

static void *releaser(void *arg)
{
    int k = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&bar);
        if (atomic_load(&rel_stop)) return NULL;
        int rc = k == 1 && rel_mode == 1 ? pl_map(rel_id, 0, 4, rel_frames, NULL, 0) : pl_frames_release(rel_arena, rel_frames, 4);
        atomic_store(&rel_rc[k], rc);
        pthread_barrier_wait(&bar);
    }
}

static void release_twice(int rounds)
{
    const char *t = "Frames_released_twice_at_once_are_freed_once";
    struct memfd m = memfd_of(64);
    must(pl_arena_create(m.fd, m.view, m.frames, &rel_arena), "pl_arena_create");
    void *base;
    must(pl_region_create(rel_arena, 9, 4, 4, &rel_id, &base), "region");
    pthread_barrier_init(&bar, NULL, 3);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, releaser, (void *)(intptr_t)i);
    long both = 0, bad_counts = 0;
    for (int round = 0; round < rounds; round++) {
        rel_mode = round % 2;
        must(pl_frames_alloc(rel_arena, 4, rel_frames), "alloc");
        pthread_barrier_wait(&bar);
        pthread_barrier_wait(&bar);
        int r0 = atomic_load(&rel_rc[0]), r1 = atomic_load(&rel_rc[1]);
        if (r0 == 0 && r1 == 0) {
            both++;
        } else if (rel_mode == 1 && r1 == 0) { /* the map won: the frames are the VM's; take them back, free them */
            uint32_t back[4];
            must(pl_unmap(rel_id, 0, 4, back), "unmap");
            must(pl_frames_release(rel_arena, back, 4), "release after unmap");
        } else if (r0 != 0 && r1 != 0) {
            fail(t, "both racing calls were refused", r0);
            must(pl_frames_release(rel_arena, rel_frames, 4), "release (both refused)");
        }
        int64_t c[F_STATES];
        must(pl_arena_counts(rel_arena, c), "counts");
        if (counts_sum(c) != 64 || c[F_FREE] < 0 || c[F_FREE] > 64 || (c[F_FREE] != 64 && !(r0 == 0 && r1 == 0))) bad_counts++;
        if (r0 == 0 && r1 == 0) break; /* the tables are wrong from here on */
    }
    atomic_store(&rel_stop, 1);
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    if (both) fail(t, "both of two racing calls on the same Held frames succeeded", both);
    if (bad_counts) fail(t, "frame counts broken", bad_counts);
    if (!both) {
        must(pl_region_destroy(rel_id), "region destroy");
        must(pl_arena_destroy(rel_arena), "arena destroy");
    }
    memfd_close(&m);
    printf("%s: %d rounds, %ld with two winners\n", t, rounds, both);
}

int main(int argc, char **argv)
{
    int scale = argc > 1 ? atoi(argv[1]) : 20;
    psz = (size_t)sysconf(_SC_PAGESIZE);
    setvbuf(stdout, NULL, _IOLBF, 0);
    must(pl_install(), "pl_install");
    stale_pointer(100 * scale);
    release_twice(500 * scale);
    destroy_racing_calls(scale);
    if (failures) {
        fprintf(stderr, "lifetime_stress: %d failures\n", failures);
        return 1;
    }
    printf("lifetime_stress: all passed\n");
    return 0;
}
