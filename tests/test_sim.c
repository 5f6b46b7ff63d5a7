/*
 * test_sim.c -- the simulator (src/sim/) drives the real pool core on a
 * virtual clock: a seed gives one history, throughput and queueing behave
 * as queueing theory says they must, the pick policy shows in the
 * per-endpoint split, outages break connections, the reap cycle refills
 * and reaps at virtual times, admission evicts and pools come back, the
 * concurrency hook limits background jobs, Lua hooks are called, and a
 * cluster's promotion moves writes while a lagging standby serves stale reads.
 * No database is needed; wall time is never asserted.
 */
#include "pgtest.h"

static const prt_sim_dist zero = { PRT_SIM_CONST, 0, 0 };

static prt_sim *sim_new(const char *policy, uint64_t seed, int max_pools)
{
    prt_runtime_opts ro;
    prt_runtime_opts_default(&ro);
    ro.max_pools = max_pools;
    prt_sim *s = NULL;
    char err[PRT__ERRLEN];
    if (prt_sim_new(&ro, policy, seed, &s, err, sizeof err) != PRT_OK)
        fail_msg("%s", err);
    return s;
}

/* A foreground source on pool `name`: Poisson at `rate` from 0, constant
 * holds, no statements. */
static int source(prt_sim *s, const char *name, const prt_pool_opts *o, double rate, double hold)
{
    int src = prt_sim_source(s, name, o, 8, 0);
    assert_true(src >= 0);
    if (rate > 0)
        assert_int_equal(prt_sim_rate(s, src, 0, rate), PRT_OK);
    prt_sim_dist h = { PRT_SIM_CONST, hold, 0 };
    assert_int_equal(prt_sim_work(s, src, h, 0), PRT_OK);
    return src;
}

static void run(prt_sim *s, double duration, prt_sim_result *r)
{
    char err[PRT__ERRLEN];
    if (prt_sim_run(s, duration, r, err, sizeof err) != PRT_OK)
        fail_msg("%s", err);
}

/* One workload with a bit of everything random: lognormal holds and
 * queries, two endpoints, a burst. */
static void mixed(uint64_t seed, prt_sim_result *r, double *series, int n)
{
    prt_sim *s = sim_new(NULL, seed, 0);
    prt_sim_dist conn = { PRT_SIM_UNIFORM, 0.002, 0.004 }, q = { PRT_SIM_EXP, 0.001, 0 };
    prt_sim_endpoint(s, "a", conn, q);
    prt_sim_endpoint(s, "b", conn, q);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = 4;
    o.acquire_timeout = 0.05;
    int src = source(s, "app", &o, 800, 0);
    prt_sim_dist hold = { PRT_SIM_LOGNORMAL, 0.002, 0.02 };
    assert_int_equal(prt_sim_work(s, src, hold, 2), PRT_OK);
    assert_int_equal(prt_sim_burst(s, src, 5, 100), PRT_OK);
    run(s, 20, r);
    assert_int_equal(prt_sim_series(s, 1, series, NULL, NULL, n), n);
    prt_sim_free(s);
}

static void a_seed_gives_one_history(void **state)
{
    (void)state;
    prt_sim_result a, b, c;
    double sa[20], sb[20], sc[20];
    mixed(42, &a, sa, 20);
    mixed(42, &b, sb, 20);
    mixed(43, &c, sc, 20);
    a.wall_seconds = b.wall_seconds = c.wall_seconds = 0;
    assert_true(a.acquires > 10000 && a.timeouts > 0); /* the burst overflows max = 4 */
    assert_memory_equal(&a, &b, sizeof a);
    assert_memory_equal(sa, sb, sizeof sa);
    assert_memory_not_equal(&a, &c, sizeof a);
}

/* Little's law's first half: with no waiting to speak of, what arrives is
 * served, at rate x duration, and the time-averaged connections in use is
 * rate x hold. */
static void acquires_follow_the_arrival_rate(void **state)
{
    (void)state;
    prt_sim *s = sim_new(NULL, 1, 0);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    source(s, "app", &o, 500, 0.004); /* 2 in use on average, max 10 */
    prt_sim_result r;
    run(s, 60, &r);
    assert_true(r.acquires > 30000 * 0.97 && r.acquires < 30000 * 1.03);
    assert_int_equal(r.timeouts, 0);
    assert_int_equal(r.errors, 0);
    double in_use[1];
    assert_int_equal(prt_sim_series(s, 60, in_use, NULL, NULL, 1), 1);
    assert_true(in_use[0] > 1.8 && in_use[0] < 2.2);
    static double open[4001]; /* every step at the finest resolution (60 s / 4000) has its sample */
    assert_int_equal(prt_sim_series(s, 0.015, NULL, open, NULL, 4001), 4000);
    for (int i = 100; i < 4000; i++)
        assert_true(open[i] >= 1);
    assert_true(r.opened <= 10 && r.peak_connections <= 10);
    prt_sim_free(s);
}

