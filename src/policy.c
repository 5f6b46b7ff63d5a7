/*
 * policy.c -- the policy boundary: the only file that touches the Lua C API
 * for policies.
 *
 * A policy file is read once, compiled and dry-run in a fresh state
 * (prt__policy_load); the result, a prt__policy, is published by the
 * runtime under a generation number.  Hooks then run in Lua states owned by
 * poolrt, one per OS thread that calls them (prt__policy_thread), built
 * lazily and rebuilt when the generation moves on.  A state is used only by
 * its thread, so it needs no lock; the thread closes its old state itself
 * when it switches, so no call ever runs on a closed state.
 *
 * Inputs reach hooks through one C-allocated prt_hook_ctx per state, which
 * the Lua side holds as a persistent FFI pointer; outputs are validated
 * here.  A Lua error, a wrong value or an exhausted step budget (see
 * lua/poolrt/policy_boot.lua for how runaway loops are stopped with the JIT
 * on) makes the call return the built-in answer, bumps the hook's error
 * counter and logs a rate-limited line naming file, hook and error.
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "policy_boot.h" /* generated: luaJIT_BC_policy_boot, the compiled boot module */

struct prt__pstate {
    uint64_t rt_id;
    prt__policy *pol;        /* a reference */
    lua_State *L;            /* NULL when the policy has no Lua hooks */
    int ref[PRT__NHOOKS];    /* registry refs of the trampolines */
    char where[PRT__NHOOKS][128]; /* "file:line" of each hook function */
    prt_hook_ctx *ctx;
    prt_pool_view *pools;    /* 1-based array behind ctx->pools */
    int pools_cap;
    prt_runtime *rt;         /* for counters and logs; NULL during a dry run */
    int32_t budget;          /* steps per call */
    uint64_t named;          /* serial of the pool whose name is in ctx->pool */
    uint64_t nerrors;        /* failed calls on this state */
    char last_error[PRT__ERRLEN];
};

static const char *const hook_names[PRT__NHOOKS] = {
    "pick", "size", "overflow", "admit", "evict", "reap", "concurrency", "on_evict",
};
static const char *const builtins[PRT__NHOOKS][5] = {
    [PRT__H_PICK] = { "mru", "lru", "random" },
    [PRT__H_OVERFLOW] = { "wait", "fail", "evict_idle", "grow" },
    [PRT__H_ADMIT] = { "evict_lru", "fail", "allow" },
};
static const char budget_msg[] = "hook exceeded its step budget (an endless loop?)";

const char *prt_policy_hook_name(int hook)
{
    return hook >= 0 && hook < PRT__NHOOKS ? hook_names[hook] : "?";
}

static int builtin_id(int hook, const char *name)
{
    for (int i = 0; i < 5 && builtins[hook][i]; i++)
        if (strcmp(builtins[hook][i], name) == 0)
            return i + 1;
    return PRT__MODE_DEFAULT;
}

/* --- policies -------------------------------------------------------------- */

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

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        prt__errf(err, errlen, "policy \"%s\": cannot read: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        prt__errf(err, errlen, "policy \"%s\": cannot read: %s", path, bad ? "read error" : "out of memory");
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* --- states ---------------------------------------------------------------- */

static void pstate_free(prt__pstate *ps)
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
    lua_getfield(L, polidx, hook_names[hook]);
    lua_Debug ar;
    if (lua_isfunction(L, -1) && lua_getinfo(L, ">S", &ar))
        snprintf(ps->where[hook], sizeof ps->where[hook], "%s:%d", ar.short_src, ar.linedefined);
    else
        lua_pop(L, 1);
}

/* Builds a state for `pol`: runs the boot module, which loads the policy
 * source in its sandbox and returns the hook kinds and trampolines.  With
 * fill_modes the kinds are written into pol->mode (only while loading).
 * Returns NULL with err set on failure. */
