// The crypto floor: the primitives a handshake and a record are made of, on this machine, with
// the keys of the handshake benchmarks. And the floor of a full handshake itself.
//
// The floor of a full mutual handshake is its public-key work, for both ends together (the
// handshake benchmarks run both ends on one thread). For TLS 1.3 with X25519, an RSA-2048
// server certificate and a client certificate, every certificate issued directly by the root:
//
//   server: X25519 keygen + X25519 derive
//           1 sign   its CertificateVerify            (RSA-2048 PSS-SHA256)
//           1 verify the client's CertificateVerify   (RSA-2048 PSS, or ECDSA P-256)
//           1 verify the client's leaf by the root    (RSA-2048 PKCS#1 v1.5, chain building)
//   client: X25519 keygen + X25519 derive
//           1 verify the server's CertificateVerify   (RSA-2048 PSS)
//           1 verify the server's leaf by the root    (RSA-2048 PKCS#1 v1.5)
//           1 sign   its CertificateVerify            (RSA-2048 PSS, or ECDSA P-256)
//
//   floor(RSA client)   = 2 x25519 + 2 rsa2048_sign_pss + 2 rsa2048_verify_pss
//                         + 2 rsa2048_verify_pkcs1
//   floor(ECDSA client) = 2 x25519 + rsa2048_sign_pss + rsa2048_verify_pss + ecdsa_p256_sign
//                         + ecdsa_p256_verify + 2 rsa2048_verify_pkcs1
//
// TLS 1.2 with ECDHE-RSA does the same public-key work (the server signs its ServerKeyExchange
// instead of a CertificateVerify), so the same floor applies. Everything else a handshake does
// (hashing, HKDF, record AEAD, certificate parsing, the policy's other rules, session tickets,
// allocation, state machines) is above the floor. floor/handshake_tls13_{rsa,ecdsa} perform
// exactly the operations above in sequence; tgb_print_floor_summary also adds up the medians of
// the single primitives as a cross-check.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/aead.h>
#include <openssl/curve25519.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "bench_micro.h"
#include "tg_bench.h"

// A TLS 1.3 CertificateVerify signs 64 spaces, a context string, a zero byte and the transcript
// hash: 130 bytes for the server with SHA-256.
#define CV_INPUT_LEN 130
// What a CA signs: the tbsCertificate of a leaf, about this long.
#define TBS_LEN 1024
#define SIG_MAX 512

// Signatures ----------------------------------------------------------------------------------

// sign_msg signs |msg| with |key| and SHA-256 (RSA: PSS with a digest-length salt, as TLS does,
// when |pss|, else PKCS#1 v1.5). Returns 1 on success.
static int sign_msg(EVP_PKEY *key, int pss, uint8_t *out_sig, size_t *out_sig_len,
                    const uint8_t *msg, size_t msg_len) {
    EVP_MD_CTX ctx;
    EVP_MD_CTX_init(&ctx);
    EVP_PKEY_CTX *pctx = NULL;
    size_t len = SIG_MAX;
    int ok = EVP_DigestSignInit(&ctx, &pctx, EVP_sha256(), NULL, key) &&
             (!pss || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) &&
                       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, -1))) &&
             EVP_DigestSign(&ctx, out_sig, &len, msg, msg_len);
    EVP_MD_CTX_cleanup(&ctx);
    *out_sig_len = len;
    return ok;
}

// verify_msg checks |sig| over |msg| as sign_msg made it. Returns 1 when it verifies.
static int verify_msg(EVP_PKEY *key, int pss, const uint8_t *sig, size_t sig_len,
                      const uint8_t *msg, size_t msg_len) {
    EVP_MD_CTX ctx;
    EVP_MD_CTX_init(&ctx);
    EVP_PKEY_CTX *pctx = NULL;
    int ok = EVP_DigestVerifyInit(&ctx, &pctx, EVP_sha256(), NULL, key) &&
             (!pss || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) &&
                       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, -1))) &&
             EVP_DigestVerify(&ctx, sig, sig_len, msg, msg_len);
    EVP_MD_CTX_cleanup(&ctx);
    return ok;
}

// sig_case is one key, one padding, one message and a valid signature over it.
struct sig_case {
    EVP_PKEY *key; // borrowed from the world
    int pss;
    const uint8_t *msg;
    size_t msg_len;
    uint8_t sig[SIG_MAX];
    size_t sig_len;
};

static uint8_t g_cv_input[CV_INPUT_LEN];
static uint8_t g_tbs[TBS_LEN];

static int sig_case_init(struct sig_case *sc, EVP_PKEY *key, int pss, const uint8_t *msg,
                         size_t msg_len) {
    sc->key = key;
    sc->pss = pss;
    sc->msg = msg;
    sc->msg_len = msg_len;
    return sign_msg(key, pss, sc->sig, &sc->sig_len, msg, msg_len);
}

