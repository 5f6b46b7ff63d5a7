/*
 * spawn.c -- rt:spawn(): n OS threads, each with a Lua state of its own,
 * each calling require(module)[fn](rt, i, ...) and handing back one value.
 *
 * Nothing Lua crosses between threads: arguments arrive as a serialized Lua
 * chunk, results leave as serialized strings, and the runtime as a light
 * userdata.  lua/poolrt.lua owns the (de)serialization (its entry point is
 * thread_main of poolrt.internal, lua/poolrt/internal.lua); this
 * file only owns threads and states.  prt_spawn returns when all threads
 * have finished.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct job {
    prt_runtime *rt;
    int index;
    const char *module, *fn, *args, *path, *cpath;
    prt_spawn_result *res;
    pthread_t thread;
} job;

static void set_result(prt_spawn_result *r, int ok, const char *s)
{
    r->ok = ok;
    r->value = strdup(s ? s : "nil");
}

static void set_package_field(lua_State *L, const char *field, const char *value)
{
    if (!value)
        return;
    lua_getglobal(L, "package");
    lua_pushstring(L, value);
    lua_setfield(L, -2, field);
    lua_pop(L, 1);
}

static void *spawn_main(void *arg)
{
    job *j = arg;
    lua_State *L = luaL_newstate();
    if (!L) {
        set_result(j->res, 0, "out of memory creating a Lua state");
        return NULL;
    }
    luaL_openlibs(L);
    set_package_field(L, "path", j->path);
    set_package_field(L, "cpath", j->cpath);
    prt__modcache_install(L); /* poolrt and the module compiled once, not per thread */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "poolrt.internal"); /* loads poolrt, which fills it */
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == 0) {
        lua_getfield(L, -1, "thread_main");
        lua_pushlightuserdata(L, j->rt);
        lua_pushinteger(L, j->index);
        lua_pushstring(L, j->module);
        lua_pushstring(L, j->fn);
        lua_pushstring(L, j->args ? j->args : "return {n=0}");
        rc = lua_pcall(L, 5, 1, 0);
    }
    set_result(j->res, rc == 0, lua_tostring(L, -1));
    lua_close(L);
    return NULL;
}

/* Runs the threads and waits for all of them.  results[i] is filled for
 * every i < n, also when its thread could not start.  Returns 0, or
 * PRT_ETHREAD/PRT_ENOMEM when some thread did not run. */
int prt_spawn(prt_runtime *rt, int n, const char *module, const char *fn,
              const char *args, const char *path, const char *cpath,
              prt_spawn_result *results)
{
    if (!rt || n < 0 || !module || !fn || !results)
        return PRT_EINVAL;
    job *jobs = calloc((size_t)(n ? n : 1), sizeof *jobs);
    if (!jobs)
        return PRT_ENOMEM;
    int rc = PRT_OK, started = 0;
    for (int i = 0; i < n; i++) {
        jobs[i] = (job){ rt, i + 1, module, fn, args, path, cpath, &results[i], 0 };
        if (prt__thread_create(&jobs[i].thread, spawn_main, &jobs[i]) != 0) {
            for (int k = i; k < n; k++)
                set_result(&results[k], 0, "could not start thread");
            rc = PRT_ETHREAD;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(jobs[i].thread, NULL);
    free(jobs);
    return rc;
}

void prt_spawn_free(prt_spawn_result *results, int n)
{
    for (int i = 0; results && i < n; i++) {
        free(results[i].value);
        results[i].value = NULL;
    }
}
