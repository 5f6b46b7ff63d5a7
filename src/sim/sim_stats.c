/*
 * sim_stats.c -- what a simulation reports: prt_sim_result, taken from the
 * real pools' and runtime's counters where they keep them (connections
 * opened and closed by reason, pools evicted, hook calls and errors) and
 * from the simulator's own records where they do not (each acquire's
 * wait, per-endpoint load, timeouts and errors as the callers saw them);
 * and the time series for plots (connections in use and open, sampled
 * every `res` virtual seconds, and a coarse wait histogram per step).
 */
#include <math.h>
#include <string.h>
#include "sim.h"

void prt__sim_count_wait(prt_sim *s, double waited)
{
    s->hist[prt__sim_hbucket(waited)]++;
    s->waits++;
    if (waited > s->wait_max)
        s->wait_max = waited;
    int b = (int)(s->now / s->res);
    b = b < s->nbins ? b : s->nbins - 1; /* callers finishing after the end count in the last step */
    s->bins[b].wait[prt__sim_cbucket(waited)]++;
}

/* One sample of the series, now, into bin b. */
void prt__sim_sample(prt_sim *s, int b)
{
    if (b < 0 || b >= s->nbins)
        return;
    s->bins[b].in_use += s->in_use;
    s->bins[b].open += atomic_load(&s->rt->nconns);
    s->bins[b].samples++;
}

void prt__sim_result(prt_sim *s, prt_sim_result *out)
{
    memset(out, 0, sizeof *out);
    out->acquires = s->acquires;
    out->timeouts = s->timeouts;
    out->errors = s->errors;
    if (s->waits) {
        out->wait_p50_ms = prt__sim_hvalue(prt__sim_qbucket(s->hist, PRT__SIM_HBUCKETS, s->waits, 0.5)) * 1e3;
        out->wait_p99_ms = prt__sim_hvalue(prt__sim_qbucket(s->hist, PRT__SIM_HBUCKETS, s->waits, 0.99)) * 1e3;
        if (out->wait_p50_ms > s->wait_max * 1e3)
            out->wait_p50_ms = s->wait_max * 1e3;
        if (out->wait_p99_ms > s->wait_max * 1e3)
            out->wait_p99_ms = s->wait_max * 1e3;
    }
    out->wait_max_ms = s->wait_max * 1e3;
    for (int i = 0; i < s->nheld; i++) { /* every pool the sim used, evicted ones too */
        prt_pool_stats ps;
        prt_pool_stats_get(s->held[i], &ps);
        out->opened += ps.connections_created_total;
        uint64_t by[PRT_CLOSE_NREASONS];
        prt__closed_by(&ps, by);
        for (int k = 0; k < PRT_CLOSE_NREASONS; k++) {
            out->closed_by[k] += by[k];
            out->closed += by[k];
        }
    }
    out->peak_connections = s->peak_open;
    out->nendpoints = s->neps;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int e = 0; e < s->neps; e++) {
        out->endpoint_acquires[e] = s->ep_acquires[e];
        lo = s->ep_acquires[e] < lo ? s->ep_acquires[e] : lo;
        hi = s->ep_acquires[e] > hi ? s->ep_acquires[e] : hi;
    }
    out->endpoint_max_min = s->neps <= 1 ? 1 : (double)hi / (double)(lo > 0 ? lo : 1);
    prt_runtime_stats rs;
    prt_runtime_stats_get(s->rt, &rs);
    for (int k = 0; k < PRT_EVICT_NREASONS; k++)
        out->pools_evicted += rs.pools_evicted_total[k];
    out->pools_recreated = s->recreated;
    prt_policy_stats pst;
    prt_runtime_policy_stats(s->rt, &pst);
    for (int h = 0; h < PRT_NHOOKS; h++) {
        out->hook_calls += pst.calls[h];
        out->hook_errors += pst.errors[h];
    }
    out->background_jobs = s->bg_jobs;
    out->background_peak = s->bg_peak;
    out->reads = s->reads;
    out->stale_reads = s->stale_reads;
    out->writes = s->writes;
    out->role_refusals = s->role_refusals;
    memcpy(out->endpoint_writes, s->ep_writes, sizeof out->endpoint_writes);
    out->virtual_seconds = s->now > s->duration ? s->now : s->duration;
    out->events = s->events;
}

/* The series in steps of `step` virtual seconds (at least the sampling
 * resolution): mean connections in use and open, and the p99 of the
 * waits of acquires that ended in the step (0 when none did). */
int prt_sim_series(prt_sim *s, double step, double *in_use, double *open, double *wait_p99_ms, int max)
{
    if (!s || !s->bins || !(step > 0))
        return 0;
    int k = (int)floor(step / s->res + 0.5);
    if (k < 1)
        k = 1;
    int n = 0;
    for (int b0 = 0; b0 < s->nbins && n < max; b0 += k, n++) {
        double iu = 0, op = 0;
        uint32_t samples = 0;
        uint64_t h[PRT__SIM_CBUCKETS] = { 0 }, total = 0;
        for (int b = b0; b < b0 + k && b < s->nbins; b++) {
            iu += s->bins[b].in_use;
            op += s->bins[b].open;
            samples += s->bins[b].samples;
            for (int j = 0; j < PRT__SIM_CBUCKETS; j++) {
                h[j] += s->bins[b].wait[j];
                total += s->bins[b].wait[j];
            }
        }
        if (in_use)
            in_use[n] = samples ? iu / samples : 0;
        if (open)
            open[n] = samples ? op / samples : 0;
        if (wait_p99_ms)
            wait_p99_ms[n] = total ? prt__sim_cvalue(prt__sim_qbucket(h, PRT__SIM_CBUCKETS, total, 0.99)) * 1e3 : 0;
    }
    return n;
}
