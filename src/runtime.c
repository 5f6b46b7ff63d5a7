/*
 * runtime.c -- the runtime: its lifecycle, the timer thread it owns, the
 * live policy it publishes, and shutdown (drain, then free).  Pools by
 * name are registry.c's; the reap cycle the timer runs is reap.c's.
 *
 * The process keeps a list of every live runtime (it grows as needed) so
 * that process-wide events -- SIGHUP reload, SIGTERM drain, the host's
 * metrics -- reach all of them.  prt_runtime_free detaches the pools that
 * outlive it (pool.c) so that they never touch it again.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

const char *prt_version(void)
{
    return PRT_VERSION;
}

const char *prt_strerror(int rc)
{
    switch (rc) {
    case PRT_OK: return "ok";
    case PRT_ENOMEM: return "out of memory";
    case PRT_EINVAL: return "invalid argument";
    case PRT_ETIMEDOUT: return "timed out";
    case PRT_ECONNECT: return "connect failed";
    case PRT_EQUERY: return "query failed";
    case PRT_EBROKEN: return "connection broken";
    case PRT_ECLOSED: return "closed";
    case PRT_ETHREAD: return "thread start failed";
    case PRT_ENOTFOUND: return "no such pool";
    case PRT_EFULL: return "full (the overflow or admit policy says fail)";
    case PRT_EPOLICY: return "policy failed to load or dry-run";
    case PRT_ERECONNECTED: return "reconnected (notifications sent meanwhile were lost)";
    default: return "unknown error";
    }
}

void prt_runtime_opts_default(prt_runtime_opts *o)
{
    *o = (prt_runtime_opts){ .reap_interval = 1.0, .max_pools = 100, .hook_steps = 1000000,
                             .server_sample_interval = 2.0 };
}

static atomic_uint_fast64_t next_runtime_id;

/* Every live runtime of the process, for process-wide events (SIGHUP,
 * SIGTERM, --watch in the host) and metrics; it grows as needed, so none
 * is left out.  Protected by live_mu. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static prt_runtime **live;
static int nlive, live_cap;

/* Adds rt to the live list.  Returns 0, or PRT_ENOMEM. */
static int live_add(prt_runtime *rt)
{
    prt__mu_lock(&live_mu, PRT__RANK_LIVE);
    prt_runtime **grown = prt__grow(live, &live_cap, nlive + 1, sizeof *grown);
    if (grown) {
        live = grown;
        live[nlive++] = rt;
    }
    prt__mu_unlock(&live_mu, PRT__RANK_LIVE);
    return grown ? PRT_OK : PRT_ENOMEM;
}

/* How many runtimes are live in the process (what SIGHUP, drain and
 * metrics reach). */
int prt__live_count(void)
{
    prt__mu_lock(&live_mu, PRT__RANK_LIVE);
    int n = nlive;
    prt__mu_unlock(&live_mu, PRT__RANK_LIVE);
    return n;
}

static void live_remove(prt_runtime *rt)
{
    prt__mu_lock(&live_mu, PRT__RANK_LIVE);
    for (int i = 0; i < nlive; i++)
        if (live[i] == rt)
            live[i] = live[--nlive];
    prt__mu_unlock(&live_mu, PRT__RANK_LIVE);
}

/* Reloads the live policy file of every runtime that has one.  Returns the
 * number of runtimes whose reload failed (each logged). */
int prt_reload_all(void)
{
    int failed = 0;
    prt__mu_lock(&live_mu, PRT__RANK_LIVE);
    for (int i = 0; i < nlive; i++) {
        prt__mu_lock(&live[i]->policy_mu, PRT__RANK_POLICY);
        int has_file = live[i]->policy->path != NULL;
        prt__mu_unlock(&live[i]->policy_mu, PRT__RANK_POLICY);
        char err[PRT__ERRLEN];
        if (has_file && prt_runtime_reload(live[i], NULL, err, sizeof err) != PRT_OK)
            failed++;
    }
    prt__mu_unlock(&live_mu, PRT__RANK_LIVE);
    return failed;
}

/* Every live runtime's metrics as one exposition (metrics.c); NULL when out
 * of memory.  live_mu keeps the runtimes alive while they are read. */
char *prt__live_metrics(void)
{
    prt__mu_lock(&live_mu, PRT__RANK_LIVE);
    char *all = prt__metrics_text_of(live, nlive);
    prt__mu_unlock(&live_mu, PRT__RANK_LIVE);
    return all;
}

/* Drains every runtime (see prt_runtime_drain), sharing one grace period
 * (< 0: PRT_DRAIN_GRACE).  Returns 0, or PRT_ETIMEDOUT when connections
 * were still in use. */
