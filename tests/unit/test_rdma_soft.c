/* The verbs interface through the software provider, two endpoints of this
 * process over loopback TCP: WRITEs land, or fail as completions with the
 * peer's memory untouched; SEND needs a posted RECV; completions come in
 * order; the connection's end is always reported; private data, rejects,
 * pinning limits and provider selection. */
#include <errno.h>
#include <linux/capability.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "rdma/rdma_verbs.h"

#define REGION (1u << 20)
#define WAIT_MS 10000

struct pair {
    struct rdma_conn *client, *server;
    struct rdma_private_data offer, reply;
    uint16_t port;
    int connect_rc;
    struct gw_error connect_err;
};

static void *connect_thread(void *arg)
{
    struct pair *pair = arg;

    pair->connect_rc = rdma_conn_open(RDMA_PROVIDER_SOFT, "127.0.0.1", pair->port, &pair->offer,
                                      &pair->reply, -1, WAIT_MS, &pair->client,
                                      &pair->connect_err);
    return NULL;
}

/* Connects a client to a fresh listener; the server answers with accept
 * (reply bytes "ok") or with reject ("no"). Returns the client's rc. */
static int open_pair(struct pair *pair, bool accept, struct rdma_private_data *seen_offer)
{
    struct rdma_private_data answer = { .len = 2 };
    struct rdma_listener *listener;
    struct rdma_request *request;
    struct gw_error err;
    pthread_t thread;

    memcpy(answer.bytes, accept ? "ok" : "no", 2);
    assert_int_equal(rdma_listener_open(RDMA_PROVIDER_SOFT, "127.0.0.1", 0, &listener, &err), 0);
    pair->port = rdma_listener_port(listener);
    assert_true(pair->port > 0);
    assert_int_equal(pthread_create(&thread, NULL, connect_thread, pair), 0);
    assert_int_equal(rdma_listener_wait(listener, -1, WAIT_MS, &request, &err), 0);
    if (seen_offer)
        *seen_offer = *rdma_request_private_data(request);
    if (accept)
        assert_int_equal(rdma_request_accept(request, &answer, &pair->server, &err), 0);
    else
        assert_int_equal(rdma_request_reject(request, &answer, &err), 0);
    pthread_join(thread, NULL);
    rdma_listener_close(listener);
    return pair->connect_rc;
}

static void connect_pair(struct pair *pair)
{
    *pair = (struct pair){ 0 };
    assert_int_equal(open_pair(pair, true, NULL), 0);
}

static void close_pair(struct pair *pair)
{
    rdma_conn_close(pair->client);
    rdma_conn_close(pair->server);
}

static struct rdma_completion poll_one(struct rdma_conn *conn)
{
    struct rdma_completion wc = { 0 };
    struct gw_error err;

    assert_int_equal(rdma_conn_poll(conn, &wc, 1, WAIT_MS, &err), 1);
    return wc;
}

/* Polls until the connection's event: every completion before it must be
 * flushed; returns the event's status. */
static enum rdma_wc_status poll_to_event(struct rdma_conn *conn)
{
    for (;;) {
        struct rdma_completion wc = poll_one(conn);

        if (wc.wr_id == RDMA_WR_ID_EVENT) {
            assert_int_equal(wc.opcode, RDMA_WC_OP_EVENT);
            return wc.status;
        }
        assert_int_equal(wc.status, RDMA_WC_FLUSHED);
    }
}

static void *aligned_region(unsigned char fill)
{
    void *p = NULL;

    assert_int_equal(posix_memalign(&p, 4096, REGION), 0);
    memset(p, fill, REGION);
    return p;
}

static bool all_bytes(const unsigned char *p, size_t len, unsigned char value)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != value)
            return false;
    return true;
}

/* A source region of 0xAB and a destination region of zeros on the
 * server, registered with dst_access. */
struct regions {
    unsigned char *src, *dst;
    struct rdma_mr *src_mr, *dst_mr;
};

