/* The software provider's connection setup, rdma_cm's job done over TCP: a
 * listener, a connect request whose private data the server reads before it
 * accepts or rejects, and the client's connect. Each side sends one fixed
 * hello (rdma_soft_wire.c); a peer that sends none within the caller's time
 * is dropped, never waited for without end. */
#include "rdma/rdma_soft.h"
#include "rdma/rdma_soft_wire.h"
#include "channel/channel_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A connected client that sends no hello within this is dropped. */
#define HELLO_WAIT_MS 10000

struct soft_listener {
    struct rdma_listener base;
    struct channel_listener channel;
    char text[URI_HOST_MAX + 16];
};

struct soft_request {
    struct rdma_request base;
    int fd;
};

static int64_t now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* poll() on fd (and cancel_fd) until readable or the deadline (-1: none). */
static int wait_readable(int fd, int cancel_fd, int64_t deadline, const char *what,
                         struct gw_error *err)
{
    struct pollfd fds[2] = { { .fd = fd, .events = POLLIN }, { .fd = cancel_fd, .events = POLLIN } };

    for (;;) {
        int64_t left = deadline < 0 ? -1 : deadline - now_ms();
        int n;

        if (deadline >= 0 && left <= 0)
            return gw_error_set(err, -ETIMEDOUT, "%s: timed out", what);
        n = poll(fds, cancel_fd >= 0 ? 2 : 1, (int)(left > 1000000 ? 1000000 : left));
        if (n < 0 && errno != EINTR)
            return gw_error_set(err, -errno, "%s: %s", what, strerror(errno));
        if (n > 0 && cancel_fd >= 0 && fds[1].revents)
            return gw_error_set(err, -ECANCELED, "%s: cancelled", what);
        if (n > 0 && fds[0].revents)
            return 0;
    }
}

static int read_hello(int fd, int cancel_fd, int64_t deadline, bool at_server,
                      struct soft_hello *hello, const char *what, struct gw_error *err)
{
    uint8_t raw[SOFT_HELLO_SIZE];
    size_t got = 0;

    while (got < sizeof(raw)) {
        int rc = wait_readable(fd, cancel_fd, deadline, what, err);
        ssize_t n;

        if (rc < 0)
            return rc;
        n = recv(fd, raw + got, sizeof(raw) - got, MSG_DONTWAIT);
        if (n == 0)
            return gw_error_set(err, -ECONNRESET, "%s: the peer closed the connection", what);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return gw_error_set(err, -errno, "%s: %s", what, strerror(errno));
        got += n > 0 ? (size_t)n : 0;
    }
    return soft_hello_decode(raw, at_server, hello, err);
}

static int write_hello(int fd, enum soft_hello_kind kind, const struct rdma_private_data *data,
                       const char *what, struct gw_error *err)
{
    struct soft_hello hello = { .kind = kind };
    uint8_t raw[SOFT_HELLO_SIZE];

    if (data)
        hello.data = *data;
    soft_hello_encode(&hello, raw);
    if (send(fd, raw, sizeof(raw), MSG_NOSIGNAL) != (ssize_t)sizeof(raw))
        return gw_error_set(err, -errno ? -errno : -EIO, "%s: cannot send the hello: %s", what,
                            strerror(errno));
    return 0;
}

/* ---- Server ------------------------------------------------------------ */

static int request_accept(struct rdma_request *base, const struct rdma_private_data *reply,
                          struct rdma_conn **conn, struct gw_error *err)
{
    struct soft_request *request = (struct soft_request *)base;
    int fd = request->fd, rc;

    free(request);
    rc = write_hello(fd, SOFT_HELLO_ACCEPT, reply, "accepting an RDMA connection", err);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return rdma_soft_conn_start(fd, conn, err);
}

static int request_reject(struct rdma_request *base, const struct rdma_private_data *reply,
                          struct gw_error *err)
{
    struct soft_request *request = (struct soft_request *)base;
    int rc = write_hello(request->fd, SOFT_HELLO_REJECT, reply, "rejecting an RDMA connection",
                         err);

    /* The client reads the reject, then sees the end. */
    shutdown(request->fd, SHUT_WR);
    close(request->fd);
    free(request);
    return rc;
}

static const struct rdma_request_ops soft_request_ops = {
    .accept = request_accept,
    .reject = request_reject,
};

static uint16_t listener_port(const struct rdma_listener *base)
{
    const struct soft_listener *listener = (const struct soft_listener *)base;
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);

    if (getsockname(listener->channel.fd, (struct sockaddr *)&addr, &len) < 0)
        return 0;
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

/* One client: accepted, its hello read (within HELLO_WAIT_MS and the
 * caller's deadline, whichever comes first). */
static int take_client(struct soft_listener *listener, int cancel_fd, int64_t deadline,
                       struct rdma_request **out, struct gw_error *err)
{
    struct channel channel = { .description = "rdma (software provider)" };
    struct soft_request *request;
    struct soft_hello hello;
    int64_t hello_deadline = now_ms() + HELLO_WAIT_MS;
    int rc = channel_socket_accept(&listener->channel, cancel_fd, &channel, err);

