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
/* Descriptors kept by getfd at once, and the longest name (with its NUL). */
#define QMP_FDS_MAX 32
#define QMP_FDNAME_MAX 128
/* Descriptors one read may carry; more than one per getfd is closed. */
#define QMP_FDS_PER_READ 16

struct qmp_server {
    char package[64];
    const struct qmp_command *commands[QMP_COMMANDS_MAX];
    unsigned nr_commands;
    const struct hmp_command *hmp_commands[QMP_COMMANDS_MAX];
    unsigned nr_hmp_commands;
    bool hmc_registered;
    struct qmp_command hmc;          /* human-monitor-command, bound to this server */
    struct qmp_command query_commands, query_version, getfd, closefd;
    struct hmp_command help;

    /* Monitor thread only: the session whose request is running (getfd
     * takes its descriptor), and the descriptors getfd named (fd -1: free).
     * They belong to the server, not to a client, as QEMU's belong to the
     * monitor: a client may pass one, disconnect, and another migrate. */
    struct qmp_session *current;
    struct qmp_named_fd {
        char name[QMP_FDNAME_MAX];
        int fd;
    } fds[QMP_FDS_MAX];

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

    /* The last descriptor the client sent (SCM_RIGHTS) that getfd has not
     * taken yet, or -1; a newer one replaces it. Monitor thread only. */
    int received_fd;
};

/* Gives the session a descriptor that came with its bytes; it closes the
 * one it held. */
void qmp_session_give_fd(struct qmp_session *session, int fd);

/* {"qemu": {"major", "minor", "micro"}, "package"}: godwit's version, for
 * the greeting and query-version. */
json_t *qmp_version(const struct qmp_server *server);

/* query-commands and query-version (qmp_commands.c). */
void qmp_commands_register_builtin(struct qmp_server *server);

/* getfd and closefd (qmp_fds.c), registered by qmp_server_new. */
int qmp_fds_register(struct qmp_server *server);
void qmp_fds_close_all(struct qmp_server *server);

/* Writes text + "\r\n" to the session under out_lock. */
void qmp_session_send(struct qmp_session *session, json_t *message);

#endif
