/* mce.c: memory errors the kernel delivers, and the injectors that make the kernel deliver them. The
 * SIGBUS handler (installed beside the SIGSEGV one, chained the same way) turns BUS_MCEERR_AR, poison-marker
 * faults (BUS_ADRERR / BUS_OBJERR) and BUS_MCEERR_AO on guest pages into the engine's own recovery, and the
 * kernel injectors put a userfaultfd poison marker (UFFDIO_POISON) or a real hardware poison
 * (MADV_HWPOISON) under a guest page. Async-signal-safe where it runs in the handler.
 *
 * WHICH FRAME IS BAD. The kernel names an address, not a frame. A poison marker poisons one mapping (the
 * guest view of one page); MADV_HWPOISON and a real machine check poison the physical page behind every
 * mapping of it. Either way the engine takes the faulting guest page's frame (p2m[page], under the region
 * lock) as the bad one: it is retired like any poisoned frame, and the page gets a fresh frame. Before it
 * acts, the handler checks with a kernel read of the page (process_vm_readv, which fails with EFAULT
 * instead of signalling) that the page's current mapping still fails: a second thread whose SIGBUS was
 * for the same poison finds the page already replaced and simply retries its access. */
#include "pagelab.h"

/* ---- counts (process-wide; pl_memory_error_counts) ---- */
static _Atomic uint64_t mce_counts[PL_MCE_COUNTS];

static const char *const mce_count_names[PL_MCE_COUNTS] = {
    [PL_MCE_AR] = "action_required",
    [PL_MCE_MARKER] = "poison_markers",
    [PL_MCE_QUEUED] = "action_optional_queued",
    [PL_MCE_SPURIOUS] = "nothing_to_do",
    [PL_MCE_CHAINED] = "chained",
    [PL_MCE_DEFERRED] = "action_optional_deferred",
};

/* The first n counts (all of them when n >= PL_MCE_COUNTS); returns how many the engine keeps. */
PL_EXPORT int pl_memory_error_counts(uint64_t *out, int n)
{
    for (int i = 0; i < n && i < PL_MCE_COUNTS; i++) out[i] = atomic_load_explicit(&mce_counts[i], memory_order_relaxed);
    return PL_MCE_COUNTS;
}

/* The counts' names in pl_memory_error_counts order (up to cap; NULL for one left unnamed), for the test
 * that C#'s mirror of them agrees. Returns how many counts there are. */
PL_EXPORT int pl_memory_error_counts_layout(const char **names, int cap)
{
    for (int i = 0; i < cap && i < PL_MCE_COUNTS; i++) names[i] = mce_count_names[i];
    return PL_MCE_COUNTS;
}

#ifndef _WIN32
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h> /* the _IO* request macros only: the calls are the OS layer's */
#include <linux/userfaultfd.h>

/* Newer than Debian 12's headers (Linux 6.6+): the uffd poison feature and ioctl. */
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
struct pl_uffdio_poison {
    struct uffdio_range range;
    uint64_t mode;
    int64_t updated;
};
#define PL_UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct pl_uffdio_poison)
#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#define BUS_MCEERR_AO 5
#endif


void mce_count(int which) { atomic_fetch_add_explicit(&mce_counts[which], 1, memory_order_relaxed); }

/* Is page g's mapping poisoned by the kernel (so its frame must not be read as its content)? A SAMPLED
 * page cannot be probed (PROT_NONE): its flag answers. For C#: the guest OS's page-out reads a frame
 * through the host view, where a marker does not show. */
PL_EXPORT int pl_page_kernel_poisoned(int id, uint64_t page)
{
    ENTER_REGION(r, id);
    if (page >= r->pages) return PL_EINVAL;
    pl_lock(&r->lock);
    int bad = (r->flags[page] & PL_PF_KPOISON) && (st_of(r, page) == PL_SAMPLED || kernel_poisoned(r, page));
    pl_unlock(&r->lock);
    return bad;
}

/* Nothing to do on page g now (another thread replaced it, its next access faults as SIGSEGV and is
 * resolved there, or its frame search met another VM's held lock): the access re-runs. Endless repeats
 * are not ours to hide: chain. Region lock held. */
