/*
 * acquire.c -- the hot path: handing out and taking back connections.
 *
 * Fairness (the pool option `handoff`, README "Fair waiting").  Callers
 * that cannot be served at once queue first-come first-served, and a freed
 * slot always becomes the oldest waiter's right to open a connection.  A
 * released connection is handed over in one of two ways:
 *
 *   "barging" (the default): it goes idle, and the oldest waiter is woken
 *   to compete for it; a caller that is running now may take it first.  So
 *   a hand-off under contention costs no wake-up and schedule of a parked
 *   thread while the connection sits reserved for it (puddle#46; Go's
 *   sync.Mutex).  Starvation is bounded as in sync.Mutex's starvation
 *   mode: once the oldest waiter has waited handoff_bound (PRT_HANDOFF_BOUND_MS by default), nobody
 *   may pass it (prt__may_barge) and every release goes straight to the
 *   oldest waiter until the queue's head is younger than the bound again.
 *   Waiters behind it are younger, so a waiter waits at most the bound plus
 *   one release per waiter queued ahead of it.  Before queueing, a caller
 *   that finds nothing yields its CPU up to twice (yielded): the holders
 *   may be threads the OS preempted mid-cycle.
 *
 *   "fifo": it goes straight to the oldest waiter (its `conn` is set and
 *   only its condvar is signalled), and new callers never pass a non-empty
 *   queue.  Strict order, at a wake-up and a schedule per contended cycle.
 *
 * Either way only one waiter is woken per release: no thundering herd.
 *
 * An acquire reads like its algorithm (prt_acquire): serve at once from
 * idle (if nobody queues ahead, or barging is allowed) or a free slot if
 * nobody queues ahead (try_now); otherwise the
 * `overflow` policy decides (overflow): wait (the default), fail at once,
 * grow past the pool's max (never past the global cap), or evict_idle --
 * close the least recently used idle connection of another pool to free a
 * global slot (slots.c); a connection that has been idle a while is
 * checked before it goes out (usable); a slot is turned into a connection
 * outside the lock, against the same deadline.  Slots and their return
 * (prt__retire) live in slots.c.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* What one look at the pool gave the caller (errors are negative PRT_E*). */
enum { GOT_NOTHING = 1, GOT_CONN, GOT_SLOT, GOT_AGAIN, GOT_TIMEOUT };

/* Fills err with `what` and the pool's state; counts timeouts.  mu held. */
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
              p->closed == PRT_POOL_DRAINING ? "runtime is shutting down" : "pool was evicted");
    return PRT_ECLOSED;
}

/* The in-use list, for leak detection (mu held). */
static void in_use_link(prt_pool *p, prt_conn *c, double now)
{
    c->acquired_at = now;
    c->leak_reported = 0;
    c->in_use_prev = NULL;
    c->in_use_next = p->in_use_list;
    if (p->in_use_list)
        p->in_use_list->in_use_prev = c;
    p->in_use_list = c;
}

static void in_use_unlink(prt_pool *p, prt_conn *c)
{
    if (c->in_use_prev)
        c->in_use_prev->in_use_next = c->in_use_next;
    else
        p->in_use_list = c->in_use_next;
    if (c->in_use_next)
        c->in_use_next->in_use_prev = c->in_use_prev;
}

/* Takes the idle connection `pick` chooses, counted in use.  mu held. */
static int take_idle(prt_pool *p, prt__pstate *ps, prt_conn **c)
{
    *c = prt__take_idle(p, prt__pick(p, ps));
    p->in_use++;
    return GOT_CONN;
}

/* Serves the caller at once: an idle connection chosen by `pick` unless a
 * waiter may not be passed (prt__may_barge), else a free slot if nobody
 * queues ahead.  Returns GOT_CONN with *c, GOT_SLOT, or GOT_NOTHING.  mu
 * held. */
static int try_now(prt_pool *p, prt__pstate *ps, prt_conn **c)
{
    if (p->nidle > 0 && prt__may_barge(p))
        return take_idle(p, ps, c);
    if (p->wq_head)
        return GOT_NOTHING;
    return prt__slot_take(p, 0) ? GOT_SLOT : GOT_NOTHING;
}

/* Waits in the queue until handed a connection (GOT_CONN, *c) or a slot
 * (GOT_SLOT), the pool closes (GOT_AGAIN: the caller looks again), or the
 * deadline passes (GOT_TIMEOUT).  Woken to compete ("barging"), it takes
 * an idle connection if one is left and it is the oldest waiter or may
 * pass it; otherwise it waits on in its place.  mu held; released while
 * waiting. */
