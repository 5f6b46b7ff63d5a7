/*
 * main.c -- the `poolrt` host: runs a Lua script with the runtime preloaded.
 *
 *   poolrt [options] SCRIPT.lua [ARGS...]
 *   poolrt check POLICY.lua          (prt_policy_check)
 *   poolrt sim POLICY.lua WORKLOAD.lua ...   (lua/poolrt/sim.lua)
 *
 * The binary links the core statically and exports its symbols, so
 * lua/poolrt.lua binds to them through ffi.C without loading libpoolrt.so.
 * Options reach the Lua side as package.loaded["poolrt.host"], which
 * poolrt.runtime{} reads for its defaults (policy, record).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "poolrt.h"
#include "host.h"

static const char usage[] =
    "usage: poolrt [options] SCRIPT.lua [ARGS...]\n"
    "       poolrt check POLICY.lua\n"
    "       poolrt sim POLICY.lua WORKLOAD.lua [--compare POLICY2.lua ...]\n"
    "                  [--csv] [--plot FILE.png] [--seed N]\n"
    "       poolrt --version | --help\n"
    "\n"
    "Runs SCRIPT.lua with `require \"poolrt\"` available (a PostgreSQL\n"
    "connection-pool runtime with Lua policies).  `check` compiles a policy,\n"
    "dry-runs each hook on sample inputs, prints what each returned, and\n"
    "exits 0, or 1 with file:line of the problem.  `sim` runs a workload\n"
    "file through the real pool code on a virtual clock, no database needed,\n"
    "once per policy, and prints acquires, waits, timeouts, connections and\n"
    "evictions side by side (--csv: one row per policy; --plot: a chart of\n"
    "connections in use and wait p99 over time, with gnuplot); `poolrt sim\n"
    "--help` has the details.\n"
    "\n"
    "options:\n"
    "  --policy FILE       default policy file for runtimes the script creates\n"
    "  --watch             reload the policy when FILE changes (inotify)\n"
    "  --record FILE       append a trace of every acquire to FILE, for `poolrt sim`\n"
    "                      (the default `record` of runtimes the script creates)\n"
    "  --metrics HOST:PORT serve Prometheus metrics at http://HOST:PORT/metrics\n"
    "  --grace SECONDS     on SIGINT/SIGTERM, wait this long for connections\n"
    "                      in use before closing everything (default %d)\n"
    "  --log-level LEVEL   %s (default warn)\n"
    "  --help              this text\n"
    "  --version           print the version\n"
    "\n"
    "signals: SIGHUP reloads policies; SIGINT/SIGTERM drain and exit 0.\n"
    "\n"
    "environment:\n"
    "  POOLRT_CONNINFO     default libpq conninfo for pools that give none\n"
    "  POOLRT_LUA_PATH     directory holding poolrt.lua (default: next to the binary)\n";

/* "off | error | warn | info | debug", from the library's list. */
static void level_names(char *out, size_t len, const char *sep)
{
    size_t at = 0;
    out[0] = '\0';
    for (int l = PRT_LOG_OFF; prt_log_level_name(l) && at < len; l++)
        at += (size_t)snprintf(out + at, len - at, "%s%s", l == PRT_LOG_OFF ? "" : sep, prt_log_level_name(l));
}

/* The usage text, with the library's defaults filled in. */
static void print_usage(FILE *f)
{
    char names[64];
    level_names(names, sizeof names, " | ");
    fprintf(f, usage, PRT_DRAIN_GRACE, names);
}

typedef struct host_opts {
    const char *policy;
    const char *record;
    const char *log_level;
    const char *metrics;
    int watch;
    double grace;
    int script; /* index in argv of the script, 0 if none */
} host_opts;

/* Returns 0 to go on, or an exit code + 1. */
static int parse_args(int argc, char **argv, host_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("poolrt %s (%s)\n", PRT_VERSION, LUAJIT_VERSION);
            return 1;
        }
        if (strcmp(a, "--watch") == 0) {
            o->watch = 1;
            continue;
        }
        int takes_value = strcmp(a, "--policy") == 0 || strcmp(a, "--log-level") == 0 ||
                          strcmp(a, "--grace") == 0 || strcmp(a, "--metrics") == 0 || strcmp(a, "--record") == 0;
        if (takes_value && i + 1 >= argc) {
            fprintf(stderr, "poolrt: %s needs a value\n", a);
            print_usage(stderr);
            return 3;
        }
        if (strcmp(a, "--policy") == 0)
            o->policy = argv[++i];
        else if (strcmp(a, "--record") == 0)
            o->record = argv[++i];
        else if (strcmp(a, "--metrics") == 0)
            o->metrics = argv[++i];
        else if (strcmp(a, "--grace") == 0) {
            char *end;
            o->grace = strtod(argv[++i], &end);
            if (*end || o->grace < 0) {
                fprintf(stderr, "poolrt: --grace needs a number of seconds >= 0\n");
                return 3;
            }
        }
        else if (strcmp(a, "--log-level") == 0) {
            o->log_level = argv[++i];
            if (prt_log_level_parse(o->log_level) == PRT_EINVAL) {
                char names[64];
                level_names(names, sizeof names, ", ");
                fprintf(stderr, "poolrt: unknown log level \"%s\" (%s)\n", o->log_level, names);
                return 3;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "poolrt: unknown option %s\n", a);
            print_usage(stderr);
            return 3;
        } else {
            o->script = i;
            return 0;
        }
    }
    fprintf(stderr, "poolrt: no script given\n");
    print_usage(stderr);
    return 3;
}

