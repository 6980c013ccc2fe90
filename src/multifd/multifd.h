/* The stream's channels of one migration: the source's sender pool (the
 * page sink of godwit/pages.h over the main channel or N multifd
 * channels), the destination's receivers with the pass barrier of
 * invariant 3, and the connections themselves (channel headers, accepting
 * and sorting what arrives). */
#ifndef GODWIT_MULTIFD_H
#define GODWIT_MULTIFD_H

#include <stdatomic.h>

#include <godwit/channel.h>
#include <godwit/pages.h>

#include "migration/migration_internal.h"
#include "ram/ram_internal.h"
#include "vmstate/vmstate_internal.h"

/* --- source: the sender pool (multifd_send.c) --- */

struct multifd_sender;
/* Without multifd, one sending thread writes to main_writer; with it, one
 * per multifd channel (migration->multifd_channels, already connected and
 * past their headers). */
struct multifd_sender *multifd_sender_new(struct migration *migration,
                                          struct stream_writer *main_writer,
                                          uint32_t page_size, struct gw_error *err);
/* The sender as a page sink: with multifd, each pass ends with SYNC(pass)
 * on every RAM channel. */
struct page_sink multifd_sender_sink(struct multifd_sender *sender);
/* Queues one DEVICE record (header, then len bytes at data) on a multifd
 * channel: a device-state one if there are any, else a RAM one. data must
 * stay valid until *sent turns true (sent may be NULL: until
 * multifd_sender_finish). */
int multifd_sender_queue_device(struct multifd_sender *sender, const uint8_t *header,
                                const uint8_t *data, size_t len, atomic_bool *sent,
                                struct gw_error *err);
/* Waits until *sent is true, or a send failed. */
int multifd_sender_wait_sent(struct multifd_sender *sender, atomic_bool *sent,
                             struct gw_error *err);
/* Multifd: CHANNEL_END on every channel; returns once all is written. */
int multifd_sender_finish(struct multifd_sender *sender, struct gw_error *err);
void multifd_sender_free(struct multifd_sender *sender);

/* --- destination: the receivers (multifd_recv.c) --- */

struct multifd_recv;
/* One thread per channel of migration->multifd_channels; pages go to ram,
 * device state to devices. */
int multifd_recv_start(struct migration *migration, struct ram_loader *ram,
                       struct device_loader *devices, uint32_t page_size,
                       struct multifd_recv **recv_out, struct gw_error *err);
/* At END: waits for every channel's CHANNEL_END, then adds their counts. */
int multifd_recv_finish(struct multifd_recv *recv, struct ram_load_counts *counts,
                        struct gw_error *err);
/* True, with the error in err, if a receiver failed: the cause to report
 * rather than the main channel's read error it led to. */
bool multifd_recv_error(struct multifd_recv *recv, struct gw_error *err);
/* Shuts the channels and joins every receiver (the first error stays). */
void multifd_recv_stop(struct multifd_recv *recv);
/* Bytes read on every channel; only after multifd_recv_stop. */
uint64_t multifd_recv_bytes(const struct multifd_recv *recv);
void multifd_recv_free(struct multifd_recv *recv);

/* --- connections (multifd_channels.c) --- */

/* Source: the multifd channels connected, headers written, published in
 * migration->multifd_channels. */
int multifd_connect(struct migration *migration, uint32_t page_size, struct gw_error *err);
/* Shuts down / closes every multifd channel of the migration (shutdown:
 * under the migration lock). */
void multifd_shutdown_channels(struct migration *migration);
void multifd_close_channels(struct migration *migration);
/* Destination: the main channel (into migration->channel), then, once its
 * CONFIG is read into migration->config, the multifd channels. */
struct pending;
int multifd_accept_main(struct migration *migration, struct channel_listener *listener,
                        struct pending **pending, struct gw_error *err);
int multifd_accept_channels(struct migration *migration, struct channel_listener *listener,
                            struct pending *pending, struct gw_error *err);
void multifd_free_pending(struct pending *pending);
/* Destination, postcopy-preempt: the preempt channel (channel header type
 * 4, this migration's id), within 30 s; others are refused. */
int multifd_accept_postcopy(struct migration *migration, struct channel_listener *listener,
                            struct pending *pending, struct channel *channel,
                            struct gw_error *err);

#endif
