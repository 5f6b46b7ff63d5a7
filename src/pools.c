/*
 * pools.c -- the registry's work that spans a runtime's pools: snapshots
 * of the live pools, waking waiters of every pool when slots come free,
 * closing another pool's idle connection to free a slot, applying a new
 * cap, and what the capacity providers report (capacity.h's callback
 * rt->on_capacity is prt__pools_on_capacity): the shared budget's tick and
 * the fleet's samples, which the `budget` hook turns into the cap.
 *
 * registry.c (pools by name: fetch-or-create, admission, eviction) sits
 * above this file; capacity.c, which only counts, below it.  Each pool's
 * lock is taken here one at a time, never two at once, and never while
 * rt->mu is held except inside a snapshot.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Copies the live pools with a reference each; release with
 * prt__registry_release.  Returns how many (0 on allocation failure). */
int prt__registry_snapshot(prt_runtime *rt, prt_pool ***out)
{
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    int n = rt->npools;
    *out = malloc((size_t)(n ? n : 1) * sizeof **out);
    if (!*out)
        n = 0;
    for (int i = 0; i < n; i++) {
        (*out)[i] = rt->pools[i];
        prt__pool_ref(rt->pools[i]);
    }
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    return n;
}

void prt__registry_release(prt_pool **pools, int n)
{
    for (int i = 0; i < n; i++)
        prt_pool_unref(pools[i]);
    free(pools);
}

/* Gives free slots to p's waiters, oldest first; each one opens its own
 * connection once it wakes.  p->mu held. */
void prt__pool_grant(prt_pool *p)
{
    PRT__ASSERT_HELD(p);
    while (p->wq_head && prt__slot_take(p, 0)) {
        prt__waiter *w = prt__waiter_pop(p);
        w->state = PRT__W_SLOT;
        prt__waiter_wake(w);
    }
}

/* Slots came free (here, or in another process sharing the budget):
 * waiters of every pool that wait only for the cap or the budget get
 * their turn, each pool's lock taken in turn.  No pool lock held.  rt may
 * be NULL (the pool's runtime is gone). */
void prt__pools_wake(prt_runtime *rt)
{
    if (!prt__cap_waiting_wakes(rt))
        return;
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools);
    for (int i = 0; i < n; i++) {
        prt__lock(pools[i]);
        prt__pool_grant(pools[i]);
        prt__unlock(pools[i]);
    }
    prt__registry_release(pools, n);
}

/* Callers waiting for a global slot: waiters of pools still under their
 * own max (as many as that room).  Takes each pool's lock in turn; no
 * lock held. */
int prt__pools_waiting_for_slots(prt_runtime *rt)
{
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools), w = 0;
    for (int i = 0; i < n; i++) {
        prt__lock(pools[i]);
        int room = pools[i]->max - pools[i]->total;
        if (room > 0)
            w += pools[i]->nwait < room ? pools[i]->nwait : room;
        prt__unlock(pools[i]);
    }
    prt__registry_release(pools, n);
    return w;
}

/* Overflow "evict_idle": closes the least recently released idle
 * connection of a pool other than `self`, freeing a global slot for the
 * caller, who retries at once.  That is why this is not a retire: the
 * freed slot is not offered to the victim's waiters nor to other pools.
 * A victim has none: a pool with waiters is passed over (under "barging"
 * it may hold an idle connection its woken waiter is about to take).
 * Returns 1 when one was closed.  No pool lock held. */
int prt__pools_evict_idle(prt_runtime *rt, prt_pool *self, enum prt__close_reason why)
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
        if (q->nidle > 0 && !q->wq_head) {
            c = prt__take_idle(q, 0);
            q->closing++;
        }
        prt__unlock(q);
        if (c) { /* closed before its slot goes back, as in a retire */
            prt__conn_close(c);
            int by[PRT__CLOSE_NREASONS];
            prt__lock(q);
            prt__slot_give(q, 1, prt__counted_as(by, why, 1));
            prt__unlock(q);
        }
    }
    prt__registry_release(pools, n);
    return c != NULL;
}

/* Applies a new cap (0: none), e.g. the `budget` hook's answer.  A larger
 * cap serves waiters at once; a smaller one closes idle connections above
 * it now, least recently released first across pools, and in-use ones as
 * they are released (prt__cap_over), so no query fails because of a
 * shrink.  No pool lock held. */
