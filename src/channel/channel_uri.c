/* URI parsing for the migration channels. Refuses anything it would have to
 * guess about, and says which forms it accepts. */
#include <godwit/uri.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char uri_accepted_forms[] =
    "accepted forms are tcp:HOST:PORT (IPv6 as tcp:[ADDR]:PORT), unix:PATH, "
    "fd:N (or fd:NAME after getfd), file:PATH and rdma:HOST:PORT";

static const char *const kind_names[] = {
    [URI_TCP] = "tcp", [URI_UNIX] = "unix", [URI_FD] = "fd",
    [URI_FILE] = "file", [URI_RDMA] = "rdma",
};

static int parse_decimal(const char *text, long max, long *value)
{
    char *end;

    if (!isdigit((unsigned char)text[0]) || strlen(text) > 10)
        return -1;
    *value = strtol(text, &end, 10);
    return (*end || *value > max) ? -1 : 0;
}

static int parse_host_port(const char *uri_text, const char *rest, struct uri *uri,
                           struct gw_error *err)
{
    const char *host = rest, *host_end, *port_text;
    long port;

    if (*rest == '[') {
        host = rest + 1;
        host_end = strchr(host, ']');
        if (!host_end || host_end[1] != ':')
            return gw_error_set(err, -EINVAL,
                                "invalid URI '%s': an IPv6 address must be written "
                                "[ADDR]:PORT; %s", uri_text, uri_accepted_forms);
        port_text = host_end + 2;
    } else {
        host_end = strrchr(rest, ':');
        if (!host_end)
            return gw_error_set(err, -EINVAL, "invalid URI '%s': no port after the host; %s",
                                uri_text, uri_accepted_forms);
        if (memchr(rest, ':', (size_t)(host_end - rest)))
            return gw_error_set(err, -EINVAL,
                                "invalid URI '%s': an IPv6 address must be in brackets, "
                                "like tcp:[::1]:4444", uri_text);
        port_text = host_end + 1;
    }
    if (host_end == host)
        return gw_error_set(err, -EINVAL, "invalid URI '%s': the host is empty; %s",
                            uri_text, uri_accepted_forms);
    if ((size_t)(host_end - host) >= sizeof(uri->host))
        return gw_error_set(err, -EINVAL, "invalid URI '%s': the host is longer than %d bytes",
                            uri_text, URI_HOST_MAX - 1);
    if (parse_decimal(port_text, 65535, &port) < 0)
        return gw_error_set(err, -EINVAL,
                            "invalid URI '%s': the port must be a number from 0 to 65535",
                            uri_text);
    memcpy(uri->host, host, (size_t)(host_end - host));
    uri->host[host_end - host] = '\0';
    uri->port = (uint16_t)port;
    return 0;
}

static int parse_path(const char *uri_text, const char *rest, struct uri *uri,
                      struct gw_error *err)
{
    if (!*rest)
        return gw_error_set(err, -EINVAL, "invalid URI '%s': the path is empty; %s",
                            uri_text, uri_accepted_forms);
    if (strlen(rest) >= sizeof(uri->path))
        return gw_error_set(err, -EINVAL, "invalid URI '%s': the path is longer than %d bytes",
                            uri_text, PATH_MAX - 1);
    strcpy(uri->path, rest);
    return 0;
}

int uri_parse(const char *text, struct uri *uri, struct gw_error *err)
{
    const char *colon = text ? strchr(text, ':') : NULL;
    long fd;

    memset(uri, 0, sizeof(*uri));
    uri->fd = -1;
    if (!colon)
        return gw_error_set(err, -EINVAL, "invalid URI '%s': %s", text ? text : "",
                            uri_accepted_forms);
    for (unsigned kind = 0; kind <= URI_RDMA; kind++) {
        size_t len = strlen(kind_names[kind]);
        if ((size_t)(colon - text) != len || strncmp(text, kind_names[kind], len))
            continue;
        uri->kind = (enum uri_kind)kind;
        switch (uri->kind) {
        case URI_TCP:
        case URI_RDMA:
            return parse_host_port(text, colon + 1, uri, err);
        case URI_UNIX:
        case URI_FILE:
            return parse_path(text, colon + 1, uri, err);
        case URI_FD:
            /* QEMU's two forms: a number, or a name given to getfd (which
             * may not start with a digit, so the two never mix). */
            if (colon[1] && !isdigit((unsigned char)colon[1]))
                return parse_path(text, colon + 1, uri, err);
            if (parse_decimal(colon + 1, 65535, &fd) < 0)
                return gw_error_set(err, -EINVAL,
                                    "invalid URI '%s': fd: takes a file descriptor "
                                    "number, like fd:3, or the name given to getfd, "
                                    "like fd:migrate", text);
            uri->fd = (int)fd;
            return 0;
        }
    }
    return gw_error_set(err, -EINVAL, "invalid URI '%s': unknown transport '%.*s'; %s",
                        text, (int)(colon - text), text, uri_accepted_forms);
}

void uri_format(const struct uri *uri, char *buf, unsigned len)
{
    switch (uri->kind) {
    case URI_TCP:
    case URI_RDMA:
        snprintf(buf, len, strchr(uri->host, ':') ? "%s:[%s]:%u" : "%s:%s:%u",
                 kind_names[uri->kind], uri->host, uri->port);
        break;
    case URI_UNIX:
    case URI_FILE:
        snprintf(buf, len, "%s:%s", kind_names[uri->kind], uri->path);
        break;
    case URI_FD:
        if (uri->path[0])
            snprintf(buf, len, "fd:%s", uri->path);
        else
            snprintf(buf, len, "fd:%d", uri->fd);
        break;
    }
}