/* One connection (M/D/1): at utilisation 0.2 about a fifth of the
 * acquires wait, none times out; at utilisation 2 the queue grows until
 * callers time out, and the connection serves 1/hold acquires a second. */
static void one_connection_queues_as_predicted(void **state)
{
    (void)state;
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = 1;
    o.acquire_timeout = 0.5;
    prt_sim *s = sim_new(NULL, 7, 0);
    source(s, "light", &o, 10, 0.02);
    prt_sim_result r;
    run(s, 120, &r);
    assert_int_equal(r.timeouts, 0);
    assert_true(r.wait_p50_ms < 0.01);   /* most find the connection free */
    assert_true(r.wait_p99_ms > 5 && r.wait_p99_ms < 60); /* the rest wait part of a hold or two */
    prt_sim_free(s);

    s = sim_new(NULL, 7, 0);
    source(s, "heavy", &o, 100, 0.02);
    run(s, 60, &r);
    assert_true(r.timeouts > 2000); /* ~100/s arrive, ~50/s are served */
    /* plus what the queue left at the end gets in its last 0.5 s */
    assert_true(r.acquires > 60 * 50 * 0.95 && r.acquires <= 60.5 * 50 + 1);
    assert_true(r.wait_p99_ms > 400 && r.wait_p99_ms <= 520); /* the timeout */
    prt_sim_free(s);
}

/* golang/go#68539: at light load (one caller at a time, every 100 ms)
 * mru keeps reusing one connection, so one endpoint gets all the work; lru
 * rotates over every connection (min_idle keeps four open, two per
 * endpoint) and splits it evenly. */
static double split(const char *policy)
{
    prt_sim *s = sim_new(policy, 3, 0);
    prt_sim_endpoint(s, "primary", zero, zero);
    prt_sim_endpoint(s, "replica", zero, zero);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.min_idle = 4;
    int src = source(s, "app", &o, 0, 0);
    for (int i = 0; i < 600; i++)
        assert_int_equal(prt_sim_replay(s, src, 0.05 + 0.1 * i, 0.005), PRT_OK);
    prt_sim_result r;
    run(s, 60, &r);
    assert_int_equal(r.acquires, 600);
    assert_int_equal(r.nendpoints, 2);
    assert_true(r.endpoint_acquires[0] + r.endpoint_acquires[1] == r.acquires);
    prt_sim_free(s);
    return r.endpoint_max_min;
}

static void lru_spreads_over_endpoints_and_mru_does_not(void **state)
{
    (void)state;
    double lru = split("policies/lru.lua"), mru = split("policies/mru.lua");
    assert_true(lru > 0.9 && lru < 1.15);
    assert_true(mru > 20); /* 590 to 10: the other got only the acquires before the refill */
}

/* An outage: connections opened before it break (the query on a held one
 * fails, an idle one fails its check), connects fail while it lasts, and
 * the pool recovers after. */
static void an_outage_breaks_connections(void **state)
{
    (void)state;
    prt_sim *s = sim_new(NULL, 5, 0);
    prt_sim_endpoint(s, "db", zero, zero);
    assert_int_equal(prt_sim_outage(s, 0, 10, 2), PRT_OK);
    assert_int_equal(prt_sim_outage(s, 3, 10, 2), PRT_OK); /* no such endpoint: the run refuses */
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    source(s, "app", &o, 200, 0.01);
    prt_sim_result r;
    char err[PRT__ERRLEN];
    assert_int_equal(prt_sim_run(s, 30, &r, err, sizeof err), PRT_EINVAL);
    prt_sim_free(s);

    s = sim_new(NULL, 5, 0);
    prt_sim_endpoint(s, "db", zero, zero);
    assert_int_equal(prt_sim_outage(s, 0, 10, 2), PRT_OK);
    source(s, "app", &o, 200, 0.01);
    run(s, 30, &r);
    assert_true(r.closed_by[2] >= 1); /* broken */
    assert_true(r.errors > 100);       /* ~2 s of 200/s, less the backoff's */
    assert_true(r.acquires > 200 * 27);
    double open[30];
    assert_int_equal(prt_sim_series(s, 1, NULL, open, NULL, 30), 30);
    assert_true(open[11] < 0.5); /* nothing stays open during the outage */
    assert_true(open[20] >= 1);   /* and connections come back after it */
    prt_sim_free(s);
}

/* The reap cycle at virtual ticks: min_idle is refilled at the first tick
 * after the pool appears; connections idle past idle_timeout close at
 * the first tick after that, down to min_idle. */
