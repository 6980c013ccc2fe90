/* Micro-benchmark of the verbs layer's software provider, run by hand (not
 * by make check or make bench): RDMA WRITE throughput over loopback at
 * chunk sizes 1 MiB, 32 MiB and 1 GiB, beside a plain TCP send of the same
 * bytes over loopback in the same chunks (send() on one side, recv() with
 * MSG_WAITALL into the destination on the other: the copies TCP forces and
 * nothing else). Both sides are in this process, each with its threads.
 *
 *   build/bench/bench_rdma_verbs [TOTAL_MIB [ROUNDS]]   (default 2048, 3)
 *
 * Prints one line per case: the median of ROUNDS, MB = 10^6 bytes. The
 * regions are registered (pinned) once, before timing; their cost is
 * printed on its own line. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rdma/rdma_verbs.h"

#define MiB ((size_t)1 << 20)
#define IN_FLIGHT 8     /* signalled WRITEs outstanding at once */

struct ends {
    struct rdma_conn *source, *destination;
    uint16_t port;
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct gw_error *err)
{
    fprintf(stderr, "bench_rdma_verbs: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

static void *connect_source(void *arg)
{
    struct ends *ends = arg;
    struct rdma_private_data none = { 0 }, reply;
    struct gw_error err;

    if (rdma_conn_open(RDMA_PROVIDER_SOFT, "127.0.0.1", ends->port, &none, &reply, -1, 10000,
                       &ends->source, &err) < 0)
        die("connect", &err);
    return NULL;
}

static void open_ends(struct ends *ends)
{
    struct rdma_listener *listener;
    struct rdma_request *request;
    struct gw_error err;
    pthread_t thread;

    if (rdma_listener_open(RDMA_PROVIDER_SOFT, "127.0.0.1", 0, &listener, &err) < 0)
        die("listen", &err);
    ends->port = rdma_listener_port(listener);
    pthread_create(&thread, NULL, connect_source, ends);
    if (rdma_listener_wait(listener, -1, 10000, &request, &err) < 0 ||
        rdma_request_accept(request, NULL, &ends->destination, &err) < 0)
        die("accept", &err);
    pthread_join(thread, NULL);
    rdma_listener_close(listener);
}

static void wait_one(struct rdma_conn *conn)
{
    struct rdma_completion wc;
    struct gw_error err;

    if (rdma_conn_poll(conn, &wc, 1, 60000, &err) != 1)
        die("poll", &err);
    if (wc.status != RDMA_WC_SUCCESS) {
        fprintf(stderr, "bench_rdma_verbs: WRITE failed: %s\n", rdma_wc_status_text(wc.status));
        exit(1);
    }
}

/* total bytes from src to dst in chunk-sized signalled WRITEs, at most
 * IN_FLIGHT outstanding; returns seconds from the first post to the last
 * completion. */
static double time_writes(struct ends *ends, const struct rdma_mr *src, const struct rdma_mr *dst,
                          size_t total, size_t chunk)
{
    size_t chunks = total / chunk, posted = 0, done = 0;
    struct gw_error err;
    double start = now();

    while (done < chunks) {
        while (posted < chunks && posted - done < IN_FLIGHT) {
            struct rdma_write write = {
                .wr_id = posted, .local = (char *)src->addr + posted * chunk,
                .len = (uint32_t)chunk, .lkey = src->lkey,
                .remote_addr = (uintptr_t)dst->addr + posted * chunk, .rkey = dst->rkey,
                .signaled = true,
            };

            if (rdma_conn_post_write(ends->source, &write, &err) < 0)
                die("post", &err);
            posted++;
        }
        wait_one(ends->source);
        done++;
    }
    return now() - start;
}

struct tcp_sink {
    int fd;
    char *dst;
    size_t total;
};

static void *tcp_receive(void *arg)
{
    struct tcp_sink *sink = arg;

    for (size_t got = 0; got < sink->total;) {
        ssize_t n = recv(sink->fd, sink->dst + got, sink->total - got, MSG_WAITALL);

        if (n <= 0)
            die("tcp recv", NULL);
        got += (size_t)n;
    }
    return NULL;
}

static void tcp_pair(int fds[2])
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(addr);
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(listener, 1) < 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        die("tcp listen", NULL);
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fds[0], (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("tcp connect", NULL);
    fds[1] = accept(listener, NULL, NULL);
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    close(listener);
}

/* The same bytes by send() in chunk-sized calls, received into dst. */
static double time_tcp(char *src, char *dst, size_t total, size_t chunk)
{
    struct tcp_sink sink = { .dst = dst, .total = total };
    pthread_t thread;
    double start;
    int fds[2];

    tcp_pair(fds);
    sink.fd = fds[1];
    pthread_create(&thread, NULL, tcp_receive, &sink);
    start = now();
    for (size_t at = 0; at < total; at += chunk)
        for (size_t sent = 0; sent < chunk;) {
            ssize_t n = send(fds[0], src + at + sent, chunk - sent, MSG_NOSIGNAL);

            if (n <= 0)
                die("tcp send", NULL);
            sent += (size_t)n;
        }
    pthread_join(thread, NULL);
    start = now() - start;
    close(fds[0]);
    close(fds[1]);
    return start;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *values, int n)
{
    qsort(values, (size_t)n, sizeof(*values), by_value);
    return values[n / 2];
}

int main(int argc, char **argv)
{
    size_t total = (argc > 1 ? strtoull(argv[1], NULL, 10) : 2048) * MiB;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    static const size_t chunks[] = { 1 * MiB, 32 * MiB, 1024 * MiB };
    char *src = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *dst = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct rdma_mr *src_mr, *dst_mr;
    struct ends ends;
    struct gw_error err;
    double t, rdma[16], tcp[16];

    if (src == MAP_FAILED || dst == MAP_FAILED || total < 1024 * MiB || rounds < 1 || rounds > 16)
        die("arguments (TOTAL_MIB >= 1024, 1 <= ROUNDS <= 16) or memory", NULL);
    for (size_t i = 0; i < total; i += 4096)
        src[i] = (char)(i >> 12);
    open_ends(&ends);
    t = now();
    if (rdma_mr_register(ends.source, src, total, 0, &src_mr, &err) < 0 ||
        rdma_mr_register(ends.destination, dst, total,
                         RDMA_ACCESS_LOCAL_WRITE | RDMA_ACCESS_REMOTE_WRITE, &dst_mr, &err) < 0)
        die("register", &err);
    printf("registration (mlock) of 2 x %zu MiB: %.3f s\n", total / MiB, now() - t);
    printf("%-10s %14s %14s %8s\n", "chunk MiB", "soft WRITE MB/s", "TCP send MB/s", "ratio");
    for (unsigned c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        for (int r = 0; r < rounds; r++) {
            rdma[r] = (double)total / 1e6 / time_writes(&ends, src_mr, dst_mr, total, chunks[c]);
            if (memcmp(src, dst, total))
                die("the destination differs from the source after the WRITEs", NULL);
            memset(dst, 0, total);
            tcp[r] = (double)total / 1e6 / time_tcp(src, dst, total, chunks[c]);
            memset(dst, 0, total);
        }
        t = median(rdma, rounds);
        printf("%-10zu %14.0f %14.0f %8.2f\n", chunks[c] / MiB, t, median(tcp, rounds),
               t / median(tcp, rounds));
    }
    rdma_conn_close(ends.source);
    rdma_conn_close(ends.destination);
    return 0;
}
