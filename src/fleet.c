/*
 * fleet.c -- one connection budget for many processes, with PostgreSQL as
 * the coordination point.
 *
 * A runtime given `fleet = NAME` tags every connection it opens with
 * application_name = poolrt:NAME:HOST:PID (a user's own application_name
 * follows as a suffix), so any member can count the fleet's backends, and
 * its members, in pg_stat_activity.  A sampler thread of its own reads the
 * server every server_sample_interval seconds -- every 0.1 s until the
 * first sample succeeds, and at once when a connect was refused as "too
 * many clients" -- on a connection of its own, opened with the conninfo of
 * pool "default" if there is one, else of the first pool, and kept between
 * samples (pools are offered to it as they are made: prt__fleet_pool_made).
 * That connection is outside the pools' slots and the budget, so
 * a sample never queues behind callers however small the budget is (a
 * policy counts it: fair_share.lua gives the pools its share minus one).
 * After each sample it reports upward (capacity.h's one callback): pools.c
 * asks the policy's `budget(server, rt)` hook for this runtime's share and
 * applies it as the cap (prt__pools_set_cap: a smaller cap closes idle
 * connections now and in-use ones as they come back, never failing a
 * query).  This file is a capacity provider: it samples and reports, and
 * calls no hook and no pool.  The sampler is not the timer thread, so a slow server never
 * delays the reap cycle; every wait of a sample (connect, query) is
 * bounded by SAMPLE_WAIT, so prt_runtime_free never waits long for it.
 *
 * When the server cannot be sampled the last budget stays; the first
 * failure and the recovery are logged once each.  While budgets converge
 * a member may still find the server full: such a refused connect does not
 * fail the caller (pools.c's prt__pools_server_full): the cap drops to
 * what the runtime holds and the caller waits its turn like any caller
 * blocked by the cap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

enum { FLEET_NAME_MAX = 32, APP_NAME_MAX = 63 /* PostgreSQL's NAMEDATALEN - 1 */ };
static const double SAMPLE_WAIT = 1.0;  /* connect, then query: each bounded by this */
static const double FIRST_RETRY = 0.1;  /* until the first sample succeeds */

struct prt__fleet {
    char *name;               /* immutable */
    char prefix[2 * APP_NAME_MAX]; /* "poolrt:NAME:", immutable */
    char member[2 * APP_NAME_MAX]; /* "poolrt:NAME:HOST:PID" (<= APP_NAME_MAX), immutable */
    pthread_t thread;
    int has_thread;           /* immutable once the runtime is shared */
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* wakes the sampler: stop, or an early sample */
    /* Protected by mu. */
    int stopping, resample;
    prt_server_view server;   /* the last good sample, in stats (sampled_at 0: none yet) */
    prt_server_view fresh;    /* the same, set before the budget hook sees it (prt__fleet_view) */
    double sampled_unix;
    int failing;              /* the last attempt failed (logged once) */
    uint64_t samples, errors;
    /* The sampler thread's alone (and prt__fleet_stop's after joining it). */
    prt_pool *pool;           /* mu: a reference to the pool whose conninfo it samples with */
    prt_conn *conn;           /* its own connection, outside the pools' slots */
    prt_pool *conn_pool;      /* a reference: the pool conn was opened for */
    /* Lock-free. */
    atomic_uint_fast64_t server_full;
};

/* One query answers the whole server view.  $1 is the fleet's prefix, $2
 * this process's member name; left() rather than LIKE so that '_' and '%'
 * in names are literal.  Roles without pg_read_all_stats still see other
 * sessions' application_name and backend_type. */
static const char SAMPLE_SQL[] =
    "select current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int"
    "   + coalesce(current_setting('reserved_connections', true)::int, 0),"
    " count(*) filter (where client),"
    " count(distinct split_part(application_name, ':', 3) || ':' || split_part(application_name, ':', 4))"
    "   filter (where fleet),"
    " count(*) filter (where fleet),"
    " count(*) filter (where fleet and (application_name = $2 or left(application_name, length($2) + 1) = $2 || ':'))"
    " from (select application_name, backend_type = 'client backend' as client,"
    "   backend_type = 'client backend' and left(application_name, length($1)) = $1 as fleet"
    "   from pg_stat_activity) a";

/* Checks the fleet options before anything is made.  Returns 0, or
 * PRT_EINVAL with err naming the problem. */
