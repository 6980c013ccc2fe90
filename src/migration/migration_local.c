/* The local update (QEMU's cpr-transfer): the guest moves to a new VMM
 * process on this host and its RAM stays where it is. The source hands the
 * RAM's file descriptors over on the cpr channel (cpr/), then migrates the
 * device state on the main channel as usual, with a tracker that never finds
 * anything dirty, so no page is ever sent. What it must never do: send a
 * page into memory the two processes share. */
#include "migration_internal.h"

#include <errno.h>
#include <string.h>

#include <godwit/cpr.h>

int migration_local_check(struct migration *migration, const struct uri *main_uri,
                          const struct uri *cpr, bool *local, struct gw_error *err)
{
    char shown[PATH_MAX + 32];
    uint64_t mode;
    int rc;

    pthread_mutex_lock(&migration->lock);
    mode = migration->params.mode;
    pthread_mutex_unlock(&migration->lock);
    if (mode == MIGRATION_MODE_NORMAL) {
        if (cpr)
            return gw_error_set(err, -EINVAL, "a cpr channel is for mode cpr-transfer; set it "
                                "with migrate-set-parameters, or leave the cpr channel out");
        *local = false;
        return 0;
    }
    uri_format(main_uri, shown, sizeof(shown));
    if (main_uri->kind != URI_UNIX && main_uri->kind != URI_FD)
        return gw_error_set(err, -EINVAL, "mode cpr-transfer is a local update: the new process "
                            "runs on this host, so the main channel must be unix:PATH or fd:, "
                            "not %s; or set mode normal to migrate to another host", shown);
    if (!cpr)
        return gw_error_set(err, -EINVAL, "mode cpr-transfer needs a cpr channel: migrate with "
                            "\"channels\": a main channel and {\"channel-type\":\"cpr\", "
                            "\"addr\":{\"transport\":\"socket\",\"type\":\"unix\",\"path\":P}}");
    rc = cpr_blocks_shareable(migration->host.blocks, migration->host.nr_blocks, err);
    if (rc < 0)
        return rc;
    *local = true;
    return 0;
}

int migration_local_hand_over(struct migration *migration, struct gw_error *err)
{
    return cpr_send_memory(migration->cpr_uri.path, migration->host.blocks,
                           migration->host.nr_blocks, migration->cancel_pipe[0], err);
}

/* Nothing moves, so nothing is dirty: start leaves the bitmaps as they are
 * (all clear), sync adds nothing, clear has nothing to re-arm. */
static int untracked_start(void *opaque, struct gw_error *err)
{
    (void)opaque;
    (void)err;
    return 0;
}

static int untracked_sync(void *opaque, unsigned block, uint64_t *bitmap,
                          struct dirty_sync_times *times, struct gw_error *err)
{
    (void)opaque;
    (void)block;
    (void)bitmap;
    (void)times;
    (void)err;
    return 0;
}

static int untracked_clear(void *opaque, unsigned block, uint64_t first_page,
                           const uint64_t *bits, unsigned nr_words, struct gw_error *err)
{
    (void)opaque;
    (void)block;
    (void)first_page;
    (void)bits;
    (void)nr_words;
    (void)err;
    return 0;
}

static void untracked_stop(void *opaque)
{
    (void)opaque;
}

const struct dirty_tracker_ops migration_local_untracked = {
    .start = untracked_start, .sync = untracked_sync, .clear = untracked_clear,
    .stop = untracked_stop,
};
