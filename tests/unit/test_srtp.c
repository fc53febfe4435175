// Unit tests of the SRTP/SRTCP transform (proxy/srtp.c): the published vectors (RFC 3711 B.2
// AES-CM keystream, B.3 key derivation; RFC 7714 16 and 17 for AEAD_AES_128_GCM over RTP and
// RTCP) and libsrtp2 as the oracle, packet for packet, both directions, for every suite, with
// and without MKI, with CSRCs and header extensions, across a sequence number rollover. Then
// the negative cases: replay, flipped bits, truncation, a foreign MKI, and that none of them
// moves the per-SSRC state.
//
// Debian 12's libsrtp2 is built on NSS; its AES-GCM is checked at run time (srtp_create with
// the GCM policy). Where it is missing the GCM oracle test says so and skips: the RFC 7714
// vectors remain the oracle for GCM.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <srtp2/srtp.h>

#include "tlsgate/srtp.h"

#define PKT_MAX 2048

// hex decodes |s| (spaces ignored) into |out|; returns the byte count.
static size_t hex(uint8_t *out, size_t cap, const char *s) {
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        int v;
        if (*s >= '0' && *s <= '9')
            v = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            v = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            v = *s - 'A' + 10;
        else
            continue;
        if (hi < 0) {
            hi = v;
            continue;
        }
        assert_true(n < cap);
        out[n++] = (uint8_t)(hi << 4 | v);
        hi = -1;
    }
    assert_int_equal(hi, -1);
    return n;
}

static const enum tg_srtp_suite kSuites[] = {
    TG_SRTP_AES_CM_128_HMAC_SHA1_80,
    TG_SRTP_AES_CM_128_HMAC_SHA1_32,
    TG_SRTP_AEAD_AES_128_GCM,
};
#define NUM_SUITES (sizeof(kSuites) / sizeof(kSuites[0]))

// Suite facts ---------------------------------------------------------------------------------

static void test_suite_names(void **state) {
    (void)state;
    for (size_t i = 0; i < NUM_SUITES; i++) {
        const char *n = tg_srtp_suite_name(kSuites[i]);
        assert_true(strlen(n) > 0);
        assert_int_equal(tg_srtp_suite_parse(n, strlen(n)), kSuites[i]);
        assert_int_equal(tg_srtp_suite_parse(n, strlen(n) - 1), TG_SRTP_NONE);
    }
    assert_string_equal(tg_srtp_suite_name(TG_SRTP_NONE), "");
    assert_string_equal(tg_srtp_suite_name(TG_SRTP_SUITE_NUM), "");
    assert_int_equal(tg_srtp_suite_parse("AES_CM_128_HMAC_SHA1_81", 23), TG_SRTP_NONE);
    assert_int_equal(tg_srtp_salt_len(TG_SRTP_AES_CM_128_HMAC_SHA1_80), 14);
    assert_int_equal(tg_srtp_salt_len(TG_SRTP_AEAD_AES_128_GCM), 12);
    assert_int_equal(tg_srtp_tag_len(TG_SRTP_AES_CM_128_HMAC_SHA1_80), 10);
    assert_int_equal(tg_srtp_tag_len(TG_SRTP_AES_CM_128_HMAC_SHA1_32), 4);
    assert_int_equal(tg_srtcp_tag_len(TG_SRTP_AES_CM_128_HMAC_SHA1_32), 10);
    assert_int_equal(tg_srtp_tag_len(TG_SRTP_AEAD_AES_128_GCM), 16);
    assert_int_equal(tg_srtcp_tag_len(TG_SRTP_AEAD_AES_128_GCM), 16);
    assert_int_equal(tg_srtp_tag_len(TG_SRTP_NONE), 0);
}

static void test_params(void **state) {
    (void)state;
    struct tg_srtp_params a, b;
    assert_int_equal(tg_srtp_params_random(&a, TG_SRTP_NONE), 0);
    assert_int_equal(tg_srtp_params_random(&a, TG_SRTP_AEAD_AES_128_GCM), 1);
    assert_int_equal(tg_srtp_params_random(&b, TG_SRTP_AEAD_AES_128_GCM), 1);
    assert_int_equal(a.suite, TG_SRTP_AEAD_AES_128_GCM);
    assert_int_equal(a.mki_len, 0);
    assert_memory_not_equal(a.key, b.key, sizeof(a.key));
    // GCM uses 12 bytes of salt: the rest stays zero.
    assert_int_equal(a.salt[12] | a.salt[13], 0);

    struct tg_srtp *s = tg_srtp_new(&a, 1);
    assert_non_null(s);
    tg_srtp_free(s);
    tg_srtp_free(NULL);

    struct tg_srtp_params bad = a;
    bad.suite = TG_SRTP_NONE;
    assert_null(tg_srtp_new(&bad, 1));
    bad = a;
    bad.mki_len = TG_SRTP_MKI_MAX + 1;
    assert_null(tg_srtp_new(&bad, 0));
    bad = a;
    bad.mki_len = 1;
    bad.mki = 256; // does not fit in one byte
    assert_null(tg_srtp_new(&bad, 0));
}

// RFC vectors ---------------------------------------------------------------------------------

// RFC 3711 B.3: the session keys of master key E1F9.., salt 0EC6.. (rate 0).
static void test_rfc3711_b3_kdf(void **state) {
    (void)state;
    uint8_t mk[16], ms[14], want[94], out[94];
    hex(mk, sizeof(mk), "E1F97A0D3E018BE0D64FA32C06DE4139");
    hex(ms, sizeof(ms), "0EC675AD498AFEEBB6960B3AABE6");
    assert_int_equal(tg_srtp_kdf(out, 16, mk, ms, 14, 0), 1);
    hex(want, sizeof(want), "C61E7A93744F39EE10734AFE3FF7A087");
    assert_memory_equal(out, want, 16);
    assert_int_equal(tg_srtp_kdf(out, 14, mk, ms, 14, 2), 1);
    hex(want, sizeof(want), "30CBBC08863D8C85D49DB34A9AE1");
    assert_memory_equal(out, want, 14);
    assert_int_equal(tg_srtp_kdf(out, 94, mk, ms, 14, 1), 1);
    hex(want, sizeof(want),
        "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
        "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25"
        "6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2");
    assert_memory_equal(out, want, 94);
    assert_int_equal(tg_srtp_kdf(out, 16, mk, ms, 15, 0), 0);
}

