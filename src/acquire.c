/*
 * acquire.c -- the hot path: handing out and taking back connections.
 *
 * Fairness (the pool option `handoff`, docs/guarantees.md#fair-waiting).  Callers
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
 * An acquire reads like its algorithm (acq_step): serve at once from
 * idle (if nobody queues ahead, or barging is allowed) or a free slot if
 * nobody queues ahead (try_now); otherwise the
 * `overflow` policy decides (overflow): wait (the default), fail at once,
 * grow past the pool's max (never past the global cap), or evict_idle --
 * close the least recently used idle connection of another pool to free a
 * global slot (pools.c); a connection that has been idle a while is
 * checked before it goes out (usable); a slot is turned into a connection
 * outside the lock, against the same deadline.  Slots are capacity.c's;
 * their return (prt__retire_unlock) is pool_slots.c's.
 *
 * Decisions are separate from waiting.  The algorithm is a resumable state
 * machine (struct prt__acq, internal.h): acq_step makes every decision
 * under the pool's lock and returns where it would block -- park until
 * woken or a deadline, yield the CPU, check an idle socket, connect into a
 * reserved slot -- and its driver does that and steps again.  prt_acquire
 * is the threads' driver (a condvar, sched_yield, libpq); the simulator
 * (sim.c) drives the very same steps from events on a virtual clock, so
 * what it shows is what this code does.  Waiters are woken through
 * prt__waiter_wake (a condvar signal, or the simulator's resume event).
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* The fast path's helpers are forced inline into acq_step (as the
 * compiler chose before the acquire became a state machine), so that the
 * steps cost prt_acquire no calls. */
#define FAST static inline __attribute__((always_inline))

/* What one look at the pool gave the caller (errors are negative PRT_E*). */
enum { GOT_NOTHING = 1, GOT_CONN, GOT_SLOT, GOT_AGAIN, GOT_TIMEOUT, GOT_WAIT, GOT_DONE };
/* Where an acquire resumes (prt__acq.phase). */
enum { PH_LOOK, PH_WAITING, PH_CHECKED, PH_OPENED };

static int checked(prt__acq *a);

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

/* The caller found p closed.  A pool evicted automatically comes back
 * into the registry (prt__registry_readmit: a caller between its lookup
 * and this look never fails for an eviction); otherwise, or when that
 * fails, the caller gets PRT_ECLOSED (or admission's PRT_EFULL) with err.
 * Returns 0 when p is open again.  mu held on entry and on return,
 * released meanwhile. */
static __attribute__((noinline)) int readmitted(prt_pool *p, char *err, size_t errlen)
{
    if (!p->readmit || p->mux)
        return closed_error(p, err, errlen);
    prt__unlock(p);
    int rc = prt__registry_readmit(p, err, errlen);
    prt__lock(p);
    if (rc == PRT_OK)
        p->readmitting--;
    return rc;
}

/* The in-use list, for leak detection (mu held). */
FAST void in_use_link(prt_pool *p, prt_conn *c, double now)
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
FAST int take_idle(prt_pool *p, prt__pstate *ps, prt_conn **c)
{
    *c = prt__take_idle(p, prt__pick(p, ps));
    p->in_use++;
    PRT__ASSERT_COUNTS(p);
    return GOT_CONN;
}

/* Serves the caller at once: an idle connection chosen by `pick` unless a
 * waiter may not be passed (prt__may_barge, with the reading `now`), else a
 * free slot if nobody queues ahead.  Returns GOT_CONN with *c, GOT_SLOT, or GOT_NOTHING.  mu
 * held. */
FAST int try_now(prt_pool *p, prt__pstate *ps, prt_conn **c, double now)
{
    if (p->nidle > 0 && prt__may_barge(p, now))
        return take_idle(p, ps, c);
    if (p->wq_head)
        return GOT_NOTHING;
    return prt__slot_take(p, 0) ? GOT_SLOT : GOT_NOTHING;
}

/* Queues the caller (a->w) until `until`: the driver waits, then steps
 * again (waited).  Returns GOT_WAIT.  mu held. */
static int queue(prt__acq *a, double until)
{
    prt__waiter *w = &a->w;
    w->conn = NULL;
    w->state = PRT__W_WAITING;
    w->nudged = 0;
    w->since = prt_now();
    prt__waiter_push(a->p, w);
    a->until = until;
    a->timed_out = 0;
    a->wait_fresh = 1;
    return GOT_WAIT;
}

