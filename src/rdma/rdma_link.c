/* An rdma: channel (docs/rdma.md): the stream's bytes go by SEND into the
 * peer's posted RECVs, under credits so that a SEND is never posted before
 * the peer's RECV; a service thread polls every completion, queues the
 * bytes that came for the channel's reader, answers the destination's
 * control requests, and wakes whoever waits. */
#include "rdma/rdma_link_state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

/* Stream bytes wait for LINK_DATA_RESERVE credits to stay free: the
 * service thread's replies and credit returns never starve behind them. */
#define LINK_DATA_RESERVE 2
/* Credits owed to the peer that a CREDIT message returns when nothing
 * else is going its way. */
#define LINK_CREDIT_THRESHOLD (LINK_RECVS / 4)
/* WRITEs and SENDs outstanding at most (the send queue's depth). */
#define LINK_SQ_LIMIT (RDMA_SEND_QUEUE_DEPTH - LINK_SEND_SLOTS)

/* wr_id: kind in bits 56-63, slot in 48-55, sequence below. */
#define WR_WRITE 1ULL
#define WR_SEND 2ULL
#define WR_RECV 3ULL
#define WR_ID(kind, slot, seq) (((kind) << 56) | ((uint64_t)(slot) << 48) | (seq))
#define WR_KIND(id) ((id) >> 56)
#define WR_SLOT(id) (((id) >> 48) & 0xff)
#define WR_SEQ(id) ((id) & ((1ULL << 48) - 1))

struct rdma_link *rdma_link_of(const struct channel *channel)
{
    return channel->impl;
}

struct rdma_conn *rdma_link_conn(struct rdma_link *link)
{
    return link->conn;
}

const struct rdma_options *rdma_link_options(struct rdma_link *link)
{
    return &link->options;
}

int rdma_chunk_size_check(int64_t value, struct gw_error *err)
{
    if (value < (int64_t)RDMA_CHUNK_MIN || value > (int64_t)RDMA_CHUNK_MAX ||
        (value & (value - 1)))
        return gw_error_set(err, -EINVAL, "Parameter 'x-rdma-chunk-size' expects a power of 2 "
                            "in the range 1 MiB to 1 GiB (1048576 to 1073741824 bytes), not %"
                            PRId64, value);
    return 0;
}

/* ---- state, under lock ---- */

static void fail_locked(struct rdma_link *link, int rc, const char *text)
{
    if (!link->broken && !link->shut) {
        link->error_rc = rc;
        snprintf(link->error, sizeof(link->error), "%s", text);
    }
    link->broken = true;
}

static uint8_t *send_slot(struct rdma_link *link, unsigned slot)
{
    return link->send_bufs + (size_t)slot * RDMA_MSG_SIZE;
}

/* Posts a SEND now: a credit and a free slot are there. */
static int post_send_locked(struct rdma_link *link, uint32_t type, const void *payload,
                            uint32_t len, struct gw_error *err)
{
    unsigned slot = (unsigned)__builtin_ctzll(link->send_free);
    uint8_t *buf = send_slot(link, slot);
    int rc;

    rdma_msg_header_encode(buf, type, len, link->owed);
    if (len)
        memcpy(buf + RDMA_MSG_HEADER, payload, len);
    rc = rdma_conn_post_send(link->conn, WR_ID(WR_SEND, slot, link->posted_seq + 1), buf,
                        RDMA_MSG_HEADER + len, link->send_mr->lkey, err);
    if (rc < 0)
        return rc;
    link->posted_seq++;
    link->send_free &= ~(1ULL << slot);
    link->credits--;
    link->owed = 0;
    if (link->options.stats)
        atomic_fetch_add(&link->options.stats->bytes_send, RDMA_MSG_HEADER + len);
    return 0;
}

/* A post the provider refused because the connection broke: the reason is
 * the failed work request, which the service thread is about to report;
 * wait for it rather than say "closed" (caller holds the lock, and is not
 * the service thread). */
static int post_failed_locked(struct rdma_link *link, int rc, struct gw_error *err)
{
    if (rc != -ENOTCONN)
        return rc;
    while (!link_down(link))
        pthread_cond_wait(&link->changed, &link->lock);
    return down_error(link, err);
}