int prt__fleet_check(const prt_runtime_opts *o, char *err, size_t errlen)
{
    if (!(o->server_sample_interval > 0) || o->server_sample_interval > 86400) {
        prt__errf(err, errlen, "runtime: server_sample_interval must be in (0, 86400] seconds");
        return PRT_EINVAL;
    }
    if (!o->fleet)
        return PRT_OK;
    size_t n = strlen(o->fleet);
    int bad = n == 0 || n > FLEET_NAME_MAX;
    for (const char *s = o->fleet; *s && !bad; s++)
        bad = *s == ':' || *s < 32 || *s > 126;
    if (bad) {
        prt__errf(err, errlen, "runtime: fleet \"%.40s\" must be 1..%d printable ASCII characters without ':' "
                  "(it goes into application_name poolrt:NAME:HOST:PID, %d bytes at most)",
                  o->fleet, FLEET_NAME_MAX, APP_NAME_MAX);
        return PRT_EINVAL;
    }
    return PRT_OK;
}

/* poolrt:NAME:HOST:PID within APP_NAME_MAX: the host is cut at its first
 * dot and truncated to what is left (the name's length is checked). */
static void member_name(struct prt__fleet *f)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "unknown");
    host[strcspn(host, ".:")] = '\0';
    char pid[16];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    snprintf(f->prefix, sizeof f->prefix, "poolrt:%s:", f->name);
    size_t n = strlen(f->prefix), room = APP_NAME_MAX - n - 1 - strlen(pid); /* > 0: the name is <= 32 */
    size_t h = strlen(host) < room ? strlen(host) : room;
    memcpy(f->member, f->prefix, n);
    memcpy(f->member + n, host, h);
    f->member[n + h] = ':';
    memcpy(f->member + n + h + 1, pid, strlen(pid) + 1);
}


/* The conninfo a pool of rt connects with: as given, or for a fleet
 * runtime the same options (a URI is parsed too) with application_name
 * poolrt:NAME:HOST:PID, followed by ":" and the user's own one (from the
 * conninfo or PGAPPNAME) when there is one; the server keeps the first 63
 * bytes.  Returns a new string the caller frees; NULL when out of memory.
 * A conninfo libpq cannot parse is returned as given: connecting reports
 * why. */
char *prt__fleet_conninfo(prt_runtime *rt, const char *conninfo)
{
    PQconninfoOption *opts = NULL;
    char *msg = NULL;
    if (rt && rt->fleet)
        opts = PQconninfoParse(conninfo, &msg);
    PQfreemem(msg);
    if (!opts)
        return strdup(conninfo);
    const char *theirs = getenv("PGAPPNAME");
    size_t need = 1;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "application_name") == 0)
            theirs = o->val;
        else
            need += strlen(o->keyword) + 2 * strlen(o->val) + 4;
    }
    char app[256];
    snprintf(app, sizeof app, "%s%s%s", rt->fleet->member, theirs && *theirs ? ":" : "", theirs ? theirs : "");
    need += sizeof "application_name" + 2 * strlen(app) + 4;
    char *out = malloc(need), *w = out;
    if (out) {
        *w = '\0';
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (o->val && strcmp(o->keyword, "application_name") != 0)
                w = prt__put_kv(w, o->keyword, o->val);
        prt__put_kv(w, "application_name", app);
    }
    PQconninfoFree(opts);
    return out;
}

/* A pool of rt was made (registry.c): the sampler connects with the
 * conninfo of pool "default" if there is one, else of the first pool made,
 * or of a later one once the pool it has was evicted.  Keeps a reference.
 * No lock held. */
void prt__fleet_pool_made(prt_runtime *rt, prt_pool *p)
{
    struct prt__fleet *f = rt->fleet;
    if (!f)
        return;
    prt__mu_lock(&f->mu, PRT__RANK_FLEET);
    prt_pool *old = f->pool;
    int closed = 0;
    if (old) {
        prt__lock(old);
        closed = old->closed != PRT_POOL_OPEN;
        prt__unlock(old);
    }
    if (!old || closed || (strcmp(p->name, "default") == 0 && strcmp(old->name, "default") != 0)) {
        prt__pool_ref(p);
        f->pool = p;
    } else {
        old = NULL;
    }
    prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
    prt_pool_unref(old);
}

/* The pool whose conninfo the sampler connects with (a new reference), or
 * NULL when none was made yet. */
static prt_pool *sample_pool(struct prt__fleet *f)
{
    prt__mu_lock(&f->mu, PRT__RANK_FLEET);
    prt_pool *p = f->pool;
    if (p)
        prt__pool_ref(p);
    prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
    return p;
}

