/*
 * sim.h -- what the simulator's files share (sim.c the API and event loop,
 * sim_heap.c its event queue, sim_dist.c random draws and wait histograms,
 * sim_conn.c endpoints and simulated connections, sim_stats.c the result
 * and the time series).  One prt_sim is used by one thread; nothing here
 * locks, except the pool locks the real core takes.
 *
 * The simulator is a room of its own, src/sim/: nothing outside it
 * includes this header; the core knows the simulator only through the
 * public prt_sim_* API and the hooks in internal.h (the connection-ops
 * table, the virtual clock).  Its files keep their sim_ prefix so that
 * every file name in src/ stays unique: comments across the core name
 * files without their folder (sim_conn.c is not conn.c), and the static
 * library's members are named by file.
 */
#ifndef POOLRT_SIM_H
#define POOLRT_SIM_H

#include "internal.h"

/* --- sim_heap.c: events ordered by (time, sequence), so ties run in the
 * order they were scheduled and a seed gives one history. */
typedef struct prt__sim_ev {
    double t;
    uint64_t seq;
    uint32_t kind, id, serial;
} prt__sim_ev;
typedef struct prt__sim_heap {
    prt__sim_ev *a;
    int n, cap;
    uint64_t seq;
    prt__sim_ev *q;          /* the timeline: a ring of events in time order (see sim_heap.c) */
    int qhead, qn, qcap;
} prt__sim_heap;
int prt__sim_push(prt__sim_heap *h, double t, int kind, uint32_t id, uint32_t serial); /* 0 or PRT_ENOMEM */
/* The same, for events that usually come in time order (timeouts): kept in
 * the ring when they do, so most never enter the heap. */
int prt__sim_push_late(prt__sim_heap *h, double t, int kind, uint32_t id, uint32_t serial);
int prt__sim_pop(prt__sim_heap *h, prt__sim_ev *out);                                 /* 0: empty */
void prt__sim_heap_free(prt__sim_heap *h);

/* --- sim_dist.c: a seeded generator, distributions, wait histograms --- */
double prt__sim_u01(uint64_t *rng);                          /* (0, 1) */
double prt__sim_exp(uint64_t *rng, double mean);
double prt__sim_draw(uint64_t *rng, const prt_sim_dist *d);  /* >= 0 */
int prt__sim_check_dist(const prt_sim_dist *d);              /* 0 or PRT_EINVAL */
enum { PRT__SIM_HBUCKETS = 1216 };                           /* ~3% wide, 1 us .. days */
int prt__sim_hbucket(double seconds);
double prt__sim_hvalue(int bucket);                          /* seconds, the bucket's middle */
int prt__sim_qbucket(const uint64_t *h, int nb, uint64_t total, double q); /* the bucket holding quantile q */
enum { PRT__SIM_CBUCKETS = 100 };                            /* the series' coarse buckets (4 per octave) */
int prt__sim_cbucket(double seconds);
double prt__sim_cvalue(int bucket);

/* --- sim_conn.c: endpoints, outages and simulated connections ---------- */
typedef struct prt__sim_endpoint {
    char *name;
    prt_sim_dist connect, query;
    int down;                /* outages in force */
    uint32_t epoch;          /* outages (and demotions) begun: a connection opened before the last one is broken */
    int role;                /* PRT_ROLE_PRIMARY or _STANDBY: what the server is (the runtime learns it) */
    prt_sim_dist lag;        /* a standby's replay lag from the last lag step (seconds) */
    double lag_now;          /* its value now: drawn at the step and at each sample */
} prt__sim_endpoint;
enum { PRT__SIM_STALE_S = 1 }; /* a read on a standby further behind than this is stale */
typedef struct prt__sim_conn {
    prt_conn c;              /* first: a prt_conn * is a prt__sim_conn * */
    uint32_t epoch;          /* its endpoint's epoch when it opened */
    struct prt__sim_conn *next_free;
} prt__sim_conn;
extern const prt__conn_ops prt__sim_conn_ops;
void prt__sim_set_current(prt_sim *s);                      /* the sim this thread runs (NULL: none) */
/* Opens a connection of p now (the connect latency is the caller's:
 * *latency): on endpoint `first` (the endpoint hook's; -1 none), then in
 * the pool's order; PRT_ECONNECT when every one is down or refuses. */
