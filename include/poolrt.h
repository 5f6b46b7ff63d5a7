/*
 * poolrt.h -- the one public header of poolrt, a PostgreSQL connection-pool
 * runtime.
 *
 * Naming: `prt_` is public (this file), `prt__` is internal (src/internal.h),
 * plain `static` is file-local.  Functions return 0 (PRT_OK) or a negative
 * PRT_E* code; where a call can fail for a reason a user must read, it takes
 * a caller-owned buffer `err`/`errlen` and writes one line into it that names
 * the pool and carries its state.
 *
 * Threading: every function is safe to call from any thread, except that a
 * prt_conn is used by one thread at a time (whoever acquired it) and a
 * runtime must not be freed while other threads still use it.
 *
 * The block between the PRT_CDEF markers is mirrored in lua/poolrt/cdef.lua
 * for LuaJIT's FFI; spec/cdef_spec.lua fails when the two drift apart.
 */
#ifndef POOLRT_H
#define POOLRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRT_VERSION "0.1.0"
/* prt_pool_opts.multiplex, prt_pool_query and prt_pool_query_batch are
 * here (as libpq-fe.h says LIBPQ_HAS_PIPELINING): code built against
 * several versions of poolrt can test for them. */
#define PRT_HAS_MULTIPLEX 1

/* PRT_CDEF_BEGIN */
enum {
    PRT_OK = 0,
    PRT_ENOMEM = -1,     /* allocation failed */
    PRT_EINVAL = -2,     /* bad argument (a programming error) */
    PRT_ETIMEDOUT = -3,  /* acquire, connect or query deadline passed */
    PRT_ECONNECT = -4,   /* could not open a server connection */
    PRT_EQUERY = -5,     /* the server reported an error for a query */
    PRT_EBROKEN = -6,    /* the connection broke during a query */
    PRT_ECLOSED = -7,    /* the pool or runtime is shutting down */
    PRT_ETHREAD = -8,    /* a thread could not be started */
    PRT_ENOTFOUND = -9,  /* no pool by that name */
    PRT_EFULL = -10,     /* pool full and the overflow policy says fail */
    PRT_EPOLICY = -11,   /* a policy file failed to load or dry-run */
    PRT_ERECONNECTED = -12 /* a listener's connection dropped and was re-established (not a failure) */
};

enum { PRT_LOG_OFF = -1, PRT_LOG_ERROR = 0, PRT_LOG_WARN = 1, PRT_LOG_INFO = 2, PRT_LOG_DEBUG = 3 };

enum { PRT_WAIT_BUCKETS = 10 }; /* acquire-wait histogram buckets (see prt_pool_stats) */
enum { PRT_DRAIN_GRACE = 10 };  /* seconds a drain waits for connections in use when given grace < 0 */

enum { PRT_CONCURRENCY_CAP = 5 }; /* the built-in concurrency rule's cap (prt_concurrency_builtin) */

enum { PRT_NHOOKS = 11 };        /* policy hooks; names from prt_policy_hook_name(0 .. PRT_NHOOKS-1) */

enum { PRT_HANDOFF_BOUND_MS = 1 }; /* barging: waited this long, a waiter is handed the next release
                                    * (the default of prt_pool_opts.handoff_bound) */

/* Values of prt_pool_stats.closed. */
enum { PRT_POOL_OPEN = 0, PRT_POOL_EVICTED = 1, PRT_POOL_DRAINING = 2 };

/* Indexes of prt_runtime_stats.pools_evicted_total, by reason. */
enum { PRT_EVICT_MANUAL = 0, PRT_EVICT_LRU = 1, PRT_EVICT_IDLE = 2, PRT_EVICT_NREASONS = 3 };

/* Why connections closed, in the order of prt_sim_result.closed_by; the
 * names (prt_close_reason_name) are the metrics' `reason` label and the
 * suffixes of prt_pool_stats.closed_*. */
enum { PRT_CLOSE_IDLE = 0, PRT_CLOSE_LIFETIME = 1, PRT_CLOSE_BROKEN = 2, PRT_CLOSE_EVICTED = 3,
       PRT_CLOSE_SHRINK = 4, PRT_CLOSE_ROLE = 5, PRT_CLOSE_NREASONS = 6 };

/* An endpoint's role (prt_endpoint_stats.role), as its server last said. */
enum { PRT_ROLE_UNKNOWN = 0, PRT_ROLE_PRIMARY = 1, PRT_ROLE_STANDBY = 2 };

