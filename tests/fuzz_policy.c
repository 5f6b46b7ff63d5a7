/*
 * fuzz_policy.c -- libFuzzer target for the policy boundary (`make fuzz`).
 *
 * Each input becomes a policy file: either its bytes verbatim (first byte
 * odd), or a policy assembled from a table of hostile hook bodies (wrong
 * types, out-of-range numbers, NaN, errors with odd values, endless loops,
 * recursion, reads outside the views...).  The file goes through a live
 * runtime's reload, and if it is accepted its hooks are driven through the
 * same engine calls a pool makes, on a pool of fake idle connections (pool
 * logic only, no server); budget and route get views made up here.  The
 * process aborts -- a finding -- when a hook makes the engine crash, hang,
 * hand out an index outside the idle list or the multiplexer's
 * connections, size a pool outside its bounds, or answer a budget outside
 * 0 (none) or 1..1000000.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

static const char *const bodies[] = {
    "return 1", "return 0", "return -1", "return pool.idle", "return pool.idle + 1", "return #idle",
    "return 1.5", "return 0/0", "return math.huge", "return -math.huge", "return 2^53", "return -2^63",
    "return 'x'", "return '2'", "return {}", "return nil", "return true", "return function() end",
    "return idle", "return pool", "return 1, 2, 3", "return string.rep('x', 300)", "return {1, 2, 'x'}",
    "return {pool.idle + 5}", "return {0/0}", "return {'a', 'b'}", "return {1, 1, 1}", "return 'wait', -1",
    "return 'wait', 0/0", "return 'wait', 1e9", "return 'grow'", "return 'fail'", "return 'evict_idle'",
    "return 'evict_lru'", "return 'allow'", "return pool.name", "return idle[1].id", "return idle[0].id",
    "return idle[1e9].id", "return idle[-1].id", "error('boom')", "error({})", "error()", "error(nil, 2)",
    "while true do end", "local n = 0 repeat n = n + 1 until false", "local function f() return f() end return f()",
    "local function f(n) return f(n + 1) + 1 end return f(1)", "::a:: goto a",
    "local t = {} for i = 1, 1e9 do t[i] = i end", "local ok = pcall(function() while true do end end) return 1",
    "pool.max = -5 return pool.max", "idle[1] = 3 return 1", "x = 1 return 1", "return require",
    "return io", "return os.execute", "return load", "return setmetatable({}, {__index = function() error('m') end})",
    "return tostring(pool)", "return env('HOME')", "return env(5)", "return pool.env('PATH') and 1",
    "return math.random(1, pool.idle)", "return (pool.idle > 2) and 3 or 'no'",
    "return server.max_connections - server.reserved", "return server.backends", "return rt.budget",
    "return rt.connections", "return server.fleet_members > 0 and 1 or nil", "return 1000001",
    "return #conns", "return #conns + 1", "return conns[1].in_flight", "return conns[0].id",
    "return conns[3].endpoint", "return conns[1e9].uses",
    "return endpoints[2].allowed and 2", "return #endpoints", "return endpoints[1].role",
    "return endpoints[4].lag_seconds", "return endpoints[3].banned and 3 or nil",
};
#define NBODIES (sizeof bodies / sizeof bodies[0])

static const char *const hooks[] = { "pick(idle, pool)", "size(pool)", "overflow(pool, req)", "reap(idle, pool, now)",
                                     "concurrency(pool)", "admit(pools, name)", "evict(pools, now)",
                                     "on_evict(name, reason)", "budget(server, rt)", "route(conns, pool)",
                                     "endpoint(endpoints, pool)" };
#define NHOOKS (sizeof hooks / sizeof hooks[0])

static prt_runtime *rt;
static prt_pool *pool;
static char path[64];

static void setup(void)
{
    prt_log_set_level(PRT_LOG_OFF);
    snprintf(path, sizeof path, "/tmp/poolrt-fuzz-%d.lua", (int)getpid());
    prt_runtime_opts ro;
    prt_runtime_opts_default(&ro);
    ro.conninfo = "host=127.0.0.1 port=1 connect_timeout=1";
    ro.reap_interval = 0;
    ro.hook_steps = 20000;
    char err[512];
    if (prt_runtime_new(&ro, &rt, err, sizeof err) != 0)
        abort();
    prt_pool_opts po;
    prt_pool_opts_default(&po);
    po.max = 8;
    if (prt_pool_get(rt, "fuzz", &po, &pool, err, sizeof err) != 0)
        abort();
}

/* Gives the pool five fake idle connections (and drops any left over). */
static void fake_idle(void)
{
    prt__lock(pool);
    for (int i = 0; i < pool->nidle; i++)
        free(pool->idle[i]);
    pool->nidle = 0;
    pool->total = pool->opening = pool->in_use = 0;
    for (int i = 0; i < 5; i++) {
        prt_conn *c = calloc(1, sizeof *c);
        c->pool = pool;
        c->id = (uint64_t)i + 1;
        c->returned_at = 100.0 + (i * 3) % 5;
        if (prt__hand_back(pool, c, 0) != 0)
            abort();
        pool->total++;
    }
    prt__unlock(pool);
}

