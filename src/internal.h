/*
 * internal.h -- structures shared by the C core (`prt__` names).
 *
 * Locks, in the one order they may be nested (lock.h's enum prt__rank;
 * POOLRT_DEBUG builds assert it at every lock):
 *
 *   rank  lock                  guards
 *   1     live_mu (runtime.c)   the live runtimes (SIGHUP, drain, metrics)
 *   2     rt->mu                the registry's pool array, draining, the timer's stop flag
 *   3     alive_mu (pool.c)     every pool a runtime made, evicted ones included
 *   4     fleet->mu (fleet.c)   the fleet's last sample, its pool, stop/resample
 *   5     eptab->mu (endpoint.h) the endpoint sampler's stop flag
 *   6     mux->mu (mux.h)       a multiplexer: its connections, queues, leaders
 *   7     p->mu (prt__lock)     one pool: idle list, counts, waiters, stats
 *   8     rt->policy_mu         the live policy, the hook error log
 *   9     rec->mu (record.c)    one trace line at a time
 *   10    open_mu (record.c)    opening and closing trace files
 *   11    mu (modcache.c)       the compiled modules of spawned states
 *
 * Never two locks of one rank (two pools' locks, say).  The global slot
 * count (rt->nconns), the cap and the shared budget are atomics, taken
 * under the pool's lock (capacity.c).  A connection has no lock: while
 * idle it belongs to its pool (under p->mu); while in use it belongs to
 * the one thread that acquired it.  No lock is held across network I/O
 * (connect, query, close).  A function entered with a lock and left
 * without it says so in its name (prt__retire_unlock).
 *
 * Lock assertions, as SQLite's `assert( sqlite3_mutex_held(p->mutex) )`:
 * the core takes a pool's mu through prt__lock/prt__unlock (and waits on it
 * through prt__park).  Built with -DPOOLRT_DEBUG (the sanitize builds set
 * it in mk/sanitize.mk) these record the owning thread in p->mu_owner, and
 * PRT__ASSERT_HELD / PRT__ASSERT_UNHELD check the rules written next to
 * each function.  Without POOLRT_DEBUG they are the plain lock calls
 * (lock.h) and the asserts compile to nothing, so the normal -O2 build
 * pays nothing on the acquire path.  Every file (the policy boundary and
 * the fuzzer too) locks p->mu only through these, so the record is true.
 */
#ifndef POOLRT_INTERNAL_H
#define POOLRT_INTERNAL_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <libpq-fe.h>
#include "poolrt.h"
#include "policy_views.h"
#include "lock.h"

typedef void prt__cap_report_fn(prt_runtime *rt, int ev); /* capacity.h */

#define PRT__ERRLEN 512

/* --- clock.c ------------------------------------------------------------ */
struct timespec;
void prt__abstime(double deadline, struct timespec *ts); /* monotonic deadline -> cond wait time */
void prt__cond_init(pthread_cond_t *cond);                  /* a condvar on CLOCK_MONOTONIC */
double prt__rand01(void);                                   /* [0, 1), thread-local state */
/* The simulator (sim.c) runs the core on a virtual clock: while a thread
 * has one installed, prt_now() on that thread returns *now (NULL: back to
 * CLOCK_MONOTONIC).  prt__rand_seed makes the thread's prt__rand01 draws
 * repeatable (0: re-seed from the clock at the next draw). */
void prt__clock_set(const double *now);
void prt__rand_seed(uint64_t seed);

/* --- log.c -------------------------------------------------------------- */
#define prt__logf prt_logf /* the core's name for the public prt_logf (poolrt.h) */
void prt__errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --- stmt.c: per-connection prepared statement cache ---------------------- */
typedef struct prt__stmt {
    char *sql;
    uint64_t hash;
    uint64_t last_use;       /* for LRU replacement */
    unsigned id;
    char name[16];           /* "prt_<id>", formatted once */
} prt__stmt;

typedef struct prt__stmt_cache {
    prt__stmt *slots;
    prt__stmt *recent;       /* the entry found or added last (checked before hashing), or NULL */
    int n, cap;
    uint64_t tick;
    unsigned next_id;
} prt__stmt_cache;

void prt__stmt_init(prt__stmt_cache *sc, int cap);
void prt__stmt_clear(prt__stmt_cache *sc);
prt__stmt *prt__stmt_find(prt__stmt_cache *sc, const char *sql);
prt__stmt *prt__stmt_victim(prt__stmt_cache *sc); /* entry to replace when full, else NULL */
prt__stmt *prt__stmt_add(prt__stmt_cache *sc, const char *sql);
void prt__stmt_remove(prt__stmt_cache *sc, prt__stmt *s);

