/* The progress line and the report, computed from query-migrate alone so the
 * numbers a user sees are the VM's own, the verdict on convergence included.
 * MB/s is decimal (mbps / 8, as QEMU's "mbps" is decimal megabits, and the
 * rates in "convergence" / 10^6); sizes are binary (size_format). */
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

static void copy_string(json_t *object, const char *name, char *buf, size_t len)
{
    const char *value = json_string_value(json_object_get(object, name));

    snprintf(buf, len, "%s", value ? value : "");
}

void migration_stats_parse(json_t *info, struct migration_stats *s)
{
    json_t *ram = json_object_get(info, "ram");
    json_t *mbps = json_object_get(ram, "mbps");
    json_t *convergence = json_object_get(info, "convergence");
    const char *status = json_string_value(json_object_get(info, "status"));
    const char *desc = json_string_value(json_object_get(info, "error-desc"));

    snprintf(s->status, sizeof(s->status), "%s", status ? status : "unknown");
    snprintf(s->error_desc, sizeof(s->error_desc), "%s", desc ? desc : "");
    s->total_time = get_int(info, "total-time");
    s->setup_time = get_int(info, "setup-time");
    s->downtime = get_int(info, "downtime");
    s->expected_downtime = get_int(info, "expected-downtime");
    s->expected_downtime_at_switchover = get_int(info, "expected-downtime-at-switchover");
    s->remaining = get_int(info, "remaining");
    s->transferred = get_int(ram, "transferred");
    s->ram_remaining = get_int(ram, "remaining");
    s->total = get_int(ram, "total");
    s->duplicate = get_int(ram, "duplicate");
    s->normal = get_int(ram, "normal");
    s->dirty_pages_rate = get_int(ram, "dirty-pages-rate");
    s->dirty_sync_count = get_int(ram, "dirty-sync-count");
    s->downtime_bytes = get_int(ram, "downtime-bytes");
    s->postcopy_requests = get_int(ram, "postcopy-requests");
    s->postcopy_bytes = get_int(ram, "postcopy-bytes");
    s->multifd_bytes = get_int(ram, "multifd-bytes");
    s->mbps = json_is_number(mbps) && json_number_value(mbps) >= 0 ? json_number_value(mbps) : -1;
    copy_string(convergence, "state", s->verdict, sizeof(s->verdict));
    copy_string(convergence, "reason", s->reason, sizeof(s->reason));
    s->dirty_rate = get_int(convergence, "dirty-rate");
    s->dirty_rate_at_least = json_is_true(json_object_get(convergence, "dirty-rate-at-least"));
    s->bandwidth = get_int(convergence, "bandwidth");
    s->eta = get_int(convergence, "eta");
    s->trend = get_int(convergence, "trend-percentage");
    s->throttle = get_int(convergence, "throttle-percentage");
    json_t *tls = json_object_get(info, "tls");
    copy_string(tls, "cipher", s->tls_cipher, sizeof(s->tls_cipher));
    copy_string(tls, "protocol", s->tls_protocol, sizeof(s->tls_protocol));
    s->ktls = json_is_true(json_object_get(tls, "ktls"));
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

void rate_format(int64_t bytes_per_second, char *buf, size_t len)
{
    double mb = (double)bytes_per_second / 1e6;

    snprintf(buf, len, mb >= 100 || mb == 0 ? "%.0f MB/s" : "%.1f MB/s", mb);
}

/* "[########............] 40%": the first pass, pages sent of all RAM. */
static void append_first_pass(char *buf, size_t len, size_t *used,
                              const struct migration_stats *s, const struct progress_style *style)
{
    enum { BAR = 20 };
    double done = 0;
    char bar[BAR + 3];

    if (s->ram_remaining >= 0 && s->total > 0)
        done = 1 - (double)s->ram_remaining / (double)s->total;
    done = done < 0 ? 0 : done > 1 ? 1 : done;
    if (!style->terminal) {
        progress_append(buf, len, used, "  first pass %.1f%%", 100 * done);
        return;
    }
    bar[0] = '[';
    for (int i = 0; i < BAR; i++)
        bar[1 + i] = i < (int)(done * BAR + 0.5) ? '#' : '.';
    bar[BAR + 1] = ']';
    bar[BAR + 2] = '\0';
    progress_append(buf, len, used, "  first pass %s %.0f%%", bar, 100 * done);
}

/* The trend of what is left per pass, on a terminal: shrinking, about the
 * same, growing (a log has the verdict's own line for that). */
static const char *trend_arrow(int64_t trend, const struct progress_style *style)
{
    int shape = trend < 0 ? -2 : trend < 90 ? -1 : trend <= 110 ? 0 : 1;

    if (shape == -2 || !style->terminal)
        return "";
    if (style->utf8)
        return shape < 0 ? " \u2193" : shape > 0 ? " \u2191" : " \u2192";
    return shape < 0 ? " v" : shape > 0 ? " ^" : " =";
}

/* "converging, ETA 3.2 s", "not converging" or "throttled 30%, ETA 12 s". */
static void append_verdict(char *buf, size_t len, size_t *used, const struct migration_stats *s)
{
    char eta[32];

    if (!strcmp(s->verdict, "not-converging"))
        progress_append(buf, len, used, "  not converging");
    else if (!strcmp(s->verdict, "throttled") && s->throttle >= 0)
        progress_append(buf, len, used, "  throttled %" PRId64 "%%", s->throttle);
    else if (s->verdict[0])
        progress_append(buf, len, used, "  %s", s->verdict);
    if (s->verdict[0] && s->eta >= 0 && !migration_status_is_final(s->status)) {
        format_duration((double)s->eta / 1000, eta, sizeof(eta));
        progress_append(buf, len, used, ", ETA %s", eta);
    }
}

void progress_format(const struct migration_stats *s, const struct multifd_settings *multifd,
                     const struct progress_style *style, char *buf, size_t len)
{
    char size[32], rate[32];
    int64_t remaining = s->remaining >= 0 ? s->remaining : s->ram_remaining;
    bool first_pass = !s->verdict[0] && s->dirty_sync_count <= 1;
    size_t used = 0;

    buf[0] = '\0';
    progress_append(buf, len, &used, "%s", s->status);
    if (first_pass && s->dirty_sync_count >= 0)
        append_first_pass(buf, len, &used, s, style);
    else if (s->dirty_sync_count > 1)
        progress_append(buf, len, &used, "  pass %" PRId64 "%s", s->dirty_sync_count,
                        trend_arrow(s->trend, style));
    if (remaining >= 0)
        progress_append(buf, len, &used, "  remaining %s",
                        size_format((uint64_t)remaining, size, sizeof(size)));
    if (s->dirty_rate >= 0) {
        rate_format(s->dirty_rate, rate, sizeof(rate));
        progress_append(buf, len, &used, "  dirty %s%s", s->dirty_rate_at_least ? ">=" : "",
                        rate);
    }
    if (s->bandwidth >= 0 || s->mbps >= 0) {
        rate_format(s->bandwidth >= 0 ? s->bandwidth : (int64_t)(s->mbps * 1e6 / 8), rate,
                    sizeof(rate));
        progress_append(buf, len, &used, "  link %s", rate);
    }
    append_verdict(buf, len, &used, s);
    /* Until a pass has measured the bandwidth it is only the limit: shown
     * with the first verdict (or, from a VM that gives none, from the
     * third sync). */
    if (s->expected_downtime >= 0 && (s->verdict[0] || s->dirty_sync_count > 2))
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

const char *outcome_name(enum migration_end end)
{
    static const char *const names[] = {
        [END_COMPLETED] = "completed", [END_CANCELLED_BY_USER] = "cancelled",
        [END_CANCELLED_ELSEWHERE] = "cancelled", [END_TIMED_OUT_CANCELLED] = "timed-out-cancelled",
        [END_TIMED_OUT_SWITCHED_OVER] = "timed-out-switched-over", [END_FAILED] = "failed",
    };
    return names[end];
}

/* "after 12.3 s" from total-time. */
static void took(const struct migration_stats *s, char *buf, size_t len)
{
    char duration[32];

    format_duration((double)(s->total_time > 0 ? s->total_time : 0) / 1000, duration,
                    sizeof(duration));
    snprintf(buf, len, "%s", duration);
}

void outcome_sentence(const struct migration_outcome *o, const struct migration_stats *s,
                      char *buf, size_t len)
{
    const char *why = o->reason_at_timeout[0] ? o->reason_at_timeout
                                              : s->reason[0] ? s->reason : "no verdict yet";
    char time[32];

    took(s, time, sizeof(time));
    switch (o->end) {
    case END_COMPLETED:
        snprintf(buf, len, "migration completed in %s after %" PRId64 " passes, downtime %"
                 PRId64 " ms; the guest runs on the destination", time, s->dirty_sync_count,
                 s->downtime);
        return;
    case END_CANCELLED_BY_USER:
        snprintf(buf, len, "migration cancelled by the user (Ctrl-C) after %s; the guest keeps "
                 "running on the source", time);
        return;
    case END_CANCELLED_ELSEWHERE:
        snprintf(buf, len, "migration cancelled by the VM or another client after %s%s%s; the "
                 "guest keeps running on the source", time, s->error_desc[0] ? ": " : "",
                 s->error_desc);
        return;
    case END_TIMED_OUT_CANCELLED:
        snprintf(buf, len, "migration timed out after %u s (--timeout) and was cancelled "
                 "(%s); the guest keeps running on the source", o->timeout_s, why);
        return;
    case END_TIMED_OUT_SWITCHED_OVER:
        snprintf(buf, len, "migration timed out after %u s (--timeout) and was switched over "
                 "by force (%s); it completed in %s with a downtime of %" PRId64 " ms and the "
                 "guest runs on the destination", o->timeout_s, why, time, s->downtime);
        return;
    case END_FAILED:
        snprintf(buf, len, "migration failed: %s", s->error_desc[0] ? s->error_desc
                 : "the VM gave no reason (no error-desc)");
        return;
    }
}

void report_print_json(FILE *out, const struct migration_outcome *outcome,
                       const struct migration_stats *stats, json_t *info)
{
    char sentence[1400];
    json_t *report;

    outcome_sentence(outcome, stats, sentence, sizeof(sentence));
    report = json_pack("{s:s,s:s,s:O}", "result", outcome_name(outcome->end),
                       "outcome", sentence, "query-migrate", info ? info : json_null());
    json_dumpf(report, out, JSON_COMPACT | JSON_SORT_KEYS);
    fputc('\n', out);
    json_decref(report);
}

void report_print(FILE *out, const struct migration_stats *s,
                  const struct multifd_settings *multifd,
                  const struct migration_outcome *outcome, bool with_error)
{
    char sentence[1400];

    if (outcome) {
        outcome_sentence(outcome, s, sentence, sizeof(sentence));
        fprintf(out, "%-33s%s\n", "outcome:", sentence);
    }
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
    if (s->postcopy_bytes > 0) {
        print_bytes(out, "bytes sent in postcopy:", s->postcopy_bytes);
        print_count(out, "postcopy page requests:", s->postcopy_requests);
    }
    print_multifd(out, s, multifd);
    if (s->tls_cipher[0])
        fprintf(out, "%-33s%s %s, %s\n", "TLS:", s->tls_protocol, s->tls_cipher,
                s->ktls ? "in the kernel (kTLS)" : "in user space (GnuTLS, no kTLS)");
    if (s->reason[0])
        fprintf(out, "%-33s%s\n", "convergence:", s->reason);
    if (with_error && s->error_desc[0])
        fprintf(out, "%-33s%s\n", "error:", s->error_desc);
}
