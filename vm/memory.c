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

/* Maps size bytes at a 2 MiB-aligned address, so that guest-physical huge
 * pages line up with host huge pages. */
static uint8_t *map_aligned(uint64_t size, int flags, int fd)
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
    uint8_t *host = mmap(aligned, size, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0);
    if (host == MAP_FAILED) {
        int saved = errno;
        munmap(aligned, size);   /* the reservation */
        errno = saved;
    }
    return host;
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

    *mem = (struct guest_memory){ .size = config->memory, .path = config->mem_path, .fd = -1 };
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

void memory_cleanup(struct guest_memory *mem, bool on_failure)
{
    if (mem->host)
        munmap(mem->host, mem->size);
    mem->host = NULL;
    if (mem->fd >= 0)
        close(mem->fd);
    mem->fd = -1;
    if (on_failure && mem->created_file)
        unlink(mem->path);
    mem->created_file = false;
}