static int wait_turn(prt_pool *p, prt__pstate *ps, double deadline, prt_conn **c)
{
    prt__waiter w;
    struct timespec ts;
    prt__abstime(deadline, &ts);
    prt__cond_init(&w.cond);
    w.conn = NULL;
    w.state = PRT__W_WAITING;
    w.nudged = 0;
    w.since = prt_now();
    prt__waiter_push(p, &w);
    int timed_out = 0;
    while (w.state == PRT__W_WAITING && !timed_out) {
        timed_out = prt__cond_timedwait(&w.cond, p, &ts) == ETIMEDOUT;
        w.nudged = 0;
        if (w.state != PRT__W_WAITING)
            break;
        if (p->nidle > 0 && (p->wq_head == &w || prt__may_barge(p))) {
            prt__waiter_unlink(p, &w);
            take_idle(p, ps, &w.conn);
            w.state = PRT__W_CONN;
            if (p->nidle > 0)
                prt__waiter_nudge(p); /* the next waiter competes for what is left */
        } else if (timed_out) {
            prt__waiter_unlink(p, &w);
        }
    }
    pthread_cond_destroy(&w.cond);
    *c = w.conn;
    return w.state == PRT__W_CONN ? GOT_CONN : w.state == PRT__W_SLOT ? GOT_SLOT
         : w.state == PRT__W_CLOSED ? GOT_AGAIN : GOT_TIMEOUT;
}

/* "barging": a caller that finds nothing to take gives up its CPU once
 * before it queues (at most YIELDS times per acquire), and then looks
 * again.  With more threads than cores, the connections are often held by
 * threads the OS preempted between acquire and release; yielding lets one
 * of them run and release, instead of this caller parking and being woken
 * (a futex wait, a wake-up and a schedule).  Where threads have cores to
 * themselves sched_yield returns at once.  Returns 1 when it yielded.  mu
 * held; released while yielding. */
enum { YIELDS = 2 };
static int yielded(prt_pool *p, int *left)
{
    if (p->fifo || *left <= 0)
        return 0;
    --*left;
    prt__unlock(p);
    sched_yield();
    prt__lock(p);
    return 1;
}

/* The overflow hook's (or the built-in) mode; *wait gets how long to wait. */
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

/* The caller cannot be served now; the overflow policy decides what it
 * gets: PRT_EFULL (fail, err set), a slot over max (grow), GOT_AGAIN after
 * another pool's idle connection was closed (evict_idle), or else what
 * waiting its turn gives (wait_turn).  mu held; released while evicting or
 * waiting. */
static int overflow(prt_pool *p, prt__pstate *ps, double deadline, prt_conn **c, char *err, size_t errlen)
{
    int global = !p->wq_head && p->total < p->max; /* blocked by max_connections only */
    double wait;
    int mode = overflow_mode(p, ps, deadline, &wait);
    if (mode == PRT__OVF_FAIL) {
        char what[128];
        if (global)
            snprintf(what, sizeof what, "max_connections=%d reached across pools and the overflow policy says fail",
                     atomic_load(&p->rt->cap));
        else
            snprintf(what, sizeof what, "pool is full and the overflow policy says fail");
        return fail(p, PRT_EFULL, err, errlen, what);
    }
    if (mode == PRT__OVF_GROW && !p->wq_head && prt__slot_take(p, 1)) {
        p->grown++; /* over max; closed again on release */
        return GOT_SLOT;
    }
    if (mode == PRT__OVF_EVICT_IDLE && global) {
        prt__unlock(p); /* never hold two pools' locks */
        int evicted = prt__evict_idle_elsewhere(p->rt, p, PRT__CLOSE_EVICTED);
        prt__lock(p);
        if (evicted)
            return GOT_AGAIN;
    }
    if (p->total < p->max && p->rt && p->rt->shared_budget)
        prt__budget_blocked(p->rt); /* waits for the processes' shared budget */
    double until = prt_now() + wait;
    return wait_turn(p, ps, until < deadline ? until : deadline, c);
}

/* Whether connection c, just taken from idle or handed over, may go out.
 * A fresh one (released less than validate_idle ago) goes out under this
 * same lock, and *now keeps the clock reading it was judged by: `at`, one
 * taken just before the caller took mu (it did not wait since, so the
 * reading is older only by the lock's wait: the clock stays out of the
 * critical section on the fast path), or when 0 a new one.  An older one
 * has its socket checked outside the lock (*now = 0).  A dead or expired
 * one is retired and 0 returned: the caller looks again.  mu held on entry
 * and on return. */
static int usable(prt_pool *p, prt_conn *c, double at, double *now)
{
    *now = at > 0 ? at : prt_now();
    int expired = prt__conn_expired(c, *now);
    if (!expired && *now - c->returned_at < p->opts.validate_idle)
        return 1;
    *now = 0;
    prt__unlock(p);
    int alive = !expired && prt__conn_alive(c);
    prt__lock(p);
    if (alive)
        return 1;
    p->in_use--;
    prt__retire(p, &c, 1, expired ? PRT__CLOSE_LIFETIME : PRT__CLOSE_BROKEN);
    prt__lock(p);
    return 0;
}

