/* Guest RAM allocation. The mapping is made once and never moves: RAM block
 * host pointers handed to the engine stay valid until memory_cleanup. */
#include "memory.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <godwit/size.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static uint64_t host_available_memory(void)
{
    FILE *meminfo = fopen("/proc/meminfo", "r");
    char line[256];
    uint64_t kib = 0;

    if (!meminfo)
        return 0;
    while (fgets(line, sizeof(line), meminfo))
        if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1)
            break;
    fclose(meminfo);
    return kib * 1024;
}

int memory_check_size(uint64_t size, struct gw_error *err)
{
    uint64_t available = host_available_memory();
    char want[32], have[32];

    if (available && size > available)
        return gw_error_set(err, -ENOMEM,
                            "--memory %s is more than this host's available memory (%s); "
                            "use 16M up to %" PRIu64 "M",
                            size_format(size, want, sizeof(want)),
                            size_format(available, have, sizeof(have)),
                            available >> 20);
    return 0;
}

static void layout_blocks(struct guest_memory *mem)
{
    uint64_t low = mem->size < MEMORY_LOW_LIMIT ? mem->size : MEMORY_LOW_LIMIT;

    mem->blocks[0] = (struct ram_block){
        .name = "ram-below-4g", .host = mem->host, .size = low,
        .page_size = MEMORY_PAGE_SIZE, .gpa = 0, .fd = mem->fd, .fd_offset = 0,
    };
    mem->nr_blocks = 1;
    if (mem->size > low) {
        mem->blocks[1] = (struct ram_block){
            .name = "ram-above-4g", .host = mem->host + low, .size = mem->size - low,
            .page_size = MEMORY_PAGE_SIZE, .gpa = MEMORY_HIGH_BASE, .fd = mem->fd,
            .fd_offset = low,
        };
        mem->nr_blocks = 2;
    }
}

static int open_backing_file(struct guest_memory *mem, const char *path, uint64_t size,
                             struct gw_error *err)
{
    struct stat st;
    int fd, rc;

    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        mem->created_file = fd >= 0;
    }
    if (fd < 0)
        return gw_error_set(err, -errno, "--mem-path '%s' cannot be opened for reading and "
                            "writing: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gw_error_set(err, -EINVAL, "--mem-path '%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0) {
        rc = gw_error_set(err, -errno, "--mem-path '%s' cannot be grown to %" PRIu64
                          " bytes: %s", path, size, strerror(errno));
        close(fd);
        return rc;
    }
    return fd;
}

/* Reserves size bytes at a 2 MiB-aligned address, inaccessible, so that
 * guest-physical huge pages line up with host huge pages. */
static uint8_t *reserve_aligned(uint64_t size)
{
    const uint64_t align = 2ULL << 20;
    uint8_t *reserved, *aligned;
    uint64_t head;

    reserved = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                    -1, 0);
    if (reserved == MAP_FAILED)
        return MAP_FAILED;
    aligned = (uint8_t *)(((uintptr_t)reserved + align - 1) & ~(uintptr_t)(align - 1));
    head = (uint64_t)(aligned - reserved);
    if (head)
        munmap(reserved, head);
    munmap(aligned + size, align - head);
    return aligned;
}

static uint8_t *map_aligned(uint64_t size, int flags, int fd)
{
    uint8_t *aligned = reserve_aligned(size);

    if (aligned == MAP_FAILED)
        return MAP_FAILED;
    uint8_t *host = mmap(aligned, size, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0);
    if (host == MAP_FAILED) {
        int saved = errno;
        munmap(aligned, size);   /* the reservation */
        errno = saved;
    }
    return host;
}

/* QEMU's memory-backend-memfd with share=on: shmem with no name in any
 * file system, which a local update passes to the new process. */
static int open_memfd(uint64_t size, struct gw_error *err)
{
    int fd = memfd_create("godwit-guest-ram", MFD_CLOEXEC), rc;

    if (fd < 0)
        return gw_error_set(err, -errno, "--memfd: memfd_create failed: %s", strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0) {
        rc = gw_error_set(err, -errno, "--memfd: cannot size the memfd to %" PRIu64
                          " bytes: %s", size, strerror(errno));
        close(fd);
        return rc;
    }
    return fd;
}

static int map_memory(struct guest_memory *mem, const struct vm_config *config,
                      struct gw_error *err)
{
    int fd = -1, flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

    if (config->mem_path) {
        fd = open_backing_file(mem, config->mem_path, mem->size, err);
        if (fd < 0)
            return fd;
        flags = MAP_SHARED;
        mem->fresh = mem->created_file;
    } else if (config->memfd) {
        fd = open_memfd(mem->size, err);
        if (fd < 0)
            return fd;
        flags = MAP_SHARED;
        mem->fresh = true;
    }
    mem->host = map_aligned(mem->size, flags, fd);
    mem->fd = fd;   /* kept: the engine finds holes (zero pages) in it */
    if (mem->host == MAP_FAILED) {
        mem->host = NULL;
        return gw_error_set(err, -errno, "cannot map %" PRIu64 " bytes of guest RAM: %s",
                            mem->size, strerror(errno));
    }
    /* Huge pages make the guest's page walks and KVM's mappings cheaper, as
     * QEMU asks too; a kernel that says no still gives 4 KiB pages. */
    madvise(mem->host, mem->size, MADV_HUGEPAGE);
    return 0;
}

/* MADV_POPULATE_WRITE faults everything in with one call (Linux 5.14+); older
 * kernels get a write per page, which is what it does anyway. */
