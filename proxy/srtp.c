// SRTP and SRTCP (RFC 3711, RFC 7714) on BoringSSL: the key derivation, the packet transforms
// and the per-SSRC replay state. No I/O, no allocation after tg_srtp_new.
//
// Cost notes (measured in bench/micro/bench_srtp.c): HMAC-SHA1 runs from the inner and outer
// SHA-1 states computed once per context (a struct copy per packet, no HMAC_CTX set-up), AES-CM
// on AES_ctr128_encrypt (BoringSSL's AES-NI path), AES-GCM on EVP_AEAD_CTX in place.
#include "tlsgate/srtp.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/aead.h>
#include <openssl/aes.h>
#include <openssl/crypto.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define RTP_HDR_MIN 12
#define RTCP_HDR_LEN 8
#define SRTCP_INDEX_LEN 4
#define SHA1_LEN 20
#define AUTH_KEY_LEN 20
#define GCM_TAG_LEN 16
#define GCM_NONCE_LEN 12
#define REPLAY_WINDOW 64
#define SRTCP_INDEX_MASK 0x7fffffffu
#define SRTCP_E_BIT 0x80000000u

// The KDF labels of RFC 3711 4.3.2.
enum {
    LABEL_RTP_KEY = 0,
    LABEL_RTP_AUTH,
    LABEL_RTP_SALT,
    LABEL_RTCP_KEY,
    LABEL_RTCP_AUTH,
    LABEL_RTCP_SALT
};

// hmac_sha1 is HMAC-SHA1 with its key already absorbed: the states after the ipad and opad
// blocks. A packet's MAC copies them (two struct copies) instead of rehashing the key.
struct hmac_sha1 {
    SHA_CTX inner;
    SHA_CTX outer;
};

// keys are the session keys of one of SRTP and SRTCP, ready to use.
struct keys {
    AES_KEY aes;          // AES-CM suites
    struct hmac_sha1 mac; // AES-CM suites
    EVP_AEAD_CTX gcm;     // AEAD_AES_128_GCM
    uint8_t salt[TG_SRTP_SALT_MAX];
};

// stream is the state of one SSRC: RTP's rollover counter, highest sequence number and replay
// window (bit i: highest index - i was received), SRTCP's index and window.
struct stream {
    uint64_t window;
    uint64_t rtcp_window;
    uint32_t ssrc;
    uint32_t roc;
    uint32_t rtcp_index; // protect: the last index used; unprotect: the highest received
    uint32_t last_used;  // the context's tick when last used: the least recent is replaced
    uint16_t seq;
    uint8_t in_use;
    uint8_t rtp_seen;
    uint8_t rtcp_seen;
};

struct tg_srtp {
    struct keys rtp;
    struct keys rtcp;
    enum tg_srtp_suite suite;
    uint32_t tick;
    uint8_t protect;
    uint8_t gcm;
    uint8_t tag_len;
    uint8_t rtcp_tag_len;
    uint8_t salt_len;
    uint8_t mki_len;
    uint8_t mki[TG_SRTP_MKI_MAX];
    struct stream streams[TG_SRTP_MAX_SSRC];
};

// Suites ---------------------------------------------------------------------------------------

static const char *const kSuiteNames[TG_SRTP_SUITE_NUM] = {
    [TG_SRTP_NONE] = "",
    [TG_SRTP_AES_CM_128_HMAC_SHA1_80] = "AES_CM_128_HMAC_SHA1_80",
    [TG_SRTP_AES_CM_128_HMAC_SHA1_32] = "AES_CM_128_HMAC_SHA1_32",
    [TG_SRTP_AEAD_AES_128_GCM] = "AEAD_AES_128_GCM",
};

static int suite_ok(enum tg_srtp_suite s) {
    return s > TG_SRTP_NONE && s < TG_SRTP_SUITE_NUM;
}

const char *tg_srtp_suite_name(enum tg_srtp_suite s) {
    return suite_ok(s) ? kSuiteNames[s] : "";
}

enum tg_srtp_suite tg_srtp_suite_parse(const char *name, size_t len) {
    for (int s = TG_SRTP_NONE + 1; s < TG_SRTP_SUITE_NUM; s++) {
        if (strlen(kSuiteNames[s]) == len && memcmp(kSuiteNames[s], name, len) == 0)
            return (enum tg_srtp_suite)s;
    }
    return TG_SRTP_NONE;
}

