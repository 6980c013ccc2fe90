/* The verbs front: provider choice, the checks every post gets whatever the
 * provider (lengths, local keys and ranges), the region table, and dispatch
 * to the provider's ops. Knows nothing of TCP or of rdma-core. */
#include "rdma/rdma_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const provider_names[] = {
    [RDMA_PROVIDER_AUTO] = "auto", [RDMA_PROVIDER_VERBS] = "verbs", [RDMA_PROVIDER_SOFT] = "soft",
};

const char *rdma_provider_name(enum rdma_provider provider)
{
    return provider <= RDMA_PROVIDER_SOFT ? provider_names[provider] : "?";
}

int rdma_provider_parse(const char *text, enum rdma_provider *provider, struct gw_error *err)
{
    for (unsigned i = 0; i < sizeof(provider_names) / sizeof(provider_names[0]); i++) {
        if (!strcmp(text, provider_names[i])) {
            *provider = (enum rdma_provider)i;
            return 0;
        }
    }
    return gw_error_set(err, -EINVAL,
                        "x-rdma-provider '%s' is not a provider: allowed are auto, verbs and soft",
                        text);
}

int rdma_device_count(struct gw_error *err)
{
    return rdma_ibv_device_count(err);
}

int rdma_provider_resolve(enum rdma_provider asked, enum rdma_provider *chosen,
                          struct gw_error *err)
{
    int devices;

    if (asked == RDMA_PROVIDER_SOFT) {
        *chosen = asked;
        return 0;
    }
    devices = rdma_device_count(err);
    if (devices < 0)
        return devices;
    if (devices > 0) {
        *chosen = RDMA_PROVIDER_VERBS;
        return 0;
    }
    if (asked == RDMA_PROVIDER_AUTO) {
        *chosen = RDMA_PROVIDER_SOFT;
        return 0;
    }
    return gw_error_set(err, -ENODEV,
                        "x-rdma-provider verbs: this host has no RDMA device (ibv_get_device_list "
                        "found none); create a Soft-RoCE one with `rdma link add NAME type rxe "
                        "netdev IF`, or use godwit's software provider with x-rdma-provider soft");
}

/* ---- Connections ----------------------------------------------------- */

int rdma_listener_open(enum rdma_provider provider, const char *host, uint16_t port,
                       struct rdma_listener **listener, struct gw_error *err)
{
    if (provider == RDMA_PROVIDER_SOFT)
        return rdma_soft_listen(host, port, listener, err);
    if (provider == RDMA_PROVIDER_VERBS)
        return rdma_ibv_listen(host, port, listener, err);
    return gw_error_set(err, -EINVAL, "rdma_listener_open needs a resolved provider, not auto");
}

uint16_t rdma_listener_port(const struct rdma_listener *listener)
{
    return listener->ops->port(listener);
}

int rdma_listener_wait(struct rdma_listener *listener, int cancel_fd, int timeout_ms,
                       struct rdma_request **request, struct gw_error *err)
{
    return listener->ops->wait(listener, cancel_fd, timeout_ms, request, err);
}

void rdma_listener_close(struct rdma_listener *listener)
{
    if (listener)
        listener->ops->close(listener);
}

const struct rdma_private_data *rdma_request_private_data(const struct rdma_request *request)
{
    return &request->offer;
}

static int check_private_data(const struct rdma_private_data *data, struct gw_error *err)
{
    if (data && data->len > RDMA_PRIVATE_DATA_MAX)
        return gw_error_set(err, -EINVAL, "RDMA private data of %u bytes: at most %d are allowed",
                            data->len, RDMA_PRIVATE_DATA_MAX);
    return 0;
}

int rdma_request_accept(struct rdma_request *request, const struct rdma_private_data *reply,
                        struct rdma_conn **conn, struct gw_error *err)
{
    int rc = check_private_data(reply, err);

    if (rc < 0) {
        request->ops->reject(request, NULL, NULL);
        return rc;
    }
    return request->ops->accept(request, reply, conn, err);
}

int rdma_request_reject(struct rdma_request *request, const struct rdma_private_data *reply,
                        struct gw_error *err)
{
    int rc = check_private_data(reply, err);

    if (rc < 0) {   /* still refused, with no bytes: the request is consumed */
        request->ops->reject(request, NULL, NULL);
        return rc;
    }
    return request->ops->reject(request, reply, err);
}

int rdma_conn_open(enum rdma_provider provider, const char *host, uint16_t port,
                   const struct rdma_private_data *offer, struct rdma_private_data *reply,
                   int cancel_fd, int timeout_ms, struct rdma_conn **conn, struct gw_error *err)
{
    int rc = check_private_data(offer, err);

    if (rc < 0)
        return rc;
    reply->len = 0;
    if (provider == RDMA_PROVIDER_SOFT)
        return rdma_soft_connect(host, port, offer, reply, cancel_fd, timeout_ms, conn, err);
    if (provider == RDMA_PROVIDER_VERBS)
        return rdma_ibv_connect(host, port, offer, reply, cancel_fd, timeout_ms, conn, err);
    return gw_error_set(err, -EINVAL, "rdma_conn_open needs a resolved provider, not auto");
}