/* The caller's wait ended (woken, or a->timed_out): what it was handed
 * (GOT_CONN with a->c, GOT_SLOT), GOT_AGAIN when the pool closed (the
 * caller looks again), GOT_TIMEOUT, or GOT_WAIT to wait on.  Woken to
 * compete ("barging"), it takes an idle connection if one is left and it
 * is the oldest waiter or may pass it; otherwise it waits on in its place.
 * mu held. */
static int waited(prt__acq *a)
{
    prt_pool *p = a->p;
    prt__waiter *w = &a->w;
    w->nudged = 0;
    if (w->state == PRT__W_WAITING) {
        if (p->nidle > 0 && (p->wq_head == w || prt__may_barge(p, 0))) {
            prt__waiter_unlink(p, w);
            take_idle(p, a->ps, &w->conn);
            w->state = PRT__W_CONN;
            if (p->nidle > 0)
                prt__waiter_nudge(p); /* the next waiter competes for what is left */
        } else if (!a->timed_out) {
            a->wait_fresh = 0;
            return GOT_WAIT;
        } else {
            prt__waiter_unlink(p, w);
        }
    }
    a->c = w->conn;
    return w->state == PRT__W_CONN ? GOT_CONN : w->state == PRT__W_SLOT ? GOT_SLOT
         : w->state == PRT__W_CLOSED ? GOT_AGAIN : GOT_TIMEOUT;
}

/* "barging": a caller that finds nothing to take gives up its CPU once
 * before it queues (at most max_yields times per look, YIELDS in
 * prt_acquire), and then looks again.  With more threads than cores, the
 * connections are often held by threads the OS preempted between acquire
 * and release; yielding lets one of them run and release, instead of this
 * caller parking and being woken (a futex wait, a wake-up and a schedule).
 * Where threads have cores to themselves sched_yield returns at once.  The
 * simulator has no other thread to let run: it never yields. */
enum { YIELDS = 2 };
static int may_yield(prt__acq *a)
{
    if (a->p->fifo || a->yields <= 0)
        return 0;
    a->yields--;
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
 * another pool's idle connection was closed (evict_idle), or else a place
 * in the queue (GOT_WAIT).  mu held; released while evicting. */
static int overflow(prt__acq *a, char *err, size_t errlen)
{
    prt_pool *p = a->p;
    int global = !p->wq_head && p->total < p->max; /* blocked by max_connections only */
    double wait;
    int mode = overflow_mode(p, a->ps, a->deadline, &wait);
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
        int evicted = prt__pools_evict_idle(p->rt, p, PRT__CLOSE_EVICTED);
        prt__lock(p);
        if (evicted)
            return GOT_AGAIN;
    }
    if (p->total < p->max)
        prt__cap_blocked(p->rt); /* waits for a global slot: the shared budget hears of it */
    double until = prt_now() + wait;
    return queue(a, until < a->deadline ? until : a->deadline);
}

/* Whether connection a->c, just taken from idle or handed over, may go
 * out (1).  A fresh one (released less than validate_idle ago) goes out
 * under this same lock, and a->at keeps the clock reading it was judged
 * by: the one taken just before the caller took mu (it did not wait since,
 * so the reading is older only by the lock's wait: the clock stays out of
 * the critical section on the fast path), or when 0 a new one.  An older
 * one needs its socket checked outside the lock (0: the driver checks,
 * then checked() decides).  An expired one is retired (-1: look again).
 * mu held on entry and on return. */
FAST int usable(prt__acq *a)
{
    prt_pool *p = a->p;
    double now = a->at > 0 ? a->at : prt_now();
    a->expired = prt__conn_expired(a->c, now);
    a->at = 0;
    if (!a->expired && now - a->c->returned_at < p->opts.validate_idle) {
        a->at = now;
        return 1;
    }
    if (!a->expired) {
        a->phase = PH_CHECKED;
        return 0;
    }
    a->alive = 0;
    return checked(a) ? 1 : -1;
}

/* After the check of a->c: 1 when it may go out, else it is retired (the
 * caller looks again).  mu held on entry and on return. */
static int checked(prt__acq *a)
{
    prt_pool *p = a->p;
    if (a->alive)
        return 1;
    p->in_use--;
    prt__retire_unlock(p, &a->c, 1, a->expired ? PRT__CLOSE_LIFETIME : PRT__CLOSE_BROKEN);
    prt__lock(p);
    a->c = NULL;
    return 0;
}

/* Counts the acquire (how long it waited, in the histogram) and puts c on
 * the in-use list.  now: a clock reading from under this lock, or 0.  mu
 * held. */
