/* Fuzzes what a destination reads through TLS: a PSK session is set up over
 * a socketpair (channel_tls_start on both ends), then the first input byte
 * picks what the peer sends:
 *   even: the rest as plaintext, through the session, read back record by
 *         record by the stream reader (the stream decoder behind TLS);
 *   odd:  the rest as raw bytes under the session (TLS framing: record
 *         headers, lengths, tags that do not authenticate).
 * Either way the reader must end with an error sentence or a clean end of
 * input, never a crash or a hang: the sender closes after its bytes. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channel/channel_internal.h"

#include <godwit/objects.h>
#include <godwit/stream.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a socketpair holds without a reader: the sender writes it all first. */
#define INPUT_MAX (32u << 10)

static struct objects *objects;
static struct tls_config client_config, server_config;
/* GnuTLS reads a server's keys.psk at each handshake, as QEMU's: it stays
 * until the process ends. */
static char psk_dir_path[] = "/tmp/godwit-fuzz-tls-XXXXXX", psk_file_path[64];

static void remove_psk_dir(void)
{
    unlink(psk_file_path);
    rmdir(psk_dir_path);
}

static void setup_once(void)
{
    char *dir = psk_dir_path, *path = psk_file_path, option[128];
    FILE *file;

    if (objects || !mkdtemp(dir))
        return;
    snprintf(path, sizeof(psk_file_path), "%s/keys.psk", dir);
    atexit(remove_psk_dir);
    file = fopen(path, "w");
    if (!file)
        return;
    fputs("fuzz:00112233445566778899aabbccddeeff\n", file);
    fclose(file);
    objects = objects_new();
    snprintf(option, sizeof(option), "tls-creds-psk,id=c,dir=%s,username=fuzz", dir);
    objects_add_option(objects, option, NULL);
    snprintf(option, sizeof(option), "tls-creds-psk,id=s,dir=%s,endpoint=server", dir);
    objects_add_option(objects, option, NULL);
    objects_tls_creds(objects, "c", &client_config.creds, NULL);
    objects_tls_creds(objects, "s", &server_config.creds, NULL);
    /* the harness itself, not an input, is broken: say so loudly */
    if (!client_config.creds || !server_config.creds)
        abort();
}

/* A socket channel over fd, as channel_accept makes one. */
static void socket_channel(struct channel *channel, int fd)
{
    struct uri uri;

    uri_parse("fd:0", &uri, NULL);
    uri.fd = fd;
    channel_init_closed(channel);
    snprintf(channel->description, sizeof(channel->description), "fuzz");
    channel_fd_adopt(&uri, channel, NULL);
}

struct peer {
    struct channel channel;
    int rc;
};

static void *server_handshake(void *opaque)
{
    struct peer *peer = opaque;

    struct gw_error err = { 0 };
    peer->rc = channel_tls_start(&peer->channel, &server_config, true, -1, &err);
    if (peer->rc < 0)
        fprintf(stderr, "server: %s\n", err.msg);
    return NULL;
}

static void read_everything(struct channel *channel)
{
    struct stream_reader reader = { .io = channel_stream_io(channel), .page_size = 4096 };
    struct stream_record record;
    struct gw_error err = { 0 };

    if (stream_read_header(&reader, &err) == 0)
        while (stream_read_record(&reader, &record, &err) == 0)
            ;
    stream_reader_free(&reader);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct peer server = { 0 };
    struct channel client;
    pthread_t thread;
    int fds[2];

    setup_once();
    if (!size || size > INPUT_MAX || !client_config.creds || !server_config.creds ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
        return 0;
    socket_channel(&client, fds[0]);
    socket_channel(&server.channel, fds[1]);
    pthread_create(&thread, NULL, server_handshake, &server);
    struct gw_error cerr = { 0 };
    int rc = channel_tls_start(&client, &client_config, false, -1, &cerr);
    if (rc < 0)
        fprintf(stderr, "client: %s\n", cerr.msg);
    pthread_join(thread, NULL);
    if (rc < 0 || server.rc < 0)
        abort();   /* the harness's own handshake must work */
    {
        struct iovec part = { (void *)(data + 1), size - 1 };
        struct gw_error err;
        if (data[0] & 1)
            (void)!write(fds[0], data + 1, size - 1);
        else
            client.ops->writev(&client, &part, 1, &err);
        shutdown(fds[0], SHUT_WR);
        read_everything(&server.channel);
    }
    channel_close(&client);
    channel_close(&server.channel);
    return 0;
}
