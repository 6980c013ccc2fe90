/* Channels over a descriptor: a connected socket (tcp, unix, an inherited
 * socket) or a file (file:, an inherited pipe or file). Reads report a
 * clean end of input apart from an error, so the stream can say "the peer
 * went away"; every failure names the URI and the system's reason. */
#include "channel_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <godwit/stream.h>

static int fd_read(struct channel *channel, void *buf, size_t len, struct gw_error *err)
{
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

static int fd_readv(struct channel *channel, const struct iovec *iov_in, int iovcnt,
                    struct gw_error *err)
{
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

/* socket: sendmsg with MSG_NOSIGNAL, so a vanished peer is an error, not
 * SIGPIPE; a file: writev. */
static int fd_writev(struct channel *channel, const struct iovec *iov_in, int iovcnt,
                     bool socket, struct gw_error *err)
{
    struct iovec iov[STREAM_PARTS_MAX + 2];
    int first = 0;

    if (iovcnt > STREAM_PARTS_MAX + 2)
        return gw_error_set(err, -EINVAL, "too many parts in one write");
    memcpy(iov, iov_in, sizeof(*iov) * (size_t)iovcnt);
    while (first < iovcnt) {
        int count = iovcnt - first > IOV_MAX ? IOV_MAX : iovcnt - first;
        struct msghdr message = { .msg_iov = iov + first, .msg_iovlen = (size_t)count };
        ssize_t n = socket ? sendmsg(channel->fd, &message, MSG_NOSIGNAL)
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

static int socket_writev(struct channel *channel, const struct iovec *iov, int iovcnt,
                         struct gw_error *err)
{
    return fd_writev(channel, iov, iovcnt, true, err);
}

static int file_writev(struct channel *channel, const struct iovec *iov, int iovcnt,
                       struct gw_error *err)
{
    return fd_writev(channel, iov, iovcnt, false, err);
}

static ssize_t errno_or(ssize_t n)
{
    return n < 0 ? -errno : n;
}

static ssize_t socket_peek(struct channel *channel, void *buf, size_t len)
{
    ssize_t n = recv(channel->fd, buf, len, MSG_PEEK | MSG_DONTWAIT);

    return n < 0 && errno == EWOULDBLOCK ? -EAGAIN : errno_or(n);
}

static ssize_t fd_read_some(struct channel *channel, void *buf, size_t len)
{
    ssize_t n;

    do
        n = read(channel->fd, buf, len);
    while (n < 0 && errno == EINTR);
    return errno_or(n);
}

static void socket_shutdown(struct channel *channel, bool write_only)
{
    shutdown(channel->fd, write_only ? SHUT_WR : SHUT_RDWR);
}

/* A file has no peer to wake, and nothing blocks on it for long. */
static ssize_t file_peek(struct channel *channel, void *buf, size_t len)
{
    (void)channel, (void)buf, (void)len;
    return -ENOTSUP;
}

static void file_shutdown(struct channel *channel, bool write_only)
{
    (void)channel, (void)write_only;
}

static void fd_close(struct channel *channel)
{
    close(channel->fd);
    channel->fd = -1;
}

static const struct channel_ops socket_ops = {
    .read = fd_read, .readv = fd_readv, .writev = socket_writev, .peek = socket_peek,
    .read_some = fd_read_some, .shutdown = socket_shutdown, .close = fd_close,
};

static const struct channel_ops file_ops = {
    .read = fd_read, .readv = fd_readv, .writev = file_writev, .peek = file_peek,
    .read_some = fd_read_some, .shutdown = file_shutdown, .close = fd_close,
};

void channel_fd_attach(struct channel *channel, int fd, bool socket)
{
    channel->fd = fd;
    channel->ops = socket ? &socket_ops : &file_ops;
    channel->has_return_path = socket;
}

int channel_fd_adopt(const struct uri *uri, struct channel *channel, struct gw_error *err)
{
    struct stat st;

    if (fstat(uri->fd, &st) < 0)
        return gw_error_set(err, -EBADF, "%s: descriptor %d is not open in this process",
                            channel->description, uri->fd);
    /* Ours from now on: closing it at the end is what QEMU does too. */
    channel_fd_attach(channel, uri->fd, S_ISSOCK(st.st_mode));
    return 0;
}

int channel_file_open(const struct uri *uri, bool for_writing, struct channel *channel,
                      struct gw_error *err)
{
    int fd = for_writing ? open(uri->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)
                         : open(uri->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return gw_error_set(err, -errno, "cannot %s %s: %s", for_writing ? "create" : "open",
                            channel->description, strerror(errno));
    channel_fd_attach(channel, fd, false);
    return 0;
}
