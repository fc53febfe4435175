#ifndef TLSGATE_POLICY_H
#define TLSGATE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>
#include <openssl/x509.h>

// Identity policy: pure functions over parsed certificates (no I/O). Shared by the handshake
// verify callback, `tlsgate check`, startup and (later) reload and cert-check.

// tg_verdict is the outcome of a handshake as seen by policy and by the data path. The
// values up to TG_VERDICT_POLICY_MAX are produced by tg_policy_check_peer; the rest by the
// worker. tg_verdict_name gives each its metric label. Only the names are an interface (metric
// labels, log reasons); the numbers are stored and sent nowhere, but every policy verdict must
// stay at or below TG_VERDICT_POLICY_MAX, which is how the worker tells them apart.
enum tg_verdict {
    TG_VERDICT_OK = 0,
    TG_VERDICT_NO_CERTIFICATE,     // the peer sent no certificate
    TG_VERDICT_SELF_SIGNED,        // leaf is self-signed (refused even when it sits in `ca`)
    TG_VERDICT_UNTRUSTED,          // chain does not end at a CA in `ca`
    TG_VERDICT_EXPIRED,            // now > notAfter
    TG_VERDICT_NOT_YET_VALID,      // now < notBefore
    TG_VERDICT_KEY_TOO_SMALL,      // RSA under min bits, EC under 256 bits, other key types
    TG_VERDICT_CN_MISMATCH,        // subject CN is none of the peer names
    TG_VERDICT_CN_CASE_MISMATCH,   // ... but equals one when case is ignored
    TG_VERDICT_SAN_MISSING,        // no DNS SAN at all
    TG_VERDICT_SAN_MISMATCH,       // no DNS SAN equals the CN that matched
    TG_VERDICT_SAN_CASE_MISMATCH,  // ... but one equals it when case is ignored
    TG_VERDICT_LEAF_IS_CA,         // leaf has basicConstraints CA:TRUE (a CA, not an end entity)
    TG_VERDICT_EKU_MISMATCH,       // extendedKeyUsage lacks the purpose of the peer's role
    TG_VERDICT_KEY_USAGE_MISMATCH, // keyUsage lacks digitalSignature
    TG_VERDICT_POLICY_MAX = TG_VERDICT_KEY_USAGE_MISMATCH,
    TG_VERDICT_HANDSHAKE_ERROR, // TLS protocol failure (garbage, no shared cipher, alert)
    TG_VERDICT_TIMEOUT,         // handshake_timeout_ms elapsed
    TG_VERDICT_PEER_CLOSED,     // the peer closed during the handshake
    TG_VERDICT_CONNECT_FAILED,  // outbound: no target could be reached
    TG_VERDICT_NUM
};

// tg_verdict_name returns the metric label of |v|: "ok", "no_certificate", "self_signed",
// "untrusted", "expired", "not_yet_valid", "key_too_small", "cn_mismatch",
// "cn_case_mismatch", "san_missing", "san_mismatch", "san_case_mismatch", "leaf_is_ca",
// "eku_mismatch", "key_usage_mismatch", "handshake_error", "timeout", "peer_closed",
// "connect_failed".
const char *tg_verdict_name(enum tg_verdict v);

// tg_policy holds what a peer is checked against. Immutable once built; safe to share
// between threads for reading.
struct tg_policy;

// tg_policy_new returns an empty policy: no CAs, no names, RSA floor 2048, EC floor 256.
struct tg_policy *tg_policy_new(void);

// tg_policy_free releases |p|. NULL is a no-op.
void tg_policy_free(struct tg_policy *p);

// tg_policy_add_ca adds |ca| (a reference is taken) to the trusted set. Returns 1 on success.
int tg_policy_add_ca(struct tg_policy *p, X509 *ca);

// tg_policy_load_ca_file adds every certificate of the PEM bundle at |path|. Returns the
// number added (0 on failure, with a reason in |err|).
size_t tg_policy_load_ca_file(struct tg_policy *p, const char *path, char *err, size_t err_len);

// tg_policy_add_peer_name copies |name| into the list of accepted peer identities.
int tg_policy_add_peer_name(struct tg_policy *p, const char *name);

// tg_policy_set_min_rsa_bits sets the RSA key floor (EC keys always need >= 256 bits).
void tg_policy_set_min_rsa_bits(struct tg_policy *p, unsigned bits);

// tg_peer_role says which end of the TLS handshake the peer is; that decides the purpose its
// certificate must allow.
enum tg_peer_role {
    TG_PEER_CLIENT = 0, // the peer is the TLS client (inbound listeners: we are the server)
    TG_PEER_SERVER,     // the peer is the TLS server (outbound: we are the client)
};

