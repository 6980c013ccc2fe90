/* Command-line parsing for godwit-vm. Checks syntax and ranges that need no
 * resources; the files named are opened later, by their owners. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <godwit/size.h>

const char options_usage[] =
    "Usage: godwit-vm --kernel FILE [options]\n"
    "Runs an x86-64 KVM guest (a multiboot v1 ELF32 kernel, or a 64-bit Linux vmlinux\n"
    "entered through its PVH note) that godwit can migrate.\n"
    "\n"
    "  --memory SIZE        guest RAM, 16M up to the host's available memory (default 128M);\n"
    "                       a bare number means MiB, suffixes K, M, G, T\n"
    "  --kernel FILE        multiboot v1 kernel in ELF32 format, or an x86-64 ELF vmlinux\n"
    "                       with a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) (required)\n"
    "  --append STRING      the kernel's command line\n"
    "  --smp N              vCPUs, 1 to 8 (default 1); the APs wait for INIT/SIPI from the\n"
    "                       boot CPU's LAPIC, as on a PC (the test guest never sends one)\n"
    "  --cpu MODEL[,+FEATURE|,-FEATURE]...\n"
    "                       the guest's CPUID: godwit (default) is KVM's supported list with\n"
    "                       -cx16, +xsaveerptr, +hypervisor, -kvm-pv-ipi, -kvm-pv-sched-yield\n"
    "                       and -kvm-pv-tlb-flush (what a Linux guest needs on a KVM that\n"
    "                       emulates guest code); host is KVM's list as it is. Features:\n"
    "                       ssse3, cx16, pcid, x2apic, popcnt, tsc-deadline, xsave, avx,\n"
    "                       hypervisor, fsgsbase, avx2, invpcid, avx512f, smap, umip, rdpid,\n"
    "                       xsaveerptr, kvmclock, kvm-pv-tlb-flush, kvm-pv-ipi,\n"
    "                       kvm-pv-sched-yield\n"
    "  --serial KIND        where COM1 output goes: file:PATH, stdio or none (default none)\n"
    "  --qmp unix:PATH      serve QMP on a unix socket, to up to 4 clients at once\n"
    "  --mem-path FILE      back guest RAM with FILE (MAP_SHARED), grown to the memory size,\n"
    "                       so another process can read and write guest RAM; guest-physical\n"
    "                       [0, 3G) is file offset [0, 3G), RAM above 3G lives at 4G\n"
    "  --memfd              back guest RAM with a memfd, shared (QEMU's memory-backend-memfd,\n"
    "                       share=on): RAM another process can map, as a local update needs\n"
    "  --mem-prealloc       touch all guest RAM before the guest starts\n"
    "  --incoming URI|defer\n"
    "                       wait for an incoming migration from URI (tcp:HOST:PORT, unix:PATH,\n"
    "                       fd:N, file:PATH, rdma:HOST:PORT), or for migrate-incoming with\n"
    "                       defer (rdma: with x-rdma-* other than the defaults needs defer)\n"
    "  --incoming '{\"channel-type\":\"main\"|\"cpr\",\"addr\":{...}}'\n"
    "                       QEMU's channel form; a cpr channel (a unix socket) is a local\n"
    "                       update's: guest RAM is the source's, mapped from the descriptors\n"
    "                       it passes there before anything else is built; it needs a main\n"
    "                       channel given by a second --incoming (not defer)\n"
    "  -S, --paused         do not run the guest until QMP cont (QEMU's -S): the VM starts in\n"
    "                       prelaunch; with --incoming, the guest stays paused when the\n"
    "                       migration completes, until cont (how libvirt runs a destination)\n"
    "  --accel kvm|none     kvm (default) runs the kernel on /dev/kvm; none (godwit's own, for\n"
    "                       hosts without KVM) plays the test guest on a host thread: the\n"
    "                       kernel is loaded but not run; its --append (mode=dirty|idle,\n"
    "                       start=, end=, rate=) is followed, and pages it writes are\n"
    "                       dirty-logged\n"
    "  --accel kvm,dirty-ring-size=N\n"
    "                       track dirty pages with KVM's dirty ring instead of its dirty\n"
    "                       bitmap (QEMU's property): N entries per vCPU, a power of two\n"
    "                       from 256 up to what this host's KVM allows; 0 keeps the bitmap.\n"
    "                       Needed for the dirty-limit capability and set-vcpu-dirty-limit\n"
    "  --device accel,id=NAME,state-size=SIZE\n"
    "                       a test device holding SIZE bytes of state (4K to 1G, a multiple\n"
    "                       of 4K; a bare number means bytes) that changes while the guest\n"
    "                       runs; up to 8, each with its own id (1 to 31 of A-Z a-z 0-9 _ -)\n"
    "  --object tls-creds-x509,id=ID,dir=DIR,endpoint=server|client,verify-peer=on|off\n"
    "  --object tls-creds-psk,id=ID,dir=DIR,endpoint=server|client,username=NAME\n"
    "  --object authz-simple,id=ID,identity=DN\n"
    "                       QEMU's objects for the migration parameters tls-creds and\n"
    "                       tls-authz: x509 reads ca-cert.pem, server-cert.pem and\n"
    "                       server-key.pem (or client-*) from DIR, psk reads keys.psk\n"
    "                       (USERNAME:HEXKEY lines); checked at start-up; up to 16\n"
    "  --name NAME          the VM's name, as query-name reports it (1 to 255 printable\n"
    "                       characters)\n"
    "  --help               print this help and exit\n"
    "  --version            print the version and exit\n";

enum option_id {
    OPT_MEMORY = 256, OPT_KERNEL, OPT_APPEND, OPT_SERIAL, OPT_QMP, OPT_MEM_PATH,
    OPT_MEM_PREALLOC, OPT_INCOMING, OPT_DEVICE, OPT_HELP, OPT_VERSION, OPT_ACCEL, OPT_NAME,
    OPT_OBJECT, OPT_MEMFD, OPT_SMP, OPT_CPU,
    OPT_PAUSED = 'S',
};

static const struct option long_options[] = {
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "kernel", required_argument, NULL, OPT_KERNEL },
    { "append", required_argument, NULL, OPT_APPEND },
    { "serial", required_argument, NULL, OPT_SERIAL },
    { "qmp", required_argument, NULL, OPT_QMP },
    { "mem-path", required_argument, NULL, OPT_MEM_PATH },
    { "mem-prealloc", no_argument, NULL, OPT_MEM_PREALLOC },
    { "memfd", no_argument, NULL, OPT_MEMFD },
    { "incoming", required_argument, NULL, OPT_INCOMING },
    { "device", required_argument, NULL, OPT_DEVICE },
    { "accel", required_argument, NULL, OPT_ACCEL },
    { "name", required_argument, NULL, OPT_NAME },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "smp", required_argument, NULL, OPT_SMP },
    { "cpu", required_argument, NULL, OPT_CPU },
    { "paused", no_argument, NULL, OPT_PAUSED },
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

/* QEMU's -name takes any string; ours goes back out in JSON and in
 * messages, so control characters are refused. */
