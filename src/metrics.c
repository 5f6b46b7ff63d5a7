/*
 * metrics.c -- the runtime's statistics as Prometheus text exposition
 * (version 0.0.4), for rt:metrics(), the host's --metrics endpoint and
 * OpenResty's /metrics location alike.
 *
 * Names follow PgBouncer's SHOW POOLS where the meaning matches
 * (cl_active, cl_waiting, sv_active, sv_idle, maxwait), prefixed poolrt_,
 * with a pool="name" label, and Prometheus' naming rules where those decide
 * (`promtool check metrics` accepts the output; spec/metrics_spec.lua runs
 * it): counters end in _total and nothing else does, a time says _seconds.
 * Everything is read through the same snapshot functions as rt:stats(), so
 * the two never disagree.
 *
 * Text is written family by family (HELP, TYPE, then every sample), as the
 * format requires; with several runtimes in one exposition (the host's
 * --metrics) each family lists every runtime's samples, told apart by a
 * runtime="<id>" label.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct buf {
    char *s;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = b->oom ? 0 : vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (b->oom || n < 0)
            return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

/* Label values escape backslash, quote and newline. */
static void label(char *out, size_t len, const char *name)
{
    size_t j = 0;
    for (; *name && j + 2 < len; name++) {
        if (*name == '\\' || *name == '"' || *name == '\n')
            out[j++] = '\\';
        out[j++] = *name == '\n' ? 'n' : *name;
    }
    out[j] = '\0';
}

typedef struct family {
    const char *name, *type, *help;
} family;

/* A family's HELP and TYPE lines, written once before all its samples. */
static void put_family(buf *b, const family *f)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
}

/* One runtime's numbers, read once per exposition so that every family
 * shows the same moment.  `pools` holds references (prt__registry_release). */
enum { SNAP_ENDPOINTS = 64 };
typedef struct snap {
    prt_pool **pools;
    prt_pool_stats *st;
    int n;
    prt_policy_stats ps;
    prt_runtime_stats rs;
    prt_budget_stats bs;
    int has_budget;          /* the runtime is a member of a shared budget (bs) */
    prt_endpoint_stats eps[SNAP_ENDPOINTS]; /* the servers of pools over several hosts */
    int neps;
    char rt[48]; /* runtime="<id>" when several runtimes share the text, else "" */
} snap;

/* Writes a sample's name and label set, ready for its value: `name{labels,
 * runtime="id"} `, without braces when there is no label at all. */
static void series(buf *b, const char *name, const char *labels, const snap *s)
{
    if (*labels || *s->rt)
        put(b, "%s{%s%s%s} ", name, labels, *labels && *s->rt ? "," : "", s->rt);
    else
        put(b, "%s ", name);
}

static const family per_pool[] = {
    { "poolrt_cl_active", "gauge", "Callers holding a connection (PgBouncer cl_active)." },
    { "poolrt_cl_waiting", "gauge", "Callers waiting for a connection (PgBouncer cl_waiting)." },
    { "poolrt_sv_active", "gauge", "Server connections in use (PgBouncer sv_active)." },
    { "poolrt_sv_idle", "gauge", "Server connections idle in the pool (PgBouncer sv_idle)." },
    { "poolrt_maxwait_seconds", "gauge", "How long the oldest waiter has waited (PgBouncer maxwait)." },
    { "poolrt_pool_max", "gauge", "The pool's live maximum (after the size policy)." },
    { "poolrt_pool_connections", "gauge", "Server connections of the pool, open or opening." },
    { "poolrt_acquire_total", "counter", "Connections handed out." },
    { "poolrt_acquire_timeouts_total", "counter", "Acquires that timed out or were refused by overflow fail." },
    { "poolrt_connections_created_total", "counter", "Server connections opened." },
    { "poolrt_connect_errors_total", "counter", "Failed connection attempts." },
    { "poolrt_connections_grown_total", "counter", "Connections opened over max by overflow grow." },
    { "poolrt_connect_backoff_total", "counter", "Acquires refused at once while connects back off." },
    { "poolrt_leaks_total", "counter", "Connections held longer than leak_threshold." },
    { "poolrt_multiplex_connections", "gauge", "Connections the multiplexer holds (multiplex = true)." },
    { "poolrt_multiplex_in_flight", "gauge", "Multiplexed statements queued or sent, not answered yet." },
    { "poolrt_multiplex_statements_total", "counter", "Multiplexed statements answered, with a result or an error." },
    { "poolrt_multiplex_rerouted_total", "counter", "Multiplexed statements routed to another connection again." },
    { "poolrt_multiplex_lost_total", "counter", "Multiplexed statements failed in flight on a connection that broke." },
};