static prt__pstate *pstate_new(prt__policy *pol, int fill_modes, char *err, size_t errlen)
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
        pstate_free(ps);
        return NULL;
    }
    luaL_openlibs(L);
    char chunk[1100];
    snprintf(chunk, sizeof chunk, "@%s", pol->path);
    int rc = luaL_loadbuffer(L, (const char *)luaJIT_BC_policy_boot, luaJIT_BC_policy_boot_SIZE, "=policy_boot");
    if (rc == 0 && (rc = lua_pcall(L, 0, 1, 0)) == 0) {
        lua_getfield(L, -1, "setup");
        lua_pushlightuserdata(L, ps->ctx);
        lua_pushstring(L, chunk);
        lua_pushstring(L, pol->source);
        lua_pushstring(L, budget_msg);
        ps->ctx->budget = 100000000; /* the file's top level: generous, still bounded */
        rc = lua_pcall(L, 4, 3, 0);
    }
    if (rc != 0) {
        prt__errf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "policy: error");
        pstate_free(ps);
        return NULL;
    }
    /* stack: boot, kinds, trampolines, policy */
    for (int h = 0; h < PRT__NHOOKS; h++) {
        lua_getfield(L, -3, hook_names[h]);
        const char *kind = lua_tostring(L, -1);
        int mode = !kind ? PRT__MODE_DEFAULT : strcmp(kind, "function") == 0 ? PRT__MODE_LUA : builtin_id(h, kind);
        lua_pop(L, 1);
        if (fill_modes)
            pol->mode[h] = mode;
        if (mode == PRT__MODE_LUA) {
            lua_getfield(L, -2, hook_names[h]);
            ps->ref[h] = luaL_ref(L, LUA_REGISTRYINDEX);
            hook_where(ps, lua_gettop(L), h);
        }
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
        pstate_free(t->s[i]);
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
        pstate_free(t->s[i]);
        t->s[i] = t->s[--t->n];
    }
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
    pthread_mutex_lock(&rt->policy_mu);
    prt__policy *pol = rt->policy;
    atomic_fetch_add(&pol->refs, 1);
    pthread_mutex_unlock(&rt->policy_mu);
    char err[PRT__ERRLEN];
    prt__pstate *ps = pstate_new(pol, 0, err, sizeof err);
    prt__policy_unref(pol);
    if (!ps) {
        prt__logf(PRT_LOG_ERROR, "%s (keeping this thread's previous policy state)", err);
        return i >= 0 && t->s[i]->L ? t->s[i] : NULL;
    }
    ps->rt_id = rt->id;
    ps->rt = rt;
    ps->budget = rt->opts.policy_budget;
    if (i >= 0) {
        pstate_free(t->s[i]); /* this thread was its only user */
        t->s[i] = ps;
    } else {
        if (t->n == TLS_MAX) { /* a thread serving many runtimes: drop the oldest */
            pstate_free(t->s[0]);
            t->s[0] = t->s[--t->n];
        }
        t->s[t->n++] = ps;
    }
    return ps->L ? ps : NULL;
}

/* --- calling hooks --------------------------------------------------------- */

static void fill_counts(prt_pool_view *v, prt_pool *p);

static void describe(lua_State *L, int idx, char *buf, size_t len)
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
    pthread_mutex_lock(&rt->policy_mu);
    snprintf(rt->last_hook_error, sizeof rt->last_hook_error, "%.255s", ps->last_error);
    int log = now - rt->err_logged_at[hook] >= 1.0;
    uint64_t suppressed = rt->err_suppressed[hook];
    if (log) {
        rt->err_logged_at[hook] = now;
        rt->err_suppressed[hook] = 0;
    } else {
        rt->err_suppressed[hook]++;
    }
    pthread_mutex_unlock(&rt->policy_mu);
    if (log)
        prt__logf(PRT_LOG_ERROR, "policy \"%s\": %s; used the built-in default%s", ps->pol->path,
                  ps->last_error, suppressed ? " (earlier errors suppressed)" : "");
}

/* Pushes the hook's trampoline; the caller pushes arguments and calls
 * finish().  Returns 0, or -1 when the hook is not a Lua function here. */
static int begin(prt__pstate *ps, int hook)
{
    if (!ps || !ps->L || ps->ref[hook] == LUA_NOREF)
        return -1;
    lua_settop(ps->L, 0);
    lua_rawgeti(ps->L, LUA_REGISTRYINDEX, ps->ref[hook]);
    return 0;
}

static int finish(prt__pstate *ps, int hook, int nargs, int nres)
{
    if (ps->rt)
        atomic_fetch_add(&ps->rt->hook_calls[hook], 1);
    ps->ctx->budget = ps->budget;
    if (lua_pcall(ps->L, nargs, nres, 0) != 0) {
        const char *m = lua_tostring(ps->L, -1);
        hook_failed(ps, hook, m ? m : "error object is not a string");
        lua_settop(ps->L, 0);
        return -1;
    }
    return 0;
}

/* Rejects a result: counts, logs, clears the stack. */
static int reject(prt__pstate *ps, int hook, int idx, const char *want)
{
    char got[96], msg[256];
    describe(ps->L, idx, got, sizeof got);
    snprintf(msg, sizeof msg, "returned %s (want %s)", got, want);
    hook_failed(ps, hook, msg);
    lua_settop(ps->L, 0);
    return -1;
}

