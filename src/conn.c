/*
 * conn.c -- one libpq connection: opening it within a deadline, running
 * queries (prepared once per connection, or unprepared), checking that an
 * idle socket is still alive, and returning it to a clean state.
 *
 * Every wait on the network is a poll() bounded by a deadline, so a server
 * that accepts and never answers cannot hang a caller.  A pool with
 * connection ops (internal.h: the simulator's) sends open, alive, reset and
 * close there instead.  The connection's
 * fields belong to whoever holds it (see internal.h); nothing here locks.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* libpq's messages span lines; ours are one line each. */
static void one_line(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    for (char *q = s; *q; q++)
        if (*q == '\n' || *q == '\t')
            *q = ' ';
}

/* pool's error "what: libpq's last message", on one line.  verbose: the
 * connection asked for verbose errors (open_one does while it connects),
 * so a server's refusal reads "SEVERITY:  53300: text" and ends with a
 * source location: the code moves to the end as "(SQLSTATE 53300)", as
 * query errors have it, and the location goes.  So a full server is
 * recognised by its code (prt__fleet_refused), also when it answers in
 * another language (lc_messages), not by English words. */
static void pq_error_as(char *err, size_t errlen, const char *pool, const char *what, PGconn *pg, int verbose)
{
    char msg[PRT__ERRLEN], state[6] = "";
    snprintf(msg, sizeof msg, "%s", pg ? PQerrorMessage(pg) : "out of memory");
    if (verbose)
        prt__verbose_error(msg, state);
    one_line(msg);
    if (*state)
        prt__errf(err, errlen, "pool \"%s\": %s: %s (SQLSTATE %s)", pool, what, msg, state);
    else
        prt__errf(err, errlen, "pool \"%s\": %s: %s", pool, what, msg);
}

static void pq_error(char *err, size_t errlen, const char *pool, const char *what, PGconn *pg)
{
    pq_error_as(err, errlen, pool, what, pg, 0);
}

/* The SQLSTATE of a server's refusal in a verbose connect error, "...
 * SEVERITY:  53300: text", or NULL; *len gets the length of "53300: ". */
static char *verbose_sqlstate(char *msg, size_t *len)
{
    for (char *s = strstr(msg, ":  "); s; s = strstr(s + 1, ":  ")) {
        char *code = s + 3;
        int i = 0;
        while (i < 5 && ((code[i] >= '0' && code[i] <= '9') || (code[i] >= 'A' && code[i] <= 'Z')))
            i++;
        if (i == 5 && code[5] == ':' && code[6] == ' ') {
            *len = 7;
            return code;
        }
    }
    return NULL;
}

/* Drops the lines of msg that are a verbose error's source location,
 * "LOCATION:  InitProcess, proc.c:350" (the label is in the client's
 * language, so it is recognised by its shape: "word:  function, file.c:N"). */
static void drop_location(char *msg)
{
    char *line = msg;
    while (*line) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line + 1) : strlen(line);
        char *sep = strstr(line, ":  "), *comma = sep ? strstr(sep, ", ") : NULL, *dotc = comma ? strstr(comma, ".c:") : NULL;
        if (sep && comma && dotc && dotc < line + n && !memchr(line, ' ', (size_t)(sep - line)))
            memmove(line, line + n, strlen(line + n) + 1);
        else
            line += n;
    }
}

/* Takes a verbose error's SQLSTATE out of msg into state ("" when it has
 * none) and drops its source location, leaving the text of the default
 * verbosity. */
void prt__verbose_error(char *msg, char state[6])
{
    size_t len = 0;
    char *code = verbose_sqlstate(msg, &len);
    state[0] = '\0';
    if (!code)
        return;
    memcpy(state, code, 5);
    state[5] = '\0';
    memmove(code, code + len, strlen(code + len) + 1);
    drop_location(msg);
}

/* Waits until the socket is ready for `events` or the deadline passes
 * (deadline 0: no deadline); it looks once even when the deadline has
 * passed, so a wait of 0 still sees what has arrived.  Returns 0,
 * PRT_ETIMEDOUT or PRT_EBROKEN. */
