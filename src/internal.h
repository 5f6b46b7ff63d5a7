/*
 * internal.h -- structures shared by the C core (`prt__` names).
 *
 * Locking, in the order locks may be nested:
 *   rt->mu    the pool registry and the timer's stop flag;
 *   pool->mu  everything about one pool: idle list, counts, waiters, stats.
 * A connection has no lock: while idle it belongs to its pool (under
 * pool->mu); while in use it belongs to the one thread that acquired it.
 * No lock is held across network I/O (connect, query, close).
 */
#ifndef POOLRT_INTERNAL_H
#define POOLRT_INTERNAL_H

#include <pthread.h>
#include <libpq-fe.h>
#include "poolrt.h"

#define PRT__ERRLEN 512

/* --- clock.c ------------------------------------------------------------ */
struct timespec;
void prt__abstime(double deadline, struct timespec *ts); /* monotonic deadline -> cond wait time */
void prt__cond_init(pthread_cond_t *cond);                  /* a condvar on CLOCK_MONOTONIC */
double prt__rand01(void);                                   /* [0, 1), thread-local state */

/* --- log.c -------------------------------------------------------------- */
void prt__logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void prt__errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --- stmt.c: per-connection prepared statement cache ---------------------- */
typedef struct prt__stmt {
    char *sql;
    uint64_t hash;
    uint64_t last_use;       /* for LRU replacement */
    unsigned id;             /* statement name is "prt_<id>" */
} prt__stmt;

typedef struct prt__stmt_cache {
    prt__stmt *slots;
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

/* --- conn.c --------------------------------------------------------------- */
struct prt_conn {
    PGconn *pg;
    prt_pool *pool;
    uint64_t id;
    double created_at;
    double expires_at;       /* 0: never */
    double returned_at;      /* when last released (or opened) */
    uint64_t uses;
    int fatal;               /* the server sent FATAL: it is closing this connection */
    prt__stmt_cache stmts;
};

int prt__conn_open(prt_pool *p, double deadline, prt_conn **out, char *err, size_t errlen);
void prt__conn_close(prt_conn *c);
int prt__conn_alive(prt_conn *c);               /* non-blocking check of an idle socket */
int prt__conn_reset(prt_conn *c, double deadline); /* clean state for reuse; 0 or negative */
int prt__conn_expired(const prt_conn *c, double now);

/* --- pool.c --------------------------------------------------------------- */
enum prt__close_reason {
    PRT__CLOSE_IDLE, PRT__CLOSE_LIFETIME, PRT__CLOSE_BROKEN, PRT__CLOSE_EVICTED,
    PRT__CLOSE_SHRINK, PRT__CLOSE_NREASONS
};

typedef struct prt__waiter {
    struct prt__waiter *next;
    pthread_cond_t cond;
    prt_conn *conn;          /* handed over by a releaser; protected by pool->mu */
    int state;               /* waiting, handed a conn, granted a slot, or pool closed; pool->mu */
    double since;
} prt__waiter;

struct prt_pool {
    prt_runtime *rt;         /* immutable */
    char *name;              /* immutable */
    char *conninfo;          /* immutable */
    prt_pool_opts opts;      /* immutable, except max/min_idle below */
    double created_at;       /* immutable */

    pthread_mutex_t mu;
    /* Everything below is protected by mu. */
    int max, min_idle;
    prt_conn **idle;         /* idle[0] released longest ago, idle[nidle-1] most recently */
    int nidle, idle_cap;
    int total;               /* idle + in_use + opening */
    int in_use;
    int opening;
    int closed;              /* no new acquires; connections close on release */
    prt__waiter *wq_head, *wq_tail;
    int nwait;
    double last_used_at;
    uint64_t acquire_total, acquire_timeouts, acquire_wait_us;
    uint64_t created_total, connect_errors;
    uint64_t closed_by[PRT__CLOSE_NREASONS];
    uint64_t next_conn_id;
};

int prt__pool_new(prt_runtime *rt, const char *name, const prt_pool_opts *o,
                  prt_pool **out, char *err, size_t errlen);
void prt__pool_free(prt_pool *p);
void prt__pool_close(prt_pool *p);               /* refuse new work, close idle */
int prt__pool_reap(prt_pool *p, double now);     /* returns connections closed */
void prt__pool_state(prt_pool *p, char *buf, size_t len); /* "(max=.. in_use=..)", mu held */

/* --- pick.c --------------------------------------------------------------- */
int prt__pick(prt_pool *p);                     /* index into p->idle; mu held */

/* --- runtime.c ------------------------------------------------------------ */
struct prt_runtime {
    prt_runtime_opts opts;   /* immutable (conninfo copied) */
    char *conninfo;          /* immutable */
    pthread_mutex_t mu;
    pthread_cond_t cond;     /* signals the timer thread */
    /* Protected by mu. */
    prt_pool **pools;
    int npools, pools_cap;
    int stopping;            /* timer thread must exit */
    int draining;            /* no new acquires */
    /* Timer thread; started by prt_runtime_new, joined by prt_runtime_free. */
    pthread_t timer;
    int has_timer;
};

void *prt__timer_main(void *arg);

#endif
