/* Drives one migration from the source's side over QMP and shows it. The
 * guest's fate is the VM's business: on Ctrl-C or at the --timeout this
 * sends migrate_cancel (or, with --on-timeout switchover, the VM's
 * x-migrate-switchover-now) and waits for the VM to say how it ended; it
 * never leaves a migration unaccounted for. */
#include "migrate.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "display.h"
#include "progress.h"
#include "qmp_client.h"
#include "settings.h"

#define POLL_INTERVAL_MS 100
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
    struct display quiet = { .quiet = true };
    char settings[512];

    if (!settings_shared_given(&s->req->multifd) && !m->multifd && !m->channel_header)
        return;
    settings_describe(&s->settings, settings, sizeof(settings));
    display_say(&quiet, "note: the destination refuses a migration whose settings differ from the "
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

/* migrate's arguments: the URI, or for --local QEMU's channels, main and cpr
 * (both unix sockets, checked with the options). */
static json_t *migrate_arguments(const struct migrate_request *req)
{
    if (!req->cpr_path)
        return json_pack("{s:s}", "uri", req->uri);
    return json_pack("{s:[{s:s,s:{s:s,s:s,s:s}},{s:s,s:{s:s,s:s,s:s}}]}", "channels",
                     "channel-type", "main", "addr", "transport", "socket", "type", "unix",
                     "path", req->uri + 5,
                     "channel-type", "cpr", "addr", "transport", "socket", "type", "unix",
                     "path", req->cpr_path);
}

static int start_source(struct session *s, struct gw_error *err)
{
    const struct migrate_request *req = s->req;
    int rc = qmp_client_execute(s->source, "migrate", migrate_arguments(req), NULL, NULL, err);

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

/* query-migrate into stats; *keep (may be NULL) holds the answer itself. */
static int query(struct qmp_client *qmp, struct migration_stats *stats, json_t **keep,
                 struct gw_error *err)
{
    json_t *info;
    int rc = qmp_client_execute(qmp, "query-migrate", NULL, &info, NULL, err);

    if (rc == QMP_CLIENT_EREMOTE)
        gw_error_prefix(err, "query-migrate failed");
    if (rc < 0)
        return rc;
    migration_stats_parse(info, stats);
    if (keep) {
        json_decref(*keep);
        *keep = info;
    } else {
        json_decref(info);
    }
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

/* What the following loop did to the migration, for the final sentence. */
struct follow_state {
    bool postcopy_sent;         /* --postcopy-after: migrate-start-postcopy went */
    int64_t last_sync;          /* --postcopy-after auto: the pass and what it left */
    int64_t last_remaining;
    bool cancel_sent;           /* Ctrl-C sent migrate_cancel */
    bool timed_out;             /* --timeout struck and its action was sent */
    char reason_at_timeout[512];
    json_t *last_info;          /* the last query-migrate answer, for --json */
};

/* Sends command and says so; a refusal is only worth a line (the final
 * status tells how it ended). */
static int send_action(struct qmp_client *qmp, struct display *d, const char *command)
{
    struct gw_error err;

    if (qmp_client_execute(qmp, command, NULL, NULL, NULL, &err) < 0) {
        display_say(d, "%s: %s", command, err.msg);
        return err.code == QMP_CLIENT_EREMOTE ? 0 : err.code;
    }
    return 0;
}

/* Ctrl-C once: migrate_cancel, keep following. Twice: stop waiting. */
static int handle_interrupt(struct qmp_client *qmp, const struct migrate_request *req,
                            struct display *d, struct follow_state *state)
{
    if (interrupts >= 2) {
        display_say(d, "stopped waiting at the second Ctrl-C; migrate_cancel was sent; "
                       "see the outcome with: godwit status --qmp unix:%s", req->qmp_path);
        return -EINTR;
    }
    if (state->cancel_sent)
        return 0;
    state->cancel_sent = true;
    display_say(d, "Ctrl-C: cancelling the migration (migrate_cancel); the guest stays on the "
                   "source; Ctrl-C again to stop waiting");
    return send_action(qmp, d, "migrate_cancel");
}

/* --timeout: once, when it strikes, the action --on-timeout names. */
static int handle_timeout(struct qmp_client *qmp, const struct migrate_request *req,
                          struct display *d, const struct migration_stats *stats,
                          struct follow_state *state)
{
    state->timed_out = true;
    snprintf(state->reason_at_timeout, sizeof(state->reason_at_timeout), "%s", stats->reason);
    if (!req->on_timeout_switchover) {
        if (!d->quiet)
            display_say(d, "--timeout %u s reached: cancelling the migration (migrate_cancel); "
                           "the guest stays on the source", req->timeout_s);
        return send_action(qmp, d, "migrate_cancel");
    }
    if (!d->quiet)
        display_say(d, "--timeout %u s reached: switching over now, whatever the downtime "
                       "(x-migrate-switchover-now)", req->timeout_s);
    return send_action(qmp, d, "x-migrate-switchover-now");
}

/* --postcopy-after: is it time? auto: a pass ended and left at least 90%
 * of what the one before left (the precopy loop's own rule for "still
 * shrinking", docs/qmp.md). */
static bool postcopy_due(const struct migrate_request *req, const struct migration_stats *stats,
                         int64_t elapsed_ms, struct follow_state *state)
{
    if (req->postcopy_after_s < 0 || state->postcopy_sent || strcmp(stats->status, "active"))
        return false;
    if (req->postcopy_after_s != POSTCOPY_AUTO)
        return elapsed_ms >= (int64_t)req->postcopy_after_s * 1000;
    if (stats->dirty_sync_count <= state->last_sync)
        return false;
    bool stuck = state->last_sync >= 2 && stats->ram_remaining * 10 >= state->last_remaining * 9;
    state->last_sync = stats->dirty_sync_count;
    state->last_remaining = stats->ram_remaining;
    return stuck;
}

static int start_postcopy(struct qmp_client *qmp, struct display *d, struct follow_state *state,
                          const struct migrate_request *req)
{
    state->postcopy_sent = true;
    if (!d->quiet)
        display_say(d, req->postcopy_after_s == POSTCOPY_AUTO
                           ? "passes no longer shrink what is left: switching to postcopy "
                             "(migrate-start-postcopy)"
                           : "--postcopy-after %d s: switching to postcopy "
                             "(migrate-start-postcopy)", req->postcopy_after_s);
    return send_action(qmp, d, "migrate-start-postcopy");
}

/* What a not-converging verdict line adds: godwit's own way out. */
static void set_hint(struct display *d, const struct migrate_request *req)
{
    if (!req->timeout_s)
        snprintf(d->not_converging_hint, sizeof(d->not_converging_hint),
                 ", or end it with --timeout SECONDS (godwit migrate --help)");
    else
        snprintf(d->not_converging_hint, sizeof(d->not_converging_hint),
                 "; --timeout %u %s at %u s", req->timeout_s,
                 req->on_timeout_switchover ? "switches over" : "cancels it", req->timeout_s);
}

/* Polls query-migrate until the status is final. 0 with stats filled, or a
 * negative errno (already reported). */
static int follow(struct qmp_client *qmp, const struct migrate_request *req,
                  const struct multifd_settings *multifd, struct migration_stats *stats,
                  struct follow_state *state)
{
    struct display d;
    int64_t start = now_ms(), next, none_since = start;
    int64_t deadline = req->timeout_s ? start + (int64_t)req->timeout_s * 1000 : 0;
    struct gw_error err;
    int rc;

    display_init(&d, multifd, req->quiet || req->json, start);
    set_hint(&d, req);
    for (;;) {
        if (interrupts && handle_interrupt(qmp, req, &d, state) < 0)
            return -EINTR;
        next = now_ms() + POLL_INTERVAL_MS;
        rc = query(qmp, stats, &state->last_info, &err);
        if (rc < 0)
            break;
        display_draw(&d, stats, now_ms());
        if (migration_status_is_final(stats->status))
            break;
        if (postcopy_due(req, stats, now_ms() - start, state) &&
            (rc = start_postcopy(qmp, &d, state, req)) < 0)
            break;
        if (deadline && now_ms() >= deadline && !state->timed_out && !state->cancel_sent &&
            (rc = handle_timeout(qmp, req, &d, stats, state)) < 0)
            break;
        if (deadline && !state->timed_out && next > deadline)
            next = deadline;
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
        display_say(&d, "%s; the migration's state is unknown: check it with godwit status --qmp "
                "unix:%s", err.msg, req->qmp_path);
    return rc;
}

/* How it ended, from the final status and what this run sent. */
static void outcome_of(const struct migration_stats *stats, const struct migrate_request *req,
                       const struct follow_state *state, struct migration_outcome *outcome)
{
    bool completed = !strcmp(stats->status, "completed");

    *outcome = (struct migration_outcome){ .timeout_s = req->timeout_s };
    snprintf(outcome->reason_at_timeout, sizeof(outcome->reason_at_timeout), "%s",
             state->reason_at_timeout);
    if (completed)
        outcome->end = state->timed_out && req->on_timeout_switchover
                       ? END_TIMED_OUT_SWITCHED_OVER : END_COMPLETED;
    else if (strcmp(stats->status, "cancelled"))
        outcome->end = END_FAILED;
    else if (state->timed_out && !req->on_timeout_switchover)
        outcome->end = END_TIMED_OUT_CANCELLED;
    else
        outcome->end = state->cancel_sent ? END_CANCELLED_BY_USER : END_CANCELLED_ELSEWHERE;
}

static int finish(const struct migration_stats *stats, const struct migrate_request *req,
                  const struct multifd_settings *multifd, const struct follow_state *state)
{
    struct display quiet = { .quiet = true };
    struct migration_outcome outcome;
    char sentence[1400];

    outcome_of(stats, req, state, &outcome);
    if (req->json)
        report_print_json(stdout, &outcome, stats, state->last_info);
    else
        report_print(stdout, stats, multifd, &outcome, false);
    fflush(stdout);
    if (outcome.end == END_COMPLETED || outcome.end == END_TIMED_OUT_SWITCHED_OVER) {
        if (state->cancel_sent || (state->timed_out && !req->on_timeout_switchover))
            display_say(&quiet, "the migration completed before migrate_cancel took effect; "
                        "the guest now runs on the destination");
        return 0;
    }
    outcome_sentence(&outcome, stats, sentence, sizeof(sentence));
    display_say(&quiet, "%s", sentence);
    return 1;
}

static void say_start_failed(const struct session *s, const struct gw_error *err)
{
    struct display quiet = { .quiet = true };

    if (s->destination_listens)
        display_say(&quiet, "%s; the destination VM still listens on %s: quit it, or run godwit "
                    "again without --dest", err->msg, s->req->uri);
    else
        display_say(&quiet, "%s", err->msg);
}

int migrate_run(const struct migrate_request *req)
{
    struct sigaction sa = { .sa_handler = on_sigint };   /* no SA_RESTART: wake poll() */
    struct session session = { .req = req };
    struct migration_stats stats;
    struct display quiet = { .quiet = true };
    struct follow_state state = { 0 };
    struct gw_error err;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (connect_all(&session, &err) < 0) {
        display_say(&quiet, "%s", err.msg);
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
    rc = follow(session.source, req, &session.settings.multifd, &stats, &state);
    rc = rc < 0 ? 1 : finish(&stats, req, &session.settings.multifd, &state);
    json_decref(state.last_info);
    session_close(&session);
    return rc;
}

int status_run(const char *qmp_path, int timeout_ms)
{
    struct shared_settings settings = { 0 };
    struct migration_stats stats;
    struct qmp_client *qmp;
    struct display quiet = { .quiet = true };
    struct gw_error err;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (qmp_client_connect_unix(qmp_path, timeout_ms, &qmp, &err) < 0) {
        display_say(&quiet, "%s", err.msg);
        return 1;
    }
    rc = query(qmp, &stats, NULL, &err);
    if (rc == 0)
        rc = settings_read(qmp, &settings, &err);
    qmp_client_close(qmp);
    if (rc < 0) {
        display_say(&quiet, "%s", err.msg);
        return 1;
    }
    /* The settings are today's: a finished migration that sent nothing on
     * multifd channels ran without them. */
    if (migration_status_is_final(stats.status) && stats.multifd_bytes <= 0)
        settings.multifd.multifd = false;
    if (!strcmp(stats.status, "none"))
        puts("no migration has run");
    else
        report_print(stdout, &stats, &settings.multifd, NULL, true);
    settings_free(&settings);
    return 0;
}