/* --- endpoint.c: a pool over several hosts ------------------------------- */
#define PRT__MAX_ENDPOINTS 16
typedef struct prt__endpoints prt__endpoints; /* one pool's hosts */
typedef struct prt__eptab prt__eptab;         /* a runtime's servers and their facts */
prt__eptab *prt__eptab_new(double interval);
void prt__eptab_start(prt__eptab *t);             /* endpoint_sample.c: the sampler, once; rt->mu held */
void prt__eptab_stop(prt__eptab *t);              /* endpoint_sample.c: the sampler; no lock held */
void prt__eptab_unref(prt__eptab *t);
int prt__runtime_endpoints(prt__eptab *t, prt_endpoint_stats *out, int max);
prt__endpoints *prt__endpoints_new(const char *conninfo, prt__eptab *t); /* rt->mu held; NULL: a single host */
void prt__endpoints_free(prt__endpoints *e);
int prt__endpoints_count(const prt__endpoints *e);
int prt__endpoints_order(prt__endpoints *e, int *order); /* the order to try them in */
int prt__endpoints_choose(prt__endpoints *e);             /* the first of that order */
int prt__endpoints_fits(const prt__endpoints *e, int i, double now); /* a connection on i may go back idle */
/* For prt_release's quick check: where endpoint i's role is kept, and the
 * role the pool cannot use (PRT__EP_NONE: any fits; PRT__EP_ASK: ask fits). */
enum { PRT__EP_NONE = -1, PRT__EP_ASK = -2 };
const atomic_int *prt__endpoints_role_of(const prt__endpoints *e, int i, int *bad_role);
double prt__endpoints_connect_timeout(const prt__endpoints *e); /* per endpoint (0: none) */
PGconn *prt__endpoints_start(prt__endpoints *e, int i);
void prt__endpoints_connected(prt__endpoints *e, int i, PGconn *pg, const char *why); /* pg NULL: failed */
/* The simulator's (sim_conn.c, sim.c): a connect tried and its outcome, and a sample's facts. */
void prt__endpoints_connected_as(prt__endpoints *e, int i, int up, int role);
void prt__eptab_set_facts(prt__eptab *t, int id, int role, int up, double lag_s);
void prt__endpoints_doubt(prt__endpoints *e, int i);      /* a bad sign: role unknown */
void prt__endpoints_opened(prt__endpoints *e, int i, int delta);
char *prt__put_kv(char *w, const char *key, const char *val); /* conninfo key='value', libpq's quoting */
int prt__endpoints_views(const prt__endpoints *e, prt_endpoint_view *v); /* the endpoint hook's; returns n */
int prt__endpoints_may_try(prt__endpoints *e, int i);     /* 0: banned, or another caller has its one trial */
struct prt__policy;
void prt__eptab_set_policy(prt__eptab *t, const struct prt__policy *pol); /* its `ban` and `max_lag` */

/* --- conn.c --------------------------------------------------------------- */
struct prt_conn {
    PGconn *pg;
    prt_pool *pool;
    uint64_t id;
    double created_at;
    double expires_at;       /* 0: never */
    double returned_at;      /* when last released (or opened) */
    uint64_t uses;
    int endpoint;            /* which of the pool's hosts (0-based) */
    const atomic_int *ep_role; /* immutable: its server's role (endpoint.c), NULL for a single host */
    int ep_bad_role;         /* immutable: the role its pool cannot use, or PRT__EP_NONE / PRT__EP_ASK */
    double acquired_at;      /* while in use; protected by pool->mu */
    struct prt_conn *in_use_prev, *in_use_next; /* the pool's in_use_list; pool->mu */
    int leak_reported;       /* pool->mu */
    int fatal;               /* the server sent FATAL: it is closing this connection */
    prt__stmt_cache stmts;
    char sqlstate[6];        /* the last query error's SQLSTATE, "" after a success */
    /* Recording (record.c), while in use; the acquiring thread's. */
    double rec_start, rec_got, rec_query; /* acquire called, returned; seconds in prt_query */
    int rec_queries;
};

/* Connection I/O.  A runtime's pools open, check, reset and close their
 * connections through prt__conn_open/alive/reset/close; those run libpq,
 * unless the pool's `ops` (copied from rt->conn_ops when the pool is made)
 * is set: then they go to it.  The simulator's table (sim_conn.c) makes
 * connections with pg == NULL.  Same contracts as the functions below. */
/* callback: p->ops -- set by the simulator (sim_conn.c) through rt->conn_ops, called by conn.c */
typedef struct prt__conn_ops {
    int (*open)(prt_pool *p, double deadline, int first, prt_conn **out, char *err, size_t errlen);
    int (*alive)(prt_conn *c);
    int (*reset)(prt_conn *c, double deadline);
    void (*close)(prt_conn *c);
} prt__conn_ops;

