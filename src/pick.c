/*
 * pick.c -- which idle connection an acquire hands out.  The one place the
 * decision is made, so the policy engine can replace it.
 *
 * Built-in order is MRU (database/sql's default): the most recently released
 * connection is warm in the server's caches and lets the rest go idle long
 * enough for the idle timeout to shrink the pool.
 */
#include "internal.h"

/* Returns an index into p->idle (oldest-released first); p->mu is held and
 * p->nidle > 0. */
int prt__pick(prt_pool *p)
{
    return p->nidle - 1;
}
