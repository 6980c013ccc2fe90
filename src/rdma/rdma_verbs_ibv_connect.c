/* The rdma-core provider's connection setup through librdmacm: a listener,
 * connect requests whose private data the server reads before it accepts
 * or rejects, and the client's address and route resolution and connect.
 * Every wait is on the event channel's fd, with the caller's cancel_fd and
 * deadline. Never run on hardware here (see rdma_verbs_ibv.c). */
#include "rdma/rdma_verbs_ibv.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RESOLVE_MS 5000

struct ibv_listener {
    struct rdma_listener base;
    struct rdma_event_channel *events;
    struct rdma_cm_id *id;
};

struct ibv_request {
    struct rdma_request base;
    struct rdma_cm_id *id;
};

static int64_t now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The next rdma_cm event on events, waiting for it like everything else
 * here: cancel_fd and a deadline (-1: none) end the wait. */
static int next_event(struct rdma_event_channel *events, int cancel_fd, int64_t deadline,
                      struct rdma_cm_event **event, struct gw_error *err)
{
    struct pollfd fds[2] = { { .fd = events->fd, .events = POLLIN },
                             { .fd = cancel_fd, .events = POLLIN } };

    for (;;) {
        int64_t left = deadline < 0 ? -1 : deadline - now_ms();
        int n;

        if (deadline >= 0 && left <= 0)
            return gw_error_set(err, -ETIMEDOUT, "timed out waiting for rdma_cm");
        n = poll(fds, cancel_fd >= 0 ? 2 : 1, (int)(left > 1000000 ? 1000000 : left));
        if (n < 0 && errno != EINTR)
            return gw_error_set(err, -errno, "waiting for rdma_cm: %s", strerror(errno));
        if (n > 0 && cancel_fd >= 0 && fds[1].revents)
            return gw_error_set(err, -ECANCELED, "cancelled while waiting for rdma_cm");
        if (n > 0 && fds[0].revents)
            break;
    }
    if (rdma_get_cm_event(events, event) < 0)
        return gw_error_set(err, -errno, "rdma_get_cm_event: %s", strerror(errno));
    return 0;
}

/* Waits for the event expected; any other ends the wait with a sentence. */
static int expect_event(struct rdma_event_channel *events, enum rdma_cm_event_type expected,
                        int cancel_fd, int64_t deadline, struct rdma_private_data *reply,
                        struct gw_error *err)
{
    struct rdma_cm_event *event;
    int rc = next_event(events, cancel_fd, deadline, &event, err);

    if (rc < 0)
        return rc;
    if (reply && event->param.conn.private_data) {
        reply->len = event->param.conn.private_data_len > RDMA_PRIVATE_DATA_MAX
                         ? RDMA_PRIVATE_DATA_MAX : event->param.conn.private_data_len;
        memcpy(reply->bytes, event->param.conn.private_data, reply->len);
    }
    if (event->event == RDMA_CM_EVENT_REJECTED)
        rc = gw_error_set(err, -ECONNREFUSED, "the peer rejected the RDMA connection");
    else if (event->event != expected)
        rc = gw_error_set(err, -ECONNABORTED, "rdma_cm: %s while waiting for %s (status %d)",
                          rdma_event_str(event->event), rdma_event_str(expected),
                          event->status);
    rdma_ack_cm_event(event);
    return rc;
}

static struct rdma_conn_param conn_param(const struct rdma_private_data *data)
{
    return (struct rdma_conn_param){
        .private_data = data ? data->bytes : NULL,
        .private_data_len = data ? data->len : 0,
        .responder_resources = 1, .initiator_depth = 1,
        .retry_count = 7,
        .rnr_retry_count = 0,   /* a SEND with no RECV posted fails at once (rdma_verbs.h) */
    };
}

/* ---- Server ------------------------------------------------------------ */

