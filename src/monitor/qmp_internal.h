/* What the QMP server and its sessions share; private to src/monitor. */
#ifndef GODWIT_QMP_INTERNAL_H
#define GODWIT_QMP_INTERNAL_H

#include <pthread.h>

#include <godwit/buffer.h>
#include <godwit/hmp.h>
#include <godwit/qmp.h>

#define QMP_COMMANDS_MAX 128
#define QMP_SESSIONS_MAX 4
/* Output a client may leave unread before it is dropped. */
#define QMP_CLIENT_BACKLOG_MAX (8u << 20)

struct qmp_server {
    char package[64];
    const struct qmp_command *commands[QMP_COMMANDS_MAX];
    unsigned nr_commands;
    const struct hmp_command *hmp_commands[QMP_COMMANDS_MAX];
    unsigned nr_hmp_commands;
    bool hmc_registered;
    struct qmp_command hmc;          /* human-monitor-command, bound to this server */
    struct qmp_command query_commands;
    struct hmp_command help;

    /* out_lock serialises every write to a session and guards sessions[]:
     * events come from any thread, replies from the monitor thread. */
    pthread_mutex_t out_lock;
    struct qmp_session *sessions[QMP_SESSIONS_MAX];

    /* Socket state: owned by the monitor thread (the VMM's event loop). */
    int listen_fd;
    int wake_fd;                      /* eventfd: output is waiting, or a client overflowed */
    struct qmp_client {
        int fd;                       /* -1: slot free */
        struct qmp_session *session;
        struct qmp_server *server;
        /* Under out_lock: what the socket did not take yet. A client that
         * stops reading is dropped, never waited for: the monitor and the
         * migration's events must not hang on it. */
        struct gw_buffer pending;
        bool overflowed;
    } clients[QMP_SESSIONS_MAX];
    char socket_path[108];
};

struct qmp_session {
    struct qmp_server *server;
    qmp_output_fn out;
    void *out_opaque;
    bool negotiated;      /* written by the monitor thread, read under out_lock */

    /* Framing: finds where one JSON value ends before jansson parses it. */
    char *buf;
    size_t len;
    unsigned depth;
    bool in_string;
    bool escaped;
    bool scalar;          /* a top-level value that is not an object or array */
    bool discarding;      /* after a framing error: skip to the next newline */
};

/* Writes text + "\r\n" to the session under out_lock. */
void qmp_session_send(struct qmp_session *session, json_t *message);

#endif