static double pool_value(const prt_pool_stats *s, int i)
{
    switch (i) {
    case 0: case 2: return s->in_use;
    case 1: return s->waiting;
    case 3: return s->idle;
    case 4: return s->maxwait;
    case 5: return s->max;
    case 6: return s->total;
    case 7: return (double)s->acquire_total;
    case 8: return (double)s->acquire_timeouts_total;
    case 9: return (double)s->connections_created_total;
    case 10: return (double)s->connect_errors_total;
    case 11: return (double)s->grown_total;
    case 12: return (double)s->connect_backoff_total;
    case 13: return (double)s->leaks_total;
    case 14: return s->mux_connections;
    case 15: return s->mux_in_flight;
    case 16: return (double)s->mux_statements_total;
    case 17: return (double)s->mux_rerouted_total;
    default: return (double)s->mux_lost_total;
    }
}

/* pool="<escaped name>" into out. */
static void pool_label(char *out, size_t len, const prt_pool *p)
{
    char esc[256];
    label(esc, sizeof esc, p->name);
    snprintf(out, len, "pool=\"%s\"", esc);
}

/* One pool's samples of poolrt_connections_closed_total, one per reason;
 * `lab` is the pool's label. */
static void pool_closed(buf *b, const snap *s, int i, const char *lab)
{
    uint64_t v[PRT_CLOSE_NREASONS];
    prt__closed_by(&s->st[i], v);
    char labels[360];
    for (int r = 0; r < PRT_CLOSE_NREASONS; r++) {
        snprintf(labels, sizeof labels, "%s,reason=\"%s\"", lab, prt_close_reason_name(r));
        series(b, "poolrt_connections_closed_total", labels, s);
        put(b, "%llu\n", (unsigned long long)v[r]);
    }
}

/* One pool's acquire-wait histogram: cumulative buckets over
 * prt__wait_bounds, then sum and count. */
static void pool_wait(buf *b, const snap *s, int i, const char *lab)
{
    const prt_pool_stats *st = &s->st[i];
    char labels[360];
    uint64_t cum = 0;
    for (int j = 0; j < PRT_WAIT_BUCKETS; j++) {
        cum += st->acquire_wait_buckets[j];
        if (j == PRT_WAIT_BUCKETS - 1)
            snprintf(labels, sizeof labels, "%s,le=\"+Inf\"", lab);
        else
            snprintf(labels, sizeof labels, "%s,le=\"%g\"", lab, prt__wait_bounds[j]);
        series(b, "poolrt_acquire_wait_seconds_bucket", labels, s);
        put(b, "%llu\n", (unsigned long long)cum);
    }
    series(b, "poolrt_acquire_wait_seconds_sum", lab, s);
    put(b, "%.6f\n", (double)st->acquire_wait_us_total / 1e6);
    series(b, "poolrt_acquire_wait_seconds_count", lab, s);
    put(b, "%llu\n", (unsigned long long)cum);
}

/* Every per-pool family in turn: the per_pool table, then closed
 * connections by reason, then the wait histogram, each listing the pools of
 * every runtime in s[0..ns). */
static void pool_series(buf *b, const snap *s, int ns)
{
    static const family closed = { "poolrt_connections_closed_total", "counter",
                                   "Server connections closed, by reason." };
    static const family wait = { "poolrt_acquire_wait_seconds", "histogram",
                                 "Time acquires waited for a connection." };
    const int nplain = (int)(sizeof per_pool / sizeof per_pool[0]);
    char lab[320];
    for (int g = 0; g < nplain + 2; g++) {
        put_family(b, g < nplain ? &per_pool[g] : g == nplain ? &closed : &wait);
        for (int k = 0; k < ns; k++)
            for (int i = 0; i < s[k].n; i++) {
                pool_label(lab, sizeof lab, s[k].pools[i]);
                if (g == nplain) {
                    pool_closed(b, &s[k], i, lab);
                } else if (g > nplain) {
                    pool_wait(b, &s[k], i, lab);
                } else {
                    series(b, per_pool[g].name, lab, &s[k]);
                    put(b, "%.17g\n", pool_value(&s[k].st[i], g));
                }
            }
    }
}

