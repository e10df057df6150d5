/* appheap.c: the guest application heap: malloc over a contiguous run of one VM's guest physical pages,
 * with every byte of its bookkeeping (free maps, block sizes) outside guest memory.
 *
 * WHY A RUN. An application that asks for blocks larger than a page (SQLite's page cache: a 4 KiB page plus
 * its header) needs address-contiguous memory. Guest page g lives at base + g * page_size, so a run of guest
 * pages is contiguous in the VM's guest view, as hugetlbfs reserves huge pages for a database's buffer pool.
 * The guest OS model marks the run as the application process's pinned pages: the guest never swaps them;
 * only the application gives them back (pl_app_release), and takes back the ones the guest OS has free
 * again (pl_app_acquire). A page the application does not hold is never allocated over, so an allocation
 * that finds no room fails (SQLite: SQLITE_NOMEM, which it handles).
 *
 * WHY THE METADATA IS OUTSIDE. An error in guest memory then never corrupts the allocator, free() never
 * touches guest memory (it is safe on a page that is host-swapped, shared or poisoned), and a block's size
 * is exact (sqlite3_memory_used is the sum of pl_app_size over live blocks, so it can be checked).
 *
 * LAYOUT. The run is cut into granules of a quarter page. busy[] has a bit per granule: allocated, or its
 * page not held. Blocks above half a page take whole granules, first fit (blen[] records their length).
 * Smaller blocks come from slab pages of one size class each (kind[page] = class + 1), with a bitmap of
 * slots per page and a list of slab pages with a free slot per class.
 *
 * LOCK. One mutex guards the heap. Nothing under it touches guest memory (pl_app_realloc copies with it
 * released); even so a fault under it could not deadlock: the fault handler never takes this lock.
 * One heap per process (SQLite's allocator is process-wide): pl_app_create refuses a second. */
#include "pagelab.h"
#include <stdlib.h>
#ifdef _WIN32
static SRWLOCK heap_mutex = SRWLOCK_INIT;
static void heap_lock(void) { AcquireSRWLockExclusive(&heap_mutex); }
static void heap_unlock(void) { ReleaseSRWLockExclusive(&heap_mutex); }
#else
#include <pthread.h>
static pthread_mutex_t heap_mutex = PTHREAD_MUTEX_INITIALIZER;
static void heap_lock(void) { pthread_mutex_lock(&heap_mutex); }
static void heap_unlock(void) { pthread_mutex_unlock(&heap_mutex); }
#endif

#define GPP 4u              /* granules per page */
#define NCLASS 24
#define NONE 0xFFFFFFFFu
#define KIND_FREE 0         /* held; no slab (free, or granules of large blocks) */
#define KIND_GONE 0xFFu     /* not held: given back to the guest OS */
static const uint32_t class_size[NCLASS] = {16,  32,  48,  64,  80,  96,   112,  128,  160,  192,  224,  256,
                                            320, 384, 448, 512, 640, 768,  896,  1024, 1280, 1536, 1792, 2048};

struct app_heap {
    int region;
    uint8_t *start;          /* guest page `first` in the guest view */
    uint64_t first, pages, grans;
    size_t gran;             /* page_size / GPP */
    uint32_t slab_max;       /* largest slab class size: half a page */
    uint32_t words_per_page; /* slot bitmap words per slab page */
    uint64_t *busy;
    uint32_t *blen;
    uint8_t *kind;
    uint16_t *used;
    uint64_t *slots;
    uint32_t *next, *prev;
    uint32_t partial[NCLASS];
    uint64_t lo;             /* no free granule below it */
    int64_t bytes, blocks, high, held, failed, allocs;
};

/* The process's heap (NULL: none). Read by the SQLite glue under heap_lock. */
static struct app_heap *heap;
/* Bytes and blocks that were allocated while no heap was installed (appsqlite.c's fallback counts them). */
_Atomic int64_t app_outside_bytes, app_outside_blocks;

static int bit(const uint64_t *m, uint64_t i) { return (int)(m[i / 64] >> (i % 64) & 1); }
static void set_bits(uint64_t *m, uint64_t i, uint64_t n, int on)
{
    for (uint64_t k = i; k < i + n; k++) {
        if (on) m[k / 64] |= 1ull << (k % 64);
        else m[k / 64] &= ~(1ull << (k % 64));
    }
}

static int class_of(size_t n)
{
    for (int c = 0; c < NCLASS; c++)
        if (n <= class_size[c]) return c;
    return -1;
}

