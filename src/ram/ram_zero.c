/* Zero pages: the page check, and the pages of a chunk known to be zero
 * without reading them (holes in a backing file; anonymous pages never
 * touched). A hint is given only where it is sound: for a page that no
 * mapping anywhere could have written. */
#include "ram_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

bool ram_page_is_zero(const uint8_t *page, size_t len)
{
    const uint64_t *words = (const uint64_t *)page;

    for (size_t i = 0; i < len / 8; i += 8) {
        if (words[i] | words[i + 1] | words[i + 2] | words[i + 3] | words[i + 4] |
            words[i + 5] | words[i + 6] | words[i + 7])
            return false;
    }
    return true;
}

/* Whether every mapping over [start, end) is of the kind wanted: private
 * anonymous (no inode), or a shared mapping of the very file fd names.
 * From /proc/self/maps, once per migration: what the embedder says of its
 * memory is not trusted for something that would silently send zeros. */
static bool mapped_as(uintptr_t start, uintptr_t end, int fd)
{
    FILE *maps = fopen("/proc/self/maps", "re");
    char line[512];
    uintptr_t covered = start;
    struct stat file;

    if (!maps)
        return false;
    if (fd >= 0 && fstat(fd, &file) < 0) {
        fclose(maps);
        return false;
    }
    while (covered < end && fgets(line, sizeof(line), maps)) {
        unsigned long from, to, inode;
        unsigned dev_major, dev_minor;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %*s %x:%x %lu", &from, &to, perms, &dev_major,
                   &dev_minor, &inode) != 6)
            break;
        if (to <= covered || from >= end)
            continue;
        if (from > covered)
            break;   /* a gap: not all mapped */
        bool shared = perms[3] == 's';
        bool sound = fd < 0 ? !shared && inode == 0
                            : shared && inode == file.st_ino &&
                              dev_major == major(file.st_dev) &&
                              dev_minor == minor(file.st_dev);
        if (!sound)
            break;
        covered = to;
    }
    fclose(maps);
    return covered >= end;
}

void ram_zero_hints_init(struct ram_zero_hints *hints, enum zero_page_detection mode,
                         const struct ram_block *blocks, unsigned nr_blocks)
{
    hints->mode = mode;
    hints->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    for (unsigned b = 0; b < nr_blocks && b < STREAM_BLOCKS_MAX; b++) {
        uintptr_t start = (uintptr_t)blocks[b].host, end = start + blocks[b].size;
        hints->sound[b] = mapped_as(start, end, blocks[b].fd);
    }
}

void ram_zero_hints_free(struct ram_zero_hints *hints)
{
    if (hints->pagemap_fd >= 0)
        close(hints->pagemap_fd);
    hints->pagemap_fd = -1;
}

static void mark_zero(uint64_t *zero, uint64_t from, uint64_t to)
{
    for (uint64_t page = from; page < to; page++)
        zero[page / 64] |= 1ULL << (page % 64);
}

/* A hole in the backing file reads as zero. One SEEK_DATA per chunk: the
 * pages before the first data are holes. (SEEK_HOLE would walk a full file
 * to its end on every call.) */
static void file_holes(const struct ram_block *block, uint64_t first_page, unsigned pages,
                       uint64_t *zero)
{
    off_t start = (off_t)(block->fd_offset + first_page * block->page_size);
    off_t end = start + (off_t)pages * (off_t)block->page_size;
    off_t data = lseek(block->fd, start, SEEK_DATA);

    if (data < 0 && errno != ENXIO)
        return;   /* no answer: read the pages */
    if (data < 0 || data > end)
        data = end;
    mark_zero(zero, 0, (uint64_t)(data - start) / block->page_size);
}

/* Private anonymous pages neither present nor swapped were never written:
 * zero. (A shared anonymous page may have been written through another
 * mapping and be absent from this one: no hint there.) */
static void untouched_pages(struct ram_zero_hints *hints, const struct ram_block *block,
                            uint64_t first_page, unsigned pages, uint64_t *zero)
{
    uint64_t first_host_page = (uint64_t)(uintptr_t)(block->host + first_page * block->page_size)
                               / 4096;
    size_t len = pages * sizeof(uint64_t);

    if (block->page_size != 4096 ||
        pread(hints->pagemap_fd, hints->pagemap, len, (off_t)(first_host_page * 8)) != (ssize_t)len)
        return;
    for (unsigned i = 0; i < pages; i++)
        if (!(hints->pagemap[i] & (3ULL << 62)))   /* bit 63 present, bit 62 swapped */
            zero[i / 64] |= 1ULL << (i % 64);
}

/* Asked after the chunk is re-armed, so a page written since is either seen
 * as written here or dirty again for the next pass. */
void ram_zero_hints_find(struct ram_zero_hints *hints, const struct ram_block *blocks,
                         unsigned block_index, uint64_t first_page, unsigned nr_words, uint64_t *zero)
{
    const struct ram_block *block = &blocks[block_index];
    uint64_t block_pages = ram_block_pages(block);
    unsigned pages = (unsigned)(block_pages - first_page < (uint64_t)nr_words * 64
                                    ? block_pages - first_page : (uint64_t)nr_words * 64);

    memset(zero, 0, nr_words * sizeof(uint64_t));
    if (hints->mode == ZERO_DETECT_NONE || !hints->sound[block_index])
        return;   /* every page goes with its data */
    if (block->fd >= 0)
        file_holes(block, first_page, pages, zero);
    else if (hints->pagemap_fd >= 0)
        untouched_pages(hints, block, first_page, pages, zero);
}
