/* The connections of one migration: the source connecting its multifd
 * channels, and the destination sorting the connections it accepts into
 * the main channel and multifd channels by their channel headers, and
 * refusing any that belong to another migration. */
#include "multifd.h"

#include "channel/channel_header.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A connection must show what it is this soon after it is accepted. */
#define HEADER_TIMEOUT_MS 5000
/* Every channel of a migration arrives within this of the main channel. */
#define CHANNELS_TIMEOUT_US (30ULL * 1000000)

static const char *const type_names[] = { "?", "main", "multifd RAM", "multifd device state",
                                          "postcopy preempt" };
/* The first byte of a TLS connection: a handshake record. */
#define TLS_RECORD_HANDSHAKE 0x16

/* --- source --- */

static unsigned multifd_channel_count(const struct migration_config *config)
{
    return config->multifd ? config->channels + config->device_channels : 0;
}

/* Connects every multifd channel and writes its channel header and stream
 * header. Each connection is published under the lock at once, so a
 * cancel shuts down those made so far. */
int multifd_connect(struct migration *migration, uint32_t page_size, struct gw_error *err)
{
    const struct migration_config *config = &migration->config;
    unsigned count = multifd_channel_count(config);
    struct channel *channels = count ? calloc(count, sizeof(*channels)) : NULL;
    int rc;

    if (count && !channels)
        return gw_error_set(err, -ENOMEM, "out of memory for the multifd channels");
    pthread_mutex_lock(&migration->lock);
    migration->multifd_channels = channels;
    migration->nr_multifd_channels = 0;
    pthread_mutex_unlock(&migration->lock);
    for (unsigned i = 0; i < count; i++) {
        bool ram = i < config->channels;
        uint8_t header[CHANNEL_HEADER_SIZE];
        struct channel channel;
        rc = channel_connect(&migration->uri, migration->cancel_pipe[0], &channel, err);
        if (rc == 0 && (rc = migration_tls_start(migration, &channel, false, err)) < 0)
            channel_close(&channel);
        if (rc < 0) {
            gw_error_prefix(err, "multifd channel %u", i);
            return rc;
        }
        pthread_mutex_lock(&migration->lock);
        channels[i] = channel;
        migration->nr_multifd_channels = i + 1;
        if (migration_cancelled(migration))
            channel_shutdown(&channels[i]);
        pthread_mutex_unlock(&migration->lock);
        struct stream_writer writer = { .io = channel_stream_io(&channels[i]) };
        struct iovec part = { header, sizeof(header) };
        channel_header_encode(header, ram ? CHANNEL_RAM : CHANNEL_DEVICE,
                              ram ? i : i - config->channels, config->id);
        if ((rc = writer.io.writev(writer.io.opaque, &part, 1, err)) < 0 ||
            (rc = stream_write_header(&writer, page_size, err)) < 0)
            return rc;
        migration_count_sent(migration, sizeof(header) + writer.offset, false);
        atomic_fetch_add(&migration->stats.multifd_bytes, sizeof(header) + writer.offset);
    }
    return 0;
}

void multifd_close_channels(struct migration *migration)
{
    pthread_mutex_lock(&migration->lock);
    for (unsigned i = 0; i < migration->nr_multifd_channels; i++)
        channel_close(&migration->multifd_channels[i]);
    free(migration->multifd_channels);
    migration->multifd_channels = NULL;
    migration->nr_multifd_channels = 0;
    pthread_mutex_unlock(&migration->lock);
}

/* --- destination --- */

/* Waits for len bytes to be readable (peek) or read them, with a timeout
 * and the cancel pipe. */
