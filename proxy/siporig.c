// SIP origins, sealed: the tg-orig that hides a Contact URI from the far side (AES-128-GCM-SIV,
// base64url), the flow token in our Via branch (SipHash-2-4 MAC) and the keys both are made
// under. See include/tlsgate/siporig.h.
#include "tlsgate/siporig.h"

#include "tlsgate/cursor.h"
#include "tlsgate/siprw.h"

#include <string.h>

#include <openssl/aead.h>
#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/siphash.h>

// ---- keys ------------------------------------------------------------------------------------

static uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

int tg_sip_derive_keys(struct tg_sip_rw_cfg *cfg, const uint8_t key[16]) {
    static const char salt[] = "tlsgate sip";
    static const char info[] = "flow token, transaction hash, tg-orig nonce, tg-orig aead";
    // One instance secret, one key per use: slices of one HKDF output.
    uint8_t okm[64];
    if (!HKDF(okm, sizeof(okm), EVP_sha256(), key, 16, (const uint8_t *)salt, sizeof(salt) - 1,
              (const uint8_t *)info, sizeof(info) - 1))
        return 0;
    cfg->key[0] = load64(okm);
    cfg->key[1] = load64(okm + 8);
    cfg->txh_key[0] = load64(okm + 16);
    cfg->txh_key[1] = load64(okm + 24);
    cfg->nonce_key[0] = load64(okm + 32);
    cfg->nonce_key[1] = load64(okm + 40);
    memcpy(cfg->seal_key, okm + 48, sizeof(cfg->seal_key));
    memset(okm, 0, sizeof(okm));
    return 1;
}

// ---- flow token ------------------------------------------------------------------------------

#define TOKEN_RAW 13 // version|side, worker, slot (3), gen (4), txh (4)
#define TOKEN_MAC 8
#define TOKEN_VERSION 0x10
static const char k_hex[] = "0123456789abcdef";

void tg_sip_flow_encode(const struct tg_sip_rw_cfg *cfg, char out[TG_SIP_TOKEN_LEN],
                        const struct tg_sip_flow *flow, uint32_t txh) {
    uint8_t raw[TOKEN_RAW + TOKEN_MAC];
    raw[0] = (uint8_t)(TOKEN_VERSION | (flow->side & 1));
    raw[1] = flow->worker;
    raw[2] = (uint8_t)(flow->slot >> 16);
    raw[3] = (uint8_t)(flow->slot >> 8);
    raw[4] = (uint8_t)flow->slot;
    for (int i = 0; i < 4; i++) {
        raw[5 + i] = (uint8_t)(flow->gen >> (24 - 8 * i));
        raw[9 + i] = (uint8_t)(txh >> (24 - 8 * i));
    }
    uint64_t mac = SIPHASH_24(cfg->key, raw, TOKEN_RAW);
    for (int i = 0; i < TOKEN_MAC; i++)
        raw[TOKEN_RAW + i] = (uint8_t)(mac >> (56 - 8 * i));
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = k_hex[raw[i] >> 4];
        out[2 * i + 1] = k_hex[raw[i] & 15];
    }
}