/* Query flags. */
enum {
    PRT_Q_UNPREPARED = 1  /* no server-side prepared statement (PgBouncer transaction mode) */
};

typedef struct prt_runtime prt_runtime;
typedef struct prt_pool prt_pool;
typedef struct prt_conn prt_conn;
typedef struct prt_result prt_result;
typedef struct prt_budget prt_budget; /* connections shared by processes (src/shared_budget.c) */
typedef struct prt_listener prt_listener; /* LISTEN on a connection of its own (src/listen.c) */

/* Runtime options.  Fill with prt_runtime_opts_default(), then override. */
typedef struct prt_runtime_opts {
    const char *conninfo;    /* default conninfo for pools that give none (NULL: none) */
    double reap_interval;    /* seconds between background reap cycles; <= 0: no timer thread */
    int max_pools;           /* live pools before admission applies (0: unlimited) */
    int max_connections;     /* open connections across all pools (0: unlimited) */
    const char *policy;      /* policy file (NULL: the built-in default policy) */
    int hook_steps;          /* Lua steps a hook may take per call (default 1000000; was policy_budget) */
    double pool_idle_timeout; /* evict whole pools unused this long (default 0: never) */
    /* max_pools reached and nothing evictable: "fail" (NULL, the default)
     * or "allow" (admit over the cap and count it).  prt_runtime_new checks
     * the name and sets pools_overflow_allow from it; a NULL pools_overflow
     * leaves pools_overflow_allow as given (0 fail, 1 allow). */
    const char *pools_overflow;
    int pools_overflow_allow;
    const char *fleet;       /* fleet name: application_name poolrt:NAME:HOST:PID, server sampling (NULL: none) */
    double server_sample_interval; /* seconds between server samples of a fleet runtime (default 2) */
    prt_budget *shared_budget; /* join this budget of connections shared across processes (NULL: none) */
    const char *record;      /* append a trace of every acquire to this file for `poolrt sim` (NULL: none) */
} prt_runtime_opts;

/* Pool options.  Fill with prt_pool_opts_default(), then override.  Times in
 * seconds; 0 for idle_timeout / max_lifetime / query_timeout means never. */
typedef struct prt_pool_opts {
    const char *conninfo;    /* libpq conninfo; NULL: the runtime's default */
    int max;                 /* connections open at most (default 10; 0: not configured, 10 unless a size hook decides) */
    int min_idle;            /* idle connections the timer keeps open (default 0) */
    double acquire_timeout;  /* default wait for acquire, including connecting (default 5) */
    double idle_timeout;     /* close idle connections after this long (default 600) */
    double max_lifetime;     /* close connections older than this, minus jitter (default 1800) */
    double lifetime_jitter;  /* fraction of max_lifetime subtracted at random (default 0.1) */
    double validate_idle;    /* check the socket of connections idle this long on borrow (default 1) */
    double query_timeout;    /* cancel queries running longer (default 0) */
    int stmt_cache;          /* prepared statements kept per connection; 0: unprepared (default 64) */
    int discard_all;         /* run DISCARD ALL when a connection is released (default 0) */
    int threads;             /* threads that will use the pool, for size hooks (default 0) */
    int is_protected;        /* never evicted as a whole pool (default 0) */
    int is_pinned;           /* likewise; apartment's "pinned" tenants (default 0) */
    double leak_threshold;   /* warn about connections held longer (default 0: off) */
    double connect_backoff_max; /* after failed connects, retry at most this often (default 0.5) */
    /* SQL run (simple protocol, in order) on every new connection before it is
     * handed out, and again after DISCARD ALL; the pool copies the strings. */
    const char *const *init_sql;
    int ninit_sql;
    /* How a released connection reaches waiters (docs/guarantees.md#fair-waiting):
     * "barging" (NULL, the default): it goes idle, a running caller may take
     * it, the oldest waiter is woken to compete, and a waiter that has waited
     * PRT_HANDOFF_BOUND_MS gets the next one directly; "fifo": always straight
     * to the oldest waiter, and new callers never pass a non-empty queue. */
    const char *handoff;
    double handoff_bound;    /* barging: seconds a waiter waits before releases go straight
                              * to it (default PRT_HANDOFF_BOUND_MS / 1000) */
    /* Statements run through prt_pool_query share the pool's connections in
     * libpq pipeline mode (docs/multiplexing.md#multiplexing); acquires stay exclusive. */
    int multiplex;
} prt_pool_opts;

