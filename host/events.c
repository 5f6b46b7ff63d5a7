/*
 * events.c -- process-wide events of the `poolrt` host: signals and
 * --watch.  Not part of the library: an embedding application owns its
 * signals.
 *
 * SIGHUP, SIGINT and SIGTERM are blocked in every thread (the mask is set
 * before any thread starts and inherited) and taken by one thread with
 * sigwait, so handlers are ordinary code, not async-signal-safe fragments:
 *   SIGHUP           reload every runtime's policy file;
 *   SIGINT/SIGTERM   drain: refuse new work, wait up to the grace period for
 *                    connections in use, close everything, exit 0.
 * --watch adds an inotify thread on the policy file's directory: editors
 * save by writing a temp file and renaming it over the original, a burst of
 * events; the watcher waits for 100 ms of quiet, then reloads once.
 */
#define _DEFAULT_SOURCE 1 /* realpath */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
#include "poolrt.h"
#include "host.h"

static double grace_period;

static void *signal_main(void *arg)
{
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            prt_logf(PRT_LOG_INFO, "SIGHUP: reloading policies");
            if (prt_reload_all() > 0)
                prt_logf(PRT_LOG_WARN, "SIGHUP: some policies did not reload; their old versions keep serving");
            continue;
        }
        prt_logf(PRT_LOG_INFO, "%s: draining (grace %.1fs)", sig == SIGINT ? "SIGINT" : "SIGTERM", grace_period);
        int rc = prt_drain_all(grace_period);
        prt_logf(rc == PRT_OK ? PRT_LOG_INFO : PRT_LOG_WARN, "drained%s; exiting",
                  rc == PRT_OK ? "" : " with connections still in use after the grace period");
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    return NULL;
}

typedef struct watch {
    char dir[PATH_MAX];
    char base[NAME_MAX + 1];
    int fd;                  /* inotify, watching dir (made before the script runs) */
} watch;

/* Returns 1 when the inotify events in buf[0..n) name the watched file. */
static int names_file(const char *buf, ssize_t n, const char *base)
{
    for (const char *p = buf; p < buf + n;) {
        const struct inotify_event *ev = (const struct inotify_event *)(const void *)p;
        if (ev->len && strcmp(ev->name, base) == 0)
            return 1;
        p += sizeof *ev + ev->len;
    }
    return 0;
}

static void *watch_main(void *arg)
{
    watch *w = arg;
    int fd = w->fd;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0 || !names_file(buf, n, w->base))
            continue;
        while (poll(&pfd, 1, 100) > 0) /* coalesce the burst */
            if (read(fd, buf, sizeof buf) <= 0)
                break;
        prt_logf(PRT_LOG_INFO, "--watch: %s/%s changed; reloading", w->dir, w->base);
        prt_reload_all();
    }
    return NULL;
}

/* Blocks the signals in the calling (main) thread before any other thread
 * exists, and starts the signal thread and, with a policy to watch, the
 * watcher.  Returns 0, or -1 with a message printed. */
int host_events_start(const char *watch_path, double grace)
{
    static sigset_t set;
    grace_period = grace;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, signal_main, &set) != 0) {
        fprintf(stderr, "poolrt: cannot start the signal thread\n");
        return -1;
    }
    pthread_detach(th);
    if (!watch_path)
        return 0;
    static watch w;
    char *real = realpath(watch_path, NULL);
    if (!real) {
        fprintf(stderr, "poolrt: --watch: %s: %s\n", watch_path, strerror(errno));
        return -1;
    }
    char *slash = strrchr(real, '/');
    snprintf(w.base, sizeof w.base, "%s", slash + 1);
    *slash = '\0';
    snprintf(w.dir, sizeof w.dir, "%s", *real ? real : "/");
    free(real);
    /* Watched before the script runs, so no change it makes (or an editor
     * makes right after it starts) can come before the watch. */
    w.fd = inotify_init1(IN_CLOEXEC);
    if (w.fd < 0 || inotify_add_watch(w.fd, w.dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0) {
        fprintf(stderr, "poolrt: --watch: cannot watch %s: %s\n", w.dir, strerror(errno));
        return -1;
    }
    if (pthread_create(&th, NULL, watch_main, &w) != 0) {
        fprintf(stderr, "poolrt: cannot start the --watch thread\n");
        return -1;
    }
    pthread_detach(th);
    return 0;
}
