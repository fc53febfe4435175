// Unit tests of the keyd protocol and keyd's signing of digests (proxy/keyd.c): the signature
// keyd makes from a digest is the one a signature over the message would be, for every scheme
// tlsgate offers; requests that do not fit are refused with the right status.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>

#include "testpki.h"
#include "tlsgate/keyd.h"

static void test_roundtrip(void **state) {
    (void)state;
    struct tg_keyd_req a = {
        .id = 0xdeadbeef, .alg = SSL_SIGN_RSA_PSS_RSAE_SHA384, .digest_len = 48};
    memset(a.spki_sha256, 0x5a, 32);
    memset(a.digest, 0xa5, 48);
    uint8_t buf[TG_KEYD_RESP_LEN];
    size_t n = tg_keyd_req_encode(&a, buf, sizeof(buf));
    assert_int_equal(n, TG_KEYD_HDR_LEN + 48);
    struct tg_keyd_req b;
    assert_int_equal(tg_keyd_req_decode(&b, buf, n), 1);
    assert_int_equal(b.id, a.id);
    assert_int_equal(b.alg, a.alg);
    assert_int_equal(b.digest_len, 48);
    assert_memory_equal(b.spki_sha256, a.spki_sha256, 32);
    assert_memory_equal(b.digest, a.digest, 48);
    // Every other length, a wrong magic, a zero or oversized digest: refused.
    for (size_t len = 0; len < n + 3; len++)
        if (len != n)
            assert_int_equal(tg_keyd_req_decode(&b, buf, len), 0);
    buf[0] ^= 1;
    assert_int_equal(tg_keyd_req_decode(&b, buf, n), 0);
    a.digest_len = TG_KEYD_MAX_DIGEST + 1;
    assert_int_equal(tg_keyd_req_encode(&a, buf, sizeof(buf)), 0);
    struct tg_keyd_resp r = {.id = 7, .status = TG_KEYD_OK, .sig_len = 3, .sig = {1, 2, 3}}, r2;
    n = tg_keyd_resp_encode(&r, buf, sizeof(buf));
    assert_int_equal(tg_keyd_resp_decode(&r2, buf, n), 1);
    assert_int_equal(r2.sig_len, 3);
    assert_int_equal(r2.id, 7);
    r.sig_len = 0; // OK without a signature is malformed
    n = tg_keyd_resp_encode(&r, buf, sizeof(buf));
    assert_int_equal(tg_keyd_resp_decode(&r2, buf, n), 0);
}

static void check_scheme(EVP_PKEY *key, uint16_t alg) {
    static const uint8_t msg[] = "a TLS 1.3 CertificateVerify input";
    uint8_t hash[1][32], in[TG_KEYD_REQ_LEN], out[TG_KEYD_RESP_LEN];
    assert_int_equal(tg_keyd_spki_hash(key, hash[0]), 1);
    struct tg_keyd_req req = {.id = 42, .alg = alg};
    memcpy(req.spki_sha256, hash[0], 32);
    req.digest_len = tg_keyd_digest(alg, msg, sizeof(msg), req.digest);
    assert_true(req.digest_len > 0);
    size_t n = tg_keyd_req_encode(&req, in, sizeof(in));
    size_t m = tg_keyd_handle(&key, (const uint8_t(*)[32])hash, 1, in, n, out);
    struct tg_keyd_resp resp;
    assert_int_equal(tg_keyd_resp_decode(&resp, out, m), 1);
    assert_int_equal(resp.id, 42);
    assert_int_equal(resp.status, TG_KEYD_OK);
    assert_int_equal(tg_keyd_verify(key, alg, msg, sizeof(msg), resp.sig, resp.sig_len), 1);
}

static void test_schemes(void **state) {
    (void)state;
    EVP_PKEY *rsa = tg_testpki_key(TG_TESTPKI_RSA, 2048);
    EVP_PKEY *ec = tg_testpki_key(TG_TESTPKI_EC_P256, 0);
    const uint16_t rsa_algs[] = {SSL_SIGN_RSA_PKCS1_SHA256,    SSL_SIGN_RSA_PKCS1_SHA384,
                                 SSL_SIGN_RSA_PKCS1_SHA512,    SSL_SIGN_RSA_PSS_RSAE_SHA256,
                                 SSL_SIGN_RSA_PSS_RSAE_SHA384, SSL_SIGN_RSA_PSS_RSAE_SHA512};
    for (size_t i = 0; i < sizeof(rsa_algs) / sizeof(rsa_algs[0]); i++)
        check_scheme(rsa, rsa_algs[i]);
    check_scheme(ec, SSL_SIGN_ECDSA_SECP256R1_SHA256);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

static void test_refusals(void **state) {
    (void)state;
    EVP_PKEY *ec = tg_testpki_key(TG_TESTPKI_EC_P256, 0);
    uint8_t hash[1][32], in[TG_KEYD_REQ_LEN], out[TG_KEYD_RESP_LEN];
    tg_keyd_spki_hash(ec, hash[0]);
    struct tg_keyd_req req = {.id = 9, .alg = SSL_SIGN_ECDSA_SECP256R1_SHA256, .digest_len = 32};
    struct tg_keyd_resp resp;
    // Another key's name: no such key.
    memset(req.spki_sha256, 1, 32);
    size_t n = tg_keyd_req_encode(&req, in, sizeof(in));
    assert_int_equal(
        tg_keyd_resp_decode(&resp, out,
                            tg_keyd_handle(&ec, (const uint8_t(*)[32])hash, 1, in, n, out)),
        1);
    assert_int_equal(resp.status, TG_KEYD_NO_KEY);
    // The right key, a scheme of another key type, or a digest of the wrong length.
    memcpy(req.spki_sha256, hash[0], 32);
    req.alg = SSL_SIGN_RSA_PSS_RSAE_SHA256;
    n = tg_keyd_req_encode(&req, in, sizeof(in));
    tg_keyd_resp_decode(&resp, out, tg_keyd_handle(&ec, (const uint8_t(*)[32])hash, 1, in, n, out));
    assert_int_equal(resp.status, TG_KEYD_SIGN_FAILED);
    assert_int_equal(resp.sig_len, 0);
    req.alg = SSL_SIGN_ECDSA_SECP256R1_SHA256;
    req.digest_len = 20;
    n = tg_keyd_req_encode(&req, in, sizeof(in));
    tg_keyd_resp_decode(&resp, out, tg_keyd_handle(&ec, (const uint8_t(*)[32])hash, 1, in, n, out));
    assert_int_equal(resp.status, TG_KEYD_SIGN_FAILED);
    // Not a request at all.
    tg_keyd_resp_decode(&resp, out,
                        tg_keyd_handle(&ec, (const uint8_t(*)[32])hash, 1, in, 10, out));
    assert_int_equal(resp.status, TG_KEYD_BAD_REQUEST);
    assert_int_equal(resp.id, 9); // the id could still be read
    EVP_PKEY_free(ec);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_schemes),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
