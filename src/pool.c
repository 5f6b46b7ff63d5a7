/*
 * pool.c -- a pool of connections to one conninfo: its lifetime and
 * references, connection slots (the pool's max and the runtime's global
 * max_connections), the idle list and waiter queue that acquire.c and
 * reap.c work on, re-sizing, and statistics.
 *
 * Counting: total = idle + in_use + opening, all under p->mu.  A slot is
 * reserved (total++, and one of the runtime's global slots) before a
 * connection is opened outside the lock, so neither the pool's max nor the
 * global cap is exceeded while connects are in flight.
 *
 * Lifetime: a pool is reference-counted (p->refs, atomic).  The runtime's
 * registry holds one reference while the pool is live; every handle
 * (prt_pool_get, prt_runtime_pool_at) and every connection in use holds
 * one.  An evicted pool is closed and leaves the registry at once, and is
 * freed when the last reference goes, so no handle ever dangles.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* A pool's max when the user configured none (opts.max == 0) and no size
 * hook decides. */
enum { DEFAULT_MAX = 10 };

static int configured_max(const prt_pool_opts *o)
{
    return o->max > 0 ? o->max : DEFAULT_MAX;
}

void prt_pool_opts_default(prt_pool_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max = DEFAULT_MAX;
    o->acquire_timeout = 5.0;
    o->idle_timeout = 600.0;
    o->max_lifetime = 1800.0;
    o->lifetime_jitter = 0.1;
    o->validate_idle = 1.0;
    o->stmt_cache = 64;
    o->connect_backoff_max = 0.5;
}

static int check_opts(const prt_pool_opts *o, char *err, size_t errlen, const char *name)
{
    const char *bad = NULL;
    if (o->max < 0)
        bad = "max must be >= 1"; /* 0 is "not configured" */
    else if (o->min_idle < 0 || o->min_idle > configured_max(o))
        bad = "min_idle must be between 0 and max";
    else if (o->acquire_timeout < 0 || o->idle_timeout < 0 || o->max_lifetime < 0 ||
             o->validate_idle < 0 || o->query_timeout < 0 || o->leak_threshold < 0 || o->connect_backoff_max < 0)
        bad = "timeouts must be >= 0";
    else if (o->lifetime_jitter < 0 || o->lifetime_jitter >= 1)
        bad = "lifetime_jitter must be in [0, 1)";
    else if (o->stmt_cache < 0 || o->threads < 0)
        bad = "stmt_cache and threads must be >= 0";
    if (bad)
        prt__errf(err, errlen, "pool \"%s\": %s", name, bad);
    return bad ? PRT_EINVAL : PRT_OK;
}

/* Pool structs allocated and not yet freed, process-wide: what shows that
 * evicted pools are freed once their last reference goes. */
static atomic_int pools_allocated;

int prt_pools_allocated(void)
{
    return atomic_load(&pools_allocated);
}

/* Creates a pool with one reference (the caller's). */
int prt__pool_new(prt_runtime *rt, const char *name, const prt_pool_opts *o,
                  prt_pool **out, char *err, size_t errlen)
{
    static atomic_uint_fast64_t serials;
    const char *conninfo = o->conninfo ? o->conninfo : rt->conninfo;
    if (check_opts(o, err, errlen, name) != PRT_OK)
        return PRT_EINVAL;
    if (!conninfo) {
        prt__errf(err, errlen, "pool \"%s\": no conninfo (give one, or set POOLRT_CONNINFO)", name);
        return PRT_EINVAL;
    }
    prt_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(name)) || !(p->conninfo = strdup(conninfo))) {
        if (p) {
            free(p->name);
            free(p);
        }
        prt__errf(err, errlen, "pool \"%s\": out of memory", name);
        return PRT_ENOMEM;
    }
    atomic_init(&p->refs, 1);
    atomic_fetch_add(&pools_allocated, 1);
    p->endpoints = prt__endpoints_new(conninfo);
    p->serial = atomic_fetch_add(&serials, 1) + 1;
    p->rt = rt;
    p->opts = *o;
    p->opts.conninfo = p->conninfo;
    p->max = configured_max(o);
    p->min_idle = o->min_idle;
    p->created_at = p->last_used_at = prt_now();
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return PRT_OK;
}

