/*
 * policy_check.c -- loading a policy file: read, compile, dry-run.
 *
 * Nothing goes live that has not run once: prt__policy_load (used by
 * prt_runtime_new and every reload) builds a throwaway state, calls each Lua
 * hook on sample inputs -- a pool of 10 with three idle connections; for
 * `budget`, a server of 100 connections shared by a fleet of 4; for
 * `route`, three multiplexed connections; for `endpoint`, a primary and
 * two standbys, one of them 5 s behind -- and
 * judges the answers with the very validators of live calls
 * (policy_hooks.c) on a pool that exists only here.  `poolrt check`
 * (prt_policy_check) prints what each hook returned.
 */
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policy.h"

/* Reads a whole file into a new NUL-terminated buffer (the caller frees
 * it).  NULL with err set when it cannot be read. */
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

/* The budget hook's sample: a server of max_connections 100 (3 reserved)
 * with 40 client backends, 30 of them a fleet of 4 members, 8 this
 * runtime's, which is configured for 50 and holds 8 in 2 pools. */
static const prt_server_view sample_server = { 100, 3, 40, 4, 30, 8, 1.0 };
static const prt_rt_view sample_rt = { 50, 8, 2, 10 };
/* The route hook's sample: three multiplexed connections with 4, 0 and 2
 * statements in flight. */
static const prt_route_view sample_route[3] = { { 1, 120, 4, 1 }, { 2, 80, 0, 1 }, { 3, 100, 2, 1 } };
/* The endpoint hook's sample, for a prefer-standby pool: a primary with 2
 * of the pool's connections, a standby caught up and one 5 s behind. */
static const prt_endpoint_view sample_endpoints[3] = {
    { "db1:5432", PRT_ROLE_PRIMARY, 1, 1, 0, 0, 0, 6, 2, 0, 0, 1.0 },
    { "db2:5432", PRT_ROLE_STANDBY, 1, 1, 1, 0, 0, 3, 1, 0, 0, 1.0 },
    { "db3:5432", PRT_ROLE_STANDBY, 1, 1, 1, 0, 0, 1, 0, 81920, 5.0, 1.0 },
};

/* Sample inputs for dry runs: a pool of 10 with three idle connections,
 * in a runtime with the default limits. */
static void sample_inputs(prt__pstate *ps)
{
    prt_hook_ctx *c = ps->ctx;
    double now = prt_now();
    memset(&c->pool, 0, sizeof c->pool);
    snprintf(c->pool.name_, sizeof c->pool.name_, "sample");
    c->pool.max = c->pool.configured_ = 10;
    c->pool.min_idle = 1;
    c->pool.total = 5;
    c->pool.idle = 3;
    c->pool.in_use = 2;
    c->pool.threads = 4;
    c->pool.evictable_ = -1;
    c->pool.created_at = now - 600;
    c->pool.last_used_at = now - 1;
    c->idle.n = 3;
    for (int i = 1; i <= 3; i++)
        c->idle.v[i] = (prt_conn_view){ i, now - 600 + i, now - 10 * (4 - i), 10.0 * i, 0 };
    c->req = (prt_req_view){ 2.0, 1 };
    c->now = now;
    c->server = sample_server;
    c->server.sampled_at = now;
    c->rt = sample_rt;
    c->route.n = 3;
    memcpy(&c->route.v[1], sample_route, sizeof sample_route);
    c->endpoints.n = 3;
    memcpy(&c->endpoints.v[1], sample_endpoints, sizeof sample_endpoints);
    prt_runtime_opts o;
    prt_runtime_opts_default(&o);
    prt__view_limits(&c->limits, &o);
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
    ps->ctx->budget = ps->steps;
    if (lua_pcall(L, nargs, LUA_MULTRET, 0) != 0) {
        prt__errf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
        return -1;
    }
    char line[256] = "", val[96];
    for (int i = 1; i <= lua_gettop(L) && strlen(line) < 150; i++) {
        prt__describe(L, i, val, sizeof val);
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s", i > 1 ? ", " : "", val);
    }
    size_t n = strlen(report);
    if (n < replen)
        snprintf(report + n, replen - n, "  %-12s %-24s -> %s\n", prt_policy_hook_name(hook), ps->where[hook],
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
    case PRT__H_BUDGET: prt__hook_budget(ps, &(prt_server_view){ 0 }, &sample_rt); /* unsampled, then sampled */
                        prt__hook_budget(ps, &sample_server, &sample_rt); break;
    case PRT__H_ROUTE: prt__hook_route(ps, &p, sample_route, 3); break;
    case PRT__H_ENDPOINT: prt__hook_endpoint(ps, &p, sample_endpoints, 3); break;
    default: break;
    }
    if (ps->nerrors == before)
        return 0;
    prt__errf(err, errlen, "%s", ps->last_error);
    return -1;
}

/* A new policy for path with its source read.  NULL with err set. */
static prt__policy *policy_read(const char *path, char *err, size_t errlen)
{
    prt__policy *pol = prt__policy_builtin();
    if (!pol || !(pol->path = strdup(path))) {
        prt__errf(err, errlen, "policy \"%s\": out of memory", path);
        prt__policy_unref(pol);
        return NULL;
    }
    if (!(pol->source = read_file(path, err, errlen))) {
        prt__policy_unref(pol);
        return NULL;
    }
    return pol;
}

/* Reads, compiles and dry-runs a policy file.  On success *out is a new
 * policy (one reference) and report lists what each hook returned on the
 * sample inputs.  On failure err carries file:line and the problem. */
int prt__policy_load(const char *path, int32_t steps, prt__policy **out, char *report, size_t replen,
                     char *err, size_t errlen)
{
    if (report && replen)
        report[0] = '\0';
    prt__policy *pol = policy_read(path, err, errlen);
    if (!pol)
        return PRT_EPOLICY;
    prt__pstate *ps = prt__pstate_new(pol, 1, err, errlen);
    int rc = ps ? PRT_OK : PRT_EPOLICY;
    if (ps)
        ps->steps = steps;
    for (int h = 0; ps && h < PRT__NHOOKS && rc == PRT_OK; h++) {
        if (pol->mode[h] != PRT__MODE_LUA)
            continue;
        if (dry_run(ps, h, report ? report : (char[1]){ 0 }, report ? replen : 1, err, errlen) != 0)
            rc = PRT_EPOLICY;
        else if (h != PRT__H_ADMIT && h != PRT__H_EVICT && h != PRT__H_ON_EVICT &&
                 validate_sample(ps, h, err, errlen) != 0)
            rc = PRT_EPOLICY;
    }
    prt__pstate_free(ps);
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
        const char *what = pol->mode[h] == PRT__MODE_DEFAULT ? "(built-in default)"
                                                             : prt_policy_builtin_name(h, pol->mode[h] - 1);
        if (n < replen)
            snprintf(report + n, replen - n, "  %-12s %s\n", prt_policy_hook_name(h), what);
    }
    prt__policy_unref(pol);
    return PRT_OK;
}
