/*
 * route.c -- which multiplexed connection takes the next statement: the one
 * place the decision is made, as pick.c is for acquires.  A Lua `route`
 * hook decides when the live policy has one, reading a view per connection
 * (id, in_flight, endpoint, uses; 1-based list) and the pool view;
 * otherwise, or when the hook fails or answers out of range (counted as a
 * policy error, policy_hooks.c), the built-in rule does: the connection
 * with the fewest statements in flight (queued or sent), the first of
 * equals.  Npgsql's multiplexing picks the same way.
 */
#include "internal.h"

/* Returns an index into conns[0..n), n > 0.  Called with the multiplexer's
 * lock held (the hook takes p->mu briefly for its pool view). */
int prt__route(prt_pool *p, const prt_route_view *conns, int n)
{
    if (p->rt && atomic_load_explicit(&p->rt->route_mode, memory_order_relaxed) == PRT__MODE_LUA) {
        prt__pstate *ps = prt__policy_thread(p->rt);
        int i = prt__pstate_mode(ps, PRT__H_ROUTE) == PRT__MODE_LUA ? prt__hook_route(ps, p, conns, n) : -1;
        if (i >= 0)
            return i;
    }
    int best = 0;
    for (int i = 1; i < n; i++)
        if (conns[i].in_flight < conns[best].in_flight)
            best = i;
    return best;
}
