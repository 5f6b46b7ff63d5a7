/*
 * slots.c -- connection slots: the one home of a pool's max and of the
 * runtime's global max_connections cap.
 *
 * A slot is the right to hold one connection.  It is taken under p->mu
 * (p->total++, and one of rt->nconns when the runtime counts them) before
 * the connection is opened outside the lock, so neither limit is exceeded
 * while connects are in flight; it is given back when the connection
 * closes, or when it never opened.
 *
 * Giving slots back has an order, and prt__retire is the only place that
 * follows it:
 *   1. p->mu is released and the connections close (network I/O is never
 *      done under a lock) -- before their slots go back, so that a slot,
 *      a global one or a unit of a budget shared with other processes,
 *      never belongs to a new connection while the old one is still open
 *      (the server would count both: nginx_budget_spec saw 13 of 12);
 *   2. p->mu is taken again and the slots go back (the pool's and the
 *      global ones), closes counted;
 *   3. this pool's waiters get them, oldest first -- under the same lock as
 *      step 2, so a caller arriving now cannot take a slot a waiter is owed;
 *   4. p->mu is released;
 *   5. waiters of other pools, blocked only by the global cap, are woken:
 *      that takes each of their locks in turn, so no pool lock may be held.
 *
 * Overflow "evict_idle" moves a global slot the other way: it closes the
 * least recently used idle connection of another pool so that the caller
 * can open one of its own (prt__evict_idle_elsewhere).
 *
 * Opening a connection into a reserved slot, with the pool's connect
 * backoff, is here too (prt__open_in_slot): acquire.c uses it for callers,
 * reap.c for the min_idle refill.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#ifdef POOLRT_DEBUG
_Thread_local char prt__thread_tag;
#endif

/* Reserves a slot for a connection about to be opened: within the pool's
 * max (unless over_max) and the runtime's max_connections.  Returns 1 when
 * reserved, 0 when a limit is reached.  p->mu held. */
int prt__slot_take(prt_pool *p, int over_max)
{
    PRT__ASSERT_HELD(p);
    if (!over_max && p->total >= p->max)
        return 0;
    prt_runtime *rt = p->rt;
    int cap = rt ? atomic_load_explicit(&rt->cap, memory_order_relaxed) : 0;
    if (cap > 0) {
        int n = atomic_load(&rt->nconns);
        do {
            if (n >= cap)
                return 0;
        } while (!atomic_compare_exchange_weak(&rt->nconns, &n, n + 1));
    } else if (rt) {
        atomic_fetch_add(&rt->nconns, 1);
    }
    if (rt && rt->shared_budget && !prt__budget_take(rt)) { /* the processes' shared budget */
        atomic_fetch_sub(&rt->nconns, 1);
        return 0;
    }
    p->total++;
    p->opening++;
    return 1;
}

/* Fills by[] to count n closes under `why` (PRT__CLOSE_NONE: none). */
static const int *counted_as(int by[PRT__CLOSE_NREASONS], enum prt__close_reason why, int n)
{
    memset(by, 0, PRT__CLOSE_NREASONS * sizeof by[0]);
    if (why != PRT__CLOSE_NONE)
        by[why] = n;
    return by;
}

/* Gives back n slots and counts their closes, by[reason] of each.  p->mu
 * held. */
static void slot_give(prt_pool *p, int n, const int *by)
{
    if (n <= 0)
        return;
    p->total -= n;
    for (int r = 0; r < PRT__CLOSE_NREASONS; r++)
        p->closed_by[r] += (uint64_t)by[r];
    if (p->rt)
        atomic_fetch_sub(&p->rt->nconns, n);
    if (p->rt && p->rt->shared_budget)
        prt__budget_give(p->rt, n);
}

/* Gives free slots to waiters, oldest first; each one opens its own
 * connection once it wakes.  p->mu held. */
static void grant_slots(prt_pool *p)
{
    PRT__ASSERT_HELD(p);
    while (p->wq_head && prt__slot_take(p, 0)) {
        prt__waiter *w = prt__waiter_pop(p);
        w->state = PRT__W_SLOT;
        prt__waiter_wake(w);
    }
}

/* A global slot came free (here, or in another process sharing the
 * budget): waiters of every pool that wait only for the global cap get
 * their turn, each pool's lock taken in turn.  No pool lock held.  rt may
 * be NULL (the pool's runtime is gone). */
void prt__global_slot_freed(prt_runtime *rt)
{
    if (!rt || (atomic_load(&rt->cap) <= 0 && !rt->shared_budget) || atomic_load(&rt->nwaiting) == 0)
        return;
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools);
    for (int i = 0; i < n; i++) {
        prt__lock(pools[i]);
        grant_slots(pools[i]);
        prt__unlock(pools[i]);
    }
    prt__registry_release(pools, n);
}

/* Gives back n slots of p and closes their connections cs[0..n), in the
 * order the top of this file explains.  cs may be NULL (the slots'
 * connections never opened) and stays the caller's; by[reason] counts the
 * closes when the slots go back, so that stats never show a close counted
 * while its connection still counts in total.  n may be 0: waiters still get any slots a larger max made free.
 * Entered with p->mu held; returns with it released. */