static int parse_name(const char *text, struct vm_config *config, struct gw_error *err)
{
    size_t len = strlen(text);

    if (len == 0 || len > VM_NAME_MAX)
        return gw_error_set(err, -EINVAL, "--name must have 1 to %d characters, not %zu",
                            VM_NAME_MAX, len);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return gw_error_set(err, -EINVAL, "--name has a control character at byte %zu; "
                                "a name is printable text", i);
    config->name = text;
    return 0;
}

/* QEMU's JSON form: a main channel, as a URI would be, or the cpr channel. */
static int parse_incoming_channel(const char *text, struct vm_config *config,
                                  struct gw_error *err)
{
    enum uri_channel_type type;
    struct uri uri;

    if (uri_parse_channel_text(text, &type, &uri, err) < 0) {
        gw_error_prefix(err, "--incoming");
        return -EINVAL;
    }
    if (type == URI_CHANNEL_CPR) {
        config->cpr_incoming = uri;
        config->has_cpr_incoming = true;
        return 0;
    }
    config->incoming = uri;
    config->has_incoming_uri = true;
    return 0;
}

static int parse_incoming(const char *text, struct vm_config *config, struct gw_error *err)
{
    if (!strcmp(text, "defer")) {
        config->incoming_defer = true;
        return 0;
    }
    if (text[0] == '{')
        return parse_incoming_channel(text, config, err);
    if (uri_parse(text, &config->incoming, err) < 0) {
        gw_error_prefix(err, "--incoming");
        return -EINVAL;
    }
    if (config->incoming.kind == URI_FD && config->incoming.path[0])
        return gw_error_set(err, -EINVAL, "--incoming %s: a named descriptor exists only once a "
                            "QMP client passed it with getfd; use --incoming defer, then getfd "
                            "and migrate-incoming, or an inherited descriptor, fd:N", text);
    config->has_incoming_uri = true;
    return 0;
}

