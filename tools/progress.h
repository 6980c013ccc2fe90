/* What godwit shows about a migration: the numbers of one query-migrate
 * answer, the one-line progress display and the final report. Formatting
 * only: no I/O but the FILE the report is printed to. */
#ifndef GODWIT_TOOLS_PROGRESS_H
#define GODWIT_TOOLS_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* Every number is -1 when query-migrate left it out. */
struct migration_stats {
    char status[32];
    char error_desc[512];
    int64_t total_time, setup_time, downtime, expected_downtime;
    int64_t expected_downtime_at_switchover;          /* (godwit) */
    int64_t remaining;                  /* system-wide: RAM and device state */
    int64_t transferred, ram_remaining, total, duplicate, normal;
    int64_t dirty_pages_rate, dirty_sync_count, downtime_bytes;
    int64_t multifd_bytes;
    int64_t postcopy_requests, postcopy_bytes;   /* -1: no postcopy figures */
    double mbps;
    /* (godwit) "convergence": verdict "" when the VM gave none (the first
     * pass), else "converging", "not-converging" or "throttled". */
    char verdict[24];
    char reason[512];
    int64_t dirty_rate, bandwidth, eta, trend, throttle;   /* bytes/s, ms, percent */
    bool dirty_rate_at_least;           /* the dirty rate is a lower bound */
    /* (godwit) "tls": the cipher and protocol, "" without TLS */
    char tls_cipher[64], tls_protocol[32];
    bool ktls;
};

/* How the progress line is drawn: on a terminal, a bar for the first pass
 * and arrows for the trend (Unicode ones if the locale is UTF-8). */
struct progress_style {
    bool terminal, utf8;
};

/* The multifd settings the source migrates with, as it reports them
 * (query-migrate-capabilities, query-migrate-parameters); every number is
 * -1 and compression "" when the VM left it out. */
struct multifd_settings {
    bool multifd, channel_header;
    int64_t channels, device_channels, zstd_level;
    char compression[16];
};

/* Fills stats from the "return" value of query-migrate. */
void migration_stats_parse(json_t *info, struct migration_stats *stats);

/* completed, failed and cancelled: the migration will not change again. */
bool migration_status_is_final(const char *status);

/* One line, no newline: "active  first pass 37.5%  remaining 300 MiB  ...",
 * then "active  pass 4 v  remaining 39.0 MiB  dirty 1599 MB/s  link 42.1
 * MB/s  not converging  ...". The fields come most useful first, so a line
 * cut to fit a terminal keeps them. multifd (may be NULL): with its
 * capability on, the channels and the bytes sent on them end the line. */
void progress_format(const struct migration_stats *stats,
                     const struct multifd_settings *multifd,
                     const struct progress_style *style, char *buf, size_t len);

/* "12.0 MB/s": bytes per second in decimal megabytes, as the line shows
 * them. */
void rate_format(int64_t bytes_per_second, char *buf, size_t len);

/* How a migration ended, for the one sentence the report opens with. */
enum migration_end {
    END_COMPLETED,
    END_CANCELLED_BY_USER,          /* Ctrl-C */
    END_CANCELLED_ELSEWHERE,        /* the VM or another client */
    END_TIMED_OUT_CANCELLED,        /* --timeout, --on-timeout cancel */
    END_TIMED_OUT_SWITCHED_OVER,    /* --timeout, --on-timeout switchover, completed */
    END_FAILED,
};

struct migration_outcome {
    enum migration_end end;
    unsigned timeout_s;             /* --timeout, for END_TIMED_OUT_* */
    char reason_at_timeout[512];    /* the verdict when the timeout struck, or "" */
};

/* The outcome's name in --json ("completed", "cancelled", "timed-out-cancelled",
 * "timed-out-switched-over", "failed") and its sentence: how the migration
 * ended and why, with what the final stats say. */
const char *outcome_name(enum migration_end end);
void outcome_sentence(const struct migration_outcome *outcome,
                      const struct migration_stats *stats, char *buf, size_t len);

/* Appends printf-style text to buf at *used and moves *used past it; text
 * beyond len is cut, and *used then stays at len. */
void progress_append(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Cuts line to at most width characters, at a field boundary when it has to. */
void progress_fit(char *line, size_t width);

/* The report, one "name: value" line per field query-migrate gave, and the
 * multifd channels, compression and bytes when multifd (may be NULL) has
 * its capability on; it opens with the outcome's sentence when outcome is
 * not NULL. The error line is left out when with_error is false (the
 * caller prints the reason on stderr instead). */
void report_print(FILE *out, const struct migration_stats *stats,
                  const struct multifd_settings *multifd,
                  const struct migration_outcome *outcome, bool with_error);

/* --json: {"result", "outcome" (the sentence), "query-migrate" (info, the
 * VM's last answer, as it gave it)} on one line. */
void report_print_json(FILE *out, const struct migration_outcome *outcome,
                       const struct migration_stats *stats, json_t *info);

#endif
