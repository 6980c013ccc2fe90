/* The migration's QMP and HMP commands, with QEMU's names and units.
 * Parameters are checked here, where they are set, and the message says the
 * allowed range. */
#include "migration_internal.h"
#include "migration_throttle.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <godwit/hmp.h>
#include <godwit/size.h>

static int start_migrate(struct migration *migration, const char *uri_text, struct gw_error *err)
{
    struct uri uri;
    int rc = migration_parse_uri(migration, uri_text, &uri, err);

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
    rc = migration_launch(migration, &uri, false, err);
    if (rc < 0 && uri.path[0] && uri.kind == URI_FD)
        close(uri.fd);
    return rc;
}

static int qmp_migrate(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)ret;
    if (json_is_true(json_object_get(args, "resume")) || json_is_true(json_object_get(args, "blk")) ||
        json_is_true(json_object_get(args, "inc")))
        return gw_error_set(err, -ENOTSUP, "godwit migrates RAM and devices only: 'blk', 'inc' "
                            "and 'resume' must be false or absent");
    return start_migrate(opaque, json_string_value(json_object_get(args, "uri")), err);
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
    (void)err;
    migration_begin_cancel(opaque);   /* as QEMU: nothing to cancel is not an error */
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
    for (int s = MIGRATION_NONE; s <= MIGRATION_PRE_SWITCHOVER; s++) {
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

/* --- parameters --- */

struct parameter {
    const char *name;
    uint64_t min, max;
    size_t offset;
    const char *unit;             /* PARAM_BOOLEAN: a JSON boolean, stored as 0 or 1 */
    const char *const *choices;   /* a string parameter: its values, stored as an index */
};

#define PARAM_BOOLEAN "boolean"

static bool is_boolean(const struct parameter *p)
{
    return !strcmp(p->unit, PARAM_BOOLEAN);
}

static const char *const compression_choices[] = { "none", "zstd", NULL };
static const char *const zero_detection_choices[] = { "none", "legacy", "multifd", NULL };

#define PARAM_FIELD(field) offsetof(struct migration_params, field)
static const struct parameter parameters[] = {
    { "downtime-limit", 0, DOWNTIME_LIMIT_MAX_MS, PARAM_FIELD(downtime_limit_ms), "ms", NULL },
    { "max-bandwidth", 0, BANDWIDTH_MAX, PARAM_FIELD(max_bandwidth), "bytes/second", NULL },
    { "avail-switchover-bandwidth", 0, BANDWIDTH_MAX, PARAM_FIELD(avail_switchover_bandwidth),
      "bytes/second", NULL },
    { "multifd-channels", 1, MULTIFD_CHANNELS_MAX, PARAM_FIELD(multifd_channels), "channels",
      NULL },
    { "multifd-compression", 0, 1, PARAM_FIELD(multifd_compression), "", compression_choices },
    { "multifd-zstd-level", 0, ZSTD_LEVEL_MAX, PARAM_FIELD(multifd_zstd_level), "", NULL },
    { "zero-page-detection", 0, 2, PARAM_FIELD(zero_page_detection), "",
      zero_detection_choices },
    { "x-multifd-channels-device-state", 0, MULTIFD_CHANNELS_MAX, PARAM_FIELD(device_channels),
      "channels", NULL },
    { "x-multifd-packet-pages", 1, STREAM_PAGES_PER_RECORD, PARAM_FIELD(packet_pages), "pages",
      NULL },
    /* auto-converge, with QEMU's ranges (migration_throttle.h) */
    { "throttle-trigger-threshold", 1, 100, PARAM_FIELD(throttle_trigger_threshold), "%",
      NULL },
    { "cpu-throttle-initial", 1, CPU_THROTTLE_MAX, PARAM_FIELD(cpu_throttle_initial), "%",
      NULL },
    { "cpu-throttle-increment", 1, CPU_THROTTLE_MAX, PARAM_FIELD(cpu_throttle_increment), "%",
      NULL },
    { "cpu-throttle-tailslow", 0, 1, PARAM_FIELD(cpu_throttle_tailslow), PARAM_BOOLEAN, NULL },
    { "max-cpu-throttle", 1, CPU_THROTTLE_MAX, PARAM_FIELD(max_cpu_throttle), "%", NULL },
    /* dirty-limit: QEMU's at least 1 MB/s, no upper bound but the JSON integer's */
    { "vcpu-dirty-limit", 1, BANDWIDTH_MAX, PARAM_FIELD(vcpu_dirty_limit), "MB/s", NULL },
    { "x-vcpu-dirty-limit-period", 1, VCPU_DIRTY_LIMIT_PERIOD_MAX_MS,
      PARAM_FIELD(vcpu_dirty_limit_period), "ms", NULL },
};
#define NR_PARAMETERS (sizeof(parameters) / sizeof(parameters[0]))

static uint64_t *parameter_field(struct migration_params *params, const struct parameter *p)
{
    return (uint64_t *)((char *)params + p->offset);
}

static const struct parameter *find_parameter(const char *name)
{
    for (size_t i = 0; i < NR_PARAMETERS; i++)
        if (!strcmp(parameters[i].name, name))
            return &parameters[i];
    return NULL;
}

static void list_choices(const char *const *choices, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; choices[i] && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s'%s'", i ? ", " : "", choices[i]);
}

/* Checks a value and converts it to what the parameter stores. */
static int parse_parameter(const struct parameter *p, json_t *value, uint64_t *out,
                           struct gw_error *err)
{
    char allowed[128];

    if (is_boolean(p)) {
        if (!json_is_boolean(value))
            return gw_error_set(err, -EINVAL, "Invalid parameter type for '%s', expected: "
                                "boolean", p->name);
        *out = json_is_true(value);
        return 0;
    }
    if (p->choices) {
        const char *text = json_string_value(value);
        for (uint64_t i = 0; text && p->choices[i]; i++) {
            if (!strcmp(text, p->choices[i])) {
                *out = i;
                return 0;
            }
        }
        list_choices(p->choices, allowed, sizeof(allowed));
        return gw_error_set(err, -EINVAL, "Parameter '%s' expects one of %s", p->name, allowed);
    }
    if (!json_is_integer(value) || json_integer_value(value) < (json_int_t)p->min ||
        (uint64_t)json_integer_value(value) > p->max)
        return gw_error_set(err, -EINVAL, "Parameter '%s' expects an integer from %" PRIu64
                            " to %" PRIu64 "%s%s%s", p->name, p->min, p->max,
                            p->unit[0] ? " (" : "", p->unit, p->unit[0] ? ")" : "");
    *out = (uint64_t)json_integer_value(value);
    return 0;
}

static json_t *parameter_value(const struct parameter *p, uint64_t value)
{
    if (is_boolean(p))
        return json_boolean(value);
    return p->choices ? json_string(p->choices[value]) : json_integer((json_int_t)value);
}

static int qmp_set_parameters(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    struct migration_params params;
    const char *key;
    json_t *value;

    (void)ret;
    pthread_mutex_lock(&migration->lock);
    params = migration->params;
    pthread_mutex_unlock(&migration->lock);
    /* All or nothing: check every value before applying any. */
    json_object_foreach(args, key, value) {
        const struct parameter *found = find_parameter(key);
        if (!found)
            return gw_error_set(err, -EINVAL, "Parameter '%s' is unexpected; see "
                                "query-migrate-parameters for godwit's", key);
        if (parse_parameter(found, value, parameter_field(&params, found), err) < 0)
            return -EINVAL;
    }
    pthread_mutex_lock(&migration->lock);
    migration->params = params;
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

static int qmp_query_parameters(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    json_t *result = json_object();

    (void)args;
    (void)err;
    pthread_mutex_lock(&migration->lock);
    for (size_t i = 0; i < NR_PARAMETERS; i++)
        json_object_set_new(result, parameters[i].name,
                            parameter_value(&parameters[i],
                                            *parameter_field(&migration->params, &parameters[i])));
    pthread_mutex_unlock(&migration->lock);
    *ret = result;
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

static int hmp_info_parameters(const char *args, struct hmp_output *out, struct gw_error *err,
                               void *opaque)
{
    struct migration *migration = opaque;

    (void)args;
    (void)err;
    pthread_mutex_lock(&migration->lock);
    for (size_t i = 0; i < NR_PARAMETERS; i++) {
        uint64_t value = *parameter_field(&migration->params, &parameters[i]);
        if (is_boolean(&parameters[i]))
            hmp_printf(out, "%s: %s\r\n", parameters[i].name, value ? "on" : "off");
        else if (parameters[i].choices)
            hmp_printf(out, "%s: %s\r\n", parameters[i].name, parameters[i].choices[value]);
        else
            hmp_printf(out, "%s: %" PRIu64 " %s\r\n", parameters[i].name, value,
                       parameters[i].unit);
    }
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

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
    return start_migrate(opaque, args, err);
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

static int hmp_migrate_continue(const char *args, struct hmp_output *out, struct gw_error *err,
                                void *opaque)
{
    json_t *request = json_pack("{s:s}", "state", args), *ret = NULL;
    int rc = qmp_migrate_continue(request, &ret, err, opaque);

    (void)out;
    json_decref(request);
    return rc;
}

/* As QEMU's HMP: on, off, yes, no, true, false; -1 for anything else. */
static int hmp_parse_bool(const char *text)
{
    static const char *const words[][2] = { { "on", "off" }, { "yes", "no" },
                                            { "true", "false" } };

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        for (int off = 0; off < 2; off++)
            if (!strcmp(text, words[i][off]))
                return !off;
    return -1;
}

/* HMP takes human sizes for bandwidths ("100M" is 100 MiB/s), plain
 * milliseconds for the downtime limit and on/off for booleans. */
static int hmp_set_parameter(const char *args, struct hmp_output *out, struct gw_error *err,
                             void *opaque)
{
    char name[64];
    const char *value_text;
    uint64_t value;
    int rc;

    (void)out;
    if (sscanf(args, "%63s", name) != 1 || !(value_text = strchr(args, ' ')))
        return gw_error_set(err, -EINVAL, "usage: migrate_set_parameter NAME VALUE");
    while (*value_text == ' ')
        value_text++;
    const struct parameter *parameter = find_parameter(name);
    json_t *request, *ret = NULL;
    if (parameter && is_boolean(parameter)) {
        int on = hmp_parse_bool(value_text);
        if (on < 0)
            return gw_error_set(err, -EINVAL, "Parameter '%s' expects 'on' or 'off'", name);
        request = json_pack("{s:b}", name, on);
    } else if (parameter && parameter->choices) {
        request = json_pack("{s:s}", name, value_text);
    } else {
        bool bandwidth = parameter && !strcmp(parameter->unit, "bytes/second");
        rc = size_parse(value_text, bandwidth ? SIZE_MiB : 1, &value, err);
        if (rc < 0)
            return rc;
        if (value > (uint64_t)INT64_MAX)   /* more than QMP's JSON carries */
            return gw_error_set(err, -EINVAL, "Parameter '%s' expects at most %" PRIu64 "%s",
                                name, parameter ? parameter->max : (uint64_t)INT64_MAX,
                                bandwidth ? " bytes/second" : "");
        request = json_pack("{s:I}", name, (json_int_t)value);
    }
    rc = qmp_set_parameters(request, &ret, err, opaque);
    json_decref(request);
    return rc;
}

static const struct qmp_arg migrate_args[] = {
    { "uri", QMP_ARG_STR, false }, { "blk", QMP_ARG_BOOL, true }, { "inc", QMP_ARG_BOOL, true },
    { "detach", QMP_ARG_BOOL, true }, { "resume", QMP_ARG_BOOL, true }, { NULL, 0, false },
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
    { NULL, 0, false },
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
        { "migrate-set-parameters", parameter_args, qmp_set_parameters, migration },
        { "query-migrate-parameters", NULL, qmp_query_parameters, migration },
        { "migrate-set-capabilities", capability_args, qmp_set_capabilities, migration },
        { "query-migrate-capabilities", NULL, qmp_query_capabilities, migration },
        { "query-migrate", NULL, qmp_query_migrate, migration },
    };
    const struct hmp_command hmp[] = {
        { "info migrate", "", "show the migration's status and figures", migration_hmp_info,
          migration },
        { "info migrate_parameters", "", "show the migration parameters", hmp_info_parameters,
          migration },
        { "info migrate_capabilities", "", "show the migration capabilities",
          hmp_info_capabilities, migration },
        { "migrate", "URI", "migrate the VM to URI", hmp_migrate, migration },
        { "migrate_incoming", "URI", "receive a migration on URI (with --incoming defer)",
          hmp_migrate_incoming, migration },
        { "migrate_cancel", "", "cancel the migration, outgoing or incoming",
          hmp_migrate_cancel, migration },
        { "migrate_continue", "STATE", "go on from STATE (pre-switchover, with the "
          "pause-before-switchover capability)", hmp_migrate_continue, migration },
        { "migrate_set_parameter", "NAME VALUE", "set a migration parameter (bandwidths in "
          "MiB/s unless suffixed)", hmp_set_parameter, migration },
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
