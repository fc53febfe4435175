// The TLS layer of a connection: custom BIO, handshake, read, seal and the one classification
// of SSL results (see include/tlsgate/tlsconn.h).
#include "tlsgate/tlsconn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "tlsgate/config.h"
#include "tlsgate/signer.h"

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

static int bio_read(BIO *bio, char *out, int len) {
    struct tg_tlsio *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (t->in_len == 0) {
        if (t->eof)
            return 0;
        BIO_set_retry_read(bio);
        return -1;
    }
    uint32_t n = (uint32_t)len < t->in_len ? (uint32_t)len : t->in_len;
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
}

static int bio_write(BIO *bio, const char *in, int len) {
    struct tg_tlsio *t = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    // Grows only while no send is in flight; otherwise BoringSSL is told to retry, and the
    // caller tries again once the send has completed.
    if (!tg_bufq_append(&t->out, t->env->bc, (const uint8_t *)in, (uint32_t)len, t->env->out_size,
                        t->out_busy)) {
        BIO_set_retry_write(bio);
        return -1;
    }
    return len;
}

static long bio_ctrl(BIO *bio, int cmd, long larg, void *parg) {
    (void)bio;
    (void)larg;
    (void)parg;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void bio_method_init(void) {
    g_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsgate");
    BIO_meth_set_read(g_bio_method, bio_read);
    BIO_meth_set_write(g_bio_method, bio_write);
    BIO_meth_set_ctrl(g_bio_method, bio_ctrl);
}

int tg_tlsio_init(struct tg_tlsio *t, const struct tg_tlsenv *env, SSL_CTX *ctx, int server,
                  const char *sni) {
    pthread_once(&g_bio_once, bio_method_init);
    t->env = env;
    t->ssl = SSL_new(ctx);
    if (t->ssl == NULL || g_bio_method == NULL)
        return 0;
    BIO *bio = BIO_new(g_bio_method);
    if (bio == NULL) {
        SSL_free(t->ssl);
        t->ssl = NULL;
        return 0;
    }
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio); // one reference, taken by the SSL
    SSL_set_app_data(t->ssl, t);
    SSL_set_shed_handshake_config(t->ssl, 1);
    SSL_set_mode(t->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server) {
        SSL_set_accept_state(t->ssl);
        return 1;
    }
    SSL_set_connect_state(t->ssl);
    struct in6_addr tmp;
    // SNI names the provider host; an IP literal is not a valid server name.
    if (sni != NULL && inet_pton(AF_INET, sni, &tmp) != 1 && inet_pton(AF_INET6, sni, &tmp) != 1)
        SSL_set_tlsext_host_name(t->ssl, sni);
    return 1;
}

void tg_tlsio_drop(struct tg_tlsio *t) {
    SSL_free(t->ssl);
    t->ssl = NULL;
    tg_sign_req_free(t->sign); // never in flight here: the owner waited for its completion
    t->sign = NULL;
    t->sign_new = t->sign_busy = 0;
    tg_bufq_reset(&t->out, t->env != NULL ? t->env->bc : NULL);
    t->in = NULL;
    t->in_len = 0;
    t->peer_name = NULL;
    t->eof = 0;
    t->out_busy = 0;
    t->verdict = TG_VERDICT_OK;
}

enum tg_tls_status tg_tls_classify(const struct tg_tlsio *t, int ret) {
    if (ret > 0)
        return TG_TLS_OK;
    int err = SSL_get_error(t->ssl, ret);
    if ((err == SSL_ERROR_WANT_READ && !t->eof) || err == SSL_ERROR_WANT_WRITE)
        return TG_TLS_WANT;
    // close_notify, or FIN without one (a truncation passed on as a half-close).
    if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL || err == SSL_ERROR_WANT_READ)
        return TG_TLS_EOF;
    return TG_TLS_ERROR;
}

enum tg_tls_status tg_tls_handshake(struct tg_tlsio *t, int *out_ret) {
    int r = SSL_do_handshake(t->ssl);
    *out_ret = r;
    if (r == 1)
        return TG_TLS_OK;
    int err = SSL_get_error(t->ssl, r);
    if ((err == SSL_ERROR_WANT_READ && !t->eof) || err == SSL_ERROR_WANT_PRIVATE_KEY_OPERATION)
        return TG_TLS_WANT;
    return TG_TLS_ERROR;
}

void tg_tls_err_str(char *out, size_t out_len) {
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(out, out_len, "-");
        return;
    }
    const char *reason = ERR_reason_error_string(e);
    snprintf(out, out_len, "%s", reason ? reason : "unknown");
    ERR_clear_error();
}

enum tg_verdict tg_tls_handshake_verdict(struct tg_tlsio *t, int ret, char *detail,
                                         size_t detail_len) {
    int err = SSL_get_error(t->ssl, ret);
    unsigned long e = ERR_peek_error();
    tg_tls_err_str(detail, detail_len);
    if (t->sign_busy)
        snprintf(detail, detail_len, "signer_busy"); // our key's signers are saturated
    enum tg_verdict v = (enum tg_verdict)t->verdict;
    if (v != TG_VERDICT_OK)
        return v;
    if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return TG_VERDICT_NO_CERTIFICATE;
    if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN || (t->eof && e == 0))
        return TG_VERDICT_PEER_CLOSED;
    return TG_VERDICT_HANDSHAKE_ERROR;
}

enum tg_tls_status tg_tls_read(struct tg_tlsio *t, uint8_t *dst, uint32_t room, uint32_t *out_n) {
    *out_n = 0;
    int n = SSL_read(t->ssl, dst, (int)room);
    if (n > 0) {
        *out_n = (uint32_t)n;
        return TG_TLS_OK;
    }
    enum tg_tls_status s = tg_tls_classify(t, n);
    if (s == TG_TLS_EOF)
        ERR_clear_error();
    return s;
}

enum tg_tls_status tg_tls_seal(struct tg_tlsio *t, const uint8_t *data, uint32_t len, uint32_t cap,
                               uint32_t *out_done) {
    uint32_t done = 0;
    enum tg_tls_status s = TG_TLS_OK;
    while (done < len && tg_bufq_len(&t->out) < cap) {
        uint32_t n = len - done < TG_TLS_CHUNK ? len - done : TG_TLS_CHUNK;
        uint32_t room;
        if (tg_bufq_space(&t->out, t->env->bc, t->env->out_size, t->out_busy, &room) == NULL) {
            s = TG_TLS_ERROR;
            break;
        }
        // Seal only what fits where it is written: a record never moves queued bytes.
        if (room < n + TG_TLS_RECORD_OVERHEAD) {
            if (room < 2 * TG_TLS_RECORD_OVERHEAD) {
                s = TG_TLS_WANT;
                break;
            }
            n = room - TG_TLS_RECORD_OVERHEAD;
        }
        int r = SSL_write(t->ssl, data + done, (int)n);
        if (r <= 0) {
            s = SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_WRITE ? TG_TLS_WANT : TG_TLS_ERROR;
            break;
        }
        done += (uint32_t)r;
    }
    *out_done = done;
    return s;
}

int tg_tls_write_all(struct tg_tlsio *t, const uint8_t *data, uint32_t len) {
    return SSL_write(t->ssl, data, (int)len) == (int)len;
}

void tg_peer_str(int fd, char *out, size_t out_len) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, out_len, "-");
        return;
    }
    struct tg_target t = {.addr = ss, .addr_len = len, .resolved = 1};
    tg_target_format(&t, out, out_len);
}
