/* The migration's QMP and HMP commands, with QEMU's names and units: the
 * commands that start, stop and steer a migration, the capabilities, and
 * their registration (the parameters' own are in migration_params.c). */
#include "migration_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <godwit/hmp.h>

/* cpr: the cpr channel, or NULL. */
static int start_migrate(struct migration *migration, struct uri uri, const struct uri *cpr,
                         struct gw_error *err)
{
    bool local;
    int rc = migration_local_check(migration, &uri, cpr, &local, err);

    if (rc < 0)
        return rc;
    if (migration->incoming_expected || (migration->is_destination &&
                                         migration_status(migration) != MIGRATION_COMPLETED))
        return gw_error_set(err, -EBUSY, "this VM is waiting for an incoming migration; it "
                            "can migrate out once that has completed");
    if (!migration->is_destination && migration_status(migration) == MIGRATION_COMPLETED)
        return gw_error_set(err, -EINVAL, "this VM has already migrated away; its guest runs "
                            "on the destination now");
    /* A named descriptor is used up only by a migration that starts: a
     * refused migrate leaves it to the next. */
    if ((rc = migration_check_idle(migration, err)) < 0 ||
        (rc = migration_take_named_fd(migration, &uri, err)) < 0)
        return rc;
    /* Nothing runs (checked above): the thread about to launch reads these. */
    migration->local = local;
    if (cpr)
        migration->cpr_uri = *cpr;
    rc = migration_launch(migration, &uri, false, err);
    if (rc < 0 && uri.path[0] && uri.kind == URI_FD)
        close(uri.fd);
    return rc;
}

static int start_migrate_uri(struct migration *migration, const char *text, struct gw_error *err)
{
    struct uri uri;
    int rc = migration_parse_uri(migration, text, &uri, err);

    return rc < 0 ? rc : start_migrate(migration, uri, NULL, err);
}

/* QEMU's migrate channels: one main channel and, for mode cpr-transfer, one
 * cpr channel; never beside uri. */
static int start_migrate_channels(struct migration *migration, json_t *channels,
                                  struct gw_error *err)
{
    struct uri uris[2], parsed;
    bool seen[2] = { false, false };
    enum uri_channel_type type;
    size_t i;
    json_t *channel;
    int rc;

    if (!json_is_array(channels) || json_array_size(channels) == 0 ||
        json_array_size(channels) > 2)
        return gw_error_set(err, -EINVAL, "'channels' must be an array of one main channel and "
                            "at most one cpr channel");
    json_array_foreach(channels, i, channel) {
        if ((rc = uri_parse_channel(channel, &type, &parsed, err)) < 0)
            return rc;
        if (seen[type])
            return gw_error_set(err, -EINVAL, "'channels' has two %s channels; one of each is "
                                "allowed", type == URI_CHANNEL_MAIN ? "main" : "cpr");
        seen[type] = true;
        uris[type] = parsed;
    }
    if (!seen[URI_CHANNEL_MAIN])
        return gw_error_set(err, -EINVAL, "'channels' has no main channel; the main channel "
                            "carries the device state and is always needed");
    if ((rc = migration_check_uri(migration, &uris[URI_CHANNEL_MAIN], err)) < 0)
        return rc;
    return start_migrate(migration, uris[URI_CHANNEL_MAIN],
                         seen[URI_CHANNEL_CPR] ? &uris[URI_CHANNEL_CPR] : NULL, err);
}

static int qmp_migrate(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)ret;
    if (json_is_true(json_object_get(args, "blk")) || json_is_true(json_object_get(args, "inc")))
        return gw_error_set(err, -ENOTSUP, "godwit migrates RAM and devices only: 'blk' and "
                            "'inc' must be false or absent");
    const char *uri = json_string_value(json_object_get(args, "uri"));
    json_t *channels = json_object_get(args, "channels");

    if (json_is_true(json_object_get(args, "resume")))
        return migration_resume(opaque, uri, err);
    if (!uri == !channels)
        return gw_error_set(err, -EINVAL, "migrate takes either 'uri' or 'channels' (QEMU's "
                            "rule), %s", uri ? "not both" : "and got neither");
    return uri ? start_migrate_uri(opaque, uri, err) : start_migrate_channels(opaque, channels, err);
}

static int qmp_migrate_incoming(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;

    (void)ret;
    if (!migration->incoming_expected)
        return gw_error_set(err, -EINVAL, "migrate-incoming needs a VM started with "
                            "--incoming defer");
    return migration_incoming(migration, json_string_value(json_object_get(args, "uri")), err);
}

