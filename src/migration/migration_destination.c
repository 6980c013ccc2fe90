/* The destination's migration thread: waits for the source, loads the
 * stream, answers on the return path, and starts the guest only after the
 * source's GO. Until then a failure leaves the guest not running here (the
 * source still has it); the VMM is told and ends with an error. */
#include "migration_load.h"

#include "multifd/multifd.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_answer(struct migration *migration, uint32_t type, const void *body,
                       size_t len, struct gw_error *err)
{
    return migration_rp_write(migration, type, body, len, err);
}

/* The postcopy fault thread's way to ask for a page. */
static int send_page_request(void *opaque, const struct postcopy_request *request,
                             struct gw_error *err)
{
    uint8_t body[POSTCOPY_REQUEST_SIZE];

    postcopy_request_encode(request, body);
    return send_answer(opaque, REC_RP_REQ_PAGES, body, sizeof(body), err);
}

/* Closing a socket with unread data sends a reset, and a reset makes the
 * source drop the RP_ERROR it has not read yet. So: stop writing, and read
 * until the source closes (it does once it has the error), for at most 2 s. */
static void drain_until_closed(struct channel *channel)
{
    char sink[65536];
    struct pollfd pfd = { .fd = channel->fd, .events = POLLIN };
    uint64_t deadline = migration_now_us() + 2000000;

    channel_shutdown_write(channel);
    while (migration_now_us() < deadline &&
           (channel_buffered(channel) ||
            poll(&pfd, 1, (int)((deadline - migration_now_us()) / 1000) + 1) > 0)) {
        ssize_t n = channel_read_some(channel, sink, sizeof(sink));
        if (n <= 0 && n != -EINTR)
            break;
    }
}

/* Waits until the source's next record (GO) can be read, the deadline
 * passes, or a cancel writes to the cancel pipe. */
static int wait_for_go(struct migration *migration, struct gw_error *err)
{
    unsigned timeout_ms = migration->host.go_timeout_ms ? migration->host.go_timeout_ms
                                                        : MIGRATION_GO_TIMEOUT_MS;
    uint64_t deadline = migration_now_us() + timeout_ms * 1000ULL;
    struct pollfd fds[2] = { { .fd = migration->channel.fd, .events = POLLIN },
                             { .fd = migration->cancel_pipe[0], .events = POLLIN } };

    for (;;) {
        uint64_t now = migration_now_us();
        if (migration_cancelled(migration) || (fds[1].fd >= 0 && fds[1].revents))
            return gw_error_set(err, -ECANCELED, "the incoming migration was cancelled while "
                                "it waited for the source's GO");
        if (fds[0].revents || channel_buffered(&migration->channel))
            return 0;
        if (now >= deadline)
            return gw_error_set(err, -ETIMEDOUT, "the source sent no GO within %u ms of READY: "
                                "it stalled or vanished, and keeps the guest", timeout_ms);
        if (poll(fds, fds[1].fd >= 0 ? 2 : 1, (int)((deadline - now + 999) / 1000)) < 0 &&
            errno != EINTR)
            return gw_error_set(err, -errno, "waiting for the source's GO: %s",
                                strerror(errno));
    }
}

/* After END: READY, then wait for GO. A source that vanishes here keeps the
 * guest, so this side must not run it; nor wait for ever: it gives up after
 * go_timeout_ms, and its RP_ERROR tells a source that sends GO late that
 * the guest is still its own. */
static int handshake(struct migration *migration, struct stream_reader *reader,
                     struct gw_error *err)
{
    struct stream_record record;
    int rc;

