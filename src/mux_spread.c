/*
 * mux_spread.c -- batches on the multiplexer: prt__mux_query_batch, which
 * batch.c calls for prt_pool_query_batch and prt_pool_query_spread on a
 * pool with opts.multiplex.
 *
 * Every statement of a batch gets a request; then rounds (batch_round)
 * queue the ones to be routed and wait for them, until none is to be
 * routed again (a broken connection's queued ones, a vanished prepared
 * statement).  Not spread, a round queues them all on one connection
 * (route's choice, so they run in order) and the caller waits for the
 * last like a single statement (await, mux_lead.c).  Spread, it queues
 * them in chunks of PRT_SPREAD_CHUNK, each on the connection choose()
 * gives it (mux_choose.c), so that several server processes run the batch
 * at once; the caller leads every chunk whose connection had no leader
 * before it sleeps on the others', so two spread batches never wait on
 * each other.  A deadline that passes gives up the unfinished statements
 * in one pass (batch_give_up).  prt__mux_query_batch is entered with no
 * lock held and takes mux->mu; the rest run with it held, released for
 * I/O as in mux_lead.c.
 */
#include <stdlib.h>
#include "mux.h"

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
        prt__mu_unlock(&x->mu, PRT__RANK_MUX);
        char buf[256];
        PQcancel(cn, buf, sizeof buf);
        PQfreeCancel(cn);
        prt__mu_lock(&x->mu, PRT__RANK_MUX);
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
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
    int rc = nsend ? prt__mux_send(m, batch, nsend) : PRT_OK;
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
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
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
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
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
    free(qs);
    free(idx);
    return PRT_OK;
}
