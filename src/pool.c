/*
 * pool.c -- a pool of connections to one conninfo: acquire, release, the
 * FIFO of waiters, and the intra-pool reap (idle timeout, lifetime, min idle).
 *
 * Fairness: callers that cannot be served at once queue first-come
 * first-served.  A released connection goes straight to the oldest waiter
 * (its `conn` is set and only its condvar is signalled), and a freed slot
 * becomes that waiter's right to open a connection; new callers never barge
 * past a non-empty queue.  So there is no thundering herd and no starvation.
 *
 * Counting: total = idle + in_use + opening, all under p->mu.  A slot is
 * reserved (total++) before a connection is opened outside the lock, so the
 * pool never exceeds max even while several connects are in flight.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum { W_WAITING, W_CONN, W_SLOT, W_CLOSED };

void prt_pool_opts_default(prt_pool_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max = 10;
    o->acquire_timeout = 5.0;
    o->idle_timeout = 600.0;
    o->max_lifetime = 1800.0;
    o->lifetime_jitter = 0.1;
    o->validate_idle = 1.0;
    o->stmt_cache = 64;
}

static int check_opts(const prt_pool_opts *o, char *err, size_t errlen, const char *name)
{
    const char *bad = NULL;
    if (o->max < 1)
        bad = "max must be >= 1";
    else if (o->min_idle < 0 || o->min_idle > o->max)
        bad = "min_idle must be between 0 and max";
    else if (o->acquire_timeout < 0 || o->idle_timeout < 0 || o->max_lifetime < 0 ||
             o->validate_idle < 0 || o->query_timeout < 0)
        bad = "timeouts must be >= 0";
    else if (o->lifetime_jitter < 0 || o->lifetime_jitter >= 1)
        bad = "lifetime_jitter must be in [0, 1)";
    else if (o->stmt_cache < 0)
        bad = "stmt_cache must be >= 0";
    if (bad)
        prt__errf(err, errlen, "pool \"%s\": %s", name, bad);
    return bad ? PRT_EINVAL : PRT_OK;
}

int prt__pool_new(prt_runtime *rt, const char *name, const prt_pool_opts *o,
                  prt_pool **out, char *err, size_t errlen)
{
    const char *conninfo = o->conninfo ? o->conninfo : rt->conninfo;
    if (check_opts(o, err, errlen, name) != PRT_OK)
        return PRT_EINVAL;
    if (!conninfo) {
        prt__errf(err, errlen, "pool \"%s\": no conninfo (give one, or set POOLRT_CONNINFO)", name);
        return PRT_EINVAL;
    }
    prt_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(name)) || !(p->conninfo = strdup(conninfo))) {
        prt__pool_free(p);
        prt__errf(err, errlen, "pool \"%s\": out of memory", name);
        return PRT_ENOMEM;
    }
    static atomic_uint_fast64_t serials;
    p->serial = atomic_fetch_add(&serials, 1) + 1;
    p->rt = rt;
    p->opts = *o;
    p->opts.conninfo = p->conninfo;
    p->max = o->max;
    p->min_idle = o->min_idle;
    p->created_at = p->last_used_at = prt_now();
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return PRT_OK;
}

/* Frees a pool whose connections are all closed or never opened. */
void prt__pool_free(prt_pool *p)
{
    if (!p)
        return;
    if (p->name)
        pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p->name);
    free(p->conninfo);
    free(p);
}

const char *prt_pool_name(const prt_pool *p)
{
    return p->name;
}

void prt__pool_state(prt_pool *p, char *buf, size_t len)
{
    snprintf(buf, len, " (max=%d in_use=%d idle=%d waiting=%d)", p->max, p->in_use, p->nidle, p->nwait);
}

/* --- the waiter queue (all under p->mu) ------------------------------------ */

static prt__waiter *dequeue_head(prt_pool *p)
{
    prt__waiter *w = p->wq_head;
    if (w) {
        p->wq_head = w->next;
        if (!p->wq_head)
            p->wq_tail = NULL;
        p->nwait--;
    }
    return w;
}

