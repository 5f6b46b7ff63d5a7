/*
 * multiplex.c -- statements of many callers pipelined over a pool's
 * connections (pool option `multiplex`, docs/multiplexing.md#multiplexing; the anchor
 * is Npgsql's Multiplexing mode).
 *
 * A statement run through prt_pool_query does not hold a connection: it is
 * queued on one of the multiplexer's connections (route.c picks which) and
 * sent in libpq pipeline mode with a Sync of its own, so an error aborts
 * that statement's segment only and every other caller gets its own
 * result.  Prepared statements stay per connection (the connection's
 * stmt.c cache): a statement new to a connection travels as Parse +
 * Bind/Execute in its segment.  What goes over the wire, and how results
 * are paired with their statements, is mux_wire.c; this file is who sends
 * and reads, and on which connection.
 *
 * Who does the I/O (flat combining, leader/follower).  There is no I/O
 * thread.  A caller that finds its connection's writer free becomes the
 * connection's leader: it sends everything queued, reads results as they
 * come and hands each to its caller (a condvar signal); when its own
 * result is in it sends what queued meanwhile and steps down, nudging one
 * waiter to take over if statements are still in flight.  Callers that
 * find a leader queue and sleep once, until their result is handed to
 * them.  So a statement costs at most one wake-up, none for the leader, and
 * the server reads many statements per recv().  A dedicated I/O thread
 * would cost two hand-offs per statement (to it and back) and was not
 * built; bench/RESULTS-mux.md measures this design against pgbench,
 * pgxpool and the exclusive pool, with context switches per statement.
 *
 * Batches (prt_pool_query_batch, batch.c).  A batch's n statements are
 * queued at once on one connection (route's choice for the batch, so they
 * run in order) and its caller waits for the last of them like a single
 * statement: it leads, or sleeps once for the whole batch; the others
 * point at it (mreq.waiter) so that a nudge meant for them wakes it.
 * Results on a connection come in order, so when the last is in, all are.
 * A spread batch (prt_pool_query_spread) is queued the same way in chunks
 * of up to SPREAD_CHUNK, each on the connection choose() gives it, so that
 * several server processes run it at once (batch_round says how the caller
 * leads them without waiting on another spread batch).
 *
 * Connections.  The multiplexer takes connections from its own pool with
 * prt_acquire, so they count in the pool's max and the runtime's slots like
 * any connection in use: it opens one more when every connection it holds
 * has statements in flight and the pool could hand one out at once, and
 * gives one back (retires it: no new statements; released when its last
 * result is in) whenever an exclusive caller (pool:acquire, :with,
 * :transaction) waits in the pool, one per waiter.  A closing pool (evict,
 * drain) retires them all; the reap cycle retires one that had no
 * statement for idle_timeout, or is past its max_lifetime.
 *
 * Failures.  A connection that breaks fails the statements in flight on it
 * (PRT_EBROKEN, "connection lost while the statement was in flight"); the
 * ones still queued on it are routed again.  query_timeout ends its own
 * caller's wait only: the statement's result is discarded when it comes.
 * If the statement is the oldest in flight on its connection (the one the
 * server is running) a cancel is sent; a cancel hits whatever the backend
 * runs when it arrives, so if that statement finished just before, the next
 * statement in the pipeline fails with SQLSTATE 57014 ("canceling statement
 * due to user request") instead: a narrow race, documented in
 * docs/multiplexing.md#timeouts-and-the-cancel-race.
 *
 * Locking: one mutex per multiplexer (mux->mu) guards its connection list,
 * every queue and every request's state; it nests outside the pool's mu.
 * A connection's libpq object and statement cache belong to its leader
 * (busy set) and are used without the lock; no lock is held across I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "mux.h"

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

int prt__mux_new(prt_pool *p)
{
    prt__mux *x = calloc(1, sizeof *x);
    if (!x)
        return PRT_ENOMEM;
    pthread_mutex_init(&x->mu, NULL);
    prt__cond_init(&x->grown);
    static const prt__mux_ops ops = { prt__mux_close, prt__mux_free, prt__mux_stats };
    p->mux = x;
    p->mux_ops = &ops;
    return PRT_OK;
}

/* Statements that would leave a shared connection in a transaction block.
 * A cheap first-word test: multiplexed statements run each in an implicit
 * transaction of their own, so these belong on an exclusive connection. */
