/*
 * bench/driver.c -- a small load client on the poolrt C API.
 *
 * N worker threads, each looping  acquire -> one query -> release  for D
 * seconds (or a fixed number of iterations), measuring every cycle.  The
 * default query is pgbench's built-in `-S` script:
 *     SELECT abalance FROM pgbench_accounts WHERE aid = $1
 * with aid uniform in [1, 100000 * scale], like pgbench.
 *
 *   driver [-c CONNINFO] [-w WORKERS] [-m MAX] [-d SECONDS | -n ITERS]
 *          [-q prepared|unprepared|noop|direct] [-s SCALE] [-P POLICY.lua]
 *          [-t THINK_US] [-S SQL] [-X THREADS_HINT] [-C] [-A ACQ_TIMEOUT] [-W N] [-B BUDGET]
 *          [-H barging|fifo] [-a] [-x] [-b BATCH]
 *
 *   -q prepared    prt_query flags 0: prepared once per connection, reused
 *                  (the like-for-like limit is `pgbench -M prepared`)
 *   -q unprepared  PRT_Q_UNPREPARED: unnamed extended protocol (`-M extended`)
 *   -q noop        acquire + release only, no query (pool-only cycle cost)
 *   -q direct      control without poolrt: each thread owns one libpq
 *                  connection (PQprepare once, PQexecPrepared per cycle), so
 *                  the thread-per-worker model is measured without the pool
 *   -t THINK_US    sleep uniformly 0..2*THINK_US between cycles (light load)
 *   -S SQL         another statement (no parameters), e.g. "select pg_sleep(0.002)"
 *   -C             cold start: do not open connections before the clock starts
 *   -W N           open N connections before the clock starts (default: min(workers,
 *                  max); noop: max)
 *   -X N           prt_pool_opts.threads (what a size hook such as clamp.lua sees)
 *   -B N           the runtime joins a shared budget of N connections (what
 *                  resty.poolrt.init{ shared_max_connections = N } gives each nginx
 *                  worker) and caps itself at N: the budget checks' cost
 *   -H MODE        prt_pool_opts.handoff: "barging" (the default) or "fifo"
 *   -x             multiplex: prt_pool_opts.multiplex = 1 and each cycle is one
 *                  prt_pool_query (no acquire: statements of all workers are
 *                  pipelined over the pool's max connections, src/multiplex.c;
 *                  acq_* stay 0)
 *   -b N           each cycle is one prt_pool_query_batch of N statements
 *                  (with -x: queued at once on a multiplexed connection, the
 *                  worker leads its I/O; else one connection pipelined per
 *                  batch).  tps and ops count statements; latency is per batch
 *   -a             noop: time each acquire after all (two clock reads per
 *                  cycle, as bench/go/gobench.go pays too), for acq_* below
 *
 * Output: one line of key=value pairs on stdout (parsed by bench/run.sh):
 *   tps= ops= secs= p50_us= p99_us= errors= acq_p99_us= acq_p999_us= acq_max_us= conns= ...
 * Latency is the whole cycle (acquire + query + release), in microseconds
 * (not measured in noop mode unless -a: there two clock reads are a
 * noticeable part of the cycle).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>
#include "poolrt.h"

#define SELECT_SQL "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

enum { Q_PREPARED, Q_UNPREPARED, Q_NOOP, Q_DIRECT };

typedef struct {
    float *v;
    size_t n, cap;
} samples;

typedef struct {
    int index;
    pthread_t th;
    uint64_t ops, errors;
    samples lat, acq;
    char first_error[256];
    uint64_t rng;
} worker;

static struct {
    const char *conninfo, *policy, *sql, *handoff;
    int workers, max, mode, scale, think_us, threads_hint, cold, warm, budget, time_noop, multiplex, batch;
    double secs, acq_timeout;
    long iters;
} cfg = { .workers = 1, .max = 0, .mode = Q_PREPARED, .scale = 10, .secs = 5,
          .acq_timeout = 5.0, .iters = 0 };

static prt_pool *pool;
static atomic_int stop_flag;
static pthread_barrier_t start_line;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void push(samples *s, float x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        float *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv)
            return; /* drop the sample rather than the run */
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void think(worker *w)
{
    if (cfg.think_us <= 0)
        return;
    long us = (long)(xorshift(&w->rng) % (uint64_t)(2 * cfg.think_us + 1));
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

static void note_error(worker *w, const char *msg)
{
    w->errors++;
    if (!w->first_error[0])
        snprintf(w->first_error, sizeof w->first_error, "%.255s", msg);
}

/* -q direct: the same loop on a libpq connection of this thread's own. */
static void *direct_main(void *arg)
{
    worker *w = arg;
    char aid[32];
    const char *params[1] = { aid };
    long accounts = 100000L * cfg.scale;
    PGconn *pg = PQconnectdb(cfg.conninfo);
    int ok = PQstatus(pg) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQprepare(pg, "s", SELECT_SQL, 1, NULL);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (!ok)
        note_error(w, PQerrorMessage(pg));
    pthread_barrier_wait(&start_line);
    while (ok && !atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        double t0 = now_s();
        snprintf(aid, sizeof aid, "%ld", 1 + (long)(xorshift(&w->rng) % (uint64_t)accounts));
        PGresult *r = PQexecPrepared(pg, "s", 1, params, NULL, NULL, 0);
        int good = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        double t1 = now_s();
        if (!good) {
            note_error(w, PQerrorMessage(pg));
            continue;
        }
        if (atomic_load_explicit(&stop_flag, memory_order_relaxed))
            break;
        w->ops++;
        push(&w->lat, (float)((t1 - t0) * 1e6));
    }
    PQfinish(pg);
    return NULL;
}

/* One statement with a fresh random aid: on connection c, or with c NULL
 * through prt_pool_query (-x, no acquire).  Returns the PRT_* code; a
 * failure is noted. */
static int one_query(worker *w, prt_conn *c, const char *sql, int nparams, char *aid, int flags)
{
    char err[512];
    const char *params[1] = { aid };
    prt_result *r = NULL;
    snprintf(aid, 32, "%ld", 1 + (long)(xorshift(&w->rng) % (uint64_t)(100000L * cfg.scale)));
#ifdef PRT_HAS_MULTIPLEX
    int rc = c ? prt_query(c, sql, nparams, params, flags, &r, err, sizeof err)
               : prt_pool_query(pool, sql, nparams, params, flags, &r, err, sizeof err);
#else
    int rc = prt_query(c, sql, nparams, params, flags, &r, err, sizeof err);
#endif
    if (rc == PRT_OK)
        prt_result_free(r);
    else
        note_error(w, err);
    return rc;
}

/* -x and -b need PRT_HAS_MULTIPLEX: bench/before_after.sh also builds this
 * driver against the library before it (-q noop only). */
#ifdef PRT_HAS_MULTIPLEX
/* -b: one batch of cfg.batch statements with fresh random aids, through
 * prt_pool_query_batch.  Returns how many succeeded; failures are noted.
 * items, aids and params (cfg.batch each) are the worker's. */
static int one_batch(worker *w, prt_batch_item *items, char (*aids)[32], const char **params, const char *sql,
                     int nparams, int flags)
{
    char err[512];
    for (int i = 0; i < cfg.batch; i++) {
        snprintf(aids[i], 32, "%ld", 1 + (long)(xorshift(&w->rng) % (uint64_t)(100000L * cfg.scale)));
        params[i] = aids[i];
        items[i].sql = sql;
        items[i].nparams = nparams;
        items[i].params = &params[i];
        items[i].flags = flags;
    }
    int rc = prt_pool_query_batch(pool, cfg.batch, items, err, sizeof err);
    if (rc == PRT_EINVAL || rc == PRT_ENOMEM) {
        note_error(w, err);
        return 0;
    }
    int ok = 0;
    for (int i = 0; i < cfg.batch; i++) {
        if (items[i].rc == PRT_OK) {
            prt_result_free(items[i].result);
            ok++;
        } else {
            note_error(w, items[i].err);
        }
    }
    return ok;
}

/* -b: the worker loop for batches. */
static void *batch_main(void *arg)
{
    worker *w = arg;
    int flags = cfg.mode == Q_UNPREPARED ? PRT_Q_UNPREPARED : 0;
    const char *sql = cfg.sql ? cfg.sql : SELECT_SQL;
    int nparams = cfg.sql ? 0 : 1;
    prt_batch_item *items = calloc((size_t)cfg.batch, sizeof *items);
    char (*aids)[32] = calloc((size_t)cfg.batch, sizeof *aids);
    const char **params = calloc((size_t)cfg.batch, sizeof *params);
    pthread_barrier_wait(&start_line);
    while (items && aids && params && !atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        double t0 = now_s();
        int ok = one_batch(w, items, aids, params, sql, nparams, flags);
        double t1 = now_s();
        if (atomic_load_explicit(&stop_flag, memory_order_relaxed))
            break; /* finished after the clock stopped: not counted */
        w->ops += (uint64_t)ok;
        push(&w->lat, (float)((t1 - t0) * 1e6));
    }
    free(items);
    free(aids);
    free(params);
    return NULL;
}
#else
static void *batch_main(void *arg) { return arg; }
#endif

static void *worker_main(void *arg)
{
    worker *w = arg;
    char err[512], aid[32];
    int flags = cfg.mode == Q_UNPREPARED ? PRT_Q_UNPREPARED : 0;
    const char *sql = cfg.sql ? cfg.sql : SELECT_SQL;
    int nparams = cfg.sql ? 0 : 1;

    pthread_barrier_wait(&start_line); /* all workers start together */
    int timed = !cfg.iters && (cfg.mode != Q_NOOP || cfg.time_noop); /* noop: unless -a */
    for (long it = 0; cfg.iters ? it < cfg.iters : !atomic_load_explicit(&stop_flag, memory_order_relaxed); it++) {
        double t0 = timed ? now_s() : 0, t1 = t0;
        int rc;
        if (cfg.multiplex) {
            rc = one_query(w, NULL, sql, nparams, aid, flags); /* -x: holds no connection */
        } else {
            prt_conn *c;
            err[0] = 0;
            rc = prt_acquire(pool, cfg.acq_timeout, &c, err, sizeof err);
            t1 = timed ? now_s() : 0;
            if (rc != PRT_OK) {
                note_error(w, err[0] ? err : prt_strerror(rc));
                continue;
            }
            if (cfg.mode != Q_NOOP)
                rc = one_query(w, c, sql, nparams, aid, flags);
            prt_release(c, rc == PRT_EBROKEN);
        }
        double t2 = timed ? now_s() : 0;
        if (rc != PRT_OK)
            continue;
        if (!cfg.iters && atomic_load_explicit(&stop_flag, memory_order_relaxed))
            break; /* finished after the clock stopped: not counted */
        w->ops++;
        if (timed) {
            push(&w->lat, (float)((t2 - t0) * 1e6));
            if (!cfg.multiplex)
                push(&w->acq, (float)((t1 - t0) * 1e6));
        }
        think(w);
    }
    return NULL;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Merges every worker's samples of one kind and returns percentiles
 * (p50, p99, p99.9, max in q[0..3]). */
static void percentiles(worker *ws, int n, int acq, double q[4])
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += acq ? ws[i].acq.n : ws[i].lat.n;
    q[0] = q[1] = q[2] = q[3] = 0;
    if (!total)
        return;
    float *all = malloc(total * sizeof *all);
    if (!all)
        return;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        samples *s = acq ? &ws[i].acq : &ws[i].lat;
        memcpy(all + k, s->v, s->n * sizeof *all);
        k += s->n;
    }
    qsort(all, total, sizeof *all, cmp_float);
    q[0] = all[(size_t)(0.50 * (double)(total - 1))];
    q[1] = all[(size_t)(0.99 * (double)(total - 1))];
    q[2] = all[(size_t)(0.999 * (double)(total - 1))];
    q[3] = all[total - 1];
    free(all);
}