/* First fit: n free granules starting at a multiple of `align`. Returns the first granule or NONE. */
static uint64_t find_run(struct app_heap *h, uint64_t n, uint64_t align)
{
    uint64_t g = (h->lo + align - 1) / align * align;
    while (g + n <= h->grans) {
        if (h->busy[g / 64] == ~0ull && g % 64 == 0) { g += 64; continue; }
        uint64_t k = 0;
        while (k < n && !bit(h->busy, g + k)) k++;
        if (k == n) return g;
        g = (g + k + 1 + align - 1) / align * align;
    }
    return NONE;
}

static void list_remove(struct app_heap *h, int c, uint32_t p)
{
    if (h->prev[p] != NONE) h->next[h->prev[p]] = h->next[p];
    else h->partial[c] = h->next[p];
    if (h->next[p] != NONE) h->prev[h->next[p]] = h->prev[p];
    h->next[p] = h->prev[p] = NONE;
}

static void list_push(struct app_heap *h, int c, uint32_t p)
{
    h->prev[p] = NONE;
    h->next[p] = h->partial[c];
    if (h->partial[c] != NONE) h->prev[h->partial[c]] = p;
    h->partial[c] = p;
}

static void account(struct app_heap *h, int64_t bytes)
{
    h->bytes += bytes;
    h->blocks += bytes > 0 ? 1 : -1;
    if (h->bytes > h->high) h->high = h->bytes;
}

/* Allocates from the heap; heap_lock held. NULL: no room in the pages the application holds. */
static void *heap_alloc(struct app_heap *h, size_t n)
{
    int c = n <= h->slab_max ? class_of(n) : -1;
    if (c < 0) {
        uint64_t need = (n + h->gran - 1) / h->gran;
        uint64_t g = need <= h->grans ? find_run(h, need, 1) : NONE;
        if (g == NONE) { h->failed++; return NULL; }
        set_bits(h->busy, g, need, 1);
        h->blen[g] = (uint32_t)need;
        if (g == h->lo) h->lo = g + need;
        account(h, (int64_t)(need * h->gran));
        h->allocs++;
        return h->start + g * h->gran;
    }
    uint32_t p = h->partial[c];
    if (p == NONE) {
        uint64_t g = find_run(h, GPP, GPP);
        if (g == NONE) { h->failed++; return NULL; }
        set_bits(h->busy, g, GPP, 1);
        if (g == h->lo) h->lo = g + GPP;
        p = (uint32_t)(g / GPP);
        h->kind[p] = (uint8_t)(c + 1);
        h->used[p] = 0;
        memset(&h->slots[(uint64_t)p * h->words_per_page], 0, h->words_per_page * sizeof(uint64_t));
        list_push(h, c, p);
    }
    uint32_t per = (uint32_t)(page_size / class_size[c]);
    uint64_t *m = &h->slots[(uint64_t)p * h->words_per_page];
    uint32_t s = 0;
    while (bit(m, s)) s++; /* the page is on the partial list: a free slot below `per` exists */
    set_bits(m, s, 1, 1);
    if (++h->used[p] == per) list_remove(h, c, p);
    account(h, class_size[c]);
    h->allocs++;
    return h->start + (uint64_t)p * page_size + (uint64_t)s * class_size[c];
}

static int in_heap(const struct app_heap *h, const void *ptr)
{
    return h && (const uint8_t *)ptr >= h->start && (const uint8_t *)ptr < h->start + h->pages * page_size;
}

/* The block's size, or -1 if `ptr` is no live block of the heap; heap_lock held. */
static int64_t heap_size(struct app_heap *h, const void *ptr)
{
    uint64_t off = (uint64_t)((const uint8_t *)ptr - h->start), p = off / page_size;
    uint8_t k = h->kind[p];
    if (k == KIND_GONE) return -1;
    if (k != KIND_FREE) {
        uint32_t cs = class_size[k - 1], s = (uint32_t)(off % page_size / cs);
        if (off % page_size % cs || !bit(&h->slots[p * h->words_per_page], s)) return -1;
        return cs;
    }
    uint64_t g = off / h->gran;
    if (off % h->gran || !h->blen[g]) return -1;
    return (int64_t)(h->blen[g] * h->gran);
}

static void heap_free(struct app_heap *h, void *ptr)
{
    int64_t size = heap_size(h, ptr);
    if (size < 0) { say("pl_app_free: not a live block of the application heap (ignored)", (uint64_t)h->region, 0); return; }
    uint64_t off = (uint64_t)((uint8_t *)ptr - h->start), p = off / page_size;
    uint8_t k = h->kind[p];
    account(h, -size);
    if (k != KIND_FREE) {
        int c = k - 1;
        uint32_t per = (uint32_t)(page_size / class_size[c]);
        set_bits(&h->slots[p * h->words_per_page], off % page_size / class_size[c], 1, 0);
        if (h->used[p]-- == per) list_push(h, c, (uint32_t)p);
        if (h->used[p] == 0) { /* an empty slab page is a free page again */
            list_remove(h, c, (uint32_t)p);
            h->kind[p] = KIND_FREE;
            set_bits(h->busy, p * GPP, GPP, 0);
            if (p * GPP < h->lo) h->lo = p * GPP;
        }
        return;
    }
    uint64_t g = off / h->gran;
    set_bits(h->busy, g, h->blen[g], 0);
    h->blen[g] = 0;
    if (g < h->lo) h->lo = g;
}

