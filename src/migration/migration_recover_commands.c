/* Postcopy recovery's commands (docs/qmp.md, "Postcopy"): migrate with
 * resume on the source, migrate-recover on the destination, migrate-pause
 * on either. They only ask: the migration threads pause and recover
 * (migration_recover.c). */
#include "migration_internal.h"

#include <errno.h>
#include <string.h>

int migration_resume(struct migration *migration, const char *uri_text, struct gw_error *err)
{
    struct uri uri;
    int rc = migration_parse_uri(migration, uri_text, &uri, err);

    if (rc < 0)
        return rc;
    if (uri.kind != URI_TCP && uri.kind != URI_UNIX)
        return gw_error_set(err, -EINVAL, "resume needs a tcp: or unix: URI (the destination "
                            "listens there after migrate-recover)");
    pthread_mutex_lock(&migration->lock);
    if (migration->is_destination || migration->status != MIGRATION_POSTCOPY_PAUSED) {
        enum migration_status status = migration->status;
        pthread_mutex_unlock(&migration->lock);
        return gw_error_set(err, -EINVAL, "migrate with resume needs an outgoing migration in "
                            "postcopy-paused; it is %s", migration_status_name(status));
    }
    migration->uri = uri;
    migration->resume_requested = true;
    pthread_cond_broadcast(&migration->changed);
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

int migration_qmp_recover(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    struct channel_listener listener;
    struct uri uri;
    int rc;

    (void)ret;
    rc = uri_parse(json_string_value(json_object_get(args, "uri")), &uri, err);
    if (rc < 0)
        return rc;
    if (uri.kind != URI_TCP && uri.kind != URI_UNIX)
        return gw_error_set(err, -EINVAL, "migrate-recover needs a tcp: or unix: URI");
    pthread_mutex_lock(&migration->lock);
    bool paused = migration->is_destination && migration->status == MIGRATION_POSTCOPY_PAUSED &&
                  !migration->recover_requested;
    enum migration_status status = migration->status;
    pthread_mutex_unlock(&migration->lock);
    if (!paused)
        return gw_error_set(err, -EINVAL, "migrate-recover needs an incoming migration in "
                            "postcopy-paused; it is %s", migration_status_name(status));
    if ((rc = channel_listen(&uri, &listener, err)) < 0)
        return rc;
    pthread_mutex_lock(&migration->lock);
    migration->recover_listener = listener;
    migration->recover_requested = true;
    pthread_cond_broadcast(&migration->changed);
    pthread_mutex_unlock(&migration->lock);
    migration_set_status(migration, MIGRATION_POSTCOPY_RECOVER_SETUP);
    return 0;
}

/* QEMU's migrate-pause: breaks the link on purpose (both sides pause). */
int migration_qmp_pause(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    enum migration_status status;

    (void)args;
    (void)ret;
    pthread_mutex_lock(&migration->lock);
    status = migration->status;
    if (status == MIGRATION_POSTCOPY_ACTIVE || status == MIGRATION_POSTCOPY_RECOVER) {
        channel_shutdown(&migration->channel);
        channel_shutdown(&migration->preempt.channel);
    }
    pthread_mutex_unlock(&migration->lock);
    if (status != MIGRATION_POSTCOPY_ACTIVE && status != MIGRATION_POSTCOPY_RECOVER)
        return gw_error_set(err, -EINVAL, "migrate-pause is for a migration in postcopy-active "
                            "or postcopy-recover; it is %s", migration_status_name(status));
    return 0;
}
