/* Connecting an rdma: channel (docs/rdma.md): the source's hello offers
 * its settings in the connect request, the destination accepts or refuses
 * it with a reason, and a second connect request, which the destination
 * refuses once its RECVs are posted, is the barrier after which both
 * sides may SEND. */
#include "rdma/rdma_link_state.h"

#include <inttypes.h>
#include <stdlib.h>

#define CONNECT_TIMEOUT_MS 30000

/* ---- connecting: the hello, then the barrier (docs/rdma.md) ---- */

static struct rdma_hello our_hello(const struct rdma_options *options, uint16_t reason)
{
    return (struct rdma_hello){ .version = RDMA_PROTO_VERSION, .reason = reason,
                                .caps = options->pin_all ? RDMA_CAP_PIN_ALL : 0,
                                .credits = LINK_RECVS, .chunk_size = options->chunk_size,
                                .message_size = RDMA_MSG_SIZE };
}

static int refusal_error(const struct rdma_hello *theirs, const struct rdma_options *ours,
                         struct gw_error *err)
{
    switch (theirs->reason) {
    case RDMA_REFUSE_CHUNK_SIZE:
        return gw_error_set(err, -EINVAL, "the destination refused the RDMA connection: its "
                            "x-rdma-chunk-size is %" PRIu64 " bytes and this side's is %" PRIu64
                            "; set the same on both sides", theirs->chunk_size,
                            ours->chunk_size);
    case RDMA_REFUSE_VERSION:
        return gw_error_set(err, -EPROTO, "the destination refused the RDMA connection: it "
                            "speaks godwit's RDMA protocol version %u, this side %d",
                            theirs->version, RDMA_PROTO_VERSION);
    case RDMA_REFUSE_BUSY:
        return gw_error_set(err, -EBUSY, "the destination refused the RDMA connection: it "
                            "already has a source");
    default:
        return gw_error_set(err, -ECONNREFUSED, "the destination refused the RDMA connection "
                            "(reason %u)", theirs->reason);
    }
}

int rdma_channel_connect(const struct uri *uri, const struct rdma_options *options,
                         int cancel_fd, struct channel *channel, struct gw_error *err)
{
    enum rdma_provider provider;
    struct rdma_private_data offer, reply = { 0 };
    struct rdma_hello theirs = our_hello(options, 0), ready;
    struct rdma_conn *barrier = NULL;
    struct rdma_link *link;
    int rc;

    *channel = (struct channel){ .fd = -1, .kind = URI_RDMA };
    uri_format(uri, channel->description, sizeof(channel->description));
    rc = rdma_provider_resolve((enum rdma_provider)options->provider, &provider, err);
    if (rc < 0)
        return rc;
    if (!(link = rdma_link_new(options, err)))
        return -ENOMEM;
    rdma_hello_encode(&theirs, &offer);
    rc = rdma_conn_open(provider, uri->host, uri->port, &offer, &reply, cancel_fd,
                      CONNECT_TIMEOUT_MS, &link->conn, err);
    if (rc == -ECONNREFUSED && reply.len && rdma_hello_decode(&reply, &theirs, NULL) == 0)
        rc = refusal_error(&theirs, options, err);
    if (rc == 0)
        rc = rdma_hello_decode(&reply, &theirs, err);
    if (rc == 0)
        rc = rdma_link_prepare(link, err);
    /* The barrier: a second connect request, refused by a destination
     * whose RECVs are posted, says that both sides may SEND now. */
    ready = our_hello(options, 0);
    ready.caps |= 1u << 31;
    rdma_hello_encode(&ready, &offer);
    if (rc == 0) {
        rc = rdma_conn_open(provider, uri->host, uri->port, &offer, &reply, cancel_fd,
                          CONNECT_TIMEOUT_MS, &barrier, err);
        if (rc == 0) {
            rdma_conn_close(barrier);
            rc = gw_error_set(err, -EPROTO, "the destination accepted the RDMA barrier "
                              "instead of refusing it: it is not a godwit destination");
        } else if (rc == -ECONNREFUSED && rdma_hello_decode(&reply, &ready, NULL) == 0 &&
                   ready.reason == RDMA_REFUSE_NONE) {
            gw_error_clear(err);
            rc = 0;
        }
    }
    if (rc == 0)
        rc = rdma_link_start(link, theirs.credits, err);
    if (rc < 0) {
        rdma_link_free(link);   /* the provider's sentences name the address */
        return rc;
    }
    rdma_channel_attach_link(channel, link);
    if (options->stats)
        atomic_store(&options->stats->chunk_size, options->chunk_size);
    return 0;
}

struct rdma_listening {
    struct rdma_listener *listener;
    struct rdma_options options;
};

static int listener_accept(struct channel_listener *listener, int cancel_fd,
                           struct channel *channel, struct gw_error *err);
static void listener_close(struct channel_listener *listener);

int rdma_channel_listen(const struct uri *uri, const struct rdma_options *options,
                        struct channel_listener *listener, struct gw_error *err)
{
    struct rdma_listening *listening = calloc(1, sizeof(*listening));
    enum rdma_provider provider;
    int rc;

