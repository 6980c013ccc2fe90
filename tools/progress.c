/* The progress line and the report, computed from query-migrate alone so the
 * numbers a user sees are the VM's own. MB/s is decimal (mbps / 8, as QEMU's
 * "mbps" is decimal megabits); sizes are binary (size_format). */
#include "progress.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include <godwit/size.h>

static int64_t get_int(json_t *object, const char *name)
{
    json_t *value = json_object_get(object, name);

    if (json_is_integer(value))
        return json_integer_value(value) < 0 ? -1 : json_integer_value(value);
    if (json_is_real(value) && json_real_value(value) >= 0 && json_real_value(value) < 9.2e18)
        return (int64_t)json_real_value(value);
    return -1;
}

void migration_stats_parse(json_t *info, struct migration_stats *s)
{
    json_t *ram = json_object_get(info, "ram");
    json_t *mbps = json_object_get(ram, "mbps");
    const char *status = json_string_value(json_object_get(info, "status"));
    const char *desc = json_string_value(json_object_get(info, "error-desc"));

    snprintf(s->status, sizeof(s->status), "%s", status ? status : "unknown");
    snprintf(s->error_desc, sizeof(s->error_desc), "%s", desc ? desc : "");
    s->total_time = get_int(info, "total-time");
    s->setup_time = get_int(info, "setup-time");
    s->downtime = get_int(info, "downtime");
    s->expected_downtime = get_int(info, "expected-downtime");
    s->expected_downtime_at_switchover = get_int(info, "expected-downtime-at-switchover");
    s->transferred = get_int(ram, "transferred");
    s->remaining = get_int(ram, "remaining");
    s->total = get_int(ram, "total");
    s->duplicate = get_int(ram, "duplicate");
    s->normal = get_int(ram, "normal");
    s->dirty_pages_rate = get_int(ram, "dirty-pages-rate");
    s->dirty_sync_count = get_int(ram, "dirty-sync-count");
    s->downtime_bytes = get_int(ram, "downtime-bytes");
    s->multifd_bytes = get_int(ram, "multifd-bytes");
    s->mbps = json_is_number(mbps) && json_number_value(mbps) >= 0 ? json_number_value(mbps) : -1;
}

bool migration_status_is_final(const char *status)
{
    return !strcmp(status, "completed") || !strcmp(status, "failed") ||
           !strcmp(status, "cancelled");
}

static void format_duration(double seconds, char *buf, size_t len)
{
    long s = (long)(seconds + 0.5);

    if (seconds < 60)
        snprintf(buf, len, "%.1f s", seconds);
    else if (s < 3600)
        snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
}

void progress_append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*used >= len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *used, len - *used, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used = (size_t)n >= len - *used ? len : *used + (size_t)n;
}

/* "  multifd 2 channels, 12.0 MiB"; "2+1 channels" with one for device state. */
static void append_multifd(char *buf, size_t len, size_t *used,
                           const struct migration_stats *s, const struct multifd_settings *m)
{
    char size[32];

    if (!m || !m->multifd || m->channels < 0)
        return;
    progress_append(buf, len, used, "  multifd %" PRId64, m->channels);
    if (m->device_channels > 0)
        progress_append(buf, len, used, "+%" PRId64, m->device_channels);
    progress_append(buf, len, used, " channel%s",
                    m->channels == 1 && m->device_channels <= 0 ? "" : "s");
    if (s->multifd_bytes >= 0)
        progress_append(buf, len, used, ", %s",
                        size_format((uint64_t)s->multifd_bytes, size, sizeof(size)));
}

