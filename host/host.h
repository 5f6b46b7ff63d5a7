/*
 * host.h -- the `poolrt` host binary (host/), which is not the library: it
 * sees the runtime only through the public header, like any embedding.
 */
#ifndef POOLRT_HOST_H
#define POOLRT_HOST_H

/* events.c: signals (SIGHUP reload, SIGINT/SIGTERM drain) and --watch. */
int host_events_start(const char *watch_path, double grace);
/* metrics_http.c: --metrics HOST:PORT. */
int host_metrics_start(const char *addr);

#endif
