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
 * are paired with their statements, is mux_wire.c; who sends and reads,
 * and on which connection, is the rest of the multiplexer (see "Files"
 * below).
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
 * several server processes run it at once (mux_spread.c's batch_round says
 * how the caller leads them without waiting on another spread batch).
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
 *
 * Files.  This one holds the entry points (prt_pool_query,
 * prt__mux_query), the requests' spares, and the multiplexer's part of the
 * pool's life (close, reap, free, stats).  mux_lead.c is who leads a
 * connection's I/O and what the leader does with its results;
 * mux_choose.c which connection takes a statement, and taking one more
 * from the pool; mux_spread.c batches, on one connection or spread over
 * several; mux_wire.c the pipeline protocol.  mux.h is what they share
 * (the multiplexer's struct among it).  Calls go one way: this file and
 * mux_spread.c call into mux_lead.c and mux_choose.c, mux_spread.c also
 * into this file; mux_lead.c and mux_spread.c call mux_wire.c; nothing
 * calls back up.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "mux.h"

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
int tx_control(const char *sql)
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

/* --- requests (mux->mu held) ---------------------------------------------- */

/* A request for a new statement: a spare, or a new one (NULL: out of
 * memory).  x->mu held. */
mreq *req_get(prt__mux *x)
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

/* --- statements (no lock held) --------------------------------------------- */

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
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
    mreq *q = req_get(x);
    if (!q) {
        prt__mu_unlock(&x->mu, PRT__RANK_MUX);
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
        prt__mu_unlock(&x->mu, PRT__RANK_MUX);
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
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
    return rc;
}

/* --- pool life ------------------------------------------------------------ */

/* Retires m, already out of the routable list: no new statements; given
 * back now when no live caller is on it (closed if results are owed to
 * callers that timed out), else by its leader when empty.  x->mu held;
 * released and taken again around a give-back. */
static void retire(prt__mux *x, mconn *m)
{
    m->retiring = 1;
    x->retiring++;
    if (!m->busy && !m->pend) {
        m->busy = 1;
        step_down(x, m); /* no live caller on it: given back */
    }
}

/* The pool closes (evict, drain): every connection is retired; those
 * without a leader are given back now (closed if results are owed to
 * callers that timed out), the others by their leader when empty.  No
 * lock held. */
void prt__mux_close(prt_pool *p)
{
    prt__mux *x = p->mux;
    if (!x)
        return;
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
    x->closed = 1;
    while (x->n > 0)
        retire(x, x->conns[--x->n]);
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
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
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
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
        retire(x, m);
    }
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
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

/* The multiplexer's part of prt_pool_stats (zeros without one).  Takes
 * mux->mu, which nests outside the pool's: no pool lock held. */
void prt__mux_stats(prt_pool *p, prt_pool_stats *s)
{
    prt__mux *x = p->mux;
    s->mux_connections = s->mux_in_flight = 0;
    s->mux_statements_total = s->mux_rerouted_total = s->mux_lost_total = 0;
    if (!x)
        return;
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
    s->mux_connections = x->n + x->retiring;
    s->mux_in_flight = (int)(x->queued - x->unqueued - x->answered - x->rerouted);
    s->mux_statements_total = x->answered;
    s->mux_rerouted_total = x->rerouted;
    s->mux_lost_total = x->lost;
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
}