FAST void count_acquire(prt_pool *p, prt_conn *c, double start, double now)
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

/* Starts an acquire of p within `timeout` (< 0: the pool's
 * acquire_timeout): the clock is read once, here, and that reading serves
 * the first look (so the fast path reads it outside the lock).  No lock
 * held. */
FAST void acq_init(prt__acq *a, prt_pool *p, double timeout, int max_yields)
{
    a->p = p;
    a->start = a->at = prt_now();
    a->deadline = a->start + (timeout < 0 ? p->opts.acquire_timeout : timeout);
    a->ps = p->rt && atomic_load(&p->rt->acquire_hooks_lua) ? prt__policy_thread(p->rt) : NULL;
    a->c = NULL;
    a->phase = PH_LOOK;
    a->yields = a->max_yields = max_yields;
    a->rc = PRT_OK;
    a->w.wake = NULL;
    atomic_init(&a->w.signal, 0);
}

/* One step of an acquire: from where the driver left it (a->phase) until
 * the caller has a connection (DONE, counted), an error (FAIL: a->rc, err
 * set, a timeout counted), or the driver must wait, yield, check or
 * connect (enum prt__acq_next).  It reads like the algorithm: serve at
 * once (try_now), else yield or let the overflow policy decide (overflow),
 * check what it got (usable), and look again.  mu held on entry and on
 * return (released inside only where the algorithm says). */
FAST int acq_step(prt__acq *a, char *err, size_t errlen)
{
    prt_pool *p = a->p;
    int got = GOT_AGAIN;
    switch (a->phase) {
    case PH_WAITING:
        got = waited(a);
        break;
    case PH_CHECKED:
        got = checked(a) ? GOT_DONE : GOT_AGAIN;
        break;
    case PH_OPENED:
        if (a->rc == PRT_OK)
            got = GOT_DONE;
        a->rc = PRT_OK;
        a->at = 0; /* connecting took time */
        a->yields = a->max_yields; /* a fresh look (a fleet's full server: fleet.c) */
        break;
    }
    a->phase = PH_LOOK;
    for (;;) {
        if (got == GOT_AGAIN) {
            if (p->closed && (a->rc = readmitted(p, err, errlen)) != PRT_OK)
                return PRT__ACQ_FAIL;
            got = try_now(p, a->ps, &a->c, a->at);
            if (got == GOT_NOTHING) {
                a->at = 0; /* it yields or waits: the reading goes stale */
                if (may_yield(a))
                    return PRT__ACQ_YIELD;
                got = overflow(a, err, errlen);
            }
        }
        if (got == GOT_WAIT) {
            a->phase = PH_WAITING;
            return PRT__ACQ_WAIT;
        }
        if (got == GOT_CONN) {
            int u = usable(a);
            if (u == 0)
                return PRT__ACQ_CHECK;
            got = u > 0 ? GOT_DONE : GOT_AGAIN;
        }
        if (got == GOT_DONE) {
            count_acquire(p, a->c, a->start, a->at);
            return PRT__ACQ_DONE;
        }
        if (got == GOT_SLOT) {
            a->phase = PH_OPENED;
            return PRT__ACQ_OPEN;
        }
        if (got == GOT_TIMEOUT) {
            char what[64];
            snprintf(what, sizeof what, "acquire timed out after %.3fs", prt_now() - a->start);
            got = fail(p, PRT_ETIMEDOUT, err, errlen, what);
        }
        if (got < 0) {
            a->rc = got;
            return PRT__ACQ_FAIL;
        }
    }
}

/* acq_init and acq_step for other drivers (the simulator); prt_acquire
 * has them inlined. */
void prt__acq_init(prt__acq *a, prt_pool *p, double timeout, int max_yields)
{
    acq_init(a, p, timeout, max_yields);
}

int prt__acq_step(prt__acq *a, char *err, size_t errlen)
{
    return acq_step(a, err, errlen);
}

/* The caller gets the connection a DONE step counted.  No lock held. */
void prt__acq_hand_out(prt__acq *a)
{
    prt__pool_ref(a->p); /* a connection in use keeps its pool alive */
    a->c->uses++;
}

/* prt_acquire's wait: parked on the waiter's event until woken or
 * a->until. */
static void park(prt__acq *a, struct timespec *ts)
{
    if (a->wait_fresh)
        prt__abstime(a->until, ts);
    a->timed_out = prt__park(&a->w, a->p, ts) == ETIMEDOUT;
}

