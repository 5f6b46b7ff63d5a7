/*
 * endpoint.c -- the servers of a runtime, and a pool spread over several.
 *
 * A conninfo may name several hosts (`host=a,b port=5432,5433`): a primary
 * and its standbys, say.  libpq 15 tries them in order, so it would choose
 * the server; here poolrt chooses, and honours target_session_attrs with
 * libpq's words: any, read-write and primary (want a primary), read-only
 * and standby (want a standby), prefer-standby.
 *
 * Facts.  Each server (host:port) of a runtime is one prt__endpoint in the
 * runtime's table, shared by every pool that names it, and its facts are
 * atomics: `role` (primary, standby, unknown), as the server said at the
 * last connect (in_hot_standby, or libpq's refusal for the wrong role);
 * `up` and `failures` (consecutive failed connects), with `retry_at`, a
 * backoff doubling from 1 s to 30 s before which a down server is tried
 * last; open connections.  A bad sign -- a lost connection, SQLSTATE 25006
 * (read-only transaction) -- makes the role unknown at once.
 *
 * Choice.  Each new connection goes to the best tier, and within it to
 * the endpoint with the fewest of the pool's connections: the role wanted
 * (a standby for prefer-standby), then unknown, then the other role, then
 * servers down and not yet due for a retry.  A known role is never ruled
 * out, since it may be stale (a standby promoted): libpq still checks
 * target_session_attrs at each connect, and the answer updates the fact.
 * A connection is retired on release when its endpoint no longer fits
 * (prt__endpoints_fits): the wrong role for the pool, or, for
 * prefer-standby, a primary or unknown server while a better one may be
 * had -- so reads come back to the standbys when one returns.  Which open
 * connection serves a query is the `pick` policy's choice.
 *
 * The table is made with the runtime and shared by reference with the
 * pools' endpoint lists (a pool may outlive its runtime); endpoints are
 * added under rt->mu (pools are made under it) and never removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "endpoint.h"

/* A runtime's table; its sampler looks at each server every `interval`
 * seconds once the first is added. */
prt__eptab *prt__eptab_new(double interval)
{
    prt__eptab *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    t->interval = interval;
    pthread_mutex_init(&t->mu, NULL);
    prt__cond_init(&t->cond);
    return t;
}