    if (!listening)
        return gw_error_set(err, -ENOMEM, "out of memory listening on %s", uri->host);
    listening->options = *options;
    rc = rdma_provider_resolve((enum rdma_provider)options->provider, &provider, err);
    if (rc == 0)
        rc = rdma_listener_open(provider, uri->host, uri->port, &listening->listener, err);
    if (rc < 0) {
        free(listening);
        return rc;
    }
    listener->impl = listening;
    listener->impl_accept = listener_accept;
    listener->impl_close = listener_close;
    return 0;
}

static void listener_close(struct channel_listener *listener)
{
    struct rdma_listening *listening = listener->impl;

    if (!listening)
        return;
    rdma_listener_close(listening->listener);
    free(listening);
    listener->impl = NULL;
    listener->impl_accept = NULL;
    listener->impl_close = NULL;
}

/* Checks a source's offer; fills the reason to refuse it, and a sentence
 * for this side's own error. */
static uint16_t judge_offer(const struct rdma_hello *offer, const struct rdma_options *ours,
                            struct gw_error *err)
{
    if (offer->version != RDMA_PROTO_VERSION) {
        gw_error_set(err, -EPROTO, "the source speaks godwit's RDMA protocol version %u, this "
                     "side %d", offer->version, RDMA_PROTO_VERSION);
        return RDMA_REFUSE_VERSION;
    }
    if (offer->chunk_size != ours->chunk_size) {
        gw_error_set(err, -EINVAL, "refused the source's RDMA connection: its "
                     "x-rdma-chunk-size is %" PRIu64 " bytes and this side's is %" PRIu64
                     "; set the same on both sides", offer->chunk_size, ours->chunk_size);
        return RDMA_REFUSE_CHUNK_SIZE;
    }
    if (offer->caps & ~RDMA_CAPS_KNOWN) {
        gw_error_set(err, -EPROTO, "the source asks for RDMA capabilities 0x%x; this side "
                     "knows 0x%x", offer->caps, RDMA_CAPS_KNOWN);
        return RDMA_REFUSE_CAPS;
    }
    return RDMA_REFUSE_NONE;
}

static int refuse(struct rdma_request *request, const struct rdma_options *ours,
                  uint16_t reason)
{
    struct rdma_hello hello = our_hello(ours, reason);
    struct rdma_private_data reply;

    rdma_hello_encode(&hello, &reply);
    return rdma_request_reject(request, &reply, NULL);
}

/* Waits for the source's barrier request (refusing any other) and answers
 * it: this side's RECVs are posted. */
static int answer_barrier(struct rdma_listening *listening, int cancel_fd, struct gw_error *err)
{
    for (;;) {
        struct rdma_request *request;
        struct rdma_hello offer;
        int rc = rdma_listener_wait(listening->listener, cancel_fd, CONNECT_TIMEOUT_MS,
                                    &request, err);
        if (rc < 0) {
            gw_error_prefix(err, "waiting for the source's RDMA barrier");
            return rc;
        }
        if (rdma_hello_decode(rdma_request_private_data(request), &offer, NULL) == 0 &&
            (offer.caps & (1u << 31)))
            return refuse(request, &listening->options, RDMA_REFUSE_NONE);
        refuse(request, &listening->options, RDMA_REFUSE_BUSY);
    }
}

static int listener_accept(struct channel_listener *listener, int cancel_fd,
                           struct channel *channel, struct gw_error *err)
{
    struct rdma_listening *listening = listener->impl;
    struct rdma_request *request;
    struct rdma_hello offer, hello;
    struct rdma_private_data reply;
    struct rdma_link *link;
    int rc = rdma_listener_wait(listening->listener, cancel_fd, -1, &request, err);

    if (rc < 0)
        return rc;
    rc = rdma_hello_decode(rdma_request_private_data(request), &offer, err);
    if (rc < 0) {
        rdma_request_reject(request, NULL, NULL);
        return rc;
    }
    uint16_t reason = judge_offer(&offer, &listening->options, err);
    if (reason != RDMA_REFUSE_NONE) {
        refuse(request, &listening->options, reason);
        return err->code ? err->code : -EINVAL;
    }
    if (!(link = rdma_link_new(&listening->options, err))) {
        rdma_request_reject(request, NULL, NULL);
        return -ENOMEM;
    }
    link->is_dest = true;
    /* The source's capabilities rule: rdma-pin-all is the source's. */
    link->options.pin_all = offer.caps & RDMA_CAP_PIN_ALL;
    hello = our_hello(&link->options, 0);
    rdma_hello_encode(&hello, &reply);
    rc = rdma_request_accept(request, &reply, &link->conn, err);
    if (rc == 0)
        rc = rdma_link_prepare(link, err);
    if (rc == 0)
        rc = answer_barrier(listening, cancel_fd, err);
    if (rc == 0)
        rc = rdma_link_start(link, offer.credits, err);
    if (rc < 0) {
        rdma_link_free(link);
        return rc;
    }
    rdma_channel_attach_link(channel, link);
    if (link->options.stats)
        atomic_store(&link->options.stats->chunk_size, link->options.chunk_size);
    return 0;
}
