/* The direct landing: a page's bytes are read straight into guest RAM,
 * which is right while the guest does not run here (precopy). A zero page
 * is written only if it may hold something. */
#include "ram_internal.h"

#include <string.h>

static uint8_t *direct_target(void *opaque, uint32_t block, uint64_t page)
{
    struct ram_direct_landing *direct = opaque;
    const struct ram_block *ram = &direct->blocks[block];

    /* Set before the bytes land: a page that tears on the way is written. */
    if (direct->written)
        __atomic_fetch_or(&direct->written[block][page / 64], 1ULL << (page % 64),
                          __ATOMIC_RELAXED);
    return ram->host + page * ram->page_size;
}

/* Without knowing what the memory held before, a page is read first and
 * cleared only if it holds something, so a zero page costs no first write.
 * When RAM was zero at the start, `written` says which pages need clearing
 * and the others are not touched at all. */
static int direct_zero(void *opaque, uint32_t block, uint64_t page, struct gw_error *err)
{
    struct ram_direct_landing *direct = opaque;
    const struct ram_block *ram = &direct->blocks[block];
    uint8_t *host = ram->host + page * ram->page_size;
    uint64_t mask = 1ULL << (page % 64);

    (void)err;
    if (!direct->written) {
        if (!ram_page_is_zero(host, ram->page_size))
            memset(host, 0, ram->page_size);
    } else if (__atomic_fetch_and(&direct->written[block][page / 64], ~mask,
                                  __ATOMIC_RELAXED) & mask) {
        memset(host, 0, ram->page_size);   /* written by an earlier pass */
    }
    return 0;
}

static const struct page_landing_ops direct_ops = {
    .target = direct_target,
    .zero = direct_zero,
};

struct page_landing ram_direct_landing(struct ram_direct_landing *direct)
{
    return (struct page_landing){ .ops = &direct_ops, .opaque = direct };
}