static int tx_control(const char *sql)
{
    static const char *const words[] = { "begin", "start", "commit", "end", "rollback", "abort",
                                         "savepoint", "release", NULL };
    while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' || *sql == '(')
        sql++;
    for (int i = 0; words[i]; i++) {
        if ((*sql | 0x20) != words[i][0]) /* ASCII lower case; most statements stop here */
            continue;
        size_t n = strlen(words[i]);
        if (strncasecmp(sql, words[i], n) != 0)
            continue;
        char next = sql[n]; /* within the string: its first n characters matched */
        if (!(next >= 'a' && next <= 'z') && !(next >= 'A' && next <= 'Z') && !(next >= '0' && next <= '9') &&
            next != '_' && next != '$')
            return 1;
    }
    return 0;
}

/* --- queues (mux->mu held) ------------------------------------------------ */

static void push(mreq **head, mreq **tail, mreq *q)
{
    q->next = NULL;
    if (*tail)
        (*tail)->next = q;
    else
        *head = q;
    *tail = q;
}

/* Takes q, still queued (not sent), off m: its caller gave up.  x->mu held. */
static void unlink_pending(prt__mux *x, mconn *m, mreq *q)
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

/* A request for a new statement: a spare, or a new one (NULL: out of
 * memory).  x->mu held. */
static mreq *req_get(prt__mux *x)
{
    mreq *q = x->spare;
    if (q) {
        x->spare = q->next;
    } else if ((q = calloc(1, sizeof *q)) != NULL) {
        prt__cond_init(&q->cond); /* CLOCK_MONOTONIC, as prt__abstime */
    } else {
        return NULL;
    }
    q->next = NULL;
    q->m = NULL;
    q->waiter = NULL;
    q->abandoned = q->nudged = q->retried = q->cmds = 0;
    q->prepared = 0;
    q->rc = PRT_OK;
    q->err[0] = '\0';
    return q;
}

/* Back to the spares.  x->mu held. */
static void req_put(prt__mux *x, mreq *q)
{
    PQclear(q->res);
    q->res = NULL;
    q->next = x->spare;
    x->spare = q;
}

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

/* --- connections (mux->mu held unless said) -------------------------------- */

static void drop_routable(prt__mux *x, mconn *m)
{
    for (int i = 0; i < x->n; i++)
        if (x->conns[i] == m) {
            x->conns[i] = x->conns[--x->n];
            return;
        }
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
static void broke(prt__mux *x, mconn *m)
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
    pthread_mutex_unlock(&x->mu);
    give_back(m, 1);
    pthread_mutex_lock(&x->mu);
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

/* The leader steps down: the next live caller on m is nudged to take over
 * the I/O.  m is retired first when an exclusive caller waits in the pool
 * for a connection (one per waiter), and a retiring connection with nothing
 * live on it is given back (closed when results are still owed to callers
 * that timed out).  x->mu held; released and taken again around a
 * give-back. */
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

static void step_down(prt__mux *x, mconn *m)
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
    pthread_mutex_unlock(&x->mu);
    give_back(m, owed);
    pthread_mutex_lock(&x->mu);
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
        pthread_mutex_unlock(&x->mu);
        char buf[256];
        if (cn)
            PQcancel(cn, buf, sizeof buf);
        PQfreeCancel(cn);
        pthread_mutex_lock(&x->mu);
    }
    if (q->state != REQ_SENT)
        return 0;
    q->abandoned = 1;
    return 1;
}

/* The leader takes what is queued on m to send: moved to the in-flight
 * list, oldest first; returns its head and *n.  x->mu held. */
static mreq *take_pending(mconn *m, int *n)
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

/* Leads m's I/O until me has its outcome: sends what is queued, reads
 * results and hands them out.  me's own timeout (deadline) abandons it
 * (cancelled on the server when it is the oldest in flight).  Returns
 * with me done, rerouted, or timed out (PRT_ETIMEDOUT; me then belongs to
 * the connection).  x->mu held on entry and return, released for I/O. */
