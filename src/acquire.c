/*
 * acquire.c -- the hot path: handing out and taking back connections.
 *
 * Fairness: callers that cannot be served at once queue first-come
 * first-served.  A released connection goes straight to the oldest waiter
 * (its `conn` is set and only its condvar is signalled), and a freed slot
 * becomes that waiter's right to open a connection; new callers never barge
 * past a non-empty queue.  So there is no thundering herd and no starvation.
 *
 * When a caller would have to wait -- the pool is at its max, or the
 * runtime at max_connections -- the `overflow` policy decides: wait (the
 * default), fail at once, grow past the pool's max (never past the global
 * cap), or evict_idle: close the least recently used idle connection of
 * another pool to free a global slot.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Fills err with `what` and the pool's state; counts timeouts. */
static int fail(prt_pool *p, int rc, char *err, size_t errlen, const char *what)
{
    char st[128];
    prt__pool_state(p, st, sizeof st);
    prt__errf(err, errlen, "pool \"%s\": %s%s", p->name, what, st);
    if (rc == PRT_ETIMEDOUT || rc == PRT_EFULL)
        p->acquire_timeouts++;
    return rc;
}

static int closed_error(prt_pool *p, char *err, size_t errlen)
{
    prt__errf(err, errlen, "pool \"%s\": %s", p->name,
              p->closed == PRT__CLOSED_DRAINING ? "runtime is shutting down" : "pool was evicted");
    return PRT_ECLOSED;
}

/* After consecutive connect failures, attempts are spaced out (doubling
 * from 50 ms up to connect_backoff_max) so a server that is down is not
 * hammered; meanwhile acquires that would connect fail at once with the
 * last error.  Returns 0 to go ahead, or PRT_ECONNECT with err.  mu held. */
static int backing_off(prt_pool *p, char *err, size_t errlen)
{
    double left = p->backoff_until - prt_now();
    if (left <= 0)
        return PRT_OK;
    p->backoff_refusals++;
    prt__errf(err, errlen, "pool \"%s\": connect failed %d time(s) in a row; next attempt in %.2fs; last error: %s",
              p->name, p->connect_failures, left, p->last_connect_error);
    return PRT_ECONNECT;
}

static void connect_result(prt_pool *p, int rc, const char *err)
{
    if (rc == PRT_OK) {
        p->connect_failures = 0;
        p->backoff = 0;
        return;
    }
    p->connect_failures++;
    p->connect_errors++;
    p->backoff = p->backoff > 0 ? p->backoff * 2 : 0.05;
    if (p->backoff > p->opts.connect_backoff_max)
        p->backoff = p->opts.connect_backoff_max;
    p->backoff_until = prt_now() + p->backoff;
    const char *msg = err ? strstr(err, "\": ") : NULL; /* drop the pool prefix */
    snprintf(p->last_connect_error, sizeof p->last_connect_error, "%s", msg ? msg + 3 : "unknown");
}

/* Opens a connection into a slot already reserved.  On success it is
 * counted in use (for the caller) or put idle (min_idle refill). */
int prt__open_in_slot(prt_pool *p, double deadline, int for_idle, prt_conn **out, char *err, size_t errlen)
{
    prt_conn *c = NULL;
    pthread_mutex_lock(&p->mu);
    int rc = backing_off(p, err, errlen);
    pthread_mutex_unlock(&p->mu);
    if (rc == PRT_OK) {
        rc = prt__conn_open(p, deadline, &c, err, errlen);
        pthread_mutex_lock(&p->mu);
        connect_result(p, rc, err);
    } else {
        pthread_mutex_lock(&p->mu);
    }
    p->opening--;
    if (rc == PRT_OK) {
        c->id = ++p->next_conn_id;
        p->created_total++;
        if (!for_idle)
            p->in_use++;
        else if (prt__put_idle(p, c) != 0)
            rc = PRT_ENOMEM;
    }
    if (rc != PRT_OK) {
        prt__slot_give(p, 1, c ? PRT__CLOSE_BROKEN : PRT__CLOSE_NREASONS);
        prt__grant_slots(p);
        size_t n = err ? strlen(err) : errlen;
        if (n < errlen)
            prt__pool_state(p, err + n, errlen - n);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != PRT_OK) {
        prt__conn_close(c);
        prt__pool_after_close(p);
        return rc;
    }
    *out = c;
    return PRT_OK;
}

/* The in-use list, for leak detection (mu held). */
static void busy_link(prt_pool *p, prt_conn *c, double now)
{
    c->acquired_at = now;
    c->leak_reported = 0;
    c->busy_prev = NULL;
    c->busy_next = p->busy;
    if (p->busy)
        p->busy->busy_prev = c;
    p->busy = c;
}

static void busy_unlink(prt_pool *p, prt_conn *c)
{
    if (c->busy_prev)
        c->busy_prev->busy_next = c->busy_next;
    else
        p->busy = c->busy_next;
    if (c->busy_next)
        c->busy_next->busy_prev = c->busy_prev;
}

/* Waits in the FIFO until handed a connection or a slot, or the deadline.
 * Called and returns with p->mu held; returns the waiter's state. */
static int wait_turn(prt_pool *p, double deadline, prt__waiter *w)
{
    struct timespec ts;
    prt__abstime(deadline, &ts);
    prt__cond_init(&w->cond);
    w->conn = NULL;
    w->state = PRT__W_WAITING;
    w->since = prt_now();
    prt__waiter_push(p, w);
    while (w->state == PRT__W_WAITING) {
        if (pthread_cond_timedwait(&w->cond, &p->mu, &ts) == ETIMEDOUT && w->state == PRT__W_WAITING) {
            prt__waiter_unlink(p, w);
            break;
        }
    }
    pthread_cond_destroy(&w->cond);
    return w->state;
}

