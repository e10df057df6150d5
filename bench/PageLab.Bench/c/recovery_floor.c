/* recovery_floor.c: the C floor of the parity-recovery benchmark. One round does what PageLab's
 * "inject + recover" does at the OS level and in memory, and nothing else:
 *   inject:  mprotect(PROT_NONE) of the page, then XOR the error mask into its frame (host view);
 *   recover: rebuild the page into a fresh frame (copy the parity frame, XOR in the k-1 other members),
 *            check the rebuilt page against its recorded hash, map the fresh frame over the page
 *            read-only (one mmap MAP_FIXED|MAP_SHARED), and give the bad frame's memory back
 *            (fallocate PUNCH_HOLE: a bad frame is never used again).
 * The fresh frame is one never touched since it was punched, as every free frame of PageLab's arena is,
 * so both sides pay the kernel's page allocation on the rebuild's first write. So both sides make the
 * same three syscalls (mprotect, mmap, fallocate), allocate one page and make the same k page passes and
 * one hash; no page tables, states, budget or lock. (Until this floor reused one warm spare and never
 * punched, it left out a third of PageLab's work: the ratio read 3-4x.) The hash is the same function as
 * libpagelab's pl_page_hash (copied: the floor does not link the engine). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint8_t *guest;        /* the one page being poisoned and recovered */
static uint8_t *host;         /* host view of the memfd */
static int memfd;
static size_t page;
static uint32_t members;      /* k: the page (frame `current`) and members 1..k-1 (frames 1..k-1) */
static uint32_t parity_frame, current, next_fresh, frames;
static uint64_t recorded_hash;

/* Same function as pl_page_hash in src/Native/c/pagelab_fault.c. */
static uint64_t page_hash(const void *p, uint64_t bytes)
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
    for (size_t i = 0; i < page / 8; i++) d[i] ^= s[i];
}

static uint8_t *frame(uint32_t f) { return host + (size_t)f * page; }

/* Sets up a group of k pages in a memfd of `total` frames (at least k + 2): member g (frame g) filled
 * with the byte g, the parity of all k in frame k, frames k+1.. fresh (punched); frame 0 mapped
 * read-only at guest_page. Call again to start over with fresh frames. 0 or -errno. */
__attribute__((visibility("default"))) int bl_recovery_init(void *guest_page, void *host_view, int fd, uint32_t k,
                                                            uint32_t total)
{
    if (total < k + 2) return -EINVAL;
    page = (size_t)sysconf(_SC_PAGESIZE);
    guest = guest_page;
    host = host_view;
    memfd = fd;
    members = k;
    parity_frame = k;
    current = 0;
    next_fresh = k + 1;
    frames = total;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)next_fresh * (off_t)page,
                  (off_t)(total - next_fresh) * (off_t)page) != 0)
        return -errno;
    memset(frame(parity_frame), 0, page);
    for (uint32_t g = 0; g < k; g++) {
        memset(frame(g), (int)g, page);
        xor_into(frame(parity_frame), frame(g));
    }
    recorded_hash = page_hash(frame(0), page);
    if (mmap(guest, page, PROT_READ, MAP_SHARED | MAP_FIXED, memfd, 0) == MAP_FAILED) return -errno;
    return 0;
}

/* One inject + recover round. 0; -1 if the rebuilt page failed its hash; -2 when no fresh frame is left
 * (call bl_recovery_init again); -errno of a failed call. */
__attribute__((visibility("default"))) int bl_recovery_round(const uint8_t *mask, uint32_t offset, uint32_t len)
{
    if (next_fresh >= frames) return -2;
    if (mprotect(guest, page, PROT_NONE) != 0) return -errno;
    uint8_t *bad = frame(current) + offset;
    for (uint32_t i = 0; i < len; i++) bad[i] ^= mask[i];

    uint32_t fresh = next_fresh++;
    uint8_t *dst = frame(fresh);
    memcpy(dst, frame(parity_frame), page);
    for (uint32_t g = 1; g < members; g++) xor_into(dst, frame(g));
    if (page_hash(dst, page) != recorded_hash) return -1;
    if (mmap(guest, page, PROT_READ, MAP_SHARED | MAP_FIXED, memfd, (off_t)fresh * (off_t)page) == MAP_FAILED) return -errno;
    uint32_t bad_frame = current;
    current = fresh;
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)bad_frame * (off_t)page, (off_t)page) != 0)
        return -errno;
    return 0;
}
