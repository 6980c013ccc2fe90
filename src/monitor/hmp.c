/* The human monitor: a table of commands reached through QMP's
 * human-monitor-command. Errors are part of the output text, as in QEMU,
 * so the QMP command itself only fails on bad QMP arguments. */
#include <godwit/hmp.h>

#include "qmp_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void hmp_printf(struct hmp_output *out, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *grown;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    grown = realloc(out->text, out->len + (size_t)n + 1);
    if (!grown)
        return;
    out->text = grown;
    va_start(ap, fmt);
    vsnprintf(out->text + out->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    out->len += (size_t)n;
}

static const struct hmp_command *find_command(struct qmp_server *server, const char *name,
                                              size_t len)
{
    for (unsigned i = 0; i < server->nr_hmp_commands; i++) {
        const struct hmp_command *cmd = server->hmp_commands[i];
        if (strlen(cmd->name) == len && !strncmp(cmd->name, name, len))
            return cmd;
    }
    return NULL;
}

static void print_help(struct qmp_server *server, struct hmp_output *out, bool info_only)
{
    for (unsigned i = 0; i < server->nr_hmp_commands; i++) {
        const struct hmp_command *cmd = server->hmp_commands[i];
        if (info_only && strncmp(cmd->name, "info ", 5))
            continue;
        hmp_printf(out, "%s%s%s -- %s\r\n", cmd->name, cmd->params[0] ? " " : "",
                   cmd->params, cmd->help);
    }
}

static int help_handler(const char *args, struct hmp_output *out, struct gw_error *err,
                        void *opaque)
{
    (void)args;
    (void)err;
    print_help(opaque, out, false);
    return 0;
}

static const char *skip_spaces(const char *text)
{
    while (isspace((unsigned char)*text))
        text++;
    return text;
}

static size_t word_length(const char *text)
{
    size_t len = 0;

    while (text[len] && !isspace((unsigned char)text[len]))
        len++;
    return len;
}

char *hmp_execute(struct qmp_server *server, const char *command_line)
{
    struct hmp_output out = { 0 };
    struct gw_error err = { 0 };
    const char *name = skip_spaces(command_line), *args;
    size_t len = word_length(name);
    const struct hmp_command *cmd;

    if (len == 0)
        return strdup("");
    if (len == 4 && !strncmp(name, "info", 4)) {
        const char *sub = skip_spaces(name + 4);
        size_t sub_len = word_length(sub);
        if (sub_len == 0) {
            print_help(server, &out, true);
            return out.text ? out.text : strdup("");
        }
        len = (size_t)(sub - name) + sub_len;
        char full[64];
        snprintf(full, sizeof(full), "info %.*s", (int)sub_len, sub);
        cmd = find_command(server, full, strlen(full));
    } else {
        cmd = find_command(server, name, len);
    }
    if (!cmd) {
        hmp_printf(&out, "unknown command: '%.*s'\r\n", (int)len, name);
        return out.text;
    }
    args = skip_spaces(name + len);
    if (cmd->handler(args, &out, &err, cmd->opaque) < 0)
        hmp_printf(&out, "Error: %s\r\n", err.msg);
    return out.text ? out.text : strdup("");
}

static const struct qmp_arg hmc_args[] = {
    { "command-line", QMP_ARG_STR, false },
    { "cpu-index", QMP_ARG_INT, true },
    { NULL, 0, false },
};

static int hmc_handler(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    char *text = hmp_execute(opaque, json_string_value(json_object_get(args, "command-line")));

    if (!text)
        return gw_error_set(err, -ENOMEM, "out of memory running the HMP command");
    *ret = json_string(text);
    free(text);
    return 0;
}

static const struct qmp_command hmc_command = {
    .name = "human-monitor-command", .args = hmc_args, .handler = hmc_handler,
};
static const struct hmp_command help_command = {
    .name = "help", .params = "", .help = "list the commands", .handler = help_handler,
};

static int add_command(struct qmp_server *server, const struct hmp_command *cmd,
                       struct gw_error *err)
{
    if (find_command(server, cmd->name, strlen(cmd->name)))
        return gw_error_set(err, -EEXIST, "HMP command '%s' is registered twice", cmd->name);
    if (server->nr_hmp_commands == QMP_COMMANDS_MAX)
        return gw_error_set(err, -ENOSPC, "more than %d HMP commands", QMP_COMMANDS_MAX);
    server->hmp_commands[server->nr_hmp_commands++] = cmd;
    return 0;
}

int hmp_register(struct qmp_server *server, const struct hmp_command *cmd,
                 struct gw_error *err)
{
    if (!server->hmc_registered) {
        /* The QMP command needs the server as its opaque: register a copy. */
        server->hmc = hmc_command;
        server->hmc.opaque = server;
        server->help = help_command;
        server->help.opaque = server;
        int rc = qmp_server_register(server, &server->hmc, err);
        if (rc < 0 || (rc = add_command(server, &server->help, err)) < 0)
            return rc;
        server->hmc_registered = true;
    }
    return add_command(server, cmd, err);
}