int prt__sim_connect(prt_sim *s, prt_pool *p, int first, prt_conn **out, double *latency, char *err, size_t errlen);
int prt__sim_conn_broken(prt_sim *s, const prt_conn *c);
void prt__sim_conns_free(prt_sim *s);
char *prt__sim_conninfo(prt_sim *s);                         /* "host=sim0,sim1 ..." for the pools */

/* --- sim.c: the simulation ------------------------------------------- */
typedef struct prt__sim_step { double at, rate; } prt__sim_step;
typedef struct prt__sim_replay { double at, hold; } prt__sim_replay;

typedef struct prt__sim_source {
    char *name;
    prt_pool_opts opts;
    int background;
    prt_pool *pool;          /* the live handle (NULL before the first acquire) */
    int shares;              /* the first source on the same pool name, whose handle this one
                              * uses (foreground + background on one pool), or -1 */
    prt_sim_dist hold;
    int statements;
    prt__sim_step *steps;
    int nsteps, steps_cap;
    double rate;
    uint32_t epoch;          /* rate changes: an arrival drawn under an older rate is stale */
    prt__sim_replay *replays;
    int nreplays, replays_cap;
    char *attrs;             /* target_session_attrs (NULL: none) */
    char *conninfo;          /* the endpoints' conninfo with attrs (NULL: the sim's) */
    prt__sim_step *bursts;   /* at, n */
    int nbursts, bursts_cap;
    int running;             /* background: jobs holding or acquiring */
    uint64_t pending;        /* background: jobs queued for the concurrency limit */
    int starting;            /* background: start_jobs is running */
} prt__sim_source;

typedef struct prt__sim_caller {
    prt__acq a;              /* the real acquire; its waiter is queued in the pool */
    prt_sim *sim;
    uint32_t id;             /* its index (immutable) */
    int src;
    int busy;
    uint32_t serial;         /* bumped at each new wait and at the end: stale events are dropped */
    int resume_pending;
    double arrived, hold;    /* hold < 0: drawn from the source's work */
    prt_conn *opened;        /* a connect in flight: its outcome */
    int open_rc;
    uint32_t next_free;
} prt__sim_caller;

typedef struct prt__sim_bin {  /* one time-series step of `res` virtual seconds */
    double in_use, open;       /* sums of samples */
    uint32_t samples;
    uint32_t wait[PRT__SIM_CBUCKETS];
} prt__sim_bin;

struct prt_sim {
    prt_runtime *rt;
    double now;              /* the virtual clock (prt__clock_set) */
    uint64_t seed, rng;
    double reap_interval;    /* the user's; the runtime's own timer is off */
    prt__sim_heap heap;
    prt__sim_endpoint eps[PRT_SIM_MAX_ENDPOINTS];
    int neps;
    struct { int e; double at, dur; } *outages;
    int noutages, outages_cap;
    struct { int e; double at; prt_sim_dist lag; } *lags; /* lag steps */
    int nlags, lags_cap;
    struct { int e; double at; } *promotes;
    int npromotes, promotes_cap;
    double sample_interval;  /* the runtime's server_sample_interval: the simulated sampler's */
    prt__sim_source *srcs;
    int nsrcs, srcs_cap;
    prt__sim_caller **chunks; /* callers never move: their waiters are linked into pools */
    int nchunks;
    uint32_t free_caller;     /* free list head, UINT32_MAX: none */
    prt__sim_conn *free_conns;
    char *conninfo;
    prt_pool **held;          /* every pool handle taken (one reference each), for the counters */
    int nheld, held_cap;
    int ran;
    double duration;
    /* statistics */
    uint64_t hist[PRT__SIM_HBUCKETS];
    uint64_t acquires, timeouts, errors, waits, recreated, bg_jobs, bg_peak, events;
    uint64_t ep_acquires[PRT_SIM_MAX_ENDPOINTS];
    uint64_t reads, stale_reads, writes, role_refusals, ep_writes[PRT_SIM_MAX_ENDPOINTS];
    double wait_max;
    int in_use, peak, peak_open;
    prt__sim_bin *bins;
    int nbins;
    double res;
};

void prt__sim_result(prt_sim *s, prt_sim_result *out); /* sim_stats.c */
void prt__sim_sample(prt_sim *s, int bin);               /* sim_stats.c: one series sample now */
void prt__sim_count_wait(prt_sim *s, double waited);     /* sim_stats.c */

#endif
