/* The verbs interface the RDMA migration protocol is written against: a
 * connection (listen/accept/connect with private data), memory regions,
 * one-sided WRITE, SEND/RECV, and completions. Two providers implement it:
 * rdma-core (rdma_verbs_ibv.c, a real device) and a software one over TCP
 * (rdma_soft.c, for hosts without RDMA hardware). The protocol must rely on
 * nothing but what this header promises; each promise is written here.
 * Private to libgodwit. Names avoid librdmacm's (rdma_listen, rdma_connect,
 * rdma_post_*): they share the rdma_ prefix and one symbol space. */
#ifndef GODWIT_RDMA_VERBS_H
#define GODWIT_RDMA_VERBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>

/* ---- Providers ------------------------------------------------------- */

enum rdma_provider {
    RDMA_PROVIDER_AUTO,     /* verbs when a device exists, soft otherwise */
    RDMA_PROVIDER_VERBS,    /* rdma-core: libibverbs and librdmacm */
    RDMA_PROVIDER_SOFT,     /* ours, over TCP, a thread serving the peer's WRITEs */
};

/* "auto", "verbs" or "soft" (the values of x-rdma-provider). */
const char *rdma_provider_name(enum rdma_provider provider);
/* Refuses anything else with a sentence listing the three values. */
int rdma_provider_parse(const char *text, enum rdma_provider *provider, struct gw_error *err);

/* Number of RDMA devices rdma-core sees (ibv_get_device_list): 0 when there
 * is none (no error then), negative errno when it cannot tell. */
int rdma_device_count(struct gw_error *err);

/* Turns auto into verbs or soft, and checks that verbs has a device. With
 * verbs and no device: -ENODEV and a sentence naming both fixes (create a
 * Soft-RoCE device with `rdma link add NAME type rxe netdev IF`, or set
 * x-rdma-provider soft). soft is always available. */
int rdma_provider_resolve(enum rdma_provider asked, enum rdma_provider *chosen,
                          struct gw_error *err);

/* ---- Connections ----------------------------------------------------- */

/* Private data travels with the connect request, the accept and the reject,
 * carried as opaque bytes (the protocol defines them: version, capabilities,
 * chunk size). 56 bytes is what rdma_cm lets an InfiniBand connect carry.
 * The soft provider delivers exactly the bytes sent; verbs may deliver
 * more (an InfiniBand CM pads with zeros to its field's size, and len is
 * then up to 56): the protocol's encoding must tolerate trailing zeros. */
#define RDMA_PRIVATE_DATA_MAX 56

struct rdma_private_data {
    uint8_t len;
    uint8_t bytes[RDMA_PRIVATE_DATA_MAX];
};

/* Queue sizes, the same in both providers. At most RDMA_SEND_QUEUE_DEPTH
 * WRITEs and SENDs may be outstanding: a work request is outstanding from
 * its post until its own completion or a later signalled one's has been
 * polled (an unsignalled WRITE is only retired by a later signalled
 * completion, as with hardware). A post beyond that fails with -ENOBUFS.
 * At most RDMA_RECV_QUEUE_DEPTH RECVs may be posted and not completed. */
#define RDMA_SEND_QUEUE_DEPTH 256
#define RDMA_RECV_QUEUE_DEPTH 64

/* The largest single WRITE, SEND or RECV (the verbs limit, 2 GiB - 1 is
 * typical; we allow up to 1 GiB, the largest x-rdma-chunk-size). */
#define RDMA_MESSAGE_MAX (1u << 30)

struct rdma_listener;       /* a bound, listening endpoint */
struct rdma_request;        /* a connect request not yet accepted or rejected */
struct rdma_conn;           /* a connected reliable queue pair and its completions */

/* Binds HOST:PORT (an IPv4 or IPv6 literal or name, "" for any; port 0 picks
 * one: rdma_listener_port says which) and listens. provider must be
 * resolved (verbs or soft). Errors name the address. */
int rdma_listener_open(enum rdma_provider provider, const char *host, uint16_t port,
                       struct rdma_listener **listener, struct gw_error *err);
uint16_t rdma_listener_port(const struct rdma_listener *listener);
/* Waits for the next connect request; its private data is readable before
 * the server decides. Returns -ECANCELED as soon as cancel_fd (may be -1)
 * becomes readable, -ETIMEDOUT after timeout_ms (-1: no limit). */
int rdma_listener_wait(struct rdma_listener *listener, int cancel_fd, int timeout_ms,
                       struct rdma_request **request, struct gw_error *err);
const struct rdma_private_data *rdma_request_private_data(const struct rdma_request *request);
/* Both consume the request (it is freed, whatever the result). accept
 * answers with reply (may be NULL: no bytes) and returns the connection;
 * reject answers with reply and closes. */
