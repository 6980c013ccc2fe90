/* Loading tls-creds-x509 and tls-creds-psk objects: QEMU's file names in
 * the object's dir, every file read and checked here, once, with a
 * sentence naming the file and what to fix. Nothing here touches a
 * connection. */
#include "tls/tls_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>

/* QEMU's defaults: GnuTLS's NORMAL, and the PSK key exchanges for PSK. */
#define PRIORITY_X509 "NORMAL"
#define PRIORITY_PSK "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

static const char *const kind_names[] = { "tls-creds-x509", "tls-creds-psk" };

static void creds_free(struct tls_creds *creds)
{
    if (creds->x509)
        gnutls_certificate_free_credentials(creds->x509);
    if (creds->psk_client)
        gnutls_psk_free_client_credentials(creds->psk_client);
    if (creds->psk_server)
        gnutls_psk_free_server_credentials(creds->psk_server);
    if (creds->priority)
        gnutls_priority_deinit(creds->priority);
    free(creds);
}

/* dir/name into path; whether the file must exist is the caller's. */
static int file_path(const struct tls_creds_options *o, const char *name, char *path,
                     size_t len, struct gw_error *err)
{
    if ((size_t)snprintf(path, len, "%s/%s", o->dir, name) >= len)
        return gw_error_set(err, -ENAMETOOLONG, "%s '%s': dir '%s' is too long",
                            kind_names[o->kind], o->id, o->dir);
    return 0;
}

static int file_readable(const struct tls_creds_options *o, const char *path,
                         struct gw_error *err)
{
    if (access(path, R_OK) < 0)
        return gw_error_set(err, -errno, "%s '%s': cannot read %s: %s", kind_names[o->kind],
                            o->id, path, strerror(errno));
    return 0;
}

static int gnutls_failure(const struct tls_creds_options *o, int rc, const char *what,
                          const char *path, struct gw_error *err)
{
    return gw_error_set(err, rc == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EINVAL,
                        "%s '%s': %s %s: %s", kind_names[o->kind], o->id, what, path,
                        gnutls_strerror(rc));
}

/* As QEMU's sanity check: a certificate outside its validity period is
 * refused when the object is made, not when a peer first sees it. */
static int check_times(const struct tls_creds_options *o, const char *path,
                       struct gw_error *err)
{
    gnutls_datum_t data = { 0 };
    gnutls_x509_crt_t *certs = NULL;
    unsigned count = 0;
    time_t now = time(NULL);
    int rc = gnutls_load_file(path, &data);

    if (rc < 0)
        return gnutls_failure(o, rc, "cannot load", path, err);
    rc = gnutls_x509_crt_list_import2(&certs, &count, &data, GNUTLS_X509_FMT_PEM, 0);
    gnutls_free(data.data);
    if (rc < 0)
        return gnutls_failure(o, rc, "cannot parse the certificates in", path, err);
    for (unsigned i = 0; i < count && rc >= 0; i++) {
        if (gnutls_x509_crt_get_expiration_time(certs[i]) < now)
            rc = gw_error_set(err, -EKEYEXPIRED, "%s '%s': the certificate in %s has expired; "
                              "issue a new one", kind_names[o->kind], o->id, path);
        else if (gnutls_x509_crt_get_activation_time(certs[i]) > now)
            rc = gw_error_set(err, -EKEYREJECTED, "%s '%s': the certificate in %s is not valid "
                              "yet (its activation time is in the future); check the clock or "
                              "issue a new one", kind_names[o->kind], o->id, path);
    }
    for (unsigned i = 0; i < count; i++)
        gnutls_x509_crt_deinit(certs[i]);
    gnutls_free(certs);
    return rc < 0 ? rc : 0;
}

static int load_ca(struct tls_creds *creds, const struct tls_creds_options *o,
                   struct gw_error *err)
{
    char path[4096];
    int rc;

    if ((rc = file_path(o, "ca-cert.pem", path, sizeof(path), err)) < 0 ||
        (rc = file_readable(o, path, err)) < 0)
        return rc;
    rc = gnutls_certificate_set_x509_trust_file(creds->x509, path, GNUTLS_X509_FMT_PEM);
    if (rc < 0)
        return gnutls_failure(o, rc, "cannot load the CA certificate", path, err);
    if (rc == 0)
        return gw_error_set(err, -EINVAL, "%s '%s': %s holds no certificate",
                            kind_names[o->kind], o->id, path);
    return check_times(o, path, err);
}

