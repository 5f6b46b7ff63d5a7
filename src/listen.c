/*
 * listen.c -- LISTEN/NOTIFY on a connection of the listener's own.
 *
 * A listener acquires one connection of its pool (so it counts against the
 * pool's max and the runtime's caps like any connection in use), LISTENs on
 * each channel, and keeps that connection until it is closed.  Waiting is a
 * poll() on the socket bounded by the caller's timeout: notifications libpq
 * has already parsed are handed out first, in the order they arrived.
 *
 * A connection that drops (server restart, pg_terminate_backend) is given
 * back as broken; the next waits acquire a new one and LISTEN again, with a
 * growing pause between failed attempts, all within their timeouts.  The
 * wait that re-established the listener returns PRT_ERECONNECTED once:
 * PostgreSQL does not keep notifications for a session that is gone, so
 * whatever was sent while it was down is lost and the caller must re-read
 * what it was watching.
 *
 * A listener has no lock: like a prt_conn, one thread uses it at a time.
 * Before its connection goes back to the pool it runs UNLISTEN *; if that
 * fails the connection is closed rather than handed to someone else while
 * still subscribed.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

enum { BACKOFF_MIN_MS = 50, BACKOFF_MAX_MS = 1000 }; /* pause after a failed reconnect, doubling */

struct prt_listener {
    prt_pool *pool;          /* a reference of our own: the pool outlives an outage */
    prt_conn *conn;          /* acquired and LISTENing; NULL while reconnecting */
    char **channels;         /* copies of the names, unquoted */
    int nchannels;
    PGnotify *last;          /* what the last wait handed out (its strings), or NULL */
    double backoff;          /* seconds to pause after the next failed reconnect */
    double retry_at;         /* prt_now() before which no reconnect is tried */
};

/* Runs LISTEN for every channel on c, each name quoted by libpq.  Returns 0,
 * or a PRT_E* code with err set (PRT_EBROKEN: the connection is unusable). */
static int listen_all(prt_listener *l, prt_conn *c, double deadline, char *err, size_t errlen)
{
    for (int i = 0; i < l->nchannels; i++) {
        char *q = PQescapeIdentifier(c->pg, l->channels[i], strlen(l->channels[i]));
        if (!q) {
            prt__errf(err, errlen, "pool \"%s\": listen: cannot quote channel \"%s\"", l->pool->name,
                      l->channels[i]);
            return PRT_EBROKEN;
        }
        size_t len = strlen(q) + sizeof "LISTEN ";
        char *sql = malloc(len);
        int rc = PRT_ENOMEM;
        PGresult *r = NULL;
        if (sql) {
            snprintf(sql, len, "LISTEN %s", q);
            rc = prt__conn_exec(c, sql, 0, NULL, deadline, &r, err, errlen);
        } else {
            prt__errf(err, errlen, "pool \"%s\": listen: out of memory", l->pool->name);
        }
        PQclear(r);
        free(sql);
        PQfreemem(q);
        if (rc != PRT_OK)
            return rc;
    }
    return PRT_OK;
}

/* Acquires a connection and LISTENs on it before `deadline`.  Returns 0
 * with l->conn set, or a PRT_E* code with err set and l->conn NULL (the
 * connection, if one was had, closed: a LISTEN on it may have
 * failed). */
static int attach_conn(prt_listener *l, double deadline, char *err, size_t errlen)
{
    prt_conn *c = NULL;
    double left = deadline - prt_now();
    int rc = prt_acquire(l->pool, left > 0 ? left : 0, &c, err, errlen);
    if (rc != PRT_OK)
        return rc;
    rc = listen_all(l, c, deadline, err, errlen);
    if (rc != PRT_OK) {
        prt_release(c, 1); /* earlier LISTENs may have succeeded: never hand it on */
        return rc;
    }
    l->conn = c;
    return PRT_OK;
}

static void free_listener(prt_listener *l)
{
    for (int i = 0; i < l->nchannels; i++)
        free(l->channels[i]);
    free(l->channels);
    if (l->last)
        PQfreemem(l->last);
    prt_pool_unref(l->pool);
    free(l);
}

/* Opens a listener on pool p for `n` channels (names as given; quoting is
 * done here), waiting at most the pool's acquire_timeout for a connection.
 * On success *out is the caller's until prt_listener_close; on failure err
 * carries the pool's state and nothing is held. */
int prt_listener_open(prt_pool *p, const char *const *channels, int n, prt_listener **out,
                      char *err, size_t errlen)
{
    if (!p || !channels || n <= 0 || !out)
        return PRT_EINVAL;
    for (int i = 0; i < n; i++)
        if (!channels[i] || !channels[i][0])
            return PRT_EINVAL;
    *out = NULL;
    prt_listener *l = calloc(1, sizeof *l);
    char **names = calloc((size_t)n, sizeof *names);
    if (!l || !names) {
        free(l);
        free(names);
        prt__errf(err, errlen, "pool \"%s\": listen: out of memory", p->name);
        return PRT_ENOMEM;
    }
    prt__pool_ref(p);
    l->pool = p;
    l->channels = names;
    for (; l->nchannels < n; l->nchannels++) {
        if (!(names[l->nchannels] = strdup(channels[l->nchannels]))) {
            free_listener(l);
            prt__errf(err, errlen, "pool \"%s\": listen: out of memory", p->name);
            return PRT_ENOMEM;
        }
    }
    l->backoff = BACKOFF_MIN_MS / 1000.0;
    int rc = attach_conn(l, prt_now() + p->opts.acquire_timeout, err, errlen);
    if (rc != PRT_OK) {
        free_listener(l);
        return rc;
    }
    *out = l;
    return PRT_OK;
}

