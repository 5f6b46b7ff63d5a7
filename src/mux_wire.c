/*
 * mux_wire.c -- the pipeline protocol on one multiplexed connection: what
 * its leader (mux_lead.c) sends for each statement and how it reads the
 * results back and pairs them with their statements.
 *
 * Each statement is a segment of its own: [DEALLOCATE victim] [Parse]
 * Bind/Execute, then Sync.  An error aborts the rest of its segment only
 * (PGRES_PIPELINE_ABORTED), never the next caller's.  Results come back in
 * order: one or more per command, a NULL after each command, and
 * PGRES_PIPELINE_SYNC for the Sync; a statement is complete when its
 * Sync's result is in.  Everything here runs on the leader's thread with
 * no lock held: the connection, its statement cache and the in-flight
 * requests' result fields are the leader's while it leads.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include "mux.h"

/* --- result reading (the leader, no lock) ---------------------------------- */

static void set_error(prt_pool *p, mreq *q, int rc, const char *fmt, const char *a, const char *b)
{
    if (q->rc != PRT_OK)
        return; /* the first error is the one to report */
    q->rc = rc;
    char msg[PRT__ERRLEN - 64];
    snprintf(msg, sizeof msg, fmt, a, b);
    for (char *s = msg; *s; s++)
        if (*s == '\n' || *s == '\t')
            *s = ' ';
    prt__errf(q->err, sizeof q->err, "pool \"%s\": %s", p->name, msg);
}

static void server_error(prt_pool *p, mreq *q, const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    set_error(p, q, PRT_EQUERY, "%s (SQLSTATE %s)", msg ? msg : PQresultErrorMessage(r), state ? state : "?????");
}

/* Drops the statement prepared under id from c's cache (its Parse failed,
 * or the server lost it). */
static void forget_stmt(prt_conn *c, unsigned id)
{
    for (int i = 0; i < c->stmts.n; i++)
        if (c->stmts.slots[i].id == id) {
            prt__stmt_remove(&c->stmts, &c->stmts.slots[i]);
            return;
        }
}

/* One result of q's segment.  Returns 0, or PRT_EBROKEN when the
 * connection can no longer be used (a COPY began). */
static int take_result(mconn *m, mreq *q, PGresult *r)
{
    prt_pool *p = m->c->pool;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        PQclear(r);
        set_error(p, q, PRT_EBROKEN, "COPY needs an exclusive connection (conn:copy_in)%s%s", "", "");
        return PRT_EBROKEN;
    }
    int failed = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_PIPELINE_ABORTED;
    if (failed && q->prepared) { /* the Parse failed, or never ran */
        forget_stmt(m->c, q->prepared);
        q->prepared = 0;
    }
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (q->cmds == 1 && state && strcmp(state, "26000") == 0 && !q->retried && q->rc == PRT_OK) {
            q->retried = 1; /* the statement vanished (DEALLOCATE by a user): prepare it again */
            prt__stmt_clear(&m->c->stmts);
            q->rc = 1;      /* routed again: see pump */
        }
        server_error(p, q, r);
    } else if (st == PGRES_PIPELINE_ABORTED) {
        set_error(p, q, PRT_EQUERY, "statement not run: an earlier command of its segment failed%s%s", "", "");
    } else if (q->cmds == 1 && q->rc == PRT_OK) {
        PQclear(q->res);
        q->res = r;
        return PRT_OK;
    }
    PQclear(r);
    return PRT_OK;
}

/* Reads every result that has arrived for the statements in flight, oldest
 * first, and counts in *ndone how many segments are complete (their Sync
 * seen).  Returns 0 or PRT_EBROKEN.  The leader's, no lock: only the
 * leader appends to or pops m->fly. */
static int harvest(mconn *m, int *ndone)
{
    PGconn *pg = m->c->pg;
    mreq *q = m->fly;
    for (int k = 0; k < *ndone && q; k++)
        q = q->next;
    while (q && !PQisBusy(pg)) {
        PGresult *r = PQgetResult(pg);
        if (!r) {
            if (q->cmds == 0)
                break; /* libpq idles between segments until the next Sync's result arrives */
            q->cmds--; /* one command of the segment is complete */
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            ++*ndone;
            q = q->next;
            continue;
        }
        if (take_result(m, q, r) != PRT_OK)
            return PRT_EBROKEN;
    }
    return PQstatus(pg) == CONNECTION_OK ? PRT_OK : PRT_EBROKEN;
}

