/* How a migration runs, as both sides must agree: the CONFIG record
 * (docs/stream.md), taken from the parameters and capabilities when a
 * migration starts, and the check of the source's against ours, with a
 * sentence naming both values on a mismatch. */
#include "migration_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

static const char *const compression_names[] = { "none", "zstd" };
static const char *const zero_detection_names[] = { "none", "legacy", "multifd" };

size_t config_encode(const struct migration_config *config, uint8_t *out)
{
    uint32_t fields[6] = { config->multifd, config->channels, config->compression,
                           config->zero_detection, config->channel_header,
                           config->device_channels };

    memcpy(out, fields, sizeof(fields));
    memcpy(out + 24, config->id, 16);
    /* A normal migration's CONFIG is the 40 bytes every godwit reads; the
     * mode is added only where it is not normal, so a godwit that knows no
     * modes refuses a local update instead of missing its pages. */
    if (config->mode == MIGRATION_MODE_NORMAL)
        return CONFIG_RECORD_SIZE_V1;
    memcpy(out + 40, &config->mode, 4);
    return CONFIG_RECORD_SIZE;
}

static const char *on_off(uint32_t value)
{
    return value ? "on" : "off";
}

static const char *name_of(const char *const *names, unsigned count, uint32_t value)
{
    return value < count ? names[value] : "(unknown)";
}

int config_check(const struct migration_config *ours, const uint8_t *body, uint32_t length,
                 struct migration_config *theirs, struct gw_error *err)
{
    uint32_t fields[6];

    if (length != CONFIG_RECORD_SIZE && length != CONFIG_RECORD_SIZE_V1)
        return gw_error_set(err, -EPROTO, "CONFIG record has %u bytes, not %d (or %d from a "
                            "source without modes)", length, CONFIG_RECORD_SIZE,
                            CONFIG_RECORD_SIZE_V1);
    memcpy(fields, body, sizeof(fields));
    *theirs = (struct migration_config){ fields[0], fields[1], fields[2], fields[3], fields[4],
                                         fields[5], { 0 }, MIGRATION_MODE_NORMAL };
    memcpy(theirs->id, body + 24, 16);
    if (length == CONFIG_RECORD_SIZE)
        memcpy(&theirs->mode, body + 40, 4);
    if (theirs->mode > MIGRATION_MODE_CPR_TRANSFER)
        return gw_error_set(err, -EPROTO, "CONFIG record: mode %u is not known; 0 (normal) and "
                            "1 (cpr-transfer) are", theirs->mode);
    if (theirs->mode != ours->mode)
        return gw_error_set(err, -EINVAL, theirs->mode == MIGRATION_MODE_CPR_TRANSFER
                            ? "the source is in mode cpr-transfer (it sends no page: RAM stays "
                              "where it is), but this destination has RAM of its own: start "
                              "it with a cpr channel on --incoming, or migrate in mode normal"
                            : "this destination maps the source's own RAM (from its cpr "
                              "channel), which pages must never be copied into: set "
                              "migrate-set-parameters mode cpr-transfer on the source");
    if (theirs->multifd != ours->multifd)
        return gw_error_set(err, -EINVAL, "the source has capability multifd %s, this "
                            "destination %s: set the same on both sides",
                            on_off(theirs->multifd), on_off(ours->multifd));
    if (theirs->channel_header != ours->channel_header)
        return gw_error_set(err, -EINVAL, "the source has capability x-channel-header %s, this "
                            "destination %s: set the same on both sides",
                            on_off(theirs->channel_header), on_off(ours->channel_header));
    if (theirs->zero_detection != ours->zero_detection)
        return gw_error_set(err, -EINVAL, "the source uses zero-page-detection %s, this "
                            "destination %s: set the same on both sides",
                            name_of(zero_detection_names, 3, theirs->zero_detection),
                            name_of(zero_detection_names, 3, ours->zero_detection));
    if (!ours->multifd)
        return 0;
    if (theirs->channels != ours->channels)
        return gw_error_set(err, -EINVAL, "the source uses multifd-channels %u, this "
                            "destination %u: set the same on both sides", theirs->channels,
                            ours->channels);
    if (theirs->compression != ours->compression)
        return gw_error_set(err, -EINVAL, "the source uses multifd-compression %s, this "
                            "destination %s: set the same on both sides",
                            name_of(compression_names, 2, theirs->compression),
                            name_of(compression_names, 2, ours->compression));
    if (theirs->device_channels != ours->device_channels)
        return gw_error_set(err, -EINVAL, "the source uses x-multifd-channels-device-state %u, "
                            "this destination %u: set the same on both sides",
                            theirs->device_channels, ours->device_channels);
    return 0;
}

void migration_snapshot_config(struct migration *migration, struct migration_config *config)
{
    pthread_mutex_lock(&migration->lock);
    *config = (struct migration_config){
        .multifd = migration->cap_multifd,
        .channels = migration->cap_multifd ? (uint32_t)migration->params.multifd_channels : 0,
        .compression = migration->cap_multifd ? (uint32_t)migration->params.multifd_compression
                                              : COMPRESSION_NONE,
        .zero_detection = (uint32_t)migration->params.zero_page_detection,
        .channel_header = migration->cap_channel_header,
        .device_channels = migration->cap_multifd && migration->cap_channel_header
                               ? (uint32_t)migration->params.device_channels : 0,
        .mode = migration->is_destination
                    ? (migration->host.ram_from_source ? MIGRATION_MODE_CPR_TRANSFER
                                                       : MIGRATION_MODE_NORMAL)
                    : (migration->local ? MIGRATION_MODE_CPR_TRANSFER : MIGRATION_MODE_NORMAL),
    };
    pthread_mutex_unlock(&migration->lock);
}

int migration_new_id(struct migration_config *config, struct gw_error *err)
{
    if (getrandom(config->id, sizeof(config->id), 0) != (ssize_t)sizeof(config->id))
        return gw_error_set(err, -errno, "getrandom failed: %s", strerror(errno));
    return 0;
}