static void unlink_waiter(prt_pool *p, prt__waiter *w)
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
    p->nwait--;
}

/* Gives free slots (total < max) to waiters, oldest first; each one opens
 * its own connection once it wakes. */
static void grant_slots(prt_pool *p)
{
    while (p->wq_head && p->total < p->max) {
        prt__waiter *w = dequeue_head(p);
        p->total++;
        p->opening++;
        w->state = W_SLOT;
        pthread_cond_signal(&w->cond);
    }
}

/* A connection becomes available: the oldest waiter gets it, else it joins
 * the idle list as the most recently released. */
static void put_idle(prt_pool *p, prt_conn *c)
{
    prt__waiter *w = dequeue_head(p);
    if (w) {
        p->in_use++;
        w->conn = c;
        w->state = W_CONN;
        pthread_cond_signal(&w->cond);
        return;
    }
    if (p->nidle == p->idle_cap) {
        int cap = p->idle_cap ? p->idle_cap * 2 : 8;
        prt_conn **n = realloc(p->idle, (size_t)cap * sizeof *n);
        if (!n) { /* cannot track it: close rather than lose it */
            p->total--;
            p->closed_by[PRT__CLOSE_BROKEN]++;
            pthread_mutex_unlock(&p->mu);
            prt__conn_close(c);
            pthread_mutex_lock(&p->mu);
            return;
        }
        p->idle = n;
        p->idle_cap = cap;
    }
    p->idle[p->nidle++] = c;
}

static prt_conn *take_idle(prt_pool *p, int i)
{
    prt_conn *c = p->idle[i];
    memmove(&p->idle[i], &p->idle[i + 1], (size_t)(p->nidle - i - 1) * sizeof *p->idle);
    p->nidle--;
    return c;
}

/* Forgets a connection the caller will close outside the lock. */
static void drop_locked(prt_pool *p, enum prt__close_reason why)
{
    p->total--;
    p->closed_by[why]++;
    grant_slots(p);
}

/* --- acquire ------------------------------------------------------------- */

static int timeout_error(prt_pool *p, double waited, char *err, size_t errlen)
{
    char st[128];
    prt__pool_state(p, st, sizeof st);
    prt__errf(err, errlen, "pool \"%s\": acquire timed out after %.3fs%s", p->name, waited, st);
    p->acquire_timeouts++;
    return PRT_ETIMEDOUT;
}

static int full_error(prt_pool *p, char *err, size_t errlen)
{
    char st[128];
    prt__pool_state(p, st, sizeof st);
    prt__errf(err, errlen, "pool \"%s\": pool is full and the overflow policy says fail%s", p->name, st);
    p->acquire_timeouts++;
    return PRT_EFULL;
}

static int closed_error(prt_pool *p, char *err, size_t errlen)
{
    prt__errf(err, errlen, "pool \"%s\": pool is closed (runtime shutting down or pool evicted)", p->name);
    return PRT_ECLOSED;
}

/* Opens a connection into a slot already reserved (total, opening).  On
 * success it is counted in use (for the caller) or put idle (for refill). */
