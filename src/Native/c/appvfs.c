/* appvfs.c: a shim over SQLite's default VFS so no system call reads or writes guest memory directly.
 *
 * WHY. SQLite reads database pages straight into its page cache, which is in guest memory (appsqlite.c).
 * A page the host has not backed, has swapped out or is sampling is an inaccessible hole, and a protected one
 * is read-only: the guest's own touch of it faults and the handler resolves it, but the kernel's copy in
 * pread/pwrite/getcwd does not fault: it fails with EFAULT, and SQLite would see an I/O error. So the shim
 * moves file data through a buffer of ordinary memory (malloc, outside guest memory) and copies it in or out
 * with plain loads and stores, which fault like any guest access. Paths given to xOpen, xDelete, xAccess and
 * xFullPathname are copied out the same way. What the default VFS still hands the kernel from SQLite's heap
 * on its own (the name of the WAL's -shm file it builds) is a short string written just before: only a page
 * taken away in that instant (a host swap by another thread's fault) fails, as an I/O error, never as data.
 *
 * The sqlite3_vfs / sqlite3_io_methods layouts are SQLite's (sqlite3.h), field for field. */
#include "pagelab.h"
#include <stdlib.h>

typedef struct vfs_file vfs_file;
struct io_methods {
    int iVersion;
    int (*xClose)(vfs_file *);
    int (*xRead)(vfs_file *, void *, int, int64_t);
    int (*xWrite)(vfs_file *, const void *, int, int64_t);
    int (*xTruncate)(vfs_file *, int64_t);
    int (*xSync)(vfs_file *, int);
    int (*xFileSize)(vfs_file *, int64_t *);
    int (*xLock)(vfs_file *, int);
    int (*xUnlock)(vfs_file *, int);
    int (*xCheckReservedLock)(vfs_file *, int *);
    int (*xFileControl)(vfs_file *, int, void *);
    int (*xSectorSize)(vfs_file *);
    int (*xDeviceCharacteristics)(vfs_file *);
    int (*xShmMap)(vfs_file *, int, int, int, void volatile **);
    int (*xShmLock)(vfs_file *, int, int, int);
    void (*xShmBarrier)(vfs_file *);
    int (*xShmUnmap)(vfs_file *, int);
    int (*xFetch)(vfs_file *, int64_t, int, void **);
    int (*xUnfetch)(vfs_file *, int64_t, void *);
};
struct vfs_file { const struct io_methods *pMethods; };

typedef struct vfs vfs;
struct vfs {
    int iVersion, szOsFile, mxPathname;
    vfs *pNext;
    const char *zName;
    void *pAppData;
    int (*xOpen)(vfs *, const char *, vfs_file *, int, int *);
    int (*xDelete)(vfs *, const char *, int);
    int (*xAccess)(vfs *, const char *, int, int *);
    int (*xFullPathname)(vfs *, const char *, int, char *);
    void *(*xDlOpen)(vfs *, const char *);
    void (*xDlError)(vfs *, int, char *);
    void (*(*xDlSym)(vfs *, void *, const char *))(void);
    void (*xDlClose)(vfs *, void *);
    int (*xRandomness)(vfs *, int, char *);
    int (*xSleep)(vfs *, int);
    int (*xCurrentTime)(vfs *, double *);
    int (*xGetLastError)(vfs *, int, char *);
    int (*xCurrentTimeInt64)(vfs *, int64_t *);
    void *xSetSystemCall, *xGetSystemCall, *xNextSystemCall; /* forwarded as they are */
};

#define SQLITE_OK 0
#define SQLITE_NOMEM 7
#define SQLITE_IOERR_NOMEM (10 | (12 << 8))
#define PATH_MAX_COPY 4096

/* Our file: the header SQLite sees, the path copy the real file keeps pointing to, then the real file. */
struct shim_file {
    vfs_file hdr;
    char *path;
    vfs_file *real;
};

static vfs *base;
static vfs shim;
static void free_path(char *p);

#define REAL(f) (((struct shim_file *)(f))->real)

static int s_close(vfs_file *f)
{
    int rc = REAL(f)->pMethods->xClose(REAL(f));
    free_path(((struct shim_file *)f)->path);
    return rc;
}

/* File data goes through ordinary memory in slices, so the bounce buffer stays small. */
#define SLICE (64 * 1024)

static int s_read(vfs_file *f, void *dst, int n, int64_t off)
{
    uint8_t *b = malloc(n < SLICE ? (size_t)n : SLICE);
    if (!b) return SQLITE_IOERR_NOMEM;
    int rc = SQLITE_OK;
    for (int done = 0; done < n && rc == SQLITE_OK;) {
        int k = n - done < SLICE ? n - done : SLICE;
        rc = REAL(f)->pMethods->xRead(REAL(f), b, k, off + done);
        /* A short read (SQLITE_IOERR_SHORT_READ) zero-fills the rest, as SQLite expects: copy it all. */
        memcpy((uint8_t *)dst + done, b, (size_t)k);
        done += k;
    }
    free(b);
    return rc;
}

static int s_write(vfs_file *f, const void *src, int n, int64_t off)
{
    uint8_t *b = malloc(n < SLICE ? (size_t)n : SLICE);
    if (!b) return SQLITE_IOERR_NOMEM;
    int rc = SQLITE_OK;
    for (int done = 0; done < n && rc == SQLITE_OK;) {
        int k = n - done < SLICE ? n - done : SLICE;
        memcpy(b, (const uint8_t *)src + done, (size_t)k);
        rc = REAL(f)->pMethods->xWrite(REAL(f), b, k, off + done);
        done += k;
    }
    free(b);
    return rc;
}

