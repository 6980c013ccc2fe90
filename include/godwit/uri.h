/* Migration URIs as QEMU writes them: tcp:HOST:PORT, unix:PATH, fd:N,
 * fd:NAME, file:PATH, rdma:HOST:PORT. Parsing only; opening is the channel's job. */
#ifndef GODWIT_URI_H
#define GODWIT_URI_H

#include <limits.h>
#include <linux/limits.h>   /* PATH_MAX even under -std=c11, where <limits.h> hides it */
#include <stdint.h>

#include <jansson.h>

#include <godwit/error.h>

enum uri_kind {
    URI_TCP,
    URI_UNIX,
    URI_FD,
    URI_FILE,
    URI_RDMA,
};

#define URI_HOST_MAX 256

struct uri {
    enum uri_kind kind;
    char host[URI_HOST_MAX];  /* tcp, rdma: without the [] of an IPv6 literal */
    uint16_t port;            /* tcp, rdma; 0 is allowed for tcp (any port) */
    char path[PATH_MAX];      /* unix, file; fd: the name given to getfd, "" for fd:N */
    int fd;                   /* fd: N, or -1 until the named one is taken */
};

/* The sentence that lists every accepted form; error messages end with it. */
extern const char uri_accepted_forms[];

int uri_parse(const char *text, struct uri *uri, struct gw_error *err);

/* The canonical text of uri ("tcp:[::1]:4444"), for messages and reports. */
void uri_format(const struct uri *uri, char *buf, unsigned len);

/* QEMU's MigrationChannel: {"channel-type": "main"|"cpr", "addr": {...}}
 * (channel_address.c lists the address forms). A cpr channel must be a
 * unix socket: it carries file descriptors. */
enum uri_channel_type { URI_CHANNEL_MAIN, URI_CHANNEL_CPR };

int uri_parse_channel(const json_t *channel, enum uri_channel_type *type, struct uri *uri,
                      struct gw_error *err);
/* The same, from JSON text (godwit-vm's --incoming '{...}'). */
int uri_parse_channel_text(const char *text, enum uri_channel_type *type, struct uri *uri,
                           struct gw_error *err);

#endif