static int wait_bytes(struct channel *channel, int cancel_fd, uint8_t *buf, size_t len,
                      bool peek, struct gw_error *err)
{
    uint64_t deadline = migration_now_us() + HEADER_TIMEOUT_MS * 1000ULL;
    size_t done = 0;

    while (done < len) {
        struct pollfd fds[2] = { { .fd = channel->fd, .events = POLLIN },
                                 { .fd = cancel_fd, .events = POLLIN } };
        uint64_t now = migration_now_us();
        if (now >= deadline)
            return gw_error_set(err, -ETIMEDOUT, "the connection sent no channel header within "
                                "%d s", HEADER_TIMEOUT_MS / 1000);
        /* TLS may hold plaintext already read off the socket */
        int ready = channel_buffered(channel)
                        ? 1 : poll(fds, cancel_fd >= 0 ? 2 : 1, (int)((deadline - now) / 1000) + 1);
        if (ready < 0 && errno != EINTR)
            return gw_error_set(err, -errno, "poll failed: %s", strerror(errno));
        if (ready > 0 && fds[1].revents)
            return gw_error_set(err, -ECANCELED, "the incoming migration was cancelled");
        if (ready <= 0)
            continue;
        ssize_t n = peek ? channel_peek(channel, buf, len)
                         : channel_read_some(channel, buf + done, len - done);
        if (n == 0)
            return gw_error_set(err, -EPIPE, "the connection closed before its channel header");
        if (n < 0 && n != -EINTR && n != -EAGAIN)
            return gw_error_set(err, (int)n, "reading a channel header: %s", strerror((int)-n));
        if (n > 0)
            done = peek ? (size_t)n : done + (size_t)n;
        if (peek && done < len) {
            struct timespec pause = { 0, 1000000 };
            nanosleep(&pause, NULL);
        }
    }
    return 0;
}

/* One accepted connection: its type and index, from its header or, for a
 * main channel without one, from its stream magic. */
struct incoming {
    struct channel channel;
    uint32_t type, index;
    bool has_header;
    uint8_t id[16];
};

static int classify(struct migration *migration, struct incoming *in, struct gw_error *err)
{
    uint8_t header[CHANNEL_HEADER_SIZE];
    int rc;

    if (in->channel.kind != URI_TCP && in->channel.kind != URI_UNIX) {
        in->type = CHANNEL_MAIN;   /* file: and fd: carry the main channel only */
        return 0;
    }
    rc = wait_bytes(&in->channel, migration->cancel_pipe[0], header, 8, true, err);
    if (rc == -ECANCELED || rc == -ETIMEDOUT)
        return rc;
    if (rc == 0 && !migration->tls.creds && header[0] == TLS_RECORD_HANDSHAKE)
        return gw_error_set(err, -EPROTO, "the source speaks TLS and this destination has no "
                            "tls-creds: set tls-creds on both sides, or on neither");
    /* Anything but a channel header is a main channel: the stream reader
     * then says what is wrong with it (an early end, a wrong magic), as a
     * single-channel destination always has. */
    if (rc < 0 || memcmp(header, CHANNEL_MAGIC, 8)) {
        in->type = CHANNEL_MAIN;
        return 0;
    }
    rc = wait_bytes(&in->channel, migration->cancel_pipe[0], header, sizeof(header), false,
                    err);
    if (rc == 0)
        rc = channel_header_decode(header, &in->type, &in->index, in->id, err);
    in->has_header = rc == 0;
    return rc;
}

static void refuse(struct incoming *in, struct gw_error *why)
{
    fprintf(stderr, "godwit: refused a migration connection: %s\n", why->msg);
    migration_send_error(&in->channel, why);
    channel_shutdown_write(&in->channel);
    channel_close(&in->channel);
}

/* With tls-creds, every connection starts TLS before anything else. A
 * plaintext source is told so in plaintext (it reads that); a handshake
 * that fails can tell the source nothing more than its alert. Returns
 * 0, 1 (refused: wait for the next) or -ECANCELED. */
static int secure(struct migration *migration, struct incoming *in, struct gw_error *err)
{
    struct gw_error why = { 0 };
    uint8_t first;
    int rc;

    if (!migration->tls.creds)
        return 0;
    rc = wait_bytes(&in->channel, migration->cancel_pipe[0], &first, 1, true, &why);
    if (rc == 0 && first != TLS_RECORD_HANDSHAKE)
        rc = gw_error_set(&why, -EPROTO, "this destination takes TLS only (tls-creds '%s'), "
                          "and the source sent plaintext: set the same kind of tls-creds on "
                          "the source", tls_creds_id(migration->tls.creds));
    else if (rc == 0)
        rc = migration_tls_start(migration, &in->channel, true, &why);
    if (rc == -ECANCELED) {
        channel_close(&in->channel);
        *err = why;
        return rc;
    }
    if (rc == 0)
        return 0;
    if (in->channel.priv || why.code == -EPROTO) {
        refuse(in, &why);   /* over TLS when the handshake was done */
    } else {
        fprintf(stderr, "godwit: refused a migration connection: %s\n", why.msg);
        channel_close(&in->channel);
    }
    return 1;
}