static bool can_post(const struct rdma_link *link, uint32_t keep_credits)
{
    return link->credits > keep_credits && link->send_free &&
           link->posted_seq - link->retired_seq < LINK_SQ_LIMIT;
}

/* The service thread never waits: what it cannot post now waits in the
 * backlog for the credits that the peer's next message brings. */
static int service_send_locked(struct rdma_link *link, uint32_t type, const void *payload,
                               uint32_t len, struct gw_error *err)
{
    struct backlog *item;

    if (!link->backlog && can_post(link, 0))
        return post_send_locked(link, type, payload, len, err);
    item = malloc(sizeof(*item) + len);
    if (!item)
        return gw_error_set(err, -ENOMEM, "out of memory for an RDMA control message");
    *item = (struct backlog){ .type = type, .len = len };
    memcpy(item->payload, payload, len);
    *link->backlog_tail = item;
    link->backlog_tail = &item->next;
    return 0;
}

static int flush_backlog_locked(struct rdma_link *link, struct gw_error *err)
{
    while (link->backlog && can_post(link, 0)) {
        struct backlog *item = link->backlog;
        int rc = post_send_locked(link, item->type, item->payload, item->len, err);
        if (rc < 0)
            return rc;
        link->backlog = item->next;
        if (!link->backlog)
            link->backlog_tail = &link->backlog;
        free(item);
    }
    if (!link->backlog && link->owed >= LINK_CREDIT_THRESHOLD && can_post(link, 0))
        return post_send_locked(link, RDMA_MSG_CREDIT, NULL, 0, err);
    return 0;
}

int rdma_link_send(struct rdma_link *link, uint32_t type, const void *payload, uint32_t len,
                   struct gw_error *err)
{
    int rc;

    pthread_mutex_lock(&link->lock);
    while (!link_down(link) && (link->backlog || !can_post(link, LINK_DATA_RESERVE)))
        pthread_cond_wait(&link->changed, &link->lock);
    rc = link_down(link) ? down_error(link, err) : post_send_locked(link, type, payload, len, err);
    if (rc < 0)
        rc = post_failed_locked(link, rc, err);
    pthread_mutex_unlock(&link->lock);
    return rc;
}

int rdma_link_request(struct rdma_link *link, uint32_t type, const void *payload, uint32_t len,
                      uint32_t reply_type, uint8_t *reply, uint32_t *reply_len,
                      struct gw_error *err)
{
    int rc;

    pthread_mutex_lock(&link->lock);
    link->reply_ready = false;
    pthread_mutex_unlock(&link->lock);
    rc = rdma_link_send(link, type, payload, len, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&link->lock);
    while (!link_down(link) && !link->reply_ready)
        pthread_cond_wait(&link->changed, &link->lock);
    if (!link->reply_ready)
        rc = down_error(link, err);
    else if (link->reply_type == RDMA_MSG_ERROR)
        rc = gw_error_set(err, -EIO, "the destination refused %s: %.*s", rdma_msg_name(type),
                          (int)link->reply_len, (const char *)link->reply);
    else if (link->reply_type != reply_type)
        rc = gw_error_set(err, -EPROTO, "the destination answered %s with %s, not %s",
                          rdma_msg_name(type), rdma_msg_name(link->reply_type),
                          rdma_msg_name(reply_type));
    if (rc == 0) {
        memcpy(reply, link->reply, link->reply_len);
        *reply_len = link->reply_len;
    }
    link->reply_ready = false;
    pthread_mutex_unlock(&link->lock);
    return rc;
}

int rdma_link_post_write(struct rdma_link *link, struct rdma_write *write, uint64_t *seq,
                         struct gw_error *err)
{
    int rc;