void prt__pools_set_cap(prt_runtime *rt, int cap)
{
    int old = prt__cap_set(rt, cap);
    if (cap == old)
        return;
    if (cap <= 0 || (old > 0 && cap > old)) {
        prt__pools_wake(rt);
        return;
    }
    while (atomic_load(&rt->nconns) > cap && prt__pools_evict_idle(rt, NULL, PRT__CLOSE_SHRINK))
        ;
}

/* Asks the `budget` hook (no Lua hook: the built-in, "no limit") and
 * applies min(its answer, max_connections when set) as the cap.  No lock
 * held. */
static void apply_budget(prt_runtime *rt, const prt_server_view *sv)
{
    prt_rt_view v = { rt->opts.max_connections, atomic_load(&rt->nconns), prt_runtime_pool_count(rt),
                      atomic_load(&rt->cap) };
    int b = prt__hook_budget(prt__policy_thread(rt), sv, &v), max = rt->opts.max_connections;
    prt__pools_set_cap(rt, b > 0 && (max == 0 || b < max) ? b : max);
}

/* The cap a new runtime starts with: a Lua `budget` hook is asked once,
 * with an unsampled server (so a policy can start small).  No lock held. */
void prt__pools_first_budget(prt_runtime *rt)
{
    prt__mu_lock(&rt->policy_mu, PRT__RANK_POLICY);
    int lua = rt->policy->mode[PRT__H_BUDGET] == PRT__MODE_LUA;
    prt__mu_unlock(&rt->policy_mu, PRT__RANK_POLICY);
    if (lua)
        apply_budget(rt, &(prt_server_view){ 0 });
}

/* A reload made another policy live: its `budget` hook (or the built-in
 * answer, max_connections, when it has none) applies now in a runtime
 * that takes no server samples, and at an early sample in a fleet.  No
 * lock held. */
void prt__pools_policy_changed(prt_runtime *rt)
{
    if (!prt__fleet_resample(rt))
        apply_budget(rt, &(prt_server_view){ 0 });
}

/* A connect of rt was refused as too many clients: the cap drops to what
 * the runtime holds (so the caller waits for one of them, as any caller
 * blocked by the cap), and the fleet samples early.  Holding none, the
 * caller pauses briefly (until `deadline` at most) so that it does not
 * hammer a full server.  No lock held. */
void prt__pools_server_full(prt_runtime *rt, double deadline)
{
    prt__fleet_note_full(rt);
    int held = atomic_load(&rt->nconns);
    prt__pools_set_cap(rt, held > 0 ? held : 1);
    double pause = deadline - prt_now();
    if (held == 0 && pause > 0)
        prt_sleep(pause < 0.05 ? pause : 0.05);
}

/* The shared budget's tick: units freed by other processes go to waiters
 * here; the count of callers waiting goes out to the other members; and
 * when the budget is spent and others wait, this runtime's least recently
 * used idle connections close for them, one for each caller waiting
 * elsewhere (at most), in one go -- a round trip between processes per
 * unit would be slow on a busy machine.  Several holders may close for
 * the same waiters; the surplus is idle connections, reopened on demand.
 * No lock held. */
static void budget_tick(prt_runtime *rt)
{
    prt__pools_wake(rt);
    prt__budget_publish(rt, prt__pools_waiting_for_slots(rt));
    for (int owed = prt__budget_owed(rt); owed > 0 && prt__pools_evict_idle(rt, NULL, PRT__CLOSE_EVICTED); owed--)
        prt__budget_gave(rt);
}

/* rt->on_capacity (capacity.h): what the capacity providers report, with
 * no lock held. */
void prt__pools_on_capacity(prt_runtime *rt, int ev)
{
    prt_server_view sv;
    switch (ev) {
    case PRT__CAP_FREED:
        prt__pools_wake(rt);
        break;
    case PRT__CAP_BUDGET:
        budget_tick(rt);
        break;
    case PRT__CAP_SAMPLED:
        if (prt__fleet_view(rt, &sv))
            apply_budget(rt, &sv);
        break;
    }
}

int prt_runtime_pool_count(prt_runtime *rt)
{
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    int n = rt->npools;
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    return n;
}

/* The i-th live pool as a new reference (prt_pool_unref it), or NULL. */
prt_pool *prt_runtime_pool_at(prt_runtime *rt, int i)
{
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    prt_pool *p = (i >= 0 && i < rt->npools) ? rt->pools[i] : NULL;
    if (p)
        prt__pool_ref(p);
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    return p;
}
