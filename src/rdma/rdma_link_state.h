/* The link's state as its three files share it: the link itself
 * (rdma_link.c: credits, send slots, the service thread), the channel ops
 * that read and write the stream over it (rdma_channel.c), and connecting
 * (rdma_connect.c: the hello and the barrier). Private to src/rdma. */
#ifndef GODWIT_RDMA_LINK_STATE_H
#define GODWIT_RDMA_LINK_STATE_H

#include "rdma/rdma_link.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

/* RECVs each side keeps posted for the peer, and its send buffers. */
#define LINK_RECVS 32
#define LINK_SEND_SLOTS 32

struct data_piece {
    struct data_piece *next;
    uint32_t len, offset;
    uint8_t bytes[];
};

struct backlog {
    struct backlog *next;
    uint32_t type, len;
    uint8_t payload[];
};

struct rdma_link {
    struct rdma_conn *conn;
    struct rdma_options options;
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int event_fd;               /* readable while a read would not wait */
    bool event_set;
    uint8_t *recv_bufs, *send_bufs;
    struct rdma_mr *recv_mr, *send_mr;
    uint64_t send_free;         /* bit per free send slot */
    uint32_t credits;           /* SENDs this side may post */
    uint32_t owed;              /* RECVs re-posted that the peer was not told of */
    uint64_t posted_seq, retired_seq, last_signalled;
    struct backlog *backlog, **backlog_tail;
    struct data_piece *data, **data_tail;
    bool peer_eof, ended, broken, shut, eof_sent;
    int error_rc;
    char error[GW_ERROR_MSG_MAX];
    /* Source: the reply the sink waits for. */
    uint32_t reply_type, reply_len;
    bool reply_ready;
    uint8_t reply[RDMA_MSG_PAYLOAD_MAX];
    /* Destination: the RAM side, once attached. */
    bool is_dest;
    struct rdma_dest *dest;
    bool attached;
};

/* ---- state, under lock ---- */

static inline bool link_down(const struct rdma_link *link)
{
    return link->ended || link->broken || link->shut;
}

static inline void update_event_locked(struct rdma_link *link)
{
    bool readable = link->data || link->peer_eof || link_down(link);
    uint64_t value = 1;

    if (readable && !link->event_set) {
        if (write(link->event_fd, &value, sizeof(value)) == sizeof(value))
            link->event_set = true;
    } else if (!readable && link->event_set) {
        if (read(link->event_fd, &value, sizeof(value)) == sizeof(value))
            link->event_set = false;
    }
}

/* Why the link is down, as an error. */
static inline int down_error(struct rdma_link *link, struct gw_error *err)
{
    if (link->shut)
        return gw_error_set(err, -ECANCELED, "the RDMA channel was shut down");
    if (link->broken && link->error[0])
        return gw_error_set(err, link->error_rc, "%s", link->error);
    return gw_error_set(err, -EPIPE, "the RDMA peer closed the connection");
}

/* ---- making and ending a link (rdma_link.c) ---- */

struct rdma_link *rdma_link_new(const struct rdma_options *options, struct gw_error *err);
void rdma_link_free(struct rdma_link *link);
int rdma_link_prepare(struct rdma_link *link, struct gw_error *err);
int rdma_link_start(struct rdma_link *link, uint32_t peer_credits, struct gw_error *err);

/* Makes channel an rdma: channel over link (rdma_channel.c). */
void rdma_channel_attach_link(struct channel *channel, struct rdma_link *link);

#endif