static int lead(prt__mux *x, mconn *m, mreq *me, double deadline)
{
    for (;;) {
        int nsend;
        mreq *batch = take_pending(m, &nsend);
        if (me->state != REQ_SENT && nsend == 0)
            break; /* me done or rerouted, nothing left to send */
        pthread_mutex_unlock(&x->mu);
        int ndone = 0;
        int rc = nsend ? prt__mux_send(m, batch, nsend) : PRT_OK;
        if (rc == PRT_OK && me->state == REQ_SENT)
            rc = prt__mux_pump(m, deadline, &ndone);
        pthread_mutex_lock(&x->mu);
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

/* --- routing and growing ---------------------------------------------------- */

/* Whether the pool could hand the multiplexer a connection without making
 * anyone wait: an idle one, or a free slot, and no caller queued. */
static int pool_has_room(prt_pool *p, int held)
{
    prt__lock(p);
    int room = !p->closed && !p->wq_head && held < p->max && (p->nidle > 0 || p->total < p->max);
    prt__unlock(p);
    return room;
}

/* Takes a connection from the pool for the multiplexer, by `deadline`.
 * Returns 0 with *out (routable), or an error with err set.  x->mu held;
 * released while acquiring. */
static int grow(prt__mux *x, prt_pool *p, double deadline, mconn **out, char *err, size_t errlen)
{
    x->growing++;
    pthread_mutex_unlock(&x->mu);
    prt_conn *c = NULL;
    mconn *m = NULL;
    double left = deadline - prt_now();
    int rc = prt_acquire(p, left > 0 ? left : 0, &c, err, errlen);
    if (rc == PRT_OK && (!(m = calloc(1, sizeof *m)) || !PQenterPipelineMode(c->pg) ||
                         PQsetnonblocking(c->pg, 1) != 0)) {
        prt__errf(err, errlen, "pool \"%s\": could not put a connection in pipeline mode", p->name);
        prt_release(c, 1);
        free(m);
        rc = PRT_EBROKEN;
    }
    pthread_mutex_lock(&x->mu);
    x->growing--;
    pthread_cond_broadcast(&x->grown);
    if (rc != PRT_OK)
        return rc;
    m->c = c;
    m->used_at = prt_now();
    if (x->closed || x->n == PRT__MUX_MAX) {
        m->retiring = 1; /* used for this statement, then given back */
        x->retiring++;
    } else {
        x->conns[x->n++] = m;
    }
    *out = m;
    return PRT_OK;
}

/* The connection for the next statement: route's choice, or a new one when
 * every connection has work in flight and the pool has room (or none is
 * held).  x->mu held; released while a connection is acquired. */
static int choose(prt__mux *x, prt_pool *p, double deadline, mconn **out, char *err, size_t errlen)
{
    mconn *m = NULL;
    if (x->n > 0) {
        for (int i = 0; i < x->n; i++) {
            prt_conn *c = x->conns[i]->c;
            x->views[i] = (prt_route_view){ (double)c->id, (double)x->conns[i]->uses, x->conns[i]->load,
                                            c->endpoint + 1 };
        }
        int least = 0;
        for (int i = 1; i < x->n; i++)
            least = x->conns[i]->load < x->conns[least]->load ? i : least;
        if (x->conns[least]->load == 0 || x->growing || x->closed || !pool_has_room(p, x->n) ||
            grow(x, p, deadline, out, err, errlen) != PRT_OK) {
            m = x->conns[prt__route(p, x->views, x->n)];
            *out = m;
        }
        return PRT_OK;
    }
    if (x->closed) {
        prt__errf(err, errlen, "pool \"%s\": %s", p->name, "pool is closed");
        return PRT_ECLOSED;
    }
    if (x->growing) { /* holding none: wait for the one being taken rather than take another */
        struct timespec ts;
        prt__abstime(deadline, &ts);
        if (pthread_cond_timedwait(&x->grown, &x->mu, &ts) == ETIMEDOUT && x->n == 0) {
            prt__errf(err, errlen, "pool \"%s\": acquire timed out after %.3fs (multiplexed: waiting for "
                      "its first connection)", p->name, p->opts.acquire_timeout);
            return PRT_ETIMEDOUT;
        }
        return choose(x, p, deadline, out, err, errlen);
    }
    return grow(x, p, deadline, out, err, errlen);
}

/* Waits until q has its outcome, taking over m's I/O when nudged, or its
 * deadline passes: PRT_ETIMEDOUT, and q was unqueued, or it was abandoned
 * (*gone: it belongs to its connection now).  x->mu held; released while
 * waiting. */
static int await(prt__mux *x, mreq *q, double deadline, int *gone)
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

/* prt_pool_query with opts.multiplex: queue the statement on a connection,
 * lead that connection's I/O or wait for the result.  Same contract as
 * prt_pool_query. */
int prt__mux_query(prt_pool *p, const char *sql, int nparams, const char *const *params, int flags,
                   prt_result **out, char *err, size_t errlen)
{
    prt__mux *x = p->mux;
    if (tx_control(sql)) {
        prt__errf(err, errlen, "pool \"%s\": a multiplexed pool:query runs each statement in a transaction of "
                  "its own; use pool:transaction or pool:with for BEGIN ... COMMIT", p->name);
        return PRT_EINVAL;
    }
    double now = prt_now();
    double deadline = p->opts.query_timeout > 0 ? now + p->opts.query_timeout : 0;
    double acquire_by = now + p->opts.acquire_timeout;
    int rc, gone = 0, timed_out = 0;
    pthread_mutex_lock(&x->mu);
    mreq *q = req_get(x);
    if (!q) {
        pthread_mutex_unlock(&x->mu);
        prt__errf(err, errlen, "pool \"%s\": out of memory", p->name);
        return PRT_ENOMEM;
    }
    q->sql = sql;
    q->nparams = nparams;
    q->params = params;
    q->flags = flags;
    for (;;) {
        mconn *m;
        rc = choose(x, p, acquire_by, &m, err, errlen);
        if (rc != PRT_OK)
            break;
        q->m = m;
        q->state = REQ_QUEUED;
        q->nudged = 0;
        push(&m->pend, &m->pend_tail, q);
        m->load++;
        x->queued++;
        rc = await(x, q, deadline, &gone);
        timed_out = rc == PRT_ETIMEDOUT;
        if (rc != PRT_OK || q->state != REQ_REROUTE)
            break;
    }
    if (timed_out) { /* q was unqueued, or is gone (not to be read again) */
        if (!gone)
            req_put(x, q);
        pthread_mutex_unlock(&x->mu);
        prt__errf(err, errlen, "pool \"%s\": query timed out after %.3fs (multiplexed; its result is discarded)",
                  p->name, p->opts.query_timeout);
        return rc;
    }
    if (rc == PRT_OK && q->rc != PRT_OK) {
        rc = q->rc;
        prt__errf(err, errlen, "%s", q->err);
    } else if (rc == PRT_OK) {
        *out = (prt_result *)q->res;
        q->res = NULL;
    }
    req_put(x, q);
    pthread_mutex_unlock(&x->mu);
    return rc;
}

/* --- batches ------------------------------------------------------------------ */

/* Gives up on the batch's statements that are not done when its deadline
 * passed: queued ones are unqueued and put back, sent ones abandoned (their
 * results are discarded when they come), all in one pass under the lock,
 * so no nudge finds one of them live with its waiter gone.  The one its
 * caller slept on was handled by await (`gone`: it belongs to the
 * connection).  Then a connection left without a leader is stepped down
 * for (its next live caller nudged, or given back) -- m is alive until
 * then: live requests of this batch were on it -- and, if one of them is
 * the statement the server runs, a cancel is sent with no lock held.
 * qs[i] is NULLed for each request given up; done ones stay.  x->mu held. */
static void batch_give_up(prt__mux *x, mconn *m, mreq **qs, const int *idx, int k, mreq *last, int gone)
{
    PGcancel *cn = NULL;
    for (int j = 0; j < k; j++) {
        mreq *q = qs[idx[j]];
        if (q == last) {
            if (!gone)
                req_put(x, q);
        } else if (q->state == REQ_QUEUED) {
            unlink_pending(x, m, q);
            req_put(x, q);
        } else if (q->state == REQ_REROUTE) {
            req_put(x, q);
        } else if (q->state == REQ_SENT) {
            if (m->fly == q)
                cn = PQgetCancel(m->c->pg);
            q->abandoned = 1;
        } else {
            continue; /* done: its outcome stands */
        }
        qs[idx[j]] = NULL;
    }
    if (!m->busy) {
        m->busy = 1;
        step_down(x, m);
    }
    if (cn) {
        pthread_mutex_unlock(&x->mu);
        char buf[256];
        PQcancel(cn, buf, sizeof buf);
        PQfreeCancel(cn);
        pthread_mutex_lock(&x->mu);
    }
}

/* Statements per connection when a batch is spread (prt_pool_query_spread,
 * PRT_SPREAD_CHUNK in poolrt.h: poolrt.workers reads it too): enough that
 * a connection's pipeline is worth its send and read, few enough that 64
 * statements use 4 server processes at once. */
#define SPREAD_CHUNK PRT_SPREAD_CHUNK

/* Queues the n requests qs[idx[0..n)] on m, to run in order; each points
 * at the last (nudges for them wake its caller).  x->mu held. */
static void queue_chunk(prt__mux *x, mconn *m, mreq **qs, const int *idx, int n)
{
    mreq *last = qs[idx[n - 1]];
    for (int j = 0; j < n; j++) {
        mreq *q = qs[idx[j]];
        q->m = m;
        q->state = REQ_QUEUED;
        q->nudged = 0;
        q->waiter = q == last ? NULL : last;
        push(&m->pend, &m->pend_tail, q);
        m->load++;
        x->queued++;
    }
}

/* Sends what is queued on m, whose leader the caller has become (m->busy),
 * and stays its leader: the server starts on it while the caller queues
 * more elsewhere.  Returns 0, or PRT_EBROKEN after broke() (m is gone).
 * x->mu held; released for the send. */
static int send_ahead(prt__mux *x, mconn *m)
{
    int nsend;
    mreq *batch = take_pending(m, &nsend);
    pthread_mutex_unlock(&x->mu);
    int rc = nsend ? prt__mux_send(m, batch, nsend) : PRT_OK;
    pthread_mutex_lock(&x->mu);
    if (rc == PRT_EBROKEN)
        broke(x, m);
    return rc;
}

/* Queues the k requests qs[idx[0..k)] and waits for them.  Not spread: all
 * at once on one connection (route's choice for them all, so they stay in
 * order), and the caller waits for the last: it leads the connection's
 * I/O, or sleeps once until a leader hands over the last result (results
 * on a connection come in order, so the others are in by then) or nudges
 * it to lead.  Spread: in chunks of SPREAD_CHUNK, each on the connection
 * choose() gives it (a new one while the pool has room and the others are
 * busy), so several server processes run them at once; each chunk whose
 * connection has no leader is sent at once and its I/O led by the caller,
 * and the caller leads all of those before it sleeps on the others' --
 * a caller never sleeps while it leads, so two spread batches cannot wait
 * on each other.  Returns 0 (each request done or to be routed again),
 * PRT_ETIMEDOUT (unfinished ones given up, their qs[] NULLed), or choose's
 * error (err set; the requests not queued stay to be routed).  x->mu held. */
static int batch_round(prt__mux *x, prt_pool *p, mreq **qs, const int *idx, int k, int spread, double acquire_by,
                       double deadline, char *err, size_t errlen)
{
    struct { mconn *m; int at, n, mine; } ch[PRT__MUX_MAX];
    int nch = spread ? (k + SPREAD_CHUNK - 1) / SPREAD_CHUNK : 1;
    if (nch > PRT__MUX_MAX)
        nch = PRT__MUX_MAX;
    int per = (k + nch - 1) / nch, made = 0, rc = PRT_OK;
    for (int at = 0; at < k; at += per) {
        int n = k - at < per ? k - at : per;
        mconn *m;
        if ((rc = choose(x, p, acquire_by, &m, err, errlen)) != PRT_OK)
            break;
        queue_chunk(x, m, qs, idx + at, n);
        ch[made].m = m;
        ch[made].at = at;
        ch[made].n = n;
        ch[made].mine = spread && !m->busy;
        if (ch[made].mine) {
            m->busy = 1;
            if (send_ahead(x, m) != PRT_OK)
                ch[made].m = NULL; /* its requests are done (lost) or to be routed again */
        }
        made++;
    }
    int wrc = PRT_OK;
    for (int pass = 0; pass < 2; pass++) /* the chunks the caller leads, then the others */
        for (int c = 0; c < made; c++) {
            if (!ch[c].m || ch[c].mine != (pass == 0))
                continue;
            mreq *last = qs[idx[ch[c].at + ch[c].n - 1]];
            int gone = 0, r;
            if (ch[c].mine)
                gone = (r = lead(x, ch[c].m, last, deadline)) == PRT_ETIMEDOUT;
            else
                r = await(x, last, deadline, &gone);
            if (r == PRT_ETIMEDOUT) {
                batch_give_up(x, ch[c].m, qs, idx + ch[c].at, ch[c].n, last, gone);
                wrc = r;
            }
        }
    return rc != PRT_OK ? rc : wrc;
}

/* prt_pool_query_batch with opts.multiplex: every statement gets a request,
 * then rounds of batch_round until none is to be routed again (a broken
 * connection's queued ones, a vanished prepared statement).  Outcomes go
 * to items (rc, err, result); returns PRT_ENOMEM only when the index array
 * cannot be had. */
int prt__mux_query_batch(prt_pool *p, int n, prt_batch_item *items, int spread)
{
    prt__mux *x = p->mux;
    mreq **qs = calloc((size_t)n, sizeof *qs);
    int *idx = calloc((size_t)n, sizeof *idx);
    if (!qs || !idx) {
        free(qs);
        free(idx);
        return PRT_ENOMEM;
    }
    double now = prt_now();
    double deadline = p->opts.query_timeout > 0 ? now + p->opts.query_timeout : 0;
    double acquire_by = now + p->opts.acquire_timeout;
    char err[PRT__ERRLEN];
    pthread_mutex_lock(&x->mu);
    for (int i = 0; i < n; i++) {
        prt_batch_item *it = &items[i];
        if (tx_control(it->sql)) {
            it->rc = PRT_EINVAL;
            prt__errf(it->err, sizeof it->err, "pool \"%s\": a multiplexed batch runs each statement in a "
                      "transaction of its own; use pool:transaction for BEGIN ... COMMIT", p->name);
        } else if (!(qs[i] = req_get(x))) {
            it->rc = PRT_ENOMEM;
            prt__errf(it->err, sizeof it->err, "pool \"%s\": out of memory", p->name);
        } else {
            prt__req_of_item(qs[i], it);
            qs[i]->state = REQ_REROUTE; /* to be routed: the first round */
        }
    }
    int rc = PRT_OK;
    for (;;) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (qs[i] && qs[i]->state == REQ_REROUTE)
                idx[k++] = i;
        if (k == 0)
            break;
        rc = batch_round(x, p, qs, idx, k, spread, acquire_by, deadline, err, sizeof err);
        if (rc == PRT_ETIMEDOUT)
            prt__errf(err, sizeof err, "pool \"%s\": query timed out after %.3fs (multiplexed batch; its "
                      "result is discarded)", p->name, p->opts.query_timeout);
        for (int j = 0; rc != PRT_OK && j < k; j++) { /* those not done share the round's error */
            mreq *q = qs[idx[j]];
            if (q && q->state == REQ_DONE)
                continue;
            if (q)
                req_put(x, q);
            qs[idx[j]] = NULL;
            items[idx[j]].rc = rc;
            prt__errf(items[idx[j]].err, sizeof items[idx[j]].err, "%s", err);
        }
        if (rc != PRT_OK)
            break;
    }
    for (int i = 0; i < n; i++) {
        mreq *q = qs[i];
        if (!q)
            continue;
        items[i].rc = q->rc;
        if (q->rc != PRT_OK) {
            prt__errf(items[i].err, sizeof items[i].err, "%s", q->err);
        } else {
            items[i].result = (prt_result *)q->res;
            q->res = NULL;
        }
        req_put(x, q);
    }
    pthread_mutex_unlock(&x->mu);
    free(qs);
    free(idx);
    return PRT_OK;
}

/* --- pool life ------------------------------------------------------------ */

/* The pool closes (evict, drain): every connection is retired; those
 * without a leader are given back now (closed if results are owed to
 * callers that timed out), the others by their leader when empty.  No
 * lock held. */
void prt__mux_close(prt_pool *p)
{
    prt__mux *x = p->mux;
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    x->closed = 1;
    while (x->n > 0) {
        mconn *m = x->conns[--x->n];
        m->retiring = 1;
        x->retiring++;
        if (!m->busy && !m->pend) {
            m->busy = 1;
            step_down(x, m); /* no live caller on it: given back */
        }
    }
    pthread_mutex_unlock(&x->mu);
}

/* The reap cycle (reap.c, before its leak check): a connection the
 * multiplexer holds that had no statement for the pool's idle_timeout, or
 * has outlived its max_lifetime, is retired (given back at once when
 * empty, else by its leader).  The rest count as just acquired for the
 * leak check: the multiplexer holds them for statements, not a caller
 * that forgot them.  Idleness is seen at reap granularity: a connection's
 * used_at is stamped by the first look after its last statement.  No lock
 * held. */
void prt__mux_reap(prt_pool *p, double now)
{
    prt__mux *x = p->mux;
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    for (int i = 0; i < x->n;) {
        mconn *m = x->conns[i];
        if (m->used_at == 0 || m->load > 0)
            m->used_at = now;
        int idle = p->opts.idle_timeout > 0 && now - m->used_at >= p->opts.idle_timeout;
        if (!idle && !prt__conn_expired(m->c, now)) {
            prt__lock(p);
            m->c->acquired_at = now;
            prt__unlock(p);
            i++;
            continue;
        }
        drop_routable(x, m); /* conns[i] is now another connection: look at i again */
        m->retiring = 1;
        x->retiring++;
        if (!m->busy && !m->pend) {
            m->busy = 1;
            step_down(x, m);
        }
    }
    pthread_mutex_unlock(&x->mu);
}

/* The pool's last reference is gone: no caller is inside and no connection
 * is held (each held one keeps a reference). */
void prt__mux_free(prt_pool *p)
{
    prt__mux *x = p->mux;
    if (!x)
        return;
    for (mreq *q = x->spare, *next; q; q = next) {
        next = q->next;
        pthread_cond_destroy(&q->cond);
        free(q);
    }
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->grown);
    free(x);
    p->mux = NULL;
}

