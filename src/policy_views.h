/*
 * policy_views.h -- the structs through which hooks read their inputs.
 *
 * Each policy state owns one prt_hook_ctx (allocated by C, read by Lua via
 * FFI as a persistent pointer), so a hook call builds no tables: C fills
 * the views and calls a trampoline that passes them on.  The idle list is
 * 1-based (v[0] unused) and, in Lua, bounds-checked by a metatype: a hook
 * can read no memory outside the views.  The block below is the boot
 * module's ffi.cdef too: the build turns it into a C string
 * (build/gen/policy_views_cdef.h) that policy_state.c passes to it.
 *
 * Fields ending in `_` are read in Lua through accessors (the metatype in
 * policy_boot.lua): name_ as a string, protected_/pinned_/evictable_ as
 * booleans (evictable_ < 0: not computed for this view, reads nil),
 * configured_ as nil when 0 (the user gave no max).  `limits` holds the
 * runtime's own max_pools, max_connections and pool_idle_timeout (0: off),
 * which every pool view and pool list answers as fields, so a policy never
 * keeps a copy of them.  `server` and `rt` are the budget hook's: the last
 * server sample (sampled_at 0: none yet) and the runtime's configured
 * max_connections, connections, pools and the budget in force.  The
 * endpoint list is the endpoint hook's: a pool's servers with their facts
 * (endpoint.c), role_ read as "primary"/"standby"/"unknown" and up_,
 * allowed_, preferred_, banned_ as booleans; lag_bytes is -1 when unknown.
 */
#ifndef POOLRT_POLICY_VIEWS_H
#define POOLRT_POLICY_VIEWS_H

#include <stdint.h>

#define PRT__MAX_VIEWS 1024 /* idle connections a pick/reap hook can see */
#define PRT__MUX_MAX 64     /* connections a multiplexer holds at most (the route list's size) */

/* PRT_VIEWS_BEGIN */
typedef struct prt_conn_view {
    double id, created_at, returned_at, uses;
    int endpoint;
} prt_conn_view;

typedef struct prt_pool_view {
    char name_[64];
    int max, min_idle, total, idle, in_use, waiting, threads, configured_;
    int protected_, pinned_, evictable_;
    double created_at, last_used_at;
} prt_pool_view;

typedef struct prt_limits_view {
    int max_pools, max_connections;
    double pool_idle_timeout;
} prt_limits_view;

typedef struct prt_req_view {
    double timeout;
    int position;
} prt_req_view;

typedef struct prt_server_view {
    int max_connections, reserved, backends, fleet_members, fleet_backends, own_backends;
    double sampled_at;
} prt_server_view;

typedef struct prt_rt_view {
    int max_connections, connections, pools, budget;
} prt_rt_view;

typedef struct prt_idle_list {
    int n;
    prt_conn_view v[1025];
} prt_idle_list;

typedef struct prt_route_view {
    double id, uses;
    int in_flight, endpoint;
} prt_route_view;

typedef struct prt_route_list {
    int n;
    prt_route_view v[65];
} prt_route_list;

typedef struct prt_endpoint_view {
    char name_[128];
    int role_, up_, allowed_, preferred_, banned_;
    int failures, open, pool_open;
    double lag_bytes, lag_seconds, sampled_at;
} prt_endpoint_view;

typedef struct prt_endpoint_list {
    int n;
    prt_endpoint_view v[17];
} prt_endpoint_list;

typedef struct prt_hook_ctx {
    int32_t budget;
    double now;
    prt_pool_view pool;
    prt_req_view req;
    prt_limits_view limits;
    prt_pool_view *pools;
    int npools;
    prt_server_view server;
    prt_rt_view rt;
    prt_idle_list idle;
    prt_route_list route;
    prt_endpoint_list endpoints;
} prt_hook_ctx;
/* PRT_VIEWS_END */

#endif