static int s_truncate(vfs_file *f, int64_t n) { return REAL(f)->pMethods->xTruncate(REAL(f), n); }
static int s_sync(vfs_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int s_size(vfs_file *f, int64_t *n) { return REAL(f)->pMethods->xFileSize(REAL(f), n); }
static int s_lock(vfs_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int s_unlock(vfs_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int s_reserved(vfs_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int s_control(vfs_file *f, int op, void *arg) { return REAL(f)->pMethods->xFileControl(REAL(f), op, arg); }
static int s_sector(vfs_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int s_device(vfs_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int s_shm_map(vfs_file *f, int pg, int sz, int extend, void volatile **p)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, p);
}
static int s_shm_lock(vfs_file *f, int off, int n, int flags) { return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags); }
static void s_shm_barrier(vfs_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int s_shm_unmap(vfs_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
/* Memory-mapped reads would hand SQLite pages of the file, not guest memory: refused (it then reads). */
static int s_fetch(vfs_file *f, int64_t off, int n, void **p) { (void)f; (void)off; (void)n; *p = NULL; return SQLITE_OK; }
static int s_unfetch(vfs_file *f, int64_t off, void *p) { (void)f; (void)off; (void)p; return SQLITE_OK; }

static const struct io_methods shim_io = {3, s_close, s_read, s_write, s_truncate, s_sync, s_size, s_lock, s_unlock,
                                          s_reserved, s_control, s_sector, s_device, s_shm_map, s_shm_lock,
                                          s_shm_barrier, s_shm_unmap, s_fetch, s_unfetch};
static const struct io_methods shim_io_v1 = {1, s_close, s_read, s_write, s_truncate, s_sync, s_size, s_lock, s_unlock,
                                             s_reserved, s_control, s_sector, s_device, 0, 0, 0, 0, 0, 0};

/* A copy of a path in ordinary memory (NULL for a temporary file's NULL name), freed with free_path. A name
 * xOpen gets may carry URI parameters after its NUL (key\0value\0..., ending in an empty key): `uri` copies
 * up to that double NUL. Four zero bytes go before the copy, as SQLite puts before the names it makes, so a
 * walk back to a name's start (sqlite3_filename_database) stops there. */
static int copy_path(const char *z, int uri, char **out)
{
    *out = NULL;
    if (!z) return SQLITE_OK;
    size_t n = strlen(z);
    while (uri && n < 4 * PATH_MAX_COPY && z[n + 1]) n += 1 + strlen(z + n + 1);
    char *c = calloc(n + 8, 1);
    if (!c) return SQLITE_NOMEM;
    memcpy(c + 4, z, n);
    *out = c + 4;
    return SQLITE_OK;
}

static void free_path(char *p)
{
    if (p) free(p - 4);
}

static int v_open(vfs *v, const char *name, vfs_file *f, int flags, int *out_flags)
{
    (void)v;
    struct shim_file *s = (struct shim_file *)f;
    s->real = (vfs_file *)(s + 1);
    s->real->pMethods = NULL;
    f->pMethods = NULL;
    int rc = copy_path(name, 1, &s->path);
    if (rc) return rc;
    rc = base->xOpen(base, s->path, s->real, flags, out_flags);
    if (s->real->pMethods) f->pMethods = s->real->pMethods->iVersion >= 3 ? &shim_io : &shim_io_v1;
    else { free_path(s->path); s->path = NULL; }
    return rc;
}

static int v_delete(vfs *v, const char *name, int sync)
{
    (void)v;
    char *p;
    int rc = copy_path(name, 0, &p);
    if (rc) return rc;
    rc = base->xDelete(base, p, sync);
    free_path(p);
    return rc;
}

static int v_access(vfs *v, const char *name, int flags, int *res)
{
    (void)v;
    char *p;
    int r = 0, rc = copy_path(name, 0, &p);
    if (rc) return rc;
    rc = base->xAccess(base, p, flags, &r);
    free_path(p);
    *res = r;
    return rc;
}

static int v_full(vfs *v, const char *name, int n, char *out)
{
    (void)v;
    char *p, *o = calloc((size_t)n + 1, 1);
    int rc = copy_path(name, 0, &p);
    if (!o || rc) { free(o); free_path(p); return rc ? rc : SQLITE_NOMEM; }
    rc = base->xFullPathname(base, p, n, o);
    memcpy(out, o, (size_t)n);
    free(o);
    free_path(p);
    return rc;
}

static int v_random(vfs *v, int n, char *out)
{
    (void)v;
    char *o = malloc((size_t)n);
    if (!o) return 0;
    int got = base->xRandomness(base, n, o);
    memcpy(out, o, (size_t)n);
    free(o);
    return got;
}

/* Makes the shim SQLite's default VFS over the current default. SQLite's initialisation registers its own
 * default again, so call this after every sqlite3_initialize. Returns SQLite's result code. */
PL_EXPORT int pl_app_sqlite_vfs(void *sqlite3_vfs_find, void *sqlite3_vfs_register)
{
    if (!sqlite3_vfs_find || !sqlite3_vfs_register) return PL_EINVAL;
    vfs *(*find)(const char *) = (vfs * (*)(const char *)) sqlite3_vfs_find;
    int (*reg)(vfs *, int) = (int (*)(vfs *, int))sqlite3_vfs_register;
    vfs *current = find(NULL);
    if (!current) return 1; /* SQLITE_ERROR */
    if (current != &shim) {
        base = current;
        shim = *base;
        shim.pNext = NULL;
        shim.zName = "pagelab";
        shim.szOsFile = (int)sizeof(struct shim_file) + base->szOsFile;
        shim.xOpen = v_open;
        shim.xDelete = v_delete;
        shim.xAccess = v_access;
        shim.xFullPathname = v_full;
        shim.xRandomness = v_random;
    }
    return reg(&shim, 1);
}
