/* appsqlite.c: SQLite's allocator (SQLITE_CONFIG_MALLOC) over the guest application heap (appheap.c).
 * Process-wide, as SQLite's allocator is: while a heap is installed every allocation comes from it (none
 * falls back elsewhere: a full heap is SQLITE_NOMEM); while none is, allocations come from the C library and
 * are counted as outside guest memory (app_outside_*), so a run can prove it had none.
 *
 * sqlite3_config is variadic; a variadic call through a pointer of the exact prototype is the ABI's, which a
 * managed function pointer cannot make. So C# passes the address of e_sqlite3's sqlite3_config here. */
#include "pagelab.h"
#include <stdlib.h>

extern _Atomic int64_t app_outside_bytes, app_outside_blocks;
void *app_heap_malloc(int64_t n, int *no_heap);
int app_heap_free(void *ptr);
int64_t app_heap_size(const void *ptr);
PL_EXPORT int64_t pl_app_roundup(int64_t n);

/* SQLite's struct sqlite3_mem_methods (sqlite3.h), field for field. */
struct sqlite_mem_methods {
    void *(*xMalloc)(int);
    void (*xFree)(void *);
    void *(*xRealloc)(void *, int);
    int (*xSize)(void *);
    int (*xRoundup)(int);
    int (*xInit)(void *);
    void (*xShutdown)(void *);
    void *pAppData;
};
#define SQLITE_CONFIG_MALLOC 4

/* Blocks from the C library carry their size in a 16-byte header (keeps SQLite's 8-byte alignment). */
#define OUT_HDR 16
_Static_assert(OUT_HDR % 16 == 0, "the header keeps malloc's alignment");


static void *outside_malloc(int64_t n)
{
    uint8_t *b = malloc((size_t)n + OUT_HDR);
    if (!b) return NULL;
    *(int64_t *)b = n;
    atomic_fetch_add(&app_outside_bytes, n);
    atomic_fetch_add(&app_outside_blocks, 1);
    return b + OUT_HDR;
}

static int64_t outside_size(void *p) { return *(int64_t *)((uint8_t *)p - OUT_HDR); }

static void outside_free(void *p)
{
    atomic_fetch_sub(&app_outside_bytes, outside_size(p));
    atomic_fetch_sub(&app_outside_blocks, 1);
    free((uint8_t *)p - OUT_HDR);
}

/* Where a new block goes: the heap if one is installed (a full heap is NOMEM), else the C library
 * (counted). A block is freed where its address says it lives, whatever is installed by then. */
static void *m_malloc(int n)
{
    if (n <= 0) return NULL;
    int no_heap;
    void *p = app_heap_malloc(n, &no_heap);
    return no_heap ? outside_malloc(n) : p;
}

static void m_free(void *p)
{
    if (p && !app_heap_free(p)) outside_free(p);
}

static int m_size(void *p)
{
    if (!p) return 0;
    int64_t n = app_heap_size(p);
    if (n == -2) n = outside_size(p);
    return n < 0 ? 0 : (int)n;
}

static void *m_realloc(void *p, int n)
{
    if (!p) return m_malloc(n);
    int old = m_size(p);
    if (n <= old && (int64_t)n > pl_app_roundup(old) / 2) return p; /* fits, and wastes at most half */
    void *q = m_malloc(n);
    if (!q) return NULL; /* p stays valid, as realloc's contract says */
    /* Copied without the heap lock: a fault here (host swap-in, copy-on-write) is resolved by the handler. */
    memcpy(q, p, (size_t)(old < n ? old : n));
    m_free(p);
    return q;
}

static int m_roundup(int n) { return (int)pl_app_roundup(n); }
static int m_init(void *app) { (void)app; return 0; }
static void m_shutdown(void *app) { (void)app; }

static const struct sqlite_mem_methods methods = {m_malloc, m_free, m_realloc, m_size, m_roundup, m_init, m_shutdown, NULL};

/* Installs the methods with e_sqlite3's sqlite3_config (its address). Returns SQLite's result code
 * (21, SQLITE_MISUSE, once SQLite is initialised: shut it down first). */
PL_EXPORT int pl_app_sqlite_install(void *sqlite3_config)
{
    if (!sqlite3_config) return PL_EINVAL;
    int (*config)(int, ...) = (int (*)(int, ...))sqlite3_config;
    return config(SQLITE_CONFIG_MALLOC, &methods);
}

/* The methods themselves, for C tests and for a caller that wants the routing without SQLite. */
PL_EXPORT void *pl_app_any_malloc(int n) { return m_malloc(n); }
PL_EXPORT void pl_app_any_free(void *p) { m_free(p); }
PL_EXPORT void *pl_app_any_realloc(void *p, int n) { return m_realloc(p, n); }
PL_EXPORT int pl_app_any_size(void *p) { return m_size(p); }
