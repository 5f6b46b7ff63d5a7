/*
 * pool.c -- a pool of connections to one conninfo: its lifetime and
 * references, the idle list and waiter queue that acquire.c and reap.c
 * work on, and statistics.  Closing and re-sizing, which give slots back,
 * are pool_slots.c's.
 *
 * Counting: total = idle + in_use + opening + closing, all under p->mu
 * (PRT__ASSERT_COUNTS); total is the pool's slots, which capacity.c takes
 * and gives back.  Whatever leaves the pool goes through
 * prt__retire_unlock (pool_slots.c).
 *
 * Lifetime: a pool is reference-counted (p->refs, atomic).  The runtime's
 * registry holds one reference while the pool is live; every handle
 * (prt_pool_get, prt_runtime_pool_at) and every connection in use holds
 * one.  An evicted pool is closed and leaves the registry at once, and is
 * freed when the last reference goes, so no handle ever dangles.  A pool
 * may outlive its runtime: prt_runtime_free detaches every pool it made
 * that is still allocated (p->rt = NULL), found through the runtime's
 * alive list.
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

/* The max p was configured with (the size hook's default answer). */
int prt__pool_configured_max(const prt_pool *p)
{
    return configured_max(&p->opts);
}

void prt_pool_opts_default(prt_pool_opts *o)
{
    *o = (prt_pool_opts){
        .max = DEFAULT_MAX, .acquire_timeout = 5.0, .validate_idle = 1.0, .stmt_cache = 64,
        .idle_timeout = 600.0, .max_lifetime = 1800.0, .lifetime_jitter = 0.1, .connect_backoff_max = 0.5,
        .handoff_bound = PRT_HANDOFF_BOUND_MS * 1e-3,
    };
}

/* opts.handoff's names; the pool keeps one of these literals, never the
 * caller's string. */
static const char *const handoff_names[] = { "barging", "fifo" };

/* 1 for "fifo", 0 for "barging" (or NULL), -1 for anything else. */
static int handoff_fifo(const char *handoff)
{
    if (!handoff || !strcmp(handoff, handoff_names[0]))
        return 0;
    return strcmp(handoff, handoff_names[1]) ? -1 : 1;
}

/* Checks every pool option's value (the one place they are checked:
 * bindings only convert types).  Returns 0, or PRT_EINVAL with err naming
 * the pool, the option and its value. */
static int check_opts(const prt_pool_opts *o, char *err, size_t errlen, const char *name)
{
    const struct { const char *opt; double v; } secs[] = {
        { "acquire_timeout", o->acquire_timeout }, { "idle_timeout", o->idle_timeout },
        { "max_lifetime", o->max_lifetime }, { "validate_idle", o->validate_idle },
        { "query_timeout", o->query_timeout }, { "leak_threshold", o->leak_threshold },
        { "connect_backoff_max", o->connect_backoff_max }, { "handoff_bound", o->handoff_bound },
    };
    char bad[160] = "";
    if (o->max < 0)
        snprintf(bad, sizeof bad, "max must be >= 1"); /* 0 is "not configured"; specs assert this text */
    else if (o->min_idle < 0 || o->min_idle > configured_max(o))
        snprintf(bad, sizeof bad, "min_idle must be between 0 and max (%d), got %d", configured_max(o), o->min_idle);
    else if (!(o->lifetime_jitter >= 0 && o->lifetime_jitter < 1))
        snprintf(bad, sizeof bad, "lifetime_jitter must be in [0, 1), got %g", o->lifetime_jitter);
    else if (o->stmt_cache < 0)
        snprintf(bad, sizeof bad, "stmt_cache must be >= 0, got %d", o->stmt_cache);
    else if (o->threads < 0)
        snprintf(bad, sizeof bad, "threads must be >= 0, got %d", o->threads);
    else if (o->ninit_sql < 0 || (o->ninit_sql > 0 && !o->init_sql))
        snprintf(bad, sizeof bad, "init_sql must hold ninit_sql statements");
    else if (handoff_fifo(o->handoff) < 0)
        snprintf(bad, sizeof bad, "handoff must be \"barging\" or \"fifo\", got \"%.40s\"", o->handoff);
    for (size_t i = 0; !bad[0] && i < sizeof secs / sizeof secs[0]; i++)
        if (!(secs[i].v >= 0))
            snprintf(bad, sizeof bad, "%s must be >= 0 seconds, got %g", secs[i].opt, secs[i].v);
    for (int i = 0; !bad[0] && i < o->ninit_sql; i++)
        if (!o->init_sql[i])
            snprintf(bad, sizeof bad, "init_sql must hold ninit_sql statements");
    if (bad[0])
        prt__errf(err, errlen, "pool \"%s\": %s", name, bad);
    return bad[0] ? PRT_EINVAL : PRT_OK;
}

