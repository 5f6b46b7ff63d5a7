/*
 * pgtest.h -- shared set-up for the C tests: a runtime on the throwaway
 * server that `make test` started ($POOLRT_CONNINFO), and cmocka includes.
 */
#ifndef POOLRT_PGTEST_H
#define POOLRT_PGTEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static inline prt_runtime *pgtest_runtime(double reap_interval)
{
    const char *ci = getenv("POOLRT_CONNINFO");
    if (!ci)
        fail_msg("POOLRT_CONNINFO is not set (run via make test)");
    prt_runtime_opts o;
    prt_runtime_opts_default(&o);
    o.conninfo = ci;
    o.reap_interval = reap_interval;
    prt_runtime *rt = NULL;
    char err[PRT__ERRLEN];
    assert_int_equal(prt_runtime_new(&o, &rt, err, sizeof err), PRT_OK);
    return rt;
}

static inline prt_pool *pgtest_pool(prt_runtime *rt, const char *name, const prt_pool_opts *o)
{
    prt_pool *p = NULL;
    char err[PRT__ERRLEN];
    int rc = prt_pool_get(rt, name, o, &p, err, sizeof err);
    if (rc != PRT_OK)
        fail_msg("%s", err);
    return p;
}

#endif
