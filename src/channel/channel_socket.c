/* The socket transports: tcp (IPv4 and IPv6) and unix, connected with a
 * connect that a cancel interrupts, listened on and accepted. What a socket
 * carries is channel_fd.c's. */
#include "channel_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A peer whose host vanishes (power, network) sends no FIN or RST: without
 * these a destination reading, or a source waiting for an answer, would
 * wait for ever. Keepalive probes an idle connection after 10 s, every 5 s;
 * TCP_USER_TIMEOUT ends it once sent data or probes have gone unanswered
 * for 30 s (CHANNEL_TCP_DEAD_S, docs/stream.md). A peer that is merely slow
 * still answers probes, and a unix: peer that dies is an EOF at once. */
static void tune_socket(int fd, int family)
{
    int one = 1, idle = 10, interval = 5, count = 4;
    unsigned user_timeout_ms = CHANNEL_TCP_DEAD_S * 1000;

    if (family != AF_INET && family != AF_INET6)
        return;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

static int unix_address(const char *path, struct sockaddr_un *addr, const char *uri_text,
                        struct gw_error *err)
{
    *addr = (struct sockaddr_un){ .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr->sun_path))
        return gw_error_set(err, -ENAMETOOLONG, "%s: a unix socket path has at most %zu bytes",
                            uri_text, sizeof(addr->sun_path) - 1);
    strcpy(addr->sun_path, path);
    return 0;
}

static int resolve(const struct uri *uri, bool passive, struct addrinfo **result,
                   const char *uri_text, struct gw_error *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = passive ? AI_PASSIVE : 0 };
    char port[8];
    int rc;

    snprintf(port, sizeof(port), "%u", uri->port);
    rc = getaddrinfo(uri->host, port, &hints, result);
    if (rc)
        return gw_error_set(err, -EHOSTUNREACH, "%s: cannot resolve '%s': %s", uri_text,
                            uri->host, gai_strerror(rc));
    return 0;
}

/* connect() that a cancel can interrupt: non-blocking, then poll the socket
 * and cancel_fd together. Returns 0, -ECANCELED or a negative errno. */
static int connect_cancellable(int fd, const struct sockaddr *addr, socklen_t len,
                               int cancel_fd)
{
    struct pollfd fds[2] = { { .fd = fd, .events = POLLOUT },
                             { .fd = cancel_fd, .events = POLLIN } };
    int flags = fcntl(fd, F_GETFL), error = 0, rc;
    socklen_t error_len = sizeof(error);

    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    /* A unix socket whose backlog is full says EAGAIN and never completes
     * on its own: try again every 10 ms until it takes us or cancel. */
    for (;;) {
        rc = connect(fd, addr, len) < 0 ? -errno : 0;
        if (rc != -EAGAIN)
            break;
        if (poll(&fds[1], cancel_fd >= 0 ? 1 : 0, 10) > 0)
            return -ECANCELED;
    }
    /* TCP: the handshake goes on; wait for it or for cancel. */
    while (rc == -EINPROGRESS) {
        if (poll(fds, cancel_fd >= 0 ? 2 : 1, -1) < 0) {
            if (errno != EINTR)
                return -errno;
            continue;
        }
        if (cancel_fd >= 0 && fds[1].revents)
            return -ECANCELED;
        if (fds[0].revents) {
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_len) < 0)
                return -errno;
            rc = -error;
        }
    }
    if (rc == 0)
        fcntl(fd, F_SETFL, flags);
    return rc;
}

static int connect_error(struct channel *channel, int rc, struct gw_error *err)
{
    if (rc == -ECANCELED)
        return gw_error_set(err, rc, "the migration was cancelled while connecting to %s",
                            channel->description);
    return gw_error_set(err, rc, "cannot connect to %s: %s", channel->description,
                        strerror(-rc));
}

static int connect_tcp(const struct uri *uri, int cancel_fd, struct channel *channel,
                       struct gw_error *err)
{
    struct addrinfo *addresses, *address;
    int fd = -1, rc;

    rc = resolve(uri, false, &addresses, channel->description, err);
    if (rc < 0)
        return rc;
    rc = -EADDRNOTAVAIL;
    for (address = addresses; address && rc != -ECANCELED; address = address->ai_next) {
        fd = socket(address->ai_family, address->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        rc = connect_cancellable(fd, address->ai_addr, address->ai_addrlen, cancel_fd);
        if (rc == 0) {
            tune_socket(fd, address->ai_family);
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(addresses);
    if (fd < 0)
        return connect_error(channel, rc, err);
    channel_fd_attach(channel, fd, true);
    return 0;
}

static int connect_unix(const struct uri *uri, int cancel_fd, struct channel *channel,
                        struct gw_error *err)
{
    struct sockaddr_un addr;
    int fd, rc = unix_address(uri->path, &addr, channel->description, err);

    if (rc < 0)
        return rc;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return connect_error(channel, -errno, err);
    rc = connect_cancellable(fd, (struct sockaddr *)&addr, sizeof(addr), cancel_fd);
    if (rc < 0) {
        close(fd);
        return connect_error(channel, rc, err);
    }
    channel_fd_attach(channel, fd, true);
    return 0;
}

int channel_socket_connect(const struct uri *uri, int cancel_fd, struct channel *channel,
                           struct gw_error *err)
{
    return uri->kind == URI_TCP ? connect_tcp(uri, cancel_fd, channel, err)
                                : connect_unix(uri, cancel_fd, channel, err);
}

static int listen_tcp(struct channel_listener *listener, const char *text, struct gw_error *err)
{
    struct addrinfo *addresses;
    int fd, one = 1, rc = resolve(&listener->uri, true, &addresses, text, err);

    if (rc < 0)
        return rc;
    fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, addresses->ai_addr, addresses->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        rc = gw_error_set(err, -errno, "cannot listen on %s: %s", text, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(addresses);
        return rc;
    }
    freeaddrinfo(addresses);
    listener->fd = fd;
    return 0;
}

static int listen_unix(struct channel_listener *listener, const char *text, struct gw_error *err)
{
    struct sockaddr_un addr;
    int fd, rc = unix_address(listener->uri.path, &addr, text, err);

    if (rc < 0)
        return rc;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, SOMAXCONN) < 0) {
        rc = gw_error_set(err, -errno, "cannot listen on %s: %s", text, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    listener->fd = fd;
    listener->unlink_path = true;
    return 0;
}

int channel_socket_listen(struct channel_listener *listener, const char *text,
                          struct gw_error *err)
{
    return listener->uri.kind == URI_TCP ? listen_tcp(listener, text, err)
                                         : listen_unix(listener, text, err);
}

int channel_socket_accept(struct channel_listener *listener, int cancel_fd,
                          struct channel *channel, struct gw_error *err)
{
    struct pollfd fds[2] = { { .fd = listener->fd, .events = POLLIN },
                             { .fd = cancel_fd, .events = POLLIN } };

    int fd;

    for (;;) {
        if (poll(fds, cancel_fd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return gw_error_set(err, -errno, "waiting on %s: %s", channel->description,
                                strerror(errno));
        }
        if (fds[1].revents)
            return gw_error_set(err, -ECANCELED, "the incoming migration was cancelled");
        fd = accept4(listener->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            break;
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            return gw_error_set(err, -errno, "accept on %s failed: %s", channel->description,
                                strerror(errno));
    }
    tune_socket(fd, listener->uri.kind == URI_TCP ? AF_INET : AF_UNIX);
    channel_fd_attach(channel, fd, true);
    return 0;
}

