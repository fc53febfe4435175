// The SRTP transform: protect and unprotect of a 172-byte RTP packet (12-byte header, 160 bytes
// of G.711, 20 ms) for each suite, tlsgate's proxy/srtp.c beside libsrtp2 (Debian's, on NSS),
// and the primitives proxy/srtp.c chose between (HMAC-SHA1 from precomputed states or a copied
// HMAC_CTX; AES-CTR through AES_ctr128_encrypt or EVP).
//
// Every iteration copies the packet into the work buffer first (both sides alike): protect
// works in place, and unprotect needs a packet not yet seen. The unprotect runs cycle through
// UNPROTECT_RING genuine packets and make a fresh receiver (timer paused) when the ring is used
// up, so the replay window never refuses one.

#include <stdio.h>
#include <string.h>

#include <openssl/aes.h>
#include <openssl/cipher.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <srtp2/srtp.h>

#include "bench_micro.h"
#include "tg_bench.h"
#include "tlsgate/srtp.h"

#define RTP_LEN 172
#define PKT_CAP 256
#define UNPROTECT_RING 1024

struct srtp_case {
    struct tg_srtp_params p;
    const char *name;
};

static struct srtp_case g_cases[3];
static uint8_t g_ring[UNPROTECT_RING][PKT_CAP]; // SRTP packets of the case being measured
static size_t g_ring_len[UNPROTECT_RING];

static void make_rtp(uint8_t *pkt, uint16_t seq) {
    memset(pkt, 0, RTP_LEN);
    pkt[0] = 0x80;
    pkt[1] = 0x08;
    pkt[2] = (uint8_t)(seq >> 8);
    pkt[3] = (uint8_t)seq;
    pkt[8] = 0x12;
    pkt[9] = 0x34;
    pkt[10] = 0x56;
    pkt[11] = 0x78;
    for (int i = 12; i < RTP_LEN; i++)
        pkt[i] = (uint8_t)(0xd5 ^ i);
}

// lib_new makes a libsrtp2 session for |p|, outbound when |protect|. NULL when refused.
static srtp_t lib_new(const struct tg_srtp_params *p, int protect) {
    srtp_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    if (p->suite == TG_SRTP_AES_CM_128_HMAC_SHA1_80) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
    } else if (p->suite == TG_SRTP_AES_CM_128_HMAC_SHA1_32) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
    } else {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtcp);
    }
    uint8_t key[TG_SRTP_KEY_LEN + TG_SRTP_SALT_MAX];
    memcpy(key, p->key, TG_SRTP_KEY_LEN);
    memcpy(key + TG_SRTP_KEY_LEN, p->salt, tg_srtp_salt_len(p->suite));
    pol.key = key;
    pol.ssrc.type = protect ? ssrc_any_outbound : ssrc_any_inbound;
    pol.window_size = 128;
    srtp_t s = NULL;
    if (srtp_create(&s, &pol) != srtp_err_status_ok)
        return NULL;
    return s;
}

// fill_ring protects UNPROTECT_RING consecutive packets of |c| with tlsgate (whose output is
// libsrtp2's byte for byte, as tests/unit/test_srtp.c checks).
static int fill_ring(const struct srtp_case *c) {
    struct tg_srtp *tx = tg_srtp_new(&c->p, 1);
    if (!tx)
        return 0;
    int ok = 1;
    for (int i = 0; ok && i < UNPROTECT_RING; i++) {
        make_rtp(g_ring[i], (uint16_t)(1000 + i));
        ok = tg_srtp_protect(tx, g_ring[i], RTP_LEN, PKT_CAP, &g_ring_len[i]) == TG_SRTP_OK;
    }
    tg_srtp_free(tx);
    return ok;
}

