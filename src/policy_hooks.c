/*
 * policy_hooks.c -- calling a policy's hooks and judging their answers.
 *
 * The hook names and the built-in strategies a policy may name are written
 * here and nowhere else: the boot module gets them from C when a state is
 * made (policy_state.c), and bindings read them through
 * prt_policy_hook_name and prt_policy_builtin_name.
 *
 * Every call has the same shape: begin() pushes the hook's trampoline,
 * views are filled (policy_views.c), finish() runs it under the step budget,
 * and the answer is validated.  A Lua error, a wrong value or an exhausted
 * budget makes the call return the built-in answer, bumps the hook's error
 * counter and logs a rate-limited line naming file, hook and error.  The
 * lock each hook runs under is listed in internal.h.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include "policy.h"

static const char *const hook_names[PRT__NHOOKS] = {
    "pick", "size", "overflow", "admit", "evict", "reap", "concurrency", "on_evict", "budget",
    "route", "endpoint",
};
/* In the order of the PRT__PICK_*, PRT__OVF_* and PRT__ADMIT_* modes;
 * concurrency's one built-in is prt_concurrency_builtin's rule. */
enum { MAX_BUILTINS = 4 };
static const char *const builtins[PRT__NHOOKS][MAX_BUILTINS + 1] = {
    [PRT__H_PICK] = { "mru", "lru", "random" },
    [PRT__H_OVERFLOW] = { "wait", "fail", "evict_idle", "grow" },
    [PRT__H_ADMIT] = { "evict_lru", "fail", "allow" },
    [PRT__H_CONCURRENCY] = { "half" },
};

const char *prt_policy_hook_name(int hook)
{
    return hook >= 0 && hook < PRT__NHOOKS ? hook_names[hook] : "?";
}

const char *prt_policy_builtin_name(int hook, int i)
{
    return hook >= 0 && hook < PRT__NHOOKS && i >= 0 && i < MAX_BUILTINS ? builtins[hook][i] : NULL;
}

int prt__builtin_id(int hook, const char *name)
{
    for (int i = 0; builtins[hook][i]; i++)
        if (strcmp(builtins[hook][i], name) == 0)
            return i + 1;
    return PRT__MODE_DEFAULT;
}

void prt__describe(lua_State *L, int idx, char *buf, size_t len)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER || t == LUA_TSTRING)
        snprintf(buf, len, "%s %.60s", lua_typename(L, t), lua_tostring(L, idx));
    else
        snprintf(buf, len, "%s", lua_typename(L, t));
}

/* Records a failed call; with a runtime, counts it and logs it (at most
 * once a second per hook). */
static void hook_failed(prt__pstate *ps, int hook, const char *msg)
{
    ps->nerrors++;
    snprintf(ps->last_error, sizeof ps->last_error, "%s: hook %s: %s", ps->where[hook], hook_names[hook], msg);
    prt_runtime *rt = ps->rt;
    if (!rt)
        return;
    atomic_fetch_add(&rt->hook_errors[hook], 1);
    double now = prt_now();
    prt__mu_lock(&rt->policy_mu, PRT__RANK_POLICY);
    snprintf(rt->last_hook_error, sizeof rt->last_hook_error, "%.255s", ps->last_error);
    int log = now - rt->err_logged_at[hook] >= 1.0;
    uint64_t suppressed = rt->err_suppressed[hook];
    if (log) {
        rt->err_logged_at[hook] = now;
        rt->err_suppressed[hook] = 0;
    } else {
        rt->err_suppressed[hook]++;
    }
    prt__mu_unlock(&rt->policy_mu, PRT__RANK_POLICY);
    if (log)
        prt__logf(PRT_LOG_ERROR, "policy \"%s\": %s; used the built-in default%s", ps->pol->path,
                  ps->last_error, suppressed ? " (earlier errors suppressed)" : "");
}

/* Pushes the hook's trampoline; the caller fills views, pushes arguments
 * and calls finish().  Returns 0, or -1 when the hook is not a Lua
 * function here. */
static int begin(prt__pstate *ps, int hook)
{
    if (!ps || !ps->L || ps->ref[hook] == LUA_NOREF)
        return -1;
    lua_settop(ps->L, 0);
    lua_rawgeti(ps->L, LUA_REGISTRYINDEX, ps->ref[hook]);
    return 0;
}