static void make_regions(struct pair *pair, struct regions *r, unsigned dst_access)
{
    struct gw_error err;

    r->src = aligned_region(0xAB);
    r->dst = aligned_region(0);
    assert_int_equal(rdma_mr_register(pair->client, r->src, REGION, 0, &r->src_mr, &err), 0);
    assert_int_equal(rdma_mr_register(pair->server, r->dst, REGION, dst_access, &r->dst_mr,
                                      &err), 0);
}

static void free_regions(struct regions *r)
{
    free(r->src);
    free(r->dst);
}

static struct rdma_write write_to(struct regions *r, size_t offset, uint32_t len, uint64_t wr_id)
{
    return (struct rdma_write){ .wr_id = wr_id, .local = r->src, .len = len,
                                .lkey = r->src_mr->lkey,
                                .remote_addr = (uintptr_t)r->dst + offset,
                                .rkey = r->dst_mr->rkey, .signaled = true };
}

/* VmLck of this process, in KiB. */
static long locked_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *status = fopen("/proc/self/status", "r");

    while (status && fgets(line, sizeof(line), status))
        if (sscanf(line, "VmLck: %ld kB", &kib) == 1)
            break;
    if (status)
        fclose(status);
    return kib;
}

static const unsigned full_access = RDMA_ACCESS_LOCAL_WRITE | RDMA_ACCESS_REMOTE_WRITE;

static void test_write_lands_and_only_there(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_write write;
    struct rdma_completion wc;
    struct gw_error err;
    long locked_before = locked_kib();

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    /* Registration really pins: both regions are locked in RAM now. */
    assert_int_equal(locked_kib() - locked_before, 2 * REGION / 1024);
    write = write_to(&r, 4096, 65536, 7);
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), 0);
    wc = poll_one(pair.client);
    assert_int_equal(wc.wr_id, 7);
    assert_int_equal(wc.opcode, RDMA_WC_OP_WRITE);
    assert_int_equal(wc.status, RDMA_WC_SUCCESS);
    assert_true(all_bytes(r.dst, 4096, 0));
    assert_true(all_bytes(r.dst + 4096, 65536, 0xAB));
    assert_true(all_bytes(r.dst + 4096 + 65536, REGION - 4096 - 65536, 0));
    /* The server's program saw nothing: no completion there. */
    assert_int_equal(rdma_conn_poll(pair.server, &wc, 1, 0, &err), 0);
    close_pair(&pair);
    assert_int_equal(locked_kib(), locked_before);
    free_regions(&r);
}

/* How a 4 KiB WRITE to the peer's region is spoiled. */
enum spoil { SPOIL_RKEY, SPOIL_PAST_END, SPOIL_BELOW, SPOIL_DEREGISTERED, SPOIL_NOTHING };

/* The peer refuses the spoiled WRITE: an error completion with status here,
 * no byte changed there, the connection ended on both sides. */
static void check_refused(unsigned dst_access, enum spoil spoil, enum rdma_wc_status status)
{
    struct pair pair;
    struct regions r;
    struct rdma_write write;
    struct rdma_completion wc;
    struct gw_error err;

    connect_pair(&pair);
    make_regions(&pair, &r, dst_access);
    /* Past the end by one byte: nothing of it lands, not even the part inside. */
    write = write_to(&r, spoil == SPOIL_PAST_END ? REGION - 4096 + 1 : 0, 4096, 1);
    if (spoil == SPOIL_RKEY)
        write.rkey ^= 0x5a5a;
    if (spoil == SPOIL_BELOW)
        write.remote_addr -= 1;
    if (spoil == SPOIL_DEREGISTERED)
        assert_int_equal(rdma_mr_deregister(pair.server, r.dst_mr, &err), 0);
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), 0);
    wc = poll_one(pair.client);
    assert_int_equal(wc.wr_id, write.wr_id);
    assert_int_equal(wc.status, status);
    assert_int_equal(poll_to_event(pair.client), RDMA_WC_DISCONNECTED);
    assert_int_equal(poll_to_event(pair.server), RDMA_WC_DISCONNECTED);
    assert_true(all_bytes(r.dst, REGION, 0));
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), -ENOTCONN);
    close_pair(&pair);
    free_regions(&r);
}