int prt_drain_all(double grace)
{
    int rc = PRT_OK;
    if (grace < 0)
        grace = PRT_DRAIN_GRACE;
    double deadline = prt_now() + grace;
    prt__mu_lock(&live_mu, PRT__RANK_LIVE);
    for (int i = 0; i < nlive; i++) {
        double left = deadline - prt_now();
        if (prt_runtime_drain(live[i], left > 0 ? left : 0) != PRT_OK)
            rc = PRT_ETIMEDOUT;
    }
    prt__mu_unlock(&live_mu, PRT__RANK_LIVE);
    return rc;
}

/* opts.pools_overflow's names, in the order of pools_overflow_allow's values. */
static const char *const overflow_names[] = { "fail", "allow" };

/* Checks every runtime option's value (the one place they are checked:
 * bindings only convert types), and resolves pools_overflow into
 * *overflow_allow.  Returns 0, or PRT_EINVAL with err naming the option
 * and the value. */
static int check_opts(const prt_runtime_opts *o, int *overflow_allow, char *err, size_t errlen)
{
    *overflow_allow = o->pools_overflow_allow != 0;
    if (o->pools_overflow) {
        *overflow_allow = -1;
        for (int i = 0; i < 2; i++)
            if (strcmp(o->pools_overflow, overflow_names[i]) == 0)
                *overflow_allow = i;
        if (*overflow_allow < 0) {
            prt__errf(err, errlen, "runtime: pools_overflow must be \"fail\" or \"allow\", got \"%.40s\"",
                      o->pools_overflow);
            return PRT_EINVAL;
        }
    }
    const char *name = NULL;
    double got = 0;
    if (o->max_pools < 0)
        name = "max_pools must be >= 0", got = o->max_pools;
    else if (o->max_connections < 0)
        name = "max_connections must be >= 0", got = o->max_connections;
    else if (o->hook_steps < 1)
        name = "hook_steps must be >= 1", got = o->hook_steps;
    else if (o->reap_interval != o->reap_interval)
        name = "reap_interval must be a number of seconds (<= 0: no timer)", got = o->reap_interval;
    else if (!(o->pool_idle_timeout >= 0))
        name = "pool_idle_timeout must be >= 0", got = o->pool_idle_timeout;
    if (name) {
        prt__errf(err, errlen, "runtime: %s, got %g", name, got);
        return PRT_EINVAL;
    }
    return prt__fleet_check(o, err, errlen); /* fleet, server_sample_interval */
}

/* Makes pol the live policy under the next generation; threads switch at
 * their next hook call.  Takes over the caller's reference. */
static void publish(prt_runtime *rt, prt__policy *pol)
{
    prt__mu_lock(&rt->policy_mu, PRT__RANK_POLICY);
    prt__policy *old = rt->policy;
    pol->generation = atomic_load(&rt->generation) + 1;
    rt->policy = pol;
    atomic_store(&rt->pick_mode, pol->mode[PRT__H_PICK]);
    atomic_store(&rt->overflow_mode, pol->mode[PRT__H_OVERFLOW]);
    atomic_store(&rt->admit_mode, pol->mode[PRT__H_ADMIT]);
    atomic_store(&rt->route_mode, pol->mode[PRT__H_ROUTE]);
    atomic_store(&rt->endpoint_mode, pol->mode[PRT__H_ENDPOINT]);
    prt__eptab_set_policy(rt->eptab, pol);
    atomic_store(&rt->acquire_hooks_lua, pol->mode[PRT__H_PICK] == PRT__MODE_LUA || pol->mode[PRT__H_OVERFLOW] == PRT__MODE_LUA);
    atomic_store(&rt->generation, pol->generation);
    prt__mu_unlock(&rt->policy_mu, PRT__RANK_POLICY);
    prt__policy_unref(old);
}

/* Creates a runtime and starts its timer thread.  *out is freed with
 * prt_runtime_free. */
