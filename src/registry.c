/*
 * registry.c -- a runtime's pools by name (apartment's PoolManager):
 * fetch-or-create under rt->mu, admission when max_pools are live, whole-
 * pool eviction (by name, LRU on admission, by the `evict` hook or idle
 * timeout in the reap cycle) with `on_evict`, and re-admission of a pool
 * evicted automatically when an acquire finds it so.  Snapshots and the
 * work that spans pools (wake-ups, cross-pool evict, the cap) are
 * pools.c's; slots are capacity.c's.
 *
 * A pool is protected from automatic eviction when it is named "default",
 * is marked protected or pinned, or has work in flight (pool.c's
 * prt__pool_evictable).  An evicted pool leaves the registry at once and
 * is closed: idle connections close now, in-use ones when released; a
 * later prt_pool_get of the name creates a fresh pool, and an acquire on
 * a pool evicted automatically brings it back (prt__registry_readmit), so
 * that a caller between lookup and acquire never fails for an eviction.
 *
 * Locks: rt->mu guards the pool array; a pool's own mu is taken inside it
 * only briefly, to read counts.  Hooks and network I/O run outside rt->mu
 * except admission, which decides while holding it so that two creators
 * cannot both take the last place.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static const char *const evict_reasons[PRT_EVICT_NREASONS] = { "manual", "lru", "idle" };

/* The name of an eviction reason (on_evict's argument, the metrics label,
 * the key in runtime stats): the one list of them. */
const char *prt_evict_reason_name(int reason)
{
    return reason >= 0 && reason < PRT_EVICT_NREASONS ? evict_reasons[reason] : "?";
}

static int find(prt_runtime *rt, const char *name)
{
    for (int i = 0; i < rt->npools; i++)
        if (strcmp(rt->pools[i]->name, name) == 0)
            return i;
    return -1;
}

/* Takes pool i out of the array; the registry's reference passes to the
 * caller.  rt->mu held. */
static prt_pool *detach(prt_runtime *rt, int i)
{
    prt_pool *p = rt->pools[i];
    rt->pools[i] = rt->pools[--rt->npools];
    return p;
}

/* Closes a detached pool, tells on_evict, drops the registry's reference.
 * A pool evicted automatically (LRU, idle, the evict hook) may come back
 * on its next acquire (prt__registry_readmit); one evicted by name not. */
static void finish_evict(prt_runtime *rt, prt_pool *p, int reason)
{
    prt__pool_close(p, PRT_POOL_EVICTED);
    if (reason != PRT_EVICT_MANUAL) {
        prt__lock(p);
        p->readmit = 1;
        prt__unlock(p);
    }
    atomic_fetch_add(&rt->pools_evicted[reason], 1);
    prt__logf(PRT_LOG_INFO, "pool \"%s\": evicted (%s)", p->name, evict_reasons[reason]);
    prt__hook_on_evict(prt__policy_thread(rt), p->name, evict_reasons[reason]);
    prt_pool_unref(p);
}

int prt_runtime_evict(prt_runtime *rt, const char *name, char *err, size_t errlen)
{
    if (!rt || !name)
        return PRT_EINVAL;
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    int i = find(rt, name);
    prt_pool *p = i >= 0 ? detach(rt, i) : NULL;
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    if (!p) {
        prt__errf(err, errlen, "pool \"%s\": no such pool", name);
        return PRT_ENOTFOUND;
    }
    finish_evict(rt, p, PRT_EVICT_MANUAL);
    return PRT_OK;
}

/* The least recently used pool that may be evicted, or -1.  rt->mu held. */
static int lru_victim(prt_runtime *rt)
{
    int best = -1;
    double best_t = 0;
    for (int i = 0; i < rt->npools; i++) {
        prt_pool *p = rt->pools[i];
        if (!prt__pool_evictable(p))
            continue;
        prt__lock(p);
        double t = p->last_used_at;
        prt__unlock(p);
        if (best < 0 || t < best_t) {
            best = i;
            best_t = t;
        }
    }
    return best;
}

/* Decides whether pool `name` may be created while max_pools are live.
 * Returns 0 (admitted; *victim may be a detached pool to evict after
 * unlocking) or PRT_EFULL with err.  rt->mu held. */
