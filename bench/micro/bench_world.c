#include "bench_world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "testpki.h"
#include "tlsgate/config.h"

// PKI -----------------------------------------------------------------------------------------

// issue_leaf makes a leaf named |cn| (CN and the one DNS SAN) with a fresh key of |type|,
// issued by |issuer| / |issuer_key|.
static int issue_leaf(X509 **out_cert, EVP_PKEY **out_key, const char *cn,
                      enum tg_testpki_key_type type, X509 *issuer, EVP_PKEY *issuer_key,
                      int64_t now) {
    struct tg_testpki_opts opts;
    tg_testpki_opts_init(&opts, cn);
    opts.key_type = type;
    opts.key = tg_testpki_key_new(type, 2048);
    if (opts.key == NULL)
        return 0;
    int ok = tg_testpki_issue(out_cert, out_key, &opts, issuer, issuer_key, now);
    EVP_PKEY_free(opts.key);
    return ok;
}

static int mint_pki(struct tgb_world *w, int64_t now) {
    EVP_PKEY *inter_key = NULL;
    int ok = tg_testpki_ca(&w->ca, &w->ca_key, "tlsgate bench root", TG_TESTPKI_RSA, now) &&
             issue_leaf(&w->server_leaf, &w->server_key, TGB_SERVER_NAME, TG_TESTPKI_RSA, w->ca,
                        w->ca_key, now) &&
             issue_leaf(&w->client_rsa_leaf, &w->client_rsa_key, TGB_CLIENT_RSA_NAME,
                        TG_TESTPKI_RSA, w->ca, w->ca_key, now) &&
             issue_leaf(&w->client_ecdsa_leaf, &w->client_ecdsa_key, TGB_CLIENT_ECDSA_NAME,
                        TG_TESTPKI_EC_P256, w->ca, w->ca_key, now) &&
             tg_testpki_intermediate(&w->chain_inter, &inter_key, "tlsgate bench intermediate",
                                     TG_TESTPKI_RSA, w->ca, w->ca_key, now) &&
             issue_leaf(&w->chain_leaf, NULL, TGB_CLIENT_RSA_NAME, TG_TESTPKI_RSA, w->chain_inter,
                        inter_key, now);
    EVP_PKEY_free(inter_key);
    return ok;
}

// Contexts ------------------------------------------------------------------------------------

// make_tls writes |leaf| and |key| to |dir| and runs tg_tls_init over them, trusting the CA in
// |ca_path| and accepting |peer_names|: the same path the daemon takes from its config file.
static int make_tls(struct tg_tls *t, const char *dir, const char *tag, X509 *leaf, EVP_PKEY *key,
                    const char *ca_path, const char *const *peer_names, size_t num_peer_names,
                    char *err, size_t err_len) {
    struct tg_config cfg;
    tg_config_init(&cfg);
    snprintf(cfg.path, sizeof(cfg.path), "%s/%s.conf", dir, tag);
    snprintf(cfg.cert, sizeof(cfg.cert), "%s/%s.crt", dir, tag);
    snprintf(cfg.key, sizeof(cfg.key), "%s/%s.key", dir, tag);
    snprintf(cfg.ca, sizeof(cfg.ca), "%s", ca_path);
    if (!tg_testpki_write_certs(cfg.cert, &leaf, 1) || !tg_testpki_write_key(cfg.key, key)) {
        snprintf(err, err_len, "%s: cannot write the certificate or key", dir);
        return 0;
    }
    // The names stay ours: the config is not cleaned up, it owns nothing else.
    cfg.peer_names = (char **)peer_names;
    cfg.num_peer_names = num_peer_names;
    return tg_tls_init(t, &cfg, tgb_verify, NULL, err, err_len);
}

static int new_session_cb(SSL *ssl, SSL_SESSION *session) {
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (slot == NULL)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = session;
    return 1;
}

