/* The QMP server: the command table, events, and a unix socket that serves
 * up to QMP_SESSIONS_MAX clients at once from the VMM's event loop. It never
 * blocks that loop on accept or read; a write to a client that stops reading
 * does block. */
#include "qmp_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static int query_commands(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct qmp_server *server = opaque;
    json_t *list = json_array();

    (void)args;
    (void)err;
    json_array_append_new(list, json_pack("{s:s}", "name", "qmp_capabilities"));
    for (unsigned i = 0; i < server->nr_commands; i++)
        json_array_append_new(list, json_pack("{s:s}", "name", server->commands[i]->name));
    *ret = list;
    return 0;
}

struct qmp_server *qmp_server_new(const char *package)
{
    struct qmp_server *server = calloc(1, sizeof(*server));

    if (!server)
        return NULL;
    snprintf(server->package, sizeof(server->package), "%s", package);
    pthread_mutex_init(&server->out_lock, NULL);
    server->listen_fd = -1;
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++)
        server->clients[i].fd = -1;
    server->query_commands = (struct qmp_command){
        .name = "query-commands", .handler = query_commands, .opaque = server,
    };
    qmp_server_register(server, &server->query_commands, NULL);
    return server;
}

void qmp_server_free(struct qmp_server *server)
{
    if (!server)
        return;
    qmp_server_close(server);
    pthread_mutex_destroy(&server->out_lock);
    free(server);
}

int qmp_server_register(struct qmp_server *server, const struct qmp_command *cmd,
                        struct gw_error *err)
{
    if (qmp_server_find(server, cmd->name))
        return gw_error_set(err, -EEXIST, "QMP command '%s' is registered twice", cmd->name);
    if (server->nr_commands == QMP_COMMANDS_MAX)
        return gw_error_set(err, -ENOSPC, "more than %d QMP commands", QMP_COMMANDS_MAX);
    server->commands[server->nr_commands++] = cmd;
    return 0;
}

const struct qmp_command *qmp_server_find(struct qmp_server *server, const char *name)
{
    for (unsigned i = 0; i < server->nr_commands; i++)
        if (!strcmp(server->commands[i]->name, name))
            return server->commands[i];
    return NULL;
}

void qmp_server_for_each(struct qmp_server *server,
                         void (*fn)(const struct qmp_command *cmd, void *opaque),
                         void *opaque)
{
    for (unsigned i = 0; i < server->nr_commands; i++)
        fn(server->commands[i], opaque);
}

int qmp_server_execute(struct qmp_server *server, const char *name, json_t *args,
                       json_t **ret, struct gw_error *err)
{
    const struct qmp_command *cmd = qmp_server_find(server, name);
    int rc;

    *ret = NULL;
    if (!cmd)
        return gw_error_set(err, -ENOENT, "The command %s has not been found", name);
    rc = qmp_args_check(cmd->args, args, err);
    if (rc < 0)
        return rc;
    rc = cmd->handler(args, ret, err, cmd->opaque);
    if (rc < 0 && *ret) {
        json_decref(*ret);
        *ret = NULL;
    }
    return rc;
}

void qmp_server_emit_event(struct qmp_server *server, const char *event, json_t *data)
{
    struct timeval now;
    json_t *message;
    char *text;

    gettimeofday(&now, NULL);
    message = json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", event,
                        "data", data ? data : json_object(), "timestamp",
                        "seconds", (json_int_t)now.tv_sec,
                        "microseconds", (json_int_t)now.tv_usec);
    text = json_dumps(message, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(message);
    if (!text)
        return;
    pthread_mutex_lock(&server->out_lock);
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++) {
        struct qmp_session *session = server->sessions[i];
        if (session && session->negotiated) {
            session->out(session->out_opaque, text, strlen(text));
            session->out(session->out_opaque, "\r\n", 2);
        }
    }
    pthread_mutex_unlock(&server->out_lock);
    free(text);
}

/* --- socket side --- */

