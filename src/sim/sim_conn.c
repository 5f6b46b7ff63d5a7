/*
 * sim_conn.c -- the simulator's servers: endpoints with connect and query
 * latencies, outages, and the connections the real pools hold in a
 * simulation (a prt_conn with pg == NULL).
 *
 * Which endpoint a new connection goes to is the real pool's choice
 * (the endpoint hook, then endpoint.c's order from the runtime's facts of
 * each server: the role wanted, then fewest of the pool's connections,
 * falling over to the next after a failure or a refusal), because the
 * pools are given a conninfo naming one host per endpoint, and those hosts
 * are the runtime's endpoint table (sim.c sets their facts as the sampler
 * would, and each connect tells them what it met).  An outage makes connects to its endpoint
 * fail and breaks every connection opened before it began: such a
 * connection fails its liveness check, and a query on it fails (sim.c
 * releases it as broken).  A connection "opened" through the ops table
 * (the min_idle refill in the reap cycle) opens at once; callers' connects
 * take the endpoint's connect latency as an event delay (sim.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim.h"

/* The sim whose pools these are: the thread running it (sim.c sets the
 * virtual clock for the same span). */
static _Thread_local prt_sim *current;

void prt__sim_set_current(prt_sim *s)
{
    current = s;
}

/* Connects as conn.c's prt__conn_open does: endpoint `first` (the
 * endpoint hook's answer; -1: none), then the pool's order (endpoint.c:
 * its facts, then fewest of the pool's connections), each tried once,
 * until one accepts.  Each try costs its endpoint's connect latency; one
 * that is down fails; one whose role the pool cannot use refuses, as libpq
 * refuses it for target_session_attrs (the server is up, its role
 * learned).  The facts are told each outcome as the real connect tells
 * them, at the start of the connect rather than at its end. */
int prt__sim_connect(prt_sim *s, prt_pool *p, int first, prt_conn **out, double *latency, char *err, size_t errlen)
{
    int order[PRT__MAX_ENDPOINTS + 1] = { 0 };
    int n = p->endpoints ? prt__endpoints_order(p->endpoints, order + 1) : 1, bad = PRT__EP_NONE;
    if (first >= 0)
        order[0] = first;
    if (p->endpoints)
        prt__endpoints_role_of(p->endpoints, 0, &bad);
    int e = -1, tried = 0, refused = 0;
    *latency = 0;
    for (int k = first >= 0 ? 0 : 1; k <= n && e < 0; k++) {
        int i = p->endpoints ? order[k] : 0;
        if ((k > 0 && i == first) || (p->endpoints && !prt__endpoints_may_try(p->endpoints, i)))
            continue;
        tried++;
        prt__sim_endpoint *x = &s->eps[i];
        *latency += prt__sim_draw(&s->rng, &x->connect);
        if (x->down) {
            prt__endpoints_connected_as(p->endpoints, i, 0, PRT_ROLE_UNKNOWN);
            continue;
        }
        prt__endpoints_connected_as(p->endpoints, i, 1, x->role);
        if (bad >= 0 && x->role == bad) {
            s->role_refusals++;
            refused++;
            continue;
        }
        e = i;
    }
    if (e < 0) {
        if (!tried)
            prt__errf(err, errlen, "pool \"%s\": connect failed: every server is banned after failed connects", p->name);
        else if (refused)
            prt__errf(err, errlen, "pool \"%s\": connect failed: %s (simulated target_session_attrs refusal)",
                      p->name, bad == PRT_ROLE_STANDBY ? "server is in hot standby mode"
                                                       : "server is not in hot standby mode");
        else
            prt__errf(err, errlen, "pool \"%s\": connect failed: every endpoint is down (simulated outage)", p->name);
        return PRT_ECONNECT;
    }
    prt__sim_conn *sc = s->free_conns;
    if (sc)
        s->free_conns = sc->next_free;
    else if (!(sc = malloc(sizeof *sc))) {
        prt__errf(err, errlen, "pool \"%s\": out of memory", p->name);
        return PRT_ENOMEM;
    }
    memset(sc, 0, sizeof *sc);
    prt_conn *c = &sc->c;
    sc->epoch = s->eps[e].epoch;
    c->endpoint = e;
    prt__endpoints_opened(p->endpoints, e, 1);
    if (p->endpoints)
        c->ep_role = prt__endpoints_role_of(p->endpoints, e, &c->ep_bad_role);
    prt__conn_born(c, p);
    *out = c;
    return PRT_OK;
}

int prt__sim_conn_broken(prt_sim *s, const prt_conn *c)
{
    const prt__sim_conn *sc = (const prt__sim_conn *)c;
    return sc->epoch != s->eps[c->endpoint].epoch;
}

static int op_open(prt_pool *p, double deadline, int first, prt_conn **out, char *err, size_t errlen)
{
    (void)deadline;
    double latency;
    return prt__sim_connect(current, p, first, out, &latency, err, errlen);
}

static int op_alive(prt_conn *c)
{
    return !prt__sim_conn_broken(current, c);
}

static int op_reset(prt_conn *c, double deadline)
{
    (void)deadline;
    return prt__sim_conn_broken(current, c) ? PRT_EBROKEN : PRT_OK;
}

/* Back to the free list: the simulator allocates connections only while
 * more are open than ever before. */
static void op_close(prt_conn *c)
{
    prt__sim_conn *sc = (prt__sim_conn *)c;
    prt__endpoints_opened(c->pool->endpoints, c->endpoint, -1);
    sc->next_free = current->free_conns;
    current->free_conns = sc;
}

const prt__conn_ops prt__sim_conn_ops = { op_open, op_alive, op_reset, op_close };

void prt__sim_conns_free(prt_sim *s)
{
    for (prt__sim_conn *sc = s->free_conns, *next; sc; sc = next) {
        next = sc->next_free;
        free(sc);
    }
    s->free_conns = NULL;
}

/* One host per endpoint, so that the pools' own endpoint choice applies. */
char *prt__sim_conninfo(prt_sim *s)
{
    size_t len = 64 + (size_t)s->neps * 16;
    char *ci = malloc(len);
    if (!ci)
        return NULL;
    int n = snprintf(ci, len, "dbname=sim host=");
    for (int i = 0; i < s->neps; i++)
        n += snprintf(ci + n, len - (size_t)n, "%ssim%d", i ? "," : "", i);
    return ci;
}
