/* Multiboot v1 loading of ELF32 kernels. The file is input from outside:
 * every header field, offset and size is checked against the file and every
 * guest address against the RAM blocks before a byte is copied. */
#include "multiboot.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vcpu.h"

/* Header flags this loader honours: page-align modules (there are none) and
 * memory information. Any other bit in the low 16 is a requirement we cannot
 * meet, and the spec says to refuse the kernel. */
#define MB_FLAG_PAGE_ALIGN 0x1u
#define MB_FLAG_MEMORY_INFO 0x2u
#define MB_FLAG_AOUT_KLUDGE 0x10000u
#define MB_SUPPORTED_REQUIRED (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO)

/* multiboot_info flags the loader sets */
#define MBI_MEMORY 0x001u
#define MBI_CMDLINE 0x004u
#define MBI_MMAP 0x040u
#define MBI_LOADER_NAME 0x200u

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr, config_table, boot_loader_name;
} __attribute__((packed));

struct multiboot_mmap_entry {
    uint32_t size;   /* of the rest of the entry: 20 */
    uint64_t addr, len;
    uint32_t type;
} __attribute__((packed));

static const char loader_name[] = "godwit-vm " GODWIT_VERSION;

static int find_header(const uint8_t *data, size_t size, uint32_t *flags, struct gw_error *err)
{
    size_t limit = size < MULTIBOOT_SEARCH_LIMIT ? size : MULTIBOOT_SEARCH_LIMIT;

    for (size_t offset = 0; offset + 12 <= limit; offset += 4) {
        uint32_t header[3];
        memcpy(header, data + offset, sizeof(header));
        if (header[0] == MULTIBOOT_HEADER_MAGIC && header[0] + header[1] + header[2] == 0) {
            *flags = header[1];
            return 0;
        }
    }
    return gw_error_set(err, -ENOEXEC,
                        "no multiboot v1 header (magic 0x1BADB002 with a valid checksum) in "
                        "its first 8 KiB; godwit-vm boots multiboot v1 ELF32 kernels");
}

static int check_elf_header(const uint8_t *data, size_t size, const Elf32_Ehdr **ehdr_out,
                            struct gw_error *err)
{
    const Elf32_Ehdr *ehdr = (const Elf32_Ehdr *)data;

    if (size < EI_NIDENT || memcmp(data, ELFMAG, SELFMAG))
        return gw_error_set(err, -ENOEXEC,
                            "it is not an ELF file; godwit-vm boots multiboot v1 ELF32 kernels");
    if (data[EI_CLASS] == ELFCLASS64)
        return gw_error_set(err, -ENOEXEC,
                            "it is a 64-bit ELF; multiboot v1 loads 32-bit ELF kernels "
                            "(link it with -m elf_i386)");
    if (data[EI_CLASS] != ELFCLASS32 || data[EI_DATA] != ELFDATA2LSB)
        return gw_error_set(err, -ENOEXEC, "it is not a little-endian ELF32 file");
    if (size < sizeof(Elf32_Ehdr))
        return gw_error_set(err, -ENOEXEC, "it is truncated inside its ELF header");
    if (ehdr->e_machine != EM_386 || ehdr->e_type != ET_EXEC)
        return gw_error_set(err, -ENOEXEC,
                            "it is not an i386 executable (e_machine %u, e_type %u)",
                            ehdr->e_machine, ehdr->e_type);
    if (ehdr->e_phentsize != sizeof(Elf32_Phdr) || ehdr->e_phnum == 0)
        return gw_error_set(err, -ENOEXEC, "it has no usable program headers");
    if (ehdr->e_phoff > size || (size - ehdr->e_phoff) / sizeof(Elf32_Phdr) < ehdr->e_phnum)
        return gw_error_set(err, -ENOEXEC, "it is truncated inside its program headers");
    *ehdr_out = ehdr;
    return 0;
}

static int add_segment(struct multiboot_image *image, const Elf32_Phdr *phdr, unsigned index,
                       struct gw_error *err)
{
    struct multiboot_segment *segment;