size_t tg_srtp_salt_len(enum tg_srtp_suite s) {
    if (!suite_ok(s))
        return 0;
    return s == TG_SRTP_AEAD_AES_128_GCM ? 12 : 14;
}

size_t tg_srtp_tag_len(enum tg_srtp_suite s) {
    switch (s) {
    case TG_SRTP_AES_CM_128_HMAC_SHA1_80:
        return 10;
    case TG_SRTP_AES_CM_128_HMAC_SHA1_32:
        return 4;
    case TG_SRTP_AEAD_AES_128_GCM:
        return GCM_TAG_LEN;
    default:
        return 0;
    }
}

size_t tg_srtcp_tag_len(enum tg_srtp_suite s) {
    if (s == TG_SRTP_AES_CM_128_HMAC_SHA1_32)
        return 10; // RFC 4568 6.2.2: SRTCP keeps the 80-bit tag
    return tg_srtp_tag_len(s);
}

int tg_srtp_params_random(struct tg_srtp_params *p, enum tg_srtp_suite s) {
    memset(p, 0, sizeof(*p));
    if (!suite_ok(s))
        return 0;
    p->suite = s;
    if (!RAND_bytes(p->key, sizeof(p->key)) || !RAND_bytes(p->salt, tg_srtp_salt_len(s))) {
        OPENSSL_cleanse(p, sizeof(*p));
        return 0;
    }
    return 1;
}

// Byte order ----------------------------------------------------------------------------------

