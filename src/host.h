/* host.h -- pieces of the `poolrt` host binary that are not the library. */
#ifndef POOLRT_HOST_H
#define POOLRT_HOST_H

int prt__host_events_start(const char *watch_path, double grace);
int prt__host_metrics_start(const char *addr);

#endif
