/* Fuzzes the QMP session: framing, parsing, envelope and argument checks,
 * HMP dispatch. The input is what a client could send after connecting. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <godwit/hmp.h>
#include <godwit/qmp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void discard(void *opaque, const char *text, size_t len)
{
    (void)opaque;
    (void)text;
    (void)len;
}

static int echo(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)err;
    (void)opaque;
    *ret = json_deep_copy(args);
    return 0;
}

static int hmp_echo(const char *args, struct hmp_output *out, struct gw_error *err, void *opaque)
{
    (void)err;
    (void)opaque;
    hmp_printf(out, "%s\r\n", args);
    return 0;
}

static const struct qmp_arg echo_args[] = {
    { "value", QMP_ARG_UINT, true }, { "text", QMP_ARG_STR, true },
    { "flag", QMP_ARG_BOOL, true }, { "any", QMP_ARG_ANY, true }, { NULL, 0, false },
};
static const struct qmp_command echo_command = { .name = "echo", .args = echo_args,
                                                 .handler = echo };
static const struct hmp_command hmp_echo_command = { "echo", "", "echo", hmp_echo, NULL };
static const struct hmp_command hmp_info_command = { "info echo", "", "echo", hmp_echo, NULL };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char negotiate[] = "{\"execute\":\"qmp_capabilities\"}";
    struct qmp_server *server = qmp_server_new("fuzz");
    struct qmp_session *session;

    qmp_server_register(server, &echo_command, NULL);
    hmp_register(server, &hmp_echo_command, NULL);
    hmp_register(server, &hmp_info_command, NULL);
    session = qmp_session_new(server, discard, NULL);
    /* Half the inputs start negotiated so they reach the commands. */
    if (size && (data[0] & 1))
        qmp_session_feed(session, negotiate, strlen(negotiate));
    qmp_session_feed(session, (const char *)data, size);
    qmp_server_emit_event(server, "FUZZ", NULL);
    qmp_session_free(session);
    qmp_server_free(server);
    return 0;
}