static int admit(prt_runtime *rt, prt__pstate *ps, const char *name, prt_pool **victim, char *err, size_t errlen)
{
    int mode = prt__pstate_mode(ps, PRT__H_ADMIT);
    if (mode == PRT__MODE_LUA)
        mode = prt__hook_admit(ps, rt->pools, rt->npools, name);
    else if (!ps)
        mode = atomic_load(&rt->admit_mode);
    if (mode <= 0)
        mode = PRT__ADMIT_EVICT_LRU;
    if (mode == PRT__ADMIT_EVICT_LRU) {
        int i = lru_victim(rt);
        if (i >= 0) {
            *victim = detach(rt, i);
            return PRT_OK;
        }
        mode = rt->opts.pools_overflow_allow ? PRT__ADMIT_ALLOW : PRT__ADMIT_FAIL;
        if (mode == PRT__ADMIT_FAIL) {
            prt__errf(err, errlen, "pool \"%s\": max_pools=%d reached; no idle pool to evict", name,
                      rt->opts.max_pools);
            return PRT_EFULL;
        }
    }
    if (mode == PRT__ADMIT_FAIL) {
        prt__errf(err, errlen, "pool \"%s\": max_pools=%d reached; the admit policy says fail", name,
                  rt->opts.max_pools);
        return PRT_EFULL;
    }
    atomic_fetch_add(&rt->pools_over_cap, 1);
    return PRT_OK;
}

/* Room in the pool array for one more.  Returns 0 or PRT_ENOMEM with err.
 * rt->mu held. */
static int make_room(prt_runtime *rt, const char *name, char *err, size_t errlen)
{
    prt_pool **pools = prt__grow(rt->pools, &rt->pools_cap, rt->npools + 1, sizeof *pools);
    if (!pools) {
        prt__errf(err, errlen, "pool \"%s\": out of memory", name);
        return PRT_ENOMEM;
    }
    rt->pools = pools;
    return PRT_OK;
}

/* A new pool from `o`, its connections tagged for the fleet (if any).
 * rt->mu held. */
static int new_pool(prt_runtime *rt, const char *name, const prt_pool_opts *o, prt_pool **out, char *err,
                    size_t errlen)
{
    const char *given = o->conninfo ? o->conninfo : rt->conninfo;
    char *conninfo = given ? prt__fleet_conninfo(rt, given) : NULL;
    if (given && !conninfo) {
        prt__errf(err, errlen, "pool \"%s\": out of memory", name);
        return PRT_ENOMEM;
    }
    int rc = prt__pool_new(rt, name, o, conninfo, out, err, errlen);
    free(conninfo);
    if (rc == PRT_OK && o->multiplex && rt->mux_new(*out) != PRT_OK) {
        prt__errf(err, errlen, "pool \"%s\": out of memory", name);
        prt_pool_unref(*out);
        return PRT_ENOMEM;
    }
    return rc;
}

/* Fetches pool `name`, creating it from `o` when it does not exist (o NULL:
 * fetch only, PRT_ENOTFOUND if absent).  Options of an existing pool are
 * left as they are.  *out is a new reference: prt_pool_unref it. */
int prt_pool_get(prt_runtime *rt, const char *name, const prt_pool_opts *o,
                 prt_pool **out, char *err, size_t errlen)
{
    if (!rt || !name || !out)
        return PRT_EINVAL;
    prt__pstate *ps = rt->opts.max_pools > 0 ? prt__policy_thread(rt) : NULL;
    prt_pool *p = NULL, *victim = NULL;
    int rc = PRT_OK;
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    int i = find(rt, name);
    if (i >= 0) {
        p = rt->pools[i];
        prt__pool_ref(p);
        prt__mu_unlock(&rt->mu, PRT__RANK_RT);
        *out = p;
        return PRT_OK;
    }
    if (rt->draining) {
        prt__errf(err, errlen, "pool \"%s\": runtime is shutting down", name);
        rc = PRT_ECLOSED;
    } else if (!o) {
        prt__errf(err, errlen, "pool \"%s\": no such pool", name);
        rc = PRT_ENOTFOUND;
    } else if (rt->opts.max_pools > 0 && rt->npools >= rt->opts.max_pools) {
        rc = admit(rt, ps, name, &victim, err, errlen);
    }
    if (rc == PRT_OK)
        rc = make_room(rt, name, err, errlen);
    if (rc == PRT_OK)
        rc = new_pool(rt, name, o, &p, err, errlen);
    if (rc == PRT_OK) {
        rt->pools[rt->npools++] = p; /* the registry's reference */
        prt__pool_ref(p);            /* the caller's */
    }
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    if (victim)
        finish_evict(rt, victim, PRT_EVICT_LRU);
    if (rc != PRT_OK)
        return rc;
    prt__fleet_pool_made(rt, p);
    prt__pool_apply_size(p);
    *out = p;
    return PRT_OK;
}