int prt_runtime_new(const prt_runtime_opts *o, prt_runtime **out, char *err, size_t errlen)
{
    prt_runtime_opts def;
    if (!o) {
        prt_runtime_opts_default(&def);
        o = &def;
    }
    int overflow_allow;
    if (!out) {
        prt__errf(err, errlen, "runtime: no place for the runtime (out is NULL)");
        return PRT_EINVAL;
    }
    if (check_opts(o, &overflow_allow, err, errlen) != PRT_OK)
        return PRT_EINVAL;
    prt__policy *pol = NULL;
    int rc = o->policy ? prt__policy_load(o->policy, o->hook_steps, &pol, NULL, 0, err, errlen) : PRT_OK;
    if (rc != PRT_OK)
        return rc;
    if (!pol)
        pol = prt__policy_builtin();
    prt_runtime *rt = calloc(1, sizeof *rt);
    if (!rt || !pol || !(rt->eptab = prt__eptab_new(o->server_sample_interval)) || (o->conninfo && !(rt->conninfo = strdup(o->conninfo)))) {
        if (rt)
            prt__eptab_unref(rt->eptab);
        free(rt);
        prt__policy_unref(pol);
        prt__errf(err, errlen, "runtime: out of memory");
        return PRT_ENOMEM;
    }
    rt->opts = *o;
    rt->opts.pools_overflow = NULL; /* resolved into pools_overflow_allow */
    rt->opts.pools_overflow_allow = overflow_allow;
    rt->opts.conninfo = rt->conninfo;
    rt->opts.policy = NULL; /* the live policy keeps its own path */
    rt->opts.fleet = NULL;  /* prt__fleet_start keeps its own copy */
    rt->opts.record = NULL; /* rt->rec holds the open file */
    rt->id = atomic_fetch_add(&next_runtime_id, 1) + 1;
    rt->on_capacity = prt__pools_on_capacity; /* before a provider can report (capacity.h) */
    rt->mux_new = prt__mux_new;
    atomic_init(&rt->cap, o->max_connections);
    pthread_mutex_init(&rt->mu, NULL);
    pthread_mutex_init(&rt->policy_mu, NULL);
    prt__cond_init(&rt->cond);
    publish(rt, pol);
    if (o->record && (rc = prt__record_open(o->record, &rt->rec, err, errlen)) != PRT_OK) {
        prt_runtime_free(rt);
        return rc;
    }
    if (o->shared_budget && (rc = prt__budget_join(rt, o->shared_budget, err, errlen)) != PRT_OK) {
        prt_runtime_free(rt);
        return rc;
    }
    if (o->reap_interval > 0) {
        if (prt__thread_create(&rt->timer, prt__timer_main, rt) != 0) {
            prt__errf(err, errlen, "runtime: could not start the timer thread");
            prt_runtime_free(rt);
            return PRT_ETHREAD;
        }
        rt->has_timer = 1;
    }
    prt__pools_first_budget(rt);
    if ((rc = prt__fleet_start(rt, o, err, errlen)) != PRT_OK) {
        prt_runtime_free(rt);
        return rc;
    }
    if (live_add(rt) != PRT_OK) {
        prt__errf(err, errlen, "runtime: out of memory");
        prt_runtime_free(rt);
        return PRT_ENOMEM;
    }
    *out = rt;
    return PRT_OK;
}

/* Connections in use or opening across the runtime's pools. */
static int in_use_total(prt_runtime *rt)
{
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools), out = 0;
    for (int i = 0; i < n; i++) {
        prt__lock(pools[i]);
        out += pools[i]->in_use + pools[i]->opening;
        prt__unlock(pools[i]);
    }
    prt__registry_release(pools, n);
    return out;
}

/* Stops taking new work (new pools and acquires fail, waiters are woken
 * with an error), closes idle connections, and waits up to `grace` seconds
 * (< 0: PRT_DRAIN_GRACE) for connections in use to come back.  Returns 0,
 * or PRT_ETIMEDOUT with connections still out. */
int prt_runtime_drain(prt_runtime *rt, double grace)
{
    if (grace < 0)
        grace = PRT_DRAIN_GRACE;
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    rt->draining = 1;
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools);
    for (int i = 0; i < n; i++)
        prt__pool_close(pools[i], PRT_POOL_DRAINING);
    prt__registry_release(pools, n);
    double deadline = prt_now() + grace;
    int out;
    while ((out = in_use_total(rt)) > 0 && prt_now() < deadline)
        prt_sleep(0.005);
    if (out > 0 && grace > 0)
        prt__logf(PRT_LOG_WARN, "runtime: %d connection(s) still in use after the %.1fs grace period", out, grace);
    return out > 0 ? PRT_ETIMEDOUT : PRT_OK;
}

/* Stops the timer, drains without grace and drops every pool.  Pools still
 * referenced (handles not yet released, connections still in use, evicted
 * ones included) stay allocated, closed and detached from the runtime,
 * until their last reference goes. */