static void write_to_fd(void *opaque, const char *text, size_t len)
{
    int fd = *(int *)opaque;

    while (len > 0) {
        ssize_t n = send(fd, text, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;   /* the client went away; the read side will notice */
        text += n;
        len -= (size_t)n;
    }
}

/* A socket file nobody listens on is left over from a dead process: reuse it. */
static int check_socket_path(const char *path, const struct sockaddr_un *addr,
                             struct gw_error *err)
{
    struct stat st;
    int probe, rc;

    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode))
        return gw_error_set(err, -EEXIST,
                            "QMP socket path '%s' exists and is not a socket; "
                            "remove it or choose another path", path);
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return gw_error_set(err, -errno, "cannot create a unix socket: %s", strerror(errno));
    rc = connect(probe, (const struct sockaddr *)addr, sizeof(*addr));
    close(probe);
    if (rc == 0)
        return gw_error_set(err, -EADDRINUSE,
                            "QMP socket path '%s' is already in use by another process; "
                            "choose another path or stop that process", path);
    unlink(path);
    return 0;
}

int qmp_server_listen_unix(struct qmp_server *server, const char *path,
                           struct gw_error *err)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd, rc;

    if (strlen(path) >= sizeof(addr.sun_path))
        return gw_error_set(err, -ENAMETOOLONG,
                            "QMP socket path '%s' is longer than %zu bytes", path,
                            sizeof(addr.sun_path) - 1);
    strcpy(addr.sun_path, path);
    rc = check_socket_path(path, &addr, err);
    if (rc < 0)
        return rc;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return gw_error_set(err, -errno, "cannot create a unix socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        rc = gw_error_set(err, -errno, "cannot listen on QMP socket '%s': %s", path,
                          strerror(errno));
        close(fd);
        return rc;
    }
    if (listen(fd, 4) < 0) {
        rc = gw_error_set(err, -errno, "cannot listen on QMP socket '%s': %s", path,
                          strerror(errno));
        close(fd);
        unlink(path);
        return rc;
    }
    server->listen_fd = fd;
    snprintf(server->socket_path, sizeof(server->socket_path), "%s", path);
    return 0;
}

int qmp_server_pollfds(struct qmp_server *server, struct pollfd *fds, int max)
{
    bool free_slot = false;
    int n = 0;

    for (unsigned i = 0; i < QMP_SESSIONS_MAX && n < max; i++) {
        if (server->clients[i].fd >= 0)
            fds[n++] = (struct pollfd){ .fd = server->clients[i].fd, .events = POLLIN };
        else
            free_slot = true;
    }
    /* With every slot taken, new clients wait in the backlog. */
    if (free_slot && server->listen_fd >= 0 && n < max)
        fds[n++] = (struct pollfd){ .fd = server->listen_fd, .events = POLLIN };
    return n;
}

static void drop_client(struct qmp_client *client)
{
    qmp_session_free(client->session);
    client->session = NULL;
    close(client->fd);
    client->fd = -1;
}

static void accept_client(struct qmp_server *server)
{
    struct qmp_client *client = NULL;
    int fd;

    for (unsigned i = 0; i < QMP_SESSIONS_MAX && !client; i++)
        if (server->clients[i].fd < 0)
            client = &server->clients[i];
    if (!client)
        return;
    fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;   /* EAGAIN or a client that gave up: poll again */
    client->fd = fd;
    client->session = qmp_session_new(server, write_to_fd, &client->fd);
    if (!client->session) {
        close(fd);
        client->fd = -1;
    }
}

static void read_client(struct qmp_client *client)
{
    char chunk[65536];
    ssize_t n = recv(client->fd, chunk, sizeof(chunk), MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        drop_client(client);
        return;
    }
    qmp_session_feed(client->session, chunk, (size_t)n);
}

void qmp_server_service(struct qmp_server *server, const struct pollfd *fds, int nfds)
{
    for (int i = 0; i < nfds; i++) {
        if (!fds[i].revents)
            continue;
        if (fds[i].fd == server->listen_fd) {
            accept_client(server);
            continue;
        }
        for (unsigned c = 0; c < QMP_SESSIONS_MAX; c++)
            if (server->clients[c].fd >= 0 && server->clients[c].fd == fds[i].fd)
                read_client(&server->clients[c]);
    }
}

void qmp_server_close(struct qmp_server *server)
{
    for (unsigned i = 0; i < QMP_SESSIONS_MAX; i++)
        if (server->clients[i].fd >= 0)
            drop_client(&server->clients[i]);
    if (server->listen_fd >= 0) {
        close(server->listen_fd);
        server->listen_fd = -1;
        unlink(server->socket_path);
    }
}
