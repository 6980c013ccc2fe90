/* The rdma-core provider: librdmacm for the connection (its private data
 * carries the offer, the accept and the reject), libibverbs for regions,
 * posts and the completion queue. One RC queue pair per connection, one
 * completion queue for both of its queues.
 *
 * Nothing here but rdma_ibv_device_count and the no-device path has run on
 * this project's machines, which have no RDMA device (docs/rdma-verbs.md lists
 * the functions). Keep it short and literal. */
#include "rdma/rdma_verbs_ibv.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int rdma_ibv_device_count(struct gw_error *err)
{
    struct ibv_device **list;
    int count = 0;

    (void)err;
    /* NULL: no verbs support in this kernel at all, which is no device. */
    list = ibv_get_device_list(&count);
    if (list)
        ibv_free_device_list(list);
    return list ? count : 0;
}

static int64_t now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* ---- Queue pair and completions ------------------------------------------ */

int rdma_ibv_create_queues(struct ibv_conn *conn, struct gw_error *err)
{
    struct ibv_context *verbs = conn->id->verbs;
    struct ibv_qp_init_attr attr = {
        .qp_type = IBV_QPT_RC,
        /* +1 each: the drain's marker after the last real work request. */
        .cap = { .max_send_wr = RDMA_SEND_QUEUE_DEPTH + 1,
                 .max_recv_wr = RDMA_RECV_QUEUE_DEPTH + 1,
                 .max_send_sge = 1, .max_recv_sge = 1 },
    };

    conn->pd = ibv_alloc_pd(verbs);
    conn->comp = conn->pd ? ibv_create_comp_channel(verbs) : NULL;
    conn->cq = conn->comp ? ibv_create_cq(verbs, RDMA_SEND_QUEUE_DEPTH + RDMA_RECV_QUEUE_DEPTH + 2,
                                          NULL, conn->comp, 0) : NULL;
    if (!conn->cq || ibv_req_notify_cq(conn->cq, 0))
        return gw_error_set(err, -errno ? -errno : -ENOMEM, "cannot create the RDMA "
                            "protection domain and completion queue: %s", strerror(errno));
    attr.send_cq = attr.recv_cq = conn->cq;
    if (rdma_create_qp(conn->id, conn->pd, &attr))
        return gw_error_set(err, -errno, "cannot create the RDMA queue pair: %s",
                            strerror(errno));
    return 0;
}

static enum rdma_wc_status status_of(enum ibv_wc_status status)
{
    switch (status) {
    case IBV_WC_SUCCESS: return RDMA_WC_SUCCESS;
    case IBV_WC_REM_ACCESS_ERR: return RDMA_WC_REMOTE_ACCESS;
    case IBV_WC_RNR_RETRY_EXC_ERR: return RDMA_WC_RNR;
    case IBV_WC_REM_INV_REQ_ERR: return RDMA_WC_REMOTE_INVALID;
    case IBV_WC_LOC_LEN_ERR: return RDMA_WC_LOCAL_LENGTH;
    case IBV_WC_WR_FLUSH_ERR: return RDMA_WC_FLUSHED;
    case IBV_WC_RETRY_EXC_ERR: return RDMA_WC_CONNECTION_LOST;
    default: return RDMA_WC_OTHER;
    }
}

/* The queue pair goes to error (its work flushes) and a marker is posted
 * on each queue: when both have come back, everything before them has. */
static void start_drain(struct ibv_conn *conn)
{
    struct ibv_qp_attr attr = { .qp_state = IBV_QPS_ERR };
    struct ibv_send_wr send = { .wr_id = WR_DRAIN_SEND, .opcode = IBV_WR_SEND,
                                .send_flags = IBV_SEND_SIGNALED }, *bad_send;
    struct ibv_recv_wr recv = { .wr_id = WR_DRAIN_RECV }, *bad_recv;

    if (conn->draining)
        return;
    conn->draining = true;
    pthread_mutex_lock(&conn->post_lock);
    conn->broken = true;        /* no post after the markers */
    pthread_mutex_unlock(&conn->post_lock);
    ibv_modify_qp(conn->id->qp, &attr, IBV_QP_STATE);
    conn->drain_left = (ibv_post_send(conn->id->qp, &send, &bad_send) == 0) +
                       (ibv_post_recv(conn->id->qp, &recv, &bad_recv) == 0);
}