static void test_wrong_rkey_fails(void **state)
{
    (void)state;
    check_refused(full_access, SPOIL_RKEY, RDMA_WC_REMOTE_BAD_KEY);
}

static void test_out_of_bounds_fails(void **state)
{
    (void)state;
    check_refused(full_access, SPOIL_PAST_END, RDMA_WC_REMOTE_RANGE);
}

static void test_below_region_fails(void **state)
{
    (void)state;
    check_refused(full_access, SPOIL_BELOW, RDMA_WC_REMOTE_RANGE);
}

static void test_deregistered_region_fails(void **state)
{
    (void)state;
    check_refused(full_access, SPOIL_DEREGISTERED, RDMA_WC_REMOTE_BAD_KEY);
}

static void test_missing_remote_write_access_fails(void **state)
{
    (void)state;
    check_refused(RDMA_ACCESS_LOCAL_WRITE, SPOIL_NOTHING, RDMA_WC_REMOTE_NO_WRITE);
}

static void test_bad_local_key_is_refused_at_post(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_write write;
    struct gw_error err;

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    write = write_to(&r, 0, 4096, 6);
    write.lkey ^= 1;
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "lkey"));
    write = write_to(&r, 0, REGION, 6);
    write.local = r.src + 1;
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "not inside"));
    /* A RECV needs local-write access. */
    assert_int_equal(rdma_conn_post_recv(pair.client, 1, r.src, 64, r.src_mr->lkey, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "local-write"));
    close_pair(&pair);
    free_regions(&r);
}

static void test_send_without_recv_fails(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_completion wc;
    struct gw_error err;

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    assert_int_equal(rdma_conn_post_send(pair.client, 9, r.src, 100, r.src_mr->lkey, &err), 0);
    wc = poll_one(pair.client);
    assert_int_equal(wc.wr_id, 9);
    assert_int_equal(wc.opcode, RDMA_WC_OP_SEND);
    assert_int_equal(wc.status, RDMA_WC_RNR);
    assert_int_equal(poll_to_event(pair.client), RDMA_WC_DISCONNECTED);
    assert_int_equal(poll_to_event(pair.server), RDMA_WC_DISCONNECTED);
    close_pair(&pair);
    free_regions(&r);
}

static void test_send_larger_than_recv_fails_both_sides(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_completion wc;
    struct gw_error err;

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    assert_int_equal(rdma_conn_post_recv(pair.server, 20, r.dst, 64, r.dst_mr->lkey, &err), 0);
    assert_int_equal(rdma_conn_post_send(pair.client, 21, r.src, 65, r.src_mr->lkey, &err), 0);
    wc = poll_one(pair.client);
    assert_int_equal(wc.status, RDMA_WC_REMOTE_INVALID);
    wc = poll_one(pair.server);
    assert_int_equal(wc.wr_id, 20);
    assert_int_equal(wc.status, RDMA_WC_LOCAL_LENGTH);
    assert_true(all_bytes(r.dst, REGION, 0));
    close_pair(&pair);
    free_regions(&r);
}

/* WRITEs, unsignalled but the last, then a SEND: the client's completions
 * come in post order, and when the server's RECV completes every WRITE's
 * bytes are already there (the barrier the protocol relies on). */
static void test_completions_in_order_and_send_is_a_barrier(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_completion wc;
    struct gw_error err;
    unsigned char *msg;

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    msg = r.dst + REGION - 4096;    /* the server's receive buffer */
    assert_int_equal(rdma_conn_post_recv(pair.server, 100, msg, 4096, r.dst_mr->lkey, &err), 0);
    for (unsigned i = 0; i < 16; i++) {
        struct rdma_write write = write_to(&r, (size_t)i * 4096 * 2, 4096, i);

        write.signaled = i % 4 == 3;
        assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), 0);
    }
    assert_int_equal(rdma_conn_post_send(pair.client, 50, r.src, 32, r.src_mr->lkey, &err), 0);
    for (unsigned i = 3; i < 16; i += 4) {
        wc = poll_one(pair.client);
        assert_int_equal(wc.wr_id, i);
        assert_int_equal(wc.status, RDMA_WC_SUCCESS);
    }
    wc = poll_one(pair.client);
    assert_int_equal(wc.wr_id, 50);
    assert_int_equal(wc.opcode, RDMA_WC_OP_SEND);
    wc = poll_one(pair.server);
    assert_int_equal(wc.wr_id, 100);
    assert_int_equal(wc.opcode, RDMA_WC_OP_RECV);
    assert_int_equal(wc.byte_len, 32);
    assert_true(all_bytes(msg, 32, 0xAB));
    for (unsigned i = 0; i < 16; i++) {
        assert_true(all_bytes(r.dst + (size_t)i * 8192, 4096, 0xAB));
        assert_true(all_bytes(r.dst + (size_t)i * 8192 + 4096, 4096, 0));
    }
    close_pair(&pair);
    free_regions(&r);
}

