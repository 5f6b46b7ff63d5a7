/*
 * timer.c -- the runtime's background thread: every reap_interval it runs
 * one reap cycle (idle timeout, lifetime, min idle refill) over all pools.
 *
 * It sleeps on rt->cond so prt_runtime_free can wake and join it at once.
 * A cycle never holds rt->mu while it works, so acquires are not delayed.
 */
#include <time.h>
#include "internal.h"

void *prt__timer_main(void *arg)
{
    prt_runtime *rt = arg;
    double next = prt_now() + rt->opts.reap_interval;
    prt__mu_lock(&rt->mu, PRT__RANK_RT);
    while (!rt->stopping) {
        struct timespec ts;
        prt__abstime(next, &ts);
        pthread_cond_timedwait(&rt->cond, &rt->mu, &ts);
        if (rt->stopping || prt_now() < next)
            continue;
        prt__mu_unlock(&rt->mu, PRT__RANK_RT);
        int closed = prt_reap(rt, NULL);
        if (closed > 0)
            prt__logf(PRT_LOG_DEBUG, "reap: closed %d connection(s)", closed);
        next = prt_now() + rt->opts.reap_interval;
        prt__mu_lock(&rt->mu, PRT__RANK_RT);
    }
    prt__mu_unlock(&rt->mu, PRT__RANK_RT);
    return NULL;
}