static int open_in_slot(prt_pool *p, double deadline, int for_idle, prt_conn **out,
                        char *err, size_t errlen)
{
    prt_conn *c = NULL;
    int rc = prt__conn_open(p, deadline, &c, err, errlen);
    pthread_mutex_lock(&p->mu);
    p->opening--;
    if (rc != PRT_OK) {
        p->connect_errors++;
        p->total--;
        grant_slots(p);
        size_t n = err ? strlen(err) : errlen;
        if (n < errlen)
            prt__pool_state(p, err + n, errlen - n);
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    c->id = ++p->next_conn_id;
    p->created_total++;
    if (for_idle)
        put_idle(p, c);
    else
        p->in_use++;
    pthread_mutex_unlock(&p->mu);
    *out = c;
    return PRT_OK;
}

/* Waits in the FIFO until handed a connection or a slot, or the deadline.
 * Called and returns with p->mu held. */
static int wait_turn(prt_pool *p, double deadline, prt__waiter *w)
{
    struct timespec ts;
    prt__abstime(deadline, &ts);
    prt__cond_init(&w->cond);
    w->next = NULL;
    w->conn = NULL;
    w->state = W_WAITING;
    w->since = prt_now();
    if (p->wq_tail)
        p->wq_tail->next = w;
    else
        p->wq_head = w;
    p->wq_tail = w;
    p->nwait++;
    while (w->state == W_WAITING) {
        if (pthread_cond_timedwait(&w->cond, &p->mu, &ts) == ETIMEDOUT && w->state == W_WAITING) {
            unlink_waiter(p, w);
            break;
        }
    }
    pthread_cond_destroy(&w->cond);
    return w->state;
}

/* Hands out a connection of pool p within `timeout` seconds (< 0: the
 * pool's acquire_timeout).  On success *out belongs to the caller until
 * prt_release.  On failure err carries the pool's state. */
int prt_acquire(prt_pool *p, double timeout, prt_conn **out, char *err, size_t errlen)
{
    if (!p || !out)
        return PRT_EINVAL;
    double start = prt_now();
    double deadline = start + (timeout < 0 ? p->opts.acquire_timeout : timeout);
    prt_conn *c = NULL;
    prt__pstate *ps = atomic_load(&p->rt->lua_hot) ? prt__policy_thread(p->rt) : NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->closed) {
            int rc = closed_error(p, err, errlen);
            pthread_mutex_unlock(&p->mu);
            return rc;
        }
        int got = W_WAITING;
        prt__waiter w;
        if (!p->wq_head && p->nidle > 0) {
            c = take_idle(p, prt__pick(p, ps));
            p->in_use++;
            got = W_CONN;
        } else if (!p->wq_head && p->total < p->max) {
            p->total++;
            p->opening++;
            got = W_SLOT;
        } else {
            double wait = deadline - prt_now();
            int mode = prt__pstate_mode(ps, PRT__H_OVERFLOW) == PRT__MODE_LUA
                           ? prt__hook_overflow(ps, p, wait, &wait)
                           : PRT__OVF_WAIT;
            if (mode == PRT__OVF_FAIL) {
                int rc = full_error(p, err, errlen);
                pthread_mutex_unlock(&p->mu);
                return rc;
            }
            if (mode == PRT__OVF_GROW) { /* over max; closed again on release */
                p->total++;
                p->opening++;
                p->grown++;
                got = W_SLOT;
            } else { /* wait; evict_idle waits too until a global cap exists */
                double until = prt_now() + wait;
                got = wait_turn(p, until < deadline ? until : deadline, &w);
                c = w.conn;
            }
        }
        if (got == W_CLOSED)
            continue;
        if (got == W_WAITING) {
            int rc = timeout_error(p, prt_now() - start, err, errlen);
            pthread_mutex_unlock(&p->mu);
            return rc;
        }
        pthread_mutex_unlock(&p->mu);
        if (got == W_SLOT) {
            int rc = open_in_slot(p, deadline, 0, &c, err, errlen);
            if (rc != PRT_OK)
                return rc;
            pthread_mutex_lock(&p->mu);
            break;
        }
        /* An idle connection: check it before handing it out. */
        double now = prt_now();
        int expired = prt__conn_expired(c, now);
        if (!expired && (now - c->returned_at < p->opts.validate_idle || prt__conn_alive(c))) {
            pthread_mutex_lock(&p->mu);
            break;
        }
        pthread_mutex_lock(&p->mu);
        p->in_use--;
        drop_locked(p, expired ? PRT__CLOSE_LIFETIME : PRT__CLOSE_BROKEN);
        pthread_mutex_unlock(&p->mu);
        prt__conn_close(c);
        c = NULL;
        pthread_mutex_lock(&p->mu);
    }
    double now = prt_now();
    p->acquire_total++;
    p->acquire_wait_us += (uint64_t)((now - start) * 1e6);
    p->last_used_at = now;
    pthread_mutex_unlock(&p->mu);
    c->uses++;
    *out = c;
    return PRT_OK;
}

