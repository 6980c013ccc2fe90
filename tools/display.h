/* What `godwit migrate` shows while it follows a migration: the progress
 * line (redrawn in place on a terminal, one plain line a second
 * elsewhere), a line for each new verdict on convergence, and nothing at
 * all with --quiet or --json. Writes stdout; messages go to stderr. */
#ifndef GODWIT_TOOLS_DISPLAY_H
#define GODWIT_TOOLS_DISPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "progress.h"

struct display {
    const struct multifd_settings *multifd;     /* NULL: not shown */
    struct progress_style style;
    bool quiet;             /* nothing on stdout but the report */
    bool drawn;             /* a terminal line is on screen without its newline */
    int64_t start_ms, next_plain_ms;
    char verdict[24];       /* the verdict last shown in words */
    char not_converging_hint[160];   /* what a not-converging line adds */
};

/* stdout's kind decides the style; start_ms is when the migration began. */
void display_init(struct display *d, const struct multifd_settings *multifd, bool quiet,
                  int64_t start_ms);

/* One poll's answer: the progress line, and the verdict's sentence on its
 * own line when it changed. now_ms: CLOCK_MONOTONIC in ms. */
void display_draw(struct display *d, const struct migration_stats *stats, int64_t now_ms);

/* Ends the line being redrawn, so what follows starts on its own line. */
void display_end(struct display *d);

/* "godwit: " and the message on stderr, after ending the line. */
void display_say(struct display *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