/* A consistent snapshot of one pool, names after PgBouncer's SHOW POOLS. */
typedef struct prt_pool_stats {
    int max, min_idle;
    int total;               /* open connections, including ones being opened */
    int idle;                /* sv_idle */
    int in_use;              /* sv_active == cl_active */
    int waiting;             /* cl_waiting */
    double maxwait;          /* seconds the oldest waiter has waited */
    double created_at, last_used_at;
    uint64_t acquire_total, acquire_timeouts_total, acquire_wait_us_total;
    /* acquires by wait, upper bounds 0.5ms 1ms 5ms 10ms 50ms 100ms 0.5s 1s 5s +Inf */
    uint64_t acquire_wait_buckets[PRT_WAIT_BUCKETS];
    uint64_t connections_created_total, connect_errors_total;
    uint64_t connect_backoff_total; /* acquires refused at once while backing off */
    uint64_t leaks_total;           /* connections held past leak_threshold */
    uint64_t closed_idle, closed_lifetime, closed_broken, closed_evicted, closed_shrink;
    uint64_t closed_role;    /* released on an endpoint that no longer fits target_session_attrs */
    uint64_t grown_total;    /* opened over max because the overflow policy said "grow" */
    int is_protected, is_pinned;
    int closed;              /* PRT_POOL_OPEN, PRT_POOL_EVICTED or PRT_POOL_DRAINING */
    uint64_t init_sql_errors_total; /* new connections closed because init_sql failed */
    uint64_t tx_retries_total;      /* transactions re-run after 40001/40P01 (prt_pool_note_tx_retry) */
    /* The multiplexer (pool option multiplex; zeros without it). */
    int mux_connections;            /* connections it holds now, retiring ones included */
    int mux_in_flight;              /* statements queued or sent, not answered yet */
    uint64_t mux_statements_total;  /* statements answered: a result or an error */
    uint64_t mux_rerouted_total;    /* statements routed again (their connection broke before sending them, ...) */
    uint64_t mux_lost_total;        /* statements failed in flight on a connection that broke */
} prt_pool_stats;

typedef struct prt_runtime_stats {
    int pools, max_pools;
    int connections, max_connections; /* open across pools */
    uint64_t pools_over_cap_total;
    uint64_t pools_evicted_total[PRT_EVICT_NREASONS];  /* by PRT_EVICT_* */
    /* The connection budget (src/fleet.c). */
    int budget;              /* the cap in force (0: none): the budget hook's answer, or max_connections */
    int budget_waiting;      /* callers waiting in pools below their max: blocked by the budget */
    double sampled_at;       /* prt_now() of the last server sample (0: none yet) */
    double sampled_unix;     /* the same moment as Unix time (0: none yet) */
    int server_max_connections, server_reserved, server_backends; /* from the last sample */
    int fleet_members, fleet_backends, own_backends;                /* likewise */
    uint64_t samples_total, sample_errors_total;
    uint64_t server_full_total; /* connects refused with SQLSTATE 53300 that waited instead of failing */
} prt_runtime_stats;

/* One server (host:port) of a runtime, shared by every pool that names it
 * in a conninfo of several hosts (prt_runtime_endpoints). */
typedef struct prt_endpoint_stats {
    char name[128];          /* "host:port" */
    int role;                /* PRT_ROLE_*: in_hot_standby at the last connect; unknown after a bad sign */
    int up;                  /* its last connect succeeded */
    int failures;            /* consecutive failed connects */
    double retry_at;         /* prt_now() before which a down endpoint is tried last (0: none) */
    int open;                /* open connections of every pool */
    uint64_t connects_total, connect_failures_total;
    uint64_t role_changes_total; /* a known role became the other one: a failover or switchover */
    double sampled_at;       /* prt_now() of the runtime's last sample of it (0: none yet) */
    int64_t lag_bytes;       /* a standby's replay behind its primary's WAL (-1: unknown; 0 for a primary) */
    double lag_seconds;      /* 0 when it replayed all it received, else how old its last replayed commit is */
} prt_endpoint_stats;

/* A shared budget's numbers (prt_budget_stats_get).  The first block is
 * the whole budget, every member process; the second is one runtime's. */
