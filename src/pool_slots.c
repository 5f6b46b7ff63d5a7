/*
 * pool_slots.c -- what one pool does with its slots: open a connection into
 * one, give slots back, and the two operations that give many back at once
 * (closing the pool, a smaller max).
 *
 * Slots themselves are counted by capacity.c.  Giving them back has an
 * order, and prt__retire_by_unlock is the only place that follows it:
 *   1. p->mu is released and the connections close (network I/O is never
 *      done under a lock) -- before their slots go back, so that a slot,
 *      a global one or a unit of a budget shared with other processes,
 *      never belongs to a new connection while the old one is still open
 *      (the server would count both: nginx_budget_spec saw 13 of 12);
 *   2. p->mu is taken again and the slots go back (prt__slot_give), closes
 *      counted;
 *   3. this pool's waiters get them, oldest first (prt__pool_grant) --
 *      under the same lock as step 2, so a caller arriving now cannot take
 *      a slot a waiter is owed;
 *   4. p->mu is released;
 *   5. waiters of other pools, blocked only by the cap or the shared
 *      budget, are woken (pools.c's prt__pools_wake): that takes each of
 *      their locks in turn, so no pool lock may be held.
 *
 * Opening a connection into a reserved slot, with the pool's connect
 * backoff, is here too (prt__open_in_slot): acquire.c uses it for callers,
 * reap.c for the min_idle refill, the simulator in its two halves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Gives back n slots of p and closes their connections cs[0..n), in the
 * order the top of this file explains.  cs may be NULL (the slots'
 * connections never opened) and stays the caller's; by[reason] counts the
 * closes when the slots go back, so that stats never show a close counted
 * while its connection still counts in total.  n may be 0: waiters still get any slots a larger max made free.
 * Entered with p->mu held; returns with it released. */
void prt__retire_by_unlock(prt_pool *p, prt_conn **cs, int n, const int *by)
{
    PRT__ASSERT_HELD(p);
    p->closing += n > 0 ? n : 0;
    PRT__ASSERT_COUNTS(p);
    if (cs && n > 0) {
        prt__unlock(p);
        for (int i = 0; i < n; i++)
            prt__conn_close(cs[i]);
        prt__lock(p);
    }
    prt_runtime *rt = p->rt; /* read under mu: prt_runtime_free clears it under mu */
    prt__slot_give(p, n, by);
    prt__pool_grant(p);
    prt__unlock(p);
    if (n > 0 && prt__cap_waiting_wakes(rt))
        prt__pools_wake(rt);
}

/* prt__retire_by_unlock with every close counted under `why` (PRT__CLOSE_NONE:
 * not counted). */
void prt__retire_unlock(prt_pool *p, prt_conn **cs, int n, enum prt__close_reason why)
{
    int by[PRT__CLOSE_NREASONS];
    prt__retire_by_unlock(p, cs, n, prt__counted_as(by, why, n));
}

/* After consecutive connect failures, attempts are spaced out (doubling
 * from 50 ms up to connect_backoff_max) so a server that is down is not
 * hammered; meanwhile acquires that would connect fail at once with the
 * last error.  Returns 0 to go ahead, or PRT_ECONNECT with err.  p->mu held. */
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

/* Records a connect attempt's outcome for the backoff.  p->mu held. */
static void connect_result(prt_pool *p, int rc, const char *err)
{
    if (rc == PRT_OK) {
        p->connect_failures = 0;
        p->backoff = 0;
        p->backoff_until = 0; /* else callers are still refused, "failed 0 time(s) in a row" */
        return;
    }
    if (prt__cap_refused(p->rt, err))
        return; /* the server is full, not down: the budget paces retries (fleet.c) */
    p->connect_failures++;
    p->connect_errors++;
    p->init_sql_errors += rc == PRT_EQUERY; /* see prt__conn_open */
    p->backoff = p->backoff > 0 ? p->backoff * 2 : 0.05;
    if (p->backoff > p->opts.connect_backoff_max)
        p->backoff = p->opts.connect_backoff_max;
    p->backoff_until = prt_now() + p->backoff;
    const char *msg = err ? strstr(err, "\": ") : NULL; /* drop the pool prefix */
    snprintf(p->last_connect_error, sizeof p->last_connect_error, "%s", msg ? msg + 3 : "unknown");
}

/* The first half of prt__open_in_slot: whether a connect may be attempted
 * now (0), or PRT_ECONNECT with err while the pool backs off.  No pool
 * lock held. */
int prt__open_begin(prt_pool *p, char *err, size_t errlen)
{
    PRT__ASSERT_UNHELD(p);
    prt__lock(p);
    int rc = backing_off(p, err, errlen);
    prt__unlock(p);
    return rc;
}

/* The second half: records the outcome rc of the connect (attempted: one
 * ran; c: the connection on success).  On success it is counted in use and
 * *out is the caller's, or (for_idle, the min_idle refill) it is handed
 * back to the pool.  On failure the slot is retired and err carries the
 * pool's state.  No pool lock held. */
