/* The user-creatable objects: --object text and object-add JSON turned
 * into one list of properties, checked against the type's (QEMU's names),
 * made, and kept by id. The monitor thread adds and deletes; a migration
 * takes references when it starts, so a delete never pulls credentials
 * from under its channels. */
#include <godwit/objects.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum object_type { OBJECT_X509, OBJECT_PSK, OBJECT_AUTHZ };

static const char *const type_names[] = { "tls-creds-x509", "tls-creds-psk", "authz-simple" };
/* Each type's properties besides id, as QEMU names them. */
static const char *const type_properties[][5] = {
    { "dir", "endpoint", "verify-peer", "priority", NULL },
    { "dir", "endpoint", "username", "priority", NULL },
    { "identity", NULL },
};

#define PROPS_MAX 8
#define VALUE_MAX 4096

struct props {
    unsigned count;
    char keys[PROPS_MAX][32];
    char values[PROPS_MAX][VALUE_MAX];
};

struct object {
    enum object_type type;
    char id[TLS_ID_MAX];
    struct tls_creds *creds;     /* the tls-creds types */
    char identity[256];          /* authz-simple */
};

struct objects {
    pthread_mutex_t lock;
    struct object items[OBJECTS_MAX];
    unsigned count;
};

struct objects *objects_new(void)
{
    struct objects *objects = calloc(1, sizeof(*objects));

    if (objects)
        pthread_mutex_init(&objects->lock, NULL);
    return objects;
}

void objects_free(struct objects *objects)
{
    if (!objects)
        return;
    for (unsigned i = 0; i < objects->count; i++)
        tls_creds_unref(objects->items[i].creds);
    pthread_mutex_destroy(&objects->lock);
    free(objects);
}

static const char *prop(const struct props *props, const char *key)
{
    for (unsigned i = 0; i < props->count; i++)
        if (!strcmp(props->keys[i], key))
            return props->values[i];
    return NULL;
}

static int prop_add(struct props *props, const char *key, size_t key_len, const char *value,
                    size_t value_len, struct gw_error *err)
{
    if (props->count == PROPS_MAX)
        return gw_error_set(err, -E2BIG, "an object takes at most %d properties", PROPS_MAX);
    if (key_len >= sizeof(props->keys[0]) || value_len >= VALUE_MAX)
        return gw_error_set(err, -EINVAL, "property '%.*s' is too long", (int)key_len, key);
    for (unsigned i = 0; i < props->count; i++)
        if (strlen(props->keys[i]) == key_len && !strncmp(props->keys[i], key, key_len))
            return gw_error_set(err, -EINVAL, "property '%.*s' is given twice", (int)key_len,
                                key);
    memcpy(props->keys[props->count], key, key_len);
    props->keys[props->count][key_len] = '\0';
    memcpy(props->values[props->count], value, value_len);
    props->values[props->count][value_len] = '\0';
    props->count++;
    return 0;
}

/* As QEMU's ids: a letter, then letters, digits, '-', '.' and '_'. */
static bool valid_id(const char *id)
{
    if (!isalpha((unsigned char)id[0]))
        return false;
    for (const char *c = id; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("-._", *c))
            return false;
    return strlen(id) < TLS_ID_MAX;
}

static int parse_bool(const char *type, const char *key, const char *text, bool *out,
                      struct gw_error *err)
{
    if (!strcmp(text, "on") || !strcmp(text, "yes") || !strcmp(text, "true"))
        *out = true;
    else if (!strcmp(text, "off") || !strcmp(text, "no") || !strcmp(text, "false"))
        *out = false;
    else
        return gw_error_set(err, -EINVAL, "%s: %s takes on or off, not '%s'", type, key, text);
    return 0;
}

static int check_keys(enum object_type type, const struct props *props, struct gw_error *err)
{
    for (unsigned i = 0; i < props->count; i++) {
        bool known = !strcmp(props->keys[i], "id");
        for (unsigned k = 0; type_properties[type][k] && !known; k++)
            known = !strcmp(props->keys[i], type_properties[type][k]);
        if (!known) {
            char list[128] = "";
            for (unsigned k = 0; type_properties[type][k]; k++)
                snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", k ? ", " : "",
                         type_properties[type][k]);
            return gw_error_set(err, -EINVAL, "%s has no property '%s'; its properties are id, "
                                "%s", type_names[type], props->keys[i], list);
        }
    }
    return 0;
}

