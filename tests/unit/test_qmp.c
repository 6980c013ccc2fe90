/* The QMP protocol without a socket: framing, envelope checks, negotiation,
 * argument checking, ids and events, with QEMU's error classes and texts. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <godwit/hmp.h>
#include <godwit/qmp.h>

struct transcript {
    char text[1 << 16];
    size_t len;
};

static void record(void *opaque, const char *text, size_t len)
{
    struct transcript *out = opaque;

    assert_true(out->len + len < sizeof(out->text));
    memcpy(out->text + out->len, text, len);
    out->len += len;
    out->text[out->len] = '\0';
}

/* Pops the first line of the transcript as JSON. */
static json_t *next_message(struct transcript *out)
{
    char *end = strstr(out->text, "\r\n");
    json_t *message;

    assert_non_null(end);
    message = json_loadb(out->text, (size_t)(end - out->text), 0, NULL);
    assert_non_null(message);
    size_t consumed = (size_t)(end + 2 - out->text);
    memmove(out->text, out->text + consumed, out->len - consumed + 1);
    out->len -= consumed;
    return message;
}

static const char *error_desc(json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "desc"));
}

static const char *error_class(json_t *reply)
{
    return json_string_value(json_object_get(json_object_get(reply, "error"), "class"));
}

static int echo_handler(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)opaque;
    if (json_object_get(args, "fail"))
        return gw_error_set(err, -EINVAL, "asked to fail");
    *ret = json_pack("{s:O}", "got", json_object_get(args, "value"));
    return 0;
}

static const struct qmp_arg echo_args[] = {
    { "value", QMP_ARG_UINT, false },
    { "fail", QMP_ARG_BOOL, true },
    { "name", QMP_ARG_STR, true },
    { NULL, 0, false },
};
static const struct qmp_command echo_command = {
    .name = "echo", .args = echo_args, .handler = echo_handler,
};

struct fixture {
    struct qmp_server *server;
    struct qmp_session *session;
    struct transcript out;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    f->server = qmp_server_new("godwit test");
    assert_int_equal(qmp_server_register(f->server, &echo_command, NULL), 0);
    f->session = qmp_session_new(f->server, record, &f->out);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    qmp_session_free(f->session);
    qmp_server_free(f->server);
    free(f);
    return 0;
}

static json_t *request(struct fixture *f, const char *text)
{
    qmp_session_feed(f->session, text, strlen(text));
    return next_message(&f->out);
}

static void negotiate(struct fixture *f)
{
    json_decref(next_message(&f->out));   /* greeting */
    json_t *reply = request(f, "{\"execute\":\"qmp_capabilities\"}");
    assert_non_null(json_object_get(reply, "return"));
    json_decref(reply);
}

static void test_greeting_then_negotiation_required(void **state)
{
    struct fixture *f = *state;
    json_t *greeting = next_message(&f->out), *reply;

    assert_non_null(json_object_get(json_object_get(greeting, "QMP"), "version"));
    assert_true(json_is_array(json_object_get(json_object_get(greeting, "QMP"), "capabilities")));
    json_decref(greeting);
    reply = request(f, "{\"execute\":\"echo\",\"arguments\":{\"value\":1}}");
    assert_string_equal(error_class(reply), "CommandNotFound");
    assert_string_equal(error_desc(reply),
                        "Expecting capabilities negotiation with 'qmp_capabilities'");
    json_decref(reply);
    reply = request(f, "{\"execute\":\"qmp_capabilities\"}");
    json_decref(reply);
    reply = request(f, "{\"execute\":\"qmp_capabilities\"}");
    assert_string_equal(error_class(reply), "CommandNotFound");
    json_decref(reply);
}

static void test_success_and_id(void **state)
{
    struct fixture *f = *state;
    json_t *reply;

    negotiate(f);
    reply = request(f, "{\"execute\":\"echo\",\"arguments\":{\"value\":42},\"id\":[1,\"x\"]}");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(reply, "return"), "got")),
                     42);
    assert_true(json_is_array(json_object_get(reply, "id")));
    json_decref(reply);
    reply = request(f, "{\"execute\":\"echo\",\"arguments\":{\"value\":1,\"fail\":true},\"id\":9}");
    assert_string_equal(error_class(reply), "GenericError");
    assert_string_equal(error_desc(reply), "asked to fail");
    assert_int_equal(json_integer_value(json_object_get(reply, "id")), 9);
    json_decref(reply);
}