static int wait_socket(PGconn *pg, short events, double deadline)
{
    struct pollfd pfd = { .fd = PQsocket(pg), .events = events };
    if (pfd.fd < 0)
        return PRT_EBROKEN;
    for (;;) {
        double left = deadline > 0 ? deadline - prt_now() : 1;
        int r = poll(&pfd, 1, deadline <= 0 ? -1 : left > 0 ? (int)(left * 1000.0) + 1 : 0);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return PRT_EBROKEN;
        if (left <= 0)
            return PRT_ETIMEDOUT;
        /* else: poll's rounding or a signal; re-check the deadline */
    }
}

/* Drives a started connect (PQconnectStart*) until it is made, fails
 * (PRT_ECONNECT: PQerrorMessage says why) or `deadline` passes
 * (PRT_ETIMEDOUT).  The caller finishes pg either way. */
int prt__pq_connect_poll(PGconn *pg, double deadline)
{
    PostgresPollingStatusType st = PQstatus(pg) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED)
            return PRT_ECONNECT;
        if (wait_socket(pg, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline) == PRT_ETIMEDOUT)
            return PRT_ETIMEDOUT;
        st = PQconnectPoll(pg);
    }
    return PRT_OK;
}

/* Runs `sql` on pg (no parameters) until `deadline`: PRT_OK with *out the
 * caller's (PQclear), PRT_EQUERY (the server refused it: *out says why),
 * PRT_EBROKEN or PRT_ETIMEDOUT (pg is then of no further use).  For
 * connections outside pools (endpoint_sample.c). */
int prt__pq_exec(PGconn *pg, const char *sql, double deadline, PGresult **out)
{
    *out = NULL;
    if (!PQsendQuery(pg, sql))
        return PRT_EBROKEN;
    for (;;) {
        while (!PQisBusy(pg)) {
            PGresult *r = PQgetResult(pg);
            if (!r)
                return *out && PQresultStatus(*out) == PGRES_TUPLES_OK ? PRT_OK : *out ? PRT_EQUERY : PRT_EBROKEN;
            if (*out)
                PQclear(*out);
            *out = r;
        }
        int rc = wait_socket(pg, POLLIN, deadline);
        if (rc != PRT_OK)
            return rc;
        if (!PQconsumeInput(pg))
            return PRT_EBROKEN;
    }
}

/* Server messages outside a query.  A FATAL one while idle is the server
 * saying why it is about to close the connection (pg_terminate_backend,
 * shutdown): remember it, so the connection is not handed out again. */
static void notice_receiver(void *arg, const PGresult *res)
{
    prt_conn *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        c->fatal = 1;
    char msg[PRT__ERRLEN];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
    one_line(msg);
    prt__logf(PRT_LOG_DEBUG, "pool \"%s\": server notice: %s", c->pool->name, msg);
}

/* One connect to endpoint e of pool p (or its only host) until deadline. */
static int open_at(prt_pool *p, int e, double deadline, prt_conn **out, char *err, size_t errlen)
{
    prt_conn *c = calloc(1, sizeof *c);
    PGconn *pg = p->endpoints ? prt__endpoints_start(p->endpoints, e) : PQconnectStart(p->conninfo);
    if (!c || !pg || PQstatus(pg) == CONNECTION_BAD) {
        pq_error(err, errlen, p->name, "connect failed", pg);
        free(c);
        PQfinish(pg);
        return pg ? PRT_ECONNECT : PRT_ENOMEM;
    }
    PQsetErrorVerbosity(pg, PQERRORS_VERBOSE); /* the server's SQLSTATE in a refusal: pq_error_as */
    int rc = prt__pq_connect_poll(pg, deadline);
    if (rc != PRT_OK) {
        if (rc == PRT_ETIMEDOUT)
            prt__errf(err, errlen, "pool \"%s\": connect timed out (server did not answer before the deadline)",
                      p->name);
        else
            pq_error_as(err, errlen, p->name, "connect failed", pg, 1);
        PQfinish(pg);
        free(c);
        return rc;
    }
    PQsetErrorVerbosity(pg, PQERRORS_DEFAULT);
    c->pg = pg;
    c->endpoint = e;
    *out = c;
    return PRT_OK;
}