void prt__pool_ref(prt_pool *p)
{
    atomic_fetch_add(&p->refs, 1);
}

/* Drops a reference; the last one closes what is idle and frees the pool
 * (no connection is in use then: each holds a reference). */
void prt_pool_unref(prt_pool *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    prt__pool_close(p, PRT__CLOSED_EVICTED);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p->name);
    free(p->conninfo);
    prt__endpoints_free(p->endpoints);
    free(p);
    atomic_fetch_sub(&pools_allocated, 1);
}

const char *prt_pool_name(const prt_pool *p)
{
    return p->name;
}

void prt__pool_state(prt_pool *p, char *buf, size_t len)
{
    snprintf(buf, len, " (max=%d in_use=%d idle=%d waiting=%d)", p->max, p->in_use, p->nidle, p->nwait);
}

/* --- slots (all under p->mu) ------------------------------------------------ */

/* Reserves a slot for a connection about to be opened: within the pool's
 * max (unless over_max) and the runtime's max_connections.  Returns 1 when
 * reserved, 0 when a limit is reached. */
int prt__slot_take(prt_pool *p, int over_max)
{
    if (!over_max && p->total >= p->max)
        return 0;
    prt_runtime *rt = p->rt;
    if (rt && rt->opts.max_connections > 0) {
        int n = atomic_load(&rt->nconns);
        do {
            if (n >= rt->opts.max_connections)
                return 0;
        } while (!atomic_compare_exchange_weak(&rt->nconns, &n, n + 1));
    } else if (rt) {
        atomic_fetch_add(&rt->nconns, 1);
    }
    p->total++;
    p->opening++;
    return 1;
}

/* Gives back n slots whose connections were closed (or never opened). */
void prt__slot_give(prt_pool *p, int n, enum prt__close_reason why)
{
    if (n <= 0)
        return;
    p->total -= n;
    if (why < PRT__CLOSE_NREASONS)
        p->closed_by[why] += (uint64_t)n;
    if (p->rt)
        atomic_fetch_sub(&p->rt->nconns, n);
}

/* After slots were given back (p->mu released): waiters of this pool were
 * served by grant_slots under the lock; waiters of other pools blocked only
 * by the global cap get their turn here. */
void prt__pool_after_close(prt_pool *p)
{
    prt_runtime *rt = p->rt;
    if (rt && rt->opts.max_connections > 0 && atomic_load(&rt->nwaiting) > 0)
        prt__registry_grant(rt);
}

/* --- the waiter queue (all under p->mu) ------------------------------------ */

static void waiting_changed(prt_pool *p, int d)
{
    p->nwait += d;
    if (p->rt)
        atomic_fetch_add(&p->rt->nwaiting, d);
}

void prt__waiter_push(prt_pool *p, prt__waiter *w)
{
    w->next = NULL;
    if (p->wq_tail)
        p->wq_tail->next = w;
    else
        p->wq_head = w;
    p->wq_tail = w;
    waiting_changed(p, 1);
}

prt__waiter *prt__waiter_pop(prt_pool *p)
{
    prt__waiter *w = p->wq_head;
    if (w) {
        p->wq_head = w->next;
        if (!p->wq_head)
            p->wq_tail = NULL;
        waiting_changed(p, -1);
    }
    return w;
}

void prt__waiter_unlink(prt_pool *p, prt__waiter *w)
{
    prt__waiter **pp = &p->wq_head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = w->next;
    if (p->wq_tail == w)
        p->wq_tail = prev;
    waiting_changed(p, -1);
}

/* Gives free slots to waiters, oldest first; each one opens its own
 * connection once it wakes. */
