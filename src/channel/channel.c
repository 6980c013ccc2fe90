/* The channel front: a URI picks the transport that connects, listens or
 * accepts, and every other call goes through the channel's ops. */
#include "channel_internal.h"

#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void describe(struct channel *channel, const struct uri *uri)
{
    uri_format(uri, channel->description, sizeof(channel->description));
    channel->kind = uri->kind;
}

void channel_init_closed(struct channel *channel)
{
    *channel = (struct channel){ .fd = -1 };
}

/* An rdma: channel needs the migration's x-rdma-* settings, which the
 * migration passes to rdma_channel_connect and rdma_channel_listen. */
static int no_rdma(const char *text, struct gw_error *err)
{
    return gw_error_set(err, -ENOTSUP, "%s: an rdma: channel is opened by a migration, with "
                        "its x-rdma-* settings; it carries no other traffic", text);
}

int channel_connect(const struct uri *uri, int cancel_fd, struct channel *channel,
                    struct gw_error *err)
{
    channel_init_closed(channel);
    describe(channel, uri);
    switch (uri->kind) {
    case URI_TCP:
    case URI_UNIX:
        return channel_socket_connect(uri, cancel_fd, channel, err);
    case URI_FD:
        return channel_fd_adopt(uri, channel, err);
    case URI_FILE:
        return channel_file_open(uri, true, channel, err);
    case URI_RDMA:
        break;
    }
    return no_rdma(channel->description, err);
}

int channel_listen(const struct uri *uri, struct channel_listener *listener,
                   struct gw_error *err)
{
    char text[300];

    *listener = (struct channel_listener){ .fd = -1, .uri = *uri };
    uri_format(uri, text, sizeof(text));
    switch (uri->kind) {
    case URI_TCP:
    case URI_UNIX:
        return channel_socket_listen(listener, text, err);
    case URI_FD:
    case URI_FILE:
        return 0;   /* nothing to wait for: accept opens it */
    case URI_RDMA:
        break;
    }
    return no_rdma(text, err);
}

int channel_accept(struct channel_listener *listener, int cancel_fd, struct channel *channel,
                   struct gw_error *err)
{
    channel_init_closed(channel);
    describe(channel, &listener->uri);
    if (listener->impl_accept)
        return listener->impl_accept(listener, cancel_fd, channel, err);
    if (listener->uri.kind == URI_FD)
        return channel_fd_adopt(&listener->uri, channel, err);
    if (listener->uri.kind == URI_FILE)
        return channel_file_open(&listener->uri, false, channel, err);
    return channel_socket_accept(listener, cancel_fd, channel, err);
}

void channel_listener_close(struct channel_listener *listener)
{
    if (listener->impl_close)
        listener->impl_close(listener);
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
        channel->ops->shutdown(channel, false);
}

void channel_shutdown_write(struct channel *channel)
{
    if (channel->fd >= 0)
        channel->ops->shutdown(channel, true);
}

void channel_close(struct channel *channel)
{
    if (channel->fd >= 0)
        channel->ops->close(channel);
    channel->fd = -1;
}

ssize_t channel_peek(struct channel *channel, void *buf, size_t len)
{
    return channel->fd >= 0 ? channel->ops->peek(channel, buf, len) : -EBADF;
}

ssize_t channel_read_some(struct channel *channel, void *buf, size_t len)
{
    return channel->fd >= 0 ? channel->ops->read_some(channel, buf, len) : -EBADF;
}

uint64_t channel_round_trip_us(const struct channel *channel)
{
    struct tcp_info info;
    socklen_t len = sizeof(info);

    if (channel->fd < 0 || channel->kind != URI_TCP ||
        getsockopt(channel->fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_min_rtt) + sizeof(info.tcpi_min_rtt))
        return 0;
    return info.tcpi_min_rtt == UINT32_MAX ? 0 : info.tcpi_min_rtt;
}

uint64_t channel_unsent_bytes(const struct channel *channel)
{
    int bytes = 0;

    if (channel->fd < 0 || ioctl(channel->fd, SIOCOUTQ, &bytes) < 0 || bytes < 0)
        return 0;
    return (uint64_t)bytes;
}

bool channel_buffered(struct channel *channel)
{
    return channel->fd >= 0 && channel->ops->buffered && channel->ops->buffered(channel);
}

static int stream_read(void *opaque, void *buf, size_t len, struct gw_error *err)
{
    struct channel *channel = opaque;

    return channel->ops->read(channel, buf, len, err);
}

static int stream_readv(void *opaque, const struct iovec *iov, int iovcnt, struct gw_error *err)
{
    struct channel *channel = opaque;

    return channel->ops->readv(channel, iov, iovcnt, err);
}

static int stream_writev(void *opaque, const struct iovec *iov, int iovcnt,
                         struct gw_error *err)
{
    struct channel *channel = opaque;

    return channel->ops->writev(channel, iov, iovcnt, err);
}

struct stream_io channel_stream_io(struct channel *channel)
{
    return (struct stream_io){ .read = stream_read, .readv = stream_readv,
                               .writev = stream_writev, .opaque = channel };
}