/* Opens one connection to endpoint e of pool p (or its only host), within
 * the deadline or the endpoint's connect_timeout, whichever comes first,
 * and tells the endpoint's facts how it went. */
static int open_one(prt_pool *p, int e, double deadline, prt_conn **out, char *err, size_t errlen)
{
    double per = prt__endpoints_connect_timeout(p->endpoints);
    if (per > 0 && prt_now() + per < deadline)
        deadline = prt_now() + per;
    int rc = open_at(p, e, deadline, out, err, errlen);
    if (p->endpoints && rc != PRT_ENOMEM)
        prt__endpoints_connected(p->endpoints, e, rc == PRT_OK ? (*out)->pg : NULL, err);
    return rc;
}

static int run_init_sql(prt_conn *c, double deadline, char *err, size_t errlen);

/* A new connection of p (libpq's or the simulator's) gets its pool, its
 * birth time and its lifetime, less a random jitter so that connections
 * opened together do not all expire together. */
void prt__conn_born(prt_conn *c, prt_pool *p)
{
    c->pool = p;
    c->created_at = c->returned_at = prt_now();
    if (p->opts.max_lifetime > 0) {
        double jitter = p->opts.max_lifetime * p->opts.lifetime_jitter * prt__rand01();
        c->expires_at = c->created_at + p->opts.max_lifetime - jitter;
    }
}

/* Opens a connection for pool p, giving up at `deadline`: on endpoint
 * `first` (the endpoint hook's answer; -1: none), then in the order
 * endpoint.c gives (the role wanted, then fewest of the pool's
 * connections, banned ones left out), the next one after a failure or an
 * endpoint's connect_timeout.  On success *out is owned by the caller; on failure err
 * carries the pool's name and libpq's message (never the password). */
int prt__conn_open(prt_pool *p, double deadline, int first, prt_conn **out, char *err, size_t errlen)
{
    if (p->ops)
        return p->ops->open(p, deadline, first, out, err, errlen);
    int order[PRT__MAX_ENDPOINTS + 1] = { 0 };
    int n = p->endpoints ? prt__endpoints_order(p->endpoints, order + 1) : 1, tried = 0;
    if (first >= 0) /* the endpoint hook's answer goes first, the built-in order after it */
        order[0] = first;
    prt_conn *c = NULL;
    int rc = PRT_ECONNECT;
    for (int k = first >= 0 ? 0 : 1; k <= n && (rc == PRT_ECONNECT || (rc == PRT_ETIMEDOUT && prt_now() < deadline)); k++) {
        int e = p->endpoints ? order[k] : 0;
        if ((k > 0 && e == first) || (p->endpoints && !prt__endpoints_may_try(p->endpoints, e)))
            continue;
        tried++;
        rc = open_one(p, e, deadline, &c, err, errlen);
    }
    if (!tried)
        prt__errf(err, errlen, "pool \"%s\": connect failed: every server is banned after failed connects", p->name);
    if (rc != PRT_OK)
        return rc;
    prt__endpoints_opened(p->endpoints, c->endpoint, 1);
    if (p->endpoints)
        c->ep_role = prt__endpoints_role_of(p->endpoints, c->endpoint, &c->ep_bad_role);
    PQsetNoticeReceiver(c->pg, notice_receiver, c);
    prt__conn_born(c, p);
    prt__stmt_init(&c->stmts, p->opts.stmt_cache);
    if (run_init_sql(c, deadline, err, errlen) != PRT_OK) {
        prt__conn_close(c);
        return PRT_EQUERY;
    }
    *out = c;
    return PRT_OK;
}

void prt__conn_close(prt_conn *c)
{
    if (!c)
        return;
    if (c->pool && c->pool->ops) {
        c->pool->ops->close(c);
        return;
    }
    if (c->pool && c->pg)
        prt__endpoints_opened(c->pool->endpoints, c->endpoint, -1);
    prt__stmt_clear(&c->stmts);
    PQfinish(c->pg);
    free(c);
}

