/* TLS over a connected socket channel: the handshake (x509 or PSK, with a
 * timeout and the cancel pipe), the peer checks (certificate, hostname,
 * tls-authz identity), and the channel ops that carry records through
 * GnuTLS in user space. Whoever reads or writes the channel never knows.
 *
 * One thread may read while another writes (the return path), as GnuTLS
 * allows for one session; nothing renegotiates. */
#include "channel_internal.h"
#include "tls/tls_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include <godwit/stream.h>

/* The first byte of a TLS connection: a handshake record. */
#define TLS_HANDSHAKE_BYTE 0x16
/* Records go to and come from the socket in batches of up to this much:
 * one system call per 16 KiB record costs more than the cipher here (a
 * software hypervisor makes every system call slow). */
#define TLS_BATCH (256u << 10)
/* The destination's receive buffer (the kernel doubles it). */
#define TLS_RECEIVE_BUFFER (512 << 10)
/* A handshake that has not finished within this was cut or stalled. */
#define TLS_HANDSHAKE_TIMEOUT_MS 10000

struct tls_channel {
    gnutls_session_t session;
    struct tls_creds *creds;
    struct channel inner;         /* the socket underneath */
    int cancel_fd;                /* during the handshake; -1 after */
    bool cancelled;
    int last_errno;               /* of the socket call that failed */
    int first_byte;               /* the peer's first, -1 before: 0x16 when it speaks TLS */
    atomic_bool nonblocking_read; /* peek: take only what has come */
    atomic_bool nonblocking_write;/* close_notify on shutdown: never wait */
    uint8_t ahead[64];            /* peeked plaintext, read before the session's */
    size_t ahead_len;
    /* Ciphertext read from the socket, not yet taken by GnuTLS (the
     * reading thread's), and records written, not yet sent (the writing
     * thread's, during one writev). */
    uint8_t in[TLS_BATCH], out[TLS_BATCH];
    size_t in_pos, in_len, out_len;
    bool batching;
};

static struct tls_channel *tls_of(struct channel *channel)
{
    return channel->priv;
}

/* --- the transport under GnuTLS: the socket, with MSG_NOSIGNAL --- */

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    struct tls_channel *tls = ptr;
    int flags = atomic_load(&tls->nonblocking_read) ? MSG_DONTWAIT : 0;
    ssize_t n;

    if (tls->in_pos == tls->in_len) {
        n = recv(tls->inner.fd, tls->in, sizeof(tls->in), flags);
        if (n < 0) {
            tls->last_errno = errno;
            gnutls_transport_set_errno(tls->session, errno);
            return n;
        }
        if (n > 0 && tls->first_byte < 0)
            tls->first_byte = tls->in[0];
        tls->in_pos = 0;
        tls->in_len = (size_t)n;
    }
    n = (ssize_t)(len < tls->in_len - tls->in_pos ? len : tls->in_len - tls->in_pos);
    memcpy(buf, tls->in + tls->in_pos, (size_t)n);
    tls->in_pos += (size_t)n;
    return n;
}

static int send_all(struct tls_channel *tls, const uint8_t *data, size_t len)
{
    int flags = MSG_NOSIGNAL | (atomic_load(&tls->nonblocking_write) ? MSG_DONTWAIT : 0);

    while (len) {
        ssize_t n = send(tls->inner.fd, data, len, flags);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            tls->last_errno = errno;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int flush_out(struct tls_channel *tls)
{
    int rc = send_all(tls, tls->out, tls->out_len);

    tls->out_len = 0;
    return rc;
}

/* During a writev: records gather in out, sent when it is full and at
 * the end of the writev. */
static ssize_t batch_push(struct tls_channel *tls, const giovec_t *iov, int iovcnt)
{
    size_t total = 0;

    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (tls->out_len + total > sizeof(tls->out) && flush_out(tls) < 0)
        goto failed;
    for (int i = 0; i < iovcnt; i++) {
        if (total > sizeof(tls->out)) {
            if (send_all(tls, iov[i].iov_base, iov[i].iov_len) < 0)
                goto failed;
            continue;
        }
        memcpy(tls->out + tls->out_len, iov[i].iov_base, iov[i].iov_len);
        tls->out_len += iov[i].iov_len;
    }
    return (ssize_t)total;
failed:
    gnutls_transport_set_errno(tls->session, tls->last_errno);
    return -1;
}

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
    struct tls_channel *tls = ptr;
    struct msghdr message = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };

    if (tls->batching)
        return batch_push(tls, iov, iovcnt);
    int flags = MSG_NOSIGNAL | (atomic_load(&tls->nonblocking_write) ? MSG_DONTWAIT : 0);
    ssize_t n = sendmsg(tls->inner.fd, &message, flags);

    if (n < 0) {
        tls->last_errno = errno;
        gnutls_transport_set_errno(tls->session, errno);
    }
    return n;
}

