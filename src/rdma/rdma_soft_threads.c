/* The software provider's threads: RDMA semantics over one TCP socket.
 * Each side runs a reader, which serves the peer's WRITEs and SENDs (a
 * WRITE's payload is received straight into the registered region, after
 * its key, range and access are checked, without the program seeing it)
 * and completes this side's work from the peer's ACKs and NAKs; and a
 * writer, which sends this side's requests from the caller's memory and
 * the reader's answers. A poller must never wait on a connection that is
 * gone: every way out of the reader ends in finish(). */
#include "rdma/rdma_soft.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

/* ---- Socket I/O -------------------------------------------------------- */

static int send_all(int fd, const void *head, size_t head_len, const void *body, size_t len)
{
    struct iovec iov[2] = { { (void *)head, head_len }, { (void *)body, len } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

    while (msg.msg_iovlen) {
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        while (msg.msg_iovlen && (size_t)n >= msg.msg_iov->iov_len) {
            n -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
            msg.msg_iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* 0 when all len bytes came, -1 at the end of input or on an error. */
static int recv_all(int fd, void *buf, size_t len)
{
    while (len) {
        ssize_t n = recv(fd, buf, len, MSG_WAITALL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf = (char *)buf + n;
        len -= (size_t)n;
    }
    return 0;
}

static int discard(int fd, size_t len)
{
    char scratch[65536];

    while (len) {
        size_t part = len < sizeof(scratch) ? len : sizeof(scratch);

        if (recv_all(fd, scratch, part) < 0)
            return -1;
        len -= part;
    }
    return 0;
}

/* ---- Queues (lock held) ---------------------------------------------- */

static void push_cqe(struct soft_conn *soft, uint64_t wr_id, enum rdma_wc_opcode opcode,
                     enum rdma_wc_status status, uint32_t byte_len, unsigned retire)
{
    struct soft_cqe *cqe = &soft->cq[(soft->cq_head + soft->cq_count++) % CQ_SIZE];

    *cqe = (struct soft_cqe){ .wc = { .wr_id = wr_id, .opcode = opcode, .status = status,
                                      .byte_len = byte_len },
                              .retire = retire };
    if (status != RDMA_WC_SUCCESS && opcode != RDMA_WC_OP_EVENT)
        soft->failed_wr = true;
    pthread_cond_broadcast(&soft->cq_wake);
}

static bool push_response(struct soft_conn *soft, enum soft_op op, uint64_t seq,
                          enum rdma_wc_status status)
{
    if (soft->resp_count == RESPONSE_MAX)
        return false;
    soft->responses[(soft->resp_head + soft->resp_count++) % RESPONSE_MAX] =
        (struct soft_header){ .op = op, .seq = seq, .status = status };
    pthread_cond_signal(&soft->writer_wake);
    return true;
}

void rdma_soft_break(struct soft_conn *soft, enum rdma_wc_status why)
{
    if (soft->state != SOFT_OPEN)
        return;
    soft->state = SOFT_BROKEN;
    soft->end_status = why;
    pthread_cond_signal(&soft->writer_wake);
}

/* The reader is done: everything outstanding completes, then the event. */
static void finish(struct soft_conn *soft)
{
    rdma_soft_break(soft, RDMA_WC_CONNECTION_LOST);
    while (soft->sq_count) {
        struct soft_wr *wr = &soft->sq[soft->sq_head];
        bool lost = soft->end_status == RDMA_WC_CONNECTION_LOST && !soft->failed_wr;

        push_cqe(soft, wr->wr_id, wr->opcode, lost ? RDMA_WC_CONNECTION_LOST : RDMA_WC_FLUSHED,
                 0, 1);
        soft->sq_head = (soft->sq_head + 1) % RDMA_SEND_QUEUE_DEPTH;
        soft->sq_count--;
    }
    soft->sq_sent = 0;
    for (; soft->rq_count; soft->rq_count--) {
        push_cqe(soft, soft->rq[soft->rq_head].wr_id, RDMA_WC_OP_RECV, RDMA_WC_FLUSHED, 0, 0);
        soft->rq_head = (soft->rq_head + 1) % RDMA_RECV_QUEUE_DEPTH;
    }
    push_cqe(soft, RDMA_WR_ID_EVENT, RDMA_WC_OP_EVENT, soft->end_status, 0, 0);
    soft->state = SOFT_ENDED;
    pthread_cond_signal(&soft->writer_wake);
}

/* ---- Reader: the peer's requests ---------------------------------------- */

static enum rdma_wc_status check_write(struct rdma_mr_entry *entry, const struct soft_header *h)
{
    uintptr_t base;

    if (!entry)
        return RDMA_WC_REMOTE_BAD_KEY;
    base = (uintptr_t)entry->mr.addr;
    if (h->addr < base || h->addr - base > entry->mr.len || h->len > entry->mr.len - (h->addr - base))
        return RDMA_WC_REMOTE_RANGE;
    if (!(entry->mr.access & RDMA_ACCESS_REMOTE_WRITE))
        return RDMA_WC_REMOTE_NO_WRITE;
    return RDMA_WC_SUCCESS;
}

/* Refuses the request: its payload is read and dropped, the peer gets the
 * NAK, and the connection breaks (as an RC queue pair's does). */
static int refuse(struct soft_conn *soft, const struct soft_header *h, enum rdma_wc_status status)
{
    int rc = discard(soft->fd, h->len);

    pthread_mutex_lock(&soft->lock);
    push_response(soft, SOFT_OP_NAK, h->seq, status);
    rdma_soft_break(soft, RDMA_WC_DISCONNECTED);
    pthread_mutex_unlock(&soft->lock);
    return rc;
}

static int acknowledge(struct soft_conn *soft, const struct soft_header *h)
{
    bool ok = true;

    pthread_mutex_lock(&soft->lock);
    if (h->flags & SOFT_FLAG_SIGNALED)
        ok = push_response(soft, SOFT_OP_ACK, h->seq, RDMA_WC_SUCCESS);
    pthread_mutex_unlock(&soft->lock);
    return ok ? 0 : -1;     /* a peer past its own queue depth is broken */
}

static int serve_write(struct soft_conn *soft, const struct soft_header *h)
{
    struct rdma_conn *conn = &soft->base;
    struct rdma_mr_entry *entry;
    enum rdma_wc_status status;
    int rc;

    pthread_mutex_lock(&conn->mr_lock);
    entry = rdma_mr_find_rkey(conn, h->key);
    status = check_write(entry, h);
    if (status == RDMA_WC_SUCCESS)
        entry->landing++;   /* deregister waits for the bytes to land */
    pthread_mutex_unlock(&conn->mr_lock);
    if (status != RDMA_WC_SUCCESS)
        return refuse(soft, h, status);

    rc = recv_all(soft->fd, (void *)(uintptr_t)h->addr, h->len);
    pthread_mutex_lock(&conn->mr_lock);
    if (--entry->landing == 0)
        pthread_cond_broadcast(&conn->mr_idle);
    pthread_mutex_unlock(&conn->mr_lock);
    return rc < 0 ? rc : acknowledge(soft, h);
}

static int serve_send(struct soft_conn *soft, const struct soft_header *h)
{
    struct soft_recv recv;

    pthread_mutex_lock(&soft->lock);
    if (!soft->rq_count) {
        pthread_mutex_unlock(&soft->lock);
        return refuse(soft, h, RDMA_WC_RNR);
    }
    recv = soft->rq[soft->rq_head];
    soft->rq_head = (soft->rq_head + 1) % RDMA_RECV_QUEUE_DEPTH;
    soft->rq_count--;
    if (h->len > recv.len) {
        push_cqe(soft, recv.wr_id, RDMA_WC_OP_RECV, RDMA_WC_LOCAL_LENGTH, 0, 0);
        pthread_mutex_unlock(&soft->lock);
        return refuse(soft, h, RDMA_WC_REMOTE_INVALID);
    }
    pthread_mutex_unlock(&soft->lock);

    if (recv_all(soft->fd, recv.local, h->len) < 0)
        return -1;
    pthread_mutex_lock(&soft->lock);
    push_cqe(soft, recv.wr_id, RDMA_WC_OP_RECV, RDMA_WC_SUCCESS, h->len, 0);
    pthread_mutex_unlock(&soft->lock);
    return acknowledge(soft, h);
}

/* ---- Reader: answers to this side's requests ----------------------------- */

/* The peer answered request seq (ACK: done, signalled; NAK: failed). The
 * requests before it, unsignalled, are done too: this completion retires
 * them. An answer to a request not sent, or out of order, breaks the
 * connection. */
static int answered(struct soft_conn *soft, const struct soft_header *h)
{
    unsigned retire = 0;
    int rc = -1;

    pthread_mutex_lock(&soft->lock);
    if (soft->state != SOFT_OPEN) {     /* disconnecting: flushed at the end */
        rc = 0;
        goto out;
    }
    if (h->seq > soft->last_sent_seq)
        goto out;
    while (soft->sq_count) {
        struct soft_wr *wr = &soft->sq[soft->sq_head];
        bool signaled = wr->header.flags & SOFT_FLAG_SIGNALED;

        if (wr->header.seq > h->seq || (wr->header.seq < h->seq && signaled))
            break;  /* not this answer's, or a signalled one left unanswered */
        soft->sq_head = (soft->sq_head + 1) % RDMA_SEND_QUEUE_DEPTH;
        soft->sq_count--;
        soft->sq_sent--;
        retire++;
        if (wr->header.seq < h->seq)
            continue;
        if (h->op == SOFT_OP_ACK && !signaled)
            break;
        push_cqe(soft, wr->wr_id, wr->opcode,
                 h->op == SOFT_OP_ACK ? RDMA_WC_SUCCESS : (enum rdma_wc_status)h->status,
                 0, retire);
        if (h->op == SOFT_OP_NAK)
            rdma_soft_break(soft, RDMA_WC_DISCONNECTED);
        rc = 0;
        break;
    }
out:
    pthread_mutex_unlock(&soft->lock);
    return rc;
}

static int serve_one(struct soft_conn *soft, const struct soft_header *h)
{
    bool open, in_order = true;

    pthread_mutex_lock(&soft->lock);
    open = soft->state == SOFT_OPEN;
    if (open && (h->op == SOFT_OP_WRITE || h->op == SOFT_OP_SEND))
        in_order = h->seq == ++soft->peer_seq;
    pthread_mutex_unlock(&soft->lock);
    if (!open)      /* broken: read to the peer's end, act on nothing */
        return discard(soft->fd, h->len);
    if (!in_order)
        return -1;
    switch (h->op) {
    case SOFT_OP_WRITE:
        return serve_write(soft, h);
    case SOFT_OP_SEND:
        return serve_send(soft, h);
    case SOFT_OP_ACK:
    case SOFT_OP_NAK:
        return answered(soft, h);
    case SOFT_OP_BYE:
        pthread_mutex_lock(&soft->lock);
        rdma_soft_break(soft, RDMA_WC_DISCONNECTED);
        pthread_mutex_unlock(&soft->lock);
        return 0;
    }
    return -1;
}

void *rdma_soft_reader_main(void *arg)
{
    struct soft_conn *soft = arg;
    uint8_t raw[SOFT_HEADER_SIZE];
    struct soft_header header;

    /* Ends at the peer's end of input, a socket error or a violation of
     * the wire format (which the peer sees as the connection's loss). */
    while (recv_all(soft->fd, raw, sizeof(raw)) == 0 &&
           soft_header_decode(raw, &header, NULL) == 0 &&
           serve_one(soft, &header) == 0)
        ;
    /* Our own writes end now too: nobody will answer them. A flushed
     * completion hands a buffer back to its owner, so the writer must be
     * out of it first. */
    shutdown(soft->fd, SHUT_RDWR);
    pthread_mutex_lock(&soft->lock);
    rdma_soft_break(soft, RDMA_WC_CONNECTION_LOST);
    while (soft->writer_in_payload)
        pthread_cond_wait(&soft->writer_idle, &soft->lock);
    finish(soft);
    pthread_mutex_unlock(&soft->lock);
    return NULL;
}

/* ---- Writer ------------------------------------------------------------ */

static bool writer_has_work(struct soft_conn *soft)
{
    return soft->resp_count || soft->state != SOFT_OPEN || soft->sq_sent < soft->sq_count;
}

/* Sends the next thing, lock held on entry and exit: an answer first, then
 * a request. Returns false when nothing is left to send ever. */
static bool write_next(struct soft_conn *soft)
{
    uint8_t raw[SOFT_HEADER_SIZE];
    struct soft_header header;
    const void *payload = NULL;
    int rc;

    if (soft->resp_count) {
        header = soft->responses[soft->resp_head];
        soft->resp_head = (soft->resp_head + 1) % RESPONSE_MAX;
        soft->resp_count--;
    } else if (soft->state != SOFT_OPEN) {
        return false;
    } else {
        struct soft_wr *wr = &soft->sq[(soft->sq_head + soft->sq_sent) % RDMA_SEND_QUEUE_DEPTH];

        header = wr->header;
        payload = wr->local;
        soft->sq_sent++;
        soft->last_sent_seq = header.seq;
    }
    soft_header_encode(&header, raw);
    soft->writer_in_payload = payload != NULL;
    pthread_mutex_unlock(&soft->lock);
    rc = send_all(soft->fd, raw, sizeof(raw), payload, payload ? header.len : 0);
    pthread_mutex_lock(&soft->lock);
    soft->writer_in_payload = false;
    pthread_cond_broadcast(&soft->writer_idle);
    if (rc < 0)
        rdma_soft_break(soft, RDMA_WC_CONNECTION_LOST);
    return rc == 0;
}

void *rdma_soft_writer_main(void *arg)
{
    struct soft_conn *soft = arg;
    struct soft_header bye = { .op = SOFT_OP_BYE };
    uint8_t raw[SOFT_HEADER_SIZE];
    bool say_bye;

    pthread_mutex_lock(&soft->lock);
    for (;;) {
        while (!writer_has_work(soft))
            pthread_cond_wait(&soft->writer_wake, &soft->lock);
        if (!write_next(soft))
            break;
    }
    say_bye = soft->bye_pending;
    pthread_mutex_unlock(&soft->lock);
    if (say_bye) {
        soft_header_encode(&bye, raw);
        send_all(soft->fd, raw, sizeof(raw), NULL, 0);
    }
    shutdown(soft->fd, SHUT_WR);
    pthread_mutex_lock(&soft->lock);
    soft->writer_done = true;
    pthread_cond_broadcast(&soft->writer_idle);
    pthread_mutex_unlock(&soft->lock);
    return NULL;
}