int prt__conn_expired(const prt_conn *c, double now)
{
    return c->expires_at > 0 && now >= c->expires_at;
}

/* A connection that sat idle may have been closed by the server (restart,
 * pg_terminate_backend, idle_session_timeout).  The server says so with a
 * FATAL message and EOF, which makes the socket readable; reading it lets
 * libpq notice.  Costs one poll() when nothing is pending.  Returns 1 when
 * the connection is usable. */
int prt__conn_alive(prt_conn *c)
{
    if (c->pool->ops)
        return c->pool->ops->alive(c);
    struct pollfd pfd = { .fd = PQsocket(c->pg), .events = POLLIN };
    for (int i = 0; i < 4; i++) {
        if (PQstatus(c->pg) != CONNECTION_OK || pfd.fd < 0 || c->fatal)
            return 0;
        if (poll(&pfd, 1, 0) <= 0)
            return 1;
        if (!PQconsumeInput(c->pg))
            return 0;
        PQisBusy(c->pg); /* parses what arrived, e.g. the FATAL message */
        PGnotify *n;
        while ((n = PQnotifies(c->pg)) != NULL)
            PQfreemem(n);
    }
    return PQstatus(c->pg) == CONNECTION_OK && !c->fatal;
}

/* A cancel request that cannot hold up its caller.  libpq 15's PQcancel
 * waits for the server to close the cancel connection, which a stopped
 * server (SIGSTOP: its kernel still accepts the connect) never does, and
 * libpq 15 has no non-blocking cancel (PQcancelStart is PostgreSQL 17's).
 * So PQcancel runs on a thread of its own and the caller waits for it at
 * most `secs`; a cancel still running then frees its job when it ends. */
enum { CANCEL_WAIT = 1 };
typedef struct cancel_job {
    PGcancel *cn;            /* immutable */
    atomic_uint done;        /* futex word: the cancel returned */
    atomic_int refs;         /* the caller's and the thread's */
} cancel_job;

static void cancel_unref(cancel_job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1) {
        PQfreeCancel(j->cn);
        free(j);
    }
}

static void *cancel_main(void *arg)
{
    cancel_job *j = arg;
    char buf[256];
    PQcancel(j->cn, buf, sizeof buf);
    atomic_store(&j->done, 1);
    prt__futex_wake(&j->done);
    cancel_unref(j);
    return NULL;
}

static void cancel_bounded(PGconn *pg, double secs)
{
    cancel_job *j = calloc(1, sizeof *j);
    pthread_t t;
    if (!j || !(j->cn = PQgetCancel(pg))) {
        free(j);
        return;
    }
    atomic_init(&j->refs, 2);
    if (prt__thread_create(&t, cancel_main, j) != 0) {
        PQfreeCancel(j->cn);
        free(j);
        return;
    }
    pthread_detach(t);
    struct timespec ts;
    prt__abstime(prt_now() + secs, &ts);
    while (!atomic_load(&j->done) && prt__futex_wait(&j->done, 0, &ts) != ETIMEDOUT)
        ;
    cancel_unref(j);
}

/* Collects every result of the command in flight, keeping the first error
 * or else the last result.  On timeout the query is cancelled and the
 * connection drained for a short while; if that fails it is broken. */
