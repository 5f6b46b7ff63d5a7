/*
 * lock.c -- the contended paths of the pool lock and the futex calls
 * (lock.h says why the pool does not use a pthread mutex).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "lock.h"

#ifdef POOLRT_DEBUG
_Thread_local unsigned prt__ranks_held;
_Thread_local char prt__thread_tag; /* internal.h's PRT__SELF: its address names the thread */
#endif

/* A caller that finds the lock taken looks again up to SPINS times, PAUSES
 * pause instructions apart (about a microsecond each here), before it
 * sleeps.  The wide spacing matters more than the count: on two cores,
 * every look that finds the lock free pulls the pool's cache lines over,
 * and looking often made the holder's next cycle wait for them (`driver
 * -q noop`, 8 threads: 100 looks 1 pause apart ran at 0.36x, 2 looks 100
 * apart at 1.3x glibc's mutex).  Spinning longer than a few microseconds
 * took CPU from the server under a real load (128 workers on 8
 * connections: 0.6-0.9x at 10 looks 300 apart), so a holder the OS
 * preempted is waited for asleep. */
enum { SPINS = 2, PAUSES = 100 };

static inline void cpu_relax(void)
{
    for (int i = 0; i < PAUSES; i++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
    }
}

void prt__futex_wake(atomic_uint *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

int prt__futex_wait(atomic_uint *word, unsigned val, const struct timespec *abs)
{
    long rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, val, abs, NULL, FUTEX_BITSET_MATCH_ANY);
    return rc != 0 && errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* Takes one wake-up from m->sema, sleeping until there is one. */
static void sema_take(prt__mutex *m)
{
    for (;;) {
        unsigned n = atomic_load_explicit(&m->sema, memory_order_relaxed);
        while (n > 0)
            if (atomic_compare_exchange_weak_explicit(&m->sema, &n, n - 1, memory_order_acquire,
                                                      memory_order_relaxed))
                return;
        prt__futex_wait(&m->sema, 0, NULL);
    }
}

/* The contended lock (sync.Mutex.lockSlow without its starvation mode).
 * While the holder may be running, spin, and say so (PRT__WOKEN) so that
 * an unlock wakes nobody; then either take the lock or count itself a
 * sleeper and sleep until an unlock hands it a wake-up (having cleared
 * PRT__WOKEN, which the waker set for it). */
void prt__mutex_wait(prt__mutex *m)
{
    int awake = 0, spins = 0;
    unsigned old = atomic_load_explicit(&m->state, memory_order_relaxed);
    for (;;) {
        if ((old & PRT__LOCKED) && spins < SPINS) {
            if (!awake && !(old & PRT__WOKEN) && old >= PRT__SLEEPER &&
                atomic_compare_exchange_strong_explicit(&m->state, &old, old | PRT__WOKEN, memory_order_relaxed,
                                                        memory_order_relaxed))
                awake = 1;
            cpu_relax();
            spins++;
            old = atomic_load_explicit(&m->state, memory_order_relaxed);
            continue;
        }
        unsigned new = old | PRT__LOCKED;
        if (old & PRT__LOCKED)
            new += PRT__SLEEPER;
        if (awake)
            new &= ~(unsigned)PRT__WOKEN;
        if (atomic_compare_exchange_weak_explicit(&m->state, &old, new, memory_order_acquire,
                                                  memory_order_relaxed)) {
            if (!(old & PRT__LOCKED))
                return;
            sema_take(m);
            awake = 1;
            spins = 0;
            old = atomic_load_explicit(&m->state, memory_order_relaxed);
        }
    }
}

/* The contended unlock (sync.Mutex.unlockSlow, normal mode): wakes one
 * sleeper unless there is none, the lock was taken again, or a caller is
 * awake to take it. */
void prt__mutex_wake(prt__mutex *m, unsigned old)
{
    for (;;) {
        if (old < PRT__SLEEPER || (old & (PRT__LOCKED | PRT__WOKEN)))
            return;
        unsigned new = (old - PRT__SLEEPER) | PRT__WOKEN;
        if (atomic_compare_exchange_weak_explicit(&m->state, &old, new, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            atomic_fetch_add_explicit(&m->sema, 1, memory_order_release);
            prt__futex_wake(&m->sema);
            return;
        }
    }
}
