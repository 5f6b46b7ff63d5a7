/*
 * sim_dist.c -- the simulator's randomness and its wait histograms.
 *
 * Draws come from a per-simulation xorshift64* generator seeded by the
 * user (--seed), never from the clock, so one seed gives one history.
 * Distributions are the four of prt_sim_dist.  Waits are counted in a
 * log-linear histogram (32 buckets per power of two of microseconds, so a
 * quantile is within ~3%) and, per time-series step, in a coarse one (4
 * per power of two).
 */
#include <math.h>
#include "sim.h"

double prt__sim_u01(uint64_t *rng)
{
    uint64_t x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    return ((double)((x * 0x2545F4914F6CDD1DULL) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double prt__sim_exp(uint64_t *rng, double mean)
{
    return -mean * log(prt__sim_u01(rng));
}

/* A standard normal draw (Box-Muller, one of the pair). */
static double normal(uint64_t *rng)
{
    double u = prt__sim_u01(rng), v = prt__sim_u01(rng);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* A draw of d, in seconds; never negative. */
double prt__sim_draw(uint64_t *rng, const prt_sim_dist *d)
{
    double x;
    switch (d->kind) {
    case PRT_SIM_EXP:
        x = d->a > 0 ? prt__sim_exp(rng, d->a) : 0;
        break;
    case PRT_SIM_UNIFORM:
        x = d->a + (d->b - d->a) * prt__sim_u01(rng);
        break;
    case PRT_SIM_LOGNORMAL: {
        /* median a, 99th percentile b: sigma = ln(b/a) / z(0.99) */
        double sigma = d->b > d->a && d->a > 0 ? log(d->b / d->a) / 2.3263478740408408 : 0;
        x = d->a > 0 ? d->a * exp(sigma * normal(rng)) : 0;
        break;
    }
    default:
        x = d->a;
    }
    return x > 0 ? x : 0;
}

/* 0 when d is a distribution the simulator can draw from. */
int prt__sim_check_dist(const prt_sim_dist *d)
{
    if (d->kind < PRT_SIM_CONST || d->kind > PRT_SIM_LOGNORMAL || !(d->a >= 0) || !isfinite(d->a))
        return PRT_EINVAL;
    if ((d->kind == PRT_SIM_UNIFORM || d->kind == PRT_SIM_LOGNORMAL) && (!(d->b >= d->a) || !isfinite(d->b)))
        return PRT_EINVAL;
    return PRT_OK;
}

/* Log-linear buckets of `sub` (a power of two, 2^k) per octave of
 * microseconds: values below 2*sub get a bucket each. */
static int loglin(double seconds, int k, int nb)
{
    double us = seconds * 1e6;
    if (!(us >= 1))
        return 0;
    uint64_t v = us > 1e15 ? (uint64_t)1e15 : (uint64_t)us;
    int sub = 1 << k;
    if (v < (uint64_t)(2 * sub))
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* e >= k + 1 */
    int b = 2 * sub + (e - k - 1) * sub + (int)((v >> (e - k)) & (uint64_t)(sub - 1));
    return b < nb ? b : nb - 1;
}

static double loglin_value(int b, int k)
{
    int sub = 1 << k;
    if (b == 0)
        return 0; /* under a microsecond: a wait the simulation says took no time */
    if (b < 2 * sub)
        return (b + 0.5) * 1e-6;
    int e = (b - 2 * sub) / sub + k + 1, m = (b - 2 * sub) % sub;
    double lo = (double)((uint64_t)(sub + m) << (e - k));
    return (lo + (double)(1ULL << (e - k)) / 2) * 1e-6;
}

int prt__sim_hbucket(double seconds)
{
    return loglin(seconds, 5, PRT__SIM_HBUCKETS);
}

double prt__sim_hvalue(int b)
{
    return loglin_value(b, 5);
}

int prt__sim_cbucket(double seconds)
{
    return loglin(seconds, 2, PRT__SIM_CBUCKETS);
}

double prt__sim_cvalue(int b)
{
    return loglin_value(b, 2);
}

/* The bucket that holds quantile q (0..1) of `total` counts. */
int prt__sim_qbucket(const uint64_t *h, int nb, uint64_t total, double q)
{
    uint64_t rank = (uint64_t)ceil(q * (double)total), seen = 0;
    if (rank < 1)
        rank = 1;
    for (int b = 0; b < nb; b++) {
        seen += h[b];
        if (seen >= rank)
            return b;
    }
    return nb - 1;
}