static int qmp_migrate_cancel(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)args;
    (void)ret;
    /* as QEMU: nothing to cancel is not an error */
    enum migration_status status;

    if (migration_begin_cancel(opaque) || !migration_in_postcopy(status = migration_status(opaque)))
        return 0;
    return gw_error_set(err, -EBUSY, "the migration is in %s: the guest already runs on the "
                        "destination, which still pulls pages from the source, so a cancel "
                        "cannot give it back; wait for the migration to complete (or, "
                        "paused, recover it)", migration_status_name(status));
}

/* QEMU's: ends the precopy pass where it is and switches to postcopy. */
static int qmp_migrate_start_postcopy(json_t *args, json_t **ret, struct gw_error *err,
                                      void *opaque)
{
    struct migration *migration = opaque;
    enum migration_status status;
    bool capability;

    (void)args;
    (void)ret;
    pthread_mutex_lock(&migration->lock);
    status = migration->status;
    capability = migration->cap_postcopy_ram;
    pthread_mutex_unlock(&migration->lock);
    if (!capability)
        return gw_error_set(err, -EINVAL, "Enable postcopy with migrate_set_capability before "
                            "the start of migration");
    if (migration->is_destination)
        return gw_error_set(err, -EINVAL, "this VM is the destination of the migration: run "
                            "migrate-start-postcopy on the source");
    if (status != MIGRATION_SETUP && status != MIGRATION_ACTIVE)
        return gw_error_set(err, -EINVAL, "migrate-start-postcopy needs an outgoing migration "
                            "in setup or active; it is %s", migration_status_name(status));
    atomic_store(&migration->postcopy_requested, true);
    atomic_store(&migration->switchover_requested, true);
    return 0;
}

/* Ours (QEMU has no such command): the precopy loop ends the pass where it
 * is and switches over, whatever the downtime; the completion timeout of
 * `godwit migrate --on-timeout switchover` sends it. The pass sends no
 * more pages and no device precopy data; the stop-copy phase sends every
 * page still dirty and the devices' whole state. */
static int qmp_switchover_now(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    enum migration_status status;

    (void)args;
    (void)ret;
    pthread_mutex_lock(&migration->lock);
    status = migration->status;
    if (!migration->is_destination && (status == MIGRATION_SETUP || status == MIGRATION_ACTIVE))
        atomic_store(&migration->switchover_requested, true);
    pthread_mutex_unlock(&migration->lock);
    if (migration->is_destination && migration_in_progress(status))
        return gw_error_set(err, -EINVAL, "this VM is the destination of the migration: "
                            "ask the source to switch over");
    if (status == MIGRATION_SETUP || status == MIGRATION_ACTIVE ||
        status == MIGRATION_PRE_SWITCHOVER || status == MIGRATION_DEVICE)
        return 0;   /* switching over already: nothing more to do */
    return gw_error_set(err, -EINVAL, "no outgoing migration to switch over (status %s): "
                        "x-migrate-switchover-now acts on a migration in setup or active",
                        migration_status_name(status));
}

static int status_from_name(const char *name, enum migration_status *status)
{
    for (int s = MIGRATION_NONE; s <= MIGRATION_POSTCOPY_RECOVER; s++) {
        if (!strcmp(migration_status_name((enum migration_status)s), name)) {
            *status = (enum migration_status)s;
            return 0;
        }
    }
    return -EINVAL;
}

/* pause-before-switchover: lets the source go on from pre-switchover. As
 * QEMU, `state` must be the status the migration is in. */
static int qmp_migrate_continue(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    const char *state = json_string_value(json_object_get(args, "state"));
    enum migration_status wanted, status;

    (void)ret;
    if (!state || status_from_name(state, &wanted) < 0)
        return gw_error_set(err, -EINVAL, "Parameter 'state' does not accept value '%s'",
                            state ? state : "");
    pthread_mutex_lock(&migration->lock);
    status = migration->status;
    if (status == wanted && status == MIGRATION_PRE_SWITCHOVER) {
        migration->continue_requested = true;
        pthread_cond_broadcast(&migration->changed);
    }
    pthread_mutex_unlock(&migration->lock);
    if (status != wanted)
        return gw_error_set(err, -EINVAL, "Migration not in expected state: %s",
                            migration_status_name(status));
    return 0;
}

/* --- capabilities --- */

struct capability {
    const char *name;
    size_t offset;   /* of its bool in struct migration */
};

