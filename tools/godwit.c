/* godwit, the command-line tool: reads the command line, checks every value
 * before touching the VM, and hands the work to migrate.c. A bad command line
 * is one line on stderr saying what was wrong and what is allowed, exit 2. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/size.h>
#include <godwit/uri.h>

#include "migrate.h"
#include "qmp_client.h"

#define EXIT_USAGE 2
#define DOWNTIME_LIMIT_MAX 2000000ULL      /* ms, as QEMU's */
#define BANDWIDTH_MAX 9223372036854775807ULL   /* bytes/s, 2^63 - 1: the VM's QMP range */
#define CHANNELS_MAX 255                   /* multifd-channels, as QEMU's */
#define ZSTD_LEVEL_MAX 20
#define TIMEOUT_MAX 86400                  /* s: --timeout, a day */

static const char *const compression_names[] = { "none", "zstd", NULL };
static const char *const zero_page_detection_names[] = { "none", "legacy", "multifd", NULL };
static const char *const on_timeout_names[] = { "cancel", "switchover", NULL };

static const char main_usage[] =
    "Usage: godwit COMMAND [OPTIONS]\n"
    "Live-migrates a godwit-vm guest by driving the source VM over QMP.\n"
    "\n"
    "Commands:\n"
    "  migrate   start a migration on the source VM and follow it to the end\n"
    "  status    print the report of the migration running now or the last one\n"
    "\n"
    "  -h, --help       print this help and exit\n"
    "  -V, --version    print the version and exit\n"
    "\n"
    "'godwit COMMAND --help' describes a command's options.\n"
    "Exit status: 0 success; 1 the migration failed or was cancelled, or the VM\n"
    "could not be reached or refused a command; 2 bad command line.\n"
    "Environment: GODWIT_QMP_TIMEOUT, seconds to wait for each QMP answer\n"
    "(default 10).\n";