void prt__eptab_unref(prt__eptab *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    for (int i = 0; i < atomic_load(&t->n); i++)
        free(t->ep[i].conninfo);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Appends key='value' (libpq's quoting) at w, after a space unless w is
 * empty; returns the new end.  The caller makes the room. */
char *prt__put_kv(char *w, const char *key, const char *val)
{
    w += sprintf(w, "%s%s='", *w ? " " : "", key);
    for (; *val; val++) {
        if (*val == '\'' || *val == '\\')
            *w++ = '\\';
        *w++ = *val;
    }
    *w++ = '\'';
    *w = '\0';
    return w;
}

/* The conninfo the sampler reaches endpoint `host`:`port` with: the
 * pool's options but the hosts, its role wish and its timeout (the
 * sampler bounds its own waits).  NULL when out of memory. */
static char *probe_conninfo(const PQconninfoOption *opts, const char *host, const char *port)
{
    static const char *const skip[] = { "host", "hostaddr", "port", "target_session_attrs", "connect_timeout" };
    size_t need = 64 + 2 * (strlen(host) + (port ? strlen(port) : 0));
    for (const PQconninfoOption *o = opts; o->keyword; o++)
        need += o->val ? strlen(o->keyword) + 2 * strlen(o->val) + 4 : 0;
    char *out = malloc(need), *w = out;
    if (!out)
        return NULL;
    *w = '\0';
    w = prt__put_kv(w, "host", host);
    if (port)
        w = prt__put_kv(w, "port", port);
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        int skipped = !o->val;
        for (size_t k = 0; !skipped && k < sizeof skip / sizeof skip[0]; k++)
            skipped = strcmp(o->keyword, skip[k]) == 0;
        if (!skipped)
            w = prt__put_kv(w, o->keyword, o->val);
    }
    return out;
}

/* The endpoint named host:port, added if new (with the sampler's conninfo
 * from the pool's options);
 * -1 when the table is full or out of memory.  rt->mu held (the only
 * adder). */
static int endpoint_id(prt__eptab *t, const PQconninfoOption *opts, const char *host, const char *port)
{
    char name[128];
    snprintf(name, sizeof name, "%s:%s", host, port && *port ? port : "5432");
    int n = atomic_load(&t->n);
    for (int i = 0; i < n; i++)
        if (strcmp(t->ep[i].name, name) == 0)
            return i;
    if (n == RT_ENDPOINTS || !(t->ep[n].conninfo = probe_conninfo(opts, host, port)))
        return -1;
    memcpy(t->ep[n].name, name, sizeof name);
    atomic_init(&t->ep[n].lag_bytes, -1);
    atomic_store(&t->n, n + 1); /* publishes the name and conninfo */
    return n;
}

int prt__runtime_endpoints(prt__eptab *t, prt_endpoint_stats *out, int max)
{
    int n = t ? atomic_load(&t->n) : 0;
    for (int i = 0; i < n && i < max; i++) {
        endpoint *e = &t->ep[i];
        prt_endpoint_stats *s = &out[i];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", e->name);
        s->role = atomic_load(&e->role);
        s->up = atomic_load(&e->up);
        s->failures = atomic_load(&e->failures);
        s->retry_at = s->up ? 0 : (double)atomic_load(&e->retry_us) / 1e6;
        s->open = atomic_load(&e->open);
        s->connects_total = atomic_load(&e->connects);
        s->connect_failures_total = atomic_load(&e->connect_failures);
        s->role_changes_total = atomic_load(&e->role_changes);
        s->sampled_at = (double)atomic_load(&e->sampled_us) / 1e6;
        s->lag_bytes = atomic_load(&e->lag_bytes);
        s->lag_seconds = (double)atomic_load(&e->lag_us) / 1e6;
    }
    return n;
}

static int split(char *list, char **out, int max)
{
    int n = 0;
    for (char *s = list; s && n < max;) {
        out[n++] = s;
        s = strchr(s, ',');
        if (s)
            *s++ = '\0';
    }
    return n;
}

void prt__endpoints_free(prt__endpoints *e)
{
    if (!e)
        return;
    PQconninfoFree(e->opts);
    prt__eptab_unref(e->tab);
    free(e->hosts);
    free(e->ports);
    free(e->keywords);
    free(e->values);
    free(e);
}

static int want_of(const char *attrs)
{
    if (!attrs || strcmp(attrs, "any") == 0)
        return WANT_ANY;
    if (strcmp(attrs, "read-write") == 0 || strcmp(attrs, "primary") == 0)
        return WANT_PRIMARY;
    if (strcmp(attrs, "read-only") == 0 || strcmp(attrs, "standby") == 0)
        return WANT_STANDBY;
    return strcmp(attrs, "prefer-standby") == 0 ? PREFER_STANDBY : WANT_ANY;
}

/* Returns the endpoints of a conninfo with several hosts, entered in the
 * runtime's table t (NULL: none), or NULL for a single
 * host (plain PQconnectStart serves then) or when it cannot be parsed (the
 * connect reports why).  rt->mu held. */
prt__endpoints *prt__endpoints_new(const char *conninfo, prt__eptab *t)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    PQfreemem(errmsg);
    if (!opts)
        return NULL;
    const char *host = NULL, *port = NULL, *attrs = NULL, *timeout = NULL;
    int nkw = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        nkw++;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "target_session_attrs") == 0)
            attrs = o->val;
        else if (strcmp(o->keyword, "connect_timeout") == 0)
            timeout = o->val;
    }
    prt__endpoints *e = NULL;
    if (!host || !strchr(host, ',') || !(e = calloc(1, sizeof *e)))
        goto single;
    e->opts = opts;
    e->hosts = strdup(host);
    e->ports = port ? strdup(port) : NULL;
    e->want = want_of(attrs);
    e->connect_timeout = timeout ? atof(timeout) : 0;
    if (e->connect_timeout > 0 && e->connect_timeout < 2)
        e->connect_timeout = 2; /* libpq's own minimum */
    char *hosts[PRT__MAX_ENDPOINTS], *ports[PRT__MAX_ENDPOINTS];
    e->n = split(e->hosts, hosts, PRT__MAX_ENDPOINTS);
    int np = split(e->ports, ports, PRT__MAX_ENDPOINTS);
    e->nkw = nkw;
    e->keywords = calloc((size_t)nkw + 1, sizeof *e->keywords);
    e->values = calloc((size_t)(nkw + 1) * (size_t)e->n, sizeof *e->values);
    int ok = e->hosts && e->keywords && e->values && (np == 0 || np == 1 || np == e->n);
    for (int i = 0; ok && t && i < e->n; i++)
        ok = (e->id[i] = endpoint_id(t, opts, hosts[i], np ? ports[np == 1 ? 0 : i] : NULL)) >= 0;
    if (!ok) {
        e->opts = NULL;
        prt__endpoints_free(e);
        goto single;
    }
    if (t) {
        atomic_fetch_add(&t->refs, 1);
        e->tab = t;
    }
    for (int i = 0; i < e->n; i++) {
        int k = 0;
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val)
                continue;
            e->keywords[k] = o->keyword;
            const char **v = &e->values[i * (nkw + 1) + k];
            *v = o->val;
            if (strcmp(o->keyword, "host") == 0)
                *v = hosts[i];
            else if (strcmp(o->keyword, "port") == 0 && np)
                *v = ports[np == 1 ? 0 : i];
            k++;
        }
    }
    return e;
