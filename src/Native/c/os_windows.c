/* os_windows.c: the fault engine's OS layer on Windows. The arena is a pagefile-backed section; the
 * region is a placeholder reservation split into one placeholder per guest page at create (a view can
 * only be unmapped whole); a page is mapped with MapViewOfFile3(MEM_REPLACE_PLACEHOLDER) and made a hole
 * again with UnmapViewOfFile2(MEM_PRESERVE_PLACEHOLDER), which faults on access like PROT_NONE;
 * protection is VirtualProtect; the handler is a first vectored exception handler that returns
 * EXCEPTION_CONTINUE_SEARCH for what it does not resolve. Remapping a page is unmap + map, not one
 * atomic call; both run under the region lock, so a guest touching the page in between faults, waits on
 * the lock in the handler and re-runs its access on the new frame. (Wine 10 breaks this one guarantee:
 * its MapViewOfFile3 makes the placeholder readable, as zeros, before it maps the section in.) Every OS
 * call first asks the failure injector (osfail.c), as on Linux; this layer calls nothing above it. */
#ifdef _WIN32
#include "pagelab.h"

#ifndef MEM_RESERVE_PLACEHOLDER
#define MEM_RESERVE_PLACEHOLDER 0x00040000
#endif
#ifndef MEM_REPLACE_PLACEHOLDER
#define MEM_REPLACE_PLACEHOLDER 0x00004000
#endif
#ifndef MEM_PRESERVE_PLACEHOLDER
#define MEM_PRESERVE_PLACEHOLDER 0x00000002
#endif
#ifndef MEM_COALESCE_PLACEHOLDERS
#define MEM_COALESCE_PLACEHOLDERS 0x00000001
#endif

/* The placeholder functions live in kernelbase.dll (not every import library has them), so they are
 * resolved once at install. */
typedef PVOID(WINAPI *virtual_alloc2_fn)(HANDLE, PVOID, SIZE_T, ULONG, ULONG, void *, ULONG);
typedef PVOID(WINAPI *map_view3_fn)(HANDLE, HANDLE, PVOID, ULONG64, SIZE_T, ULONG, ULONG, void *, ULONG);
typedef BOOL(WINAPI *unmap_view2_fn)(HANDLE, PVOID, ULONG);
static virtual_alloc2_fn virtual_alloc2;
static map_view3_fn map_view3;
static unmap_view2_fn unmap_view2;
size_t page_size; /* the OS's, set once by pl_install / pl_arena_create (os_page_size) */
_Atomic uint64_t os_failures;

/* -error, counted: every failed call passes through here (error 0: a failure without a code). */
static int failed_with(DWORD error)
{
    atomic_fetch_add_explicit(&os_failures, 1, memory_order_relaxed);
    return error ? -(int)error : -1;
}

/* The calls behind the injector: a failure sets the last error as the call would. */
static BOOL sys_unmap_view(PVOID at)
{
    int e = osfail_hit(PL_OS_UNMAP);
    if (e) { SetLastError((DWORD)e); return FALSE; }
    return unmap_view2(GetCurrentProcess(), at, MEM_PRESERVE_PLACEHOLDER);
}

static PVOID sys_map_view(HANDLE section, PVOID at, ULONG64 offset, SIZE_T bytes, ULONG prot)
{
    int e = osfail_hit(PL_OS_MAP);
    if (e) { SetLastError((DWORD)e); return NULL; }
    return map_view3(section, GetCurrentProcess(), at, offset, bytes, MEM_REPLACE_PLACEHOLDER, prot, NULL, 0);
}

static BOOL sys_protect(PVOID at, SIZE_T bytes, DWORD prot)
{
    DWORD old;
    int e = osfail_hit(PL_OS_PROTECT);
    if (e) { SetLastError((DWORD)e); return FALSE; }
    return VirtualProtect(at, bytes, prot, &old);
}

size_t os_page_size(void)
{
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwPageSize;
}

void os_yield(void) { SwitchToThread(); }
int os_last_error(void) { return -(int)GetLastError(); }

void os_write_stderr(const char *buf, size_t n)
{
    DWORD written;
    /* nothing more can be done about a failed diagnostic */
    (void)WriteFile(GetStdHandle(STD_ERROR_HANDLE), buf, (DWORD)n, &written, NULL);
}

static DWORD win_prot(int prot)
{
    return prot == (PROT_READ | PROT_WRITE) ? PAGE_READWRITE : prot == PROT_READ ? PAGE_READONLY : PAGE_NOACCESS;
}

static uint8_t *page_at(struct pl_region *r, uint64_t g) { return r->base + g * page_size; }

/* Page g back to its placeholder (a hole). */
static int hole_one(struct pl_region *r, uint64_t g)
{
    if (!r->view_mapped[g]) return 0;
    if (!sys_unmap_view(page_at(r, g))) return failed_with(GetLastError());
    r->view_mapped[g] = 0;
    return 0;
}

