/*
 * record.c -- recording real traffic as a trace that `poolrt sim` replays
 * (runtime option `record`, the host's --record FILE, resty.poolrt's
 * `record`).
 *
 * One line per finished acquire, written when the connection is released
 * or when the acquire fails (docs/host.md#recording-traffic):
 *
 *   # poolrt trace v1
 *   # started 1764672000.123456 (unix seconds; t counts from here)
 *   t,pool,wait_ms,hold_ms,query_ms,queries,result
 *   0.001234,app,0.012,1.832,1.501,2,ok
 *
 * t is the acquire call, hold_ms runs from the moment the caller had the
 * connection to its release, query_ms is the time spent inside prt_query
 * while held.  result is ok, timeout (PRT_ETIMEDOUT) or error.
 *
 * Several writers may share one file: the threads of a process (one mutex
 * per recorder, one write(2) per line) and several processes, such as the
 * workers of one nginx (O_APPEND, so each line lands whole at the end).
 * The first opener writes the header under an fcntl lock; later openers
 * read its `started` moment, so every writer's t counts from the same
 * instant.  That instant is wall-clock time, converted once per recorder
 * to prt_now()'s monotonic clock.
 *
 * A recorder is shared by reference: the runtime holds one and so does
 * every pool it made (pools may outlive the runtime; a release after
 * prt_runtime_free still records).  When no recorder is set the hot path
 * pays one predictable branch on the pool's immutable `rec` pointer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define MAGIC "# poolrt trace v1\n"
#define COLUMNS "t,pool,wait_ms,hold_ms,query_ms,queries,result\n"

struct prt__recorder {
    atomic_int refs;
    int fd;                  /* O_APPEND; immutable */
    double base;             /* prt_now() at the file's `started` moment; immutable */
    pthread_mutex_t mu;      /* one line at a time */
    int write_failed;        /* a failed write was logged once; mu */
};

/* Opening, per process: two runtimes opening one new file at once would
 * both see it empty (fcntl locks do not exclude threads of one process). */
static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;

/* Writes all of buf to fd.  Returns 0 or an errno value. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Under the file lock: writes the header into an empty file, or reads the
 * `started` moment of the trace already in it.  Returns 0, or PRT_EINVAL
 * with err set when the file holds something else. */
static int header(int fd, const char *path, double *started, char *err, size_t errlen)
{
    char buf[256];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n == 0) {
        *started = unix_now();
        char head[256];
        int len = snprintf(head, sizeof head, MAGIC "# started %.6f (unix seconds; t counts from here)\n" COLUMNS,
                           *started);
        int e = write_all(fd, head, (size_t)len);
        if (e == 0)
            return PRT_OK;
        prt__errf(err, errlen, "runtime: cannot write the record file \"%s\": %s", path, strerror(e));
        return PRT_EINVAL;
    }
    buf[n > 0 ? n : 0] = '\0';
    size_t m = strlen(MAGIC);
    if (n < 0 || strncmp(buf, MAGIC, m) != 0 || sscanf(buf + m, "# started %lf", started) != 1) {
        prt__errf(err, errlen, "runtime: record file \"%s\" %s", path,
                  n < 0 ? strerror(errno) : "exists and is not a poolrt trace (it would be appended to)");
        return PRT_EINVAL;
    }
    return PRT_OK;
}

/* Opens (creating it, or appending to the trace already there) the record
 * file at path.  On failure err names the file and the reason.  *out has
 * one reference, the caller's (prt__record_unref). */
