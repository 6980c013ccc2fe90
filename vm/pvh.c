/* PVH boot of a 64-bit Linux vmlinux. The file is input from outside: every
 * header field, offset and size is checked against the file and every guest
 * address against the RAM blocks before a byte is copied. */
#include "pvh.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#include "vcpu.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC 0x336ec578u
#define HVM_MEMMAP_RAM 1
#define HVM_MEMMAP_RESERVED 2

/* Where the boot data goes: below 1 MiB, in RAM the memory map leaves the
 * guest (start info, then the map), the command line further up, and the MP
 * table in the last KiB of conventional memory, where Linux looks for it. */
#define PVH_START_INFO_ADDR 0x7000u
#define PVH_CMDLINE_ADDR 0x20000u
#define PVH_MPTABLE_ADDR 0x9fc00u
#define PVH_KERNEL_MIN_ADDR 0x100000u

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};

struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};

bool pvh_is_elf64(const uint8_t *data, size_t size)
{
    return size >= EI_NIDENT && !memcmp(data, ELFMAG, SELFMAG) && data[EI_CLASS] == ELFCLASS64;
}

static int check_header(const uint8_t *data, size_t size, Elf64_Ehdr *ehdr,
                        struct gw_error *err)
{
    if (!pvh_is_elf64(data, size) || size < sizeof(*ehdr))
        return gw_error_set(err, -ENOEXEC, "it is not an ELF64 file");
    memcpy(ehdr, data, sizeof(*ehdr));
    if (data[EI_DATA] != ELFDATA2LSB || ehdr->e_machine != EM_X86_64 ||
        ehdr->e_type != ET_EXEC)
        return gw_error_set(err, -ENOEXEC, "it is a 64-bit ELF but not a little-endian x86-64 "
                            "executable (e_machine %u, e_type %u); godwit-vm boots 64-bit "
                            "kernels through their PVH note", ehdr->e_machine, ehdr->e_type);
    if (ehdr->e_phentsize != sizeof(Elf64_Phdr) || ehdr->e_phnum == 0)
        return gw_error_set(err, -ENOEXEC, "it has no usable program headers");
    if (ehdr->e_phoff > size || (size - ehdr->e_phoff) / sizeof(Elf64_Phdr) < ehdr->e_phnum)
        return gw_error_set(err, -ENOEXEC, "it is truncated inside its program headers");
    return 0;
}

static int add_segment(struct pvh_image *image, const Elf64_Phdr *phdr, unsigned index,
                       struct gw_error *err)
{
    if (phdr->p_filesz > phdr->p_memsz)
        return gw_error_set(err, -ENOEXEC,
                            "program header %u has more file bytes than memory bytes", index);
    if (phdr->p_offset > image->size || image->size - phdr->p_offset < phdr->p_filesz)
        return gw_error_set(err, -ENOEXEC, "it is truncated: segment %u lies past the end "
                            "of the file", index);
    if (phdr->p_paddr < PVH_KERNEL_MIN_ADDR || phdr->p_paddr > UINT32_MAX ||
        phdr->p_memsz > UINT32_MAX - phdr->p_paddr)
        return gw_error_set(err, -ENOEXEC, "segment %u (physical 0x%llx, %llu bytes) is not "
                            "between 1 MiB and 4 GiB", index,
                            (unsigned long long)phdr->p_paddr,
                            (unsigned long long)phdr->p_memsz);
    if (image->nr_segments == PVH_MAX_SEGMENTS)
        return gw_error_set(err, -ENOEXEC, "it has more than %d loadable segments",
                            PVH_MAX_SEGMENTS);
    image->segments[image->nr_segments++] = (struct multiboot_segment){
        .paddr = (uint32_t)phdr->p_paddr, .file_offset = (uint32_t)phdr->p_offset,
        .file_size = (uint32_t)phdr->p_filesz, .mem_size = (uint32_t)phdr->p_memsz,
    };
    return 0;
}

/* Walks one PT_NOTE segment for Xen's PHYS32_ENTRY note. */
static int find_entry_note(struct pvh_image *image, const Elf64_Phdr *phdr, bool *found,
                           struct gw_error *err)
{
    uint64_t pos = phdr->p_offset, end;

    if (phdr->p_offset > image->size || image->size - phdr->p_offset < phdr->p_filesz)
        return gw_error_set(err, -ENOEXEC, "it is truncated: a note segment lies past the "
                            "end of the file");
    end = phdr->p_offset + phdr->p_filesz;
    while (end - pos >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr note;
        uint64_t name_at, desc_at, next;

        memcpy(&note, image->data + pos, sizeof(note));
        name_at = pos + sizeof(note);
        desc_at = name_at + ((note.n_namesz + 3ull) & ~3ull);
        next = desc_at + ((note.n_descsz + 3ull) & ~3ull);
        if (next > end)
            return gw_error_set(err, -ENOEXEC, "a note at offset %llu runs past its segment",
                                (unsigned long long)pos);
        if (note.n_type == XEN_ELFNOTE_PHYS32_ENTRY && note.n_namesz == 4 &&
            !memcmp(image->data + name_at, "Xen", 4)) {
            if (note.n_descsz != 4 && note.n_descsz != 8)
                return gw_error_set(err, -ENOEXEC, "its PVH entry note holds %u bytes, "
                                    "not 4 or 8", note.n_descsz);
            uint64_t entry = 0;
            memcpy(&entry, image->data + desc_at, note.n_descsz);
            if (entry > UINT32_MAX)
                return gw_error_set(err, -ENOEXEC, "its PVH entry 0x%llx is above 4 GiB",
                                    (unsigned long long)entry);
            image->entry = (uint32_t)entry;
            *found = true;
        }
        pos = next;
    }
    return 0;
}

