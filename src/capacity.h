/*
 * capacity.h -- the one room for "may another server connection open?".
 *
 * A *slot* is the permission to hold one server connection.  It is taken
 * before the connect starts (so no limit is exceeded while connects are in
 * flight) and given back when the connection has closed, or when it never
 * opened.  The limits stack in this order, each checked only when the one
 * before it allows:
 *
 *   pool max  ->  runtime cap  ->  shared budget  ->  fleet
 *   (p->max)      (rt->cap)        (shared_budget.c) (fleet.c: its answer
 *                                                     becomes the cap)
 *
 * The call graph (tools/calls.sh prints the real one):
 *
 *   acquire, pool_slots, reap  -->  capacity  -->  {shared_budget, fleet}
 *   acquire, pool_slots        -->  pools (the registry's cross-pool work)
 *                                      --> capacity
 *   shared_budget, fleet  ==(callback rt->on_capacity)==>  pools
 *
 * Capacity calls nothing above it.  Its providers, the shared budget and
 * the fleet's sampler, set limits and report; their one report goes
 * upward through the callback below (prt__cap_report), which runtime.c
 * points at pools.c's handler.  That is the one upward call, and the only
 * place a provider's news reaches the pools: wake-ups of waiters in every
 * pool, closing other pools' idle connections and the `budget` hook all
 * live in pools.c, never in a provider.
 */
#ifndef POOLRT_CAPACITY_H
#define POOLRT_CAPACITY_H

/* What a provider reports (rt->on_capacity's argument). */
enum prt__cap_event {
    PRT__CAP_FREED,    /* slots may have come free (here or in another process): wake waiters */
    PRT__CAP_BUDGET,   /* the shared budget's thread ticked: publish waiters, give to others */
    PRT__CAP_SAMPLED   /* the fleet sampled the server: ask the `budget` hook for the cap */
};

/* callback: rt->on_capacity -- set by runtime.c to pools.c's handler, called by shared_budget.c, fleet.c
 * (through prt__cap_report, with no lock held). */
/* prt__cap_report_fn (internal.h): void (prt_runtime *rt, int ev), ev an enum prt__cap_event */

/* p->mu held: */
int prt__slot_take(prt_pool *p, int over_max);            /* 1: taken; 0: a limit is reached */
void prt__slot_give(prt_pool *p, int n, const int *by);   /* n slots back, by[reason] closes counted */

/* No lock needed (atomics): */
int prt__cap_over(const prt_runtime *rt);  /* more connections than the limits allow: close on release */
int prt__cap_set(prt_runtime *rt, int cap); /* the cap in force (0: none); returns the old one */
int prt__cap_waiting_wakes(const prt_runtime *rt); /* a slot freed now may serve a waiter elsewhere */
void prt__cap_blocked(prt_runtime *rt);    /* a caller queues for a global slot (p->mu held) */
int prt__cap_refused(prt_runtime *rt, const char *err); /* a connect refused as "too many clients" */

/* A provider's report, through the one registered callback.  No lock held. */
static inline void prt__cap_report(prt_runtime *rt, enum prt__cap_event ev)
{
    if (rt && rt->on_capacity)
        rt->on_capacity(rt, ev);
}

#endif