void progress_format(const struct migration_stats *s, const struct multifd_settings *multifd,
                     char *buf, size_t len)
{
    char size[32], eta[32];
    size_t used = 0;

    buf[0] = '\0';
    progress_append(buf, len, &used, "%s", s->status);
    if (s->dirty_sync_count > 1) {
        progress_append(buf, len, &used, "  pass %" PRId64, s->dirty_sync_count);
    } else if (s->transferred >= 0 && s->total > 0) {
        double percent = 100.0 * (double)s->transferred / (double)s->total;
        progress_append(buf, len, &used, "  first pass %.1f%%", percent > 100 ? 100.0 : percent);
    }
    if (s->mbps >= 0)
        progress_append(buf, len, &used, "  %.1f MB/s", s->mbps / 8);
    if (s->remaining >= 0)
        progress_append(buf, len, &used, "  remaining %s",
                        size_format((uint64_t)s->remaining, size, sizeof(size)));
    if (s->remaining >= 0 && !migration_status_is_final(s->status)) {
        if (s->mbps > 0)
            format_duration((double)s->remaining / (s->mbps * 1e6 / 8), eta, sizeof(eta));
        else
            snprintf(eta, sizeof(eta), "-");
        progress_append(buf, len, &used, "  ETA %s", eta);
    }
    if (s->dirty_pages_rate >= 0)
        progress_append(buf, len, &used, "  %" PRId64 " dirty pages/s", s->dirty_pages_rate);
    if (s->expected_downtime >= 0)
        progress_append(buf, len, &used, "  expected downtime %" PRId64 " ms",
                        s->expected_downtime);
    append_multifd(buf, len, &used, s, multifd);
}

void progress_fit(char *line, size_t width)
{
    char *cut;

    if (!width || strlen(line) <= width)
        return;
    line[width] = '\0';
    cut = strstr(line, "  ");
    for (char *next = cut; next; next = strstr(next + 1, "  "))
        cut = next;
    if (cut)
        *cut = '\0';
}

static void print_ms(FILE *out, const char *name, int64_t ms)
{
    if (ms >= 0)
        fprintf(out, "%-33s%" PRId64 " ms\n", name, ms);
}

static void print_count(FILE *out, const char *name, int64_t count)
{
    if (count >= 0)
        fprintf(out, "%-33s%" PRId64 "\n", name, count);
}

static void print_bytes(FILE *out, const char *name, int64_t bytes)
{
    char size[32];

    if (bytes >= 0)
        fprintf(out, "%-33s%" PRId64 " bytes (%s)\n", name, bytes,
                size_format((uint64_t)bytes, size, sizeof(size)));
}

static void print_multifd(FILE *out, const struct migration_stats *s,
                          const struct multifd_settings *m)
{
    if (!m || !m->multifd)
        return;
    if (m->channels >= 0 && m->device_channels > 0)
        fprintf(out, "%-33s%" PRId64 " RAM + %" PRId64 " device state\n", "multifd channels:",
                m->channels, m->device_channels);
    else
        print_count(out, "multifd channels:", m->channels);
    if (!strcmp(m->compression, "zstd") && m->zstd_level >= 0)
        fprintf(out, "%-33szstd, level %" PRId64 "\n", "multifd compression:", m->zstd_level);
    else if (m->compression[0])
        fprintf(out, "%-33s%s\n", "multifd compression:", m->compression);
    print_bytes(out, "multifd bytes:", s->multifd_bytes);
}

void report_print(FILE *out, const struct migration_stats *s,
                  const struct multifd_settings *multifd, bool with_error)
{
    fprintf(out, "%-33s%s\n", "status:", s->status);
    print_ms(out, "total time:", s->total_time);
    print_ms(out, "downtime:", s->downtime);
    print_ms(out, "expected downtime at switchover:", s->expected_downtime_at_switchover);
    if (!migration_status_is_final(s->status))
        print_ms(out, "expected downtime:", s->expected_downtime);
    print_ms(out, "setup time:", s->setup_time);
    print_bytes(out, "transferred:", s->transferred);
    if (s->transferred >= 0 && s->total_time >= 0) {
        int64_t ms = s->total_time - (s->setup_time > 0 ? s->setup_time : 0);
        if (ms > 0)
            fprintf(out, "%-33s%.1f MB/s\n", "throughput:", (double)s->transferred / ms / 1000);
    }
    print_count(out, "passes:", s->dirty_sync_count);
    print_count(out, "zero pages:", s->duplicate);
    print_count(out, "pages sent with data:", s->normal);
    print_bytes(out, "bytes sent while stopped:", s->downtime_bytes);
    print_multifd(out, s, multifd);
    if (with_error && s->error_desc[0])
        fprintf(out, "%-33s%s\n", "error:", s->error_desc);
}