/* Hands out a connection of pool p within `timeout` seconds (< 0: the
 * pool's acquire_timeout).  On success *out belongs to the caller until
 * prt_release.  On failure err carries the pool's state.  This is the
 * threads' driver of the steps above: it parks on a condvar, yields,
 * checks and connects (libpq) where the steps say.  A fleet runtime's
 * connect refused because the server is full does not fail the caller:
 * the budget shrinks to what is held and the caller looks again, waiting
 * its turn until the deadline (fleet.c). */
int prt_acquire(prt_pool *p, double timeout, prt_conn **out, char *err, size_t errlen)
{
    if (!p || !out)
        return PRT_EINVAL;
    prt__acq a;
    acq_init(&a, p, timeout, YIELDS);
    int next;
    struct timespec ts;
    prt__lock(p);
    while ((next = acq_step(&a, err, errlen)) != PRT__ACQ_DONE && next != PRT__ACQ_FAIL) {
        if (next == PRT__ACQ_WAIT) {
            park(&a, &ts);
            continue;
        }
        prt__unlock(p);
        if (next == PRT__ACQ_YIELD) {
            sched_yield();
        } else if (next == PRT__ACQ_CHECK) {
            a.alive = prt__conn_alive(a.c);
        } else {
            a.rc = prt__open_in_slot(p, a.deadline, 0, &a.c, err, errlen);
            if (a.rc != PRT_OK && !prt__cap_refused(p->rt, err))
                break; /* unlocked */
            if (a.rc != PRT_OK)
                prt__pools_server_full(p->rt, a.deadline);
        }
        prt__lock(p);
    }
    if (next == PRT__ACQ_DONE || next == PRT__ACQ_FAIL)
        prt__unlock(p);
    if (next != PRT__ACQ_DONE)
        return p->rec ? prt__record_failed(p, a.start, a.rc) : a.rc;
    prt__acq_hand_out(&a);
    if (p->rec)
        prt__record_acquired(a.c, a.start);
    *out = a.c;
    return PRT_OK;
}

/* A connection of a pool over several servers comes back: a lost
 * connection or a read-only refusal (SQLSTATE 25006) makes its server's
 * role unknown, and one whose server no longer fits the pool's
 * target_session_attrs is retired (PRT__CLOSE_ROLE) rather than reused.
 * Returns the close reason, or `reason` as it was.  No lock held. */
/* The common case of endpoint_verdict, without a call: c goes back as it
 * would (reason < 0), no error of the read-only kind (SQLSTATE class 25),
 * and its server's role is not the one its pool cannot use.  A
 * prefer-standby pool's connections take the full verdict. */
FAST int endpoint_quick_ok(const prt_conn *c, int reason)
{
    return reason < 0 && c->sqlstate[0] != '2' && c->ep_bad_role != PRT__EP_ASK &&
           atomic_load_explicit(c->ep_role, memory_order_relaxed) != c->ep_bad_role;
}

static __attribute__((noinline)) int endpoint_verdict(prt_pool *p, prt_conn *c, int reason, double now)
{
    if ((reason == PRT__CLOSE_BROKEN && c->pg && (PQstatus(c->pg) != CONNECTION_OK || c->fatal)) ||
        strcmp(c->sqlstate, "25006") == 0)
        prt__endpoints_doubt(p->endpoints, c->endpoint);
    if (reason < 0 && !prt__endpoints_fits(p->endpoints, c->endpoint, now))
        reason = PRT__CLOSE_ROLE;
    return reason;
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
    if (p->endpoints)
        reason = endpoint_quick_ok(c, reason) ? reason : endpoint_verdict(p, c, reason, now);
    prt__lock(p);
    p->in_use--;
    p->last_used_at = now;
    in_use_unlink(p, c);
    if (c->leak_reported)
        prt__logf(PRT_LOG_WARN, "pool \"%s\": connection %llu released after %.3fs (reported as a possible leak)",
                  p->name, (unsigned long long)c->id, now - c->acquired_at);
    if (reason < 0 && p->closed)
        reason = PRT__CLOSE_EVICTED;
    else if (reason < 0 && (p->total > p->max || prt__cap_over(p->rt)))
        reason = PRT__CLOSE_SHRINK; /* the pool's max or the runtime's cap shrank */
    if (reason < 0) {
        c->returned_at = now;
        if (prt__hand_back(p, c, now) != 0)
            reason = PRT__CLOSE_BROKEN;
    }
    if (reason >= 0)
        prt__retire_unlock(p, &c, 1, reason);
    else
        prt__unlock(p);
    prt_pool_unref(p);
}