static uint16_t load16(const uint8_t *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t load32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void store32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void xor32(uint8_t *p, uint32_t v) {
    p[0] ^= (uint8_t)(v >> 24);
    p[1] ^= (uint8_t)(v >> 16);
    p[2] ^= (uint8_t)(v >> 8);
    p[3] ^= (uint8_t)v;
}

// Primitives ----------------------------------------------------------------------------------

static void hmac_init(struct hmac_sha1 *h, const uint8_t *key, size_t key_len) {
    uint8_t pad[SHA_CBLOCK];
    memset(pad, 0x36, sizeof(pad));
    for (size_t i = 0; i < key_len; i++)
        pad[i] ^= key[i];
    SHA1_Init(&h->inner);
    SHA1_Update(&h->inner, pad, sizeof(pad));
    memset(pad, 0x5c, sizeof(pad));
    for (size_t i = 0; i < key_len; i++)
        pad[i] ^= key[i];
    SHA1_Init(&h->outer);
    SHA1_Update(&h->outer, pad, sizeof(pad));
    OPENSSL_cleanse(pad, sizeof(pad));
}

// hmac_tag writes HMAC-SHA1(|a| || |b|) to |out|.
static void hmac_tag(const struct hmac_sha1 *h, uint8_t out[SHA1_LEN], const uint8_t *a,
                     size_t a_len, const uint8_t *b, size_t b_len) {
    SHA_CTX c = h->inner;
    SHA1_Update(&c, a, a_len);
    SHA1_Update(&c, b, b_len);
    SHA1_Final(out, &c);
    c = h->outer;
    SHA1_Update(&c, out, SHA1_LEN);
    SHA1_Final(out, &c);
}

// aes_cm XORs |len| bytes at |p| with the AES-CM keystream from |iv| (RFC 3711 4.1.1). The
// block counter is the IV's low 16 bits, zero at the start; a packet never has 2^16 blocks.
static void aes_cm(const AES_KEY *key, const uint8_t iv[AES_BLOCK_SIZE], uint8_t *p, size_t len) {
    uint8_t ctr[AES_BLOCK_SIZE], ecount[AES_BLOCK_SIZE];
    unsigned num = 0;
    memcpy(ctr, iv, sizeof(ctr));
    AES_ctr128_encrypt(p, p, len, key, ctr, ecount, &num);
}

int tg_srtp_kdf(uint8_t *out, size_t out_len, const uint8_t master_key[TG_SRTP_KEY_LEN],
                const uint8_t *master_salt, size_t salt_len, uint8_t label) {
    if (salt_len > TG_SRTP_SALT_MAX)
        return 0;
    // x = key_id XOR master_salt, key_id = label || r with r = 0 (rate 0): the label is byte 7
    // of the 14-byte salt. The IV is x * 2^16.
    uint8_t iv[AES_BLOCK_SIZE] = {0};
    memcpy(iv, master_salt, salt_len);
    iv[7] ^= label;
    AES_KEY key;
    if (AES_set_encrypt_key(master_key, 128, &key) != 0)
        return 0;
    memset(out, 0, out_len);
    aes_cm(&key, iv, out, out_len);
    OPENSSL_cleanse(&key, sizeof(key));
    return 1;
}

// Contexts ------------------------------------------------------------------------------------

// keys_init readies |k| for |s|'s suite from the session keys |sk|. Returns 1 on success.
static int keys_init(struct keys *k, const struct tg_srtp *s,
                     const struct tg_srtp_session_keys *sk) {
    memcpy(k->salt, sk->salt, s->salt_len);
    if (s->gcm)
        return EVP_AEAD_CTX_init(&k->gcm, EVP_aead_aes_128_gcm(), sk->key, TG_SRTP_KEY_LEN,
                                 GCM_TAG_LEN, NULL);
    if (AES_set_encrypt_key(sk->key, 128, &k->aes) != 0)
        return 0;
    hmac_init(&k->mac, sk->auth, AUTH_KEY_LEN);
    return 1;
}

// derive fills |rtp| and |rtcp| from the master key and salt of |p|.
static int derive(struct tg_srtp_session_keys *rtp, struct tg_srtp_session_keys *rtcp,
                  const struct tg_srtp_params *p) {
    size_t salt_len = tg_srtp_salt_len(p->suite);
    const uint8_t *mk = p->key, *ms = p->salt;
    return tg_srtp_kdf(rtp->key, sizeof(rtp->key), mk, ms, salt_len, LABEL_RTP_KEY) &&
           tg_srtp_kdf(rtp->auth, sizeof(rtp->auth), mk, ms, salt_len, LABEL_RTP_AUTH) &&
           tg_srtp_kdf(rtp->salt, salt_len, mk, ms, salt_len, LABEL_RTP_SALT) &&
           tg_srtp_kdf(rtcp->key, sizeof(rtcp->key), mk, ms, salt_len, LABEL_RTCP_KEY) &&
           tg_srtp_kdf(rtcp->auth, sizeof(rtcp->auth), mk, ms, salt_len, LABEL_RTCP_AUTH) &&
           tg_srtp_kdf(rtcp->salt, salt_len, mk, ms, salt_len, LABEL_RTCP_SALT);
}

static int params_ok(const struct tg_srtp_params *p) {
    if (!suite_ok(p->suite) || p->mki_len > TG_SRTP_MKI_MAX)
        return 0;
    return p->mki_len == 0 || p->mki_len == 4 || (p->mki >> (8 * p->mki_len)) == 0;
}

struct tg_srtp *tg_srtp_new_session(const struct tg_srtp_params *p,
                                    const struct tg_srtp_session_keys *rtp,
                                    const struct tg_srtp_session_keys *rtcp, int protect) {
    if (!params_ok(p))
        return NULL;
    struct tg_srtp *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    EVP_AEAD_CTX_zero(&s->rtp.gcm);
    EVP_AEAD_CTX_zero(&s->rtcp.gcm);
    s->suite = p->suite;
    s->protect = protect != 0;
    s->gcm = p->suite == TG_SRTP_AEAD_AES_128_GCM;
    s->tag_len = (uint8_t)tg_srtp_tag_len(p->suite);
    s->rtcp_tag_len = (uint8_t)tg_srtcp_tag_len(p->suite);
    s->salt_len = (uint8_t)tg_srtp_salt_len(p->suite);
    s->mki_len = p->mki_len;
    if (s->mki_len > 0) {
        uint8_t be[4];
        store32(be, p->mki);
        memcpy(s->mki, be + 4 - s->mki_len, s->mki_len);
    }
    if (!keys_init(&s->rtp, s, rtp) || !keys_init(&s->rtcp, s, rtcp)) {
        tg_srtp_free(s);
        return NULL;
    }
    return s;
}

struct tg_srtp *tg_srtp_new(const struct tg_srtp_params *p, int protect) {
    if (!params_ok(p))
        return NULL;
    struct tg_srtp_session_keys rtp, rtcp;
    struct tg_srtp *s = NULL;
    if (derive(&rtp, &rtcp, p))
        s = tg_srtp_new_session(p, &rtp, &rtcp, protect);
    OPENSSL_cleanse(&rtp, sizeof(rtp));
    OPENSSL_cleanse(&rtcp, sizeof(rtcp));
    return s;
}

void tg_srtp_free(struct tg_srtp *s) {
    if (!s)
        return;
    EVP_AEAD_CTX_cleanup(&s->rtp.gcm);
    EVP_AEAD_CTX_cleanup(&s->rtcp.gcm);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

// Per-SSRC state ------------------------------------------------------------------------------

static struct stream *stream_find(struct tg_srtp *s, uint32_t ssrc) {
    for (int i = 0; i < TG_SRTP_MAX_SSRC; i++) {
        if (s->streams[i].in_use && s->streams[i].ssrc == ssrc)
            return &s->streams[i];
    }
    return NULL;
}

// stream_take returns the state of |ssrc|, made fresh in a free or the least recently used slot
// when there is none, and marks it used now. A protecting context never replaces a state: an
// SSRC that came back after it would start again at ROC 0 (or SRTCP index 1) and encrypt new
// packets with keystream already used. It refuses the new SSRC instead (NULL).
static struct stream *stream_take(struct tg_srtp *s, uint32_t ssrc) {
    struct stream *st = stream_find(s, ssrc);
    if (!st && s->protect) {
        for (int i = 0; i < TG_SRTP_MAX_SSRC && !st; i++)
            if (!s->streams[i].in_use)
                st = &s->streams[i];
        if (!st)
            return NULL;
        memset(st, 0, sizeof(*st));
        st->in_use = 1;
        st->ssrc = ssrc;
    } else if (!st) {
        st = &s->streams[0];
        for (int i = 0; i < TG_SRTP_MAX_SSRC; i++) {
            struct stream *c = &s->streams[i];
            if (!c->in_use) {
                st = c;
                break;
            }
            if ((int32_t)(c->last_used - st->last_used) < 0)
                st = c;
        }
        memset(st, 0, sizeof(*st));
        st->in_use = 1;
        st->ssrc = ssrc;
    }
    st->last_used = ++s->tick;
    return st;
}

// replay_check answers whether |delta| (index - highest index) is new to |window|.
static int replay_fresh(uint64_t window, int64_t delta) {
    if (delta > 0)
        return 1;
    if (delta <= -REPLAY_WINDOW)
        return 0;
    return !(window & ((uint64_t)1 << -delta));
}

// replay_add records |delta| (as replay_fresh took it) in |*window|.
static void replay_add(uint64_t *window, int64_t delta) {
    if (delta <= 0) {
        *window |= (uint64_t)1 << -delta;
        return;
    }
    *window = delta >= REPLAY_WINDOW ? 1 : (*window << delta) | 1;
}

// rtp_index is RFC 3711 3.3.1's estimate of a packet's index from its |seq| and |st|: the
// rollover counter |*out_roc| and how far past the highest index it lies (|*out_delta|; <= 0
// for a late packet). With no state yet the packet starts the stream: ROC 0.
static void rtp_index(const struct stream *st, uint16_t seq, uint32_t *out_roc,
                      int64_t *out_delta) {
    if (!st || !st->rtp_seen) {
        *out_roc = 0;
        *out_delta = 1;
        return;
    }
    int64_t diff = (int64_t)seq - st->seq;
    int rel = 0;
    if (st->seq < 32768 && diff > 32768)
        rel = -1;
    else if (st->seq >= 32768 && diff < -32768)
        rel = 1;
    *out_roc = st->roc + (uint32_t)rel;
    *out_delta = (int64_t)rel * 65536 + diff;
}

static void rtp_commit(struct stream *st, uint16_t seq, uint32_t roc, int64_t delta) {
    if (!st->rtp_seen) {
        st->rtp_seen = 1;
        st->window = 1;
        st->roc = roc;
        st->seq = seq;
        return;
    }
    replay_add(&st->window, delta);
    if (delta > 0) {
        st->roc = roc;
        st->seq = seq;
    }
}

// Packet layout -------------------------------------------------------------------------------

// rtp_header_len returns the length of the RTP header at |pkt| (fixed part, CSRCs, extension),
// or 0 when |len| bytes do not hold it or it is not RTP version 2.
static size_t rtp_header_len(const uint8_t *pkt, size_t len) {
    if (len < RTP_HDR_MIN || (pkt[0] >> 6) != 2)
        return 0;
    size_t n = RTP_HDR_MIN + 4 * (size_t)(pkt[0] & 0x0f);
    if (pkt[0] & 0x10) {
        if (n + 4 > len)
            return 0;
        n += 4 + 4 * (size_t)load16(pkt + n + 2);
    }
    return n <= len ? n : 0;
}

static int rtcp_header_ok(const uint8_t *pkt, size_t len) {
    return len >= RTCP_HDR_LEN && (pkt[0] >> 6) == 2;
}

// cm_iv writes the AES-CM IV for |ssrc| and the 48-bit index |hi| << 16 | |lo| (RFC 3711 4.1.1:
// (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16)).
static void cm_iv(uint8_t iv[AES_BLOCK_SIZE], const struct keys *k, uint32_t ssrc, uint32_t hi,
                  uint16_t lo) {
    memcpy(iv, k->salt, 14);
    iv[14] = iv[15] = 0;
    xor32(iv + 4, ssrc);
    xor32(iv + 8, hi);
    iv[12] ^= (uint8_t)(lo >> 8);
    iv[13] ^= (uint8_t)lo;
}

// gcm_nonce writes the RFC 7714 8.1 / 9.1 nonce: 00 00 || SSRC || |mid| || |low| XOR salt, where
// SRTP has ROC || SEQ there and SRTCP 00 00 || 0 || index.
static void gcm_nonce(uint8_t nonce[GCM_NONCE_LEN], const struct keys *k, uint32_t ssrc,
                      uint32_t mid, uint16_t low) {
    nonce[0] = nonce[1] = 0;
    store32(nonce + 2, ssrc);
    store32(nonce + 6, mid);
    nonce[10] = (uint8_t)(low >> 8);
    nonce[11] = (uint8_t)low;
    for (int i = 0; i < GCM_NONCE_LEN; i++)
        nonce[i] ^= k->salt[i];
}

// SRTP ----------------------------------------------------------------------------------------

enum tg_srtp_status tg_srtp_protect(struct tg_srtp *s, uint8_t *pkt, size_t len, size_t cap,
                                    size_t *out_len) {
    if (!s->protect)
        return TG_SRTP_BAD_PACKET;
    size_t hdr = rtp_header_len(pkt, len);
    if (hdr == 0)
        return TG_SRTP_BAD_PACKET;
    if (cap < len || cap - len < (size_t)s->tag_len + s->mki_len)
        return TG_SRTP_NO_SPACE;
    uint16_t seq = load16(pkt + 2);
    uint32_t ssrc = load32(pkt + 8);
    struct stream *st = stream_take(s, ssrc);
    if (!st)
        return TG_SRTP_BAD_PACKET; // a fifth SSRC: see stream_take
    uint32_t roc;
    int64_t delta;
    rtp_index(st, seq, &roc, &delta);
    // An index already protected under this key would be encrypted with the same keystream
    // (a duplicate from the PBX, a sequence restarted under the same SSRC): never.
    if (st->rtp_seen && !replay_fresh(st->window, delta))
        return TG_SRTP_REPLAY;
    rtp_commit(st, seq, roc, delta);

    if (s->gcm) {
        uint8_t nonce[GCM_NONCE_LEN];
        size_t n = 0;
        gcm_nonce(nonce, &s->rtp, ssrc, roc, seq);
        if (!EVP_AEAD_CTX_seal(&s->rtp.gcm, pkt + hdr, &n, cap - hdr, nonce, sizeof(nonce),
                               pkt + hdr, len - hdr, pkt, hdr))
            return TG_SRTP_NO_SPACE;
        memcpy(pkt + hdr + n, s->mki, s->mki_len);
        *out_len = hdr + n + s->mki_len;
        return TG_SRTP_OK;
    }
    uint8_t iv[AES_BLOCK_SIZE], roc_be[4], tag[SHA1_LEN];
    cm_iv(iv, &s->rtp, ssrc, roc, seq);
    aes_cm(&s->rtp.aes, iv, pkt + hdr, len - hdr);
    store32(roc_be, roc);
    hmac_tag(&s->rtp.mac, tag, pkt, len, roc_be, sizeof(roc_be));
    memcpy(pkt + len, s->mki, s->mki_len);
    memcpy(pkt + len + s->mki_len, tag, s->tag_len);
    *out_len = len + s->mki_len + s->tag_len;
    return TG_SRTP_OK;
}

enum tg_srtp_status tg_srtp_unprotect(struct tg_srtp *s, uint8_t *pkt, size_t len,
                                      size_t *out_len) {
    size_t trailer = (size_t)s->tag_len + s->mki_len;
    if (s->protect || len < RTP_HDR_MIN + trailer)
        return TG_SRTP_BAD_PACKET;
    // GCM: header | ciphertext | tag | MKI. AES-CM: header | ciphertext | MKI | tag.
    size_t body = len - trailer; // header and payload, without tag and MKI
    size_t hdr = rtp_header_len(pkt, body);
    if (hdr == 0)
        return TG_SRTP_BAD_PACKET;
    const uint8_t *mki = s->gcm ? pkt + len - s->mki_len : pkt + body;
    if (s->mki_len > 0 && CRYPTO_memcmp(mki, s->mki, s->mki_len) != 0)
        return TG_SRTP_AUTH_FAIL;
    uint16_t seq = load16(pkt + 2);
    uint32_t ssrc = load32(pkt + 8);
    struct stream *st = stream_find(s, ssrc);
    uint32_t roc;
    int64_t delta;
    rtp_index(st, seq, &roc, &delta);

    if (s->gcm) {
        uint8_t nonce[GCM_NONCE_LEN];
        size_t n = 0;
        gcm_nonce(nonce, &s->rtp, ssrc, roc, seq);
        if (!EVP_AEAD_CTX_open(&s->rtp.gcm, pkt + hdr, &n, body + GCM_TAG_LEN - hdr, nonce,
                               sizeof(nonce), pkt + hdr, body + GCM_TAG_LEN - hdr, pkt, hdr))
            return TG_SRTP_AUTH_FAIL;
        if (st && !replay_fresh(st->window, delta))
            return TG_SRTP_REPLAY;
    } else {
        uint8_t roc_be[4], tag[SHA1_LEN];
        store32(roc_be, roc);
        hmac_tag(&s->rtp.mac, tag, pkt, body, roc_be, sizeof(roc_be));
        if (CRYPTO_memcmp(tag, pkt + len - s->tag_len, s->tag_len) != 0)
            return TG_SRTP_AUTH_FAIL;
        if (st && !replay_fresh(st->window, delta))
            return TG_SRTP_REPLAY;
        uint8_t iv[AES_BLOCK_SIZE];
        cm_iv(iv, &s->rtp, ssrc, roc, seq);
        aes_cm(&s->rtp.aes, iv, pkt + hdr, body - hdr);
    }
    if (!st)
        st = stream_take(s, ssrc);
    else
        st->last_used = ++s->tick;
    rtp_commit(st, seq, roc, delta);
    *out_len = body;
    return TG_SRTP_OK;
}

// SRTCP ---------------------------------------------------------------------------------------

enum tg_srtp_status tg_srtcp_protect(struct tg_srtp *s, uint8_t *pkt, size_t len, size_t cap,
                                     size_t *out_len) {
    if (!s->protect || !rtcp_header_ok(pkt, len))
        return TG_SRTP_BAD_PACKET;
    if (cap < len || cap - len < SRTCP_INDEX_LEN + (size_t)s->rtcp_tag_len + s->mki_len)
        return TG_SRTP_NO_SPACE;
    uint32_t ssrc = load32(pkt + 4);
    struct stream *st = stream_take(s, ssrc);
    if (!st)
        return TG_SRTP_BAD_PACKET; // a fifth SSRC: see stream_take
    st->rtcp_index = (st->rtcp_index + 1) & SRTCP_INDEX_MASK;
    uint32_t index = st->rtcp_index;
    uint8_t e_index[SRTCP_INDEX_LEN];
    store32(e_index, SRTCP_E_BIT | index);

    if (s->gcm) {
        // AAD: the first header and SSRC, then E|index (RFC 7714 9.2).
        uint8_t nonce[GCM_NONCE_LEN], aad[RTCP_HDR_LEN + SRTCP_INDEX_LEN];
        size_t n = 0;
        gcm_nonce(nonce, &s->rtcp, ssrc, 0, 0);
        xor32(nonce + 8, index);
        memcpy(aad, pkt, RTCP_HDR_LEN);
        memcpy(aad + RTCP_HDR_LEN, e_index, SRTCP_INDEX_LEN);
        if (!EVP_AEAD_CTX_seal(&s->rtcp.gcm, pkt + RTCP_HDR_LEN, &n, cap - RTCP_HDR_LEN, nonce,
                               sizeof(nonce), pkt + RTCP_HDR_LEN, len - RTCP_HDR_LEN, aad,
                               sizeof(aad)))
            return TG_SRTP_NO_SPACE;
        size_t end = RTCP_HDR_LEN + n;
        memcpy(pkt + end, e_index, SRTCP_INDEX_LEN);
        memcpy(pkt + end + SRTCP_INDEX_LEN, s->mki, s->mki_len);
        *out_len = end + SRTCP_INDEX_LEN + s->mki_len;
        return TG_SRTP_OK;
    }
    uint8_t iv[AES_BLOCK_SIZE], tag[SHA1_LEN];
    cm_iv(iv, &s->rtcp, ssrc, index >> 16, (uint16_t)index);
    aes_cm(&s->rtcp.aes, iv, pkt + RTCP_HDR_LEN, len - RTCP_HDR_LEN);
    memcpy(pkt + len, e_index, SRTCP_INDEX_LEN);
    hmac_tag(&s->rtcp.mac, tag, pkt, len + SRTCP_INDEX_LEN, NULL, 0);
    memcpy(pkt + len + SRTCP_INDEX_LEN, s->mki, s->mki_len);
    memcpy(pkt + len + SRTCP_INDEX_LEN + s->mki_len, tag, s->rtcp_tag_len);
    *out_len = len + SRTCP_INDEX_LEN + s->mki_len + s->rtcp_tag_len;
    return TG_SRTP_OK;
}

// srtcp_open_gcm checks and (when |encrypted|) decrypts the GCM SRTCP packet whose header,
// ciphertext and tag are the |end| bytes at |pkt|, E|index |e_index| after them. Returns 1 when
// the tag verifies; |*out_len| is the RTCP length.
static int srtcp_open_gcm(struct tg_srtp *s, uint8_t *pkt, size_t end, const uint8_t *e_index,
                          int encrypted, uint32_t ssrc, uint32_t index, size_t *out_len) {
    uint8_t nonce[GCM_NONCE_LEN];
    size_t n = 0;
    gcm_nonce(nonce, &s->rtcp, ssrc, 0, 0);
    xor32(nonce + 8, index);
    if (encrypted) {
        uint8_t aad[RTCP_HDR_LEN + SRTCP_INDEX_LEN];
        memcpy(aad, pkt, RTCP_HDR_LEN);
        memcpy(aad + RTCP_HDR_LEN, e_index, SRTCP_INDEX_LEN);
        if (!EVP_AEAD_CTX_open(&s->rtcp.gcm, pkt + RTCP_HDR_LEN, &n, end - RTCP_HDR_LEN, nonce,
                               sizeof(nonce), pkt + RTCP_HDR_LEN, end - RTCP_HDR_LEN, aad,
                               sizeof(aad)))
            return 0;
        *out_len = RTCP_HDR_LEN + n;
        return 1;
    }
    // E = 0: everything before the tag and E|index are the AAD, the tag alone the ciphertext.
    // The tag moves aside so that E|index can follow the packet and the AAD be contiguous.
    size_t plain = end - GCM_TAG_LEN;
    uint8_t tag[GCM_TAG_LEN], idx[SRTCP_INDEX_LEN];
    memcpy(tag, pkt + plain, GCM_TAG_LEN);
    memcpy(idx, e_index, SRTCP_INDEX_LEN);
    memcpy(pkt + plain, idx, SRTCP_INDEX_LEN);
    if (!EVP_AEAD_CTX_open(&s->rtcp.gcm, tag, &n, 0, nonce, sizeof(nonce), tag, GCM_TAG_LEN, pkt,
                           plain + SRTCP_INDEX_LEN))
        return 0;
    *out_len = plain;
    return 1;
}

// srtcp_open_cm checks the tag of the AES-CM SRTCP packet whose authenticated part (header,
// payload, E|index) is the |auth_len| bytes at |pkt|, then decrypts when |encrypted|.
static int srtcp_open_cm(struct tg_srtp *s, uint8_t *pkt, size_t auth_len, const uint8_t *tag,
                         int encrypted, uint32_t ssrc, uint32_t index) {
    uint8_t want[SHA1_LEN];
    hmac_tag(&s->rtcp.mac, want, pkt, auth_len, NULL, 0);
    if (CRYPTO_memcmp(want, tag, s->rtcp_tag_len) != 0)
        return 0;
    if (encrypted) {
        uint8_t iv[AES_BLOCK_SIZE];
        cm_iv(iv, &s->rtcp, ssrc, index >> 16, (uint16_t)index);
        aes_cm(&s->rtcp.aes, iv, pkt + RTCP_HDR_LEN, auth_len - SRTCP_INDEX_LEN - RTCP_HDR_LEN);
    }
    return 1;
}

enum tg_srtp_status tg_srtcp_unprotect(struct tg_srtp *s, uint8_t *pkt, size_t len,
                                       size_t *out_len) {
    // GCM: header | ciphertext | tag | E|index | MKI. AES-CM: header | ciphertext | E|index |
    // MKI | tag. Both carry at least the 8-byte header.
    size_t trailer = SRTCP_INDEX_LEN + (size_t)s->rtcp_tag_len + s->mki_len;
    if (s->protect || len < RTCP_HDR_LEN + trailer || !rtcp_header_ok(pkt, len))
        return TG_SRTP_BAD_PACKET;
    size_t e_at = s->gcm ? len - s->mki_len - SRTCP_INDEX_LEN
                         : len - s->rtcp_tag_len - s->mki_len - SRTCP_INDEX_LEN;
    const uint8_t *mki = pkt + e_at + SRTCP_INDEX_LEN;
    if (s->mki_len > 0 && CRYPTO_memcmp(mki, s->mki, s->mki_len) != 0)
        return TG_SRTP_AUTH_FAIL;
    uint32_t word = load32(pkt + e_at);
    uint32_t index = word & SRTCP_INDEX_MASK;
    int encrypted = (word & SRTCP_E_BIT) != 0;
    uint32_t ssrc = load32(pkt + 4);

    size_t n = e_at;
    if (s->gcm) {
        uint8_t e_index[SRTCP_INDEX_LEN];
        memcpy(e_index, pkt + e_at, SRTCP_INDEX_LEN);
        if (!srtcp_open_gcm(s, pkt, e_at, e_index, encrypted, ssrc, index, &n))
            return TG_SRTP_AUTH_FAIL;
    } else if (!srtcp_open_cm(s, pkt, e_at + SRTCP_INDEX_LEN, mki + s->mki_len, encrypted, ssrc,
                              index)) {
        return TG_SRTP_AUTH_FAIL;
    }
    struct stream *st = stream_find(s, ssrc);
    int64_t delta = st && st->rtcp_seen ? (int64_t)index - st->rtcp_index : 1;
    if (st && st->rtcp_seen && !replay_fresh(st->rtcp_window, delta))
        return TG_SRTP_REPLAY;
    st = stream_take(s, ssrc);
    if (!st->rtcp_seen) {
        st->rtcp_seen = 1;
        st->rtcp_window = 1;
        st->rtcp_index = index;
    } else {
        replay_add(&st->rtcp_window, delta);
        if (delta > 0)
            st->rtcp_index = index;
    }
    *out_len = n;
    return TG_SRTP_OK;
}