/* Pool structs allocated and not yet freed, process-wide: what shows that
 * evicted pools are freed once their last reference goes. */
static atomic_int pools_allocated;

int prt_pools_allocated(void)
{
    return atomic_load(&pools_allocated);
}

/* The runtime's list of pools not yet freed (rt->pools_alive and each
 * pool's alive_prev/next) and the clearing of p->rt are guarded by
 * alive_mu.  Lock order: rt->mu, then alive_mu, then a pool's mu. */
static pthread_mutex_t alive_mu = PTHREAD_MUTEX_INITIALIZER;

static void alive_link(prt_pool *p)
{
    prt__mu_lock(&alive_mu, PRT__RANK_ALIVE);
    p->alive_next = p->rt->pools_alive;
    if (p->alive_next)
        p->alive_next->alive_prev = p;
    p->rt->pools_alive = p;
    prt__mu_unlock(&alive_mu, PRT__RANK_ALIVE);
}

/* Before a pool is freed.  Its runtime may already be gone (rt NULL). */
static void alive_unlink(prt_pool *p)
{
    prt__mu_lock(&alive_mu, PRT__RANK_ALIVE);
    if (p->rt) {
        if (p->alive_prev)
            p->alive_prev->alive_next = p->alive_next;
        else
            p->rt->pools_alive = p->alive_next;
        if (p->alive_next)
            p->alive_next->alive_prev = p->alive_prev;
    }
    prt__mu_unlock(&alive_mu, PRT__RANK_ALIVE);
}

/* Detaches every pool rt made that is still allocated: p->rt = NULL (under
 * alive_mu and p->mu), and the list is emptied.  prt_runtime_free calls it
 * once no thread uses the runtime any more.  No pool lock held. */
void prt__pools_detach(prt_runtime *rt)
{
    prt__mu_lock(&alive_mu, PRT__RANK_ALIVE);
    for (prt_pool *p = rt->pools_alive, *next; p; p = next) {
        next = p->alive_next;
        prt__lock(p);
        p->rt = NULL;
        p->alive_prev = p->alive_next = NULL;
        prt__unlock(p);
    }
    rt->pools_alive = NULL;
    prt__mu_unlock(&alive_mu, PRT__RANK_ALIVE);
}

/* Copies n strings into a new NULL-terminated array the caller frees with
 * free_strings.  Returns 0, or PRT_ENOMEM with nothing allocated. */
static int copy_strings(const char *const *src, int n, char ***out)
{
    *out = NULL;
    if (n == 0)
        return PRT_OK;
    char **a = calloc((size_t)n + 1, sizeof *a);
    for (int i = 0; a && i < n; i++) {
        if (!(a[i] = strdup(src[i]))) {
            for (int j = 0; j < i; j++)
                free(a[j]);
            free(a);
            a = NULL;
        }
    }
    *out = a;
    return a ? PRT_OK : PRT_ENOMEM;
}

static void free_strings(char **a)
{
    for (int i = 0; a && a[i]; i++)
        free(a[i]);
    free(a);
}

/* Creates a pool with one reference (the caller's).  conninfo is what its
 * connections use (o->conninfo or the runtime's, with a fleet's
 * application_name: registry.c), NULL when there is none. */