// RFC 3711 B.2: the AES-CM keystream of session key 2B7E.., salt F0F1..FCFD for SSRC 0 and
// index 0, seen as the ciphertext of zeros in a packet with SSRC 0 and sequence number 0.
static void test_rfc3711_b2_keystream(void **state) {
    (void)state;
    struct tg_srtp_params p = {.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80};
    struct tg_srtp_session_keys k = {0};
    hex(k.key, sizeof(k.key), "2B7E151628AED2A6ABF7158809CF4F3C");
    hex(k.salt, sizeof(k.salt), "F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
    struct tg_srtp *s = tg_srtp_new_session(&p, &k, &k, 1);
    assert_non_null(s);
    size_t payload = 0xff02 * 16;
    size_t len = 12 + payload, cap = len + TG_SRTP_OVERHEAD, out_len = 0;
    uint8_t *pkt = calloc(1, cap);
    assert_non_null(pkt);
    pkt[0] = 0x80;
    assert_int_equal(tg_srtp_protect(s, pkt, len, cap, &out_len), TG_SRTP_OK);
    assert_int_equal(out_len, len + 10);
    static const struct {
        size_t block;
        const char *ks;
    } kBlocks[] = {
        {0x0000, "E03EAD0935C95E80E166B16DD92B4EB4"}, {0x0001, "D23513162B02D0F72A43A2FE4A5F97AB"},
        {0x0002, "41E95B3BB0A2E8DD477901E4FCA894C0"}, {0xfeff, "EC8CDF7398607CB0F2D21675EA9EA1E4"},
        {0xff00, "362B7C3C6773516318A077D7FC5073AE"}, {0xff01, "6A2CC3787889374FBEB4C81B17BA6C44"},
    };
    for (size_t i = 0; i < sizeof(kBlocks) / sizeof(kBlocks[0]); i++) {
        uint8_t want[16];
        hex(want, sizeof(want), kBlocks[i].ks);
        assert_memory_equal(pkt + 12 + kBlocks[i].block * 16, want, 16);
    }
    free(pkt);
    tg_srtp_free(s);
}

// The RFC 7714 16-17 material: session key 0001..0f, salt "Quid pro quo".
static struct tg_srtp *rfc7714_ctx(int protect) {
    struct tg_srtp_params p = {.suite = TG_SRTP_AEAD_AES_128_GCM};
    struct tg_srtp_session_keys k = {0};
    hex(k.key, sizeof(k.key), "000102030405060708090a0b0c0d0e0f");
    hex(k.salt, sizeof(k.salt), "517569642070726f2071756f");
    return tg_srtp_new_session(&p, &k, &k, protect);
}

static const char kRfc7714Rtp[] = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973"
                                  "20646976 69736120 696e2070 61727465 73207472 6573";
static const char kRfc7714Srtp[] =
    "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5 0d294e6f 42a5f47a"
    "51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce";
static const char kRfc7714Rtcp[] = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930"
                                   "4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
static const char kRfc7714Srtcp[] =
    "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d c676a5f1 730d6fda"
    "4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4";
static const char kRfc7714SrtcpAuthOnly[] =
    "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61 deadbeef deadbeef"
    "deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4";

static void test_rfc7714_rtp(void **state) {
    (void)state;
    uint8_t plain[PKT_MAX], want[PKT_MAX], pkt[PKT_MAX];
    size_t plain_len = hex(plain, sizeof(plain), kRfc7714Rtp);
    size_t want_len = hex(want, sizeof(want), kRfc7714Srtp);
    struct tg_srtp *tx = rfc7714_ctx(1), *rx = rfc7714_ctx(0);
    assert_non_null(tx);
    assert_non_null(rx);
    size_t n = 0;
    memcpy(pkt, plain, plain_len);
    assert_int_equal(tg_srtp_protect(tx, pkt, plain_len, sizeof(pkt), &n), TG_SRTP_OK);
    assert_int_equal(n, want_len);
    assert_memory_equal(pkt, want, want_len);
    assert_int_equal(tg_srtp_unprotect(rx, pkt, n, &n), TG_SRTP_OK);
    assert_int_equal(n, plain_len);
    assert_memory_equal(pkt, plain, plain_len);
    memcpy(pkt, want, want_len);
    assert_int_equal(tg_srtp_unprotect(rx, pkt, want_len, &n), TG_SRTP_REPLAY);
    tg_srtp_free(tx);
    tg_srtp_free(rx);
}

static void test_rfc7714_rtcp(void **state) {
    (void)state;
    uint8_t plain[PKT_MAX], want[PKT_MAX], pkt[PKT_MAX];
    size_t plain_len = hex(plain, sizeof(plain), kRfc7714Rtcp);
    size_t want_len = hex(want, sizeof(want), kRfc7714Srtcp);
    struct tg_srtp *tx = rfc7714_ctx(1), *rx = rfc7714_ctx(0);
    assert_non_null(tx);
    assert_non_null(rx);
    // The vector is SRTCP index 0x5d4: protect numbers from 1, so 0x5d3 packets go first.
    size_t n = 0;
    for (int i = 1; i < 0x5d4; i++) {
        memcpy(pkt, plain, plain_len);
        assert_int_equal(tg_srtcp_protect(tx, pkt, plain_len, sizeof(pkt), &n), TG_SRTP_OK);
    }
    memcpy(pkt, plain, plain_len);
    assert_int_equal(tg_srtcp_protect(tx, pkt, plain_len, sizeof(pkt), &n), TG_SRTP_OK);
    assert_int_equal(n, want_len);
    assert_memory_equal(pkt, want, want_len);
    assert_int_equal(tg_srtcp_unprotect(rx, pkt, n, &n), TG_SRTP_OK);
    assert_int_equal(n, plain_len);
    assert_memory_equal(pkt, plain, plain_len);
    memcpy(pkt, want, want_len);
    assert_int_equal(tg_srtcp_unprotect(rx, pkt, want_len, &n), TG_SRTP_REPLAY);

    // 17.3: the same packet authenticated only (E = 0), index 0x5d4 again: a replay now, new
    // to a fresh receiver.
    want_len = hex(want, sizeof(want), kRfc7714SrtcpAuthOnly);
    memcpy(pkt, want, want_len);
    assert_int_equal(tg_srtcp_unprotect(rx, pkt, want_len, &n), TG_SRTP_REPLAY);
    struct tg_srtp *rx2 = rfc7714_ctx(0);
    memcpy(pkt, want, want_len);
    assert_int_equal(tg_srtcp_unprotect(rx2, pkt, want_len, &n), TG_SRTP_OK);
    assert_int_equal(n, plain_len);
    assert_memory_equal(pkt, plain, plain_len);
    memcpy(pkt, want, want_len);
    pkt[20] ^= 1;
    assert_int_equal(tg_srtcp_unprotect(rx2, pkt, want_len, &n), TG_SRTP_AUTH_FAIL);
    tg_srtp_free(rx2);
    tg_srtp_free(tx);
    tg_srtp_free(rx);
}

// libsrtp2, the oracle --------------------------------------------------------------------------

// lib_new makes a libsrtp2 session for |p| (any SSRC, outbound when |protect|). NULL when
// libsrtp2 refuses the policy (a suite its crypto backend lacks).
static srtp_t lib_new(const struct tg_srtp_params *p, int protect) {
    srtp_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    switch (p->suite) {
    case TG_SRTP_AES_CM_128_HMAC_SHA1_80:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
        break;
    case TG_SRTP_AES_CM_128_HMAC_SHA1_32:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
        break;
    case TG_SRTP_AEAD_AES_128_GCM:
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtcp);
        break;
    default:
        return NULL;
    }
    uint8_t key[TG_SRTP_KEY_LEN + TG_SRTP_SALT_MAX];
    memcpy(key, p->key, TG_SRTP_KEY_LEN);
    memcpy(key + TG_SRTP_KEY_LEN, p->salt, tg_srtp_salt_len(p->suite));
    uint8_t mki[4];
    for (int i = 0; i < p->mki_len; i++)
        mki[i] = (uint8_t)(p->mki >> (8 * (p->mki_len - 1 - i)));
    srtp_master_key_t mk = {.key = key, .mki_id = mki, .mki_size = p->mki_len};
    srtp_master_key_t *keys[1] = {&mk};
    if (p->mki_len > 0) {
        pol.keys = keys;
        pol.num_master_keys = 1;
    } else {
        pol.key = key;
    }
    pol.ssrc.type = protect ? ssrc_any_outbound : ssrc_any_inbound;
    pol.window_size = 128;
    srtp_t s = NULL;
    if (srtp_create(&s, &pol) != srtp_err_status_ok)
        return NULL;
    return s;
}