typedef struct prt_budget_stats {
    int max;                 /* connections the budget allows across its members */
    int used;                /* units held by every member: connections open or opening */
    int members;             /* runtimes joined (live, or dead and not yet reclaimed) */
    int waiting;             /* callers of every member waiting for a unit */
    uint64_t evictions_asked_total, evictions_given_total, reclaimed_total;
    int held;                /* this runtime's units */
    int held_waiting;        /* this runtime's callers waiting for a unit */
    uint64_t asked_total;    /* times this runtime asked the others to close an idle connection */
    uint64_t given_total;    /* idle connections this runtime closed for another member */
} prt_budget_stats;

/* Policy hooks: pick, size, overflow, admit, evict, reap, concurrency,
 * on_evict, budget, route, endpoint, numbered 0..PRT_NHOOKS-1 in that order; prt_policy_hook_name
 * gives each one's name, prt_policy_builtin_name the built-in strategies a
 * policy may name for it (NULL past the last).  Bindings derive the names
 * from these rather than writing them out (PRT_NHOOKS is defined above). */

/* Policy counters; arrays are indexed by hook (see prt_policy_hook_name). */
typedef struct prt_policy_stats {
    uint64_t calls[PRT_NHOOKS], errors[PRT_NHOOKS];
    uint64_t reloads_ok, reloads_failed, generation;
    char last_error[256];    /* the latest failed hook call: file:line, hook, error */
} prt_policy_stats;

/* One thread's outcome in prt_spawn: ok != 0 and a serialized Lua value, or
 * ok == 0 and an error message.  `value` is freed by prt_spawn_free. */
typedef struct prt_spawn_result {
    int ok;
    char *value;
} prt_spawn_result;

const char *prt_version(void);
const char *prt_strerror(int rc);
double prt_now(void);
void prt_sleep(double seconds);
void prt_log_set_level(int level);
int prt_log_get_level(void);
void prt_log(int level, const char *msg);
/* The log levels' names, the one list ("off", "error", "warn", "info",
 * "debug"): the name of PRT_LOG_* `level` (NULL out of range), and the
 * level named `name` (PRT_EINVAL for an unknown or NULL name). */
const char *prt_log_level_name(int level);
int prt_log_level_parse(const char *name);

void prt_runtime_opts_default(prt_runtime_opts *o);
int prt_runtime_new(const prt_runtime_opts *o, prt_runtime **out, char *err, size_t errlen);
int prt_runtime_drain(prt_runtime *rt, double grace);
void prt_runtime_free(prt_runtime *rt);
int prt_reap(prt_runtime *rt, int *pools_evicted);
int prt_runtime_evict(prt_runtime *rt, const char *name, char *err, size_t errlen);
void prt_runtime_stats_get(prt_runtime *rt, prt_runtime_stats *out);
int prt_runtime_pool_count(prt_runtime *rt);
/* Fills out[0..max) with the runtime's endpoints; returns how many it has. */
int prt_runtime_endpoints(prt_runtime *rt, prt_endpoint_stats *out, int max);
prt_pool *prt_runtime_pool_at(prt_runtime *rt, int i);

int prt_runtime_reload(prt_runtime *rt, const char *path, char *err, size_t errlen);
int prt_reload_all(void);
int prt_drain_all(double grace);
void prt_runtime_policy_stats(prt_runtime *rt, prt_policy_stats *out);
const char *prt_policy_hook_name(int hook);
const char *prt_policy_builtin_name(int hook, int i);
const char *prt_evict_reason_name(int reason); /* PRT_EVICT_*: "manual", "lru", "idle"; "?" otherwise */
const char *prt_close_reason_name(int reason); /* PRT_CLOSE_*: "idle", "lifetime", "broken", "evicted", "shrink", "role"; "?" otherwise */
int prt_policy_check(const char *path, char *report, size_t replen);

int prt_budget_new(int max, int reuse, prt_budget **out, char *err, size_t errlen);
void prt_budget_free(prt_budget *b);
int prt_budget_stats_get(prt_budget *b, prt_runtime *rt, prt_budget_stats *out);

void prt_pool_opts_default(prt_pool_opts *o);
int prt_pool_get(prt_runtime *rt, const char *name, const prt_pool_opts *o,
                 prt_pool **out, char *err, size_t errlen);
