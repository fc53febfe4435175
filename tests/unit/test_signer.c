// Unit tests of proxy/signer.c: signatures made off the loop, and a real handshake between two
// BoringSSL endpoints in memory whose both private keys sign through a signer pool, the
// completions arriving on a tg_loop as a worker's would.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/evp.h>
#include <openssl/pool.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>

#include "testpki.h"
#include "tlsgate/keyd.h"
#include "tlsgate/loop.h"
#include "tlsgate/signer.h"
#include "tlsgate/tlsconn.h"

#define K_SIGN 5 // a kind of the test's own
#define OP_SIGNED 3

static void test_sign_now(void **state) {
    (void)state;
    static const uint8_t msg[] = "the transcript hash a TLS 1.3 CertificateVerify signs";
    uint8_t sig[1024];
    size_t len = 0;
    EVP_PKEY *rsa = tg_testpki_key(TG_TESTPKI_RSA, 2048);
    EVP_PKEY *ec = tg_testpki_key(TG_TESTPKI_EC_P256, 0);
    assert_non_null(rsa);
    assert_non_null(ec);
    const uint16_t rsa_algs[] = {SSL_SIGN_RSA_PKCS1_SHA256, SSL_SIGN_RSA_PSS_RSAE_SHA256,
                                 SSL_SIGN_RSA_PSS_RSAE_SHA384, SSL_SIGN_RSA_PKCS1_SHA512};
    for (size_t i = 0; i < sizeof(rsa_algs) / sizeof(rsa_algs[0]); i++) {
        assert_int_equal(tg_sign_now(rsa, rsa_algs[i], msg, sizeof(msg), sig, &len, sizeof(sig)),
                         1);
        assert_int_equal(len, 256);
        assert_int_equal(tg_keyd_verify(rsa, rsa_algs[i], msg, sizeof(msg), sig, len), 1);
    }
    assert_int_equal(
        tg_sign_now(ec, SSL_SIGN_ECDSA_SECP256R1_SHA256, msg, sizeof(msg), sig, &len, sizeof(sig)),
        1);
    assert_int_equal(
        tg_keyd_verify(ec, SSL_SIGN_ECDSA_SECP256R1_SHA256, msg, sizeof(msg), sig, len), 1);
    // A scheme of another key type, or no room for the signature: refused, nothing written.
    assert_int_equal(
        tg_sign_now(rsa, SSL_SIGN_ECDSA_SECP256R1_SHA256, msg, sizeof(msg), sig, &len, sizeof(sig)),
        0);
    assert_int_equal(
        tg_sign_now(ec, SSL_SIGN_RSA_PSS_RSAE_SHA256, msg, sizeof(msg), sig, &len, sizeof(sig)), 0);
    assert_int_equal(tg_sign_now(rsa, SSL_SIGN_RSA_PKCS1_SHA256, msg, sizeof(msg), sig, &len, 100),
                     0);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

// ---------------------------------------------------------------------------------------------
// A handshake whose signatures go through the pool.

// side is one endpoint: its SSL, the tg_tlsio the sign callback finds through the app data,
// and the user_data its completion carries.
struct side {
    SSL *ssl;
    struct tg_tlsio tio;
    int completions; // completions delivered to it by the loop
};

static struct side g_sides[2];

static void on_signed(void *arg, void *obj, uint32_t slot, unsigned op,
                      const struct io_uring_cqe *cqe) {
    (void)arg;
    (void)obj;
    assert_int_equal(op, OP_SIGNED);
    assert_true(slot < 2);
    assert_int_equal(cqe->res, 0);
    g_sides[slot].completions++;
}

static int on_wake(void *arg) {
    (void)arg;
    return 1;
}

static void on_tick(void *arg) {
    (void)arg;
}

static enum ssl_verify_result_t accept_any(SSL *ssl, uint8_t *out_alert) {
    (void)ssl;
    (void)out_alert;
    return ssl_verify_ok; // the peer's certificate is not under test here
}

// make_ctx builds a context whose key signs through |pool|.
static SSL_CTX *make_ctx(EVP_PKEY *key, X509 *cert, struct tg_signer *pool, int server,
                         uint16_t version) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_with_buffers_method());
    assert_non_null(ctx);
    uint8_t *der = NULL;
    int der_len = i2d_X509(cert, &der);
    assert_true(der_len > 0);
    CRYPTO_BUFFER *buf = CRYPTO_BUFFER_new(der, (size_t)der_len, NULL);
    OPENSSL_free(der);
    assert_int_equal(tg_signer_attach(ctx, &buf, 1, key, pool, NULL), 1);
    CRYPTO_BUFFER_free(buf);
    SSL_CTX_set_min_proto_version(ctx, version);
    SSL_CTX_set_max_proto_version(ctx, version);
    SSL_CTX_set_custom_verify(
        ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
        accept_any);
    return ctx;
}

