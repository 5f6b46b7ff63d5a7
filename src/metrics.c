/*
 * metrics.c -- the runtime's statistics as Prometheus text exposition
 * (version 0.0.4), for rt:metrics(), the host's --metrics endpoint and
 * OpenResty's /metrics location alike.
 *
 * Names follow PgBouncer's SHOW POOLS where the meaning matches
 * (cl_active, cl_waiting, sv_active, sv_idle, maxwait), prefixed poolrt_,
 * with a pool="name" label.  Everything is read through the same snapshot
 * functions as rt:stats(), so the two never disagree.
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

typedef struct gauge {
    const char *name, *type, *help;
} gauge;

static const gauge per_pool[] = {
    { "poolrt_cl_active", "gauge", "Callers holding a connection (PgBouncer cl_active)." },
    { "poolrt_cl_waiting", "gauge", "Callers waiting for a connection (PgBouncer cl_waiting)." },
    { "poolrt_sv_active", "gauge", "Server connections in use (PgBouncer sv_active)." },
    { "poolrt_sv_idle", "gauge", "Server connections idle in the pool (PgBouncer sv_idle)." },
    { "poolrt_maxwait", "gauge", "Seconds the oldest waiter has waited (PgBouncer maxwait)." },
    { "poolrt_pool_max", "gauge", "The pool's live maximum (after the size policy)." },
    { "poolrt_pool_total", "gauge", "Server connections open or opening." },
    { "poolrt_acquire_total", "counter", "Connections handed out." },
    { "poolrt_acquire_timeouts_total", "counter", "Acquires that timed out or were refused by overflow fail." },
    { "poolrt_connections_created_total", "counter", "Server connections opened." },
    { "poolrt_connect_errors_total", "counter", "Failed connection attempts." },
    { "poolrt_connections_grown_total", "counter", "Connections opened over max by overflow grow." },
    { "poolrt_connect_backoff_total", "counter", "Acquires refused at once while connects back off." },
    { "poolrt_leaks_total", "counter", "Connections held longer than leak_threshold." },
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
    default: return (double)s->leaks_total;
    }
}

static void pool_series(buf *b, prt_pool **pools, prt_pool_stats *st, int n)
{
    static const char *const reasons[] = { "idle", "lifetime", "broken", "evicted", "shrink" };
    char name[256];
    for (size_t g = 0; g < sizeof per_pool / sizeof per_pool[0]; g++) {
        put(b, "# HELP %s %s\n# TYPE %s %s\n", per_pool[g].name, per_pool[g].help, per_pool[g].name,
            per_pool[g].type);
        for (int i = 0; i < n; i++) {
            label(name, sizeof name, pools[i]->name);
            put(b, "%s{pool=\"%s\"} %.17g\n", per_pool[g].name, name, pool_value(&st[i], (int)g));
        }
    }
    put(b, "# HELP poolrt_connections_closed_total Server connections closed, by reason.\n"
           "# TYPE poolrt_connections_closed_total counter\n");
    for (int i = 0; i < n; i++) {
        const uint64_t v[] = { st[i].closed_idle, st[i].closed_lifetime, st[i].closed_broken, st[i].closed_evicted,
                               st[i].closed_shrink };
        label(name, sizeof name, pools[i]->name);
        for (int r = 0; r < 5; r++)
            put(b, "poolrt_connections_closed_total{pool=\"%s\",reason=\"%s\"} %llu\n", name, reasons[r],
                (unsigned long long)v[r]);
    }
    put(b, "# HELP poolrt_acquire_wait_seconds Time acquires waited for a connection.\n"
           "# TYPE poolrt_acquire_wait_seconds histogram\n");
    for (int i = 0; i < n; i++) {
        label(name, sizeof name, pools[i]->name);
        uint64_t cum = 0;
        for (int k = 0; k < PRT_WAIT_BUCKETS; k++) {
            cum += st[i].acquire_wait_buckets[k];
            if (k == PRT_WAIT_BUCKETS - 1)
                put(b, "poolrt_acquire_wait_seconds_bucket{pool=\"%s\",le=\"+Inf\"} %llu\n", name,
                    (unsigned long long)cum);
            else
                put(b, "poolrt_acquire_wait_seconds_bucket{pool=\"%s\",le=\"%g\"} %llu\n", name,
                    prt__wait_bounds[k], (unsigned long long)cum);
        }
        put(b, "poolrt_acquire_wait_seconds_sum{pool=\"%s\"} %.6f\n", name, (double)st[i].acquire_wait_us_total / 1e6);
        put(b, "poolrt_acquire_wait_seconds_count{pool=\"%s\"} %llu\n", name, (unsigned long long)cum);
    }
}

static void runtime_series(buf *b, prt_runtime *rt)
{
    prt_policy_stats ps;
    prt_runtime_policy_stats(rt, &ps);
    prt_runtime_stats rs;
    prt_runtime_stats_get(rt, &rs);
    put(b, "# HELP poolrt_policy_calls_total Policy hook calls.\n# TYPE poolrt_policy_calls_total counter\n");
    for (int h = 0; h < PRT__NHOOKS; h++)
        put(b, "poolrt_policy_calls_total{hook=\"%s\"} %llu\n", prt_policy_hook_name(h),
            (unsigned long long)ps.calls[h]);
    put(b, "# HELP poolrt_policy_errors_total Policy hook calls that failed and used the built-in default.\n"
           "# TYPE poolrt_policy_errors_total counter\n");
    for (int h = 0; h < PRT__NHOOKS; h++)
        put(b, "poolrt_policy_errors_total{hook=\"%s\"} %llu\n", prt_policy_hook_name(h),
            (unsigned long long)ps.errors[h]);
    put(b, "# HELP poolrt_policy_reloads_total Policy reloads.\n# TYPE poolrt_policy_reloads_total counter\n"
           "poolrt_policy_reloads_total{result=\"ok\"} %llu\npoolrt_policy_reloads_total{result=\"failed\"} %llu\n",
        (unsigned long long)ps.reloads_ok, (unsigned long long)ps.reloads_failed);
    put(b, "# HELP poolrt_policy_generation The live policy's generation.\n# TYPE poolrt_policy_generation gauge\n"
           "poolrt_policy_generation %llu\n", (unsigned long long)ps.generation);
    put(b, "# HELP poolrt_pools Live pools.\n# TYPE poolrt_pools gauge\npoolrt_pools %d\n", rs.pools);
    put(b, "# HELP poolrt_connections Server connections open across pools.\n# TYPE poolrt_connections gauge\n"
           "poolrt_connections %d\n", rs.connections);
    put(b, "# HELP poolrt_pools_over_cap_total Pools admitted over max_pools.\n"
           "# TYPE poolrt_pools_over_cap_total counter\npoolrt_pools_over_cap_total %llu\n",
        (unsigned long long)rs.pools_over_cap_total);
    put(b, "# HELP poolrt_pools_evicted_total Whole pools evicted, by reason.\n"
           "# TYPE poolrt_pools_evicted_total counter\n"
           "poolrt_pools_evicted_total{reason=\"manual\"} %llu\npoolrt_pools_evicted_total{reason=\"lru\"} %llu\n"
           "poolrt_pools_evicted_total{reason=\"idle\"} %llu\n",
        (unsigned long long)rs.pools_evicted_total[0], (unsigned long long)rs.pools_evicted_total[1],
        (unsigned long long)rs.pools_evicted_total[2]);
}

/* Returns the exposition text (free it with prt_free), or NULL when out of
 * memory. */
char *prt_metrics_text(prt_runtime *rt)
{
    buf b = { malloc(4096), 0, 4096, 0 };
    b.oom = b.s == NULL;
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools);
    prt_pool_stats *st = calloc((size_t)(n ? n : 1), sizeof *st);
    for (int i = 0; st && i < n; i++)
        prt_pool_stats_get(pools[i], &st[i]);
    if (st)
        pool_series(&b, pools, st, n);
    runtime_series(&b, rt);
    free(st);
    prt__registry_release(pools, n);
    if (b.oom || !st) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* Every live runtime's metrics, concatenated (the host's --metrics). */
char *prt_metrics_all(void)
{
    return prt__live_metrics();
}

void prt_free(void *ptr)
{
    free(ptr);
}
