/* `godwit migrate` once its command line is checked: set the parameters,
 * start the migration, follow it, report. Owns SIGINT while it runs. */
#ifndef GODWIT_TOOLS_MIGRATE_H
#define GODWIT_TOOLS_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

struct migrate_request {
    const char *qmp_path;           /* the source's QMP socket */
    const char *uri;                /* the destination, already checked by uri_parse */
    int timeout_ms;                 /* per QMP answer */
    bool has_downtime_limit, has_max_bandwidth, has_avail_switchover_bandwidth;
    uint64_t downtime_limit;        /* ms */
    uint64_t max_bandwidth;         /* bytes/s */
    uint64_t avail_switchover_bandwidth;  /* bytes/s */
    bool events;
};

/* Returns the exit status: 0 completed, 1 anything else. Prints progress and
 * the report on stdout, errors on stderr. */
int migrate_run(const struct migrate_request *req);

/* `godwit status`: the report of the current or last migration; exit status. */
int status_run(const char *qmp_path, int timeout_ms);

#endif