/* The handshake's waits: the socket, or the cancel pipe. */
static int tls_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    struct tls_channel *tls = ptr;
    struct pollfd fds[2] = { { .fd = tls->inner.fd, .events = POLLIN },
                             { .fd = tls->cancel_fd, .events = POLLIN } };
    int timeout = ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms, rc;

    if (tls->in_pos < tls->in_len)
        return 1;   /* read already, waiting in the batch */
    do
        rc = poll(fds, tls->cancel_fd >= 0 ? 2 : 1, timeout);
    while (rc < 0 && errno == EINTR);
    if (rc > 0 && tls->cancel_fd >= 0 && fds[1].revents) {
        tls->cancelled = true;
        gnutls_transport_set_errno(tls->session, ECANCELED);
        return -1;
    }
    return rc;
}

/* --- errors as sentences --- */

static const char *alert_hint(gnutls_alert_description_t alert, bool psk)
{
    switch (alert) {
    case GNUTLS_A_CERTIFICATE_REQUIRED:
        return "it verifies its peers (verify-peer=on) and this side sent no certificate: "
               "give this side's tls-creds-x509 a client-cert.pem and client-key.pem";
    case GNUTLS_A_UNKNOWN_CA:
    case GNUTLS_A_BAD_CERTIFICATE:
    case GNUTLS_A_CERTIFICATE_UNKNOWN:
    case GNUTLS_A_CERTIFICATE_EXPIRED:
        return "it does not accept this side's certificate: sign it with the peer's CA and "
               "keep it within its validity period";
    case GNUTLS_A_UNKNOWN_PSK_IDENTITY:
        return "it has no key for this side's PSK username: add it to its keys.psk";
    case GNUTLS_A_DECRYPT_ERROR:
    case GNUTLS_A_BAD_RECORD_MAC:
    case GNUTLS_A_HANDSHAKE_FAILURE:
    case GNUTLS_A_ILLEGAL_PARAMETER:
        return psk ? "the two sides' PSKs differ: give both the same key for the username"
                   : "the two sides share no protocol or cipher: check tls-creds' priority";
    default:
        return "see its log for why";
    }
}

static int record_error(struct channel *channel, ssize_t rc, struct gw_error *err)
{
    struct tls_channel *tls = tls_of(channel);

    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        gnutls_alert_description_t alert = gnutls_alert_get(tls->session);
        return gw_error_set(err, -EACCES, "%s: the peer ended the TLS session (alert: %s); %s",
                            channel->description, gnutls_alert_get_name(alert),
                            alert_hint(alert, tls->creds->kind == TLS_CREDS_PSK));
    }
    if (rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR) {
        int code = tls->last_errno ? tls->last_errno : EIO;
        return gw_error_set(err, -code, "%s of %s failed: %s",
                            rc == GNUTLS_E_PUSH_ERROR ? "writing" : "reading",
                            channel->description,
                            code == EPIPE ? "the peer closed the connection" : strerror(code));
    }
    if (rc == GNUTLS_E_PREMATURE_TERMINATION)
        return gw_error_set(err, -EPIPE, "%s: the peer closed the connection",
                            channel->description);
    /* A record that does not decrypt or parse: the stream is not what
     * the peer sent, and nothing after it can be trusted. */
    return gw_error_set(err, -EPROTO, "%s: TLS record error: %s", channel->description,
                        gnutls_strerror((int)rc));
}