static int hex_val(int ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tg_ascii_lower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

int tg_sip_flow_decode(const struct tg_sip_rw_cfg *cfg, struct tg_sip_flow *out_flow,
                       const char *tok, size_t tok_len) {
    uint8_t raw[TOKEN_RAW + TOKEN_MAC];
    if (tok_len != TG_SIP_TOKEN_LEN)
        return 0;
    for (size_t i = 0; i < sizeof(raw); i++) {
        int hi = hex_val((unsigned char)tok[2 * i]), lo = hex_val((unsigned char)tok[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    if ((raw[0] & 0xf0) != TOKEN_VERSION || (raw[0] & 0x0e) != 0)
        return 0;
    uint64_t mac = SIPHASH_24(cfg->key, raw, TOKEN_RAW), got = 0;
    for (int i = 0; i < TOKEN_MAC; i++)
        got = got << 8 | raw[TOKEN_RAW + i];
    // Constant time is not needed for a 64-bit MAC checked once per response, but cheap.
    if ((mac ^ got) != 0)
        return 0;
    out_flow->side = raw[0] & 1;
    out_flow->worker = raw[1];
    out_flow->slot = (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 8 | raw[4];
    out_flow->gen =
        (uint32_t)raw[5] << 24 | (uint32_t)raw[6] << 16 | (uint32_t)raw[7] << 8 | raw[8];
    return 1;
}

// ---- base64url (RFC 4648 section 5, no padding) ----------------------------------------------

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_val(int ch) {
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

// b64_len is the length of the base64url text of |n| bytes.
static size_t b64_len(size_t n) {
    return (n * 8 + 5) / 6;
}

// b64_encode writes the base64url text of |n| bytes at |in| to |out| (b64_len(n) bytes).
static void b64_encode(char *out, const uint8_t *in, size_t n) {
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[k++] = k_b64[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[k++] = k_b64[(acc << (6 - bits)) & 63];
}

// b64_decode decodes the base64url text |in| (|n| bytes) into |out| (|out_cap| bytes).
// Returns 0 for anything but the canonical encoding of some bytes (unused bits zero).
static int b64_decode(uint8_t *out, size_t out_cap, size_t *out_len, const uint8_t *in, size_t n) {
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    if (n % 4 == 1 || n * 6 / 8 > out_cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(in[i]);
        if (v < 0)
            return 0;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0)
        return 0;
    *out_len = k;
    return 1;
}

// ---- tg-orig: the original URI, sealed -------------------------------------------------------

#define SEAL_NONCE 12
#define SEAL_TAG 16

static int is_digit(int ch) {
    return ch >= '0' && ch <= '9';
}

static int is_alpha(int ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

int tg_sip_sealable(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && (is_alpha(p[i]) ||
                     (i > 0 && (is_digit(p[i]) || p[i] == '+' || p[i] == '-' || p[i] == '.'))))
        i++;
    if (i == 0 || i + 1 >= n || p[i] != ':')
        return 0;
    for (size_t k = 0; k < n; k++) {
        if (p[k] <= 0x20 || p[k] >= 0x7f || p[k] == '<' || p[k] == '>' || p[k] == '"')
            return 0;
    }
    return 1;
}

size_t tg_sip_sealed_len(size_t uri_len) {
    return b64_len(uri_len + TG_SIP_SEAL_OVERHEAD);
}

// seal_ad writes the associated data of a value sealed toward |side|: what it is for and the
// side that will see it, so it opens only as a tg-orig arriving from that side.
static size_t seal_ad(uint8_t ad[32], enum tg_sip_side side) {
    static const char purpose[] = "tlsgate tg-orig v1";
    memcpy(ad, purpose, sizeof(purpose) - 1);
    ad[sizeof(purpose) - 1] = (uint8_t)side;
    return sizeof(purpose);
}

static int aead_init(EVP_AEAD_CTX *ctx, const struct tg_sip_rw_cfg *cfg) {
    return EVP_AEAD_CTX_init(ctx, EVP_aead_aes_128_gcm_siv(), cfg->seal_key, sizeof(cfg->seal_key),
                             SEAL_TAG, NULL);
}

int tg_sip_seal_uri(const struct tg_sip_rw_cfg *cfg, char *out, size_t out_cap, size_t *out_len,
                    enum tg_sip_side toward, const uint8_t *uri, size_t uri_len) {
    uint8_t raw[TG_SIP_SEAL_MAX_URI + TG_SIP_SEAL_OVERHEAD], ad[32];
    size_t raw_len = uri_len + TG_SIP_SEAL_OVERHEAD;
    *out_len = 0;
    if (uri_len > TG_SIP_SEAL_MAX_URI || !tg_sip_sealable(uri, uri_len) ||
        b64_len(raw_len) > out_cap)
        return 0;
    size_t ad_len = seal_ad(ad, toward);
    // The nonce is a keyed hash of the side and the URI: one URI sealed toward one side is
    // always the same value (a registrar matches a refreshed binding by its Contact URI), and
    // AES-GCM-SIV reveals no more than that equality when a nonce repeats.
    memcpy(raw, ad, ad_len);
    memcpy(raw + ad_len, uri, uri_len);
    uint64_t h1 = SIPHASH_24(cfg->nonce_key, raw, ad_len + uri_len);
    raw[0] ^= 0x80; // a second, independent hash for the last 4 bytes
    uint64_t h2 = SIPHASH_24(cfg->nonce_key, raw, ad_len + uri_len);
    memcpy(raw, &h1, 8);
    memcpy(raw + 8, &h2, SEAL_NONCE - 8);
    EVP_AEAD_CTX ctx;
    size_t n = 0;
    int ok = aead_init(&ctx, cfg) &&
             EVP_AEAD_CTX_seal(&ctx, raw + SEAL_NONCE, &n, raw_len - SEAL_NONCE, raw, SEAL_NONCE,
                               uri, uri_len, ad, ad_len) &&
             n == uri_len + SEAL_TAG;
    EVP_AEAD_CTX_cleanup(&ctx);
    if (!ok)
        return 0;
    b64_encode(out, raw, raw_len);
    *out_len = b64_len(raw_len);
    return 1;
}

int tg_sip_open_uri(const struct tg_sip_rw_cfg *cfg, uint8_t *out, size_t out_cap, size_t *out_len,
                    enum tg_sip_side from, const char *val, size_t val_len) {
    uint8_t ad[32];
    size_t raw_len = 0, n = 0;
    *out_len = 0;
    if (!b64_decode(out, out_cap, &raw_len, (const uint8_t *)val, val_len) ||
        raw_len < TG_SIP_SEAL_OVERHEAD + 3)
        return 0;
    size_t ad_len = seal_ad(ad, from);
    EVP_AEAD_CTX ctx;
    int ok = aead_init(&ctx, cfg) &&
             EVP_AEAD_CTX_open(&ctx, out + SEAL_NONCE, &n, raw_len - SEAL_NONCE, out, SEAL_NONCE,
                               out + SEAL_NONCE, raw_len - SEAL_NONCE, ad, ad_len);
    EVP_AEAD_CTX_cleanup(&ctx);
    if (!ok)
        return 0;
    memmove(out, out + SEAL_NONCE, n);
    if (!tg_sip_sealable(out, n)) // tlsgate seals no other; checked again all the same
        return 0;
    *out_len = n;
    return 1;
}
