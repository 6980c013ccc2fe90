/* Migration channels: a connected byte stream (tcp, unix, an inherited fd)
 * or a file, opened from a URI. A socket also carries the return path from
 * the destination; a file has none.
 *
 * A channel is its ops: the engine reads, writes, peeks, shuts down and
 * closes through them and never touches a descriptor, so a transport that
 * wraps another (TLS) or is not a byte stream underneath (RDMA's control
 * path) is one more set of ops. Today's sets: a socket and a file
 * (src/channel/channel_fd.c), TLS over a socket (src/channel/channel_tls.c)
 * and RDMA's (src/rdma/rdma_channel.c). */
#ifndef GODWIT_CHANNEL_H
#define GODWIT_CHANNEL_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/stream.h>
#include <godwit/uri.h>

#include <sys/types.h>
#include <sys/uio.h>

/* tcp: connections end with ETIMEDOUT once the peer has answered nothing
 * (data or keepalive probes) for this long: its host vanished. */
#define CHANNEL_TCP_DEAD_S 30

struct channel;

struct channel_ops {
    /* Fills buf completely; -ENODATA at a clean end of input before any
     * byte, with a sentence naming the channel. */
    int (*read)(struct channel *channel, void *buf, size_t len, struct gw_error *err);
    /* Fills every iovec completely. */
    int (*readv)(struct channel *channel, const struct iovec *iov, int iovcnt,
                 struct gw_error *err);
    /* Writes every byte of every iovec. A socket sends the bytes from the
     * caller's memory as they are when it sends them (the stream's pages
     * go from guest RAM, each with its CRC); a peer that went away is an
     * error, never a signal. */
    int (*writev)(struct channel *channel, const struct iovec *iov, int iovcnt,
                  struct gw_error *err);
    /* Up to len bytes that a read would return next, left unread: > 0
     * bytes, 0 at the end, -EAGAIN when none has come yet, or -errno. */
    ssize_t (*peek)(struct channel *channel, void *buf, size_t len);
    /* Whatever has come, up to len bytes, waiting for at least one: > 0,
     * 0 at the end, or -errno. */
    ssize_t (*read_some)(struct channel *channel, void *buf, size_t len);
    /* Blocked reads and writes return at once (cancel); write only: the
     * peer sees the end while this side still reads. */
    void (*shutdown)(struct channel *channel, bool write_only);
    void (*close)(struct channel *channel);
    /* Optional: whether bytes a read would return are already here, in
     * the transport's buffer, where a poll() on fd cannot see them. */
    bool (*buffered)(struct channel *channel);
};

struct channel {
    const struct channel_ops *ops;
    int fd;                 /* to wait on with poll(); -1 once closed */
    enum uri_kind kind;
    bool has_return_path;   /* false for file: and for an fd: that is not a socket */
    char description[300];  /* the URI, for messages */
    void *priv;             /* a wrapping transport's state (TLS) */
    void *impl;             /* a transport's own state (RDMA's connection), or NULL */
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
    /* A transport that listens on its own (rdma): its state, and how it
     * accepts and closes; NULL for the sockets. */
    void *impl;
    int (*impl_accept)(struct channel_listener *listener, int cancel_fd,
                       struct channel *channel, struct gw_error *err);
    void (*impl_close)(struct channel_listener *listener);
};
int channel_listen(const struct uri *uri, struct channel_listener *listener,
                   struct gw_error *err);
/* Waits for the source; returns -ECANCELED if cancel_fd becomes readable. */
int channel_accept(struct channel_listener *listener, int cancel_fd, struct channel *channel,
                   struct gw_error *err);
void channel_listener_close(struct channel_listener *listener);

/* A channel that is not open (fd -1): shutdown and close do nothing. */
void channel_init_closed(struct channel *channel);
/* Makes blocked reads and writes on the channel return at once (cancel). */
void channel_shutdown(struct channel *channel);
/* Stops writing; reading goes on until the peer closes. */
void channel_shutdown_write(struct channel *channel);
void channel_close(struct channel *channel);
ssize_t channel_peek(struct channel *channel, void *buf, size_t len);
ssize_t channel_read_some(struct channel *channel, void *buf, size_t len);
/* Bytes written to a socket that its peer has not acknowledged yet: still
 * queued here or on the way (SIOCOUTQ). 0 for what is not a socket. */
uint64_t channel_unsent_bytes(const struct channel *channel);
/* The shortest round trip TCP has seen on the channel, in us (its
 * tcpi_min_rtt: queues left out); 0 for what is not TCP. */
uint64_t channel_round_trip_us(const struct channel *channel);

/* Whether a read would return bytes at once without a poll() on fd
 * seeing them (TLS holds decrypted bytes of a record read whole). */
bool channel_buffered(struct channel *channel);

/* TLS over a connected socket channel (channel_tls.c): the handshake as a
 * client (the source: checks the server's certificate against
 * config->hostname) or a server (checks the client's certificate when its
 * creds have verify-peer=on, and its identity when config->check_identity),
 * within 10 s, returning -ECANCELED when cancel_fd becomes readable. On a
 * failed handshake the channel is left as it was, plain; once the handshake
 * is done it carries TLS, even when the identity is then refused (-EACCES),
 * so that the refusal reaches the peer. */
struct tls_config;
int channel_tls_start(struct channel *channel, const struct tls_config *config, bool server,
                      int cancel_fd, struct gw_error *err);
/* The session's cipher and protocol names ("" for a plain channel). */
void channel_tls_describe(struct channel *channel, char *cipher, size_t cipher_len,
                          char *protocol, size_t protocol_len);

/* Stream I/O callbacks over the channel. */
struct stream_io channel_stream_io(struct channel *channel);

#endif
