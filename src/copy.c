/*
 * copy.c -- COPY ... FROM STDIN: bulk load through libpq's copy
 * sub-protocol.
 *
 * The binding encodes rows as COPY text and hands them over in large
 * chunks; this file only moves bytes.  For the length of a copy the
 * connection is in non-blocking mode, so that a server that stops reading
 * cannot hang the caller: every wait is a poll() bounded by the pool's
 * query_timeout (0: unbounded, as for queries), counted from the start of
 * that wait -- a long copy may take longer in all, as long as the server
 * keeps reading.  Each chunk is flushed before the next is taken, so
 * libpq's output buffer stays about one chunk long.
 *
 * The server reports an error in the data (a duplicate key, a bad value)
 * only when the copy ends; until then it reads and drops what follows.
 * When a call returns, the connection is back in blocking mode and out of
 * the copy, or the call says PRT_EBROKEN and the caller closes it.
 */
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include "internal.h"

/* Sends what libpq has buffered, waiting for the socket within the query
 * deadline, and reads what the server sends meanwhile so that neither side
 * waits for the other.  Returns 0 or PRT_EBROKEN (err set): a copy cut off
 * half-way cannot be resumed. */
static int flush(prt_conn *c, char *err, size_t errlen)
{
    double deadline = prt__conn_deadline(c);
    for (;;) {
        int r = PQflush(c->pg);
        if (r == 0)
            return PRT_OK;
        int rc = r < 0 ? PRT_EBROKEN : prt__conn_wait(c, POLLOUT | POLLIN, deadline);
        if (rc == PRT_ETIMEDOUT) {
            prt__errf(err, errlen, "pool \"%s\": copy timed out: the server read nothing for %.3fs (query_timeout)",
                      c->pool->name, c->pool->opts.query_timeout);
            return PRT_EBROKEN;
        }
        if (rc != 0 || !PQconsumeInput(c->pg)) {
            prt__conn_pq_error(c, "copy: connection lost", err, errlen);
            return PRT_EBROKEN;
        }
    }
}

/* Starts `sql`, which must be COPY ... FROM STDIN in text format; *ncols
 * is the number of columns every row must have.  Returns 0 with c in the
 * copy; PRT_EQUERY etc. as prt_query does; PRT_EINVAL when the statement
 * is something else (it has run then; a binary COPY is aborted first). */
int prt_copy_begin(prt_conn *c, const char *sql, int *ncols, char *err, size_t errlen)
{
    if (!c || !sql || !ncols)
        return PRT_EINVAL;
    c->sqlstate[0] = '\0';
    if (!PQsendQuery(c->pg, sql)) {
        prt__conn_pq_error(c, "send failed", err, errlen);
        return PRT_EBROKEN;
    }
    PGresult *r = NULL;
    int rc = prt__conn_collect(c, prt__conn_deadline(c), &r, err, errlen);
    if (rc != PRT_OK) {
        PQclear(r);
        return rc;
    }
    ExecStatusType st = PQresultStatus(r);
    int binary = PQbinaryTuples(r);
    *ncols = PQnfields(r);
    PQclear(r);
    if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        prt__errf(err, errlen, "pool \"%s\": copy_in: the statement sends data (COPY ... TO STDOUT); "
                  "the connection is closed", c->pool->name);
        return PRT_EBROKEN;
    }
    if (st != PGRES_COPY_IN) {
        prt__errf(err, errlen, "pool \"%s\": copy_in: the statement ran, but it is not COPY ... FROM STDIN",
                  c->pool->name);
        return PRT_EINVAL;
    }
    if (PQsetnonblocking(c->pg, 1) != 0) {
        prt__conn_pq_error(c, "copy: cannot switch to non-blocking mode", err, errlen);
        return PRT_EBROKEN;
    }
    if (!binary)
        return PRT_OK;
    long long rows;
    rc = prt_copy_end(c, "poolrt copies text format only", &rows, err, errlen);
    if (rc == PRT_EBROKEN)
        return rc;
    prt__errf(err, errlen, "pool \"%s\": copy_in: COPY in binary format is not supported (text only)",
              c->pool->name);
    return PRT_EINVAL;
}

/* Sends len bytes of COPY text (lines may span calls) and waits until
 * they have left libpq's buffer.  Returns 0 or PRT_EBROKEN. */
int prt_copy_put(prt_conn *c, const char *buf, size_t len, char *err, size_t errlen)
{
    if (!c || (!buf && len > 0) || len > INT_MAX)
        return PRT_EINVAL;
    for (;;) {
        int r = PQputCopyData(c->pg, buf, (int)len);
        if (r < 0) {
            prt__conn_pq_error(c, "copy: send failed", err, errlen);
            return PRT_EBROKEN;
        }
        int rc = flush(c, err, errlen);
        if (rc != PRT_OK || r == 1)
            return rc;
        /* r == 0: libpq had no room; the flush made some */
    }
}

/* Ends the copy: errmsg NULL commits it, else the server aborts it and
 * reports errmsg back ("COPY from stdin failed: ...").  The server's
 * verdict comes back as prt_query's would: 0 with *rows the rows copied,
 * PRT_EQUERY with the server's error (c usable), PRT_ETIMEDOUT (cancelled,
 * c usable), or PRT_EBROKEN. */
int prt_copy_end(prt_conn *c, const char *errmsg, long long *rows, char *err, size_t errlen)
{
    if (!c || !rows)
        return PRT_EINVAL;
    *rows = -1;
    int r, rc;
    while ((r = PQputCopyEnd(c->pg, errmsg)) == 0)
        if ((rc = flush(c, err, errlen)) != PRT_OK)
            return rc;
    if (r > 0 && (rc = flush(c, err, errlen)) != PRT_OK)
        return rc;
    if (r < 0 || PQsetnonblocking(c->pg, 0) != 0) {
        prt__conn_pq_error(c, "copy: send failed", err, errlen);
        return PRT_EBROKEN;
    }
    PGresult *res = NULL;
    rc = prt__conn_collect(c, prt__conn_deadline(c), &res, err, errlen);
    if (rc == PRT_OK) {
        const char *n = PQcmdTuples(res);
        *rows = (n && *n) ? atoll(n) : 0;
    }
    PQclear(res);
    return rc;
}