/* PRT_EQUERY from prt__conn_open: connected, but init_sql failed (closed). */
int prt__conn_open(prt_pool *p, double deadline, int first, prt_conn **out, char *err, size_t errlen); /* first: endpoint, -1 */
void prt__conn_close(prt_conn *c);
void prt__verbose_error(char *msg, char state[6]); /* a verbose libpq error: its SQLSTATE out, location dropped */
void prt__conn_born(prt_conn *c, prt_pool *p);  /* pool, created_at, lifetime with jitter */
int prt__conn_alive(prt_conn *c);               /* non-blocking check of an idle socket */
int prt__conn_reset(prt_conn *c, double deadline); /* clean state for reuse; 0 or negative */
int prt__conn_expired(const prt_conn *c, double now);

/* --- record.c: the trace `poolrt sim` replays (runtime option `record`) --- */
typedef struct prt__recorder prt__recorder;
int prt__record_open(const char *path, prt__recorder **out, char *err, size_t errlen);
prt__recorder *prt__record_ref(prt__recorder *r);   /* NULL passes through */
void prt__record_unref(prt__recorder *r);
/* No lock held; called only when the pool's rec is set: */
void prt__record_acquired(prt_conn *c, double start);
void prt__record_query(prt_conn *c, double seconds);
void prt__record_released(prt_conn *c, double now);
int prt__record_failed(prt_pool *p, double start, int rc); /* returns rc */

/* --- pool.c: one pool; pool_slots.c: what it does with its slots -------- */
/* Why a connection closed, counted per pool in closed_by. */
enum prt__close_reason {
    PRT__CLOSE_IDLE = PRT_CLOSE_IDLE, PRT__CLOSE_LIFETIME = PRT_CLOSE_LIFETIME, PRT__CLOSE_BROKEN = PRT_CLOSE_BROKEN,
    PRT__CLOSE_EVICTED = PRT_CLOSE_EVICTED, PRT__CLOSE_SHRINK = PRT_CLOSE_SHRINK, PRT__CLOSE_ROLE = PRT_CLOSE_ROLE,
    PRT__CLOSE_NREASONS = PRT_CLOSE_NREASONS,
    PRT__CLOSE_NONE = PRT__CLOSE_NREASONS /* not counted: never opened, or the caller counted it */
};
/* Why a pool is closed (p->closed; 0 while open). */
/* A waiter's state: still waiting, or what it was handed. */
enum { PRT__W_WAITING, PRT__W_CONN, PRT__W_SLOT, PRT__W_CLOSED };

/* A waiter is woken through `wake` when set (the simulator: an event that
 * resumes its acquire), else through `signal` (a thread parked in
 * prt_acquire, lock.h).  Either way under pool->mu, once per hand-over or
 * nudge. */
/* callback: w->wake -- set by the simulator (sim.c), called by prt__waiter_wake (pool.c, pools.c, acquire.c) */
typedef struct prt__waiter {
    struct prt__waiter *next;
    atomic_uint signal;      /* bumped by each wake-up; the parked thread sleeps on it */
    void (*wake)(struct prt__waiter *w); /* immutable while queued */
    prt_conn *conn;          /* handed over by a releaser; protected by pool->mu */
    int state;               /* PRT__W_*; pool->mu */
    int nudged;              /* barging: woken to compete for an idle connection; pool->mu */
    double since;            /* when it queued (its place's age); immutable while queued */
} prt__waiter;

struct prt_pool {
    /* The owning runtime.  Set at creation; prt_runtime_free sets it to NULL
     * in every pool it made that is still allocated (evicted ones included),
     * holding both mu and pool.c's alive_mu, so that what such a pool does
     * later (a release, its last unref) no longer touches a runtime that is
     * gone.  Read under either lock, or without one on entry points
     * (acquire, re-size, concurrency, reap) that the caller must not run
     * concurrently with prt_runtime_free. */
    prt_runtime *rt;
    struct prt_pool *alive_prev, *alive_next; /* rt->pools_alive; pool.c's alive_mu */
    char *name;              /* immutable */
    char *conninfo;          /* immutable */
    prt__endpoints *endpoints; /* immutable; NULL for a single host */
    prt__recorder *rec;      /* immutable: the runtime's trace (a reference), NULL when not recording */
    const prt__conn_ops *ops; /* immutable: connection I/O (NULL: libpq, conn.c) */
    prt_pool_opts opts;      /* immutable; max/min_idle below are the live values */
    int fifo;                /* immutable: opts.handoff is "fifo" (no barging) */
    char **init_sql;         /* immutable: the pool's copies of opts.init_sql (opts points here) */
    double created_at;       /* immutable */
    uint64_t serial;         /* immutable, unique in the process */
    atomic_int refs;         /* registry + handles + connections in use */