void prt_pool_unref(prt_pool *p);
const char *prt_pool_name(const prt_pool *p);
int prt_pool_stats_get(prt_pool *p, prt_pool_stats *out);
int prt_pool_concurrency(prt_pool *p);
/* The built-in concurrency rule (coder's reconciler; the policy name
 * "half"): background jobs may hold half of a pool of `max`, at least 1,
 * at most PRT_CONCURRENCY_CAP. */
int prt_concurrency_builtin(int max);
double prt_wait_bucket_bound(int i); /* upper bound (s) of acquire_wait_buckets[i]: +Inf last, < 0 out of range */
int prt_pools_allocated(void);       /* pool structs alive in this process: live, or evicted and still referenced */

int prt_acquire(prt_pool *p, double timeout, prt_conn **out, char *err, size_t errlen);
void prt_release(prt_conn *c, int broken);
uint64_t prt_conn_id(const prt_conn *c);
int prt_conn_backend_pid(const prt_conn *c);
int prt_conn_endpoint(const prt_conn *c);
int prt_query(prt_conn *c, const char *sql, int nparams, const char *const *params,
              int flags, prt_result **out, char *err, size_t errlen);
/* One statement on pool p without an acquire: with opts.multiplex it is
 * pipelined on a connection the route hook picks (src/multiplex.c), else
 * acquire + prt_query + release.  Same results and errors as prt_query;
 * PRT_EBROKEN: the connection broke while the statement was in flight. */
int prt_pool_query(prt_pool *pool, const char *sql, int nparams, const char *const *params,
                   int flags, prt_result **out, char *err, size_t errlen);
/* One statement of a batch (prt_pool_query_batch): sql .. flags are the
 * caller's input, as prt_pool_query's; result, rc and err are its outcome. */
typedef struct prt_batch_item {
    const char *sql;
    int nparams;
    const char *const *params;
    int flags;
    prt_result *result; /* out: 0 rc: the result (the caller frees it), else NULL */
    int rc;             /* out: 0 or PRT_E*, as prt_pool_query would return */
    char err[256];      /* out: why, when rc < 0 */
} prt_batch_item;
/* n independent statements on pool p, each with a Sync of its own (one
 * failing touches no other), returning when all are done.  With
 * opts.multiplex they are queued at once on one multiplexed connection and
 * the caller leads its I/O (no wake-up per statement); else one connection
 * is acquired, the n are pipelined on it, and it is released.  Every item
 * gets its outcome; returns 0 when all succeeded, else the first failed
 * item's rc with err "statement i of n: why" (1-based); PRT_EINVAL for bad
 * arguments (no item touched). */
int prt_pool_query_batch(prt_pool *pool, int n, prt_batch_item *items, char *err, size_t errlen);
enum { PRT_SPREAD_CHUNK = 16 }; /* statements per connection in a spread batch, at most */
/* The same for statements that do not depend on each other's order: with
 * opts.multiplex they are split into chunks of up to PRT_SPREAD_CHUNK, each
 * pipelined on a connection of its own where the pool has them (growing up
 * to max), so several server processes run them at once and a slow
 * statement holds up only its chunk; the caller leads the I/O of every
 * chunk whose connection has no leader.  Without multiplex, the same as
 * prt_pool_query_batch. */
int prt_pool_query_spread(prt_pool *pool, int n, prt_batch_item *items, char *err, size_t errlen);

int prt_result_ntuples(const prt_result *r);
int prt_result_nfields(const prt_result *r);
const char *prt_result_fname(const prt_result *r, int col);
const char *prt_result_value(const prt_result *r, int row, int col);
int prt_result_isnull(const prt_result *r, int row, int col);
int prt_result_length(const prt_result *r, int row, int col);
/* The column's type OID (pg_type.oid), for decoding its text values. */
unsigned int prt_result_ftype(const prt_result *r, int col);
long long prt_result_affected(const prt_result *r);
void prt_result_free(prt_result *r);
/* The SQLSTATE of the last error a query on c reported ("40001"), "" after a
 * success; valid until the next query on c. */
const char *prt_conn_sqlstate(const prt_conn *c);
/* Counts one transaction retry in p's stats (bindings' transaction helpers). */
void prt_pool_note_tx_retry(prt_pool *p);

/* LISTEN/NOTIFY (src/listen.c).  A listener owns one acquired connection of
 * its pool; it is used by one thread at a time, like a prt_conn.  A
 * notification's strings belong to the listener and stay valid until its
 * next wait or its close. */