    if (phdr->p_filesz > phdr->p_memsz)
        return gw_error_set(err, -ENOEXEC,
                            "program header %u has more file bytes than memory bytes", index);
    if (phdr->p_offset > image->size || image->size - phdr->p_offset < phdr->p_filesz)
        return gw_error_set(err, -ENOEXEC, "it is truncated: segment %u lies past the end "
                            "of the file", index);
    if ((uint64_t)phdr->p_paddr + phdr->p_memsz > UINT32_MAX)
        return gw_error_set(err, -ENOEXEC, "segment %u ends above 4 GiB", index);
    if (image->nr_segments == MULTIBOOT_MAX_SEGMENTS)
        return gw_error_set(err, -ENOEXEC, "it has more than %d loadable segments",
                            MULTIBOOT_MAX_SEGMENTS);
    segment = &image->segments[image->nr_segments++];
    *segment = (struct multiboot_segment){
        .paddr = phdr->p_paddr, .file_offset = phdr->p_offset,
        .file_size = phdr->p_filesz, .mem_size = phdr->p_memsz,
    };
    if (phdr->p_paddr + phdr->p_memsz > image->load_end)
        image->load_end = phdr->p_paddr + phdr->p_memsz;
    return 0;
}

bool boot_segments_contain(const struct multiboot_segment *segments, unsigned nr_segments,
                           uint32_t address)
{
    for (unsigned i = 0; i < nr_segments; i++)
        if (address >= segments[i].paddr && address - segments[i].paddr < segments[i].mem_size)
            return true;
    return false;
}

int multiboot_parse(const uint8_t *data, size_t size, struct multiboot_image *image,
                    struct gw_error *err)
{
    const Elf32_Ehdr *ehdr = NULL;
    int rc;

    memset(image, 0, sizeof(*image));
    image->data = data;
    image->size = size;
    rc = check_elf_header(data, size, &ehdr, err);
    if (rc < 0)
        return rc;
    rc = find_header(data, size, &image->header_flags, err);
    if (rc < 0)
        return rc;
    if (image->header_flags & 0xffffu & ~MB_SUPPORTED_REQUIRED)
        return gw_error_set(err, -ENOEXEC,
                            "its multiboot header asks for features godwit-vm does not "
                            "provide (flags 0x%x; supported: page alignment, memory info)",
                            image->header_flags);
    for (unsigned i = 0; i < ehdr->e_phnum; i++) {
        Elf32_Phdr phdr;
        memcpy(&phdr, data + ehdr->e_phoff + i * sizeof(phdr), sizeof(phdr));
        if (phdr.p_type == PT_LOAD && phdr.p_memsz > 0) {
            rc = add_segment(image, &phdr, i, err);
            if (rc < 0)
                return rc;
        }
    }
    if (image->nr_segments == 0)
        return gw_error_set(err, -ENOEXEC, "it has no loadable segment");
    image->entry = ehdr->e_entry;
    if (!boot_segments_contain(image->segments, image->nr_segments, image->entry))
        return gw_error_set(err, -ENOEXEC,
                            "its entry point 0x%x is outside every loadable segment",
                            image->entry);
    return 0;
}

void *boot_guest_range(const struct ram_block *blocks, size_t nr_blocks, uint64_t gpa,
                       uint64_t len, const char *what, struct gw_error *err)
{
    uint8_t *host = ram_blocks_translate(blocks, nr_blocks, gpa, len ? len : 1, err);

    if (!host)
        gw_error_prefix(err, "%s does not fit in guest RAM", what);
    return host;
}

static uint32_t build_mmap(const struct ram_block *blocks, size_t nr_blocks,
                           struct multiboot_mmap_entry *map)
{
    uint64_t low_end = blocks[0].size;
    uint32_t n = 0;

    /* The PC layout: 639 KiB of conventional memory, the EBDA and BIOS area
     * reserved, then RAM from 1 MiB. */
    map[n++] = (struct multiboot_mmap_entry){ 20, 0, 0x9fc00, 1 };
    map[n++] = (struct multiboot_mmap_entry){ 20, 0x9fc00, 0x400, 2 };
    map[n++] = (struct multiboot_mmap_entry){ 20, 0xf0000, 0x10000, 2 };
    map[n++] = (struct multiboot_mmap_entry){ 20, 0x100000, low_end - 0x100000, 1 };
    if (nr_blocks > 1)
        map[n++] = (struct multiboot_mmap_entry){ 20, blocks[1].gpa, blocks[1].size, 1 };
    return n;
}

