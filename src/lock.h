/*
 * lock.h -- the pool lock, and the event a waiting caller parks on.
 *
 * A pool's lock is taken twice per acquire + release and held for a few
 * hundred nanoseconds.  glibc's mutex, once contended, marks itself
 * "locked, maybe sleepers" and keeps the mark until it is next found free:
 * under contention nearly every unlock then makes a futex wake system call,
 * whether anyone sleeps or not (`make bench-handoff`, 32 threads on 2
 * cores: 1.4 futex calls per acquire + release, a third of the CPU).  This
 * lock is Go's sync.Mutex (normal mode): it counts its sleepers, and an
 * unlock wakes one only when there is one, the lock was not taken again
 * meanwhile, and no caller is awake to take it -- one that spins (the
 * holder is usually running on the other core) or one woken earlier that
 * has not run yet.  So an unlock enters the kernel only when a sleeper
 * must be woken.  A running caller may take the lock before the one woken
 * (barging, as in acquire.c); fairness is the pool's business, above the
 * lock, since the lock is held for a few hundred nanoseconds.  It is built
 * on C11 atomics, so ThreadSanitizer sees its acquire/release ordering as
 * it sees any atomic's.  Linux only (futex).
 *
 * A waiting caller parks on its own event word (prt__waiter.signal): a
 * waker bumps the word and wakes it, under the pool lock, so the waiter
 * (which needs the lock to leave) is still there.
 */
#ifndef POOLRT_LOCK_H
#define POOLRT_LOCK_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

/* Every mutex of the core has a rank (internal.h's lock table says what
 * each guards).  A thread takes locks in increasing rank only, and never
 * two of one rank (two pools' locks, say).  In POOLRT_DEBUG builds (the
 * sanitizer builds) prt__rank_take asserts it, as SQLite asserts its pager
 * state; otherwise the calls compile to nothing. */
enum prt__rank {
    PRT__RANK_LIVE = 1,   /* runtime.c's live_mu: the live runtimes */
    PRT__RANK_RT,         /* rt->mu: the registry */
    PRT__RANK_ALIVE,      /* pool.c's alive_mu: every pool made */
    PRT__RANK_FLEET,      /* a fleet's mu: its sample and sampler */
    PRT__RANK_SAMPLER,    /* the endpoint sampler's mu (endpoint.h) */
    PRT__RANK_MUX,        /* a multiplexer's mu */
    PRT__RANK_POOL,       /* p->mu (prt__lock) */
    PRT__RANK_POLICY,     /* rt->policy_mu: the live policy, hook error log */
    PRT__RANK_RECORD,     /* a trace's mu: one line at a time */
    PRT__RANK_RECORD_OPEN, /* record.c's open_mu */
    PRT__RANK_MODCACHE    /* modcache.c's mu */
};
#ifdef POOLRT_DEBUG
extern _Thread_local unsigned prt__ranks_held; /* bit r: a lock of rank r is held */
static inline void prt__rank_take(enum prt__rank r)
{
    assert((prt__ranks_held >> r) == 0 && "lock taken out of rank order (internal.h's lock table)");
    prt__ranks_held |= 1u << r;
}
static inline void prt__rank_drop(enum prt__rank r)
{
    assert((prt__ranks_held & (1u << r)) && "unlocking a lock not held");
    prt__ranks_held &= ~(1u << r);
}
#else
#define prt__rank_take(r) ((void)(r))
#define prt__rank_drop(r) ((void)(r))
#endif

/* A pthread mutex of rank r. */
static inline void prt__mu_lock(pthread_mutex_t *m, enum prt__rank r)
{
    prt__rank_take(r);
    pthread_mutex_lock(m);
}

static inline void prt__mu_unlock(pthread_mutex_t *m, enum prt__rank r)
{
    pthread_mutex_unlock(m);
    prt__rank_drop(r);
}

/* state: PRT__LOCKED, PRT__WOKEN (a caller is awake to take the lock, so an
 * unlock wakes nobody), and the sleepers' count from bit 2 up.  sema: the
 * wake-ups handed to sleepers, a futex word. */
typedef struct {
    atomic_uint state;
    atomic_uint sema;
} prt__mutex;
enum { PRT__LOCKED = 1, PRT__WOKEN = 2, PRT__SLEEPER = 4 };

void prt__mutex_wait(prt__mutex *m);  /* the contended half of prt__mutex_lock */
void prt__mutex_wake(prt__mutex *m, unsigned state); /* the contended half of prt__mutex_unlock */
void prt__futex_wake(atomic_uint *word);
/* Sleeps while *word == val, until woken or the CLOCK_MONOTONIC time abs
 * (NULL: no limit).  Returns ETIMEDOUT, or 0 (woken, or spuriously). */
int prt__futex_wait(atomic_uint *word, unsigned val, const struct timespec *abs);

static inline void prt__mutex_lock(prt__mutex *m)
{
    unsigned free_ = 0;
    if (!atomic_compare_exchange_strong_explicit(&m->state, &free_, PRT__LOCKED, memory_order_acquire,
                                                 memory_order_relaxed))
        prt__mutex_wait(m);
}

static inline void prt__mutex_unlock(prt__mutex *m)
{
    unsigned left = atomic_fetch_sub_explicit(&m->state, PRT__LOCKED, memory_order_release) - PRT__LOCKED;
    if (left != 0)
        prt__mutex_wake(m, left);
}

#endif
