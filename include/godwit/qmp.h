/* QMP, the QEMU Machine Protocol, as a server that VMMs and the migration
 * engine register commands with. Wire behaviour follows QEMU's: a greeting,
 * capabilities negotiation, {"execute", "arguments", "id"} requests,
 * {"return"} / {"error": {"class", "desc"}} replies, and events. */
#ifndef GODWIT_QMP_H
#define GODWIT_QMP_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include <godwit/error.h>

/* Largest request we buffer; a longer one is refused, not truncated. */
#define QMP_REQUEST_MAX (1u << 20)
/* Deepest nesting of arrays and objects we accept in a request. */
#define QMP_NESTING_MAX 32

enum qmp_arg_type {
    QMP_ARG_INT,     /* any JSON integer */
    QMP_ARG_UINT,    /* a JSON integer >= 0 (QEMU's 'size' and 'uint64') */
    QMP_ARG_NUMBER,  /* an integer or a real */
    QMP_ARG_BOOL,
    QMP_ARG_STR,
    QMP_ARG_OBJECT,
    QMP_ARG_ANY,
};

struct qmp_arg {
    const char *name;
    enum qmp_arg_type type;
    bool optional;
};

/* Returns 0 and may set *ret (a new reference; NULL means {}), or a negative
 * errno with err filled: the reply is then a GenericError with err's text. */
typedef int (*qmp_handler_fn)(json_t *args, json_t **ret, struct gw_error *err,
                              void *opaque);

struct qmp_command {
    const char *name;
    const struct qmp_arg *args;   /* terminated by an entry with name NULL; may be NULL */
    qmp_handler_fn handler;
    void *opaque;
};

struct qmp_server;
struct qmp_session;

/* package: the VMM's name and version, shown in the greeting and in
 * query-version. The server serves query-commands, query-version, getfd and
 * closefd itself. */
struct qmp_server *qmp_server_new(const char *package);
void qmp_server_free(struct qmp_server *server);

/* Registers cmd (not copied: it must outlive the server). -EEXIST if the name
 * is taken. */
int qmp_server_register(struct qmp_server *server, const struct qmp_command *cmd,
                        struct gw_error *err);
const struct qmp_command *qmp_server_find(struct qmp_server *server, const char *name);

/* Runs a command as if a client had sent it (for HMP, which calls QMP). */
int qmp_server_execute(struct qmp_server *server, const char *name, json_t *args,
                       json_t **ret, struct gw_error *err);

/* Takes the descriptor a client named with getfd (QEMU's monitor_get_fd):
 * the name is gone from the server and the caller owns the descriptor.
 * Returns it, or -ENOENT with "File descriptor named 'NAME' not found".
 * From a command handler (the monitor thread) only. */
int qmp_server_take_fd(struct qmp_server *server, const char *name, struct gw_error *err);

/* Sends an event to every session that finished negotiation. Any thread may
 * call it. data is stolen; NULL means {}. */
void qmp_server_emit_event(struct qmp_server *server, const char *event, json_t *data);

/* --- the socket side: up to 4 clients at once, more wait in the backlog --- */

/* Listens on a unix socket. A live server on path is -EADDRINUSE; a stale
 * socket file is replaced; any other file there is -EEXIST. */
int qmp_server_listen_unix(struct qmp_server *server, const char *path,
                           struct gw_error *err);
/* Fills up to max pollfds for the caller's poll(); returns how many. */
int qmp_server_pollfds(struct qmp_server *server, struct pollfd *fds, int max);
/* Accepts, reads and dispatches what poll() reported for those pollfds. */
void qmp_server_service(struct qmp_server *server, const struct pollfd *fds, int nfds);
/* Closes the client and the listening socket and removes the socket file. */
void qmp_server_close(struct qmp_server *server);

/* --- the protocol without a socket (tests and fuzzing use this) --- */

typedef void (*qmp_output_fn)(void *opaque, const char *text, size_t len);

/* Starts a session; the greeting is written through out at once. */
struct qmp_session *qmp_session_new(struct qmp_server *server, qmp_output_fn out,
                                    void *opaque);
/* Feeds raw bytes from the client; every complete request is answered. */
void qmp_session_feed(struct qmp_session *session, const char *data, size_t len);
void qmp_session_free(struct qmp_session *session);

/* Checks args against spec (QEMU's messages: "Parameter 'x' is missing",
 * "Invalid parameter type for 'x', expected: integer", "Parameter 'x' is
 * unexpected"). args may be NULL (no arguments). */
int qmp_args_check(const struct qmp_arg *spec, json_t *args, struct gw_error *err);

#endif
