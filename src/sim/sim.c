/*
 * sim.c -- `poolrt sim`'s engine: a single-threaded discrete-event loop
 * that drives the real runtime -- its pools, registry, admission,
 * eviction, reap cycle and policy hooks -- on a virtual clock.
 *
 * Nothing of the pool is reimplemented here.  Each simulated caller runs
 * the real acquire state machine (acquire.c, prt__acq_step); where a
 * thread would block, this driver schedules an event instead: a wait
 * becomes a timeout event plus a wake-up hook on the caller's waiter
 * (pushing a "resume" event when a releaser hands it a connection or
 * nudges it), a connect becomes an event after the endpoint's connect
 * latency (the real prt__open_begin/end decide around it), and a held
 * connection becomes a release event after its statements and hold time,
 * when the real prt_release runs.  The runtime's timer thread is off; the
 * real prt_reap runs at virtual reap ticks.  prt_now() reads this
 * simulation's clock while its calls run (clock.c), and the core's
 * random draws are seeded, so a seed gives one history.
 *
 * Traffic: Poisson arrivals per source with piecewise-constant rates
 * (memoryless, so a rate change simply re-draws the next arrival), bursts,
 * replayed acquires, and background sources whose jobs queue for the
 * real `concurrency` hook (prt_pool_concurrency).  Steady state allocates
 * nothing: events live in one heap array, callers in fixed chunks on a
 * free list (their waiters are linked into pools, so they never move),
 * connections on a free list (sim_conn.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "sim.h"

enum {
    EV_ARRIVE, EV_RATE, EV_BURST, EV_REPLAY, EV_RESUME, EV_TIMEOUT, EV_OPENED, EV_RELEASE,
    EV_REAP, EV_SAMPLE, EV_OUTAGE_START, EV_OUTAGE_END, EV_FACTS, EV_LAG, EV_PROMOTE
};
enum { CHUNK = 1024, NONE = UINT32_MAX };

/* The default endpoint: 2.7 ms to connect, queries take no time. */
static const prt_sim_dist DEFAULT_CONNECT = { PRT_SIM_CONST, 0.0027, 0 };

/* Runs f's body with this simulation's clock and connections installed on
 * the calling thread, and takes them away after. */
static void enter(prt_sim *s)
{
    prt__clock_set(&s->now);
    prt__sim_set_current(s);
}

static void leave(void)
{
    prt__clock_set(NULL);
    prt__sim_set_current(NULL);
}

