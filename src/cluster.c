/*
 * cluster.c -- one handle for writes and reads over a primary and its
 * standbys (issue 21): the pools behind it, and the conninfo each gets.
 *
 * A cluster is a conninfo naming several servers (`host=a,b port=p,q`).
 * endpoint.c already chooses among them by target_session_attrs; what a
 * cluster adds is a pair of pools over the same servers, so that one name
 * serves both kinds of work: pool `name` with target_session_attrs=
 * read-write (writes, and reads that must see them), and pool `name.read`
 * with prefer-standby (reads a standby may answer, the primary while none
 * is up).  Both are ordinary pools of the registry: stats, metrics,
 * eviction and policies see two pools, and the servers' facts are shared
 * through the runtime's endpoint table as for any two pools naming them.
 *
 * The conninfo is rewritten here and nowhere else (bindings ask
 * prt_cluster_conninfo): the attribute is appended in the conninfo's own
 * syntax -- ` target_session_attrs=...` for keyword=value, `?`/`&` for a
 * postgres:// URI -- so the rest stays the user's text.  A conninfo that
 * already sets target_session_attrs is refused: the cluster decides it,
 * and silently overriding the user's choice would hide a mistake.  A pool
 * that exists under either name with another conninfo (made by
 * prt_pool_get) is refused too rather than handed out as a cluster's.
 */
#include "internal.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ATTRS[2] = { "read-write", "prefer-standby" };

static int is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* Writes the conninfo of a cluster's pool (reads 0: the primary pool `name`;
 * 1: `name.read`) into out.  conninfo NULL: the runtime's. */
int prt_cluster_conninfo(prt_runtime *rt, const char *conninfo, int reads, char *out, size_t outlen,
                         char *err, size_t errlen)
{
    if (!out || outlen == 0 || (reads != 0 && reads != 1))
        return PRT_EINVAL;
    const char *given = conninfo ? conninfo : rt ? rt->conninfo : NULL;
    if (!given) {
        prt__errf(err, errlen, "cluster: no conninfo (give one, or set POOLRT_CONNINFO)");
        return PRT_EINVAL;
    }
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(given, &msg);
    if (!opts) {
        size_t m = msg ? strlen(msg) : 0;
        while (m > 0 && (msg[m - 1] == '\n' || msg[m - 1] == ' '))
            msg[--m] = '\0';
        prt__errf(err, errlen, "cluster: invalid conninfo: %s", msg ? msg : "out of memory");
        PQfreemem(msg);
        return msg ? PRT_EINVAL : PRT_ENOMEM;
    }
    const char *theirs = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "target_session_attrs") == 0)
            theirs = o->val;
    if (theirs) {
        prt__errf(err, errlen,
                  "cluster: the conninfo sets target_session_attrs=%s; a cluster sets it itself "
                  "(read-write for its pool, prefer-standby for its .read pool): remove it",
                  theirs);
        PQconninfoFree(opts);
        return PRT_EINVAL;
    }
    PQconninfoFree(opts);
    size_t glen = strlen(given);
    const char *sep = !is_uri(given)              ? (glen ? " " : "")
                      : given[glen - 1] == '?'    ? ""
                      : strchr(given, '?')        ? "&"
                                                  : "?";
    int n = snprintf(out, outlen, "%s%starget_session_attrs=%s", given, sep, ATTRS[reads]);
    if (n < 0 || (size_t)n >= outlen) {
        prt__errf(err, errlen, "cluster: conninfo longer than %zu bytes", outlen);
        return PRT_EINVAL;
    }
    return PRT_OK;
}

/* Pool `name` of rt, made from o with conninfo ci, or fetched when it has
 * that very conninfo (as the registry stores it: fleet-tagged). */
static int get_one(prt_runtime *rt, const char *name, const prt_pool_opts *o, const char *ci, prt_pool **out,
                   char *err, size_t errlen)
{
    prt_pool_opts mine = *o;
    mine.conninfo = ci;
    prt_pool *p;
    int rc = prt_pool_get(rt, name, &mine, &p, err, errlen);
    if (rc != PRT_OK)
        return rc;
    char *want = prt__fleet_conninfo(rt, ci);
    int same = want && strcmp(want, p->conninfo) == 0;
    free(want);
    if (!same) {
        prt_pool_unref(p);
        prt__errf(err, errlen, "cluster: pool \"%s\" exists with another conninfo (not a cluster's pool)", name);
        return PRT_EINVAL;
    }
    *out = p;
    return PRT_OK;
}

int prt_cluster_get(prt_runtime *rt, const char *name, const prt_pool_opts *o, prt_pool **primary,
                    prt_pool **reads, char *err, size_t errlen)
{
    if (!rt || !name || !primary || !reads)
        return PRT_EINVAL;
    prt_pool_opts def;
    if (!o) {
        prt_pool_opts_default(&def);
        o = &def;
    }
    size_t len = (o->conninfo ? strlen(o->conninfo) : rt->conninfo ? strlen(rt->conninfo) : 0) + 64;
    size_t nlen = strlen(name) + sizeof ".read";
    char *ci_w = malloc(len), *ci_r = malloc(len), *rname = malloc(nlen);
    prt_pool *w = NULL, *r = NULL;
    int rc = PRT_ENOMEM;
    if (!ci_w || !ci_r || !rname) {
        prt__errf(err, errlen, "cluster \"%s\": out of memory", name);
        goto out;
    }
    snprintf(rname, nlen, "%s.read", name);
    if ((rc = prt_cluster_conninfo(rt, o->conninfo, 0, ci_w, len, err, errlen)) != PRT_OK ||
        (rc = prt_cluster_conninfo(rt, o->conninfo, 1, ci_r, len, err, errlen)) != PRT_OK)
        goto out;
    if ((rc = get_one(rt, name, o, ci_w, &w, err, errlen)) != PRT_OK)
        goto out;
    if ((rc = get_one(rt, rname, o, ci_r, &r, err, errlen)) != PRT_OK) {
        prt_pool_unref(w);
        goto out;
    }
    *primary = w;
    *reads = r;
out:
    free(ci_w);
    free(ci_r);
    free(rname);
    return rc;
}
