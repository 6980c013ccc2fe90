/* QEMU's MigrationChannel objects, as `migrate` and `migrate-incoming`
 * take them in "channels" and as -incoming takes them in JSON:
 * {"channel-type": "main"|"cpr", "addr": MigrationAddress}. Each address
 * becomes the URI it names and goes through uri_parse, so both spellings
 * are checked by the same rules. exec: is refused, as every other exec. */
#include <godwit/uri.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define ADDRESS_FORMS "{\"transport\":\"socket\",\"type\":\"unix\",\"path\":P}, " \
    "{\"transport\":\"socket\",\"type\":\"inet\",\"host\":H,\"port\":\"N\"}, " \
    "{\"transport\":\"socket\",\"type\":\"fd\",\"str\":S}, {\"transport\":\"file\"," \
    "\"filename\":F} and {\"transport\":\"rdma\",\"host\":H,\"port\":\"N\"}"

static const char *member(const json_t *object, const char *key)
{
    return json_string_value(json_object_get(object, key));
}

/* QEMU writes ports as strings; a number is taken too. */
static int port_text(const json_t *addr, char *out, size_t len)
{
    const json_t *port = json_object_get(addr, "port");

    if (json_is_string(port))
        return snprintf(out, len, "%s", json_string_value(port)) < (int)len ? 0 : -1;
    if (json_is_integer(port))
        return snprintf(out, len, "%lld", (long long)json_integer_value(port)) < (int)len ? 0
                                                                                           : -1;
    return -1;
}

static int address_text(const json_t *addr, char *out, size_t len, struct gw_error *err)
{
    const char *transport = member(addr, "transport"), *type = member(addr, "type");
    char port[16];
    int n = -1;

    if (!json_is_object(addr) || !transport)
        return gw_error_set(err, -EINVAL, "a channel's 'addr' must be an object with a "
                            "'transport'; the forms are %s", ADDRESS_FORMS);
    if (!strcmp(transport, "socket") && type && !strcmp(type, "unix") && member(addr, "path"))
        n = snprintf(out, len, "unix:%s", member(addr, "path"));
    else if (!strcmp(transport, "socket") && type && !strcmp(type, "fd") && member(addr, "str"))
        n = snprintf(out, len, "fd:%s", member(addr, "str"));
    else if ((!strcmp(transport, "rdma") || (!strcmp(transport, "socket") && type &&
                                             !strcmp(type, "inet"))) &&
             member(addr, "host") && port_text(addr, port, sizeof(port)) == 0)
        n = snprintf(out, len, "%s:%s%s%s:%s", strcmp(transport, "rdma") ? "tcp" : "rdma",
                     strchr(member(addr, "host"), ':') ? "[" : "", member(addr, "host"),
                     strchr(member(addr, "host"), ':') ? "]" : "", port);
    else if (!strcmp(transport, "file") && member(addr, "filename")) {
        const json_t *offset = json_object_get(addr, "offset");
        if (offset && json_integer_value(offset) != 0)
            return gw_error_set(err, -EINVAL, "a file channel's 'offset' must be 0 or absent: "
                                "godwit's stream starts at the file's first byte");
        n = snprintf(out, len, "file:%s", member(addr, "filename"));
    }
    if (n < 0)
        return gw_error_set(err, -EINVAL, "channel address with transport '%s' is not "
                            "understood; the forms are %s", transport, ADDRESS_FORMS);
    if ((size_t)n >= len)
        return gw_error_set(err, -ENAMETOOLONG, "a channel address is longer than %zu bytes",
                            len - 1);
    return 0;
}

int uri_parse_channel(const json_t *channel, enum uri_channel_type *type, struct uri *uri,
                      struct gw_error *err)
{
    const char *name = member(channel, "channel-type");
    char text[PATH_MAX + 16];
    int rc;

    if (!json_is_object(channel) || !name ||
        (strcmp(name, "main") && strcmp(name, "cpr")))
        return gw_error_set(err, -EINVAL, "a channel is an object with 'channel-type' main or "
                            "cpr and an 'addr'");
    *type = strcmp(name, "main") ? URI_CHANNEL_CPR : URI_CHANNEL_MAIN;
    if ((rc = address_text(json_object_get(channel, "addr"), text, sizeof(text), err)) < 0 ||
        (rc = uri_parse(text, uri, err)) < 0) {
        gw_error_prefix(err, "channel '%s'", name);
        return rc;
    }
    if (*type == URI_CHANNEL_CPR && uri->kind != URI_UNIX)
        return gw_error_set(err, -EINVAL, "the cpr channel carries file descriptors, which only "
                            "a unix socket can: give it {\"transport\":\"socket\",\"type\":"
                            "\"unix\",\"path\":P}, not %s", text);
    return 0;
}

int uri_parse_channel_text(const char *text, enum uri_channel_type *type, struct uri *uri,
                           struct gw_error *err)
{
    json_error_t json_err;
    json_t *channel = json_loads(text, JSON_REJECT_DUPLICATES, &json_err);
    int rc;

    if (!channel)
        return gw_error_set(err, -EINVAL, "a channel in JSON cannot be read: %s at column %d",
                            json_err.text, json_err.column);
    rc = uri_parse_channel(channel, type, uri, err);
    json_decref(channel);
    return rc;
}