/* One ibv completion as the interface's; false for a drain marker. */
static bool translate(struct ibv_conn *conn, const struct ibv_wc *wc, struct rdma_completion *out)
{
    enum rdma_wc_status status = status_of(wc->status);
    struct ibv_slot slot;

    if (wc->wr_id == WR_DRAIN_SEND || wc->wr_id == WR_DRAIN_RECV) {
        conn->drain_left--;
        return false;
    }
    /* The slot is copied before it is freed: a post may reuse it at once. */
    pthread_mutex_lock(&conn->post_lock);
    if (wc->wr_id & WR_RECV_BIT) {
        slot = conn->rq[(wc->wr_id & ~WR_RECV_BIT) % RDMA_RECV_QUEUE_DEPTH];
        conn->rq_done++;
    } else {
        slot = conn->sq[wc->wr_id % RDMA_SEND_QUEUE_DEPTH];
        conn->sq_done = wc->wr_id + 1;     /* it retires every earlier one too */
    }
    if (status != RDMA_WC_SUCCESS && status != RDMA_WC_FLUSHED && !conn->broken) {
        /* An RC queue pair in error stays so: tell the peer, end here. */
        conn->broken = true;
        conn->end_status = status == RDMA_WC_CONNECTION_LOST ? status : RDMA_WC_DISCONNECTED;
        rdma_disconnect(conn->id);
    }
    pthread_mutex_unlock(&conn->post_lock);
    *out = (struct rdma_completion){ .wr_id = slot.wr_id, .opcode = slot.opcode,
                                     .status = status, .byte_len = wc->byte_len,
                                     .vendor_err = wc->vendor_err };
    return true;
}

static int take(struct ibv_conn *conn, struct rdma_completion *out, int max)
{
    struct ibv_wc wcs[16];
    int n = 0, got;

    while (n < max) {
        got = ibv_poll_cq(conn->cq, max - n < 16 ? max - n : 16, wcs);
        if (got <= 0)
            break;
        for (int i = 0; i < got; i++)
            n += translate(conn, &wcs[i], &out[n]);
    }
    if (n < max && conn->draining && !conn->drain_left && !conn->event_delivered) {
        out[n++] = (struct rdma_completion){ .wr_id = RDMA_WR_ID_EVENT,
                                             .opcode = RDMA_WC_OP_EVENT,
                                             .status = conn->end_status };
        conn->event_delivered = true;
    }
    return n;
}

static void handle_cm_event(struct ibv_conn *conn)
{
    struct rdma_cm_event *event;

    if (rdma_get_cm_event(conn->events, &event) < 0)
        return;
    if (event->event == RDMA_CM_EVENT_DISCONNECTED || event->event == RDMA_CM_EVENT_DEVICE_REMOVAL
        || event->event == RDMA_CM_EVENT_TIMEWAIT_EXIT) {
        pthread_mutex_lock(&conn->post_lock);
        if (!conn->broken)
            conn->end_status = event->event == RDMA_CM_EVENT_DISCONNECTED
                                   ? RDMA_WC_DISCONNECTED : RDMA_WC_CONNECTION_LOST;
        pthread_mutex_unlock(&conn->post_lock);
        start_drain(conn);
    }
    rdma_ack_cm_event(event);
}

static int ibv_conn_poll(struct rdma_conn *base, struct rdma_completion *out, int max,
                         int timeout_ms, struct gw_error *err)
{
    struct ibv_conn *conn = (struct ibv_conn *)base;
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    struct pollfd fds[3] = { { .fd = conn->comp->fd, .events = POLLIN },
                             { .fd = conn->events->fd, .events = POLLIN },
                             { .fd = conn->cancel_fd, .events = POLLIN } };

    for (;;) {
        int n = take(conn, out, max);
        int64_t left = deadline < 0 ? -1 : deadline - now_ms();
        struct ibv_cq *cq;
        void *context;

        if (n > 0)
            return n;
        if (conn->event_delivered)
            return gw_error_set(err, -ENOTCONN, "the RDMA connection has ended: no "
                                "completion will come");
        if (deadline >= 0 && left <= 0)
            return 0;
        if (poll(fds, 3, (int)(left > 1000000 ? 1000000 : left)) < 0 && errno != EINTR)
            return gw_error_set(err, -errno, "waiting for RDMA completions: %s", strerror(errno));
        if (fds[2].revents)
            return gw_error_set(err, -ECANCELED, "waiting for RDMA completions was cancelled");
        if (fds[1].revents)
            handle_cm_event(conn);
        if (fds[0].revents && ibv_get_cq_event(conn->comp, &cq, &context) == 0) {
            ibv_ack_cq_events(cq, 1);
            ibv_req_notify_cq(cq, 0);
        }
    }
}