    prt__mutex mu;           /* lock.h */
    atomic_uintptr_t mu_owner; /* POOLRT_DEBUG: the thread holding mu (prt__lock), else 0 */
    /* Everything below is protected by mu. */
    int max, min_idle;
    prt_conn **idle;         /* idle[0] released longest ago, idle[nidle-1] most recently */
    int nidle, idle_cap;
    int total;               /* idle + in_use + opening + closing: the pool's slots */
    int in_use;
    int opening;
    int closing;             /* taken out to close (unlocked), slots not yet given back */
    int closed;              /* PRT_POOL_*: no new acquires; connections close on release */
    int readmit;             /* evicted automatically: an acquire brings it back (registry.c) */
    int readmitting;         /* acquires between their re-admission and their next look */
    prt__waiter *wq_head, *wq_tail;
    int nwait;
    double last_used_at;
    uint64_t acquire_total, acquire_timeouts, acquire_wait_us;
    uint64_t wait_buckets[PRT_WAIT_BUCKETS];
    uint64_t created_total, connect_errors;
    uint64_t closed_by[PRT__CLOSE_NREASONS];
    uint64_t next_conn_id;
    uint64_t grown;          /* connections opened over max by overflow "grow" */
    prt_conn *in_use_list;   /* connections in use (in_use_next), for leak detection */
    uint64_t leaks;
    /* Connect backoff: after consecutive failures, attempts wait. */
    int connect_failures;
    double backoff, backoff_until;
    uint64_t backoff_refusals;
    char last_connect_error[256];
    uint64_t init_sql_errors; /* new connections whose init_sql failed */
    uint64_t tx_retries;      /* prt_pool_note_tx_retry */
    struct prt__mux *mux;     /* immutable once made: opts.multiplex's multiplexer (multiplex.c), else NULL */
    const struct prt__mux_ops *mux_ops; /* immutable once made: its callbacks, else NULL */
};

/* The pool lock and its assertions (see the top of this file). */
#ifdef POOLRT_DEBUG
extern _Thread_local char prt__thread_tag; /* its address names the thread */
#define PRT__SELF ((uintptr_t)&prt__thread_tag)
#define PRT__ASSERT_HELD(p) assert(atomic_load_explicit(&(p)->mu_owner, memory_order_relaxed) == PRT__SELF)
#define PRT__ASSERT_UNHELD(p) assert(atomic_load_explicit(&(p)->mu_owner, memory_order_relaxed) != PRT__SELF)
#define PRT__SET_OWNER(p, v) atomic_store_explicit(&(p)->mu_owner, (v), memory_order_relaxed)
/* The pool's count invariant, wherever the counts change under p->mu. */
#define PRT__ASSERT_COUNTS(p) \
    (PRT__ASSERT_HELD(p), assert((p)->total == (p)->nidle + (p)->in_use + (p)->opening + (p)->closing))
#else
#define PRT__ASSERT_HELD(p) ((void)0)
#define PRT__ASSERT_UNHELD(p) ((void)0)
#define PRT__ASSERT_COUNTS(p) ((void)0)
#define PRT__SET_OWNER(p, v) ((void)0)
#endif

static inline void prt__lock(prt_pool *p)
{
    PRT__ASSERT_UNHELD(p); /* mu is not recursive */
    prt__rank_take(PRT__RANK_POOL);
    prt__mutex_lock(&p->mu);
    PRT__SET_OWNER(p, PRT__SELF);
}

static inline void prt__unlock(prt_pool *p)
{
    PRT__ASSERT_HELD(p);
    PRT__SET_OWNER(p, 0);
    prt__mutex_unlock(&p->mu);
    prt__rank_drop(PRT__RANK_POOL);
}

/* Parks waiter w, which p->mu holds queued, until it is woken (or
 * spuriously) or the CLOCK_MONOTONIC time ts: releases mu meanwhile and
 * returns with it held.  Returns ETIMEDOUT, or 0. */
static inline int prt__park(prt__waiter *w, prt_pool *p, const struct timespec *ts)
{
    unsigned seen = atomic_load_explicit(&w->signal, memory_order_relaxed);
    prt__unlock(p);
    int rc = prt__futex_wait(&w->signal, seen, ts);
    prt__lock(p);
    return rc;
}

extern const double prt__wait_bounds[PRT_WAIT_BUCKETS];

/* pool.c -- take no lock, so any may be held (the registry holds rt->mu): */
int prt__pool_new(prt_runtime *rt, const char *name, const prt_pool_opts *o, const char *conninfo,
                  prt_pool **out, char *err, size_t errlen);
void prt__pool_ref(prt_pool *p);
/* pool.c -- no lock held: */
void prt__pools_detach(prt_runtime *rt);         /* every pool rt made: rt = NULL */
void prt__closed_by(const prt_pool_stats *st, uint64_t by[PRT_CLOSE_NREASONS]); /* closes by PRT_CLOSE_* */
/* pool.c -- p->mu held: */
static inline void prt__waiter_wake(prt__waiter *w)
{
    if (w->wake) {
        w->wake(w);
    } else {
        atomic_fetch_add_explicit(&w->signal, 1, memory_order_relaxed);
        prt__futex_wake(&w->signal);
    }
}
void prt__pool_state(prt_pool *p, char *buf, size_t len); /* " (max=.. in_use=..)" */
void prt__waiter_push(prt_pool *p, prt__waiter *w);
prt__waiter *prt__waiter_pop(prt_pool *p);
void prt__waiter_unlink(prt_pool *p, prt__waiter *w);
int prt__hand_back(prt_pool *p, prt_conn *c, double now);   /* to the oldest waiter or idle (handoff mode) */
int prt__may_barge(prt_pool *p, double now);                /* a caller may pass the queue to an idle connection */
void prt__waiter_nudge(prt_pool *p);            /* barging: wake the oldest waiter to compete */
prt_conn *prt__take_idle(prt_pool *p, int i);
int prt__take_where(prt_pool *p, int (*pred)(prt_pool *, prt_conn *, double), double now, int keep,
                    prt_conn **out);