/* Unsignalled WRITEs hold their send-queue slots until a later signalled
 * completion is polled, as on hardware. */
static void test_send_queue_depth(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_write write;
    struct rdma_completion wc;
    struct gw_error err;

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    for (unsigned i = 0; i < RDMA_SEND_QUEUE_DEPTH; i++) {
        write = write_to(&r, 0, 64, i);
        write.signaled = i == RDMA_SEND_QUEUE_DEPTH - 1;
        assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), 0);
    }
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), -ENOBUFS);
    wc = poll_one(pair.client);
    assert_int_equal(wc.wr_id, RDMA_SEND_QUEUE_DEPTH - 1);
    assert_int_equal(rdma_conn_post_write(pair.client, &write, &err), 0);
    close_pair(&pair);
    free_regions(&r);
}

static void test_disconnect_flushes_and_reports(void **state)
{
    struct pair pair;
    struct regions r;
    struct rdma_completion wc;
    struct gw_error err;

    (void)state;
    connect_pair(&pair);
    make_regions(&pair, &r, full_access);
    assert_int_equal(rdma_conn_post_recv(pair.server, 30, r.dst, 64, r.dst_mr->lkey, &err), 0);
    rdma_conn_disconnect(pair.client);
    assert_int_equal(poll_to_event(pair.client), RDMA_WC_DISCONNECTED);
    wc = poll_one(pair.server);
    assert_int_equal(wc.wr_id, 30);
    assert_int_equal(wc.status, RDMA_WC_FLUSHED);
    wc = poll_one(pair.server);
    assert_int_equal(wc.wr_id, RDMA_WR_ID_EVENT);
    assert_int_equal(wc.status, RDMA_WC_DISCONNECTED);
    assert_int_equal(rdma_conn_poll(pair.server, &wc, 1, 0, &err), -ENOTCONN);
    close_pair(&pair);
    free_regions(&r);
}

/* Closing without a disconnect first still says goodbye: the peer sees a
 * disconnect, not a loss. */
static void test_close_is_a_disconnect_for_the_peer(void **state)
{
    struct pair pair;

    (void)state;
    connect_pair(&pair);
    rdma_conn_close(pair.client);
    pair.client = NULL;
    assert_int_equal(poll_to_event(pair.server), RDMA_WC_DISCONNECTED);
    close_pair(&pair);
}

/* A peer that dies (its process killed: the kernel closes its socket) ends
 * the connection here with CONNECTION_LOST, outstanding work first. */
static void test_peer_death_is_connection_lost(void **state)
{
    struct rdma_listener *listener;
    struct rdma_request *request;
    struct rdma_conn *conn;
    struct rdma_completion wc;
    struct gw_error err;
    unsigned char *buf = aligned_region(0);
    struct rdma_mr *mr;
    pid_t child;

    (void)state;
    assert_int_equal(rdma_listener_open(RDMA_PROVIDER_SOFT, "::1", 0, &listener, &err), 0);
    child = fork();
    if (child == 0) {
        struct rdma_private_data none = { 0 }, reply;
        struct rdma_conn *peer;

        if (rdma_conn_open(RDMA_PROVIDER_SOFT, "::1", rdma_listener_port(listener), &none,
                           &reply, -1, WAIT_MS, &peer, NULL) == 0)
            pause();
        _exit(1);
    }
    assert_int_equal(rdma_listener_wait(listener, -1, WAIT_MS, &request, &err), 0);
    assert_int_equal(rdma_request_accept(request, NULL, &conn, &err), 0);
    assert_int_equal(rdma_mr_register(conn, buf, REGION, full_access, &mr, &err), 0);
    assert_int_equal(rdma_conn_post_recv(conn, 40, buf, 64, mr->lkey, &err), 0);
    assert_int_equal(rdma_conn_poll(conn, &wc, 1, 100, &err), 0);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(poll_to_event(conn), RDMA_WC_CONNECTION_LOST);
    rdma_conn_close(conn);
    rdma_listener_close(listener);
    free(buf);
}