#define ACCEL_USAGE "use accel,id=NAME,state-size=SIZE"
#define ACCEL_ID_RULE "1 to 31 characters of A-Z, a-z, 0-9, '_' and '-'"
#define ACCEL_SIZE_RULE "4K to 1G and a multiple of 4 KiB"

static bool accel_id_valid(const char *id, size_t len)
{
    if (len == 0 || len >= VM_ACCEL_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
              (id[i] >= '0' && id[i] <= '9') || id[i] == '_' || id[i] == '-'))
            return false;
    return true;
}

static int parse_accel_size(const char *text, const char *value, uint64_t *size,
                            struct gw_error *err)
{
    char shown[32];

    if (size_parse(value, 1, size, err) < 0) {
        gw_error_prefix(err, "--device '%s': state-size", text);
        return -EINVAL;
    }
    if (*size < VM_ACCEL_SIZE_MIN || *size > VM_ACCEL_SIZE_MAX || *size % 4096)
        return gw_error_set(err, -EINVAL, "--device '%s': state-size=%s is %s; it must be "
                            ACCEL_SIZE_RULE, text, value,
                            size_format(*size, shown, sizeof(shown)));
    return 0;
}

/* One key=value of an accel device; seen[] catches a key given twice. */
static int parse_accel_key(const char *text, char *item, struct vm_accel_config *dev,
                           bool seen[6], struct gw_error *err)
{
    static const char *const keys[6] = { "id", "state-size", "changes", "pending", "precopy",
                                         "multifd" };
    /* The migration stream names devices by id (vm/vm_devices.c's). */
    static const char *const builtin_ids[] = { "kvm-irqchip", "kvm-pit", "kvm-clock", "cpu",
                                               "serial" };
    char *value = strchr(item, '=');
    int k;

    if (!value)
        return gw_error_set(err, -EINVAL, "--device '%s': '%s' is not KEY=VALUE; "
                            ACCEL_USAGE, text, item);
    *value++ = '\0';
    for (k = 0; k < 6 && strcmp(item, keys[k]); k++)
        ;
    if (k == 6)
        return gw_error_set(err, -EINVAL, "--device '%s': unknown key '%s'; the keys are "
                            "id and state-size", text, item);
    if (seen[k])
        return gw_error_set(err, -EINVAL, "--device '%s': %s is given twice; give it once",
                            text, item);
    seen[k] = true;
    switch (k) {
    case 0:
        if (!accel_id_valid(value, strlen(value)))
            return gw_error_set(err, -EINVAL, "--device '%s': id '%s' is not allowed; an id "
                                "is " ACCEL_ID_RULE, text, value);
        for (size_t i = 0; i < sizeof(builtin_ids) / sizeof(builtin_ids[0]); i++)
            if (!strcmp(value, builtin_ids[i]))
                return gw_error_set(err, -EINVAL, "--device '%s': id '%s' is taken by one of "
                                    "godwit-vm's own devices (kvm-irqchip, kvm-pit, kvm-clock, "
                                    "cpu, serial); choose another", text, value);
        strcpy(dev->id, value);
        return 0;
    case 1:
        return parse_accel_size(text, value, &dev->state_size, err);
    case 2:
        if (strcmp(value, "on") && strcmp(value, "off"))
            return gw_error_set(err, -EINVAL, "--device '%s': changes=%s; use on or off",
                                text, value);
        dev->changes = !strcmp(value, "on");
        return 0;
    case 4:
        if (strcmp(value, "on") && strcmp(value, "off"))
            return gw_error_set(err, -EINVAL, "--device '%s': precopy=%s; use on or off",
                                text, value);
        dev->precopy = !strcmp(value, "on");
        return 0;
    case 5:
        if (strcmp(value, "on") && strcmp(value, "off"))
            return gw_error_set(err, -EINVAL, "--device '%s': multifd=%s; use on or off",
                                text, value);
        dev->multifd = !strcmp(value, "on");
        return 0;
    default:
        if (strcmp(value, "nonsense") && strcmp(value, "normal"))
            return gw_error_set(err, -EINVAL, "--device '%s': pending=%s; use normal or "
                                "nonsense", text, value);
        dev->pending_nonsense = !strcmp(value, "nonsense");
        return 0;
    }
}

