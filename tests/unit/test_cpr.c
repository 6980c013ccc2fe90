/* The local update's pieces that take outside input: QEMU's channel objects,
 * the cpr channel's memory message and answer, and the socket that carries
 * descriptors (a memfd written through one side's mapping is read through
 * the other's). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <godwit/cpr.h>
#include <godwit/uri.h>

static int parse(const char *text, enum uri_channel_type *type, struct uri *uri,
                 struct gw_error *err)
{
    return uri_parse_channel_text(text, type, uri, err);
}

static void test_channels_in_qemu_json(void **state)
{
    enum uri_channel_type type;
    struct gw_error err;
    struct uri uri;
    char text[128];

    (void)state;
    assert_int_equal(parse("{\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\","
                           "\"type\":\"unix\",\"path\":\"/tmp/c\"}}", &type, &uri, &err), 0);
    assert_int_equal(type, URI_CHANNEL_CPR);
    assert_string_equal(uri.path, "/tmp/c");
    assert_int_equal(parse("{\"channel-type\":\"main\",\"addr\":{\"transport\":\"socket\","
                           "\"type\":\"inet\",\"host\":\"::1\",\"port\":\"4444\"}}",
                           &type, &uri, &err), 0);
    assert_int_equal(type, URI_CHANNEL_MAIN);
    uri_format(&uri, text, sizeof(text));
    assert_string_equal(text, "tcp:[::1]:4444");
    assert_int_equal(parse("{\"channel-type\":\"main\",\"addr\":{\"transport\":\"rdma\","
                           "\"host\":\"10.0.0.1\",\"port\":4445}}", &type, &uri, &err), 0);
    assert_int_equal(uri.kind, URI_RDMA);
    assert_int_equal(parse("{\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\","
                           "\"filename\":\"/tmp/f\"}}", &type, &uri, &err), 0);
    assert_int_equal(uri.kind, URI_FILE);
}

static void test_bad_channels_say_why(void **state)
{
    enum uri_channel_type type;
    struct gw_error err;
    struct uri uri;

    (void)state;
    assert_int_equal(parse("{\"channel-type\":\"cpr\",\"addr\":{\"transport\":\"socket\","
                           "\"type\":\"inet\",\"host\":\"h\",\"port\":\"1\"}}", &type, &uri,
                           &err), -EINVAL);
    assert_non_null(strstr(err.msg, "unix socket"));
    assert_int_equal(parse("{\"channel-type\":\"main\",\"addr\":{\"transport\":\"exec\","
                           "\"args\":[\"sh\"]}}", &type, &uri, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "'exec' is not understood"));
    assert_int_equal(parse("{\"channel-type\":\"main\",\"addr\":{\"transport\":\"file\","
                           "\"filename\":\"/f\",\"offset\":4096}}", &type, &uri, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "offset"));
    assert_int_equal(parse("{\"channel-type\":\"other\"}", &type, &uri, &err), -EINVAL);
    assert_int_equal(parse("{\"channel-type\":", &type, &uri, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "JSON"));
}

static const struct ram_block blocks[2] = {
    { .name = "ram-below-4g", .size = 3ULL << 30, .page_size = 4096, .gpa = 0, .fd = 7 },
    { .name = "ram-above-4g", .size = 1ULL << 30, .page_size = 4096, .gpa = 4ULL << 30,
      .fd = 7, .fd_offset = 3ULL << 30 },
};

static void test_memory_message_round_trip_and_checks(void **state)
{
    uint8_t msg[CPR_MESSAGE_MAX];
    int fds[2] = { 11, 12 };
    struct cpr_memory memory;
    struct gw_error err;
    size_t len = cpr_memory_encode(blocks, 2, msg);

    (void)state;
    assert_int_equal(len, CPR_HEADER_SIZE + 2 * CPR_BLOCK_SIZE + 4);
    assert_int_equal(cpr_memory_decode(msg, len, fds, 2, &memory, &err), 0);
    assert_int_equal(memory.nr_blocks, 2);
    assert_string_equal(memory.blocks[1].name, "ram-above-4g");
    assert_int_equal(memory.blocks[1].fd_offset, 3ULL << 30);
    assert_int_equal(memory.blocks[1].gpa, 4ULL << 30);
    assert_int_equal(memory.blocks[1].fd, 12);
    assert_int_equal(cpr_memory_decode(msg, len, fds, 1, &memory, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "1 descriptors came with 2 blocks"));
    assert_int_equal(cpr_memory_decode(msg, len - 1, fds, 2, &memory, &err), -EPROTO);
    msg[40] ^= 1;   /* a byte of the first block's size */
    assert_int_equal(cpr_memory_decode(msg, len, fds, 2, &memory, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "CRC32C"));
}