/* ---- Posts ------------------------------------------------------------- */

/* Takes a send-queue sequence number (post_lock held), or refuses. */
static int claim_send(struct ibv_conn *conn, uint64_t wr_id, enum rdma_wc_opcode opcode,
                      uint64_t *seq, struct gw_error *err)
{
    if (conn->broken)
        return gw_error_set(err, -ENOTCONN, "the RDMA connection is closed: no more work can "
                            "be posted on it");
    if (conn->sq_next - conn->sq_done == RDMA_SEND_QUEUE_DEPTH)
        return gw_error_set(err, -ENOBUFS, "the RDMA send queue is full (%d work requests "
                            "outstanding): a signalled completion must be polled first",
                            RDMA_SEND_QUEUE_DEPTH);
    *seq = conn->sq_next;
    conn->sq[*seq % RDMA_SEND_QUEUE_DEPTH] = (struct ibv_slot){ wr_id, opcode };
    return 0;
}

static int post_send_wr(struct ibv_conn *conn, struct ibv_send_wr *wr, uint64_t wr_id,
                        enum rdma_wc_opcode opcode, struct gw_error *err)
{
    struct ibv_send_wr *bad;
    uint64_t seq = 0;
    int rc;

    pthread_mutex_lock(&conn->post_lock);
    rc = claim_send(conn, wr_id, opcode, &seq, err);
    if (rc == 0) {
        wr->wr_id = seq;
        rc = -ibv_post_send(conn->id->qp, wr, &bad);
        if (rc == 0)
            conn->sq_next++;
        else
            gw_error_set(err, rc, "ibv_post_send: %s", strerror(-rc));
    }
    pthread_mutex_unlock(&conn->post_lock);
    return rc;
}

static int ibv_conn_post_write(struct rdma_conn *base, const struct rdma_write *write,
                               struct gw_error *err)
{
    struct ibv_sge sge = { (uintptr_t)write->local, write->len, write->lkey };
    struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE,
                              .send_flags = write->signaled ? IBV_SEND_SIGNALED : 0,
                              .wr.rdma = { write->remote_addr, write->rkey } };

    return post_send_wr((struct ibv_conn *)base, &wr, write->wr_id, RDMA_WC_OP_WRITE, err);
}

static int ibv_conn_post_send(struct rdma_conn *base, uint64_t wr_id, const void *local,
                              uint32_t len, uint32_t lkey, struct gw_error *err)
{
    struct ibv_sge sge = { (uintptr_t)local, len, lkey };
    struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND,
                              .send_flags = IBV_SEND_SIGNALED };

    return post_send_wr((struct ibv_conn *)base, &wr, wr_id, RDMA_WC_OP_SEND, err);
}

static int ibv_conn_post_recv(struct rdma_conn *base, uint64_t wr_id, void *local, uint32_t len,
                              uint32_t lkey, struct gw_error *err)
{
    struct ibv_conn *conn = (struct ibv_conn *)base;
    struct ibv_sge sge = { (uintptr_t)local, len, lkey };
    struct ibv_recv_wr wr = { .sg_list = &sge, .num_sge = 1 }, *bad;
    int rc = 0;

    pthread_mutex_lock(&conn->post_lock);
    if (conn->broken) {
        rc = gw_error_set(err, -ENOTCONN, "the RDMA connection is closed: no more receives "
                          "can be posted on it");
    } else if (conn->rq_next - conn->rq_done == RDMA_RECV_QUEUE_DEPTH) {
        rc = gw_error_set(err, -ENOBUFS, "the RDMA receive queue is full (%d receives "
                          "outstanding)", RDMA_RECV_QUEUE_DEPTH);
    } else {
        conn->rq[conn->rq_next % RDMA_RECV_QUEUE_DEPTH] =
            (struct ibv_slot){ wr_id, RDMA_WC_OP_RECV };
        wr.wr_id = conn->rq_next | WR_RECV_BIT;
        rc = -ibv_post_recv(conn->id->qp, &wr, &bad);
        if (rc == 0)
            conn->rq_next++;
        else
            gw_error_set(err, rc, "ibv_post_recv: %s", strerror(-rc));
    }
    pthread_mutex_unlock(&conn->post_lock);
    return rc;
}