typedef struct prt_notification {
    const char *channel;
    const char *payload;
    int pid;                 /* the notifying backend */
} prt_notification;
int prt_listener_open(prt_pool *p, const char *const *channels, int n, prt_listener **out,
                      char *err, size_t errlen);
/* 0 and *out filled; PRT_ETIMEDOUT; PRT_ERECONNECTED once after a dropped
 * connection was replaced (what was sent meanwhile is lost); or an error. */
int prt_listener_wait(prt_listener *l, double timeout, prt_notification *out, char *err, size_t errlen);
int prt_listener_backend_pid(const prt_listener *l); /* 0 while reconnecting */
void prt_listener_close(prt_listener *l);
/* COPY ... FROM STDIN (text format) on c, in three steps (src/copy.c):
 * begin sends the statement and gives the columns each row must have;
 * put sends bytes of COPY text (any split, lines need not be whole); end
 * finishes (errmsg NULL) and gives the rows copied, or aborts with errmsg,
 * which the server reports back.  Each wait is bounded by the pool's
 * query_timeout.  PRT_EBROKEN: the connection must be released as broken. */
int prt_copy_begin(prt_conn *c, const char *sql, int *ncols, char *err, size_t errlen);
int prt_copy_put(prt_conn *c, const char *buf, size_t len, char *err, size_t errlen);
int prt_copy_end(prt_conn *c, const char *errmsg, long long *rows, char *err, size_t errlen);

char *prt_metrics_text(prt_runtime *rt);
char *prt_metrics_all(void);
void prt_free(void *ptr);

int prt_spawn(prt_runtime *rt, int n, const char *module, const char *fn,
              const char *args, const char *path, const char *cpath,
              prt_spawn_result *results);
void prt_spawn_free(prt_spawn_result *results, int n);
/* Simulation (`poolrt sim`, src/sim/): the real runtime, pools and
 * policy hooks driven on a virtual clock by a single-threaded event loop,
 * with simulated server connections.  Times in virtual seconds.  A prt_sim
 * is used by one thread; while one of its calls runs, prt_now() on that
 * thread reads the simulation's clock. */
enum { PRT_SIM_CONST = 0, PRT_SIM_EXP = 1, PRT_SIM_UNIFORM = 2, PRT_SIM_LOGNORMAL = 3 };
enum { PRT_SIM_MAX_ENDPOINTS = 16 };
/* CONST: a; EXP: mean a; UNIFORM: [a, b]; LOGNORMAL: median a, p99 b. */
typedef struct prt_sim_dist { int kind; double a, b; } prt_sim_dist;
typedef struct prt_sim prt_sim;
typedef struct prt_sim_result {
    uint64_t acquires;       /* acquires that got a connection */
    uint64_t timeouts;       /* acquires that timed out, or failed as full (overflow or admit "fail") */
    uint64_t errors;         /* other failed acquires (connect failures, closed pools) and queries
                              * on connections an outage broke */
    double wait_p50_ms, wait_p99_ms, wait_max_ms; /* acquire waits, successful or not */
    uint64_t opened, closed;
    uint64_t closed_by[PRT_CLOSE_NREASONS]; /* by PRT_CLOSE_* */
    int peak_connections;
    uint64_t endpoint_acquires[PRT_SIM_MAX_ENDPOINTS];
    int nendpoints;
    double endpoint_max_min; /* max/min of endpoint_acquires, min taken as >= 1 (1 with one endpoint) */
    uint64_t pools_evicted, pools_recreated;
    uint64_t hook_calls, hook_errors;
    uint64_t background_jobs, background_peak;
    double wall_seconds;     /* how long prt_sim_run took */
    double virtual_seconds;  /* the virtual time the run ended at (>= duration: pending callers finish) */
    uint64_t events;         /* events the loop processed */
    /* Clusters (prt_sim_role ...): acquires of pools that read (target_session_attrs
     * prefer-standby, standby, read-only) and of those that write (read-write,
     * primary); reads served by a standby more than 1 s behind (its lag at the
     * time); writes per endpoint; connects a server refused for its role. */
    uint64_t reads, stale_reads, writes;
    uint64_t endpoint_writes[PRT_SIM_MAX_ENDPOINTS];
    uint64_t role_refusals;
} prt_sim_result;
/* A simulation of one policy file (NULL: the built-in default; o->policy is
 * ignored) on a fresh runtime with options o (NULL: defaults; its
 * reap_interval is kept for virtual reap ticks), virtual time 0, seeded. */