int multiboot_load(const struct multiboot_image *image, const struct ram_block *blocks,
                   size_t nr_blocks, const char *cmdline, struct vcpu_entry *entry,
                   struct gw_error *err)
{
    struct multiboot_mmap_entry map[5];
    struct multiboot_info info = { 0 };
    size_t cmdline_len = strlen(cmdline) + 1;
    uint32_t info_addr = (image->load_end + 4095u) & ~4095u;
    uint32_t cmdline_addr = info_addr + sizeof(info);
    uint32_t name_addr = cmdline_addr + (uint32_t)cmdline_len;
    uint32_t map_addr = (name_addr + (uint32_t)sizeof(loader_name) + 7u) & ~7u;
    uint32_t map_entries = build_mmap(blocks, nr_blocks, map);
    uint8_t *host;

    if (nr_blocks == 0 || blocks[0].gpa != 0 || blocks[0].size <= 0x100000)
        return gw_error_set(err, -EINVAL, "multiboot needs guest RAM from address 0 past 1 MiB");
    if (cmdline_len > MULTIBOOT_CMDLINE_MAX)
        return gw_error_set(err, -E2BIG, "the command line is longer than %d bytes",
                            MULTIBOOT_CMDLINE_MAX - 1);
    if (boot_copy_segments(image->data, image->segments, image->nr_segments, blocks, nr_blocks,
                           err) < 0)
        return -EFAULT;
    info.flags = MBI_MEMORY | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME;
    info.mem_lower = 639;
    info.mem_upper = (uint32_t)((blocks[0].size - 0x100000) / 1024);
    info.cmdline = cmdline_addr;
    info.boot_loader_name = name_addr;
    info.mmap_addr = map_addr;
    info.mmap_length = map_entries * (uint32_t)sizeof(map[0]);
    host = boot_guest_range(blocks, nr_blocks, info_addr, map_addr + info.mmap_length - info_addr,
                       "the multiboot information after the kernel", err);
    if (!host)
        return -EFAULT;
    memcpy(host, &info, sizeof(info));
    memcpy(host + (cmdline_addr - info_addr), cmdline, cmdline_len);
    memcpy(host + (name_addr - info_addr), loader_name, sizeof(loader_name));
    memcpy(host + (map_addr - info_addr), map, info.mmap_length);
    *entry = (struct vcpu_entry){ .eip = image->entry, .eax = MULTIBOOT_BOOTLOADER_MAGIC,
                                  .ebx = info_addr };
    return 0;
}

int boot_copy_segments(const uint8_t *data, const struct multiboot_segment *segments,
                       unsigned nr_segments, const struct ram_block *blocks, size_t nr_blocks,
                       struct gw_error *err)
{
    for (unsigned i = 0; i < nr_segments; i++) {
        const struct multiboot_segment *segment = &segments[i];
        uint8_t *host = boot_guest_range(blocks, nr_blocks, segment->paddr, segment->mem_size,
                                         "a kernel segment", err);
        if (!host)
            return -EFAULT;
        memcpy(host, data + segment->file_offset, segment->file_size);
        memset(host + segment->file_size, 0, segment->mem_size - segment->file_size);
    }
    return 0;
}

int multiboot_read_file(const char *path, uint8_t **data, size_t *size, struct gw_error *err)
{
    struct stat st;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

    if (fd < 0)
        return gw_error_set(err, -errno, "cannot open kernel '%s': %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gw_error_set(err, -EINVAL, "kernel '%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size > MULTIBOOT_KERNEL_MAX) {
        close(fd);
        return gw_error_set(err, -EFBIG, "kernel '%s' is larger than 64 MiB", path);
    }
    *data = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!*data) {
        close(fd);
        return gw_error_set(err, -ENOMEM, "out of memory reading kernel '%s'", path);
    }
    got = read(fd, *data, (size_t)st.st_size);
    rc = got == st.st_size ? 0 : gw_error_set(err, -EIO, "cannot read kernel '%s'", path);
    close(fd);
    if (rc < 0) {
        free(*data);
        *data = NULL;
        return rc;
    }
    *size = (size_t)st.st_size;
    return 0;
}
