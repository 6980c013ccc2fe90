/* HMP, QEMU's human monitor, reached through the QMP command
 * human-monitor-command. Commands are registered by whoever owns them; "info
 * X" subcommands are registered under their two-word name. */
#ifndef GODWIT_HMP_H
#define GODWIT_HMP_H

#include <godwit/error.h>
#include <godwit/qmp.h>

/* Appends human-readable output to out (a growing buffer the caller frees)
 * and returns 0, or returns a negative errno with err filled. args is the text
 * after the command name, with leading spaces removed. */
struct hmp_output {
    char *text;
    size_t len;
};
void hmp_printf(struct hmp_output *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

typedef int (*hmp_handler_fn)(const char *args, struct hmp_output *out,
                              struct gw_error *err, void *opaque);

struct hmp_command {
    const char *name;     /* "stop", or "info status" */
    const char *params;   /* for help: "" or "[name]" */
    const char *help;     /* one line */
    hmp_handler_fn handler;
    void *opaque;
};

/* Registers cmd (not copied) and, on first use, the QMP command
 * human-monitor-command on server. */
int hmp_register(struct qmp_server *server, const struct hmp_command *cmd,
                 struct gw_error *err);

/* Runs one HMP command line; the output (or the error text, as QEMU does) is
 * returned as a new string the caller frees. */
char *hmp_execute(struct qmp_server *server, const char *command_line);

#endif