static int request_accept(struct rdma_request *base, const struct rdma_private_data *reply,
                          struct rdma_conn **out, struct gw_error *err)
{
    struct ibv_request *request = (struct ibv_request *)base;
    struct rdma_conn_param param = conn_param(reply);
    struct ibv_conn *conn = NULL;
    int rc = rdma_ibv_conn_new(&conn, err);

    if (rc == 0 && rdma_migrate_id(request->id, conn->events) < 0)
        rc = gw_error_set(err, -errno, "rdma_migrate_id: %s", strerror(errno));
    if (rc == 0) {
        conn->id = request->id;
        request->id = NULL;
        rc = rdma_ibv_create_queues(conn, err);
    }
    if (rc == 0 && rdma_accept(conn->id, &param) < 0)
        rc = gw_error_set(err, -errno, "rdma_accept: %s", strerror(errno));
    if (rc == 0)
        rc = expect_event(conn->events, RDMA_CM_EVENT_ESTABLISHED, -1, now_ms() + RESOLVE_MS,
                          NULL, err);
    if (request->id)
        rdma_reject(request->id, NULL, 0), rdma_destroy_id(request->id);
    free(request);
    if (rc < 0) {
        if (conn)
            rdma_ibv_conn_drop(conn);
        return rc;
    }
    *out = &conn->base;
    return 0;
}

static int request_reject(struct rdma_request *base, const struct rdma_private_data *reply,
                          struct gw_error *err)
{
    struct ibv_request *request = (struct ibv_request *)base;
    int rc = rdma_reject(request->id, reply ? reply->bytes : NULL, reply ? reply->len : 0);

    if (rc < 0)
        rc = gw_error_set(err, -errno, "rdma_reject: %s", strerror(errno));
    rdma_destroy_id(request->id);
    free(request);
    return rc;
}

static const struct rdma_request_ops ibv_request_ops = {
    .accept = request_accept,
    .reject = request_reject,
};

static uint16_t listener_port(const struct rdma_listener *base)
{
    return ntohs(rdma_get_src_port(((const struct ibv_listener *)base)->id));
}

static int listener_wait(struct rdma_listener *base, int cancel_fd, int timeout_ms,
                         struct rdma_request **out, struct gw_error *err)
{
    struct ibv_listener *listener = (struct ibv_listener *)base;
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    struct ibv_request *request;
    struct rdma_cm_event *event;
    int rc;

    for (;;) {
        rc = next_event(listener->events, cancel_fd, deadline, &event, err);
        if (rc < 0)
            return rc;
        if (event->event == RDMA_CM_EVENT_CONNECT_REQUEST)
            break;
        rdma_ack_cm_event(event);
    }
    request = calloc(1, sizeof(*request));
    if (!request) {
        rdma_reject(event->id, NULL, 0);
        rdma_ack_cm_event(event);
        return gw_error_set(err, -ENOMEM, "out of memory for a connect request");
    }
    request->base.ops = &ibv_request_ops;
    request->id = event->id;
    request->base.offer.len = event->param.conn.private_data_len > RDMA_PRIVATE_DATA_MAX
                                  ? RDMA_PRIVATE_DATA_MAX : event->param.conn.private_data_len;
    memcpy(request->base.offer.bytes, event->param.conn.private_data, request->base.offer.len);
    rdma_ack_cm_event(event);
    *out = &request->base;
    return 0;
}

static void listener_close(struct rdma_listener *base)
{
    struct ibv_listener *listener = (struct ibv_listener *)base;

    if (listener->id)
        rdma_destroy_id(listener->id);
    if (listener->events)
        rdma_destroy_event_channel(listener->events);
    free(listener);
}

static const struct rdma_listener_ops ibv_listener_ops = {
    .port = listener_port,
    .wait = listener_wait,
    .close = listener_close,
};

static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **result,
                   struct gw_error *err)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
    char service[8];
    int rc;

    snprintf(service, sizeof(service), "%u", port);
    rc = getaddrinfo(host[0] ? host : NULL, service, &hints, result);
    if (rc)
        return gw_error_set(err, -EHOSTUNREACH, "rdma: cannot resolve '%s': %s", host,
                            gai_strerror(rc));
    return 0;
}

