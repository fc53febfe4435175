#ifndef TLSGATE_SRTP_H
#define TLSGATE_SRTP_H

#include <stddef.h>
#include <stdint.h>

// SRTP and SRTCP (RFC 3711; AEAD_AES_128_GCM per RFC 7714) on BoringSSL's AES, HMAC-SHA1 and
// AES-GCM: the transform of the media fast path. Pure: no I/O, no allocation after
// tg_srtp_new, no lock; one context is used by one thread (the worker that owns the call).
//
// A context is one direction of one media stream: a master key and salt as exchanged in SDP
// (`a=crypto`, RFC 4568), the session keys derived from them once (RFC 3711 4.3, key derivation
// rate 0), and per SSRC the rollover counter, the highest sequence number and the replay window
// (RFC 3711 3.3.1, 3.3.2). A protecting context numbers SRTCP packets itself (the SRTCP index);
// an unprotecting one tracks the index and its replay window per SSRC. A stream whose SSRC
// changes (a re-INVITE, a new source after hold) gets fresh per-SSRC state: up to
// TG_SRTP_MAX_SSRC of them per context. An unprotecting context replaces the least recently
// used one (forgotten: an SSRC that comes back starts again), and makes or replaces state only
// for a packet whose tag verified, so forged packets cannot push a genuine source out. A
// protecting context never replaces one: a forgotten SSRC would start again at rollover
// counter 0 and reuse keystream, so a fifth SSRC is refused (TG_SRTP_BAD_PACKET) and the
// caller re-keys (a new key per new stream).
//
// libsrtp2 and the test vectors of RFC 3711 (B.2, B.3) and RFC 7714 (16) are the oracle in the
// unit tests, packet for packet, both directions.

enum tg_srtp_suite {
    TG_SRTP_NONE = 0,
    TG_SRTP_AES_CM_128_HMAC_SHA1_80, // RFC 4568; 14-byte salt, 10-byte tag
    TG_SRTP_AES_CM_128_HMAC_SHA1_32, // RFC 4568; 14-byte salt, 4-byte tag (SRTCP keeps 10)
    TG_SRTP_AEAD_AES_128_GCM,        // RFC 7714; 12-byte salt, 16-byte tag
    TG_SRTP_SUITE_NUM
};

#define TG_SRTP_KEY_LEN 16   // AES-128 master key
#define TG_SRTP_SALT_MAX 14  // master salt (12 for GCM)
#define TG_SRTP_MKI_MAX 4    // MKI bytes carried on the wire (RFC 4568 allows 1..128)
#define TG_SRTP_MAX_SSRC 4   // per-SSRC states per context
#define TG_SRTP_OVERHEAD 20  // the most a protect adds (GCM tag 16 + MKI 4); SRTCP adds 4 more
#define TG_SRTCP_OVERHEAD 24 // ... for SRTCP: E+index 4, tag up to 16, MKI up to 4

// tg_srtp_params is what one `a=crypto` line carries: the suite, the master key and salt, and
// the MKI (value and length on the wire; 0 = none). On the wire the MKI is |mki| big-endian in
// its low |mki_len| bytes (RFC 4568 writes it as a decimal number); a value that does not fit
// in |mki_len| bytes makes the params unusable.
struct tg_srtp_params {
    enum tg_srtp_suite suite;
    uint8_t key[TG_SRTP_KEY_LEN];
    uint8_t salt[TG_SRTP_SALT_MAX]; // tg_srtp_salt_len(suite) bytes used
    uint32_t mki;
    uint8_t mki_len; // 0..TG_SRTP_MKI_MAX
};

enum tg_srtp_status {
    TG_SRTP_OK = 0,
    TG_SRTP_BAD_PACKET, // too short, not version 2, a header that runs past the packet
    TG_SRTP_AUTH_FAIL,  // the tag does not verify (or the MKI is not ours): drop, count
    TG_SRTP_REPLAY,     // seen already, or older than the window: drop, count
    TG_SRTP_NO_SPACE,   // protect: |cap| leaves no room for the tag
};

// tg_srtp_suite_name returns the SDP name of |s| ("AES_CM_128_HMAC_SHA1_80", ...), "" for
// TG_SRTP_NONE. tg_srtp_suite_parse is the inverse (TG_SRTP_NONE when unknown).
const char *tg_srtp_suite_name(enum tg_srtp_suite s);
enum tg_srtp_suite tg_srtp_suite_parse(const char *name, size_t len);

// The sizes of |s|: master salt, SRTP tag, SRTCP tag.
size_t tg_srtp_salt_len(enum tg_srtp_suite s);
size_t tg_srtp_tag_len(enum tg_srtp_suite s);
size_t tg_srtcp_tag_len(enum tg_srtp_suite s);

