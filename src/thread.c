/*
 * thread.c -- starting and stopping the runtime's own threads (timer,
 * fleet sampler, rt:spawn).
 *
 * They run with every signal blocked, so that signals meant for the host
 * process -- nginx's worker signals, the `poolrt` host's SIGHUP/SIGTERM --
 * are never delivered to a thread that does not expect them.
 */
#include <signal.h>
#include "internal.h"

int prt__thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Stops a background thread that waits on `cond` under `mu` (of rank
 * `rank`) until *stopping: sets it, wakes the thread and joins it (when
 * `started`).  No lock held. */
void prt__thread_stop(pthread_t t, int started, pthread_mutex_t *mu, int rank, pthread_cond_t *cond, int *stopping)
{
    prt__mu_lock(mu, (enum prt__rank)rank);
    *stopping = 1;
    pthread_cond_broadcast(cond);
    prt__mu_unlock(mu, (enum prt__rank)rank);
    if (started)
        pthread_join(t, NULL);
}
