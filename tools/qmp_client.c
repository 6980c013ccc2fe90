/* The QMP client: one request in flight, answers matched by id, events kept
 * or dropped. Owns one socket and one fixed buffer of QMP_CLIENT_LINE_MAX
 * bytes; it must never block without a deadline nor read past that buffer. */
#include "qmp_client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Room for the longest message plus its "\r\n". */
#define BUF_CAP (QMP_CLIENT_LINE_MAX + 2)

struct qmp_client {
    int fd;
    char name[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];  /* "unix:PATH" */
    int timeout_ms;
    bool keep_events;
    int broken;                 /* a negative errno once the stream is unusable */
    char *buf;
    size_t len;                 /* bytes in buf not yet consumed */
    size_t scanned;             /* bytes of buf already searched for '\n' */
    json_t *events[QMP_CLIENT_EVENTS_MAX];
    unsigned event_head, nr_events;
    json_int_t next_id;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void queue_event(struct qmp_client *client, json_t *event)
{
    unsigned tail;

    if (client->nr_events == QMP_CLIENT_EVENTS_MAX) {
        json_decref(client->events[client->event_head]);
        client->event_head = (client->event_head + 1) % QMP_CLIENT_EVENTS_MAX;
        client->nr_events--;
    }
    tail = (client->event_head + client->nr_events) % QMP_CLIENT_EVENTS_MAX;
    client->events[tail] = json_incref(event);
    client->nr_events++;
}

static json_t *dequeue_event(struct qmp_client *client)
{
    json_t *event;

    if (!client->nr_events)
        return NULL;
    event = client->events[client->event_head];
    client->event_head = (client->event_head + 1) % QMP_CLIENT_EVENTS_MAX;
    client->nr_events--;
    return event;
}

static int fail(struct qmp_client *client, struct gw_error *err, int code, const char *what)
{
    client->broken = code;
    return gw_error_set(err, code, "%s %s", client->name, what);
}

/* Takes one complete line out of buf and parses it. 1 with *msg, 0 when no
 * complete line is buffered yet, negative on a bad or oversized line. */
static int take_line(struct qmp_client *client, json_t **msg, struct gw_error *err)
{
    char *nl = memchr(client->buf + client->scanned, '\n', client->len - client->scanned);
    size_t line_len, used;
    json_error_t jerr;

    if (!nl) {
        client->scanned = client->len;
        if (client->len == BUF_CAP)
            return fail(client, err, -EMSGSIZE,
                        "sent a QMP message longer than 1 MiB; giving up on this connection");
        return 0;
    }
    used = (size_t)(nl - client->buf) + 1;
    line_len = used - 1;
    if (line_len && client->buf[line_len - 1] == '\r')
        line_len--;
    *msg = line_len ? json_loadb(client->buf, line_len, 0, &jerr) : NULL;
    memmove(client->buf, client->buf + used, client->len - used);
    client->len -= used;
    client->scanned = 0;
    if (!line_len)
        return 0;
    if (!*msg)
        return fail(client, err, -EPROTO, "sent a line that is not JSON; is it a QMP socket?");
    if (!json_is_object(*msg)) {
        json_decref(*msg);
        return fail(client, err, -EPROTO, "sent a QMP message that is not a JSON object");
    }
    return 1;
}

/* Reads more bytes, waiting until deadline. 1 on data, 0 on timeout,
 * -EINTR when a signal came first, another negative errno on error. */
static int fill(struct qmp_client *client, int64_t deadline, struct gw_error *err)
{
    struct pollfd pfd = { .fd = client->fd, .events = POLLIN };
    int64_t left = deadline - now_ms();
    ssize_t n;
    int rc;

    if (left <= 0)
        return 0;
    rc = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
    if (rc < 0 && errno == EINTR)
        return -EINTR;
    if (rc < 0)
        return fail(client, err, -errno, "cannot be polled");
    if (rc == 0)
        return 0;
    n = read(client->fd, client->buf + client->len, BUF_CAP - client->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return -EINTR;
    if (n < 0)
        return gw_error_set(err, client->broken = -errno, "reading from %s: %s",
                            client->name, strerror(errno));
    if (n == 0)
        return fail(client, err, -ECONNRESET,
                    "closed the QMP connection (did the VM exit?)");
    client->len += (size_t)n;
    return 1;
}

/* The next message before deadline. 1 with *msg, 0 on timeout, -EINTR if
 * interruptible and a signal came, another negative errno on error. */
static int read_message(struct qmp_client *client, int64_t deadline, bool interruptible,
                        json_t **msg, struct gw_error *err)
{
    int rc;

    if (client->broken)
        return gw_error_set(err, client->broken, "the QMP connection to %s is no longer usable",
                            client->name);
    for (;;) {
        rc = take_line(client, msg, err);
        if (rc)
            return rc;
        if (client->len > client->scanned)
            continue;   /* an empty line was consumed; look at the rest */
        rc = fill(client, deadline, err);
        if (rc == -EINTR && interruptible)
            return rc;
        if (rc < 0 && rc != -EINTR)
            return rc;
        if (rc == 0)
            return 0;
    }
}

static int send_all(struct qmp_client *client, const char *data, size_t len,
                    struct gw_error *err)
{
    while (len) {
        ssize_t n = send(client->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return gw_error_set(err, client->broken = -errno, "writing to %s: %s",
                                client->name, strerror(errno));
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int reply_error(json_t *reply, char *error_class, struct gw_error *err)
{
    json_t *error = json_object_get(reply, "error");
    const char *desc = json_string_value(json_object_get(error, "desc"));
    const char *class = json_string_value(json_object_get(error, "class"));

    if (error_class)
        snprintf(error_class, QMP_CLIENT_CLASS_MAX, "%s", class ? class : "");
    return gw_error_set(err, QMP_CLIENT_EREMOTE, "%s", desc ? desc : "error without a desc");
}

/* Waits for the answer to request id, handling events met on the way. */
static int await_reply(struct qmp_client *client, const char *command, json_int_t id,
                       json_t **ret, char *error_class, struct gw_error *err)
{
    int64_t deadline = now_ms() + client->timeout_ms;
    json_t *msg, *msg_id;
    int rc;

    for (;;) {
        rc = read_message(client, deadline, false, &msg, err);
        if (rc < 0)
            return rc;
        if (rc == 0)    /* the id lets a late answer be recognised and skipped */
            return gw_error_set(err, -ETIMEDOUT, "%s did not answer '%s' within %g s "
                                "(is the VM stuck?)", client->name, command,
                                client->timeout_ms / 1000.0);
        if (json_object_get(msg, "event")) {
            if (client->keep_events)
                queue_event(client, msg);
            json_decref(msg);
            continue;
        }
        msg_id = json_object_get(msg, "id");
        if (msg_id && (!json_is_integer(msg_id) || json_integer_value(msg_id) != id)) {
            json_decref(msg);   /* a late answer to an earlier request */
            continue;
        }
        if (json_object_get(msg, "return")) {
            if (ret)
                *ret = json_incref(json_object_get(msg, "return"));
            rc = 0;
        } else if (json_object_get(msg, "error")) {
            rc = reply_error(msg, error_class, err);
        } else {
            rc = fail(client, err, -EPROTO, "answered with neither 'return' nor 'error'");
        }
        json_decref(msg);
        return rc;
    }
}

int qmp_client_execute(struct qmp_client *client, const char *command, json_t *args,
                       json_t **ret, char *error_class, struct gw_error *err)
{
    json_int_t id = ++client->next_id;
    json_t *request = json_pack("{s:s, s:I}", "execute", command, "id", id);
    char *text = NULL;
    int rc;

    if (ret)
        *ret = NULL;
    if (error_class)
        error_class[0] = '\0';
    if (request && args)
        json_object_set(request, "arguments", args);
    json_decref(args);
    if (request)
        text = json_dumps(request, JSON_COMPACT);
    json_decref(request);
    if (!text)
        return gw_error_set(err, -ENOMEM, "cannot build the QMP request '%s'", command);
    if (client->broken) {
        free(text);
        return gw_error_set(err, client->broken, "the QMP connection to %s is no longer usable",
                            client->name);
    }
    rc = send_all(client, text, strlen(text), err);
    if (rc == 0)
        rc = send_all(client, "\n", 1, err);
    free(text);
    if (rc < 0)
        return rc;
    return await_reply(client, command, id, ret, error_class, err);
}

int qmp_client_next_event(struct qmp_client *client, int timeout_ms, json_t **event,
                          struct gw_error *err)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    json_t *msg;
    int rc;

    *event = dequeue_event(client);
    if (*event)
        return 1;
    for (;;) {
        rc = read_message(client, deadline, true, &msg, err);
        if (rc == -EINTR || rc == 0)
            return 0;
        if (rc < 0)
            return rc;
        if (json_object_get(msg, "event")) {
            *event = msg;
            return 1;
        }
        json_decref(msg);   /* an answer nobody waits for */
    }
}

static int greet(struct qmp_client *client, struct gw_error *err)
{
    int64_t deadline = now_ms() + client->timeout_ms;
    json_t *greeting;
    int rc = read_message(client, deadline, false, &greeting, err);

    if (rc == 0)
        return gw_error_set(err, -ETIMEDOUT,
                            "%s accepted the connection but sent no QMP greeting within "
                            "%g s; godwit-vm serves one QMP client at a time: is another "
                            "client connected?", client->name, client->timeout_ms / 1000.0);
    if (rc < 0)
        return rc;
    rc = json_object_get(greeting, "QMP") ? 0
         : gw_error_set(err, -EPROTO, "%s did not greet like a QMP server", client->name);
    json_decref(greeting);
    if (rc == 0)
        rc = qmp_client_execute(client, "qmp_capabilities", NULL, NULL, NULL, err);
    if (rc == QMP_CLIENT_EREMOTE)
        gw_error_prefix(err, "%s refused qmp_capabilities", client->name);
    return rc;
}

static int open_socket(struct qmp_client *client, const char *path, struct gw_error *err)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int saved;

    if (strlen(path) >= sizeof(addr.sun_path))
        return gw_error_set(err, -ENAMETOOLONG,
                            "the socket path '%s' is longer than %zu bytes", path,
                            sizeof(addr.sun_path) - 1);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    client->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client->fd < 0)
        return gw_error_set(err, -errno, "cannot create a socket: %s", strerror(errno));
    if (connect(client->fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
        return 0;
    saved = errno;
    if (saved == ENOENT || saved == ECONNREFUSED || saved == ENOTSOCK)
        return gw_error_set(err, -saved,
                            "cannot connect to unix:%s: %s; is godwit-vm running with "
                            "--qmp unix:%s?", path, strerror(saved), path);
    return gw_error_set(err, -saved, "cannot connect to unix:%s: %s", path, strerror(saved));
}

int qmp_client_connect_unix(const char *path, int timeout_ms, struct qmp_client **out,
                            struct gw_error *err)
{
    struct qmp_client *client = calloc(1, sizeof(*client));
    int rc;

    *out = NULL;
    if (!client)
        return gw_error_set(err, -ENOMEM, "out of memory");
    client->fd = -1;
    client->timeout_ms = timeout_ms > 0 ? timeout_ms : QMP_CLIENT_TIMEOUT_MS;
    snprintf(client->name, sizeof(client->name), "unix:%.*s",
             (int)sizeof(client->name) - 6, path);
    client->buf = malloc(BUF_CAP);
    if (!client->buf) {
        rc = gw_error_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    rc = open_socket(client, path, err);
    if (rc < 0)
        goto fail;
    rc = greet(client, err);
    if (rc < 0)
        goto fail;
    *out = client;
    return 0;
fail:
    qmp_client_close(client);
    return rc;
}

void qmp_client_set_timeout(struct qmp_client *client, int timeout_ms)
{
    client->timeout_ms = timeout_ms > 0 ? timeout_ms : QMP_CLIENT_TIMEOUT_MS;
}

void qmp_client_keep_events(struct qmp_client *client, bool keep)
{
    client->keep_events = keep;
}

void qmp_client_close(struct qmp_client *client)
{
    json_t *event;

    if (!client)
        return;
    while ((event = dequeue_event(client)))
        json_decref(event);
    if (client->fd >= 0)
        close(client->fd);
    free(client->buf);
    free(client);
}