static const char migrate_usage[] =
    "Usage: godwit migrate --from unix:PATH --to URI [--dest unix:PATH] [OPTIONS]\n"
    "Connects to the source VM's QMP socket, sets the capabilities and parameters\n"
    "given (migrate-set-capabilities, migrate-set-parameters), starts the\n"
    "migration (migrate) and follows it (query-migrate every 100 ms) until it\n"
    "completes, fails or is cancelled; then prints a report. A setting not given\n"
    "stays as the VM has it, capabilities included.\n"
    "\n"
    "  --from unix:PATH       the source VM's QMP socket (godwit-vm --qmp unix:PATH)\n"
    "  --to URI               where the source sends the stream: tcp:HOST:PORT,\n"
    "                         tcp:[IPV6]:PORT, unix:PATH, fd:N or file:PATH\n"
    "  --dest unix:PATH       the destination VM's QMP socket, a godwit-vm started\n"
    "                         with --incoming defer: godwit gives it the source's\n"
    "                         multifd and zero-page settings, then has it listen\n"
    "                         on the URI of --to (migrate-incoming) before the\n"
    "                         source's migrate; that URI must be tcp: or unix:\n"
    "  --downtime-limit MS    the longest the guest may stay stopped at the\n"
    "                         switchover, 0 to 2000000 ms (the VM's default: 300)\n"
    "  --max-bandwidth RATE   bytes/s the migration may use, a size like 100M or\n"
    "                         1G (binary units); 0 = unlimited; at most 2^63 - 1\n"
    "  --avail-switchover-bandwidth RATE\n"
    "                         bytes/s available for the final copy, used to\n"
    "                         predict the downtime (the final copy is never\n"
    "                         paced); 0 = the rate measured while --max-bandwidth\n"
    "                         did not hold the link back\n"
    "  --events               turn on the 'events' capability and wake on\n"
    "                         MIGRATION events as well as polling\n"
    "  --multifd N            send RAM on N more connections (1 to 255) beside the\n"
    "                         main one, a sender thread each: the 'multifd'\n"
    "                         capability and multifd-channels N; needs a tcp: or\n"
    "                         unix: URI\n"
    "  --multifd-compression none|zstd\n"
    "                         compress the pages on the multifd channels (with\n"
    "                         --multifd; the VM's default: none)\n"
    "  --multifd-zstd-level L\n"
    "                         zstd's level, 0 to 20 (with --multifd-compression\n"
    "                         zstd; the VM's default: 1)\n"
    "  --zero-page-detection none|legacy|multifd\n"
    "                         who finds zero pages: nobody (every page is sent\n"
    "                         with data), the migration thread, or the multifd\n"
    "                         sender threads (the VM's default)\n"
    "  --channel-header       every connection starts with a header naming its\n"
    "                         type and migration (the 'x-channel-header' capability)\n"
    "  --device-state-channels N\n"
    "                         N more connections (0 to 255) for device state\n"
    "                         (x-multifd-channels-device-state); above 0 it needs\n"
    "                         both --multifd and --channel-header; 0 = device\n"
    "                         state on the RAM channels\n"
    "  --tls-creds ID         encrypt and authenticate every channel with TLS: the\n"
    "                         source's tls-creds parameter, naming its --object\n"
    "                         tls-creds-x509 or tls-creds-psk (endpoint=client);\n"
    "                         with --dest, the destination's too (its object of\n"
    "                         the same id, endpoint=server); \"\" turns TLS off\n"
    "  --tls-hostname NAME    the name the destination's certificate must carry\n"
    "                         (default: the host of --to; needed for unix: and fd:)\n"
    "  --local unix:PATH      a local update (mode cpr-transfer): the guest moves to\n"
    "                         a new godwit-vm on this host, its RAM left in place;\n"
    "                         PATH is the new process's cpr channel (its --incoming\n"
    "                         '{\"channel-type\":\"cpr\",...}'), --to its main channel,\n"
    "                         a unix: URI; the source's RAM must be shared (a memfd,\n"
    "                         or a file on /dev/shm); not with --dest (the new\n"
    "                         process answers QMP only once it has the RAM)\n"
    "  --timeout SECONDS      end the migration if it has not completed after\n"
    "                         SECONDS (1 to 86400), as --on-timeout says\n"
    "  --on-timeout cancel|switchover\n"
    "                         what --timeout does: cancel the migration (the\n"
    "                         default; the guest keeps running on the source)\n"
    "                         or switch over now, whatever the downtime (the\n"
    "                         VM's x-migrate-switchover-now)\n"
    "  --postcopy-after SECONDS|auto\n"
    "                         switch to postcopy (the 'postcopy-ram' capability,\n"
    "                         on --dest too; the destination needs it) SECONDS\n"
    "                         (0 to 86400) after the start, or with auto once a\n"
    "                         pass no longer shrinks what is left by 10%: the guest\n"
    "                         then runs on the destination, which pulls the pages\n"
    "                         it still lacks; from there a cancel is refused\n"
    "  --quiet                print nothing while it runs, only the report\n"
    "  --json                 print only the report, as one JSON object\n"
    "  -h, --help             print this help and exit\n"
    "\n"
    "The destination refuses a migration whose multifd, x-channel-header or\n"
    "zero-page-detection settings differ from the source's. With --dest godwit\n"
    "copies the source's settings (those given and those already set) to it;\n"
    "without --dest, when any of them is given or the source has multifd or\n"
    "x-channel-header on, a note on stderr lists what the destination needs.\n"
    "\n"
    "Progress: on a terminal, one line redrawn in place (a bar for the first\n"
    "pass, then the pass number and an arrow for the trend of what is left);\n"
    "otherwise one line a second, without escape codes. Fields: what is left\n"
    "to send (RAM and device state), the guest's dirty rate and the link's\n"
    "rate in MB/s (10^6 bytes), the verdict (converging with an ETA, not\n"
    "converging, throttled N%), the expected downtime, and with multifd the\n"
    "channels and the bytes sent on them; a terminal too narrow for the line\n"
    "shows the first fields only. Each new verdict is a line of its own that\n"
    "says why. The report opens with one sentence on how the migration ended\n"
    "and why, and adds the multifd channels, compression and bytes when\n"
    "multifd is on.\n"
    "Ctrl-C sends migrate_cancel and waits for the final status: the guest\n"
    "stays on the source unless the migration completed first. A second\n"
    "Ctrl-C stops waiting.\n"
    "Exit status: 0 completed (after a switchover forced by --timeout too); 1\n"
    "failed, cancelled or timed out and cancelled (the reason on stderr), or a\n"
    "VM could not be reached or refused a command; 2 bad command line.\n";

static const char status_usage[] =
    "Usage: godwit status --qmp unix:PATH\n"
    "Prints the report of the migration in progress on the VM, or of the last\n"
    "one that finished; \"no migration has run\" if there was none. Exit status\n"
    "0; 1 if the VM could not be reached; 2 bad command line.\n"
    "\n"
    "  --qmp unix:PATH   the VM's QMP socket (godwit-vm --qmp unix:PATH)\n"
    "  -h, --help        print this help and exit\n";