#define CAP_FIELD(field) offsetof(struct migration, field)
static const struct capability capabilities[] = {
    { "events", CAP_FIELD(cap_events) },
    { "multifd", CAP_FIELD(cap_multifd) },
    { "x-channel-header", CAP_FIELD(cap_channel_header) },
    { "pause-before-switchover", CAP_FIELD(cap_pause_before_switchover) },
    { "auto-converge", CAP_FIELD(cap_auto_converge) },
    { "dirty-limit", CAP_FIELD(cap_dirty_limit) },
    { "rdma-pin-all", CAP_FIELD(cap_rdma_pin_all) },
    { "postcopy-ram", CAP_FIELD(cap_postcopy_ram) },
    { "postcopy-blocktime", CAP_FIELD(cap_postcopy_blocktime) },
    { "postcopy-preempt", CAP_FIELD(cap_postcopy_preempt) },
};
#define NR_CAPABILITIES (sizeof(capabilities) / sizeof(capabilities[0]))

static bool *capability_field(struct migration *migration, const struct capability *cap)
{
    return (bool *)((char *)migration + cap->offset);
}

static int find_capability(const char *name)
{
    for (size_t i = 0; i < NR_CAPABILITIES; i++)
        if (!strcmp(capabilities[i].name, name))
            return (int)i;
    return -1;
}

static int unsupported_capability(const char *name, struct gw_error *err)
{
    char names[256];
    size_t used = 0;

    names[0] = '\0';
    for (size_t i = 0; i < NR_CAPABILITIES && used < sizeof(names); i++)
        used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
                                 capabilities[i].name);
    return gw_error_set(err, -EINVAL, "Capability '%s' is not supported by godwit; "
                        "supported: %s", name, names);
}

/* What the new set of capabilities asks of the VMM. */
static int check_capabilities(struct migration *migration, const bool *wanted,
                              struct gw_error *err)
{
    bool dirty_limit = wanted[find_capability("dirty-limit")];

    if (wanted[find_capability("auto-converge")] && !migration->host.set_cpu_throttle)
        return gw_error_set(err, -ENOTSUP, "Capability 'auto-converge' needs a VMM that can "
                            "throttle its vCPUs, and this one cannot");
    /* QEMU's two rules for dirty-limit. */
    if (dirty_limit && wanted[find_capability("auto-converge")])
        return gw_error_set(err, -EINVAL, "dirty-limit conflicts with auto-converge: each "
                            "slows the guest its own way; turn one of them off");
    /* As QEMU, each side checks that its host can do postcopy. */
    if (wanted[find_capability("postcopy-ram")] && !migration->cap_postcopy_ram &&
        postcopy_ram_supported(migration->host.blocks, migration->host.nr_blocks, err) < 0) {
        gw_error_prefix(err, "Capability 'postcopy-ram'");
        return -ENOTSUP;
    }
    if (dirty_limit && !migration->host.dirty_limit_start)
        return gw_error_set(err, -ENOTSUP, "dirty-limit requires a VMM with a KVM dirty ring "
                            "(godwit-vm: --accel kvm,dirty-ring-size=N), as QEMU requires "
                            "its accelerator property 'dirty-ring-size'");
    return 0;
}

static int qmp_set_capabilities(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    json_t *list = json_object_get(args, "capabilities"), *entry;
    bool wanted[NR_CAPABILITIES];
    size_t i;

    (void)ret;
    if (!json_is_array(list))
        return gw_error_set(err, -EINVAL, "Invalid parameter type for 'capabilities', "
                            "expected: array");
    if (migration_in_progress(migration_status(migration)))
        return gw_error_set(err, -EBUSY, "There's a migration process in progress");
    pthread_mutex_lock(&migration->lock);
    for (i = 0; i < NR_CAPABILITIES; i++)
        wanted[i] = *capability_field(migration, &capabilities[i]);
    pthread_mutex_unlock(&migration->lock);
    json_array_foreach(list, i, entry) {
        const char *name = json_string_value(json_object_get(entry, "capability"));
        json_t *state = json_object_get(entry, "state");
        if (!name || !json_is_boolean(state))
            return gw_error_set(err, -EINVAL, "each capability is {\"capability\": NAME, "
                                "\"state\": BOOL}");
        int found = find_capability(name);
        if (found < 0)
            return unsupported_capability(name, err);
        wanted[found] = json_is_true(state);
    }
    if (check_capabilities(migration, wanted, err) < 0)
        return err ? err->code : -EINVAL;
    pthread_mutex_lock(&migration->lock);
    for (i = 0; i < NR_CAPABILITIES; i++)
        *capability_field(migration, &capabilities[i]) = wanted[i];
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

static int qmp_query_capabilities(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    json_t *list = json_array();

    (void)args;
    (void)err;
    pthread_mutex_lock(&migration->lock);
    for (size_t i = 0; i < NR_CAPABILITIES; i++)
        json_array_append_new(list, json_pack("{s:s,s:b}", "capability", capabilities[i].name,
                                              "state",
                                              *capability_field(migration, &capabilities[i])));
    pthread_mutex_unlock(&migration->lock);
    *ret = list;
    return 0;
}

static int qmp_query_migrate(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)args;
    (void)err;
    *ret = migration_info(opaque);
    return 0;
}