int prt_sim_new(const prt_runtime_opts *o, const char *policy_path, uint64_t seed,
                prt_sim **out, char *err, size_t errlen)
{
    prt_runtime_opts ro;
    if (o)
        ro = *o;
    else
        prt_runtime_opts_default(&ro);
    prt_sim *s = calloc(1, sizeof *s);
    if (!out || !s) {
        free(s);
        prt__errf(err, errlen, "sim: out of memory");
        return out ? PRT_ENOMEM : PRT_EINVAL;
    }
    s->seed = seed;
    s->rng = seed * 0x9e3779b97f4a7c15ULL + 0x2545F4914F6CDD1DULL;
    s->reap_interval = ro.reap_interval;
    s->sample_interval = ro.server_sample_interval > 0 ? ro.server_sample_interval : 2.0;
    s->free_caller = NONE;
    ro.reap_interval = 0; /* the sim runs prt_reap at virtual ticks */
    ro.policy = policy_path;
    ro.conninfo = NULL;   /* each pool gets the endpoints' conninfo */
    ro.fleet = NULL;
    ro.shared_budget = NULL;
    enter(s);
    int rc = prt_runtime_new(&ro, &s->rt, err, errlen);
    if (rc == PRT_OK)
        s->rt->conn_ops = &prt__sim_conn_ops; /* before its first pool */
    leave();
    if (rc != PRT_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return PRT_OK;
}

void prt_sim_free(prt_sim *s)
{
    if (!s)
        return;
    enter(s);
    for (int i = 0; i < s->nheld; i++)
        prt_pool_unref(s->held[i]);
    prt_runtime_free(s->rt); /* closes idle connections through sim_conn.c */
    leave();
    for (int i = 0; i < s->nsrcs; i++) {
        free(s->srcs[i].name);
        free(s->srcs[i].steps);
        free(s->srcs[i].replays);
        free(s->srcs[i].bursts);
        free(s->srcs[i].attrs);
        free(s->srcs[i].conninfo);
    }
    for (int i = 0; i < s->neps; i++)
        free(s->eps[i].name);
    for (int i = 0; i < s->nchunks; i++)
        free(s->chunks[i]);
    free(s->chunks);
    prt__sim_conns_free(s);
    prt__sim_heap_free(&s->heap);
    free(s->srcs);
    free(s->outages);
    free(s->lags);
    free(s->promotes);
    free(s->held);
    free(s->bins);
    free(s->conninfo);
    free(s);
}

prt_runtime *prt_sim_runtime(prt_sim *s)
{
    return s ? s->rt : NULL;
}

int prt_sim_endpoint(prt_sim *s, const char *name, prt_sim_dist connect, prt_sim_dist query)
{
    if (!s || s->ran || s->neps >= PRT_SIM_MAX_ENDPOINTS || prt__sim_check_dist(&connect) ||
        prt__sim_check_dist(&query))
        return PRT_EINVAL;
    prt__sim_endpoint *e = &s->eps[s->neps];
    *e = (prt__sim_endpoint){ .name = strdup(name ? name : "default"), .connect = connect, .query = query,
                              .role = PRT_ROLE_PRIMARY, .lag = { PRT_SIM_CONST, 0, 0 } };
    if (!e->name)
        return PRT_ENOMEM;
    return s->neps++;
}

int prt_sim_outage(prt_sim *s, int endpoint, double at, double duration)
{
    if (!s || s->ran || endpoint < 0 || endpoint >= PRT_SIM_MAX_ENDPOINTS || !(at >= 0) || !(duration > 0))
        return PRT_EINVAL;
    void *a = prt__grow(s->outages, &s->outages_cap, s->noutages + 1, sizeof *s->outages);
    if (!a)
        return PRT_ENOMEM;
    s->outages = a;
    s->outages[s->noutages].e = endpoint;
    s->outages[s->noutages].at = at;
    s->outages[s->noutages].dur = duration;
    s->noutages++;
    return PRT_OK;
}

int prt_sim_role(prt_sim *s, int endpoint, int role)
{
    if (!s || s->ran || endpoint < 0 || endpoint >= s->neps ||
        (role != PRT_ROLE_PRIMARY && role != PRT_ROLE_STANDBY))
        return PRT_EINVAL;
    s->eps[endpoint].role = role;
    return PRT_OK;
}

int prt_sim_lag(prt_sim *s, int endpoint, double at, prt_sim_dist lag)
{
    if (!s || s->ran || endpoint < 0 || endpoint >= PRT_SIM_MAX_ENDPOINTS || !(at >= 0) ||
        prt__sim_check_dist(&lag))
        return PRT_EINVAL;
    void *a = prt__grow(s->lags, &s->lags_cap, s->nlags + 1, sizeof *s->lags);
    if (!a)
        return PRT_ENOMEM;
    s->lags = a;
    s->lags[s->nlags].e = endpoint;
    s->lags[s->nlags].at = at;
    s->lags[s->nlags].lag = lag;
    s->nlags++;
    return PRT_OK;
}

int prt_sim_promote(prt_sim *s, int endpoint, double at)
{
    if (!s || s->ran || endpoint < 0 || endpoint >= PRT_SIM_MAX_ENDPOINTS || !(at >= 0))
        return PRT_EINVAL;
    void *a = prt__grow(s->promotes, &s->promotes_cap, s->npromotes + 1, sizeof *s->promotes);
    if (!a)
        return PRT_ENOMEM;
    s->promotes = a;
    s->promotes[s->npromotes].e = endpoint;
    s->promotes[s->npromotes].at = at;
    s->npromotes++;
    return PRT_OK;
}

int prt_sim_source(prt_sim *s, const char *name, const prt_pool_opts *o, int threads, int background)
{
    if (!s || s->ran || !name)
        return PRT_EINVAL;
    prt__sim_source *a = prt__grow(s->srcs, &s->srcs_cap, s->nsrcs + 1, sizeof *a);
    if (!a)
        return PRT_ENOMEM;
    s->srcs = a;
    prt__sim_source *src = &s->srcs[s->nsrcs];
    memset(src, 0, sizeof *src);
    if (o)
        src->opts = *o;
    else
        prt_pool_opts_default(&src->opts);
    src->opts.threads = threads;
    src->opts.init_sql = NULL; /* simulated servers run no SQL */
    src->opts.ninit_sql = 0;
    src->opts.handoff = src->opts.handoff && !strcmp(src->opts.handoff, "fifo") ? "fifo" : NULL;
    src->background = background;
    src->hold = (prt_sim_dist){ PRT_SIM_CONST, 0, 0 };
    src->statements = 1;
    if (!(src->name = strdup(name)))
        return PRT_ENOMEM;
    src->shares = -1;
    for (int i = 0; i < s->nsrcs && src->shares < 0; i++)
        if (strcmp(s->srcs[i].name, name) == 0)
            src->shares = i;
    return s->nsrcs++;
}

static prt__sim_source *source(prt_sim *s, int src)
{
    return s && !s->ran && src >= 0 && src < s->nsrcs ? &s->srcs[src] : NULL;
}

/* Appends (at, v) to a source's list of steps. */
static int add_step(prt__sim_step **a, int *n, int *cap, double at, double v)
{
    prt__sim_step *g = prt__grow(*a, cap, *n + 1, sizeof *g);
    if (!g)
        return PRT_ENOMEM;
    *a = g;
    g[(*n)++] = (prt__sim_step){ at, v };
    return PRT_OK;
}

int prt_sim_attrs(prt_sim *s, int src, const char *attrs)
{
    static const char *const words[] = { "any", "read-write", "primary", "read-only", "standby", "prefer-standby" };
    prt__sim_source *x = source(s, src);
    int known = 0;
    for (size_t i = 0; attrs && i < sizeof words / sizeof words[0]; i++)
        known |= strcmp(attrs, words[i]) == 0;
    if (!x || !known)
        return PRT_EINVAL;
    free(x->attrs);
    return (x->attrs = strdup(attrs)) ? PRT_OK : PRT_ENOMEM;
}

int prt_sim_rate(prt_sim *s, int src, double at, double rate)
{
    prt__sim_source *x = source(s, src);
    if (!x || !(at >= 0) || !(rate >= 0) || !isfinite(rate))
        return PRT_EINVAL;
    return add_step(&x->steps, &x->nsteps, &x->steps_cap, at, rate);
}

int prt_sim_work(prt_sim *s, int src, prt_sim_dist hold, int statements)
{
    prt__sim_source *x = source(s, src);
    if (!x || prt__sim_check_dist(&hold) || statements < 0)
        return PRT_EINVAL;
    x->hold = hold;
    x->statements = statements;
    return PRT_OK;
}

int prt_sim_burst(prt_sim *s, int src, double at, int n)
{
    prt__sim_source *x = source(s, src);
    if (!x || !(at >= 0) || n < 0)
        return PRT_EINVAL;
    return add_step(&x->bursts, &x->nbursts, &x->bursts_cap, at, n);
}

int prt_sim_replay(prt_sim *s, int src, double at, double hold)
{
    prt__sim_source *x = source(s, src);
    if (!x || !(at >= 0) || !(hold >= 0))
        return PRT_EINVAL;
    prt__sim_replay *g = prt__grow(x->replays, &x->replays_cap, x->nreplays + 1, sizeof *g);
    if (!g)
        return PRT_ENOMEM;
    x->replays = g;
    g[x->nreplays++] = (prt__sim_replay){ at, hold };
    return PRT_OK;
}

/* --- callers -------------------------------------------------------------- */

static prt__sim_caller *caller_at(prt_sim *s, uint32_t i)
{
    return &s->chunks[i / CHUNK][i % CHUNK];
}

/* A free caller (its serial keeps counting, so events of its previous
 * life stay stale); NULL when out of memory. */
static prt__sim_caller *caller_new(prt_sim *s, uint32_t *id)
{
    if (s->free_caller == NONE) {
        prt__sim_caller **ch = realloc(s->chunks, (size_t)(s->nchunks + 1) * sizeof *ch);
        if (!ch)
            return NULL;
        s->chunks = ch;
        if (!(ch[s->nchunks] = calloc(CHUNK, sizeof **ch)))
            return NULL;
        for (int i = CHUNK - 1; i >= 0; i--) {
            ch[s->nchunks][i].next_free = s->free_caller;
            ch[s->nchunks][i].id = (uint32_t)(s->nchunks * CHUNK + i);
            s->free_caller = (uint32_t)(s->nchunks * CHUNK + i);
        }
        s->nchunks++;
    }
    *id = s->free_caller;
    prt__sim_caller *c = caller_at(s, *id);
    s->free_caller = c->next_free;
    c->busy = 1;
    c->resume_pending = 0;
    c->sim = s;
    return c;
}

static void caller_free(prt_sim *s, prt__sim_caller *c, uint32_t id)
{
    c->busy = 0;
    c->serial++;
    c->next_free = s->free_caller;
    s->free_caller = id;
}

static void push(prt_sim *s, double t, int kind, uint32_t id, uint32_t serial)
{
    if (prt__sim_push(&s->heap, t, kind, id, serial) != PRT_OK)
        abort(); /* cannot continue a simulation that dropped an event */
}

/* The waiter's wake-up (a releaser handed it something, or nudged it):
 * resume its acquire as the next event at this virtual time. */
static void wake(prt__waiter *w)
{
    prt__sim_caller *c = (prt__sim_caller *)((char *)w - offsetof(prt__sim_caller, a.w));
    if (c->resume_pending)
        return;
    c->resume_pending = 1;
    push(c->sim, c->sim->now, EV_RESUME, c->id, c->serial);
}

static void start_jobs(prt_sim *s, int src);

/* The caller is done (failed, or released): background sources start
 * their next queued job. */
static void caller_done(prt_sim *s, prt__sim_caller *c, uint32_t id)
{
    int src = c->src;
    caller_free(s, c, id);
    if (s->srcs[src].background) {
        s->srcs[src].running--;
        start_jobs(s, src);
    }
}

static void failed(prt_sim *s, prt__sim_caller *c, uint32_t id, int rc)
{
    prt__sim_count_wait(s, s->now - c->arrived);
    if (rc == PRT_ETIMEDOUT || rc == PRT_EFULL)
        s->timeouts++;
    else
        s->errors++;
    caller_done(s, c, id);
}

/* The caller holds a connection: it runs its statements and keeps it for
 * its hold time, then releases it (EV_RELEASE). */
static void acquired(prt_sim *s, prt__sim_caller *c, uint32_t id)
{
    prt__acq_hand_out(&c->a);
    prt__sim_count_wait(s, s->now - c->arrived);
    prt__sim_source *src = &s->srcs[c->src];
    int e = c->a.c->endpoint;
    s->acquires++;
    s->ep_acquires[e]++;
    /* reads and writes by what the pool cannot use (conn.c caches it): a
     * standby (read-write, primary), a primary (read-only, standby) or one
     * it asks about (prefer-standby) */
    int bad = c->a.c->ep_bad_role;
    if (bad == PRT_ROLE_STANDBY) {
        s->writes++;
        s->ep_writes[e]++;
    } else if (bad == PRT_ROLE_PRIMARY || bad == PRT__EP_ASK) {
        s->reads++;
        s->stale_reads += s->eps[e].role == PRT_ROLE_STANDBY && s->eps[e].lag_now > PRT__SIM_STALE_S;
    }
    if (++s->in_use > s->peak)
        s->peak = s->in_use;
    double hold = c->hold >= 0 ? c->hold : prt__sim_draw(&s->rng, &src->hold);
    for (int i = 0; c->hold < 0 && i < src->statements; i++)
        hold += prt__sim_draw(&s->rng, &s->eps[e].query);
    c->serial++;
    push(s, s->now + hold, EV_RELEASE, id, c->serial);
}

/* Steps the caller's acquire until it must wait for an event, turning
 * each thing a thread would block on into one.  p->mu held on entry;
 * released on return. */
static void drive_unlock(prt_sim *s, prt__sim_caller *c, uint32_t id)
{
    prt__acq *a = &c->a;
    prt_pool *p = a->p;
    char err[PRT__ERRLEN];
    for (;;) {
        int next = prt__acq_step(a, err, sizeof err);
        if (next == PRT__ACQ_CHECK) {
            prt__unlock(p);
            a->alive = prt__conn_alive(a->c);
            prt__lock(p);
            continue;
        }
        if (next == PRT__ACQ_YIELD) /* no other thread to let run */
            continue;
        prt__unlock(p);
        if (next == PRT__ACQ_DONE) {
            acquired(s, c, id);
        } else if (next == PRT__ACQ_FAIL) {
            failed(s, c, id, a->rc);
        } else if (next == PRT__ACQ_WAIT) {
            if (a->wait_fresh) {
                c->serial++;
                c->resume_pending = 0;
                if (prt__sim_push_late(&s->heap, a->until, EV_TIMEOUT, id, c->serial) != PRT_OK)
                    abort(); /* as push() */
            }
        } else { /* PRT__ACQ_OPEN: the connect takes the endpoint's latency */
            int rc = prt__open_begin(p, err, sizeof err);
            if (rc != PRT_OK) { /* backing off: the slot goes back, the caller fails */
                failed(s, c, id, prt__open_end(p, 0, rc, NULL, 0, &a->c, err, sizeof err));
                return;
            }
            int first = prt__chosen_endpoint(p, err, sizeof err); /* as prt__open_in_slot asks */
            if (first == -2) {
                failed(s, c, id, prt__open_end(p, 1, PRT_ECONNECT, NULL, 0, &a->c, err, sizeof err));
                return;
            }
            double latency;
            c->opened = NULL;
            c->open_rc = prt__sim_connect(s, p, first, &c->opened, &latency, err, sizeof err);
            c->serial++;
            push(s, s->now + latency, EV_OPENED, id, c->serial);
        }
        return;
    }
}

/* EV_OPENED: the connect finished; the real open_end counts it (a failure
 * fails the caller, as prt_acquire does outside a fleet). */
static void opened(prt_sim *s, prt__sim_caller *c, uint32_t id)
{
    char err[PRT__ERRLEN];
    prt__acq *a = &c->a;
    int rc = prt__open_end(a->p, 1, c->open_rc, c->opened, 0, &a->c, err, sizeof err);
    if (rc != PRT_OK) {
        failed(s, c, id, rc);
        return;
    }
    a->rc = PRT_OK;
    prt__lock(a->p);
    drive_unlock(s, c, id);
}

/* The source's pool: its live handle, or (first use, or after the pool
 * was evicted) a fresh one from the real registry, where admission runs.
 * Every handle taken stays referenced until prt_sim_free, so that the
 * counters of evicted pools still count.  Sources on one pool name use the
 * first one's handle, so the pool's counters and re-creations count once.
 * NULL with *rc on failure. */
static prt_pool *source_pool(prt_sim *s, prt__sim_source *src, int *rc)
{
    prt_pool *p = src->pool;
    if (p) {
        prt__lock(p);
        int closed = p->closed;
        prt__unlock(p);
        if (!closed)
            return p;
    }
    if (src->shares >= 0) /* the first source's handle (fetched, or re-created, once) */
        return src->pool = source_pool(s, &s->srcs[src->shares], rc);
    if (p)
        s->recreated++;
    prt_pool **held = prt__grow(s->held, &s->held_cap, s->nheld + 1, sizeof *held);
    if (!held) {
        *rc = PRT_ENOMEM;
        return NULL;
    }
    s->held = held;
    char err[PRT__ERRLEN];
    src->opts.conninfo = src->conninfo ? src->conninfo : s->conninfo;
    *rc = prt_pool_get(s->rt, src->name, &src->opts, &p, err, sizeof err);
    if (*rc != PRT_OK) {
        prt__logf(PRT_LOG_DEBUG, "sim: %s", err);
        return NULL;
    }
    src->pool = held[s->nheld++] = p;
    return p;
}

/* One caller of source src arrives now and acquires; hold < 0: its hold
 * is drawn from the source's work. */
static void arrive(prt_sim *s, int src, double hold)
{
    int rc = PRT_OK;
    uint32_t id;
    prt_pool *p = source_pool(s, &s->srcs[src], &rc);
    prt__sim_caller *c = p ? caller_new(s, &id) : NULL;
    if (!c) {
        s->errors += rc != PRT_EFULL;
        s->timeouts += rc == PRT_EFULL; /* admission says fail */
        if (s->srcs[src].background)
            s->srcs[src].running--;
        return;
    }
    c->src = src;
    c->arrived = s->now;
    c->hold = hold;
    prt__acq_init(&c->a, p, -1, 0);
    c->a.w.wake = wake;
    prt__lock(p);
    drive_unlock(s, c, id);
}

/* Background jobs start while fewer run than the pool's concurrency hook
 * allows (the real prt_pool_concurrency).  Not re-entered: a job that
 * fails at once ends inside arrive(), and the loop here starts the next,
 * so a long queue failing (an outage) does not nest a call per job. */
static void start_jobs(prt_sim *s, int src)
{
    prt__sim_source *x = &s->srcs[src];
    if (x->starting)
        return; /* a job that failed at once, inside the loop below: it goes on */
    x->starting = 1;
    while (x->pending > 0) {
        int rc;
        prt_pool *p = source_pool(s, x, &rc);
        if (p && x->running >= prt_pool_concurrency(p))
            break;
        x->pending--;
        x->running++;
        if ((uint64_t)x->running > s->bg_peak)
            s->bg_peak = (uint64_t)x->running;
        s->bg_jobs++;
        arrive(s, src, -1);
    }
    x->starting = 0;
}

/* A new caller of src: foreground ones acquire now, background ones queue. */
static void demand(prt_sim *s, int src, double hold)
{
    if (!s->srcs[src].background) {
        arrive(s, src, hold);
        return;
    }
    s->srcs[src].pending++;
    start_jobs(s, src);
}

/* The next Poisson arrival of src under its current rate, within the run. */
static void next_arrival(prt_sim *s, int src)
{
    prt__sim_source *x = &s->srcs[src];
    if (x->rate <= 0)
        return;
    double t = s->now + prt__sim_exp(&s->rng, 1.0 / x->rate);
    if (t < s->duration)
        push(s, t, EV_ARRIVE, (uint32_t)src, x->epoch);
}

static void release(prt_sim *s, prt__sim_caller *c, uint32_t id)
{
    prt_conn *conn = c->a.c;
    int broken = prt__sim_conn_broken(s, conn); /* its server went away while it was held */
    s->errors += broken;
    s->in_use--;
    prt_release(conn, broken);
    caller_done(s, c, id);
}

static int by_at(const void *a, const void *b)
{
    double x = ((const prt__sim_step *)a)->at, y = ((const prt__sim_step *)b)->at;
    return x < y ? -1 : x > y;
}

static int replay_by_at(const void *a, const void *b)
{
    double x = ((const prt__sim_replay *)a)->at, y = ((const prt__sim_replay *)b)->at;
    return x < y ? -1 : x > y;
}

/* Everything scheduled before the loop starts.  Returns 0 or PRT_ENOMEM. */
static int setup(prt_sim *s, double duration)
{
    if (s->neps == 0) {
        prt_sim_dist zero = { PRT_SIM_CONST, 0, 0 };
        int e = prt_sim_endpoint(s, "default", DEFAULT_CONNECT, zero);
        if (e < 0)
            return e;
    }
    if (!(s->conninfo = prt__sim_conninfo(s)))
        return PRT_ENOMEM;
    if (s->neps >= 2) { /* the servers in the runtime's table, in order: facts from time 0 */
        prt__mu_lock(&s->rt->mu, PRT__RANK_RT);
        prt__endpoints_free(prt__endpoints_new(s->conninfo, s->rt->eptab));
        prt__mu_unlock(&s->rt->mu, PRT__RANK_RT);
    }
    for (int i = 0; i < s->nsrcs; i++) {
        prt__sim_source *x = &s->srcs[i];
        if (!x->attrs)
            continue;
        size_t len = strlen(s->conninfo) + strlen(x->attrs) + 32;
        if (!(x->conninfo = malloc(len)))
            return PRT_ENOMEM;
        snprintf(x->conninfo, len, "%s target_session_attrs=%s", s->conninfo, x->attrs);
    }
    for (int k = 0; k < s->nlags; k++) {
        if (s->lags[k].e >= s->neps)
            return PRT_EINVAL;
        if (s->lags[k].at < duration)
            push(s, s->lags[k].at, EV_LAG, (uint32_t)k, 0);
    }
    for (int k = 0; k < s->npromotes; k++) {
        if (s->promotes[k].e >= s->neps)
            return PRT_EINVAL;
        if (s->promotes[k].at < duration)
            push(s, s->promotes[k].at, EV_PROMOTE, (uint32_t)k, 0);
    }
    if (s->neps >= 2) /* after the steps at 0, so the first sample sees them */
        push(s, 0, EV_FACTS, 0, 0);
    s->duration = duration;
    s->res = duration / 4000 > 0.001 ? duration / 4000 : 0.001;
    s->nbins = (int)ceil(duration / s->res - 1e-9); /* each gets a sample: at bin x res < duration */
    if (!(s->bins = calloc((size_t)s->nbins, sizeof *s->bins)))
        return PRT_ENOMEM;
    for (int i = 0; i < s->nsrcs; i++) {
        prt__sim_source *x = &s->srcs[i];
        if (x->nsteps > 1)
            qsort(x->steps, (size_t)x->nsteps, sizeof *x->steps, by_at);
        if (x->nreplays > 1)
            qsort(x->replays, (size_t)x->nreplays, sizeof *x->replays, replay_by_at);
        for (int k = 0; k < x->nsteps; k++)
            if (x->steps[k].at < duration)
                push(s, x->steps[k].at, EV_RATE, (uint32_t)i, (uint32_t)k);
        for (int k = 0; k < x->nbursts; k++)
            if (x->bursts[k].at < duration)
                push(s, x->bursts[k].at, EV_BURST, (uint32_t)i, (uint32_t)k);
        if (x->nreplays > 0 && x->replays[0].at < duration)
            push(s, x->replays[0].at, EV_REPLAY, (uint32_t)i, 0);
    }
    for (int k = 0; k < s->noutages; k++) {
        if (s->outages[k].e >= s->neps)
            return PRT_EINVAL;
        push(s, s->outages[k].at, EV_OUTAGE_START, (uint32_t)s->outages[k].e, 0);
        push(s, s->outages[k].at + s->outages[k].dur, EV_OUTAGE_END, (uint32_t)s->outages[k].e, 0);
    }
    if (s->reap_interval > 0)
        push(s, s->reap_interval, EV_REAP, 0, 0);
    push(s, 0, EV_SAMPLE, 0, 0);
    return PRT_OK;
}

/* The simulated sampler (endpoint_sample.c's, on the virtual clock): each
 * server's role, up and lag into the runtime's facts, as a real look
 * would find them; a lag given as a distribution is drawn afresh. */
static void sample_facts(prt_sim *s)
{
    for (int i = 0; i < s->neps; i++) {
        prt__sim_endpoint *e = &s->eps[i];
        if (e->lag.kind != PRT_SIM_CONST)
            e->lag_now = prt__sim_draw(&s->rng, &e->lag);
        prt__eptab_set_facts(s->rt->eptab, i, e->role, !e->down, e->role == PRT_ROLE_STANDBY ? e->lag_now : 0);
    }
}

/* A failover or switchover: endpoint `to` is the primary from now on, and
 * every other primary a standby.  A server becomes a standby only by
 * restarting as one, so the old primary's connections break (a write held
 * on one fails); the promoted server's stay.  The runtime learns the new
 * roles from its next sample, a connect's answer, or libpq's refusal. */
static void promote(prt_sim *s, int to)
{
    for (int i = 0; i < s->neps; i++) {
        if (i == to || s->eps[i].role != PRT_ROLE_PRIMARY)
            continue;
        s->eps[i].role = PRT_ROLE_STANDBY;
        s->eps[i].epoch++;
    }
    s->eps[to].role = PRT_ROLE_PRIMARY;
}

/* Runs one event. */
static void run_event(prt_sim *s, const prt__sim_ev *ev)
{
    prt__sim_caller *c = ev->kind >= EV_RESUME && ev->kind <= EV_RELEASE ? caller_at(s, ev->id) : NULL;
    if (c && (!c->busy || c->serial != ev->serial))
        return; /* stale: the caller moved on */
    prt__sim_source *x = ev->kind <= EV_REPLAY ? &s->srcs[ev->id] : NULL;
    switch (ev->kind) {
    case EV_ARRIVE:
        if (ev->serial != x->epoch)
            return; /* drawn under an older rate */
        demand(s, (int)ev->id, -1);
        next_arrival(s, (int)ev->id);
        break;
    case EV_RATE:
        x->rate = x->steps[ev->serial].rate;
        x->epoch++;
        next_arrival(s, (int)ev->id);
        break;
    case EV_BURST:
        for (int n = (int)x->bursts[ev->serial].rate; n > 0; n--)
            demand(s, (int)ev->id, -1);
        break;
    case EV_REPLAY:
        demand(s, (int)ev->id, x->replays[ev->serial].hold);
        if ((int)ev->serial + 1 < x->nreplays && x->replays[ev->serial + 1].at < s->duration)
            push(s, x->replays[ev->serial + 1].at, EV_REPLAY, ev->id, ev->serial + 1);
        break;
    case EV_RESUME:
    case EV_TIMEOUT:
        c->resume_pending = 0;
        c->a.timed_out = ev->kind == EV_TIMEOUT;
        prt__lock(c->a.p);
        drive_unlock(s, c, ev->id);
        break;
    case EV_OPENED:
        opened(s, c, ev->id);
        break;
    case EV_RELEASE:
        release(s, c, ev->id);
        break;
    case EV_REAP: {
        int evicted = 0;
        prt_reap(s->rt, &evicted);
        if (s->now + s->reap_interval < s->duration)
            push(s, s->now + s->reap_interval, EV_REAP, 0, 0);
        break;
    }
    case EV_SAMPLE: /* serial: the bin; times are bin x res, so no drift adds up */
        prt__sim_sample(s, (int)ev->serial);
        if ((ev->serial + 1) * s->res < s->duration)
            push(s, (ev->serial + 1) * s->res, EV_SAMPLE, 0, ev->serial + 1);
        break;
    case EV_OUTAGE_START:
        s->eps[ev->id].down++;
        s->eps[ev->id].epoch++;
        break;
    case EV_OUTAGE_END:
        s->eps[ev->id].down--;
        break;
    case EV_FACTS:
        sample_facts(s);
        if (s->now + s->sample_interval < s->duration)
            push(s, s->now + s->sample_interval, EV_FACTS, 0, 0);
        break;
    case EV_LAG: {
        prt__sim_endpoint *e = &s->eps[s->lags[ev->id].e];
        e->lag = s->lags[ev->id].lag;
        e->lag_now = prt__sim_draw(&s->rng, &e->lag);
        break;
    }
    case EV_PROMOTE:
        promote(s, s->promotes[ev->id].e);
        break;
    }
}

int prt_sim_run(prt_sim *s, double duration, prt_sim_result *out, char *err, size_t errlen)
{
    if (!s || !out || s->ran || !(duration > 0) || !isfinite(duration)) {
        prt__errf(err, errlen, "sim: a simulation runs once, for a duration > 0");
        return PRT_EINVAL;
    }
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    enter(s);
    prt__rand_seed(s->seed ^ 0x5eed5eed5eedULL);
    int rc = setup(s, duration);
    s->ran = 1; /* no more set-up calls: the run is the simulation's one */
    prt__sim_ev ev;
    while (rc == PRT_OK && prt__sim_pop(&s->heap, &ev)) {
        s->now = ev.t;
        s->events++;
        run_event(s, &ev);
        int open = atomic_load_explicit(&s->rt->nconns, memory_order_relaxed);
        if (open > s->peak_open)
            s->peak_open = open;
    }
    if (rc == PRT_OK)
        prt__sim_result(s, out);
    prt__rand_seed(0);
    leave();
    if (rc != PRT_OK) {
        prt__errf(err, errlen, "sim: %s", prt_strerror(rc));
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);
    out->wall_seconds = (double)(w1.tv_sec - w0.tv_sec) + (double)(w1.tv_nsec - w0.tv_nsec) * 1e-9;
    return PRT_OK;
}
