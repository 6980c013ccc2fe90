/* TLS for a migration, QEMU's way: tls-creds names the credentials object
 * ("" is plaintext), tls-hostname the name the destination's certificate
 * must carry (default: the URI's host), tls-authz the authz-simple object
 * whose identity a client must have. Taken once, when a migration
 * launches; every channel of that migration then starts TLS through
 * channel_tls_start as soon as it is connected or accepted. */
#include "migration_internal.h"

#include <errno.h>
#include <string.h>

int migration_tls_check_uri(struct migration *migration, const struct uri *uri,
                            struct gw_error *err)
{
    char creds[TLS_ID_MAX];

    pthread_mutex_lock(&migration->lock);
    memcpy(creds, migration->params.tls_creds, sizeof(creds));
    pthread_mutex_unlock(&migration->lock);
    if (!creds[0])
        return 0;
    if (uri->kind == URI_FILE)
        return gw_error_set(err, -EINVAL, "tls-creds '%s' is set, and a file: URI has no peer "
                            "to hold a TLS session with: set tls-creds to \"\" or use tcp:, "
                            "unix: or fd:", creds);
    if (uri->kind == URI_RDMA)
        return gw_error_set(err, -ENOTSUP, "tls-creds '%s' is set, and godwit does not carry "
                            "TLS over rdma:: set tls-creds to \"\" or use tcp:", creds);
    return 0;
}

void migration_tls_release(struct migration *migration)
{
    tls_creds_unref(migration->tls.creds);
    memset(&migration->tls, 0, sizeof(migration->tls));
    migration->tls_cipher[0] = migration->tls_protocol[0] = '\0';
}

/* The source checks the destination's certificate against a name: the
 * parameter, or the URI's host; unix: and fd: carry none. */
static int pick_hostname(struct migration *migration, const struct migration_params *params,
                         const struct uri *uri, struct gw_error *err)
{
    struct tls_config *tls = &migration->tls;

    if (params->tls_hostname[0])
        strcpy(tls->hostname, params->tls_hostname);
    else if (uri->kind == URI_TCP)
        strcpy(tls->hostname, uri->host);
    if (tls->hostname[0] || tls_creds_kind(tls->creds) != TLS_CREDS_X509 ||
        !tls_creds_verify_peer(tls->creds))
        return 0;
    return gw_error_set(err, -EINVAL, "tls-creds '%s' checks the destination's certificate "
                        "against a host name, and this URI carries none: set tls-hostname",
                        params->tls_creds);
}

int migration_tls_prepare(struct migration *migration, const struct uri *uri, bool destination,
                          struct gw_error *err)
{
    struct migration_params params;
    struct tls_config *tls = &migration->tls;
    enum tls_endpoint wanted = destination ? TLS_ENDPOINT_SERVER : TLS_ENDPOINT_CLIENT;
    int rc;

    migration_tls_release(migration);
    pthread_mutex_lock(&migration->lock);
    params = migration->params;
    pthread_mutex_unlock(&migration->lock);
    if (!params.tls_creds[0])
        return 0;
    if ((rc = objects_tls_creds(migration->objects, params.tls_creds, &tls->creds, err)) < 0)
        return rc;
    if (tls_creds_endpoint(tls->creds) != wanted)
        rc = gw_error_set(err, -EINVAL, "tls-creds '%s' has endpoint=%s; the %s of a migration "
                          "needs endpoint=%s", params.tls_creds, destination ? "client" : "server",
                          destination ? "destination" : "source",
                          destination ? "server" : "client");
    else if (!destination)
        rc = pick_hostname(migration, &params, uri, err);
    else if (params.tls_authz[0]) {
        tls->check_identity = true;
        rc = objects_authz_identity(migration->objects, params.tls_authz, tls->identity,
                                    sizeof(tls->identity), err);
    }
    if (rc < 0)
        migration_tls_release(migration);
    return rc;
}

int migration_tls_start(struct migration *migration, struct channel *channel, bool destination,
                        struct gw_error *err)
{
    int rc;

    if (!migration->tls.creds)
        return 0;
    rc = channel_tls_start(channel, &migration->tls, destination, migration->cancel_pipe[0], err);
    if (channel->priv && !migration->tls_cipher[0]) {
        char cipher[64], protocol[32];
        channel_tls_describe(channel, cipher, sizeof(cipher), protocol, sizeof(protocol));
        pthread_mutex_lock(&migration->lock);
        strcpy(migration->tls_cipher, cipher);
        strcpy(migration->tls_protocol, protocol);
        pthread_mutex_unlock(&migration->lock);
    }
    return rc;
}

/* Ours: which TLS carries the migration. kTLS is never claimed: GnuTLS
 * encrypts in user space (docs/qmp.md says why). */
void migration_tls_info(struct migration *migration, json_t *info)
{
    char cipher[64], protocol[32];

    pthread_mutex_lock(&migration->lock);
    strcpy(cipher, migration->tls_cipher);
    strcpy(protocol, migration->tls_protocol);
    pthread_mutex_unlock(&migration->lock);
    if (!cipher[0])
        return;
    json_object_set_new(info, "tls", json_pack("{s:b,s:s,s:s}", "ktls", 0, "cipher", cipher,
                                               "protocol", protocol));
}

int migration_object_add(struct migration *migration, const char *text, struct gw_error *err)
{
    return objects_add_option(migration->objects, text, err);
}

int migration_qmp_object_add(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;

    (void)ret;
    return objects_add_json(migration->objects, args, err);
}

int migration_qmp_object_del(json_t *args, json_t **ret, struct gw_error *err, void *opaque)
{
    struct migration *migration = opaque;
    const char *id = json_string_value(json_object_get(args, "id"));

    (void)ret;
    return objects_del(migration->objects, id ? id : "", err);
}
