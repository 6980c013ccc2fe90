/* The source's records on the main channel, counted: what both the precopy
 * switchover (migration_source.c) and postcopy (migration_postcopy.c)
 * write. Calls neither. */
#include "migration_source.h"

/* Writes a record on the main channel and counts its bytes. */
int source_write_record(struct source *source, uint32_t type, const struct iovec *parts,
                        int nparts, struct gw_error *err)
{
    uint64_t before = source->writer.offset;
    int rc = stream_write_record(&source->writer, type, parts, nparts, err);

    migration_count_sent(source->migration, source->writer.offset - before,
                         source->stop_us != 0);
    return rc;
}

int source_send_end(struct source *source, struct gw_error *err)
{
    struct migration_stats *stats = &source->migration->stats;
    struct device_registry *devices = source->migration->host.devices;
    uint64_t counts[3] = { atomic_load(&stats->normal_pages), atomic_load(&stats->zero_pages),
                           devices ? devices->count : 0 };
    struct iovec part = { counts, sizeof(counts) };

    return source_write_record(source, REC_END, &part, 1, err);
}