void prt__retire_by(prt_pool *p, prt_conn **cs, int n, const int *by)
{
    PRT__ASSERT_HELD(p);
    if (cs && n > 0) {
        prt__unlock(p);
        for (int i = 0; i < n; i++)
            prt__conn_close(cs[i]);
        prt__lock(p);
    }
    prt_runtime *rt = p->rt; /* read under mu: prt_runtime_free clears it under mu */
    slot_give(p, n, by);
    grant_slots(p);
    prt__unlock(p);
    if (n > 0)
        prt__global_slot_freed(rt);
}

/* prt__retire_by with every close counted under `why` (PRT__CLOSE_NONE:
 * not counted). */
void prt__retire(prt_pool *p, prt_conn **cs, int n, enum prt__close_reason why)
{
    int by[PRT__CLOSE_NREASONS];
    prt__retire_by(p, cs, n, counted_as(by, why, n));
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
        return;
    }
    if (prt__fleet_refused(p->rt, err))
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
        else if (prt__hand_back(p, c, 0) != 0)
            rc = PRT_ENOMEM;
    }
    if (rc == PRT_OK) {
        prt__unlock(p);
        *out = c;
        return PRT_OK;
    }
    if (rc == PRT_ENOMEM)
        prt__errf(err, errlen, "pool \"%s\": out of memory", p->name);
    size_t n = err ? strlen(err) : errlen;
    if (n < errlen)
        prt__pool_state(p, err + n, errlen - n);
    prt__retire(p, c ? &c : NULL, 1, c ? PRT__CLOSE_BROKEN : PRT__CLOSE_NONE);
    return rc;
}

/* Opens a connection into a slot the caller reserved (prt__slot_take),
 * within `deadline`, with the pool's connect backoff: prt__open_end says
 * what becomes of it.  No pool lock held. */
int prt__open_in_slot(prt_pool *p, double deadline, int for_idle, prt_conn **out, char *err, size_t errlen)
{
    prt_conn *c = NULL;
    int rc = prt__open_begin(p, err, errlen), attempted = rc == PRT_OK;
    if (attempted)
        rc = prt__conn_open(p, deadline, &c, err, errlen);
    return prt__open_end(p, attempted, rc, c, for_idle, out, err, errlen);
}

/* Overflow "evict_idle": closes the least recently released idle
 * connection of a pool other than `self`, freeing a global slot for the
 * caller, who retries at once.  That is why this is not prt__retire: the
 * freed slot is not offered to the victim's waiters nor to other pools.
 * A victim has none: a pool with waiters is passed over (under "barging"
 * it may hold an idle connection its woken waiter is about to take).
 * Returns 1 when one was closed.  No pool lock held. */
int prt__evict_idle_elsewhere(prt_runtime *rt, prt_pool *self, enum prt__close_reason why)
{
    if (self)
        PRT__ASSERT_UNHELD(self);
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools), best = -1;
    double best_t = 0;
    for (int i = 0; i < n; i++) {
        prt_pool *q = pools[i];
        if (q == self)
            continue;
        prt__lock(q);
        if (q->nidle > 0 && !q->wq_head && (best < 0 || q->idle[0]->returned_at < best_t)) {
            best = i;
            best_t = q->idle[0]->returned_at;
        }
        prt__unlock(q);
    }
    prt_conn *c = NULL;
    if (best >= 0) {
        prt_pool *q = pools[best];
        prt__lock(q);
        if (q->nidle > 0 && !q->wq_head)
            c = prt__take_idle(q, 0);
        prt__unlock(q);
        if (c) { /* closed before its slot goes back, as in prt__retire */
            prt__conn_close(c);
            int by[PRT__CLOSE_NREASONS];
            prt__lock(q);
            slot_give(q, 1, counted_as(by, why, 1));
            prt__unlock(q);
        }
    }
    prt__registry_release(pools, n);
    return c != NULL;
}

/* Applies a new global cap (0: none), e.g. the `budget` hook's answer.  A
 * larger cap serves waiters at once; a smaller one closes idle connections
 * above it now, least recently released first across pools, and in-use
 * ones as they are released (prt__over_cap), so no query fails because
 * of a shrink.  No pool lock held. */
void prt__set_cap(prt_runtime *rt, int cap)
{
    int old = atomic_exchange(&rt->cap, cap);
    if (cap == old)
        return;
    if (cap <= 0 || (old > 0 && cap > old)) {
        prt__global_slot_freed(rt);
        return;
    }
    while (atomic_load(&rt->nconns) > cap && prt__evict_idle_elsewhere(rt, NULL, PRT__CLOSE_SHRINK))
        ;
}

/* True when the runtime holds more connections than its cap allows (the
 * cap shrank): a connection released now closes instead of going idle. */
int prt__over_cap(const prt_runtime *rt)
{
    int cap = rt ? atomic_load_explicit(&rt->cap, memory_order_relaxed) : 0;
    return (cap > 0 && atomic_load_explicit(&rt->nconns, memory_order_relaxed) > cap) || prt__budget_over(rt);
}
