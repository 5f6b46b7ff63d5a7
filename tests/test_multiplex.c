/*
 * test_multiplex.c -- the multiplexer (src/multiplex.c) from C, on threads,
 * against the throwaway server: results reach their own callers while
 * statements fail around them, the per-connection statement cache turns
 * over inside the pipeline, an exclusive acquire is served while the
 * multiplexer holds every connection, and an evicted pool gets its
 * connections back; batches (prt_pool_query_batch, and spread over
 * connections: prt_pool_query_spread) in both modes, mixed
 * with single statements, the statement cache turning over inside them.
 * Runs under TSan in `make sanitize`.
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

/* One statement's outcome against what it had to be: value v, or a
 * division by zero when `fail`. */
static void check(job *j, int fail, int rc, const char *err, prt_result *r, const char *v)
{
    if (fail && (rc != PRT_EQUERY || !strstr(err, "division by zero")))
        note(j, rc == PRT_OK ? "a failing statement succeeded" : err);
    else if (!fail && rc != PRT_OK)
        note(j, err);
    else if (!fail && strcmp(prt_result_value(r, 0, 0), v) != 0)
        note(j, "got another statement's result");
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
        check(j, fail, rc, err, r, v);
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

/* --- batches (prt_pool_query_batch, src/batch.c) ------------------------- */

enum { BATCH = 40, ROUNDS = 15 };

/* How a batch caller sends its statements. */
enum { AS_BATCH, AS_SINGLES, AS_SPREAD };

/* A batch caller: a job (its id, pool and surprises) that sends its
 * statements as one batch, one by one, or spread over connections. */
typedef struct {
    job j;
    int how;
} bjob;

/* ROUNDS batches of BATCH statements (every 7th divides by zero, texts
 * rotating over all 5), or the same statements one by one. */
static void *run_batches(void *arg)
{
    bjob *b = arg;
    job *j = &b->j;
    char v[BATCH][32], d[BATCH][4];
    const char *params[BATCH][2];
    prt_batch_item items[BATCH];
    char err[PRT__ERRLEN];
    for (int round = 0; round < ROUNDS; round++) {
        memset(items, 0, sizeof items);
        for (int k = 0; k < BATCH; k++) {
            snprintf(v[k], sizeof v[k], "%d", (j->id * 100 + round) * 1000 + k);
            snprintf(d[k], sizeof d[k], "%d", k % 7 == 6 ? 0 : 1);
            params[k][0] = v[k];
            params[k][1] = d[k];
            items[k] = (prt_batch_item){ .sql = texts[(k + round) % 5], .nparams = 2, .params = params[k] };
        }
        if (b->how == AS_SINGLES) {
            for (int k = 0; k < BATCH; k++) {
                prt_result *r = NULL;
                int rc = prt_pool_query(j->pool, items[k].sql, 2, params[k], 0, &r, err, sizeof err);
                check(j, k % 7 == 6, rc, err, r, v[k]);
                prt_result_free(r);
            }
            continue;
        }
        int rc = (b->how == AS_SPREAD ? prt_pool_query_spread : prt_pool_query_batch)(j->pool, BATCH, items, err,
                                                                                    sizeof err);
        if (rc != PRT_EQUERY || !strstr(err, "statement 7 of 40: "))
            note(j, err);
        for (int k = 0; k < BATCH; k++) {
            check(j, k % 7 == 6, items[k].rc, items[k].err, items[k].result, v[k]);
            prt_result_free(items[k].result);
        }
    }
    return NULL;
}

/* `threads` batch callers on p: with `mixed`, batches, singles and spread
 * batches in turn; else all `how`. */
static void run_batch_jobs(prt_pool *p, int threads, int mixed, int how)
{
    pthread_t th[16];
    bjob jobs[16];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (bjob){ .j = { .pool = p, .id = i + 1 }, .how = mixed ? i % 3 : how };
        assert_int_equal(pthread_create(&th[i], NULL, run_batches, &jobs[i]), 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].j.bad)
            fail_msg("%d surprises, first: %s", jobs[i].j.bad, jobs[i].j.first);
    }
}

static prt_pool *pool_of(prt_runtime *rt, const char *name, int max, int multiplex)
{
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = max;
    o.multiplex = multiplex;
    o.stmt_cache = 2; /* 5 texts: DEALLOCATE and Parse travel inside the batches */
    return pgtest_pool(rt, name, &o);
}

/* Batches from threads on a pool of `max` (multiplexed and mixed: batches,
 * single statements and spread batches side by side; else all `how`);
 * every statement checked, no connection broken, none left in use by an
 * exclusive batch. */
static void batches_from_threads(const char *name, int max, int multiplex, int mixed, int how)
{
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = pool_of(rt, name, max, multiplex);
    run_batch_jobs(p, multiplex ? 8 : 6, mixed, how);
    prt_pool_stats st;
    prt_pool_stats_get(p, &st);
    assert_true(st.total <= max);
    assert_int_equal(st.closed_broken, 0);
    if (!multiplex)
        assert_int_equal(st.in_use, 0); /* each batch gave its connection back */
    char err[PRT__ERRLEN];
    assert_int_equal(prt_pool_query_batch(p, 0, NULL, err, sizeof err), PRT_OK);
    assert_int_equal(prt_pool_query_batch(p, -1, NULL, err, sizeof err), PRT_EINVAL);
    assert_non_null(strstr(err, "invalid arguments"));
    prt_batch_item bad[2] = { { .sql = "select 1" }, { .sql = NULL } };
    assert_int_equal(prt_pool_query_batch(p, 2, bad, err, sizeof err), PRT_EINVAL);
    assert_non_null(strstr(err, "batch statement 2 of 2: invalid sql or parameters"));
    done(rt, p);
}

static void multiplexed_batches_and_singles_from_threads(void **state)
{
    (void)state;
    batches_from_threads("bx_c_mux", 2, 1, 1, AS_BATCH);
}

/* Only spread batches, 8 threads on 3 connections: each batch's chunks
 * share connections with other threads' chunks, and every caller leads
 * some connections while others lead the rest. */
static void spread_batches_from_threads(void **state)
{
    (void)state;
    batches_from_threads("bx_c_spread", 3, 1, 0, AS_SPREAD);
}

static void exclusive_batches_from_threads(void **state)
{
    (void)state;
    batches_from_threads("bx_c_excl", 3, 0, 0, AS_BATCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(errors_reach_their_callers_only),
        cmocka_unit_test(statement_cache_turns_over_in_the_pipeline),
        cmocka_unit_test(exclusive_acquire_is_served_under_load),
        cmocka_unit_test(eviction_returns_the_connections),
        cmocka_unit_test(multiplexed_batches_and_singles_from_threads),
        cmocka_unit_test(spread_batches_from_threads),
        cmocka_unit_test(exclusive_batches_from_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