static void test_argument_errors_use_qemu_wording(void **state)
{
    static const struct { const char *request, *desc; } cases[] = {
        { "{\"execute\":\"echo\"}", "Parameter 'value' is missing" },
        { "{\"execute\":\"echo\",\"arguments\":{}}", "Parameter 'value' is missing" },
        { "{\"execute\":\"echo\",\"arguments\":{\"value\":\"1\"}}",
          "Invalid parameter type for 'value', expected: integer" },
        { "{\"execute\":\"echo\",\"arguments\":{\"value\":-1}}",
          "Parameter 'value' must not be negative" },
        { "{\"execute\":\"echo\",\"arguments\":{\"value\":1.5}}",
          "Invalid parameter type for 'value', expected: integer" },
        { "{\"execute\":\"echo\",\"arguments\":{\"value\":1,\"name\":3}}",
          "Invalid parameter type for 'name', expected: string" },
        { "{\"execute\":\"echo\",\"arguments\":{\"value\":1,\"extra\":0}}",
          "Parameter 'extra' is unexpected" },
        { "{\"execute\":\"echo\",\"arguments\":[1]}",
          "QMP input member 'arguments' must be an object" },
        { "{\"execute\":5}", "QMP input member 'execute' must be a string" },
        { "{\"arguments\":{}}", "QMP input lacks member 'execute'" },
        { "{\"execute\":\"echo\",\"bogus\":1}", "QMP input member 'bogus' is unexpected" },
        { "[\"echo\"]", "QMP input must be a JSON object" },
        { "{\"execute\":\"echo\",\"execute\":\"echo\"}", NULL },
    };
    struct fixture *f = *state;

    negotiate(f);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *reply = request(f, cases[i].request);
        assert_string_equal(error_class(reply), "GenericError");
        if (cases[i].desc)
            assert_string_equal(error_desc(reply), cases[i].desc);
        json_decref(reply);
    }
}

static void test_unknown_command(void **state)
{
    struct fixture *f = *state;
    json_t *reply;

    negotiate(f);
    reply = request(f, "{\"execute\":\"frobnicate\"}");
    assert_string_equal(error_class(reply), "CommandNotFound");
    assert_string_equal(error_desc(reply), "The command frobnicate has not been found");
    json_decref(reply);
}

static void test_framing_recovers_from_bad_json(void **state)
{
    struct fixture *f = *state;
    json_t *reply;

    negotiate(f);
    reply = request(f, "{\"execute\": }");
    assert_non_null(strstr(error_desc(reply), "JSON parse error"));
    json_decref(reply);
    reply = request(f, "}\n");
    assert_non_null(strstr(error_desc(reply), "stray closing bracket"));
    json_decref(reply);
    reply = request(f, "{\"execute\": \"ec\x01ho\"}\n");
    assert_non_null(strstr(error_desc(reply), "control character"));
    json_decref(reply);
    reply = request(f, "nonsense ");
    assert_non_null(strstr(error_desc(reply), "JSON parse error"));
    json_decref(reply);
    reply = request(f, "42\n");
    assert_string_equal(error_desc(reply), "QMP input must be a JSON object");
    json_decref(reply);
    /* Braces inside strings do not count, escaped quotes do not end them. */
    reply = request(f, "{\"execute\":\"echo\",\"arguments\":{\"value\":2,\"name\":\"}{\\\"]\"}}");
    assert_non_null(json_object_get(reply, "return"));
    json_decref(reply);
    /* Still usable. */
    reply = request(f, "{\"execute\":\"echo\",\"arguments\":{\"value\":3}}");
    assert_non_null(json_object_get(reply, "return"));
    json_decref(reply);
}

static void test_byte_at_a_time_and_pipelined(void **state)
{
    struct fixture *f = *state;
    const char *text = "{\"execute\":\"echo\",\"arguments\":{\"value\":5}} "
                       "{\"execute\":\"echo\",\"arguments\":{\"value\":6}}";
    json_t *reply;

    negotiate(f);
    for (const char *p = text; *p; p++)
        qmp_session_feed(f->session, p, 1);
    reply = next_message(&f->out);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(reply, "return"), "got")), 5);
    json_decref(reply);
    reply = next_message(&f->out);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(reply, "return"), "got")), 6);
    json_decref(reply);
}

static void test_limits_nesting_and_size(void **state)
{
    struct fixture *f = *state;
    char deep[200];
    json_t *reply;
    char *big;

    negotiate(f);
    memset(deep, '[', sizeof(deep) - 1);
    deep[sizeof(deep) - 1] = '\0';
    reply = request(f, deep);
    assert_non_null(strstr(error_desc(reply), "nesting"));
    json_decref(reply);
    /* The rest of that line was discarded; a new line is a new request. */
    reply = request(f, "\n{\"execute\":\"echo\",\"arguments\":{\"value\":1}}");
    assert_non_null(json_object_get(reply, "return"));
    json_decref(reply);

    big = malloc(QMP_REQUEST_MAX + 64);
    strcpy(big, "{\"execute\":\"echo\",\"arguments\":{\"name\":\"");
    memset(big + strlen(big), 'x', QMP_REQUEST_MAX);
    strcpy(big + QMP_REQUEST_MAX, "\"}}\n");
    qmp_session_feed(f->session, big, strlen(big));
    free(big);
    reply = next_message(&f->out);
    assert_non_null(strstr(error_desc(reply), "larger than 1 MiB"));
    json_decref(reply);
    reply = request(f, "{\"execute\":\"echo\",\"arguments\":{\"value\":1}}");
    assert_non_null(json_object_get(reply, "return"));
    json_decref(reply);
}