int prt_sim_new(const prt_runtime_opts *o, const char *policy_path, uint64_t seed,
                prt_sim **out, char *err, size_t errlen);
void prt_sim_free(prt_sim *s);
/* Set-up, before prt_sim_run; each returns an index or 0, or PRT_EINVAL.
 * endpoint: a server (none added: one, 2.7 ms connects, instant queries).
 * outage: connects to it fail and its open connections break for `duration`.
 * source: traffic on pool `name` (opts copied as prt_pool_get's; threads as
 * the pool view's; background: jobs limited by the concurrency hook).
 * rate: Poisson arrivals, `rate` per second from `at` on (0 stops).
 * work: each acquire holds for `statements` x the endpoint's query latency
 * plus `hold` (default: 1 statement, no hold).  burst: n acquires at `at`.
 * replay: one acquire at `at` holding `hold`. */
int prt_sim_endpoint(prt_sim *s, const char *name, prt_sim_dist connect, prt_sim_dist query);
int prt_sim_outage(prt_sim *s, int endpoint, double at, double duration);
int prt_sim_source(prt_sim *s, const char *name, const prt_pool_opts *o, int threads, int background);
int prt_sim_rate(prt_sim *s, int src, double at, double rate);
int prt_sim_work(prt_sim *s, int src, prt_sim_dist hold, int statements);
int prt_sim_burst(prt_sim *s, int src, double at, int n);
int prt_sim_replay(prt_sim *s, int src, double at, double hold);
/* Clusters (docs/sim.md).  role: an endpoint's role at time 0
 * (PRT_ROLE_PRIMARY, the default, or PRT_ROLE_STANDBY).  lag: from `at` on,
 * a standby's replay lag in seconds, drawn from `lag` then and at each
 * simulated sample (runtime option server_sample_interval).  promote: at
 * `at` the endpoint becomes the primary and every other primary a standby
 * (its connections break, as its restart as a standby breaks them).
 * attrs: source src's pool gets target_session_attrs (libpq's words) on
 * its conninfo; libpq's refusal of the wrong role is simulated. */
int prt_sim_role(prt_sim *s, int endpoint, int role);
int prt_sim_lag(prt_sim *s, int endpoint, double at, prt_sim_dist lag);
int prt_sim_promote(prt_sim *s, int endpoint, double at);
int prt_sim_attrs(prt_sim *s, int src, const char *target_session_attrs);
/* Runs once: arrivals until `duration`, then callers still pending finish. */
int prt_sim_run(prt_sim *s, double duration, prt_sim_result *out, char *err, size_t errlen);
/* After the run, one point per `step` s (at least max(duration / 4000, 1 ms)): mean
 * connections in use and open, p99 wait of acquires ending in the step (ms);
 * any array may be NULL.  Returns the points written (<= max). */
int prt_sim_series(prt_sim *s, double step, double *in_use, double *open, double *wait_p99_ms, int max);
prt_runtime *prt_sim_runtime(prt_sim *s); /* the simulation's real runtime (stats, policy stats) */
/* Clusters (src/cluster.c, docs/clusters.md): one name for writes and
 * reads over a conninfo of several servers.  prt_cluster_get makes or
 * fetches pool `name` (o's conninfo, or the runtime's, with
 * target_session_attrs=read-write) and pool "name.read" (prefer-standby),
 * both from o's other options; *primary and *reads are new references
 * (prt_pool_unref each).  PRT_EINVAL when the conninfo sets
 * target_session_attrs itself, or a pool of either name exists with another
 * conninfo.  prt_cluster_conninfo writes the conninfo of either pool
 * (reads 0: `name`'s, 1: "name.read"'s) into out, for bindings that
 * re-create the pools. */
int prt_cluster_get(prt_runtime *rt, const char *name, const prt_pool_opts *o, prt_pool **primary,
                    prt_pool **reads, char *err, size_t errlen);
int prt_cluster_conninfo(prt_runtime *rt, const char *conninfo, int reads, char *out, size_t outlen,
                         char *err, size_t errlen);
/* PRT_CDEF_END */

/* prt_log with printf formatting, for C callers (the host, embeddings).
 * Outside the FFI block: variadic, and Lua formats its own strings. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void prt_logf(int level, const char *fmt, ...);

#ifdef __cplusplus
}
#endif
#endif /* POOLRT_H */
