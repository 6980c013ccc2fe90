/* Command-line parsing for godwit-vm. Checks syntax and ranges that need no
 * resources; the files named are opened later, by their owners. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <godwit/size.h>

const char options_usage[] =
    "Usage: godwit-vm --kernel FILE [options]\n"
    "Runs an x86-64 KVM guest (a multiboot v1 ELF32 kernel) that godwit can migrate.\n"
    "\n"
    "  --memory SIZE        guest RAM, 16M up to the host's available memory (default 128M);\n"
    "                       a bare number means MiB, suffixes K, M, G, T\n"
    "  --kernel FILE        multiboot v1 kernel in ELF32 format (required)\n"
    "  --append STRING      the kernel's command line\n"
    "  --serial KIND        where COM1 output goes: file:PATH, stdio or none (default none)\n"
    "  --qmp unix:PATH      serve QMP on a unix socket, to up to 4 clients at once\n"
    "  --mem-path FILE      back guest RAM with FILE (MAP_SHARED), grown to the memory size,\n"
    "                       so another process can read and write guest RAM; guest-physical\n"
    "                       [0, 3G) is file offset [0, 3G), RAM above 3G lives at 4G\n"
    "  --mem-prealloc       touch all guest RAM before the guest starts\n"
    "  --incoming URI|defer wait for an incoming migration (not available yet)\n"
    "  --help               print this help and exit\n"
    "  --version            print the version and exit\n";

enum option_id {
    OPT_MEMORY = 256, OPT_KERNEL, OPT_APPEND, OPT_SERIAL, OPT_QMP, OPT_MEM_PATH,
    OPT_MEM_PREALLOC, OPT_INCOMING, OPT_HELP, OPT_VERSION,
};

static const struct option long_options[] = {
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "kernel", required_argument, NULL, OPT_KERNEL },
    { "append", required_argument, NULL, OPT_APPEND },
    { "serial", required_argument, NULL, OPT_SERIAL },
    { "qmp", required_argument, NULL, OPT_QMP },
    { "mem-path", required_argument, NULL, OPT_MEM_PATH },
    { "mem-prealloc", no_argument, NULL, OPT_MEM_PREALLOC },
    { "incoming", required_argument, NULL, OPT_INCOMING },
    { "help", no_argument, NULL, OPT_HELP },
    { "version", no_argument, NULL, OPT_VERSION },
    { NULL, 0, NULL, 0 },
};

static int parse_memory(const char *text, struct vm_config *config, struct gw_error *err)
{
    char shown[32];

    if (size_parse(text, SIZE_MiB, &config->memory, err) < 0) {
        gw_error_prefix(err, "--memory");
        return -EINVAL;
    }
    if (config->memory < VM_MEMORY_MIN)
        return gw_error_set(err, -EINVAL,
                            "--memory %s is %s; guest RAM must be at least 16M", text,
                            size_format(config->memory, shown, sizeof(shown)));
    if (config->memory % 4096)
        return gw_error_set(err, -EINVAL,
                            "--memory %s is not a multiple of 4 KiB", text);
    return 0;
}

static int parse_serial(const char *text, struct vm_config *config, struct gw_error *err)
{
    if (!strcmp(text, "none")) {
        config->serial = SERIAL_NONE;
    } else if (!strcmp(text, "stdio")) {
        config->serial = SERIAL_STDIO;
    } else if (!strncmp(text, "file:", 5) && text[5]) {
        config->serial = SERIAL_FILE;
        config->serial_path = text + 5;
    } else {
        return gw_error_set(err, -EINVAL,
                            "--serial '%s' is not understood; use file:PATH, stdio or none", text);
    }
    return 0;
}

static int parse_qmp(const char *text, struct vm_config *config, struct gw_error *err)
{
    if (strncmp(text, "unix:", 5) || !text[5])
        return gw_error_set(err, -EINVAL,
                            "--qmp '%s' is not understood; use unix:PATH", text);
    config->qmp_path = text + 5;
    return 0;
}

static int parse_incoming(const char *text, struct vm_config *config, struct gw_error *err)
{
    if (!strcmp(text, "defer")) {
        config->incoming_defer = true;
        return 0;
    }
    if (uri_parse(text, &config->incoming, err) < 0) {
        gw_error_prefix(err, "--incoming");
        return -EINVAL;
    }
    config->has_incoming_uri = true;
    return 0;
}

static int parse_one(int id, const char *arg, struct vm_config *config, struct gw_error *err)
{
    switch (id) {
    case OPT_MEMORY: return parse_memory(arg, config, err);
    case OPT_KERNEL: config->kernel = arg; return 0;
    case OPT_APPEND: config->append = arg; return 0;
    case OPT_SERIAL: return parse_serial(arg, config, err);
    case OPT_QMP: return parse_qmp(arg, config, err);
    case OPT_MEM_PATH: config->mem_path = arg; return 0;
    case OPT_MEM_PREALLOC: config->mem_prealloc = true; return 0;
    case OPT_INCOMING: return parse_incoming(arg, config, err);
    }
    return gw_error_set(err, -EINVAL, "internal error: option %d has no parser", id);
}

int options_parse(int argc, char **argv, struct vm_config *config, struct gw_error *err)
{
    int id, rc;

    *config = (struct vm_config){ .memory = 128ULL << 20, .append = "" };
    optind = 1;
    opterr = 0;
    while ((id = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
        if (id == OPT_HELP) {
            fputs(options_usage, stdout);
            return OPTIONS_EXIT;
        }
        if (id == OPT_VERSION) {
            printf("godwit-vm %s\n", GODWIT_VERSION);
            return OPTIONS_EXIT;
        }
        if (id == '?' || id == ':') {
            const char *bad = argv[optind - 1];
            if (id == ':')
                return gw_error_set(err, -EINVAL, "option '%s' needs a value; see --help", bad);
            return gw_error_set(err, -EINVAL,
                                "unknown option '%s'; the options are --memory, --kernel, "
                                "--append, --serial, --qmp, --mem-path, --mem-prealloc, "
                                "--incoming, --help and --version",
                                bad);
        }
        rc = parse_one(id, optarg, config, err);
        if (rc < 0)
            return rc;
    }
    if (optind < argc)
        return gw_error_set(err, -EINVAL,
                            "unexpected argument '%s'; every setting is an option, see --help",
                            argv[optind]);
    if (!config->kernel)
        return gw_error_set(err, -EINVAL,
                            "no kernel given; use --kernel FILE (a multiboot v1 ELF32 kernel)");
    return OPTIONS_RUN;
}
