/*
 * policy_state.c -- policy files and the Lua states that run them.
 *
 * A policy file is read once, compiled and dry-run in a fresh state
 * (policy_check.c); the result, a prt__policy, is published by the runtime
 * under a generation number.  Hooks then run in Lua states owned by
 * poolrt, one per OS thread that calls them (prt__policy_thread), built
 * lazily and rebuilt when the generation moves on.  A state is used only by
 * its thread, so it needs no lock; the thread closes its old state itself
 * when it switches, so no call ever runs on a closed state.
 *
 * Booting a state runs src/policy_boot.lua (compiled in) and hands
 * it the hook names and built-in names from policy_hooks.c, so the Lua side
 * never writes them out itself.  Inputs reach hooks through one C-allocated
 * prt_hook_ctx per state (policy_views.c fills it).
 */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"
#include "policy_boot.h" /* generated: luaJIT_BC_policy_boot, the compiled boot module */
#include "policy_views_cdef.h" /* generated: prt__views_cdef, policy_views.h's views as text */

static const char budget_msg[] = "hook exceeded its step budget (an endless loop?)";

prt__policy *prt__policy_builtin(void)
{
    prt__policy *pol = calloc(1, sizeof *pol);
    if (pol)
        atomic_init(&pol->refs, 1);
    return pol;
}

void prt__policy_unref(prt__policy *pol)
{
    if (pol && atomic_fetch_sub(&pol->refs, 1) == 1) {
        free(pol->path);
        free(pol->source);
        free(pol);
    }
}

void prt__pstate_free(prt__pstate *ps)
{
    if (!ps)
        return;
    if (ps->L)
        lua_close(ps->L);
    prt__policy_unref(ps->pol);
    free(ps->ctx);
    free(ps->pools);
    free(ps);
}

static void hook_where(prt__pstate *ps, int polidx, int hook)
{
    lua_State *L = ps->L;
    lua_getfield(L, polidx, prt_policy_hook_name(hook));
    lua_Debug ar;
    if (lua_isfunction(L, -1) && lua_getinfo(L, ">S", &ar))
        snprintf(ps->where[hook], sizeof ps->where[hook], "%s:%d", ar.short_src, ar.linedefined);
    else
        lua_pop(L, 1);
}

/* Pushes C's vocabulary for the boot module: a list, in hook order, of
 * { hook name, built-in name, ... }. */
static void push_names(lua_State *L)
{
    lua_createtable(L, PRT__NHOOKS, 0);
    for (int h = 0; h < PRT__NHOOKS; h++) {
        lua_newtable(L);
        lua_pushstring(L, prt_policy_hook_name(h));
        lua_rawseti(L, -2, 1);
        for (int i = 0; prt_policy_builtin_name(h, i); i++) {
            lua_pushstring(L, prt_policy_builtin_name(h, i));
            lua_rawseti(L, -2, i + 2);
        }
        lua_rawseti(L, -2, h + 1);
    }
}

/* Runs the boot module's setup for ps: it loads the policy source in its
 * sandbox and leaves the hook kinds, the trampolines and the policy table
 * on the stack.  Returns 0, or non-zero with the error message on top. */
static int boot(prt__pstate *ps)
{
    lua_State *L = ps->L;
    char chunk[1100];
    snprintf(chunk, sizeof chunk, "@%s", ps->pol->path);
    int rc = luaL_loadbuffer(L, (const char *)luaJIT_BC_policy_boot, luaJIT_BC_policy_boot_SIZE, "=policy_boot");
    if (rc == 0 && (rc = lua_pcall(L, 0, 1, 0)) == 0) {
        lua_getfield(L, -1, "setup");
        lua_pushlightuserdata(L, ps->ctx);
        lua_pushstring(L, chunk);
        lua_pushstring(L, ps->pol->source);
        lua_pushstring(L, budget_msg);
        push_names(L);
        lua_pushstring(L, prt__views_cdef);
        ps->ctx->budget = 100000000; /* the file's top level: generous, still bounded */
        rc = lua_pcall(L, 6, 3, 0);
    }
    return rc;
}

