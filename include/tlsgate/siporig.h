#ifndef TLSGATE_SIPORIG_H
#define TLSGATE_SIPORIG_H

#include <stddef.h>
#include <stdint.h>

// SIP origins, sealed: what the rewriter (siprw.h) writes into a message so that, when the far
// side sends it back, tlsgate learns where it came from, and the far side can neither read nor
// forge it. This module owns
//   - sealing internal URIs: a Contact URI of one side is hidden from the other behind ours,
//     the original sealed in ";tg-orig=" (AES-128-GCM-SIV, base64url), so the provider can
//     neither read the PBX's inside addresses nor forge a URI tlsgate would restore; and
//     opening it again when it comes back;
//   - the flow token in our Via branch: the connection a request arrived on, under a MAC, so a
//     response goes back on that connection and no other;
//   - the per-instance keys both are made under.
// No I/O; the keys and addresses come from a struct tg_sip_rw_cfg (siprw.h, which includes
// this header).

struct tg_sip_rw_cfg;

// tg_sip_side names the two sides tlsgate proxies between.
enum tg_sip_side { TG_SIP_SIDE_PROVIDER = 0, TG_SIP_SIDE_PBX = 1 };

// tg_sip_flow names a connection: what the flow token in our Via branch carries.
struct tg_sip_flow {
    uint32_t slot; // connection slot index on the worker (24 bits used)
    uint32_t gen;  // slot generation
    uint8_t worker;
    uint8_t side; // enum tg_sip_side the request arrived from
};

// TG_SIP_TOKEN_LEN is the length of a flow token (lower-case hex) in a Via branch, after
// the "z9hG4bK" magic cookie.
#define TG_SIP_TOKEN_LEN 42

// tg_sip_derive_keys fills the keys of |cfg| (key, txh_key, nonce_key, seal_key) from |key|
// (16 bytes, the instance secret): HKDF-SHA256, one output slice per use. Returns 1, or 0
// when the derivation failed (memory).
int tg_sip_derive_keys(struct tg_sip_rw_cfg *cfg, const uint8_t key[16]);

// tg_sip_flow_encode writes the flow token for |flow| and transaction hash |txh| (exactly
// TG_SIP_TOKEN_LEN bytes, not NUL-terminated) into |out|.
void tg_sip_flow_encode(const struct tg_sip_rw_cfg *cfg, char out[TG_SIP_TOKEN_LEN],
                        const struct tg_sip_flow *flow, uint32_t txh);

// tg_sip_flow_decode verifies the token |tok| (|tok_len| bytes) and fills |*out_flow|.
// Returns 1 when it is well-formed and its MAC verifies, 0 otherwise.
int tg_sip_flow_decode(const struct tg_sip_rw_cfg *cfg, struct tg_sip_flow *out_flow,
                       const char *tok, size_t tok_len);

// TG_SIP_SEAL_OVERHEAD is how many bytes sealing adds to a URI before base64url: the 12-byte
// nonce and the 16-byte tag.
#define TG_SIP_SEAL_OVERHEAD 28

// TG_SIP_SEAL_MAX_URI is the longest URI tlsgate seals; a Contact with a longer sip URI is
// TG_SIP_RW_TOO_LARGE (513).
#define TG_SIP_SEAL_MAX_URI 4096

// tg_sip_sealable says whether the |n| bytes at |p| (of any length) are a URI tlsgate seals
// and restores: "scheme:" then bytes that can stand between angle brackets and in a start
// line (%x21-7E but < > ").
int tg_sip_sealable(const uint8_t *p, size_t n);

// tg_sip_sealed_len returns the length of the tg-orig value that tg_sip_seal_uri makes of a
// URI of |uri_len| bytes.
size_t tg_sip_sealed_len(size_t uri_len);

// tg_sip_seal_uri writes the tg-orig value that hides |uri| (|uri_len| bytes) from side
// |toward| into |out| (|out_cap| bytes; base64url without padding of nonce || ciphertext ||
// tag, AES-128-GCM-SIV under cfg->seal_key, the side and the purpose as associated data; the
// nonce is a keyed hash of those and the URI, so one URI sealed toward one side always gives
// one value). |*out_len| receives its length. Returns 1, or 0 when |uri| is not one that
// tg_sip_open_uri would give back or is over TG_SIP_SEAL_MAX_URI, |out_cap| is too small, or
// the AEAD failed.
int tg_sip_seal_uri(const struct tg_sip_rw_cfg *cfg, char *out, size_t out_cap, size_t *out_len,
                    enum tg_sip_side toward, const uint8_t *uri, size_t uri_len);

// tg_sip_open_uri opens the tg-orig value |val| (|val_len| bytes) that arrived from side
// |from| into |out| (|out_cap| bytes, at least |val_len|), |*out_len| the URI's length.
// Returns 1 only for a value tg_sip_seal_uri made toward |from| under this configuration's
// key, unaltered, holding a URI ("scheme:" then bytes %x21-7E but < > "); 0 otherwise.
int tg_sip_open_uri(const struct tg_sip_rw_cfg *cfg, uint8_t *out, size_t out_cap, size_t *out_len,
                    enum tg_sip_side from, const char *val, size_t val_len);

#endif // TLSGATE_SIPORIG_H
