/* The software provider's face: the ops of rdma_verbs.h on a connection
 * that rdma_soft_threads.c serves. Posts queue work for the writer and
 * never wait; poll waits on the completions the reader queues. */
#include "rdma/rdma_soft.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* How long closing a connection waits for its BYE to go out. */
#define BYE_WAIT_MS 1000

static struct soft_conn *soft_of(struct rdma_conn *conn)
{
    return (struct soft_conn *)conn;
}

/* ---- Posts ------------------------------------------------------------- */

static int post_request(struct soft_conn *soft, uint64_t wr_id, enum rdma_wc_opcode opcode,
                        struct soft_header header, const void *local, struct gw_error *err)
{
    struct soft_wr *wr;
    int rc = 0;

    pthread_mutex_lock(&soft->lock);
    if (soft->state != SOFT_OPEN) {
        rc = gw_error_set(err, -ENOTCONN, "the RDMA connection is closed: no more work can be "
                          "posted on it");
    } else if (soft->sq_slots == RDMA_SEND_QUEUE_DEPTH) {
        rc = gw_error_set(err, -ENOBUFS, "the RDMA send queue is full (%d work requests "
                          "outstanding): a signalled completion must be polled first",
                          RDMA_SEND_QUEUE_DEPTH);
    } else {
        wr = &soft->sq[(soft->sq_head + soft->sq_count++) % RDMA_SEND_QUEUE_DEPTH];
        header.seq = soft->next_seq++;
        *wr = (struct soft_wr){ .wr_id = wr_id, .opcode = opcode, .header = header,
                                .local = local };
        soft->sq_slots++;
        pthread_cond_signal(&soft->writer_wake);
    }
    pthread_mutex_unlock(&soft->lock);
    return rc;
}

static int soft_post_write(struct rdma_conn *conn, const struct rdma_write *write,
                           struct gw_error *err)
{
    struct soft_header header = {
        .op = SOFT_OP_WRITE, .flags = write->signaled ? SOFT_FLAG_SIGNALED : 0,
        .key = write->rkey, .addr = write->remote_addr, .len = write->len,
    };

    return post_request(soft_of(conn), write->wr_id, RDMA_WC_OP_WRITE, header, write->local,
                        err);
}

static int soft_post_send(struct rdma_conn *conn, uint64_t wr_id, const void *local,
                          uint32_t len, uint32_t lkey, struct gw_error *err)
{
    struct soft_header header = { .op = SOFT_OP_SEND, .flags = SOFT_FLAG_SIGNALED, .len = len };

    (void)lkey;
    return post_request(soft_of(conn), wr_id, RDMA_WC_OP_SEND, header, local, err);
}

static int soft_post_recv(struct rdma_conn *conn, uint64_t wr_id, void *local, uint32_t len,
                          uint32_t lkey, struct gw_error *err)
{
    struct soft_conn *soft = soft_of(conn);
    int rc = 0;

    (void)lkey;
    pthread_mutex_lock(&soft->lock);
    if (soft->state != SOFT_OPEN) {
        rc = gw_error_set(err, -ENOTCONN, "the RDMA connection is closed: no more receives "
                          "can be posted on it");
    } else if (soft->rq_slots == RDMA_RECV_QUEUE_DEPTH) {
        rc = gw_error_set(err, -ENOBUFS, "the RDMA receive queue is full (%d receives "
                          "outstanding)", RDMA_RECV_QUEUE_DEPTH);
    } else {
        soft->rq[(soft->rq_head + soft->rq_count++) % RDMA_RECV_QUEUE_DEPTH] =
            (struct soft_recv){ .wr_id = wr_id, .local = local, .len = len };
        soft->rq_slots++;
    }
    pthread_mutex_unlock(&soft->lock);
    return rc;
}

/* ---- Completions ----------------------------------------------------- */

