#ifndef TLSGATE_KEYD_H
#define TLSGATE_KEYD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

// Key isolation: tlsgate-keyd holds the private keys in a process of its own, so that whoever
// takes over the internet-facing tlsgate process still does not have them. tlsgate
// (`[tls] key = keyd:PATH`) never reads the key file: its signer threads (signer.h) hash the
// input of each signature themselves and send keyd only the digest, the TLS SignatureScheme
// and which key (the SHA-256 of its SubjectPublicKeyInfo, which tlsgate takes from its own
// certificate); keyd answers with the signature. Nothing that crosses the socket ever carries
// key material.
//
// The socket is a Unix SOCK_SEQPACKET socket: one request or response per packet, so a
// message never needs framing. keyd checks the peer's credentials (SO_PEERCRED) against the
// uids it was told to serve, and reads every request it is sent as hostile (a compromised
// tlsgate is exactly whom it protects the key from): fixed sizes, every field checked.
//
// Wire format, all integers big-endian:
//   request  (TG_KEYD_REQ_LEN bytes, or fewer with a shorter digest):
//     magic u32 'TGK1' | id u32 | alg u16 | digest_len u16 | spki_sha256 [32] | digest [len]
//   response:
//     magic u32 'TGK1' | id u32 | status u16 | sig_len u16 | signature [sig_len]

#define TG_KEYD_MAGIC 0x54474b31u // "TGK1"
#define TG_KEYD_MAX_DIGEST 64     // SHA-512
#define TG_KEYD_MAX_SIG 1024      // RSA-8192
#define TG_KEYD_HDR_LEN 44        // a request without its digest
#define TG_KEYD_REQ_LEN (TG_KEYD_HDR_LEN + TG_KEYD_MAX_DIGEST)
#define TG_KEYD_RESP_HDR_LEN 12
#define TG_KEYD_RESP_LEN (TG_KEYD_RESP_HDR_LEN + TG_KEYD_MAX_SIG)
#define TG_KEYD_PREFIX "keyd:" // `[tls] key = keyd:/run/tlsgate/keyd.sock`

enum tg_keyd_status {
    TG_KEYD_OK = 0,
    TG_KEYD_NO_KEY,      // keyd holds no key with that public key
    TG_KEYD_BAD_REQUEST, // malformed, or a digest length that does not fit the scheme
    TG_KEYD_SIGN_FAILED, // the scheme does not fit the key, or the signature failed
};

struct tg_keyd_req {
    uint32_t id;
    uint16_t alg; // TLS SignatureScheme
    uint8_t spki_sha256[32];
    uint8_t digest[TG_KEYD_MAX_DIGEST];
    size_t digest_len;
};

struct tg_keyd_resp {
    uint32_t id;
    uint16_t status; // enum tg_keyd_status
    uint8_t sig[TG_KEYD_MAX_SIG];
    size_t sig_len;
};

// Encoding and decoding (pure). Encoders return the length written (0: |cap| too small);
// decoders return 1 for a well-formed message, 0 otherwise.
size_t tg_keyd_req_encode(const struct tg_keyd_req *r, uint8_t *out, size_t cap);
int tg_keyd_req_decode(struct tg_keyd_req *r, const uint8_t *in, size_t len);
size_t tg_keyd_resp_encode(const struct tg_keyd_resp *r, uint8_t *out, size_t cap);
int tg_keyd_resp_decode(struct tg_keyd_resp *r, const uint8_t *in, size_t len);

// tg_keyd_spki_hash writes the SHA-256 of |key|'s SubjectPublicKeyInfo (DER) to |out|: how both
// sides name a key. Returns 1.
int tg_keyd_spki_hash(EVP_PKEY *key, uint8_t out[32]);

// tg_keyd_digest hashes |in| with the digest of SignatureScheme |alg| into |out|. Returns its
// length, 0 for a scheme tlsgate does not sign with.
size_t tg_keyd_digest(uint16_t alg, const uint8_t *in, size_t in_len,
                      uint8_t out[TG_KEYD_MAX_DIGEST]);

// tg_keyd_sign_digest is keyd's side: the signature of |digest| with |key| under |alg| (RSA
// PKCS#1 v1.5 and PSS with salt = digest length, ECDSA), exactly as a signature over the
// message would be. Returns 1 with |*out_len| set; 0 when |alg| does not fit |key| or
// |digest_len| does not fit |alg|.
int tg_keyd_sign_digest(EVP_PKEY *key, uint16_t alg, const uint8_t *digest, size_t digest_len,
                        uint8_t *out, size_t *out_len, size_t max_out);

// tg_keyd_verify checks |sig| over |msg| with public key |pub| under SignatureScheme |alg| (RSA
// PKCS#1 v1.5 and PSS with salt = digest length, ECDSA). Returns 1 when it verifies.
int tg_keyd_verify(EVP_PKEY *pub, uint16_t alg, const uint8_t *msg, size_t msg_len,
                   const uint8_t *sig, size_t sig_len);

// tg_keyd_handle answers one request packet |in| with the key among |keys| (|num| of them,
// their SPKI hashes in |hashes|): the response packet goes to |out| (TG_KEYD_RESP_LEN bytes).
// Returns its length; a packet too malformed to carry an id is answered with id 0 and
// TG_KEYD_BAD_REQUEST.
size_t tg_keyd_handle(EVP_PKEY *const *keys, const uint8_t (*hashes)[32], size_t num,
                      const uint8_t *in, size_t len, uint8_t *out);

// Client (tlsgate's signer threads). tg_keyd_connect opens a connection to the socket at
// |path| with 2 s send and receive time-outs. Returns the descriptor, or -1 with the reason in
// |err|.
int tg_keyd_connect(const char *path, char *err, size_t err_len);

// tg_keyd_sign has keyd at |fd| sign |in| (hashed here) under |alg| with the key whose SPKI
// hash is |spki|. Returns TG_KEYD_OK with the signature in |out| (|*out_len|), a keyd status,
// or -1 when the connection failed (the caller closes |fd| and reconnects; |err| says why).
int tg_keyd_sign(int fd, uint32_t id, const uint8_t spki[32], uint16_t alg, const uint8_t *in,
                 size_t in_len, uint8_t *out, size_t *out_len, size_t max_out, char *err,
                 size_t err_len);

// tg_keyd_check proves that keyd at |path| holds the private key of public key |pub|: it signs
// a fresh random message and the signature is verified with |pub|. Returns 1, or 0 with
// `keyd:PATH: why` in |err|. Startup, `tlsgate check` and reload call it.
int tg_keyd_check(const char *path, EVP_PKEY *pub, char *err, size_t err_len);

#endif // TLSGATE_KEYD_H