/* --- HMP --- */

static int hmp_info_capabilities(const char *args, struct hmp_output *out, struct gw_error *err,
                                 void *opaque)
{
    struct migration *migration = opaque;

    (void)args;
    (void)err;
    pthread_mutex_lock(&migration->lock);
    for (size_t i = 0; i < NR_CAPABILITIES; i++)
        hmp_printf(out, "%s: %s\r\n", capabilities[i].name,
                   *capability_field(migration, &capabilities[i]) ? "on" : "off");
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

static int hmp_migrate(const char *args, struct hmp_output *out, struct gw_error *err,
                       void *opaque)
{
    (void)out;
    if (!args[0])
        return gw_error_set(err, -EINVAL, "migrate needs a URI: %s", uri_accepted_forms);
    return start_migrate_uri(opaque, args, err);
}

static int hmp_migrate_incoming(const char *args, struct hmp_output *out, struct gw_error *err,
                                void *opaque)
{
    json_t *request = json_pack("{s:s}", "uri", args), *ret = NULL;
    int rc = qmp_migrate_incoming(request, &ret, err, opaque);

    (void)out;
    json_decref(request);
    return rc;
}

static int hmp_migrate_cancel(const char *args, struct hmp_output *out, struct gw_error *err,
                              void *opaque)
{
    (void)args;
    (void)out;
    return qmp_migrate_cancel(NULL, NULL, err, opaque);
}

static int hmp_migrate_start_postcopy(const char *args, struct hmp_output *out,
                                      struct gw_error *err, void *opaque)
{
    (void)args;
    (void)out;
    return qmp_migrate_start_postcopy(NULL, NULL, err, opaque);
}

static int hmp_migrate_continue(const char *args, struct hmp_output *out, struct gw_error *err,
                                void *opaque)
{
    json_t *request = json_pack("{s:s}", "state", args), *ret = NULL;
    int rc = qmp_migrate_continue(request, &ret, err, opaque);

    (void)out;
    json_decref(request);
    return rc;
}

static const struct qmp_arg migrate_args[] = {
    { "uri", QMP_ARG_STR, true }, { "channels", QMP_ARG_ANY, true },
    { "blk", QMP_ARG_BOOL, true }, { "inc", QMP_ARG_BOOL, true }, { "detach", QMP_ARG_BOOL, true }, { "resume", QMP_ARG_BOOL, true }, { NULL, 0, false },
};
static const struct qmp_arg uri_args[] = { { "uri", QMP_ARG_STR, false }, { NULL, 0, false } };
static const struct qmp_arg parameter_args[] = {
    { "downtime-limit", QMP_ARG_ANY, true }, { "max-bandwidth", QMP_ARG_ANY, true },
    { "avail-switchover-bandwidth", QMP_ARG_ANY, true }, { "multifd-channels", QMP_ARG_ANY, true },
    { "multifd-compression", QMP_ARG_ANY, true }, { "multifd-zstd-level", QMP_ARG_ANY, true },
    { "zero-page-detection", QMP_ARG_ANY, true },
    { "x-multifd-channels-device-state", QMP_ARG_ANY, true },
    { "x-multifd-packet-pages", QMP_ARG_ANY, true },
    { "throttle-trigger-threshold", QMP_ARG_ANY, true },
    { "cpu-throttle-initial", QMP_ARG_ANY, true }, { "cpu-throttle-increment", QMP_ARG_ANY, true },
    { "cpu-throttle-tailslow", QMP_ARG_ANY, true }, { "max-cpu-throttle", QMP_ARG_ANY, true },
    { "vcpu-dirty-limit", QMP_ARG_ANY, true }, { "x-vcpu-dirty-limit-period", QMP_ARG_ANY, true },
    { "tls-creds", QMP_ARG_ANY, true }, { "tls-hostname", QMP_ARG_ANY, true },
    { "tls-authz", QMP_ARG_ANY, true },
    { "x-rdma-chunk-size", QMP_ARG_ANY, true }, { "x-rdma-provider", QMP_ARG_ANY, true },
    { "max-postcopy-bandwidth", QMP_ARG_ANY, true },
    { "mode", QMP_ARG_ANY, true }, { NULL, 0, false },
};
/* The properties of the types godwit makes (include/godwit/objects.h). */
static const struct qmp_arg object_add_args[] = {
    { "qom-type", QMP_ARG_STR, false }, { "id", QMP_ARG_STR, false },
    { "dir", QMP_ARG_STR, true }, { "endpoint", QMP_ARG_STR, true },
    { "verify-peer", QMP_ARG_BOOL, true }, { "username", QMP_ARG_STR, true },
    { "priority", QMP_ARG_STR, true }, { "identity", QMP_ARG_STR, true },
    { NULL, 0, false },
};
static const struct qmp_arg object_del_args[] = {
    { "id", QMP_ARG_STR, false }, { NULL, 0, false },
};
static const struct qmp_arg continue_args[] = {
    { "state", QMP_ARG_STR, false }, { NULL, 0, false },
};
static const struct qmp_arg capability_args[] = {
    { "capabilities", QMP_ARG_ANY, false }, { NULL, 0, false },
};

int migration_register_monitor(struct migration *migration, struct gw_error *err)
{
    const struct qmp_command qmp[] = {
        { "migrate", migrate_args, qmp_migrate, migration },
        { "migrate-incoming", uri_args, qmp_migrate_incoming, migration },
        { "migrate_cancel", NULL, qmp_migrate_cancel, migration },
        { "migrate-continue", continue_args, qmp_migrate_continue, migration },
        { "x-migrate-switchover-now", NULL, qmp_switchover_now, migration },
        { "migrate-start-postcopy", NULL, qmp_migrate_start_postcopy, migration },
        { "migrate-recover", uri_args, migration_qmp_recover, migration },
        { "migrate-pause", NULL, migration_qmp_pause, migration },
        { "migrate-set-parameters", parameter_args, migration_qmp_set_parameters, migration },
        { "query-migrate-parameters", NULL, migration_qmp_query_parameters, migration },
        { "migrate-set-capabilities", capability_args, qmp_set_capabilities, migration },
        { "query-migrate-capabilities", NULL, qmp_query_capabilities, migration },
        { "query-migrate", NULL, qmp_query_migrate, migration },
        { "object-add", object_add_args, migration_qmp_object_add, migration },
        { "object-del", object_del_args, migration_qmp_object_del, migration },
    };
    const struct hmp_command hmp[] = {
        { "info migrate", "", "show the migration's status and figures", migration_hmp_info,
          migration },
        { "info migrate_parameters", "", "show the migration parameters",
          migration_hmp_info_parameters, migration },
        { "info migrate_capabilities", "", "show the migration capabilities",
          hmp_info_capabilities, migration },
        { "migrate", "URI", "migrate the VM to URI", hmp_migrate, migration },
        { "migrate_incoming", "URI", "receive a migration on URI (with --incoming defer)",
          hmp_migrate_incoming, migration },
        { "migrate_cancel", "", "cancel the migration, outgoing or incoming",
          hmp_migrate_cancel, migration },
        { "migrate_start_postcopy", "", "switch the outgoing migration to postcopy "
          "(postcopy-ram capability)", hmp_migrate_start_postcopy, migration },
        { "migrate_continue", "STATE", "go on from STATE (pre-switchover, with the "
          "pause-before-switchover capability)", hmp_migrate_continue, migration },
        { "migrate_set_parameter", "NAME VALUE", "set a migration parameter (bandwidths in "
          "MiB/s unless suffixed)", migration_hmp_set_parameter, migration },
    };
    /* The server keeps pointers: the tables live as long as the migration. */
    migration->qmp_commands = malloc(sizeof(qmp));
    migration->hmp_commands = malloc(sizeof(hmp));
    if (!migration->qmp_commands || !migration->hmp_commands)
        return gw_error_set(err, -ENOMEM, "out of memory registering migration commands");
    memcpy(migration->qmp_commands, qmp, sizeof(qmp));
    memcpy(migration->hmp_commands, hmp, sizeof(hmp));
    for (size_t i = 0; i < sizeof(qmp) / sizeof(qmp[0]); i++) {
        int rc = qmp_server_register(migration->qmp, &migration->qmp_commands[i], err);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(hmp) / sizeof(hmp[0]); i++) {
        int rc = hmp_register(migration->qmp, &migration->hmp_commands[i], err);
        if (rc < 0)
            return rc;
    }
    return 0;
}
