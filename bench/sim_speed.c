/*
 * sim_speed.c -- how fast `poolrt sim` simulates: simulated acquires per
 * second of wall time, with a Lua `pick` function as the policy
 * (bench/pick_lua.lua), for two workloads:
 *   rate   one pool (max 10), Poisson arrivals at 200,000/s for 20 virtual s,
 *          holds of 20 us on average: the loop's throughput (target >= 1M
 *          acquires/s);
 *   hour   one hour of 2,000 acquires/s (lognormal holds, two endpoints,
 *          a reap tick every second): target under 10 s of wall time.
 * Usage: build/bench/sim_speed [POLICY.lua] [SEED]   (prints one line each)
 */
#include <stdio.h>
#include <stdlib.h>
#include "poolrt.h"

static int run(const char *label, const char *policy, uint64_t seed, double rate, double duration,
               prt_sim_dist hold, int statements, int endpoints)
{
    char err[512];
    prt_runtime_opts ro;
    prt_runtime_opts_default(&ro);
    prt_sim *s;
    if (prt_sim_new(&ro, policy, seed, &s, err, sizeof err) != 0) {
        fprintf(stderr, "sim_speed: %s\n", err);
        return 1;
    }
    prt_sim_dist conn = { PRT_SIM_CONST, 0.003, 0 }, query = { PRT_SIM_EXP, 0.0005, 0 };
    for (int e = 0; e < endpoints; e++)
        prt_sim_endpoint(s, e ? "replica" : "primary", conn, query);
    prt_pool_opts o;
    prt_pool_opts_default(&o);
    o.max = 10;
    int src = prt_sim_source(s, "app", &o, 64, 0);
    prt_sim_rate(s, src, 0, rate);
    prt_sim_work(s, src, hold, statements);
    prt_sim_result r;
    if (prt_sim_run(s, duration, &r, err, sizeof err) != 0) {
        fprintf(stderr, "sim_speed: %s\n", err);
        prt_sim_free(s);
        return 1;
    }
    printf("%-5s virtual=%.0fs acquires=%llu timeouts=%llu events=%llu hook_calls=%llu wall=%.3fs "
           "acquires_per_wall_s=%.0f wait_p99_ms=%.3f opened=%llu\n",
           label, duration, (unsigned long long)r.acquires, (unsigned long long)r.timeouts,
           (unsigned long long)r.events, (unsigned long long)r.hook_calls, r.wall_seconds,
           r.acquires / r.wall_seconds, r.wait_p99_ms, (unsigned long long)r.opened);
    prt_sim_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *policy = argc > 1 ? argv[1] : "bench/pick_lua.lua";
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    prt_log_set_level(PRT_LOG_ERROR);
    prt_sim_dist short_hold = { PRT_SIM_EXP, 0.00002, 0 };
    prt_sim_dist hold = { PRT_SIM_LOGNORMAL, 0.002, 0.02 };
    return run("rate", policy, seed, 200000, 20, short_hold, 0, 1) ||
           run("hour", policy, seed, 2000, 3600, hold, 1, 2);
}