/* Page g := a view of `frame` with protection prot. A page that must not be written is mapped read-only
 * from the start, so no write on another CPU can land in it unseen; PROT_NONE is narrowed afterwards
 * (MapViewOfFile3 refuses PAGE_NOACCESS), leaving at most a moment in which it can be read. */
static int map_one(struct pl_region *r, uint64_t g, uint32_t frame, int prot)
{
    int rc = hole_one(r, g);
    if (rc != 0) return rc;
    ULONG initial = prot == (PROT_READ | PROT_WRITE) ? PAGE_READWRITE : PAGE_READONLY;
    void *got = sys_map_view((HANDLE)r->arena->os, page_at(r, g), (ULONG64)frame * page_size, page_size, initial);
    if (got == NULL) return failed_with(GetLastError());
    r->view_mapped[g] = 1;
    if (prot == PROT_NONE && !sys_protect(got, page_size, PAGE_NOACCESS)) {
        rc = failed_with(GetLastError());
        (void)hole_one(r, g); /* already failing: a hole is safer than an over-permissive view */
        return rc;
    }
    return 0;
}

/* Page g as the tables say (state and p2m still hold the old values while the OS calls are made). */
static void restore_one(struct pl_region *r, uint64_t g)
{
    uint32_t st = atomic_load_explicit(&r->state[g], memory_order_relaxed);
    if (st == PL_UNBACKED || st == PL_SWAPPED) (void)hole_one(r, g);
    else (void)map_one(r, g, atomic_load_explicit(&r->p2m[g], memory_order_relaxed), prot_of(st));
}

/* A view can only be unmapped whole, so every page is its own view. A failure part way puts the
 * pages already changed back, so the call is all or nothing as on Linux. */
int map_frames(struct pl_region *r, uint64_t page, uint64_t count, uint32_t frame, int prot)
{
    for (uint64_t i = 0; i < count; i++) {
        int rc = map_one(r, page + i, frame + (uint32_t)i, prot);
        if (rc != 0) {
            for (uint64_t j = 0; j <= i; j++) restore_one(r, page + j);
            return rc;
        }
    }
    return 0;
}

int map_anonymous(struct pl_region *r, uint64_t page, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        int rc = hole_one(r, page + i);
        if (rc != 0) {
            for (uint64_t j = 0; j < i; j++) restore_one(r, page + j);
            return rc;
        }
    }
    return 0;
}

int protect_pages(struct pl_region *r, uint64_t page, uint64_t count, int prot)
{
    int rc = 0;
    for (uint64_t i = 0; i < count && rc == 0; i++) /* one view per page: VirtualProtect stays within one */
        if (!sys_protect(page_at(r, page + i), page_size, win_prot(prot))) rc = failed_with(GetLastError());
    if (rc == 0 || prot != (PROT_READ | PROT_WRITE)) return rc;
    /* A view mapped read-only may refuse to become writable: map the same frames again, writable. */
    for (uint64_t i = 0; i < count; i++)
        if ((rc = map_one(r, page + i, atomic_load_explicit(&r->p2m[page + i], memory_order_relaxed), prot)) != 0) return rc;
    return 0;
}

void *os_tables_alloc(size_t bytes)
{
    int e = osfail_hit(PL_OS_MAP);
    if (e) {
        (void)failed_with((DWORD)e);
        SetLastError((DWORD)e); /* for os_last_error */
        return NULL;
    }
    void *mem = VirtualAlloc(NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!mem) (void)failed_with(GetLastError());
    return mem;
}

/* A failure only keeps the memory (the tables are never touched again). */
void os_tables_free(void *mem, size_t bytes)
{
    (void)bytes;
    if (osfail_hit(PL_OS_UNMAP) || !VirtualFree(mem, 0, MEM_RELEASE)) (void)failed_with(0);
}

/* Frees a region's placeholders: its first `split` pages are one-page placeholders, the rest is one
 * more. Coalesced into one and released, or released one by one if coalescing is refused. */
static void release_placeholders(uint8_t *base, uint64_t pages, uint64_t split)
{
    if (split == 0 || VirtualFree(base, pages * page_size, MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS)) {
        VirtualFree(base, 0, MEM_RELEASE);
        return;
    }
    for (uint64_t g = 0; g <= split && g < pages; g++) VirtualFree(base + g * page_size, 0, MEM_RELEASE);
}

/* One placeholder per guest page, so that each page can be mapped and unmapped on its own. */
int os_reserve(struct pl_region *r)
{
    int e = osfail_hit(PL_OS_MAP);
    if (e) return failed_with((DWORD)e);
    uint8_t *base = virtual_alloc2(GetCurrentProcess(), NULL, r->pages * page_size,
                                   MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, PAGE_NOACCESS, NULL, 0);
    if (base == NULL) return failed_with(GetLastError());
    for (uint64_t g = 0; g + 1 < r->pages; g++) {
        if (!VirtualFree(base + g * page_size, page_size, MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER)) {
            int rc = failed_with(GetLastError());
            release_placeholders(base, r->pages, g);
            return rc;
        }
    }
    r->base = base;
    return 0;
}

