/*
 * sim_heap.c -- the simulator's event queue: a binary min-heap on (time,
 * sequence number) in one growing array, so that steady state allocates
 * nothing and events at the same virtual time run in the order they were
 * scheduled (a seed then gives exactly one history).
 *
 * Timeouts are most of what is scheduled and most never fire (the caller
 * is served first).  They are scheduled in time order as long as callers
 * share an acquire_timeout, so they go to a ring kept in time order
 * (prt__sim_push_late) instead of the heap: O(1) in and out, stale ones
 * included; one that would break the order goes to the heap.  The next
 * event is the earlier of the heap's top and the ring's head.
 */
#include <stdlib.h>
#include "sim.h"

static int before(const prt__sim_ev *a, const prt__sim_ev *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

/* Schedules an event.  Returns 0, or PRT_ENOMEM (the heap is unchanged). */
int prt__sim_push(prt__sim_heap *h, double t, int kind, uint32_t id, uint32_t serial)
{
    prt__sim_ev *a = h->n < h->cap ? h->a : prt__grow(h->a, &h->cap, h->n + 1, sizeof *a);
    if (!a)
        return PRT_ENOMEM;
    h->a = a;
    prt__sim_ev e = { t, h->seq++, (uint32_t)kind, id, serial };
    int i = h->n++;
    while (i > 0) {
        int up = (i - 1) / 2;
        if (!before(&e, &a[up]))
            break;
        a[i] = a[up];
        i = up;
    }
    a[i] = e;
    return PRT_OK;
}

int prt__sim_push_late(prt__sim_heap *h, double t, int kind, uint32_t id, uint32_t serial)
{
    if (h->qn > 0 && t < h->q[(h->qhead + h->qn - 1) % h->qcap].t)
        return prt__sim_push(h, t, kind, id, serial);
    if (h->qn == h->qcap) { /* grow, unwrapping the ring */
        int cap = h->qcap ? 2 * h->qcap : 256;
        prt__sim_ev *q = malloc((size_t)cap * sizeof *q);
        if (!q)
            return PRT_ENOMEM;
        for (int i = 0; i < h->qn; i++)
            q[i] = h->q[(h->qhead + i) % h->qcap];
        free(h->q);
        h->q = q;
        h->qhead = 0;
        h->qcap = cap;
    }
    h->q[(h->qhead + h->qn++) % h->qcap] = (prt__sim_ev){ t, h->seq++, (uint32_t)kind, id, serial };
    return PRT_OK;
}

/* Takes the earliest event into *out.  Returns 1, or 0 when none is left. */
int prt__sim_pop(prt__sim_heap *h, prt__sim_ev *out)
{
    if (h->qn > 0 && (h->n == 0 || before(&h->q[h->qhead], &h->a[0]))) {
        *out = h->q[h->qhead];
        h->qhead = (h->qhead + 1) % h->qcap;
        h->qn--;
        return 1;
    }
    if (h->n == 0)
        return 0;
    prt__sim_ev *a = h->a;
    *out = a[0];
    prt__sim_ev last = a[--h->n];
    int i = 0, n = h->n;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&a[c + 1], &a[c]))
            c++;
        if (!before(&a[c], &last))
            break;
        a[i] = a[c];
        i = c;
    }
    if (n > 0)
        a[i] = last;
    return 1;
}

void prt__sim_heap_free(prt__sim_heap *h)
{
    free(h->a);
    free(h->q);
    *h = (prt__sim_heap){ 0 };
}
