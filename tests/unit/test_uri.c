/* Migration URIs: QEMU's forms parse, everything else is refused with the
 * list of accepted forms. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <godwit/uri.h>

static void test_tcp_ipv4_and_names(void **state)
{
    struct uri uri;

    (void)state;
    assert_int_equal(uri_parse("tcp:127.0.0.1:4444", &uri, NULL), 0);
    assert_int_equal(uri.kind, URI_TCP);
    assert_string_equal(uri.host, "127.0.0.1");
    assert_int_equal(uri.port, 4444);
    assert_int_equal(uri_parse("tcp:localhost:0", &uri, NULL), 0);
    assert_string_equal(uri.host, "localhost");
    assert_int_equal(uri.port, 0);
}

static void test_tcp_ipv6_in_brackets(void **state)
{
    struct uri uri;
    char text[64];

    (void)state;
    assert_int_equal(uri_parse("tcp:[::1]:65535", &uri, NULL), 0);
    assert_string_equal(uri.host, "::1");
    assert_int_equal(uri.port, 65535);
    uri_format(&uri, text, sizeof(text));
    assert_string_equal(text, "tcp:[::1]:65535");
}

static void test_paths_fd_rdma(void **state)
{
    struct uri uri;

    (void)state;
    assert_int_equal(uri_parse("unix:/tmp/mig.sock", &uri, NULL), 0);
    assert_int_equal(uri.kind, URI_UNIX);
    assert_string_equal(uri.path, "/tmp/mig.sock");
    assert_int_equal(uri_parse("file:/tmp/a:b", &uri, NULL), 0);
    assert_string_equal(uri.path, "/tmp/a:b");
    assert_int_equal(uri_parse("fd:3", &uri, NULL), 0);
    assert_int_equal(uri.fd, 3);
    assert_string_equal(uri.path, "");
    /* QEMU's fd:NAME: a descriptor passed with getfd, taken when used. */
    char text[64];
    assert_int_equal(uri_parse("fd:migrate-1", &uri, NULL), 0);
    assert_int_equal(uri.kind, URI_FD);
    assert_int_equal(uri.fd, -1);
    assert_string_equal(uri.path, "migrate-1");
    uri_format(&uri, text, sizeof(text));
    assert_string_equal(text, "fd:migrate-1");
    assert_int_equal(uri_parse("rdma:192.168.0.1:4444", &uri, NULL), 0);
    assert_int_equal(uri.kind, URI_RDMA);
}

static void test_bad_uris_name_the_accepted_forms(void **state)
{
    static const char *const bad[] = {
        "", "tcp", "tcp:", "tcp:host", "tcp:host:", "tcp:host:65536", "tcp:host:-1",
        "tcp:host:12x", "tcp::4444", "tcp:::1:4444", "tcp:[::1]4444", "tcp:[::1", "unix:",
        "file:", "fd:", "fd:3x", "fd:3abc", "ftp:host:21", "TCP:host:1",
        "http://example.com",
    };
    struct gw_error err;
    struct uri uri;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_error_clear(&err);
        assert_int_equal(uri_parse(bad[i], &uri, &err), -EINVAL);
        assert_true(strstr(err.msg, "invalid URI") == err.msg);
    }
    uri_parse("ftp:host:21", &uri, &err);
    assert_non_null(strstr(err.msg, "unknown transport 'ftp'"));
    assert_non_null(strstr(err.msg, uri_accepted_forms));
}

static void test_overlong_host_and_path(void **state)
{
    char text[PATH_MAX + 16];
    struct uri uri;

    (void)state;
    memset(text, 'a', sizeof(text));
    memcpy(text, "unix:", 5);
    text[sizeof(text) - 1] = '\0';
    assert_int_equal(uri_parse(text, &uri, NULL), -EINVAL);
    memcpy(text, "tcp:", 4);
    strcpy(text + 4 + 300, ":80");
    assert_int_equal(uri_parse(text, &uri, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_ipv4_and_names),
        cmocka_unit_test(test_tcp_ipv6_in_brackets),
        cmocka_unit_test(test_paths_fd_rdma),
        cmocka_unit_test(test_bad_uris_name_the_accepted_forms),
        cmocka_unit_test(test_overlong_host_and_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
