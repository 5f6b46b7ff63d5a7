/*
 * modcache.c -- Lua modules compiled once per process for the states of
 * rt:spawn.
 *
 * Every spawned thread starts a Lua state of its own and requires poolrt
 * in it: parsing lua/poolrt.lua alone takes about 0.5 ms a state, loading
 * its bytecode about 0.04 ms (bench/RESULTS-cpu.md).  A spawned state
 * therefore finds Lua modules through cached_loader instead of Lua's own
 * file loader: the same search (package.searchpath over package.path), but
 * each file is compiled once and its bytecode -- debug information kept,
 * so error messages and debug.getinfo read as before -- is reused for as
 * long as the file keeps its size and modification time.  A changed file
 * is compiled afresh.  Entries are never freed: they live, reachable from
 * `chunks`, until the process exits.
 *
 * The list is shared by all threads and guarded by `mu`; an entry does not
 * change once it is in the list, so it is read without the lock.
 */
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "internal.h"

typedef struct chunk {
    char *path;
    struct timespec mtime;
    off_t size;
    char *bc;
    size_t len;
} chunk;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static chunk **chunks; /* mu */
static int nchunks, capchunks; /* mu */

static const chunk *find(const char *path, const struct stat *st)
{
    const chunk *found = NULL;
    prt__mu_lock(&mu, PRT__RANK_MODCACHE);
    for (int i = 0; i < nchunks && !found; i++) {
        const chunk *c = chunks[i];
        if (c->size == st->st_size && c->mtime.tv_sec == st->st_mtim.tv_sec &&
            c->mtime.tv_nsec == st->st_mtim.tv_nsec && strcmp(c->path, path) == 0)
            found = c;
    }
    prt__mu_unlock(&mu, PRT__RANK_MODCACHE);
    return found;
}

typedef struct dump_buf {
    char *p;
    size_t len, cap;
    int failed;
} dump_buf;

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud)
{
    (void)L;
    dump_buf *b = ud;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = 1;
            return 1;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* Adds the function on top of L's stack, compiled from `path`, to the
 * list.  Out of memory just leaves it out: the next state compiles the
 * file itself. */
static void remember(lua_State *L, const char *path, const struct stat *st)
{
    dump_buf b = { 0 };
    chunk *c = calloc(1, sizeof *c);
    if (!c || lua_dump(L, dump_writer, &b) != 0 || b.failed || !(c->path = strdup(path))) {
        free(b.p);
        free(c);
        return;
    }
    c->mtime = st->st_mtim;
    c->size = st->st_size;
    c->bc = b.p;
    c->len = b.len;
    prt__mu_lock(&mu, PRT__RANK_MODCACHE);
    chunk **grown = prt__grow(chunks, &capchunks, nchunks + 1, sizeof *chunks);
    if (grown) {
        chunks = grown;
        chunks[nchunks++] = c;
        c = NULL;
    }
    prt__mu_unlock(&mu, PRT__RANK_MODCACHE);
    if (c) {
        free(c->path);
        free(c->bc);
        free(c);
    }
}

/* package.loaders[2] of a spawned state: Lua 5.1's file loader with the
 * list above in front of the compiler.  Returns the module's function, or
 * the search's "no file" message; raises Lua's own error on a file that
 * does not compile. */
static int cached_loader(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushvalue(L, 1);
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 2);
    if (lua_isnil(L, -2))
        return 1; /* the message */
    const char *path = lua_tostring(L, -2);
    struct stat st;
    int have_st = stat(path, &st) == 0;
    const chunk *c = have_st ? find(path, &st) : NULL;
    lua_pushfstring(L, "@%s", path);
    const char *chunkname = lua_tostring(L, -1);
    if (c && luaL_loadbuffer(L, c->bc, c->len, chunkname) == 0)
        return 1;
    if (c)
        lua_pop(L, 1); /* the cached copy did not load: compile the file */
    if (luaL_loadfile(L, path) != 0)
        return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, path, lua_tostring(L, -1));
    if (have_st)
        remember(L, path, &st);
    return 1;
}

/* Puts cached_loader in the place of Lua's file loader in L (a fresh state
 * with the standard libraries open).  Leaves L as it was when package has
 * no loaders or no searchpath. */
void prt__modcache_install(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaders");
    lua_getfield(L, -2, "searchpath");
    if (lua_istable(L, -2) && lua_isfunction(L, -1)) {
        lua_pushcfunction(L, cached_loader);
        lua_rawseti(L, -3, 2);
    }
    lua_pop(L, 3);
}