/* Connections of multifd channels that came before the main channel. */
struct pending {
    struct incoming *items;
    unsigned count, cap;
    bool main_has_header;
    uint8_t main_id[16];
};

static int accept_one(struct migration *migration, struct channel_listener *listener,
                      struct incoming *in, struct gw_error *err)
{
    struct gw_error why = { 0 };
    int rc;

    *in = (struct incoming){ .channel = { .fd = -1 } };
    rc = channel_accept(listener, migration->cancel_pipe[0], &in->channel, err);
    if (rc < 0)
        return rc;
    if ((rc = secure(migration, in, err)) != 0)
        return rc;
    rc = classify(migration, in, &why);
    if (rc == -ECANCELED) {
        channel_close(&in->channel);
        *err = why;
        return rc;
    }
    if (rc < 0) {
        refuse(in, &why);
        return 1;   /* not a channel: wait for the next */
    }
    return 0;
}

/* Waits for the main channel; multifd channels that come first wait in
 * pending for the main channel's CONFIG to say whether they belong. */
int multifd_accept_main(struct migration *migration, struct channel_listener *listener,
                         struct pending **pending_out, struct gw_error *err)
{
    struct pending *pending = calloc(1, sizeof(*pending));
    struct incoming in;
    int rc;

    if (!pending)
        return gw_error_set(err, -ENOMEM, "out of memory accepting channels");
    *pending_out = pending;
    for (;;) {
        rc = accept_one(migration, listener, &in, err);
        if (rc < 0)
            return rc;
        if (rc > 0)
            continue;
        if (in.type == CHANNEL_MAIN) {
            pending->main_has_header = in.has_header;
            memcpy(pending->main_id, in.id, 16);
            pthread_mutex_lock(&migration->lock);
            migration->channel = in.channel;
            if (migration_cancelled(migration))
                channel_shutdown(&migration->channel);
            pthread_mutex_unlock(&migration->lock);
            return 0;
        }
        if (pending->count == 2 * MULTIFD_CHANNELS_MAX) {
            struct gw_error why;
            gw_error_set(&why, -EMFILE, "too many multifd channels before the main channel");
            refuse(&in, &why);
            continue;
        }
        if (pending->count == pending->cap) {
            unsigned cap = pending->cap ? 2 * pending->cap : 8;
            struct incoming *items = realloc(pending->items, cap * sizeof(*items));
            if (!items) {
                channel_close(&in.channel);
                return gw_error_set(err, -ENOMEM, "out of memory accepting channels");
            }
            pending->items = items;
            pending->cap = cap;
        }
        pending->items[pending->count++] = in;
    }
}

void multifd_free_pending(struct pending *pending)
{
    if (!pending)
        return;
    for (unsigned i = 0; i < pending->count; i++)
        channel_close(&pending->items[i].channel);
    free(pending->items);
    free(pending);
}

/* Takes a multifd connection as channel `slot`, or refuses it. */
static bool adopt(struct migration *migration, const struct migration_config *config,
                  struct incoming *in, bool *present)
{
    struct gw_error why = { 0 };
    uint32_t limit = in->type == CHANNEL_RAM      ? config->channels
                     : in->type == CHANNEL_DEVICE ? config->device_channels
                                                  : 0;   /* postcopy's comes at LISTEN */
    unsigned slot = in->type == CHANNEL_RAM ? in->index : config->channels + in->index;

    if (memcmp(in->id, config->id, 16))
        gw_error_set(&why, -EPERM, "a %s channel of another migration arrived (its id differs "
                     "from this migration's): one destination takes one migration",
                     type_names[in->type]);
    else if (in->type == CHANNEL_MAIN)
        gw_error_set(&why, -EPROTO, "a second main channel arrived for this migration");
    else if (in->index >= limit)
        gw_error_set(&why, -EPROTO, "%s channel %u arrived; this migration has %u",
                     type_names[in->type], in->index, limit);
    else if (present[slot])
        gw_error_set(&why, -EPROTO, "%s channel %u arrived twice", type_names[in->type],
                     in->index);
    if (why.code) {
        refuse(in, &why);
        return false;
    }
    pthread_mutex_lock(&migration->lock);
    migration->multifd_channels[slot] = in->channel;
    if (migration_cancelled(migration))
        channel_shutdown(&migration->multifd_channels[slot]);
    pthread_mutex_unlock(&migration->lock);
    present[slot] = true;
    return true;
}