    pthread_mutex_lock(&link->lock);
    /* The queue is full of unsignalled WRITEs: the one about to go is
     * signalled, and the next post waits for it. */
    if (link->posted_seq + 1 - link->retired_seq >= LINK_SQ_LIMIT / 2 &&
        link->last_signalled <= link->retired_seq)
        write->signaled = true;
    if (link->posted_seq - link->retired_seq >= LINK_SQ_LIMIT && link->options.stats)
        atomic_fetch_add(&link->options.stats->completions_waited, 1);
    while (!link_down(link) && link->posted_seq - link->retired_seq >= LINK_SQ_LIMIT)
        pthread_cond_wait(&link->changed, &link->lock);
    if (link_down(link)) {
        rc = down_error(link, err);
    } else {
        write->wr_id = WR_ID(WR_WRITE, 0, link->posted_seq + 1);
        rc = rdma_conn_post_write(link->conn, write, err);
        if (rc < 0)
            rc = post_failed_locked(link, rc, err);
        if (rc == 0) {
            *seq = ++link->posted_seq;
            if (write->signaled)
                link->last_signalled = *seq;
            if (link->options.stats) {
                atomic_fetch_add(&link->options.stats->writes_posted, 1);
                atomic_fetch_add(&link->options.stats->bytes_write, write->len);
            }
        }
    }
    pthread_mutex_unlock(&link->lock);
    return rc;
}

int rdma_link_wait_retired(struct rdma_link *link, uint64_t seq, struct gw_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&link->lock);
    if (link->retired_seq < seq && link->options.stats)
        atomic_fetch_add(&link->options.stats->completions_waited, 1);
    while (!link_down(link) && link->retired_seq < seq)
        pthread_cond_wait(&link->changed, &link->lock);
    if (link->retired_seq < seq)
        rc = down_error(link, err);
    pthread_mutex_unlock(&link->lock);
    return rc;
}

int rdma_link_register(struct rdma_link *link, void *addr, size_t len, unsigned access,
                       struct rdma_mr **mr, struct gw_error *err)
{
    int rc = rdma_mr_register(link->conn, addr, len, access, mr, err);

    if (rc == 0 && link->options.stats)
        atomic_fetch_add(&link->options.stats->registrations, 1);
    return rc;
}

/* ---- the service thread ---- */

static int queue_data_locked(struct rdma_link *link, const struct rdma_msg *msg,
                             struct gw_error *err)
{
    struct data_piece *piece = malloc(sizeof(*piece) + msg->length);

    if (!piece)
        return gw_error_set(err, -ENOMEM, "out of memory for %u bytes of the RDMA stream",
                            msg->length);
    *piece = (struct data_piece){ .len = msg->length };
    memcpy(piece->bytes, msg->payload, msg->length);
    *link->data_tail = piece;
    link->data_tail = &piece->next;
    return 0;
}

static int take_reply_locked(struct rdma_link *link, const struct rdma_msg *msg,
                             struct gw_error *err)
{
    if (link->reply_ready)
        return gw_error_set(err, -EPROTO, "the destination sent %s while no request waited",
                            rdma_msg_name(msg->type));
    link->reply_type = msg->type;
    link->reply_len = msg->length;
    memcpy(link->reply, msg->payload, msg->length);
    link->reply_ready = true;
    return 0;
}

static int dest_request_locked(struct rdma_link *link, const struct rdma_msg *msg,
                               struct gw_error *err)
{
    uint8_t *reply = malloc(RDMA_MSG_PAYLOAD_MAX);
    uint32_t reply_type = 0, reply_len = 0;
    int rc;

    if (!reply)
        return gw_error_set(err, -ENOMEM, "out of memory for an RDMA reply");
    /* Chunks come after RAM_BLOCKS, which the record loop checks before
     * it attaches the guest's RAM; a request may overtake that. */
    while (!link->attached && !link_down(link))
        pthread_cond_wait(&link->changed, &link->lock);
    if (!link->attached) {
        free(reply);
        return down_error(link, err);
    }
    rc = rdma_dest_handle(link->dest, link->conn, msg, &reply_type, reply, &reply_len, err);
    if (rc < 0) {
        /* The source hears why (its stream then fails too), and so does
         * this side's record loop, through the broken link. */
        reply_len = (uint32_t)strnlen(err->msg, sizeof(err->msg));
        memcpy(reply, err->msg, reply_len);
        service_send_locked(link, RDMA_MSG_ERROR, reply, reply_len ? reply_len : 1, NULL);
    } else if (reply_type) {
        rc = service_send_locked(link, reply_type, reply, reply_len, err);
    }
    free(reply);
    return rc;
}

