/* osfail.c: the OS layer's seeded failure injector, for tests and the anomaly campaign. Per kind of OS
 * call (PL_OS_*): fail the Nth call from now with a chosen error, fail calls at random with a seeded
 * probability, shorten reads and writes; counts calls, failures and short transfers per kind. Lock-free
 * and async-signal-safe (the fault handler makes OS calls); off, a call costs one relaxed atomic load. */
#include "pagelab.h"

_Atomic int pl_osfail_on;                         /* read by osfail_hit (pagelab.h) */
static _Atomic uint64_t calls[PL_OS_KINDS], failed[PL_OS_KINDS], shortened[PL_OS_KINDS];
static _Atomic uint64_t nth_target[PL_OS_KINDS];  /* fail when since[kind] reaches it; 0: not armed */
static _Atomic uint64_t since[PL_OS_KINDS];
static _Atomic int nth_error[PL_OS_KINDS];
static _Atomic uint64_t rng_state = 1;            /* xorshift64 */
static _Atomic uint32_t random_ppm, random_mask, short_ppm;

/* The error a random failure of each kind gives: what the OS says when it runs short of something. */
#ifdef _WIN32
static const int default_error[PL_OS_KINDS] = {ERROR_NOT_ENOUGH_MEMORY, ERROR_INVALID_ADDRESS, ERROR_NOT_ENOUGH_MEMORY,
                                               ERROR_NOT_ENOUGH_MEMORY, ERROR_DISK_FULL, ERROR_READ_FAULT,
                                               ERROR_DISK_FULL, ERROR_NOT_SUPPORTED, ERROR_ACCESS_DENIED};
#else
#include <errno.h>
static const int default_error[PL_OS_KINDS] = {ENOMEM, ENOMEM, ENOMEM, EAGAIN, ENOSPC, EIO, ENOSPC, EAGAIN, EPERM};
#endif

/* The next random number: xorshift64 advanced by compare-and-swap, so concurrent callers (and a signal
 * handler interrupting one) each get their own step without a lock. */
static uint64_t next_random(void)
{
    uint64_t x = atomic_load_explicit(&rng_state, memory_order_relaxed), y;
    do {
        y = x;
        y ^= y << 13;
        y ^= y >> 7;
        y ^= y << 17;
    } while (!atomic_compare_exchange_weak_explicit(&rng_state, &x, y, memory_order_relaxed, memory_order_relaxed));
    return y;
}

static void bump(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

/* Counting goes on from the first set-up call until pl_osfail_off, armed or not. */
static void update_on(void) { atomic_store(&pl_osfail_on, 1); }

int osfail_slow(int kind)
{
    bump(&calls[kind]);
    uint64_t target = atomic_load_explicit(&nth_target[kind], memory_order_relaxed);
    if (target != 0 && atomic_fetch_add_explicit(&since[kind], 1, memory_order_relaxed) + 1 == target &&
        atomic_compare_exchange_strong(&nth_target[kind], &target, 0)) {
        bump(&failed[kind]);
        return atomic_load_explicit(&nth_error[kind], memory_order_relaxed);
    }
    uint32_t ppm = atomic_load_explicit(&random_ppm, memory_order_relaxed);
    if (ppm && (atomic_load_explicit(&random_mask, memory_order_relaxed) >> kind & 1) && next_random() % 1000000 < ppm) {
        bump(&failed[kind]);
        return default_error[kind];
    }
    return 0;
}

size_t osfail_short(int kind, size_t want)
{
    if (!atomic_load_explicit(&pl_osfail_on, memory_order_relaxed) || want < 2) return want;
    uint32_t ppm = atomic_load_explicit(&short_ppm, memory_order_relaxed);
    if (!ppm || next_random() % 1000000 >= ppm) return want;
    bump(&shortened[kind]);
    return 1 + (size_t)(next_random() % (want - 1)); /* 1 .. want-1 bytes */
}

/* ---- API for C# and the C tests ---- */

/* The nth call of `kind` from now (1: the next one) fails with `error` (an errno on Linux, a Win32 error
 * code on Windows; the caller sees -error), once. nth = 0 disarms the kind. Counting starts now. */
PL_EXPORT int pl_osfail_set(int kind, uint64_t nth, int error)
{
    if (kind < 0 || kind >= PL_OS_KINDS || (nth != 0 && error <= 0)) return PL_EINVAL;
    atomic_store(&nth_target[kind], 0);
    atomic_store(&since[kind], 0);
    atomic_store(&nth_error[kind], error);
    atomic_store(&nth_target[kind], nth);
    update_on();
    return 0;
}

/* Every call of a kind in kinds_mask (bit 1 << PL_OS_*) fails with probability per_million / 10^6, with
 * that kind's usual error (out of memory, disk full, ...); the draws follow `seed`. per_million = 0 stops. */
PL_EXPORT int pl_osfail_random(uint64_t seed, uint32_t per_million, uint32_t kinds_mask)
{
    if (per_million > 1000000) return PL_EINVAL;
    atomic_store(&rng_state, seed ? seed : 0x9e3779b97f4a7c15ull); /* xorshift never leaves 0 */
    atomic_store(&random_mask, kinds_mask);
    atomic_store(&random_ppm, per_million);
    update_on();
    return 0;
}

/* Reads and writes (PL_OS_READ, PL_OS_WRITE) transfer fewer bytes than asked with probability
 * per_million / 10^6 per call: the layer's loop must ask again for the rest. */
PL_EXPORT int pl_osfail_short(uint32_t per_million)
{
    if (per_million > 1000000) return PL_EINVAL;
    atomic_store(&short_ppm, per_million);
    update_on();
    return 0;
}

/* Per kind: calls made, failures injected, transfers shortened, since the injector was last turned on.
 * Returns PL_OS_KINDS. Any pointer may be NULL. */
PL_EXPORT int pl_osfail_counts(uint64_t *calls_out, uint64_t *failed_out, uint64_t *short_out, int n)
{
    for (int k = 0; k < n && k < PL_OS_KINDS; k++) {
        if (calls_out) calls_out[k] = atomic_load(&calls[k]);
        if (failed_out) failed_out[k] = atomic_load(&failed[k]);
        if (short_out) short_out[k] = atomic_load(&shortened[k]);
    }
    return PL_OS_KINDS;
}

/* Everything off and every count zero: OS calls go straight through again. */
PL_EXPORT void pl_osfail_off(void)
{
    atomic_store(&pl_osfail_on, 0);
    atomic_store(&random_ppm, 0);
    atomic_store(&short_ppm, 0);
    for (int k = 0; k < PL_OS_KINDS; k++) {
        atomic_store(&nth_target[k], 0);
        atomic_store(&calls[k], 0);
        atomic_store(&failed[k], 0);
        atomic_store(&shortened[k], 0);
    }
}