static int make_contexts(struct tgb_world *w, const char *dir, char *err, size_t err_len) {
    char ca_path[4200];
    snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", dir);
    if (!tg_testpki_write_certs(ca_path, &w->ca, 1)) {
        snprintf(err, err_len, "%s: cannot write the CA", ca_path);
        return 0;
    }
    static const char *const client_names[] = {TGB_CLIENT_RSA_NAME, TGB_CLIENT_ECDSA_NAME};
    static const char *const server_names[] = {TGB_SERVER_NAME};
    if (!make_tls(&w->server, dir, "server", w->server_leaf, w->server_key, ca_path, client_names,
                  2, err, err_len) ||
        !make_tls(&w->client_rsa, dir, "client-rsa", w->client_rsa_leaf, w->client_rsa_key, ca_path,
                  server_names, 1, err, err_len) ||
        !make_tls(&w->client_ecdsa, dir, "client-ecdsa", w->client_ecdsa_leaf, w->client_ecdsa_key,
                  ca_path, server_names, 1, err, err_len) ||
        !make_tls(&w->client_resume, dir, "client-resume", w->client_rsa_leaf, w->client_rsa_key,
                  ca_path, server_names, 1, err, err_len))
        return 0;
    // tlsgate's outbound context keeps no sessions; the resuming client hands each new one to
    // new_session_cb (SSL_CTX_sess_set_new_cb is the only way to get TLS 1.3 tickets).
    SSL_CTX_set_session_cache_mode(w->client_resume.client,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(w->client_resume.client, new_session_cb);
    return 1;
}

int tgb_world_init(struct tgb_world *w, char *err, size_t err_len) {
    memset(w, 0, sizeof(*w));
    int64_t now = (int64_t)time(NULL);
    if (!mint_pki(w, now)) {
        snprintf(err, err_len, "testpki: cannot mint the certificates");
        goto fail;
    }
    char dir[4096];
    if (!tg_testpki_tmpdir(dir, sizeof(dir))) {
        snprintf(err, err_len, "cannot make a temporary directory");
        goto fail;
    }
    int ok = make_contexts(w, dir, err, err_len);
    tg_testpki_rmtree(dir);
    if (!ok)
        goto fail;
    return 1;
fail:
    tgb_world_cleanup(w);
    return 0;
}

void tgb_world_cleanup(struct tgb_world *w) {
    tg_tls_cleanup(&w->server);
    tg_tls_cleanup(&w->client_rsa);
    tg_tls_cleanup(&w->client_ecdsa);
    tg_tls_cleanup(&w->client_resume);
    X509_free(w->ca);
    EVP_PKEY_free(w->ca_key);
    X509_free(w->server_leaf);
    EVP_PKEY_free(w->server_key);
    X509_free(w->client_rsa_leaf);
    EVP_PKEY_free(w->client_rsa_key);
    X509_free(w->client_ecdsa_leaf);
    EVP_PKEY_free(w->client_ecdsa_key);
    X509_free(w->chain_inter);
    X509_free(w->chain_leaf);
    memset(w, 0, sizeof(*w));
}

// Verify callback -----------------------------------------------------------------------------

static _Thread_local enum tg_verdict t_last_verdict = TG_VERDICT_OK;

enum tg_verdict tgb_last_verdict(void) {
    return t_last_verdict;
}

enum ssl_verify_result_t tgb_verify(SSL *ssl, uint8_t *out_alert) {
    const struct tg_tls *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    char detail[256] = "";
    enum tg_verdict v = TG_VERDICT_HANDSHAKE_ERROR;
    if (tg_tls_peer_chain(ssl, &leaf, &chain)) {
        const char *name = NULL;
        enum tg_peer_role role = SSL_is_server(ssl) ? TG_PEER_CLIENT : TG_PEER_SERVER;
        v = tg_policy_check_peer(tls->policy, role, leaf, chain, (int64_t)time(NULL), &name, detail,
                                 sizeof(detail));
    }
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    t_last_verdict = v;
    if (v == TG_VERDICT_OK)
        return ssl_verify_ok;
    *out_alert = SSL_AD_BAD_CERTIFICATE;
    return ssl_verify_invalid;
}

// Pipes ---------------------------------------------------------------------------------------

struct pipe_buf {
    uint8_t *data;
    size_t cap;
    size_t start; // first unread byte
    size_t end;   // one past the last byte written
};

static int pipe_write(BIO *bio, const char *in, int in_len) {
    struct pipe_buf *p = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (in_len <= 0)
        return 0;
    size_t n = (size_t)in_len;
    if (p->end + n > p->cap) {
        size_t cap = p->cap != 0 ? p->cap : 16384;
        while (cap < p->end + n)
            cap *= 2;
        uint8_t *data = realloc(p->data, cap);
        if (data == NULL)
            return -1;
        p->data = data;
        p->cap = cap;
    }
    memcpy(p->data + p->end, in, n);
    p->end += n;
    return in_len;
}

static int pipe_read(BIO *bio, char *out, int out_len) {
    struct pipe_buf *p = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (out_len <= 0)
        return 0;
    size_t avail = p->end - p->start;
    if (avail == 0) {
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t n = avail < (size_t)out_len ? avail : (size_t)out_len;
    memcpy(out, p->data + p->start, n);
    p->start += n;
    if (p->start == p->end)
        p->start = p->end = 0;
    return (int)n;
}

static long pipe_ctrl(BIO *bio, int cmd, long larg, void *parg) {
    (void)larg;
    (void)parg;
    struct pipe_buf *p = BIO_get_data(bio);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(p->end - p->start);
    case BIO_CTRL_WPENDING:
        return 0;
    default:
        return 0;
    }
}

static int pipe_create(BIO *bio) {
    struct pipe_buf *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return 0;
    BIO_set_data(bio, p);
    BIO_set_init(bio, 1);
    return 1;
}

static int pipe_destroy(BIO *bio) {
    struct pipe_buf *p = BIO_get_data(bio);
    if (p != NULL) {
        free(p->data);
        free(p);
    }
    BIO_set_data(bio, NULL);
    return 1;
}

static BIO_METHOD *g_pipe_method;

// Registered once, from main() before any benchmark runs (tgb_world_init calls it); freed at
// exit.
static void free_pipe_method(void) {
    BIO_meth_free(g_pipe_method);
    g_pipe_method = NULL;
}

static const BIO_METHOD *pipe_method(void) {
    if (g_pipe_method != NULL)
        return g_pipe_method;
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tgb_pipe");
    if (m == NULL || !BIO_meth_set_write(m, pipe_write) || !BIO_meth_set_read(m, pipe_read) ||
        !BIO_meth_set_ctrl(m, pipe_ctrl) || !BIO_meth_set_create(m, pipe_create) ||
        !BIO_meth_set_destroy(m, pipe_destroy)) {
        BIO_meth_free(m);
        return NULL;
    }
    g_pipe_method = m;
    atexit(free_pipe_method);
    return m;
}

BIO *tgb_pipe_new(void) {
    const BIO_METHOD *m = pipe_method();
    return m != NULL ? BIO_new(m) : NULL;
}

size_t tgb_pipe_pending(BIO *bio) {
    const struct pipe_buf *p = BIO_get_data(bio);
    return p->end - p->start;
}

void tgb_pipe_clear(BIO *bio) {
    struct pipe_buf *p = BIO_get_data(bio);
    p->start = p->end = 0;
}

// Connections ---------------------------------------------------------------------------------

int tgb_conn_new(struct tgb_conn *c, SSL_CTX *client_ctx, SSL_CTX *server_ctx,
                 uint16_t max_version) {
    memset(c, 0, sizeof(*c));
    c->client = SSL_new(client_ctx);
    c->server = SSL_new(server_ctx);
    BIO *c2s = tgb_pipe_new();
    BIO *s2c = tgb_pipe_new();
    if (c->client == NULL || c->server == NULL || c2s == NULL || s2c == NULL ||
        (max_version != 0 && !SSL_set_max_proto_version(c->client, max_version))) {
        BIO_free(c2s);
        BIO_free(s2c);
        tgb_conn_free(c);
        return 0;
    }
    // Each SSL takes one reference to each pipe.
    BIO_up_ref(c2s);
    BIO_up_ref(s2c);
    SSL_set_bio(c->client, s2c, c2s);
    SSL_set_bio(c->server, c2s, s2c);
    c->c2s = c2s;
    c->s2c = s2c;
    SSL_set_connect_state(c->client);
    SSL_set_accept_state(c->server);
    return 1;
}

// step runs one SSL_do_handshake on |ssl|. Returns 1 when done, 0 when it waits for the peer,
// -1 on failure.
static int step(SSL *ssl) {
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    return SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ ? 0 : -1;
}

int tgb_conn_handshake(struct tgb_conn *c, char *err, size_t err_len) {
    t_last_verdict = TG_VERDICT_OK;
    // A full TLS 1.2 handshake takes four flights; a few more rounds cost nothing.
    for (int round = 0; round < 16; round++) {
        int cr = step(c->client);
        int sr = cr < 0 ? -1 : step(c->server);
        if (cr == 1 && sr == 1)
            return 1;
        if (cr >= 0 && sr >= 0)
            continue;
        char reason[160] = "";
        ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
        ERR_clear_error();
        snprintf(err, err_len, "%s handshake failed (policy: %s): %s", cr < 0 ? "client" : "server",
                 tg_verdict_name(t_last_verdict), reason);
        return 0;
    }
    snprintf(err, err_len, "handshake did not complete");
    return 0;
}

void tgb_conn_free(struct tgb_conn *c) {
    SSL_free(c->client);
    SSL_free(c->server);
    memset(c, 0, sizeof(*c));
}

void tgb_capture_sessions(struct tgb_conn *c, SSL_SESSION **slot) {
    SSL_set_app_data(c->client, slot);
}
