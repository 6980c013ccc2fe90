/* --accel none (godwit's own): a host thread plays the test guest where
 * there is no /dev/kvm, so the VMM, its monitor and every migration path can
 * run anywhere. It reads the guest's --append (mode=dirty|idle, start=,
 * end=, rate=), prints 'A' when ready and 'B' after each pass, and in dirty
 * mode adds one to the first byte of every page of its range, pass after
 * pass, at about the pace the real guest has under PVM, or at rate= MiB/s
 * by the host's monotonic clock. What it writes it marks in a
 * software dirty log, the engine's dirty tracker in this mode (DESIGN.md:
 * "pages that device emulation wrote itself"). Its place in the pass is its
 * state, migrated as the device "soft-cpu". */
#ifndef GODWIT_VM_SOFT_CPU_H
#define GODWIT_VM_SOFT_CPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <godwit/device.h>
#include <godwit/dirty.h>
#include <godwit/error.h>

#include "cpu_throttle.h"
#include "memory.h"

struct soft_cpu {
    struct guest_memory *memory;
    int serial_fd;
    pthread_t thread;
    bool started;
    /* lock guards the run flags; the thread parks between chunks. */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool run, parked, quit;
    /* The "registers" (device soft-cpu): owned by the thread while it runs,
     * by save/load while it is parked. */
    uint32_t mode;            /* 0 dirty, 1 idle */
    uint64_t first, end;      /* guest-physical range, page aligned */
    uint64_t next;            /* the next page the pass touches */
    bool booted;              /* 'A' printed: the range was zeroed */
    uint32_t rate;            /* rate=, MiB/s; 0 unpaced. --append's, never migrated */
    /* The software dirty log: a bit per page of each block, set by the
     * thread after each write, taken by sync. */
    uint64_t *dirty[2];
    atomic_bool tracking;
    bool nmi_pending;         /* under lock: the guest's handler prints 'N' */
    pid_t tid;                /* under lock: the thread's id, once it runs */
    struct throttle_sleep throttle;   /* under lock: the cpu throttle's sleeps */
};

extern const struct dirty_tracker_ops soft_dirty_ops;

/* Checks the --append words as the guest would; 0 or -EINVAL with err. */
int soft_cpu_init(struct soft_cpu *cpu, struct guest_memory *memory, const char *append,
                  int serial_fd, struct gw_error *err);
int soft_cpu_register(struct soft_cpu *cpu, struct device_registry *devices,
                      struct gw_error *err);
/* Returns once the thread runs, so its id is known. */
int soft_cpu_start(struct soft_cpu *cpu, struct gw_error *err);
pid_t soft_cpu_thread_id(struct soft_cpu *cpu);
/* Returns once the thread is parked between two pages. */
void soft_cpu_stop(struct soft_cpu *cpu);
void soft_cpu_resume(struct soft_cpu *cpu);
/* As the guest's NMI handler: 'N' on the serial port once it runs. */
void soft_cpu_nmi(struct soft_cpu *cpu);
/* The cpu throttle: sleep ns between two chunks of the pass, or lengthen
 * a sleep pending or under way (cpu_throttle.h); 0 ends any sleep now. */
void soft_cpu_throttle(struct soft_cpu *cpu, uint64_t ns);
void soft_cpu_cleanup(struct soft_cpu *cpu);

#endif
