/* segv_chain.h: the SIGSEGV plumbing the C floors share. A floor's handler is installed after the
 * handlers already present (the runtime's), resolves only kernel-reported faults in the range it owns,
 * chains everything else to the handler it replaced the way libpagelab does, and is uninstalled again
 * when its benchmark is done, so it never sits in front of PageLab's handler while PageLab is measured. */
#ifndef PAGELAB_BENCH_SEGV_CHAIN_H
#define PAGELAB_BENCH_SEGV_CHAIN_H

#include <errno.h>
#include <signal.h>
#include <string.h>

struct floor_handler {
    struct sigaction previous; /* the handler ours replaced, and chains to */
    int installed;
};

/* Only kernel-generated codes (SEGV_MAPERR, SEGV_ACCERR, ...) carry a fault address; a SIGSEGV sent by
 * kill or tgkill (SI_USER, SI_TKILL: <= 0) does not, and is never "ours". */
static inline int floor_is_fault(const siginfo_t *info) { return info->si_code > 0; }

/* Installs fn in front of the current handler, with its mask and flags (the runtime's are
 * SA_SIGINFO|SA_ONSTACK|SA_RESTART|SA_RESTORER), as libpagelab does. 0 or -errno. */
static inline int floor_install(struct floor_handler *h, void (*fn)(int, siginfo_t *, void *))
{
    if (h->installed) return 0;
    struct sigaction sa;
    if (sigaction(SIGSEGV, NULL, &h->previous) != 0) return -errno;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_mask = h->previous.sa_mask;
    sa.sa_flags = (h->previous.sa_flags & ~(int)SA_RESETHAND) | SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    if (sigaction(SIGSEGV, &sa, NULL) != 0) return -errno;
    h->installed = 1;
    return 0;
}

/* Puts the replaced handler back if fn is still the current one: 0, or -errno. If another handler was
 * installed after fn (and so chains to it), fn stays installed and 1 is returned: the caller disarms
 * its range first, so fn then only chains. */
static inline int floor_uninstall(struct floor_handler *h, void (*fn)(int, siginfo_t *, void *))
{
    if (!h->installed) return 0;
    struct sigaction now;
    if (sigaction(SIGSEGV, NULL, &now) != 0) return -errno;
    if (!(now.sa_flags & SA_SIGINFO) || now.sa_sigaction != fn) return 1;
    if (sigaction(SIGSEGV, &h->previous, NULL) != 0) return -errno;
    h->installed = 0;
    return 0;
}

/* Passes a SIGSEGV that is not ours on, as if our handler were not there. */
static inline void floor_chain(const struct floor_handler *h, int sig, siginfo_t *info, void *ctx)
{
    const struct sigaction *p = &h->previous;
    if (p->sa_flags & SA_SIGINFO) {
        p->sa_sigaction(sig, info, ctx);
    } else if (p->sa_handler == SIG_DFL || p->sa_handler == SIG_IGN) {
        /* Default action: a real fault re-runs and terminates the process; a sent signal is raised
         * again (blocked until this handler returns) so it terminates it too instead of vanishing. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        if (!floor_is_fault(info)) raise(sig);
    } else {
        p->sa_handler(sig);
    }
}

#endif