static int prealloc_memory(struct guest_memory *mem, struct gw_error *err)
{
    if (madvise(mem->host, mem->size, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno != EINVAL)
        return gw_error_set(err, -errno, "--mem-prealloc: cannot allocate guest RAM: %s",
                            strerror(errno));
    for (uint64_t offset = 0; offset < mem->size; offset += MEMORY_PAGE_SIZE) {
        volatile uint8_t *page = mem->host + offset;
        *page = *page;
    }
    return 0;
}

int memory_init(struct guest_memory *mem, const struct vm_config *config,
                struct gw_error *err)
{
    int rc;

    *mem = (struct guest_memory){ .size = config->memory, .path = config->mem_path, .fd = -1,
                                  .high_fd = -1 };
    rc = map_memory(mem, config, err);
    if (rc < 0)
        goto fail;
    if (config->mem_prealloc) {
        rc = prealloc_memory(mem, err);
        if (rc < 0)
            goto fail;
    }
    layout_blocks(mem);
    return 0;
fail:
    memory_cleanup(mem, true);
    return rc;
}

/* What the cpr channel says against what --memory lays out here: the same
 * blocks, sizes and addresses, or a sentence with both. */
static int check_passed_layout(const struct guest_memory *mem, const struct cpr_memory *passed,
                               struct gw_error *err)
{
    uint64_t theirs = 0;
    char a[32], b[32];

    for (unsigned i = 0; i < passed->nr_blocks; i++)
        theirs += passed->blocks[i].size;
    if (theirs != mem->size)
        return gw_error_set(err, -EINVAL, "the source's guest RAM is %s (%" PRIu64 " bytes) but "
                            "this godwit-vm has --memory %s (%" PRIu64 " bytes): start it with "
                            "--memory %" PRIu64 "M", size_format(theirs, a, sizeof(a)), theirs,
                            size_format(mem->size, b, sizeof(b)), mem->size, theirs >> 20);
    if (passed->nr_blocks != mem->nr_blocks)
        return gw_error_set(err, -EINVAL, "the source has %u RAM blocks, this godwit-vm %u",
                            passed->nr_blocks, mem->nr_blocks);
    for (unsigned i = 0; i < mem->nr_blocks; i++) {
        const struct cpr_block *block = &passed->blocks[i];
        if (strcmp(block->name, mem->blocks[i].name) || block->size != mem->blocks[i].size ||
            block->gpa != mem->blocks[i].gpa || block->page_size != mem->blocks[i].page_size)
            return gw_error_set(err, -EINVAL, "the source's RAM block %u is '%s', %" PRIu64
                                " bytes at 0x%" PRIx64 "; this godwit-vm's is '%s', %" PRIu64
                                " bytes at 0x%" PRIx64, i, block->name, block->size, block->gpa,
                                mem->blocks[i].name, mem->blocks[i].size, mem->blocks[i].gpa);
    }
    return 0;
}

int memory_adopt(struct guest_memory *mem, const struct vm_config *config,
                 struct cpr_memory *passed, struct gw_error *err)
{
    int rc;

    *mem = (struct guest_memory){ .size = config->memory, .fd = -1, .high_fd = -1,
                                  .adopted = true };
    layout_blocks(mem);   /* host NULL: the layout alone, to compare */
    if ((rc = check_passed_layout(mem, passed, err)) < 0)
        return rc;
    mem->host = reserve_aligned(mem->size);
    if (mem->host == MAP_FAILED) {
        mem->host = NULL;
        return gw_error_set(err, -errno, "cannot reserve %" PRIu64 " bytes for guest RAM: %s",
                            mem->size, strerror(errno));
    }
    layout_blocks(mem);
    for (unsigned i = 0; i < mem->nr_blocks; i++) {
        struct cpr_block *block = &passed->blocks[i];
        if (mmap(mem->blocks[i].host, block->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                 block->fd, (off_t)block->fd_offset) == MAP_FAILED)
            return gw_error_set(err, -errno, "cannot map the source's RAM block '%s' (%" PRIu64
                                " bytes at offset %" PRIu64 " of its file): %s", block->name,
                                block->size, block->fd_offset, strerror(errno));
        *(i ? &mem->high_fd : &mem->fd) = block->fd;
        block->fd = -1;   /* ours now */
        mem->blocks[i].fd = *(i ? &mem->high_fd : &mem->fd);
        mem->blocks[i].fd_offset = block->fd_offset;
    }
    madvise(mem->host, mem->size, MADV_HUGEPAGE);
    return 0;
}

static void close_files(struct guest_memory *mem)
{
    if (mem->fd >= 0)
        close(mem->fd);
    if (mem->high_fd >= 0)
        close(mem->high_fd);
    mem->fd = mem->high_fd = -1;
    for (unsigned i = 0; i < mem->nr_blocks; i++)
        mem->blocks[i].fd = -1;
}

void memory_release(struct guest_memory *mem)
{
    /* One mmap over the whole range replaces every mapping at once: a stale
     * pointer faults instead of reading someone else's memory. */
    if (mem->host && mmap(mem->host, mem->size, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) ==
                         MAP_FAILED)
        munmap(mem->host, mem->size);
    close_files(mem);
    mem->released = true;
}

void memory_cleanup(struct guest_memory *mem, bool on_failure)
{
    if (mem->host)
        munmap(mem->host, mem->size);
    mem->host = NULL;
    close_files(mem);
    if (on_failure && mem->created_file)
        unlink(mem->path);
    mem->created_file = false;
}