int pvh_parse(const uint8_t *data, size_t size, struct pvh_image *image, struct gw_error *err)
{
    Elf64_Ehdr ehdr;
    bool found = false;
    int rc;

    memset(image, 0, sizeof(*image));
    image->data = data;
    image->size = size;
    if ((rc = check_header(data, size, &ehdr, err)) < 0)
        return rc;
    for (unsigned i = 0; i < ehdr.e_phnum; i++) {
        Elf64_Phdr phdr;
        memcpy(&phdr, data + ehdr.e_phoff + i * sizeof(phdr), sizeof(phdr));
        if (phdr.p_type == PT_LOAD && phdr.p_memsz > 0)
            rc = add_segment(image, &phdr, i, err);
        else if (phdr.p_type == PT_NOTE)
            rc = find_entry_note(image, &phdr, &found, err);
        if (rc < 0)
            return rc;
    }
    if (image->nr_segments == 0)
        return gw_error_set(err, -ENOEXEC, "it has no loadable segment");
    if (!found)
        return gw_error_set(err, -ENOEXEC, "it has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); "
                            "build the kernel with CONFIG_PVH=y");
    if (!boot_segments_contain(image->segments, image->nr_segments, image->entry))
        return gw_error_set(err, -ENOEXEC, "its PVH entry 0x%x is outside every loadable "
                            "segment", image->entry);
    return 0;
}

/* The PC layout, as the multiboot loader gives it: 639 KiB of conventional
 * memory, the EBDA (our MP table) and BIOS area reserved, RAM from 1 MiB. */
static uint32_t build_memmap(const struct ram_block *blocks, size_t nr_blocks,
                             struct hvm_memmap_entry *map)
{
    uint32_t n = 0;

    map[n++] = (struct hvm_memmap_entry){ 0, PVH_MPTABLE_ADDR, HVM_MEMMAP_RAM, 0 };
    map[n++] = (struct hvm_memmap_entry){ PVH_MPTABLE_ADDR, 0xa0000 - PVH_MPTABLE_ADDR,
                                          HVM_MEMMAP_RESERVED, 0 };
    map[n++] = (struct hvm_memmap_entry){ 0xf0000, 0x10000, HVM_MEMMAP_RESERVED, 0 };
    map[n++] = (struct hvm_memmap_entry){ 0x100000, blocks[0].size - 0x100000,
                                          HVM_MEMMAP_RAM, 0 };
    if (nr_blocks > 1)
        map[n++] = (struct hvm_memmap_entry){ blocks[1].gpa, blocks[1].size,
                                              HVM_MEMMAP_RAM, 0 };
    return n;
}

static int write_start_info(const struct ram_block *blocks, size_t nr_blocks,
                            const char *cmdline, struct gw_error *err)
{
    struct hvm_memmap_entry map[5];
    uint32_t entries = build_memmap(blocks, nr_blocks, map);
    struct hvm_start_info info = {
        .magic = HVM_START_MAGIC, .version = 1,
        .cmdline_paddr = PVH_CMDLINE_ADDR,
        .memmap_paddr = PVH_START_INFO_ADDR + sizeof(info), .memmap_entries = entries,
    };
    size_t cmdline_len = strlen(cmdline) + 1;
    uint8_t *host;

    if (cmdline_len > PVH_CMDLINE_MAX)
        return gw_error_set(err, -E2BIG, "the command line is longer than %d bytes",
                            PVH_CMDLINE_MAX - 1);
    host = boot_guest_range(blocks, nr_blocks, PVH_START_INFO_ADDR,
                       sizeof(info) + entries * sizeof(map[0]), "the PVH start info", err);
    if (!host)
        return -EFAULT;
    memcpy(host, &info, sizeof(info));
    memcpy(host + sizeof(info), map, entries * sizeof(map[0]));
    host = boot_guest_range(blocks, nr_blocks, PVH_CMDLINE_ADDR, cmdline_len, "the command line",
                       err);
    if (!host)
        return -EFAULT;
    memcpy(host, cmdline, cmdline_len);
    return 0;
}

int pvh_load(const struct pvh_image *image, const struct ram_block *blocks, size_t nr_blocks,
             const char *cmdline, unsigned nr_vcpus, struct vcpu_entry *entry,
             struct gw_error *err)
{
    int rc;

    if (nr_blocks == 0 || blocks[0].gpa != 0 || blocks[0].size <= 0x100000)
        return gw_error_set(err, -EINVAL, "PVH needs guest RAM from address 0 past 1 MiB");
    if ((rc = boot_copy_segments(image->data, image->segments, image->nr_segments, blocks,
                                 nr_blocks, err)) < 0 ||
        (rc = write_start_info(blocks, nr_blocks, cmdline, err)) < 0 ||
        (rc = mptable_write(blocks, nr_blocks, PVH_MPTABLE_ADDR, nr_vcpus, err)) < 0)
        return rc;
    /* 32-bit protected mode, paging off, EBX the start info: the PVH ABI. */
    *entry = (struct vcpu_entry){ .eip = image->entry, .eax = 0, .ebx = PVH_START_INFO_ADDR };
    return 0;
}
