#ifndef TLSGATE_VERIFY_H
#define TLSGATE_VERIFY_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "tlsgate/peers.h"
#include "tlsgate/policy.h"
#include "tlsgate/tlsconn.h"

// Peer verification on the data path: the custom verify callback of both SSL_CTXs, the check
// of a resumed session's identity, and a per-worker cache of accepted chains.
//
// The cache: a verified peer chain is remembered per worker, so that the next handshake
// presenting the very same chain skips parsing and chain building. Certificates are
// CRYPTO_BUFFERs from one pool, which returns the same buffer for the same DER while a
// reference is held: comparing pointers compares contents. An entry holds references on the
// buffers and on the context whose policy accepted them, so neither address can be reused for
// something else while cached. The name the chain was held to is part of the key too: an
// acceptance under peer_names never answers a check bound to a target's name, nor one name's
// acceptance another's. Only acceptances are cached, for at most TG_VCACHE_TTL seconds and
// never past the leaf's notAfter. A miss costs a full policy check, never a refusal.
//
// Identity travels with the connection, not the cache: every accepted handshake, full or
// resumed, leaves the verified name in tg_tlsio.peer_name.

#define TG_VCACHE_SIZE 8
#define TG_VCACHE_CHAIN_MAX 4
#define TG_VCACHE_TTL 60

struct tg_vcache_entry {
    SSL_CTX *ctx;
    CRYPTO_BUFFER *certs[TG_VCACHE_CHAIN_MAX]; // leaf first
    uint8_t num_certs;
    int64_t valid_until;
    const char *name;   // owned by ctx's policy, or |expect| itself
    const char *expect; // the name the check was bound to (tg_tlsio.expect_name): NULL for
                        // peer_names; the configuration's string, which outlives the cache
    char issuer[160];
    int64_t not_after;
    uint32_t peer_handle; // its entry in the recent-peers ring
};

// tg_verifier is one worker's verification state. Single-threaded.
struct tg_verifier {
    struct tg_vcache_entry cache[TG_VCACHE_SIZE];
    unsigned next;
    struct tg_peer_ring *peers; // this worker's ring of the /status record (may be NULL)
};

// tg_verifier_init sets up an empty cache recording peers in |peers| (may be NULL).
void tg_verifier_init(struct tg_verifier *v, struct tg_peer_ring *peers);

// tg_verifier_cleanup drops every cached entry and the references it holds.
void tg_verifier_cleanup(struct tg_verifier *v);

// tg_verify_peer is the custom verify callback of both contexts (see tg_verify_fn): the peer
// chain against the policy of the SSL's context, its name held to tg_tlsio.expect_name when
// that is set (tg_policy_check_peer_name). The SSL's app data must be its tg_tlsio; the
// verdict is left in tg_tlsio.verdict and, on success, the name in tg_tlsio.peer_name.
enum ssl_verify_result_t tg_verify_peer(SSL *ssl, uint8_t *out_alert);

// tg_verify_resumed establishes the identity of a completed handshake that resumed a session
// (the verify callback does not run then): the session's peer chain is checked again, now,
// against the policy of the connection's context (the cache makes this cheap). Returns the
// verdict (also left in |t|); on a refusal the alert to send is in |*out_alert|.
enum tg_verdict tg_verify_resumed(struct tg_tlsio *t, uint8_t *out_alert);

#endif // TLSGATE_VERIFY_H