/* A hook's answer that must be a list (nil: empty): returns its length,
 * or -1 after rejecting anything else.  The list stays at stack index 1. */
static int answer_list(prt__pstate *ps, int hook, const char *want)
{
    if (lua_isnil(ps->L, 1))
        return 0;
    if (!lua_istable(ps->L, 1))
        return reject(ps, hook, 1, want);
    return (int)lua_objlen(ps->L, 1);
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

static void fill_pool_view(prt_pool_view *v, prt_pool *p)
{
    snprintf(v->name_, sizeof v->name_, "%s", p->name);
    fill_counts(v, p);
}

/* The view of p in this state's context; the name is copied only when the
 * pool differs from the last call's (most calls repeat the same pool). */
static void pool_view(prt__pstate *ps, prt_pool *p)
{
    if (ps->named != p->serial) {
        snprintf(ps->ctx->pool.name_, sizeof ps->ctx->pool.name_, "%s", p->name);
        ps->named = p->serial;
    }
    fill_counts(&ps->ctx->pool, p);
}

static void fill_counts(prt_pool_view *v, prt_pool *p)
{
    v->max = p->max;
    v->min_idle = p->min_idle;
    v->total = p->total;
    v->idle = p->nidle;
    v->in_use = p->in_use;
    v->waiting = p->nwait;
    v->threads = p->opts.threads;
    v->configured = p->opts.max;
    v->protected_ = p->opts.is_protected;
    v->pinned_ = p->opts.is_pinned;
    v->created_at = p->created_at;
    v->last_used_at = p->last_used_at;
}

/* Fills the idle views (1-based); returns how many, or -1 past the cap. */
static int fill_idle_views(prt__pstate *ps, prt_pool *p)
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

int prt__hook_pick(prt__pstate *ps, prt_pool *p)
{
    if (begin(ps, PRT__H_PICK) != 0 || fill_idle_views(ps, p) < 0)
        return -1;
    pool_view(ps, p);
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

/* Called without p->mu held: the view is filled under it, the hook runs
 * outside.  *max and *min_idle hold the defaults on entry. */
void prt__hook_size(prt__pstate *ps, prt_pool *p, int *max, int *min_idle)
{
    if (begin(ps, PRT__H_SIZE) != 0)
        return;
    pthread_mutex_lock(&p->mu);
    pool_view(ps, p);
    pthread_mutex_unlock(&p->mu);
    if (finish(ps, PRT__H_SIZE, 0, 2) != 0)
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
 * (unchanged when it gave none).  p->mu held. */
int prt__hook_overflow(prt__pstate *ps, prt_pool *p, double timeout, double *wait)
{
    if (begin(ps, PRT__H_OVERFLOW) != 0)
        return PRT__OVF_WAIT;
    pool_view(ps, p);
    ps->ctx->req.timeout = timeout;
    ps->ctx->req.position = p->nwait + 1;
    if (finish(ps, PRT__H_OVERFLOW, 0, 2) != 0)
        return PRT__OVF_WAIT;
    const char *s = lua_type(ps->L, 1) == LUA_TSTRING ? lua_tostring(ps->L, 1) : NULL;
    int mode = s ? builtin_id(PRT__H_OVERFLOW, s) : 0;
    if (!mode)
        return reject(ps, PRT__H_OVERFLOW, 1, "\"wait\", \"fail\", \"evict_idle\" or \"grow\""), PRT__OVF_WAIT;
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
 * Returns how many, or -1 when the built-in rule should apply.  p->mu held. */
int prt__hook_reap(prt__pstate *ps, prt_pool *p, double now, unsigned char *close)
{
    if (begin(ps, PRT__H_REAP) != 0 || fill_idle_views(ps, p) < 0)
        return -1;
    pool_view(ps, p);
    ps->ctx->now = now;
    if (finish(ps, PRT__H_REAP, 0, 1) != 0)
        return -1;
    lua_State *L = ps->L;
    int len = answer_list(ps, PRT__H_REAP, "a list of idle indexes");
    if (len < 0)
        return -1;
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
    if (begin(ps, PRT__H_CONCURRENCY) != 0)
        return -1;
    pthread_mutex_lock(&p->mu);
    pool_view(ps, p);
    pthread_mutex_unlock(&p->mu);
    if (finish(ps, PRT__H_CONCURRENCY, 0, 1) != 0)
        return -1;
    long n;
    if (!as_int(ps->L, 1, 1, 100000, &n))
        return reject(ps, PRT__H_CONCURRENCY, 1, "an integer in 1..100000");
    lua_settop(ps->L, 0);
    return (int)n;
}

/* Fills the 1-based pool views hooks get as `pools`; -1 when out of memory.
 * Takes each pool's lock briefly (callers may hold rt->mu). */
static int fill_pool_list(prt__pstate *ps, prt_pool **pools, int n)
{
    if (n + 1 > ps->pools_cap) {
        prt_pool_view *v = realloc(ps->pools, (size_t)(n + 1) * sizeof *v);
        if (!v)
            return -1;
        ps->pools = v;
        ps->pools_cap = n + 1;
    }
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&pools[i]->mu);
        fill_pool_view(&ps->pools[i + 1], pools[i]);
        pthread_mutex_unlock(&pools[i]->mu);
    }
    ps->ctx->pools = ps->pools;
    ps->ctx->npools = n;
    return 0;
}

int prt__hook_admit(prt__pstate *ps, prt_pool **pools, int n, const char *name)
{
    if (begin(ps, PRT__H_ADMIT) != 0 || fill_pool_list(ps, pools, n) != 0)
        return 0;
    lua_pushstring(ps->L, name);
    if (finish(ps, PRT__H_ADMIT, 1, 1) != 0)
        return 0;
    const char *s = lua_type(ps->L, 1) == LUA_TSTRING ? lua_tostring(ps->L, 1) : NULL;
    int mode = s ? builtin_id(PRT__H_ADMIT, s) : 0;
    if (!mode)
        return reject(ps, PRT__H_ADMIT, 1, "\"evict_lru\", \"fail\" or \"allow\""), 0;
    lua_settop(ps->L, 0);
    return mode;
}

/* Marks evict[i] for each pool named in the hook's answer.  Returns how
 * many, or -1 when the built-in rule should apply. */
int prt__hook_evict(prt__pstate *ps, prt_pool **pools, int n, double now, unsigned char *evict)
{
    if (begin(ps, PRT__H_EVICT) != 0 || fill_pool_list(ps, pools, n) != 0)
        return -1;
    ps->ctx->now = now;
    if (finish(ps, PRT__H_EVICT, 0, 1) != 0)
        return -1;
    lua_State *L = ps->L;
    int len = answer_list(ps, PRT__H_EVICT, "a list of pool names");
    if (len < 0)
        return -1;
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

/* --- loading and dry runs --------------------------------------------------- */

/* Sample inputs for dry runs: a pool of 10 with three idle connections. */
static void sample_inputs(prt__pstate *ps)
{
    prt_hook_ctx *c = ps->ctx;
    double now = prt_now();
    memset(&c->pool, 0, sizeof c->pool);
    snprintf(c->pool.name_, sizeof c->pool.name_, "sample");
    c->pool.max = c->pool.configured = 10;
    c->pool.min_idle = 1;
    c->pool.total = 5;
    c->pool.idle = 3;
    c->pool.in_use = 2;
    c->pool.threads = 4;
    c->pool.created_at = now - 600;
    c->pool.last_used_at = now - 1;
    c->idle.n = 3;
    for (int i = 1; i <= 3; i++)
        c->idle.v[i] = (prt_conn_view){ i, now - 600 + i, now - 10 * (4 - i), 10.0 * i, 0 };
    c->req = (prt_req_view){ 2.0, 1 };
    c->now = now;
}

/* Dry-runs one hook against the sample inputs, appending what it returned
 * to the report.  Returns 0, or -1 with err set. */
static int dry_run(prt__pstate *ps, int hook, char *report, size_t replen, char *err, size_t errlen)
{
    lua_State *L = ps->L;
    sample_inputs(ps);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ps->ref[hook]);
    int nargs = 0;
    if (hook == PRT__H_ADMIT || hook == PRT__H_ON_EVICT) {
        lua_pushstring(L, hook == PRT__H_ADMIT ? "new_tenant" : "sample");
        nargs = 1;
        if (hook == PRT__H_ON_EVICT) {
            lua_pushstring(L, "idle");
            nargs = 2;
        }
    }
    ps->ctx->budget = ps->budget;
    if (lua_pcall(L, nargs, LUA_MULTRET, 0) != 0) {
        prt__errf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
        return -1;
    }
    char line[256] = "", val[96];
    for (int i = 1; i <= lua_gettop(L) && strlen(line) < 150; i++) {
        describe(L, i, val, sizeof val);
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s", i > 1 ? ", " : "", val);
    }
    size_t n = strlen(report);
    if (n < replen)
        snprintf(report + n, replen - n, "  %-12s %-24s -> %s\n", hook_names[hook], ps->where[hook],
                 lua_gettop(L) ? line : "(nothing)");
    return 0;
}

/* Judges a hook's answer on the sample inputs with the validators of live
 * calls, on a pool that exists only here.  Returns 0, or -1 with err. */
static int validate_sample(prt__pstate *ps, int hook, char *err, size_t errlen)
{
    prt_pool p;
    memset(&p, 0, sizeof p);
    prt_conn conns[3], *idle[3];
    double now = prt_now();
    for (int i = 0; i < 3; i++) {
        conns[i] = (prt_conn){ .id = (uint64_t)i + 1, .created_at = now - 600 + i,
                               .returned_at = now - 10 * (3 - i), .uses = 10 * ((uint64_t)i + 1) };
        idle[i] = &conns[i];
    }
    p.name = "sample";
    p.max = p.opts.max = 10;
    p.min_idle = 1;
    p.opts.threads = 4;
    p.idle = idle;
    p.nidle = p.total = 3;
    p.created_at = now - 600;
    p.last_used_at = now - 1;
    pthread_mutex_init(&p.mu, NULL);
    uint64_t before = ps->nerrors;
    unsigned char close[3];
    int m = 10, mi = 1;
    double w = 0;
    switch (hook) {
    case PRT__H_PICK: prt__hook_pick(ps, &p); break;
    case PRT__H_SIZE: prt__hook_size(ps, &p, &m, &mi); break;
    case PRT__H_OVERFLOW: prt__hook_overflow(ps, &p, 2.0, &w); break;
    case PRT__H_REAP: prt__hook_reap(ps, &p, now, close); break;
    case PRT__H_CONCURRENCY: prt__hook_concurrency(ps, &p); break;
    default: break;
    }
    pthread_mutex_destroy(&p.mu);
    if (ps->nerrors == before)
        return 0;
    prt__errf(err, errlen, "%s", ps->last_error);
    return -1;
}

/* Reads, compiles and dry-runs a policy file.  On success *out is a new
 * policy (one reference) and report lists what each hook returned on the
 * sample inputs.  On failure err carries file:line and the problem. */
int prt__policy_load(const char *path, int32_t budget, prt__policy **out, char *report, size_t replen,
                     char *err, size_t errlen)
{
    if (report && replen)
        report[0] = '\0';
    prt__policy *pol = prt__policy_builtin();
    if (!pol || !(pol->path = strdup(path)) || !(pol->source = read_file(path, err, errlen))) {
        if (pol && pol->path && !pol->source)
            ; /* err already says why */
        else
            prt__errf(err, errlen, "policy \"%s\": out of memory", path);
        prt__policy_unref(pol);
        return PRT_EPOLICY;
    }
    prt__pstate *ps = pstate_new(pol, 1, err, errlen);
    int rc = ps ? PRT_OK : PRT_EPOLICY;
    if (ps)
        ps->budget = budget;
    for (int h = 0; ps && h < PRT__NHOOKS && rc == PRT_OK; h++) {
        if (pol->mode[h] != PRT__MODE_LUA)
            continue;
        if (dry_run(ps, h, report ? report : (char[1]){ 0 }, report ? replen : 1, err, errlen) != 0)
            rc = PRT_EPOLICY;
        else if (h != PRT__H_ADMIT && h != PRT__H_EVICT && h != PRT__H_ON_EVICT &&
                 validate_sample(ps, h, err, errlen) != 0)
            rc = PRT_EPOLICY;
    }
    pstate_free(ps);
    if (rc != PRT_OK) {
        prt__policy_unref(pol);
        return rc;
    }
    *out = pol;
    return PRT_OK;
}

int prt_policy_check(const char *path, char *report, size_t replen)
{
    prt__policy *pol = NULL;
    char err[PRT__ERRLEN];
    int rc = prt__policy_load(path, 1000000, &pol, report, replen, err, sizeof err);
    if (rc != PRT_OK) {
        size_t n = strlen(report);
        if (n < replen)
            snprintf(report + n, replen - n, "error: %s\n", err);
        return rc;
    }
    for (int h = 0; h < PRT__NHOOKS; h++) {
        if (pol->mode[h] == PRT__MODE_LUA)
            continue;
        size_t n = strlen(report);
        const char *what = pol->mode[h] == PRT__MODE_DEFAULT ? "(built-in default)" : builtins[h][pol->mode[h] - 1];
        if (n < replen)
            snprintf(report + n, replen - n, "  %-12s %s\n", hook_names[h], what);
    }
    prt__policy_unref(pol);
    return PRT_OK;
}