static int lib_protect(srtp_t s, const struct tg_srtp_params *p, uint8_t *pkt, size_t *len,
                       int rtcp) {
    int n = (int)*len;
    srtp_err_status_t e;
    if (rtcp)
        e = p->mki_len ? srtp_protect_rtcp_mki(s, pkt, &n, 1, 0) : srtp_protect_rtcp(s, pkt, &n);
    else
        e = p->mki_len ? srtp_protect_mki(s, pkt, &n, 1, 0) : srtp_protect(s, pkt, &n);
    *len = (size_t)n;
    return e == srtp_err_status_ok;
}

static int lib_unprotect(srtp_t s, const struct tg_srtp_params *p, uint8_t *pkt, size_t *len,
                         int rtcp) {
    int n = (int)*len;
    srtp_err_status_t e;
    if (rtcp)
        e = p->mki_len ? srtp_unprotect_rtcp_mki(s, pkt, &n, 1) : srtp_unprotect_rtcp(s, pkt, &n);
    else
        e = p->mki_len ? srtp_unprotect_mki(s, pkt, &n, 1) : srtp_unprotect(s, pkt, &n);
    *len = (size_t)n;
    return e == srtp_err_status_ok;
}

// fixed_params is a fixed key and salt for |suite| with an MKI of |mki_len| bytes.
static struct tg_srtp_params fixed_params(enum tg_srtp_suite suite, uint8_t mki_len) {
    struct tg_srtp_params p = {.suite = suite, .mki_len = mki_len};
    for (int i = 0; i < TG_SRTP_KEY_LEN; i++)
        p.key[i] = (uint8_t)(0x11 * i + 3);
    for (size_t i = 0; i < tg_srtp_salt_len(suite); i++)
        p.salt[i] = (uint8_t)(0xa0 + i);
    p.mki = mki_len == 4 ? 0xdeadbeef : (0x010203u & ((1u << (8 * mki_len)) - 1));
    return p;
}