/* ---- exported: lifetime ---- */

/* Installs the process's application heap over guest pages [first, first + pages) of region `id`, all
 * held by the application. PL_EBUSY: a heap exists already (one per process). */
PL_EXPORT int pl_app_create(int id, uint64_t first, uint64_t pages)
{
    uint8_t *base;
    {
        ENTER_REGION(r, id);
        if (pages == 0 || first >= r->pages || pages > r->pages - first || pages >= NONE) return PL_EINVAL;
        base = r->base;
    }
    if (page_size % (GPP * 16) || page_size / 2 < class_size[NCLASS - 1]) return PL_EINVAL;
    struct app_heap *h = calloc(1, sizeof *h);
    if (!h) return -12; /* ENOMEM */
    h->region = id;
    h->start = base + first * page_size;
    h->first = first;
    h->pages = pages;
    h->grans = pages * GPP;
    h->gran = page_size / GPP;
    h->slab_max = (uint32_t)(page_size / 2);
    h->words_per_page = (uint32_t)((page_size / 16 + 63) / 64);
    h->busy = calloc((h->grans + 63) / 64, sizeof(uint64_t));
    h->blen = calloc(h->grans, sizeof(uint32_t));
    h->kind = calloc(pages, 1);
    h->used = calloc(pages, sizeof(uint16_t));
    h->slots = calloc(pages * h->words_per_page, sizeof(uint64_t));
    h->next = malloc(pages * sizeof(uint32_t));
    h->prev = malloc(pages * sizeof(uint32_t));
    int rc = 0;
    if (!h->busy || !h->blen || !h->kind || !h->used || !h->slots || !h->next || !h->prev) rc = -12;
    if (rc == 0) {
        for (uint64_t p = 0; p < pages; p++) h->next[p] = h->prev[p] = NONE;
        for (int c = 0; c < NCLASS; c++) h->partial[c] = NONE;
        h->held = (int64_t)pages;
        heap_lock();
        if (heap) rc = PL_EBUSY;
        else heap = h;
        heap_unlock();
        if (rc == 0) return 0;
    }
    free(h->busy); free(h->blen); free(h->kind); free(h->used); free(h->slots); free(h->next); free(h->prev);
    free(h);
    return rc;
}

/* Removes the heap. PL_EBUSY (nothing changed) while it has live blocks: freeing them later would find no
 * heap. PL_ENOREGION: no heap, or another region's. */
PL_EXPORT int pl_app_destroy(int id)
{
    heap_lock();
    struct app_heap *h = heap;
    int rc = !h || h->region != id ? PL_ENOREGION : h->blocks ? PL_EBUSY : 0;
    if (rc == 0) heap = NULL;
    heap_unlock();
    if (rc) return rc;
    free(h->busy); free(h->blen); free(h->kind); free(h->used); free(h->slots); free(h->next); free(h->prev);
    free(h);
    return 0;
}

/* ---- exported: the allocator (NULL-safe as C's) ---- */

/* A block of at least n bytes from the heap; NULL if the heap has no room, or there is no heap (outside:
 * pl_app_malloc_any decides where else to go). */
PL_EXPORT void *pl_app_malloc(int64_t n)
{
    if (n <= 0) return NULL;
    heap_lock();
    void *p = heap ? heap_alloc(heap, (size_t)n) : NULL;
    heap_unlock();
    return p;
}

/* For appsqlite.c, one lock round each: a block from the heap, or NULL with *no_heap set when none is
 * installed; free / size of ptr if it lies in the heap's run (returning 1 / its size), else 0 / -2. */
void *app_heap_malloc(int64_t n, int *no_heap)
{
    heap_lock();
    *no_heap = heap == NULL;
    void *p = heap && n > 0 ? heap_alloc(heap, (size_t)n) : NULL;
    heap_unlock();
    return p;
}

int app_heap_free(void *ptr)
{
    heap_lock();
    int in = in_heap(heap, ptr);
    if (in) heap_free(heap, ptr);
    heap_unlock();
    return in;
}

int64_t app_heap_size(const void *ptr)
{
    heap_lock();
    int64_t n = in_heap(heap, ptr) ? heap_size(heap, ptr) : -2;
    heap_unlock();
    return n;
}