static void build_source(const uint8_t *data, size_t size, char *src, size_t cap)
{
    if (data[0] & 1) {
        size_t n = size - 1 < cap - 1 ? size - 1 : cap - 1;
        memcpy(src, data + 1, n);
        src[n] = '\0';
        return;
    }
    size_t len = (size_t)snprintf(src, cap, "return {\n");
    for (size_t h = 0; h < NHOOKS && h + 1 < size && len < cap; h++) {
        uint8_t b = data[h + 1];
        if (b % 3 == 0)
            continue; /* hook absent */
        char name[32];
        snprintf(name, sizeof name, "%s", hooks[h]);
        *strchr(name, '(') = '\0';
        len += (size_t)snprintf(src + len, cap - len, "  %s = function%s %s end,\n", name, strchr(hooks[h], '('),
                                bodies[(b / 3) % NBODIES]);
    }
    if (len < cap)
        snprintf(src + len, cap - len, "}\n");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rt)
        setup();
    if (size < 1)
        return 0;
    static char src[16384];
    build_source(data, size, src, sizeof src);
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(src, f);
    fclose(f);
    char err[512];
    if (prt_runtime_reload(rt, path, err, sizeof err) != PRT_OK)
        return 0; /* refused: the old policy serves, which is the point */
    fake_idle();
    prt__pstate *ps = prt__policy_thread(rt);
    prt__lock(pool);
    int n = pool->nidle;
    int i = prt__pick(pool, ps);
    if (i < 0 || i >= n) /* a wrong connection would be handed out */
        abort();
    double wait = 1.0;
    int mode = prt__hook_overflow(ps, pool, 1.0, &wait);
    if (mode < PRT__OVF_WAIT || mode > PRT__OVF_GROW || !(wait >= 0 && wait <= 86400))
        abort();
    prt__unlock(pool);
    prt__pool_apply_size(pool);
    prt__lock(pool);
    if (pool->max < 1 || pool->max > 100000 || pool->min_idle < 0 || pool->min_idle > pool->max)
        abort();
    pool->min_idle = 0; /* no refill: there is no server */
    prt__unlock(pool);
    if (prt_pool_concurrency(pool) < 1)
        abort();
    prt__pool_reap(pool, 1000.0);
    prt__lock(pool);
    if (pool->nidle < 0 || pool->total != pool->nidle + pool->in_use + pool->opening)
        abort();
    prt__unlock(pool);
    int evicted = 0;
    prt_reap(rt, &evicted); /* evict + on_evict hooks */
    prt_server_view server = { .max_connections = 100, .reserved = 3, .backends = 40, .fleet_members = 2,
                               .fleet_backends = 30, .own_backends = 12, .sampled_at = 1000.0 };
    prt_rt_view rv = { .max_connections = 20, .connections = 5, .pools = 1, .budget = 20 };
    int budget = prt__hook_budget(ps, &server, &rv);
    if (budget < 0 || budget > 1000000)
        abort();
    prt_route_view conns[3] = { { 1, 10, 2, 0 }, { 2, 0, 0, 1 }, { 3, 5, 7, 0 } };
    int r = prt__hook_route(ps, pool, conns, 3);
    if (r < -1 || r >= 3)
        abort();
    prt_endpoint_view eps[3] = { { "a:5432", PRT_ROLE_PRIMARY, 1, 1, 0, 0, 0, 2, 1, 0, 0, 1 },
                                 { "b:5432", PRT_ROLE_STANDBY, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1 },
                                 { "c:5432", PRT_ROLE_UNKNOWN, 0, 0, 0, 1, 3, 0, 0, -1, 0, 0 } };
    int e = prt__hook_endpoint(ps, pool, eps, 3);
    if (e < -2 || e >= 3 || (e >= 0 && !eps[e].allowed_))
        abort();
    return 0;
}