// make_rtp writes an RTP packet: |cc| CSRCs, a header extension of |ext_words| words when
// |ext_words| >= 0, |payload_len| payload bytes (the last one a pad count when |pad|).
static size_t make_rtp(uint8_t *pkt, uint16_t seq, uint32_t ssrc, int cc, int ext_words,
                       size_t payload_len, int pad) {
    size_t n = 0;
    pkt[n++] = (uint8_t)(0x80 | (pad ? 0x20 : 0) | (ext_words >= 0 ? 0x10 : 0) | cc);
    pkt[n++] = 0x08; // PCMA
    pkt[n++] = (uint8_t)(seq >> 8);
    pkt[n++] = (uint8_t)seq;
    uint32_t ts = (uint32_t)seq * 160;
    for (int i = 3; i >= 0; i--)
        pkt[n++] = (uint8_t)(ts >> (8 * i));
    for (int i = 3; i >= 0; i--)
        pkt[n++] = (uint8_t)(ssrc >> (8 * i));
    for (int c = 0; c < cc; c++)
        for (int i = 0; i < 4; i++)
            pkt[n++] = (uint8_t)(0xc0 + c);
    if (ext_words >= 0) {
        pkt[n++] = 0xbe;
        pkt[n++] = 0xde;
        pkt[n++] = 0;
        pkt[n++] = (uint8_t)ext_words;
        for (int i = 0; i < 4 * ext_words; i++)
            pkt[n++] = (uint8_t)(0x10 + i);
    }
    for (size_t i = 0; i < payload_len; i++)
        pkt[n++] = (uint8_t)(seq + i);
    if (pad && payload_len > 0)
        pkt[n - 1] = (uint8_t)(payload_len > 4 ? 4 : payload_len);
    return n;
}

// make_rtcp writes an RTCP receiver report from |ssrc| with |blocks| report blocks.
static size_t make_rtcp(uint8_t *pkt, uint32_t ssrc, int blocks, uint8_t fill) {
    size_t n = 8 + 24 * (size_t)blocks;
    pkt[0] = (uint8_t)(0x80 | blocks);
    pkt[1] = 201;
    pkt[2] = 0;
    pkt[3] = (uint8_t)(n / 4 - 1);
    for (int i = 3; i >= 0; i--)
        pkt[4 + 3 - i] = (uint8_t)(ssrc >> (8 * i));
    for (size_t i = 8; i < n; i++)
        pkt[i] = (uint8_t)(fill + i);
    return n;
}

// have_lib_gcm answers whether this libsrtp2 build does AES-GCM.
static int have_lib_gcm(void) {
    struct tg_srtp_params p = fixed_params(TG_SRTP_AEAD_AES_128_GCM, 0);
    srtp_t s = lib_new(&p, 1);
    if (!s)
        return 0;
    srtp_dealloc(s);
    return 1;
}

// oracle_skip skips the test for |suite| when libsrtp2 cannot do it, saying why.
static int oracle_missing(enum tg_srtp_suite suite) {
    if (suite != TG_SRTP_AEAD_AES_128_GCM || have_lib_gcm())
        return 0;
    print_message("libsrtp2 has no AES-GCM here: the RFC 7714 vectors are the GCM oracle\n");
    return 1;
}

// One direction pair: tlsgate and libsrtp2 protecting and unprotecting the same packets.
struct pair {
    struct tg_srtp_params p;
    struct tg_srtp *tg_tx, *tg_rx;
    srtp_t lib_tx, lib_rx;
};

static void pair_init(struct pair *x, enum tg_srtp_suite suite, uint8_t mki_len) {
    x->p = fixed_params(suite, mki_len);
    x->tg_tx = tg_srtp_new(&x->p, 1);
    x->tg_rx = tg_srtp_new(&x->p, 0);
    x->lib_tx = lib_new(&x->p, 1);
    x->lib_rx = lib_new(&x->p, 0);
    assert_non_null(x->tg_tx);
    assert_non_null(x->tg_rx);
    assert_non_null(x->lib_tx);
    assert_non_null(x->lib_rx);
}

static void pair_free(struct pair *x) {
    tg_srtp_free(x->tg_tx);
    tg_srtp_free(x->tg_rx);
    srtp_dealloc(x->lib_tx);
    srtp_dealloc(x->lib_rx);
}

// cross checks one plain packet both ways: libsrtp2's SRTP unprotected by tlsgate gives it
// back; tlsgate's SRTP equals libsrtp2's byte for byte and libsrtp2 unprotects it.
static void cross(struct pair *x, const uint8_t *plain, size_t plain_len, int rtcp) {
    uint8_t a[PKT_MAX], b[PKT_MAX];
    size_t a_len = plain_len, b_len = 0;
    memcpy(a, plain, plain_len);
    memcpy(b, plain, plain_len);
    assert_true(lib_protect(x->lib_tx, &x->p, a, &a_len, rtcp));
    enum tg_srtp_status st = rtcp ? tg_srtcp_protect(x->tg_tx, b, plain_len, sizeof(b), &b_len)
                                  : tg_srtp_protect(x->tg_tx, b, plain_len, sizeof(b), &b_len);
    assert_int_equal(st, TG_SRTP_OK);
    assert_int_equal(b_len, a_len);
    assert_memory_equal(a, b, a_len);
    assert_true(b_len <= plain_len + (rtcp ? TG_SRTCP_OVERHEAD : TG_SRTP_OVERHEAD));

    size_t n = 0;
    st = rtcp ? tg_srtcp_unprotect(x->tg_rx, a, a_len, &n)
              : tg_srtp_unprotect(x->tg_rx, a, a_len, &n);
    assert_int_equal(st, TG_SRTP_OK);
    assert_int_equal(n, plain_len);
    assert_memory_equal(a, plain, plain_len);
    // libsrtp2 before 2.7 looks for the MKI of an SRTCP packet one RTP tag length from the end
    // (cisco/libsrtp#733): with the 32-bit suite and an MKI it refuses even its own packets.
    // Here b equals libsrtp2's own output byte for byte (checked above), so nothing is lost.
    if (rtcp && x->p.mki_len > 0 && x->p.suite == TG_SRTP_AES_CM_128_HMAC_SHA1_32)
        return;
    if (!lib_unprotect(x->lib_rx, &x->p, b, &b_len, rtcp))
        fail_msg("libsrtp2 refuses: suite %d, MKI %d bytes, rtcp %d", x->p.suite, x->p.mki_len,
                 rtcp);
    assert_int_equal(b_len, plain_len);
    assert_memory_equal(b, plain, plain_len);
}