/* begin() for a hook that sees p alone and runs with no lock held: the
 * view is filled under p->mu, the hook runs after it is released. */
static int begin_unlocked(prt__pstate *ps, int hook, prt_pool *p)
{
    if (begin(ps, hook) != 0)
        return -1;
    prt__lock(p);
    prt__view_pool(ps, p);
    prt__unlock(p);
    return 0;
}

/* Runs the pushed call under the step budget.  Returns 0 with the results
 * on the stack, or -1 (failure recorded, stack cleared). */
static int finish(prt__pstate *ps, int hook, int nargs, int nres)
{
    if (ps->rt)
        atomic_fetch_add(&ps->rt->hook_calls[hook], 1);
    ps->ctx->budget = ps->steps;
    if (lua_pcall(ps->L, nargs, nres, 0) != 0) {
        const char *m = lua_tostring(ps->L, -1);
        hook_failed(ps, hook, m ? m : "error object is not a string");
        lua_settop(ps->L, 0);
        return -1;
    }
    return 0;
}

/* Rejects a result: counts, logs, clears the stack.  Returns -1. */
static int reject(prt__pstate *ps, int hook, int idx, const char *want)
{
    char got[96], msg[256];
    prt__describe(ps->L, idx, got, sizeof got);
    snprintf(msg, sizeof msg, "returned %s (want %s)", got, want);
    hook_failed(ps, hook, msg);
    lua_settop(ps->L, 0);
    return -1;
}

/* Runs a hook whose answer must be a list (nil: empty), with `now` in its
 * context: returns the list's length, the list at stack index 1, or -1
 * after a failure or a rejected answer. */
static int call_for_list(prt__pstate *ps, int hook, double now, const char *want)
{
    ps->ctx->now = now;
    if (finish(ps, hook, 0, 1) != 0)
        return -1;
    if (lua_isnil(ps->L, 1))
        return 0;
    if (!lua_istable(ps->L, 1))
        return reject(ps, hook, 1, want);
    return (int)lua_objlen(ps->L, 1);
}

/* A hook's answer that must name one of its built-ins: returns the mode,
 * or 0 after rejecting anything else. */
static int answer_builtin(prt__pstate *ps, int hook)
{
    const char *s = lua_type(ps->L, 1) == LUA_TSTRING ? lua_tostring(ps->L, 1) : NULL;
    int mode = s ? prt__builtin_id(hook, s) : 0;
    if (mode)
        return mode;
    char want[96] = "";
    for (int i = 0; builtins[hook][i]; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s\"%s\"", i ? ", " : "one of ", builtins[hook][i]);
    reject(ps, hook, 1, want);
    return 0;
}

static int as_int(lua_State *L, int idx, long lo, long hi, long *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    double d = lua_tonumber(L, idx);
    if (d != (double)(long)d || d < lo || d > hi)
        return 0;
    *out = (long)d;
    return 1;
}

int prt__hook_pick(prt__pstate *ps, prt_pool *p)
{
    if (begin(ps, PRT__H_PICK) != 0 || prt__view_idle(ps, p) < 0)
        return -1;
    prt__view_pool(ps, p);
    if (finish(ps, PRT__H_PICK, 0, 1) != 0)
        return -1;
    long i;
    if (!as_int(ps->L, 1, 1, p->nidle, &i)) {
        char want[64];
        snprintf(want, sizeof want, "an integer index in 1..%d", p->nidle);
        return reject(ps, PRT__H_PICK, 1, want);
    }
    lua_settop(ps->L, 0);
    return (int)i - 1;
}

/* *max and *min_idle hold the defaults on entry, and the hook's answer on
 * return when it gave a valid one. */
void prt__hook_size(prt__pstate *ps, prt_pool *p, int *max, int *min_idle)
{
    if (begin_unlocked(ps, PRT__H_SIZE, p) != 0 || finish(ps, PRT__H_SIZE, 0, 2) != 0)
        return;
    long m, mi = *min_idle;
    if (!as_int(ps->L, 1, 1, 100000, &m)) {
        reject(ps, PRT__H_SIZE, 1, "max: an integer in 1..100000");
        return;
    }
    if (!lua_isnil(ps->L, 2) && !as_int(ps->L, 2, 0, m, &mi)) {
        reject(ps, PRT__H_SIZE, 2, "min_idle: nil or an integer in 0..max");
        return;
    }
    *max = (int)m;
    *min_idle = mi > m ? (int)m : (int)mi;
    lua_settop(ps->L, 0);
}

