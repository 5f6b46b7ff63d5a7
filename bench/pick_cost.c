/*
 * pick_cost.c -- what a `pick` costs per acquire: the built-in strategies
 * against Lua hooks, on 16 idle connections, through the real policy
 * engine (per-thread state, views filled from the pool, validation).
 *
 * Fake connections are fine here: this measures pool logic only, no I/O.
 *   build/bench_pick_cost [iterations]
 */
#define _DEFAULT_SOURCE 1 /* mkstemps */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static const char *const policies[][2] = {
    { "builtin mru", "return { pick = 'mru' }" },
    { "builtin lru", "return { pick = 'lru' }" },
    { "lua constant", "return { pick = function(idle, pool) return 1 end }" },
    { "lua lru scan", "return { pick = function(idle, pool)\n"
                      "  local best = 1\n"
                      "  for i = 2, pool.idle do\n"
                      "    if idle[i].returned_at < idle[best].returned_at then best = i end\n"
                      "  end\n"
                      "  return best\n"
                      "end }" },
};

static double run(const char *src, long iters, int nidle)
{
    char path[] = "/tmp/prt_pick_XXXXXX.lua";
    int fd = mkstemps(path, 4);
    FILE *f = fdopen(fd, "w");
    fputs(src, f);
    fclose(f);
    prt_runtime_opts ro;
    prt_runtime_opts_default(&ro);
    ro.conninfo = "host=127.0.0.1 port=1"; /* never connected */
    ro.reap_interval = 0;
    ro.policy = path;
    prt_runtime *rt;
    char err[512];
    if (prt_runtime_new(&ro, &rt, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    prt_pool_opts po;
    prt_pool_opts_default(&po);
    po.max = nidle;
    prt_pool *p;
    prt_pool_get(rt, "bench", &po, &p, err, sizeof err);
    prt_conn *conns = calloc((size_t)nidle, sizeof *conns);
    p->idle = calloc((size_t)nidle, sizeof *p->idle);
    for (int i = 0; i < nidle; i++) {
        conns[i].id = (uint64_t)i + 1;
        conns[i].returned_at = 1000.0 + ((i * 7) % nidle);
        p->idle[i] = &conns[i];
    }
    p->nidle = p->idle_cap = nidle;
    long sink = 0;
    double t0 = prt_now();
    for (long k = 0; k < iters; k++) {
        prt__pstate *ps = atomic_load(&rt->lua_hot) ? prt__policy_thread(rt) : NULL;
        pthread_mutex_lock(&p->mu);
        sink += prt__pick(p, ps);
        pthread_mutex_unlock(&p->mu);
    }
    double ns = (prt_now() - t0) * 1e9 / (double)iters;
    prt_policy_stats st;
    prt_runtime_policy_stats(rt, &st);
    if (st.errors[0] || sink < 0)
        fprintf(stderr, "pick errors: %llu\n", (unsigned long long)st.errors[0]);
    p->nidle = 0; /* the fakes are not real connections */
    free(p->idle);
    p->idle = NULL;
    p->idle_cap = 0;
    free(conns);
    prt_pool_unref(p);
    prt_runtime_free(rt);
    remove(path);
    return ns;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    int nidle = 16;
    printf("| pick (16 idle connections) | ns per pick, incl. pool lock | vs builtin mru |\n|---|---:|---:|\n");
    double base = 0;
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++) {
        run(policies[i][1], iters / 10, nidle); /* warm up: state creation, JIT */
        double ns = run(policies[i][1], iters, nidle);
        if (i == 0)
            base = ns;
        printf("| %s | %.1f | %.2fx |\n", policies[i][0], ns, ns / base);
    }
    return 0;
}
