/*
 * sim.c -- `poolrt sim`'s engine (stub: the API exists so that bindings
 * build against it; the event loop lands next).
 */
#include <stdlib.h>
#include "internal.h"

int prt_sim_new(const prt_runtime_opts *o, const char *policy_path, uint64_t seed,
                prt_sim **out, char *err, size_t errlen)
{
    (void)o; (void)policy_path; (void)seed;
    *out = NULL;
    prt__errf(err, errlen, "sim: not implemented yet");
    return PRT_EINVAL;
}
void prt_sim_free(prt_sim *s) { (void)s; }
int prt_sim_endpoint(prt_sim *s, const char *name, prt_sim_dist c, prt_sim_dist q) { (void)s; (void)name; (void)c; (void)q; return PRT_EINVAL; }
int prt_sim_outage(prt_sim *s, int e, double at, double d) { (void)s; (void)e; (void)at; (void)d; return PRT_EINVAL; }
int prt_sim_source(prt_sim *s, const char *n, const prt_pool_opts *o, int t, int b) { (void)s; (void)n; (void)o; (void)t; (void)b; return PRT_EINVAL; }
int prt_sim_rate(prt_sim *s, int src, double at, double r) { (void)s; (void)src; (void)at; (void)r; return PRT_EINVAL; }
int prt_sim_work(prt_sim *s, int src, prt_sim_dist h, int st) { (void)s; (void)src; (void)h; (void)st; return PRT_EINVAL; }
int prt_sim_burst(prt_sim *s, int src, double at, int n) { (void)s; (void)src; (void)at; (void)n; return PRT_EINVAL; }
int prt_sim_replay(prt_sim *s, int src, double at, double h) { (void)s; (void)src; (void)at; (void)h; return PRT_EINVAL; }
int prt_sim_run(prt_sim *s, double d, prt_sim_result *out, char *err, size_t errlen) { (void)s; (void)d; (void)out; prt__errf(err, errlen, "sim: not implemented yet"); return PRT_EINVAL; }
int prt_sim_series(prt_sim *s, double st, double *a, double *b, double *c, int max) { (void)s; (void)st; (void)a; (void)b; (void)c; (void)max; return 0; }
prt_runtime *prt_sim_runtime(prt_sim *s) { (void)s; return NULL; }
