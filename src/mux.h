/*
 * mux.h -- what the multiplexer's files share: a caller's statement
 * (mreq), a multiplexed connection (mconn), the multiplexer itself, the
 * queue operations they all do under mux->mu, and the functions that cross
 * between the files.  The files: multiplex.c (entry points, requests,
 * the pool's life; its top comment is the design and the locking),
 * mux_lead.c (who leads a connection's I/O), mux_choose.c (which
 * connection, and growing), mux_spread.c (batches, spread or not) and
 * mux_wire.c (the pipeline protocol on one connection).  Besides them only
 * batch.c includes it, for mux_wire.c's protocol on its exclusive
 * connection.
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

/* A pool's multiplexer (p->mux, made with the pool, freed with it).  mu
 * guards everything here, the requests' states and every connection's
 * queues (multiplex.c, "Locking"). */
struct prt__mux {
    pthread_mutex_t mu;
    mconn *conns[PRT__MUX_MAX]; /* routable connections; mu */
    int n;                   /* mu */
    int growing;             /* callers acquiring a connection for it; mu */
    pthread_cond_t grown;    /* a grower is back (with a connection or not); with mu */
    int retiring;            /* connections retiring for exclusive waiters; mu */
    int closed;              /* the pool closed: no new connections; mu */
    mreq *spare;             /* requests to reuse; mu */
    prt_route_view views[PRT__MUX_MAX]; /* route's input; mu */
    /* Every statement queued on a connection (queued) ends answered
     * (a result or an error), rerouted (queued again, counted again) or
     * unqueued (its caller gave up before it was sent); the difference is
     * what is in flight.  All mu. */
    uint64_t queued, unqueued;
    uint64_t answered;       /* statements finished, with a result or an error; mu */
    uint64_t rerouted;       /* statements routed again; mu */
    uint64_t lost;           /* statements failed in flight on a connection that broke; mu */
};

/* mux_wire.c -- the leader's, no lock held: */
int prt__mux_send(mconn *m, mreq *q, int n);              /* n requests from q, then a flush */
int prt__mux_pump(mconn *m, double deadline, int *ndone); /* wait, read; *ndone segments complete */
void prt__mux_fail(prt_pool *p, mreq *q, int rc, const char *why); /* q's error, unless it has one */
void prt__mux_lost(prt_pool *p, mreq *q, const char *lost, const char *what); /* PRT_EBROKEN, why */

/* q is to run batch item it's statement (both batch paths: batch.c's
 * exclusive one and mux_spread.c's). */
static inline void prt__req_of_item(mreq *q, const prt_batch_item *it)
{
    q->sql = it->sql;
    q->nparams = it->nparams;
    q->params = it->params;
    q->flags = it->flags;
}

/* --- queues and spares (mux->mu held) ------------------------------------- */

static inline void push(mreq **head, mreq **tail, mreq *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

/* Takes q, still queued (not sent), off m: its caller gave up.  x->mu held. */
static inline void unlink_pending(prt__mux *x, mconn *m, mreq *q)
{
    mreq **pp = &m->pend, *prev = NULL;
    while (*pp && *pp != q)
        prev = *pp, pp = &(*pp)->next;
    if (!*pp)
        return;
    *pp = q->next;
    if (m->pend_tail == q)
        m->pend_tail = prev;
    m->load--;
    x->unqueued++;
}

/* The leader takes what is queued on m to send: moved to the in-flight
 * list, oldest first; returns its head and *n.  x->mu held. */
static inline mreq *take_pending(mconn *m, int *n)
{
    mreq *batch = m->pend;
    *n = 0;
    for (mreq *q = batch; q; q = q->next, (*n)++)
        q->state = REQ_SENT;
    if (batch) {
        if (m->fly_tail)
            m->fly_tail->next = batch;
        else
            m->fly = batch;
        m->fly_tail = m->pend_tail;
        m->pend = m->pend_tail = NULL;
    }
    return batch;
}

/* Takes m out of the connections route sees (it retires or broke). */
static inline void drop_routable(prt__mux *x, mconn *m)
{
    for (int i = 0; i < x->n; i++)
        if (x->conns[i] == m) {
            x->conns[i] = x->conns[--x->n];
            return;
        }
}

/* Back to the spares.  x->mu held. */
static inline void req_put(prt__mux *x, mreq *q)
{
    PQclear(q->res);
    q->res = NULL;
    q->next = x->spare;
    x->spare = q;
}

/* --- crossing between the multiplexer's files ------------------------------
 * Functions one file defines for the others, under the names they had as
 * static functions of multiplex.c.  Hidden: libpoolrt.so does not export
 * them (every symbol it exports is prt_ or prt__). */
#define MUX_SHARED __attribute__((visibility("hidden")))

/* multiplex.c */
MUX_SHARED int tx_control(const char *sql);    /* 1: BEGIN, COMMIT and their kin */
MUX_SHARED mreq *req_get(prt__mux *x);         /* NULL: out of memory; x->mu held */

/* mux_lead.c: x->mu held on entry and return (released as each says) */
MUX_SHARED void broke(prt__mux *x, mconn *m);
MUX_SHARED void step_down(prt__mux *x, mconn *m);
MUX_SHARED int lead(prt__mux *x, mconn *m, mreq *me, double deadline);
MUX_SHARED int await(prt__mux *x, mreq *q, double deadline, int *gone);

/* mux_choose.c: x->mu held, released while a connection is acquired */
MUX_SHARED int choose(prt__mux *x, prt_pool *p, double deadline, mconn **out, char *err, size_t errlen);

#endif