/* Returns an overflow mode; *wait gets the hook's timeout for "wait"
 * (unchanged when it gave none). */
int prt__hook_overflow(prt__pstate *ps, prt_pool *p, double timeout, double *wait)
{
    if (begin(ps, PRT__H_OVERFLOW) != 0)
        return PRT__OVF_WAIT;
    prt__view_pool(ps, p);
    ps->ctx->req.timeout = timeout;
    ps->ctx->req.position = p->nwait + 1;
    if (finish(ps, PRT__H_OVERFLOW, 0, 2) != 0)
        return PRT__OVF_WAIT;
    int mode = answer_builtin(ps, PRT__H_OVERFLOW);
    if (!mode)
        return PRT__OVF_WAIT;
    if (mode == PRT__OVF_WAIT && !lua_isnil(ps->L, 2)) {
        double t = lua_tonumber(ps->L, 2);
        if (lua_type(ps->L, 2) != LUA_TNUMBER || !(t >= 0 && t <= 86400))
            return reject(ps, PRT__H_OVERFLOW, 2, "a wait timeout in 0..86400 seconds"), PRT__OVF_WAIT;
        *wait = t;
    }
    lua_settop(ps->L, 0);
    return mode;
}

/* Fills close[0..nidle) with the idle connections the hook wants closed.
 * Returns how many, or -1 when the built-in rule should apply. */
int prt__hook_reap(prt__pstate *ps, prt_pool *p, double now, unsigned char *close)
{
    if (begin(ps, PRT__H_REAP) != 0 || prt__view_idle(ps, p) < 0)
        return -1;
    prt__view_pool(ps, p);
    int len = call_for_list(ps, PRT__H_REAP, now, "a list of idle indexes");
    if (len < 0)
        return -1;
    lua_State *L = ps->L;
    memset(close, 0, (size_t)p->nidle);
    int n = 0;
    for (int k = 1; k <= len; k++) {
        lua_rawgeti(L, 1, k);
        long i;
        if (!as_int(L, -1, 1, p->nidle, &i)) {
            char want[64];
            snprintf(want, sizeof want, "indexes in 1..%d", p->nidle);
            return reject(ps, PRT__H_REAP, -1, want);
        }
        lua_pop(L, 1);
        n += !close[i - 1];
        close[i - 1] = 1;
    }
    lua_settop(L, 0);
    return n;
}

int prt__hook_concurrency(prt__pstate *ps, prt_pool *p)
{
    if (begin_unlocked(ps, PRT__H_CONCURRENCY, p) != 0 || finish(ps, PRT__H_CONCURRENCY, 0, 1) != 0)
        return -1;
    long n;
    if (!as_int(ps->L, 1, 1, 100000, &n))
        return reject(ps, PRT__H_CONCURRENCY, 1, "an integer in 1..100000");
    lua_settop(ps->L, 0);
    return (int)n;
}

/* Returns an admit mode, or 0 when the built-in rule should apply. */
int prt__hook_admit(prt__pstate *ps, prt_pool **pools, int n, const char *name)
{
    if (begin(ps, PRT__H_ADMIT) != 0 || prt__view_pools(ps, pools, n) != 0)
        return 0;
    lua_pushstring(ps->L, name);
    if (finish(ps, PRT__H_ADMIT, 1, 1) != 0)
        return 0;
    int mode = answer_builtin(ps, PRT__H_ADMIT);
    if (mode)
        lua_settop(ps->L, 0);
    return mode;
}

/* Marks evict[i] for each pool named in the hook's answer.  Returns how
 * many, or -1 when the built-in rule should apply. */
