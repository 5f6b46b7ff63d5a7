/*
 * endpoint_sample.c -- the runtime's sampler of its servers.
 *
 * One thread per runtime, started with the runtime's first endpoint
 * (endpoint.c), looks at every server each server_sample_interval on a
 * connection of its own (outside every pool, kept between samples): its
 * role (pg_is_in_recovery()), and for a standby how far its replay is
 * behind.  lag_bytes is the primary's pg_current_wal_lsn() minus the
 * standby's pg_last_wal_replay_lsn(); lag_seconds is 0 when the standby
 * replayed all it received, else now() - pg_last_xact_replay_timestamp(),
 * so it does not grow while the primary is merely idle (or, when it has
 * replayed no commit since it started, how long the sampler has seen it
 * behind).  A server that
 * cannot be reached is down (endpoint.c's backoff), and its role unknown.
 * So facts are fresh however the pools use their connections, and a
 * server that comes back is seen within one interval.  Every wait is
 * bounded (SAMPLE_WAIT), so stopping never waits long; reading a fact
 * never waits for a sample.
 */
#include <stdlib.h>
#include <string.h>
#include "endpoint.h"

static const double SAMPLE_WAIT = 1.0; /* connect, then query: each bounded by this */

static const char SAMPLE_SQL[] =
    "select pg_is_in_recovery(),"
    " case when pg_is_in_recovery() then null else pg_current_wal_lsn() end,"
    " pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(),"
    " extract(epoch from now() - pg_last_xact_replay_timestamp())";

typedef struct look {
    int ok, standby;
    uint64_t current, received, replayed; /* LSNs; 0: none */
    double replay_age;                    /* seconds; < 0: none */
} look;

/* "X/Y" as a number; 0 for NULL. */
static uint64_t lsn(const PGresult *r, int col)
{
    unsigned hi = 0, lo = 0;
    if (PQgetisnull(r, 0, col) || sscanf(PQgetvalue(r, 0, col), "%X/%X", &hi, &lo) != 2)
        return 0;
    return (uint64_t)hi << 32 | lo;
}

/* One look at server x, on its probe connection (made or remade here). */
static look sample(endpoint *x)
{
    look l = { 0 };
    if (x->probe && PQstatus(x->probe) != CONNECTION_OK) {
        PQfinish(x->probe);
        x->probe = NULL;
    }
    if (!x->probe) {
        PGconn *pg = PQconnectStart(x->conninfo);
        if (!pg || prt__pq_connect_poll(pg, prt_now() + SAMPLE_WAIT) != PRT_OK) {
            PQfinish(pg);
            return l;
        }
        x->probe = pg;
    }
    PGresult *r = NULL;
    if (prt__pq_exec(x->probe, SAMPLE_SQL, prt_now() + SAMPLE_WAIT, &r) != PRT_OK || PQntuples(r) != 1) {
        PQclear(r);
        PQfinish(x->probe); /* a timed-out query leaves it busy: start afresh */
        x->probe = NULL;
        return l;
    }
    l.ok = 1;
    l.standby = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    l.current = lsn(r, 1);
    l.received = lsn(r, 2);
    l.replayed = lsn(r, 3);
    l.replay_age = PQgetisnull(r, 0, 4) ? -1 : atof(PQgetvalue(r, 0, 4));
    PQclear(r);
    return l;
}

/* Looks at every server, then sets each standby's lag against the
 * primary's WAL position (the first primary seen). */
static void sample_all(prt__eptab *t)
{
    int n = atomic_load(&t->n);
    look l[RT_ENDPOINTS];
    uint64_t primary = 0;
    for (int i = 0; i < n; i++) {
        endpoint *x = &t->ep[i];
        l[i] = sample(x);
        if (l[i].ok)
            prt__endpoint_set_role(x, l[i].standby ? PRT_ROLE_STANDBY : PRT_ROLE_PRIMARY);
        prt__endpoint_up(x, l[i].ok, 1, t);
        atomic_store(&x->sampled_us, now_us());
        if (l[i].ok && !l[i].standby && !primary)
            primary = l[i].current;
    }
    for (int i = 0; i < n; i++) {
        endpoint *x = &t->ep[i];
        int64_t bytes = !l[i].ok ? -1 : !l[i].standby ? 0
                      : primary && l[i].replayed ? (int64_t)(primary > l[i].replayed ? primary - l[i].replayed : 0) : -1;
        int behind = l[i].ok && l[i].standby && l[i].replayed < l[i].received;
        double now = prt_now();
        if (!behind)
            x->behind_since = 0;
        else if (x->behind_since == 0)
            x->behind_since = now;
        double age = !behind ? 0 : l[i].replay_age >= 0 ? l[i].replay_age : now - x->behind_since;
        atomic_store(&x->lag_bytes, bytes);
        atomic_store(&x->lag_us, (uint64_t)(age * 1e6));
    }
}

static void *prt__eptab_sampler(void *arg)
{
    prt__eptab *t = arg;
    prt__mu_lock(&t->mu, PRT__RANK_SAMPLER);
    while (!t->stopping) {
        prt__mu_unlock(&t->mu, PRT__RANK_SAMPLER);
        sample_all(t);
        prt__mu_lock(&t->mu, PRT__RANK_SAMPLER);
        struct timespec ts;
        prt__abstime(prt_now() + t->interval, &ts);
        if (!t->stopping)
            pthread_cond_timedwait(&t->cond, &t->mu, &ts);
    }
    prt__mu_unlock(&t->mu, PRT__RANK_SAMPLER);
    return NULL;
}

/* Starts the sampler of table t once it has a server (pool.c, when a pool
 * over several servers is made; rt->mu held, so once). */
void prt__eptab_start(prt__eptab *t)
{
    if (!t->has_thread && t->interval > 0 && atomic_load(&t->n) > 0 &&
        prt__thread_create(&t->thread, prt__eptab_sampler, t) == 0)
        t->has_thread = 1;
}

/* Stops the sampler (the runtime is being freed); the facts stay as they
 * are for pools that outlive it.  No lock held. */
void prt__eptab_stop(prt__eptab *t)
{
    prt__thread_stop(t->thread, t->has_thread, &t->mu, PRT__RANK_SAMPLER, &t->cond, &t->stopping);
    t->has_thread = 0;
    for (int i = 0; i < atomic_load(&t->n); i++) {
        PQfinish(t->ep[i].probe);
        t->ep[i].probe = NULL;
    }
}