// tg_policy_check_peer checks the certificate |leaf| of a peer in |role|, with the
// intermediates in |untrusted| (may be NULL), at time |now| (seconds since the epoch). Returns
// TG_VERDICT_OK or the first rule that refuses it. The checks run in this order: self-signed,
// validity window, key size, chain to a trusted CA, purpose, names. Purpose: the leaf is not a
// CA (basicConstraints CA:TRUE); an extendedKeyUsage extension, when present, holds clientAuth
// for TG_PEER_CLIENT or serverAuth for TG_PEER_SERVER (anyExtendedKeyUsage alone does not do);
// a keyUsage extension, when present, holds digitalSignature. A leaf with neither extension
// may serve any purpose (RFC 5280). On OK, |*out_name| (if not NULL) points at the peer name
// that matched (owned by |p|). |detail| receives a short human reason (may be NULL) in
// printable ASCII without double quotes; a certificate's bytes outside that range (a NUL in a
// CN, say) are written as \xHH, never dropped.
enum tg_verdict tg_policy_check_peer(const struct tg_policy *p, enum tg_peer_role role, X509 *leaf,
                                     STACK_OF(X509) *untrusted, int64_t now, const char **out_name,
                                     char *detail, size_t detail_len);

// tg_policy_check_peer_name is tg_policy_check_peer with the name rule bound to |only_name|
// instead of the policy's peer names: a target reached by name must prove that name. The
// subject CN must equal |only_name| and a DNS SAN must too, exact and case-sensitive, with the
// same verdicts (cn_mismatch, cn_case_mismatch, san_missing, san_mismatch, san_case_mismatch);
// an empty |only_name| matches nothing (cn_mismatch). Every other rule, and their order, is
// tg_policy_check_peer's. |only_name| NULL means the peer names: tg_policy_check_peer. On OK,
// |*out_name| (if not NULL) is |only_name| itself (owned by the caller) or, for NULL, the peer
// name that matched (owned by |p|).
enum tg_verdict tg_policy_check_peer_name(const struct tg_policy *p, enum tg_peer_role role,
                                          X509 *leaf, STACK_OF(X509) *untrusted, int64_t now,
                                          const char *only_name, const char **out_name,
                                          char *detail, size_t detail_len);

// Rules over our own certificate, as PASS / WARN / FAIL lines.
enum tg_rule_status { TG_RULE_PASS = 0, TG_RULE_WARN, TG_RULE_FAIL };

struct tg_rule_result {
    const char *rule; // stable identifier: "not_self_signed", "chain_length", "chain_order",
                      // "chain", "cn_matches_fqdn", "san_matches_fqdn", "key_type", "key_size",
                      // "key_matches", "validity", "eku"
    enum tg_rule_status status;
    char detail[256];
};

#define TG_OWN_RULES_MAX 12

// TG_OWN_CHAIN_MAX is the most certificates (leaf included) our certificate file may hold.
#define TG_OWN_CHAIN_MAX 16

// TG_OWN_KEY_TYPES says which key types our own certificate and key may use.
#define TG_OWN_KEY_TYPES "supported: RSA (2048 bits or more) and EC (P-256, P-384, P-521)"

// tg_policy_key_type_name names the type of |pkey|: "RSA", "EC P-256", "EC P-384", "EC P-521",
// "EC", "Ed25519", "X25519", "DSA" or "unknown". The string is static.
const char *tg_policy_key_type_name(const EVP_PKEY *pkey);

// tg_policy_check_own runs the rules for our own certificate |leaf| against |fqdn|: not
// self-signed; at most TG_OWN_CHAIN_MAX certificates; in order (the leaf, not a CA, first, then
// each certificate's issuer by name); chain to a root in |trust| built from |chain| (skipped, as
// PASS with a note, when |trust| is NULL; when an issuer cannot be found, the detail names that
// issuer's DN); CN == fqdn and a DNS SAN == fqdn, exact (a case-only difference is named); key type
// RSA or EC (key_type; Ed25519, DSA and others FAIL, naming the type); RSA >= 1024 bits (WARN under
// 2048), EC >= 256; |key| matches |leaf| (skipped when NULL); validity at |now| (WARN under 30 days
// left); EKU includes serverAuth and clientAuth. Writes one result per rule to |out| (at most
// |max_out|) and returns how many it wrote.
size_t tg_policy_check_own(const char *fqdn, X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key,
                           X509_STORE *trust, int64_t now, struct tg_rule_result *out,
                           size_t max_out);

// tg_policy_name_string writes |name| as an RFC 2253 string (bytes over 0x7e escaped, so the
// text is printable ASCII) into |out|, cut to |out_len| - 1 bytes and NUL-terminated. Returns 1
// on success; on failure |out| holds an empty string.
int tg_policy_name_string(char *out, size_t out_len, const X509_NAME *name);

// tg_rule_status_name returns "PASS", "WARN" or "FAIL".
const char *tg_rule_status_name(enum tg_rule_status s);

#endif // TLSGATE_POLICY_H