/* pool.c -- p->mu held: */
int prt__pool_has_work(const prt_pool *p);      /* in use, opening, waited for, or re-admitting */
int prt__pool_configured_max(const prt_pool *p); /* no lock needed: immutable */
/* pool.c -- no lock held: */
int prt__pool_evictable(prt_pool *p);           /* the eviction rule (views' `evictable`) */

/* Counts n closes under `why` in by[] (PRT__CLOSE_NONE: none); returns by. */
static inline const int *prt__counted_as(int by[PRT__CLOSE_NREASONS], enum prt__close_reason why, int n)
{
    for (int r = 0; r < PRT__CLOSE_NREASONS; r++)
        by[r] = 0;
    if (why != PRT__CLOSE_NONE)
        by[why] = n;
    return by;
}

/* pool_slots.c -- entered with p->mu held, returns with it released: */
void prt__retire_unlock(prt_pool *p, prt_conn **cs, int n, enum prt__close_reason why);
void prt__retire_by_unlock(prt_pool *p, prt_conn **cs, int n, const int *by);
/* pool_slots.c -- no lock held: */
void prt__pool_close(prt_pool *p, int reason);   /* PRT_POOL_*: refuse new work, close idle */
void prt__pool_apply_size(prt_pool *p);          /* size hook -> max/min_idle */
int prt__open_in_slot(prt_pool *p, double deadline, int for_idle, prt_conn **out, char *err, size_t errlen);
/* prt__open_in_slot in two halves, for a driver that connects on its own
 * time (the simulator): begin returns 0 when a connect may be attempted,
 * else the backoff's PRT_ECONNECT (err set); end records the outcome rc
 * (c on success; attempted: whether a connect ran) as open_in_slot does. */
int prt__open_begin(prt_pool *p, char *err, size_t errlen);
int prt__open_end(prt_pool *p, int attempted, int rc, prt_conn *c, int for_idle, prt_conn **out,
                  char *err, size_t errlen);
/* The endpoint hook's server for p's next connection: 0-based, -1 the
 * built-in order, -2 none (err set). */
int prt__chosen_endpoint(prt_pool *p, char *err, size_t errlen);

/* shared_budget.c -- a capacity provider (capacity.h): a budget of
 * connections shared by processes.  take and give run where capacity.c
 * takes and gives a slot (p->mu held); publish, owed and gave in the
 * budget thread's report (pools.c); the rest with no lock held. */
struct prt__budget_link;
int prt__budget_join(prt_runtime *rt, prt_budget *b, char *err, size_t errlen);
void prt__budget_leave(prt_runtime *rt);
int prt__budget_take(prt_runtime *rt);           /* 1: a unit taken; 0: the budget is spent */
void prt__budget_give(prt_runtime *rt, int n);
int prt__budget_over(const prt_runtime *rt);     /* more units held than the budget allows */
void prt__budget_blocked(prt_runtime *rt);       /* p->mu held: a caller waits for a unit */
void prt__budget_publish(prt_runtime *rt, int waiting); /* callers waiting for a unit; asks the others */
int prt__budget_owed(prt_runtime *rt);           /* idle connections to close for other members */
void prt__budget_gave(prt_runtime *rt);          /* one of them closed */

/* acquire.c: an acquire as a resumable state machine.  prt__acq_step
 * makes every decision (serve, queue, overflow, grow, evict, time out) and
 * returns what its driver must do before stepping again; the driver does
 * the waiting.  prt_acquire is the threads' driver (condvar, sched_yield,
 * libpq); sim.c drives the same steps from events on a virtual clock. */