static int dispatch_locked(struct rdma_link *link, const struct rdma_msg *msg,
                           struct gw_error *err)
{
    switch (msg->type) {
    case RDMA_MSG_DATA:
        return queue_data_locked(link, msg, err);
    case RDMA_MSG_EOF:
        link->peer_eof = true;
        return 0;
    case RDMA_MSG_CREDIT:
        return 0;
    case RDMA_MSG_REGISTER_RESULT:
    case RDMA_MSG_FINISHED_ACK:
    case RDMA_MSG_ERROR:
        if (link->is_dest)
            break;
        return take_reply_locked(link, msg, err);
    case RDMA_MSG_REGISTER_REQUEST:
    case RDMA_MSG_ZERO:
    case RDMA_MSG_REGISTER_FINISHED:
        if (!link->is_dest)
            break;
        return dest_request_locked(link, msg, err);
    }
    return gw_error_set(err, -EPROTO, "an RDMA %s message came to the %s, which never gets one",
                        rdma_msg_name(msg->type), link->is_dest ? "destination" : "source");
}

static int on_recv_locked(struct rdma_link *link, const struct rdma_completion *wc,
                          struct gw_error *err)
{
    unsigned slot = WR_SLOT(wc->wr_id);
    uint8_t *buf = link->recv_bufs + (size_t)slot * RDMA_MSG_SIZE;
    struct rdma_msg msg;
    int rc = rdma_msg_decode(buf, wc->byte_len, &msg, err);

    if (rc < 0)
        return rc;
    if (link->credits + msg.credits > LINK_RECVS)
        return gw_error_set(err, -EPROTO, "the RDMA peer gave back %u credits while this side "
                            "had %u of %d", msg.credits, link->credits, LINK_RECVS);
    link->credits += msg.credits;
    rc = dispatch_locked(link, &msg, err);
    if (rc < 0)
        return rc;
    rc = rdma_conn_post_recv(link->conn, wc->wr_id, buf, RDMA_MSG_SIZE, link->recv_mr->lkey, err);
    if (rc == 0)
        link->owed++;
    return rc;
}

static void on_failure_locked(struct rdma_link *link, const struct rdma_completion *wc)
{
    char text[GW_ERROR_MSG_MAX];
    static const char *const kinds[] = { "?", "WRITE", "SEND", "RECV" };
    unsigned kind = WR_KIND(wc->wr_id) <= WR_RECV ? (unsigned)WR_KIND(wc->wr_id) : 0;

    if (wc->status == RDMA_WC_FLUSHED)
        return;   /* the first failure said why */
    snprintf(text, sizeof(text), "an RDMA %s failed: %s", kinds[kind],
             rdma_wc_status_text(wc->status));
    fail_locked(link, wc->status == RDMA_WC_CONNECTION_LOST ? -ECONNRESET : -EIO, text);
}

static void on_completion_locked(struct rdma_link *link, const struct rdma_completion *wc)
{
    struct gw_error err = { 0 };

    if (wc->wr_id == RDMA_WR_ID_EVENT || wc->opcode == RDMA_WC_OP_EVENT) {
        if (wc->status == RDMA_WC_CONNECTION_LOST)
            fail_locked(link, -ECONNRESET, "the RDMA peer vanished (connection lost)");
        link->ended = true;
        return;
    }
    if (wc->status != RDMA_WC_SUCCESS) {
        on_failure_locked(link, wc);
        return;
    }
    switch (WR_KIND(wc->wr_id)) {
    case WR_SEND:
        link->send_free |= 1ULL << WR_SLOT(wc->wr_id);
        /* a SEND's completion retires the WRITEs before it */
        __attribute__((fallthrough));
    case WR_WRITE:
        link->retired_seq = WR_SEQ(wc->wr_id);
        return;
    case WR_RECV:
        if (on_recv_locked(link, wc, &err) < 0) {
            fail_locked(link, err.code ? err.code : -EPROTO, err.msg);
            rdma_conn_disconnect(link->conn);
        }
        return;
    }
}

static void *service_thread(void *opaque)
{
    struct rdma_link *link = opaque;
    struct rdma_completion wcs[32];
    struct gw_error err = { 0 };

    for (;;) {
        int n = rdma_conn_poll(link->conn, wcs, 32, -1, &err);
        pthread_mutex_lock(&link->lock);
        if (n < 0 && n != -EINTR) {
            if (n != -ECANCELED && n != -ENOTCONN)
                fail_locked(link, n, err.msg);
            link->ended = true;
        }
        for (int i = 0; i < n; i++)
            on_completion_locked(link, &wcs[i]);
        if (!link_down(link) && flush_backlog_locked(link, &err) < 0) {
            fail_locked(link, err.code, err.msg);
            rdma_conn_disconnect(link->conn);
        }
        update_event_locked(link);
        pthread_cond_broadcast(&link->changed);
        bool done = link->ended;
        pthread_mutex_unlock(&link->lock);
        if (done)
            return NULL;
    }
}