int prt__hook_evict(prt__pstate *ps, prt_pool **pools, int n, double now, unsigned char *evict)
{
    if (begin(ps, PRT__H_EVICT) != 0 || prt__view_pools(ps, pools, n) != 0)
        return -1;
    int len = call_for_list(ps, PRT__H_EVICT, now, "a list of pool names");
    if (len < 0)
        return -1;
    lua_State *L = ps->L;
    int count = 0;
    for (int k = 1; k <= len; k++) {
        lua_rawgeti(L, 1, k);
        if (lua_type(L, -1) != LUA_TSTRING)
            return reject(ps, PRT__H_EVICT, -1, "pool names (strings)");
        const char *name = lua_tostring(L, -1);
        for (int i = 0; i < n; i++)
            if (!evict[i] && strcmp(pools[i]->name, name) == 0) {
                evict[i] = 1;
                count++;
            }
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    return count;
}

void prt__hook_on_evict(prt__pstate *ps, const char *name, const char *reason)
{
    if (begin(ps, PRT__H_ON_EVICT) != 0)
        return;
    lua_pushstring(ps->L, name);
    lua_pushstring(ps->L, reason);
    if (finish(ps, PRT__H_ON_EVICT, 2, 0) == 0)
        lua_settop(ps->L, 0);
}

/* The runtime's connection budget: an integer >= 1, or nil for "no limit"
 * (returned as 0, like the built-in answer and any rejected one, which
 * fleet.c turns into the configured max_connections).  No lock held. */
int prt__hook_budget(prt__pstate *ps, const prt_server_view *server, const prt_rt_view *rt)
{
    if (begin(ps, PRT__H_BUDGET) != 0)
        return 0;
    ps->ctx->server = *server;
    ps->ctx->rt = *rt;
    if (finish(ps, PRT__H_BUDGET, 0, 1) != 0)
        return 0;
    long n = 0;
    if (!lua_isnil(ps->L, 1) && !as_int(ps->L, 1, 1, 1000000, &n))
        return reject(ps, PRT__H_BUDGET, 1, "nil or an integer in 1..1000000"), 0;
    lua_settop(ps->L, 0);
    return (int)n;
}

/* Which multiplexed connection takes the next statement: conns[0..n) are
 * the views (1-based in Lua), the pool view is filled under p->mu taken
 * briefly.  Returns a 0-based index, or -1 when the built-in rule should
 * apply (failure counted). */
int prt__hook_route(prt__pstate *ps, prt_pool *p, const prt_route_view *conns, int n)
{
    if (n > PRT__MUX_MAX || begin_unlocked(ps, PRT__H_ROUTE, p) != 0)
        return -1;
    ps->ctx->route.n = n;
    memcpy(&ps->ctx->route.v[1], conns, (size_t)n * sizeof *conns);
    if (finish(ps, PRT__H_ROUTE, 0, 1) != 0)
        return -1;
    long i;
    if (!as_int(ps->L, 1, 1, n, &i)) {
        char want[64];
        snprintf(want, sizeof want, "an integer index in 1..%d", n);
        return reject(ps, PRT__H_ROUTE, 1, want);
    }
    lua_settop(ps->L, 0);
    return (int)i - 1;
}

/* How many background jobs may hold connections of p at once: the
 * concurrency hook, else the built-in rule (pool.c's prt_concurrency_builtin)
 * on the pool's live max.  No lock held. */
int prt_pool_concurrency(prt_pool *p)
{
    int n = prt__hook_concurrency(prt__policy_thread(p->rt), p);
    if (n > 0)
        return n;
    prt__lock(p);
    int max = p->max;
    prt__unlock(p);
    return prt_concurrency_builtin(max);
}

/* Which server a new connection of p goes to: eps[0..n) are the pool's
 * servers with their facts (1-based in Lua).  Returns a 0-based index of
 * an allowed one, -2 for nil (no server: the connect fails), or -1 when
 * the built-in order should apply (an answer that is not an allowed index
 * is an error, counted).  No lock held (p->mu taken briefly for the pool
 * view). */
int prt__hook_endpoint(prt__pstate *ps, prt_pool *p, const prt_endpoint_view *eps, int n)
{
    if (n > PRT__MAX_ENDPOINTS || begin_unlocked(ps, PRT__H_ENDPOINT, p) != 0)
        return -1;
    ps->ctx->endpoints.n = n;
    memcpy(&ps->ctx->endpoints.v[1], eps, (size_t)n * sizeof *eps);
    if (finish(ps, PRT__H_ENDPOINT, 0, 1) != 0)
        return -1;
    if (lua_isnil(ps->L, 1)) {
        lua_settop(ps->L, 0);
        return -2;
    }
    long i;
    if (!as_int(ps->L, 1, 1, n, &i) || !eps[i - 1].allowed_) {
        char want[80];
        snprintf(want, sizeof want, "nil or the index of an allowed endpoint in 1..%d", n);
        return reject(ps, PRT__H_ENDPOINT, 1, want);
    }
    lua_settop(ps->L, 0);
    return (int)i - 1;
}
