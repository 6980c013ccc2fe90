/* godwit-vm's migratable devices and the layout of their state. A state is a
 * list of pieces, each {u32 tag, u32 length, length bytes}, little-endian and
 * unpadded. A load takes a state only when every piece it needs is there
 * exactly once, at the size this host uses, and no other piece is: it never
 * trusts a length from the stream, and changes nothing until all is read. */
#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "accel.h"
#include "cpu_state.h"
#include "kvm_state.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "device state is written in host byte order, which the layout says is little-endian"
#endif

/* Every layout below is version 1; a load refuses any other version. */
#define STATE_VERSION 1

/* --- pieces --- */

struct piece_spec {
    uint32_t tag;
    const char *name;
    size_t size;            /* exact size in bytes; 0: a list of entries */
    size_t entry_size;      /* lists only */
    size_t min_entries, max_entries;
};

/* Where a piece's bytes live in a device's state. */
struct part {
    void *data;
    size_t len;
};

/* A piece found in a state: points into the caller's data. */
struct piece {
    const uint8_t *data;    /* NULL: not seen */
    size_t len;
};

static int put_pieces(struct gw_buffer *out, const struct piece_spec *specs,
                      const struct part *parts, unsigned count)
{
    for (unsigned i = 0; i < count; i++) {
        uint32_t header[2] = { specs[i].tag, (uint32_t)parts[i].len };
        int rc;

        if (parts[i].len > UINT32_MAX)
            return -EOVERFLOW;
        if ((rc = gw_buffer_append(out, header, sizeof(header))) < 0 ||
            (rc = gw_buffer_append(out, parts[i].data, parts[i].len)) < 0)
            return rc;
    }
    return 0;
}

/* Appends the pieces, or leaves out as it was and says why. */
static int save_pieces(const char *who, struct gw_buffer *out, const struct piece_spec *specs,
                       const struct part *parts, unsigned count, struct gw_error *err)
{
    size_t start = out->len;
    int rc = put_pieces(out, specs, parts, count);

    if (rc < 0) {
        out->len = start;
        return gw_error_set(err, rc, "%s: cannot append its state: %s", who, strerror(-rc));
    }
    return 0;
}

static int check_size(const char *who, const struct piece_spec *spec, uint32_t len,
                      struct gw_error *err)
{
    size_t entries;

    if (spec->size) {
        if (len != spec->size)
            return gw_error_set(err, -EINVAL, "%s: %s is %u bytes in the stream, this host "
                                "uses %zu", who, spec->name, len, spec->size);
        return 0;
    }
    if (len % spec->entry_size)
        return gw_error_set(err, -EINVAL, "%s: %s is %u bytes in the stream, not a whole "
                            "number of %zu-byte entries", who, spec->name, len,
                            spec->entry_size);
    entries = len / spec->entry_size;
    if (entries < spec->min_entries || entries > spec->max_entries)
        return gw_error_set(err, -EINVAL, "%s: %s holds %zu entries in the stream; %zu to "
                            "%zu are allowed", who, spec->name, entries, spec->min_entries,
                            spec->max_entries);
    return 0;
}

static int find_spec(const struct piece_spec *specs, unsigned count, uint32_t tag)
{
    for (unsigned i = 0; i < count; i++)
        if (specs[i].tag == tag)
            return (int)i;
    return -1;
}

/* Splits data into pieces, checking every header, length and size. */
static int parse_pieces(const char *who, const uint8_t *data, size_t len,
                        const struct piece_spec *specs, struct piece *found, unsigned count,
                        struct gw_error *err)
{
    struct gw_cursor cursor = { .data = data, .len = len };
    int rc;

