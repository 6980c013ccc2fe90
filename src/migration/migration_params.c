/* The migration parameters: QEMU's names, ranges and units in one table,
 * checked where they are set (the message says the allowed range), and
 * their QMP and HMP commands. */
#include "migration_internal.h"
#include "migration_throttle.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <godwit/hmp.h>
#include <godwit/size.h>

struct parameter {
    const char *name;
    uint64_t min, max;
    size_t offset;
    const char *unit;             /* PARAM_BOOLEAN: a JSON boolean, stored as 0 or 1 */
    const char *const *choices;   /* a string parameter: its values, stored as an index */
};

/* Rules beyond a range, each with its own sentence. */
static const struct {
    const char *name;
    int (*check)(int64_t value, struct gw_error *err);
} parameter_rules[] = {
    { "x-rdma-chunk-size", rdma_chunk_size_check },   /* a power of 2 */
};

#define PARAM_BOOLEAN "boolean"
/* A free string, stored as a char array of max bytes, the NUL included. */
#define PARAM_STRING "string"

static bool is_boolean(const struct parameter *p)
{
    return !strcmp(p->unit, PARAM_BOOLEAN);
}

static bool is_string(const struct parameter *p)
{
    return !strcmp(p->unit, PARAM_STRING);
}

static const char *const compression_choices[] = { "none", "zstd", NULL };
static const char *const zero_detection_choices[] = { "none", "legacy", "multifd", NULL };
/* enum rdma_provider's order */
static const char *const rdma_provider_choices[] = { "auto", "verbs", "soft", NULL };
/* enum migration_mode's order */
static const char *const mode_choices[] = { "normal", "cpr-transfer", NULL };

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
    /* TLS, as QEMU: ids of --object/object-add objects and a host name */
    { "tls-creds", 0, TLS_ID_MAX, PARAM_FIELD(tls_creds), PARAM_STRING, NULL },
    { "tls-hostname", 0, 256, PARAM_FIELD(tls_hostname), PARAM_STRING, NULL },
    { "tls-authz", 0, TLS_ID_MAX, PARAM_FIELD(tls_authz), PARAM_STRING, NULL },
    /* RDMA: QEMU's chunk size, and ours, the provider (docs/rdma.md) */
    { "x-rdma-chunk-size", RDMA_CHUNK_MIN, RDMA_CHUNK_MAX, PARAM_FIELD(rdma_chunk_size), "bytes",
      NULL },
    { "x-rdma-provider", 0, 2, PARAM_FIELD(rdma_provider), "", rdma_provider_choices },
    /* postcopy's background pages (QEMU's); requested pages are never held */
    { "max-postcopy-bandwidth", 0, BANDWIDTH_MAX, PARAM_FIELD(max_postcopy_bandwidth),
      "bytes/second", NULL },
    /* QEMU's mode: cpr-transfer is the local update (migrate with channels) */
    { "mode", 0, 1, PARAM_FIELD(mode), "", mode_choices },
};
#define NR_PARAMETERS (sizeof(parameters) / sizeof(parameters[0]))

static uint64_t *parameter_field(struct migration_params *params, const struct parameter *p)
{
    return (uint64_t *)((char *)params + p->offset);
}

static char *parameter_string(struct migration_params *params, const struct parameter *p)
{
    return (char *)params + p->offset;
}

/* As QEMU's StrOrNull: a string, or null for "" (off). */
static int parse_string(const struct parameter *p, json_t *value,
                        struct migration_params *params, struct gw_error *err)
{
    const char *text = json_is_null(value) ? "" : json_string_value(value);

    if (!text)
        return gw_error_set(err, -EINVAL, "Invalid parameter type for '%s', expected: string",
                            p->name);
    if (strlen(text) >= p->max)
        return gw_error_set(err, -EINVAL, "Parameter '%s' expects a string of at most %" PRIu64
                            " bytes", p->name, p->max - 1);
    strcpy(parameter_string(params, p), text);
    return 0;
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
    for (size_t i = 0; i < sizeof(parameter_rules) / sizeof(parameter_rules[0]); i++) {
        if (strcmp(parameter_rules[i].name, p->name) || !json_is_integer(value))
            continue;
        if (parameter_rules[i].check(json_integer_value(value), err) < 0)
            return -EINVAL;
        *out = (uint64_t)json_integer_value(value);
        return 0;
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

int migration_qmp_set_parameters(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
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
        if (is_string(found) ? parse_string(found, value, &params, err) < 0
                             : parse_parameter(found, value, parameter_field(&params, found),
                                               err) < 0)
            return -EINVAL;
    }
    pthread_mutex_lock(&migration->lock);
    migration->params = params;
    pthread_mutex_unlock(&migration->lock);
    return 0;
}

int migration_qmp_query_parameters(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    json_t *result = json_object();

    (void)args;
    (void)err;
    pthread_mutex_lock(&migration->lock);
    for (size_t i = 0; i < NR_PARAMETERS; i++)
        json_object_set_new(result, parameters[i].name,
                            is_string(&parameters[i])
                                ? json_string(parameter_string(&migration->params,
                                                               &parameters[i]))
                                : parameter_value(&parameters[i],
                                                  *parameter_field(&migration->params,
                                                                   &parameters[i])));
    pthread_mutex_unlock(&migration->lock);
    *ret = result;
    return 0;
}

/* --- HMP --- */

int migration_hmp_info_parameters(const char *args, struct hmp_output *out, struct gw_error *err,
                                  void *opaque)
{
    struct migration *migration = opaque;

    (void)args;
    (void)err;
    pthread_mutex_lock(&migration->lock);
    for (size_t i = 0; i < NR_PARAMETERS; i++) {
        uint64_t value = is_string(&parameters[i]) ? 0
                         : *parameter_field(&migration->params, &parameters[i]);
        if (is_string(&parameters[i]))
            hmp_printf(out, "%s: '%s'\r\n", parameters[i].name,
                       parameter_string(&migration->params, &parameters[i]));
        else if (is_boolean(&parameters[i]))
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
int migration_hmp_set_parameter(const char *args, struct hmp_output *out, struct gw_error *err,
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
    } else if (parameter && is_string(parameter)) {
        /* '""' is the empty string: TLS off */
        request = json_pack("{s:s}", name, strcmp(value_text, "\"\"") ? value_text : "");
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
    rc = migration_qmp_set_parameters(request, &ret, err, opaque);
    json_decref(request);
    return rc;
}