/* Finds the directory holding poolrt.lua: $POOLRT_LUA_PATH, else the
 * source tree (bin/../lua) or an install (bin/../share/poolrt/lua). */
static void lua_dir(char *out, size_t len)
{
    const char *env = getenv("POOLRT_LUA_PATH");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    static const char *const rel[] = { "/../lua", "/../share/poolrt/lua" };
    for (int i = 0; i < 2; i++) {
        char probe[PATH_MAX + 32];
        if (snprintf(probe, sizeof probe, "%s%s/poolrt.lua", exe, rel[i]) < (int)sizeof probe &&
            access(probe, R_OK) == 0 && snprintf(out, len, "%s%s", exe, rel[i]) < (int)len)
            return;
    }
    if (snprintf(out, len, "%s%s", exe, rel[1]) >= (int)len)
        out[0] = '\0';
}

static void setup_state(lua_State *L, const host_opts *o, int argc, char **argv)
{
    char dir[PATH_MAX + 32], path[PATH_MAX * 2 + 128];
    lua_dir(dir, sizeof dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    snprintf(path, sizeof path, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    if (o->policy) {
        lua_pushstring(L, o->policy);
        lua_setfield(L, -2, "policy");
    }
    if (o->record) {
        lua_pushstring(L, o->record);
        lua_setfield(L, -2, "record");
    }
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "lua_dir");
    lua_setfield(L, -2, "poolrt.host");
    lua_pop(L, 2);
    /* arg[0] is the script, arg[1..] its arguments, as in lua(1). */
    lua_newtable(L);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - o->script);
    }
    lua_setglobal(L, "arg");
}

/* Adds a traceback to string errors; other error values (busted raises
 * nil to signal failed specs) pass through for main to judge. */
static int traceback(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING)
        luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* `poolrt check POLICY.lua` */
static int check(const char *path)
{
    char report[8192];
    int rc = prt_policy_check(path, report, sizeof report);
    printf("%s: %s\n%s", path, rc == PRT_OK ? "ok" : "FAILED", report);
    return rc == PRT_OK ? 0 : 1;
}

/* A Lua state with the libraries, package.path, poolrt.host and arg set
 * up, and the traceback handler pushed (stack index 1); NULL after
 * reporting that memory ran out. */
static lua_State *host_state(const host_opts *o, int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "poolrt: out of memory\n");
        return NULL;
    }
    luaL_openlibs(L);
    setup_state(L, o, argc, argv);
    lua_pushcfunction(L, traceback);
    return L;
}

/* `poolrt sim ARGS...`: lua/poolrt/sim.lua parses the arguments, runs the
 * simulations and returns the exit code; a Lua error there is a bug, and
 * exits 1 with its traceback. */
static int sim(int argc, char **argv)
{
    host_opts o = { .script = 1 }; /* arg[0] = "sim", arg[1..] its arguments */
    lua_State *L = host_state(&o, argc, argv);
    if (!L)
        return 1;
    int rc = luaL_loadstring(L, "return require('poolrt.sim').main(arg)");
    if (rc == 0)
        rc = lua_pcall(L, 0, 1, 1);
    int code = 1;
    if (rc != 0)
        fprintf(stderr, "poolrt: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in poolrt sim");
    else
        code = (int)lua_tointeger(L, -1);
    lua_close(L);
    return code;
}

int main(int argc, char **argv)
{
    host_opts o = { .grace = PRT_DRAIN_GRACE };
    if (argc >= 2 && strcmp(argv[1], "check") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: poolrt check POLICY.lua\n");
            return 2;
        }
        return check(argv[2]);
    }
    if (argc >= 2 && strcmp(argv[1], "sim") == 0)
        return sim(argc, argv);
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc - 1;
    if (o.log_level)
        prt_log_set_level(prt_log_level_parse(o.log_level));
    if (o.watch && !o.policy) {
        fprintf(stderr, "poolrt: --watch needs --policy FILE\n");
        return 2;
    }
    if (host_events_start(o.watch ? o.policy : NULL, o.grace) != 0)
        return 1;
    if (o.metrics && host_metrics_start(o.metrics) != 0)
        return 1;
    lua_State *L = host_state(&o, argc, argv);
    if (!L)
        return 1;
    const char *script = argv[o.script];
    if (luaL_loadfile(L, script) != 0) {
        fprintf(stderr, "poolrt: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    int nargs = argc - o.script - 1;
    for (int i = 0; i < nargs; i++)
        lua_pushstring(L, argv[o.script + 1 + i]);
    rc = lua_pcall(L, nargs, 0, -nargs - 2);
    if (rc != 0 && lua_tostring(L, -1))
        fprintf(stderr, "poolrt: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return rc != 0 ? 1 : 0;
}
