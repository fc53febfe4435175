#ifndef TLSGATE_SIGNER_H
#define TLSGATE_SIGNER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

// Private-key operations off the I/O loop. Our key signs once per full handshake (the server's
// CertificateVerify or ServerKeyExchange, the client's CertificateVerify): about 1 ms of CPU
// for RSA-2048. Done inline, every established connection of that worker waits behind it; a
// provider failover that reconnects every trunk at once stalls calls for as long as the storm
// lasts.
//
// With a signer pool, both SSL_CTXs get an SSL_PRIVATE_KEY_METHOD instead of the key: the sign
// callback copies the input into the connection's request, queues it and returns
// ssl_private_key_retry (the handshake pauses, SSL_ERROR_WANT_PRIVATE_KEY_OPERATION); a signer
// thread signs and posts a completion {the connection's user_data, 0} to the worker's ring
// (tg_loop_post); the connection counts the signature as one operation in flight, so it is not
// freed before the completion arrives, and the handshake resumes from it (the complete
// callback hands BoringSSL the signature).
//
// The queue between workers and signers is a bounded lock-free MPMC ring: a worker never waits
// on it. When it is full the handshake fails at once (reason signer_busy, counted), which is
// what a saturated signer should do: new handshakes fail fast, established ones never wait.
// Signers sleep on a semaphore (they are off the data path).
//
// Without a pool (`[tls] signers = 0`), or for an SSL with no loop to complete on (tests,
// `tlsgate check`), the method signs inline.

struct tg_loop;
struct tg_signer;

// tg_sign_req is the one signature in flight of a connection. The worker allocates it (the
// first time its SSL signs) and frees it with the SSL, never while the signature is in flight.
struct tg_sign_req {
    struct tg_loop *loop; // where the completion goes
    uint64_t ud;          // ... with this user_data
    EVP_PKEY *key;        // borrowed from the context, which the SSL holds
    const char *keyd;     // ... or tlsgate-keyd's socket, which holds the key (keyd.h)
    const uint8_t *spki;  // ... and the SHA-256 of the key's public half, which names it there
    uint16_t alg;         // TLS SignatureScheme
    uint8_t *in;          // the input (a copy): up to the whole transcript for TLS 1.2 clients
    size_t in_len, in_cap;
    uint8_t sig[1024]; // RSA-8192 at most
    size_t sig_len;
    _Atomic int state; // enum tg_sign_state
};

enum tg_sign_state {
    TG_SIGN_IDLE = 0,
    TG_SIGN_QUEUED, // owned by the signers until DONE or FAILED
    TG_SIGN_DONE,
    TG_SIGN_FAILED,
};

// tg_signer_stats are the pool's counters (relaxed atomics), for /metrics.
struct tg_signer_stats {
    _Atomic uint64_t signed_ok;  // signatures made by the pool
    _Atomic uint64_t failed;     // signatures that failed (a key that cannot sign |alg|)
    _Atomic uint64_t queue_full; // handshakes failed at once: the queue was full
    _Atomic uint64_t inline_ok;  // signatures made inline (no pool, or no loop)
    _Atomic uint64_t keyd_down;  // signatures that failed because keyd could not be reached
    _Atomic uint32_t depth;      // requests queued or being signed now
};

// tg_signer_new starts |threads| signer threads (1..64) with a queue of |queue| requests (a
// power of two). NULL when a thread or memory could not be had.
struct tg_signer *tg_signer_new(unsigned threads, uint32_t queue);

// tg_signer_free stops the threads (after the requests already queued) and frees the pool.
void tg_signer_free(struct tg_signer *s);

// tg_signer_stats returns the counters of |s| (NULL: the inline counters of the process).
struct tg_signer_stats *tg_signer_stats(struct tg_signer *s);

// tg_signer_attach gives |ctx| the chain |certs| (|num| buffers, the leaf first) and, instead
// of the key, the private-key method that signs with |key| (a reference is taken) through |s|
// (NULL: inline). With |keyd| (a socket path, not empty) |key| is only the public half and
// tlsgate-keyd signs (keyd.h). Returns 1, or 0 when BoringSSL refused the chain.
int tg_signer_attach(SSL_CTX *ctx, CRYPTO_BUFFER *const *certs, size_t num, EVP_PKEY *key,
                     struct tg_signer *s, const char *keyd);

// tg_sign_now signs |in| with |key| under TLS SignatureScheme |alg| into |out| (|max_out|
// bytes): RSA PKCS#1 and PSS, ECDSA, as BoringSSL would itself. Returns 1 with |*out_len| set.
int tg_sign_now(EVP_PKEY *key, uint16_t alg, const uint8_t *in, size_t in_len, uint8_t *out,
                size_t *out_len, size_t max_out);

// tg_sign_req_free frees a request that is not in flight (IDLE, DONE or FAILED).
void tg_sign_req_free(struct tg_sign_req *r);

#endif // TLSGATE_SIGNER_H
