/* baseline.c: the C floor the recovery benchmarks compare PageLab with: a plain SIGSEGV handler that
 * makes a faulting page of its armed range writable again (mprotect) and returns. Nothing else. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static struct sigaction previous;
static uint8_t *volatile armed_base;
static volatile size_t armed_len;
static size_t page;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    uint8_t *a = (uint8_t *)info->si_addr;
    if (armed_base && a >= armed_base && a < armed_base + armed_len) {
        mprotect((void *)((uintptr_t)a & ~(uintptr_t)(page - 1)), page, PROT_READ | PROT_WRITE);
        return;
    }
    if (previous.sa_flags & SA_SIGINFO) previous.sa_sigaction(sig, info, ctx);
    else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) previous.sa_handler(sig);
    else signal(sig, SIG_DFL);
}

__attribute__((visibility("default"))) int bl_install(void *base, size_t len)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    armed_base = base;
    armed_len = len;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (sigaction(SIGSEGV, NULL, &previous) != 0) return -1;
    sa.sa_sigaction = on_segv;
    sa.sa_mask = previous.sa_mask;
    sa.sa_flags = previous.sa_flags | SA_SIGINFO | SA_ONSTACK;
    return sigaction(SIGSEGV, &sa, NULL);
}

/* One round trip, all in C: protect the page read-only, write to it (fault, handler, mprotect RW). */
__attribute__((visibility("default"))) void bl_round_trip(volatile uint8_t *p)
{
    mprotect((void *)p, page, PROT_READ);
    p[0]++;
}
