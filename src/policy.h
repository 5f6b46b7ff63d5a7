/*
 * policy.h -- what the four policy_*.c files share: the per-thread state
 * a hook runs in, and the functions that cross between state management,
 * views, hook calls and dry runs.  fleet.c includes it too, though all it
 * uses is declared in internal.h (the budget hook's call); nothing else
 * does.
 *
 * A prt__pstate is owned by one OS thread (or by one dry run) and used only
 * by it, so none of its fields needs a lock.
 */
#ifndef POOLRT_POLICY_H
#define POOLRT_POLICY_H

#include <lua.h>
#include "internal.h"

struct prt__pstate {
    uint64_t rt_id;
    prt__policy *pol;        /* a reference */
    lua_State *L;            /* NULL when the policy has no Lua hooks */
    int ref[PRT__NHOOKS];    /* registry refs of the trampolines */
    char where[PRT__NHOOKS][128]; /* "file:line" of each hook function */
    prt_hook_ctx *ctx;       /* the views, read by Lua through a pointer */
    prt_pool_view *pools;    /* 1-based array behind ctx->pools */
    int pools_cap;
    prt_runtime *rt;         /* for counters and logs; NULL during a dry run */
    int32_t steps;           /* Lua steps per hook call (prt_runtime_opts.hook_steps) */
    uint64_t named;          /* serial of the pool whose name is in ctx->pool */
    uint64_t nerrors;        /* failed calls on this state */
    char last_error[PRT__ERRLEN];
};

/* policy_state.c */
prt__pstate *prt__pstate_new(prt__policy *pol, int fill_modes, char *err, size_t errlen);
void prt__pstate_free(prt__pstate *ps);

/* policy_views.c */
void prt__view_limits(prt_limits_view *v, const prt_runtime_opts *o);
void prt__view_pool(prt__pstate *ps, prt_pool *p);               /* ctx->pool; p->mu held */
int prt__view_idle(prt__pstate *ps, prt_pool *p);                /* ctx->idle; p->mu held; -1 past the cap */
int prt__view_pools(prt__pstate *ps, prt_pool **pools, int n);   /* ctx->pools; no pool lock held */

/* policy_hooks.c */
int prt__builtin_id(int hook, const char *name);  /* mode of a built-in's name, or PRT__MODE_DEFAULT */
void prt__describe(lua_State *L, int idx, char *buf, size_t len); /* "number 3", "nil" */

#endif