// Packets of two SSRCs with CSRCs, header extensions, padding and payloads of many sizes,
// sequence numbers crossing 65535 (the rollover counter moves to 1), RTCP in between.
static void oracle_run(enum tg_srtp_suite suite, uint8_t mki_len) {
    if (oracle_missing(suite))
        return;
    struct pair x;
    pair_init(&x, suite, mki_len);
    uint8_t plain[PKT_MAX];
    for (int i = 0; i < 400; i++) {
        uint16_t seq = (uint16_t)(65300 + i);
        uint32_t ssrc = i % 7 == 3 ? 0x55667788 : 0x11223344;
        if (ssrc == 0x55667788)
            seq = (uint16_t)(1000 + i);
        int cc = i % 3, ext = i % 4 == 0 ? i % 3 : -1;
        size_t payload = i % 5 == 0 ? 160 : (size_t)(i % 47);
        size_t n = make_rtp(plain, seq, ssrc, cc, ext, payload, i % 11 == 5);
        cross(&x, plain, n, 0);
        if (i % 10 == 0) {
            n = make_rtcp(plain, ssrc, i % 3, (uint8_t)i);
            cross(&x, plain, n, 1);
        }
    }
    pair_free(&x);
}

static void test_oracle_cm80(void **state) {
    (void)state;
    oracle_run(TG_SRTP_AES_CM_128_HMAC_SHA1_80, 0);
}

static void test_oracle_cm32(void **state) {
    (void)state;
    oracle_run(TG_SRTP_AES_CM_128_HMAC_SHA1_32, 0);
}

static void test_oracle_gcm(void **state) {
    (void)state;
    if (!have_lib_gcm())
        skip();
    oracle_run(TG_SRTP_AEAD_AES_128_GCM, 0);
}

static void test_oracle_mki(void **state) {
    (void)state;
    for (size_t i = 0; i < NUM_SUITES; i++) {
        oracle_run(kSuites[i], 1);
        oracle_run(kSuites[i], 4);
    }
}

// Negative cases --------------------------------------------------------------------------------

// lib_packets protects |num| RTP packets of SSRC 0x0a0b0c0d from |seq0| on with libsrtp2 into
// |pkts| (PKT_MAX bytes each), their lengths in |lens|, and the plain ones into |plain|.
static void lib_packets(const struct tg_srtp_params *p, uint16_t seq0, int num, uint8_t *pkts,
                        size_t *lens, uint8_t *plain, size_t *plain_lens) {
    srtp_t tx = lib_new(p, 1);
    assert_non_null(tx);
    for (int i = 0; i < num; i++) {
        uint8_t *pkt = pkts + (size_t)i * PKT_MAX;
        lens[i] = make_rtp(pkt, (uint16_t)(seq0 + i), 0x0a0b0c0d, 1, i % 2 ? 1 : -1, 160, 0);
        if (plain) {
            memcpy(plain + (size_t)i * PKT_MAX, pkt, lens[i]);
            plain_lens[i] = lens[i];
        }
        assert_true(lib_protect(tx, p, pkt, &lens[i], 0));
    }
    srtp_dealloc(tx);
}

// deliver unprotects a copy of packet |i| and returns the status.
static enum tg_srtp_status deliver(struct tg_srtp *rx, const uint8_t *pkts, const size_t *lens,
                                   int i) {
    uint8_t buf[PKT_MAX];
    size_t n = 0;
    memcpy(buf, pkts + (size_t)i * PKT_MAX, lens[i]);
    return tg_srtp_unprotect(rx, buf, lens[i], &n);
}

static void replay_run(enum tg_srtp_suite suite) {
    if (oracle_missing(suite))
        return;
    struct tg_srtp_params p = fixed_params(suite, 0);
    enum { NUM = 110 };
    uint8_t *pkts = malloc((size_t)NUM * PKT_MAX);
    size_t lens[NUM];
    assert_non_null(pkts);
    lib_packets(&p, 100, NUM, pkts, lens, NULL, NULL);
    struct tg_srtp *rx = tg_srtp_new(&p, 0);
    for (int i = 0; i < 30; i++) {
        if (i != 5)
            assert_int_equal(deliver(rx, pkts, lens, i), TG_SRTP_OK);
    }
    assert_int_equal(deliver(rx, pkts, lens, 29), TG_SRTP_REPLAY); // the same packet twice
    assert_int_equal(deliver(rx, pkts, lens, 100), TG_SRTP_OK);    // a jump ahead
    assert_int_equal(deliver(rx, pkts, lens, 5), TG_SRTP_REPLAY);  // older than the window
    assert_int_equal(deliver(rx, pkts, lens, 40), TG_SRTP_OK);     // late, within the window
    assert_int_equal(deliver(rx, pkts, lens, 40), TG_SRTP_REPLAY);
    assert_int_equal(deliver(rx, pkts, lens, 37), TG_SRTP_OK);     // 63 behind: the window's edge
    assert_int_equal(deliver(rx, pkts, lens, 36), TG_SRTP_REPLAY); // 64 behind: out
    assert_int_equal(deliver(rx, pkts, lens, 99), TG_SRTP_OK);
    assert_int_equal(deliver(rx, pkts, lens, 98), TG_SRTP_OK);
    assert_int_equal(deliver(rx, pkts, lens, 100), TG_SRTP_REPLAY);
    assert_int_equal(deliver(rx, pkts, lens, 109), TG_SRTP_OK);
    tg_srtp_free(rx);
    free(pkts);
}

static void test_replay(void **state) {
    (void)state;
    for (size_t i = 0; i < NUM_SUITES; i++)
        replay_run(kSuites[i]);
}