enum prt__acq_next {
    PRT__ACQ_DONE,   /* a->c is the caller's, counted; unlock, then prt__acq_hand_out */
    PRT__ACQ_FAIL,   /* a->rc (negative), err set */
    PRT__ACQ_WAIT,   /* a->w is queued: wait until woken (a->w.wake or its cond) or until
                      * a->until, then set a->timed_out; a->wait_fresh: a new wait began */
    PRT__ACQ_OPEN,   /* a slot is reserved: connect into it (unlocked), a->rc = the outcome,
                      * a->c the connection; on an error the driver fails the caller */
    PRT__ACQ_CHECK,  /* a->c sat idle: check it (unlocked), a->alive = the answer */
    PRT__ACQ_YIELD   /* give up the CPU once (unlocked) */
};
typedef struct prt__pstate prt__pstate; /* policy_*.c, below */
typedef struct prt__acq {
    prt_pool *p;
    prt__pstate *ps;
    double start, deadline;
    double at;               /* a clock reading for the next look (0: read anew) */
    double until;            /* WAIT: the latest time to resume */
    prt_conn *c;
    int phase, yields, max_yields, rc;
    int timed_out, wait_fresh, alive, expired;
    prt__waiter w;
} prt__acq;
/* max_yields: sched_yields before queueing (0 in the simulator).  No lock held. */
void prt__acq_init(prt__acq *a, prt_pool *p, double timeout, int max_yields);
int prt__acq_step(prt__acq *a, char *err, size_t errlen); /* p->mu held on entry and return */
void prt__acq_hand_out(prt__acq *a);                       /* after DONE, no lock held */

/* reap.c -- no lock held: */
int prt__pool_reap(prt_pool *p, double now);     /* returns connections closed */

/* array.c */
void *prt__grow(void *array, int *cap, int need, size_t elem); /* NULL: out of memory, array kept */
/* modcache.c -- takes its own lock: spawned states' modules compiled once per process */
struct lua_State;
void prt__modcache_install(struct lua_State *L);

/* --- registry.c: pools by name; pools.c: work that spans the pools ------ */
/* No lock held: */
int prt__registry_readmit(prt_pool *p, char *err, size_t errlen); /* an acquire found p evicted */
void prt__registry_evict_pools(prt_runtime *rt, prt_pool **pools, int n, double now, int *evicted);
int prt__registry_snapshot(prt_runtime *rt, prt_pool ***out);
void prt__registry_release(prt_pool **pools, int n);
void prt__pools_wake(prt_runtime *rt);           /* slots came free: waiters of every pool */
int prt__pools_waiting_for_slots(prt_runtime *rt); /* callers blocked by the cap or the budget */
int prt__pools_evict_idle(prt_runtime *rt, prt_pool *self, enum prt__close_reason why);
void prt__pools_set_cap(prt_runtime *rt, int cap); /* the cap in force; shrinks lazily */
void prt__pools_first_budget(prt_runtime *rt);   /* a new runtime: the budget hook's first answer */
void prt__pools_policy_changed(prt_runtime *rt); /* after a reload: the new budget hook applies */
void prt__pools_server_full(prt_runtime *rt, double deadline); /* a connect refused as too many clients */
void prt__pools_on_capacity(prt_runtime *rt, int ev); /* capacity.h's callback */
/* pools.c -- p->mu held: */
void prt__pool_grant(prt_pool *p);               /* free slots to p's waiters, oldest first */

/* --- policy_*.c: the boundary to Lua policy hooks --------------------------
 * policy_state.c  policy files and the per-thread Lua states that run them
 * policy_views.c  the views hooks read (policy_views.h)
 * policy_hooks.c  hook names, hook calls and the checks on their answers
 * policy_check.c  loading a file: dry runs for `poolrt check` and reloads */
enum prt__hook {
    PRT__H_PICK, PRT__H_SIZE, PRT__H_OVERFLOW, PRT__H_ADMIT, PRT__H_EVICT, PRT__H_REAP,
    PRT__H_CONCURRENCY, PRT__H_ON_EVICT, PRT__H_BUDGET, PRT__H_ROUTE, PRT__H_ENDPOINT, PRT__NHOOKS
};
_Static_assert((int)PRT__NHOOKS == (int)PRT_NHOOKS, "include/poolrt.h's PRT_NHOOKS must count the hooks");
/* A hook's mode: the built-in default, a Lua function, or a named built-in
 * (its 1-based place in prt_policy_builtin_name's list for the hook). */
enum { PRT__MODE_DEFAULT = 0, PRT__MODE_LUA = -1 };
enum { PRT__PICK_MRU = 1, PRT__PICK_LRU, PRT__PICK_RANDOM };
enum { PRT__OVF_WAIT = 1, PRT__OVF_FAIL, PRT__OVF_EVICT_IDLE, PRT__OVF_GROW };
enum { PRT__ADMIT_EVICT_LRU = 1, PRT__ADMIT_FAIL, PRT__ADMIT_ALLOW };

/* A compiled and dry-run policy file; immutable once made, shared by
 * reference between the runtime and the per-thread states built from it. */
typedef struct prt__policy {
    atomic_int refs;
    uint64_t generation;     /* set before it is published */
    char *path;              /* NULL: the built-in default policy */
    char *source;            /* the file as read once */
    int mode[PRT__NHOOKS];
    int ban_after;           /* the policy's `ban` table: banned after this many failed connects (0: none) */
    double ban_first, ban_max; /* for ban_first seconds, doubling up to ban_max */
    double max_lag;          /* the policy's `max_lag`: seconds a standby may lag and still serve first (0: none) */
} prt__policy;

