/* What the TLS channel (src/channel/channel_tls.c) needs of a credentials
 * object: GnuTLS's handles, loaded by tls_creds.c. Private to libgodwit. */
#ifndef GODWIT_TLS_INTERNAL_H
#define GODWIT_TLS_INTERNAL_H

#include <stdatomic.h>

#include <gnutls/gnutls.h>

#include <godwit/tls.h>

struct tls_creds {
    atomic_uint refs;
    enum tls_creds_kind kind;
    enum tls_endpoint endpoint;
    bool verify_peer;
    char id[TLS_ID_MAX];
    gnutls_certificate_credentials_t x509;   /* TLS_CREDS_X509 */
    gnutls_psk_client_credentials_t psk_client;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_priority_t priority;
    char priority_text[256];
};

#endif
