/* Capabilities and parameters: sent to the source as the command line
 * gives them, read back from it, and copied to the destination as the
 * source has them, so that both sides agree even on a setting an earlier
 * client made. Only the names in docs/qmp.md; a setting a VM leaves out of
 * its answers is neither shown nor copied. */
#include "settings.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The capabilities and parameters the destination compares with its own
 * (CONFIG), in the order a person reads them; multifd-zstd-level is not
 * compared, but is copied too so both sides show the same settings, and
 * tls-creds is the id of each side's own object (both TLS, or neither). */
static const char *const shared_capability_names[] = { "multifd", "x-channel-header",
                                                        "postcopy-ram", NULL };
static const char *const shared_parameter_names[] = {
    "multifd-channels", "multifd-compression", "multifd-zstd-level", "zero-page-detection",
    "x-multifd-channels-device-state", "tls-creds", NULL,
};

bool settings_shared_given(const struct multifd_request *m)
{
    return m->channels || m->compression || m->has_zstd_level || m->zero_page_detection ||
           m->channel_header || m->has_device_channels;
}

static void add_capability(json_t *list, const char *name, bool state)
{
    json_array_append_new(list, json_pack("{s:s, s:b}", "capability", name, "state", state));
}

static void add_integer(json_t *args, const char *name, uint64_t value)
{
    json_object_set_new(args, name, json_integer((json_int_t)value));
}

static json_t *source_capabilities(const struct migrate_request *req)
{
    json_t *list = json_array();

    if (req->events)
        add_capability(list, "events", true);
    if (req->multifd.channels)
        add_capability(list, "multifd", true);
    if (req->multifd.channel_header)
        add_capability(list, "x-channel-header", true);
    if (req->postcopy_after_s >= 0)
        add_capability(list, "postcopy-ram", true);
    return list;
}

static json_t *source_parameters(const struct migrate_request *req)
{
    const struct multifd_request *m = &req->multifd;
    json_t *args = json_object();

    if (req->has_downtime_limit)
        add_integer(args, "downtime-limit", req->downtime_limit);
    if (req->has_max_bandwidth)
        add_integer(args, "max-bandwidth", req->max_bandwidth);
    if (req->has_avail_switchover_bandwidth)
        add_integer(args, "avail-switchover-bandwidth", req->avail_switchover_bandwidth);
    if (m->channels)
        add_integer(args, "multifd-channels", m->channels);
    if (m->compression)
        json_object_set_new(args, "multifd-compression", json_string(m->compression));
    if (m->has_zstd_level)
        add_integer(args, "multifd-zstd-level", m->zstd_level);
    if (m->zero_page_detection)
        json_object_set_new(args, "zero-page-detection", json_string(m->zero_page_detection));
    if (m->has_device_channels)
        add_integer(args, "x-multifd-channels-device-state", m->device_channels);
    if (req->tls_creds)
        json_object_set_new(args, "tls-creds", json_string(req->tls_creds));
    if (req->tls_hostname)
        json_object_set_new(args, "tls-hostname", json_string(req->tls_hostname));
    if (req->cpr_path)
        json_object_set_new(args, "mode", json_string("cpr-transfer"));
    return args;
}

/* Runs command unless settings (stolen) is empty: a capability list is
 * sent as {"capabilities": settings}, parameters as they are. */
static int send_settings(struct qmp_client *vm, const char *who, const char *command,
                         json_t *settings, struct gw_error *err)
{
    bool list = json_is_array(settings);
    int rc;

    if (!(list ? json_array_size(settings) : json_object_size(settings))) {
        json_decref(settings);
        return 0;
    }
    rc = qmp_client_execute(vm, command, list ? json_pack("{s:o}", "capabilities", settings)
                                              : settings, NULL, NULL, err);
    if (rc == QMP_CLIENT_EREMOTE)
        gw_error_prefix(err, "%s refused %s", who, command);
    return rc;
}

int settings_apply_to_source(struct qmp_client *source, const struct migrate_request *req,
                             struct gw_error *err)
{
    int rc = send_settings(source, "the VM", "migrate-set-capabilities",
                           source_capabilities(req), err);

    if (rc == 0)
        rc = send_settings(source, "the VM", "migrate-set-parameters", source_parameters(req),
                           err);
    return rc;
}