    if (rc < 0)
        return rc;
    if (deadline >= 0 && deadline < hello_deadline)
        hello_deadline = deadline;
    rc = read_hello(channel.fd, cancel_fd, hello_deadline, true, &hello,
                    "reading an RDMA connect request", err);
    request = rc < 0 ? NULL : calloc(1, sizeof(*request));
    if (!request) {
        close(channel.fd);
        return rc < 0 ? rc : gw_error_set(err, -ENOMEM, "out of memory for a connect request");
    }
    *request = (struct soft_request){ .base = { .ops = &soft_request_ops, .offer = hello.data },
                                      .fd = channel.fd };
    *out = &request->base;
    return 0;
}

static int listener_wait(struct rdma_listener *base, int cancel_fd, int timeout_ms,
                         struct rdma_request **request, struct gw_error *err)
{
    struct soft_listener *listener = (struct soft_listener *)base;
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    char what[sizeof(listener->text) + 48];
    int rc;

    snprintf(what, sizeof(what), "waiting for an RDMA connection on %s", listener->text);
    for (;;) {
        rc = wait_readable(listener->channel.fd, cancel_fd, deadline, what, err);
        if (rc < 0)
            return rc;
        rc = take_client(listener, cancel_fd, deadline, request, err);
        /* A client that said nothing sensible is dropped; the next may. */
        if (rc != -EPROTO && rc != -ECONNRESET && !(rc == -ETIMEDOUT && deadline < 0))
            return rc;
    }
}

static void listener_close(struct rdma_listener *base)
{
    struct soft_listener *listener = (struct soft_listener *)base;

    channel_listener_close(&listener->channel);
    free(listener);
}

static const struct rdma_listener_ops soft_listener_ops = {
    .port = listener_port,
    .wait = listener_wait,
    .close = listener_close,
};

static void format_address(char *buf, size_t len, const char *host, uint16_t port)
{
    snprintf(buf, len, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
}

int rdma_soft_listen(const char *host, uint16_t port, struct rdma_listener **out,
                     struct gw_error *err)
{
    struct soft_listener *listener = calloc(1, sizeof(*listener));
    int rc;

    if (!listener)
        return gw_error_set(err, -ENOMEM, "out of memory for an RDMA listener");
    if (strlen(host) >= URI_HOST_MAX) {
        free(listener);
        return gw_error_set(err, -EINVAL, "RDMA host name of %zu bytes: at most %d are allowed",
                            strlen(host), URI_HOST_MAX - 1);
    }
    listener->base.ops = &soft_listener_ops;
    listener->channel.uri = (struct uri){ .kind = URI_TCP, .port = port, .fd = -1 };
    strcpy(listener->channel.uri.host, host);
    format_address(listener->text, sizeof(listener->text), host, port);
    rc = channel_socket_listen(&listener->channel, listener->text, err);
    if (rc < 0) {
        free(listener);
        return rc;
    }
    *out = &listener->base;
    return 0;
}

/* ---- Client ------------------------------------------------------------ */

static int answer_of(struct soft_hello *hello, struct rdma_private_data *reply,
                     const char *text, struct gw_error *err)
{
    *reply = hello->data;
    if (hello->kind == SOFT_HELLO_REJECT)
        return gw_error_set(err, -ECONNREFUSED, "rdma:%s rejected the connection (%u bytes of "
                            "private data with the reject)", text, hello->data.len);
    return 0;
}

int rdma_soft_connect(const char *host, uint16_t port, const struct rdma_private_data *offer,
                      struct rdma_private_data *reply, int cancel_fd, int timeout_ms,
                      struct rdma_conn **conn, struct gw_error *err)
{
    struct uri uri = { .kind = URI_TCP, .port = port, .fd = -1 };
    struct channel channel = { .fd = -1 };
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    struct soft_hello hello;
    char text[URI_HOST_MAX + 16], what[URI_HOST_MAX + 48];
    int rc;

    if (strlen(host) >= URI_HOST_MAX)
        return gw_error_set(err, -EINVAL, "RDMA host name of %zu bytes: at most %d are allowed",
                            strlen(host), URI_HOST_MAX - 1);
    strcpy(uri.host, host);
    format_address(text, sizeof(text), host, port);
    snprintf(channel.description, sizeof(channel.description), "rdma:%s", text);
    snprintf(what, sizeof(what), "connecting to rdma:%s", text);
    rc = channel_socket_connect(&uri, cancel_fd, &channel, err);
    if (rc < 0)
        return rc;
    rc = write_hello(channel.fd, SOFT_HELLO_CONNECT, offer, what, err);
    if (rc == 0)
        rc = read_hello(channel.fd, cancel_fd, deadline, false, &hello, what, err);
    if (rc == 0)
        rc = answer_of(&hello, reply, text, err);
    if (rc < 0) {
        close(channel.fd);
        return rc;
    }
    return rdma_soft_conn_start(channel.fd, conn, err);
}