/* After CONFIG: takes the multifd channels the source announced, from
 * pending and then the listener, refusing strangers, within 30 s. */
int multifd_accept_channels(struct migration *migration, struct channel_listener *listener,
                            struct pending *pending, struct gw_error *err)
{
    const struct migration_config *config = &migration->config;
    unsigned count = multifd_channel_count(config), arrived = 0;
    uint64_t deadline = migration_now_us() + CHANNELS_TIMEOUT_US;
    bool *present = calloc(count ? count : 1, sizeof(bool));
    struct channel *channels = calloc(count ? count : 1, sizeof(*channels));
    int rc = 0;

    if (pending->main_has_header && memcmp(pending->main_id, config->id, 16)) {
        free(present);
        free(channels);
        return gw_error_set(err, -EPROTO, "the main channel's header and its CONFIG record "
                            "name different migrations");
    }
    if (!present || !channels) {
        free(present);
        free(channels);
        return gw_error_set(err, -ENOMEM, "out of memory accepting channels");
    }
    for (unsigned i = 0; i < count; i++)
        channels[i].fd = -1;
    pthread_mutex_lock(&migration->lock);
    migration->multifd_channels = channels;
    migration->nr_multifd_channels = count;
    pthread_mutex_unlock(&migration->lock);
    for (unsigned i = 0; i < pending->count; i++) {
        arrived += adopt(migration, config, &pending->items[i], present);
        pending->items[i].channel.fd = -1;
    }
    pending->count = 0;
    while (arrived < count) {
        struct incoming in;
        if (migration_now_us() > deadline) {
            rc = gw_error_set(err, -ETIMEDOUT, "only %u of the %u multifd channels arrived "
                              "within %llu s", arrived, count, CHANNELS_TIMEOUT_US / 1000000);
            break;
        }
        struct pollfd pfd = { .fd = listener->fd, .events = POLLIN };
        if (poll(&pfd, 1, 100) == 0 && !migration_cancelled(migration))
            continue;
        rc = accept_one(migration, listener, &in, err);
        if (rc < 0)
            break;
        rc = 0;
        if (in.channel.fd >= 0)
            arrived += adopt(migration, config, &in, present);
    }
    free(present);
    return rc;
}

/* postcopy-preempt, at POSTCOPY_LISTEN: the source's preempt channel, the
 * only connection it makes then; strangers are refused, as above. */
int multifd_accept_postcopy(struct migration *migration, struct channel_listener *listener,
                            struct pending *pending, struct channel *channel,
                            struct gw_error *err)
{
    uint64_t deadline = migration_now_us() + CHANNELS_TIMEOUT_US;

    for (;;) {
        struct incoming in;
        struct gw_error why = { 0 };
        int rc;
        if (pending->count) {
            in = pending->items[--pending->count];
        } else {
            if (migration_now_us() > deadline)
                return gw_error_set(err, -ETIMEDOUT, "the postcopy preempt channel did not "
                                    "arrive within %llu s", CHANNELS_TIMEOUT_US / 1000000);
            struct pollfd pfd = { .fd = listener->fd, .events = POLLIN };
            if (poll(&pfd, 1, 100) == 0 && !migration_cancelled(migration))
                continue;
            if ((rc = accept_one(migration, listener, &in, err)) < 0)
                return rc;
            if (rc > 0)
                continue;
        }
        if (!in.has_header || in.type != CHANNEL_POSTCOPY)
            gw_error_set(&why, -EPROTO, "a %s channel arrived where the postcopy preempt "
                         "channel was due", type_names[in.type]);
        else if (memcmp(in.id, migration->config.id, 16) || in.index != 0)
            gw_error_set(&why, -EPERM, "a postcopy preempt channel of another migration "
                         "arrived");
        if (why.code) {
            refuse(&in, &why);
            continue;
        }
        *channel = in.channel;
        return 0;
    }
}