typedef struct prt__pstate prt__pstate; /* one thread's Lua state for one policy */

int prt__policy_load(const char *path, int32_t budget, prt__policy **out, char *report, size_t replen,
                     char *err, size_t errlen);
prt__policy *prt__policy_builtin(void);
void prt__policy_unref(prt__policy *pol);
prt__pstate *prt__policy_thread(prt_runtime *rt);   /* NULL: no Lua hooks live */
void prt__policy_forget(prt_runtime *rt);             /* drop this thread's state for rt */
int prt__pstate_mode(const prt__pstate *ps, int hook);

/* Hook calls.  Each validates what Lua returned and, on any failure, counts
 * and logs it and returns the built-in answer.  The lock each runs under is
 * part of its contract (docs/policies.md#hooks): */
/* p->mu held: */
int prt__hook_pick(prt__pstate *ps, prt_pool *p);                  /* idle index, or -1 */
int prt__hook_overflow(prt__pstate *ps, prt_pool *p, double timeout, double *wait);
int prt__hook_reap(prt__pstate *ps, prt_pool *p, double now, unsigned char *close); /* -1: use default */
/* rt->mu held (each pool's mu taken briefly to fill its view): */
int prt__hook_admit(prt__pstate *ps, prt_pool **pools, int n, const char *name); /* mode or 0 */
/* no lock held (p->mu, or each pool's, taken briefly to fill views): */
void prt__hook_size(prt__pstate *ps, prt_pool *p, int *max, int *min_idle);
int prt__hook_concurrency(prt__pstate *ps, prt_pool *p);           /* -1: use default */
int prt__hook_evict(prt__pstate *ps, prt_pool **pools, int n, double now, unsigned char *evict);
void prt__hook_on_evict(prt__pstate *ps, const char *name, const char *reason);
int prt__hook_budget(prt__pstate *ps, const prt_server_view *server, const prt_rt_view *rt); /* 0: no limit */
/* the multiplexer's lock held (p->mu taken briefly for the pool view): */
int prt__hook_route(prt__pstate *ps, prt_pool *p, const prt_route_view *conns, int n); /* 0-based, or -1 */
/* no lock held (p->mu taken briefly for the pool view): */
int prt__hook_endpoint(prt__pstate *ps, prt_pool *p, const prt_endpoint_view *eps, int n); /* 0-based, -1, -2: none */

/* --- multiplex.c, mux_lead.c, mux_choose.c, mux_spread.c, mux_wire.c, route.c: callers' statements pipelined on shared
 * connections (opts.multiplex).  Lock order: a multiplexer's lock, then its
 * pool's mu; never the other way round. */
typedef struct prt__mux prt__mux;
int prt__mux_new(prt_pool *p);                   /* p->mux and p->mux_ops; PRT_ENOMEM */
/* callback: p->mux_ops -- set by multiplex.c (prt__mux_new), called by pool.c, pool_slots.c
 * (they sit below the multiplexer, which acquires connections, so they never call it by name). */
typedef struct prt__mux_ops {
    void (*close)(prt_pool *p);                  /* prt__mux_close */
    void (*free)(prt_pool *p);                   /* prt__mux_free */
    void (*stats)(prt_pool *p, prt_pool_stats *s); /* prt__mux_stats */
} prt__mux_ops;
void prt__mux_close(prt_pool *p);                /* no lock held: give back every connection it can */
void prt__mux_reap(prt_pool *p, double now);     /* no lock held: give back idle or expired connections */
void prt__mux_free(prt_pool *p);                 /* the pool's last reference is gone */
int prt__mux_query(prt_pool *p, const char *sql, int nparams, const char *const *params, int flags,
                   prt_result **out, char *err, size_t errlen);
int prt__mux_query_batch(prt_pool *p, int n, prt_batch_item *items, int spread); /* outcomes in items */
int prt__route(prt_pool *p, const prt_route_view *conns, int n); /* route.c: index of the connection */
void prt__mux_stats(prt_pool *p, prt_pool_stats *s);  /* no lock held; zeros without a multiplexer */

/* --- pick.c --------------------------------------------------------------- */
int prt__pick(prt_pool *p, prt__pstate *ps);   /* index into p->idle; mu held */

/* --- runtime.c ------------------------------------------------------------ */
struct prt_runtime {
    prt_runtime_opts opts;   /* immutable (strings copied) */
    char *conninfo;          /* immutable */
    uint64_t id;             /* immutable, unique in the process: keys per-thread states */
    pthread_mutex_t mu;
    pthread_cond_t cond;     /* signals the timer thread */
    /* Protected by mu. */
    prt_pool **pools;
    int npools, pools_cap;
    prt_pool *pools_alive;   /* every pool made and not yet freed; pool.c's alive_mu, not mu */
    int stopping;            /* timer thread must exit */
    int draining;            /* no new acquires */
    /* Timer thread; started by prt_runtime_new, joined by prt_runtime_free. */
    pthread_t timer;
    int has_timer;