static int make_creds(struct object *object, const struct props *props, struct gw_error *err)
{
    const char *type = type_names[object->type], *endpoint = prop(props, "endpoint");
    const char *verify = prop(props, "verify-peer");
    struct tls_creds_options options = {
        .kind = object->type == OBJECT_X509 ? TLS_CREDS_X509 : TLS_CREDS_PSK,
        .id = object->id, .dir = prop(props, "dir"), .endpoint = TLS_ENDPOINT_CLIENT,
        .verify_peer = true, .username = prop(props, "username"),
        .priority = prop(props, "priority"),
    };
    int rc;

    if (endpoint && !strcmp(endpoint, "server"))
        options.endpoint = TLS_ENDPOINT_SERVER;
    else if (endpoint && strcmp(endpoint, "client"))
        return gw_error_set(err, -EINVAL, "%s '%s': endpoint is 'server' or 'client', not '%s'",
                            type, object->id, endpoint);
    if (verify && (rc = parse_bool(type, "verify-peer", verify, &options.verify_peer, err)) < 0)
        return rc;
    return tls_creds_new(&options, &object->creds, err);
}

static int make_object(struct object *object, const struct props *props, struct gw_error *err)
{
    const char *identity = prop(props, "identity");
    int rc = check_keys(object->type, props, err);

    if (rc < 0)
        return rc;
    if (object->type != OBJECT_AUTHZ)
        return make_creds(object, props, err);
    if (!identity || !identity[0])
        return gw_error_set(err, -EINVAL, "authz-simple '%s': identity is missing: give the "
                            "client's certificate DN or PSK username it allows", object->id);
    if (strlen(identity) >= sizeof(object->identity))
        return gw_error_set(err, -EINVAL, "authz-simple '%s': identity has more than %zu bytes",
                            object->id, sizeof(object->identity) - 1);
    strcpy(object->identity, identity);
    return 0;
}

static struct object *find(struct objects *objects, const char *id)
{
    for (unsigned i = 0; i < objects->count; i++)
        if (!strcmp(objects->items[i].id, id))
            return &objects->items[i];
    return NULL;
}

static int add(struct objects *objects, const char *type_name, const struct props *props,
               struct gw_error *err)
{
    const char *id = prop(props, "id");
    struct object object = { 0 };
    unsigned type;
    int rc;

    for (type = 0; type < 3 && strcmp(type_name, type_names[type]); type++)
        ;
    if (type == 3)
        return gw_error_set(err, -EINVAL, "object type '%s' is not one godwit makes; it makes "
                            "tls-creds-x509, tls-creds-psk and authz-simple", type_name);
    if (!id || !valid_id(id))
        return gw_error_set(err, -EINVAL, "%s: id %s%s%s must start with a letter and hold only "
                            "letters, digits, '-', '.' and '_' (at most %d)", type_name,
                            id ? "'" : "is missing; it", id ? id : "", id ? "'" : "",
                            TLS_ID_MAX - 1);
    object.type = (enum object_type)type;
    strcpy(object.id, id);
    pthread_mutex_lock(&objects->lock);
    if (find(objects, id))
        rc = gw_error_set(err, -EEXIST, "an object with id '%s' exists already; object-del it "
                          "first", id);
    else if (objects->count == OBJECTS_MAX)
        rc = gw_error_set(err, -ENOSPC, "there are already %d objects", OBJECTS_MAX);
    else
        rc = make_object(&object, props, err);
    if (rc == 0)
        objects->items[objects->count++] = object;
    pthread_mutex_unlock(&objects->lock);
    return rc;
}

/* One KEY=VALUE of an option: up to the next lone comma; ",," is a comma
 * in the value, as QEMU's option syntax has it (a DN holds commas). */
static const char *option_item(const char *item, char *out, size_t len)
{
    size_t used = 0;

    while (*item && (*item != ',' || item[1] == ',')) {
        if (used + 1 < len)
            out[used++] = *item;
        item += *item == ',' ? 2 : 1;
    }
    out[used] = '\0';
    return *item ? item + 1 : item;
}