/* The endpoint's own certificate and key: required on a server, optional
 * on a client (a client without one is refused by a server that verifies
 * its peers), but never one without the other. */
static int load_own(struct tls_creds *creds, const struct tls_creds_options *o,
                    struct gw_error *err)
{
    bool server = o->endpoint == TLS_ENDPOINT_SERVER;
    const char *cert_name = server ? "server-cert.pem" : "client-cert.pem";
    const char *key_name = server ? "server-key.pem" : "client-key.pem";
    char cert[4096], key[4096];
    int rc;

    if ((rc = file_path(o, cert_name, cert, sizeof(cert), err)) < 0 ||
        (rc = file_path(o, key_name, key, sizeof(key), err)) < 0)
        return rc;
    if (!server && access(cert, F_OK) < 0 && access(key, F_OK) < 0)
        return 0;
    if ((rc = file_readable(o, cert, err)) < 0 || (rc = file_readable(o, key, err)) < 0)
        return rc;
    rc = gnutls_certificate_set_x509_key_file2(creds->x509, cert, key, GNUTLS_X509_FMT_PEM,
                                               NULL, 0);
    if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
        return gw_error_set(err, -EINVAL, "%s '%s': %s is not the private key of %s; put the "
                            "key that signed the certificate's request there",
                            kind_names[o->kind], o->id, key, cert);
    if (rc < 0)
        return gnutls_failure(o, rc, "cannot load the certificate and key", cert, err);
    return check_times(o, cert, err);
}

static int load_x509(struct tls_creds *creds, const struct tls_creds_options *o,
                     struct gw_error *err)
{
    int rc = gnutls_certificate_allocate_credentials(&creds->x509);

    if (rc < 0)
        return gnutls_failure(o, rc, "cannot allocate credentials for", o->dir, err);
    if ((rc = load_ca(creds, o, err)) < 0)
        return rc;
    return load_own(creds, o, err);
}

/* keys.psk as QEMU and GnuTLS read it: "username:hexkey" lines. Finds the
 * key of username (NULL: checks every line's form). */
static int read_psk_file(const struct tls_creds_options *o, const char *path,
                         const char *username, char *key, size_t key_len, struct gw_error *err)
{
    FILE *file = fopen(path, "r");
    char line[1024];
    unsigned number = 0;
    int rc = username ? -ENOENT : 0;

    if (!file)
        return gw_error_set(err, -errno, "tls-creds-psk '%s': cannot read %s: %s", o->id, path,
                            strerror(errno));
    while (fgets(line, sizeof(line), file)) {
        char *colon = strchr(line, ':'), *hex;
        number++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        hex = colon ? colon + 1 : NULL;
        if (!colon || colon == line || !*hex || strspn(hex, "0123456789abcdefABCDEF") !=
            strlen(hex) || strlen(hex) % 2) {
            rc = gw_error_set(err, -EINVAL, "tls-creds-psk '%s': line %u of %s is not "
                              "USERNAME:HEXKEY (an even number of hex digits)", o->id, number,
                              path);
            break;
        }
        *colon = '\0';
        if (username && !strcmp(line, username) && strlen(hex) < key_len) {
            strcpy(key, hex);
            rc = 0;
        }
    }
    fclose(file);
    if (rc == -ENOENT)
        gw_error_set(err, rc, "tls-creds-psk '%s': %s has no key for username '%s'; add a "
                     "'%s:HEXKEY' line or set username", o->id, path, username, username);
    return rc;
}

static int load_psk(struct tls_creds *creds, const struct tls_creds_options *o,
                    struct gw_error *err)
{
    const char *username = o->username ? o->username : "qemu";
    char path[4096], key[1024];
    gnutls_datum_t datum;
    int rc;

