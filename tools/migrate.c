/* Drives one migration from the source's side over QMP and shows it. The
 * guest's fate is the VM's business: on Ctrl-C this sends migrate_cancel and
 * waits for the VM to say so; it never leaves a migration unaccounted for. */
#include "migrate.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"
#include "qmp_client.h"

#define POLL_INTERVAL_MS 100
#define PLAIN_INTERVAL_MS 1000
/* How long "none" may follow an accepted migrate before we stop believing it. */
#define NONE_GRACE_MS 10000

static volatile sig_atomic_t interrupts;

static void on_sigint(int sig)
{
    (void)sig;
    if (interrupts < 2)
        interrupts++;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The progress display: redrawn in place on a terminal, one line a second
 * elsewhere. */
struct display {
    bool tty;
    bool drawn;             /* a tty line is on screen without its newline */
    int64_t start, next_plain;
};

static void display_draw(struct display *d, const struct migration_stats *stats)
{
    char line[512];
    int64_t now = now_ms();

    progress_format(stats, line, sizeof(line));
    if (d->tty) {
        struct winsize ws;
        size_t width = 80;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
            width = ws.ws_col;
        progress_fit(line, width - 1);     /* a wrapped line could not be redrawn */
        printf("\r%s\033[K", line);
        d->drawn = true;
    } else if (now >= d->next_plain) {
        printf("[%6.1fs] %s\n", (double)(now - d->start) / 1000, line);
        d->next_plain = d->next_plain + PLAIN_INTERVAL_MS > now
                        ? d->next_plain + PLAIN_INTERVAL_MS : now + PLAIN_INTERVAL_MS;
    }
    fflush(stdout);
}

/* Ends the line being redrawn, so what follows starts on its own line. */
static void display_end(struct display *d)
{
    if (d->drawn)
        putchar('\n');
    d->drawn = false;
    fflush(stdout);
}

static void say(struct display *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct display *d, const char *fmt, ...)
{
    va_list ap;

    display_end(d);
    fputs("godwit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int set_parameters(struct qmp_client *qmp, const struct migrate_request *req,
                          struct gw_error *err)
{
    json_t *args = json_object();

    if (req->has_downtime_limit)
        json_object_set_new(args, "downtime-limit", json_integer((json_int_t)req->downtime_limit));
    if (req->has_max_bandwidth)
        json_object_set_new(args, "max-bandwidth", json_integer((json_int_t)req->max_bandwidth));
    if (req->has_avail_switchover_bandwidth)
        json_object_set_new(args, "avail-switchover-bandwidth",
                            json_integer((json_int_t)req->avail_switchover_bandwidth));
    if (!json_object_size(args)) {
        json_decref(args);
        return 0;
    }
    return qmp_client_execute(qmp, "migrate-set-parameters", args, NULL, NULL, err);
}

static int enable_events(struct qmp_client *qmp, struct gw_error *err)
{
    json_t *args = json_pack("{s:[{s:s, s:b}]}", "capabilities",
                             "capability", "events", "state", 1);

    qmp_client_keep_events(qmp, true);
    return qmp_client_execute(qmp, "migrate-set-capabilities", args, NULL, NULL, err);
}

/* Sends each command that prepares and starts the migration. On a QMP error
 * the VM's own sentence is shown with the command it refused. */
static int start(struct qmp_client *qmp, const struct migrate_request *req,
                 struct gw_error *err)
{
    int rc = 0;

    if (req->events) {
        rc = enable_events(qmp, err);
        if (rc == QMP_CLIENT_EREMOTE)
            gw_error_prefix(err, "the VM refused the 'events' capability");
    }
    if (rc == 0) {
        rc = set_parameters(qmp, req, err);
        if (rc == QMP_CLIENT_EREMOTE)
            gw_error_prefix(err, "the VM refused migrate-set-parameters");
    }
    if (rc == 0) {
        rc = qmp_client_execute(qmp, "migrate", json_pack("{s:s}", "uri", req->uri),
                                NULL, NULL, err);
        if (rc == QMP_CLIENT_EREMOTE)
            gw_error_prefix(err, "the VM refused to migrate to %s", req->uri);
    }
    return rc;
}

static int query(struct qmp_client *qmp, struct migration_stats *stats, struct gw_error *err)
{
    json_t *info;
    int rc = qmp_client_execute(qmp, "query-migrate", NULL, &info, NULL, err);

    if (rc == QMP_CLIENT_EREMOTE)
        gw_error_prefix(err, "query-migrate failed");
    if (rc < 0)
        return rc;
    migration_stats_parse(info, stats);
    json_decref(info);
    return 0;
}

/* Sleeps until deadline, waking early for a MIGRATION event (the status
 * changed: worth a query now) or a signal. */
static int wait_tick(struct qmp_client *qmp, int64_t deadline, struct gw_error *err)
{
    json_t *event;
    int rc;

    while (!interrupts) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        rc = qmp_client_next_event(qmp, (int)left, &event, err);
        if (rc <= 0)
            return rc;
        rc = !strcmp(json_string_value(json_object_get(event, "event")) ?: "", "MIGRATION");
        json_decref(event);
        if (rc)
            return 0;
    }
    return 0;
}

/* Ctrl-C once: migrate_cancel, keep following. Twice: stop waiting. */
static int handle_interrupt(struct qmp_client *qmp, const struct migrate_request *req,
                            struct display *d, bool *cancel_sent)
{
    struct gw_error err;

    if (interrupts >= 2) {
        say(d, "stopped waiting at the second Ctrl-C; migrate_cancel was sent; "
               "see the outcome with: godwit status --qmp unix:%s", req->qmp_path);
        return -EINTR;
    }
    if (*cancel_sent)
        return 0;
    *cancel_sent = true;
    say(d, "Ctrl-C: cancelling the migration (migrate_cancel); the guest stays on the "
           "source; Ctrl-C again to stop waiting");
    if (qmp_client_execute(qmp, "migrate_cancel", NULL, NULL, NULL, &err) < 0) {
        say(d, "migrate_cancel: %s", err.msg);
        return err.code == QMP_CLIENT_EREMOTE ? 0 : err.code;
    }
    return 0;
}

/* Polls query-migrate until the status is final. 0 with stats filled, or a
 * negative errno (already reported). */
static int follow(struct qmp_client *qmp, const struct migrate_request *req,
                  struct migration_stats *stats, bool *cancel_sent)
{
    struct display d = { .tty = isatty(STDOUT_FILENO), .start = now_ms() };
    int64_t next = d.start, none_since = d.start;
    struct gw_error err;
    int rc;

    d.next_plain = d.start;
    for (;;) {
        if (interrupts && handle_interrupt(qmp, req, &d, cancel_sent) < 0)
            return -EINTR;
        next = now_ms() + POLL_INTERVAL_MS;
        rc = query(qmp, stats, &err);
        if (rc < 0)
            break;
        display_draw(&d, stats);
        if (migration_status_is_final(stats->status))
            break;
        if (strcmp(stats->status, "none"))
            none_since = now_ms();
        else if (now_ms() - none_since > NONE_GRACE_MS) {
            rc = gw_error_set(&err, -EPROTO, "the VM still reports no migration %d s after "
                              "it accepted migrate", NONE_GRACE_MS / 1000);
            break;
        }
        rc = wait_tick(qmp, next, &err);
        if (rc < 0)
            break;
    }
    display_end(&d);
    if (rc < 0)
        say(&d, "%s; the migration's state is unknown: check it with godwit status --qmp "
                "unix:%s", err.msg, req->qmp_path);
    return rc;
}

static int finish(const struct migration_stats *stats, bool cancel_sent)
{
    struct display quiet = { 0 };

    report_print(stdout, stats, false);
    fflush(stdout);
    if (!strcmp(stats->status, "completed")) {
        if (cancel_sent)
            say(&quiet, "the migration completed before migrate_cancel took effect; the "
                        "guest now runs on the destination");
        return 0;
    }
    if (!strcmp(stats->status, "cancelled"))
        say(&quiet, "migration cancelled%s%s%s", cancel_sent ? " (Ctrl-C); the guest keeps "
            "running on the source" : " by the VM or another client", stats->error_desc[0]
            ? ": " : "", stats->error_desc);
    else
        say(&quiet, "migration failed: %s", stats->error_desc[0] ? stats->error_desc
            : "the VM gave no reason (no error-desc)");
    return 1;
}

int migrate_run(const struct migrate_request *req)
{
    struct sigaction sa = { .sa_handler = on_sigint };   /* no SA_RESTART: wake poll() */
    struct migration_stats stats;
    struct qmp_client *qmp;
    struct display quiet = { 0 };
    struct gw_error err;
    bool cancel_sent = false;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (qmp_client_connect_unix(req->qmp_path, req->timeout_ms, &qmp, &err) < 0) {
        say(&quiet, "%s", err.msg);
        return 1;
    }
    /* From here Ctrl-C must not kill us: a migration may be running. */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    if (start(qmp, req, &err) < 0) {
        say(&quiet, "%s", err.msg);
        qmp_client_close(qmp);
        return 1;
    }
    rc = follow(qmp, req, &stats, &cancel_sent);
    qmp_client_close(qmp);
    return rc < 0 ? 1 : finish(&stats, cancel_sent);
}

int status_run(const char *qmp_path, int timeout_ms)
{
    struct migration_stats stats;
    struct qmp_client *qmp;
    struct display quiet = { 0 };
    struct gw_error err;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (qmp_client_connect_unix(qmp_path, timeout_ms, &qmp, &err) < 0) {
        say(&quiet, "%s", err.msg);
        return 1;
    }
    rc = query(qmp, &stats, &err);
    qmp_client_close(qmp);
    if (rc < 0) {
        say(&quiet, "%s", err.msg);
        return 1;
    }
    if (!strcmp(stats.status, "none"))
        puts("no migration has run");
    else
        report_print(stdout, &stats, true);
    return 0;
}
