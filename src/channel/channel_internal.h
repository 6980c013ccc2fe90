/* What the channel front (channel.c) needs of its implementations: the
 * descriptor-backed ops (channel_fd.c) and the socket transports
 * (channel_socket.c). Private to src/channel. */
#ifndef GODWIT_CHANNEL_INTERNAL_H
#define GODWIT_CHANNEL_INTERNAL_H

#include <godwit/channel.h>

/* Makes channel a descriptor-backed channel over fd (ours from now on):
 * a socket's ops, or a plain file's. */
void channel_fd_attach(struct channel *channel, int fd, bool socket);
/* fd:N: a descriptor inherited from whoever started us (a socket or not). */
int channel_fd_adopt(const struct uri *uri, struct channel *channel, struct gw_error *err);
/* file:PATH: created for writing (source) or opened for reading. */
int channel_file_open(const struct uri *uri, bool for_writing, struct channel *channel,
                      struct gw_error *err);

int channel_socket_connect(const struct uri *uri, int cancel_fd, struct channel *channel,
                           struct gw_error *err);
int channel_socket_listen(struct channel_listener *listener, const char *text,
                          struct gw_error *err);
int channel_socket_accept(struct channel_listener *listener, int cancel_fd,
                          struct channel *channel, struct gw_error *err);

#endif