static void usage(void)
{
    fprintf(stderr, "usage: driver [-c CONNINFO] [-w WORKERS] [-m MAX] [-d SECONDS | -n ITERS]\n"
                    "              [-q prepared|unprepared|noop|direct] [-s SCALE] [-P POLICY.lua] [-t THINK_US]\n"
                    "              [-S SQL] [-X THREADS_HINT] [-C] [-A ACQUIRE_TIMEOUT] [-W WARM] [-B BUDGET]\n"
                    "              [-H barging|fifo] [-a] [-x] [-b BATCH]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int opt;
    cfg.conninfo = getenv("POOLRT_CONNINFO");
    while ((opt = getopt(argc, argv, "c:w:m:d:n:q:s:P:t:S:X:CA:W:B:H:ahxb:")) != -1) {
        switch (opt) {
        case 'c': cfg.conninfo = optarg; break;
        case 'w': cfg.workers = atoi(optarg); break;
        case 'm': cfg.max = atoi(optarg); break;
        case 'd': cfg.secs = atof(optarg); break;
        case 'n': cfg.iters = atol(optarg); break;
        case 'q':
            if (!strcmp(optarg, "prepared")) cfg.mode = Q_PREPARED;
            else if (!strcmp(optarg, "unprepared")) cfg.mode = Q_UNPREPARED;
            else if (!strcmp(optarg, "noop")) cfg.mode = Q_NOOP;
            else if (!strcmp(optarg, "direct")) cfg.mode = Q_DIRECT;
            else usage();
            break;
        case 's': cfg.scale = atoi(optarg); break;
        case 'P': cfg.policy = optarg; break;
        case 't': cfg.think_us = atoi(optarg); break;
        case 'S': cfg.sql = optarg; break;
        case 'X': cfg.threads_hint = atoi(optarg); break;
        case 'C': cfg.cold = 1; break;
        case 'W': cfg.warm = atoi(optarg); break;
        case 'A': cfg.acq_timeout = atof(optarg); break;
        case 'B': cfg.budget = atoi(optarg); break;
        case 'H': cfg.handoff = optarg; break;
        case 'a': cfg.time_noop = 1; break;
        case 'x': cfg.multiplex = 1; break;
        case 'b': cfg.batch = atoi(optarg); break;
        default: usage();
        }
    }
    if (cfg.workers < 1 || cfg.scale < 1 || cfg.batch < 0 || (cfg.batch > 0 && (cfg.iters || cfg.mode == Q_NOOP)) || (cfg.secs <= 0 && !cfg.iters) || !cfg.conninfo)
        usage();
    if (cfg.max <= 0)
        cfg.max = cfg.workers;

    char err[512] = "";
    prt_runtime_opts ro;
    prt_runtime_opts_default(&ro);
    ro.conninfo = cfg.conninfo;
    ro.policy = cfg.policy;
    ro.reap_interval = cfg.iters ? 0 : 1.0; /* -n (callgrind): no timer thread in the count */
    prt_budget *budget = NULL;
    if (cfg.budget > 0) {
        if (prt_budget_new(cfg.budget, 0, &budget, err, sizeof err)) {
            fprintf(stderr, "driver: %s\n", err);
            return 1;
        }
        ro.shared_budget = budget;
        ro.max_connections = cfg.budget;
    }
    prt_runtime *rt;
    if (prt_runtime_new(&ro, &rt, err, sizeof err)) {
        fprintf(stderr, "driver: %s\n", err);
        prt_budget_free(budget);
        return 1;
    }
    prt_pool_opts po;
    prt_pool_opts_default(&po);
    po.max = cfg.max;
    po.threads = cfg.threads_hint;
    po.acquire_timeout = cfg.acq_timeout;
    po.handoff = cfg.handoff;
#ifdef PRT_HAS_MULTIPLEX
    po.multiplex = cfg.multiplex;
#else
    if (cfg.multiplex || cfg.batch > 0) {
        fprintf(stderr, "driver: -x and -b need a poolrt with the multiplexer (PRT_HAS_MULTIPLEX)\n");
        return 2;
    }
#endif
    if (prt_pool_get(rt, "bench", &po, &pool, err, sizeof err)) {
        fprintf(stderr, "driver: %s\n", err);
        prt_runtime_free(rt);
        return 1;
    }

    /* Open the connections the workers will use before the clock starts,
     * as pgbench does (its TPS excludes the initial connection time). */
    prt_pool_stats st;
    prt_pool_stats_get(pool, &st);
    /* noop (pool-only) runs open every connection: "T threads on max connections" */
    int warm = cfg.cold || cfg.mode == Q_DIRECT ? 0 : cfg.mode == Q_NOOP || cfg.workers > st.max ? st.max : cfg.workers;
    if (cfg.warm > 0 && !cfg.cold)
        warm = cfg.warm < st.max ? cfg.warm : st.max;
    prt_conn **held = calloc((size_t)(warm ? warm : 1), sizeof *held);
    int nheld = 0;
    for (int i = 0; i < warm; i++) {
        if (prt_acquire(pool, 30.0, &held[nheld], err, sizeof err)) {
            fprintf(stderr, "driver: warm-up: %s\n", err);
            break;
        }
        nheld++;
    }
    for (int i = 0; i < nheld; i++)
        prt_release(held[i], 0);
    free(held);

    worker *ws = calloc((size_t)cfg.workers, sizeof *ws);
    if (!ws)
        return 1;
    int started = 0;
    pthread_barrier_init(&start_line, NULL, (unsigned)cfg.workers + 1);
    for (int i = 0; i < cfg.workers; i++) {
        ws[i].index = i;
        ws[i].rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1) ^ (uint64_t)time(NULL);
        if (pthread_create(&ws[i].th, NULL, cfg.mode == Q_DIRECT ? direct_main : cfg.batch > 0 ? batch_main : worker_main, &ws[i]) != 0) {
            fprintf(stderr, "driver: could not start worker %d: %s\n", i, strerror(errno));
            break;
        }
        started++;
    }
    if (started < cfg.workers) {
        fprintf(stderr, "driver: only %d of %d workers started\n", started, cfg.workers);
        return 1;
    }
    pthread_barrier_wait(&start_line);
    double t0 = now_s();
    if (!cfg.iters) {
        struct timespec ts = { (time_t)cfg.secs, (long)((cfg.secs - (time_t)cfg.secs) * 1e9) };
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
        atomic_store(&stop_flag, 1);
    }
    double t1 = now_s();
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].th, NULL);
    if (cfg.iters)
        t1 = now_s();

    uint64_t ops = 0, errors = 0;
    const char *first = "";
    for (int i = 0; i < started; i++) {
        ops += ws[i].ops;
        errors += ws[i].errors;
        if (!first[0] && ws[i].first_error[0])
            first = ws[i].first_error;
    }
    double lat[4], acq[4];
    percentiles(ws, started, 0, lat);
    percentiles(ws, started, 1, acq);
    prt_pool_stats_get(pool, &st);
    double secs = t1 - t0;
    printf("tps=%.1f ops=%llu secs=%.3f p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%llu "
           "acq_p50_us=%.1f acq_p99_us=%.1f acq_p999_us=%.1f acq_max_us=%.1f conns=%d max=%d created=%llu "
           "workers=%d first_error=\"%s\"\n",
           ops / secs, (unsigned long long)ops, secs, lat[0], lat[1], lat[3], (unsigned long long)errors,
           acq[0], acq[1], acq[2], acq[3], st.total, st.max, (unsigned long long)st.connections_created_total,
           started, first);
    fflush(stdout);
    for (int i = 0; i < started; i++) {
        free(ws[i].lat.v);
        free(ws[i].acq.v);
    }
    free(ws);
    prt_runtime_free(rt);
    prt_budget_free(budget);
    return 0;
}
