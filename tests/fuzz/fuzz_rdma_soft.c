/* Fuzzes what a software-RDMA peer can send: the hello decoder both ways,
 * and the byte stream a connection's reader serves, against a registered
 * region with guard bytes on both sides that must stay untouched. Inputs
 * that name the key 0x4b455921 ("!YEK") in a WRITE get the region's real
 * rkey, and an address below 2 MiB becomes an offset into the region, so
 * the fuzzer reaches the range checks, not only the key check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rdma/rdma_soft.h"
#include "rdma/rdma_soft_wire.h"

#define REGION 8192
#define GUARD 4096
#define FUZZ_KEY 0x4b455921u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walks the stream as the reader will and aims fuzz-keyed WRITEs at mr. */
static void aim_writes(uint8_t *stream, size_t size, const struct rdma_mr *mr)
{
    size_t at = 0;
    struct soft_header h;

    while (at + SOFT_HEADER_SIZE <= size && soft_header_decode(stream + at, &h, NULL) == 0) {
        if (h.op == SOFT_OP_WRITE && h.key == FUZZ_KEY) {
            h.key = mr->rkey;
            if (h.addr < 2 * REGION)
                h.addr += (uintptr_t)mr->addr;
            soft_header_encode(&h, stream + at);    /* a decoded header re-encodes as it was */
        }
        at += SOFT_HEADER_SIZE + h.len;
    }
}

static void serve(const uint8_t *data, size_t size)
{
    uint8_t *arena = malloc(GUARD + REGION + GUARD), *stream = malloc(size + 1);
    struct rdma_completion wc;
    struct rdma_conn *conn;
    struct rdma_mr *mr;
    int fds[2];

    memset(arena, 0xEE, GUARD + REGION + GUARD);
    memcpy(stream, data, size);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0 ||
        rdma_soft_conn_start(fds[0], &conn, NULL) < 0)
        abort();
    if (rdma_mr_register(conn, arena + GUARD, REGION,
                         RDMA_ACCESS_LOCAL_WRITE | RDMA_ACCESS_REMOTE_WRITE, &mr, NULL) < 0)
        abort();
    rdma_conn_post_recv(conn, 1, arena + GUARD, 64, mr->lkey, NULL);
    rdma_conn_post_recv(conn, 2, arena + GUARD + REGION - 64, 64, mr->lkey, NULL);
    aim_writes(stream, size, mr);
    for (size_t sent = 0; sent < size;) {
        ssize_t n = send(fds[1], stream + sent, size - sent, MSG_NOSIGNAL);

        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    shutdown(fds[1], SHUT_WR);
    /* Every input ends in the event: the reader never hangs on it. */
    for (;;) {
        int n = rdma_conn_poll(conn, &wc, 1, 10000, NULL);

        if (n == 0)
            abort();
        if (n < 0 || wc.wr_id == RDMA_WR_ID_EVENT)
            break;
    }
    rdma_conn_close(conn);
    close(fds[1]);
    for (size_t i = 0; i < GUARD; i++)
        if (arena[i] != 0xEE || arena[GUARD + REGION + i] != 0xEE)
            abort();
    free(stream);
    free(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct soft_hello hello;
    uint8_t again[SOFT_HELLO_SIZE];

    if (size >= SOFT_HELLO_SIZE) {
        for (int at_server = 0; at_server < 2; at_server++) {
            if (soft_hello_decode(data, at_server, &hello, NULL) == 0) {
                soft_hello_encode(&hello, again);
                if (memcmp(again, data, SOFT_HELLO_SIZE))
                    abort();    /* a hello that decodes is canonical */
            }
        }
    }
    if (size <= 1 << 20)
        serve(data, size);
    return 0;
}
