/* The rdma-core provider's connection, shared by its data path
 * (rdma_verbs_ibv.c) and its connection setup (rdma_verbs_ibv_connect.c).
 * Private to src/rdma. */
#ifndef GODWIT_RDMA_VERBS_IBV_H
#define GODWIT_RDMA_VERBS_IBV_H

#include "rdma/rdma_internal.h"

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

/* Our ibv wr_ids: a sequence number, bit 63 set for a RECV; the drain's
 * markers (posted after the queue pair is in error) are the two below. */
#define WR_RECV_BIT (1ull << 63)
#define WR_DRAIN_SEND (WR_RECV_BIT - 1)
#define WR_DRAIN_RECV (UINT64_MAX - 1)

struct ibv_slot {
    uint64_t wr_id;
    enum rdma_wc_opcode opcode;
};

struct ibv_conn {
    struct rdma_conn base;
    struct rdma_event_channel *events;
    struct rdma_cm_id *id;
    struct ibv_pd *pd;
    struct ibv_comp_channel *comp;
    struct ibv_cq *cq;
    int cancel_fd;                  /* an eventfd: rdma_conn_cancel writes it */
    pthread_mutex_t post_lock;      /* the sequence numbers and slots below */
    uint64_t sq_next, sq_done;      /* posted; retired by polled completions */
    uint64_t rq_next, rq_done;
    struct ibv_slot sq[RDMA_SEND_QUEUE_DEPTH];
    struct ibv_slot rq[RDMA_RECV_QUEUE_DEPTH];
    bool broken, draining, event_delivered;
    unsigned drain_left;            /* markers not yet flushed back */
    enum rdma_wc_status end_status;
};

/* A connection with its cancel eventfd and rdma_cm event channel, no id
 * yet (-ENODEV without rdma_cm's device, /dev/infiniband/rdma_cm). */
int rdma_ibv_conn_new(struct ibv_conn **conn, struct gw_error *err);
/* Frees a connection that never reached the caller. */
void rdma_ibv_conn_drop(struct ibv_conn *conn);
/* Protection domain, completion channel and queue, queue pair on conn->id. */
int rdma_ibv_create_queues(struct ibv_conn *conn, struct gw_error *err);

#endif