static void test_answers(void **state)
{
    uint8_t answer[CPR_ANSWER_MAX];
    struct gw_error err;
    size_t len = cpr_answer_encode(0, NULL, answer);

    (void)state;
    assert_int_equal(cpr_answer_decode(answer, len, &err), 0);
    len = cpr_answer_encode(-EINVAL, "sizes differ", answer);
    assert_int_equal(cpr_answer_decode(answer, len, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "refused the local update: sizes differ"));
    assert_int_equal(cpr_answer_decode(answer, len - 1, &err), -EPROTO);
    int32_t positive = 5;
    memcpy(answer + 8, &positive, sizeof(positive));
    assert_int_equal(cpr_answer_decode(answer, len, &err), -EPROTO);
}

struct receiver {
    char path[64];
    int answer_code;
    struct cpr_memory memory;
    int rc;
};

static void *receive_then_answer(void *opaque)
{
    struct receiver *r = opaque;
    struct gw_error err;
    int conn = cpr_incoming_receive(r->path, &r->memory, &err);

    r->rc = conn < 0 ? conn : 0;
    if (conn >= 0)
        cpr_incoming_answer(conn, r->answer_code, r->answer_code ? "no, thanks" : NULL);
    return NULL;
}

/* Sends a memfd-backed block to a receiver that answers code; returns what
 * the sender got and leaves the receiver's memory in r. */
static int hand_over(struct receiver *r, int code, int memfd, struct gw_error *err)
{
    struct ram_block block = { .name = "ram-below-4g", .size = 1 << 20, .page_size = 4096,
                               .fd = memfd };
    pthread_t thread;
    int rc;

    snprintf(r->path, sizeof(r->path), "/tmp/godwit-test-cpr-%d.sock", getpid());
    unlink(r->path);
    r->answer_code = code;
    assert_int_equal(pthread_create(&thread, NULL, receive_then_answer, r), 0);
    for (int i = 0; i < 500 && access(r->path, F_OK) != 0; i++)
        usleep(2000);
    rc = cpr_send_memory(r->path, &block, 1, -1, err);
    pthread_join(thread, NULL);
    return rc;
}

static void test_descriptors_cross_and_map_the_same_pages(void **state)
{
    int memfd = memfd_create("test-cpr", MFD_CLOEXEC);
    struct receiver r = { 0 };
    struct gw_error err;
    uint8_t *mine, *theirs;

    (void)state;
    assert_true(memfd >= 0);
    assert_int_equal(ftruncate(memfd, 1 << 20), 0);
    assert_int_equal(hand_over(&r, 0, memfd, &err), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.memory.nr_blocks, 1);
    assert_true(r.memory.blocks[0].fd >= 0 && r.memory.blocks[0].fd != memfd);
    mine = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    theirs = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, r.memory.blocks[0].fd, 0);
    assert_true(mine != MAP_FAILED && theirs != MAP_FAILED);
    memcpy(mine + 4096 * 7 + 3, "same pages", 10);
    assert_memory_equal(theirs + 4096 * 7 + 3, "same pages", 10);
    munmap(mine, 1 << 20);
    munmap(theirs, 1 << 20);
    cpr_memory_close(&r.memory);
    assert_int_equal(access(r.path, F_OK), -1);   /* one source, once: the socket is gone */
    close(memfd);
}

static void test_a_refusal_reaches_the_sender(void **state)
{
    int memfd = memfd_create("test-cpr", MFD_CLOEXEC);
    struct receiver r = { 0 };
    struct gw_error err;

    (void)state;
    assert_int_equal(ftruncate(memfd, 1 << 20), 0);
    assert_int_equal(hand_over(&r, -EINVAL, memfd, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "no, thanks"));
    cpr_memory_close(&r.memory);
    close(memfd);
}

static void test_private_memory_is_refused_naming_memfd(void **state)
{
    struct ram_block block = blocks[0];
    struct gw_error err;

    (void)state;
    block.fd = -1;
    assert_int_equal(cpr_blocks_shareable(&block, 1, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "--memfd"));
    assert_int_equal(cpr_send_memory("/nonexistent/cpr.sock", &block, 1, -1, &err), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channels_in_qemu_json),
        cmocka_unit_test(test_bad_channels_say_why),
        cmocka_unit_test(test_memory_message_round_trip_and_checks),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_descriptors_cross_and_map_the_same_pages),
        cmocka_unit_test(test_a_refusal_reaches_the_sender),
        cmocka_unit_test(test_private_memory_is_refused_naming_memfd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