static int usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "godwit%s%s: ", command ? " " : "", command ? command : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_USAGE;
}

/* --from and --qmp: the VM's QMP socket, which is always unix:PATH. */
static int parse_qmp_socket(const char *command, const char *option, const char *text,
                            const char **path)
{
    struct gw_error err;
    struct uri uri;

    if (strncmp(text, "unix:", 5))
        return usage_error(command, "%s '%s' is not a QMP socket: give the VM's QMP socket "
                           "as unix:PATH, as passed to godwit-vm --qmp", option, text);
    if (uri_parse(text, &uri, &err) < 0)
        return usage_error(command, "%s: %s", option, err.msg);
    *path = text + 5;
    return 0;
}

/* A whole number from min to max. noun says what the option counts ("a
 * number of milliseconds"), unit follows the range in the error ("ms"). */
static int parse_number(const char *option, const char *text, uint64_t min, uint64_t max,
                        const char *noun, const char *unit, uint64_t *value)
{
    char *end;

    errno = 0;
    *value = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end || errno)
        return usage_error("migrate", "%s '%s' is not %s; allowed: %" PRIu64 " to %" PRIu64,
                           option, text, noun, min, max);
    if (*value < min || *value > max)
        return usage_error("migrate", "%s %s is out of range; allowed: %" PRIu64 " to %" PRIu64
                           "%s%s", option, text, min, max, unit[0] ? " " : "", unit);
    return 0;
}

static int parse_count(const char *option, const char *text, uint64_t min, uint64_t max,
                       const char *noun, const char *unit, unsigned *count)
{
    uint64_t value;

    if (parse_number(option, text, min, max, noun, unit, &value))
        return EXIT_USAGE;
    *count = (unsigned)value;
    return 0;
}

/* One of choices (NULL-terminated); *value points into choices. */
static int parse_choice(const char *option, const char *text, const char *const *choices,
                        const char **value)
{
    char allowed[128];
    size_t used = 0;

    for (size_t i = 0; choices[i]; i++) {
        if (!strcmp(text, choices[i])) {
            *value = choices[i];
            return 0;
        }
        if (used < sizeof(allowed))
            used += (size_t)snprintf(allowed + used, sizeof(allowed) - used, "%s%s",
                                     !i ? "" : choices[i + 1] ? ", " : " or ", choices[i]);
    }
    return usage_error("migrate", "%s '%s' is not supported; allowed: %s", option, text,
                       allowed);
}

static int parse_rate(const char *option, const char *text, uint64_t *rate, bool *given)
{
    struct gw_error err;

    if (size_parse(text, 1, rate, &err) < 0)
        return usage_error("migrate", "%s: %s; allowed: 0 to %llu bytes/s", option,
                           err.msg, BANDWIDTH_MAX);
    if (*rate > BANDWIDTH_MAX)
        return usage_error("migrate", "%s %s is out of range; allowed: 0 to %llu bytes/s "
                           "(2^63 - 1; 0 = %s)", option, text, BANDWIDTH_MAX,
                           strcmp(option, "--max-bandwidth") ? "the measured bandwidth"
                                                             : "unlimited");
    *given = true;
    return 0;
}

/* GODWIT_QMP_TIMEOUT, in seconds; decimals allowed. */
static int parse_timeout(const char *command, int *timeout_ms)
{
    const char *text = getenv("GODWIT_QMP_TIMEOUT");
    char *end;
    double seconds;

    *timeout_ms = QMP_CLIENT_TIMEOUT_MS;
    if (!text || !*text)
        return 0;
    seconds = strtod(text, &end);
    if (*end || !(seconds > 0) || seconds > 86400)
        return usage_error(command, "GODWIT_QMP_TIMEOUT='%s' is not a number of seconds; "
                           "allowed: more than 0 and up to 86400, like 10 or 0.5", text);
    *timeout_ms = seconds * 1000 < 1 ? 1 : (int)(seconds * 1000);
    return 0;
}

enum {
    OPT_FROM = 256, OPT_TO, OPT_DEST, OPT_DOWNTIME, OPT_MAX_BW, OPT_AVAIL_BW, OPT_EVENTS,
    OPT_MULTIFD, OPT_COMPRESSION, OPT_ZSTD_LEVEL, OPT_ZERO_PAGE, OPT_CHANNEL_HEADER,
    OPT_DEVICE_CHANNELS, OPT_QMP, OPT_TIMEOUT, OPT_ON_TIMEOUT, OPT_QUIET, OPT_JSON,
    OPT_TLS_CREDS, OPT_TLS_HOSTNAME, OPT_LOCAL, OPT_POSTCOPY_AFTER,
};

