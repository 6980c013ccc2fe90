/* A small QMP client: connects to a unix socket, negotiates, and runs one
 * request at a time. Every read is bounded in size and in time; it never
 * blocks forever and never trusts a line's length. Reused by tests and
 * benchmarks, so it prints nothing: errors go into a gw_error. */
#ifndef GODWIT_TOOLS_QMP_CLIENT_H
#define GODWIT_TOOLS_QMP_CLIENT_H

#include <errno.h>
#include <stdbool.h>

#include <jansson.h>

#include <godwit/error.h>

/* The longest message accepted from the server; a longer line is an error. */
#define QMP_CLIENT_LINE_MAX (1u << 20)
/* How long a request waits for its answer, unless qmp_client_set_timeout. */
#define QMP_CLIENT_TIMEOUT_MS 10000
/* Events kept while keep_events is on; the oldest are dropped beyond this. */
#define QMP_CLIENT_EVENTS_MAX 256

/* Returned when the server answered with {"error": ...}; err holds its desc. */
#define QMP_CLIENT_EREMOTE (-EREMOTEIO)
#define QMP_CLIENT_CLASS_MAX 64

struct qmp_client;

/* Connects to the QMP server at path, reads the greeting and sends
 * qmp_capabilities; timeout_ms <= 0 means QMP_CLIENT_TIMEOUT_MS. The error
 * names the socket and says what to check. */
int qmp_client_connect_unix(const char *path, int timeout_ms, struct qmp_client **out,
                            struct gw_error *err);
void qmp_client_close(struct qmp_client *client);

/* Milliseconds a request (or the greeting) may wait for its answer. */
void qmp_client_set_timeout(struct qmp_client *client, int timeout_ms);

/* Off (the default): events are read and dropped. On: they are queued for
 * qmp_client_next_event. */
void qmp_client_keep_events(struct qmp_client *client, bool keep);

/* Sends {"execute": command, "arguments": args} and waits for its answer.
 * args is stolen and may be NULL. On success *ret (may be NULL) gets a new
 * reference to the "return" value. A QMP error is QMP_CLIENT_EREMOTE with
 * the server's desc in err->msg and its class in *error_class if non-NULL
 * (a buffer of QMP_CLIENT_CLASS_MAX bytes, or NULL). */
int qmp_client_execute(struct qmp_client *client, const char *command, json_t *args,
                       json_t **ret, char *error_class, struct gw_error *err);

/* The next queued event, or waits up to timeout_ms for one to arrive.
 * Returns 1 and a new reference in *event, 0 when none came in time or a
 * signal interrupted the wait, or a negative errno with err filled. */
int qmp_client_next_event(struct qmp_client *client, int timeout_ms, json_t **event,
                          struct gw_error *err);

#endif
