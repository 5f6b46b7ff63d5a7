/*
 * test_batch.c -- prt_pool_query_batch (src/batch.c, multiplex.c's batch
 * rounds) from C, on threads, against the throwaway server: every item
 * gets its own result or its own error, in both modes, while the
 * per-connection statement cache turns over inside the batch and single
 * statements (prt_pool_query) share the multiplexed connections.  Runs
 * under TSan in `make sanitize` and memcheck in `make valgrind`.
 */
#include <pthread.h>
#include "pgtest.h"

enum { BATCH = 40, ROUNDS = 15 };

static const char *const texts[] = {
    "select $1::int8 as v, 1 / $2::int as one",
    "select $1::int8 + 0 as v, 1 / $2::int as one",
    "select $1::int8 * 1 as v, 1 / $2::int as one",
    "select $1::int8 - 0 as v, 1 / $2::int as one",
    "select ($1::int8) as v, 1 / $2::int as one",
};

typedef struct {
    prt_pool *pool;
    int id, singles;         /* singles: prt_pool_query instead of batches */
    int bad;                 /* surprises: wrong value, wrong error, missing error */
    char first[256];
} job;

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

/* ROUNDS batches of BATCH statements (every 7th divides by zero, texts
 * rotating over all 5), or the same statements one by one. */
static void *run_batches(void *arg)
{
    job *j = arg;
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
        if (j->singles) {
            for (int k = 0; k < BATCH; k++) {
                prt_result *r = NULL;
                int rc = prt_pool_query(j->pool, items[k].sql, 2, params[k], 0, &r, err, sizeof err);
                check(j, k % 7 == 6, rc, err, r, v[k]);
                prt_result_free(r);
            }
            continue;
        }
        int rc = prt_pool_query_batch(j->pool, BATCH, items, err, sizeof err);
        if (rc != PRT_EQUERY || !strstr(err, "statement 7 of 40: "))
            note(j, err);
        for (int k = 0; k < BATCH; k++) {
            check(j, k % 7 == 6, items[k].rc, items[k].err, items[k].result, v[k]);
            prt_result_free(items[k].result);
        }
    }
    return NULL;
}

/* `threads` callers on p, the odd ones with singles when `mixed`. */
static void run_jobs(prt_pool *p, int threads, int mixed)
{
    pthread_t th[16];
    job jobs[16];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){ .pool = p, .id = i + 1, .singles = mixed && i % 2 == 1 };
        assert_int_equal(pthread_create(&th[i], NULL, run_batches, &jobs[i]), 0);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].bad)
            fail_msg("%d surprises, first: %s", jobs[i].bad, jobs[i].first);
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

static void multiplexed_batches_and_singles_from_threads(void **state)
{
    (void)state;
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = pool_of(rt, "bx_c_mux", 2, 1);
    run_jobs(p, 8, 1);
    prt_pool_stats st;
    prt_pool_stats_get(p, &st);
    assert_true(st.total <= 2);
    assert_int_equal(st.closed_broken, 0);
    prt_pool_unref(p);
    prt_runtime_free(rt);
}

static void exclusive_batches_from_threads(void **state)
{
    (void)state;
    prt_runtime *rt = pgtest_runtime(0);
    prt_pool *p = pool_of(rt, "bx_c_excl", 3, 0);
    run_jobs(p, 6, 0);
    prt_pool_stats st;
    prt_pool_stats_get(p, &st);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.in_use, 0); /* each batch gave its connection back */
    char err[PRT__ERRLEN];
    assert_int_equal(prt_pool_query_batch(p, 0, NULL, err, sizeof err), PRT_OK);
    assert_int_equal(prt_pool_query_batch(p, -1, NULL, err, sizeof err), PRT_EINVAL);
    prt_pool_unref(p);
    prt_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(multiplexed_batches_and_singles_from_threads),
        cmocka_unit_test(exclusive_batches_from_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