int prt__record_open(const char *path, prt__recorder **out, char *err, size_t errlen)
{
    prt__recorder *r = calloc(1, sizeof *r);
    if (!r) {
        prt__errf(err, errlen, "runtime: out of memory");
        return PRT_ENOMEM;
    }
    prt__mu_lock(&open_mu, PRT__RANK_RECORD_OPEN);
    r->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (r->fd < 0) {
        prt__mu_unlock(&open_mu, PRT__RANK_RECORD_OPEN);
        prt__errf(err, errlen, "runtime: cannot open the record file \"%s\": %s", path, strerror(errno));
        free(r);
        return PRT_EINVAL;
    }
    struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int rc;
    while ((rc = fcntl(r->fd, F_SETLKW, &lk)) != 0 && errno == EINTR)
        ;
    double started = 0;
    if (rc != 0)
        prt__errf(err, errlen, "runtime: cannot lock the record file \"%s\": %s", path, strerror(errno));
    else
        rc = header(r->fd, path, &started, err, errlen);
    lk.l_type = F_UNLCK;
    fcntl(r->fd, F_SETLK, &lk);
    if (rc != 0)
        close(r->fd); /* under open_mu, as every close of a record file */
    prt__mu_unlock(&open_mu, PRT__RANK_RECORD_OPEN);
    if (rc != 0) {
        free(r);
        return PRT_EINVAL;
    }
    r->base = prt_now() - (unix_now() - started);
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return PRT_OK;
}

prt__recorder *prt__record_ref(prt__recorder *r)
{
    if (r)
        atomic_fetch_add(&r->refs, 1);
    return r;
}

void prt__record_unref(prt__recorder *r)
{
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    prt__mu_lock(&open_mu, PRT__RANK_RECORD_OPEN); /* a close drops this process's fcntl locks on the file */
    close(r->fd);
    prt__mu_unlock(&open_mu, PRT__RANK_RECORD_OPEN);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* The pool's name as a CSV field: quoted (quotes doubled) only when it
 * holds a comma, a quote or a line break.  Returns the length written
 * (truncated to len - 1 like snprintf; never more than 2 * strlen + 2). */
static size_t csv_name(char *out, size_t len, const char *name)
{
    size_t o = 0;
    int quote = strpbrk(name, ",\"\r\n") != NULL;
    if (quote && o + 1 < len)
        out[o++] = '"';
    for (const char *s = name; *s && o + 2 < len; s++) {
        if (*s == '"')
            out[o++] = '"';
        out[o++] = *s;
    }
    if (quote && o + 1 < len)
        out[o++] = '"';
    out[o] = '\0';
    return o;
}

/* Writes one line.  A failed write (disk full) is logged once per
 * recorder and otherwise ignored: recording never fails an acquire. */
static void line(prt__recorder *r, const char *pool, double start, double wait, double hold, double query,
                 int queries, const char *result)
{
    size_t need = 2 * strlen(pool) + 128;
    char stack[512], *buf = need <= sizeof stack ? stack : malloc(need);
    if (!buf)
        return;
    int n = snprintf(buf, need, "%.6f,", start - r->base);
    n += (int)csv_name(buf + n, need - (size_t)n, pool);
    n += snprintf(buf + n, need - (size_t)n, ",%.3f,%.3f,%.3f,%d,%s\n", wait * 1e3, hold * 1e3, query * 1e3,
                  queries, result);
    prt__mu_lock(&r->mu, PRT__RANK_RECORD);
    int e = write_all(r->fd, buf, (size_t)n);
    int first = e && !r->write_failed;
    r->write_failed |= e != 0;
    prt__mu_unlock(&r->mu, PRT__RANK_RECORD);
    if (first)
        prt__logf(PRT_LOG_ERROR, "record: writing the trace failed (%s); lines are being lost", strerror(e));
    if (buf != stack)
        free(buf);
}

/* The caller of prt_acquire(start) got c.  The in-use owner's thread, no
 * lock held. */
void prt__record_acquired(prt_conn *c, double start)
{
    c->rec_start = start;
    c->rec_got = prt_now();
    c->rec_query = 0;
    c->rec_queries = 0;
}

void prt__record_query(prt_conn *c, double seconds)
{
    c->rec_query += seconds;
    c->rec_queries++;
}

/* c is being released at `now`: its line.  Before the pool takes it back
 * (no lock held). */
void prt__record_released(prt_conn *c, double now)
{
    line(c->pool->rec, c->pool->name, c->rec_start, c->rec_got - c->rec_start, now - c->rec_got, c->rec_query,
         c->rec_queries, "ok");
}

/* An acquire of p that began at `start` failed with rc: its line.
 * Returns rc.  No lock held. */
int prt__record_failed(prt_pool *p, double start, int rc)
{
    line(p->rec, p->name, start, prt_now() - start, 0, 0, 0, rc == PRT_ETIMEDOUT ? "timeout" : "error");
    return rc;
}
