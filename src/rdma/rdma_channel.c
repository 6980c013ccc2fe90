/* An rdma: channel's ops (docs/rdma.md): a read takes the stream bytes
 * that the link's service thread queued from the peer's SENDs, a write
 * gathers the bytes into DATA messages that go under the link's credits
 * (rdma_link.c). */
#include "rdma/rdma_link_state.h"

#include <stdlib.h>
#include <string.h>

/* ---- channel ops ---- */

static ssize_t take_locked(struct rdma_link *link, uint8_t *buf, size_t len, bool consume)
{
    size_t done = 0;

    for (struct data_piece *piece = link->data; piece && done < len;) {
        size_t n = piece->len - piece->offset;
        n = n < len - done ? n : len - done;
        memcpy(buf + done, piece->bytes + piece->offset, n);
        done += n;
        if (!consume) {
            piece = piece->next;
            continue;
        }
        piece->offset += (uint32_t)n;
        if (piece->offset == piece->len) {
            link->data = piece->next;
            if (!link->data)
                link->data_tail = &link->data;
            free(piece);
            piece = link->data;
        }
    }
    if (consume)
        update_event_locked(link);
    return (ssize_t)done;
}

static ssize_t link_read_some(struct rdma_link *link, void *buf, size_t len, bool wait)
{
    ssize_t n;

    pthread_mutex_lock(&link->lock);
    while (wait && !link->data && !link->peer_eof && !link_down(link))
        pthread_cond_wait(&link->changed, &link->lock);
    if (link->data)
        n = take_locked(link, buf, len, true);
    else if (link->shut)
        n = -ECANCELED;
    else if (link->broken)
        n = link->error_rc ? link->error_rc : -EIO;
    else
        n = link->peer_eof || link->ended ? 0 : -EAGAIN;
    pthread_mutex_unlock(&link->lock);
    return n;
}

static int op_read(struct channel *channel, void *buf, size_t len, struct gw_error *err)
{
    struct rdma_link *link = channel->impl;
    size_t done = 0;

    while (done < len) {
        ssize_t n = link_read_some(link, (uint8_t *)buf + done, len - done, true);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0 && done == 0)
            return gw_error_set(err, -ENODATA, "%s: the peer ended the stream",
                                channel->description);
        if (n == 0)
            return gw_error_set(err, -EPIPE, "%s: the peer ended the stream in the middle of "
                                "a record", channel->description);
        pthread_mutex_lock(&link->lock);
        int rc = down_error(link, err);
        pthread_mutex_unlock(&link->lock);
        gw_error_prefix(err, "%s", channel->description);
        return rc;
    }
    return 0;
}

static int op_readv(struct channel *channel, const struct iovec *iov, int iovcnt,
                    struct gw_error *err)
{
    for (int i = 0; i < iovcnt; i++) {
        int rc = iov[i].iov_len ? op_read(channel, iov[i].iov_base, iov[i].iov_len, err) : 0;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Gathers the iovecs into DATA messages as large as a message allows. */
static int op_writev(struct channel *channel, const struct iovec *iov, int iovcnt,
                     struct gw_error *err)
{
    struct rdma_link *link = channel->impl;
    uint8_t *staging = malloc(RDMA_MSG_PAYLOAD_MAX);
    uint32_t used = 0;
    int rc = 0;

    if (!staging)
        return gw_error_set(err, -ENOMEM, "out of memory writing to %s", channel->description);
    for (int i = 0; rc == 0 && i < iovcnt; i++) {
        const uint8_t *at = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (rc == 0 && left) {
            size_t n = RDMA_MSG_PAYLOAD_MAX - used < left ? RDMA_MSG_PAYLOAD_MAX - used : left;
            memcpy(staging + used, at, n);
            used += (uint32_t)n;
            at += n;
            left -= n;
            if (used == RDMA_MSG_PAYLOAD_MAX) {
                rc = rdma_link_send(link, RDMA_MSG_DATA, staging, used, err);
                used = 0;
            }
        }
    }
    if (rc == 0 && used)
        rc = rdma_link_send(link, RDMA_MSG_DATA, staging, used, err);
    free(staging);
    if (rc < 0)
        gw_error_prefix(err, "%s", channel->description);
    return rc;
}

static ssize_t op_peek(struct channel *channel, void *buf, size_t len)
{
    struct rdma_link *link = channel->impl;
    ssize_t n;

    pthread_mutex_lock(&link->lock);
    if (link->data)
        n = take_locked(link, buf, len, false);
    else if (link->broken || link->shut)
        n = link->shut ? -ECANCELED : (link->error_rc ? link->error_rc : -EIO);
    else
        n = link->peer_eof || link->ended ? 0 : -EAGAIN;
    pthread_mutex_unlock(&link->lock);
    return n;
}

static ssize_t op_read_some(struct channel *channel, void *buf, size_t len)
{
    return link_read_some(channel->impl, buf, len, true);
}

static void op_shutdown(struct channel *channel, bool write_only)
{
    struct rdma_link *link = channel->impl;
    bool send_eof;

    pthread_mutex_lock(&link->lock);
    send_eof = write_only && !link->eof_sent && !link_down(link);
    link->eof_sent = link->eof_sent || send_eof;
    if (!write_only) {
        link->shut = true;
        update_event_locked(link);
        pthread_cond_broadcast(&link->changed);
    }
    pthread_mutex_unlock(&link->lock);
    if (send_eof)
        rdma_link_send(link, RDMA_MSG_EOF, NULL, 0, NULL);
    if (!write_only)
        rdma_conn_disconnect(link->conn);
}

static void op_close(struct channel *channel)
{
    rdma_link_free(channel->impl);
    channel->impl = NULL;
    channel->fd = -1;
}

static const struct channel_ops rdma_ops = {
    .read = op_read,
    .readv = op_readv,
    .writev = op_writev,
    .peek = op_peek,
    .read_some = op_read_some,
    .shutdown = op_shutdown,
    .close = op_close,
};

bool rdma_channel_is(const struct channel *channel)
{
    return channel->ops == &rdma_ops && channel->impl;
}

void rdma_channel_attach_link(struct channel *channel, struct rdma_link *link)
{
    channel->ops = &rdma_ops;
    channel->impl = link;
    channel->fd = link->event_fd;
    channel->has_return_path = true;
}

int rdma_channel_attach_ram(struct channel *channel, const struct ram_block *blocks,
                            unsigned nr_blocks, const struct page_landing *landing,
                            struct ram_load_counts *counts, struct gw_error *err)
{
    struct rdma_link *link = channel->impl;
    struct rdma_dest *dest = rdma_dest_new(blocks, nr_blocks, landing, counts,
                                           link->options.chunk_size, link->options.stats, err);

    if (!dest)
        return -ENOMEM;
    pthread_mutex_lock(&link->lock);
    link->dest = dest;
    link->attached = true;
    pthread_cond_broadcast(&link->changed);
    pthread_mutex_unlock(&link->lock);
    return 0;
}