static const struct option migrate_options[] = {
    { "from", required_argument, NULL, OPT_FROM },
    { "to", required_argument, NULL, OPT_TO },
    { "dest", required_argument, NULL, OPT_DEST },
    { "downtime-limit", required_argument, NULL, OPT_DOWNTIME },
    { "max-bandwidth", required_argument, NULL, OPT_MAX_BW },
    { "avail-switchover-bandwidth", required_argument, NULL, OPT_AVAIL_BW },
    { "events", no_argument, NULL, OPT_EVENTS },
    { "multifd", required_argument, NULL, OPT_MULTIFD },
    { "multifd-compression", required_argument, NULL, OPT_COMPRESSION },
    { "multifd-zstd-level", required_argument, NULL, OPT_ZSTD_LEVEL },
    { "zero-page-detection", required_argument, NULL, OPT_ZERO_PAGE },
    { "channel-header", no_argument, NULL, OPT_CHANNEL_HEADER },
    { "device-state-channels", required_argument, NULL, OPT_DEVICE_CHANNELS },
    { "tls-creds", required_argument, NULL, OPT_TLS_CREDS },
    { "tls-hostname", required_argument, NULL, OPT_TLS_HOSTNAME },
    { "local", required_argument, NULL, OPT_LOCAL },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "on-timeout", required_argument, NULL, OPT_ON_TIMEOUT },
    { "postcopy-after", required_argument, NULL, OPT_POSTCOPY_AFTER },
    { "quiet", no_argument, NULL, OPT_QUIET },
    { "json", no_argument, NULL, OPT_JSON },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static const struct option status_options[] = {
    { "qmp", required_argument, NULL, OPT_QMP },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

/* The shared cases of both commands' getopt loops: 1 to go on, or an exit
 * status (0 after --help, 2 on a bad option). */
static int common_option(const char *command, int id, char **argv, const char *usage,
                         const char *option_list)
{
    if (id == 'h') {
        fputs(usage, stdout);
        return 0;
    }
    if (id == ':')
        return usage_error(command, "option '%s' needs a value; see godwit %s --help",
                           argv[optind - 1], command);
    if (id == '?')
        return usage_error(command, "unknown option '%s'; the options are %s",
                           argv[optind - 1], option_list);
    return 1;
}

static int multifd_parse_one(int id, const char *arg, struct multifd_request *m)
{
    switch (id) {
    case OPT_MULTIFD:
        return parse_count("--multifd", arg, 1, CHANNELS_MAX, "a number of channels",
                           "channels", &m->channels);
    case OPT_COMPRESSION:
        return parse_choice("--multifd-compression", arg, compression_names, &m->compression);
    case OPT_ZSTD_LEVEL:
        m->has_zstd_level = true;
        return parse_count("--multifd-zstd-level", arg, 0, ZSTD_LEVEL_MAX, "a zstd level", "",
                           &m->zstd_level);
    case OPT_ZERO_PAGE:
        return parse_choice("--zero-page-detection", arg, zero_page_detection_names,
                            &m->zero_page_detection);
    case OPT_CHANNEL_HEADER:
        m->channel_header = true;
        return 0;
    case OPT_DEVICE_CHANNELS:
        m->has_device_channels = true;
        return parse_count("--device-state-channels", arg, 0, CHANNELS_MAX,
                           "a number of channels", "channels", &m->device_channels);
    }
    return usage_error("migrate", "internal error: option %d has no parser", id);
}

/* --timeout, --on-timeout, --quiet and --json; 1 for another option. */
static int completion_parse_one(int id, const char *arg, struct migrate_request *req,
                                bool *on_timeout_given)
{
    const char *choice;

    switch (id) {
    case OPT_TIMEOUT:
        return parse_count("--timeout", arg, 1, TIMEOUT_MAX, "a number of seconds", "s",
                           &req->timeout_s);
    case OPT_ON_TIMEOUT:
        *on_timeout_given = true;
        if (parse_choice("--on-timeout", arg, on_timeout_names, &choice))
            return EXIT_USAGE;
        req->on_timeout_switchover = !strcmp(choice, "switchover");
        return 0;
    case OPT_POSTCOPY_AFTER:
        if (!strcmp(arg, "auto")) {
            req->postcopy_after_s = POSTCOPY_AUTO;
            return 0;
        }
        unsigned seconds;
        if (parse_count("--postcopy-after", arg, 0, TIMEOUT_MAX, "a number of seconds or "
                        "'auto'", "s", &seconds))
            return EXIT_USAGE;
        req->postcopy_after_s = (int)seconds;
        return 0;
    case OPT_QUIET:
        req->quiet = true;
        return 0;
    case OPT_JSON:
        req->json = true;
        return 0;
    }
    return 1;
}

static int migrate_parse_one(int id, const char *arg, struct migrate_request *req)
{
    struct gw_error err;
    struct uri uri;
    uint64_t downtime_limit;

    switch (id) {
    case OPT_FROM:
        return parse_qmp_socket("migrate", "--from", arg, &req->qmp_path);
    case OPT_TO:
        if (uri_parse(arg, &uri, &err) < 0)
            return usage_error("migrate", "--to: %s", err.msg);
        req->uri = arg;
        return 0;
    case OPT_DEST:
        return parse_qmp_socket("migrate", "--dest", arg, &req->dest_qmp_path);
    case OPT_DOWNTIME:
        req->has_downtime_limit = true;
        if (parse_number("--downtime-limit", arg, 0, DOWNTIME_LIMIT_MAX,
                         "a number of milliseconds", "ms", &downtime_limit))
            return EXIT_USAGE;
        req->downtime_limit = downtime_limit;
        return 0;
    case OPT_MAX_BW:
        return parse_rate("--max-bandwidth", arg, &req->max_bandwidth, &req->has_max_bandwidth);
    case OPT_AVAIL_BW:
        return parse_rate("--avail-switchover-bandwidth", arg,
                          &req->avail_switchover_bandwidth,
                          &req->has_avail_switchover_bandwidth);
    case OPT_EVENTS:
        req->events = true;
        return 0;
    case OPT_TLS_CREDS:
        req->tls_creds = arg;
        return 0;
    case OPT_TLS_HOSTNAME:
        req->tls_hostname = arg;
        return 0;
    case OPT_LOCAL:
        if (uri_parse(arg, &uri, &err) < 0 || uri.kind != URI_UNIX)
            return usage_error("migrate", "--local '%s': the cpr channel is a unix socket, "
                               "unix:PATH", arg);
        req->cpr_path = arg + 5;
        return 0;
    }
    return multifd_parse_one(id, arg, &req->multifd);
}

/* The multifd options that only make sense with others. */
static int check_multifd_combination(const struct multifd_request *m)
{
    if (m->has_device_channels && m->device_channels && (!m->channels || !m->channel_header))
        return usage_error("migrate", "--device-state-channels %u needs --multifd N and "
                           "--channel-header (the channel header tells a device-state "
                           "channel from a RAM one); add %s, or give 0 to keep device "
                           "state on the RAM channels", m->device_channels,
                           m->channels ? "--channel-header" : m->channel_header
                           ? "--multifd N" : "--multifd N and --channel-header");
    if ((m->compression || m->has_zstd_level) && !m->channels)
        return usage_error("migrate", "%s applies to the multifd channels: add --multifd N",
                           m->compression ? "--multifd-compression" : "--multifd-zstd-level");
    if (m->has_zstd_level && strcmp(m->compression ? m->compression : "", "zstd"))
        return usage_error("migrate", "--multifd-zstd-level sets zstd's level: add "
                           "--multifd-compression zstd");
    return 0;
}

/* What --multifd and --dest need of --to (already checked by uri_parse). */
static int check_uri_combination(const struct migrate_request *req)
{
    struct gw_error err;
    struct uri uri;
    bool several;

    if (uri_parse(req->uri, &uri, &err) < 0)
        return usage_error("migrate", "--to: %s", err.msg);
    several = uri.kind == URI_TCP || uri.kind == URI_UNIX;
    if (req->cpr_path && uri.kind != URI_UNIX)
        return usage_error("migrate", "--local moves the guest to a process on this host: --to "
                           "must be its main channel, unix:PATH, not '%s'", req->uri);
    if (req->cpr_path && req->dest_qmp_path)
        return usage_error("migrate", "--local and --dest: the new process answers QMP only "
                           "once it has the RAM; start it with its two --incoming channels "
                           "and leave --dest out");
    if (req->multifd.channels && !several)
        return usage_error("migrate", "--multifd needs a tcp: or unix: --to, which can carry "
                           "several connections, not '%s'", req->uri);
    if (!req->dest_qmp_path)
        return 0;
    if (!several)
        return usage_error("migrate", "--dest needs a tcp: or unix: --to for the destination "
                           "to listen on before the source connects; '%s' is not one: start "
                           "that destination yourself, without --dest", req->uri);
    if (uri.kind == URI_TCP && !uri.port)
        return usage_error("migrate", "--to '%s' has port 0: the destination would listen on "
                           "a port the source cannot know; give a port", req->uri);
    if (!strcmp(req->dest_qmp_path, req->qmp_path))
        return usage_error("migrate", "--dest and --from are the same socket; --dest is the "
                           "destination VM's QMP socket (godwit-vm --incoming defer)");
    return 0;
}

static int cmd_migrate(int argc, char **argv)
{
    static const char option_list[] = "--from, --to, --dest, --downtime-limit, "
                                      "--max-bandwidth, --avail-switchover-bandwidth, "
                                      "--events, --multifd, --multifd-compression, "
                                      "--multifd-zstd-level, --zero-page-detection, "
                                      "--channel-header, --device-state-channels, --tls-creds, "
                                      "--tls-hostname, --local, --timeout, --postcopy-after, "
                                      "--on-timeout, --quiet, --json and --help";
    struct migrate_request req = { .postcopy_after_s = -1 };
    bool on_timeout_given = false;
    int id, rc;

    while ((id = getopt_long(argc, argv, ":h", migrate_options, NULL)) != -1) {
        rc = common_option("migrate", id, argv, migrate_usage, option_list);
        if (rc != 1)
            return rc;
        rc = completion_parse_one(id, optarg, &req, &on_timeout_given);
        if (rc == 1)
            rc = migrate_parse_one(id, optarg, &req);
        if (rc)
            return EXIT_USAGE;
    }
    if (on_timeout_given && !req.timeout_s)
        return usage_error("migrate", "--on-timeout says what --timeout does: add --timeout "
                           "SECONDS (1 to %d)", TIMEOUT_MAX);
    if (optind < argc)
        return usage_error("migrate", "unexpected argument '%s'; every setting is an option: "
                           "%s", argv[optind], option_list);
    if (!req.qmp_path)
        return usage_error("migrate", "--from is required: the source VM's QMP socket, "
                           "unix:PATH");
    if (!req.uri)
        return usage_error("migrate", "--to is required: the destination, %s",
                           uri_accepted_forms);
    if (check_multifd_combination(&req.multifd) || check_uri_combination(&req))
        return EXIT_USAGE;
    if (parse_timeout("migrate", &req.timeout_ms))
        return EXIT_USAGE;
    return migrate_run(&req);
}

static int cmd_status(int argc, char **argv)
{
    const char *path = NULL;
    int id, rc, timeout_ms;

    while ((id = getopt_long(argc, argv, ":h", status_options, NULL)) != -1) {
        rc = common_option("status", id, argv, status_usage, "--qmp and --help");
        if (rc != 1)
            return rc;
        if (parse_qmp_socket("status", "--qmp", optarg, &path))
            return EXIT_USAGE;
    }
    if (optind < argc)
        return usage_error("status", "unexpected argument '%s'; the options are --qmp and "
                           "--help", argv[optind]);
    if (!path)
        return usage_error("status", "--qmp is required: the VM's QMP socket, unix:PATH");
    if (parse_timeout("status", &timeout_ms))
        return EXIT_USAGE;
    return status_run(path, timeout_ms);
}

int main(int argc, char **argv)
{
    const char *command = argc > 1 ? argv[1] : NULL;

    opterr = 0;
    if (!command)
        return usage_error(NULL, "no command given; the commands are migrate and status "
                           "(see godwit --help)");
    if (!strcmp(command, "--help") || !strcmp(command, "-h")) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (!strcmp(command, "--version") || !strcmp(command, "-V")) {
        printf("godwit %s\n", GODWIT_VERSION);
        return 0;
    }
    /* Each command parses its own options; argv[1] plays argv[0]'s part. */
    if (!strcmp(command, "migrate"))
        return cmd_migrate(argc - 1, argv + 1);
    if (!strcmp(command, "status"))
        return cmd_status(argc - 1, argv + 1);
    if (command[0] == '-')
        return usage_error(NULL, "unknown option '%s' before the command; the options are "
                           "--help and --version, the commands migrate and status", command);
    return usage_error(NULL, "unknown command '%s'; the commands are migrate and status "
                       "(see godwit --help)", command);
}