    memset(found, 0, count * sizeof(*found));
    while (cursor.pos < cursor.len) {
        size_t at = cursor.pos;
        uint32_t tag, piece_len;
        int i;

        if (gw_cursor_take(&cursor, &tag, sizeof(tag)) < 0 ||
            gw_cursor_take(&cursor, &piece_len, sizeof(piece_len)) < 0)
            return gw_error_set(err, -EBADMSG, "%s: the state ends inside a piece header "
                                "(byte %zu of %zu): it is truncated", who, at, len);
        i = find_spec(specs, count, tag);
        if (i < 0)
            return gw_error_set(err, -EBADMSG, "%s: unknown piece tag %u at byte %zu; this "
                                "build knows tags 1 to %u", who, tag, at, count);
        if (found[i].data)
            return gw_error_set(err, -EBADMSG, "%s: %s appears twice in the state", who,
                                specs[i].name);
        if (piece_len > cursor.len - cursor.pos)
            return gw_error_set(err, -EBADMSG, "%s: %s says %u bytes but only %zu remain: "
                                "the state is truncated", who, specs[i].name, piece_len,
                                cursor.len - cursor.pos);
        if ((rc = check_size(who, &specs[i], piece_len, err)) < 0)
            return rc;
        found[i] = (struct piece){ .data = cursor.data + cursor.pos, .len = piece_len };
        cursor.pos += piece_len;
    }
    for (unsigned i = 0; i < count; i++)
        if (!found[i].data)
            return gw_error_set(err, -EBADMSG, "%s: the state has no %s piece", who,
                                specs[i].name);
    return 0;
}

/* Copies found pieces into the device's state, whose parts were sized from
 * the checked lengths. */
static int copy_pieces(const char *who, const struct piece_spec *specs,
                       const struct piece *found, const struct part *parts, unsigned count,
                       struct gw_error *err)
{
    for (unsigned i = 0; i < count; i++) {
        if (parts[i].len != found[i].len)   /* cannot happen after parse_pieces */
            return gw_error_set(err, -EINVAL, "%s: %s is %zu bytes, its place holds %zu",
                                who, specs[i].name, found[i].len, parts[i].len);
        memcpy(parts[i].data, found[i].data, found[i].len);
    }
    return 0;
}

static int check_version(const char *who, uint32_t version, struct gw_error *err)
{
    if (version != STATE_VERSION)
        return gw_error_set(err, -EPROTONOSUPPORT, "%s: state format version %u is not one "
                            "this build reads (it reads version %d)", who, version,
                            STATE_VERSION);
    return 0;
}

/* Reads a state: version, then pieces, then the copy into parts. */
static int load_pieces(const char *who, const uint8_t *data, size_t len, uint32_t version,
                       const struct piece_spec *specs, struct piece *found, unsigned count,
                       struct gw_error *err)
{
    int rc = check_version(who, version, err);

    return rc < 0 ? rc : parse_pieces(who, data, len, specs, found, count, err);
}

/* --- "cpu": one per vCPU; opaque is the struct vcpu --- */

enum {
    CPU_MP_STATE, CPU_CPUID, CPU_REGS, CPU_SREGS, CPU_XSAVE, CPU_XCRS, CPU_DEBUGREGS,
    CPU_LAPIC, CPU_MSRS, CPU_EVENTS, CPU_PIECES
};

static const struct piece_spec cpu_specs_base[CPU_PIECES] = {
    [CPU_MP_STATE] = { 1, "MP_STATE", sizeof(struct kvm_mp_state), 0, 0, 0 },
    [CPU_CPUID] = { 2, "CPUID", 0, sizeof(struct kvm_cpuid_entry2), 1, CPU_STATE_MAX_CPUID },
    [CPU_REGS] = { 3, "REGS", sizeof(struct kvm_regs), 0, 0, 0 },
    [CPU_SREGS] = { 4, "SREGS", sizeof(struct kvm_sregs), 0, 0, 0 },
    [CPU_XSAVE] = { 5, "XSAVE", 0, 0, 0, 0 },   /* size: this host's, filled in */
    [CPU_XCRS] = { 6, "XCRS", sizeof(struct kvm_xcrs), 0, 0, 0 },
    [CPU_DEBUGREGS] = { 7, "DEBUGREGS", sizeof(struct kvm_debugregs), 0, 0, 0 },
    [CPU_LAPIC] = { 8, "LAPIC", sizeof(struct kvm_lapic_state), 0, 0, 0 },
    [CPU_MSRS] = { 9, "MSRS", 0, sizeof(struct kvm_msr_entry), 0, CPU_STATE_MAX_MSRS },
    [CPU_EVENTS] = { 10, "VCPU_EVENTS", sizeof(struct kvm_vcpu_events), 0, 0, 0 },
};

