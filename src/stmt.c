/*
 * stmt.c -- the per-connection cache of prepared statements, as pgx keeps
 * one: each distinct SQL text is prepared once per connection under the name
 * "prt_<id>" and reused.  The cache is bounded; when it is full the least
 * recently used entry is the victim (conn.c deallocates it on the server).
 *
 * A cache belongs to its connection, so it needs no lock of its own.  It is
 * cleared whenever the server may have forgotten the statements (DISCARD
 * ALL, a reset, a close).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void prt__stmt_init(prt__stmt_cache *sc, int cap)
{
    memset(sc, 0, sizeof *sc);
    sc->cap = cap > 0 ? cap : 0;
}

void prt__stmt_clear(prt__stmt_cache *sc)
{
    for (int i = 0; i < sc->n; i++)
        free(sc->slots[i].sql);
    free(sc->slots);
    sc->slots = NULL;
    sc->recent = NULL;
    sc->n = 0;
}

/* The entry last found or added is compared first: a caller usually runs
 * the same statement again, and one strcmp costs a tenth of hashing the
 * text byte by byte (callgrind: ~440 -> ~50 instructions a query for
 * pgbench's SELECT).  Otherwise a linear scan over hashes: caches hold tens
 * of entries, and a compare of 8-byte hashes beats the pointer chasing of a
 * hash table at that size. */
prt__stmt *prt__stmt_find(prt__stmt_cache *sc, const char *sql)
{
    prt__stmt *s = sc->recent;
    if (!s || strcmp(s->sql, sql) != 0) {
        uint64_t h = fnv1a(sql);
        int i = 0;
        while (i < sc->n && (sc->slots[i].hash != h || strcmp(sc->slots[i].sql, sql) != 0))
            i++;
        if (i == sc->n)
            return NULL;
        s = &sc->slots[i];
    }
    s->last_use = ++sc->tick;
    sc->recent = s;
    return s;
}

prt__stmt *prt__stmt_victim(prt__stmt_cache *sc)
{
    if (sc->n < sc->cap || sc->n == 0)
        return NULL;
    prt__stmt *v = &sc->slots[0];
    for (int i = 1; i < sc->n; i++)
        if (sc->slots[i].last_use < v->last_use)
            v = &sc->slots[i];
    return v;
}

/* Returns the new entry, or NULL when out of memory or the cache is full
 * (callers remove the victim first). */
prt__stmt *prt__stmt_add(prt__stmt_cache *sc, const char *sql)
{
    if (sc->n >= sc->cap)
        return NULL;
    if (!sc->slots) {
        sc->slots = calloc((size_t)sc->cap, sizeof *sc->slots);
        if (!sc->slots)
            return NULL;
    }
    char *copy = strdup(sql);
    if (!copy)
        return NULL;
    prt__stmt *s = &sc->slots[sc->n++];
    s->sql = copy;
    s->hash = fnv1a(sql);
    s->last_use = ++sc->tick;
    s->id = ++sc->next_id;
    snprintf(s->name, sizeof s->name, "prt_%u", s->id);
    sc->recent = s;
    return s;
}

void prt__stmt_remove(prt__stmt_cache *sc, prt__stmt *s)
{
    free(s->sql);
    *s = sc->slots[--sc->n];
    sc->recent = NULL; /* the last entry moved into s's place */
}
