/* RAM blocks: the engine's view of guest memory. A block is a host mapping of
 * a contiguous guest-physical range. The engine never maps or frees them; the
 * VMM that registers them owns their memory.
 *
 * What memory a block may be, and what the engine infers from it to skip
 * reading zero pages (it checks the kind of each block's mapping in
 * /proc/self/maps when a migration starts, and infers nothing it cannot
 * see is sound):
 *  - private anonymous memory (MAP_PRIVATE | MAP_ANONYMOUS), fd -1: with
 *    4 KiB pages, a page absent from /proc/self/pagemap (never touched, not
 *    swapped) is zero;
 *  - a shared mapping (MAP_SHARED) of a file, with fd that file and
 *    fd_offset where the block starts in it: a hole in the file is zero,
 *    whoever writes the file and through whichever mapping;
 *  - anything else (shared anonymous memory, which another mapping may have
 *    written where this one has no page; a private mapping of a file, whose
 *    copied pages are not in the file): allowed, and every page is read. */
#ifndef GODWIT_RAM_H
#define GODWIT_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <godwit/error.h>

#define RAM_BLOCK_NAME_MAX 32

struct ram_block {
    char name[RAM_BLOCK_NAME_MAX];  /* stable across hosts: the stream names blocks by it */
    uint8_t *host;                  /* start of the host mapping */
    uint64_t size;                  /* bytes, a multiple of page_size */
    uint64_t page_size;             /* bytes, a power of two */
    uint64_t gpa;                   /* guest-physical address of byte 0 */
    /* The file that host maps, shared, or -1 for memory that is not a
     * shared file mapping. The engine uses it only to find holes (pages
     * that are zero without being read), and only where host is a shared
     * mapping of this very file (same device and inode in /proc/self/maps);
     * see above. */
    int fd;
    uint64_t fd_offset;             /* of byte 0 in that file */
};

static inline uint64_t ram_block_pages(const struct ram_block *block)
{
    return block->size / block->page_size;
}

/* Words of a bitmap with one bit per page of block (dirty.h's layout). */
static inline uint64_t ram_block_bitmap_words(const struct ram_block *block)
{
    return (ram_block_pages(block) + 63) / 64;
}

/* Checks a block's fields (name set, sizes page-aligned, page size a power of
 * two, no wrap-around of gpa + size). */
int ram_block_validate(const struct ram_block *block, struct gw_error *err);

/* Finds the block holding the whole range [gpa, gpa + len) and returns a host
 * pointer to gpa, or NULL with an error naming the range when it is not all in
 * one block. */
uint8_t *ram_blocks_translate(const struct ram_block *blocks, size_t nr_blocks,
                              uint64_t gpa, uint64_t len, struct gw_error *err);

#endif
