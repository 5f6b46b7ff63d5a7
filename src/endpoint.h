/*
 * endpoint.h -- the runtime's table of servers, shared by endpoint.c (the
 * facts, and the pools' choice) and endpoint_sample.c (its sampler).
 */
#ifndef POOLRT_ENDPOINT_H
#define POOLRT_ENDPOINT_H

#include "internal.h"

#define RT_ENDPOINTS 64
enum { WANT_ANY, WANT_PRIMARY, WANT_STANDBY, PREFER_STANDBY };
static inline uint64_t now_us(void)
{
    return (uint64_t)(prt_now() * 1e6);
}

enum { TIER_BEST = 1, TIER_UNKNOWN, TIER_OTHER, TIER_LAGGING, TIER_DOWN, TIER_BANNED };
static const double RETRY_FIRST = 1.0, RETRY_MAX = 30.0;

typedef struct endpoint {
    char name[128];          /* "host:port", immutable once published */
    char *conninfo;          /* the sampler's: the first pool's options for it; immutable once published */
    PGconn *probe;           /* the sampler thread's connection to it, kept between samples */
    atomic_int role;         /* PRT_ROLE_* */
    atomic_int known;        /* the last role that was not unknown */
    atomic_int up, failures, open;
    atomic_uint_fast64_t retry_us; /* prt_now() in microseconds: down (no ban) or banned until then */
    atomic_int trial;        /* a ban ended: the one trial connect is under way */
    atomic_uint_fast64_t connects, connect_failures, role_changes;
    /* The sampler's last look (endpoint_sample.c). */
    atomic_uint_fast64_t sampled_us;      /* prt_now() in microseconds; 0: never */
    atomic_int_fast64_t lag_bytes;         /* a standby's replay behind the primary's WAL; -1: unknown */
    atomic_uint_fast64_t lag_us;           /* 0 when it replayed all it received */
    double behind_since;                   /* the sampler's: when it first saw replay behind receipt (0: not) */
} endpoint;

struct prt__eptab {
    atomic_int refs;
    atomic_int n;            /* published endpoints; added under rt->mu */
    double interval;         /* immutable: seconds between samples */
    atomic_int ban_after, ban_first_ms, ban_max_ms; /* the live policy's `ban` (after 0: none) */
    atomic_int max_lag_ms;   /* the live policy's `max_lag`: a standby further behind serves last (0: none) */
    pthread_t thread;        /* the sampler, started with the first endpoint */
    int has_thread;          /* set under rt->mu; read once the runtime stops */
    pthread_mutex_t mu;      /* rank PRT__RANK_SAMPLER */
    pthread_cond_t cond;     /* wakes the sampler: stop */
    int stopping;            /* mu */
    endpoint ep[RT_ENDPOINTS];
};

void prt__endpoint_set_role(endpoint *x, int role);
void prt__endpoint_up(endpoint *x, int up, int sampled, const prt__eptab *t); /* a connect or sample: ok (1) or not */

struct prt__endpoints {
    int n;
    int want;                /* WANT_*, from target_session_attrs */
    double connect_timeout;  /* seconds per endpoint (0: none) */
    prt__eptab *tab;         /* a reference */
    int id[PRT__MAX_ENDPOINTS]; /* the runtime endpoint of each host */
    PQconninfoOption *opts;  /* owns the parsed strings */
    char *hosts, *ports;     /* comma lists, split in place */
    const char **keywords;   /* NULL-terminated: the options that are set */
    const char **values;     /* n rows of the same length as keywords */
    int nkw;
    atomic_int open[PRT__MAX_ENDPOINTS];
};


#endif
