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
    pthread_mutex_lock(&rt->mu);
    while (!rt->stopping) {
        struct timespec ts;
        prt__abstime(next, &ts);
        pthread_cond_timedwait(&rt->cond, &rt->mu, &ts);
        if (rt->stopping || prt_now() < next)
            continue;
        pthread_mutex_unlock(&rt->mu);
        int closed = prt_reap(rt, NULL);
        if (closed > 0)
            prt__logf(PRT_LOG_DEBUG, "reap: closed %d connection(s)", closed);
        next = prt_now() + rt->opts.reap_interval;
        pthread_mutex_lock(&rt->mu);
    }
    pthread_mutex_unlock(&rt->mu);
    return NULL;
}