int rdma_request_accept(struct rdma_request *request, const struct rdma_private_data *reply,
                        struct rdma_conn **conn, struct gw_error *err);
int rdma_request_reject(struct rdma_request *request, const struct rdma_private_data *reply,
                        struct gw_error *err);
void rdma_listener_close(struct rdma_listener *listener);

/* Connects to HOST:PORT with offer as the connect request's private data.
 * On accept: 0, *conn, and the server's reply in *reply (never NULL). On reject:
 * -ECONNREFUSED, the server's reject bytes in *reply (len 0 when the server
 * sent none or nobody listens), and a sentence. -ECANCELED when cancel_fd
 * (may be -1) becomes readable, -ETIMEDOUT after timeout_ms (-1: none). */
int rdma_conn_open(enum rdma_provider provider, const char *host, uint16_t port,
                   const struct rdma_private_data *offer, struct rdma_private_data *reply,
                   int cancel_fd, int timeout_ms, struct rdma_conn **conn, struct gw_error *err);

enum rdma_provider rdma_conn_provider(const struct rdma_conn *conn);

/* Ends the connection: outstanding work completes as RDMA_WC_FLUSHED, then
 * the RDMA_WR_ID_EVENT completion comes (status RDMA_WC_DISCONNECTED); the
 * peer sees its own outstanding work flushed and its own event. Memory
 * regions stay registered until deregistered. Idempotent. */
void rdma_conn_disconnect(struct rdma_conn *conn);
/* Makes a blocked or later rdma_conn_poll return -ECANCELED at once, from any
 * thread (it stays cancelled). Does not disconnect. */
void rdma_conn_cancel(struct rdma_conn *conn);
/* Disconnects if needed (soft waits up to 1 s for its goodbye to leave, so
 * the peer sees a disconnect), deregisters what is still registered, frees. */
void rdma_conn_close(struct rdma_conn *conn);

/* ---- Memory regions -------------------------------------------------- */

enum rdma_access {
    RDMA_ACCESS_LOCAL_WRITE  = 1 << 0,  /* a RECV may land here */
    RDMA_ACCESS_REMOTE_WRITE = 1 << 1,  /* the peer may WRITE here; needs LOCAL_WRITE too
                                         * (as verbs): register refuses it alone */
};

/* A registered range of this process's memory. Keys are 32-bit; soft's
 * count up from a random start per connection, so a deregistered region's
 * keys never become valid again on that connection (verbs: the NIC's). */
struct rdma_mr {
    void *addr;
    size_t len;
    uint32_t lkey;          /* for this side's posts */
    uint32_t rkey;          /* for the peer's WRITEs: send it with addr */
    unsigned access;        /* enum rdma_access bits */
};

/* Registers [addr, addr + len) on conn for access, and PINS it: mlock in the
 * soft provider, ibv_reg_mr (which pins) with verbs, so its cost is real.
 * When the memlock limit stops it: -ENOMEM (or -EPERM) with a sentence that
 * gives the size asked and the limit and names `ulimit -l`. len may be up
 * to the whole of guest RAM. */
int rdma_mr_register(struct rdma_conn *conn, void *addr, size_t len, unsigned access,
                     struct rdma_mr **mr, struct gw_error *err);
/* Unpins and forgets mr. A WRITE landing in it at that moment finishes
 * first (soft) or is undefined (verbs): the protocol deregisters a region
 * only when the peer can no longer write to it. */
int rdma_mr_deregister(struct rdma_conn *conn, struct rdma_mr *mr, struct gw_error *err);

/* ---- Work requests --------------------------------------------------- */

/* Posts return at once: they never wait for the peer. The bytes of a local
 * buffer are read (WRITE, SEND) or written (RECV) at some time until the
 * work request's completion: the caller leaves them alone until then.
 * Every local range must lie inside the region of its lkey (RECV: with
 * RDMA_ACCESS_LOCAL_WRITE); otherwise the post fails with -EINVAL and a
 * sentence, and nothing is queued. A post after the connection broke fails
 * with -ENOTCONN (or, with verbs, may complete as RDMA_WC_FLUSHED). */

/* One-sided: [local, local + len) lands at the peer's remote_addr, which
 * must lie, whole, inside a region of the peer registered with
 * RDMA_ACCESS_REMOTE_WRITE whose rkey is rkey. The peer's program sees
 * nothing (no completion there). Otherwise this side gets an error
 * completion for it (see rdma_wc_status) and the peer's memory is not
 * changed. Unsignalled: no completion unless it fails. */
struct rdma_write {
    uint64_t wr_id;
    const void *local;
    uint32_t len;
    uint32_t lkey;
    uint64_t remote_addr;   /* the peer's virtual address, as its rdma_mr.addr */
    uint32_t rkey;
    bool signaled;
};
int rdma_conn_post_write(struct rdma_conn *conn, const struct rdma_write *write,
                         struct gw_error *err);

