/* The destination's migration thread: waits for the source, loads the
 * stream, answers on the return path, and starts the guest only after the
 * source's GO. Until then a failure leaves the guest not running here (the
 * source still has it); the VMM is told and ends with an error. */
#include "migration_internal.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_answer(struct stream_writer *writer, uint32_t type, const void *body,
                       size_t len, struct gw_error *err)
{
    struct iovec part = { (void *)body, len };

    return stream_write_record(writer, type, &part, len ? 1 : 0, err);
}

static void send_error_answer(struct stream_writer *writer, const struct gw_error *failure)
{
    uint8_t body[4 + STREAM_ERROR_TEXT_MAX];
    int32_t code = failure->code;
    size_t len = strnlen(failure->msg, sizeof(failure->msg));

    memcpy(body, &code, 4);
    memcpy(body + 4, failure->msg, len);
    send_answer(writer, REC_RP_ERROR, body, 4 + len, NULL);   /* best effort */
}

/* Closing a socket with unread data sends a reset, and a reset makes the
 * source drop the RP_ERROR it has not read yet. So: stop writing, and read
 * until the source closes (it does once it has the error), for at most 2 s. */
static void drain_until_closed(struct channel *channel)
{
    char sink[65536];
    struct pollfd pfd = { .fd = channel->fd, .events = POLLIN };
    uint64_t deadline = migration_now_us() + 2000000;

    shutdown(channel->fd, SHUT_WR);
    while (migration_now_us() < deadline &&
           poll(&pfd, 1, (int)((deadline - migration_now_us()) / 1000) + 1) > 0) {
        ssize_t n = read(channel->fd, sink, sizeof(sink));
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
}

/* After END: READY, then wait for GO. A source that vanishes here keeps the
 * guest, so this side must not run it. */
static int handshake(struct stream_reader *reader, struct stream_writer *writer,
                     struct gw_error *err)
{
    struct stream_record record;
    int rc = send_answer(writer, REC_RP_READY, NULL, 0, err);

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

static int receive(struct migration *migration, struct gw_error *err)
{
    struct stream_reader reader = { .io = channel_stream_io(&migration->channel) };
    struct stream_writer writer = { .io = channel_stream_io(&migration->channel) };
    struct load_state state = { .blocks = migration->host.blocks,
                                .nr_blocks = migration->host.nr_blocks,
                                .devices = migration->host.devices };
    int rc = 0;

    if (migration->host.ram_zero_at_start) {
        rc = migration_alloc_bitmaps(migration, false, err);
        state.written = migration->bitmaps;
    }
    if (rc == 0)
        rc = migration_load_stream(&reader, &state, err);
    load_state_free(&state);

    atomic_store(&migration->stats.normal_pages, state.normal_pages);
    atomic_store(&migration->stats.zero_pages, state.zero_pages);
    atomic_store(&migration->stats.transferred, reader.offset);
    if (rc == 0 && migration->channel.has_return_path)
        rc = handshake(&reader, &writer, err);
    if (rc == 0) {
        migration->host.resume(migration->host.opaque);
        if (migration->channel.has_return_path)
            send_answer(&writer, REC_RP_RUNNING, NULL, 0, NULL);   /* for the downtime figure */
    } else if (migration->channel.has_return_path) {
        send_error_answer(&writer, err);
        drain_until_closed(&migration->channel);
    }
    stream_reader_free(&reader);
    return rc;
}

void *migration_destination_thread(void *opaque)
{
    struct migration *migration = opaque;
    struct channel_listener listener = migration->listener;
    struct gw_error err = { 0 };
    struct channel channel;
    int rc;

    rc = channel_accept(&listener, migration->cancel_pipe[0], &channel, &err);
    channel_listener_close(&listener);
    if (rc == 0) {
        pthread_mutex_lock(&migration->lock);
        migration->channel = channel;
        if (migration_cancelled(migration))
            channel_shutdown(&migration->channel);
        pthread_mutex_unlock(&migration->lock);
        atomic_store(&migration->stats.setup_ms,
                     migration_now_us() / 1000 - atomic_load(&migration->stats.start_ms));
        migration_set_status(migration, MIGRATION_ACTIVE);
        rc = receive(migration, &err);
    }
    pthread_mutex_lock(&migration->lock);
    channel_close(&migration->channel);
    pthread_mutex_unlock(&migration->lock);
    atomic_store(&migration->stats.total_ms,
                 migration_now_us() / 1000 - atomic_load(&migration->stats.start_ms));
    if (rc < 0) {
        migration_fail(migration, &err);
        migration->host.incoming_failed(migration->host.opaque, err.msg);
        return NULL;
    }
    migration_set_status(migration, MIGRATION_COMPLETED);
    return NULL;
}