/* The connection dropped: give it back as broken (its slot is free again). */
static void drop_conn(prt_listener *l)
{
    prt__logf(PRT_LOG_INFO, "pool \"%s\": listener lost its connection (backend %d); reconnecting",
              l->pool->name, PQbackendPID(l->conn->pg));
    prt_release(l->conn, 1);
    l->conn = NULL;
    l->retry_at = 0; /* the first attempt goes at once */
}

/* One reconnect attempt, after the pause the last failure asked for, all
 * before `deadline`.  Returns PRT_ERECONNECTED, PRT_ETIMEDOUT (err says the
 * listener is reconnecting and why the last attempt failed) or
 * PRT_ECLOSED. */
static int reconnect(prt_listener *l, double deadline, char *err, size_t errlen)
{
    double now = prt_now();
    if (now < l->retry_at) {
        prt_sleep((l->retry_at < deadline ? l->retry_at : deadline) - now); /* a retry pause, bounded */
        if (prt_now() < l->retry_at)
            goto timedout;
    }
    char why[PRT__ERRLEN];
    int rc = attach_conn(l, deadline, why, sizeof why);
    if (rc == PRT_OK) {
        l->backoff = BACKOFF_MIN_MS / 1000.0;
        prt__logf(PRT_LOG_INFO, "pool \"%s\": listener reconnected (backend %d)", l->pool->name,
                  PQbackendPID(l->conn->pg));
        return PRT_ERECONNECTED;
    }
    if (rc == PRT_ECLOSED) {
        prt__errf(err, errlen, "%s", why);
        return rc;
    }
    l->retry_at = prt_now() + l->backoff;
    l->backoff = l->backoff * 2 < BACKOFF_MAX_MS / 1000.0 ? l->backoff * 2 : BACKOFF_MAX_MS / 1000.0;
    prt__errf(err, errlen, "pool \"%s\": listener is reconnecting: %s", l->pool->name, why);
    return PRT_ETIMEDOUT;
timedout:
    prt__errf(err, errlen, "pool \"%s\": listener is reconnecting (next attempt in %.3fs)", l->pool->name,
              l->retry_at - prt_now());
    return PRT_ETIMEDOUT;
}

/* Waits up to `timeout` seconds for a notification: 0 with *out filled
 * (its strings valid until the next wait or the close), PRT_ETIMEDOUT, or
 * PRT_ERECONNECTED once the listener is LISTENing on a new connection after
 * the old one dropped.  PRT_ECLOSED when the pool is gone. */
int prt_listener_wait(prt_listener *l, double timeout, prt_notification *out, char *err, size_t errlen)
{
    if (!l || !out || timeout < 0)
        return PRT_EINVAL;
    double deadline = prt_now() + timeout;
    if (l->last) {
        PQfreemem(l->last);
        l->last = NULL;
    }
    for (;;) {
        if (!l->conn) {
            int rc = reconnect(l, deadline, err, errlen);
            if (rc != PRT_ETIMEDOUT || prt_now() >= deadline)
                return rc;
            continue;
        }
        PGconn *pg = l->conn->pg;
        PGnotify *n = PQnotifies(pg);
        if (n) {
            l->last = n;
            *out = (prt_notification){ .channel = n->relname, .payload = n->extra, .pid = n->be_pid };
            return PRT_OK;
        }
        if (PQstatus(pg) != CONNECTION_OK || l->conn->fatal) {
            drop_conn(l);
            continue;
        }
        /* a broken socket reads as ready: PQconsumeInput below finds out */
        if (prt__conn_wait(l->conn, POLLIN, deadline) == PRT_ETIMEDOUT) {
            prt__errf(err, errlen, "pool \"%s\": no notification within %.3fs", l->pool->name, timeout);
            return PRT_ETIMEDOUT;
        }
        if (!PQconsumeInput(pg))
            drop_conn(l);
    }
}

int prt_listener_backend_pid(const prt_listener *l)
{
    return l && l->conn ? PQbackendPID(l->conn->pg) : 0;
}

/* UNLISTENs and gives the connection back, then frees the listener.  The
 * connection is closed instead when UNLISTEN fails, so that nobody else
 * gets a subscribed session.  Bounded by the pool's acquire_timeout. */
void prt_listener_close(prt_listener *l)
{
    if (!l)
        return;
    prt_conn *c = l->conn;
    if (c) {
        char err[PRT__ERRLEN];
        PGresult *r = NULL;
        int broken = PQstatus(c->pg) != CONNECTION_OK || c->fatal ||
                     prt__conn_exec(c, "UNLISTEN *", 0, NULL, prt_now() + l->pool->opts.acquire_timeout, &r,
                                    err, sizeof err) != PRT_OK;
        PQclear(r);
        PGnotify *n;
        while ((n = PQnotifies(c->pg)) != NULL) /* arrived before UNLISTEN: nobody's now */
            PQfreemem(n);
        prt_release(c, broken);
    }
    free_listener(l);
}
