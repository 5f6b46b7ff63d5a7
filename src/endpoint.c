/*
 * endpoint.c -- spreading a pool over several servers.
 *
 * A conninfo may name several hosts (`host=a,b port=5432,5433`), as for
 * replicas behind one name.  libpq 15 always tries them in order (random
 * order arrived with load_balance_hosts in 16), so one server would get
 * every connection.  Here each new connection goes to the endpoint with
 * the fewest open connections of the pool, falling over to the next when
 * it cannot be reached.  Which open connection serves a query is then the
 * `pick` policy's choice: MRU concentrates work on few connections (and so
 * few servers), LRU spreads it (golang/go#68539).
 *
 * Built once per pool, then read-only except the atomic open counts.
 */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

struct prt__endpoints {
    int n;
    PQconninfoOption *opts;  /* owns the parsed strings */
    char *hosts, *ports;     /* comma lists, split in place */
    const char **keywords;   /* NULL-terminated: the options that are set */
    const char **values;     /* n rows of the same length as keywords */
    int nkw;
    atomic_int open[PRT__MAX_ENDPOINTS];
};

static int split(char *list, char **out, int max)
{
    int n = 0;
    for (char *s = list; s && n < max;) {
        out[n++] = s;
        s = strchr(s, ',');
        if (s)
            *s++ = '\0';
    }
    return n;
}

void prt__endpoints_free(prt__endpoints *e)
{
    if (!e)
        return;
    PQconninfoFree(e->opts);
    free(e->hosts);
    free(e->ports);
    free(e->keywords);
    free(e->values);
    free(e);
}

/* Returns the endpoints of a conninfo with several hosts, NULL for a single
 * host (plain PQconnectStart serves then) or when it cannot be parsed (the
 * connect reports why). */
prt__endpoints *prt__endpoints_new(const char *conninfo)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
    PQfreemem(errmsg);
    if (!opts)
        return NULL;
    const char *host = NULL, *port = NULL;
    int nkw = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        nkw++;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    prt__endpoints *e = NULL;
    if (!host || !strchr(host, ',') || !(e = calloc(1, sizeof *e)))
        goto single;
    e->opts = opts;
    e->hosts = strdup(host);
    e->ports = port ? strdup(port) : NULL;
    char *hosts[PRT__MAX_ENDPOINTS], *ports[PRT__MAX_ENDPOINTS];
    e->n = split(e->hosts, hosts, PRT__MAX_ENDPOINTS);
    int np = split(e->ports, ports, PRT__MAX_ENDPOINTS);
    e->nkw = nkw;
    e->keywords = calloc((size_t)nkw + 1, sizeof *e->keywords);
    e->values = calloc((size_t)(nkw + 1) * (size_t)e->n, sizeof *e->values);
    if (!e->hosts || !e->keywords || !e->values || (np != 0 && np != 1 && np != e->n)) {
        e->opts = NULL;
        prt__endpoints_free(e);
        goto single;
    }
    for (int i = 0; i < e->n; i++) {
        int k = 0;
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val)
                continue;
            e->keywords[k] = o->keyword;
            const char **v = &e->values[i * (nkw + 1) + k];
            *v = o->val;
            if (strcmp(o->keyword, "host") == 0)
                *v = hosts[i];
            else if (strcmp(o->keyword, "port") == 0 && np)
                *v = ports[np == 1 ? 0 : i];
            k++;
        }
    }
    return e;
single:
    PQconninfoFree(opts);
    return NULL;
}

int prt__endpoints_count(const prt__endpoints *e)
{
    return e ? e->n : 1;
}

/* The endpoint with the fewest open connections, to try first. */
int prt__endpoints_choose(prt__endpoints *e)
{
    int best = 0;
    for (int i = 1; i < e->n; i++)
        if (atomic_load(&e->open[i]) < atomic_load(&e->open[best]))
            best = i;
    return best;
}

PGconn *prt__endpoints_start(prt__endpoints *e, int i)
{
    return PQconnectStartParams(e->keywords, &e->values[i * (e->nkw + 1)], 0);
}

void prt__endpoints_opened(prt__endpoints *e, int i, int delta)
{
    if (e)
        atomic_fetch_add(&e->open[i], delta);
}
