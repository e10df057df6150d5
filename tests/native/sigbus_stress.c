/* sigbus_stress.c: kernel-delivered memory errors straight against the fault engine (no .NET). A poison
 * marker (UFFDIO_POISON) goes under a parity-protected page and an unprotected page while reader threads
 * keep reading them; the first access to each takes the kernel's SIGBUS, and the handler must rebuild
 * the protected page bit-exact and contain the unprotected one (zero frame, flagged lost), never showing
 * the bad bytes. A BUS_MCEERR_AO the process sends itself for a poisoned page must queue it as reported,
 * also when it lands on a thread that holds the region lock inside an engine call (deferred, then drained).
 * Skips (exit 0, with the reason) where the kernel has no UFFDIO_POISON.
 * Build and run (from the repository root; .ci/run does this):
 *   cc -O2 -std=c11 -pthread -o sigbus_stress tests/native/sigbus_stress.c src/Native/c/[a-z]*.c && ./sigbus_stress 2000
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct pl_arena;
int pl_install(void);
int pl_arena_create(intptr_t os, void *view, uint64_t frames, struct pl_arena **out);
int pl_frames_alloc(struct pl_arena *a, uint32_t count, uint32_t *out);
int pl_frames_move(struct pl_arena *a, const uint32_t *frames, uint32_t n, uint32_t from, uint32_t to);
int pl_region_create(struct pl_arena *arena, int32_t owner, uint64_t pages, uint32_t pool_capacity, int *out_id, void **out_base);
int pl_map(int id, uint64_t first, uint64_t count, const uint32_t *frames, uint32_t *old_out, uint32_t flags);
int pl_pool_push(int id, const uint32_t *frames, uint32_t n);
int pl_group_create(int id, const uint64_t *pages, uint32_t k, uint32_t parity_frame);
int pl_protect(int id, const uint64_t *pages, uint32_t n, const int64_t *disk_offsets);
int pl_page_flags(int id, uint64_t page);
int pl_region_tables(int id, uint32_t **state, uint32_t **p2m);
int pl_kernel_injectors(char *why_uffd, char *why_hw, uint32_t cap);
int pl_kernel_inject(int id, uint64_t page, uint32_t offset, const uint8_t *mask, uint32_t len, int require_tracked, int how, uint32_t *hit);
int pl_memory_error_counts(uint64_t *out, int n);
struct pl_event { uint64_t page; uint32_t frame, kind; };
int pl_events_take(int id, struct pl_event *out, uint32_t cap);
int pl_recover(int id, uint64_t page, uint32_t bad, uint32_t fresh, uint32_t *old);
int pl_scrub(int id, uint64_t first, uint64_t count, uint64_t *bad, uint32_t cap);
int pl_memory_errors_drain(int id);

enum { PAGES = 32, K = 8, UNPROTECTED = 16, READERS = 2, FRAMES = 1 << 15 };
static uint8_t *base;
static size_t psz;
static atomic_int stop;
static atomic_long wrong, reads;

static void check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "sigbus_stress: %s failed: %d\n", what, rc);
        exit(2);
    }
}
static atomic_int scrubbing, scrubber_tid;
static int region;

/* A host thread inside engine calls all the time (the scrubber takes the region lock page by page): an
 * action-optional SIGBUS sent to it often arrives while it holds the very lock the handler needs. */
static void *scrubber(void *arg)
{
    (void)arg;
    uint64_t bad[PAGES];
    atomic_store(&scrubber_tid, (int)gettid());
    while (atomic_load(&scrubbing)) pl_scrub(region, 0, PAGES, bad, PAGES);
    return NULL;
}

/* tid 0: to the process (the main thread may send it, to any thread not blocking SIGBUS; only the
 * sender's own thread may be named otherwise, as si_code > 0 is allowed only towards oneself). */