static bool is_one_of(const char *name, const char *const *names)
{
    for (; *names; names++)
        if (!strcmp(name, *names))
            return true;
    return false;
}

/* The shared capabilities out of query-migrate-capabilities' list. */
static json_t *shared_capabilities(json_t *answer, struct multifd_settings *multifd)
{
    json_t *list = json_array(), *entry;
    size_t i;

    json_array_foreach(answer, i, entry) {
        const char *name = json_string_value(json_object_get(entry, "capability"));
        json_t *state = json_object_get(entry, "state");
        if (!name || !json_is_boolean(state) || !is_one_of(name, shared_capability_names))
            continue;
        add_capability(list, name, json_is_true(state));
        if (!strcmp(name, "multifd"))
            multifd->multifd = json_is_true(state);
        else if (!strcmp(name, "x-channel-header"))
            multifd->channel_header = json_is_true(state);
    }
    return list;
}

static int64_t get_count(json_t *object, const char *name)
{
    json_t *value = json_object_get(object, name);

    return json_is_integer(value) && json_integer_value(value) >= 0 ? json_integer_value(value)
                                                                    : -1;
}

/* The shared parameters out of query-migrate-parameters' object. */
static json_t *shared_parameters(json_t *answer, struct multifd_settings *multifd)
{
    json_t *args = json_object(), *value;
    const char *compression = json_string_value(json_object_get(answer, "multifd-compression"));

    for (const char *const *name = shared_parameter_names; *name; name++)
        if ((value = json_object_get(answer, *name)))
            json_object_set(args, *name, value);
    multifd->channels = get_count(answer, "multifd-channels");
    multifd->device_channels = get_count(answer, "x-multifd-channels-device-state");
    multifd->zstd_level = get_count(answer, "multifd-zstd-level");
    snprintf(multifd->compression, sizeof(multifd->compression), "%s",
             compression ? compression : "");
    return args;
}

static int query(struct qmp_client *vm, const char *command, json_t **answer,
                 struct gw_error *err)
{
    int rc = qmp_client_execute(vm, command, NULL, answer, NULL, err);

    if (rc == QMP_CLIENT_EREMOTE)
        gw_error_prefix(err, "%s failed", command);
    return rc;
}

int settings_read(struct qmp_client *vm, struct shared_settings *out, struct gw_error *err)
{
    json_t *capabilities, *parameters;
    int rc;

    *out = (struct shared_settings){ 0 };
    rc = query(vm, "query-migrate-capabilities", &capabilities, err);
    if (rc < 0)
        return rc;
    rc = query(vm, "query-migrate-parameters", &parameters, err);
    if (rc < 0) {
        json_decref(capabilities);
        return rc;
    }
    out->capabilities = shared_capabilities(capabilities, &out->multifd);
    out->parameters = shared_parameters(parameters, &out->multifd);
    json_decref(capabilities);
    json_decref(parameters);
    return 0;
}

void settings_free(struct shared_settings *settings)
{
    json_decref(settings->capabilities);
    json_decref(settings->parameters);
    *settings = (struct shared_settings){ 0 };
}

int settings_apply_to_destination(struct qmp_client *destination, const char *who,
                                  const struct shared_settings *settings, struct gw_error *err)
{
    int rc = send_settings(destination, who, "migrate-set-capabilities",
                           json_incref(settings->capabilities), err);

    if (rc == 0)
        rc = send_settings(destination, who, "migrate-set-parameters",
                           json_copy(settings->parameters), err);
    return rc;
}

void settings_describe(const struct shared_settings *settings, char *buf, size_t len)
{
    const char *key;
    json_t *entry, *value;
    size_t i, used = 0;

    buf[0] = '\0';
    json_array_foreach(settings->capabilities, i, entry)
        progress_append(buf, len, &used, "%s%s %s", used ? ", " : "",
               json_string_value(json_object_get(entry, "capability")),
               json_is_true(json_object_get(entry, "state")) ? "on" : "off");
    json_object_foreach(settings->parameters, key, value) {
        if (json_is_integer(value))
            progress_append(buf, len, &used, "%s%s %" JSON_INTEGER_FORMAT, used ? ", " : "", key,
                   json_integer_value(value));
        else
            progress_append(buf, len, &used, "%s%s %s", used ? ", " : "", key,
                   json_string_value(value) ? json_string_value(value) : "(not a string)");
    }
}