static int nothing_to_do(struct pl_region *r, uint64_t g)
{
    mce_count(PL_MCE_SPURIOUS);
    atomic_fetch_add_explicit(&r->counters.spurious, 1, memory_order_relaxed);
    if (r->spurious_page != g) {
        r->spurious_page = g;
        r->spurious_streak = 0;
    }
    if (++r->spurious_streak >= PL_SPURIOUS_LIMIT) {
        say("SIGBUS repeats on a page whose mapping reads fine", (uint64_t)r->owner, g);
        return 0;
    }
    return 1;
}


/* The kernel says page g is bad. Action required (the faulting access needs it): recover it inside the
 * handler (parity rebuild or disk refill into a fresh frame) or contain it (zero frame, flagged lost), as
 * for a poisoned page; the access then re-runs on the new frame (the MAP_FIXED remap also clears a poison
 * marker). Action optional (found by a scrub, nobody is waiting): the page is poisoned in the tables
 * (no access) and the engine is told (PL_EV_REPORTED) to handle it as a report; a guest touch before
 * that recovers it in the SIGSEGV handler. Returns 1 if handled, 0 to chain. */
/* A failure that passes: another VM's lock was held, or an OS call failed meanwhile (a shortage, or the
 * failure injector). The tables are as they were, so the access re-runs instead of being chained. */
static int passing(int rc, uint64_t os_failed)
{
    return rc == PL_EAGAIN || atomic_load_explicit(&os_failures, memory_order_relaxed) != os_failed;
}

static int memory_error_locked(struct pl_region *r, uint64_t g, int optional, int code)
{
    uint32_t st = st_of(r, g);
    int done;
    uint64_t os_failed = atomic_load_explicit(&os_failures, memory_order_relaxed);
    const char *why = NULL;
    if ((st == PL_BACKED || st == PL_TRACKED) && mapping_fails(r->base + g * page_size)) {
        r->spurious_streak = 0;
        if (optional) {
            done = change_pages(r, g, 1, PL_POISONED, NULL, PL_KEEP_FRAME, 1) == 0;
            if (done) {
                if (st != PL_TRACKED) r->hash[g] = 0; /* an unprotected page has no good copy */
                atomic_store_explicit(&r->state[g], PL_POISONED, memory_order_release);
                push_event(r, g, fr_of(r, g), PL_EV_REPORTED);
                mce_count(PL_MCE_QUEUED);
            } else if (passing(0, os_failed)) {
                return nothing_to_do(r, g) ? 2 : 0; /* an OS call failed meanwhile: re-run */
            } else {
                why = "a page the kernel reported bad could not be made inaccessible";
            }
        } else {
            int rc = repair_in_handler(r, g, st == PL_TRACKED);
            done = rc == 0;
            if (done) r->flags[g] &= (uint8_t)~PL_PF_KPOISON; /* a fresh frame, no marker */
            if (done) mce_count(code == BUS_MCEERR_AR ? PL_MCE_AR : PL_MCE_MARKER);
            else if (passing(rc, os_failed)) return nothing_to_do(r, g) ? 2 : 0; /* busy lock, failed OS call: re-run */
            else why = "a page the kernel reported bad: no frame to recover or contain it into";
        }
    } else if (st == PL_SHARED && mapping_fails(r->base + g * page_size)) {
        /* A shared page is never left faulting: it leaves the frame (share.c) for a private copy, or for a
         * zero frame flagged lost when the frame is bad. A hardware error (AR, or AO from a scrub) is in
         * the physical frame, which is then never read. */
        r->spurious_streak = 0;
        int rc = share_memory_error(r, g, optional || code == BUS_MCEERR_AR);
        done = rc == 0;
        if (done) r->flags[g] &= (uint8_t)~PL_PF_KPOISON;
        if (done) mce_count(optional ? PL_MCE_QUEUED : code == BUS_MCEERR_AR ? PL_MCE_AR : PL_MCE_MARKER);
        else if (passing(rc, os_failed)) return nothing_to_do(r, g) ? 2 : 0; /* busy lock, failed OS call: re-run */
        else why = "a shared page the kernel reported bad: no frame to move it to";
    } else {
        done = nothing_to_do(r, g);
    }
    if (!done && why) {
        atomic_fetch_add_explicit(&r->counters.map_failures, 1, memory_order_relaxed);
        say(why, (uint64_t)r->owner, g); /* write(2) only: fine under the lock */
    }
    return done;
}

/* The region lock if nobody holds or waits for it, else 0 (a ticket lock: take the next ticket only if
 * it is the one being served). */
