#ifndef TLSGATE_BENCH_WORLD_H
#define TLSGATE_BENCH_WORLD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/base.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tlsgate/policy.h"
#include "tlsgate/tls.h"

// The fixture every micro benchmark shares: a PKI minted in memory at startup (tests/common's
// testpki), and the real tlsgate TLS contexts built from it by tg_tls_init (proxy/tls.c), so
// that the handshake benchmarks measure the contexts tlsgate itself uses. Nothing outlives the
// process: the PEM files tg_tls_init wants are written to a temporary directory and removed
// before the first benchmark runs.

// Names in the certificates, and the peer names the policies accept.
#define TGB_SERVER_NAME "gw.tlsgate.test"
#define TGB_CLIENT_RSA_NAME "sbc-rsa.client.test"
#define TGB_CLIENT_ECDSA_NAME "sbc-ecdsa.client.test"

// tgb_world holds the PKI and the contexts. Every key is a fresh one (no two certificates share
// a key). All RSA keys are 2048 bits; every leaf is issued directly by |ca|.
struct tgb_world {
    X509 *ca; // root CA, RSA-2048, self-signed
    EVP_PKEY *ca_key;
    X509 *server_leaf; // CN=SAN=TGB_SERVER_NAME, RSA-2048
    EVP_PKEY *server_key;
    X509 *client_rsa_leaf; // CN=SAN=TGB_CLIENT_RSA_NAME, RSA-2048
    EVP_PKEY *client_rsa_key;
    X509 *client_ecdsa_leaf; // CN=SAN=TGB_CLIENT_ECDSA_NAME, ECDSA P-256
    EVP_PKEY *client_ecdsa_key;

    // A realistic chain for the policy benchmarks: |chain_leaf| (RSA-2048, CN=SAN=
    // TGB_CLIENT_RSA_NAME) issued by |chain_inter| (RSA-2048) issued by |ca|.
    X509 *chain_inter;
    X509 *chain_leaf;

    // The tlsgate side: tg_tls_init over the server certificate, trusting |ca|, accepting both
    // client names. |server.server| is the inbound context the handshake benchmarks use.
    struct tg_tls server;
    // The clients: tg_tls_init over each client certificate, accepting TGB_SERVER_NAME. Their
    // |client| contexts connect. |client_resume| is |client_rsa|'s twin with a client session
    // callback (tgb_capture_sessions) for the resumption benchmarks.
    struct tg_tls client_rsa;
    struct tg_tls client_ecdsa;
    struct tg_tls client_resume;
};

// tgb_world_init mints the PKI and builds the contexts. Returns 1 on success, 0 with a reason
// in |err|.
int tgb_world_init(struct tgb_world *w, char *err, size_t err_len);

// tgb_world_cleanup frees what |w| owns. Safe on a zeroed struct.
void tgb_world_cleanup(struct tgb_world *w);

// tgb_verify is the verify callback installed on every context: what the worker's
// tg_verify_peer does (tg_tls_peer_chain, then tg_policy_check_peer at the current time), less
// the logging. It records the verdict for tgb_last_verdict.
enum ssl_verify_result_t tgb_verify(SSL *ssl, uint8_t *out_alert);

// tgb_last_verdict returns the verdict of the last tgb_verify call on this thread.
enum tg_verdict tgb_last_verdict(void);

// The in-memory transport: a growable byte queue behind a custom BIO (the shape of the worker's
// BIO over io_uring buffers, without the ring). Reads from an empty queue ask to retry.

// tgb_pipe_new returns a BIO with one reference, over an empty queue. NULL on failure.
BIO *tgb_pipe_new(void);

// tgb_pipe_pending returns the number of bytes queued in |bio|.
size_t tgb_pipe_pending(BIO *bio);

// tgb_pipe_clear drops every byte queued in |bio|.
void tgb_pipe_clear(BIO *bio);

// tgb_conn is one client SSL and one server SSL connected by two pipes.
struct tgb_conn {
    SSL *client;
    SSL *server;
    BIO *c2s; // client -> server; borrowed (the two SSLs own it)
    BIO *s2c; // server -> client; borrowed
};

// tgb_conn_new makes a connection from |client_ctx| to |server_ctx|. With |max_version| not 0
// the client offers no version above it. Returns 1 on success; the caller calls tgb_conn_free.
int tgb_conn_new(struct tgb_conn *c, SSL_CTX *client_ctx, SSL_CTX *server_ctx,
                 uint16_t max_version);

// tgb_conn_handshake drives both sides until both have completed the handshake. Returns 1 on
// success, 0 with a reason in |err| (the policy verdict when that is what refused).
int tgb_conn_handshake(struct tgb_conn *c, char *err, size_t err_len);

// tgb_conn_free frees both SSLs and the pipes. Safe on a zeroed struct.
void tgb_conn_free(struct tgb_conn *c);

// tgb_capture_sessions makes the client |c| store each new session it receives into |*slot|
// (freeing the previous one). Only |client_resume| contexts have the callback that does it.
void tgb_capture_sessions(struct tgb_conn *c, SSL_SESSION **slot);

#endif // TLSGATE_BENCH_WORLD_H