/* ---- Regions and the connection's life ------------------------------- */

static int ibv_conn_register(struct rdma_conn *base, struct rdma_mr *mr, void **provider_data,
                             struct gw_error *err)
{
    struct ibv_conn *conn = (struct ibv_conn *)base;
    int access = ((mr->access & RDMA_ACCESS_LOCAL_WRITE) ? IBV_ACCESS_LOCAL_WRITE : 0) |
                 ((mr->access & RDMA_ACCESS_REMOTE_WRITE) ? IBV_ACCESS_REMOTE_WRITE : 0);
    struct ibv_mr *ibv = ibv_reg_mr(conn->pd, mr->addr, mr->len, access);

    if (!ibv)
        return rdma_pin_error(err, errno, mr->len);
    mr->lkey = ibv->lkey;
    mr->rkey = ibv->rkey;
    *provider_data = ibv;
    return 0;
}

static void ibv_conn_deregister(struct rdma_conn *base, struct rdma_mr *mr, void *provider_data)
{
    (void)base;
    (void)mr;
    ibv_dereg_mr(provider_data);
}

static void ibv_conn_disconnect(struct rdma_conn *base)
{
    struct ibv_conn *conn = (struct ibv_conn *)base;

    pthread_mutex_lock(&conn->post_lock);
    if (!conn->broken) {
        conn->broken = true;
        conn->end_status = RDMA_WC_DISCONNECTED;
        rdma_disconnect(conn->id);  /* DISCONNECTED comes here too: poll drains */
    }
    pthread_mutex_unlock(&conn->post_lock);
}

static void ibv_conn_cancel(struct rdma_conn *base)
{
    uint64_t one = 1;

    if (write(((struct ibv_conn *)base)->cancel_fd, &one, sizeof(one)) < 0)
        return;     /* an eventfd's counter full means cancelled already */
}

static void free_conn(struct ibv_conn *conn)
{
    if (conn->id && conn->id->qp)
        rdma_destroy_qp(conn->id);
    if (conn->cq)
        ibv_destroy_cq(conn->cq);
    if (conn->comp)
        ibv_destroy_comp_channel(conn->comp);
    if (conn->pd)
        ibv_dealloc_pd(conn->pd);
    if (conn->id)
        rdma_destroy_id(conn->id);
    if (conn->events)
        rdma_destroy_event_channel(conn->events);
    if (conn->cancel_fd >= 0)
        close(conn->cancel_fd);
    pthread_mutex_destroy(&conn->post_lock);
    free(conn);
}

static void ibv_conn_destroy(struct rdma_conn *base)
{
    struct ibv_conn *conn = (struct ibv_conn *)base;

    /* Regions first: the protection domain cannot go while they hold it. */
    rdma_conn_fini(base);
    free_conn(conn);
}

static const struct rdma_conn_ops ibv_conn_ops = {
    .register_mr = ibv_conn_register,
    .deregister_mr = ibv_conn_deregister,
    .post_write = ibv_conn_post_write,
    .post_send = ibv_conn_post_send,
    .post_recv = ibv_conn_post_recv,
    .poll = ibv_conn_poll,
    .disconnect = ibv_conn_disconnect,
    .cancel = ibv_conn_cancel,
    .destroy = ibv_conn_destroy,
};

int rdma_ibv_conn_new(struct ibv_conn **out, struct gw_error *err)
{
    struct ibv_conn *conn = calloc(1, sizeof(*conn));
    int rc;

    if (!conn)
        return gw_error_set(err, -ENOMEM, "out of memory for an RDMA connection");
    rdma_conn_init(&conn->base, &ibv_conn_ops, RDMA_PROVIDER_VERBS);
    pthread_mutex_init(&conn->post_lock, NULL);
    conn->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    conn->events = rdma_create_event_channel();
    if (conn->cancel_fd < 0 || !conn->events) {
        rc = gw_error_set(err, errno ? -errno : -ENODEV, "cannot create an rdma_cm event "
                          "channel: %s", strerror(errno));
        rdma_conn_fini(&conn->base);
        free_conn(conn);
        return rc;
    }
    *out = conn;
    return 0;
}

void rdma_ibv_conn_drop(struct ibv_conn *conn)
{
    rdma_conn_fini(&conn->base);
    free_conn(conn);
}
