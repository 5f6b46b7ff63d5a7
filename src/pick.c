/*
 * pick.c -- which idle connection an acquire hands out: the one place the
 * decision is made.  A Lua `pick` hook decides when the policy has one;
 * otherwise, or when the hook fails, a built-in does, in C:
 *   mru     most recently released first (database/sql's default): warm
 *           server caches, and the rest go idle long enough to time out;
 *   lru     least recently released first (golang/go#68539): spreads work
 *           over every connection, and so over replicas behind a balancer;
 *   random  uniform.
 * The built-in default is mru.  A policy names them "mru", "lru" and
 * "random": those names are written once, in policy_hooks.c, in the order
 * of the PRT__PICK_* modes (internal.h).
 */
#include "internal.h"

/* Returns an index into p->idle (oldest-released first); p->mu is held and
 * p->nidle > 0.  ps is the calling thread's policy state, or NULL. */
int prt__pick(prt_pool *p, prt__pstate *ps)
{
    int mode = ps ? prt__pstate_mode(ps, PRT__H_PICK) : atomic_load(&p->rt->pick_mode);
    if (mode == PRT__MODE_LUA) {
        int i = prt__hook_pick(ps, p);
        if (i >= 0)
            return i;
    }
    switch (mode) {
    case PRT__PICK_LRU:
        return 0;
    case PRT__PICK_RANDOM:
        return (int)(prt__rand01() * p->nidle);
    default:
        return p->nidle - 1;
    }
}