    pthread_mutex_t policy_mu;
    prt__policy *policy;     /* the live policy; policy_mu */
    double err_logged_at[PRT__NHOOKS]; /* rate limit of hook error lines; policy_mu */
    uint64_t err_suppressed[PRT__NHOOKS]; /* policy_mu */
    char last_hook_error[256]; /* policy_mu */
    /* Lock-free reads on hot paths; written under policy_mu. */
    atomic_uint_fast64_t generation;
    atomic_int pick_mode, overflow_mode, admit_mode, route_mode, endpoint_mode; /* the live policy's modes */
    atomic_int acquire_hooks_lua; /* pick or overflow is a Lua function: acquires need a policy state */
    atomic_uint_fast64_t hook_calls[PRT__NHOOKS], hook_errors[PRT__NHOOKS];
    atomic_uint_fast64_t reloads_ok, reloads_failed;
    atomic_int nconns;       /* open connections across pools (global slots) */
    atomic_int cap;          /* the global cap in force (0: none): max_connections, or the
                              * budget last applied by prt__set_cap; never above
                              * max_connections when that is set */
    atomic_int nwaiting;     /* callers waiting in any pool */
    prt__cap_report_fn *on_capacity; /* immutable once made: capacity.h's callback (pools.c) */
    /* callback: rt->mux_new -- set by runtime.c to prt__mux_new, called by registry.c (below the multiplexer) */
    int (*mux_new)(prt_pool *p); /* immutable once made */
    struct prt__budget_link *shared_budget; /* immutable once made; NULL: no shared budget (shared_budget.c) */
    atomic_uint_fast64_t pools_over_cap, pools_evicted[PRT_EVICT_NREASONS];
    struct prt__fleet *fleet; /* fleet.c's sampler; set before the runtime is shared, NULL without `fleet` */
    prt__recorder *rec;      /* immutable: opts.record's trace, NULL when not recording */
    const prt__conn_ops *conn_ops; /* set before the first pool (NULL: libpq); pools copy it */
    prt__eptab *eptab;       /* immutable: the servers its pools name (endpoint.c); pools hold references */
};

void *prt__timer_main(void *arg);
int prt__thread_create(pthread_t *t, void *(*fn)(void *), void *arg); /* thread.c: signals blocked */
void prt__thread_stop(pthread_t t, int started, pthread_mutex_t *mu, int rank, pthread_cond_t *cond, int *stopping);
char *prt__live_metrics(void);
char *prt__metrics_text_of(prt_runtime *const *rts, int n); /* metrics.c */
int prt__live_count(void);   /* runtimes SIGHUP, drain and metrics reach */

/* --- fleet.c: a capacity provider (capacity.h): application_name and the
 * server sampler, whose samples the `budget` hook turns into the cap ---- */
int prt__fleet_check(const prt_runtime_opts *o, char *err, size_t errlen); /* fleet name, interval */
int prt__fleet_start(prt_runtime *rt, const prt_runtime_opts *o, char *err, size_t errlen); /* first budget; sampler */
void prt__fleet_stop(prt_runtime *rt);             /* joins the sampler (bounded); frees rt->fleet */
char *prt__fleet_conninfo(prt_runtime *rt, const char *conninfo); /* + application_name; NULL: no memory */
void prt__fleet_pool_made(prt_runtime *rt, prt_pool *p); /* the sampler may connect with p's conninfo */
int prt__fleet_refused(prt_runtime *rt, const char *err); /* a connect refused as too many clients */
void prt__fleet_note_full(prt_runtime *rt);        /* one was: counted, an early sample */
int prt__fleet_view(prt_runtime *rt, prt_server_view *sv); /* the last good sample; 0: none */
int prt__fleet_resample(prt_runtime *rt);          /* an early sample; 0: no fleet */
void prt__fleet_stats(prt_runtime *rt, prt_runtime_stats *out);
/* conn.c: plain libpq with deadlines, for connections outside pools. */
int prt__pq_connect_poll(PGconn *pg, double deadline);
int prt__pq_exec(PGconn *pg, const char *sql, double deadline, PGresult **out);
/* conn.c: one statement with text parameters within a deadline (no prepared statement). */
int prt__conn_exec(prt_conn *c, const char *sql, int nparams, const char *const *params, double deadline,
                   PGresult **out, char *err, size_t errlen);
/* conn.c, for copy.c: socket waits, the query deadline (0: none), libpq's
 * error as one line, and collecting a command's results (stops at a COPY). */
int prt__conn_wait(prt_conn *c, short events, double deadline);
double prt__conn_deadline(prt_conn *c);
void prt__conn_pq_error(prt_conn *c, const char *what, char *err, size_t errlen);
int prt__conn_collect(prt_conn *c, double deadline, PGresult **out, char *err, size_t errlen);

#include "capacity.h"

#endif