static void send_ao(int tid, void *addr)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGBUS;
    si.si_code = 5; /* BUS_MCEERR_AO */
    si.si_addr = addr;
    si.si_addr_lsb = 12;
    if (tid) check((int)syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, SIGBUS, &si), "rt_tgsigqueueinfo(BUS_MCEERR_AO)");
    else check((int)syscall(SYS_rt_sigqueueinfo, getpid(), SIGBUS, &si), "rt_sigqueueinfo(BUS_MCEERR_AO)");
}

/* Readers of the protected pages: every byte must be the page's fill, at every instant. */
static void *reader(void *arg)
{
    unsigned seed = (unsigned)(intptr_t)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int g = (int)(rand_r(&seed) % K);
        const volatile uint8_t *p = base + g * psz;
        for (size_t i = 0; i < psz; i += 64)
            if (p[i] != 0x10 + g) { atomic_fetch_add(&wrong, 1); break; }
        atomic_fetch_add(&reads, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 2000;
    psz = (size_t)sysconf(_SC_PAGESIZE);
    char why[300], why_hw[300];
    if (!(pl_kernel_injectors(why, why_hw, sizeof why) & 1)) {
        printf("sigbus_stress: skipped: %s\n", why);
        return 0;
    }
    check(pl_install(), "pl_install");
    int fd = memfd_create("sigbus-stress", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)FRAMES * (off_t)psz) != 0) return 2;
    void *view = mmap(NULL, (size_t)FRAMES * psz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (view == MAP_FAILED) return 2;
    struct pl_arena *arena;
    check(pl_arena_create(fd, view, FRAMES, &arena), "pl_arena_create");
    int id;
    void *b;
    check(pl_region_create(arena, 1, PAGES, 64, &id, &b), "pl_region_create");
    base = b;
    uint32_t frames[PAGES], parity;
    check(pl_frames_alloc(arena, PAGES, frames), "pl_frames_alloc");
    check(pl_map(id, 0, PAGES, frames, NULL, 0), "pl_map");
    for (int g = 0; g < PAGES; g++) memset(base + g * psz, 0x10 + g, psz);
    check(pl_frames_alloc(arena, 1, &parity), "parity frame");
    check(pl_frames_move(arena, &parity, 1, 1, 3), "HELD -> PARITY");
    uint64_t members[K];
    for (int i = 0; i < K; i++) members[i] = (uint64_t)i;
    check(pl_group_create(id, members, K, parity), "pl_group_create");
    check(pl_protect(id, members, K, NULL), "pl_protect");
    uint32_t *state, *p2m;
    check(pl_region_tables(id, &state, &p2m), "pl_region_tables");

    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++) pthread_create(&t[i], NULL, reader, (void *)(intptr_t)(i + 1));
    uint8_t mask[64];
    memset(mask, 0xA5, sizeof mask);
    long recovered = 0, contained = 0, bad = 0;
    struct pl_event ev[64];
    for (long n = 0; n < rounds; n++) {
        uint32_t pool[2];
        check(pl_frames_alloc(arena, 2, pool), "pool frames");
        check(pl_pool_push(id, pool, 2), "pl_pool_push");
        /* A protected page: the readers (or this access) take the SIGBUS; the bytes read are the page's. */
        uint64_t g = (uint64_t)(n % K);
        uint32_t hit;
        int rc = pl_kernel_inject(id, g, (uint32_t)(n * 64 % psz), mask, sizeof mask, 1, 1, &hit);
        if (rc == -100004) { n--; continue; } /* not Tracked this instant: cannot happen here, no writers */
        check(rc, "pl_kernel_inject (protected)");
        const volatile uint8_t *p = base + g * psz;
        for (size_t i = 0; i < psz; i++)
            if (p[i] != 0x10 + g) { bad++; break; }
        recovered += p2m[g] != hit;
        /* An unprotected page: contained, reads zeros, flagged lost. */
        uint64_t u = UNPROTECTED + (uint64_t)(n % (PAGES - UNPROTECTED));
        if (state[u] != 1) { /* contained before: give it its content back */
            memset(base + u * psz, 0x10 + (int)u, psz);
        }
        check(pl_kernel_inject(id, u, 0, mask, sizeof mask, 0, 1, &hit), "pl_kernel_inject (unprotected)");
        const volatile uint8_t *q = base + u * psz;
        for (size_t i = 0; i < psz; i++)
            if (q[i] != 0) { bad++; break; }
        contained += (pl_page_flags(id, u) & 4) && p2m[u] != hit;
        while (pl_events_take(id, ev, 64) > 0) {}
    }
    /* The readers stop first: one touching the page between the AO and the check would have the handler
     * rebuild it (right, but then nothing is left queued for the check to see). */
    atomic_store(&stop, 1);
    for (int i = 0; i < READERS; i++) pthread_join(t[i], NULL);
    /* Action optional: poison a protected page, then tell ourselves (as the kernel's scrub would) with
     * BUS_MCEERR_AO for its address; the page must become Poisoned and a report be queued. */
    uint32_t hit;
    check(pl_kernel_inject(id, 2, 0, mask, sizeof mask, 1, 1, &hit), "pl_kernel_inject (AO)");
    send_ao((int)gettid(), base + 2 * psz);
    int queued = 0, n;
    while ((n = pl_events_take(id, ev, 64)) > 0)
        for (int i = 0; i < n; i++) queued += ev[i].kind == 16 && ev[i].page == 2 && ev[i].frame == hit;
    int ao_ok = queued == 1 && state[2] == 4;
    uint32_t fresh, old;
    check(pl_frames_alloc(arena, 1, &fresh), "fresh frame");
    ao_ok = ao_ok && pl_recover(id, 2, hit, fresh, &old) == 0 && base[2 * psz + 100] == 0x12;

    /* AO sent to a thread busy in engine calls: handled at once, or deferred (lock taken) and handled by
     * the drain; never a hang, and each ends as one Reported event. */
    region = id;
    atomic_store(&scrubbing, 1);
    pthread_t s;
    pthread_create(&s, NULL, scrubber, NULL);
    while (!atomic_load(&scrubber_tid)) sched_yield();
    /* This thread blocks SIGBUS, so the process-directed AO can only go to the scrubber. */
    sigset_t bus, old_mask;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_BLOCK, &bus, &old_mask);
    long ao_rounds = rounds / 4, ao_done = 0;
    for (long n = 0; n < ao_rounds; n++) {
        check(pl_kernel_inject(id, 3, 0, mask, sizeof mask, 1, 1, &hit), "pl_kernel_inject (AO to a busy thread)");
        send_ao(0, base + 3 * psz);
        int got = 0;
        for (long spins = 0; !got && spins < 100000000; spins++) {
            pl_memory_errors_drain(id);
            int k = pl_events_take(id, ev, 64);
            for (int i = 0; i < k; i++) got += ev[i].kind == 16 && ev[i].page == 3 && ev[i].frame == hit;
        }
        check(pl_frames_alloc(arena, 1, &fresh), "fresh frame");
        if (got == 1 && state[3] == 4 && pl_recover(id, 3, hit, fresh, &old) == 0 && base[3 * psz + 100] == 0x13) ao_done++;
    }
    atomic_store(&scrubbing, 0);
    pthread_join(s, NULL);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    uint64_t c[6];
    pl_memory_error_counts(c, 6);
    printf("sigbus_stress: %ld rounds: %ld protected pages rebuilt, %ld unprotected contained, %ld wrong reads here, "
           "%ld of %ld reader passes wrong; AO queued and recovered: %s; SIGBUS handled %llu (marker) %llu (AR), "
           "nothing to do %llu, chained %llu; AO to a thread in engine calls: %ld of %ld handled (%llu deferred past a held lock)\n",
           rounds, recovered, contained, bad, atomic_load(&wrong), atomic_load(&reads), ao_ok ? "yes" : "NO",
           (unsigned long long)c[1], (unsigned long long)c[0], (unsigned long long)c[3], (unsigned long long)c[4], ao_done, ao_rounds, (unsigned long long)c[5]);
    return recovered == rounds && contained == rounds && bad == 0 && atomic_load(&wrong) == 0 && ao_ok && ao_done == ao_rounds ? 0 : 1;
}