int prt__open_end(prt_pool *p, int attempted, int rc, prt_conn *c, int for_idle, prt_conn **out,
                  char *err, size_t errlen)
{
    prt__lock(p);
    if (attempted)
        connect_result(p, rc, err);
    p->opening--;
    if (rc == PRT_OK) {
        c->id = ++p->next_conn_id;
        p->created_total++;
        if (!for_idle)
            p->in_use++;
        else if (p->closed) /* closed meanwhile: no idle connection outlives its pool */
            rc = PRT_ECLOSED;
        else if (prt__hand_back(p, c, 0) != 0)
            rc = PRT_ENOMEM;
    }
    if (rc == PRT_OK) {
        PRT__ASSERT_COUNTS(p);
        prt__unlock(p);
        *out = c;
        return PRT_OK;
    }
    if (rc == PRT_ENOMEM || rc == PRT_ECLOSED)
        prt__errf(err, errlen, "pool \"%s\": %s", p->name,
                  rc == PRT_ENOMEM ? "out of memory" : "closed while a connection opened");
    size_t n = err ? strlen(err) : errlen;
    if (n < errlen)
        prt__pool_state(p, err + n, errlen - n);
    prt__retire_unlock(p, c ? &c : NULL, 1,
                       !c ? PRT__CLOSE_NONE : rc == PRT_ECLOSED ? PRT__CLOSE_EVICTED : PRT__CLOSE_BROKEN);
    return rc;
}

/* The endpoint hook's choice of server for a new connection of p (a pool
 * over several servers, a policy with the hook): 0-based, -1 for the
 * built-in order, -2 for none (err set).  No lock held.  The simulator's
 * connects (sim.c) ask it too. */
int prt__chosen_endpoint(prt_pool *p, char *err, size_t errlen)
{
    if (!p->endpoints || !p->rt || atomic_load_explicit(&p->rt->endpoint_mode, memory_order_relaxed) != PRT__MODE_LUA)
        return -1;
    prt__pstate *ps = prt__policy_thread(p->rt);
    if (prt__pstate_mode(ps, PRT__H_ENDPOINT) != PRT__MODE_LUA)
        return -1;
    prt_endpoint_view v[PRT__MAX_ENDPOINTS];
    int i = prt__hook_endpoint(ps, p, v, prt__endpoints_views(p->endpoints, v));
    if (i == -2)
        prt__errf(err, errlen, "pool \"%s\": connect failed: the endpoint hook chose no server", p->name);
    return i;
}

/* Opens a connection into a slot the caller reserved (capacity.c's prt__slot_take),
 * within `deadline`, with the pool's connect backoff: prt__open_end says
 * what becomes of it.  No pool lock held. */
int prt__open_in_slot(prt_pool *p, double deadline, int for_idle, prt_conn **out, char *err, size_t errlen)
{
    prt_conn *c = NULL;
    int rc = prt__open_begin(p, err, errlen), attempted = rc == PRT_OK, first;
    if (attempted)
        rc = (first = prt__chosen_endpoint(p, err, errlen)) == -2 ? PRT_ECONNECT
             : prt__conn_open(p, deadline, first, &c, err, errlen);
    return prt__open_end(p, attempted, rc, c, for_idle, out, err, errlen);
}

/* Takes up to `n` idle connections (oldest first) out of the pool into a
 * new array *out (NULL when none or out of memory: then none are taken).
 * Returns how many; the caller retires them and frees *out.  mu held. */
static int take_oldest(prt_pool *p, int n, prt_conn ***out)
{
    *out = NULL;
    if (n > p->nidle)
        n = p->nidle;
    if (n <= 0 || !(*out = malloc((size_t)n * sizeof **out)))
        return 0;
    return prt__take_where(p, NULL, 0, p->nidle - n, *out);
}

/* Stops new acquires (waiters are woken with an error), closes idle
 * connections; in-use ones close as they are released.  reason is
 * PRT_POOL_*.  No lock held. */
void prt__pool_close(prt_pool *p, int reason)
{
    if (p->mux_ops) /* its connections come back (or close) as their statements finish */
        p->mux_ops->close(p);
    prt__lock(p);
    if (!p->closed)
        p->closed = reason;
    prt__waiter *w;
    while ((w = prt__waiter_pop(p)) != NULL) {
        w->state = PRT__W_CLOSED;
        prt__waiter_wake(w);
    }
    prt_conn **cs;
    int n = take_oldest(p, p->nidle, &cs);
    prt__retire_unlock(p, cs, n, PRT__CLOSE_EVICTED);
    free(cs);
}

/* Asks the size hook for max and min_idle (default: as configured) and
 * applies them: a larger max serves waiters at once; a smaller one closes
 * idle connections above it now and in-use ones as they come back.  No
 * lock held. */
void prt__pool_apply_size(prt_pool *p)
{
    int max = prt__pool_configured_max(p), min_idle = p->opts.min_idle;
    prt__pstate *ps = prt__policy_thread(p->rt);
    if (prt__pstate_mode(ps, PRT__H_SIZE) == PRT__MODE_LUA)
        prt__hook_size(ps, p, &max, &min_idle);
    prt__lock(p);
    p->max = max;
    p->min_idle = min_idle;
    prt_conn **cs;
    int n = take_oldest(p, p->total - p->max, &cs);
    prt__retire_unlock(p, cs, n, PRT__CLOSE_SHRINK); /* also gives a larger max to waiters */
    free(cs);
}
