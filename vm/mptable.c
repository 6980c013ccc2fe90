/* The Intel MultiProcessor table (spec 1.4) that tells Linux about the vCPUs'
 * LAPICs, the in-kernel IOAPIC and how the ISA interrupts reach it. KVM's
 * default routing sends ISA IRQ n to IOAPIC pin n, so the table says so. */
#include "pvh.h"

#include <errno.h>
#include <string.h>

#define MP_LAPIC_ADDR 0xfee00000u
#define MP_IOAPIC_ADDR 0xfec00000u
#define MP_LAPIC_VERSION 0x14
#define MP_IOAPIC_VERSION 0x11
#define MP_ISA_IRQS 16

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_INTSRC, MP_LINTSRC };
enum { MP_INT, MP_NMI, MP_SMI, MP_EXTINT };

struct mp_floating {
    char signature[4];        /* "_MP_" */
    uint32_t config_addr;
    uint8_t length;           /* in 16-byte units: 1 */
    uint8_t revision, checksum, features[5];
} __attribute__((packed));

struct mp_config {
    char signature[4];        /* "PCMP" */
    uint16_t length;
    uint8_t revision, checksum;
    char oem[8], product[12];
    uint32_t oem_table;
    uint16_t oem_size, entries;
    uint32_t lapic_addr;
    uint16_t ext_length;
    uint8_t ext_checksum, reserved;
} __attribute__((packed));

struct mp_processor {
    uint8_t type, lapic_id, lapic_version, flags;
    uint32_t signature, features;
    uint32_t reserved[2];
} __attribute__((packed));

struct mp_bus {
    uint8_t type, id;
    char name[6];
} __attribute__((packed));

struct mp_ioapic {
    uint8_t type, id, version, flags;
    uint32_t addr;
} __attribute__((packed));

struct mp_intsrc {             /* also the local interrupt entries */
    uint8_t type, irq_type;
    uint16_t flags;
    uint8_t src_bus, src_irq, dst_apic, dst_pin;
} __attribute__((packed));

#define MP_TABLE_MAX (sizeof(struct mp_floating) + sizeof(struct mp_config) + \
                      PVH_MAX_VCPUS * sizeof(struct mp_processor) + sizeof(struct mp_bus) + \
                      sizeof(struct mp_ioapic) + (MP_ISA_IRQS + 2) * sizeof(struct mp_intsrc))

static uint8_t checksum(const void *data, size_t len)
{
    const uint8_t *bytes = data;
    uint8_t sum = 0;

    while (len--)
        sum += *bytes++;
    return (uint8_t)-sum;
}

/* Appends one entry to the table under construction. */
static void put(uint8_t *table, size_t *len, const void *entry, size_t size)
{
    memcpy(table + *len, entry, size);
    *len += size;
}

static size_t put_entries(uint8_t *table, size_t len, unsigned nr_vcpus, uint16_t *count)
{
    uint8_t ioapic_id = (uint8_t)nr_vcpus;   /* after the LAPIC ids */

    for (unsigned i = 0; i < nr_vcpus; i++) {
        struct mp_processor cpu = {
            .type = MP_PROCESSOR, .lapic_id = (uint8_t)i, .lapic_version = MP_LAPIC_VERSION,
            .flags = 1 | (i == 0 ? 2 : 0),   /* enabled; the first is the boot CPU */
            .signature = 0x600, .features = 0x201,   /* family 6; FPU, APIC */
        };
        put(table, &len, &cpu, sizeof(cpu));
    }
    put(table, &len, &(struct mp_bus){ MP_BUS, 0, "ISA   " }, sizeof(struct mp_bus));
    put(table, &len, &(struct mp_ioapic){ MP_IOAPIC, ioapic_id, MP_IOAPIC_VERSION, 1,
                                          MP_IOAPIC_ADDR },
        sizeof(struct mp_ioapic));
    for (uint8_t irq = 0; irq < MP_ISA_IRQS; irq++)
        put(table, &len, &(struct mp_intsrc){ MP_INTSRC, MP_INT, 0, 0, irq, ioapic_id, irq },
            sizeof(struct mp_intsrc));
    /* The PIC's output on LINT0 of every LAPIC, NMI on LINT1. */
    put(table, &len, &(struct mp_intsrc){ MP_LINTSRC, MP_EXTINT, 0, 0, 0, 0xff, 0 },
        sizeof(struct mp_intsrc));
    put(table, &len, &(struct mp_intsrc){ MP_LINTSRC, MP_NMI, 0, 0, 0, 0xff, 1 },
        sizeof(struct mp_intsrc));
    *count = (uint16_t)(nr_vcpus + 2 + MP_ISA_IRQS + 2);
    return len;
}

int mptable_write(const struct ram_block *blocks, size_t nr_blocks, uint64_t gpa,
                  unsigned nr_vcpus, struct gw_error *err)
{
    uint8_t table[MP_TABLE_MAX] = { 0 };
    struct mp_floating floating = { .signature = "_MP_", .length = 1, .revision = 4 };
    struct mp_config config = {
        .signature = "PCMP", .revision = 4, .oem = "GODWIT  ", .product = "godwit-vm   ",
        .lapic_addr = MP_LAPIC_ADDR,
    };
    size_t len = sizeof(floating) + sizeof(config);
    uint8_t *host;

    if (nr_vcpus == 0 || nr_vcpus > PVH_MAX_VCPUS)
        return gw_error_set(err, -EINVAL, "the MP table takes 1 to %d vCPUs, not %u",
                            PVH_MAX_VCPUS, nr_vcpus);
    uint16_t entries;

    len = put_entries(table, len, nr_vcpus, &entries);
    config.entries = entries;
    config.length = (uint16_t)(len - sizeof(floating));
    memcpy(table + sizeof(floating), &config, sizeof(config));
    table[sizeof(floating) + offsetof(struct mp_config, checksum)] =
        checksum(table + sizeof(floating), config.length);
    floating.config_addr = (uint32_t)gpa + sizeof(floating);
    floating.checksum = checksum(&floating, sizeof(floating));
    memcpy(table, &floating, sizeof(floating));
    host = ram_blocks_translate(blocks, nr_blocks, gpa, len, err);
    if (!host) {
        gw_error_prefix(err, "the MP table does not fit in guest RAM");
        return -EFAULT;
    }
    memcpy(host, table, len);
    return 0;
}