static void cpu_specs(const struct vcpu *vcpu, struct piece_spec specs[CPU_PIECES])
{
    memcpy(specs, cpu_specs_base, sizeof(cpu_specs_base));
    specs[CPU_XSAVE].size = cpu_state_xsave_size(vcpu);
}

static void cpu_parts(struct cpu_state *s, struct part parts[CPU_PIECES])
{
    parts[CPU_MP_STATE] = (struct part){ &s->mp_state, sizeof(s->mp_state) };
    parts[CPU_CPUID] = (struct part){ s->cpuid->entries,
                                      s->cpuid->nent * sizeof(s->cpuid->entries[0]) };
    parts[CPU_REGS] = (struct part){ &s->regs, sizeof(s->regs) };
    parts[CPU_SREGS] = (struct part){ &s->sregs, sizeof(s->sregs) };
    parts[CPU_XSAVE] = (struct part){ s->xsave, s->xsave_size };
    parts[CPU_XCRS] = (struct part){ &s->xcrs, sizeof(s->xcrs) };
    parts[CPU_DEBUGREGS] = (struct part){ &s->debugregs, sizeof(s->debugregs) };
    parts[CPU_LAPIC] = (struct part){ &s->lapic, sizeof(s->lapic) };
    parts[CPU_MSRS] = (struct part){ s->msrs->entries,
                                     s->msrs->nmsrs * sizeof(s->msrs->entries[0]) };
    parts[CPU_EVENTS] = (struct part){ &s->events, sizeof(s->events) };
}

static int cpu_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct vcpu *vcpu = opaque;
    struct piece_spec specs[CPU_PIECES];
    struct part parts[CPU_PIECES];
    struct cpu_state state;
    char who[16];
    int rc;

    snprintf(who, sizeof(who), "cpu %u", vcpu->id);
    rc = cpu_state_save(vcpu, &state, err);
    if (rc < 0)
        return rc;
    cpu_specs(vcpu, specs);
    cpu_parts(&state, parts);
    rc = save_pieces(who, out, specs, parts, CPU_PIECES, err);
    cpu_state_free(&state);
    return rc;
}

static int cpu_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                    struct gw_error *err)
{
    struct vcpu *vcpu = opaque;
    struct piece_spec specs[CPU_PIECES];
    struct piece found[CPU_PIECES];
    struct part parts[CPU_PIECES];
    struct cpu_state state;
    char who[16];
    int rc;

    snprintf(who, sizeof(who), "cpu %u", vcpu->id);
    cpu_specs(vcpu, specs);
    rc = load_pieces(who, data, len, version, specs, found, CPU_PIECES, err);
    if (rc < 0)
        return rc;
    rc = cpu_state_alloc(&state, specs[CPU_XSAVE].size, err);
    if (rc < 0)
        return rc;
    state.cpuid->nent = (__u32)(found[CPU_CPUID].len / sizeof(state.cpuid->entries[0]));
    state.msrs->nmsrs = (__u32)(found[CPU_MSRS].len / sizeof(state.msrs->entries[0]));
    cpu_parts(&state, parts);
    rc = copy_pieces(who, specs, found, parts, CPU_PIECES, err);
    if (rc == 0)
        rc = cpu_state_restore(vcpu, &state, err);
    cpu_state_free(&state);
    return rc;
}

static const struct device_ops cpu_ops = { .save = cpu_save, .load = cpu_load };

/* --- "kvm-irqchip", "kvm-pit", "kvm-clock": opaque is the struct kvm --- */

enum { IRQCHIP_PIC_MASTER, IRQCHIP_PIC_SLAVE, IRQCHIP_IOAPIC, IRQCHIP_PIECES };

static const struct piece_spec irqchip_specs[IRQCHIP_PIECES] = {
    [IRQCHIP_PIC_MASTER] = { 1, "PIC_MASTER", sizeof(struct kvm_pic_state), 0, 0, 0 },
    [IRQCHIP_PIC_SLAVE] = { 2, "PIC_SLAVE", sizeof(struct kvm_pic_state), 0, 0, 0 },
    [IRQCHIP_IOAPIC] = { 3, "IOAPIC", sizeof(struct kvm_ioapic_state), 0, 0, 0 },
};

