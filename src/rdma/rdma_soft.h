/* The software provider's parts: connection setup (rdma_soft_connect.c)
 * hands a connected, greeted TCP socket to the provider's ops
 * (rdma_soft.c), whose connection two threads serve (rdma_soft_threads.c).
 * Private to src/rdma. */
#ifndef GODWIT_RDMA_SOFT_H
#define GODWIT_RDMA_SOFT_H

#include "rdma/rdma_internal.h"
#include "rdma/rdma_soft_wire.h"

/* Answers waiting for the writer: one per signalled request the peer has
 * outstanding (at most its send queue), a NAK and a BYE. */
#define RESPONSE_MAX (RDMA_SEND_QUEUE_DEPTH + 2)
#define CQ_SIZE (RDMA_SEND_QUEUE_DEPTH + RDMA_RECV_QUEUE_DEPTH + 1)

enum soft_state {
    SOFT_OPEN,          /* posts accepted */
    SOFT_BROKEN,        /* answers still go out, then the write side closes */
    SOFT_ENDED,         /* the reader finished: every completion is queued */
};

struct soft_wr {
    uint64_t wr_id;
    enum rdma_wc_opcode opcode;
    struct soft_header header;  /* seq, and for a WRITE key, addr, len */
    const void *local;
};

struct soft_recv {
    uint64_t wr_id;
    void *local;
    uint32_t len;
};

struct soft_cqe {
    struct rdma_completion wc;
    unsigned retire;            /* send-queue slots this completion frees */
};

/* The reader owns the socket's read side, the writer its write side; lock
 * guards every other field, both threads', the poster's and the poller's. */
struct soft_conn {
    struct rdma_conn base;
    int fd;
    pthread_t reader, writer;
    pthread_mutex_t lock;
    pthread_cond_t writer_wake;
    pthread_cond_t cq_wake;
    pthread_cond_t writer_idle;     /* writer_in_payload fell, or writer_done rose */
    bool writer_in_payload;         /* the writer reads a caller's buffer now */
    bool writer_done;               /* it has said all (a BYE too) and closed its side */

    enum soft_state state;
    enum rdma_wc_status end_status;
    bool failed_wr;             /* a work request already completed in error */
    bool bye_pending;           /* this side disconnects: the writer says so */
    bool cancelled;
    bool event_delivered;

    struct soft_wr sq[RDMA_SEND_QUEUE_DEPTH];
    unsigned sq_head, sq_count; /* posted, not yet answered (oldest first) */
    unsigned sq_sent;           /* of those, how many the writer has sent */
    unsigned sq_slots;          /* outstanding as the poster sees them */
    uint64_t next_seq;          /* of this side's next request */
    uint64_t last_sent_seq;
    uint64_t peer_seq;          /* of the peer's last request served */

    struct soft_header responses[RESPONSE_MAX];
    unsigned resp_head, resp_count;

    struct soft_recv rq[RDMA_RECV_QUEUE_DEPTH];
    unsigned rq_head, rq_count;
    unsigned rq_slots;          /* posted RECVs whose completion is not yet polled */

    struct soft_cqe cq[CQ_SIZE];
    unsigned cq_head, cq_count;
};

/* The connection's threads (rdma_soft_threads.c), started by
 * rdma_soft_conn_start with the connection as their argument. */
void *rdma_soft_reader_main(void *arg);
void *rdma_soft_writer_main(void *arg);
/* With lock held: the connection takes no more work; the writer sends the
 * answers queued, then closes its side; why is the end event's status. */
void rdma_soft_break(struct soft_conn *soft, enum rdma_wc_status why);

/* Takes fd (closed on failure too) and starts the connection's threads. */
int rdma_soft_conn_start(int fd, struct rdma_conn **conn, struct gw_error *err);

#endif
