#include "tlsgate/tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bytestring.h>
#include <openssl/cipher.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>

#include "tlsgate/keyd.h"
#include "tlsgate/signer.h"
#include "tlsgate/ticketkeys.h"

const char tg_tls_default_ciphers[] = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
                                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256";

// The policy outlives the tg_tls that built it: each SSL_CTX holds a reference through its ex
// data, so connections still running on an old generation keep verifying against the policy
// they started with after a reload has freed that generation.
struct policy_ref {
    _Atomic int refs;
    struct tg_policy *policy;
};

static int g_policy_idx = -1;
// The server context's session ticket keys (`ticket_keys`), owned by the context through its
// ex data: connections of an old generation still decrypt with the keys they started with.
static int g_ticket_idx = -1;
static pthread_once_t g_policy_once = PTHREAD_ONCE_INIT;

static void policy_ref_drop(struct policy_ref *r) {
    if (r != NULL && atomic_fetch_sub(&r->refs, 1) == 1) {
        tg_policy_free(r->policy);
        free(r);
    }
}

static void policy_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                           void *argp) {
    (void)parent;
    (void)ad;
    (void)index;
    (void)argl;
    (void)argp;
    policy_ref_drop(ptr);
}

// One certificate pool for the process. Buffers unregister from their pool when freed, and
// connections of an old generation may hold buffers (the peer's chain, our chain) long after a
// reload freed the tg_tls that made them: the pool must outlive them all, so it is never freed.
// It also shares identical certificates between generations.
static CRYPTO_BUFFER_POOL *g_pool;

static void ticket_keys_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                                void *argp) {
    (void)parent;
    (void)ad;
    (void)index;
    (void)argl;
    (void)argp;
    if (ptr != NULL) {
        tg_ticket_keys_cleanse(ptr);
        free(ptr);
    }
}

static void policy_index_init(void) {
    g_policy_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, policy_ex_free);
    g_ticket_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ticket_keys_ex_free);
    g_pool = CRYPTO_BUFFER_POOL_new();
}

const struct tg_policy *tg_tls_policy(const SSL *ssl) {
    const struct policy_ref *r = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_policy_idx);
    return r != NULL ? r->policy : NULL;
}

static void ssl_error(char *err, size_t err_len, const char *file, const char *what) {
    char reason[160] = "";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    snprintf(err, err_len, "%s: %s%s%s", file, what, reason[0] ? ": " : "", reason);
    ERR_clear_error();
}

// not_a_directory returns 1 unless |path| names a directory; then it says so in |err|.
static int not_a_directory(const char *path, char *err, size_t err_len) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, err_len, "%s: is a directory, expected a PEM file", path);
        return 0;
    }
    return 1;
}

int tg_tls_read_cert_file(const char *path, X509 **out_leaf, STACK_OF(X509) **out_chain, char *err,
                          size_t err_len) {
    *out_leaf = NULL;
    *out_chain = NULL;
    if (!not_a_directory(path, err, err_len))
        return 0;
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ssl_error(err, err_len, path, "cannot open certificate file");
        return 0;
    }
    STACK_OF(X509) *chain = sk_X509_new_null();
    X509 *leaf = NULL;
    X509 *x;
    ERR_clear_error();
    while (chain != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (leaf == NULL) {
            leaf = x;
        } else if (!sk_X509_push(chain, x)) {
            X509_free(x);
            break;
        }
    }
    // The loop ends on end-of-file (PEM_R_NO_START_LINE) or on a broken block.
    unsigned long e = ERR_peek_last_error();
    int clean_end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    BIO_free(bio);
    if (leaf == NULL || !clean_end || chain == NULL) {
        ssl_error(err, err_len, path,
                  leaf == NULL ? "no PEM certificate found" : "a certificate does not parse");
        X509_free(leaf);
        sk_X509_pop_free(chain, X509_free);
        return 0;
    }
    ERR_clear_error();
    *out_leaf = leaf;
    *out_chain = chain;
    return 1;
}

// read_small_file reads at most |max| bytes of |path| into a new NUL-terminated buffer.
static char *read_small_file(const char *path, size_t max) {
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf != NULL ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    return buf;
}

