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
#include "settings.h"

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
    const struct multifd_settings *multifd;     /* NULL: not shown */
    bool tty;
    bool drawn;             /* a tty line is on screen without its newline */
    int64_t start, next_plain;
};

static void display_draw(struct display *d, const struct migration_stats *stats)
{
    char line[512];
    int64_t now = now_ms();

    progress_format(stats, d->multifd, line, sizeof(line));
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

/* The migration's two or three connections: the source, the destination
 * (--dest, until it listens), and what the source migrates with. */
struct session {
    const struct migrate_request *req;
    struct qmp_client *source, *destination;
    char destination_name[160];     /* "the destination VM (unix:PATH)" */
    bool destination_listens;       /* migrate-incoming was accepted */
    struct shared_settings settings;
};

static int connect_all(struct session *s, struct gw_error *err)
{
    const struct migrate_request *req = s->req;
    int rc = qmp_client_connect_unix(req->qmp_path, req->timeout_ms, &s->source, err);

    if (rc < 0 || !req->dest_qmp_path)
        return rc;
    snprintf(s->destination_name, sizeof(s->destination_name),
             "the destination VM (unix:%s)", req->dest_qmp_path);
    rc = qmp_client_connect_unix(req->dest_qmp_path, req->timeout_ms, &s->destination, err);
    if (rc < 0)
        gw_error_prefix(err, "--dest");
    return rc;
}

static void session_close(struct session *s)
{
    qmp_client_close(s->source);
    qmp_client_close(s->destination);
    settings_free(&s->settings);
}

/* Without --dest the destination is someone else's to set up: when the
 * command line set what both sides must share, or the source has multifd or
 * channel headers on, say what the destination needs (one line). */
static void note_destination_settings(struct session *s)
{
    const struct multifd_settings *m = &s->settings.multifd;
    struct display quiet = { 0 };
    char settings[512];

    if (!settings_shared_given(&s->req->multifd) && !m->multifd && !m->channel_header)
        return;
    settings_describe(&s->settings, settings, sizeof(settings));
    say(&quiet, "note: the destination refuses a migration whose settings differ from the "
                "source's: give it the same (%s) before migrate-incoming, or let godwit do it "
                "with --dest unix:PATH", settings);
}

/* --dest: the source's settings, then migrate-incoming on the --to URI. */
static int start_destination(struct session *s, struct gw_error *err)
{
    int rc = settings_apply_to_destination(s->destination, s->destination_name, &s->settings,
                                           err);

    if (rc == 0) {
        rc = qmp_client_execute(s->destination, "migrate-incoming",
                                json_pack("{s:s}", "uri", s->req->uri), NULL, NULL, err);
        if (rc == QMP_CLIENT_EREMOTE)
            gw_error_prefix(err, "%s refused migrate-incoming %s", s->destination_name,
                            s->req->uri);
        s->destination_listens = rc == 0;
    }
    qmp_client_close(s->destination);   /* it runs its side by itself from here */
    s->destination = NULL;
    return rc;
}

static int start_source(struct session *s, struct gw_error *err)
{
    const struct migrate_request *req = s->req;
    int rc = qmp_client_execute(s->source, "migrate", json_pack("{s:s}", "uri", req->uri),
                                NULL, NULL, err);

    if (rc == QMP_CLIENT_EREMOTE)
        gw_error_prefix(err, "the VM refused to migrate to %s", req->uri);
    return rc;
}

/* Sends each command that prepares and starts the migration, on both
 * sides. On a QMP error the VM's own sentence is shown with the command it
 * refused. */
static int start(struct session *s, struct gw_error *err)
{
    int rc;

    qmp_client_keep_events(s->source, s->req->events);
    rc = settings_apply_to_source(s->source, s->req, err);
    if (rc == 0)
        rc = settings_read(s->source, &s->settings, err);
    if (rc == 0 && s->destination)
        rc = start_destination(s, err);
    else if (rc == 0)
        note_destination_settings(s);
    if (rc == 0)
        rc = start_source(s, err);
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
                  const struct multifd_settings *multifd, struct migration_stats *stats,
                  bool *cancel_sent)
{
    struct display d = { .multifd = multifd, .tty = isatty(STDOUT_FILENO), .start = now_ms() };
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

static int finish(const struct migration_stats *stats, const struct multifd_settings *multifd,
                  bool cancel_sent)
{
    struct display quiet = { 0 };

    report_print(stdout, stats, multifd, false);
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

static void say_start_failed(const struct session *s, const struct gw_error *err)
{
    struct display quiet = { 0 };

    if (s->destination_listens)
        say(&quiet, "%s; the destination VM still listens on %s: quit it, or run godwit "
                    "again without --dest", err->msg, s->req->uri);
    else
        say(&quiet, "%s", err->msg);
}

int migrate_run(const struct migrate_request *req)
{
    struct sigaction sa = { .sa_handler = on_sigint };   /* no SA_RESTART: wake poll() */
    struct session session = { .req = req };
    struct migration_stats stats;
    struct display quiet = { 0 };
    struct gw_error err;
    bool cancel_sent = false;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (connect_all(&session, &err) < 0) {
        say(&quiet, "%s", err.msg);
        session_close(&session);
        return 1;
    }
    /* From here Ctrl-C must not kill us: a migration may be running. */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    if (start(&session, &err) < 0) {
        say_start_failed(&session, &err);
        session_close(&session);
        return 1;
    }
    rc = follow(session.source, req, &session.settings.multifd, &stats, &cancel_sent);
    rc = rc < 0 ? 1 : finish(&stats, &session.settings.multifd, cancel_sent);
    session_close(&session);
    return rc;
}

int status_run(const char *qmp_path, int timeout_ms)
{
    struct shared_settings settings = { 0 };
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
    if (rc == 0)
        rc = settings_read(qmp, &settings, &err);
    qmp_client_close(qmp);
    if (rc < 0) {
        say(&quiet, "%s", err.msg);
        return 1;
    }
    /* The settings are today's: a finished migration that sent nothing on
     * multifd channels ran without them. */
    if (migration_status_is_final(stats.status) && stats.multifd_bytes <= 0)
        settings.multifd.multifd = false;
    if (!strcmp(stats.status, "none"))
        puts("no migration has run");
    else
        report_print(stdout, &stats, &settings.multifd, true);
    settings_free(&settings);
    return 0;
}