/* Runtime-wide families: `key` names the label that tells a family's
 * series apart (NULL: one series per runtime), values from rt_value. */
typedef struct rt_family {
    family f;
    const char *key;
    int nvals;
} rt_family;

enum { RT_CALLS, RT_ERRORS, RT_RELOADS, RT_GENERATION, RT_POOLS, RT_CONNS, RT_OVER_CAP, RT_EVICTED,
       RT_BUDGET, RT_BUDGET_WAITING, RT_SAMPLED, RT_SAMPLES, RT_SERVER_FULL, RT_SERVER_MAX, RT_SERVER_BACKENDS,
       RT_FLEET_MEMBERS, RT_NFAMILIES };

static const rt_family per_runtime[RT_NFAMILIES] = {
    [RT_CALLS] = { { "poolrt_policy_calls_total", "counter", "Policy hook calls." }, "hook", PRT__NHOOKS },
    [RT_ERRORS] = { { "poolrt_policy_errors_total", "counter",
                      "Policy hook calls that failed and used the built-in default." }, "hook", PRT__NHOOKS },
    [RT_RELOADS] = { { "poolrt_policy_reloads_total", "counter", "Policy reloads." }, "result", 2 },
    [RT_GENERATION] = { { "poolrt_policy_generation", "gauge", "The live policy's generation." }, NULL, 1 },
    [RT_POOLS] = { { "poolrt_pools", "gauge", "Live pools." }, NULL, 1 },
    [RT_CONNS] = { { "poolrt_connections", "gauge", "Server connections open across pools." }, NULL, 1 },
    [RT_OVER_CAP] = { { "poolrt_pools_over_cap_total", "counter", "Pools admitted over max_pools." }, NULL, 1 },
    [RT_EVICTED] = { { "poolrt_pools_evicted_total", "counter", "Whole pools evicted, by reason." },
                     "reason", PRT_EVICT_NREASONS },
    /* The connection budget and the last server sample (fleet.c). */
    [RT_BUDGET] = { { "poolrt_budget", "gauge", "Connections the runtime may hold now (0: no limit)." }, NULL, 1 },
    [RT_BUDGET_WAITING] = { { "poolrt_budget_waiting", "gauge", "Callers waiting for the budget." }, NULL, 1 },
    [RT_SAMPLED] = { { "poolrt_server_sampled_timestamp_seconds", "gauge",
                       "Unix time of the last server sample (0: none)." }, NULL, 1 },
    [RT_SAMPLES] = { { "poolrt_server_samples_total", "counter", "Server samples, by result." }, "result", 2 },
    [RT_SERVER_FULL] = { { "poolrt_server_full_total", "counter",
                           "Connects refused as too many clients that waited for the budget." }, NULL, 1 },
    [RT_SERVER_MAX] = { { "poolrt_server_max_connections", "gauge",
                          "The server's max_connections, last sampled." }, NULL, 1 },
    [RT_SERVER_BACKENDS] = { { "poolrt_server_backends", "gauge",
                               "Client backends on the server, last sampled: all, the fleet's, this process's." },
                             "of", 3 },
    [RT_FLEET_MEMBERS] = { { "poolrt_fleet_members", "gauge", "Fleet members seen in the last sample." }, NULL, 1 },
};

/* The i-th series of family f: its label value (NULL when unlabelled) and
 * its value. */