static int try_lock(struct pl_spin *l)
{
    uint32_t serving = atomic_load_explicit(&l->serving, memory_order_acquire), expected = serving;
    return atomic_compare_exchange_strong_explicit(&l->next, &expected, serving + 1, memory_order_acquire, memory_order_relaxed);
}

/* Action-optional reports whose region lock was taken when they arrived: region id << 32 | page (0: a
 * free slot; ids are positive). A BUS_MCEERR_AO is sent to some thread of the process at any moment,
 * possibly one inside a pl_* call holding the very lock the handler needs: waiting there would never end.
 * So an AO handler only tries the lock, and otherwise leaves the report here for the next
 * pl_memory_errors_drain (RecoveryEngine calls it whenever it collects handler events). A guest access to
 * the page meanwhile is a SIGBUS like any. The id, not the address, says whose report it is: a region
 * destroyed with reports here never drains them, and its successor may get the same address range. */
static _Atomic uint64_t pending[PL_MCE_PENDING];

static int region_id(struct pl_region *r)
{
    return (int)(atomic_load(&r->slot->gen) << 8 | (uint32_t)(r->slot - pl_slots));
}

/* The report's region is gone (destroyed, or being destroyed): nobody will drain it. */
static int stale(uint64_t e)
{
    struct pl_slot *s = &pl_slots[(e >> 32) & (PL_MAX_REGIONS - 1)];
    struct pl_region *r = atomic_load(&s->region);
    return !r || r == PL_DYING || atomic_load(&s->gen) != (uint32_t)(e >> 40);
}

static int defer(struct pl_region *r, uint64_t g)
{
    uint64_t entry = (uint64_t)(uint32_t)region_id(r) << 32 | (uint32_t)g;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < PL_MCE_PENDING; i++) {
            uint64_t e = atomic_load(&pending[i]);
            /* First pass: free slots; second: slots of destroyed regions' reports, which would else
             * hold them for good. */
            if ((pass == 0 ? e != 0 : e == 0 || !stale(e)) || !atomic_compare_exchange_strong(&pending[i], &e, entry)) continue;
            mce_count(PL_MCE_DEFERRED);
            return 1;
        }
    }
    return 0; /* full: the report is lost, but the page's next access still raises SIGBUS and is handled */
}

int memory_error(struct pl_region *r, uint64_t g, int optional, int code)
{
    if (optional) {
        if (!try_lock(&r->lock)) {
            (void)defer(r, g);
            return 1; /* optional either way: nobody waits for this page */
        }
    } else {
        pl_lock(&r->lock);
    }
    int done = memory_error_locked(r, g, optional, code);
    pl_unlock(&r->lock);
    if (done == 2) os_yield(); /* let the other lock's holder finish before the access faults again */
    return done || optional; /* an AO is never chained: nothing re-runs, and the page's next access is an AR */
}

/* Handles the action-optional reports deferred for region `id` (outside any signal handler). Returns how
 * many were taken. */
PL_EXPORT int pl_memory_errors_drain(int id)
{
    ENTER_REGION(r, id);
    int n = 0;
    for (int i = 0; i < PL_MCE_PENDING; i++) {
        uint64_t e = atomic_load(&pending[i]);
        if (e >> 32 != (uint32_t)id || !atomic_compare_exchange_strong(&pending[i], &e, 0)) continue;
        pl_lock(&r->lock);
        (void)memory_error_locked(r, (uint32_t)e, 1, BUS_MCEERR_AO);
        pl_unlock(&r->lock);
        n++;
    }
    return n;
}

/* ---- the kernel injectors ---- */

/* One userfaultfd for the process, opened on first use; -errno if there is none (why: uffd_why). Every
 * call on it goes through the OS layer (os_uffd_*), so the failure injector reaches it (PL_OS_UFFD). */
static _Atomic int uffd_fd = -2; /* -2: not tried yet */
static struct pl_spin uffd_lock;
static char uffd_why[300];