    pthread_mutex_lock(&migration->lock);
    migration->ready_sent = true;
    pthread_mutex_unlock(&migration->lock);
    if (migration_cancelled(migration))
        return gw_error_set(err, -ECANCELED, "the incoming migration was cancelled");
    rc = send_answer(migration, REC_RP_READY, NULL, 0, err);
    if (rc == 0)
        rc = wait_for_go(migration, err);
    if (rc < 0)
        return rc;
    rc = stream_read_record(reader, &record, err);
    if (rc < 0) {
        gw_error_prefix(err, "waiting for the source's GO after loading everything");
        return rc;
    }
    if (record.type != REC_GO)
        return gw_error_set(err, -EPROTO, "expected GO after END, got %s at stream offset %llu",
                            stream_record_name(record.type),
                            (unsigned long long)record.offset);
    return 0;
}

/* RP_RUNNING says how long ago the guest ran again, so that the source's
 * downtime ends there (stream.md). */
static void send_running(struct migration *migration)
{
    uint64_t resumed_us = migration->host.incoming_resumed_us
                          ? migration->host.incoming_resumed_us(migration->host.opaque) : 0;
    uint64_t now_us = migration_now_us();
    uint64_t running_for_us = resumed_us && resumed_us <= now_us ? now_us - resumed_us : 0;

    send_answer(migration, REC_RP_RUNNING, &running_for_us, sizeof(running_for_us), NULL);
}

struct incoming {
    struct migration *migration;
    struct channel_listener *listener;
    struct pending *pending;
    bool guest_here;   /* handed to the VMM: a later failure must not end it */
};

/* At LISTEN: with postcopy-preempt, its channel and receiver. Without it,
 * requested pages come on the main channel behind what it holds. Its
 * receive buffer is left as it is: shrunk on a connection whose window
 * TCP already opened, it drops what the source sent into that window, and
 * TCP sends it again only after a retransmission timeout (200 ms on
 * loopback, with a vCPU waiting for a page of it). */
static int postcopy_listen(void *opaque, struct load_state *state, struct gw_error *err)
{
    struct incoming *incoming = opaque;
    struct migration *migration = incoming->migration;

    if (!state->preempt_advised)
        return 0;
    return preempt_recv_start(migration, incoming->listener, incoming->pending, state->postcopy,
                              (uint32_t)migration->host.blocks[0].page_size, err);
}

static int finish_preempt(void *opaque, struct load_state *state, struct gw_error *err)
{
    struct incoming *incoming = opaque;

    return preempt_recv_finish(incoming->migration, &state->counts, err);
}

/* With the capability, and a return path to ask for pages on. */
static int prepare_postcopy(struct migration *migration, struct load_state *state,
                            struct gw_error *err)
{
    bool capability;

    pthread_mutex_lock(&migration->lock);
    capability = migration->cap_postcopy_ram;
    state->postcopy_preempt = migration->cap_postcopy_preempt;
    pthread_mutex_unlock(&migration->lock);
    state->postcopy_listen = postcopy_listen;
    state->preempt_finish = finish_preempt;
    if (!capability || !migration->channel.has_return_path)
        return 0;
    if (migration->host.vcpu_threads)
        state->nr_vcpus = migration->host.vcpu_threads(migration->host.opaque, state->vcpu_tids,
                                                       POSTCOPY_VCPUS_MAX);
    state->postcopy = postcopy_ram_new(migration->host.blocks, migration->host.nr_blocks,
                                       send_page_request, migration, err);
    if (!state->postcopy)
        return -ENOMEM;
    pthread_mutex_lock(&migration->lock);
    migration->postcopy_ram = state->postcopy;
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

/* The guest runs here: the rest of its pages, until END; then every page
 * is here, the fault thread stops and the source hears it. */
static int receive_postcopy(struct migration *migration, struct stream_reader *reader,
                            struct load_state *state, struct gw_error *err)
{
    int rc;