/* --device accel,id=NAME,state-size=SIZE (hidden keys, for tests only:
 * changes=on|off, pending=normal|nonsense, precopy=on|off, multifd=on|off). */
static int parse_device(const char *text, struct vm_config *config, struct gw_error *err)
{
    struct vm_accel_config dev = { .changes = true, .precopy = true, .multifd = true };
    bool seen[6] = { false };
    char copy[256], *item, *next;
    int rc;

    if (strlen(text) >= sizeof(copy))
        return gw_error_set(err, -EINVAL, "--device '%.32s...' is longer than %zu characters; "
                            ACCEL_USAGE, text, sizeof(copy) - 1);
    strcpy(copy, text);
    next = strchr(copy, ',');
    if (next)
        *next++ = '\0';
    if (strcmp(copy, "accel"))
        return gw_error_set(err, -EINVAL, "--device '%s': unknown device type '%s'; the only "
                            "type is accel (" ACCEL_USAGE ")", text, copy);
    while ((item = next)) {
        next = strchr(item, ',');
        if (next)
            *next++ = '\0';
        if (!*item)
            return gw_error_set(err, -EINVAL, "--device '%s' has an empty item between "
                                "commas; " ACCEL_USAGE, text);
        if ((rc = parse_accel_key(text, item, &dev, seen, err)) < 0)
            return rc;
    }
    if (!seen[0])
        return gw_error_set(err, -EINVAL, "--device '%s' has no id; add id=NAME (" ACCEL_ID_RULE
                            ")", text);
    if (!seen[1])
        return gw_error_set(err, -EINVAL, "--device '%s' has no state-size; add state-size=SIZE "
                            "(" ACCEL_SIZE_RULE ")", text);
    for (unsigned i = 0; i < config->nr_accel; i++)
        if (!strcmp(config->accel[i].id, dev.id))
            return gw_error_set(err, -EINVAL, "--device '%s': id '%s' is already taken by "
                                "another --device; every device needs its own id", text,
                                dev.id);
    if (config->nr_accel == VM_ACCEL_MAX)
        return gw_error_set(err, -EINVAL, "--device '%s': too many devices; at most %d "
                            "--device options are allowed", text, VM_ACCEL_MAX);
    config->accel[config->nr_accel++] = dev;
    return 0;
}

/* GODWIT_GO_TIMEOUT_MS (ours, for tests; docs/stream.md): a destination's
 * wait for GO, short enough that a test of a vanished source takes seconds. */
static int parse_go_timeout(const char *text, struct vm_config *config, struct gw_error *err)
{
    char *end;
    unsigned long value;

    errno = 0;
    value = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || value < 1 || value > 3600000)
        return gw_error_set(err, -EINVAL, "GODWIT_GO_TIMEOUT_MS='%s': give milliseconds, 1 "
                            "to 3600000, or leave it unset", text);
    config->go_timeout_ms = (unsigned)value;
    return 0;
}

/* QEMU's dirty-ring-size: entries per vCPU. KVM wants the ring (16 bytes an
 * entry) to be a power of two of at least one 4 KiB page; its upper bound is
 * the host's (KVM_CHECK_EXTENSION), checked when KVM is opened. */
static int parse_dirty_ring_size(const char *arg, const char *value, struct vm_config *config,
                                 struct gw_error *err)
{
    char *end;
    unsigned long long entries;

    errno = 0;
    entries = strtoull(value, &end, 10);
    if (errno || end == value || *end || value[0] == '-' ||
        (entries && (entries < VM_DIRTY_RING_MIN || entries > VM_DIRTY_RING_MAX ||
                     (entries & (entries - 1)))))
        return gw_error_set(err, -EINVAL, "--accel %s: dirty-ring-size must be a power of two "
                            "from %u to %u entries per vCPU (at most what this host's KVM "
                            "allows), or 0 for the dirty bitmap", arg, VM_DIRTY_RING_MIN,
                            VM_DIRTY_RING_MAX);
    config->dirty_ring_size = (uint32_t)entries;
    return 0;
}