    if ((rc = file_path(o, "keys.psk", path, sizeof(path), err)) < 0)
        return rc;
    if (o->endpoint == TLS_ENDPOINT_SERVER) {
        if ((rc = read_psk_file(o, path, NULL, NULL, 0, err)) < 0)
            return rc;
        if ((rc = gnutls_psk_allocate_server_credentials(&creds->psk_server)) < 0 ||
            (rc = gnutls_psk_set_server_credentials_file(creds->psk_server, path)) < 0)
            return gnutls_failure(o, rc, "cannot load the keys in", path, err);
        return 0;
    }
    if ((rc = read_psk_file(o, path, username, key, sizeof(key), err)) < 0)
        return rc;
    datum = (gnutls_datum_t){ (unsigned char *)key, (unsigned)strlen(key) };
    if ((rc = gnutls_psk_allocate_client_credentials(&creds->psk_client)) < 0 ||
        (rc = gnutls_psk_set_client_credentials(creds->psk_client, username, &datum,
                                                GNUTLS_PSK_KEY_HEX)) < 0)
        rc = gnutls_failure(o, rc, "cannot use the key in", path, err);
    explicit_bzero(key, sizeof(key));
    return rc < 0 ? rc : 0;
}

static int check_dir(const struct tls_creds_options *o, struct gw_error *err)
{
    struct stat st;

    if (!o->dir || !o->dir[0])
        return gw_error_set(err, -EINVAL, "%s '%s': dir is missing: name the directory that "
                            "holds %s", kind_names[o->kind], o->id,
                            o->kind == TLS_CREDS_X509 ? "ca-cert.pem and the certificates"
                                                      : "keys.psk");
    if (stat(o->dir, &st) < 0)
        return gw_error_set(err, -errno, "%s '%s': cannot use dir %s: %s", kind_names[o->kind],
                            o->id, o->dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return gw_error_set(err, -ENOTDIR, "%s '%s': dir %s is not a directory",
                            kind_names[o->kind], o->id, o->dir);
    return 0;
}

static int set_priority(struct tls_creds *creds, const struct tls_creds_options *o,
                        struct gw_error *err)
{
    const char *text = o->priority ? o->priority
                                   : o->kind == TLS_CREDS_PSK ? PRIORITY_PSK : PRIORITY_X509;
    const char *where = NULL;
    int rc;

    if (strlen(text) >= sizeof(creds->priority_text))
        return gw_error_set(err, -EINVAL, "%s '%s': priority has more than %zu bytes",
                            kind_names[o->kind], o->id, sizeof(creds->priority_text) - 1);
    strcpy(creds->priority_text, text);
    rc = gnutls_priority_init(&creds->priority, text, &where);
    if (rc < 0)
        return gw_error_set(err, -EINVAL, "%s '%s': priority '%s' is not a GnuTLS priority "
                            "string (%s, at '%s')", kind_names[o->kind], o->id, text,
                            gnutls_strerror(rc), where ? where : "");
    return 0;
}

int tls_creds_new(const struct tls_creds_options *o, struct tls_creds **out,
                  struct gw_error *err)
{
    struct tls_creds *creds;
    int rc;

    *out = NULL;
    if (strlen(o->id) >= TLS_ID_MAX)
        return gw_error_set(err, -EINVAL, "%s: id '%s' is longer than %d bytes",
                            kind_names[o->kind], o->id, TLS_ID_MAX - 1);
    if ((rc = check_dir(o, err)) < 0)
        return rc;
    creds = calloc(1, sizeof(*creds));
    if (!creds)
        return gw_error_set(err, -ENOMEM, "out of memory for %s '%s'", kind_names[o->kind],
                            o->id);
    atomic_init(&creds->refs, 1);
    creds->kind = o->kind;
    creds->endpoint = o->endpoint;
    creds->verify_peer = o->verify_peer;
    strcpy(creds->id, o->id);
    rc = set_priority(creds, o, err);
    if (rc == 0)
        rc = o->kind == TLS_CREDS_X509 ? load_x509(creds, o, err) : load_psk(creds, o, err);
    if (rc < 0) {
        creds_free(creds);
        return rc;
    }
    *out = creds;
    return 0;
}

struct tls_creds *tls_creds_ref(struct tls_creds *creds)
{
    if (creds)
        atomic_fetch_add(&creds->refs, 1);
    return creds;
}

void tls_creds_unref(struct tls_creds *creds)
{
    if (creds && atomic_fetch_sub(&creds->refs, 1) == 1)
        creds_free(creds);
}

const char *tls_creds_id(const struct tls_creds *creds)
{
    return creds->id;
}

enum tls_creds_kind tls_creds_kind(const struct tls_creds *creds)
{
    return creds->kind;
}

enum tls_endpoint tls_creds_endpoint(const struct tls_creds *creds)
{
    return creds->endpoint;
}

bool tls_creds_verify_peer(const struct tls_creds *creds)
{
    return creds->verify_peer;
}
