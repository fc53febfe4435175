#ifndef TLSGATE_TLSCONN_H
#define TLSGATE_TLSCONN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "tlsgate/bufq.h"
#include "tlsgate/policy.h"

// The TLS layer of a connection, with no sockets: BoringSSL reads ciphertext from |in| (a
// provided buffer or a pending queue, never copied) through a custom BIO and writes ciphertext
// straight into |out|. The socket layer (conn.c) moves bytes between the kernel and these two;
// a test can move them between two endpoints in memory. The one classification of SSL results
// lives here.

struct tg_verifier;
struct tg_loop;
struct tg_sign_req;

// tg_tlsenv is what the connections of one worker share: the buffer cache their ciphertext
// queues come from, the size of such a queue, and the peer verifier (verify.h).
struct tg_tlsenv {
    struct tg_bufcache *bc;
    uint32_t out_size;
    struct tg_verifier *verifier;
    unsigned worker_id; // for log lines: `conn=w<worker_id>-<seq>`
    const char *(*label)(const void *arg, uint16_t listener); // listener name for log lines
    const void *label_arg;
    struct tg_loop *loop; // where signatures complete (signer.h); NULL: our key signs inline
};

// tg_tlsio is one TLS endpoint. The SSL's app data points here.
struct tg_tlsio {
    SSL *ssl;
    const struct tg_tlsenv *env;
    const uint8_t *in; // ciphertext BoringSSL may read now
    uint32_t in_len;
    // outbound: the one name the peer must carry (a target's DNS host or `=NAME`; borrowed
    // from the configuration, which outlives the connection); NULL: the policy's peer_names
    const char *expect_name;
    struct tg_bufq out;    // ciphertext waiting to be sent
    const char *peer_name; // the verified peer name (borrowed from the policy of the SSL's
                           // context, which the SSL keeps alive, or |expect_name|), NULL
                           // before verification
    uint32_t seq;          // connection id within the worker
    int fd;                // the socket the records travel on (-1 when none): log lines only
    uint16_t listener;
    uint8_t eof;              // no more ciphertext will come (TCP FIN)
    uint8_t out_busy;         // a send from |out| is in flight: its bytes may not move
    uint8_t verdict;          // enum tg_verdict of the peer verification (TG_VERDICT_OK until one)
    uint8_t sign_new;         // a signature was queued since the owner last looked (signer.h)
    uint8_t sign_busy;        // a signature was refused: the signer queue was full
    uint64_t sign_ud;         // the user_data its completion carries
    struct tg_sign_req *sign; // the signature request, once one was made; freed with the SSL
};

// tg_tls_status is the one classification of what an SSL call came to.
enum tg_tls_status {
    TG_TLS_OK = 0, // done (some bytes for a read or write)
    TG_TLS_WANT,   // waiting for ciphertext to arrive, or for room in |out|
    TG_TLS_EOF,    // the peer finished sending: close_notify, or FIN without one
    TG_TLS_ERROR,  // a protocol or library error: the connection is lost
};

// tg_tlsio_init makes the SSL of |t| from |ctx| as a server or a client; a client sends
// |sni| (NULL or an IP literal: no SNI). |t|'s other fields are left as they are. Returns 0
// when memory is short.
int tg_tlsio_init(struct tg_tlsio *t, const struct tg_tlsenv *env, SSL_CTX *ctx, int server,
                  const char *sni);

// tg_tlsio_drop frees the SSL and the ciphertext queue, leaving |t| ready for another
// tg_tlsio_init (outbound failover).
void tg_tlsio_drop(struct tg_tlsio *t);

// tg_tlsio_from_ssl returns the endpoint an SSL belongs to.
static inline struct tg_tlsio *tg_tlsio_from_ssl(const SSL *ssl) {
    return SSL_get_app_data(ssl);
}

// tg_tls_classify classifies the return value |ret| of SSL_read or SSL_write on |t|.
enum tg_tls_status tg_tls_classify(const struct tg_tlsio *t, int ret);

// tg_tls_handshake advances the handshake: TG_TLS_OK when it has completed, TG_TLS_WANT while
// it waits for the peer's bytes, TG_TLS_ERROR when it failed (see tg_tls_handshake_verdict).
// A flight that does not fit |out| (a send in flight and the queue full) is a failure too:
// the queue holds a whole flight (buffer_size + a record), so only a broken peer gets there.
enum tg_tls_status tg_tls_handshake(struct tg_tlsio *t, int *out_ret);

// tg_tls_handshake_verdict says why a handshake whose SSL_do_handshake returned |ret| failed:
// the verify callback's verdict if it refused the peer, else no certificate, peer closed or
// handshake error. The library's reason goes to |detail|.
enum tg_verdict tg_tls_handshake_verdict(struct tg_tlsio *t, int ret, char *detail,
                                         size_t detail_len);

// tg_tls_read decrypts up to |room| bytes into |dst|: TG_TLS_OK with the count in |*out_n|,
// or another status (the error queue is cleared for TG_TLS_EOF).
enum tg_tls_status tg_tls_read(struct tg_tlsio *t, uint8_t *dst, uint32_t room, uint32_t *out_n);

// TG_TLS_CHUNK is the plaintext sealed per record; TG_TLS_RECORD_OVERHEAD bounds what sealing
// adds to one record (header, tag, padding).
#define TG_TLS_CHUNK 16384u
#define TG_TLS_RECORD_OVERHEAD 256u

// tg_tls_seal seals plaintext into |out| while it holds fewer than |cap| bytes, never moving
// queued bytes for a record. |*out_done| receives how many plaintext bytes were taken.
// TG_TLS_OK or TG_TLS_WANT (stopped on a full queue) leave the connection usable.
enum tg_tls_status tg_tls_seal(struct tg_tlsio *t, const uint8_t *data, uint32_t len, uint32_t cap,
                               uint32_t *out_done);

// tg_tls_write_all seals all |len| bytes (one message) into |out|. Returns 0 on failure.
int tg_tls_write_all(struct tg_tlsio *t, const uint8_t *data, uint32_t len);

// tg_tls_err_str takes the oldest error off the queue as a short reason ("-" when none) and
// clears the rest.
void tg_tls_err_str(char *out, size_t out_len);

// tg_peer_str writes the peer address of socket |fd| as `HOST:PORT` ("-" when unknown), for
// log lines.
void tg_peer_str(int fd, char *out, size_t out_len);

#endif // TLSGATE_TLSCONN_H