enum rdma_provider rdma_conn_provider(const struct rdma_conn *conn)
{
    return conn->provider;
}

void rdma_conn_disconnect(struct rdma_conn *conn)
{
    conn->ops->disconnect(conn);
}

void rdma_conn_cancel(struct rdma_conn *conn)
{
    conn->ops->cancel(conn);
}

void rdma_conn_close(struct rdma_conn *conn)
{
    if (!conn)
        return;
    conn->ops->disconnect(conn);
    conn->ops->destroy(conn);
}

/* ---- Work requests --------------------------------------------------- */

/* The post's local range must lie in the region of lkey, with need. */
static int check_local(struct rdma_conn *conn, const void *local, uint32_t len, uint32_t lkey,
                       unsigned need, const char *what, struct gw_error *err)
{
    uintptr_t start = (uintptr_t)local;
    const char *problem = "no region has this lkey";

    if (len > RDMA_MESSAGE_MAX)
        return gw_error_set(err, -EINVAL, "RDMA %s of %u bytes: at most %u are allowed", what,
                            len, RDMA_MESSAGE_MAX);
    pthread_mutex_lock(&conn->mr_lock);
    for (struct rdma_mr_entry *entry = conn->mrs; entry; entry = entry->next) {
        uintptr_t base = (uintptr_t)entry->mr.addr;

        if (entry->mr.lkey != lkey)
            continue;
        problem = "the range is not inside the lkey's region";
        if (start < base || start - base > entry->mr.len || len > entry->mr.len - (start - base))
            break;
        problem = "the lkey's region lacks local-write access";
        if ((entry->mr.access & need) != need)
            break;
        pthread_mutex_unlock(&conn->mr_lock);
        return 0;
    }
    pthread_mutex_unlock(&conn->mr_lock);
    return gw_error_set(err, -EINVAL, "RDMA %s of %u bytes at %p with lkey 0x%x: %s", what, len,
                        local, lkey, problem);
}

int rdma_conn_post_write(struct rdma_conn *conn, const struct rdma_write *write,
                         struct gw_error *err)
{
    int rc = check_local(conn, write->local, write->len, write->lkey, 0, "WRITE", err);

    return rc < 0 ? rc : conn->ops->post_write(conn, write, err);
}

int rdma_conn_post_send(struct rdma_conn *conn, uint64_t wr_id, const void *local, uint32_t len,
                        uint32_t lkey, struct gw_error *err)
{
    int rc = check_local(conn, local, len, lkey, 0, "SEND", err);

    return rc < 0 ? rc : conn->ops->post_send(conn, wr_id, local, len, lkey, err);
}

int rdma_conn_post_recv(struct rdma_conn *conn, uint64_t wr_id, void *local, uint32_t len,
                        uint32_t lkey, struct gw_error *err)
{
    int rc = check_local(conn, local, len, lkey, RDMA_ACCESS_LOCAL_WRITE, "RECV", err);

    return rc < 0 ? rc : conn->ops->post_recv(conn, wr_id, local, len, lkey, err);
}

int rdma_conn_poll(struct rdma_conn *conn, struct rdma_completion *completions, int max,
                   int timeout_ms, struct gw_error *err)
{
    if (max < 1)
        return gw_error_set(err, -EINVAL, "rdma_conn_poll needs room for at least one completion");
    return conn->ops->poll(conn, completions, max, timeout_ms, err);
}

static const char *const status_texts[] = {
    [RDMA_WC_SUCCESS] = "success",
    [RDMA_WC_REMOTE_ACCESS] = "remote access error",
    [RDMA_WC_REMOTE_BAD_KEY] = "remote access error: no region has this rkey",
    [RDMA_WC_REMOTE_RANGE] = "remote access error: the range is outside the rkey's region",
    [RDMA_WC_REMOTE_NO_WRITE] = "remote access error: the region does not allow remote writes",
    [RDMA_WC_RNR] = "receiver not ready: the peer had no receive posted for a SEND",
    [RDMA_WC_REMOTE_INVALID] = "remote invalid request: the peer's receive was too small",
    [RDMA_WC_LOCAL_LENGTH] = "local length error: a SEND was larger than this receive",
    [RDMA_WC_FLUSHED] = "flushed: the connection broke before this work was done",
    [RDMA_WC_DISCONNECTED] = "disconnected",
    [RDMA_WC_CONNECTION_LOST] = "connection lost: the peer vanished",
    [RDMA_WC_OTHER] = "RDMA error (see the vendor error)",
};

const char *rdma_wc_status_text(enum rdma_wc_status status)
{
    return status <= RDMA_WC_OTHER ? status_texts[status] : "unknown RDMA status";
}
