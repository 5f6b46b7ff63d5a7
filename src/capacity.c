/*
 * capacity.c -- slots and the limits they are taken against (capacity.h
 * draws the layer).
 *
 * A slot is taken under the pool's lock: p->total++ within the pool's max,
 * then one of rt->nconns within the runtime's cap (an atomic compare-and-
 * swap, so pools need no common lock), then one unit of the shared budget
 * when the runtime joined one.  Each step is undone when a later one
 * refuses.  The fleet has no step of its own: its sampler's answer, passed
 * through the `budget` hook, becomes the cap (pools.c applies it).
 *
 * Giving a slot back is the reverse, under the same lock.  The order in
 * which connections close, slots go back and waiters are served is
 * pool_slots.c's (prt__retire_unlock): capacity only counts.
 */
#include "internal.h"

/* Takes a slot for a connection about to be opened: within the pool's max
 * (unless over_max, overflow "grow"), the runtime's cap and the shared
 * budget.  Returns 1 when taken, 0 when a limit is reached.  p->mu held. */
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
    if (rt && rt->shared_budget && !prt__budget_take(rt)) {
        atomic_fetch_sub(&rt->nconns, 1);
        return 0;
    }
    p->total++;
    p->opening++;
    PRT__ASSERT_COUNTS(p);
    return 1;
}

/* Gives back n slots whose connections have closed (or never opened),
 * counted in p->closing meanwhile, and counts the closes: by[reason] of
 * each.  p->mu held. */
void prt__slot_give(prt_pool *p, int n, const int *by)
{
    PRT__ASSERT_HELD(p);
    if (n <= 0)
        return;
    p->closing -= n;
    p->total -= n;
    for (int r = 0; r < PRT__CLOSE_NREASONS; r++)
        p->closed_by[r] += (uint64_t)by[r];
    if (p->rt)
        atomic_fetch_sub(&p->rt->nconns, n);
    if (p->rt && p->rt->shared_budget)
        prt__budget_give(p->rt, n);
    PRT__ASSERT_COUNTS(p);
}

/* True when the runtime holds more connections than its limits allow (the
 * cap or the shared budget shrank, or this process holds more than its
 * share while others wait): a connection released now closes instead of
 * going idle. */
int prt__cap_over(const prt_runtime *rt)
{
    int cap = rt ? atomic_load_explicit(&rt->cap, memory_order_relaxed) : 0;
    return (cap > 0 && atomic_load_explicit(&rt->nconns, memory_order_relaxed) > cap) || prt__budget_over(rt);
}

/* Makes `cap` (0: none) the cap in force and returns the one it replaces.
 * Nothing else: what a change means for waiters and idle connections is
 * pools.c's (prt__pools_set_cap). */
int prt__cap_set(prt_runtime *rt, int cap)
{
    return atomic_exchange(&rt->cap, cap);
}

/* Whether a slot given back now may let a waiter of another pool (one
 * blocked by the cap or the shared budget, not by its pool's max) go on. */
int prt__cap_waiting_wakes(const prt_runtime *rt)
{
    return rt && (atomic_load(&rt->cap) > 0 || rt->shared_budget) && atomic_load(&rt->nwaiting) > 0;
}

/* A caller is about to queue for a global slot: the shared budget hears of
 * it now rather than at its next tick.  p->mu held. */
void prt__cap_blocked(prt_runtime *rt)
{
    if (rt && rt->shared_budget)
        prt__budget_blocked(rt);
}

/* Whether err is a connect refused because the server is full, in a
 * runtime whose fleet paces such retries (fleet.c). */
int prt__cap_refused(prt_runtime *rt, const char *err)
{
    return prt__fleet_refused(rt, err);
}
