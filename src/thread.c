/*
 * thread.c -- starting the runtime's own threads (timer, rt:spawn).
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