void prt__grant_slots(prt_pool *p)
{
    while (p->wq_head && prt__slot_take(p, 0)) {
        prt__waiter *w = prt__waiter_pop(p);
        w->state = PRT__W_SLOT;
        pthread_cond_signal(&w->cond);
    }
}

/* --- the idle list (all under p->mu) ---------------------------------------- */

/* A connection becomes available: the oldest waiter gets it, else it joins
 * the idle list as the most recently released.  Returns 0, or -1 when it
 * could not be tracked (out of memory): the caller must close it. */
int prt__put_idle(prt_pool *p, prt_conn *c)
{
    prt__waiter *w = prt__waiter_pop(p);
    if (w) {
        p->in_use++;
        w->conn = c;
        w->state = PRT__W_CONN;
        pthread_cond_signal(&w->cond);
        return 0;
    }
    if (p->nidle == p->idle_cap) {
        int cap = p->idle_cap ? p->idle_cap * 2 : 8;
        prt_conn **n = realloc(p->idle, (size_t)cap * sizeof *n);
        if (!n)
            return -1;
        p->idle = n;
        p->idle_cap = cap;
    }
    p->idle[p->nidle++] = c;
    return 0;
}

prt_conn *prt__take_idle(prt_pool *p, int i)
{
    prt_conn *c = p->idle[i];
    memmove(&p->idle[i], &p->idle[i + 1], (size_t)(p->nidle - i - 1) * sizeof *p->idle);
    p->nidle--;
    return c;
}

/* Moves idle connections matching `pred` out of the list (oldest first,
 * keeping at least `keep` idle) into `out`; returns how many. */
int prt__take_where(prt_pool *p, int (*pred)(prt_pool *, prt_conn *, double), double now, int keep,
                    prt_conn **out)
{
    int n = 0;
    for (int i = 0; i < p->nidle && p->nidle > keep;) {
        if (!pred || pred(p, p->idle[i], now))
            out[n++] = prt__take_idle(p, i);
        else
            i++;
    }
    return n;
}

void prt__close_all(prt_conn **cs, int n)
{
    for (int i = 0; i < n; i++)
        prt__conn_close(cs[i]);
}

/* Takes up to `n` idle connections (oldest first) out of the pool and
 * gives back their slots, under the lock; the caller closes them. */
static int take_oldest(prt_pool *p, int n, enum prt__close_reason why, prt_conn ***out)
{
    *out = NULL;
    if (n > p->nidle)
        n = p->nidle;
    if (n <= 0 || !(*out = malloc((size_t)n * sizeof **out)))
        return 0;
    n = prt__take_where(p, NULL, 0, p->nidle - n, *out);
    prt__slot_give(p, n, why);
    return n;
}

/* Stops new acquires (waiters are woken with an error), closes idle
 * connections; in-use ones close as they are released. */
void prt__pool_close(prt_pool *p, int reason)
{
    pthread_mutex_lock(&p->mu);
    if (!p->closed)
        p->closed = reason;
    prt__waiter *w;
    while ((w = prt__waiter_pop(p)) != NULL) {
        w->state = PRT__W_CLOSED;
        pthread_cond_signal(&w->cond);
    }
    prt_conn **cs;
    int n = take_oldest(p, p->nidle, PRT__CLOSE_EVICTED, &cs);
    pthread_mutex_unlock(&p->mu);
    prt__close_all(cs, n);
    free(cs);
    if (n)
        prt__pool_after_close(p);
}

/* Asks the size hook for max and min_idle (default: as configured) and
 * applies them: a larger max serves waiters at once; a smaller one closes
 * idle connections above it now and in-use ones as they come back. */
void prt__pool_apply_size(prt_pool *p)
{
    int max = configured_max(&p->opts), min_idle = p->opts.min_idle;
    prt__pstate *ps = prt__policy_thread(p->rt);
    if (prt__pstate_mode(ps, PRT__H_SIZE) == PRT__MODE_LUA)
        prt__hook_size(ps, p, &max, &min_idle);
    pthread_mutex_lock(&p->mu);
    p->max = max;
    p->min_idle = min_idle;
    prt__grant_slots(p);
    prt_conn **cs;
    int n = take_oldest(p, p->total - p->max, PRT__CLOSE_SHRINK, &cs);
    pthread_mutex_unlock(&p->mu);
    prt__close_all(cs, n);
    free(cs);
    if (n)
        prt__pool_after_close(p);
}

