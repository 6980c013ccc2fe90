/* One QMP conversation: frames the byte stream into JSON values, parses them
 * with jansson, checks the request's shape and arguments, and dispatches.
 * Bad input gets an error reply and the session goes on; nothing here trusts
 * the client's lengths, nesting or types. */
#include "qmp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void send_error(struct qmp_session *session, json_t *id, const char *class,
                       const char *desc)
{
    json_t *reply = json_pack("{s:{s:s,s:s}}", "error", "class", class, "desc", desc);

    if (id)
        json_object_set(reply, "id", id);
    qmp_session_send(session, reply);
}

static void send_greeting(struct qmp_session *session)
{
    json_t *greeting = json_pack("{s:{s:o,s:[]}}", "QMP", "version",
                                 qmp_version(session->server), "capabilities");
    qmp_session_send(session, greeting);
}

struct qmp_session *qmp_session_new(struct qmp_server *server, qmp_output_fn out,
                                    void *opaque)
{
    struct qmp_session *session = calloc(1, sizeof(*session));

    if (!session)
        return NULL;
    session->server = server;
    session->out = out;
    session->out_opaque = opaque;
    session->received_fd = -1;
    pthread_mutex_lock(&server->out_lock);
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++) {
        if (!server->sessions[i]) {
            server->sessions[i] = session;
            break;
        }
    }
    pthread_mutex_unlock(&server->out_lock);
    send_greeting(session);
    return session;
}

void qmp_session_free(struct qmp_session *session)
{
    struct qmp_server *server;

    if (!session)
        return;
    server = session->server;
    pthread_mutex_lock(&server->out_lock);
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++)
        if (server->sessions[i] == session)
            server->sessions[i] = NULL;
    pthread_mutex_unlock(&server->out_lock);
    if (server->current == session)
        server->current = NULL;
    if (session->received_fd >= 0)
        close(session->received_fd);
    free(session->buf);
    free(session);
}

static bool request_member_allowed(const char *key)
{
    static const char *const allowed[] = { "execute", "arguments", "id" };

    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (!strcmp(key, allowed[i]))
            return true;
    return false;
}

/* Checks the envelope; on error fills desc and returns the error class. */
static const char *check_envelope(json_t *request, const char **command, char *desc,
                                  size_t desc_len)
{
    json_t *execute = json_object_get(request, "execute");
    json_t *arguments = json_object_get(request, "arguments");
    const char *key;
    json_t *value;

    json_object_foreach(request, key, value) {
        if (!request_member_allowed(key)) {
            snprintf(desc, desc_len, "QMP input member '%s' is unexpected", key);
            return "GenericError";
        }
    }
    if (!execute) {
        snprintf(desc, desc_len, "QMP input lacks member 'execute'");
        return "GenericError";
    }
    if (!json_is_string(execute)) {
        snprintf(desc, desc_len, "QMP input member 'execute' must be a string");
        return "GenericError";
    }
    if (arguments && !json_is_object(arguments)) {
        snprintf(desc, desc_len, "QMP input member 'arguments' must be an object");
        return "GenericError";
    }
    *command = json_string_value(execute);
    return NULL;
}

static void dispatch(struct qmp_session *session, json_t *request)
{
    json_t *id = json_object_get(request, "id");
    const char *command = NULL, *class;
    struct gw_error err = { 0 };
    char desc[GW_ERROR_MSG_MAX];
    json_t *ret = NULL, *reply;

    class = check_envelope(request, &command, desc, sizeof(desc));
    if (class) {
        send_error(session, id, class, desc);
        return;
    }
    if (!strcmp(command, "qmp_capabilities")) {
        if (session->negotiated) {
            send_error(session, id, "CommandNotFound",
                       "Capabilities negotiation is already complete, command ignored");
            return;
        }
        if (qmp_args_check(NULL, json_object_get(request, "arguments"), &err) < 0) {
            send_error(session, id, "GenericError", err.msg);
            return;
        }
        pthread_mutex_lock(&session->server->out_lock);
        session->negotiated = true;
        pthread_mutex_unlock(&session->server->out_lock);
        ret = json_object();
    } else if (!session->negotiated) {
        send_error(session, id, "CommandNotFound",
                   "Expecting capabilities negotiation with 'qmp_capabilities'");
        return;
    } else {
        session->server->current = session;   /* for getfd */
        int rc = qmp_server_execute(session->server, command,
                                    json_object_get(request, "arguments"), &ret, &err);
        session->server->current = NULL;
        if (rc < 0) {
            send_error(session, id,
                       rc == -ENOENT && !qmp_server_find(session->server, command)
                           ? "CommandNotFound" : "GenericError",
                       err.msg);
            return;
        }
    }
    reply = json_pack("{s:o}", "return", ret ? ret : json_object());
    if (id)
        json_object_set(reply, "id", id);
    qmp_session_send(session, reply);
}