/* Two-sided: always signalled. The peer must have a RECV posted when the
 * SEND arrives: otherwise this side gets RDMA_WC_RNR (no retry, so the
 * protocol has to know; it is never a wait) and the connection breaks. A
 * SEND larger than the RECV's buffer: RDMA_WC_REMOTE_INVALID here,
 * RDMA_WC_LOCAL_LENGTH there, and the connection breaks. */
int rdma_conn_post_send(struct rdma_conn *conn, uint64_t wr_id, const void *local, uint32_t len,
                        uint32_t lkey, struct gw_error *err);
/* RECVs are consumed in the order posted, one per incoming SEND; the
 * completion's byte_len is the SEND's length. */
int rdma_conn_post_recv(struct rdma_conn *conn, uint64_t wr_id, void *local, uint32_t len,
                        uint32_t lkey, struct gw_error *err);

/* ---- Completions ----------------------------------------------------- */

/* The wr_id of the one completion that reports the connection's end. */
#define RDMA_WR_ID_EVENT UINT64_MAX

enum rdma_wc_opcode {
    RDMA_WC_OP_WRITE,
    RDMA_WC_OP_SEND,
    RDMA_WC_OP_RECV,
    RDMA_WC_OP_EVENT,       /* wr_id RDMA_WR_ID_EVENT: the connection ended */
};

enum rdma_wc_status {
    RDMA_WC_SUCCESS,
    /* The peer refused a WRITE. The soft provider says which check failed;
     * verbs reports all three as RDMA_WC_REMOTE_ACCESS (the NIC cannot tell). */
    RDMA_WC_REMOTE_ACCESS,
    RDMA_WC_REMOTE_BAD_KEY,     /* soft: no region with this rkey (or deregistered) */
    RDMA_WC_REMOTE_RANGE,       /* soft: the range is not inside the key's region */
    RDMA_WC_REMOTE_NO_WRITE,    /* soft: the region lacks RDMA_ACCESS_REMOTE_WRITE */
    RDMA_WC_RNR,                /* a SEND found no RECV posted at the peer */
    RDMA_WC_REMOTE_INVALID,     /* the peer could not take the request (SEND too big) */
    RDMA_WC_LOCAL_LENGTH,       /* a RECV's buffer was smaller than the SEND */
    RDMA_WC_FLUSHED,            /* not done: the connection broke or was disconnected */
    RDMA_WC_DISCONNECTED,       /* the event: ended by either side (disconnect) */
    RDMA_WC_CONNECTION_LOST,    /* the event, or a WR's: the peer vanished (killed, reset) */
    RDMA_WC_OTHER,              /* verbs only: any status not above (vendor_err says more) */
};

struct rdma_completion {
    uint64_t wr_id;
    enum rdma_wc_opcode opcode;
    enum rdma_wc_status status;
    uint32_t byte_len;          /* RECV: bytes received */
    uint32_t vendor_err;        /* verbs: ibv_wc.vendor_err; soft: 0 */
};

/* A short phrase for status ("remote access error: wrong rkey"). */
const char *rdma_wc_status_text(enum rdma_wc_status status);

/* Waits up to timeout_ms (-1: no limit, 0: do not wait) for completions and
 * fills up to max of them. Returns how many (0 on timeout), -ECANCELED after
 * rdma_conn_cancel, or another negative errno with a sentence.
 *
 * What the protocol may rely on:
 * - Send-queue completions (WRITE, SEND) come in the order of their posts,
 *   RECV completions in the order of theirs; the two orders interleave in
 *   no promised way.
 * - A signalled completion means every WRITE and SEND posted before it has
 *   been done at the peer: its bytes are in the peer's memory.
 * - A SEND posted after WRITEs reaches the peer's RECV after their bytes
 *   are in its memory, so a RECV completion for it is a barrier there.
 * - Errors are completions, never hangs: the first failed work request
 *   completes with its status (even when unsignalled), every later
 *   outstanding one and every posted RECV as RDMA_WC_FLUSHED, and the
 *   connection is then broken on both sides.
 * - The end of the connection (disconnect by either side, an error, the
 *   peer's death) is reported exactly once, after the flushed completions,
 *   by a completion with wr_id RDMA_WR_ID_EVENT and opcode
 *   RDMA_WC_OP_EVENT, even when no work was outstanding. After it, poll
 *   returns -ENOTCONN.
 * Call it from one thread at a time; posts may come from another thread. */
int rdma_conn_poll(struct rdma_conn *conn, struct rdma_completion *completions, int max,
                   int timeout_ms, struct gw_error *err);

#endif