/* The overflow decision for a caller that cannot be served now. */
static int overflow_mode(prt_pool *p, prt__pstate *ps, double deadline, double *wait)
{
    *wait = deadline - prt_now();
    int mode = prt__pstate_mode(ps, PRT__H_OVERFLOW);
    if (mode == PRT__MODE_LUA)
        return prt__hook_overflow(ps, p, *wait, wait);
    if (!ps && p->rt)
        mode = atomic_load(&p->rt->overflow_mode);
    return mode > 0 ? mode : PRT__OVF_WAIT;
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
    prt__pstate *ps = p->rt && atomic_load(&p->rt->lua_hot) ? prt__policy_thread(p->rt) : NULL;
    double now = 0; /* set when a fresh idle connection leaves at once */
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->closed) {
            int rc = closed_error(p, err, errlen);
            pthread_mutex_unlock(&p->mu);
            return rc;
        }
        int got = PRT__W_WAITING;
        prt__waiter w;
        if (!p->wq_head && p->nidle > 0) {
            c = prt__take_idle(p, prt__pick(p, ps));
            p->in_use++;
            got = PRT__W_CONN;
        } else if (!p->wq_head && prt__slot_take(p, 0)) {
            got = PRT__W_SLOT;
        } else {
            int global = !p->wq_head && p->total < p->max; /* blocked by max_connections */
            double wait;
            int mode = overflow_mode(p, ps, deadline, &wait);
            if (mode == PRT__OVF_FAIL) {
                char what[128];
                if (global)
                    snprintf(what, sizeof what, "max_connections=%d reached across pools and the overflow policy says fail",
                             p->rt->opts.max_connections);
                else
                    snprintf(what, sizeof what, "pool is full and the overflow policy says fail");
                int rc = fail(p, PRT_EFULL, err, errlen, what);
                pthread_mutex_unlock(&p->mu);
                return rc;
            }
            if (mode == PRT__OVF_GROW && !p->wq_head && prt__slot_take(p, 1)) {
                p->grown++; /* over max; closed again on release */
                got = PRT__W_SLOT;
            } else if (mode == PRT__OVF_EVICT_IDLE && global) {
                pthread_mutex_unlock(&p->mu); /* never hold two pools' locks */
                int evicted = prt__registry_evict_idle(p->rt, p);
                pthread_mutex_lock(&p->mu);
                if (evicted)
                    continue;
                double until = prt_now() + wait;
                got = wait_turn(p, until < deadline ? until : deadline, &w);
                c = w.conn;
            } else {
                double until = prt_now() + wait;
                got = wait_turn(p, until < deadline ? until : deadline, &w);
                c = w.conn;
            }
        }
        if (got == PRT__W_CLOSED)
            continue;
        if (got == PRT__W_WAITING) {
            char what[64];
            snprintf(what, sizeof what, "acquire timed out after %.3fs", prt_now() - start);
            int rc = fail(p, PRT_ETIMEDOUT, err, errlen, what);
            pthread_mutex_unlock(&p->mu);
            return rc;
        }
        if (got == PRT__W_CONN) {
            /* Fresh (just released, or idle less than validate_idle) goes
             * out under this same lock; an older one has its socket checked
             * first, outside it. */
            now = prt_now();
            int expired = prt__conn_expired(c, now);
            if (!expired && now - c->returned_at < p->opts.validate_idle)
                break;
            now = 0;
            pthread_mutex_unlock(&p->mu);
            int alive = !expired && prt__conn_alive(c);
            pthread_mutex_lock(&p->mu);
            if (alive)
                break;
            p->in_use--;
            prt__slot_give(p, 1, expired ? PRT__CLOSE_LIFETIME : PRT__CLOSE_BROKEN);
            prt__grant_slots(p);
            pthread_mutex_unlock(&p->mu);
            prt__conn_close(c);
            prt__pool_after_close(p);
            c = NULL;
            pthread_mutex_lock(&p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu); /* a slot: connect outside the lock */
        int rc = prt__open_in_slot(p, deadline, 0, &c, err, errlen);
        if (rc != PRT_OK)
            return rc;
        pthread_mutex_lock(&p->mu);
        break;
    }
    if (now == 0)
        now = prt_now();
    double waited = now - start;
    p->acquire_total++;
    p->acquire_wait_us += (uint64_t)(waited * 1e6);
    int b = 0;
    while (waited > prt__wait_bounds[b])
        b++;
    p->wait_buckets[b]++;
    p->last_used_at = now;
    busy_link(p, c, now);
    pthread_mutex_unlock(&p->mu);
    prt__pool_ref(p); /* a connection in use keeps its pool alive */
    c->uses++;
    *out = c;
    return PRT_OK;
}

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
    busy_unlink(p, c);
    if (c->leak_reported)
        prt__logf(PRT_LOG_WARN, "pool \"%s\": connection %llu released after %.3fs (reported as a possible leak)",
                  p->name, (unsigned long long)c->id, now - c->acquired_at);
    if (reason < 0 && p->closed)
        reason = PRT__CLOSE_EVICTED;
    else if (reason < 0 && p->total > p->max)
        reason = PRT__CLOSE_SHRINK;
    if (reason < 0) {
        c->returned_at = now;
        if (prt__put_idle(p, c) != 0)
            reason = PRT__CLOSE_BROKEN;
    }
    if (reason >= 0) {
        prt__slot_give(p, 1, reason);
        prt__grant_slots(p);
    }
    pthread_mutex_unlock(&p->mu);
    if (reason >= 0) {
        prt__conn_close(c);
        prt__pool_after_close(p);
    }
    prt_pool_unref(p);
}
