/*
 * policy_views.c -- filling the views a hook reads (policy_views.h).
 *
 * A view is a copy, taken under the lock that guards what it copies, so a
 * hook never reads a pool's live fields and never needs a lock itself.
 * What each hook sees:
 *   pick, reap      ctx->pool and ctx->idle, filled with p->mu held;
 *   overflow        ctx->pool and ctx->req, p->mu held;
 *   size, concurrency  ctx->pool, filled under p->mu taken briefly;
 *   admit, evict    ctx->pools, one view per live pool, each filled under
 *                   that pool's mu taken briefly, with `evictable` set by
 *                   registry.c's rule (prt__pool_evictable).
 * Every state's ctx->limits holds its runtime's max_pools, max_connections
 * and pool_idle_timeout, written once when the state is bound to the
 * runtime (the options are immutable).
 */
#include <stdio.h>
#include <stdlib.h>
#include "policy.h"

void prt__view_limits(prt_limits_view *v, const prt_runtime_opts *o)
{
    v->max_pools = o->max_pools;
    v->max_connections = o->max_connections;
    v->pool_idle_timeout = o->pool_idle_timeout;
}

/* Everything of p's view but its name, and `evictable` (only a pool list
 * computes it: the rule takes p->mu, which the single-pool callers hold).
 * p->mu held. */
static void fill_counts(prt_pool_view *v, prt_pool *p, int evictable)
{
    v->max = p->max, v->min_idle = p->min_idle, v->configured_ = p->opts.max;
    v->total = p->total, v->idle = p->nidle, v->in_use = p->in_use, v->waiting = p->nwait;
    v->threads = p->opts.threads;
    v->protected_ = p->opts.is_protected, v->pinned_ = p->opts.is_pinned, v->evictable_ = evictable;
    v->created_at = p->created_at, v->last_used_at = p->last_used_at;
}

/* The view of p in this state's context; the name is copied only when the
 * pool differs from the last call's (most calls repeat the same pool). */
void prt__view_pool(prt__pstate *ps, prt_pool *p)
{
    if (ps->named != p->serial) {
        snprintf(ps->ctx->pool.name_, sizeof ps->ctx->pool.name_, "%s", p->name);
        ps->named = p->serial;
    }
    fill_counts(&ps->ctx->pool, p, -1);
}

/* Fills the idle views (1-based); returns how many, or -1 past the cap. */
int prt__view_idle(prt__pstate *ps, prt_pool *p)
{
    if (p->nidle > PRT__MAX_VIEWS)
        return -1;
    ps->ctx->idle.n = p->nidle;
    for (int i = 0; i < p->nidle; i++) {
        prt_conn *c = p->idle[i];
        prt_conn_view *v = &ps->ctx->idle.v[i + 1];
        v->id = (double)c->id;
        v->created_at = c->created_at;
        v->returned_at = c->returned_at;
        v->uses = (double)c->uses;
        v->endpoint = c->endpoint + 1;
    }
    return p->nidle;
}

/* Fills the 1-based pool views hooks get as `pools`; -1 when out of memory.
 * Takes each pool's lock briefly (callers may hold rt->mu, which nests
 * outside it). */
int prt__view_pools(prt__pstate *ps, prt_pool **pools, int n)
{
    if (n + 1 > ps->pools_cap) {
        prt_pool_view *v = realloc(ps->pools, (size_t)(n + 1) * sizeof *v);
        if (!v)
            return -1;
        ps->pools = v;
        ps->pools_cap = n + 1;
    }
    for (int i = 0; i < n; i++) {
        prt_pool_view *v = &ps->pools[i + 1];
        int evictable = prt__pool_evictable(pools[i]);
        snprintf(v->name_, sizeof v->name_, "%s", pools[i]->name);
        prt__lock(pools[i]);
        fill_counts(v, pools[i], evictable);
        prt__unlock(pools[i]);
    }
    ps->ctx->pools = ps->pools;
    ps->ctx->npools = n;
    return 0;
}