/* --- release -------------------------------------------------------------- */

/* Gives a connection back.  `broken` (or a failed reset) closes it instead
 * of reusing it; so do an expired lifetime, a shrunk pool and a closed one. */
void prt_release(prt_conn *c, int broken)
{
    if (!c)
        return;
    prt_pool *p = c->pool;
    double now = prt_now();
    if (!broken)
        broken = prt__conn_reset(c, now + p->opts.acquire_timeout) != PRT_OK;
    int reason = broken ? PRT__CLOSE_BROKEN : prt__conn_expired(c, now) ? PRT__CLOSE_LIFETIME : -1;
    pthread_mutex_lock(&p->mu);
    p->in_use--;
    p->last_used_at = now;
    if (reason < 0 && p->closed)
        reason = PRT__CLOSE_EVICTED;
    else if (reason < 0 && p->total > p->max)
        reason = PRT__CLOSE_SHRINK;
    if (reason >= 0) {
        drop_locked(p, reason);
        pthread_mutex_unlock(&p->mu);
        prt__conn_close(c);
        return;
    }
    c->returned_at = now;
    put_idle(p, c);
    pthread_mutex_unlock(&p->mu);
}

/* --- closing and reaping -------------------------------------------------- */

/* Moves idle connections matching `pred` out of the list (oldest first,
 * keeping at least `keep` idle) into `out`; returns how many. */
static int take_where(prt_pool *p, int (*pred)(prt_pool *, prt_conn *, double), double now,
                      int keep, prt_conn **out)
{
    int n = 0;
    for (int i = 0; i < p->nidle && p->nidle > keep;) {
        if (pred(p, p->idle[i], now))
            out[n++] = take_idle(p, i);
        else
            i++;
    }
    return n;
}

static int is_any(prt_pool *p, prt_conn *c, double now) { (void)p; (void)c; (void)now; return 1; }
static int is_expired(prt_pool *p, prt_conn *c, double now) { (void)p; return prt__conn_expired(c, now); }
static int is_stale(prt_pool *p, prt_conn *c, double now)
{
    return p->opts.idle_timeout > 0 && now - c->returned_at >= p->opts.idle_timeout;
}

static void close_all(prt_conn **cs, int n)
{
    for (int i = 0; i < n; i++)
        prt__conn_close(cs[i]);
}

/* Stops new acquires, wakes every waiter with an error, closes idle
 * connections; in-use ones close as they are released. */
void prt__pool_close(prt_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    prt__waiter *w;
    while ((w = dequeue_head(p)) != NULL) {
        w->state = W_CLOSED;
        pthread_cond_signal(&w->cond);
    }
    int n = p->nidle;
    prt_conn **cs = malloc((size_t)(n ? n : 1) * sizeof *cs);
    if (cs) {
        n = take_where(p, is_any, 0, 0, cs);
        p->total -= n;
        p->closed_by[PRT__CLOSE_EVICTED] += (uint64_t)n;
    }
    pthread_mutex_unlock(&p->mu);
    if (cs)
        close_all(cs, n);
    free(cs);
}

/* One reap cycle for one pool: close idle connections past their lifetime
 * or idle timeout (never going below min_idle for the latter), and above a
 * shrunk max; then open connections up to min_idle.  Returns how many
 * connections were closed. */
/* The reap hook's choice, moved out of the idle list; -1: no hook. */
static int take_reaped(prt_pool *p, prt__pstate *ps, double now, prt_conn **out)
{
    if (prt__pstate_mode(ps, PRT__H_REAP) != PRT__MODE_LUA || p->nidle == 0)
        return -1;
    unsigned char *close = malloc((size_t)p->nidle);
    int n = close ? prt__hook_reap(ps, p, now, close) : -1;
    if (n > 0) {
        int k = 0;
        for (int i = 0, j = 0; i < p->nidle; i++) {
            if (close[i])
                out[k++] = p->idle[i];
            else
                p->idle[j++] = p->idle[i];
        }
        p->nidle -= k;
    }
    free(close);
    return n;
}

