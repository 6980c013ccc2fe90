/* TLS credentials as QEMU declares them (tls-creds-x509, tls-creds-psk):
 * loaded and checked once, when the object is made, so a missing file, an
 * unreadable key or a key that is not its certificate's is reported then,
 * not in the middle of a migration. A credentials object is immutable and
 * counted: a migration holds a reference for as long as its channels need
 * it, so object-del never pulls it from under them.
 *
 * GnuTLS in user space does the work (docs/qmp.md, "TLS"): this kernel has
 * no kTLS (TCP_ULP "tls" is not registered), and godwit never claims it. */
#ifndef GODWIT_TLS_H
#define GODWIT_TLS_H

#include <stdbool.h>

#include <godwit/error.h>

enum tls_creds_kind { TLS_CREDS_X509, TLS_CREDS_PSK };
enum tls_endpoint { TLS_ENDPOINT_CLIENT, TLS_ENDPOINT_SERVER };

#define TLS_ID_MAX 128
#define TLS_USERNAME_MAX 128

/* QEMU's properties of the two object types. */
struct tls_creds_options {
    enum tls_creds_kind kind;
    const char *id;
    const char *dir;              /* x509: ca-cert.pem, {server,client}-{cert,key}.pem; psk: keys.psk */
    enum tls_endpoint endpoint;   /* QEMU's default: client */
    bool verify_peer;             /* x509, QEMU's default: on */
    const char *username;         /* psk client: the keys.psk line to use; QEMU's default "qemu" */
    const char *priority;         /* GnuTLS priority string; NULL: QEMU's default */
};

struct tls_creds;

int tls_creds_new(const struct tls_creds_options *options, struct tls_creds **creds,
                  struct gw_error *err);
struct tls_creds *tls_creds_ref(struct tls_creds *creds);
void tls_creds_unref(struct tls_creds *creds);

const char *tls_creds_id(const struct tls_creds *creds);
enum tls_creds_kind tls_creds_kind(const struct tls_creds *creds);
enum tls_endpoint tls_creds_endpoint(const struct tls_creds *creds);
bool tls_creds_verify_peer(const struct tls_creds *creds);

/* What one migration's channels use, fixed when it starts. */
struct tls_config {
    struct tls_creds *creds;      /* a reference; NULL: plaintext */
    char hostname[256];           /* client, x509: the name the server's certificate carries */
    bool check_identity;          /* server: tls-authz names an authz-simple object */
    char identity[256];           /* its identity: the client's DN (x509) or username (psk) */
};

#endif