static void bench_sign(struct tg_bench_state *st, void *arg) {
    const struct sig_case *sc = arg;
    uint8_t sig[SIG_MAX];
    size_t sig_len;
    while (tg_bench_keep_running(st)) {
        if (!sign_msg(sc->key, sc->pss, sig, &sig_len, sc->msg, sc->msg_len)) {
            tg_bench_skip_with_error(st, "sign failed");
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

static void bench_verify(struct tg_bench_state *st, void *arg) {
    const struct sig_case *sc = arg;
    while (tg_bench_keep_running(st)) {
        if (!verify_msg(sc->key, sc->pss, sc->sig, sc->sig_len, sc->msg, sc->msg_len)) {
            tg_bench_skip_with_error(st, "verify failed");
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

// X25519 --------------------------------------------------------------------------------------

static uint8_t g_x25519_peer[32];

// x25519_side is one end's share of an X25519 key exchange: a fresh key pair, then the shared
// secret with the peer's public value.
static int x25519_side(void) {
    uint8_t pub[32], priv[32], shared[32];
    X25519_keypair(pub, priv);
    return X25519(shared, priv, g_x25519_peer);
}

static void bench_x25519(struct tg_bench_state *st, void *arg) {
    (void)arg;
    while (tg_bench_keep_running(st)) {
        if (!x25519_side()) {
            tg_bench_skip_with_error(st, "X25519 failed");
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

// AES-128-GCM and HMAC ------------------------------------------------------------------------

#define AEAD_MAX 16384

struct aead_case {
    size_t len;
};

static const size_t kAeadLens[3] = {64, 1024, 16384};
static struct aead_case g_aead[3];
static EVP_AEAD_CTX g_aead_ctx;
static int g_aead_ready;
static const uint8_t kNonce[12] = {0};
static const uint8_t kAd[5] = {0x17, 0x03, 0x03, 0x40, 0x11}; // a TLS 1.3 record header

// bench_aead_seal: EVP_AEAD_CTX_seal of |len| bytes with a 5-byte header as additional data,
// the key schedule done once (as for a connection's records).
static void bench_aead_seal(struct tg_bench_state *st, void *arg) {
    const struct aead_case *ac = arg;
    static uint8_t in[AEAD_MAX], out[AEAD_MAX + EVP_AEAD_MAX_OVERHEAD];
    size_t out_len;
    while (tg_bench_keep_running(st)) {
        if (!EVP_AEAD_CTX_seal(&g_aead_ctx, out, &out_len, sizeof(out), kNonce, sizeof(kNonce), in,
                               ac->len, kAd, sizeof(kAd))) {
            tg_bench_skip_with_error(st, "seal failed");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)ac->len);
}

static void bench_aead_open(struct tg_bench_state *st, void *arg) {
    const struct aead_case *ac = arg;
    static uint8_t sealed[AEAD_MAX + EVP_AEAD_MAX_OVERHEAD], out[AEAD_MAX];
    static const uint8_t in[AEAD_MAX];
    size_t sealed_len, out_len;
    if (!EVP_AEAD_CTX_seal(&g_aead_ctx, sealed, &sealed_len, sizeof(sealed), kNonce, sizeof(kNonce),
                           in, ac->len, kAd, sizeof(kAd))) {
        tg_bench_skip_with_error(st, "seal failed");
        return;
    }
    while (tg_bench_keep_running(st)) {
        if (!EVP_AEAD_CTX_open(&g_aead_ctx, out, &out_len, sizeof(out), kNonce, sizeof(kNonce),
                               sealed, sealed_len, kAd, sizeof(kAd))) {
            tg_bench_skip_with_error(st, "open failed");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)ac->len);
}

static void bench_hmac(struct tg_bench_state *st, void *arg) {
    (void)arg;
    static const uint8_t key[32], msg[1024];
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len;
    while (tg_bench_keep_running(st)) {
        if (HMAC(EVP_sha256(), key, sizeof(key), msg, sizeof(msg), mac, &mac_len) == NULL) {
            tg_bench_skip_with_error(st, "HMAC failed");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)sizeof(msg));
}

// The handshake floor -------------------------------------------------------------------------

// floor_case holds what both ends of one handshake check and sign (see the comment at the top).
struct floor_case {
    struct sig_case server_cv;       // the server's CertificateVerify: RSA-2048 PSS
    struct sig_case client_cv;       // the client's: RSA-2048 PSS or ECDSA P-256
    struct sig_case server_leaf_sig; // the root's signature on the server's leaf: PKCS#1
    struct sig_case client_leaf_sig; // ... on the client's leaf
};

static struct floor_case g_floor_rsa, g_floor_ecdsa;

static int floor_case_init(struct floor_case *fc, struct tgb_world *w, EVP_PKEY *client_key) {
    int client_pss = EVP_PKEY_id(client_key) == EVP_PKEY_RSA;
    return sig_case_init(&fc->server_cv, w->server_key, 1, g_cv_input, sizeof(g_cv_input)) &&
           sig_case_init(&fc->client_cv, client_key, client_pss, g_cv_input, sizeof(g_cv_input)) &&
           sig_case_init(&fc->server_leaf_sig, w->ca_key, 0, g_tbs, sizeof(g_tbs)) &&
           sig_case_init(&fc->client_leaf_sig, w->ca_key, 0, g_tbs, sizeof(g_tbs));
}

static int check_sig(const struct sig_case *sc) {
    return verify_msg(sc->key, sc->pss, sc->sig, sc->sig_len, sc->msg, sc->msg_len);
}

static int make_sig(const struct sig_case *sc) {
    uint8_t sig[SIG_MAX];
    size_t sig_len;
    return sign_msg(sc->key, sc->pss, sig, &sig_len, sc->msg, sc->msg_len);
}

// bench_floor_handshake: one iteration is the public-key work of both ends of one full mutual
// handshake, in the order the handshake does it.
static void bench_floor_handshake(struct tg_bench_state *st, void *arg) {
    const struct floor_case *fc = arg;
    while (tg_bench_keep_running(st)) {
        int ok = x25519_side() &&                   // client: key share
                 x25519_side() &&                   // server: key share, shared secret
                 make_sig(&fc->server_cv) &&        // server: CertificateVerify
                 check_sig(&fc->server_leaf_sig) && // client: server's chain
                 check_sig(&fc->server_cv) &&       // client: server's CertificateVerify
                 make_sig(&fc->client_cv) &&        // client: its CertificateVerify
                 check_sig(&fc->client_leaf_sig) && // server: client's chain
                 check_sig(&fc->client_cv);         // server: client's CertificateVerify
        if (!ok) {
            tg_bench_skip_with_error(st, "a primitive failed");
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

// Registration --------------------------------------------------------------------------------

static struct sig_case g_rsa_sign_pkcs1, g_rsa_sign_pss, g_ecdsa_sign;

static void aead_cleanup(void) {
    if (g_aead_ready)
        EVP_AEAD_CTX_cleanup(&g_aead_ctx);
    g_aead_ready = 0;
}

int tgb_register_crypto(struct tgb_world *w) {
    memset(g_cv_input, ' ', 64);
    memcpy(g_cv_input + 64, "TLS 1.3, server CertificateVerify", 33);
    g_cv_input[97] = 0;
    RAND_bytes(g_cv_input + 98, 32);
    RAND_bytes(g_tbs, sizeof(g_tbs));
    uint8_t peer_priv[32];
    X25519_keypair(g_x25519_peer, peer_priv);
    uint8_t key[16];
    RAND_bytes(key, sizeof(key));
    if (!EVP_AEAD_CTX_init(&g_aead_ctx, EVP_aead_aes_128_gcm(), key, sizeof(key),
                           EVP_AEAD_DEFAULT_TAG_LENGTH, NULL))
        return 0;
    g_aead_ready = 1;
    atexit(aead_cleanup);

    if (!sig_case_init(&g_rsa_sign_pkcs1, w->server_key, 0, g_cv_input, sizeof(g_cv_input)) ||
        !sig_case_init(&g_rsa_sign_pss, w->server_key, 1, g_cv_input, sizeof(g_cv_input)) ||
        !sig_case_init(&g_ecdsa_sign, w->client_ecdsa_key, 0, g_cv_input, sizeof(g_cv_input)) ||
        !floor_case_init(&g_floor_rsa, w, w->client_rsa_key) ||
        !floor_case_init(&g_floor_ecdsa, w, w->client_ecdsa_key))
        return 0;

    int ok =
        tg_bench_register_unit("floor/rsa2048_sign_pkcs1", bench_sign, &g_rsa_sign_pkcs1,
                               TG_BENCH_US) &&
        tg_bench_register_unit("floor/rsa2048_sign_pss", bench_sign, &g_rsa_sign_pss,
                               TG_BENCH_US) &&
        tg_bench_register_unit("floor/rsa2048_verify_pkcs1", bench_verify, &g_rsa_sign_pkcs1,
                               TG_BENCH_US) &&
        tg_bench_register_unit("floor/rsa2048_verify_pss", bench_verify, &g_rsa_sign_pss,
                               TG_BENCH_US) &&
        tg_bench_register_unit("floor/ecdsa_p256_sign", bench_sign, &g_ecdsa_sign, TG_BENCH_US) &&
        tg_bench_register_unit("floor/ecdsa_p256_verify", bench_verify, &g_ecdsa_sign,
                               TG_BENCH_US) &&
        tg_bench_register_unit("floor/x25519", bench_x25519, NULL, TG_BENCH_US);
    char name[64];
    for (size_t i = 0; ok && i < 3; i++) {
        g_aead[i].len = kAeadLens[i];
        snprintf(name, sizeof(name), "floor/aes128gcm_seal/%zu", kAeadLens[i]);
        ok = tg_bench_register(name, bench_aead_seal, &g_aead[i]);
    }
    ok = ok && tg_bench_register("floor/aes128gcm_open/16384", bench_aead_open, &g_aead[2]) &&
         tg_bench_register("floor/hmac_sha256/1024", bench_hmac, NULL) &&
         tg_bench_register_unit("floor/handshake_tls13_rsa", bench_floor_handshake, &g_floor_rsa,
                                TG_BENCH_US) &&
         tg_bench_register_unit("floor/handshake_tls13_ecdsa", bench_floor_handshake,
                                &g_floor_ecdsa, TG_BENCH_US);
    return ok;
}

// Summary -------------------------------------------------------------------------------------

// sum_ns adds |num| medians weighted by |times|. Returns 0 when one of them did not run.
static int sum_ns(double *out, const char *const *names, const double *times, size_t num) {
    double total = 0;
    for (size_t i = 0; i < num; i++) {
        double ns;
        if (!tg_bench_result_cpu_ns(names[i], &ns))
            return 0;
        total += times[i] * ns;
    }
    *out = total;
    return 1;
}

static void print_ratio(FILE *out, const char *handshake, double floor_ns) {
    double ns;
    if (!tg_bench_result_cpu_ns(handshake, &ns))
        return;
    fprintf(out, "  %-40s %9.1f us = %.2fx the floor\n", handshake, ns / 1e3, ns / floor_ns);
}

void tgb_print_floor_summary(FILE *out) {
    static const char *const rsa_names[] = {"floor/x25519", "floor/rsa2048_sign_pss",
                                            "floor/rsa2048_verify_pss",
                                            "floor/rsa2048_verify_pkcs1"};
    static const double rsa_times[] = {2, 2, 2, 2};
    static const char *const ecdsa_names[] = {
        "floor/x25519",          "floor/rsa2048_sign_pss",  "floor/rsa2048_verify_pss",
        "floor/ecdsa_p256_sign", "floor/ecdsa_p256_verify", "floor/rsa2048_verify_pkcs1"};
    static const double ecdsa_times[] = {2, 1, 1, 1, 1, 2};
    static const struct {
        const char *floor;
        const char *formula;
        const char *const *names;
        const double *times;
        size_t num;
        const char *handshakes[2];
    } rows[2] = {
        {"floor/handshake_tls13_rsa",
         "2 x25519 + 2 rsa2048_sign_pss + 2 rsa2048_verify_pss + 2 rsa2048_verify_pkcs1",
         rsa_names,
         rsa_times,
         4,
         {"handshake/full/tls13/client_rsa2048", "handshake/full/tls12/client_rsa2048"}},
        {"floor/handshake_tls13_ecdsa",
         "2 x25519 + rsa2048_sign_pss + rsa2048_verify_pss + ecdsa_p256_sign + "
         "ecdsa_p256_verify + 2 rsa2048_verify_pkcs1",
         ecdsa_names,
         ecdsa_times,
         6,
         {"handshake/full/tls13/client_ecdsa_p256", "handshake/full/tls12/client_ecdsa_p256"}},
    };
    int header = 0;
    for (size_t i = 0; i < 2; i++) {
        double measured = 0, summed = 0;
        int have_measured = tg_bench_result_cpu_ns(rows[i].floor, &measured);
        int have_summed = sum_ns(&summed, rows[i].names, rows[i].times, rows[i].num);
        if (!have_measured && !have_summed)
            continue;
        if (!header) {
            fprintf(out, "\nFloor of a full mutual handshake: the public-key work of both ends "
                         "(RSA-2048 server, X25519; see bench/micro/bench_crypto.c).\n"
                         "CPU time per handshake, medians when repeated.\n");
            header = 1;
        }
        fprintf(out, "%s = %s\n", rows[i].floor, rows[i].formula);
        if (have_measured)
            fprintf(out, "  measured in sequence                     %9.1f us\n", measured / 1e3);
        if (have_summed)
            fprintf(out, "  sum of the primitives' times             %9.1f us\n", summed / 1e3);
        double floor_ns = have_measured ? measured : summed;
        for (size_t j = 0; j < 2; j++)
            print_ratio(out, rows[i].handshakes[j], floor_ns);
    }
}
