/* base.c: the ground floor's few primitives every other file uses: the ticket lock, the async-signal-safe
 * log line (the page size is the OS layer's). Calls only the OS layer. */
#include "pagelab.h"

/* ---- all async-signal-safe ---- */

void pl_lock(struct pl_spin *l)
{
    uint32_t ticket = atomic_fetch_add_explicit(&l->next, 1, memory_order_relaxed);
    unsigned spins = 0;
    while (atomic_load_explicit(&l->serving, memory_order_acquire) != ticket)
        if (++spins % 64 == 0) os_yield();
}

int pl_trylock(struct pl_spin *l)
{
    uint32_t serving = atomic_load_explicit(&l->serving, memory_order_acquire), ticket = serving;
    /* Free when the next ticket is the one being served: take it, unless another thread took it first. */
    return atomic_compare_exchange_strong_explicit(&l->next, &ticket, serving + 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

void pl_unlock(struct pl_spin *l) { atomic_fetch_add_explicit(&l->serving, 1, memory_order_release); }

void say(const char *what, uint64_t region, uint64_t page)
{
    /* write(2) is async-signal-safe; snprintf is not, so format by hand. */
    char buf[200], num[24];
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