static int uffd_get(void)
{
    int fd = atomic_load(&uffd_fd);
    if (fd != -2) return fd;
    pl_lock(&uffd_lock);
    fd = atomic_load(&uffd_fd);
    if (fd == -2) {
        int how, e;
        fd = os_uffd_open(&how);
        static const char *paths[] = {"userfaultfd(UFFD_USER_MODE_ONLY)", "userfaultfd()", "/dev/userfaultfd"};
        if (fd < 0) {
            e = -fd;
            snprintf(uffd_why, sizeof uffd_why,
                     "no userfaultfd: the syscall (with and without UFFD_USER_MODE_ONLY) and /dev/userfaultfd failed (%s; "
                     "vm.unprivileged_userfaultfd=%d; needs CONFIG_USERFAULTFD, and root or the sysctl or access to /dev/userfaultfd)",
                     strerror(e), os_sysctl_digit("/proc/sys/vm/unprivileged_userfaultfd"));
            fd = -e;
        } else {
            struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_POISON | UFFD_FEATURE_MISSING_SHMEM};
            if ((e = -os_uffd_ioctl(fd, UFFDIO_API, &api)) != 0) {
                os_close(fd);
                snprintf(uffd_why, sizeof uffd_why,
                         "userfaultfd (%s) refuses UFFD_FEATURE_POISON with MISSING_SHMEM (%s): UFFDIO_POISON needs Linux 6.6+",
                         paths[how], strerror(e));
                fd = -e;
            } else {
                snprintf(uffd_why, sizeof uffd_why, "UFFDIO_POISON through %s", paths[how]);
            }
        }
        /* A failure is not kept while the failure injector is on: it may be one it made, which passes. */
        if (fd >= 0 || !atomic_load_explicit(&pl_osfail_on, memory_order_relaxed)) atomic_store(&uffd_fd, fd);
    }
    pl_unlock(&uffd_lock);
    return fd;
}

/* Puts a poison marker on the one page at `at` (this mapping only): registered MISSING, its PTE dropped,
 * UFFDIO_POISON, unregistered, and its protection set again so the VMA merges back with its neighbours
 * (UFFDIO_UNREGISTER leaves them split, measured on 6.18). A guest thread that touches the page between
 * the drop and the ioctl brings the PTE back (EEXIST): drop it again. */
