/*
 * test_multiplex.c -- the multiplexer (src/multiplex.c) from C, on threads,
 * against the throwaway server: results reach their own callers while
 * statements fail around them, the per-connection statement cache turns
 * over inside the pipeline, an exclusive acquire is served while the
 * multiplexer holds every connection, and an evicted pool gets its
 * connections back.  Runs under TSan in `make sanitize`.
 */
#include <pthread.h>
#include "pgtest.h"

typedef struct {
    prt_pool *pool;
    int id, n, fail_every, nsql;
    int bad;                 /* surprises: wrong value, wrong error, missing error */
    char first[256];
} job;

static const char *const texts[] = {
    "select $1::int8 as v, 1 / $2::int as one",
    "select $1::int8 + 0 as v, 1 / $2::int as one",
    "select $1::int8 * 1 as v, 1 / $2::int as one",
    "select $1::int8 - 0 as v, 1 / $2::int as one",
    "select ($1::int8) as v, 1 / $2::int as one",
};

static void note(job *j, const char *what)
{
    if (!j->bad++)
        snprintf(j->first, sizeof j->first, "caller %d: %.200s", j->id, what);
}

/* n statements, each returning its caller's own value; every fail_every-th
 * divides by zero; SQL texts rotate over nsql of `texts`. */
static void *run_values(void *arg)
{
    job *j = arg;
    char v[32], d[4], err[PRT__ERRLEN];
    const char *params[2] = { v, d };
    for (int k = 1; k <= j->n; k++) {
        int fail = j->fail_every > 0 && k % j->fail_every == 0;
        snprintf(v, sizeof v, "%d", j->id * 1000000 + k);
        snprintf(d, sizeof d, "%d", fail ? 0 : 1);
        prt_result *r = NULL;
        int rc = prt_pool_query(j->pool, texts[k % j->nsql], 2, params, 0, &r, err, sizeof err);
        if (fail && (rc != PRT_EQUERY || !strstr(err, "division by zero")))
            note(j, rc == PRT_OK ? "a failing statement succeeded" : err);
        else if (!fail && rc != PRT_OK)
            note(j, err);
        else if (!fail && strcmp(prt_result_value(r, 0, 0), v) != 0)
            note(j, "got another caller's result");
        prt_result_free(r);
    }
    return NULL;
}

static void run_jobs(prt_pool *p, int threads, int n, int fail_every, int nsql)
{
    pthread_t th[32];
    job jobs[32];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){ .pool = p, .id = i + 1, .n = n, .fail_every = fail_every, .nsql = nsql };
        assert_int_equal(pthread_create(&th[i], NULL, run_values, &jobs[i]), 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].bad)
            fail_msg("%d surprises, first: %s", jobs[i].bad, jobs[i].first);
    }
}

static void done(prt_runtime *rt, prt_pool *p)
{
    prt_pool_unref(p);
    prt_runtime_free(rt);
}

static prt_pool *mux_pool(prt_runtime *rt, const char *name, int max, int stmt_cache)
{
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = max;
    o.multiplex = 1;
    o.stmt_cache = stmt_cache;
    return pgtest_pool(rt, name, &o);
}

static void errors_reach_their_callers_only(void **state)
{
    (void)state;
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = mux_pool(rt, "mx_c_iso", 2, 64);
    run_jobs(p, 12, 300, 11, 1);
    prt_pool_stats st;
    prt_pool_stats_get(p, &st);
    assert_true(st.total <= 2);
    assert_int_equal(st.closed_broken, 0);
    done(rt, p);
}

/* A cache of 2 statements for 5 texts: every few statements a DEALLOCATE
 * and a Parse travel in a caller's segment, behind and ahead of others. */
static void statement_cache_turns_over_in_the_pipeline(void **state)
{
    (void)state;
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = mux_pool(rt, "mx_c_cache", 2, 2);
    run_jobs(p, 8, 200, 13, 5);
    done(rt, p);
}

typedef struct {
    prt_pool *pool;
    int rc;
    char err[PRT__ERRLEN];
} excl;

static void *exclusive_acquire(void *arg)
{
    excl *e = arg;
    prt_conn *c;
    e->rc = prt_acquire(e->pool, 10.0, &c, e->err, sizeof e->err);
    if (e->rc == PRT_OK) {
        prt_result *r = NULL;
        e->rc = prt_query(c, "select 1", 0, NULL, 0, &r, e->err, sizeof e->err);
        prt_result_free(r);
        prt_release(c, 0);
    }
    return NULL;
}

/* The multiplexer holds both connections under load; an exclusive caller
 * queues in the pool, and a connection is retired for it. */
static void exclusive_acquire_is_served_under_load(void **state)
{
    (void)state;
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = mux_pool(rt, "mx_c_excl", 2, 64);
    enum { LOAD = 8 };
    pthread_t load[LOAD], ex;
    job jobs[LOAD];
    for (int i = 0; i < LOAD; i++) {
        jobs[i] = (job){ .pool = p, .id = i + 1, .n = 1500, .nsql = 1 };
        assert_int_equal(pthread_create(&load[i], NULL, run_values, &jobs[i]), 0);
    }
    prt_pool_stats st;
    double deadline = prt_now() + 10;
    do { /* bounded wait until the multiplexer holds both */
        prt_sleep(0.001);
        prt_pool_stats_get(p, &st);
    } while (st.in_use < 2 && prt_now() < deadline);
    assert_int_equal(st.in_use, 2);
    excl e = { .pool = p };
    assert_int_equal(pthread_create(&ex, NULL, exclusive_acquire, &e), 0);
    pthread_join(ex, NULL);
    for (int i = 0; i < LOAD; i++)
        pthread_join(load[i], NULL);
    if (e.rc != PRT_OK)
        fail_msg("exclusive acquire: %s", e.err);
    for (int i = 0; i < LOAD; i++)
        if (jobs[i].bad)
            fail_msg("%s", jobs[i].first);
    done(rt, p);
}

/* Evicting the pool gives the multiplexer's connections back to it. */
static void eviction_returns_the_connections(void **state)
{
    (void)state;
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = mux_pool(rt, "mx_c_evict", 3, 64);
    run_jobs(p, 6, 50, 0, 1);
    prt_pool_stats st;
    prt_pool_stats_get(p, &st);
    assert_true(st.in_use >= 1); /* the multiplexer keeps its connections between statements */
    char err[PRT__ERRLEN];
    assert_int_equal(prt_runtime_evict(rt, "mx_c_evict", err, sizeof err), PRT_OK);
    prt_pool_stats_get(p, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.total, 0);
    prt_result *r = NULL;
    assert_int_equal(prt_pool_query(p, "select 1", 0, NULL, 0, &r, err, sizeof err), PRT_ECLOSED);
    done(rt, p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errors_reach_their_callers_only),
        cmocka_unit_test(statement_cache_turns_over_in_the_pipeline),
        cmocka_unit_test(exclusive_acquire_is_served_under_load),
        cmocka_unit_test(eviction_returns_the_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
