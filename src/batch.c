/*
 * batch.c -- prt_pool_query_batch: n independent statements in one call,
 * the way pgx's SendBatch and Npgsql's NpgsqlBatch do it, so that a client
 * with a few threads and many statements in flight each pays no wake-up
 * per statement.
 *
 * Each statement is a pipeline segment with a Sync of its own (mux_wire.c
 * sends and reads them; there is one copy of that protocol), so a failing
 * statement aborts only itself.  With opts.multiplex the statements go to
 * the multiplexer at once (mux_spread.c, prt__mux_query_batch: one
 * connection for the batch, or chunks on several for prt_pool_query_spread;
 * the caller leads their I/O).  Otherwise this file acquires one
 * connection, puts it in pipeline mode for the batch, and releases it:
 * closed when it broke or the batch timed out (results would still be owed
 * on it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mux.h"

/* Sends the k requests linked from m->fly and reads until all are complete
 * or `deadline` (0: none) passes.  Returns 0, PRT_ETIMEDOUT or
 * PRT_EBROKEN; the complete ones are popped from m->fly, the rest stay. */
static int pipeline_round(mconn *m, int k, double deadline)
{
    int rc = prt__mux_send(m, m->fly, k);
    while (rc == PRT_OK && m->fly) {
        int ndone = 0;
        rc = prt__mux_pump(m, deadline, &ndone);
        for (int i = 0; i < ndone; i++)
            m->fly = m->fly->next;
    }
    return rc;
}

/* q did not complete before its batch's round ended with rc (PRT_EBROKEN
 * or PRT_ETIMEDOUT; libpq's last word `lost`): its error says so. */
static void fail_unfinished(prt_pool *p, mreq *q, int rc, const char *lost)
{
    if (q->rc == 1)
        q->rc = PRT_OK;
    if (rc == PRT_EBROKEN) {
        prt__mux_lost(p, q, lost, "the batch was in flight");
    } else {
        q->rc = PRT_OK;
        prt__mux_fail(p, q, rc, "query timed out (batch; the connection is closed)");
    }
}

/* The exclusive path: the n statements pipelined on connection c, in rounds
 * (a statement whose prepared statement vanished goes again once, as
 * prt_query retries it).  Outcomes in qs[i]; returns 0, or PRT_ETIMEDOUT /
 * PRT_EBROKEN after which c must be closed (the statements not complete
 * carry that error). */
static int pipeline_batch(prt_conn *c, int n, mreq *qs, double deadline)
{
    mconn m = { .c = c };
    if (!PQenterPipelineMode(c->pg) || PQsetnonblocking(c->pg, 1) != 0) {
        for (int i = 0; i < n; i++)
            prt__mux_fail(c->pool, &qs[i], PRT_EBROKEN, "could not put the connection in pipeline mode");
        return PRT_EBROKEN;
    }
    for (int i = 0; i < n; i++)
        qs[i].rc = 1; /* to be sent: the first round */
    int rc = PRT_OK;
    for (;;) {
        mreq *tail = NULL;
        int k = 0;
        m.fly = NULL;
        for (int i = 0; i < n; i++) {
            if (qs[i].rc != 1)
                continue;
            qs[i].rc = PRT_OK;
            qs[i].err[0] = '\0';
            PQclear(qs[i].res);
            qs[i].res = NULL;
            qs[i].next = NULL;
            *(tail ? &tail->next : &m.fly) = &qs[i];
            tail = &qs[i];
            k++;
        }
        if (k == 0)
            break;
        if ((rc = pipeline_round(&m, k, deadline)) != PRT_OK)
            break;
    }
    if (rc == PRT_OK && (!PQexitPipelineMode(c->pg) || PQsetnonblocking(c->pg, 0) != 0))
        rc = PRT_EBROKEN; /* every outcome is in; the connection is closed */
    char lost[256];
    snprintf(lost, sizeof lost, "%s", PQerrorMessage(c->pg));
    char why[256];
    if (rc == PRT_ETIMEDOUT) { /* the server may still run one: stop it (the connection is closed after) */
        PGcancel *cn = PQgetCancel(c->pg);
        if (cn)
            PQcancel(cn, why, sizeof why);
        PQfreeCancel(cn);
    }
    for (mreq *q = m.fly; rc != PRT_OK && q; q = q->next)
        fail_unfinished(c->pool, q, rc, lost);
    for (int i = 0; rc != PRT_OK && i < n; i++)
        if (qs[i].rc == 1) /* complete, but its next round was cut short */
            fail_unfinished(c->pool, &qs[i], rc, lost);
    return rc;
}