int prt__pool_new(prt_runtime *rt, const char *name, const prt_pool_opts *o, const char *conninfo,
                  prt_pool **out, char *err, size_t errlen)
{
    static atomic_uint_fast64_t serials;
    if (check_opts(o, err, errlen, name) != PRT_OK)
        return PRT_EINVAL;
    if (!conninfo) {
        prt__errf(err, errlen, "pool \"%s\": no conninfo (give one, or set POOLRT_CONNINFO)", name);
        return PRT_EINVAL;
    }
    prt_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(name)) || !(p->conninfo = strdup(conninfo)) ||
        copy_strings(o->init_sql, o->ninit_sql, &p->init_sql) != PRT_OK) {
        if (p) {
            free(p->name);
            free(p->conninfo);
            free(p);
        }
        prt__errf(err, errlen, "pool \"%s\": out of memory", name);
        return PRT_ENOMEM;
    }
    atomic_init(&p->refs, 1);
    atomic_fetch_add(&pools_allocated, 1);
    /* with the fleet's application_name; the simulator's servers are in the
     * table, but its sampler is the simulator's own (sim.c), on the virtual clock */
    p->endpoints = prt__endpoints_new(p->conninfo, rt->eptab);
    if (p->endpoints && !rt->conn_ops)
        prt__eptab_start(rt->eptab);
    p->serial = atomic_fetch_add(&serials, 1) + 1;
    p->rt = rt;
    p->rec = prt__record_ref(rt->rec);
    p->ops = rt->conn_ops;
    p->opts = *o;
    p->opts.conninfo = p->conninfo;
    p->opts.init_sql = (const char *const *)p->init_sql;
    p->fifo = handoff_fifo(o->handoff);
    p->opts.handoff = handoff_names[p->fifo];
    p->max = configured_max(o);
    p->min_idle = o->min_idle;
    p->created_at = p->last_used_at = prt_now();
    alive_link(p);
    *out = p;
    return PRT_OK;
}

void prt__pool_ref(prt_pool *p)
{
    atomic_fetch_add(&p->refs, 1);
}

/* Drops a reference; the last one frees the pool.  No connection is left
 * then: each in use holds a reference, and a pool leaves the registry (whose
 * reference it held) only closed, its idle connections closed with it --
 * a closed pool takes no idle connection back (pool_slots.c). */
void prt_pool_unref(prt_pool *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
#ifdef POOLRT_DEBUG
    assert(p->total == 0 && p->nidle == 0);
#endif
    if (p->mux_ops)
        p->mux_ops->free(p);
    alive_unlink(p);
    free_strings(p->init_sql); /* NULL-terminated: frees each statement, then the array */
    free(p->idle);
    free(p->name);
    free(p->conninfo);
    prt__endpoints_free(p->endpoints);
    prt__record_unref(p->rec);
    free(p);
    atomic_fetch_sub(&pools_allocated, 1);
}

const char *prt_pool_name(const prt_pool *p)
{
    return p->name;
}


static const char *const close_reasons[PRT_CLOSE_NREASONS] = { "idle", "lifetime", "broken", "evicted", "shrink",
                                                                       "role" };

/* The name of a close reason (the metrics' label, the simulator's table):
 * the one list of them. */
const char *prt_close_reason_name(int reason)
{
    return reason >= 0 && reason < PRT_CLOSE_NREASONS ? close_reasons[reason] : "?";
}

/* A pool's closes from its stats, indexed by PRT_CLOSE_*. */
void prt__closed_by(const prt_pool_stats *st, uint64_t by[PRT_CLOSE_NREASONS])
{
    by[PRT_CLOSE_IDLE] = st->closed_idle;
    by[PRT_CLOSE_LIFETIME] = st->closed_lifetime;
    by[PRT_CLOSE_BROKEN] = st->closed_broken;
    by[PRT_CLOSE_EVICTED] = st->closed_evicted;
    by[PRT_CLOSE_SHRINK] = st->closed_shrink;
    by[PRT_CLOSE_ROLE] = st->closed_role;
}

/* The pool's state for error messages.  mu held. */
void prt__pool_state(prt_pool *p, char *buf, size_t len)
{
    PRT__ASSERT_HELD(p);
    snprintf(buf, len, " (max=%d in_use=%d idle=%d waiting=%d)", p->max, p->in_use, p->nidle, p->nwait);
}

/* Work in flight: connections in use or opening, callers waiting, or an
 * acquire re-admitting the pool (registry.c).  A
 * pool with any is never evicted, whatever a policy says.  p->mu held. */
int prt__pool_has_work(const prt_pool *p)
{
    return p->in_use > 0 || p->opening > 0 || p->nwait > 0 || p->readmitting > 0;
}

/* The one eviction rule: a pool may be evicted automatically unless it is
 * named "default", protected or pinned, or has work in flight.  Policies
 * see it as the `evictable` field of their pool views.  p->mu not held. */
