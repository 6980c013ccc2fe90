/* getfd and closefd: a client passes a descriptor over the QMP socket
 * (SCM_RIGHTS) and names it, so that a command can use it later by name
 * (migrate fd:NAME). This is how libvirt hands QEMU a connected migration
 * socket, and the messages are QEMU's so its clients read the same errors.
 * Everything here runs on the monitor thread. */
#include "qmp_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static struct qmp_named_fd *find_fd(struct qmp_server *server, const char *name)
{
    for (unsigned i = 0; i < QMP_FDS_MAX; i++)
        if (server->fds[i].fd >= 0 && !strcmp(server->fds[i].name, name))
            return &server->fds[i];
    return NULL;
}

static int check_name(const char *name, struct gw_error *err)
{
    /* fd:N is a number and fd:NAME a name: a name may not look like one. */
    if (isdigit((unsigned char)name[0]))
        return gw_error_set(err, -EINVAL, "Parameter 'fdname' expects a name not starting "
                            "with a digit");
    if (!name[0] || strlen(name) >= QMP_FDNAME_MAX)
        return gw_error_set(err, -EINVAL, "Parameter 'fdname' expects a name of 1 to %d "
                            "characters", QMP_FDNAME_MAX - 1);
    return 0;
}

static int getfd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct qmp_server *server = opaque;
    struct qmp_session *session = server->current;
    const char *name = json_string_value(json_object_get(args, "fdname"));
    struct qmp_named_fd *slot;
    int fd, rc;

    (void)ret;
    if (!session || session->received_fd < 0)
        return gw_error_set(err, -EINVAL, "No file descriptor supplied via SCM_RIGHTS");
    /* Taken whatever happens next, as QEMU does: a refused name closes it. */
    fd = session->received_fd;
    session->received_fd = -1;
    if ((rc = check_name(name, err)) < 0) {
        close(fd);
        return rc;
    }
    slot = find_fd(server, name);
    if (slot) {
        close(slot->fd);   /* a name given again names the new descriptor */
        slot->fd = fd;
        return 0;
    }
    for (unsigned i = 0; i < QMP_FDS_MAX; i++) {
        if (server->fds[i].fd < 0) {
            snprintf(server->fds[i].name, sizeof(server->fds[i].name), "%s", name);
            server->fds[i].fd = fd;
            return 0;
        }
    }
    close(fd);
    return gw_error_set(err, -ENOSPC, "the monitor already holds %d named file descriptors; "
                        "release one with closefd or use one first", QMP_FDS_MAX);
}

static int closefd(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct qmp_server *server = opaque;
    int fd = qmp_server_take_fd(server, json_string_value(json_object_get(args, "fdname")),
                                err);

    (void)ret;
    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

int qmp_server_take_fd(struct qmp_server *server, const char *name, struct gw_error *err)
{
    struct qmp_named_fd *slot = name ? find_fd(server, name) : NULL;
    int fd;

    if (!slot)
        return gw_error_set(err, -ENOENT, "File descriptor named '%s' not found",
                            name ? name : "");
    fd = slot->fd;
    slot->fd = -1;
    slot->name[0] = '\0';
    return fd;
}

static const struct qmp_arg fdname_args[] = {
    { "fdname", QMP_ARG_STR, false }, { NULL, 0, false },
};

int qmp_fds_register(struct qmp_server *server)
{
    for (unsigned i = 0; i < QMP_FDS_MAX; i++)
        server->fds[i].fd = -1;
    server->getfd = (struct qmp_command){
        .name = "getfd", .args = fdname_args, .handler = getfd, .opaque = server,
    };
    server->closefd = (struct qmp_command){
        .name = "closefd", .args = fdname_args, .handler = closefd, .opaque = server,
    };
    if (qmp_server_register(server, &server->getfd, NULL) < 0 ||
        qmp_server_register(server, &server->closefd, NULL) < 0)
        return -EEXIST;
    return 0;
}

void qmp_fds_close_all(struct qmp_server *server)
{
    for (unsigned i = 0; i < QMP_FDS_MAX; i++) {
        if (server->fds[i].fd >= 0)
            close(server->fds[i].fd);
        server->fds[i].fd = -1;
    }
}