EVP_PKEY *tg_tls_read_key_file(const char *path, char *err, size_t err_len) {
    if (!not_a_directory(path, err, err_len))
        return NULL;
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ssl_error(err, err_len, path, "cannot open key file");
        return NULL;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (key == NULL) {
        // Say why when the text tells: an encrypted key, or a type BoringSSL does not read.
        char *text = read_small_file(path, 1 << 16);
        if (text != NULL && (strstr(text, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL ||
                             strstr(text, "Proc-Type: 4,ENCRYPTED") != NULL)) {
            snprintf(err, err_len,
                     "%s: the private key is encrypted; tlsgate needs it unencrypted (openssl "
                     "pkey -in KEY -out KEY.plain)",
                     path);
        } else if (text != NULL && strstr(text, "-----BEGIN DSA PRIVATE KEY-----") != NULL) {
            snprintf(err, err_len, "%s: DSA keys are not supported; %s", path, TG_OWN_KEY_TYPES);
        } else {
            snprintf(err, err_len, "%s: no PEM private key found (or a key type not supported; %s)",
                     path, TG_OWN_KEY_TYPES);
        }
        free(text);
        return NULL;
    }
    if (EVP_PKEY_id(key) != EVP_PKEY_RSA && EVP_PKEY_id(key) != EVP_PKEY_EC) {
        snprintf(err, err_len, "%s: %s keys are not supported; %s", path,
                 tg_policy_key_type_name(key), TG_OWN_KEY_TYPES);
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

X509_STORE *tg_tls_read_trust_file(const char *path, char *err, size_t err_len) {
    X509 *first;
    STACK_OF(X509) *rest;
    if (!tg_tls_read_cert_file(path, &first, &rest, err, err_len))
        return NULL;
    X509_STORE *store = X509_STORE_new();
    int ok = store != NULL && X509_STORE_add_cert(store, first);
    for (size_t i = 0; ok && i < sk_X509_num(rest); i++)
        ok = X509_STORE_add_cert(store, sk_X509_value(rest, i));
    X509_free(first);
    sk_X509_pop_free(rest, X509_free);
    ERR_clear_error();
    if (!ok) {
        X509_STORE_free(store);
        snprintf(err, err_len, "%s: cannot build a trust store", path);
        return NULL;
    }
    return store;
}

// own_rule_is_fatal says whether a FAIL of |rule| leaves nothing to serve: no context can be
// built from the files (too long, out of order, wrong key or key type), or `own_ca` is set and
// the chain does not reach it. --allow-noncompliant-cert does not override these.
static int own_rule_is_fatal(const char *rule, int own_ca) {
    static const char *const kFatal[] = {"chain_length", "chain_order", "key_type", "key_matches"};
    for (size_t i = 0; i < sizeof(kFatal) / sizeof(kFatal[0]); i++) {
        if (strcmp(rule, kFatal[i]) == 0)
            return 1;
    }
    return own_ca && strcmp(rule, "chain") == 0;
}

int tg_tls_check_own(struct tg_rule_result *out, size_t max_out, size_t *out_num,
                     const struct tg_config *cfg, X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key,
                     int64_t now, char *err, size_t err_len) {
    *out_num = 0;
    X509_STORE *trust = NULL;
    if (cfg->own_ca[0] != '\0') {
        trust = tg_tls_read_trust_file(cfg->own_ca, err, err_len);
        if (trust == NULL)
            return 0;
    }
    *out_num = tg_policy_check_own(cfg->fqdn, leaf, chain, key, trust, now, out, max_out);
    X509_STORE_free(trust);
    for (size_t i = 0; i < *out_num; i++) {
        const struct tg_rule_result *r = &out[i];
        if (r->status != TG_RULE_FAIL || !own_rule_is_fatal(r->rule, trust != NULL))
            continue;
        const char *file = strcmp(r->rule, "key_matches") == 0 ? cfg->key : cfg->cert;
        if (strcmp(r->rule, "chain") == 0) {
            snprintf(err, err_len, "%s: does not chain to own_ca %s: %s (rule chain)", file,
                     cfg->own_ca, r->detail);
        } else {
            snprintf(err, err_len, "%s: %s (rule %s)", file, r->detail, r->rule);
        }
        return 0;
    }
    return 1;
}

static CRYPTO_BUFFER *x509_to_buffer(X509 *x, CRYPTO_BUFFER_POOL *pool) {
    uint8_t *der = NULL;
    int len = i2d_X509(x, &der);
    if (len <= 0)
        return NULL;
    CRYPTO_BUFFER *buf = CRYPTO_BUFFER_new(der, (size_t)len, pool);
    OPENSSL_free(der);
    return buf;
}

// client_ca_names lists the subjects of the trusted CAs: sent in CertificateRequest so that
// clients holding several certificates pick the right one.
static STACK_OF(CRYPTO_BUFFER) *client_ca_names(const char *ca_path, CRYPTO_BUFFER_POOL *pool) {
    STACK_OF(CRYPTO_BUFFER) *names = sk_CRYPTO_BUFFER_new_null();
    BIO *bio = BIO_new_file(ca_path, "r");
    if (names == NULL || bio == NULL)
        goto done;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        uint8_t *der = NULL;
        int len = i2d_X509_NAME(X509_get_subject_name(x), &der);
        if (len > 0) {
            CRYPTO_BUFFER *b = CRYPTO_BUFFER_new(der, (size_t)len, pool);
            if (b != NULL && !sk_CRYPTO_BUFFER_push(names, b))
                CRYPTO_BUFFER_free(b);
        }
        OPENSSL_free(der);
        X509_free(x);
    }
done:
    BIO_free(bio);
    ERR_clear_error();
    return names;
}

// ticket_key_cb encrypts new tickets with the newest key of the context's ticket_keys and
// decrypts with whichever key the ticket names (see SSL_CTX_set_tlsext_ticket_key_cb): 1 with
// the newest, 2 with an older one (the client gets a ticket under the newest), 0 for a name
// not in the file (a full handshake follows), -1 on an internal error.
static int ticket_key_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *cipher_ctx,
                         HMAC_CTX *hmac_ctx, int encrypt) {
    const struct tg_ticket_keys *keys = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_ticket_idx);
    if (keys == NULL || keys->num_keys == 0)
        return encrypt ? -1 : 0;
    const EVP_CIPHER *cipher = EVP_aes_256_cbc();
    if (encrypt) {
        const struct tg_ticket_key *k = &keys->keys[keys->num_keys - 1];
        if (!RAND_bytes(iv, EVP_CIPHER_iv_length(cipher)))
            return -1;
        memcpy(key_name, k->name, TG_TICKET_KEY_NAME_LEN);
        if (!EVP_EncryptInit_ex(cipher_ctx, cipher, NULL, k->aes_key, iv) ||
            !HMAC_Init_ex(hmac_ctx, k->hmac_key, sizeof(k->hmac_key), EVP_sha256(), NULL))
            return -1;
        return 1;
    }
    int i = tg_ticket_keys_find(keys, key_name);
    if (i < 0)
        return 0;
    const struct tg_ticket_key *k = &keys->keys[i];
    if (!HMAC_Init_ex(hmac_ctx, k->hmac_key, sizeof(k->hmac_key), EVP_sha256(), NULL) ||
        !EVP_DecryptInit_ex(cipher_ctx, cipher, NULL, k->aes_key, iv))
        return -1;
    return (size_t)i == keys->num_keys - 1 ? 1 : 2;
}

