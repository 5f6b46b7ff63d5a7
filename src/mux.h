/*
 * mux.h -- what multiplex.c (the coordination: queues, leaders, routing,
 * connections) and mux_wire.c (the pipeline protocol on one connection)
 * share, and nothing else includes: a caller's statement and a
 * multiplexed connection.  Locking is described in multiplex.c.
 */
#ifndef POOLRT_MUX_H
#define POOLRT_MUX_H

#include "internal.h"

enum { REQ_QUEUED, REQ_SENT, REQ_DONE, REQ_REROUTE };

/* One caller's statement.  Taken from the multiplexer's spares by its
 * caller, who puts it back, unless it abandoned it (timeout) while it was
 * in flight: then the leader that reads its result puts it back.  A leader
 * signals a caller under mux->mu.  Signalling after unlocking (so that the
 * woken caller does not wait for that lock) cut the client's context
 * switches from 2.3 to 1.7 per statement at 128 workers, but lowered
 * throughput in 4 of 4 alternating rounds (about 10%), and a per-caller
 * lock for the wait did no better: both were measured and dropped. */
typedef struct mreq {
    struct mreq *next;       /* in its connection's queue or in-flight list; mux->mu */
    struct mconn *m;         /* the connection it is on; mux->mu */
    const char *sql;         /* the caller's, valid while it waits */
    int nparams, flags;
    const char *const *params;
    int state;               /* REQ_*; mux->mu */
    int abandoned;           /* the caller has gone (timed out); mux->mu */
    int nudged;              /* asked to take over a connection's I/O; mux->mu */
    int retried;             /* routed again once after its prepared statement vanished */
    pthread_cond_t cond;     /* signalled on REQ_DONE, REQ_REROUTE and nudges; with mux->mu */
    struct mreq *waiter;     /* a batch's member: the request its caller sleeps on (nudges go there); mux->mu */
    /* Written by the connection's leader while REQ_SENT, read by the
     * caller after REQ_DONE (mux->mu orders the two): */
    int cmds;                /* commands of its segment whose results are still to come */
    unsigned prepared;       /* statement id prepared in its segment (0: none) */
    int rc;
    PGresult *res;
    char err[PRT__ERRLEN];
} mreq;

typedef struct mconn {
    prt_conn *c;             /* acquired from the pool; pg and stmts: the leader's */
    mreq *pend, *pend_tail;  /* queued, not sent yet; mux->mu */
    mreq *fly, *fly_tail;    /* sent, oldest first; mux->mu */
    int load;                /* queued + in flight, what route sees; mux->mu */
    int busy;                /* a leader does the I/O; mux->mu */
    int retiring;            /* not routed to; given back when empty; mux->mu */
    int flushing;            /* the leader's: output still to flush */
    uint64_t uses;           /* statements completed on it, what route sees; mux->mu */
    double used_at;          /* when its last result came in (or it was taken); mux->mu */
} mconn;

/* mux_wire.c -- the leader's, no lock held: */
int prt__mux_send(mconn *m, mreq *q, int n);              /* n requests from q, then a flush */
int prt__mux_pump(mconn *m, double deadline, int *ndone); /* wait, read; *ndone segments complete */
void prt__mux_fail(prt_pool *p, mreq *q, int rc, const char *why); /* q's error, unless it has one */
void prt__mux_lost(prt_pool *p, mreq *q, const char *lost, const char *what); /* PRT_EBROKEN, why */

/* q is to run batch item it's statement (both batch paths: batch.c's
 * exclusive one and multiplex.c's). */
static inline void prt__req_of_item(mreq *q, const prt_batch_item *it)
{
    q->sql = it->sql;
    q->nparams = it->nparams;
    q->params = it->params;
    q->flags = it->flags;
}

#endif
