/* The QMP command table: registration, look-up and execution with the
 * arguments checked first, and the server's own query-commands and
 * query-version. Calls nothing above it: sessions and the socket server
 * call in. */
#include "qmp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

/* godwit's own version in QEMU's shape, so clients that ask find an answer;
 * the numbers are godwit's, not a QEMU release's (docs/qmp.md). */
json_t *qmp_version(const struct qmp_server *server)
{
    int major = 0, minor = 0, micro = 0;

    if (sscanf(GODWIT_VERSION, "%d.%d.%d", &major, &minor, &micro) < 1)
        major = minor = micro = 0;
    return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", micro, "minor", minor, "major",
                     major, "package", server->package);
}

static int query_version(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    (void)args;
    (void)err;
    *ret = qmp_version(opaque);
    return 0;
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

void qmp_commands_register_builtin(struct qmp_server *server)
{
    server->query_commands = (struct qmp_command){
        .name = "query-commands", .handler = query_commands, .opaque = server,
    };
    server->query_version = (struct qmp_command){
        .name = "query-version", .handler = query_version, .opaque = server,
    };
    qmp_server_register(server, &server->query_commands, NULL);
    qmp_server_register(server, &server->query_version, NULL);
}