// set_ticket_keys loads `ticket_keys` (when set) and hands the keys to |ctx|; without it the
// context keeps BoringSSL's own random keys. Returns 1 on success; 0 with `FILE:LINE: why`.
static int set_ticket_keys(struct tg_tls *t, SSL_CTX *ctx, const struct tg_config *cfg, char *err,
                           size_t err_len) {
    if (cfg->ticket_keys[0] == '\0')
        return 1;
    struct tg_ticket_keys *keys = malloc(sizeof(*keys));
    if (keys == NULL) {
        snprintf(err, err_len, "tls: out of memory");
        return 0;
    }
    if (!tg_ticket_keys_load(keys, cfg->ticket_keys, err, err_len) ||
        !SSL_CTX_set_ex_data(ctx, g_ticket_idx, keys)) {
        tg_ticket_keys_cleanse(keys);
        free(keys);
        return 0;
    }
    SSL_CTX_set_tlsext_ticket_key_cb(ctx, ticket_key_cb);
    t->num_ticket_keys = keys->num_keys;
    return 1;
}

static SSL_CTX *new_ctx(struct tg_tls *t, const struct tg_config *cfg, tg_verify_fn verify,
                        int server, char *err, size_t err_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_with_buffers_method());
    if (ctx == NULL) {
        ssl_error(err, err_len, "tls", "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set0_buffer_pool(ctx, t->pool);
    SSL_CTX_set_min_proto_version(ctx, cfg->min_version);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    int ok = cfg->ciphers[0] ? SSL_CTX_set_strict_cipher_list(ctx, cfg->ciphers)
                             : SSL_CTX_set_cipher_list(ctx, tg_tls_default_ciphers);
    if (!ok) {
        ssl_error(err, err_len, cfg->path, "tls.ciphers: no usable cipher in the list");
        goto fail;
    }

    // Our chain as CRYPTO_BUFFERs, shared through the pool with every connection.
    size_t n = 1 + sk_X509_num(t->chain);
    CRYPTO_BUFFER *bufs[TG_OWN_CHAIN_MAX];
    if (n > TG_OWN_CHAIN_MAX) {
        snprintf(err, err_len, "%s: certificate chain longer than %d", cfg->cert, TG_OWN_CHAIN_MAX);
        goto fail;
    }
    bufs[0] = x509_to_buffer(t->leaf, t->pool);
    for (size_t i = 1; i < n; i++)
        bufs[i] = x509_to_buffer(sk_X509_value(t->chain, i - 1), t->pool);
    ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= bufs[i] != NULL;
    ok = ok && tg_signer_attach(ctx, bufs, n, t->key, t->signer, cfg->keyd);
    for (size_t i = 0; i < n; i++)
        CRYPTO_BUFFER_free(bufs[i]);
    if (!ok) {
        ssl_error(err, err_len, cfg->key, "certificate and key do not go together");
        goto fail;
    }

    int mode = SSL_VERIFY_PEER;
    if (server) {
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set0_client_CAs(ctx, client_ca_names(cfg->ca, t->pool));
        static const uint8_t sid_ctx[] = "tlsgate";
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
        if (!set_ticket_keys(t, ctx, cfg, err, err_len))
            goto fail;
    }
    // Stateless resumption only (tickets): no per-session memory on the server.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_custom_verify(ctx, mode, verify);
    SSL_CTX_set_app_data(ctx, t);
    atomic_fetch_add(&t->policy_ref->refs, 1);
    SSL_CTX_set_ex_data(ctx, g_policy_idx, t->policy_ref);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tg_tls_init(struct tg_tls *t, const struct tg_config *cfg, tg_verify_fn verify,
                struct tg_signer *signer, char *err, size_t err_len) {
    memset(t, 0, sizeof(*t));
    t->signer = signer;
    pthread_once(&g_policy_once, policy_index_init);
    t->pool = g_pool;
    t->policy = tg_policy_new();
    t->policy_ref = calloc(1, sizeof(*t->policy_ref));
    if (t->policy_ref != NULL) {
        atomic_init(&t->policy_ref->refs, 1);
        t->policy_ref->policy = t->policy;
    } else {
        tg_policy_free(t->policy);
        t->policy = NULL;
    }
    if (t->pool == NULL || t->policy == NULL || g_policy_idx < 0 || g_ticket_idx < 0) {
        snprintf(err, err_len, "tls: out of memory");
        goto fail;
    }
    if (!tg_tls_read_cert_file(cfg->cert, &t->leaf, &t->chain, err, err_len))
        goto fail;
    if (cfg->keyd[0] != '\0') {
        // tlsgate-keyd holds the key: we keep only its public half (from our certificate) and
        // make keyd prove, with one signature, that it holds the private half.
        t->key = X509_get_pubkey(t->leaf);
        if (t->key == NULL) {
            ssl_error(err, err_len, cfg->cert, "no public key in the certificate");
            goto fail;
        }
        if (!tg_keyd_check(cfg->keyd, t->key, err, err_len))
            goto fail;
    } else {
        t->key = tg_tls_read_key_file(cfg->key, err, err_len);
        if (t->key == NULL)
            goto fail;
    }
    if (!tg_tls_check_own(t->own_rules, TG_OWN_RULES_MAX, &t->num_own_rules, cfg, t->leaf, t->chain,
                          cfg->keyd[0] != '\0' ? NULL : t->key, (int64_t)time(NULL), err, err_len))
        goto fail;
    t->num_cas = tg_policy_load_ca_file(t->policy, cfg->ca, err, err_len);
    if (t->num_cas == 0)
        goto fail;
    for (size_t i = 0; i < cfg->num_peer_names; i++) {
        if (!tg_policy_add_peer_name(t->policy, cfg->peer_names[i])) {
            snprintf(err, err_len, "tls: out of memory");
            goto fail;
        }
    }
    tg_policy_set_min_rsa_bits(t->policy, cfg->min_key_bits);
    t->server = new_ctx(t, cfg, verify, 1, err, err_len);
    if (t->server == NULL)
        goto fail;
    t->client = new_ctx(t, cfg, verify, 0, err, err_len);
    if (t->client == NULL)
        goto fail;
    return 1;
fail:
    tg_tls_cleanup(t);
    return 0;
}

void tg_tls_cleanup(struct tg_tls *t) {
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    policy_ref_drop(t->policy_ref); // the policy goes with the last context that used it
    X509_free(t->leaf);
    sk_X509_pop_free(t->chain, X509_free);
    EVP_PKEY_free(t->key);
    memset(t, 0, sizeof(*t));
}

int tg_tls_peer_chain(const SSL *ssl, X509 **out_leaf, STACK_OF(X509) **out_chain) {
    *out_leaf = NULL;
    *out_chain = NULL;
    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    if (certs == NULL || sk_CRYPTO_BUFFER_num(certs) == 0)
        return 1;
    STACK_OF(X509) *chain = sk_X509_new_null();
    if (chain == NULL)
        return 0;
    X509 *leaf = NULL;
    for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(certs); i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(certs, i);
        const uint8_t *p = CRYPTO_BUFFER_data(b);
        X509 *x = d2i_X509(NULL, &p, (long)CRYPTO_BUFFER_len(b));
        if (x == NULL)
            goto fail;
        if (i == 0) {
            leaf = x;
        } else if (!sk_X509_push(chain, x)) {
            X509_free(x);
            goto fail;
        }
    }
    *out_leaf = leaf;
    *out_chain = chain;
    return 1;
fail:
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    return 0;
}