single:
    PQconninfoFree(opts);
    return NULL;
}

int prt__endpoints_count(const prt__endpoints *e)
{
    return e ? e->n : 1;
}

static endpoint *ep_of(const prt__endpoints *e, int i)
{
    return e->tab ? &e->tab->ep[e->id[i]] : NULL;
}

/* Endpoint i's tier for the pool (TIER_*; lower is better) at `now_us`. */
/* Whether x is banned by the policy's circuit breaker at `now_us`: after
 * `ban.after` consecutive failed connects until retry_us, then half-open
 * (not banned) until its one trial connect is under way. */
static int banned(const prt__eptab *t, const endpoint *x, uint64_t now_us)
{
    int after = atomic_load_explicit(&t->ban_after, memory_order_relaxed);
    if (after <= 0 || atomic_load_explicit(&x->failures, memory_order_relaxed) < after)
        return 0;
    return now_us < atomic_load_explicit(&x->retry_us, memory_order_relaxed) ||
           atomic_load_explicit(&x->trial, memory_order_relaxed);
}

static int tier(const prt__endpoints *e, int i, uint64_t now_us)
{
    const endpoint *x = ep_of(e, i);
    if (!x)
        return TIER_BEST;
    if (banned(e->tab, x, now_us))
        return TIER_BANNED;
    if (!atomic_load_explicit(&x->up, memory_order_relaxed) &&
        atomic_load_explicit(&x->connects, memory_order_relaxed) > 0 &&
        now_us < atomic_load_explicit(&x->retry_us, memory_order_relaxed))
        return TIER_DOWN;
    if (e->want == WANT_ANY)
        return TIER_BEST;
    int role = atomic_load_explicit(&x->role, memory_order_relaxed);
    if (role == PRT_ROLE_UNKNOWN)
        return TIER_UNKNOWN;
    int max_lag_ms = atomic_load_explicit(&e->tab->max_lag_ms, memory_order_relaxed);
    if (role == PRT_ROLE_STANDBY && max_lag_ms > 0 &&
        atomic_load_explicit(&x->lag_us, memory_order_relaxed) > (uint64_t)max_lag_ms * 1000)
        return TIER_LAGGING;
    int best = e->want == WANT_PRIMARY ? PRT_ROLE_PRIMARY : PRT_ROLE_STANDBY;
    return role == best ? TIER_BEST : TIER_OTHER;
}

