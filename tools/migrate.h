/* `godwit migrate` once its command line is checked: set the parameters,
 * start the migration, follow it, report. Owns SIGINT while it runs. */
#ifndef GODWIT_TOOLS_MIGRATE_H
#define GODWIT_TOOLS_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

/* The multifd options. One not given leaves the VM's setting as it is. */
struct multifd_request {
    unsigned channels;              /* --multifd: 1 to 255; 0 = not given */
    const char *compression;        /* "none" or "zstd"; NULL = not given */
    const char *zero_page_detection;  /* "none", "legacy" or "multifd"; NULL = not given */
    bool channel_header;            /* --channel-header: x-channel-header on */
    bool has_zstd_level, has_device_channels;
    unsigned zstd_level;            /* 0 to 20 */
    unsigned device_channels;       /* 0 to 255 */
};

struct migrate_request {
    const char *qmp_path;           /* the source's QMP socket */
    const char *dest_qmp_path;      /* --dest: the destination's QMP socket, or NULL */
    const char *uri;                /* the destination, already checked by uri_parse */
    int timeout_ms;                 /* per QMP answer */
    bool has_downtime_limit, has_max_bandwidth, has_avail_switchover_bandwidth;
    uint64_t downtime_limit;        /* ms */
    uint64_t max_bandwidth;         /* bytes/s */
    uint64_t avail_switchover_bandwidth;  /* bytes/s */
    bool events;
    const char *tls_creds;          /* --tls-creds: both sides' object id; NULL = not given */
    const char *tls_hostname;       /* --tls-hostname; NULL = not given */
    const char *cpr_path;           /* --local: the cpr channel's socket; NULL = a migration */
    struct multifd_request multifd;
    unsigned timeout_s;             /* --timeout: 0 = none */
    bool on_timeout_switchover;     /* --on-timeout switchover (else cancel) */
    /* --postcopy-after: seconds after the start when migrate-start-postcopy
     * goes (0 at once); POSTCOPY_AUTO once a pass no longer shrinks what is
     * left; -1 = no postcopy. */
    int postcopy_after_s;
    bool quiet;                     /* --quiet: the report only */
    bool json;                      /* --json: the report only, as JSON */
};

/* Returns the exit status: 0 completed (a switchover forced at the timeout
 * included), 1 anything else. Prints progress and the report on stdout,
 * errors on stderr. */
#define POSTCOPY_AUTO 0x7fffffff
int migrate_run(const struct migrate_request *req);

/* `godwit status`: the report of the current or last migration; exit status. */
int status_run(const char *qmp_path, int timeout_ms);

#endif