int objects_add_option(struct objects *objects, const char *text, struct gw_error *err)
{
    struct props props = { 0 };
    const char *comma = strchr(text, ','), *item;
    char type[32], *buf = malloc(VALUE_MAX + 64);
    int rc = 0;

    if (!buf)
        return gw_error_set(err, -ENOMEM, "out of memory for an object");
    if (!comma || (size_t)(comma - text) >= sizeof(type)) {
        free(buf);
        return gw_error_set(err, -EINVAL, "'%s' is not TYPE,id=ID,KEY=VALUE...", text);
    }
    snprintf(type, sizeof(type), "%.*s", (int)(comma - text), text);
    for (item = comma + 1; *item && rc == 0; ) {
        char *equals;
        item = option_item(item, buf, VALUE_MAX + 64);
        equals = strchr(buf, '=');
        if (!equals)
            rc = gw_error_set(err, -EINVAL, "%s: '%s' is not KEY=VALUE", type, buf);
        else
            rc = prop_add(&props, buf, (size_t)(equals - buf), equals + 1, strlen(equals + 1),
                          err);
    }
    free(buf);
    return rc < 0 ? rc : add(objects, type, &props, err);
}

int objects_add_json(struct objects *objects, json_t *args, struct gw_error *err)
{
    const char *type = json_string_value(json_object_get(args, "qom-type")), *key;
    struct props props = { 0 };
    json_t *value;
    int rc;

    if (!type)
        return gw_error_set(err, -EINVAL, "Parameter 'qom-type' is missing");
    json_object_foreach(args, key, value) {
        char text[64];
        const char *v = text;
        if (!strcmp(key, "qom-type"))
            continue;
        if (json_is_string(value))
            v = json_string_value(value);
        else if (json_is_boolean(value))
            v = json_is_true(value) ? "on" : "off";
        else if (json_is_integer(value))
            snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(value));
        else
            return gw_error_set(err, -EINVAL, "Invalid parameter type for '%s', expected: "
                                "string or boolean", key);
        if ((rc = prop_add(&props, key, strlen(key), v, strlen(v), err)) < 0)
            return rc;
    }
    return add(objects, type, &props, err);
}

int objects_del(struct objects *objects, const char *id, struct gw_error *err)
{
    struct object *object;
    int rc = 0;

    pthread_mutex_lock(&objects->lock);
    object = find(objects, id);
    if (!object) {
        rc = gw_error_set(err, -ENOENT, "object '%s' not found", id);
    } else {
        tls_creds_unref(object->creds);   /* a migration's reference keeps it alive */
        *object = objects->items[--objects->count];
    }
    pthread_mutex_unlock(&objects->lock);
    return rc;
}

int objects_tls_creds(struct objects *objects, const char *id, struct tls_creds **creds,
                      struct gw_error *err)
{
    struct object *object;
    int rc = 0;

    pthread_mutex_lock(&objects->lock);
    object = find(objects, id);
    if (!object)
        rc = gw_error_set(err, -ENOENT, "tls-creds '%s': no such object; make it with --object "
                          "or object-add (tls-creds-x509 or tls-creds-psk)", id);
    else if (!object->creds)
        rc = gw_error_set(err, -EINVAL, "tls-creds '%s' is an %s, not TLS credentials", id,
                          type_names[object->type]);
    else
        *creds = tls_creds_ref(object->creds);
    pthread_mutex_unlock(&objects->lock);
    return rc;
}

int objects_authz_identity(struct objects *objects, const char *id, char *identity, size_t len,
                           struct gw_error *err)
{
    struct object *object;
    int rc = 0;

    pthread_mutex_lock(&objects->lock);
    object = find(objects, id);
    if (!object)
        rc = gw_error_set(err, -ENOENT, "tls-authz '%s': no such object; make it with --object "
                          "authz-simple,id=%s,identity=DN", id, id);
    else if (object->type != OBJECT_AUTHZ)
        rc = gw_error_set(err, -EINVAL, "tls-authz '%s' is a %s, not an authz-simple", id,
                          type_names[object->type]);
    else
        snprintf(identity, len, "%s", object->identity);
    pthread_mutex_unlock(&objects->lock);
    return rc;
}