/* An acquire found p evicted automatically (p->readmit: LRU on admission,
 * idle, the evict hook) between its caller's lookup and its first look at
 * the pool.  apartment's promise is that a tenant's pool is there when you
 * ask for it, so p comes back into the registry under rt->mu, through
 * admission like a new pool (which may evict another), and with
 * p->readmitting counted so that it cannot be evicted again before the
 * caller's acquire holds p->mu once more (it then counts as work).
 * Returns 0; or PRT_ECLOSED (the runtime drains, or another pool took the
 * name: the caller's handle is stale) or PRT_EFULL (admission refused),
 * with err.  No lock held; on success the caller decrements
 * p->readmitting under p->mu. */
int prt__registry_readmit(prt_pool *p, char *err, size_t errlen)
{
    prt_runtime *rt = p->rt;
    if (!rt)
        return PRT_ECLOSED;
    prt__pstate *ps = rt->opts.max_pools > 0 ? prt__policy_thread(rt) : NULL;
    prt_pool *victim = NULL;
    int rc = PRT_OK;
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    prt__lock(p);
    int back = p->closed == PRT_POOL_OPEN; /* another caller re-admitted it */
    prt__unlock(p);
    if (back) {
        rc = PRT_OK;
    } else if (rt->draining || find(rt, p->name) >= 0) {
        prt__errf(err, errlen, "pool \"%s\": %s", p->name, rt->draining ? "runtime is shutting down" : "pool was evicted");
        rc = PRT_ECLOSED;
    } else {
        if (rt->opts.max_pools > 0 && rt->npools >= rt->opts.max_pools)
            rc = admit(rt, ps, p->name, &victim, err, errlen);
        if (rc == PRT_OK)
            rc = make_room(rt, p->name, err, errlen);
        if (rc == PRT_OK) {
            rt->pools[rt->npools++] = p;
            prt__pool_ref(p); /* the registry's again */
            prt__lock(p);
            p->closed = PRT_POOL_OPEN;
            p->readmit = 0;
            p->last_used_at = prt_now();
            prt__unlock(p);
        }
    }
    if (rc == PRT_OK) {
        prt__lock(p);
        p->readmitting++;
        prt__unlock(p);
    }
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    if (victim)
        finish_evict(rt, victim, PRT_EVICT_LRU);
    if (rc == PRT_OK && !back)
        prt__logf(PRT_LOG_INFO, "pool \"%s\": re-admitted by an acquire", p->name);
    return rc;
}

/* Which pools the reap cycle evicts: the `evict` hook's answer, or those
 * idle longer than pool_idle_timeout.  Either way never a pool with work, and by
 * default never a protected one. */
static void choose_evictions(prt_runtime *rt, prt_pool **pools, int n, double now, unsigned char *evict)
{
    prt__pstate *ps = prt__policy_thread(rt);
    memset(evict, 0, (size_t)n);
    if (prt__pstate_mode(ps, PRT__H_EVICT) == PRT__MODE_LUA && prt__hook_evict(ps, pools, n, now, evict) >= 0)
        return;
    memset(evict, 0, (size_t)n);
    for (int i = 0; rt->opts.pool_idle_timeout > 0 && i < n; i++) {
        prt__lock(pools[i]);
        evict[i] = now - pools[i]->last_used_at >= rt->opts.pool_idle_timeout;
        prt__unlock(pools[i]);
        evict[i] = evict[i] && prt__pool_evictable(pools[i]);
    }
}

/* The reap cycle's part for whole pools (reap.c runs it after the
 * connections): evicts those choose_evictions picks among `pools` (a
 * snapshot), unless one got work meanwhile or left the registry.
 * *evicted (may be NULL) gets how many.  No lock held. */
void prt__registry_evict_pools(prt_runtime *rt, prt_pool **pools, int n, double now, int *evicted)
{
    int gone = 0;
    unsigned char *evict = malloc((size_t)(n ? n : 1));
    if (evict)
        choose_evictions(rt, pools, n, now, evict);
    for (int i = 0; evict && i < n; i++) {
        if (!evict[i])
            continue;
        prt_pool *p = NULL;
        prt__mu_lock(&rt->mu, PRT__RANK_RT);
        int k = find(rt, pools[i]->name);
        if (k >= 0 && rt->pools[k] == pools[i]) {
            prt__lock(pools[i]);
            int working = prt__pool_has_work(pools[i]);
            prt__unlock(pools[i]);
            if (!working)
                p = detach(rt, k);
        }
        prt__mu_unlock(&rt->mu, PRT__RANK_RT);
        if (p) {
            finish_evict(rt, p, PRT_EVICT_IDLE);
            gone++;
        }
    }
    free(evict);
    if (evicted)
        *evicted = gone;
}