static void irqchip_parts(struct kvm_state_irqchip *s, struct part parts[IRQCHIP_PIECES])
{
    parts[IRQCHIP_PIC_MASTER] = (struct part){ &s->pic_master, sizeof(s->pic_master) };
    parts[IRQCHIP_PIC_SLAVE] = (struct part){ &s->pic_slave, sizeof(s->pic_slave) };
    parts[IRQCHIP_IOAPIC] = (struct part){ &s->ioapic, sizeof(s->ioapic) };
}

static int irqchip_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct kvm_state_irqchip state;
    struct part parts[IRQCHIP_PIECES];
    int rc = kvm_state_get_irqchip(opaque, &state, err);

    if (rc < 0) {
        gw_error_prefix(err, "kvm-irqchip");
        return rc;
    }
    irqchip_parts(&state, parts);
    return save_pieces("kvm-irqchip", out, irqchip_specs, parts, IRQCHIP_PIECES, err);
}

static int irqchip_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                        struct gw_error *err)
{
    struct kvm_state_irqchip state;
    struct piece found[IRQCHIP_PIECES];
    struct part parts[IRQCHIP_PIECES];
    int rc;

    irqchip_parts(&state, parts);
    if ((rc = load_pieces("kvm-irqchip", data, len, version, irqchip_specs, found,
                          IRQCHIP_PIECES, err)) < 0 ||
        (rc = copy_pieces("kvm-irqchip", irqchip_specs, found, parts, IRQCHIP_PIECES,
                          err)) < 0)
        return rc;
    rc = kvm_state_set_irqchip(opaque, &state, err);
    if (rc < 0)
        gw_error_prefix(err, "kvm-irqchip");
    return rc;
}

static const struct device_ops irqchip_ops = { .save = irqchip_save, .load = irqchip_load };

static const struct piece_spec pit_specs[1] = {
    { 1, "PIT2", sizeof(struct kvm_pit_state2), 0, 0, 0 },
};

static int pit_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct kvm_pit_state2 pit;
    int rc = kvm_state_get_pit(opaque, &pit, err);

    if (rc < 0) {
        gw_error_prefix(err, "kvm-pit");
        return rc;
    }
    return save_pieces("kvm-pit", out, pit_specs, &(struct part){ &pit, sizeof(pit) }, 1, err);
}

static int pit_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                    struct gw_error *err)
{
    struct kvm_pit_state2 pit;
    struct piece found[1];
    int rc;

    if ((rc = load_pieces("kvm-pit", data, len, version, pit_specs, found, 1, err)) < 0 ||
        (rc = copy_pieces("kvm-pit", pit_specs, found, &(struct part){ &pit, sizeof(pit) }, 1,
                          err)) < 0)
        return rc;
    rc = kvm_state_set_pit(opaque, &pit, err);
    if (rc < 0)
        gw_error_prefix(err, "kvm-pit");
    return rc;
}

static const struct device_ops pit_ops = { .save = pit_save, .load = pit_load };

static const struct piece_spec clock_specs[1] = {
    { 1, "CLOCK", sizeof(struct kvm_clock_data), 0, 0, 0 },
};

/* opaque is the struct vm: a stopped guest's clock is the one held since
 * its vCPUs stopped (run_state.c), and a loaded one is set at the resume,
 * not here, so guest time does not run on while the destination waits. */
static int clock_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct vm *vm = opaque;
    struct kvm_clock_data clock;
    int rc = 0;

    if (!vm_held_clock(vm, &clock))
        rc = kvm_state_get_clock(&vm->kvm, &clock, err);
    if (rc < 0) {
        gw_error_prefix(err, "kvm-clock");
        return rc;
    }
    return save_pieces("kvm-clock", out, clock_specs,
                       &(struct part){ &clock, sizeof(clock) }, 1, err);
}

static int clock_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                      struct gw_error *err)
{
    struct kvm_clock_data clock;
    struct piece found[1];
    int rc;

    if ((rc = load_pieces("kvm-clock", data, len, version, clock_specs, found, 1, err)) < 0 ||
        (rc = copy_pieces("kvm-clock", clock_specs, found,
                          &(struct part){ &clock, sizeof(clock) }, 1, err)) < 0)
        return rc;
    vm_hold_clock(opaque, &clock);
    return 0;
}

static const struct device_ops clock_ops = { .save = clock_save, .load = clock_load };

