/* Migration channels: a connected byte stream (tcp, unix, an inherited fd)
 * or a file, opened from a URI. A socket also carries the return path from
 * the destination; a file has none. */
#ifndef GODWIT_CHANNEL_H
#define GODWIT_CHANNEL_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/stream.h>
#include <godwit/uri.h>

struct channel {
    int fd;
    enum uri_kind kind;
    bool has_return_path;   /* false for file: and for an fd: that is not a socket */
    bool is_socket;
    char description[300];  /* the URI, for messages */
};

/* Source side: connects (tcp, unix), adopts (fd) or creates (file). A
 * connect that waits (an address that does not answer) returns -ECANCELED
 * as soon as cancel_fd (may be -1) becomes readable. */
int channel_connect(const struct uri *uri, int cancel_fd, struct channel *channel,
                    struct gw_error *err);

/* Destination side, in two steps so that a listening socket exists (and its
 * errors are reported) before the caller waits: listen, then accept. For fd:
 * and file: listen does the whole job and accept returns the channel. */
struct channel_listener {
    int fd;
    struct uri uri;
    bool unlink_path;       /* unix: remove the socket file when done */
};
int channel_listen(const struct uri *uri, struct channel_listener *listener,
                   struct gw_error *err);
/* Waits for the source; returns -ECANCELED if cancel_fd becomes readable. */
int channel_accept(struct channel_listener *listener, int cancel_fd, struct channel *channel,
                   struct gw_error *err);
void channel_listener_close(struct channel_listener *listener);

/* Makes blocked reads and writes on the channel return at once (cancel). */
void channel_shutdown(struct channel *channel);
void channel_close(struct channel *channel);

/* Stream I/O callbacks over the channel. */
struct stream_io channel_stream_io(struct channel *channel);

#endif