static void check_pool_handshake(uint16_t version, enum tg_testpki_key_type server_key,
                                 enum tg_testpki_key_type client_key) {
    char err[256];
    struct tg_loop loop;
    assert_int_equal(tg_loop_init(&loop, 64, 256, err, sizeof(err)), 1);
    struct tg_kind_ops ops = {.name = "sign", .on_cqe = on_signed, .bgid = -1};
    tg_loop_set_kind(&loop, K_SIGN, &ops);
    tg_loop_start(&loop, 50, on_tick, on_wake, NULL);
    struct tg_tlsenv env = {.loop = &loop};
    struct tg_signer *pool = tg_signer_new(2, 8);
    assert_non_null(pool);
    uint64_t signed_before = atomic_load(&tg_signer_stats(pool)->signed_ok);

    int64_t now = (int64_t)time(NULL);
    struct tg_testpki_opts o;
    X509 *cert[2];
    EVP_PKEY *key[2];
    SSL_CTX *ctx[2];
    for (int i = 0; i < 2; i++) {
        tg_testpki_opts_init(&o, i == 0 ? "client.test" : "server.test");
        o.key_type = i == 0 ? client_key : server_key;
        assert_int_equal(tg_testpki_issue(&cert[i], &key[i], &o, NULL, NULL, now), 1);
        ctx[i] = make_ctx(key[i], cert[i], pool, i == 1, version);
    }
    BIO *bio[2];
    assert_int_equal(BIO_new_bio_pair(&bio[0], 0, &bio[1], 0), 1);
    memset(g_sides, 0, sizeof(g_sides));
    for (int i = 0; i < 2; i++) {
        struct side *s = &g_sides[i];
        s->ssl = SSL_new(ctx[i]);
        assert_non_null(s->ssl);
        s->tio.ssl = s->ssl;
        s->tio.env = &env;
        s->tio.sign_ud = tg_ud(K_SIGN, OP_SIGNED, (uint32_t)i, 0);
        SSL_set_app_data(s->ssl, &s->tio);
        SSL_set_bio(s->ssl, bio[i], bio[i]);
        if (i == 0)
            SSL_set_connect_state(s->ssl);
        else
            SSL_set_accept_state(s->ssl);
    }
    int done[2] = {0, 0}, waits = 0;
    for (int round = 0; round < 200 && !(done[0] && done[1]); round++) {
        int pending = 0;
        for (int i = 0; i < 2; i++) {
            struct side *s = &g_sides[i];
            if (done[i])
                continue;
            int r = SSL_do_handshake(s->ssl);
            if (r == 1) {
                done[i] = 1;
                continue;
            }
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_PRIVATE_KEY_OPERATION) {
                // The loop is not blocked: the signature is made elsewhere and arrives as a
                // completion for exactly this endpoint.
                if (s->tio.sign_new) {
                    s->tio.sign_new = 0;
                    waits++;
                }
                pending = 1;
            } else {
                assert_int_equal(e, SSL_ERROR_WANT_READ);
            }
        }
        if (pending) {
            int before = g_sides[0].completions + g_sides[1].completions;
            while (g_sides[0].completions + g_sides[1].completions == before)
                assert_int_equal(tg_loop_run_once(&loop), 1);
        }
    }
    assert_true(done[0] && done[1]);
    // One signature each: the server's (CertificateVerify, or ServerKeyExchange in 1.2) and the
    // client's CertificateVerify; each was waited for and completed once.
    assert_int_equal(waits, 2);
    assert_int_equal(g_sides[0].completions, 1);
    assert_int_equal(g_sides[1].completions, 1);
    assert_int_equal(atomic_load(&tg_signer_stats(pool)->signed_ok) - signed_before, 2);
    assert_int_equal(atomic_load(&tg_signer_stats(pool)->depth), 0);
    // Data flows both ways on the finished connection.
    static const char ping[] = "OPTIONS sip:x SIP/2.0";
    char got[64];
    assert_int_equal(SSL_write(g_sides[0].ssl, ping, sizeof(ping)), (int)sizeof(ping));
    assert_int_equal(SSL_read(g_sides[1].ssl, got, sizeof(got)), (int)sizeof(ping));
    assert_memory_equal(got, ping, sizeof(ping));
    for (int i = 0; i < 2; i++) {
        SSL_free(g_sides[i].ssl);
        tg_sign_req_free(g_sides[i].tio.sign);
        SSL_CTX_free(ctx[i]);
        X509_free(cert[i]);
        EVP_PKEY_free(key[i]);
    }
    tg_signer_free(pool);
    tg_loop_cleanup(&loop);
}