/* Exclusive mode: acquire, pipeline, release.  Outcomes in items; returns
 * PRT_ENOMEM when the requests cannot be had, else 0. */
static int exclusive_batch(prt_pool *p, int n, prt_batch_item *items)
{
    mreq *qs = calloc((size_t)n, sizeof *qs);
    if (!qs)
        return PRT_ENOMEM;
    char err[PRT__ERRLEN];
    prt_conn *c;
    int rc = prt_acquire(p, -1, &c, err, sizeof err);
    if (rc == PRT_OK) {
        double deadline = p->opts.query_timeout > 0 ? prt_now() + p->opts.query_timeout : 0;
        for (int i = 0; i < n; i++)
            prt__req_of_item(&qs[i], &items[i]);
        int broken = pipeline_batch(c, n, qs, deadline) != PRT_OK;
        prt_release(c, broken);
    }
    for (int i = 0; i < n; i++) {
        items[i].rc = rc != PRT_OK ? rc : qs[i].rc;
        prt__errf(items[i].err, sizeof items[i].err, "%s", rc != PRT_OK ? err : qs[i].err);
        if (items[i].rc == PRT_OK)
            items[i].result = (prt_result *)qs[i].res;
        else
            PQclear(qs[i].res);
    }
    free(qs);
    return PRT_OK;
}

/* prt_pool_query_batch and prt_pool_query_spread: the same but for
 * `spread` (multiplexed pools only; an exclusive batch holds one
 * connection either way). */
static int query_batch(prt_pool *p, int n, prt_batch_item *items, int spread, char *err, size_t errlen)
{
    if (!p || n < 0 || (n > 0 && !items)) {
        prt__errf(err, errlen, "prt_pool_query_batch: invalid arguments");
        return PRT_EINVAL;
    }
    if (p->ops) {
        prt__errf(err, errlen, "pool \"%s\": batches need server connections; this runtime's are simulated "
                  "(poolrt sim)", p->name);
        return PRT_EINVAL;
    }
    for (int i = 0; i < n; i++)
        if (!items[i].sql || items[i].nparams < 0 || (items[i].nparams > 0 && !items[i].params)) {
            prt__errf(err, errlen, "pool \"%s\": batch statement %d of %d: invalid sql or parameters", p->name,
                      i + 1, n);
            return PRT_EINVAL;
        }
    for (int i = 0; i < n; i++) {
        items[i].result = NULL;
        items[i].rc = PRT_OK;
        items[i].err[0] = '\0';
    }
    if (n == 0)
        return PRT_OK;
    int rc = p->mux ? prt__mux_query_batch(p, n, items, spread) : exclusive_batch(p, n, items);
    if (rc != PRT_OK) {
        prt__errf(err, errlen, "pool \"%s\": out of memory", p->name);
        return rc;
    }
    for (int i = 0; i < n; i++)
        if (items[i].rc != PRT_OK) {
            prt__errf(err, errlen, "statement %d of %d: %s", i + 1, n, items[i].err);
            return items[i].rc;
        }
    return PRT_OK;
}

int prt_pool_query_batch(prt_pool *p, int n, prt_batch_item *items, char *err, size_t errlen)
{
    return query_batch(p, n, items, 0, err, errlen);
}

int prt_pool_query_spread(prt_pool *p, int n, prt_batch_item *items, char *err, size_t errlen)
{
    return query_batch(p, n, items, 1, err, errlen);
}
