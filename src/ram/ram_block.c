/* RAM block checks and guest-physical translation. Every lookup checks the
 * whole range against one block: nothing here returns a pointer that a
 * length could carry past the end of a block. */
#include <godwit/ram.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

int ram_block_validate(const struct ram_block *block, struct gw_error *err)
{
    if (!block->name[0] || !memchr(block->name, '\0', sizeof(block->name)))
        return gw_error_set(err, -EINVAL, "a RAM block needs a name of 1 to %d bytes",
                            RAM_BLOCK_NAME_MAX - 1);
    if (!block->page_size || (block->page_size & (block->page_size - 1)))
        return gw_error_set(err, -EINVAL,
                            "RAM block '%s': page size %" PRIu64 " is not a power of two",
                            block->name, block->page_size);
    if (!block->size || block->size % block->page_size || block->gpa % block->page_size)
        return gw_error_set(err, -EINVAL,
                            "RAM block '%s': size %" PRIu64 " and address 0x%" PRIx64
                            " must be non-zero multiples of the page size %" PRIu64,
                            block->name, block->size, block->gpa, block->page_size);
    if (block->gpa + block->size < block->gpa)
        return gw_error_set(err, -EINVAL, "RAM block '%s' wraps past the end of the address space",
                            block->name);
    if (!block->host)
        return gw_error_set(err, -EINVAL, "RAM block '%s' has no host memory", block->name);
    return 0;
}

uint8_t *ram_blocks_translate(const struct ram_block *blocks, size_t nr_blocks,
                              uint64_t gpa, uint64_t len, struct gw_error *err)
{
    for (size_t i = 0; i < nr_blocks; i++) {
        const struct ram_block *block = &blocks[i];
        if (gpa < block->gpa || gpa - block->gpa >= block->size)
            continue;
        if (len > block->size - (gpa - block->gpa))
            break;
        return block->host + (gpa - block->gpa);
    }
    gw_error_set(err, -EFAULT,
                 "guest-physical range [0x%" PRIx64 ", 0x%" PRIx64 ") is not all in guest RAM",
                 gpa, gpa + len);
    return NULL;
}