static void bench_tg_protect(struct tg_bench_state *st, void *arg) {
    const struct srtp_case *c = arg;
    struct tg_srtp *tx = tg_srtp_new(&c->p, 1);
    uint8_t tmpl[RTP_LEN], pkt[PKT_CAP];
    make_rtp(tmpl, 0);
    uint16_t seq = 0;
    size_t n = 0;
    while (tg_bench_keep_running(st)) {
        memcpy(pkt, tmpl, RTP_LEN);
        pkt[2] = (uint8_t)(seq >> 8);
        pkt[3] = (uint8_t)seq++;
        if (tg_srtp_protect(tx, pkt, RTP_LEN, sizeof(pkt), &n) != TG_SRTP_OK) {
            tg_bench_skip_with_error(st, "protect failed");
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
    tg_srtp_free(tx);
}

static void bench_lib_protect(struct tg_bench_state *st, void *arg) {
    const struct srtp_case *c = arg;
    srtp_t tx = lib_new(&c->p, 1);
    if (!tx) {
        tg_bench_skip_with_error(st, "libsrtp2 refuses the suite");
        return;
    }
    uint8_t tmpl[RTP_LEN], pkt[PKT_CAP];
    make_rtp(tmpl, 0);
    uint16_t seq = 0;
    while (tg_bench_keep_running(st)) {
        memcpy(pkt, tmpl, RTP_LEN);
        pkt[2] = (uint8_t)(seq >> 8);
        pkt[3] = (uint8_t)seq++;
        int n = RTP_LEN;
        if (srtp_protect(tx, pkt, &n) != srtp_err_status_ok) {
            tg_bench_skip_with_error(st, "srtp_protect failed");
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
    srtp_dealloc(tx);
}

static void bench_tg_unprotect(struct tg_bench_state *st, void *arg) {
    const struct srtp_case *c = arg;
    if (!fill_ring(c)) {
        tg_bench_skip_with_error(st, "cannot make the packets");
        return;
    }
    struct tg_srtp *rx = tg_srtp_new(&c->p, 0);
    uint8_t pkt[PKT_CAP];
    size_t n = 0;
    int i = 0;
    while (tg_bench_keep_running(st)) {
        memcpy(pkt, g_ring[i], g_ring_len[i]);
        if (tg_srtp_unprotect(rx, pkt, g_ring_len[i], &n) != TG_SRTP_OK) {
            tg_bench_skip_with_error(st, "unprotect failed");
            break;
        }
        if (++i == UNPROTECT_RING) {
            tg_bench_pause_timing(st);
            tg_srtp_free(rx);
            rx = tg_srtp_new(&c->p, 0);
            i = 0;
            tg_bench_resume_timing(st);
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
    tg_srtp_free(rx);
}

static void bench_lib_unprotect(struct tg_bench_state *st, void *arg) {
    const struct srtp_case *c = arg;
    srtp_t rx = lib_new(&c->p, 0);
    if (!rx || !fill_ring(c)) {
        tg_bench_skip_with_error(st, "libsrtp2 refuses the suite");
        if (rx)
            srtp_dealloc(rx);
        return;
    }
    uint8_t pkt[PKT_CAP];
    int i = 0;
    while (tg_bench_keep_running(st)) {
        memcpy(pkt, g_ring[i], g_ring_len[i]);
        int n = (int)g_ring_len[i];
        if (srtp_unprotect(rx, pkt, &n) != srtp_err_status_ok) {
            tg_bench_skip_with_error(st, "srtp_unprotect failed");
            break;
        }
        if (++i == UNPROTECT_RING) {
            tg_bench_pause_timing(st);
            srtp_dealloc(rx);
            rx = lib_new(&c->p, 0);
            i = 0;
            tg_bench_resume_timing(st);
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
    srtp_dealloc(rx);
}

// The primitives, on one packet's worth of bytes ---------------------------------------------

static const uint8_t kKey[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18};

// bench_hmac_precomputed: SHA-1 states after the ipad and opad blocks, copied per packet (what
// proxy/srtp.c does).
static void bench_hmac_precomputed(struct tg_bench_state *st, void *arg) {
    (void)arg;
    uint8_t pad[SHA_CBLOCK], pkt[RTP_LEN + 4] = {0}, out[SHA_DIGEST_LENGTH];
    SHA_CTX inner, outer;
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < sizeof(kKey); i++)
        pad[i] ^= kKey[i];
    SHA1_Init(&inner);
    SHA1_Update(&inner, pad, sizeof(pad));
    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < sizeof(kKey); i++)
        pad[i] ^= kKey[i];
    SHA1_Init(&outer);
    SHA1_Update(&outer, pad, sizeof(pad));
    while (tg_bench_keep_running(st)) {
        SHA_CTX c = inner;
        SHA1_Update(&c, pkt, sizeof(pkt));
        SHA1_Final(out, &c);
        c = outer;
        SHA1_Update(&c, out, sizeof(out));
        SHA1_Final(out, &c);
        pkt[0] = out[0];
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)sizeof(pkt));
}

// bench_hmac_ctx_copy: an HMAC_CTX keyed once, copied per packet with HMAC_CTX_copy_ex.
static void bench_hmac_ctx_copy(struct tg_bench_state *st, void *arg) {
    (void)arg;
    uint8_t pkt[RTP_LEN + 4] = {0}, out[EVP_MAX_MD_SIZE];
    unsigned out_len = 0;
    HMAC_CTX keyed, c;
    HMAC_CTX_init(&keyed);
    HMAC_CTX_init(&c);
    if (!HMAC_Init_ex(&keyed, kKey, sizeof(kKey), EVP_sha1(), NULL)) {
        tg_bench_skip_with_error(st, "HMAC_Init_ex failed");
        return;
    }
    while (tg_bench_keep_running(st)) {
        if (!HMAC_CTX_copy_ex(&c, &keyed) || !HMAC_Update(&c, pkt, sizeof(pkt)) ||
            !HMAC_Final(&c, out, &out_len)) {
            tg_bench_skip_with_error(st, "HMAC failed");
            break;
        }
        pkt[0] = out[0];
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)sizeof(pkt));
    HMAC_CTX_cleanup(&c);
    HMAC_CTX_cleanup(&keyed);
}

// bench_aes_ctr128: AES_ctr128_encrypt over a payload, a fresh IV per packet.
static void bench_aes_ctr128(struct tg_bench_state *st, void *arg) {
    (void)arg;
    AES_KEY key;
    AES_set_encrypt_key(kKey, 128, &key);
    uint8_t payload[RTP_LEN - 12] = {0}, iv[AES_BLOCK_SIZE] = {0}, ecount[AES_BLOCK_SIZE];
    while (tg_bench_keep_running(st)) {
        unsigned num = 0;
        iv[13]++;
        uint8_t ctr[AES_BLOCK_SIZE];
        memcpy(ctr, iv, sizeof(ctr));
        AES_ctr128_encrypt(payload, payload, sizeof(payload), &key, ctr, ecount, &num);
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)sizeof(payload));
}

// bench_evp_aes_128_ctr: the same through EVP_CIPHER_CTX, keyed once, the IV set per packet.
static void bench_evp_aes_128_ctr(struct tg_bench_state *st, void *arg) {
    (void)arg;
    EVP_CIPHER_CTX ctx;
    EVP_CIPHER_CTX_init(&ctx);
    uint8_t payload[RTP_LEN - 12] = {0}, iv[AES_BLOCK_SIZE] = {0};
    if (!EVP_EncryptInit_ex(&ctx, EVP_aes_128_ctr(), NULL, kKey, iv)) {
        tg_bench_skip_with_error(st, "EVP_EncryptInit_ex failed");
        return;
    }
    while (tg_bench_keep_running(st)) {
        int n = 0;
        iv[13]++;
        if (!EVP_EncryptInit_ex(&ctx, NULL, NULL, NULL, iv) ||
            !EVP_EncryptUpdate(&ctx, payload, &n, payload, sizeof(payload))) {
            tg_bench_skip_with_error(st, "EVP_EncryptUpdate failed");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)sizeof(payload));
    EVP_CIPHER_CTX_cleanup(&ctx);
}

int tgb_register_srtp(void) {
    if (srtp_init() != srtp_err_status_ok)
        return 0;
    static const struct {
        enum tg_srtp_suite suite;
        const char *name;
    } kSuites[3] = {
        {TG_SRTP_AES_CM_128_HMAC_SHA1_80, "aes_cm_sha1_80"},
        {TG_SRTP_AES_CM_128_HMAC_SHA1_32, "aes_cm_sha1_32"},
        {TG_SRTP_AEAD_AES_128_GCM, "aead_aes_128_gcm"},
    };
    char name[96];
    int ok = 1;
    for (int i = 0; ok && i < 3; i++) {
        struct srtp_case *c = &g_cases[i];
        c->name = kSuites[i].name;
        ok = tg_srtp_params_random(&c->p, kSuites[i].suite);
        static const struct {
            const char *what;
            tg_bench_fn fn;
        } kRuns[4] = {
            {"protect/tlsgate", bench_tg_protect},
            {"protect/libsrtp2", bench_lib_protect},
            {"unprotect/tlsgate", bench_tg_unprotect},
            {"unprotect/libsrtp2", bench_lib_unprotect},
        };
        for (int r = 0; ok && r < 4; r++) {
            snprintf(name, sizeof(name), "srtp/%s/%s", kRuns[r].what, c->name);
            ok = tg_bench_register(name, kRuns[r].fn, c);
        }
    }
    return ok &&
           tg_bench_register("srtp/hmac_sha1_precomputed/176", bench_hmac_precomputed, NULL) &&
           tg_bench_register("srtp/hmac_sha1_ctx_copy/176", bench_hmac_ctx_copy, NULL) &&
           tg_bench_register("srtp/aes_ctr128_encrypt/160", bench_aes_ctr128, NULL) &&
           tg_bench_register("srtp/evp_aes_128_ctr/160", bench_evp_aes_128_ctr, NULL);
}
