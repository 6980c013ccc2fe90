/* Channels over sockets, inherited descriptors and files. Every failure
 * names the URI and the system's reason; reads report a clean end of input
 * separately from an error, so the stream can say "the peer went away". */
#include <godwit/channel.h>

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

static void describe(struct channel *channel, const struct uri *uri)
{
    uri_format(uri, channel->description, sizeof(channel->description));
    channel->kind = uri->kind;
    channel->has_return_path = channel->is_socket = uri->kind == URI_TCP || uri->kind == URI_UNIX;
}

static void tune_socket(int fd, int family)
{
    int one = 1;

    if (family == AF_INET || family == AF_INET6)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
    channel->fd = fd;
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
    channel->fd = fd;
    return 0;
}

static int adopt_fd(const struct uri *uri, struct channel *channel, struct gw_error *err)
{
    struct stat st;

    if (fstat(uri->fd, &st) < 0)
        return gw_error_set(err, -EBADF, "%s: descriptor %d is not open in this process",
                            channel->description, uri->fd);
    /* Ours from now on: closing it at the end is what QEMU does too. */
    channel->fd = uri->fd;
    channel->has_return_path = channel->is_socket = S_ISSOCK(st.st_mode);
    return 0;
}

int channel_connect(const struct uri *uri, int cancel_fd, struct channel *channel,
                    struct gw_error *err)
{
    *channel = (struct channel){ .fd = -1 };
    describe(channel, uri);
    switch (uri->kind) {
    case URI_TCP:
        return connect_tcp(uri, cancel_fd, channel, err);
    case URI_UNIX:
        return connect_unix(uri, cancel_fd, channel, err);
    case URI_FD:
        return adopt_fd(uri, channel, err);
    case URI_FILE:
        channel->fd = open(uri->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (channel->fd < 0)
            return gw_error_set(err, -errno, "cannot create %s: %s", channel->description,
                                strerror(errno));
        return 0;
    case URI_RDMA:
        break;
    }
    return gw_error_set(err, -ENOTSUP,
                        "%s: RDMA migration is not available in this build (no RDMA "
                        "support); use tcp:, unix:, fd: or file:", channel->description);
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

int channel_listen(const struct uri *uri, struct channel_listener *listener,
                   struct gw_error *err)
{
    char text[300];

    *listener = (struct channel_listener){ .fd = -1, .uri = *uri };
    uri_format(uri, text, sizeof(text));
    switch (uri->kind) {
    case URI_TCP:
        return listen_tcp(listener, text, err);
    case URI_UNIX:
        return listen_unix(listener, text, err);
    case URI_FD:
    case URI_FILE:
        return 0;   /* nothing to wait for: accept opens it */
    case URI_RDMA:
        break;
    }
    return gw_error_set(err, -ENOTSUP,
                        "%s: RDMA migration is not available in this build (no RDMA "
                        "support); use tcp:, unix:, fd: or file:", text);
}

int channel_accept(struct channel_listener *listener, int cancel_fd, struct channel *channel,
                   struct gw_error *err)
{
    struct pollfd fds[2] = { { .fd = listener->fd, .events = POLLIN },
                             { .fd = cancel_fd, .events = POLLIN } };

    *channel = (struct channel){ .fd = -1 };
    describe(channel, &listener->uri);
    if (listener->uri.kind == URI_FD)
        return adopt_fd(&listener->uri, channel, err);
    if (listener->uri.kind == URI_FILE) {
        channel->fd = open(listener->uri.path, O_RDONLY | O_CLOEXEC);
        if (channel->fd < 0)
            return gw_error_set(err, -errno, "cannot open %s: %s", channel->description,
                                strerror(errno));
        return 0;
    }
    for (;;) {
        if (poll(fds, cancel_fd >= 0 ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return gw_error_set(err, -errno, "waiting on %s: %s", channel->description,
                                strerror(errno));
        }
        if (fds[1].revents)
            return gw_error_set(err, -ECANCELED, "the incoming migration was cancelled");
        channel->fd = accept4(listener->fd, NULL, NULL, SOCK_CLOEXEC);
        if (channel->fd >= 0)
            break;
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            return gw_error_set(err, -errno, "accept on %s failed: %s", channel->description,
                                strerror(errno));
    }
    tune_socket(channel->fd, listener->uri.kind == URI_TCP ? AF_INET : AF_UNIX);
    return 0;
}

void channel_listener_close(struct channel_listener *listener)
{
    if (listener->fd >= 0)
        close(listener->fd);
    if (listener->unlink_path)
        unlink(listener->uri.path);
    listener->fd = -1;
    listener->unlink_path = false;
}

void channel_shutdown(struct channel *channel)
{
    if (channel->fd >= 0)
        shutdown(channel->fd, SHUT_RDWR);
}

void channel_close(struct channel *channel)
{
    if (channel->fd >= 0)
        close(channel->fd);
    channel->fd = -1;
}

static int channel_read(void *opaque, void *buf, size_t len, struct gw_error *err)
{
    struct channel *channel = opaque;
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(channel->fd, (uint8_t *)buf + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && done == 0)
            return gw_error_set(err, -ENODATA, "%s: the peer closed the channel",
                                channel->description);
        if (n == 0)
            return gw_error_set(err, -ENODATA, "%s: the peer closed the channel mid-message",
                                channel->description);
        return gw_error_set(err, -errno, "reading %s failed: %s", channel->description,
                            strerror(errno));
    }
    return 0;
}

/* Moves past n bytes already transferred in iov[*first...]. */
static void advance(struct iovec *iov, int iovcnt, int *first, size_t n)
{
    while (*first < iovcnt && n >= iov[*first].iov_len) {
        n -= iov[*first].iov_len;
        (*first)++;
    }
    if (*first < iovcnt) {
        iov[*first].iov_base = (uint8_t *)iov[*first].iov_base + n;
        iov[*first].iov_len -= n;
    }
}

static int channel_readv(void *opaque, const struct iovec *iov_in, int iovcnt,
                         struct gw_error *err)
{
    struct channel *channel = opaque;
    struct iovec iov[STREAM_PARTS_MAX + 2];
    int first = 0;

    if (iovcnt > STREAM_PARTS_MAX + 2)
        return gw_error_set(err, -EINVAL, "too many parts in one read");
    memcpy(iov, iov_in, sizeof(*iov) * (size_t)iovcnt);
    while (first < iovcnt) {
        if (iov[first].iov_len == 0) {
            first++;
            continue;
        }
        ssize_t n = readv(channel->fd, iov + first,
                          iovcnt - first > IOV_MAX ? IOV_MAX : iovcnt - first);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return gw_error_set(err, -ENODATA, "%s: the peer closed the channel mid-message",
                                channel->description);
        if (n < 0)
            return gw_error_set(err, -errno, "reading %s failed: %s", channel->description,
                                strerror(errno));
        advance(iov, iovcnt, &first, (size_t)n);
    }
    return 0;
}

static int channel_writev(void *opaque, const struct iovec *iov_in, int iovcnt,
                          struct gw_error *err)
{
    struct channel *channel = opaque;
    struct iovec iov[STREAM_PARTS_MAX + 2];
    int first = 0;

    if (iovcnt > STREAM_PARTS_MAX + 2)
        return gw_error_set(err, -EINVAL, "too many parts in one write");
    memcpy(iov, iov_in, sizeof(*iov) * (size_t)iovcnt);
    while (first < iovcnt) {
        /* Sockets get MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE. */
        int count = iovcnt - first > IOV_MAX ? IOV_MAX : iovcnt - first;
        struct msghdr message = { .msg_iov = iov + first, .msg_iovlen = (size_t)count };
        ssize_t n = channel->is_socket ? sendmsg(channel->fd, &message, MSG_NOSIGNAL)
                                       : writev(channel->fd, iov + first, count);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return gw_error_set(err, -errno, "writing to %s failed: %s", channel->description,
                                errno == EPIPE ? "the destination closed the connection"
                                               : strerror(errno));
        advance(iov, iovcnt, &first, (size_t)n);
    }
    return 0;
}

struct stream_io channel_stream_io(struct channel *channel)
{
    return (struct stream_io){ .read = channel_read, .readv = channel_readv,
                               .writev = channel_writev, .opaque = channel };
}
