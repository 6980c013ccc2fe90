/* The capabilities and parameters of a migration: what the command line
 * asks of the source, what the source then runs with (read back: a setting
 * made earlier stays as it was), and the same settings given to the
 * destination, which refuses a migration whose multifd settings differ
 * from its own (CONFIG, docs/stream.md). */
#ifndef GODWIT_TOOLS_SETTINGS_H
#define GODWIT_TOOLS_SETTINGS_H

#include <stddef.h>

#include <jansson.h>

#include "migrate.h"
#include "progress.h"
#include "qmp_client.h"

/* The settings both sides must share, as the source has them. */
struct shared_settings {
    json_t *capabilities;   /* migrate-set-capabilities' list: multifd, x-channel-header */
    json_t *parameters;     /* migrate-set-parameters' object: multifd-channels,
                             * multifd-compression, multifd-zstd-level,
                             * zero-page-detection, x-multifd-channels-device-state */
    struct multifd_settings multifd;   /* the same, for the progress line and report */
};

/* Whether the command line gave any setting the destination must share:
 * --multifd, --multifd-compression, --multifd-zstd-level,
 * --zero-page-detection, --channel-header, --device-state-channels. */
bool settings_shared_given(const struct multifd_request *multifd);

/* Sends the capabilities (events, multifd, x-channel-header) and parameters
 * that req gives to the source; nothing for those not given. A refusal is
 * "the VM refused COMMAND: its sentence". */
int settings_apply_to_source(struct qmp_client *source, const struct migrate_request *req,
                             struct gw_error *err);

/* Reads what vm migrates with (query-migrate-capabilities and
 * query-migrate-parameters) into out; settings_free releases it. A setting
 * the VM leaves out is left out of out too. */
int settings_read(struct qmp_client *vm, struct shared_settings *out, struct gw_error *err);
void settings_free(struct shared_settings *settings);

/* Gives the destination the shared settings; a refusal is "WHO refused
 * COMMAND: its sentence". */
int settings_apply_to_destination(struct qmp_client *destination, const char *who,
                                  const struct shared_settings *settings, struct gw_error *err);

/* "multifd on, x-channel-header off, multifd-channels 2, ...": the shared
 * settings for a person, in the VM's names. */
void settings_describe(const struct shared_settings *settings, char *buf, size_t len);

#endif