/* Drops the sampler's connection (and its pool's reference). */
static void sample_conn_close(struct prt__fleet *f)
{
    prt__conn_close(f->conn);
    prt_pool_unref(f->conn_pool);
    f->conn = NULL;
    f->conn_pool = NULL;
}

/* The sampler's own connection, opened with a pool's conninfo (so it
 * carries the fleet's application_name) but outside every pool's slots:
 * a sample never queues behind callers, however small the budget.
 * Returns 0, 1 when there is no pool yet, or a negative PRT_E* with err. */
static int sample_conn(prt_runtime *rt, char *err, size_t errlen)
{
    struct prt__fleet *f = rt->fleet;
    if (f->conn && !prt__conn_alive(f->conn))
        sample_conn_close(f);
    if (f->conn)
        return PRT_OK;
    if (!(f->conn_pool = sample_pool(f)))
        return 1;
    int rc = prt__conn_open(f->conn_pool, prt_now() + SAMPLE_WAIT, -1, &f->conn, err, errlen);
    if (rc != PRT_OK) {
        f->conn = NULL;
        sample_conn_close(f);
    }
    return rc;
}

/* Reads the server view.  Returns 0 with *sv filled, 1 when there is
 * nothing to sample on yet (no pool: not a failure), or a negative PRT_E*
 * with err.  Sampler thread only. */
static int sample_once(prt_runtime *rt, prt_server_view *sv, char *err, size_t errlen)
{
    struct prt__fleet *f = rt->fleet;
    int rc = sample_conn(rt, err, errlen);
    if (rc != PRT_OK)
        return rc;
    PGresult *r = NULL;
    const char *params[2] = { f->prefix, f->member };
    rc = prt__conn_exec(f->conn, SAMPLE_SQL, 2, params, prt_now() + SAMPLE_WAIT, &r, err, errlen);
    if (rc == PRT_EBROKEN)
        sample_conn_close(f);
    if (rc != PRT_OK)
        return rc;
    int v[6];
    for (int i = 0; i < 6; i++)
        v[i] = PQntuples(r) == 1 && !PQgetisnull(r, 0, i) ? atoi(PQgetvalue(r, 0, i)) : -1;
    PQclear(r);
    *sv = (prt_server_view){ v[0], v[1], v[2], v[3], v[4], v[5], prt_now() };
    if (v[0] <= 0 || v[1] < 0 || v[2] < 0) {
        prt__errf(err, errlen, "fleet \"%s\": the sample query returned no usable row", f->name);
        return PRT_EQUERY;
    }
    return PRT_OK;
}

/* The last good sample into *sv: 1, or 0 when there is none (no fleet, or
 * no sample yet).  No lock held. */
int prt__fleet_view(prt_runtime *rt, prt_server_view *sv)
{
    struct prt__fleet *f = rt->fleet;
    if (!f)
        return 0;
    prt__mu_lock(&f->mu, PRT__RANK_FLEET);
    *sv = f->fresh;
    prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
    return sv->sampled_at > 0;
}

/* Asks the sampler for an early sample (a reload, a refused connect).
 * Returns 0 when rt has no fleet.  No lock held. */
int prt__fleet_resample(prt_runtime *rt)
{
    struct prt__fleet *f = rt->fleet;
    if (!f)
        return 0;
    prt__mu_lock(&f->mu, PRT__RANK_FLEET);
    f->resample = 1;
    pthread_cond_signal(&f->cond);
    prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
    return 1;
}

/* Records one attempt's outcome and logs the first failure and the
 * recovery.  Returns when the next sample is due.  f->mu held. */
static double record(prt_runtime *rt, int rc, const prt_server_view *sv, const char *err)
{
    struct prt__fleet *f = rt->fleet;
    if (rc == PRT_OK) {
        f->server = *sv;
        f->sampled_unix = (double)time(NULL);
        f->samples++;
        if (f->failing)
            prt__logf(PRT_LOG_INFO, "fleet \"%s\": sampling the server works again; budget %d", f->name,
                      atomic_load(&rt->cap));
        f->failing = 0;
    } else if (rc < 0) {
        f->errors++;
        if (!f->failing && !f->stopping)
            prt__logf(PRT_LOG_WARN, "fleet \"%s\": cannot sample the server, the budget stays at %d "
                      "(logged once until it recovers): %s", f->name, atomic_load(&rt->cap), err);
        f->failing = 1;
    }
    return prt_now() + (f->server.sampled_at > 0 ? rt->opts.server_sample_interval : FIRST_RETRY);
}

/* The sampler thread: samples when due (or asked early), applies the
 * budget, sleeps on f->cond until the next one or until stopped. */