// Around the rollover: late packets of the old roll after the new one began, in any order the
// window allows, decrypt to the original.
static void rollover_run(enum tg_srtp_suite suite) {
    if (oracle_missing(suite))
        return;
    struct tg_srtp_params p = fixed_params(suite, 0);
    enum { NUM = 20 };
    uint8_t *pkts = malloc((size_t)NUM * PKT_MAX), *plain = malloc((size_t)NUM * PKT_MAX);
    size_t lens[NUM], plain_lens[NUM];
    assert_non_null(pkts);
    assert_non_null(plain);
    lib_packets(&p, 65530, NUM, pkts, lens, plain, plain_lens); // 65530..65535, 0..13
    struct tg_srtp *rx = tg_srtp_new(&p, 0);
    static const int order[] = {0, 1, 2, 4, 5, 7, 6, 8, 3, 9, 12, 11, 10, 19, 13};
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        int i = order[k];
        uint8_t buf[PKT_MAX];
        size_t n = 0;
        memcpy(buf, pkts + (size_t)i * PKT_MAX, lens[i]);
        assert_int_equal(tg_srtp_unprotect(rx, buf, lens[i], &n), TG_SRTP_OK);
        assert_int_equal(n, plain_lens[i]);
        assert_memory_equal(buf, plain + (size_t)i * PKT_MAX, n);
    }
    assert_int_equal(deliver(rx, pkts, lens, 5), TG_SRTP_REPLAY); // 65535, roll 0
    assert_int_equal(deliver(rx, pkts, lens, 6), TG_SRTP_REPLAY); // 0, roll 1
    assert_int_equal(deliver(rx, pkts, lens, 14), TG_SRTP_OK);
    tg_srtp_free(rx);
    free(pkts);
    free(plain);
}

static void test_rollover(void **state) {
    (void)state;
    for (size_t i = 0; i < NUM_SUITES; i++)
        rollover_run(kSuites[i]);
}

// flip_run flips every bit of a genuine SRTP (or SRTCP) packet in turn, on a receiver that
// has seen the packet before it: each must fail, and none may move the state (the genuine
// packet passes afterwards, and the earlier one is still a replay). Then every truncation, in a
// buffer of exactly its length (ASan sees any read past it), must fail too.
static void flip_run(enum tg_srtp_suite suite, uint8_t mki_len, int rtcp) {
    if (oracle_missing(suite))
        return;
    struct tg_srtp_params p = fixed_params(suite, mki_len);
    srtp_t tx = lib_new(&p, 1);
    struct tg_srtp *rx = tg_srtp_new(&p, 0);
    uint8_t first[PKT_MAX], pkt[PKT_MAX], buf[PKT_MAX];
    size_t first_len = rtcp ? make_rtcp(first, 0x01020304, 1, 3)
                            : make_rtp(first, 4241, 0x01020304, 0, -1, 160, 0);
    size_t len =
        rtcp ? make_rtcp(pkt, 0x01020304, 2, 7) : make_rtp(pkt, 4242, 0x01020304, 2, 1, 160, 1);
    assert_true(lib_protect(tx, &p, first, &first_len, rtcp));
    assert_true(lib_protect(tx, &p, pkt, &len, rtcp));
    size_t n = 0;
    memcpy(buf, first, first_len);
    enum tg_srtp_status st = rtcp ? tg_srtcp_unprotect(rx, buf, first_len, &n)
                                  : tg_srtp_unprotect(rx, buf, first_len, &n);
    assert_int_equal(st, TG_SRTP_OK);
    for (size_t bit = 0; bit < len * 8; bit++) {
        memcpy(buf, pkt, len);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        st = rtcp ? tg_srtcp_unprotect(rx, buf, len, &n) : tg_srtp_unprotect(rx, buf, len, &n);
        if (st != TG_SRTP_AUTH_FAIL && st != TG_SRTP_BAD_PACKET)
            fail_msg("bit %zu of %zu: status %d", bit, len * 8, st);
    }
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *t = malloc(cut ? cut : 1);
        assert_non_null(t);
        memcpy(t, pkt, cut);
        st = rtcp ? tg_srtcp_unprotect(rx, t, cut, &n) : tg_srtp_unprotect(rx, t, cut, &n);
        if (st != TG_SRTP_AUTH_FAIL && st != TG_SRTP_BAD_PACKET)
            fail_msg("cut to %zu of %zu: status %d", cut, len, st);
        free(t);
    }
    memcpy(buf, pkt, len);
    st = rtcp ? tg_srtcp_unprotect(rx, buf, len, &n) : tg_srtp_unprotect(rx, buf, len, &n);
    assert_int_equal(st, TG_SRTP_OK);
    memcpy(buf, first, first_len);
    st = rtcp ? tg_srtcp_unprotect(rx, buf, first_len, &n)
              : tg_srtp_unprotect(rx, buf, first_len, &n);
    assert_int_equal(st, TG_SRTP_REPLAY);
    tg_srtp_free(rx);
    srtp_dealloc(tx);
}

static void test_flipped_bits_and_truncation(void **state) {
    (void)state;
    for (size_t i = 0; i < NUM_SUITES; i++) {
        for (int rtcp = 0; rtcp <= 1; rtcp++) {
            flip_run(kSuites[i], 0, rtcp);
            flip_run(kSuites[i], 2, rtcp);
        }
    }
}