static void reap_ticks_refill_and_reap(void **state)
{
    (void)state;
    prt_sim *s = sim_new(NULL, 9, 0);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.min_idle = 3;
    o.idle_timeout = 5;
    int src = source(s, "app", &o, 0, 0.1);
    assert_int_equal(prt_sim_replay(s, src, 0.2, 0.05), PRT_OK); /* creates the pool */
    assert_int_equal(prt_sim_burst(s, src, 3.5, 10), PRT_OK);    /* 10 open at once */
    prt_sim_result r;
    run(s, 15, &r);
    double open[15];
    assert_int_equal(prt_sim_series(s, 1, NULL, open, NULL, 15), 15);
    assert_true(open[0] > 0.5 && open[0] < 1.5);   /* the replay's one */
    assert_true(open[2] == 3);                      /* refilled at t = 1 */
    assert_true(open[5] == 10);                     /* the burst's */
    assert_true(open[12] == 3);                     /* idle ones reaped at t = 9 or 10 */
    assert_int_equal(r.closed_by[0], 7);
    assert_int_equal(r.opened, 10);
    prt_sim_free(s);
}

/* max_pools = 2 and four busy pools: admission evicts the least recently
 * used, and the next acquire of an evicted pool's name re-creates it. */
static void admission_evicts_and_pools_come_back(void **state)
{
    (void)state;
    prt_sim *s = sim_new(NULL, 11, 2);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    const char *names[] = { "t1", "t2", "t3", "t4" };
    for (int i = 0; i < 4; i++)
        source(s, names[i], &o, 5, 0.001);
    prt_sim_result r;
    run(s, 30, &r);
    assert_true(r.pools_evicted > 10);
    assert_true(r.pools_recreated > 10);
    assert_true(r.closed_by[3] > 0); /* evicted pools' idle connections */
    assert_int_equal(prt_runtime_pool_count(prt_sim_runtime(s)), 2);
    prt_sim_free(s);
}

/* Background jobs wait for the concurrency limit (coder's default rule:
 * min(5, max(1, max / 2)) = 2 for max 4), so no more than 2 hold
 * connections at once however many queue. */
static void background_jobs_respect_concurrency(void **state)
{
    (void)state;
    prt_sim *s = sim_new(NULL, 13, 0);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = 4;
    int src = prt_sim_source(s, "jobs", &o, 4, 1);
    prt_sim_dist h = { PRT_SIM_CONST, 0.05, 0 };
    assert_int_equal(prt_sim_work(s, src, h, 0), PRT_OK);
    assert_int_equal(prt_sim_burst(s, src, 1, 50), PRT_OK);
    prt_sim_result r;
    run(s, 10, &r);
    assert_int_equal(r.background_jobs, 50);
    assert_int_equal(r.background_peak, 2);
    assert_int_equal(r.acquires, 50);
    assert_true(r.virtual_seconds >= 10);
    assert_true(r.opened == 2);
    prt_sim_free(s);

    /* 20,000 jobs queued while the only server is down fail one after
     * another (connect backoff: at once), none left behind */
    s = sim_new(NULL, 13, 0);
    prt_sim_endpoint(s, "db", zero, zero);
    assert_int_equal(prt_sim_outage(s, 0, 0.5, 5), PRT_OK);
    src = prt_sim_source(s, "jobs", &o, 4, 1);
    assert_int_equal(prt_sim_burst(s, src, 1, 20000), PRT_OK);
    run(s, 10, &r);
    assert_int_equal(r.background_jobs, 20000);
    assert_int_equal(r.acquires + r.errors, 20000);
    assert_true(r.errors > 19000);
    prt_sim_free(s);
}

/* A foreground and a background source on one pool name share the pool:
 * its connections and re-creations count once. */
static void sources_on_one_pool_share_it(void **state)
{
    (void)state;
    prt_sim *s = sim_new(NULL, 19, 0);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = 4;
    source(s, "app", &o, 100, 0.001);
    int bg = prt_sim_source(s, "app", &o, 4, 1);
    prt_sim_dist h = { PRT_SIM_CONST, 0.2, 0 };
    assert_int_equal(prt_sim_work(s, bg, h, 0), PRT_OK);
    assert_int_equal(prt_sim_burst(s, bg, 1, 20), PRT_OK);
    prt_sim_result r;
    run(s, 5, &r);
    assert_int_equal(r.background_jobs, 20);
    assert_int_equal(r.peak_connections, 4);
    assert_int_equal(r.opened, 4);                /* not once per source */
    assert_int_equal(prt_runtime_pool_count(prt_sim_runtime(s)), 1);
    prt_sim_free(s);
}

