/* The CPU the guest sees: KVM's supported CPUID, adjusted (--cpu). The
 * default model, "godwit", makes the changes this machine's KVM needs for a
 * Linux guest (docs/cli.md says why each is there); "host" takes KVM's list
 * as it is. Either can be changed feature by feature: --cpu godwit,-avx,+cx16. */
#ifndef GODWIT_VM_CPU_MODEL_H
#define GODWIT_VM_CPU_MODEL_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include <godwit/error.h>

#define CPU_MODEL_MAX_CHANGES 32

struct cpu_model_config {
    bool host;                 /* model "host": no built-in changes */
    unsigned nr_changes;
    struct {
        uint8_t feature;       /* index into the feature table */
        bool on;
    } changes[CPU_MODEL_MAX_CHANGES];
};

/* Parses MODEL[,+FEATURE|-FEATURE]...; the message names the models and
 * features allowed. */
int cpu_model_parse(const char *text, struct cpu_model_config *config, struct gw_error *err);

/* Applies the model to KVM's supported CPUID for vCPU apic_id of nr_vcpus:
 * features, then the topology (APIC ids, logical processor count). */
void cpu_model_apply(const struct cpu_model_config *config, struct kvm_cpuid2 *cpuid,
                     unsigned apic_id, unsigned nr_vcpus);

/* The feature names, comma-separated, for --help and messages. */
const char *cpu_model_feature_names(void);

#endif
