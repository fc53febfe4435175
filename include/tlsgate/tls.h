#ifndef TLSGATE_TLS_H
#define TLSGATE_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "tlsgate/config.h"
#include "tlsgate/policy.h"

// tg_tls is the TLS half of a configuration generation: our certificate and key, the peer
// policy, and the two SSL_CTXs built from them. Both contexts use TLS_with_buffers_method:
// certificates live as CRYPTO_BUFFERs shared through one pool, and the peer's chain is parsed
// into X509 only inside the verify callback, so an established connection holds no X509.
struct policy_ref;

struct tg_tls {
    SSL_CTX *server;          // inbound: mutual TLS, a client certificate is required
    SSL_CTX *client;          // outbound: presents our certificate, verifies the provider
    struct tg_policy *policy; // peer rules; shared with both contexts (see tg_tls_policy)
    struct policy_ref *policy_ref;
    X509 *leaf;               // our certificate; owned
    STACK_OF(X509) *chain;    // our intermediates (may be empty); owned
    EVP_PKEY *key;            // our private key (with keyd: only its public half); owned
    struct tg_signer *signer; // signs for both contexts (signer.h); NULL: inline. Borrowed
    CRYPTO_BUFFER_POOL *pool; // the process-wide pool (never freed: see tls.c)
    size_t num_cas;           // certificates loaded from `ca`
    // Keys loaded from `ticket_keys` (the server context owns them); 0: BoringSSL's own
    // random per-context keys.
    size_t num_ticket_keys;
    // The verdicts of our own certificate's rules (tg_tls_check_own) when it was loaded.
    struct tg_rule_result own_rules[TG_OWN_RULES_MAX];
    size_t num_own_rules;
};

// tg_verify_fn is the custom verify callback (see SSL_CTX_set_custom_verify) installed on
// both contexts. tg_tls_policy() gives it the policy of the connection's context.
// SSL_CTX_get_app_data() of a context returns its tg_tls, valid only while that tg_tls lives
// (a reload frees the old one while connections may still use its contexts).
typedef enum ssl_verify_result_t (*tg_verify_fn)(SSL *ssl, uint8_t *out_alert);

// Our key signs through |signer| (signer.h: a pool of threads off the I/O loop; NULL: inline,
// on the thread that runs the handshake), set on both contexts.
struct tg_signer;

// tg_tls_init loads the certificate, key and CA bundle named by |cfg|, runs our certificate's
// rules (tg_tls_check_own, results in |t->own_rules|), builds the policy (peer names, key
// floor) and both contexts. With `ticket_keys` set, the server context encrypts session
// tickets with the newest key of that file and decrypts with any (ticketkeys.h). Returns 1 on
// success; on failure 0 with `FILE: what is wrong` (`FILE:LINE: ...` for the ticket key file)
// in |err| and |t| cleaned up.
int tg_tls_init(struct tg_tls *t, const struct tg_config *cfg, tg_verify_fn verify,
                struct tg_signer *signer, char *err, size_t err_len);

// tg_tls_read_cert_file reads every certificate of the PEM file at |path|: the first into a
// new |*out_leaf|, the rest into a new |*out_chain| (the caller frees both). Returns 1 on
// success; on failure 0 with `FILE: what is wrong` in |err| (a directory, unreadable, no or a
// damaged certificate). `tlsgate check`, startup, reload and cert-check all read with it.
int tg_tls_read_cert_file(const char *path, X509 **out_leaf, STACK_OF(X509) **out_chain, char *err,
                          size_t err_len);

// tg_tls_read_key_file reads the unencrypted PEM private key at |path|, of a type our
// certificate may use (RSA or EC). Returns a new key, or NULL with `FILE: what is wrong` in
// |err|: a directory, unreadable, encrypted, of another type (named), or no key.
EVP_PKEY *tg_tls_read_key_file(const char *path, char *err, size_t err_len);

// tg_tls_read_trust_file builds a new X509_STORE holding exactly the certificates of the PEM
// bundle at |path| (no system store). NULL with `FILE: what is wrong` in |err| on failure.
X509_STORE *tg_tls_read_trust_file(const char *path, char *err, size_t err_len);

// tg_tls_check_own runs tg_policy_check_own over our certificate |leaf|, |chain| and |key| for
// |cfg| (fqdn; the chain is verified against `own_ca` when it is set) at |now|, writing the
// results to |out| (|max_out| entries) and their number to |*out_num|. Returns 0 with
// `FILE: DETAIL (rule RULE)` in |err| when a rule that leaves nothing to serve FAILs
// (chain_length, chain_order, key_type, key_matches; chain when `own_ca` is set) or `own_ca`
// cannot be read; 1 otherwise (other FAILs are the caller's to weigh). tg_tls_init and
// `tlsgate cert-check` both decide with it.
int tg_tls_check_own(struct tg_rule_result *out, size_t max_out, size_t *out_num,
                     const struct tg_config *cfg, X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key,
                     int64_t now, char *err, size_t err_len);

// tg_tls_cleanup frees what |t| owns. Safe on a zeroed struct.
void tg_tls_cleanup(struct tg_tls *t);

// tg_tls_policy returns the peer policy of |ssl|'s context. It stays valid as long as the
// context does, independently of the tg_tls that built it.
const struct tg_policy *tg_tls_policy(const SSL *ssl);

// tg_tls_peer_chain parses the peer's certificates (SSL_get0_peer_certificates) into a new
// leaf and a new stack of the rest. Returns 1 on success (the caller frees both; |*out_leaf|
// is NULL when the peer sent none), 0 when a certificate does not parse.
int tg_tls_peer_chain(const SSL *ssl, X509 **out_leaf, STACK_OF(X509) **out_chain);

// tg_tls_default_ciphers is the TLS 1.2 cipher list used when `ciphers` is not configured:
// the Teams Direct Routing suites that BoringSSL implements, plus their ECDSA twins.
extern const char tg_tls_default_ciphers[];

#endif // TLSGATE_TLS_H