/* One statement without an acquire (poolrt.h). */
int prt_pool_query(prt_pool *p, const char *sql, int nparams, const char *const *params, int flags,
                   prt_result **out, char *err, size_t errlen)
{
    if (!p || !sql || nparams < 0 || (nparams > 0 && !params) || !out)
        return PRT_EINVAL;
    *out = NULL;
    if (p->mux)
        return prt__mux_query(p, sql, nparams, params, flags, out, err, errlen);
    prt_conn *c;
    int rc = prt_acquire(p, -1, &c, err, errlen);
    if (rc != PRT_OK)
        return rc;
    rc = prt_query(c, sql, nparams, params, flags, out, err, errlen);
    prt_release(c, rc == PRT_EBROKEN);
    return rc;
}

/* The multiplexer's part of prt_pool_stats (zeros without one).  Takes
 * mux->mu, which nests outside the pool's: no pool lock held. */
void prt__mux_stats(prt_pool *p, prt_pool_stats *s)
{
    prt__mux *x = p->mux;
    s->mux_connections = s->mux_in_flight = 0;
    s->mux_statements_total = s->mux_rerouted_total = s->mux_lost_total = 0;
    if (!x)
        return;
    pthread_mutex_lock(&x->mu);
    s->mux_connections = x->n + x->retiring;
    s->mux_in_flight = (int)(x->queued - x->unqueued - x->answered - x->rerouted);
    s->mux_statements_total = x->answered;
    s->mux_rerouted_total = x->rerouted;
    s->mux_lost_total = x->lost;
    pthread_mutex_unlock(&x->mu);
}
