/*
 * metrics_http.c -- `poolrt --metrics HOST:PORT`: a Prometheus endpoint
 * serving GET /metrics with every live runtime's metrics (metrics.c),
 * on libmicrohttpd's own thread so the script's threads are never involved.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "poolrt.h"
#include "host.h"

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)cls, (void)version, (void)upload, (void)upload_size, (void)state;
    int found = strcmp(url, "/metrics") == 0 && strcmp(method, "GET") == 0;
    char *text = found ? prt_metrics_all() : NULL;
    static char not_found[] = "not found: GET /metrics\n";
    struct MHD_Response *r =
        text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(sizeof not_found - 1, not_found, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", text ? "text/plain; version=0.0.4" : "text/plain");
    enum MHD_Result rc = MHD_queue_response(conn, text ? MHD_HTTP_OK : found ? 500 : MHD_HTTP_NOT_FOUND, r);
    MHD_destroy_response(r);
    return rc;
}

/* Parses HOST:PORT (IPv4) and starts the daemon.  Returns 0, or -1 with a
 * message printed. */
int host_metrics_start(const char *addr)
{
    char host[64];
    unsigned port = 0;
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = { .sin_family = AF_INET };
    if (!colon || (size_t)(colon - addr) >= sizeof host || sscanf(colon + 1, "%u", &port) != 1 || port > 65535) {
        fprintf(stderr, "poolrt: --metrics wants HOST:PORT, e.g. 127.0.0.1:9187 (got \"%s\")\n", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "poolrt: --metrics: \"%s\" is not an IPv4 address\n", host);
        return -1;
    }
    sa.sin_port = htons((uint16_t)port);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, serve, NULL,
                                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "poolrt: --metrics: cannot listen on %s\n", addr);
        return -1;
    }
    prt_logf(PRT_LOG_INFO, "metrics on http://%s/metrics", addr);
    return 0; /* runs until the process exits */
}
