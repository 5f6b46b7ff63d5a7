/*
 * mux_lead.c -- leadership: who does a multiplexed connection's I/O, and
 * what the leader does with what comes back (multiplex.c's top comment,
 * "Who does the I/O", is the design; its "Locking" the rules).
 *
 * A caller whose statement is queued on a connection without a leader
 * becomes its leader (lead): it takes what is queued (take_pending, in
 * mux.h), sends it and reads the results through mux_wire.c with mux->mu
 * released, then, with the lock, hands each result to its caller
 * (complete).  Callers that find a leader sleep in await until their
 * result is handed to them or they are nudged to lead.  When its own
 * statement is done the leader steps down (step_down): it nudges the next
 * live caller, or retires the connection for an exclusive caller waiting
 * in the pool and gives it back once nothing live is on it.  A connection
 * that breaks fails what is in flight on it and routes its queued
 * statements again (broke); a caller that times out abandons its
 * statement (abandon), with a cancel when the server is running it.
 *
 * Every function here but give_back is entered and left with mux->mu
 * held; it is released only around I/O, a cancel and a give-back, as each
 * one says.
 * Which connection a statement is queued on is mux_choose.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include "mux.h"

/* --- results and the fate of connections (mux->mu held unless said) ------- */

/* The request's caller learns its outcome; an abandoned one goes back to
 * the spares.  x->mu held. */
static void finish_req(prt__mux *x, mreq *q, int state)
{
    x->answered += state == REQ_DONE;
    x->rerouted += state == REQ_REROUTE;
    if (q->abandoned) {
        req_put(x, q);
        return;
    }
    q->state = state;
    pthread_cond_signal(&q->cond);
}

/* Gives m's connection back to its pool and frees m: closed when broken
 * or when results are still owed on it.  No lock held; m is reachable from
 * nowhere any more. */
static void give_back(mconn *m, int broken)
{
    PGconn *pg = m->c->pg;
    if (!broken)
        broken = !PQexitPipelineMode(pg) || PQsetnonblocking(pg, 0) != 0;
    prt_release(m->c, broken);
    free(m);
}

/* Fails every statement in flight on m (the connection broke) and routes
 * the queued ones again.  Each failed one says why: the server's own last
 * word if it got one (57P01 from pg_terminate_backend), else libpq's.
 * Entered with x->mu held; returns with it held, having released the
 * connection without it. */
void broke(prt__mux *x, mconn *m)
{
    prt_pool *p = m->c->pool;
    char lost[256];
    snprintf(lost, sizeof lost, "%s", PQerrorMessage(m->c->pg));
    drop_routable(x, m);
    if (m->retiring)
        x->retiring--;
    for (mreq *q = m->fly, *next; q; q = next) {
        next = q->next;
        prt__mux_lost(p, q, lost, "the statement was in flight on a multiplexed connection");
        x->lost++;
        finish_req(x, q, REQ_DONE);
    }
    for (mreq *q = m->pend, *next; q; q = next) {
        next = q->next;
        finish_req(x, q, REQ_REROUTE);
    }
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
    give_back(m, 1);
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
}

/* Pops the n oldest in-flight requests, whose results are all in, and
 * hands each to its caller (a statement whose prepared statement vanished
 * is routed again).  x->mu held. */
static void complete(prt__mux *x, mconn *m, int n)
{
    for (int i = 0; i < n; i++) {
        mreq *q = m->fly;
        m->fly = q->next;
        if (!m->fly)
            m->fly_tail = NULL;
        m->load--;
        m->uses++;
        m->used_at = 0; /* stamped by prt__mux_reap's next look: no clock read per statement */
        if (q->rc == 1) { /* see take_result */
            q->rc = PRT_OK;
            q->err[0] = '\0';
            PQclear(q->res);
            q->res = NULL;
            finish_req(x, q, REQ_REROUTE);
        } else {
            finish_req(x, q, REQ_DONE);
        }
    }
}

/* Whether an exclusive caller waits in the pool for a connection the
 * multiplexer holds: then m is retired, one per waiter.  The multiplexer's
 * own growers may wait there too; they do not count. */
static int exclusive_waiting(prt__mux *x, prt_pool *p)
{
    if (!p->rt || atomic_load_explicit(&p->rt->nwaiting, memory_order_relaxed) == 0)
        return 0;
    prt__lock(p);
    int waiting = p->nwait;
    prt__unlock(p);
    return waiting - x->growing > x->retiring;
}

/* Asks the oldest live caller on m (in flight, else queued) to take over
 * its I/O.  Returns 0 when there is none.  x->mu held, m->busy 0. */
static int nudge_next(mconn *m)
{
    mreq *next = m->fly;
    while (next && next->abandoned)
        next = next->next;
    if (!next)
        next = m->pend;
    if (!next)
        return 0;
    if (next->waiter) /* a batch's member: its caller sleeps on the batch's last */
        next = next->waiter;
    next->nudged = 1;
    pthread_cond_signal(&next->cond);
    return 1;
}