static bool retry(ssize_t rc)
{
    return rc == GNUTLS_E_INTERRUPTED || rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_REHANDSHAKE;
}

/* --- the channel ops --- */

static size_t take_ahead(struct tls_channel *tls, uint8_t *buf, size_t len)
{
    size_t n = len < tls->ahead_len ? len : tls->ahead_len;

    memcpy(buf, tls->ahead, n);
    memmove(tls->ahead, tls->ahead + n, tls->ahead_len - n);
    tls->ahead_len -= n;
    return n;
}

static int tls_read(struct channel *channel, void *buf, size_t len, struct gw_error *err)
{
    struct tls_channel *tls = tls_of(channel);
    size_t done = take_ahead(tls, buf, len);

    while (done < len) {
        ssize_t n = gnutls_record_recv(tls->session, (uint8_t *)buf + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (retry(n))
            continue;
        if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION)
            return gw_error_set(err, -ENODATA, done ? "%s: the peer closed the channel "
                                "mid-message" : "%s: the peer closed the channel",
                                channel->description);
        return record_error(channel, n, err);
    }
    return 0;
}

static int tls_readv(struct channel *channel, const struct iovec *iov, int iovcnt,
                     struct gw_error *err)
{
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len == 0)
            continue;
        int rc = tls_read(channel, iov[i].iov_base, iov[i].iov_len, err);
        if (rc == -ENODATA && i > 0)
            return gw_error_set(err, rc, "%s: the peer closed the channel mid-message",
                                channel->description);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Corked: the parts of one write (a record header, its pages) go out in
 * full-size TLS records, not one small record per part. */
static int tls_writev(struct channel *channel, const struct iovec *iov, int iovcnt,
                      struct gw_error *err)
{
    struct tls_channel *tls = tls_of(channel);
    ssize_t rc = 0;

    tls->batching = true;
    gnutls_record_cork(tls->session);
    for (int i = 0; i < iovcnt && rc >= 0; i++) {
        size_t done = 0;
        while (done < iov[i].iov_len) {
            rc = gnutls_record_send(tls->session, (const uint8_t *)iov[i].iov_base + done,
                                    iov[i].iov_len - done);
            if (rc < 0 && retry(rc))
                continue;
            if (rc < 0)
                break;
            done += (size_t)rc;
        }
    }
    if (rc >= 0) {
        do
            rc = gnutls_record_uncork(tls->session, GNUTLS_RECORD_WAIT);
        while (rc < 0 && retry(rc));
    } else {
        gnutls_record_uncork(tls->session, 0);
    }
    tls->batching = false;
    if (rc >= 0 && flush_out(tls) < 0)
        rc = GNUTLS_E_PUSH_ERROR;
    tls->out_len = 0;
    return rc < 0 ? record_error(channel, rc, err) : 0;
}

/* Up to len bytes of plaintext without consuming them: whatever has come,
 * into the look-ahead that the next reads empty first. */
static ssize_t tls_peek(struct channel *channel, void *buf, size_t len)
{
    struct tls_channel *tls = tls_of(channel);
    ssize_t n = 0;

    if (len > sizeof(tls->ahead))
        len = sizeof(tls->ahead);
    atomic_store(&tls->nonblocking_read, true);
    while (tls->ahead_len < len) {
        n = gnutls_record_recv(tls->session, tls->ahead + tls->ahead_len, len - tls->ahead_len);
        if (n <= 0)
            break;
        tls->ahead_len += (size_t)n;
    }
    atomic_store(&tls->nonblocking_read, false);
    if (tls->ahead_len) {
        memcpy(buf, tls->ahead, tls->ahead_len < len ? tls->ahead_len : len);
        return (ssize_t)(tls->ahead_len < len ? tls->ahead_len : len);
    }
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        return -EAGAIN;
    return n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION ? 0 : -EPROTO;
}

