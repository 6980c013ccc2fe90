/* The QMP server: events, and a unix socket that serves
 * up to QMP_SESSIONS_MAX clients at once from the VMM's event loop. Nothing
 * here blocks: what a client does not read waits in its buffer, and a client
 * that lets more than QMP_CLIENT_BACKLOG_MAX pile up is dropped. */
#include "qmp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <unistd.h>

struct qmp_server *qmp_server_new(const char *package)
{
    struct qmp_server *server = calloc(1, sizeof(*server));

    if (!server)
        return NULL;
    snprintf(server->package, sizeof(server->package), "%s", package);
    pthread_mutex_init(&server->out_lock, NULL);
    server->listen_fd = -1;
    server->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++)
        server->clients[i] = (struct qmp_client){ .fd = -1, .server = server };
    qmp_commands_register_builtin(server);
    qmp_fds_register(server);
    return server;
}

void qmp_server_free(struct qmp_server *server)
{
    if (!server)
        return;
    qmp_server_close(server);
    qmp_fds_close_all(server);
    if (server->wake_fd >= 0)
        close(server->wake_fd);
    pthread_mutex_destroy(&server->out_lock);
    free(server);
}

void qmp_server_emit_event(struct qmp_server *server, const char *event, json_t *data)
{
    struct timeval now;
    json_t *message;
    char *text;

    gettimeofday(&now, NULL);
    message = json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", event,
                        "data", data ? data : json_object(), "timestamp",
                        "seconds", (json_int_t)now.tv_sec,
                        "microseconds", (json_int_t)now.tv_usec);
    text = json_dumps(message, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(message);
    if (!text)
        return;
    pthread_mutex_lock(&server->out_lock);
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++) {
        struct qmp_session *session = server->sessions[i];
        if (session && session->negotiated) {
            session->out(session->out_opaque, text, strlen(text));
            session->out(session->out_opaque, "\r\n", 2);
        }
    }
    pthread_mutex_unlock(&server->out_lock);
    free(text);
}

/* --- socket side --- */

static void wake(struct qmp_server *server)
{
    uint64_t one = 1;

    if (write(server->wake_fd, &one, sizeof(one)) < 0) {
        /* the counter is already non-zero: the loop will wake */
    }
}

/* Sends what the socket takes now; returns the bytes it took (0 if none). */
static size_t send_now(int fd, const char *text, size_t len)
{
    ssize_t n;

    do
        n = send(fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n > 0 ? (size_t)n : 0;   /* a dead peer shows up on the read side */
}

/* The session's output function; called with out_lock held, any thread. */
static void write_to_client(void *opaque, const char *text, size_t len)
{
    struct qmp_client *client = opaque;
    size_t sent;

    if (client->overflowed)
        return;
    if (!client->pending.len) {
        sent = send_now(client->fd, text, len);
        text += sent;
        len -= sent;
        if (!len)
            return;
    }
    if (client->pending.len + len > QMP_CLIENT_BACKLOG_MAX ||
        gw_buffer_append(&client->pending, text, len) < 0)
        client->overflowed = true;
    wake(client->server);   /* the loop polls for POLLOUT, or drops the client */
}

static void flush_client(struct qmp_client *client)
{
    size_t sent;

    pthread_mutex_lock(&client->server->out_lock);
    sent = send_now(client->fd, (const char *)client->pending.data, client->pending.len);
    memmove(client->pending.data, client->pending.data + sent, client->pending.len - sent);
    client->pending.len -= sent;
    pthread_mutex_unlock(&client->server->out_lock);
}

/* A socket file nobody listens on is left over from a dead process: reuse it. */
static int check_socket_path(const char *path, const struct sockaddr_un *addr,
                             struct gw_error *err)
{
    struct stat st;
    int probe, rc;

    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode))
        return gw_error_set(err, -EEXIST,
                            "QMP socket path '%s' exists and is not a socket; "
                            "remove it or choose another path", path);
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return gw_error_set(err, -errno, "cannot create a unix socket: %s", strerror(errno));
    rc = connect(probe, (const struct sockaddr *)addr, sizeof(*addr));
    close(probe);
    if (rc == 0)
        return gw_error_set(err, -EADDRINUSE,
                            "QMP socket path '%s' is already in use by another process; "
                            "choose another path or stop that process", path);
    unlink(path);
    return 0;
}

int qmp_server_listen_unix(struct qmp_server *server, const char *path,
                           struct gw_error *err)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd, rc;

    if (strlen(path) >= sizeof(addr.sun_path))
        return gw_error_set(err, -ENAMETOOLONG,
                            "QMP socket path '%s' is longer than %zu bytes", path,
                            sizeof(addr.sun_path) - 1);
    strcpy(addr.sun_path, path);
    rc = check_socket_path(path, &addr, err);
    if (rc < 0)
        return rc;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return gw_error_set(err, -errno, "cannot create a unix socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        rc = gw_error_set(err, -errno, "cannot listen on QMP socket '%s': %s", path,
                          strerror(errno));
        close(fd);
        return rc;
    }
    if (listen(fd, 4) < 0) {
        rc = gw_error_set(err, -errno, "cannot listen on QMP socket '%s': %s", path,
                          strerror(errno));
        close(fd);
        unlink(path);
        return rc;
    }
    server->listen_fd = fd;
    snprintf(server->socket_path, sizeof(server->socket_path), "%s", path);
    return 0;
}