/* --- "serial": the COM1 UART; opaque is the struct uart --- */

enum { SERIAL_REGISTERS, SERIAL_INTERRUPT, SERIAL_PIECES };

/* REGISTERS: IER, LCR, MCR, SCR, FCR, DLL, DLM, one byte each.
 * INTERRUPT: 1 when a THR-empty interrupt is pending, else 0. */
#define SERIAL_REGISTERS_LEN 7

static const struct piece_spec serial_specs[SERIAL_PIECES] = {
    [SERIAL_REGISTERS] = { 1, "REGISTERS", SERIAL_REGISTERS_LEN, 0, 0, 0 },
    [SERIAL_INTERRUPT] = { 2, "INTERRUPT", 1, 0, 0, 0 },
};

static int serial_save(void *opaque, struct gw_buffer *out, struct gw_error *err)
{
    struct uart_state state;
    uint8_t regs[SERIAL_REGISTERS_LEN], pending;
    struct part parts[SERIAL_PIECES] = {
        [SERIAL_REGISTERS] = { regs, sizeof(regs) },
        [SERIAL_INTERRUPT] = { &pending, 1 },
    };

    uart_get_state(opaque, &state);
    regs[0] = state.ier;
    regs[1] = state.lcr;
    regs[2] = state.mcr;
    regs[3] = state.scr;
    regs[4] = state.fcr;
    regs[5] = state.dll;
    regs[6] = state.dlm;
    pending = state.thr_interrupt;
    return save_pieces("serial", out, serial_specs, parts, SERIAL_PIECES, err);
}

static int serial_load(void *opaque, const uint8_t *data, size_t len, uint32_t version,
                       struct gw_error *err)
{
    uint8_t regs[SERIAL_REGISTERS_LEN] = { 0 }, pending = 0;
    struct part parts[SERIAL_PIECES] = {
        [SERIAL_REGISTERS] = { regs, sizeof(regs) },
        [SERIAL_INTERRUPT] = { &pending, 1 },
    };
    struct piece found[SERIAL_PIECES];
    int rc;

    if ((rc = load_pieces("serial", data, len, version, serial_specs, found, SERIAL_PIECES,
                          err)) < 0 ||
        (rc = copy_pieces("serial", serial_specs, found, parts, SERIAL_PIECES, err)) < 0)
        return rc;
    if (pending > 1)
        return gw_error_set(err, -EINVAL, "serial: INTERRUPT is %u; it must be 0 or 1",
                            pending);
    return uart_set_state(opaque, &(struct uart_state){
                              .ier = regs[0], .lcr = regs[1], .mcr = regs[2], .scr = regs[3],
                              .fcr = regs[4], .dll = regs[5], .dlm = regs[6],
                              .thr_interrupt = pending },
                          err);
}

static const struct device_ops serial_ops = { .save = serial_save, .load = serial_load };

/* --- registration --- */

/* The engine saves and loads in this order: the interrupt controllers, the
 * PIT that feeds them and the clock before the vCPUs that receive from them
 * (as Firecracker restores VM state first); the UART last, so the line it
 * drives again on load lands in an irqchip that is already restored. */
int vm_devices_register(struct vm *vm, struct gw_error *err)
{
    struct device_registry *registry = &vm->devices;
    int rc;

    if ((rc = kvm_state_require_caps(&vm->kvm, err)) < 0 ||
        (rc = device_register(registry, "kvm-irqchip", 0, STATE_VERSION, &irqchip_ops,
                              &vm->kvm, err)) < 0 ||
        (rc = device_register(registry, "kvm-pit", 0, STATE_VERSION, &pit_ops, &vm->kvm,
                              err)) < 0 ||
        (rc = device_register(registry, "kvm-clock", 0, STATE_VERSION, &clock_ops, vm,
                              err)) < 0)
        return rc;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if ((rc = device_register(registry, "cpu", vm->vcpus[i].id, STATE_VERSION, &cpu_ops,
                                  &vm->vcpus[i], err)) < 0)
            return rc;
    if ((rc = device_register(registry, "serial", 0, STATE_VERSION, &serial_ops, &vm->uart,
                              err)) < 0)
        return rc;
    return accel_register(vm, err);   /* --device accel,... (accel.c) */
}