static ssize_t tls_read_some(struct channel *channel, void *buf, size_t len)
{
    struct tls_channel *tls = tls_of(channel);
    ssize_t n;

    if (tls->ahead_len)
        return (ssize_t)take_ahead(tls, buf, len);
    do
        n = gnutls_record_recv(tls->session, buf, len);
    while (retry(n));
    if (n == GNUTLS_E_PREMATURE_TERMINATION)
        return 0;
    if (n == GNUTLS_E_PULL_ERROR && tls->last_errno)
        return -tls->last_errno;
    return n >= 0 ? n : -EPROTO;
}

static void tls_shutdown(struct channel *channel, bool write_only)
{
    struct tls_channel *tls = tls_of(channel);

    if (write_only) {
        /* close_notify, so the peer tells our end from a cut */
        atomic_store(&tls->nonblocking_write, true);
        gnutls_bye(tls->session, GNUTLS_SHUT_WR);
    }
    tls->inner.ops->shutdown(&tls->inner, write_only);
}

static void tls_close(struct channel *channel)
{
    struct tls_channel *tls = tls_of(channel);

    gnutls_deinit(tls->session);
    tls_creds_unref(tls->creds);
    channel_close(&tls->inner);
    free(tls);
    channel->priv = NULL;
    channel->fd = -1;
}

static bool tls_buffered(struct channel *channel)
{
    struct tls_channel *tls = tls_of(channel);

    return tls->ahead_len || tls->in_pos < tls->in_len ||
           gnutls_record_check_pending(tls->session);
}

static const struct channel_ops tls_ops = {
    .read = tls_read, .readv = tls_readv, .writev = tls_writev, .peek = tls_peek,
    .read_some = tls_read_some, .shutdown = tls_shutdown, .close = tls_close,
    .buffered = tls_buffered,
};

/* --- the handshake --- */

static int session_new(struct tls_channel *tls, const struct tls_config *config, bool server,
                       struct gw_error *err)
{
    struct tls_creds *creds = config->creds;
    int rc = gnutls_init(&tls->session, server ? GNUTLS_SERVER : GNUTLS_CLIENT);

    if (rc < 0)
        return gw_error_set(err, -ENOMEM, "cannot start a TLS session: %s", gnutls_strerror(rc));
    rc = gnutls_priority_set(tls->session, creds->priority);
    if (rc == 0 && creds->kind == TLS_CREDS_X509)
        rc = gnutls_credentials_set(tls->session, GNUTLS_CRD_CERTIFICATE, creds->x509);
    else if (rc == 0)
        rc = gnutls_credentials_set(tls->session, GNUTLS_CRD_PSK,
                                    server ? (void *)creds->psk_server : (void *)creds->psk_client);
    if (rc == 0 && creds->kind == TLS_CREDS_X509 && creds->verify_peer) {
        if (server)
            gnutls_certificate_server_set_request(tls->session, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(tls->session, server ? NULL : config->hostname, 0);
    }
    if (rc < 0)
        return gw_error_set(err, -EINVAL, "cannot set up a TLS session with tls-creds '%s': %s",
                            creds->id, gnutls_strerror(rc));
    gnutls_transport_set_ptr(tls->session, tls);
    gnutls_transport_set_pull_function(tls->session, tls_pull);
    gnutls_transport_set_vec_push_function(tls->session, tls_push);
    gnutls_transport_set_pull_timeout_function(tls->session, tls_pull_timeout);
    gnutls_handshake_set_timeout(tls->session, TLS_HANDSHAKE_TIMEOUT_MS);
    return 0;
}

/* What the peer's certificate failed, and the fix. */
static int verification_error(struct tls_channel *tls, const char *where, const char *peer,
                              struct gw_error *err)
{
    unsigned status = gnutls_session_get_verify_cert_status(tls->session);
    gnutls_datum_t text = { 0 };
    const char *hint = "";
    int rc;

    if (status & GNUTLS_CERT_EXPIRED)
        hint = "it has expired: issue a new one";
    else if (status & GNUTLS_CERT_NOT_ACTIVATED)
        hint = "it is not valid yet: check both hosts' clocks";
    else if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNATURE_FAILURE))
        hint = "it is not signed by the CA in ca-cert.pem: give both sides the same CA";
    else if (status & GNUTLS_CERT_UNEXPECTED_OWNER)
        hint = "it is not for the host the source expects: set tls-hostname to a name the "
               "certificate carries (or use that name in the URI)";
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0);
    while (text.data && text.size && text.data[text.size - 1] == ' ')
        text.data[--text.size] = '\0';
    rc = gw_error_set(err, -EACCES, "TLS handshake on %s failed: the %s's certificate was "
                      "refused (%s); %s", where, peer, text.data ? (char *)text.data : "?",
                      hint);
    gnutls_free(text.data);
    return rc;
}