void prt_runtime_free(prt_runtime *rt)
{
    if (!rt)
        return;
    live_remove(rt);
    prt__thread_stop(rt->timer, rt->has_timer, &rt->mu, PRT__RANK_RT, &rt->cond, &rt->stopping);
    prt_runtime_drain(rt, 0);
    prt__fleet_stop(rt);
    prt__eptab_stop(rt->eptab); /* after the drain, which wakes a sample waiting to acquire */
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    prt_pool **pools = rt->pools;
    int n = rt->npools;
    rt->pools = NULL;
    rt->npools = 0;
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    for (int i = 0; i < n; i++) {
        prt__lock(pools[i]);
        if (pools[i]->in_use > 0)
            prt__logf(PRT_LOG_WARN, "pool \"%s\": runtime freed with %d connection(s) still in use; "
                      "they close when released", pools[i]->name, pools[i]->in_use);
        prt__unlock(pools[i]);
    }
    prt__pools_detach(rt); /* these and the evicted ones still allocated */
    prt__budget_leave(rt); /* after the detach: connections still out no longer give units */
    for (int i = 0; i < n; i++)
        prt_pool_unref(pools[i]);
    free(pools);
    prt__policy_forget(rt);
    prt__policy_unref(rt->policy);
    prt__record_unref(rt->rec); /* pools still allocated keep their own reference */
    pthread_cond_destroy(&rt->cond);
    pthread_mutex_destroy(&rt->policy_mu);
    pthread_mutex_destroy(&rt->mu);
    free(rt->conninfo);
    prt__eptab_unref(rt->eptab); /* pools that outlive rt keep theirs */
    free(rt);
}

/* Loads `path` (NULL: the live policy's file again), and on success makes
 * it live and re-sizes every pool.  On failure the live policy keeps
 * serving and err says why (file:line). */
int prt_runtime_reload(prt_runtime *rt, const char *path, char *err, size_t errlen)
{
    char *file = NULL;
    prt__mu_lock(&rt->policy_mu, PRT__RANK_POLICY);
    if (path || rt->policy->path)
        file = strdup(path ? path : rt->policy->path);
    uint64_t gen = atomic_load(&rt->generation);
    prt__mu_unlock(&rt->policy_mu, PRT__RANK_POLICY);
    if (!file) {
        prt__errf(err, errlen, "policy: nothing to reload (this runtime runs the built-in default; give a file)");
        atomic_fetch_add(&rt->reloads_failed, 1);
        return PRT_EINVAL;
    }
    prt__policy *pol = NULL;
    int rc = prt__policy_load(file, rt->opts.hook_steps, &pol, NULL, 0, err, errlen);
    if (rc != PRT_OK) {
        atomic_fetch_add(&rt->reloads_failed, 1);
        prt__logf(PRT_LOG_ERROR, "policy reload of \"%s\" failed; generation %llu keeps serving: %s", file,
                  (unsigned long long)gen, err ? err : "");
        free(file);
        return rc;
    }
    publish(rt, pol);
    atomic_fetch_add(&rt->reloads_ok, 1);
    prt__logf(PRT_LOG_INFO, "policy \"%s\" is live as generation %llu", file,
              (unsigned long long)atomic_load(&rt->generation));
    free(file);
    prt__pools_policy_changed(rt); /* the new policy's budget */
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools);
    for (int i = 0; i < n; i++)
        prt__pool_apply_size(pools[i]);
    prt__registry_release(pools, n);
    return PRT_OK;
}

void prt_runtime_policy_stats(prt_runtime *rt, prt_policy_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int h = 0; h < PRT__NHOOKS; h++) {
        out->calls[h] = atomic_load(&rt->hook_calls[h]);
        out->errors[h] = atomic_load(&rt->hook_errors[h]);
    }
    out->reloads_ok = atomic_load(&rt->reloads_ok);
    out->reloads_failed = atomic_load(&rt->reloads_failed);
    out->generation = atomic_load(&rt->generation);
    prt__mu_lock(&rt->policy_mu, PRT__RANK_POLICY);
    snprintf(out->last_error, sizeof out->last_error, "%s", rt->last_hook_error);
    prt__mu_unlock(&rt->policy_mu, PRT__RANK_POLICY);
}

void prt_runtime_stats_get(prt_runtime *rt, prt_runtime_stats *out)
{
    memset(out, 0, sizeof *out);
    out->pools = prt_runtime_pool_count(rt);
    out->max_pools = rt->opts.max_pools;
    out->connections = atomic_load(&rt->nconns);
    out->max_connections = rt->opts.max_connections;
    out->pools_over_cap_total = atomic_load(&rt->pools_over_cap);
    for (int i = 0; i < 3; i++)
        out->pools_evicted_total[i] = atomic_load(&rt->pools_evicted[i]);
    out->budget = atomic_load(&rt->cap);
    out->budget_waiting = prt__pools_waiting_for_slots(rt);
    prt__fleet_stats(rt, out);
}

int prt_runtime_endpoints(prt_runtime *rt, prt_endpoint_stats *out, int max)
{
    return rt ? prt__runtime_endpoints(rt->eptab, out, max) : 0;
}