int rdma_ibv_listen(const char *host, uint16_t port, struct rdma_listener **out,
                    struct gw_error *err)
{
    struct ibv_listener *listener = calloc(1, sizeof(*listener));
    struct addrinfo *address = NULL;
    int rc = listener ? resolve(host, port, true, &address, err)
                      : gw_error_set(err, -ENOMEM, "out of memory for an RDMA listener");

    if (rc == 0) {
        listener->base.ops = &ibv_listener_ops;
        listener->events = rdma_create_event_channel();
        if (!listener->events || rdma_create_id(listener->events, &listener->id, NULL,
                                                RDMA_PS_TCP) < 0 ||
            rdma_bind_addr(listener->id, address->ai_addr) < 0 || rdma_listen(listener->id, 8) < 0)
            rc = gw_error_set(err, -errno, "cannot listen for RDMA on %s port %u: %s", host,
                              port, strerror(errno));
    }
    if (address)
        freeaddrinfo(address);
    if (rc < 0) {
        if (listener)
            listener_close(&listener->base);
        return rc;
    }
    *out = &listener->base;
    return 0;
}

/* ---- Client ------------------------------------------------------------ */

static int resolve_route(struct ibv_conn *conn, const char *host, uint16_t port, int cancel_fd,
                         int64_t deadline, struct gw_error *err)
{
    struct addrinfo *address;
    int rc = resolve(host, port, false, &address, err);

    if (rc < 0)
        return rc;
    if (rdma_resolve_addr(conn->id, NULL, address->ai_addr, RESOLVE_MS) < 0)
        rc = gw_error_set(err, -errno, "rdma_resolve_addr %s: %s", host, strerror(errno));
    freeaddrinfo(address);
    if (rc == 0)
        rc = expect_event(conn->events, RDMA_CM_EVENT_ADDR_RESOLVED, cancel_fd, deadline, NULL,
                          err);
    if (rc == 0 && rdma_resolve_route(conn->id, RESOLVE_MS) < 0)
        rc = gw_error_set(err, -errno, "rdma_resolve_route %s: %s", host, strerror(errno));
    if (rc == 0)
        rc = expect_event(conn->events, RDMA_CM_EVENT_ROUTE_RESOLVED, cancel_fd, deadline, NULL,
                          err);
    return rc;
}

int rdma_ibv_connect(const char *host, uint16_t port, const struct rdma_private_data *offer,
                     struct rdma_private_data *reply, int cancel_fd, int timeout_ms,
                     struct rdma_conn **out, struct gw_error *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    struct rdma_conn_param param = conn_param(offer);
    struct ibv_conn *conn = NULL;
    int rc = rdma_ibv_conn_new(&conn, err);

    if (rc < 0) {
        gw_error_prefix(err, "rdma:%s:%u", host, port);
        return rc;
    }
    rc = rdma_create_id(conn->events, &conn->id, NULL, RDMA_PS_TCP) < 0
             ? gw_error_set(err, -errno, "rdma_create_id: %s", strerror(errno)) : 0;
    if (rc == 0)
        rc = resolve_route(conn, host, port, cancel_fd, deadline, err);
    if (rc == 0)
        rc = rdma_ibv_create_queues(conn, err);
    if (rc == 0 && rdma_connect(conn->id, &param) < 0)
        rc = gw_error_set(err, -errno, "rdma_connect: %s", strerror(errno));
    if (rc == 0)
        rc = expect_event(conn->events, RDMA_CM_EVENT_ESTABLISHED, cancel_fd, deadline, reply,
                          err);
    if (rc < 0) {
        gw_error_prefix(err, "rdma:%s:%u", host, port);
        rdma_ibv_conn_drop(conn);
        return rc;
    }
    *out = &conn->base;
    return 0;
}
