/* The display of a migration in progress. A terminal gets one line redrawn
 * with \r and \033[K, cut to its width (a wrapped line could not be
 * redrawn); anything else gets plain lines, one a second, stamped with the
 * seconds since migrate, and no escape code. A verdict that changes is a
 * line of its own in both, so a log keeps every one. */
#include "display.h"

#include <langinfo.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define PLAIN_INTERVAL_MS 1000

static bool locale_is_utf8(void)
{
    const char *codeset;

    setlocale(LC_CTYPE, "");
    codeset = nl_langinfo(CODESET);
    return codeset && (!strcasecmp(codeset, "UTF-8") || !strcasecmp(codeset, "utf8"));
}

void display_init(struct display *d, const struct multifd_settings *multifd, bool quiet,
                  int64_t start_ms)
{
    *d = (struct display){ .multifd = multifd, .quiet = quiet, .start_ms = start_ms,
                           .next_plain_ms = start_ms };
    d->style.terminal = isatty(STDOUT_FILENO);
    d->style.utf8 = d->style.terminal && locale_is_utf8();
}

static size_t terminal_width(void)
{
    struct winsize ws;

    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
        return ws.ws_col;
    return 80;
}

/* A verdict not shown yet gets a line: the VM's sentence, and for one that
 * does not converge what godwit itself can do about it. */
static void show_verdict(struct display *d, const struct migration_stats *s, int64_t now_ms)
{
    bool not_converging = !strcmp(s->verdict, "not-converging");

    if (!s->verdict[0] || !strcmp(s->verdict, d->verdict))
        return;
    snprintf(d->verdict, sizeof(d->verdict), "%s", s->verdict);
    if (d->style.terminal)
        printf("\r%s%s\033[K\n", s->reason, not_converging ? d->not_converging_hint : "");
    else
        printf("[%6.1fs] %s%s\n", (double)(now_ms - d->start_ms) / 1000, s->reason,
               not_converging ? d->not_converging_hint : "");
    d->drawn = false;
}

void display_draw(struct display *d, const struct migration_stats *stats, int64_t now_ms)
{
    char line[512];

    if (d->quiet)
        return;
    show_verdict(d, stats, now_ms);
    progress_format(stats, d->multifd, &d->style, line, sizeof(line));
    if (d->style.terminal) {
        progress_fit(line, terminal_width() - 1);
        printf("\r%s\033[K", line);
        d->drawn = true;
    } else if (now_ms >= d->next_plain_ms) {
        printf("[%6.1fs] %s\n", (double)(now_ms - d->start_ms) / 1000, line);
        d->next_plain_ms = d->next_plain_ms + PLAIN_INTERVAL_MS > now_ms
                           ? d->next_plain_ms + PLAIN_INTERVAL_MS : now_ms + PLAIN_INTERVAL_MS;
    }
    fflush(stdout);
}

void display_end(struct display *d)
{
    if (d->drawn)
        putchar('\n');
    d->drawn = false;
    fflush(stdout);
}

void display_say(struct display *d, const char *fmt, ...)
{
    va_list ap;

    display_end(d);
    fputs("godwit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