/* The policy table's fields for endpoint.c (at the top of L's stack):
 * `ban`, the circuit breaker { after = failed connects, first = seconds,
 * max = seconds }, and `max_lag`, seconds a standby may be behind and
 * still serve first; none when absent.  Returns 0, or -1 with err naming
 * the problem. */
static int read_endpoint_fields(lua_State *L, prt__policy *pol, char *err, size_t errlen)
{
    lua_getfield(L, -1, "ban");
    int rc = 0;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "after");
        lua_getfield(L, -2, "first");
        lua_getfield(L, -3, "max");
        double after = lua_tonumber(L, -3), first = lua_isnil(L, -2) ? 1 : lua_tonumber(L, -2),
               max = lua_isnil(L, -1) ? 30 : lua_tonumber(L, -1);
        if (!(after >= 1 && after <= 1000 && after == (int)after) || !(first > 0 && first <= 3600) ||
            !(max >= first && max <= 86400))
            rc = -1;
        else
            pol->ban_after = (int)after, pol->ban_first = first, pol->ban_max = max;
        lua_pop(L, 3);
    } else if (!lua_isnil(L, -1)) {
        rc = -1;
    }
    lua_pop(L, 1);
    if (rc != 0) {
        prt__errf(err, errlen, "policy \"%s\": ban must be { after = integer >= 1, first = seconds > 0 (1), "
                  "max = seconds >= first (30) }", pol->path);
        return rc;
    }
    lua_getfield(L, -1, "max_lag");
    double lag = lua_tonumber(L, -1);
    if (!lua_isnil(L, -1) && !(lua_type(L, -1) == LUA_TNUMBER && lag > 0 && lag <= 86400)) {
        prt__errf(err, errlen, "policy \"%s\": max_lag must be seconds in (0, 86400]", pol->path);
        rc = -1;
    }
    pol->max_lag = rc == 0 && !lua_isnil(L, -1) ? lag : 0;
    lua_pop(L, 1);
    return rc;
}

/* Builds a state for `pol`: boots it, then keeps a registry reference to
 * each Lua hook's trampoline.  With fill_modes the hook kinds are written
 * into pol->mode (only while loading).  Returns NULL with err set on
 * failure; the state holds its own reference to pol. */
prt__pstate *prt__pstate_new(prt__policy *pol, int fill_modes, char *err, size_t errlen)
{
    prt__pstate *ps = calloc(1, sizeof *ps);
    if (!ps || !(ps->ctx = calloc(1, sizeof *ps->ctx))) {
        free(ps);
        prt__errf(err, errlen, "policy: out of memory");
        return NULL;
    }
    atomic_fetch_add(&pol->refs, 1);
    ps->pol = pol;
    for (int h = 0; h < PRT__NHOOKS; h++)
        ps->ref[h] = LUA_NOREF;
    if (!pol->source)
        return ps; /* the built-in policy: nothing to run in Lua */
    lua_State *L = ps->L = luaL_newstate();
    if (!L) {
        prt__errf(err, errlen, "policy \"%s\": out of memory creating a Lua state", pol->path);
        prt__pstate_free(ps);
        return NULL;
    }
    luaL_openlibs(L);
    if (boot(ps) != 0) {
        prt__errf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "policy: error");
        prt__pstate_free(ps);
        return NULL;
    }
    /* stack: boot, kinds, trampolines, policy */
    for (int h = 0; h < PRT__NHOOKS; h++) {
        lua_getfield(L, -3, prt_policy_hook_name(h));
        const char *kind = lua_tostring(L, -1);
        int mode = !kind ? PRT__MODE_DEFAULT : strcmp(kind, "function") == 0 ? PRT__MODE_LUA : prt__builtin_id(h, kind);
        lua_pop(L, 1);
        if (fill_modes)
            pol->mode[h] = mode;
        if (mode == PRT__MODE_LUA) {
            lua_getfield(L, -2, prt_policy_hook_name(h));
            ps->ref[h] = luaL_ref(L, LUA_REGISTRYINDEX);
            hook_where(ps, lua_gettop(L), h);
        }
    }
    if (fill_modes && read_endpoint_fields(L, pol, err, errlen) != 0) {
        prt__pstate_free(ps);
        return NULL;
    }
    lua_settop(L, 0);
    return ps;
}

