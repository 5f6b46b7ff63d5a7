/*
 * test_lock.c -- the pool lock and the waiter's event (src/lock.h): mutual
 * exclusion under more threads than cores, sleepers woken when a holder
 * sleeps with the lock (the path a preempted holder takes), and a parked
 * waiter woken, or timing out, on time.  No database is needed; every wait
 * is bounded by a deadline, and no wall time is asserted beyond "not
 * before its deadline".
 */
#include "pgtest.h"
#include <errno.h>
#include <time.h>

enum { THREADS = 16, ROUNDS = 20000 };

static prt__mutex mu;
static long counter;     /* mu */
static long in_section;  /* mu: holders inside at once, must stay 1 */
static int overlap;      /* mu */
static double hold_for;  /* immutable while threads run: a holder's sleep */

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        prt__mutex_lock(&mu);
        if (++in_section != 1)
            overlap = 1;
        counter++;
        if (hold_for > 0 && i % 2000 == 0)
            prt_sleep(hold_for); /* a holder off the CPU: contenders must sleep, then be woken */
        in_section--;
        prt__mutex_unlock(&mu);
    }
    return NULL;
}

static void run_hammer(double hold)
{
    pthread_t t[THREADS];
    memset(&mu, 0, sizeof mu);
    counter = in_section = overlap = 0;
    hold_for = hold;
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(overlap, 0);
    assert_int_equal(counter, (long)THREADS * ROUNDS);
    assert_int_equal(atomic_load(&mu.state), 0); /* free, no sleeper left counted, nobody marked awake */
}

static void excludes_under_contention(void **state)
{
    (void)state;
    run_hammer(0);
}

static void sleepers_are_woken(void **state)
{
    (void)state;
    run_hammer(0.002);
}

/* A waiter parked on its event: a wake-up ends the park at once, none
 * leaves it parked until its deadline. */
typedef struct {
    prt_pool *p;
    prt__waiter w;
    double deadline;
    int rc;
    atomic_int parked;
} parker;

static void *park_once(void *arg)
{
    parker *k = arg;
    struct timespec ts;
    prt__abstime(k->deadline, &ts);
    prt__lock(k->p);
    atomic_store(&k->parked, 1);
    k->rc = prt__park(&k->w, k->p, &ts);
    prt__unlock(k->p);
    return NULL;
}

static void a_parked_waiter_wakes_or_times_out(void **state)
{
    (void)state;
    prt_pool *p = calloc(1, sizeof *p);
    parker k = { .p = p };
    pthread_t t;

    k.deadline = prt_now() + 0.05;
    assert_int_equal(pthread_create(&t, NULL, park_once, &k), 0);
    pthread_join(t, NULL);
    assert_int_equal(k.rc, ETIMEDOUT);
    assert_true(prt_now() >= k.deadline);

    k.deadline = prt_now() + 30; /* bounds the test if the wake-up were lost */
    atomic_store(&k.parked, 0);
    assert_int_equal(pthread_create(&t, NULL, park_once, &k), 0);
    while (!atomic_load(&k.parked))
        sched_yield();
    prt__lock(p); /* the waiter holds the lock until it sleeps */
    prt__waiter_wake(&k.w);
    prt__unlock(p);
    pthread_join(t, NULL);
    assert_int_equal(k.rc, 0);
    assert_true(prt_now() < k.deadline);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(excludes_under_contention),
        cmocka_unit_test(sleepers_are_woken),
        cmocka_unit_test(a_parked_waiter_wakes_or_times_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