// A packet under another MKI is refused; so is one whose tag belongs to another key.
static void test_foreign_mki_and_key(void **state) {
    (void)state;
    for (size_t i = 0; i < NUM_SUITES; i++) {
        struct tg_srtp_params p = fixed_params(kSuites[i], 2), other = p;
        other.mki = p.mki + 1;
        struct tg_srtp *tx = tg_srtp_new(&other, 1), *rx = tg_srtp_new(&p, 0);
        uint8_t pkt[PKT_MAX];
        size_t n = make_rtp(pkt, 1, 7, 0, -1, 160, 0);
        assert_int_equal(tg_srtp_protect(tx, pkt, n, sizeof(pkt), &n), TG_SRTP_OK);
        assert_int_equal(tg_srtp_unprotect(rx, pkt, n, &n), TG_SRTP_AUTH_FAIL);
        n = make_rtcp(pkt, 7, 1, 0);
        assert_int_equal(tg_srtcp_protect(tx, pkt, n, sizeof(pkt), &n), TG_SRTP_OK);
        assert_int_equal(tg_srtcp_unprotect(rx, pkt, n, &n), TG_SRTP_AUTH_FAIL);
        tg_srtp_free(tx);

        other = p;
        other.key[0] ^= 1;
        tx = tg_srtp_new(&other, 1);
        n = make_rtp(pkt, 1, 7, 0, -1, 160, 0);
        assert_int_equal(tg_srtp_protect(tx, pkt, n, sizeof(pkt), &n), TG_SRTP_OK);
        assert_int_equal(tg_srtp_unprotect(rx, pkt, n, &n), TG_SRTP_AUTH_FAIL);
        tg_srtp_free(tx);
        tg_srtp_free(rx);
    }
}

// Malformed plain packets, no room for the tag, the wrong direction.
static void test_bad_packets(void **state) {
    (void)state;
    struct tg_srtp_params p = fixed_params(TG_SRTP_AES_CM_128_HMAC_SHA1_80, 0);
    struct tg_srtp *tx = tg_srtp_new(&p, 1), *rx = tg_srtp_new(&p, 0);
    uint8_t pkt[PKT_MAX];
    size_t n = make_rtp(pkt, 1, 7, 0, -1, 20, 0), out = 0;
    pkt[0] = 0x40; // version 1
    assert_int_equal(tg_srtp_protect(tx, pkt, n, sizeof(pkt), &out), TG_SRTP_BAD_PACKET);
    n = make_rtp(pkt, 1, 7, 0, -1, 20, 0);
    pkt[0] |= 0x0f; // 15 CSRCs in a 32-byte packet
    assert_int_equal(tg_srtp_protect(tx, pkt, n, sizeof(pkt), &out), TG_SRTP_BAD_PACKET);
    n = make_rtp(pkt, 1, 7, 0, 1, 0, 0);
    pkt[15] = 2; // the extension claims 2 words, the packet holds 1
    assert_int_equal(tg_srtp_protect(tx, pkt, n, sizeof(pkt), &out), TG_SRTP_BAD_PACKET);
    n = make_rtp(pkt, 1, 7, 0, -1, 20, 0);
    assert_int_equal(tg_srtp_protect(tx, pkt, n, n + 9, &out), TG_SRTP_NO_SPACE);
    assert_int_equal(tg_srtp_protect(tx, pkt, n, n - 1, &out), TG_SRTP_NO_SPACE);
    assert_int_equal(tg_srtp_unprotect(tx, pkt, n, &out), TG_SRTP_BAD_PACKET);
    assert_int_equal(tg_srtp_protect(rx, pkt, n, sizeof(pkt), &out), TG_SRTP_BAD_PACKET);
    n = make_rtcp(pkt, 7, 0, 0);
    assert_int_equal(tg_srtcp_protect(tx, pkt, 7, sizeof(pkt), &out), TG_SRTP_BAD_PACKET);
    assert_int_equal(tg_srtcp_protect(tx, pkt, n, n + 13, &out), TG_SRTP_NO_SPACE);
    assert_int_equal(tg_srtcp_protect(rx, pkt, n, sizeof(pkt), &out), TG_SRTP_BAD_PACKET);
    assert_int_equal(tg_srtcp_unprotect(tx, pkt, n, &out), TG_SRTP_BAD_PACKET);
    tg_srtp_free(tx);
    tg_srtp_free(rx);
}

// SRTCP replay: the same packet twice, out of order within the window, too old.
static void test_srtcp_replay(void **state) {
    (void)state;
    for (size_t s = 0; s < NUM_SUITES; s++) {
        struct tg_srtp_params p = fixed_params(kSuites[s], 0);
        struct tg_srtp *tx = tg_srtp_new(&p, 1), *rx = tg_srtp_new(&p, 0);
        enum { NUM = 80 };
        static uint8_t pkts[NUM][128];
        size_t lens[NUM], n = 0;
        for (int i = 0; i < NUM; i++) {
            lens[i] = make_rtcp(pkts[i], 99, 1, (uint8_t)i);
            assert_int_equal(tg_srtcp_protect(tx, pkts[i], lens[i], sizeof(pkts[i]), &lens[i]),
                             TG_SRTP_OK);
        }
        static const struct {
            int i;
            enum tg_srtp_status want;
        } kSteps[] = {{0, TG_SRTP_OK},      {2, TG_SRTP_OK},     {1, TG_SRTP_OK},
                      {1, TG_SRTP_REPLAY},  {2, TG_SRTP_REPLAY}, {75, TG_SRTP_OK},
                      {10, TG_SRTP_REPLAY}, {12, TG_SRTP_OK},    {12, TG_SRTP_REPLAY},
                      {11, TG_SRTP_REPLAY}, {79, TG_SRTP_OK},    {75, TG_SRTP_REPLAY}};
        for (size_t k = 0; k < sizeof(kSteps) / sizeof(kSteps[0]); k++) {
            uint8_t buf[128];
            memcpy(buf, pkts[kSteps[k].i], lens[kSteps[k].i]);
            assert_int_equal(tg_srtcp_unprotect(rx, buf, lens[kSteps[k].i], &n), kSteps[k].want);
        }
        tg_srtp_free(tx);
        tg_srtp_free(rx);
    }
}