    migration_set_status(migration, MIGRATION_POSTCOPY_ACTIVE);
    /* A broken link pauses; anything else fails, and the source hears it. */
    while ((rc = migration_load_postcopy(reader, state, err)) < 0 &&
           postcopy_link_broke(rc) && !migration_cancelled(migration)) {
        struct gw_error failure = *err;
        gw_error_clear(err);
        if ((rc = postcopy_dest_recover(migration, reader, state, &failure, err)) < 0)
            break;
    }
    if (rc < 0 && !postcopy_link_broke(rc))
        migration_send_rp_error(migration, err);
    atomic_store(&migration->stats.normal_pages, state->counts.normal_pages);
    atomic_store(&migration->stats.zero_pages, state->counts.zero_pages);
    atomic_store(&migration->stats.transferred,
                 reader->offset + atomic_load(&migration->stats.multifd_bytes));
    if (rc < 0) {
        gw_error_prefix(err, "in postcopy, with the guest running here");
        return rc;
    }
    postcopy_ram_finish(state->postcopy);
    return send_answer(migration, REC_RP_POSTCOPY_DONE, NULL, 0, err);
}

/* The figures stay for query-migrate once the postcopy RAM is gone. */
static void release_postcopy(struct migration *migration, struct load_state *state)
{
    if (!state->postcopy)
        return;
    postcopy_ram_finish(state->postcopy);
    pthread_mutex_lock(&migration->lock);
    const struct postcopy_stats *stats = postcopy_ram_stats(state->postcopy);
    memcpy(&migration->stats.postcopy, stats, sizeof(*stats));
    migration->postcopy_ram = NULL;
    pthread_mutex_unlock(&migration->lock);
    postcopy_ram_free(state->postcopy);
    state->postcopy = NULL;
}

/* CONFIG said how the source migrates (and matched ours): with multifd,
 * take its channels and start receiving on them. */
static int start_multifd(void *opaque, struct load_state *state, struct gw_error *err)
{
    struct incoming *incoming = opaque;
    struct migration *migration = incoming->migration;
    int rc;

    memcpy(migration->config.id, state->config.id, sizeof(state->config.id));
    if (!migration->config.multifd)
        return 0;
    rc = multifd_accept_channels(migration, incoming->listener, incoming->pending, err);
    if (rc == 0)
        rc = multifd_recv_start(migration, &state->ram, state->devices,
                                (uint32_t)migration->host.blocks[0].page_size, &state->multifd,
                                err);
    return rc;
}

/* A device load failed on the load thread: the source hears it at once,
 * and no multifd channel waits on a receiver that is gone. */
static void device_load_failed(void *opaque, const struct gw_error *err)
{
    struct migration *migration = opaque;

    migration_send_rp_error(migration, err);
    migration_shutdown_multifd(migration);
}

/* A device that loads pieces from the main channel gets them read into
 * the reader's body: give it room now, touched, not in the downtime. */
static int prepare_main_reader(struct migration *migration, struct stream_reader *reader,
                               struct gw_error *err)
{
    struct device_registry *devices = migration->host.devices;