/* 1 if ptr lies in the heap's run (then pl_app_free / pl_app_size are the ones to call). */
PL_EXPORT int pl_app_owns(const void *ptr)
{
    heap_lock();
    int in = in_heap(heap, ptr);
    heap_unlock();
    return in;
}

PL_EXPORT void pl_app_free(void *ptr)
{
    if (!ptr) return;
    heap_lock();
    if (in_heap(heap, ptr)) heap_free(heap, ptr);
    else say("pl_app_free: pointer outside the application heap (ignored)", 0, 0);
    heap_unlock();
}

/* The block's usable size (what SQLite counts), or -1 if ptr is no live block of the heap. */
PL_EXPORT int64_t pl_app_size(const void *ptr)
{
    heap_lock();
    int64_t n = in_heap(heap, ptr) ? heap_size(heap, ptr) : -1;
    heap_unlock();
    return n;
}

/* The size an allocation of n would get from the heap (n rounded up to its class or to granules). */
PL_EXPORT int64_t pl_app_roundup(int64_t n)
{
    if (n <= 0) return 0;
    heap_lock();
    int64_t r = n;
    if (heap) {
        int c = (size_t)n <= heap->slab_max ? class_of((size_t)n) : -1;
        r = c >= 0 ? class_size[c] : (int64_t)(((uint64_t)n + heap->gran - 1) / heap->gran * heap->gran);
    }
    heap_unlock();
    return r;
}

/* ---- exported: pages between the application and the guest OS ---- */

/* Gives back up to `max` pages the heap holds and has wholly free, highest first (allocation is first-fit
 * from the bottom, so the top empties first). Writes their guest page numbers to out; returns how many.
 * From here the heap never allocates over them; the caller hands them to the guest OS free list. */
PL_EXPORT int pl_app_release(int id, uint64_t *out, uint32_t max)
{
    int n = 0;
    heap_lock();
    struct app_heap *h = heap;
    if (!h || h->region != id) n = PL_ENOREGION;
    for (uint64_t p = h && n == 0 ? h->pages : 0; p-- > 0 && (uint32_t)n < max;) {
        if (h->kind[p] != KIND_FREE) continue;
        uint64_t g = p * GPP, w = h->busy[g / 64] >> (g % 64) & 0xF;
        if (w) continue;
        set_bits(h->busy, g, GPP, 1);
        h->kind[p] = KIND_GONE;
        h->held--;
        out[n++] = h->first + p;
    }
    heap_unlock();
    return n;
}

/* Takes back guest pages of the run the guest OS gave the application again. All or nothing: PL_ESTATE if
 * one is held already, PL_EINVAL if one is outside the run. */
PL_EXPORT int pl_app_acquire(int id, const uint64_t *pages, uint32_t n)
{
    int rc = 0;
    heap_lock();
    struct app_heap *h = heap;
    if (!h || h->region != id) rc = PL_ENOREGION;
    for (uint32_t i = 0; rc == 0 && i < n; i++)
        if (pages[i] < h->first || pages[i] - h->first >= h->pages) rc = PL_EINVAL;
        else if (h->kind[pages[i] - h->first] != KIND_GONE) rc = PL_ESTATE;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        uint64_t p = pages[i] - h->first;
        h->kind[p] = KIND_FREE;
        set_bits(h->busy, p * GPP, GPP, 0);
        if (p * GPP < h->lo) h->lo = p * GPP;
        h->held++;
    }
    heap_unlock();
    return rc == 0 ? (int)n : rc;
}

/* Counters, in this order: bytes in live blocks, live blocks, high-water bytes, pages held, wholly free
 * held pages, failed allocations, allocations, bytes and blocks allocated outside the heap (no heap was
 * installed) and still live. Returns how many were written (n at most), or PL_ENOREGION. */
PL_EXPORT int pl_app_stats(int id, int64_t *out, int n)
{
    int64_t v[9] = {0};
    heap_lock();
    struct app_heap *h = heap;
    int rc = h && h->region == id ? 0 : PL_ENOREGION;
    if (rc == 0) {
        int64_t whole = 0;
        for (uint64_t p = 0; p < h->pages; p++)
            if (h->kind[p] == KIND_FREE && !(h->busy[p * GPP / 64] >> (p * GPP % 64) & 0xF)) whole++;
        int64_t vals[9] = {h->bytes, h->blocks, h->high, h->held, whole, h->failed, h->allocs,
                           atomic_load(&app_outside_bytes), atomic_load(&app_outside_blocks)};
        memcpy(v, vals, sizeof v);
    }
    heap_unlock();
    if (rc) return rc;
    if (n > 9) n = 9;
    for (int i = 0; i < n; i++) out[i] = v[i];
    return n;
}