/* The leader steps down: the next live caller on m is nudged to take over
 * the I/O.  m is retired first when an exclusive caller waits in the pool
 * for a connection (one per waiter), and a retiring connection with nothing
 * live on it is given back (closed when results are still owed to callers
 * that timed out).  x->mu held; released and taken again around a
 * give-back. */
void step_down(prt__mux *x, mconn *m)
{
    m->busy = 0;
    if (!m->retiring && exclusive_waiting(x, m->c->pool)) {
        drop_routable(x, m);
        m->retiring = 1;
        x->retiring++;
    }
    if (nudge_next(m) || !m->retiring)
        return;
    x->retiring--;
    int owed = m->fly != NULL;
    for (mreq *q = m->fly, *nq; q; q = nq) { /* all abandoned */
        nq = q->next;
        req_put(x, q);
    }
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
    give_back(m, owed);
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
}

/* q's caller gives up on it (timeout): if it is the oldest in flight on
 * its connection, the server is running it, so a cancel is sent (see the
 * top of the file); then its result is left to the leader to discard.
 * x->mu held; released while the cancel is sent.  Afterwards q belongs to
 * the connection (or is done, if its result came meanwhile: returns 0). */
static int abandon(prt__mux *x, mreq *q)
{
    if (q->m->fly == q) {
        PGcancel *cn = PQgetCancel(q->m->c->pg);
        prt__mu_unlock(&x->mu, PRT__RANK_MUX);
        char buf[256];
        if (cn)
            PQcancel(cn, buf, sizeof buf);
        PQfreeCancel(cn);
        prt__mu_lock(&x->mu, PRT__RANK_MUX);
    }
    if (q->state != REQ_SENT)
        return 0;
    q->abandoned = 1;
    return 1;
}

/* --- leading and waiting --------------------------------------------------- */

/* Leads m's I/O until me has its outcome: sends what is queued, reads
 * results and hands them out.  me's own timeout (deadline) abandons it
 * (cancelled on the server when it is the oldest in flight).  Returns
 * with me done, rerouted, or timed out (PRT_ETIMEDOUT; me then belongs to
 * the connection).  x->mu held on entry and return, released for I/O. */
int lead(prt__mux *x, mconn *m, mreq *me, double deadline)
{
    for (;;) {
        int nsend;
        mreq *batch = take_pending(m, &nsend);
        if (me->state != REQ_SENT && nsend == 0)
            break; /* me done or rerouted, nothing left to send */
        prt__mu_unlock(&x->mu, PRT__RANK_MUX);
        int ndone = 0;
        int rc = nsend ? prt__mux_send(m, batch, nsend) : PRT_OK;
        if (rc == PRT_OK && me->state == REQ_SENT)
            rc = prt__mux_pump(m, deadline, &ndone);
        prt__mu_lock(&x->mu, PRT__RANK_MUX);
        if (rc == PRT_EBROKEN) {
            broke(x, m);
            return PRT_OK;
        }
        complete(x, m, ndone);
        if (rc == PRT_ETIMEDOUT && me->state == REQ_SENT) {
            /* Still the leader while the cancel goes out (nobody else reads
             * results, so me stays in flight and is abandoned). */
            int gone = abandon(x, me);
            step_down(x, m);
            return gone ? PRT_ETIMEDOUT : PRT_OK;
        }
    }
    step_down(x, m);
    return PRT_OK;
}

/* Waits until q has its outcome, taking over m's I/O when nudged, or its
 * deadline passes: PRT_ETIMEDOUT, and q was unqueued, or it was abandoned
 * (*gone: it belongs to its connection now).  x->mu held; released while
 * waiting. */
int await(prt__mux *x, mreq *q, double deadline, int *gone)
{
    struct timespec ts;
    if (deadline > 0)
        prt__abstime(deadline, &ts);
    for (;;) {
        if (q->state != REQ_QUEUED && q->state != REQ_SENT)
            return PRT_OK;
        mconn *m = q->m;
        if (!m->busy) { /* nudged, or the leader stepped down before q was queued */
            q->nudged = 0;
            m->busy = 1;
            int rc = lead(x, m, q, deadline);
            *gone = rc == PRT_ETIMEDOUT;
            return rc;
        }
        int r = deadline > 0 ? pthread_cond_timedwait(&q->cond, &x->mu, &ts) : pthread_cond_wait(&q->cond, &x->mu);
        if (r != ETIMEDOUT || q->state == REQ_DONE || q->state == REQ_REROUTE)
            continue;
        m = q->m;
        if (q->state == REQ_QUEUED)
            unlink_pending(x, m, q);
        else if (abandon(x, q))
            *gone = 1;
        else
            continue; /* its result came in during the cancel */
        if (!m->busy)
            nudge_next(m); /* it may have been the one asked to lead: pass that on */
        return PRT_ETIMEDOUT;
    }
}