static int handshake_error(struct tls_channel *tls, int rc, const char *where, bool server,
                           struct gw_error *err)
{
    const char *peer = server ? "source" : "destination";
    bool psk = tls->creds->kind == TLS_CREDS_PSK;

    if (tls->cancelled)
        return gw_error_set(err, -ECANCELED, "the migration was cancelled during the TLS "
                            "handshake on %s", where);
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR)
        return verification_error(tls, where, peer, err);
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        gnutls_alert_description_t alert = gnutls_alert_get(tls->session);
        return gw_error_set(err, -EACCES, "TLS handshake on %s failed: the %s refused it "
                            "(alert: %s); %s", where, peer, gnutls_alert_get_name(alert),
                            alert_hint(alert, psk));
    }
    if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND || rc == GNUTLS_E_CERTIFICATE_REQUIRED)
        return gw_error_set(err, -EACCES, "TLS handshake on %s failed: the source sent no "
                            "certificate, and tls-creds '%s' has verify-peer=on: give the "
                            "source's tls-creds-x509 a client-cert.pem and client-key.pem",
                            where, tls->creds->id);
    if (rc == GNUTLS_E_TIMEDOUT)
        return gw_error_set(err, -ETIMEDOUT, "TLS handshake on %s failed: the %s did not "
                            "finish it within %d s (cut or stalled)", where, peer,
                            TLS_HANDSHAKE_TIMEOUT_MS / 1000);
    if ((rc == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || rc == GNUTLS_E_UNEXPECTED_PACKET ||
         rc == GNUTLS_E_UNSUPPORTED_VERSION_PACKET) && tls->first_byte != TLS_HANDSHAKE_BYTE)
        return gw_error_set(err, -EPROTO, "TLS handshake on %s failed: the %s does not speak "
                            "TLS (%s): set tls-creds on both sides, or on neither", where, peer,
                            gnutls_strerror(rc));
    if (rc == GNUTLS_E_PREMATURE_TERMINATION || rc == GNUTLS_E_PULL_ERROR ||
        rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_UNEXPECTED_PACKET_LENGTH)
        return gw_error_set(err, -ECONNRESET, "TLS handshake on %s failed: the %s closed the "
                            "connection half-way (%s): the connection was cut, or the %s "
                            "gave up on it (its log says why)", where, peer, gnutls_strerror(rc),
                            peer);
    return gw_error_set(err, -EACCES, "TLS handshake on %s failed: %s%s", where,
                        gnutls_strerror(rc), psk ? " (do both sides hold the same PSK?)" : "");
}

/* The peer's identity for tls-authz: its certificate's DN as QEMU reads
 * it (gnutls_x509_crt_get_dn), or its PSK username. */
static int peer_identity(struct tls_channel *tls, char *out, size_t len)
{
    const gnutls_datum_t *certs;
    unsigned count = 0;
    gnutls_x509_crt_t cert;
    int rc;

    if (tls->creds->kind == TLS_CREDS_PSK) {
        const char *name = gnutls_psk_server_get_username(tls->session);
        return snprintf(out, len, "%s", name ? name : "") < (int)len && name ? 0 : -ENOENT;
    }
    certs = gnutls_certificate_get_peers(tls->session, &count);
    if (!certs || !count || gnutls_x509_crt_init(&cert) < 0)
        return -ENOENT;
    rc = gnutls_x509_crt_import(cert, &certs[0], GNUTLS_X509_FMT_DER);
    if (rc == 0)
        rc = gnutls_x509_crt_get_dn(cert, out, &len);
    gnutls_x509_crt_deinit(cert);
    return rc < 0 ? -EINVAL : 0;
}