static int collect(prt_conn *c, double deadline, PGresult **out, char *err, size_t errlen)
{
    PGconn *pg = c->pg;
    PGresult *keep = NULL;
    int cancelled = 0;
    for (;;) {
        while (PQisBusy(pg)) {
            int rc = wait_socket(pg, POLLIN, deadline);
            if (rc == PRT_ETIMEDOUT && !cancelled) {
                cancel_bounded(pg, CANCEL_WAIT);
                cancelled = 1;
                deadline = prt_now() + 1.0;
                continue;
            }
            if (rc != 0 || !PQconsumeInput(pg)) {
                PQclear(keep);
                if (cancelled)
                    prt__errf(err, errlen, "pool \"%s\": query timed out and could not be cancelled",
                              c->pool->name);
                else
                    pq_error(err, errlen, c->pool->name, "connection lost", pg);
                return PRT_EBROKEN;
            }
        }
        PGresult *r = PQgetResult(pg);
        if (!r)
            break;
        ExecStatusType rs = PQresultStatus(r);
        if (rs == PGRES_COPY_IN || rs == PGRES_COPY_OUT || rs == PGRES_COPY_BOTH) {
            /* The server now waits for (or sends) copy data, and libpq repeats
             * this result until the copy ends: nothing more to collect. */
            PQclear(keep);
            keep = r;
            break;
        }
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(r); /* the first error is the one to report */
            continue;
        }
        PQclear(keep);
        keep = r;
    }
    if (!keep) {
        pq_error(err, errlen, c->pool->name, "no result", pg);
        return PQstatus(pg) == CONNECTION_OK ? PRT_EQUERY : PRT_EBROKEN;
    }
    ExecStatusType st = PQresultStatus(keep);
    c->sqlstate[0] = '\0';
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) {
        const char *state = PQresultErrorField(keep, PG_DIAG_SQLSTATE);
        snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
        const char *msg = PQresultErrorField(keep, PG_DIAG_MESSAGE_PRIMARY);
        char line[PRT__ERRLEN];
        snprintf(line, sizeof line, "%s", msg ? msg : PQresultErrorMessage(keep));
        one_line(line);
        if (cancelled)
            prt__errf(err, errlen, "pool \"%s\": query timed out after %.3fs and was cancelled",
                      c->pool->name, c->pool->opts.query_timeout);
        else
            prt__errf(err, errlen, "pool \"%s\": %s (SQLSTATE %s)", c->pool->name, line,
                      state ? state : "?????");
        int broken = PQstatus(pg) != CONNECTION_OK;
        if (!broken && state && strcmp(state, "26000") == 0) {
            *out = keep; /* prepared statement vanished: caller may retry */
            return PRT_EQUERY;
        }
        PQclear(keep);
        return broken ? PRT_EBROKEN : (cancelled ? PRT_ETIMEDOUT : PRT_EQUERY);
    }
    *out = keep;
    return PRT_OK;
}

static double query_deadline(prt_conn *c)
{
    return c->pool->opts.query_timeout > 0 ? prt_now() + c->pool->opts.query_timeout : 0;
}

/* For src/copy.c, which drives the COPY sub-protocol on the same waits,
 * deadlines and error messages as queries. */
int prt__conn_wait(prt_conn *c, short events, double deadline) { return wait_socket(c->pg, events, deadline); }
double prt__conn_deadline(prt_conn *c) { return query_deadline(c); }
void prt__conn_pq_error(prt_conn *c, const char *what, char *err, size_t errlen)
{
    pq_error(err, errlen, c->pool->name, what, c->pg);
}
int prt__conn_collect(prt_conn *c, double deadline, PGresult **out, char *err, size_t errlen)
{
    return collect(c, deadline, out, err, errlen);
}

/* Runs a utility statement and discards its result. */
static int exec_simple(prt_conn *c, const char *sql, double deadline, char *err, size_t errlen)
{
    PGresult *r = NULL;
    if (!PQsendQuery(c->pg, sql)) {
        pq_error(err, errlen, c->pool->name, "send failed", c->pg);
        return PRT_EBROKEN;
    }
    int rc = collect(c, deadline, &r, err, errlen);
    PQclear(r);
    return rc;
}

/* Runs one statement with text parameters, unprepared, giving up at
 * `deadline` (the query is cancelled then, and the wait for the cancel is
 * bounded too).  On success *out is the caller's (PQclear); on failure err
 * says why and PRT_EBROKEN means the connection should be closed. */
int prt__conn_exec(prt_conn *c, const char *sql, int nparams, const char *const *params, double deadline,
                   PGresult **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0)) {
        pq_error(err, errlen, c->pool->name, "send failed", c->pg);
        return PRT_EBROKEN;
    }
    return collect(c, deadline, out, err, errlen);
}