/* Every view goes first (their frames are about to be freed for other VMs): a page whose unmap fails is
 * tried again, a failure here being a shortage that passes. */
void os_release(struct pl_region *r)
{
    for (uint64_t g = 0; g < r->pages; g++)
        for (int tries = 0; tries < 64 && hole_one(r, g) != 0; tries++) os_yield();
    release_placeholders(r->base, r->pages, r->pages - 1);
}

/* Every view back to its placeholder, coalesced into one that is kept (never released): the address
 * stays reserved and inaccessible. */
int os_quarantine(struct pl_region *r)
{
    for (uint64_t g = 0; g < r->pages; g++) {
        int rc = hole_one(r, g);
        if (rc != 0) return rc;
    }
    /* A refused coalesce only leaves one placeholder per page: still reserved, still inaccessible. */
    if (r->pages > 1) (void)VirtualFree(r->base, r->pages * page_size, MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS);
    return 0;
}

/* The handler reads disk copies and writes host swap with these (plain kernel calls, no allocation). A
 * short transfer (the injector makes them) asks again for the rest. */
int os_read_file(intptr_t file, uint8_t *dst, size_t bytes, int64_t offset)
{
    size_t done = 0;
    while (done < bytes) {
        int e = osfail_hit(PL_OS_READ);
        if (e) return failed_with((DWORD)e);
        OVERLAPPED at;
        memset(&at, 0, sizeof at);
        at.Offset = (DWORD)(uint64_t)(offset + (int64_t)done);
        at.OffsetHigh = (DWORD)((uint64_t)(offset + (int64_t)done) >> 32);
        DWORD got = 0;
        if (!ReadFile((HANDLE)file, dst + done, (DWORD)osfail_short(PL_OS_READ, bytes - done), &got, &at)) return failed_with(GetLastError());
        if (got == 0) return failed_with(ERROR_HANDLE_EOF);
        done += got;
    }
    return 0;
}

int os_write_file(intptr_t file, const uint8_t *src, size_t bytes, int64_t offset)
{
    size_t done = 0;
    while (done < bytes) {
        int e = osfail_hit(PL_OS_WRITE);
        if (e) return failed_with((DWORD)e);
        OVERLAPPED at;
        memset(&at, 0, sizeof at);
        at.Offset = (DWORD)(uint64_t)(offset + (int64_t)done);
        at.OffsetHigh = (DWORD)((uint64_t)(offset + (int64_t)done) >> 32);
        DWORD put = 0;
        if (!WriteFile((HANDLE)file, src + done, (DWORD)osfail_short(PL_OS_WRITE, bytes - done), &put, &at)) return failed_with(GetLastError());
        if (put == 0) return failed_with(ERROR_WRITE_FAULT);
        done += put;
    }
    return 0;
}

/* A section has no hole punching: zero what is not zero yet (discarded frames must read as zero), then
 * hint that the pages need not be written to the pagefile. The zeros are the contract; the hint may be
 * refused for a view. */
int os_discard(struct pl_arena *a, uint32_t frame, uint32_t count)
{
    int e = osfail_hit(PL_OS_DISCARD);
    if (e) return failed_with((DWORD)e);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t *w = (uint64_t *)frame_bytes(a, frame + i);
        for (size_t k = 0; k < page_size / 8; k++)
            if (w[k]) { memset(w, 0, page_size); break; }
    }
    (void)VirtualAlloc(frame_bytes(a, frame), (SIZE_T)count * page_size, MEM_RESET, PAGE_READWRITE);
    return 0;
}

/* `fault` (handler.c's vectored handler, passed in by pl_install): this layer calls nothing above it. */
int os_install(void *fault)
{
    HMODULE kb = GetModuleHandleW(L"kernelbase.dll");
    if (kb == NULL) kb = LoadLibraryW(L"kernelbase.dll");
    if (kb == NULL) return os_last_error();
    virtual_alloc2 = (virtual_alloc2_fn)(void (*)(void))GetProcAddress(kb, "VirtualAlloc2");
    map_view3 = (map_view3_fn)(void (*)(void))GetProcAddress(kb, "MapViewOfFile3");
    unmap_view2 = (unmap_view2_fn)(void (*)(void))GetProcAddress(kb, "UnmapViewOfFile2");
    if (!virtual_alloc2 || !map_view3 || !unmap_view2) return -(int)ERROR_PROC_NOT_FOUND;
    /* First = 1: ahead of the runtime's own handler, which then sees every fault we do not resolve. */
    return AddVectoredExceptionHandler(1, (PVECTORED_EXCEPTION_HANDLER)fault) ? 0 : os_last_error();
}

int64_t os_previous_flags(void) { return 0; /* a vectored handler has no flags */ }
#endif