static void handle_value(struct qmp_session *session)
{
    json_error_t parse_error;
    char desc[GW_ERROR_MSG_MAX];
    json_t *value = json_loadb(session->buf, session->len,
                               JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &parse_error);

    if (!value) {
        snprintf(desc, sizeof(desc), "JSON parse error, %s", parse_error.text);
        send_error(session, NULL, "GenericError", desc);
        return;
    }
    if (!json_is_object(value))
        send_error(session, NULL, "GenericError", "QMP input must be a JSON object");
    else
        dispatch(session, value);
    json_decref(value);
}

static void reset_framing(struct qmp_session *session)
{
    session->len = 0;
    session->depth = 0;
    session->in_string = false;
    session->escaped = false;
    session->scalar = false;
}

static void framing_error(struct qmp_session *session, const char *desc, char byte)
{
    send_error(session, NULL, "GenericError", desc);
    reset_framing(session);
    /* The rest of this line belongs to the broken value. */
    session->discarding = byte != '\n';
}

static bool append_byte(struct qmp_session *session, char byte)
{
    if (session->len >= QMP_REQUEST_MAX) {
        framing_error(session, "JSON parse error, request larger than 1 MiB", byte);
        return false;
    }
    if (!session->buf) {
        session->buf = malloc(QMP_REQUEST_MAX);
        if (!session->buf) {
            framing_error(session, "out of memory reading the request", byte);
            return false;
        }
    }
    session->buf[session->len++] = byte;
    return true;
}

/* Feeds one byte inside an object or array; returns true when it closed the
 * top-level value. */
static bool feed_structured(struct qmp_session *session, char byte)
{
    if (session->in_string) {
        if (session->escaped)
            session->escaped = false;
        else if (byte == '\\')
            session->escaped = true;
        else if (byte == '"')
            session->in_string = false;
        else if ((unsigned char)byte < 0x20) {
            framing_error(session, "JSON parse error, control character in a string", byte);
            return false;
        }
        return false;
    }
    switch (byte) {
    case '"':
        session->in_string = true;
        return false;
    case '{':
    case '[':
        if (++session->depth > QMP_NESTING_MAX) {
            framing_error(session, "JSON parse error, nesting deeper than 32 levels", byte);
            return false;
        }
        return false;
    case '}':
    case ']':
        return --session->depth == 0;
    default:
        return false;
    }
}

static void feed_byte(struct qmp_session *session, char byte)
{
    bool space = byte == ' ' || byte == '\t' || byte == '\r' || byte == '\n';

    if (session->discarding) {
        session->discarding = byte != '\n';
        return;
    }
    if (session->len == 0) {
        if (space)
            return;
        if (byte == '}' || byte == ']') {
            framing_error(session, "JSON parse error, stray closing bracket", byte);
            return;
        }
        session->scalar = byte != '{' && byte != '[';
    }
    if (session->scalar && space) {
        handle_value(session);
        reset_framing(session);
        return;
    }
    if (!append_byte(session, byte))
        return;
    if (!session->scalar && feed_structured(session, byte)) {
        handle_value(session);
        reset_framing(session);
    }
}

void qmp_session_feed(struct qmp_session *session, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        feed_byte(session, data[i]);
}

void qmp_session_give_fd(struct qmp_session *session, int fd)
{
    if (session->received_fd >= 0)
        close(session->received_fd);
    session->received_fd = fd;
}

void qmp_session_send(struct qmp_session *session, json_t *message)
{
    char *text = json_dumps(message, JSON_COMPACT | JSON_PRESERVE_ORDER);

    json_decref(message);
    if (!text)
        return;
    pthread_mutex_lock(&session->server->out_lock);
    session->out(session->out_opaque, text, strlen(text));
    session->out(session->out_opaque, "\r\n", 2);
    pthread_mutex_unlock(&session->server->out_lock);
    free(text);
}
