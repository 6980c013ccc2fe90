/* CPUID as the guest sees it: feature bits by name, the default model's
 * changes and the per-vCPU topology. Works on a copy of KVM's supported list;
 * what a user asks for is checked when the option is parsed. */
#include "cpu_model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum reg { EAX, EBX, ECX, EDX };

struct feature {
    const char *name;
    uint32_t leaf, index;
    enum reg reg;
    uint8_t bit;
};

static const struct feature features[] = {
    { "ssse3", 1, 0, ECX, 9 },      { "cx16", 1, 0, ECX, 13 },
    { "pcid", 1, 0, ECX, 17 },      { "x2apic", 1, 0, ECX, 21 },
    { "popcnt", 1, 0, ECX, 23 },    { "tsc-deadline", 1, 0, ECX, 24 },
    { "xsave", 1, 0, ECX, 26 },     { "avx", 1, 0, ECX, 28 },
    { "hypervisor", 1, 0, ECX, 31 }, { "fsgsbase", 7, 0, EBX, 0 },
    { "avx2", 7, 0, EBX, 5 },       { "invpcid", 7, 0, EBX, 10 },
    { "avx512f", 7, 0, EBX, 16 },   { "smap", 7, 0, EBX, 20 },
    { "umip", 7, 0, ECX, 2 },       { "rdpid", 7, 0, ECX, 22 },
    { "xsaveerptr", 0x80000008, 0, EBX, 2 },
    { "kvmclock", 0x40000001, 0, EAX, 3 },   /* KVM_FEATURE_CLOCKSOURCE2 */
    { "kvm-pv-tlb-flush", 0x40000001, 0, EAX, 9 },
    { "kvm-pv-ipi", 0x40000001, 0, EAX, 11 },
    { "kvm-pv-sched-yield", 0x40000001, 0, EAX, 13 },
};
#define NR_FEATURES (sizeof(features) / sizeof(features[0]))

/* The default model's changes, each for this machine's KVM (PVM), which
 * emulates guest kernel code: cmpxchg16b is not emulated though KVM offers
 * CX16; without XSAVEERPTR Linux runs an fnclex/emms/fild workaround on AMD
 * the emulator cannot run; without the hypervisor bit Linux never looks for
 * KVM's leaves, so never finds kvmclock; PV IPIs and PV sched-yield are
 * hypercalls this KVM leaves a vCPU spinning in (a 2-vCPU Linux hangs in its
 * first IPI, under QEMU too), and the PV TLB flush sends its IPIs that way. */
static const struct { const char *name; bool on; } godwit_changes[] = {
    { "cx16", false }, { "xsaveerptr", true }, { "hypervisor", true },
    { "kvm-pv-ipi", false }, { "kvm-pv-sched-yield", false }, { "kvm-pv-tlb-flush", false },
};

static int find_feature(const char *name, size_t len)
{
    for (size_t i = 0; i < NR_FEATURES; i++)
        if (strlen(features[i].name) == len && !strncmp(features[i].name, name, len))
            return (int)i;
    return -1;
}

const char *cpu_model_feature_names(void)
{
    static char names[512];

    if (!names[0])
        for (size_t i = 0; i < NR_FEATURES; i++)
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                     i ? ", " : "", features[i].name);
    return names;
}

static int add_change(struct cpu_model_config *config, const char *item, size_t len,
                      const char *text, struct gw_error *err)
{
    int feature;

    if (len < 2 || (item[0] != '+' && item[0] != '-'))
        return gw_error_set(err, -EINVAL, "--cpu %s: '%.*s' is not +FEATURE or -FEATURE",
                            text, (int)len, item);
    feature = find_feature(item + 1, len - 1);
    if (feature < 0)
        return gw_error_set(err, -EINVAL, "--cpu %s: unknown feature '%.*s'; the features are "
                            "%s", text, (int)len - 1, item + 1, cpu_model_feature_names());
    if (config->nr_changes == CPU_MODEL_MAX_CHANGES)
        return gw_error_set(err, -EINVAL, "--cpu %s: at most %d feature changes", text,
                            CPU_MODEL_MAX_CHANGES);
    config->changes[config->nr_changes].feature = (uint8_t)feature;
    config->changes[config->nr_changes++].on = item[0] == '+';
    return 0;
}

int cpu_model_parse(const char *text, struct cpu_model_config *config, struct gw_error *err)
{
    const char *item = text, *comma = strchr(text, ',');
    size_t len = comma ? (size_t)(comma - text) : strlen(text);
    int rc;

    *config = (struct cpu_model_config){ 0 };
    if (len == 4 && !strncmp(item, "host", 4))
        config->host = true;
    else if (!(len == 6 && !strncmp(item, "godwit", 6)))
        return gw_error_set(err, -EINVAL, "--cpu %s: the model is godwit (the default) or "
                            "host, followed by ,+FEATURE or ,-FEATURE items", text);
    while (comma) {
        item = comma + 1;
        comma = strchr(item, ',');
        len = comma ? (size_t)(comma - item) : strlen(item);
        if ((rc = add_change(config, item, len, text, err)) < 0)
            return rc;
    }
    return 0;
}

static struct kvm_cpuid_entry2 *find_entry(struct kvm_cpuid2 *cpuid, uint32_t leaf,
                                           uint32_t index)
{
    for (uint32_t i = 0; i < cpuid->nent; i++)
        if (cpuid->entries[i].function == leaf &&
            (!(cpuid->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
             cpuid->entries[i].index == index))
            return &cpuid->entries[i];
    return NULL;
}

static void set_feature(struct kvm_cpuid2 *cpuid, const struct feature *feature, bool on)
{
    struct kvm_cpuid_entry2 *entry = find_entry(cpuid, feature->leaf, feature->index);
    uint32_t *regs[] = { NULL, NULL, NULL, NULL };

    if (!entry)
        return;   /* a leaf KVM does not offer: the feature is absent either way */
    regs[EAX] = &entry->eax;
    regs[EBX] = &entry->ebx;
    regs[ECX] = &entry->ecx;
    regs[EDX] = &entry->edx;
    if (on)
        *regs[feature->reg] |= 1u << feature->bit;
    else
        *regs[feature->reg] &= ~(1u << feature->bit);
}

/* Each vCPU's own APIC id where CPUID reports one, and the package size. */
static void set_topology(struct kvm_cpuid2 *cpuid, unsigned apic_id, unsigned nr_vcpus)
{
    for (uint32_t i = 0; i < cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *entry = &cpuid->entries[i];

        if (entry->function == 1) {
            entry->ebx = (entry->ebx & 0xffff) | (nr_vcpus << 16) | (apic_id << 24);
            if (nr_vcpus > 1)
                entry->edx |= 1u << 28;   /* HTT: EBX[23:16] is meaningful */
        } else if (entry->function == 0xb || entry->function == 0x1f) {
            entry->edx = apic_id;
        } else if (entry->function == 0x8000001e) {
            entry->eax = apic_id;
        }
    }
}

void cpu_model_apply(const struct cpu_model_config *config, struct kvm_cpuid2 *cpuid,
                     unsigned apic_id, unsigned nr_vcpus)
{
    if (!config->host)
        for (size_t i = 0; i < sizeof(godwit_changes) / sizeof(godwit_changes[0]); i++)
            set_feature(cpuid, &features[find_feature(godwit_changes[i].name,
                                                      strlen(godwit_changes[i].name))],
                        godwit_changes[i].on);
    for (unsigned i = 0; i < config->nr_changes; i++)
        set_feature(cpuid, &features[config->changes[i].feature], config->changes[i].on);
    set_topology(cpuid, apic_id, nr_vcpus);
}