// tg_srtp_params_random fills |p| with suite |s|, a fresh random key and salt (BoringSSL's
// RAND_bytes) and no MKI. Returns 1, or 0 when |s| is not a suite.
int tg_srtp_params_random(struct tg_srtp_params *p, enum tg_srtp_suite s);

struct tg_srtp;

// tg_srtp_new makes a context for |p| that protects (|protect| = 1: RTP/RTCP in, SRTP/SRTCP
// out) or unprotects. NULL when memory is short or |p| is not usable. A context does the one
// direction it was made for: the other direction's calls answer TG_SRTP_BAD_PACKET.
struct tg_srtp *tg_srtp_new(const struct tg_srtp_params *p, int protect);
void tg_srtp_free(struct tg_srtp *s);

// tg_srtp_kdf writes |out_len| bytes of the RFC 3711 4.3 key derivation (AES-CM PRF, key
// derivation rate 0) for |label| (0..5: SRTP key, auth key, salt; SRTCP key, auth key, salt)
// from |master_key| and the |salt_len| bytes of |master_salt| (12 for GCM: zero-padded to 14,
// as RFC 7714 11 says). Returns 1, or 0 when |salt_len| > TG_SRTP_SALT_MAX.
int tg_srtp_kdf(uint8_t *out, size_t out_len, const uint8_t master_key[TG_SRTP_KEY_LEN],
                const uint8_t *master_salt, size_t salt_len, uint8_t label);

// tg_srtp_session_keys are the keys one of SRTP or SRTCP runs on once derived: cipher key,
// salt (tg_srtp_salt_len bytes used) and HMAC-SHA1 key (AES-CM suites only).
struct tg_srtp_session_keys {
    uint8_t key[TG_SRTP_KEY_LEN];
    uint8_t salt[TG_SRTP_SALT_MAX];
    uint8_t auth[20];
};

// tg_srtp_new_session is tg_srtp_new with the session keys given instead of derived from the
// master key of |p| (only |p|'s suite and MKI are read): the published AEAD vectors (RFC 7714
// 16, 17) are written that way. The daemon uses tg_srtp_new.
struct tg_srtp *tg_srtp_new_session(const struct tg_srtp_params *p,
                                    const struct tg_srtp_session_keys *rtp,
                                    const struct tg_srtp_session_keys *rtcp, int protect);

// tg_srtp_protect turns the RTP packet in |pkt| (|len| bytes, |cap| bytes of room) into SRTP
// in place: payload encrypted, MKI and tag appended (GCM: tag, then MKI; AES-CM: MKI, then
// tag). |*out_len| is the new length. The rollover counter follows the sequence numbers as
// the receiver's estimate does (a jump back by less than half the space is a late packet of
// the same or the previous roll). An index this context has already protected (a duplicate,
// or a sequence restarted under the same SSRC) is refused with TG_SRTP_REPLAY: encrypting it
// again would reuse its keystream for other bytes.
//
// For every call here: when the status is not TG_SRTP_OK, the packet is to be dropped and the
// bytes of |pkt| are unspecified (GCM decrypts in place while it checks the tag), but no
// per-SSRC state has moved.
enum tg_srtp_status tg_srtp_protect(struct tg_srtp *s, uint8_t *pkt, size_t len, size_t cap,
                                    size_t *out_len);

// tg_srtp_unprotect checks and decrypts the SRTP packet in |pkt| in place: the tag verified
// (constant time) before anything else, then the replay window; only then does the per-SSRC
// state (rollover counter, highest sequence, window) move. |*out_len| is the RTP length.
enum tg_srtp_status tg_srtp_unprotect(struct tg_srtp *s, uint8_t *pkt, size_t len, size_t *out_len);

// SRTCP (RFC 3711 3.4): the same for RTCP compound packets; protect always encrypts (E = 1)
// and appends E|index, MKI and tag (GCM: tag, E|index, MKI, RFC 7714 17). The SRTCP index
// counts per SSRC from 1, as libsrtp2 does, and wraps after 2^31 - 1 packets (decades at the
// RTCP rate; a call rekeys long before). Unprotect also takes E = 0 (authenticated only).
enum tg_srtp_status tg_srtcp_protect(struct tg_srtp *s, uint8_t *pkt, size_t len, size_t cap,
                                     size_t *out_len);
enum tg_srtp_status tg_srtcp_unprotect(struct tg_srtp *s, uint8_t *pkt, size_t len,
                                       size_t *out_len);

#endif // TLSGATE_SRTP_H