int prt__pstate_mode(const prt__pstate *ps, int hook)
{
    return ps ? ps->pol->mode[hook] : PRT__MODE_DEFAULT;
}

/* Per-thread states, one per runtime the thread has called hooks for.  The
 * list lives on the heap and is registered with a pthread key so that it is
 * closed when the thread exits. */
enum { TLS_MAX = 8 };
typedef struct tls_states {
    prt__pstate *s[TLS_MAX];
    int n;
} tls_states;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static _Thread_local tls_states *tls;

static void tls_destroy(void *arg)
{
    tls_states *t = arg;
    for (int i = 0; i < t->n; i++)
        prt__pstate_free(t->s[i]);
    free(t);
}

static void tls_init(void)
{
    pthread_key_create(&tls_key, tls_destroy);
}

static tls_states *tls_get(void)
{
    if (!tls) {
        pthread_once(&tls_once, tls_init);
        tls = calloc(1, sizeof *tls);
        if (tls)
            pthread_setspecific(tls_key, tls);
    }
    return tls;
}

static int tls_find(tls_states *t, uint64_t rt_id)
{
    for (int i = 0; i < t->n; i++)
        if (t->s[i]->rt_id == rt_id)
            return i;
    return -1;
}

/* Drops the calling thread's state for rt (called when rt is freed). */
void prt__policy_forget(prt_runtime *rt)
{
    tls_states *t = tls;
    int i = t ? tls_find(t, rt->id) : -1;
    if (i >= 0) {
        prt__pstate_free(t->s[i]);
        t->s[i] = t->s[--t->n];
    }
}

/* A new state for rt's live policy, bound to rt (its counters, its limits
 * in every view).  NULL with err set on failure. */
static prt__pstate *state_for(prt_runtime *rt, char *err, size_t errlen)
{
    prt__mu_lock(&rt->policy_mu, PRT__RANK_POLICY);
    prt__policy *pol = rt->policy;
    atomic_fetch_add(&pol->refs, 1);
    prt__mu_unlock(&rt->policy_mu, PRT__RANK_POLICY);
    prt__pstate *ps = prt__pstate_new(pol, 0, err, errlen);
    prt__policy_unref(pol);
    if (ps) {
        ps->rt_id = rt->id;
        ps->rt = rt;
        ps->steps = rt->opts.hook_steps;
        prt__view_limits(&ps->ctx->limits, &rt->opts);
    }
    return ps;
}

/* The calling thread's state for rt's live policy, built or rebuilt when
 * the generation has moved on.  NULL when the live policy has no Lua hooks,
 * or a state could not be built (logged; callers use built-in answers). */
prt__pstate *prt__policy_thread(prt_runtime *rt)
{
    tls_states *t = tls_get();
    if (!t)
        return NULL;
    uint64_t gen = atomic_load(&rt->generation);
    int i = tls_find(t, rt->id);
    if (i >= 0 && t->s[i]->pol->generation == gen)
        return t->s[i]->L ? t->s[i] : NULL;
    char err[PRT__ERRLEN];
    prt__pstate *ps = state_for(rt, err, sizeof err);
    if (!ps) {
        prt__logf(PRT_LOG_ERROR, "%s (keeping this thread's previous policy state)", err);
        return i >= 0 && t->s[i]->L ? t->s[i] : NULL;
    }
    if (i >= 0) {
        prt__pstate_free(t->s[i]); /* this thread was its only user */
        t->s[i] = ps;
    } else {
        if (t->n == TLS_MAX) { /* a thread serving many runtimes: drop the oldest */
            prt__pstate_free(t->s[0]);
            t->s[0] = t->s[--t->n];
        }
        t->s[t->n++] = ps;
    }
    return ps->L ? ps : NULL;
}
