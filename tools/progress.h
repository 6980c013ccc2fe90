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
    int64_t transferred, remaining, total, duplicate, normal;
    int64_t dirty_pages_rate, dirty_sync_count, downtime_bytes;
    int64_t multifd_bytes;
    double mbps;
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

/* One line, no newline: "active  first pass 37.5%  812.3 MB/s  ...". The
 * fields come most useful first, so a line cut to fit a terminal keeps them.
 * multifd (may be NULL): with its capability on, the channels and the bytes
 * sent on them end the line. */
void progress_format(const struct migration_stats *stats,
                     const struct multifd_settings *multifd, char *buf, size_t len);

/* Appends printf-style text to buf at *used and moves *used past it; text
 * beyond len is cut, and *used then stays at len. */
void progress_append(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Cuts line to at most width characters, at a field boundary when it has to. */
void progress_fit(char *line, size_t width);

/* The report, one "name: value" line per field query-migrate gave, and the
 * multifd channels, compression and bytes when multifd (may be NULL) has
 * its capability on. The error line is left out when with_error is false
 * (the caller prints the reason on stderr instead). */
void report_print(FILE *out, const struct migration_stats *stats,
                  const struct multifd_settings *multifd, bool with_error);

#endif