    for (unsigned i = 0; devices && i < devices->count; i++)
        if (devices->devices[i].ops->load_piece)
            return stream_reader_prepare(reader, DEVICE_PIECE_RECORD_MAX, err);
    return 0;
}

static int receive(struct migration *migration, struct incoming *incoming, struct gw_error *err)
{
    struct stream_reader reader = { .io = channel_stream_io(&migration->channel) };
    struct ram_direct_landing direct = { .blocks = migration->host.blocks };
    struct page_landing landing = ram_direct_landing(&direct);
    struct load_state state;
    int rc = load_state_init(&state, migration->host.blocks, migration->host.nr_blocks,
                             &landing, migration->host.devices, device_load_failed, migration,
                             err);

    state.config = migration->config;
    state.after_config = start_multifd;
    state.after_config_opaque = incoming;
    if (rc == 0 && migration->host.ram_zero_at_start) {
        rc = ram_bitmaps_alloc(migration->bitmaps, migration->host.blocks,
                               migration->host.nr_blocks, false, err);
        direct.written = migration->bitmaps;
    }
    if (rc == 0)
        rc = prepare_main_reader(migration, &reader, err);
    if (rc == 0)
        rc = prepare_postcopy(migration, &state, err);
    /* rdma: RAM lands by WRITE, outside the stream; the pages the source
     * says it wrote or zeroed count with the stream's at END. */
    if (rc == 0 && rdma_channel_is(&migration->channel))
        rc = rdma_channel_attach_ram(&migration->channel, migration->host.blocks,
                                     migration->host.nr_blocks, &landing, &state.counts, err);
    if (rc == 0)
        rc = migration_load_stream(&reader, &state, err);
    bool postcopy = rc == LOAD_POSTCOPY_RUN;
    if (postcopy)
        rc = 0;
    /* The cause, not the shut channel it led to. */
    if (rc < 0 && !multifd_recv_error(state.multifd, err))
        device_loader_error(state.devices, err);
    /* Before postcopy too: its pages come on the main channel only. */
    multifd_recv_stop(state.multifd);   /* the receivers' byte counts are theirs till then */
    atomic_store(&migration->stats.multifd_bytes, multifd_recv_bytes(state.multifd));
    atomic_store(&migration->stats.normal_pages, state.counts.normal_pages);
    atomic_store(&migration->stats.zero_pages, state.counts.zero_pages);
    atomic_store(&migration->stats.transferred,
                 reader.offset + atomic_load(&migration->stats.multifd_bytes));
    if (rc == 0 && migration->channel.has_return_path)
        rc = handshake(migration, &reader, err);
    if (rc == 0) {
        migration->host.incoming_completed(migration->host.opaque,
                                           !state.run_state_seen || !state.source_paused);
        incoming->guest_here = true;
        if (migration->channel.has_return_path)
            send_running(migration);   /* for the downtime figure */
        if (postcopy)
            rc = receive_postcopy(migration, &reader, &state, err);
    } else if (migration->channel.has_return_path) {
        migration_send_rp_error(migration, err);
        drain_until_closed(&migration->channel);
    }
    /* Freed once the guest runs: joining the receivers and unmapping the
     * load's buffers are no part of the downtime. */
    multifd_recv_free(state.multifd);
    preempt_close(migration);   /* before the RAM its receiver places pages in */
    release_postcopy(migration, &state);
    load_state_free(&state);
    stream_reader_free(&reader);
    return rc;
}

void *migration_destination_thread(void *opaque)
{
    struct migration *migration = opaque;
    struct channel_listener listener = migration->listener;
    struct incoming incoming = { .migration = migration, .listener = &listener };
    struct gw_error err = { 0 };
    int rc;

    migration_snapshot_config(migration, &migration->config);
    rc = multifd_accept_main(migration, &listener, &incoming.pending, &err);
    if (rc == 0) {
        atomic_store(&migration->stats.setup_ms,
                     migration_now_us() / 1000 - atomic_load(&migration->stats.start_ms));
        migration_set_status(migration, MIGRATION_ACTIVE);
        rc = receive(migration, &incoming, &err);
    }
    channel_listener_close(&listener);
    multifd_free_pending(incoming.pending);
    pthread_mutex_lock(&migration->lock);
    channel_close(&migration->channel);
    pthread_mutex_unlock(&migration->lock);
    multifd_close_channels(migration);
    atomic_store(&migration->stats.total_ms,
                 migration_now_us() / 1000 - atomic_load(&migration->stats.start_ms));
    if (rc < 0 && migration_cancelled(migration))
        gw_error_set(&err, -ECANCELED, "the incoming migration was cancelled");
    if (rc < 0) {
        migration_fail(migration, &err);
        /* After GO in postcopy the guest is this side's: it stays, waiting
         * for pages that cannot come; the VMM is not told to end it. */
        if (!incoming.guest_here)
            migration->host.incoming_failed(migration->host.opaque, err.msg);
        return NULL;
    }
    migration_set_status(migration, MIGRATION_COMPLETED);
    return NULL;
}