/* Counts the acquire (how long it waited, in the histogram) and puts c on
 * the in-use list.  now: a clock reading from under this lock, or 0.  mu
 * held. */
static void count_acquire(prt_pool *p, prt_conn *c, double start, double now)
{
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
    in_use_link(p, c, now);
}

/* Looks until the caller has a connection (GOT_CONN, *c, *now as for
 * usable), a slot to open one in (GOT_SLOT), or an error (negative, err
 * set; a timeout counted).  at: as for usable, for the first look.  mu
 * held on entry and on return. */
static int look(prt_pool *p, prt__pstate *ps, double start, double at, double deadline, prt_conn **c,
                double *now, char *err, size_t errlen)
{
    int got = GOT_AGAIN, yields = YIELDS;
    for (; got == GOT_AGAIN; at = 0) {
        if (p->closed)
            return closed_error(p, err, errlen);
        got = try_now(p, ps, c);
        if (got == GOT_NOTHING) {
            at = 0; /* it yields or waits: the reading goes stale */
            got = yielded(p, &yields) ? GOT_AGAIN : overflow(p, ps, deadline, c, err, errlen);
        }
        if (got == GOT_CONN && !usable(p, *c, at, now))
            got = GOT_AGAIN;
    }
    if (got == GOT_TIMEOUT) {
        char what[64];
        snprintf(what, sizeof what, "acquire timed out after %.3fs", prt_now() - start);
        got = fail(p, PRT_ETIMEDOUT, err, errlen, what);
    }
    return got;
}

/* Hands out a connection of pool p within `timeout` seconds (< 0: the
 * pool's acquire_timeout).  On success *out belongs to the caller until
 * prt_release.  On failure err carries the pool's state.  A fleet
 * runtime's connect refused because the server is full does not fail the
 * caller: the budget shrinks to what is held and the caller looks again,
 * waiting its turn until the deadline (fleet.c). */
int prt_acquire(prt_pool *p, double timeout, prt_conn **out, char *err, size_t errlen)
{
    if (!p || !out)
        return PRT_EINVAL;
    double start = prt_now(), now = 0;
    double deadline = start + (timeout < 0 ? p->opts.acquire_timeout : timeout);
    prt__pstate *ps = p->rt && atomic_load(&p->rt->acquire_hooks_lua) ? prt__policy_thread(p->rt) : NULL;
    prt_conn *c = NULL;
    prt__lock(p);
    int got = look(p, ps, start, start, deadline, &c, &now, err, errlen);
    while (got == GOT_SLOT) {
        prt__unlock(p); /* connect outside the lock, within the same deadline */
        int rc = prt__open_in_slot(p, deadline, 0, &c, err, errlen);
        if (rc != PRT_OK && !prt__fleet_refused(p->rt, err))
            return p->rec ? prt__record_failed(p, start, rc) : rc;
        if (rc != PRT_OK)
            prt__fleet_server_full(p->rt, deadline);
        prt__lock(p);
        if (rc == PRT_OK)
            break;
        got = look(p, ps, start, 0, deadline, &c, &now, err, errlen);
    }
    if (got < 0) {
        prt__unlock(p);
        return p->rec ? prt__record_failed(p, start, got) : got;
    }
    count_acquire(p, c, start, now);
    prt__unlock(p);
    prt__pool_ref(p); /* a connection in use keeps its pool alive */
    c->uses++;
    if (p->rec)
        prt__record_acquired(c, start);
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
    if (p->rec)
        prt__record_released(c, now);
    if (!broken)
        broken = prt__conn_reset(c, now + p->opts.acquire_timeout) != PRT_OK;
    int reason = broken ? PRT__CLOSE_BROKEN : prt__conn_expired(c, now) ? PRT__CLOSE_LIFETIME : -1;
    prt__lock(p);
    p->in_use--;
    p->last_used_at = now;
    in_use_unlink(p, c);
    if (c->leak_reported)
        prt__logf(PRT_LOG_WARN, "pool \"%s\": connection %llu released after %.3fs (reported as a possible leak)",
                  p->name, (unsigned long long)c->id, now - c->acquired_at);
    if (reason < 0 && p->closed)
        reason = PRT__CLOSE_EVICTED;
    else if (reason < 0 && (p->total > p->max || prt__over_cap(p->rt)))
        reason = PRT__CLOSE_SHRINK; /* the pool's max or the runtime's cap shrank */
    if (reason < 0) {
        c->returned_at = now;
        if (prt__hand_back(p, c) != 0)
            reason = PRT__CLOSE_BROKEN;
    }
    if (reason >= 0)
        prt__retire(p, &c, 1, reason);
    else
        prt__unlock(p);
    prt_pool_unref(p);
}
