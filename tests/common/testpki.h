#ifndef TLSGATE_TESTPKI_H
#define TLSGATE_TESTPKI_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>
#include <openssl/x509.h>

// Test-time PKI over BoringSSL's X509 API: CAs, intermediates and leaves made in memory, and
// PEM files for tests that need them on disk. For tests only: errors abort nothing, they
// return 0 / NULL, and the key cache is process-wide.

// tg_testpki_key_type names the kind of key a certificate gets.
enum tg_testpki_key_type {
    TG_TESTPKI_RSA = 0, // RSA with |rsa_bits| (0: 2048)
    TG_TESTPKI_EC_P256, // ECDSA on P-256
    TG_TESTPKI_EC_P224, // ECDSA on P-224 (to test an EC key that is too small)
    TG_TESTPKI_ED25519, // Ed25519
};

// Flags for tg_testpki_opts.eku.
#define TG_TESTPKI_EKU_SERVER 0x1u       // id-kp-serverAuth
#define TG_TESTPKI_EKU_CLIENT 0x2u       // id-kp-clientAuth
#define TG_TESTPKI_EKU_NONE 0x4u         // no extendedKeyUsage extension at all
#define TG_TESTPKI_EKU_CODE_SIGNING 0x8u // id-kp-codeSigning
#define TG_TESTPKI_EKU_ANY 0x10u         // anyExtendedKeyUsage

// Flags for tg_testpki_opts.key_usage; 0 keeps the default (a leaf: digitalSignature, plus
// keyEncipherment for an RSA key; a CA: keyCertSign and cRLSign).
#define TG_TESTPKI_KU_DIGITAL_SIGNATURE 0x1u
#define TG_TESTPKI_KU_KEY_ENCIPHERMENT 0x2u
#define TG_TESTPKI_KU_KEY_CERT_SIGN 0x4u
#define TG_TESTPKI_KU_NONE 0x8u // no keyUsage extension at all

// tg_testpki_opts describes one certificate to issue. Start from tg_testpki_opts_init.
struct tg_testpki_opts {
    const char *cn;         // subject CN; NULL: no CN (the subject then holds only O=tlsgate-test)
    size_t cn_len;          // bytes of |cn| to use (0: strlen); lets a test embed a NUL
    const char *const *dns; // DNS SANs (|num_dns| of them); they win over |san_is_cn|
    size_t num_dns;
    int san_is_cn; // with num_dns == 0: the one DNS SAN is |cn| (none if |cn| is NULL)
    enum tg_testpki_key_type key_type;
    unsigned rsa_bits;  // for TG_TESTPKI_RSA; 0 means 2048
    EVP_PKEY *key;      // if not NULL, this key is certified instead of a cached one
    int64_t not_before; // seconds relative to |now| (negative: in the past)
    int64_t not_after;  // seconds relative to |now|
    unsigned eku;       // TG_TESTPKI_EKU_* flags; ignored for a CA
    unsigned key_usage; // TG_TESTPKI_KU_* flags; 0: the default for a leaf or a CA
    int is_ca;          // basicConstraints CA:TRUE + keyUsage keyCertSign, cRLSign
    int ca_true_leaf;   // basicConstraints CA:TRUE on an otherwise ordinary leaf (its keyUsage,
                        // EKU and SANs): a CA profile applied to an end entity by mistake
    int self_signed;    // sign with the certificate's own key even though an issuer is given
};

// tg_testpki_opts_init fills |opts| with a leaf valid from a day before |now| to a year after,
// with subject CN |cn| and a single DNS SAN equal to the CN (|san_is_cn|), an RSA-2048 key and
// both EKUs. Set |san_is_cn| to 0 for no SAN, or |dns| / |num_dns| for other SANs.
void tg_testpki_opts_init(struct tg_testpki_opts *opts, const char *cn);

// tg_testpki_key returns a new reference to a key of |type| (and |rsa_bits| for RSA; 0 means
// 2048). Keys are generated once per (type, bits) and cached for the life of the process, so
// every certificate of a test binary with the same key type shares a key. NULL on failure.
EVP_PKEY *tg_testpki_key(enum tg_testpki_key_type type, unsigned rsa_bits);

// tg_testpki_key_new generates a fresh, uncached key (for a test that needs a key that matches
// nothing else). The caller owns it. NULL on failure.
EVP_PKEY *tg_testpki_key_new(enum tg_testpki_key_type type, unsigned rsa_bits);

// tg_testpki_issue makes the certificate |opts| describes, signed by |issuer_key| with the
// issuer name of |issuer|, or self-signed when |issuer| is NULL or |opts->self_signed| is set.
// Validity is relative to |now| (seconds since the epoch). On success it returns 1 and sets
// |*out_cert| and, if |out_key| is not NULL, |*out_key| (a new reference to the certified key);
// the caller frees both.
int tg_testpki_issue(X509 **out_cert, EVP_PKEY **out_key, const struct tg_testpki_opts *opts,
                     X509 *issuer, EVP_PKEY *issuer_key, int64_t now);

// tg_testpki_ca makes a self-signed root CA named |cn| with a key of |type| (RSA: 2048 bits),
// valid from ten years before |now| to ten years after. Returns 1 on success; the caller frees
// |*out_cert| and |*out_key|.
int tg_testpki_ca(X509 **out_cert, EVP_PKEY **out_key, const char *cn,
                  enum tg_testpki_key_type type, int64_t now);

// tg_testpki_intermediate is tg_testpki_ca for an intermediate CA signed by |ca| / |ca_key|.
// It uses a fresh key (not the cache), so it never shares a key with its issuer.
int tg_testpki_intermediate(X509 **out_cert, EVP_PKEY **out_key, const char *cn,
                            enum tg_testpki_key_type type, X509 *ca, EVP_PKEY *ca_key, int64_t now);

// tg_testpki_write_certs writes |num_certs| certificates as one PEM bundle to |path|.
// Returns 1 on success.
int tg_testpki_write_certs(const char *path, X509 *const *certs, size_t num_certs);

// tg_testpki_write_key writes |key| as an unencrypted PKCS#8 PEM private key to |path|, mode
// 0600. Returns 1 on success.
int tg_testpki_write_key(const char *path, EVP_PKEY *key);

// tg_testpki_tmpdir creates a fresh directory under $TMPDIR (or /tmp) and writes its path to
// |out| (|out_len| bytes). Returns 1 on success.
int tg_testpki_tmpdir(char *out, size_t out_len);

// tg_testpki_rmtree removes |dir| and everything below it. Returns 1 on success.
int tg_testpki_rmtree(const char *dir);

#endif // TLSGATE_TESTPKI_H