int prt__pool_evictable(prt_pool *p)
{
    prt__lock(p);
    int prot = prt__pool_has_work(p) || p->opts.is_protected || p->opts.is_pinned || strcmp(p->name, "default") == 0;
    prt__unlock(p);
    return !prot;
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
    PRT__ASSERT_HELD(p);
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
    PRT__ASSERT_HELD(p);
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

/* --- the idle list (all under p->mu) ---------------------------------------- */

/* Whether the oldest waiter may be passed by a caller that finds an idle
 * connection: never in "fifo" mode, and in "barging" mode only until that
 * waiter has waited opts.handoff_bound (then releases go straight to it,
 * oldest first, as in "fifo").  now: the caller's clock reading from just
 * before it took mu (older by the lock's wait, microseconds against a
 * bound of a millisecond), or 0 to read the clock here -- under contention
 * there is always a waiter, and a clock read saved inside the critical
 * section is saved for every caller queued on the lock.  mu held. */
int prt__may_barge(prt_pool *p, double now)
{
    PRT__ASSERT_HELD(p);
    prt__waiter *w = p->wq_head;
    if (!w)
        return 1;
    if (p->fifo)
        return 0;
    return (now > 0 ? now : prt_now()) - w->since < p->opts.handoff_bound;
}

/* "barging": wakes the oldest waiter to compete for an idle connection,
 * unless it was woken already and has not run yet (one wake-up per
 * waiter, never a herd).  mu held. */
void prt__waiter_nudge(prt_pool *p)
{
    PRT__ASSERT_HELD(p);
    prt__waiter *w = p->wq_head;
    if (w && !w->nudged) {
        w->nudged = 1;
        prt__waiter_wake(w);
    }
}

/* A connection becomes available.  Unless callers may barge
 * (prt__may_barge), the oldest waiter gets it; otherwise it joins the idle
 * list as the most recently released, and the oldest waiter is woken to
 * compete for it with running callers (puddle#46: a running caller takes it
 * without a wake-up and a schedule per hand-off).  Returns 0, or -1 when it
 * could not be tracked (out of memory): the caller must close it.  now: as
 * prt__may_barge's. */
int prt__hand_back(prt_pool *p, prt_conn *c, double now)
{
    PRT__ASSERT_HELD(p);
    if (!prt__may_barge(p, now)) {
        prt__waiter *w = prt__waiter_pop(p);
        p->in_use++;
        w->conn = c;
        w->state = PRT__W_CONN;
        prt__waiter_wake(w);
        PRT__ASSERT_COUNTS(p);
        return 0;
    }
    prt_conn **idle = prt__grow(p->idle, &p->idle_cap, p->nidle + 1, sizeof *idle);
    if (!idle)
        return -1;
    p->idle = idle;
    p->idle[p->nidle++] = c;
    prt__waiter_nudge(p);
    PRT__ASSERT_COUNTS(p);
    return 0;
}

prt_conn *prt__take_idle(prt_pool *p, int i)
{
    PRT__ASSERT_HELD(p);
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

/* Coder's reconciler rule, the one copy (policies name it "half"):
 * background jobs may hold at most half the pool, so requests always keep
 * the other half; at least one, so background work never stalls; and never
 * more than PRT_CONCURRENCY_CAP however big the pool is.
 *   max = 10, 30, 100, 4, 2, 1, 0  ->  5, 5, 5, 2, 1, 1, 1 */
int prt_concurrency_builtin(int max)
{
    int n = max / 2;
    return n < 1 ? 1 : n > PRT_CONCURRENCY_CAP ? PRT_CONCURRENCY_CAP : n;
}

int prt_pool_stats_get(prt_pool *p, prt_pool_stats *s)
{
    if (!p || !s)
        return PRT_EINVAL;
    double now = prt_now();
    s->mux_connections = s->mux_in_flight = 0;
    s->mux_statements_total = s->mux_rerouted_total = s->mux_lost_total = 0;
    if (p->mux_ops)
        p->mux_ops->stats(p, s); /* before p->mu: the multiplexer's lock nests outside it */
    prt__lock(p);
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
    s->closed_role = p->closed_by[PRT__CLOSE_ROLE];
    s->grown_total = p->grown;
    s->is_protected = p->opts.is_protected;
    s->is_pinned = p->opts.is_pinned;
    s->closed = p->closed;
    s->init_sql_errors_total = p->init_sql_errors;
    s->tx_retries_total = p->tx_retries;
    prt__unlock(p);
    return PRT_OK;
}

void prt_pool_note_tx_retry(prt_pool *p)
{
    prt__lock(p);
    p->tx_retries++;
    prt__unlock(p);
}

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