static void test_events_only_after_negotiation(void **state)
{
    struct fixture *f = *state;
    json_t *event;

    json_decref(next_message(&f->out));
    qmp_server_emit_event(f->server, "STOP", NULL);
    assert_int_equal(f->out.len, 0);
    json_decref(request(f, "{\"execute\":\"qmp_capabilities\"}"));
    qmp_server_emit_event(f->server, "SHUTDOWN", json_pack("{s:b}", "guest", 0));
    event = next_message(&f->out);
    assert_string_equal(json_string_value(json_object_get(event, "event")), "SHUTDOWN");
    assert_non_null(json_object_get(json_object_get(event, "timestamp"), "microseconds"));
    assert_true(json_is_false(json_object_get(json_object_get(event, "data"), "guest")));
    json_decref(event);
}

static int hmp_echo(const char *args, struct hmp_output *out, struct gw_error *err, void *opaque)
{
    (void)opaque;
    if (!strcmp(args, "fail"))
        return gw_error_set(err, -EINVAL, "no");
    hmp_printf(out, "[%s]\r\n", args);
    return 0;
}

static void test_hmp_dispatch(void **state)
{
    static const struct hmp_command echo = { "echo", "[text]", "echo text", hmp_echo, NULL };
    static const struct hmp_command info = { "info thing", "", "show a thing", hmp_echo, NULL };
    struct fixture *f = *state;
    char *text;

    assert_int_equal(hmp_register(f->server, &echo, NULL), 0);
    assert_int_equal(hmp_register(f->server, &info, NULL), 0);
    assert_int_equal(hmp_register(f->server, &echo, NULL), -EEXIST);
    text = hmp_execute(f->server, "  echo   a b ");
    assert_string_equal(text, "[a b ]\r\n");
    free(text);
    text = hmp_execute(f->server, "info thing");
    assert_string_equal(text, "[]\r\n");
    free(text);
    text = hmp_execute(f->server, "info");
    assert_non_null(strstr(text, "info thing -- show a thing"));
    free(text);
    text = hmp_execute(f->server, "info nothing");
    assert_string_equal(text, "unknown command: 'info nothing'\r\n");
    free(text);
    text = hmp_execute(f->server, "echo fail");
    assert_string_equal(text, "Error: no\r\n");
    free(text);
    text = hmp_execute(f->server, "help");
    assert_non_null(strstr(text, "echo [text] -- echo text"));
    free(text);
    assert_non_null(qmp_server_find(f->server, "human-monitor-command"));
}

/* What the server answers itself: query-version in QEMU's shape, as the
 * greeting has it, and getfd/closefd without a socket to pass anything. */
static void test_builtin_version_and_fds(void **state)
{
    struct fixture *f = *state;
    json_t *greeting = next_message(&f->out), *reply, *version;
    struct gw_error err = { 0 };

    reply = request(f, "{\"execute\":\"qmp_capabilities\"}");
    json_decref(reply);
    reply = request(f, "{\"execute\":\"query-version\"}");
    version = json_object_get(reply, "return");
    assert_true(json_equal(version, json_object_get(json_object_get(greeting, "QMP"),
                                                    "version")));
    assert_true(json_is_integer(json_object_get(json_object_get(version, "qemu"), "major")));
    assert_true(json_is_integer(json_object_get(json_object_get(version, "qemu"), "minor")));
    assert_true(json_is_integer(json_object_get(json_object_get(version, "qemu"), "micro")));
    assert_string_equal(json_string_value(json_object_get(version, "package")), "godwit test");
    json_decref(reply);
    json_decref(greeting);
    reply = request(f, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"a\"}}");
    assert_string_equal(error_desc(reply), "No file descriptor supplied via SCM_RIGHTS");
    json_decref(reply);
    reply = request(f, "{\"execute\":\"getfd\",\"arguments\":{}}");
    assert_string_equal(error_desc(reply), "Parameter 'fdname' is missing");
    json_decref(reply);
    reply = request(f, "{\"execute\":\"closefd\",\"arguments\":{\"fdname\":\"a\"}}");
    assert_string_equal(error_desc(reply), "File descriptor named 'a' not found");
    json_decref(reply);
    assert_int_equal(qmp_server_take_fd(f->server, "a", &err), -ENOENT);
    assert_string_equal(err.msg, "File descriptor named 'a' not found");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting_then_negotiation_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_and_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_argument_errors_use_qemu_wording, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_command, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framing_recovers_from_bad_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_at_a_time_and_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_nesting_and_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_only_after_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hmp_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_builtin_version_and_fds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