/* ---- making and ending a link ---- */

void rdma_link_free(struct rdma_link *link)
{
    if (!link)
        return;
    if (link->thread_running) {
        /* The service thread may wait for the RAM to be attached, not in
         * poll, where the cancel would reach it. */
        pthread_mutex_lock(&link->lock);
        link->shut = true;
        pthread_cond_broadcast(&link->changed);
        pthread_mutex_unlock(&link->lock);
        rdma_conn_cancel(link->conn);
        pthread_join(link->thread, NULL);
    }
    if (link->dest)
        rdma_dest_free(link->dest);
    if (link->conn)
        rdma_conn_close(link->conn);   /* deregisters the buffers too */
    while (link->data) {
        struct data_piece *next = link->data->next;
        free(link->data);
        link->data = next;
    }
    while (link->backlog) {
        struct backlog *next = link->backlog->next;
        free(link->backlog);
        link->backlog = next;
    }
    free(link->recv_bufs);
    free(link->send_bufs);
    if (link->event_fd >= 0)
        close(link->event_fd);
    pthread_cond_destroy(&link->changed);
    pthread_mutex_destroy(&link->lock);
    free(link);
}

struct rdma_link *rdma_link_new(const struct rdma_options *options, struct gw_error *err)
{
    struct rdma_link *link = calloc(1, sizeof(*link));

    if (!link) {
        gw_error_set(err, -ENOMEM, "out of memory for an RDMA channel");
        return NULL;
    }
    link->options = *options;
    link->event_fd = eventfd(0, EFD_CLOEXEC);
    pthread_mutex_init(&link->lock, NULL);
    pthread_cond_init(&link->changed, NULL);
    link->backlog_tail = &link->backlog;
    link->data_tail = &link->data;
    link->send_free = (1ULL << LINK_SEND_SLOTS) - 1;
    link->recv_bufs = aligned_alloc(4096, (size_t)LINK_RECVS * RDMA_MSG_SIZE);
    link->send_bufs = aligned_alloc(4096, (size_t)LINK_SEND_SLOTS * RDMA_MSG_SIZE);
    if (link->event_fd < 0 || !link->recv_bufs || !link->send_bufs) {
        gw_error_set(err, -ENOMEM, "out of memory for an RDMA channel's buffers");
        rdma_link_free(link);
        return NULL;
    }
    return link;
}

/* Registers the message buffers and posts every RECV: before the barrier
 * that lets the peer send. */
int rdma_link_prepare(struct rdma_link *link, struct gw_error *err)
{
    int rc = rdma_link_register(link, link->recv_bufs, (size_t)LINK_RECVS * RDMA_MSG_SIZE,
                                RDMA_ACCESS_LOCAL_WRITE, &link->recv_mr, err);

    if (rc == 0)
        rc = rdma_link_register(link, link->send_bufs, (size_t)LINK_SEND_SLOTS * RDMA_MSG_SIZE,
                                RDMA_ACCESS_LOCAL_WRITE, &link->send_mr, err);
    for (unsigned i = 0; rc == 0 && i < LINK_RECVS; i++)
        rc = rdma_conn_post_recv(link->conn, WR_ID(WR_RECV, i, 0),
                            link->recv_bufs + (size_t)i * RDMA_MSG_SIZE, RDMA_MSG_SIZE,
                            link->recv_mr->lkey, err);
    return rc;
}

int rdma_link_start(struct rdma_link *link, uint32_t peer_credits, struct gw_error *err)
{
    int rc;

    link->credits = peer_credits < LINK_RECVS ? peer_credits : LINK_RECVS;
    rc = pthread_create(&link->thread, NULL, service_thread, link);
    if (rc)
        return gw_error_set(err, -rc, "cannot start the RDMA service thread");
    link->thread_running = true;
    return 0;
}