static void deadline_after(struct timespec *deadline, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += timeout_ms / 1000;
    deadline->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

static int take_completions(struct soft_conn *soft, struct rdma_completion *out, int max)
{
    int n = 0;

    for (; n < max && soft->cq_count; n++) {
        struct soft_cqe *cqe = &soft->cq[soft->cq_head];

        out[n] = cqe->wc;
        soft->sq_slots -= cqe->retire;
        if (cqe->wc.opcode == RDMA_WC_OP_RECV)
            soft->rq_slots--;
        if (cqe->wc.opcode == RDMA_WC_OP_EVENT)
            soft->event_delivered = true;
        soft->cq_head = (soft->cq_head + 1) % CQ_SIZE;
        soft->cq_count--;
    }
    return n;
}

static int soft_poll(struct rdma_conn *conn, struct rdma_completion *completions, int max,
                     int timeout_ms, struct gw_error *err)
{
    struct soft_conn *soft = soft_of(conn);
    struct timespec deadline;
    int rc = 0;

    if (timeout_ms > 0)
        deadline_after(&deadline, timeout_ms);
    pthread_mutex_lock(&soft->lock);
    while (!soft->cq_count && !soft->cancelled && !soft->event_delivered && timeout_ms) {
        if (timeout_ms < 0)
            pthread_cond_wait(&soft->cq_wake, &soft->lock);
        else if (pthread_cond_timedwait(&soft->cq_wake, &soft->lock, &deadline) == ETIMEDOUT)
            break;
    }
    if (soft->cancelled)
        rc = gw_error_set(err, -ECANCELED, "waiting for RDMA completions was cancelled");
    else if (soft->cq_count)
        rc = take_completions(soft, completions, max);
    else if (soft->event_delivered)
        rc = gw_error_set(err, -ENOTCONN, "the RDMA connection has ended: no completion "
                          "will come");
    pthread_mutex_unlock(&soft->lock);
    return rc;
}

/* ---- The connection's life ------------------------------------------- */

static void soft_disconnect(struct rdma_conn *conn)
{
    struct soft_conn *soft = soft_of(conn);

    pthread_mutex_lock(&soft->lock);
    if (soft->state == SOFT_OPEN) {
        soft->bye_pending = true;
        rdma_soft_break(soft, RDMA_WC_DISCONNECTED);
    }
    pthread_mutex_unlock(&soft->lock);
}

static void soft_cancel(struct rdma_conn *conn)
{
    struct soft_conn *soft = soft_of(conn);

    pthread_mutex_lock(&soft->lock);
    soft->cancelled = true;
    pthread_cond_broadcast(&soft->cq_wake);
    pthread_mutex_unlock(&soft->lock);
}

static void soft_destroy(struct rdma_conn *conn)
{
    struct soft_conn *soft = soft_of(conn);

    struct timespec deadline;

    /* The BYE goes first if it can (the peer then sees a disconnect, not a
     * loss), but whatever the peer does, both threads return within 1 s. */
    deadline_after(&deadline, BYE_WAIT_MS);
    pthread_mutex_lock(&soft->lock);
    while (!soft->writer_done &&
           pthread_cond_timedwait(&soft->writer_idle, &soft->lock, &deadline) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&soft->lock);
    shutdown(soft->fd, SHUT_RDWR);
    pthread_join(soft->reader, NULL);
    pthread_join(soft->writer, NULL);
    close(soft->fd);
    rdma_conn_fini(conn);
    pthread_cond_destroy(&soft->writer_idle);
    pthread_cond_destroy(&soft->cq_wake);
    pthread_cond_destroy(&soft->writer_wake);
    pthread_mutex_destroy(&soft->lock);
    free(soft);
}

/* Registration pins, as a NIC's does: the memlock limit applies, and the
 * cost of faulting in and locking every page is paid here. The system
 * call itself: AddressSanitizer's mlock() pretends and returns 0. */
static int soft_register_mr(struct rdma_conn *conn, struct rdma_mr *mr, void **provider_data,
                            struct gw_error *err)
{
    if (syscall(SYS_mlock, mr->addr, mr->len) < 0)
        return rdma_pin_error(err, errno, mr->len);
    pthread_mutex_lock(&conn->mr_lock);
    mr->lkey = mr->rkey = conn->next_key++;
    pthread_mutex_unlock(&conn->mr_lock);
    *provider_data = NULL;
    return 0;
}

/* Pins do not nest: unlocking one region unpins pages another region of
 * this process shares with it (the protocol's regions do not overlap). */
static void soft_deregister_mr(struct rdma_conn *conn, struct rdma_mr *mr, void *provider_data)
{
    (void)conn;
    (void)provider_data;
    syscall(SYS_munlock, mr->addr, mr->len);
}

static const struct rdma_conn_ops soft_ops = {
    .register_mr = soft_register_mr,
    .deregister_mr = soft_deregister_mr,
    .post_write = soft_post_write,
    .post_send = soft_post_send,
    .post_recv = soft_post_recv,
    .poll = soft_poll,
    .disconnect = soft_disconnect,
    .cancel = soft_cancel,
    .destroy = soft_destroy,
};

static void init_locks(struct soft_conn *soft)
{
    pthread_condattr_t monotonic;

    pthread_mutex_init(&soft->lock, NULL);
    pthread_cond_init(&soft->writer_wake, NULL);
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&soft->writer_idle, &monotonic);
    pthread_cond_init(&soft->cq_wake, &monotonic);
    pthread_condattr_destroy(&monotonic);
}

int rdma_soft_conn_start(int fd, struct rdma_conn **conn, struct gw_error *err)
{
    struct soft_conn *soft = calloc(1, sizeof(*soft));
    int rc;

    if (!soft) {
        close(fd);
        return gw_error_set(err, -ENOMEM, "out of memory for an RDMA connection");
    }
    rdma_conn_init(&soft->base, &soft_ops, RDMA_PROVIDER_SOFT);
    init_locks(soft);
    soft->fd = fd;
    soft->next_seq = 1;
    rc = pthread_create(&soft->reader, NULL, rdma_soft_reader_main, soft);
    if (rc == 0) {
        rc = pthread_create(&soft->writer, NULL, rdma_soft_writer_main, soft);
        if (rc) {
            shutdown(fd, SHUT_RDWR);
            pthread_join(soft->reader, NULL);
        }
    }
    if (rc) {
        close(fd);
        rdma_conn_fini(&soft->base);
        free(soft);
        return gw_error_set(err, -rc, "cannot start the RDMA connection's threads: %s",
                            strerror(rc));
    }
    *conn = &soft->base;
    return 0;
}
