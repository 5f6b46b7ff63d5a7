/*
 * reap.c -- the reap cycle the runtime's timer runs (prt_reap): for each
 * pool, idle connections past their lifetime close (always), idle ones
 * chosen by the `reap` hook or, by default, idle longer than idle_timeout
 * (never going below min_idle), and any above a shrunk max; then
 * connections are opened up to min_idle.  Connections in use longer than
 * leak_threshold are reported.  Last, whole pools are evicted (registry.c).
 */
#include <stdlib.h>
#include "internal.h"

static int is_expired(prt_pool *p, prt_conn *c, double now)
{
    (void)p;
    return prt__conn_expired(c, now);
}

static int is_stale(prt_pool *p, prt_conn *c, double now)
{
    return p->opts.idle_timeout > 0 && now - c->returned_at >= p->opts.idle_timeout;
}

/* The reap hook's choice, moved out of the idle list; -1: no hook here. */
static int take_reaped(prt_pool *p, prt__pstate *ps, double now, prt_conn **out)
{
    if (prt__pstate_mode(ps, PRT__H_REAP) != PRT__MODE_LUA || p->nidle == 0)
        return -1;
    unsigned char *close = malloc((size_t)p->nidle);
    int n = close ? prt__hook_reap(ps, p, now, close) : -1;
    if (n > 0) {
        int k = 0;
        for (int i = 0, j = 0; i < p->nidle; i++) {
            if (close[i])
                out[k++] = p->idle[i];
            else
                p->idle[j++] = p->idle[i];
        }
        p->nidle -= k;
    }
    free(close);
    return n;
}

/* Warns once about each connection held longer than leak_threshold (a
 * caller that never releases).  Logging happens after the lock is gone. */
static void find_leaks(prt_pool *p, double now)
{
    enum { MAXLOG = 8 };
    uint64_t ids[MAXLOG];
    double held[MAXLOG];
    int n = 0, more = 0;
    prt__lock(p);
    for (prt_conn *c = p->in_use_list; p->opts.leak_threshold > 0 && c; c = c->in_use_next) {
        if (c->leak_reported || now - c->acquired_at < p->opts.leak_threshold)
            continue;
        c->leak_reported = 1;
        p->leaks++;
        if (n < MAXLOG) {
            ids[n] = c->id;
            held[n++] = now - c->acquired_at;
        } else {
            more++;
        }
    }
    double threshold = p->opts.leak_threshold;
    prt__unlock(p);
    for (int i = 0; i < n; i++)
        prt__logf(PRT_LOG_WARN, "pool \"%s\": connection %llu held for %.3fs, over leak_threshold=%.3fs; "
                  "a caller that never releases it?", p->name, (unsigned long long)ids[i], held[i], threshold);
    if (more)
        prt__logf(PRT_LOG_WARN, "pool \"%s\": %d more connection(s) held over leak_threshold", p->name, more);
}

/* Closes what the cycle closes (see the top of this file), counting each
 * by reason.  Returns how many.  No lock held. */
static int close_idle(prt_pool *p, prt__pstate *ps, double now)
{
    prt__lock(p);
    prt_conn **cs = p->closed ? NULL : malloc((size_t)(p->nidle ? p->nidle : 1) * sizeof *cs);
    if (!cs) {
        prt__unlock(p);
        return 0;
    }
    int nl = prt__take_where(p, is_expired, now, 0, cs);
    int ns = take_reaped(p, ps, now, cs + nl);
    if (ns < 0)
        ns = prt__take_where(p, is_stale, now, p->min_idle, cs + nl);
    int over = p->total - nl - ns - p->max;
    int nk = prt__take_where(p, NULL, now, over > 0 ? p->nidle - over : p->nidle, cs + nl + ns);
    int by[PRT__CLOSE_NREASONS] = {0};
    by[PRT__CLOSE_LIFETIME] = nl;
    by[PRT__CLOSE_IDLE] = ns;
    by[PRT__CLOSE_SHRINK] = nk;
    prt__retire_by_unlock(p, cs, nl + ns + nk, by);
    free(cs);
    return nl + ns + nk;
}

/* Opens connections up to min_idle.  Waiters open their own, so there is
 * no refill while anybody waits.  No lock held. */
static void refill(prt_pool *p, double now)
{
    prt__lock(p);
    int want = p->closed || p->wq_head ? 0 : p->min_idle - p->nidle - p->opening;
    int reserved = 0;
    while (reserved < want && prt__slot_take(p, 0))
        reserved++;
    prt__unlock(p);
    double deadline = now + p->opts.acquire_timeout;
    for (int i = 0; i < reserved; i++) {
        char err[PRT__ERRLEN];
        prt_conn *c = NULL;
        if (prt__open_in_slot(p, deadline, 1, &c, err, sizeof err) != PRT_OK) {
            prt__logf(PRT_LOG_WARN, "%s (min_idle refill)", err);
            prt__lock(p);
            p->opening -= reserved - i - 1; /* the slots not tried: never opened */
            prt__retire_unlock(p, NULL, reserved - i - 1, PRT__CLOSE_NONE);
            return;
        }
    }
}

/* One pool's part of the cycle.  Returns how many connections were
 * closed.  No lock held. */
int prt__pool_reap(prt_pool *p, double now)
{
    prt__mux_reap(p, now); /* multiplexed connections: idle or expired ones back to the pool */
    find_leaks(p, now);
    prt__pstate *ps = p->rt ? prt__policy_thread(p->rt) : NULL;
    int closed = close_idle(p, ps, now);
    refill(p, now);
    return closed;
}

/* One reap cycle over every pool: connections first, then whole pools.
 * Returns connections closed; *evicted (may be NULL) gets pools evicted. */
int prt_reap(prt_runtime *rt, int *evicted)
{
    prt_pool **pools;
    int n = prt__registry_snapshot(rt, &pools), closed = 0;
    double now = prt_now();
    for (int i = 0; i < n; i++)
        closed += prt__pool_reap(pools[i], now);
    prt__registry_evict_pools(rt, pools, n, now, evicted);
    prt__registry_release(pools, n);
    return closed;
}