static void test_pool_tls13_rsa(void **state) {
    (void)state;
    check_pool_handshake(TLS1_3_VERSION, TG_TESTPKI_RSA, TG_TESTPKI_RSA);
}

static void test_pool_tls12_rsa_ec(void **state) {
    (void)state;
    check_pool_handshake(TLS1_2_VERSION, TG_TESTPKI_RSA, TG_TESTPKI_EC_P256);
}

static void test_pool_tls13_ec(void **state) {
    (void)state;
    check_pool_handshake(TLS1_3_VERSION, TG_TESTPKI_EC_P256, TG_TESTPKI_EC_P256);
}

// Without a loop to complete on, the method signs inline: the handshake never pauses.
static void test_inline_without_loop(void **state) {
    (void)state;
    struct tg_signer *pool = tg_signer_new(1, 8);
    assert_non_null(pool);
    int64_t now = (int64_t)time(NULL);
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, "server.test");
    X509 *cert;
    EVP_PKEY *key;
    assert_int_equal(tg_testpki_issue(&cert, &key, &o, NULL, NULL, now), 1);
    SSL_CTX *sctx = make_ctx(key, cert, pool, 0, TLS1_3_VERSION);
    SSL_CTX *cctx = SSL_CTX_new(TLS_method());
    SSL_CTX_set_custom_verify(cctx, SSL_VERIFY_PEER, accept_any);
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    struct tg_tlsenv env = {.loop = NULL};
    struct tg_tlsio tio = {.ssl = s, .env = &env};
    SSL_set_app_data(s, &tio);
    BIO *b1, *b2;
    assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
    SSL_set_bio(c, b1, b1);
    SSL_set_bio(s, b2, b2);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    uint64_t inline_before = atomic_load(&tg_signer_stats(NULL)->inline_ok);
    int dc = 0, ds = 0;
    for (int i = 0; i < 20 && !(dc && ds); i++) {
        dc = dc || SSL_do_handshake(c) == 1;
        int r = SSL_do_handshake(s);
        if (r != 1)
            assert_int_equal(SSL_get_error(s, r), SSL_ERROR_WANT_READ);
        ds = ds || r == 1;
    }
    assert_true(dc && ds);
    assert_int_equal(atomic_load(&tg_signer_stats(NULL)->inline_ok) - inline_before, 1);
    assert_int_equal(atomic_load(&tg_signer_stats(pool)->signed_ok), 0);
    SSL_free(s);
    SSL_free(c);
    tg_sign_req_free(tio.sign);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(cert);
    EVP_PKEY_free(key);
    tg_signer_free(pool);
}

static void test_pool_args(void **state) {
    (void)state;
    assert_null(tg_signer_new(0, 8));  // no thread
    assert_null(tg_signer_new(1, 6));  // not a power of two
    assert_null(tg_signer_new(65, 8)); // too many
    struct tg_signer *s = tg_signer_new(3, 2);
    assert_non_null(s);
    tg_signer_free(s); // idle threads stop and are joined
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_now),
        cmocka_unit_test(test_pool_tls13_rsa),
        cmocka_unit_test(test_pool_tls12_rsa_ec),
        cmocka_unit_test(test_pool_tls13_ec),
        cmocka_unit_test(test_inline_without_loop),
        cmocka_unit_test(test_pool_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
