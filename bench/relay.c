/*
 * bench/relay.c -- a loopback TCP relay for the benchmarks.
 *
 *   relay [-D DELAY_MS] [-L LIFETIME_S] [-p LISTEN_PORT] BACKEND_PORT...
 *
 * Listens on 127.0.0.1 (LISTEN_PORT, default: any free port, printed as
 * "port=N" on stdout once listening).  Each accepted connection goes to the
 * next backend port in turn (round robin, like a TCP load balancer in front
 * of replicas: HAProxy, a cloud proxy), after sleeping DELAY_MS first (to
 * make connection set-up slow, as for a remote server).  Bytes are copied
 * both ways until either side closes.  The relay exits by itself after
 * LIFETIME_S seconds (default 600) so a forgotten one cannot linger.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int delay_ms;
static int nbackends;
static int *backends;
static atomic_uint next_backend;

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Writes all of buf; 0 or -1. */
static int write_all(int fd, const char *buf, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, (size_t)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= w;
    }
    return 0;
}

static void *pipe_main(void *arg)
{
    int client = (int)(intptr_t)arg;
    if (delay_ms > 0) {
        struct timespec ts = { delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    unsigned k = atomic_fetch_add(&next_backend, 1);
    int server = connect_port(backends[k % (unsigned)nbackends]);
    if (server < 0) {
        close(client);
        return NULL;
    }
    struct pollfd fds[2] = { { .fd = client, .events = POLLIN }, { .fd = server, .events = POLLIN } };
    char buf[65536];
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int done = 0;
        for (int i = 0; i < 2 && !done; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n <= 0 || write_all(fds[1 - i].fd, buf, n) < 0)
                done = 1;
        }
        if (done)
            break;
    }
    close(client);
    close(server);
    return NULL;
}

int main(int argc, char **argv)
{
    int opt, port = 0, lifetime = 600;
    while ((opt = getopt(argc, argv, "D:L:p:")) != -1) {
        switch (opt) {
        case 'D': delay_ms = atoi(optarg); break;
        case 'L': lifetime = atoi(optarg); break;
        case 'p': port = atoi(optarg); break;
        default: goto usage;
        }
    }
    nbackends = argc - optind;
    if (nbackends < 1)
        goto usage;
    backends = calloc((size_t)nbackends, sizeof *backends);
    for (int i = 0; i < nbackends; i++)
        backends[i] = atoi(argv[optind + i]);
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)lifetime); /* default action: terminate */

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 512) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
        perror("relay: listen");
        return 1;
    }
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("relay: accept");
            return 1;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&th, &at, pipe_main, (void *)(intptr_t)c) != 0)
            close(c);
        pthread_attr_destroy(&at);
    }
usage:
    fprintf(stderr, "usage: relay [-D DELAY_MS] [-L LIFETIME_S] [-p LISTEN_PORT] BACKEND_PORT...\n");
    return 2;
}