/* A Lua pick function runs for real (hook_calls), on the virtual clock. */
static void a_lua_pick_policy_is_called(void **state)
{
    (void)state;
    prt_sim *s = sim_new("bench/pick_lua.lua", 17, 0);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.min_idle = 4;
    source(s, "app", &o, 200, 0.002);
    prt_sim_result r;
    run(s, 10, &r);
    assert_true(r.hook_calls > 1000);
    assert_int_equal(r.hook_errors, 0);
    prt_policy_stats ps;
    prt_runtime_policy_stats(prt_sim_runtime(s), &ps);
    assert_true(ps.calls[0] > 1000); /* pick is hook 0 */
    prt_sim_free(s);
    assert_true(prt_now() > 1000 || prt_now() > 0); /* the thread's clock is real again */
}

/* A primary p and two standbys a and b (b lagging 3 s from t = 5), a
 * promotion of a at t = 11 (between two samples); 100 writes/s on pool "app" (read-write) and
 * 300 reads/s on "app.read" (prefer-standby), run for `duration`. */
static prt_sim *cluster(double duration, prt_sim_result *r)
{
    prt_sim *s = sim_new(NULL, 3, 0);
    prt_sim_dist conn = { PRT_SIM_CONST, 0.003, 0 }, q = { PRT_SIM_CONST, 0.001, 0 };
    prt_sim_dist lag0 = { PRT_SIM_CONST, 0, 0 }, lag3 = { PRT_SIM_CONST, 3, 0 };
    prt_sim_endpoint(s, "p", conn, q);
    int a = prt_sim_endpoint(s, "a", conn, q), b = prt_sim_endpoint(s, "b", conn, q);
    assert_int_equal(prt_sim_role(s, a, PRT_ROLE_STANDBY), PRT_OK);
    assert_int_equal(prt_sim_role(s, b, PRT_ROLE_STANDBY), PRT_OK);
    assert_int_equal(prt_sim_role(s, b, 7), PRT_EINVAL);
    assert_int_equal(prt_sim_lag(s, b, 0, lag0), PRT_OK);
    assert_int_equal(prt_sim_lag(s, b, 5, lag3), PRT_OK);
    assert_int_equal(prt_sim_promote(s, a, 11), PRT_OK);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = 4;
    o.acquire_timeout = 1;
    int w = source(s, "app", &o, 100, 0.005), rd = source(s, "app.read", &o, 300, 0.005);
    assert_int_equal(prt_sim_attrs(s, w, "no-such-thing"), PRT_EINVAL);
    assert_int_equal(prt_sim_attrs(s, w, "read-write"), PRT_OK);
    assert_int_equal(prt_sim_attrs(s, rd, "prefer-standby"), PRT_OK);
    run(s, duration, r);
    return s;
}

/* Writes go to the primary and after the promotion to the new one; the
 * old primary's connections break and its refusal teaches the runtime
 * its new role; reads land on standbys, some on the lagging one (no
 * max_lag: stale); the facts reach the runtime's endpoint table. */
static void a_promotion_moves_writes_and_lag_makes_stale_reads(void **state)
{
    (void)state;
    enum { P, A, B };
    prt_sim_result before, after;
    prt_sim_free(cluster(11, &before));
    prt_sim *s = cluster(20, &after);
    assert_true(before.writes > 1000 && before.endpoint_writes[P] == before.writes);
    assert_true(after.endpoint_writes[P] - before.endpoint_writes[P] < 5);
    assert_true(after.endpoint_writes[A] > 800);
    assert_int_equal(after.endpoint_writes[B], 0);
    assert_true(after.role_refusals >= 1);       /* the old primary said it is a standby now */
    assert_true(after.closed_by[2] >= 1);        /* its connections broke */
    assert_true(after.reads > 5000);
    assert_true(after.stale_reads > 100 && after.stale_reads < after.reads); /* b's, from t = 5 */
    prt_endpoint_stats es[4];
    assert_int_equal(prt_runtime_endpoints(prt_sim_runtime(s), es, 4), 3);
    assert_int_equal(es[P].role, PRT_ROLE_STANDBY);
    assert_int_equal(es[A].role, PRT_ROLE_PRIMARY);
    assert_true(es[B].lag_seconds > 2.9 && es[A].lag_seconds == 0);
    prt_sim_free(s);
}

int main(void)
{
    prt_log_set_level(PRT_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_seed_gives_one_history),
        cmocka_unit_test(acquires_follow_the_arrival_rate),
        cmocka_unit_test(one_connection_queues_as_predicted),
        cmocka_unit_test(lru_spreads_over_endpoints_and_mru_does_not),
        cmocka_unit_test(an_outage_breaks_connections),
        cmocka_unit_test(reap_ticks_refill_and_reap),
        cmocka_unit_test(admission_evicts_and_pools_come_back),
        cmocka_unit_test(background_jobs_respect_concurrency),
        cmocka_unit_test(sources_on_one_pool_share_it),
        cmocka_unit_test(a_lua_pick_policy_is_called),
        cmocka_unit_test(a_promotion_moves_writes_and_lag_makes_stale_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
