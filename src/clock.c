/*
 * clock.c -- monotonic time, condition variables that wait on it, and a
 * cheap thread-local random source (for lifetime jitter and "random" pick).
 *
 * All times in poolrt are seconds as doubles on CLOCK_MONOTONIC, so that a
 * wall-clock step never expires every connection at once or stalls a wait.
 * The simulator installs a virtual clock on its thread instead, and seeds
 * the random source, so that the same core runs repeatably in virtual time.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include "internal.h"

/* The thread's virtual clock (the simulator's), or NULL.  virtual_clocks
 * counts the threads that have one, so that prt_now() elsewhere pays one
 * plain load of a global, not a thread-local lookup (a call into the
 * dynamic linker in a shared library). */
static _Thread_local const double *virtual_now;
static atomic_int virtual_clocks;

void prt__clock_set(const double *now)
{
    if (!virtual_now != !now)
        atomic_fetch_add(&virtual_clocks, now ? 1 : -1);
    virtual_now = now;
}

double prt_now(void)
{
    if (__builtin_expect(atomic_load_explicit(&virtual_clocks, memory_order_relaxed) != 0, 0) && virtual_now)
        return *virtual_now;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void prt_sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = { (time_t)seconds, (long)((seconds - floor(seconds)) * 1e9) };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Converts a deadline on prt_now()'s clock into the absolute
 * CLOCK_MONOTONIC timespec that pthread_cond_timedwait on a condvar of
 * prt__cond_init and a futex wait (lock.h) expect. */
void prt__abstime(double deadline, struct timespec *ts)
{
    double s = floor(deadline);
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((deadline - s) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void prt__cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &a);
    pthread_condattr_destroy(&a);
}

/* xorshift64*, seeded per thread from the clock and the state's address,
 * or by prt__rand_seed. */
static _Thread_local uint64_t s;

void prt__rand_seed(uint64_t seed)
{
    s = seed ? seed * 0x9e3779b97f4a7c15ULL + 1 : 0;
}

double prt__rand01(void)
{
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&s ^ (uint64_t)ts.tv_sec;
        if (s == 0)
            s = 0x9e3779b97f4a7c15ULL;
    }
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return (double)((s * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}