/* The peer is killed while WRITEs are in flight: completions are successes,
 * then one CONNECTION_LOST, then flushes, then the event; never a hang. */
static void test_peer_death_mid_write(void **state)
{
    const size_t big = 256u << 20, piece = 16u << 20;
    struct rdma_listener *listener;
    struct rdma_request *request;
    struct rdma_conn *conn;
    struct rdma_mr *mr;
    struct gw_error err;
    uint64_t target[2];
    unsigned char *buf;
    int pipefd[2];
    pid_t child;
    bool lost = false;

    (void)state;
    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(rdma_listener_open(RDMA_PROVIDER_SOFT, "127.0.0.1", 0, &listener, &err), 0);
    child = fork();
    if (child == 0) {
        struct rdma_private_data none = { 0 }, reply;
        struct rdma_conn *peer;
        struct rdma_mr *peer_mr;
        void *region = calloc(1, big);

        if (region && rdma_conn_open(RDMA_PROVIDER_SOFT, "127.0.0.1",
                                     rdma_listener_port(listener), &none, &reply, -1, WAIT_MS,
                                     &peer, NULL) == 0 &&
            rdma_mr_register(peer, region, big, full_access, &peer_mr, NULL) == 0) {
            uint64_t where[2] = { (uintptr_t)region, peer_mr->rkey };

            if (write(pipefd[1], where, sizeof(where)) == sizeof(where))
                pause();
        }
        _exit(1);
    }
    assert_int_equal(rdma_listener_wait(listener, -1, WAIT_MS, &request, &err), 0);
    assert_int_equal(rdma_request_accept(request, NULL, &conn, &err), 0);
    assert_int_equal(read(pipefd[0], target, sizeof(target)), sizeof(target));
    buf = calloc(1, big);
    assert_non_null(buf);
    assert_int_equal(rdma_mr_register(conn, buf, big, 0, &mr, &err), 0);
    for (size_t at = 0; at < big; at += piece) {
        struct rdma_write write = { .wr_id = at / piece, .local = buf + at, .len = piece,
                                    .lkey = mr->lkey, .remote_addr = target[0] + at,
                                    .rkey = (uint32_t)target[1], .signaled = true };

        assert_int_equal(rdma_conn_post_write(conn, &write, &err), 0);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (uint64_t expected = 0;; expected++) {
        struct rdma_completion wc = poll_one(conn);

        if (wc.wr_id == RDMA_WR_ID_EVENT) {
            assert_int_equal(wc.status, RDMA_WC_CONNECTION_LOST);
            assert_true(expected == big / piece || lost);
            break;
        }
        assert_int_equal(wc.wr_id, expected);
        if (wc.status == RDMA_WC_CONNECTION_LOST) {
            assert_false(lost);
            lost = true;
        } else if (lost) {
            assert_int_equal(wc.status, RDMA_WC_FLUSHED);
        } else {
            assert_int_equal(wc.status, RDMA_WC_SUCCESS);
        }
    }
    fprintf(stderr, "# the peer died %s the WRITEs\n", lost ? "during" : "after");
    rdma_conn_close(conn);
    rdma_listener_close(listener);
    close(pipefd[0]);
    close(pipefd[1]);
    free(buf);
}

static void test_private_data_and_reject(void **state)
{
    struct pair pair = { .offer = { .len = 5, .bytes = "hello" } };
    struct rdma_private_data seen;

    (void)state;
    assert_int_equal(open_pair(&pair, true, &seen), 0);
    assert_int_equal(seen.len, 5);
    assert_memory_equal(seen.bytes, "hello", 5);
    assert_int_equal(pair.reply.len, 2);
    assert_memory_equal(pair.reply.bytes, "ok", 2);
    close_pair(&pair);

    pair = (struct pair){ .offer = { .len = RDMA_PRIVATE_DATA_MAX } };
    memset(pair.offer.bytes, 0x77, RDMA_PRIVATE_DATA_MAX);
    assert_int_equal(open_pair(&pair, false, &seen), -ECONNREFUSED);
    assert_int_equal(seen.len, RDMA_PRIVATE_DATA_MAX);
    assert_memory_equal(seen.bytes, pair.offer.bytes, RDMA_PRIVATE_DATA_MAX);
    assert_null(pair.client);
    assert_int_equal(pair.reply.len, 2);
    assert_memory_equal(pair.reply.bytes, "no", 2);
    assert_non_null(strstr(pair.connect_err.msg, "rejected"));
}

static void test_nobody_listening_is_refused(void **state)
{
    struct rdma_private_data offer = { 0 }, reply = { .len = 9 };
    struct rdma_listener *listener;
    struct rdma_conn *conn;
    struct gw_error err;
    uint16_t port;

    (void)state;
    assert_int_equal(rdma_listener_open(RDMA_PROVIDER_SOFT, "127.0.0.1", 0, &listener, &err), 0);
    port = rdma_listener_port(listener);
    rdma_listener_close(listener);
    assert_int_equal(rdma_conn_open(RDMA_PROVIDER_SOFT, "127.0.0.1", port, &offer, &reply, -1,
                                    WAIT_MS, &conn, &err), -ECONNREFUSED);
    assert_int_equal(reply.len, 0);
}

static void *cancel_later(void *arg)
{
    usleep(50 * 1000);
    rdma_conn_cancel(arg);
    return NULL;
}

static void test_poll_times_out_and_cancels(void **state)
{
    struct pair pair;
    struct rdma_completion wc;
    struct gw_error err;
    pthread_t thread;

    (void)state;
    connect_pair(&pair);
    assert_int_equal(rdma_conn_poll(pair.client, &wc, 1, 20, &err), 0);
    assert_int_equal(pthread_create(&thread, NULL, cancel_later, pair.client), 0);
    assert_int_equal(rdma_conn_poll(pair.client, &wc, 1, -1, &err), -ECANCELED);
    pthread_join(thread, NULL);
    close_pair(&pair);
}

/* Drops CAP_IPC_LOCK from every set, so that RLIMIT_MEMLOCK binds. */
static int drop_ipc_lock(void)
{
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct data[2];

    if (syscall(SYS_capget, &header, data) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        unsigned bit = CAP_IPC_LOCK >= 32 * (i + 1) || CAP_IPC_LOCK < 32 * i
                           ? 0 : 1u << (CAP_IPC_LOCK - 32 * i);
        data[i].effective &= ~bit;
        data[i].permitted &= ~bit;
        data[i].inheritable &= ~bit;
    }
    return syscall(SYS_capset, &header, data) < 0 ? -1 : 0;
}

/* In a child (the limit and capability stay there): registering more than
 * RLIMIT_MEMLOCK allows fails with the sentence naming `ulimit -l`.
 * Exit 0: as expected; 2: could not drop the capability; 1: wrong. */
static int pin_over_limit_child(void)
{
    struct rlimit limit = { 64 << 10, 64 << 10 };
    struct pair pair;
    struct rdma_mr *mr;
    struct gw_error err = { 0 };
    void *buf = aligned_region(1);
    int rc;

    if (drop_ipc_lock() < 0 || setrlimit(RLIMIT_MEMLOCK, &limit) < 0)
        return 2;
    connect_pair(&pair);
    rc = rdma_mr_register(pair.server, buf, REGION, full_access, &mr, &err);
    fprintf(stderr, "# %d: %s\n", rc, err.msg);
    if (rc != -ENOMEM)
        return 1;
    if (!strstr(err.msg, "ulimit -l") || !strstr(err.msg, "65536 bytes"))
        return 1;
    close_pair(&pair);
    free(buf);
    return 0;
}

static void test_pin_over_memlock_limit_names_ulimit(void **state)
{
    int status;
    pid_t child;

    (void)state;
    fflush(NULL);
    child = fork();
    if (child == 0)
        _exit(pin_over_limit_child());
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 2) {
        fprintf(stderr, "# cannot drop CAP_IPC_LOCK or set RLIMIT_MEMLOCK here: a process "
                "with the capability ignores the limit, so the case cannot be made\n");
        skip();
    }
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_provider_selection(void **state)
{
    enum rdma_provider chosen = RDMA_PROVIDER_AUTO;
    struct gw_error err;
    int devices;

    (void)state;
    assert_int_equal(rdma_provider_parse("soft", &chosen, &err), 0);
    assert_int_equal(chosen, RDMA_PROVIDER_SOFT);
    assert_int_equal(rdma_provider_parse("ib", &chosen, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "auto, verbs and soft"));
    devices = rdma_device_count(&err);
    assert_true(devices >= 0);
    if (devices > 0) {
        fprintf(stderr, "# this host has %d RDMA device(s): the no-device cases do not apply\n",
                devices);
        skip();
    }
    assert_int_equal(rdma_provider_resolve(RDMA_PROVIDER_AUTO, &chosen, &err), 0);
    assert_int_equal(chosen, RDMA_PROVIDER_SOFT);
    assert_int_equal(rdma_provider_resolve(RDMA_PROVIDER_VERBS, &chosen, &err), -ENODEV);
    assert_non_null(strstr(err.msg, "rdma link add NAME type rxe netdev IF"));
    assert_non_null(strstr(err.msg, "x-rdma-provider soft"));
}

/* Without a device, the rdma-core provider's listen and connect fail with
 * a sentence (their only paths that can run on this host). */
static void test_verbs_without_device_fails_cleanly(void **state)
{
    struct rdma_private_data offer = { 0 }, reply;
    struct rdma_listener *listener;
    struct rdma_conn *conn;
    struct gw_error err = { 0 };

    (void)state;
    if (rdma_device_count(&err) > 0)
        skip();
    assert_true(rdma_listener_open(RDMA_PROVIDER_VERBS, "127.0.0.1", 0, &listener, &err) < 0);
    assert_non_null(strstr(err.msg, "cannot listen for RDMA on 127.0.0.1"));
    assert_true(rdma_conn_open(RDMA_PROVIDER_VERBS, "127.0.0.1", 4444, &offer, &reply, -1, 1000,
                               &conn, &err) < 0);
    assert_non_null(strstr(err.msg, "rdma:127.0.0.1:4444"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_lands_and_only_there),
        cmocka_unit_test(test_wrong_rkey_fails),
        cmocka_unit_test(test_out_of_bounds_fails),
        cmocka_unit_test(test_below_region_fails),
        cmocka_unit_test(test_deregistered_region_fails),
        cmocka_unit_test(test_missing_remote_write_access_fails),
        cmocka_unit_test(test_bad_local_key_is_refused_at_post),
        cmocka_unit_test(test_send_without_recv_fails),
        cmocka_unit_test(test_send_larger_than_recv_fails_both_sides),
        cmocka_unit_test(test_completions_in_order_and_send_is_a_barrier),
        cmocka_unit_test(test_send_queue_depth),
        cmocka_unit_test(test_disconnect_flushes_and_reports),
        cmocka_unit_test(test_close_is_a_disconnect_for_the_peer),
        cmocka_unit_test(test_peer_death_is_connection_lost),
        cmocka_unit_test(test_peer_death_mid_write),
        cmocka_unit_test(test_private_data_and_reject),
        cmocka_unit_test(test_nobody_listening_is_refused),
        cmocka_unit_test(test_poll_times_out_and_cancels),
        cmocka_unit_test(test_pin_over_memlock_limit_names_ulimit),
        cmocka_unit_test(test_provider_selection),
        cmocka_unit_test(test_verbs_without_device_fails_cleanly),
    };

    /* Every case runs the software provider over loopback TCP. */
    printf("# verbs interface tests through the software provider (no RDMA hardware used)\n");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