// More SSRCs than TG_SRTP_MAX_SSRC: the least recently used state is replaced, so its old
// packets pass again as a fresh stream, while the recent ones' replays are still caught.
static void test_ssrc_lru(void **state) {
    (void)state;
    struct tg_srtp_params p = fixed_params(TG_SRTP_AES_CM_128_HMAC_SHA1_80, 0);
    struct tg_srtp *tx = tg_srtp_new(&p, 1), *rx = tg_srtp_new(&p, 0);
    struct tg_srtp *tx2 = tg_srtp_new(&p, 1);
    enum { NUM = TG_SRTP_MAX_SSRC + 1 };
    uint8_t pkts[NUM][256];
    size_t lens[NUM], n = 0;
    for (int i = 0; i < NUM; i++) {
        lens[i] = make_rtp(pkts[i], 10, 1000 + (uint32_t)i, 0, -1, 100, 0);
        if (i == NUM - 1) {
            // A protecting context never forgets a source (it would reuse keystream when the
            // source came back): the fifth is refused, and another context protects it.
            uint8_t copy[256];
            memcpy(copy, pkts[i], lens[i]);
            assert_int_equal(tg_srtp_protect(tx, copy, lens[i], sizeof(copy), &n),
                             TG_SRTP_BAD_PACKET);
            assert_int_equal(tg_srtp_protect(tx2, pkts[i], lens[i], sizeof(pkts[i]), &lens[i]),
                             TG_SRTP_OK);
            continue;
        }
        assert_int_equal(tg_srtp_protect(tx, pkts[i], lens[i], sizeof(pkts[i]), &lens[i]),
                         TG_SRTP_OK);
    }
    uint8_t buf[256];
    for (int i = 0; i < NUM; i++) {
        memcpy(buf, pkts[i], lens[i]);
        assert_int_equal(tg_srtp_unprotect(rx, buf, lens[i], &n), TG_SRTP_OK);
    }
    memcpy(buf, pkts[NUM - 1], lens[NUM - 1]);
    assert_int_equal(tg_srtp_unprotect(rx, buf, lens[NUM - 1], &n), TG_SRTP_REPLAY);
    memcpy(buf, pkts[0], lens[0]);
    assert_int_equal(tg_srtp_unprotect(rx, buf, lens[0], &n), TG_SRTP_OK); // evicted, fresh
    tg_srtp_free(tx);
    tg_srtp_free(tx2);
    tg_srtp_free(rx);
}

// Key uniqueness: tlsgate's own keys (one per direction and exchange, tg_srtp_params_random)
// never repeat: 4096 per suite, key and salt, all distinct, none all-zero.
static int cmp_keysalt(const void *a, const void *b) {
    return memcmp(a, b, TG_SRTP_KEY_LEN + TG_SRTP_SALT_MAX);
}

static void test_random_keys_unique(void **state) {
    (void)state;
    enum { N = 4096, W = TG_SRTP_KEY_LEN + TG_SRTP_SALT_MAX };
    static uint8_t ks[N][W];
    static const uint8_t zero[W];
    for (int suite = 1; suite < TG_SRTP_SUITE_NUM; suite++) {
        memset(ks, 0, sizeof(ks));
        for (int i = 0; i < N; i++) {
            struct tg_srtp_params p;
            assert_int_equal(tg_srtp_params_random(&p, (enum tg_srtp_suite)suite), 1);
            assert_int_equal(p.mki_len, 0);
            memcpy(ks[i], p.key, TG_SRTP_KEY_LEN);
            memcpy(ks[i] + TG_SRTP_KEY_LEN, p.salt, tg_srtp_salt_len(p.suite));
            assert_memory_not_equal(ks[i], zero, W);
        }
        qsort(ks, N, W, cmp_keysalt);
        for (int i = 1; i < N; i++)
            assert_memory_not_equal(ks[i - 1], ks[i], W);
    }
}

// A protecting context never encrypts one index twice: the duplicate, and a sequence restarted
// under the same SSRC, are refused; the stream goes on after them.
static void test_protect_never_reuses_an_index(void **state) {
    (void)state;
    struct tg_srtp_params p = fixed_params(TG_SRTP_AEAD_AES_128_GCM, 0);
    struct tg_srtp *tx = tg_srtp_new(&p, 1);
    uint8_t pkt[256];
    size_t len, n = 0;
    for (uint16_t seq = 100; seq < 110; seq++) {
        len = make_rtp(pkt, seq, 7, 0, -1, 100, 0);
        assert_int_equal(tg_srtp_protect(tx, pkt, len, sizeof(pkt), &n), TG_SRTP_OK);
    }
    len = make_rtp(pkt, 105, 7, 0, -1, 100, 0);
    assert_int_equal(tg_srtp_protect(tx, pkt, len, sizeof(pkt), &n), TG_SRTP_REPLAY);
    len = make_rtp(pkt, 100, 7, 0, -1, 100, 0); // restarted from the beginning
    assert_int_equal(tg_srtp_protect(tx, pkt, len, sizeof(pkt), &n), TG_SRTP_REPLAY);
    len = make_rtp(pkt, 110, 7, 0, -1, 100, 0);
    assert_int_equal(tg_srtp_protect(tx, pkt, len, sizeof(pkt), &n), TG_SRTP_OK);
    tg_srtp_free(tx);
}

static int group_setup(void **state) {
    (void)state;
    return srtp_init() == srtp_err_status_ok ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    srtp_shutdown();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_names),
        cmocka_unit_test(test_protect_never_reuses_an_index),
        cmocka_unit_test(test_random_keys_unique),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_rfc3711_b3_kdf),
        cmocka_unit_test(test_rfc3711_b2_keystream),
        cmocka_unit_test(test_rfc7714_rtp),
        cmocka_unit_test(test_rfc7714_rtcp),
        cmocka_unit_test(test_oracle_cm80),
        cmocka_unit_test(test_oracle_cm32),
        cmocka_unit_test(test_oracle_gcm),
        cmocka_unit_test(test_oracle_mki),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_rollover),
        cmocka_unit_test(test_flipped_bits_and_truncation),
        cmocka_unit_test(test_foreign_mki_and_key),
        cmocka_unit_test(test_bad_packets),
        cmocka_unit_test(test_srtcp_replay),
        cmocka_unit_test(test_ssrc_lru),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
