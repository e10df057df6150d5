/* balloon_floor.c: the C floor the balloon transfer benchmark compares PageLab with. One move of n
 * pages between two views of one memfd, doing the passes and syscalls PageLab's transfer must do and
 * nothing else:
 *   1. the guest zeroes each source page and the balloon writes its 32-byte header;
 *   2. the source pages are unmapped (anonymous PROT_NONE), one mmap per run of consecutive pages;
 *   3. each frame's header is checked and the frame zeroed, through the host view;
 *   4. the target pages are mapped onto the frames, one mmap per run of consecutive pages on
 *      consecutive frames.
 * No page tables, no accounting, no budget. */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define HEADER 32

static uint64_t header_word(uint64_t page) { return 0x4E4F4F4C4C414250ull ^ (page * 0x9E3779B97F4A7C15ull); }

/* Pages are indices into the range at base; frames index the memfd (and the host view of it).
 * Returns the number of frames that failed the check, or -1 if an mmap failed. */
__attribute__((visibility("default"))) int bl_balloon_move(uint8_t *base, uint8_t *host, int fd, size_t page,
                                                            const uint64_t *src, const uint64_t *dst,
                                                            const uint32_t *frames, int n)
{
    for (int i = 0; i < n; i++) {
        uint8_t *p = base + src[i] * page;
        memset(p, 0, page);
        uint64_t h[HEADER / 8] = {header_word(src[i]), (uint64_t)i, src[i], ~src[i]};
        memcpy(p, h, HEADER);
    }
    for (int i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && src[j] == src[i] + (uint64_t)(j - i); j++) {}
        if (mmap(base + src[i] * page, (size_t)(j - i) * page, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) return -1;
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        uint8_t *f = host + (size_t)frames[i] * page;
        if (((uint64_t *)f)[0] != header_word(src[i])) bad++;
        memset(f, 0, page);
    }
    for (int i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && dst[j] == dst[i] + (uint64_t)(j - i) && frames[j] == frames[i] + (uint32_t)(j - i); j++) {}
        if (mmap(base + dst[i] * page, (size_t)(j - i) * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
                 (off_t)frames[i] * (off_t)page) == MAP_FAILED) return -1;
    }
    return bad;
}