int qmp_server_pollfds(struct qmp_server *server, struct pollfd *fds, int max)
{
    bool free_slot = false;
    int n = 0;

    if (server->wake_fd >= 0 && n < max)
        fds[n++] = (struct pollfd){ .fd = server->wake_fd, .events = POLLIN };
    pthread_mutex_lock(&server->out_lock);
    for (unsigned i = 0; i < QMP_SESSIONS_MAX && n < max; i++) {
        struct qmp_client *client = &server->clients[i];
        if (client->fd >= 0)
            fds[n++] = (struct pollfd){ .fd = client->fd,
                                        .events = POLLIN | (client->pending.len ? POLLOUT : 0) };
        else
            free_slot = true;
    }
    pthread_mutex_unlock(&server->out_lock);
    /* With every slot taken, new clients wait in the backlog. */
    if (free_slot && server->listen_fd >= 0 && n < max)
        fds[n++] = (struct pollfd){ .fd = server->listen_fd, .events = POLLIN };
    return n;
}

static void drop_client(struct qmp_client *client)
{
    qmp_session_free(client->session);   /* no thread writes to it after this */
    client->session = NULL;
    gw_buffer_free(&client->pending);
    client->overflowed = false;
    close(client->fd);
    client->fd = -1;
}

static void accept_client(struct qmp_server *server)
{
    struct qmp_client *client = NULL;
    int fd;

    for (unsigned i = 0; i < QMP_SESSIONS_MAX && !client; i++)
        if (server->clients[i].fd < 0)
            client = &server->clients[i];
    if (!client)
        return;
    fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;   /* EAGAIN or a client that gave up: poll again */
    client->fd = fd;
    client->session = qmp_session_new(server, write_to_client, client);
    if (!client->session) {
        close(fd);
        client->fd = -1;
    }
}

/* Descriptors that came with the bytes (SCM_RIGHTS) go to the session
 * before the bytes do: the getfd they come with, or one after, takes it. */
static void take_received_fds(struct qmp_client *client, struct msghdr *message)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(message); c; c = CMSG_NXTHDR(message, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
            /* One descriptor per getfd: the first is kept, as QEMU does. */
            if (i == 0)
                qmp_session_give_fd(client->session, fd);
            else
                close(fd);
        }
    }
}

static void read_client(struct qmp_client *client)
{
    char chunk[65536];
    union {
        char buf[CMSG_SPACE(sizeof(int) * QMP_FDS_PER_READ)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { chunk, sizeof(chunk) };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
    ssize_t n = recvmsg(client->fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        take_received_fds(client, &message);
    if (n <= 0) {
        drop_client(client);
        return;
    }
    qmp_session_feed(client->session, chunk, (size_t)n);
}

static void service_client(struct qmp_client *client, short revents)
{
    bool overflowed;

    pthread_mutex_lock(&client->server->out_lock);
    overflowed = client->overflowed;
    pthread_mutex_unlock(&client->server->out_lock);
    if (overflowed) {
        drop_client(client);
        return;
    }
    if (revents & POLLOUT)
        flush_client(client);
    if (revents & (POLLIN | POLLHUP | POLLERR))
        read_client(client);
}

void qmp_server_service(struct qmp_server *server, const struct pollfd *fds, int nfds)
{
    uint64_t count;

    for (int i = 0; i < nfds; i++) {
        if (fds[i].fd == server->wake_fd && fds[i].revents) {
            if (read(server->wake_fd, &count, sizeof(count)) < 0) {
                /* nothing to take: another read got it */
            }
            for (unsigned c = 0; c < QMP_SESSIONS_MAX; c++)
                if (server->clients[c].fd >= 0)
                    service_client(&server->clients[c], 0);   /* overflowed ones go */
        }
    }
    for (int i = 0; i < nfds; i++) {
        if (!fds[i].revents || fds[i].fd == server->wake_fd)
            continue;
        if (fds[i].fd == server->listen_fd) {
            accept_client(server);
            continue;
        }
        for (unsigned c = 0; c < QMP_SESSIONS_MAX; c++)
            if (server->clients[c].fd >= 0 && server->clients[c].fd == fds[i].fd)
                service_client(&server->clients[c], fds[i].revents);
    }
}

void qmp_server_close(struct qmp_server *server)
{
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++)
        if (server->clients[i].fd >= 0)
            drop_client(&server->clients[i]);
    if (server->listen_fd >= 0) {
        close(server->listen_fd);
        server->listen_fd = -1;
        unlink(server->socket_path);
    }
}