static int check_identity(struct tls_channel *tls, const struct tls_config *config,
                          const char *where, struct gw_error *err)
{
    char identity[1024];

    if (!config->check_identity)
        return 0;
    if (peer_identity(tls, identity, sizeof(identity)) < 0)
        return gw_error_set(err, -EACCES, "%s: the source showed no identity (no certificate: "
                            "set verify-peer=on on the destination's tls-creds), and tls-authz "
                            "requires '%s'", where, config->identity);
    if (strcmp(identity, config->identity))
        return gw_error_set(err, -EACCES, "%s: the source's %s '%s' is not the identity "
                            "tls-authz allows ('%s')", where,
                            tls->creds->kind == TLS_CREDS_PSK ? "PSK username"
                                                              : "certificate DN", identity,
                            config->identity);
    return 0;
}

static int check_creds(const struct channel *channel, const struct tls_config *config,
                       bool server, struct gw_error *err)
{
    enum tls_endpoint wanted = server ? TLS_ENDPOINT_SERVER : TLS_ENDPOINT_CLIENT;

    if (!channel->has_return_path)
        return gw_error_set(err, -EINVAL, "%s: TLS needs a connected socket; this is not one",
                            channel->description);
    if (config->creds->endpoint != wanted)
        return gw_error_set(err, -EINVAL, "tls-creds '%s' has endpoint=%s; a migration %s "
                            "needs endpoint=%s", config->creds->id,
                            server ? "client" : "server",
                            server ? "destination" : "source", server ? "server" : "client");
    return 0;
}

/* A destination decrypts slower than a source encrypts: with the
 * kernel's receive buffer growing to megabytes, what waits in it at the
 * switchover is decrypted while the guest is stopped. A bounded buffer
 * keeps that backlog to a few milliseconds of work (TLS_RECEIVE_BUFFER). */
static void bound_backlog(int fd)
{
    int size = TLS_RECEIVE_BUFFER;

    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

int channel_tls_start(struct channel *channel, const struct tls_config *config, bool server,
                      int cancel_fd, struct gw_error *err)
{
    struct tls_channel *tls;
    int rc;

    if ((rc = check_creds(channel, config, server, err)) < 0)
        return rc;
    tls = calloc(1, sizeof(*tls));
    if (!tls)
        return gw_error_set(err, -ENOMEM, "out of memory for a TLS session");
    tls->inner = *channel;
    tls->cancel_fd = cancel_fd;
    tls->first_byte = -1;
    tls->creds = tls_creds_ref(config->creds);
    rc = session_new(tls, config, server, err);
    if (rc == 0) {
        do
            rc = gnutls_handshake(tls->session);
        while (rc < 0 && !gnutls_error_is_fatal(rc) && !tls->cancelled);
        if (rc < 0 && !tls->cancelled) {
            /* tell the peer why, so that it can say so too; never wait */
            atomic_store(&tls->nonblocking_write, true);
            gnutls_alert_send_appropriate(tls->session, rc);
        }
        if (rc < 0)
            rc = handshake_error(tls, rc, channel->description, server, err);
    }
    if (rc < 0) {
        if (tls->session)
            gnutls_deinit(tls->session);
        tls_creds_unref(tls->creds);
        free(tls);
        return rc;
    }
    tls->cancel_fd = -1;
    if (server)
        bound_backlog(tls->inner.fd);
    channel->priv = tls;
    channel->ops = &tls_ops;
    /* After the handshake the channel is TLS even when the identity is
     * refused: the refusal goes to the source through it. */
    return check_identity(tls, config, channel->description, err);
}

void channel_tls_describe(struct channel *channel, char *cipher, size_t cipher_len,
                          char *protocol, size_t protocol_len)
{
    struct tls_channel *tls = channel->ops == &tls_ops ? tls_of(channel) : NULL;
    const char *name = tls ? gnutls_cipher_get_name(gnutls_cipher_get(tls->session)) : NULL;
    const char *version = tls ? gnutls_protocol_get_name(gnutls_protocol_get_version(tls->session))
                              : NULL;

    snprintf(cipher, cipher_len, "%s", name ? name : "");
    snprintf(protocol, protocol_len, "%s", version ? version : "");
}