/* --- sending (the leader, no lock) ----------------------------------------- */

/* Queues q's segment in libpq's buffer: [DEALLOCATE victim] [Parse] Bind/
 * Execute, Sync.  Returns 0 or PRT_EBROKEN. */
static int send_one(mconn *m, mreq *q)
{
    prt_conn *c = m->c;
    PGconn *pg = c->pg;
    q->cmds = 1;
    q->prepared = 0;
    int ok = 1;
    prt__stmt *s = NULL;
    if (!(q->flags & PRT_Q_UNPREPARED) && c->stmts.cap > 0 && !(s = prt__stmt_find(&c->stmts, q->sql))) {
        prt__stmt *victim = prt__stmt_victim(&c->stmts);
        if (victim) {
            char sql[64];
            snprintf(sql, sizeof sql, "DEALLOCATE %s", victim->name);
            ok = PQsendQueryParams(pg, sql, 0, NULL, NULL, NULL, NULL, 0);
            q->cmds++;
            prt__stmt_remove(&c->stmts, victim);
        }
        if (ok && (s = prt__stmt_add(&c->stmts, q->sql)) != NULL) {
            ok = PQsendPrepare(pg, s->name, q->sql, q->nparams, NULL);
            q->cmds++;
            q->prepared = s->id;
        }
    }
    if (ok && s)
        ok = PQsendQueryPrepared(pg, s->name, q->nparams, q->params, NULL, NULL, 0);
    else if (ok)
        ok = PQsendQueryParams(pg, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0);
    return ok && PQpipelineSync(pg) ? PRT_OK : PRT_EBROKEN;
}

/* Sends n requests starting at q (already on the in-flight list) and
 * flushes what the socket takes now. */
int prt__mux_send(mconn *m, mreq *q, int n)
{
    for (int i = 0; i < n; i++, q = q->next)
        if (send_one(m, q) != PRT_OK)
            return PRT_EBROKEN;
    int f = PQflush(m->c->pg);
    m->flushing = f == 1;
    return f < 0 ? PRT_EBROKEN : PRT_OK;
}

/* Waits for results (and room to flush) until `deadline` (0: none), then
 * reads what came.  Returns 0, PRT_ETIMEDOUT or PRT_EBROKEN. */
int prt__mux_pump(mconn *m, double deadline, int *ndone)
{
    int rc = harvest(m, ndone);
    if (rc != PRT_OK || *ndone > 0)
        return rc;
    rc = prt__conn_wait(m->c, POLLIN | (m->flushing ? POLLOUT : 0), deadline);
    if (rc != PRT_OK)
        return rc;
    if (m->flushing) {
        int f = PQflush(m->c->pg);
        m->flushing = f == 1;
        if (f < 0)
            return PRT_EBROKEN;
    }
    if (!PQconsumeInput(m->c->pg))
        return PRT_EBROKEN;
    return harvest(m, ndone);
}

/* q's error (rc, "pool "name": why"), unless it already has one. */
void prt__mux_fail(prt_pool *p, mreq *q, int rc, const char *why)
{
    set_error(p, q, rc, "%s%s", why, "");
}

/* q was in flight when its connection broke: PRT_EBROKEN, "connection lost
 * while <what>: " and the server's own last word to q if it got one (57P01
 * from pg_terminate_backend), else libpq's (`lost`). */
void prt__mux_lost(prt_pool *p, mreq *q, const char *lost, const char *what)
{
    char why[400];
    const char *own = q->rc == PRT_EQUERY ? strstr(q->err, "\": ") : NULL; /* past the pool's name */
    snprintf(why, sizeof why, "connection lost while %s: %.200s", what,
             own ? own + 3 : lost[0] ? lost : "server closed the connection");
    q->rc = PRT_OK;
    set_error(p, q, PRT_EBROKEN, "%s%s", why, "");
}
