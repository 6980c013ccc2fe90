/* What the verbs front (rdma_verbs.c) shares with its two providers: the
 * objects of rdma_verbs.h as a common head each provider extends, the ops a
 * provider fills, and the front's region table (the providers look keys up
 * in it). Private to src/rdma. */
#ifndef GODWIT_RDMA_INTERNAL_H
#define GODWIT_RDMA_INTERNAL_H

#include "rdma/rdma_verbs.h"

#include <pthread.h>

struct rdma_conn_ops {
    int (*register_mr)(struct rdma_conn *conn, struct rdma_mr *mr, void **provider_data,
                       struct gw_error *err);
    void (*deregister_mr)(struct rdma_conn *conn, struct rdma_mr *mr, void *provider_data);
    int (*post_write)(struct rdma_conn *conn, const struct rdma_write *write,
                      struct gw_error *err);
    int (*post_send)(struct rdma_conn *conn, uint64_t wr_id, const void *local, uint32_t len,
                     uint32_t lkey, struct gw_error *err);
    int (*post_recv)(struct rdma_conn *conn, uint64_t wr_id, void *local, uint32_t len,
                     uint32_t lkey, struct gw_error *err);
    int (*poll)(struct rdma_conn *conn, struct rdma_completion *completions, int max,
                int timeout_ms, struct gw_error *err);
    void (*disconnect)(struct rdma_conn *conn);
    void (*cancel)(struct rdma_conn *conn);
    /* Stops the provider's threads, calls rdma_conn_fini, frees. */
    void (*destroy)(struct rdma_conn *conn);
};

/* A registered region as the front keeps it: the public part first. */
struct rdma_mr_entry {
    struct rdma_mr mr;
    void *provider_data;            /* verbs: the ibv_mr */
    unsigned landing;               /* soft: WRITEs landing in it now */
    struct rdma_mr_entry *next;
};

/* The head of every provider's connection. mr_lock guards the region list;
 * the poster, the poller and the soft provider's threads all read it. */
struct rdma_conn {
    const struct rdma_conn_ops *ops;
    enum rdma_provider provider;
    pthread_mutex_t mr_lock;
    pthread_cond_t mr_idle;         /* a region's landing count fell to 0 */
    struct rdma_mr_entry *mrs;
    uint32_t next_key;
};

void rdma_conn_init(struct rdma_conn *conn, const struct rdma_conn_ops *ops,
                    enum rdma_provider provider);
/* Deregisters what is still registered (the provider's traffic must have
 * stopped), then frees the head's locks: a provider's destroy calls it. */
void rdma_conn_fini(struct rdma_conn *conn);

/* With mr_lock held: the region whose rkey is rkey, or NULL. */
struct rdma_mr_entry *rdma_mr_find_rkey(struct rdma_conn *conn, uint32_t rkey);

/* The sentence for a pin that the memlock limit refused (errno_value). */
int rdma_pin_error(struct gw_error *err, int errno_value, size_t len);

/* Providers' entry points, chosen by rdma_listener_open and rdma_conn_open. */
struct rdma_listener_ops {
    uint16_t (*port)(const struct rdma_listener *listener);
    int (*wait)(struct rdma_listener *listener, int cancel_fd, int timeout_ms,
                struct rdma_request **request, struct gw_error *err);
    void (*close)(struct rdma_listener *listener);
};

struct rdma_listener {
    const struct rdma_listener_ops *ops;
};

struct rdma_request_ops {
    int (*accept)(struct rdma_request *request, const struct rdma_private_data *reply,
                  struct rdma_conn **conn, struct gw_error *err);
    int (*reject)(struct rdma_request *request, const struct rdma_private_data *reply,
                  struct gw_error *err);
};

struct rdma_request {
    const struct rdma_request_ops *ops;
    struct rdma_private_data offer;
};

int rdma_soft_listen(const char *host, uint16_t port, struct rdma_listener **listener,
                     struct gw_error *err);
int rdma_soft_connect(const char *host, uint16_t port, const struct rdma_private_data *offer,
                      struct rdma_private_data *reply, int cancel_fd, int timeout_ms,
                      struct rdma_conn **conn, struct gw_error *err);
int rdma_ibv_listen(const char *host, uint16_t port, struct rdma_listener **listener,
                    struct gw_error *err);
int rdma_ibv_connect(const char *host, uint16_t port, const struct rdma_private_data *offer,
                     struct rdma_private_data *reply, int cancel_fd, int timeout_ms,
                     struct rdma_conn **conn, struct gw_error *err);
int rdma_ibv_device_count(struct gw_error *err);

#endif