/* Runs the pool's init_sql statements in order on c.  Returns 0, or
 * PRT_EQUERY with err naming the pool and the server's error (whatever
 * went wrong: the caller closes c either way). */
static int run_init_sql(prt_conn *c, double deadline, char *err, size_t errlen)
{
    const prt_pool_opts *o = &c->pool->opts;
    for (int i = 0; i < o->ninit_sql; i++) {
        char msg[PRT__ERRLEN];
        if (exec_simple(c, o->init_sql[i], deadline, msg, sizeof msg) == PRT_OK)
            continue;
        const char *why = strstr(msg, "\": "); /* drop the pool prefix */
        prt__errf(err, errlen, "pool \"%s\": init_sql failed: %s", c->pool->name, why ? why + 3 : msg);
        return PRT_EQUERY;
    }
    return PRT_OK;
}

/* Makes room in the statement cache and prepares `sql` under a new name. */
static int prepare(prt_conn *c, const char *sql, int nparams, prt__stmt **out, char *err, size_t errlen)
{
    prt__stmt *victim = prt__stmt_victim(&c->stmts);
    if (victim) {
        char q[64];
        snprintf(q, sizeof q, "DEALLOCATE %s", victim->name);
        int rc = exec_simple(c, q, query_deadline(c), err, errlen);
        if (rc != PRT_OK)
            return rc;
        prt__stmt_remove(&c->stmts, victim);
    }
    prt__stmt *s = prt__stmt_add(&c->stmts, sql);
    if (!s) {
        prt__errf(err, errlen, "pool \"%s\": out of memory", c->pool->name);
        return PRT_ENOMEM;
    }
    PGresult *r = NULL;
    int rc = PQsendPrepare(c->pg, s->name, sql, nparams, NULL) ? collect(c, query_deadline(c), &r, err, errlen)
                                                            : PRT_EBROKEN;
    if (rc == PRT_EBROKEN && !r)
        pq_error(err, errlen, c->pool->name, "connection lost", c->pg);
    PQclear(r);
    if (rc != PRT_OK) {
        prt__stmt_remove(&c->stmts, s);
        return rc;
    }
    *out = s;
    return PRT_OK;
}

static int send_query(prt_conn *c, const char *sql, int nparams, const char *const *params,
                      int flags, char *err, size_t errlen)
{
    int ok;
    if ((flags & PRT_Q_UNPREPARED) || c->stmts.cap == 0) {
        ok = nparams == 0 && (flags & PRT_Q_UNPREPARED)
                 ? PQsendQuery(c->pg, sql)
                 : PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    } else {
        prt__stmt *s = prt__stmt_find(&c->stmts, sql);
        if (!s) {
            int rc = prepare(c, sql, nparams, &s, err, errlen);
            if (rc != PRT_OK)
                return rc;
        }
        ok = PQsendQueryPrepared(c->pg, s->name, nparams, params, NULL, NULL, 0);
    }
    if (!ok) {
        pq_error(err, errlen, c->pool->name, "send failed", c->pg);
        return PRT_EBROKEN;
    }
    return PRT_OK;
}

/* Runs one statement with text parameters.  On success *out holds the
 * result, owned by the caller (prt_result_free).  A statement the server
 * forgot (DEALLOCATE ALL by the user) is re-prepared once, outside a
 * transaction only, since inside one the error has already aborted it. */
