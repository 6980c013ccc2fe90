/* Local update (QEMU's cpr-transfer): the cpr channel, a unix socket on
 * which the old VMM process hands guest RAM's file descriptors (SCM_RIGHTS)
 * to a new process on the same host, with what each RAM block is. The new
 * process maps them as its guest RAM: no page is copied, the pages stay
 * where they are. The wire format is docs/stream.md's "The cpr channel".
 *
 * The destination reads the channel before its memory exists, so this is
 * callable without a migration object; the source's migration thread uses
 * it when the mode parameter is cpr-transfer. */
#ifndef GODWIT_CPR_H
#define GODWIT_CPR_H

#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/ram.h>

/* Blocks one message carries at most (godwit-vm has two). */
#define CPR_BLOCKS_MAX 8
#define CPR_HEADER_SIZE 16
#define CPR_BLOCK_SIZE 64
/* header, blocks, CRC32C */
#define CPR_MESSAGE_MAX (CPR_HEADER_SIZE + CPR_BLOCKS_MAX * CPR_BLOCK_SIZE + 4)
/* The destination's answer: magic, code, length, sentence. */
#define CPR_ANSWER_HEADER 16
#define CPR_ANSWER_TEXT_MAX 480
#define CPR_ANSWER_MAX (CPR_ANSWER_HEADER + CPR_ANSWER_TEXT_MAX)
/* How long the source waits for the destination's answer: it maps the
 * memory and builds its machine before it answers. */
#define CPR_ANSWER_TIMEOUT_MS 30000

/* One block as the cpr channel describes it; fd is the received descriptor
 * (the receiver's to close), mapped from fd_offset for size bytes. */
struct cpr_block {
    char name[RAM_BLOCK_NAME_MAX];
    uint64_t size, page_size, gpa, fd_offset;
    int fd;
};

struct cpr_memory {
    struct cpr_block blocks[CPR_BLOCKS_MAX];
    unsigned nr_blocks;
};

/* Whether every block is a shared mapping of a file another process can map
 * (fd >= 0); if not, an error naming the block. */
int cpr_blocks_shareable(const struct ram_block *blocks, unsigned nr_blocks,
                         struct gw_error *err);

/* The message for blocks; returns its length (at most CPR_MESSAGE_MAX). */
size_t cpr_memory_encode(const struct ram_block *blocks, unsigned nr_blocks, uint8_t *out);
/* Checks a received message (magic, version, count, lengths, names, sizes,
 * CRC) and that nfds descriptors came with it, one per block; fills out,
 * whose fds are then fds[i]. Never touches the descriptors. */
int cpr_memory_decode(const uint8_t *msg, size_t len, const int *fds, unsigned nfds,
                      struct cpr_memory *out, struct gw_error *err);
/* Closes every descriptor in memory. */
void cpr_memory_close(struct cpr_memory *memory);

size_t cpr_answer_encode(int code, const char *message, uint8_t *out);
/* 0 when the destination accepted; its refusal (negative) with its sentence. */
int cpr_answer_decode(const uint8_t *buf, size_t len, struct gw_error *err);

/* Source: connects to the destination's cpr socket at path, sends the
 * blocks and their descriptors, and waits for the answer (at most
 * CPR_ANSWER_TIMEOUT_MS; a byte on cancel_fd, if >= 0, ends the wait). */
int cpr_send_memory(const char *path, const struct ram_block *blocks, unsigned nr_blocks,
                    int cancel_fd, struct gw_error *err);

/* Destination: listens on path, accepts one source, reads its message.
 * Returns the connection, which cpr_incoming_answer closes. */
int cpr_incoming_receive(const char *path, struct cpr_memory *memory, struct gw_error *err);
/* Answers the source on conn (0: accepted; else the refusal and its
 * sentence) and closes conn. */
void cpr_incoming_answer(int conn, int code, const char *message);

#endif