static uint64_t rt_value(const snap *s, int f, int i, const char **val)
{
    static const char *const results[] = { "ok", "failed" };
    static const char *const backends[] = { "server", "fleet", "process" };
    const prt_runtime_stats *r = &s->rs;
    *val = NULL;
    switch (f) {
    case RT_CALLS: *val = prt_policy_hook_name(i); return s->ps.calls[i];
    case RT_ERRORS: *val = prt_policy_hook_name(i); return s->ps.errors[i];
    case RT_RELOADS: *val = results[i]; return i ? s->ps.reloads_failed : s->ps.reloads_ok;
    case RT_GENERATION: return s->ps.generation;
    case RT_POOLS: return (uint64_t)s->rs.pools;
    case RT_CONNS: return (uint64_t)s->rs.connections;
    case RT_OVER_CAP: return s->rs.pools_over_cap_total;
    case RT_BUDGET: return (uint64_t)r->budget;
    case RT_BUDGET_WAITING: return (uint64_t)r->budget_waiting;
    case RT_SAMPLED: return (uint64_t)r->sampled_unix;
    case RT_SAMPLES: *val = results[i]; return i ? r->sample_errors_total : r->samples_total;
    case RT_SERVER_FULL: return r->server_full_total;
    case RT_SERVER_MAX: return (uint64_t)r->server_max_connections;
    case RT_SERVER_BACKENDS:
        *val = backends[i];
        return (uint64_t)(i == 0 ? r->server_backends : i == 1 ? r->fleet_backends : r->own_backends);
    case RT_FLEET_MEMBERS: return (uint64_t)r->fleet_members;
    default: *val = prt_evict_reason_name(i); return s->rs.pools_evicted_total[i];
    }
}

/* Every runtime-wide family in turn, each listing every runtime in s[0..ns). */
static void runtime_series(buf *b, const snap *s, int ns)
{
    char lab[64];
    for (int f = 0; f < RT_NFAMILIES; f++) {
        const rt_family *rf = &per_runtime[f];
        put_family(b, &rf->f);
        for (int k = 0; k < ns; k++)
            for (int i = 0; i < rf->nvals; i++) {
                const char *val;
                uint64_t v = rt_value(&s[k], f, i, &val);
                if (rf->key)
                    snprintf(lab, sizeof lab, "%s=\"%s\"", rf->key, val);
                else
                    lab[0] = '\0';
                series(b, rf->f.name, lab, &s[k]);
                put(b, "%llu\n", (unsigned long long)v);
            }
    }
}

/* A shared budget's families (shared_budget.c), for the runtimes that are
 * members of one; none when no runtime is.  The first three are the whole
 * budget's (every member process shows the same numbers). */
static void budget_series(buf *b, const snap *s, int ns)
{
    static const family fams[] = {
        { "poolrt_shared_budget_max", "gauge", "Connections the shared budget allows across its member processes." },
        { "poolrt_shared_budget_used", "gauge", "Connections open or opening across the shared budget's members." },
        { "poolrt_shared_budget_members", "gauge", "Runtimes joined to the shared budget." },
        { "poolrt_shared_budget_held", "gauge", "Connections this runtime holds under the shared budget." },
        { "poolrt_shared_budget_waiting", "gauge", "Callers of this runtime waiting for the shared budget." },
        { "poolrt_shared_budget_evictions_asked_total", "counter",
          "Times this runtime asked the other members to close an idle connection." },
        { "poolrt_shared_budget_evictions_given_total", "counter",
          "Idle connections this runtime closed for another member." },
    };
    for (int f = 0; f < (int)(sizeof fams / sizeof fams[0]); f++) {
        int any = 0;
        for (int k = 0; k < ns; k++) {
            const prt_budget_stats *bs = &s[k].bs;
            if (!s[k].has_budget)
                continue;
            if (!any++)
                put_family(b, &fams[f]);
            const uint64_t v[] = { (uint64_t)bs->max, (uint64_t)bs->used, (uint64_t)bs->members,
                                   (uint64_t)bs->held, (uint64_t)bs->held_waiting, bs->asked_total, bs->given_total };
            series(b, fams[f].name, "", &s[k]);
            put(b, "%llu\n", (unsigned long long)v[f]);
        }
    }
}

/* The servers of pools over several hosts (endpoint.c): one series per
 * endpoint and family; poolrt_endpoint_role is 1 for the role the server
 * last reported and 0 for the others. */