static int query(prt_conn *c, const char *sql, int nparams, const char *const *params,
                 int flags, prt_result **out, char *err, size_t errlen)
{
    *out = NULL;
    c->sqlstate[0] = '\0';
    for (int attempt = 0;; attempt++) {
        int rc = send_query(c, sql, nparams, params, flags, err, errlen);
        PGresult *r = NULL;
        if (rc == PRT_OK)
            rc = collect(c, query_deadline(c), &r, err, errlen);
        if (rc == PRT_OK && PQresultStatus(r) >= PGRES_COPY_OUT && PQresultStatus(r) <= PGRES_COPY_IN) {
            PQclear(r); /* the server waits for, or sends, copy data: the session is in no state to reuse */
            prt__errf(err, errlen, "pool \"%s\": COPY FROM STDIN / TO STDOUT needs conn:copy_in "
                      "(prt_copy_begin); the connection is closed", c->pool->name);
            return PRT_EBROKEN;
        }
        if (rc == PRT_OK) {
            *out = (prt_result *)r;
            return PRT_OK;
        }
        if (r) { /* SQLSTATE 26000 */
            PQclear(r);
            prt__stmt_clear(&c->stmts);
            if (attempt == 0 && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
                continue;
        }
        return rc;
    }
}

int prt_query(prt_conn *c, const char *sql, int nparams, const char *const *params,
              int flags, prt_result **out, char *err, size_t errlen)
{
    if (!c || !sql || nparams < 0 || (nparams > 0 && !params) || !out)
        return PRT_EINVAL;
    if (!c->pool->rec)
        return query(c, sql, nparams, params, flags, out, err, errlen);
    double t0 = prt_now(); /* recording: the time inside queries while held */
    int rc = query(c, sql, nparams, params, flags, out, err, errlen);
    prt__record_query(c, prt_now() - t0);
    return rc;
}

/* Returns the connection to a state the next borrower can rely on: any
 * transaction left open is rolled back; with discard_all the session is
 * reset.  Returns non-zero when the connection should be closed instead. */
int prt__conn_reset(prt_conn *c, double deadline)
{
    if (c->pool->ops)
        return c->pool->ops->reset(c, deadline);
    char err[PRT__ERRLEN];
    if (PQstatus(c->pg) != CONNECTION_OK)
        return PRT_EBROKEN;
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        if (exec_simple(c, "ROLLBACK", deadline, err, sizeof err) != PRT_OK) {
            prt__logf(PRT_LOG_WARN, "%s (rollback on release)", err);
            return PRT_EBROKEN;
        }
        prt__logf(PRT_LOG_DEBUG, "pool \"%s\": rolled back a transaction left open by its user",
                  c->pool->name);
        break;
    default: /* a command still in flight, or unknown: cannot be trusted */
        return PRT_EBROKEN;
    }
    if (c->pool->opts.discard_all) {
        prt__stmt_clear(&c->stmts);
        if (exec_simple(c, "DISCARD ALL", deadline, err, sizeof err) != PRT_OK)
            return PRT_EBROKEN;
        if (run_init_sql(c, deadline, err, sizeof err) != PRT_OK) { /* DISCARD ALL undid it */
            prt__logf(PRT_LOG_WARN, "%s (after DISCARD ALL; connection closed)", err);
            return PRT_EBROKEN;
        }
    }
    return PRT_OK;
}

uint64_t prt_conn_id(const prt_conn *c)
{
    return c->id;
}

int prt_conn_backend_pid(const prt_conn *c)
{
    return PQbackendPID(c->pg);
}

/* Which of the pool's hosts the connection is on, 1-based. */
int prt_conn_endpoint(const prt_conn *c)
{
    return c->endpoint + 1;
}

const char *prt_conn_sqlstate(const prt_conn *c)
{
    return c->sqlstate;
}

/* Results are libpq's PGresult under an opaque name. */
#define R(r) ((const PGresult *)(const void *)(r))
int prt_result_ntuples(const prt_result *r) { return PQntuples(R(r)); }
int prt_result_nfields(const prt_result *r) { return PQnfields(R(r)); }
const char *prt_result_fname(const prt_result *r, int col) { return PQfname(R(r), col); }
const char *prt_result_value(const prt_result *r, int row, int col) { return PQgetvalue(R(r), row, col); }
int prt_result_isnull(const prt_result *r, int row, int col) { return PQgetisnull(R(r), row, col); }
int prt_result_length(const prt_result *r, int row, int col) { return PQgetlength(R(r), row, col); }
unsigned int prt_result_ftype(const prt_result *r, int col) { return PQftype(R(r), col); }
void prt_result_free(prt_result *r) { PQclear((PGresult *)(void *)r); }

long long prt_result_affected(const prt_result *r)
{
    const char *s = PQcmdTuples((PGresult *)(void *)r);
    return (s && *s) ? atoll(s) : -1;
}
