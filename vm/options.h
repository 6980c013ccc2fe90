/* godwit-vm's command line: parsed and checked before anything is created,
 * so a bad option leaves nothing behind. */
#ifndef GODWIT_VM_OPTIONS_H
#define GODWIT_VM_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>
#include <godwit/uri.h>

#include "cpu_model.h"

#define VM_MEMORY_MIN (16ULL << 20)
#define VM_NAME_MAX 255
/* --smp: the MP table and the LAPIC ids have room for this many. */
#define VM_SMP_MAX 8
/* dirty-ring-size: KVM refuses a ring below one 4 KiB page (256 entries of
 * 16 bytes); KVM_DIRTY_RING_MAX_ENTRIES is its largest. */
#define VM_DIRTY_RING_MIN 256u
#define VM_DIRTY_RING_MAX 65536u

enum serial_kind { SERIAL_NONE, SERIAL_STDIO, SERIAL_FILE };

/* --device accel,id=NAME,state-size=SIZE (vm/accel.c): a test device with
 * a large state, standing in for a VFIO device. */
#define VM_ACCEL_MAX 8
#define VM_ACCEL_ID_MAX 32                  /* 1 to 31 characters, [A-Za-z0-9_-] */
#define VM_ACCEL_SIZE_MIN (4ULL << 10)
#define VM_ACCEL_SIZE_MAX (1ULL << 30)

struct vm_accel_config {
    char id[VM_ACCEL_ID_MAX];
    uint64_t state_size;      /* bytes, a multiple of 4 KiB */
    bool changes;             /* hidden key changes=on|off (default on) */
    bool pending_nonsense;    /* hidden key pending=nonsense|normal */
    bool precopy;             /* hidden key precopy=on|off (default on): off sends it
                               * all in stop-copy, as a device without precopy support */
    bool multifd;             /* hidden key multifd=on|off (default on): off registers it
                               * as a device whose stop-copy state stays on the main
                               * channel (still in pieces), so tests can mix both kinds */
};

/* --object TYPE,id=ID,...: made (and checked) once the migration exists. */
#define VM_OBJECTS_MAX 16

struct vm_config {
    uint64_t memory;          /* bytes */
    const char *kernel;
    const char *append;       /* "" when not given */
    unsigned smp;             /* --smp: vCPUs, 1 to VM_SMP_MAX */
    struct cpu_model_config cpu;   /* --cpu */
    enum serial_kind serial;
    const char *serial_path;  /* SERIAL_FILE */
    const char *qmp_path;     /* NULL: no monitor */
    const char *name;         /* --name, for query-name; NULL: none */
    const char *mem_path;     /* NULL: anonymous memory (or --memfd) */
    bool memfd;               /* --memfd: a shared memfd */
    bool mem_prealloc;
    bool accel_none;          /* --accel none: vm/soft_cpu.h */
    uint32_t dirty_ring_size; /* --accel kvm,dirty-ring-size=N: entries per vCPU; 0: bitmap */
    bool start_paused;        /* -S, --paused: no guest until cont (QEMU's -S) */
    unsigned go_timeout_ms;   /* GODWIT_GO_TIMEOUT_MS (tests); 0: the engine's 10 s */
    bool incoming_defer;
    bool has_incoming_uri;
    struct uri incoming;
    bool has_cpr_incoming;    /* a local update's cpr channel (a unix socket) */
    struct uri cpr_incoming;
    struct vm_accel_config accel[VM_ACCEL_MAX];
    unsigned nr_accel;
    const char *objects[VM_OBJECTS_MAX];
    unsigned nr_objects;
};

/* The VM waits for an incoming migration (--incoming URI or defer). */
static inline bool config_incoming(const struct vm_config *config)
{
    return config->incoming_defer || config->has_incoming_uri;
}

enum options_result { OPTIONS_RUN = 0, OPTIONS_EXIT = 1 };

/* Returns OPTIONS_RUN, OPTIONS_EXIT (--help or --version was printed), or a
 * negative errno with err filled. */
int options_parse(int argc, char **argv, struct vm_config *config, struct gw_error *err);

extern const char options_usage[];

#endif