static void endpoint_series(buf *b, const snap *s, int ns)
{
    static const family fams[] = {
        { "poolrt_endpoint_up", "gauge", "1 when the last connect to the server succeeded." },
        { "poolrt_endpoint_role", "gauge", "1 for the role the server reported at the last connect (unknown after a bad sign)." },
        { "poolrt_endpoint_open", "gauge", "Connections open to the server, every pool of the runtime." },
        { "poolrt_endpoint_failures", "gauge", "Consecutive failed connects to the server." },
        { "poolrt_endpoint_connects_total", "counter", "Connects attempted to the server." },
        { "poolrt_endpoint_failovers_total", "counter", "Times the server's known role changed (failover, switchover)." },
        { "poolrt_endpoint_lag_bytes", "gauge", "A standby's replay behind its primary's WAL, in bytes (-1: unknown)." },
        { "poolrt_endpoint_lag_seconds", "gauge", "Age of a standby's last replayed commit while it has WAL to replay (0: caught up)." },
    };
    static const char *const roles[] = { "unknown", "primary", "standby" };
    for (int f = 0; f < (int)(sizeof fams / sizeof fams[0]); f++) {
        int any = 0;
        for (int k = 0; k < ns; k++)
            for (int i = 0; i < s[k].neps; i++) {
                const prt_endpoint_stats *e = &s[k].eps[i];
                if (!any++)
                    put_family(b, &fams[f]);
                char name[160], lab[256];
                label(name, sizeof name, e->name);
                for (int r = 0; r < (f == 1 ? 3 : 1); r++) {
                    snprintf(lab, sizeof lab, "endpoint=\"%s\"%s%s%s", name, f == 1 ? ",role=\"" : "",
                             f == 1 ? roles[r] : "", f == 1 ? "\"" : "");
                    series(b, fams[f].name, lab, &s[k]);
                    const double v[] = { e->up, e->role == r, e->open, e->failures, (double)e->connects_total,
                                         (double)e->role_changes_total, (double)e->lag_bytes, e->lag_seconds };
                    put(b, "%.17g\n", v[f]);
                }
            }
    }
}

/* The exposition text of rts[0..n), each family once (see the top of the
 * file); free it with prt_free.  Returns NULL when out of memory.  The
 * caller keeps the runtimes alive for the duration of the call. */
char *prt__metrics_text_of(prt_runtime *const *rts, int n)
{
    buf b = { malloc(4096), 0, 4096, 0 };
    snap *s = calloc((size_t)(n ? n : 1), sizeof *s);
    b.oom = b.s == NULL || s == NULL;
    for (int k = 0; !b.oom && k < n; k++) {
        s[k].n = prt__registry_snapshot(rts[k], &s[k].pools);
        s[k].st = calloc((size_t)(s[k].n ? s[k].n : 1), sizeof *s[k].st);
        b.oom = s[k].st == NULL;
        for (int i = 0; !b.oom && i < s[k].n; i++)
            prt_pool_stats_get(s[k].pools[i], &s[k].st[i]);
        prt_runtime_policy_stats(rts[k], &s[k].ps);
        prt_runtime_stats_get(rts[k], &s[k].rs);
        s[k].has_budget = prt_budget_stats_get(NULL, rts[k], &s[k].bs) == PRT_OK;
        s[k].neps = prt_runtime_endpoints(rts[k], s[k].eps, SNAP_ENDPOINTS);
        if (s[k].neps > SNAP_ENDPOINTS)
            s[k].neps = SNAP_ENDPOINTS;
        if (n > 1)
            snprintf(s[k].rt, sizeof s[k].rt, "runtime=\"%llu\"", (unsigned long long)rts[k]->id);
    }
    if (!b.oom) {
        pool_series(&b, s, n);
        runtime_series(&b, s, n);
        budget_series(&b, s, n);
        endpoint_series(&b, s, n);
    }
    for (int k = 0; s && k < n; k++) {
        free(s[k].st);
        prt__registry_release(s[k].pools, s[k].n);
    }
    free(s);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* One runtime's exposition (rt:metrics()); free it with prt_free.  Returns
 * NULL when out of memory. */
char *prt_metrics_text(prt_runtime *rt)
{
    return prt__metrics_text_of(&rt, 1);
}

/* Every live runtime's metrics in one exposition (the host's --metrics). */
char *prt_metrics_all(void)
{
    return prt__live_metrics();
}

void prt_free(void *ptr)
{
    free(ptr);
}