static void *sampler_main(void *arg)
{
    prt_runtime *rt = arg;
    struct prt__fleet *f = rt->fleet;
    double next = prt_now();
    prt__mu_lock(&f->mu, PRT__RANK_FLEET);
    while (!f->stopping) {
        if (!f->resample && prt_now() < next) {
            struct timespec ts;
            prt__abstime(next, &ts);
            pthread_cond_timedwait(&f->cond, &f->mu, &ts);
            continue;
        }
        f->resample = 0;
        prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
        prt_server_view sv;
        char err[PRT__ERRLEN] = "";
        int rc = sample_once(rt, &sv, err, sizeof err);
        if (rc == PRT_OK) { /* the budget hook's turn (pools.c), before the sample shows in stats */
            prt__mu_lock(&f->mu, PRT__RANK_FLEET);
            f->fresh = sv;
            prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
            prt__cap_report(rt, PRT__CAP_SAMPLED);
        }
        prt__mu_lock(&f->mu, PRT__RANK_FLEET);
        next = record(rt, rc, &sv, err);
    }
    prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
    return NULL;
}

/* Starts the sampler of a fleet runtime.  Called by prt_runtime_new
 * before the runtime is shared; `o` is the caller's options
 * (rt->opts.fleet then points at rt's own copy).  Returns 0, or a
 * negative PRT_E* with err (the caller frees rt). */
int prt__fleet_start(prt_runtime *rt, const prt_runtime_opts *o, char *err, size_t errlen)
{
    rt->opts.fleet = NULL;
    if (!o->fleet)
        return PRT_OK;
    struct prt__fleet *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(o->fleet))) {
        free(f);
        prt__errf(err, errlen, "runtime: out of memory");
        return PRT_ENOMEM;
    }
    member_name(f);
    pthread_mutex_init(&f->mu, NULL);
    prt__cond_init(&f->cond);
    rt->fleet = f;
    rt->opts.fleet = f->name;
    if (prt__thread_create(&f->thread, sampler_main, rt) != 0) {
        prt__errf(err, errlen, "runtime: could not start the fleet's sampler thread");
        return PRT_ETHREAD;
    }
    f->has_thread = 1;
    return PRT_OK;
}

/* Stops the sampler and frees the fleet state.  A sample in flight ends
 * within its bounded waits (SAMPLE_WAIT each, plus libpq's cancel).  No
 * lock held; nothing else uses rt->fleet any more. */
void prt__fleet_stop(prt_runtime *rt)
{
    struct prt__fleet *f = rt->fleet;
    if (!f)
        return;
    prt__thread_stop(f->thread, f->has_thread, &f->mu, PRT__RANK_FLEET, &f->cond, &f->stopping);
    sample_conn_close(f);
    prt_pool_unref(f->pool);
    rt->fleet = NULL;
    rt->opts.fleet = NULL;
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    free(f->name);
    free(f);
}

/* Whether err is a connect of a fleet runtime refused because the server
 * is full: SQLSTATE 53300 ("sorry, too many clients already", "remaining
 * connection slots are reserved ..." in English), which conn.c's
 * pq_error_as puts in the text in any language of the server's. */
int prt__fleet_refused(prt_runtime *rt, const char *err)
{
    return rt && rt->fleet && err && strstr(err, "(SQLSTATE 53300)");
}

/* A connect of rt was refused as too many clients: counted, and the
 * sampler samples early (pools.c lowers the cap meanwhile).  No lock
 * held. */
void prt__fleet_note_full(prt_runtime *rt)
{
    atomic_fetch_add(&rt->fleet->server_full, 1);
    prt__fleet_resample(rt);
}

/* The fleet fields of prt_runtime_stats: the last server sample.  No lock
 * held. */
void prt__fleet_stats(prt_runtime *rt, prt_runtime_stats *out)
{
    struct prt__fleet *f = rt->fleet;
    if (!f)
        return;
    prt__mu_lock(&f->mu, PRT__RANK_FLEET);
    const prt_server_view *s = &f->server;
    out->sampled_at = s->sampled_at;
    out->sampled_unix = f->sampled_unix;
    out->server_max_connections = s->max_connections, out->server_reserved = s->reserved;
    out->server_backends = s->backends, out->fleet_members = s->fleet_members;
    out->fleet_backends = s->fleet_backends, out->own_backends = s->own_backends;
    out->samples_total = f->samples, out->sample_errors_total = f->errors;
    prt__mu_unlock(&f->mu, PRT__RANK_FLEET);
    out->server_full_total = atomic_load(&f->server_full);
}