int prt__pool_reap(prt_pool *p, double now)
{
    prt__pstate *ps = prt__policy_thread(p->rt);
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    prt_conn **cs = malloc((size_t)(p->nidle ? p->nidle : 1) * sizeof *cs);
    if (!cs) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    int nl = take_where(p, is_expired, now, 0, cs);
    int ns = take_reaped(p, ps, now, cs + nl);
    if (ns < 0)
        ns = take_where(p, is_stale, now, p->min_idle, cs + nl);
    int over = p->total - nl - ns - p->max;
    int nk = take_where(p, is_any, now, over > 0 ? p->nidle - over : p->nidle, cs + nl + ns);
    p->total -= nl + ns + nk;
    p->closed_by[PRT__CLOSE_LIFETIME] += (uint64_t)nl;
    p->closed_by[PRT__CLOSE_IDLE] += (uint64_t)ns;
    p->closed_by[PRT__CLOSE_SHRINK] += (uint64_t)nk;
    grant_slots(p);
    int want = p->min_idle - p->nidle - p->opening;
    if (want > p->max - p->total)
        want = p->max - p->total;
    if (want < 0 || p->wq_head) /* waiters open their own connections */
        want = 0;
    p->total += want;
    p->opening += want;
    double deadline = now + p->opts.acquire_timeout;
    pthread_mutex_unlock(&p->mu);
    close_all(cs, nl + ns + nk);
    free(cs);
    for (int i = 0; i < want; i++) {
        char err[PRT__ERRLEN];
        prt_conn *c = NULL;
        if (open_in_slot(p, deadline, 1, &c, err, sizeof err) != PRT_OK) {
            prt__logf(PRT_LOG_WARN, "%s (min_idle refill)", err);
            pthread_mutex_lock(&p->mu);
            p->total -= want - i - 1;
            p->opening -= want - i - 1;
            grant_slots(p);
            pthread_mutex_unlock(&p->mu);
            break;
        }
    }
    return nl + ns + nk;
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
    s->connections_created_total = p->created_total;
    s->connect_errors_total = p->connect_errors;
    s->closed_idle = p->closed_by[PRT__CLOSE_IDLE];
    s->closed_lifetime = p->closed_by[PRT__CLOSE_LIFETIME];
    s->closed_broken = p->closed_by[PRT__CLOSE_BROKEN];
    s->closed_evicted = p->closed_by[PRT__CLOSE_EVICTED];
    s->closed_shrink = p->closed_by[PRT__CLOSE_SHRINK];
    s->grown_total = p->grown;
    pthread_mutex_unlock(&p->mu);
    return PRT_OK;
}

/* Asks the size hook for max and min_idle (default: as configured) and
 * applies them: a larger max serves waiters at once; a smaller one closes
 * idle connections above it now and in-use ones as they come back. */
void prt__pool_apply_size(prt_pool *p)
{
    int max = p->opts.max, min_idle = p->opts.min_idle;
    prt__pstate *ps = prt__policy_thread(p->rt);
    if (prt__pstate_mode(ps, PRT__H_SIZE) == PRT__MODE_LUA)
        prt__hook_size(ps, p, &max, &min_idle);
    pthread_mutex_lock(&p->mu);
    p->max = max;
    p->min_idle = min_idle;
    grant_slots(p);
    int over = p->total - p->max;
    prt_conn **cs = over > 0 ? malloc((size_t)over * sizeof *cs) : NULL;
    int n = cs ? take_where(p, is_any, 0, p->nidle - over, cs) : 0;
    p->total -= n;
    p->closed_by[PRT__CLOSE_SHRINK] += (uint64_t)n;
    pthread_mutex_unlock(&p->mu);
    close_all(cs, n);
    free(cs);
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
