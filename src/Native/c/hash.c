/* hash.c: the content hash, on the ground floor beside the lock: parity records it for protected pages,
 * sharing for shared frames, the handler checks both. Pure computation, calls nothing. */
#include "pagelab.h"

/* The content hash recorded for protected pages (four independent FNV-style lanes, so it runs at memory
 * speed). Exported so C# hashes with the very same function. */
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

uint64_t page_hash(const void *p, uint64_t bytes) { return pl_page_hash(p, bytes); }
