/*
 * mux_choose.c -- which of the multiplexer's connections takes the next
 * statement (or a batch's chunk), and when the multiplexer takes one more
 * connection from its pool.
 *
 * choose() asks route.c (the `route` hook, else the fewest statements in
 * flight) among the connections held; but when every one of them has
 * statements in flight and the pool could hand out a connection without
 * making anyone wait (pool_has_room), it grows instead: the multiplexer
 * acquires a connection from its own pool like any caller (so it counts
 * in the pool's max and the runtime's slots) and puts it in pipeline mode.
 * A caller that finds none held waits for the one another caller is
 * taking rather than take a second.  Giving connections back is
 * mux_lead.c's (step_down) and multiplex.c's (close, reap).
 *
 * mux->mu held on entry and return, released while a connection is
 * acquired; the pool's mu is taken briefly inside it.
 */
#include <errno.h>
#include <stdlib.h>
#include "mux.h"

/* Whether the pool could hand the multiplexer a connection without making
 * anyone wait: an idle one, or a free slot, and no caller queued. */
static int pool_has_room(prt_pool *p, int held)
{
    prt__lock(p);
    int room = !p->closed && !p->wq_head && held < p->max && (p->nidle > 0 || p->total < p->max);
    prt__unlock(p);
    return room;
}

/* Takes a connection from the pool for the multiplexer, by `deadline`.
 * Returns 0 with *out (routable), or an error with err set.  x->mu held;
 * released while acquiring. */
static int grow(prt__mux *x, prt_pool *p, double deadline, mconn **out, char *err, size_t errlen)
{
    x->growing++;
    prt__mu_unlock(&x->mu, PRT__RANK_MUX);
    prt_conn *c = NULL;
    mconn *m = NULL;
    double left = deadline - prt_now();
    int rc = prt_acquire(p, left > 0 ? left : 0, &c, err, errlen);
    if (rc == PRT_OK && (!(m = calloc(1, sizeof *m)) || !PQenterPipelineMode(c->pg) ||
                         PQsetnonblocking(c->pg, 1) != 0)) {
        prt__errf(err, errlen, "pool \"%s\": could not put a connection in pipeline mode", p->name);
        prt_release(c, 1);
        free(m);
        rc = PRT_EBROKEN;
    }
    prt__mu_lock(&x->mu, PRT__RANK_MUX);
    x->growing--;
    pthread_cond_broadcast(&x->grown);
    if (rc != PRT_OK)
        return rc;
    m->c = c;
    m->used_at = prt_now();
    if (x->closed || x->n == PRT__MUX_MAX) {
        m->retiring = 1; /* used for this statement, then given back */
        x->retiring++;
    } else {
        x->conns[x->n++] = m;
    }
    *out = m;
    return PRT_OK;
}

/* The connection for the next statement: route's choice, or a new one when
 * every connection has work in flight and the pool has room (or none is
 * held).  x->mu held; released while a connection is acquired. */
int choose(prt__mux *x, prt_pool *p, double deadline, mconn **out, char *err, size_t errlen)
{
    mconn *m = NULL;
    if (x->n > 0) {
        for (int i = 0; i < x->n; i++) {
            prt_conn *c = x->conns[i]->c;
            x->views[i] = (prt_route_view){ (double)c->id, (double)x->conns[i]->uses, x->conns[i]->load,
                                            c->endpoint + 1 };
        }
        int least = 0;
        for (int i = 1; i < x->n; i++)
            least = x->conns[i]->load < x->conns[least]->load ? i : least;
        if (x->conns[least]->load == 0 || x->growing || x->closed || !pool_has_room(p, x->n) ||
            grow(x, p, deadline, out, err, errlen) != PRT_OK) {
            m = x->conns[prt__route(p, x->views, x->n)];
            *out = m;
        }
        return PRT_OK;
    }
    if (x->closed) {
        prt__errf(err, errlen, "pool \"%s\": %s", p->name, "pool is closed");
        return PRT_ECLOSED;
    }
    if (x->growing) { /* holding none: wait for the one being taken rather than take another */
        struct timespec ts;
        prt__abstime(deadline, &ts);
        if (pthread_cond_timedwait(&x->grown, &x->mu, &ts) == ETIMEDOUT && x->n == 0) {
            prt__errf(err, errlen, "pool \"%s\": acquire timed out after %.3fs (multiplexed: waiting for "
                      "its first connection)", p->name, p->opts.acquire_timeout);
            return PRT_ETIMEDOUT;
        }
        return choose(x, p, deadline, out, err, errlen);
    }
    return grow(x, p, deadline, out, err, errlen);
}
