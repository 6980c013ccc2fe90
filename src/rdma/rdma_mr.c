/* Memory regions and the connection head the providers share: keys,
 * the region table a WRITE is checked against, and registration, which
 * pins. Calls the provider only through its ops, never the front. */
#include "rdma/rdma_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>

void rdma_conn_init(struct rdma_conn *conn, const struct rdma_conn_ops *ops,
                    enum rdma_provider provider)
{
    uint32_t seed = 0;

    conn->ops = ops;
    conn->provider = provider;
    pthread_mutex_init(&conn->mr_lock, NULL);
    pthread_cond_init(&conn->mr_idle, NULL);
    conn->mrs = NULL;
    /* A random first key: a key from another connection, or one guessed,
     * is very unlikely to name a region here. */
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
        seed = (uint32_t)(uintptr_t)conn;
    conn->next_key = seed | 1;
}

void rdma_conn_fini(struct rdma_conn *conn)
{
    while (conn->mrs)
        rdma_mr_deregister(conn, &conn->mrs->mr, NULL);
    pthread_cond_destroy(&conn->mr_idle);
    pthread_mutex_destroy(&conn->mr_lock);
}

int rdma_pin_error(struct gw_error *err, int errno_value, size_t len)
{
    struct rlimit limit;
    char limit_text[32] = "unlimited";

    if (errno_value != ENOMEM && errno_value != EPERM && errno_value != EAGAIN)
        return gw_error_set(err, -errno_value, "cannot pin %zu bytes for RDMA: %s", len,
                            strerror(errno_value));
    if (getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
        snprintf(limit_text, sizeof(limit_text), "%llu bytes",
                 (unsigned long long)limit.rlim_cur);
    return gw_error_set(err, errno_value == EPERM ? -EPERM : -ENOMEM,
                        "cannot pin %zu bytes for RDMA (registered memory is locked in RAM): "
                        "the locked-memory limit is %s; raise it with `ulimit -l` (unlimited, "
                        "or LimitMEMLOCK= for a systemd service) on this host", len, limit_text);
}

struct rdma_mr_entry *rdma_mr_find_rkey(struct rdma_conn *conn, uint32_t rkey)
{
    for (struct rdma_mr_entry *entry = conn->mrs; entry; entry = entry->next)
        if (entry->mr.rkey == rkey)
            return entry;
    return NULL;
}

int rdma_mr_register(struct rdma_conn *conn, void *addr, size_t len, unsigned access,
                     struct rdma_mr **mr, struct gw_error *err)
{
    struct rdma_mr_entry *entry;
    int rc;

    if (!addr || !len)
        return gw_error_set(err, -EINVAL, "an RDMA memory region needs an address and a length");
    if (access & ~(unsigned)(RDMA_ACCESS_LOCAL_WRITE | RDMA_ACCESS_REMOTE_WRITE))
        return gw_error_set(err, -EINVAL, "RDMA access flags 0x%x: allowed are local-write "
                            "and remote-write", access);
    if ((access & RDMA_ACCESS_REMOTE_WRITE) && !(access & RDMA_ACCESS_LOCAL_WRITE))
        return gw_error_set(err, -EINVAL, "RDMA remote-write access needs local-write access "
                            "too (as verbs requires)");
    entry = calloc(1, sizeof(*entry));
    if (!entry)
        return gw_error_set(err, -ENOMEM, "out of memory for an RDMA memory region");
    entry->mr = (struct rdma_mr){ .addr = addr, .len = len, .access = access };
    rc = conn->ops->register_mr(conn, &entry->mr, &entry->provider_data, err);
    if (rc < 0) {
        free(entry);
        return rc;
    }
    pthread_mutex_lock(&conn->mr_lock);
    entry->next = conn->mrs;
    conn->mrs = entry;
    pthread_mutex_unlock(&conn->mr_lock);
    *mr = &entry->mr;
    return 0;
}

int rdma_mr_deregister(struct rdma_conn *conn, struct rdma_mr *mr, struct gw_error *err)
{
    struct rdma_mr_entry **link, *entry = NULL;

    pthread_mutex_lock(&conn->mr_lock);
    for (link = &conn->mrs; *link; link = &(*link)->next) {
        if (&(*link)->mr == mr) {
            entry = *link;
            *link = entry->next;
            break;
        }
    }
    /* Out of the list, no new WRITE finds it; one landing now finishes. */
    while (entry && entry->landing)
        pthread_cond_wait(&conn->mr_idle, &conn->mr_lock);
    pthread_mutex_unlock(&conn->mr_lock);
    if (!entry)
        return gw_error_set(err, -ENOENT, "this RDMA memory region is not registered here");
    conn->ops->deregister_mr(conn, &entry->mr, entry->provider_data);
    free(entry);
    return 0;
}