/* --accel kvm|none, and kvm's one property, dirty-ring-size=N. */
static int parse_accel(const char *arg, struct vm_config *config, struct gw_error *err)
{
    const char *comma = strchr(arg, ',');
    size_t name_len = comma ? (size_t)(comma - arg) : strlen(arg);
    const char *property = comma ? comma + 1 : NULL;

    if ((name_len != 3 || strncmp(arg, "kvm", 3)) && (name_len != 4 || strncmp(arg, "none", 4)))
        return gw_error_set(err, -EINVAL, "--accel %s: use kvm, kvm,dirty-ring-size=N or none",
                            arg);
    config->accel_none = name_len == 4;
    config->dirty_ring_size = 0;
    if (!property)
        return 0;
    if (config->accel_none)
        return gw_error_set(err, -EINVAL, "--accel %s: none takes no properties; the dirty "
                            "ring needs KVM (--accel kvm,dirty-ring-size=N)", arg);
    if (strncmp(property, "dirty-ring-size=", 16))
        return gw_error_set(err, -EINVAL, "--accel %s: unknown property '%s'; kvm has one, "
                            "dirty-ring-size=N", arg, property);
    return parse_dirty_ring_size(arg, property + 16, config, err);
}

static int parse_object(const char *arg, struct vm_config *config, struct gw_error *err)
{
    if (config->nr_objects == VM_OBJECTS_MAX)
        return gw_error_set(err, -EINVAL, "--object %s: at most %d objects", arg, VM_OBJECTS_MAX);
    config->objects[config->nr_objects++] = arg;
    return 0;
}

/* Which memory: one backing, and a cpr channel only with a main one. */
static int check_backing(const struct vm_config *config, struct gw_error *err)
{
    if (config->memfd && config->mem_path)
        return gw_error_set(err, -EINVAL, "--memfd and --mem-path are two backings for the same "
                            "RAM; give one");
    if (config->has_cpr_incoming && !config->has_incoming_uri)
        return gw_error_set(err, -EINVAL, "--incoming's cpr channel needs the main channel too, "
                            "in a second --incoming (a URI or {\"channel-type\":\"main\",...}, "
                            "not defer): the source connects to it once this VM has its RAM");
    return 0;
}

static int parse_smp(const char *arg, struct vm_config *config, struct gw_error *err)
{
    char *end;
    unsigned long n;

    errno = 0;
    n = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || n < 1 || n > VM_SMP_MAX)
        return gw_error_set(err, -EINVAL, "--smp %s: give a number of vCPUs from 1 to %d", arg,
                            VM_SMP_MAX);
    config->smp = (unsigned)n;
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
    case OPT_MEMFD: config->memfd = true; return 0;
    case OPT_INCOMING: return parse_incoming(arg, config, err);
    case OPT_DEVICE: return parse_device(arg, config, err);
    case OPT_NAME: return parse_name(arg, config, err);
    case OPT_PAUSED: config->start_paused = true; return 0;
    case OPT_ACCEL: return parse_accel(arg, config, err);
    case OPT_OBJECT: return parse_object(arg, config, err);
    case OPT_SMP: return parse_smp(arg, config, err);
    case OPT_CPU: return cpu_model_parse(arg, &config->cpu, err);
    }
    return gw_error_set(err, -EINVAL, "internal error: option %d has no parser", id);
}

int options_parse(int argc, char **argv, struct vm_config *config, struct gw_error *err)
{
    int id, rc;

    *config = (struct vm_config){ .memory = 128ULL << 20, .append = "", .smp = 1 };
    optind = 1;
    opterr = 0;
    while ((id = getopt_long(argc, argv, ":S", long_options, NULL)) != -1) {
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
                                "--append, --serial, --qmp, --mem-path, --memfd, --mem-prealloc, "
                                "--incoming, -S (--paused), --device, --accel, --object, --name, "
                                "--smp, --cpu, --help and --version",
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
                            "no kernel given; use --kernel FILE (a multiboot v1 ELF32 kernel "
                            "or a PVH vmlinux)");
    if ((rc = check_backing(config, err)) < 0)
        return rc;
    if (config->smp > 1 && config->accel_none)
        return gw_error_set(err, -EINVAL, "--smp %u: --accel none plays one CPU; use --smp 1",
                            config->smp);
    const char *go_timeout = getenv("GODWIT_GO_TIMEOUT_MS");
    if (go_timeout && (rc = parse_go_timeout(go_timeout, config, err)) < 0)
        return rc;
    return OPTIONS_RUN;
}