static int poison_marker(uint8_t *at, int prot)
{
    int u = uffd_get();
    if (u < 0) return u;
    struct uffdio_register reg = {.range = {(uintptr_t)at, page_size}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    int rc = os_uffd_ioctl(u, UFFDIO_REGISTER, &reg);
    if (rc != 0) return rc;
    rc = -EEXIST;
    for (int tries = 0; tries < 1000 && rc == -EEXIST; tries++) {
        if ((rc = os_advise(at, page_size, MADV_DONTNEED)) != 0) break;
        struct pl_uffdio_poison po = {{(uintptr_t)at, page_size}, 0, 0};
        rc = os_uffd_ioctl(u, PL_UFFDIO_POISON, &po);
    }
    /* Unregistered (the marker stays), tried until it takes: a page left registered MISSING with its PTE
     * dropped would make the next guest access wait for a userfaultfd reader that never comes. Then its
     * protection set again, which merges the VMAs back (the marker survives it), so the mapping count is
     * what the engine's model says. */
    struct uffdio_range range = {(uintptr_t)at, page_size};
    int left = os_uffd_ioctl(u, UFFDIO_UNREGISTER, &range);
    for (int tries = 0; left != 0 && tries < 1000; tries++) {
        os_yield();
        left = os_uffd_ioctl(u, UFFDIO_UNREGISTER, &range);
    }
    if (left != 0) say("a poison marker's page could not be unregistered from the userfaultfd", 0, (uint64_t)(uintptr_t)at);
    left = os_protect(at, page_size, prot);
    for (int tries = 0; left != 0 && tries < 1000; tries++) {
        os_yield();
        left = os_protect(at, page_size, prot);
    }
    return rc;
}

/* Which kernel injectors this process can use (bit PL_KI_*), with the reason for each in why_uffd /
 * why_hw (NUL-terminated, up to cap bytes). */
PL_EXPORT int pl_kernel_injectors(char *why_uffd, char *why_hw, uint32_t cap)
{
    int avail = 0;
    if (uffd_get() >= 0) avail |= PL_KI_UFFD_POISON;
    if (cap) snprintf(why_uffd, cap, "%s", uffd_why);
    int root = os_has_cap_sys_admin();
    int memory_failure = os_exists("/proc/sys/vm/memory_failure_early_kill");
    if (root && memory_failure) avail |= PL_KI_HWPOISON;
    if (cap)
        snprintf(why_hw, cap, "%s",
                 root && memory_failure ? "MADV_HWPOISON (root, CONFIG_MEMORY_FAILURE): poisons the physical page"
                 : memory_failure ? "MADV_HWPOISON needs CAP_SYS_ADMIN; this process lacks it"
                 : root ? "MADV_HWPOISON needs CONFIG_MEMORY_FAILURE; this kernel has none (no /proc/sys/vm/memory_failure_early_kill)"
                        : "MADV_HWPOISON needs CAP_SYS_ADMIN and CONFIG_MEMORY_FAILURE; neither is here");
    return avail;
}

/* The kernel injector: makes the kernel, not the engine, the first to know page `page` is bad. With
 * PL_KI_UFFD_POISON a poison marker goes on the page's guest mapping and then mask[0..len) is XORed into
 * its frame at `offset` (the bad cell's bytes: a path that missed the SIGBUS would read them); with
 * PL_KI_HWPOISON the physical page is poisoned (the mask is not used: the page cannot be read at all). The
 * tables are not changed: the page stays Backed or Tracked until a guest access takes the SIGBUS. *hit is
 * the frame that is now bad. PL_ESTATE if the page is not Backed or Tracked (or, with require_tracked,
 * not Tracked). */
PL_EXPORT int pl_kernel_inject(int id, uint64_t page, uint32_t offset, const uint8_t *mask, uint32_t len, int require_tracked,
                               int how, uint32_t *hit)
{
    ENTER_REGION(r, id);
    if (page >= r->pages || (how != PL_KI_UFFD_POISON && how != PL_KI_HWPOISON)) return PL_EINVAL;
    if (how == PL_KI_UFFD_POISON && (len == 0 || offset >= page_size || len > page_size - offset)) return PL_EINVAL;
    if (how == PL_KI_UFFD_POISON && uffd_get() < 0) return uffd_get();
    pl_lock(&r->lock);
    uint32_t st = st_of(r, page);
    if ((st != PL_BACKED && st != PL_TRACKED) || (require_tracked && st != PL_TRACKED)) {
        pl_unlock(&r->lock);
        return PL_ESTATE;
    }
    uint32_t f = fr_of(r, page);
    uint8_t *at = r->base + page * page_size;
    int rc;
    if (how == PL_KI_UFFD_POISON) {
        rc = poison_marker(at, prot_of(st));
        if (rc == 0) {
            /* Only now: no guest access can reach the frame through the marker. */
            uint8_t *bytes = frame_bytes(r->arena, f) + offset;
            for (uint32_t i = 0; i < len; i++) bytes[i] ^= mask[i];
        }
        if (rc == 0) r->flags[page] |= PL_PF_KPOISON;
    } else {
        rc = os_advise(at, page_size, MADV_HWPOISON);
        if (rc == 0) r->flags[page] |= PL_PF_KPOISON;
    }
    pl_unlock(&r->lock);
    if (rc == 0) *hit = f;
    return rc;
}
#else
/* Windows: no user-mode way to poison a page, and uncorrectable memory errors reach the OS as machine
 * checks (WHEA), which retires the page or bugchecks; no process receives an exception it could recover
 * a page from. Nothing to install, nothing to inject. */
#include <stdio.h>
PL_EXPORT int pl_page_kernel_poisoned(int id, uint64_t page) { (void)id, (void)page; return 0; }
PL_EXPORT int pl_memory_errors_drain(int id) { (void)id; return 0; }

PL_EXPORT int pl_kernel_injectors(char *why_uffd, char *why_hw, uint32_t cap)
{
    if (cap) {
        snprintf(why_uffd, cap, "%s", "Windows has no userfaultfd or any user-mode call that poisons a page");
        snprintf(why_hw, cap, "%s",
                 "Windows reports uncorrectable memory errors as machine checks through WHEA (the kernel retires the page or "
                 "bugchecks); no process gets an exception for a page it could recover, and no user-mode API injects one");
    }
    return 0;
}

PL_EXPORT int pl_kernel_inject(int id, uint64_t page, uint32_t offset, const uint8_t *mask, uint32_t len, int require_tracked,
                               int how, uint32_t *hit)
{
    (void)id, (void)page, (void)offset, (void)mask, (void)len, (void)require_tracked, (void)how, (void)hit;
    return PL_EINVAL;
}
#endif