/* How many background jobs may hold connections of p at once: the
 * concurrency hook, else coder's rule min(5, max(1, max / 2)). */
int prt_pool_concurrency(prt_pool *p)
{
    int n = prt__hook_concurrency(prt__policy_thread(p->rt), p);
    if (n > 0)
        return n;
    pthread_mutex_lock(&p->mu);
    n = p->max / 2;
    pthread_mutex_unlock(&p->mu);
    return n < 1 ? 1 : n > 5 ? 5 : n;
}

int prt_pool_stats_get(prt_pool *p, prt_pool_stats *s)
{
    if (!p || !s)
        return PRT_EINVAL;
    double now = prt_now();
    pthread_mutex_lock(&p->mu);
    s->max = p->max;
    s->min_idle = p->min_idle;
    s->total = p->total;
    s->idle = p->nidle;
    s->in_use = p->in_use;
    s->waiting = p->nwait;
    s->maxwait = p->wq_head ? now - p->wq_head->since : 0.0;
    s->created_at = p->created_at;
    s->last_used_at = p->last_used_at;
    s->acquire_total = p->acquire_total;
    s->acquire_timeouts_total = p->acquire_timeouts;
    s->acquire_wait_us_total = p->acquire_wait_us;
    memcpy(s->acquire_wait_buckets, p->wait_buckets, sizeof s->acquire_wait_buckets);
    s->connections_created_total = p->created_total;
    s->connect_errors_total = p->connect_errors;
    s->connect_backoff_total = p->backoff_refusals;
    s->leaks_total = p->leaks;
    s->closed_idle = p->closed_by[PRT__CLOSE_IDLE];
    s->closed_lifetime = p->closed_by[PRT__CLOSE_LIFETIME];
    s->closed_broken = p->closed_by[PRT__CLOSE_BROKEN];
    s->closed_evicted = p->closed_by[PRT__CLOSE_EVICTED];
    s->closed_shrink = p->closed_by[PRT__CLOSE_SHRINK];
    s->grown_total = p->grown;
    s->is_protected = p->opts.is_protected;
    s->is_pinned = p->opts.is_pinned;
    s->closed = p->closed;
    pthread_mutex_unlock(&p->mu);
    return PRT_OK;
}

/* The stats copy internal values out under public names; the bindings
 * read those names, so the two must not drift. */
_Static_assert((int)PRT__CLOSED_EVICTED == (int)PRT_POOL_EVICTED && (int)PRT__CLOSED_DRAINING == (int)PRT_POOL_DRAINING,
               "prt_pool_stats.closed carries PRT__CLOSED_* as PRT_POOL_*");
_Static_assert((int)PRT__EVICT_MANUAL == (int)PRT_EVICT_MANUAL && (int)PRT__EVICT_LRU == (int)PRT_EVICT_LRU &&
               (int)PRT__EVICT_IDLE == (int)PRT_EVICT_IDLE && (int)PRT__EVICT_NREASONS == (int)PRT_EVICT_NREASONS,
               "prt_runtime_stats.pools_evicted_total is indexed by PRT_EVICT_*");

/* The acquire-wait histogram's upper bounds, in seconds (+Inf last). */
const double prt__wait_bounds[PRT_WAIT_BUCKETS] = { 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 1e300 };

/* The bound of bucket i for bindings (the Lua side builds its histogram
 * from this, so the bounds are written only here): +Inf for the last
 * bucket, a negative number when i is out of range. */
double prt_wait_bucket_bound(int i)
{
    if (i < 0 || i >= PRT_WAIT_BUCKETS)
        return PRT_EINVAL;
    return i == PRT_WAIT_BUCKETS - 1 ? INFINITY : prt__wait_bounds[i];
}