/* The pool's endpoints in the order to try them: by tier, then fewest of
 * the pool's open connections; banned ones left out.  Returns how many. */
int prt__endpoints_order(prt__endpoints *e, int *order)
{
    int t[PRT__MAX_ENDPOINTS], o[PRT__MAX_ENDPOINTS], n = 0;
    uint64_t now = now_us();
    for (int i = 0; i < e->n; i++) {
        t[i] = tier(e, i, now);
        o[i] = atomic_load(&e->open[i]);
        if (t[i] == TIER_BANNED)
            continue;
        int k = n++;
        while (k > 0 && (t[order[k - 1]] > t[i] || (t[order[k - 1]] == t[i] && o[order[k - 1]] > o[i]))) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    return n;
}

/* The endpoint to try first (0 when every one is banned). */
int prt__endpoints_choose(prt__endpoints *e)
{
    int order[PRT__MAX_ENDPOINTS];
    return prt__endpoints_order(e, order) > 0 ? order[0] : 0;
}

/* Whether a connect to endpoint i may start now: always, but for an
 * endpoint whose ban just ended, only the one trial (this call takes it;
 * the outcome, prt__endpoints_connected, gives it back). */
int prt__endpoints_may_try(prt__endpoints *e, int i)
{
    endpoint *x = ep_of(e, i);
    if (!x)
        return 1;
    int after = atomic_load(&e->tab->ban_after);
    if (after <= 0 || atomic_load(&x->failures) < after)
        return 1;
    int idle = 0;
    return now_us() >= atomic_load(&x->retry_us) && atomic_compare_exchange_strong(&x->trial, &idle, 1);
}

/* The endpoint hook's view of the pool's servers; returns how many. */
int prt__endpoints_views(const prt__endpoints *e, prt_endpoint_view *v)
{
    uint64_t now = now_us();
    for (int i = 0; i < e->n; i++) {
        const endpoint *x = ep_of(e, i);
        int t = tier(e, i, now), role = x ? atomic_load(&x->role) : PRT_ROLE_UNKNOWN;
        int fits = role == PRT_ROLE_UNKNOWN || e->want == WANT_ANY || e->want == PREFER_STANDBY ||
                   role == (e->want == WANT_PRIMARY ? PRT_ROLE_PRIMARY : PRT_ROLE_STANDBY);
        v[i] = (prt_endpoint_view){
            .role_ = role, .up_ = x ? atomic_load(&x->up) : 1, .banned_ = t == TIER_BANNED,
            .allowed_ = t != TIER_BANNED && fits,
            .preferred_ = t != TIER_BANNED && (e->want == PREFER_STANDBY ? role == PRT_ROLE_STANDBY : t == TIER_BEST),
            .failures = x ? atomic_load(&x->failures) : 0, .open = x ? atomic_load(&x->open) : 0,
            .pool_open = atomic_load(&e->open[i]),
            .lag_bytes = x ? (double)atomic_load(&x->lag_bytes) : -1,
            .lag_seconds = x ? (double)atomic_load(&x->lag_us) / 1e6 : 0,
            .sampled_at = x ? (double)atomic_load(&x->sampled_us) / 1e6 : 0,
        };
        snprintf(v[i].name_, sizeof v[i].name_, "%s", x ? x->name : "?");
    }
    return e->n;
}

/* The live policy's circuit breaker (its `ban` table; after 0: none) and
 * its `max_lag` (seconds; 0: none). */
void prt__eptab_set_policy(prt__eptab *t, const prt__policy *pol)
{
    atomic_store(&t->ban_after, pol->ban_after);
    atomic_store(&t->ban_first_ms, (int)(pol->ban_first * 1000));
    atomic_store(&t->ban_max_ms, (int)(pol->ban_max * 1000));
    atomic_store(&t->max_lag_ms, (int)(pol->max_lag * 1000));
}

/* Whether a better server is worth giving up a connection for: one that
 * is up, or never tried yet.  A server that failed and is merely due for
 * its retry is tried by new connections, not by retiring working ones
 * (which, found by the simulator, closed every read connection released
 * while a down standby stayed due). */
static int may_be_had(const endpoint *x)
{
    return atomic_load_explicit(&x->up, memory_order_relaxed) ||
           atomic_load_explicit(&x->connects, memory_order_relaxed) == 0;
}

/* Whether a connection on endpoint i may go back to the pool: its server's
 * role fits (not the wrong one), and for prefer-standby no better endpoint
 * may be had.  No lock needed. */
int prt__endpoints_fits(const prt__endpoints *e, int i, double now_s)
{
    if (e->want == WANT_ANY || !e->tab)
        return 1;
    if (e->want != PREFER_STANDBY) /* only the wrong role is out: no clock, no other server */
        return atomic_load_explicit(&ep_of(e, i)->role, memory_order_relaxed) !=
               (e->want == WANT_PRIMARY ? PRT_ROLE_STANDBY : PRT_ROLE_PRIMARY);
    uint64_t now = (uint64_t)(now_s * 1e6);
    int mine = tier(e, i, now);
    for (int j = 0; mine != TIER_BEST && j < e->n; j++)
        if (j != i && e->id[j] != e->id[i] && tier(e, j, now) < mine && may_be_had(ep_of(e, j)))
            return 0;
    return 1;
}

const atomic_int *prt__endpoints_role_of(const prt__endpoints *e, int i, int *bad_role)
{
    static const atomic_int unknown = PRT_ROLE_UNKNOWN; /* endpoints without a table keep no facts */
    const endpoint *x = ep_of(e, i);
    *bad_role = !x || e->want == WANT_ANY ? PRT__EP_NONE : e->want == WANT_PRIMARY ? PRT_ROLE_STANDBY
              : e->want == WANT_STANDBY ? PRT_ROLE_PRIMARY : PRT__EP_ASK;
    return x ? &x->role : &unknown;
}

PGconn *prt__endpoints_start(prt__endpoints *e, int i)
{
    endpoint *x = ep_of(e, i);
    if (x)
        atomic_fetch_add(&x->connects, 1);
    return PQconnectStartParams(e->keywords, &e->values[i * (e->nkw + 1)], 0);
}

double prt__endpoints_connect_timeout(const prt__endpoints *e)
{
    return e ? e->connect_timeout : 0;
}

void prt__endpoint_set_role(endpoint *x, int role)
{
    atomic_store(&x->role, role);
    if (role == PRT_ROLE_UNKNOWN)
        return;
    int was = atomic_exchange(&x->known, role);
    if (was != PRT_ROLE_UNKNOWN && was != role)
        atomic_fetch_add(&x->role_changes, 1);
}

/* A pool's connect (or, `sampled`, the sampler's look) reached server x
 * (up) or not.  Success clears the failures, a ban and its trial.  A
 * failed connect makes the role unknown and counts: without a ban the
 * server is tried last until retry_at, a backoff doubling from
 * RETRY_FIRST to RETRY_MAX; with the policy's ban, after `after`
 * consecutive failures it is banned for `first` seconds, doubling up to
 * `max`.  A failed sample only marks it down. */
void prt__endpoint_up(endpoint *x, int up, int sampled, const prt__eptab *t)
{
    if (up) {
        atomic_store(&x->failures, 0);
        atomic_store(&x->up, 1);
        atomic_store(&x->trial, 0);
        return;
    }
    prt__endpoint_set_role(x, PRT_ROLE_UNKNOWN);
    atomic_store(&x->up, 0);
    if (sampled)
        return;
    atomic_fetch_add(&x->connect_failures, 1);
    int f = atomic_fetch_add(&x->failures, 1) + 1, after = atomic_load(&t->ban_after);
    double wait = after > 0 ? atomic_load(&t->ban_first_ms) / 1e3 : RETRY_FIRST;
    double max = after > 0 ? atomic_load(&t->ban_max_ms) / 1e3 : RETRY_MAX;
    for (int k = after > 0 ? after : 1; k < f && wait < max; k++)
        wait *= 2;
    atomic_store(&x->retry_us, now_us() + (uint64_t)((wait < max ? wait : max) * 1e6));
    atomic_store(&x->trial, 0);
}

/* A connect to endpoint i succeeded (pg: its connection, for the role it
 * reports) or failed (pg NULL; why: libpq's message).  libpq refusing the
 * server for target_session_attrs is not a failure: the server is up, and
 * its role is known. */
void prt__endpoints_connected(prt__endpoints *e, int i, PGconn *pg, const char *why)
{
    endpoint *x = e ? ep_of(e, i) : NULL;
    if (!x)
        return;
    int role = PRT_ROLE_UNKNOWN;
    if (pg) {
        const char *hs = PQparameterStatus(pg, "in_hot_standby");
        role = !hs ? PRT_ROLE_UNKNOWN : strcmp(hs, "on") == 0 ? PRT_ROLE_STANDBY : PRT_ROLE_PRIMARY;
    } else if (why && (strstr(why, "server is in hot standby mode") || strstr(why, "session is read-only"))) {
        role = PRT_ROLE_STANDBY;
    } else if (why && (strstr(why, "server is not in hot standby mode") || strstr(why, "session is not read-only"))) {
        role = PRT_ROLE_PRIMARY;
    }
    int up = pg || role != PRT_ROLE_UNKNOWN;
    if (up)
        prt__endpoint_set_role(x, role);
    prt__endpoint_up(x, up, 0, e->tab);
}

/* The simulator's connect to endpoint i (sim_conn.c): counted as
 * prt__endpoints_start counts libpq's, and its outcome recorded as
 * prt__endpoints_connected records one -- up with the role the server
 * reported (a refusal for the wrong role is up, role known), or not. */
void prt__endpoints_connected_as(prt__endpoints *e, int i, int up, int role)
{
    endpoint *x = e ? ep_of(e, i) : NULL;
    if (!x)
        return;
    atomic_fetch_add(&x->connects, 1);
    if (up)
        prt__endpoint_set_role(x, role);
    prt__endpoint_up(x, up, 0, e->tab);
}

/* The simulator's sample of server `id` (its sampler, on the virtual
 * clock): what endpoint_sample.c's sample_all sets from a real look --
 * the role, up, lag (seconds; a primary's is 0) and when.  A server that
 * is down is marked down, as a failed sample does. */
void prt__eptab_set_facts(prt__eptab *t, int id, int role, int up, double lag_s)
{
    if (!t || id < 0 || id >= atomic_load(&t->n))
        return;
    endpoint *x = &t->ep[id];
    if (up)
        prt__endpoint_set_role(x, role);
    prt__endpoint_up(x, up, 1, t);
    atomic_store(&x->sampled_us, now_us());
    atomic_store(&x->lag_bytes, up && role == PRT_ROLE_PRIMARY ? 0 : -1); /* no WAL in a simulation */
    atomic_store(&x->lag_us, up && role == PRT_ROLE_STANDBY && lag_s > 0 ? (uint64_t)(lag_s * 1e6) : 0);
}

/* A bad sign on a connection of endpoint i (lost, or SQLSTATE 25006): its
 * role is unknown until the next connect says. */
void prt__endpoints_doubt(prt__endpoints *e, int i)
{
    endpoint *x = e ? ep_of(e, i) : NULL;
    if (x)
        prt__endpoint_set_role(x, PRT_ROLE_UNKNOWN);
}

void prt__endpoints_opened(prt__endpoints *e, int i, int delta)
{
    if (!e)
        return;
    atomic_fetch_add(&e->open[i], delta);
    endpoint *x = ep_of(e, i);
    if (x)
        atomic_fetch_add(&x->open, delta);
}
