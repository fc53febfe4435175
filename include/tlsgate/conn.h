#ifndef TLSGATE_CONN_H
#define TLSGATE_CONN_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "tlsgate/bufq.h"
#include "tlsgate/config.h"
#include "tlsgate/guard.h"
#include "tlsgate/loop.h"
#include "tlsgate/metrics.h"
#include "tlsgate/prober.h"
#include "tlsgate/resolver.h"
#include "tlsgate/sipconn.h"
#include "tlsgate/timer.h"
#include "tlsgate/tlsconn.h"
#include "tlsgate/verify.h"

// The connection layer of one worker: tg_conn, one proxied connection pair (the TLS socket
// toward the provider and the plain socket toward the PBX), and tg_conns, the table of a
// worker's connections with what they share. conn.c owns the life cycle, the relay of tcp
// mode and the step decision; upstream.c the far-side connect and failover; sipglue.c the SIP
// relay of mode = sip; probes.c the OPTIONS probe connections. The loop delivers completions
// of kind TG_KIND_CONN to tg_conn_on_cqe.

// Operations of kind TG_KIND_CONN (the op field of user_data).
enum tg_conn_op {
    TG_CONN_OP_RECV_TLS = 1,
    TG_CONN_OP_RECV_PLAIN,
    TG_CONN_OP_SEND_TLS,
    TG_CONN_OP_SEND_PLAIN,
    TG_CONN_OP_CONNECT,
    TG_CONN_OP_SIGNED, // a signer finished our key's signature (signer.h): posted, no socket
};

enum tg_conn_state {
    TG_CS_FREE = 0,
    TG_CS_CONNECTING, // outbound: connecting to a target, before TLS
    TG_CS_HANDSHAKE,
    TG_CS_OPEN,    // relaying (inbound: possibly still connecting to the backend)
    TG_CS_CLOSING, // waiting for the last completions before the slot is freed
};

enum tg_conn_flag {
    TG_F_TLS_RECV = 1u << 0,        // multishot recv armed on the TLS socket
    TG_F_TLS_RECV_CANCEL = 1u << 1, // ... and a cancel for it submitted
    TG_F_PLAIN_RECV = 1u << 2,
    TG_F_PLAIN_RECV_CANCEL = 1u << 3,
    TG_F_TLS_SENDING = 1u << 4, // (view only: tg_tlsio.out_busy holds it)
    TG_F_PLAIN_SENDING = 1u << 5,
    TG_F_TLS_RD_EOF = 1u << 6, // the TLS peer finished sending (close_notify or TCP FIN)
    TG_F_PLAIN_RD_EOF = 1u << 7,
    TG_F_TLS_SHUT_SENT = 1u << 8, // our close_notify is queued
    TG_F_TLS_WR_DONE = 1u << 9,   // ... sent and SHUT_WR done
    TG_F_PLAIN_WR_DONE = 1u << 10,
    TG_F_PLAIN_UP = 1u << 11,    // the plain socket is connected (always, for outbound)
    TG_F_TLS_UP = 1u << 12,      // the TLS socket is connected (always, for inbound)
    TG_F_TCP_EOF = 1u << 13,     // (view only: tg_tlsio.eof holds it) TCP FIN on TLS socket
    TG_F_FATAL_FLUSH = 1u << 14, // close once our close_notify has been sent
    TG_F_RETRY = 1u << 15,       // outbound: tear down this target's socket, try the next
    TG_F_SIP_CLOSE = 1u << 16,   // mode = sip: a stream could not be resynchronised
    TG_F_PROBE = 1u << 17,       // tlsgate's own OPTIONS connection to a target: no plain side
    TG_F_NOBUFS = 1u << 18,      // a receive found no provided buffer: re-armed at the tick
    TG_F_GUARDED = 1u << 19,     // holds an admission slot (guard.h) until authenticated
    TG_F_COUNTED = 1u << 20,     // counted in its listener's connections (guard.h)
};

// tg_conn is one proxied connection. Narrow fields: memory per connection is a product
// feature. The TLS endpoint (SSL, ciphertext queue, socket, identity) is |tio|.
struct tg_conn {
    struct tg_tlsio tio;       // .fd is the TLS socket, .seq the id in `conn=w<worker>-<seq>`
    struct tg_bufq to_plain;   // plaintext waiting to go out on the plain socket
    struct tg_bufq pend_tls;   // ciphertext received but not yet decrypted (backpressure)
    struct tg_bufq pend_plain; // plaintext received but not yet encrypted (backpressure)
    struct tg_timer timer;     // in the handshake lane, then the idle lane
    int plain_fd;
    uint32_t flags;
    uint8_t state;
    uint8_t target;   // outbound: index of the connect target in use
    uint8_t inflight; // submitted operations whose last completion has not arrived
    uint8_t connect_failures;
    uint16_t guard_bucket;   // the admission bucket of its source address (TG_F_GUARDED)
    uint32_t chain_start;    // ms: outbound, when the first attempt started
    uint8_t entry;           // outbound: index of the address in use in |dns|'s listener list
    uint32_t tried;          // outbound: addresses this connection has tried (bit per entry)
    struct tg_dns_hold *dns; // outbound: the resolver snapshot its attempts walk (a user of it)
};

_Static_assert(TG_MAX_TARGETS <= 256, "targets fit tg_conn.target");
_Static_assert(TG_DNS_MAX_ENTRIES <= 32, "addresses fit tg_conn.tried");

struct tg_probes;

// tg_conns is one worker's connection table and what its connections share.
struct tg_mediasig;

struct tg_conns {
    struct tg_loop *loop;
    const struct tg_config *cfg;
    struct tg_metrics *metrics;
    struct tg_listener_counters *ctr; // this worker's, per listener
    unsigned worker_id;
    struct tg_slab slab; // of struct tg_conn
    uint32_t next_seq;
    struct tg_tlane hs_lane;      // handshake_timeout_ms: inbound handshakes and backend connects
    struct tg_tlane attempt_lane; // outbound attempts: explicit deadlines (upstream.c)
    struct tg_tlane idle_lane;    // idle_timeout_ms (0: never)
    struct tg_bufcache bc;        // queues of buffer_size and of tls_qsize bytes
    uint32_t tls_qsize;           // allocation of a ciphertext queue: buffer_size + slack
    struct tg_tlsenv tlsenv;
    struct tg_verifier verifier;
    SSL_CTX *server_ctx; // the generation new connections start on (one reference)
    SSL_CTX *client_ctx;
    // mode = sip only (NULL when no listener is): per-slot SIP state, taken by SIP connections
    // alone, and the rewriter's output buffer.
    struct tg_sipconn **sip;
    uint8_t *sip_scratch;
    uint32_t sip_scratch_len;
    // [media] only (NULL otherwise): the worker's calls and media sessions, and the SDP
    // writer's output buffer of the body hook.
    struct tg_mediasig *msig;
    uint8_t *sip_body;
    const uint8_t *sip_key;   // flow-token key (16 bytes)
    uint32_t next_keepalive;  // ms: next scan for idle provider sides
    uint32_t num_nobufs;      // connections flagged TG_F_NOBUFS
    struct tg_probes *probes; // worker 0 with probed listeners; else NULL
    struct tg_dns_view *dns;  // the worker's view of the connect targets' addresses
    struct tg_guard *guard;   // admission control shared by the workers (may be NULL)
    uint32_t hs_budget;       // this worker's share of max_handshakes
    uint32_t hs_inflight;     // inbound handshakes in progress holding a share
    int draining;
};

// TG_BUF_GROUP is the provided-buffer group of TCP receives: BUF_COUNT buffers of BUF_SIZE.
// A buffer holds one whole TLS record (16 KiB of plaintext + 29 bytes of header, nonce and
// tag at most) and the next one's header: with exactly 16 KiB, a full record took two receives
// (16,384 bytes, then 22), two loop turns and a second BoringSSL call for its tail; bulk CPU
// per byte fell 17 % with the margin (docs/PERFORMANCE.md, "Small records and bulk").
#define TG_BUF_GROUP 0
#define TG_BUF_SIZE (16384u + 512u)
#define TG_BUF_COUNT 1024u

// tg_conns_init sets up the table of |max_conns| connections. Returns 0 when memory is short.
int tg_conns_init(struct tg_conns *cs, struct tg_loop *loop, const struct tg_config *cfg,
                  struct tg_metrics *metrics, unsigned worker_id, uint32_t max_conns,
                  SSL_CTX *server, SSL_CTX *client, const uint8_t *sip_key,
                  struct tg_peer_ring *peers, struct tg_guard *guard);

// tg_conns_cleanup frees every connection still there and what the table holds.
void tg_conns_cleanup(struct tg_conns *cs);

// tg_conns_kind is the dispatch entry of TG_KIND_CONN.
void tg_conns_kind(struct tg_conns *cs, struct tg_kind_ops *out);

// tg_conn_accepted takes a socket accepted on |listener|. |ctr| counts it.
void tg_conn_accepted(struct tg_conns *cs, uint32_t listener, int fd);

// tg_conns_expire closes connections whose handshake or idle deadline has passed.
void tg_conns_expire(struct tg_conns *cs);

// tg_conns_close_all closes every open connection (the drain deadline has passed).
void tg_conns_close_all(struct tg_conns *cs);

static inline uint32_t tg_conns_active(const struct tg_conns *cs) {
    return cs->slab.num_active;
}

// --- For the connection layer's own modules (upstream.c, sipglue.c, probes.c) ---------------

static inline uint32_t tg_conn_slot(const struct tg_conns *cs, const struct tg_conn *c) {
    return tg_slab_index(&cs->slab, c);
}
static inline uint32_t tg_conn_gen(const struct tg_conns *cs, const struct tg_conn *c) {
    return tg_slab_gen(&cs->slab, tg_conn_slot(cs, c));
}
static inline uint64_t tg_conn_ud(const struct tg_conns *cs, const struct tg_conn *c,
                                  enum tg_conn_op op) {
    return tg_ud(TG_KIND_CONN, op, tg_conn_slot(cs, c), tg_conn_gen(cs, c));
}
static inline const struct tg_listener_conf *tg_conn_lconf(const struct tg_conns *cs,
                                                           const struct tg_conn *c) {
    return &cs->cfg->listeners[c->tio.listener];
}
static inline int tg_conn_inbound(const struct tg_conns *cs, const struct tg_conn *c) {
    return tg_conn_lconf(cs, c)->direction == TG_INBOUND;
}
// tg_conn_sip returns the SIP state of a mode = sip connection, NULL for a tcp one.
static inline struct tg_sipconn *tg_conn_sip(const struct tg_conns *cs, const struct tg_conn *c) {
    return cs->sip != NULL ? cs->sip[tg_conn_slot(cs, c)] : NULL;
}

// tg_conn_alloc takes a free slot (NULL when there is none).
struct tg_conn *tg_conn_alloc(struct tg_conns *cs);

// tg_conn_close tears the connection down: every operation is cancelled, and tg_conn_reap
// frees the slot once the last completion has arrived. It never frees, so callers deep in the
// data path may still look at |c| after calling it.
void tg_conn_close(struct tg_conns *cs, struct tg_conn *c, const char *why);

// tg_conn_reap runs at the end of every event handler: a closing connection with nothing in
// flight is freed; an outbound one whose target was refused moves to the next target.
void tg_conn_reap(struct tg_conns *cs, struct tg_conn *c);

// tg_conn_fatal ends a connection whose plain side failed: the TLS peer gets a close_notify
// (closed cleanly, not reset), then everything is closed.
void tg_conn_fatal(struct tg_conns *cs, struct tg_conn *c, const char *why);

// tg_conn_step brings the connection's operations in line with its state (tg_conn_decide).
void tg_conn_step(struct tg_conns *cs, struct tg_conn *c);

// tg_conn_handshake_failed decides, for a failed handshake, what happens next.
void tg_conn_handshake_failed(struct tg_conns *cs, struct tg_conn *c, enum tg_verdict v,
                              const char *detail);

// tg_conn_start_tls makes the SSL of |c| (server for inbound) and enters the handshake.
int tg_conn_start_tls(struct tg_conns *cs, struct tg_conn *c, int server);

// tg_conn_client_hello starts the client handshake of an outbound connection whose TCP
// connection is up (the ClientHello goes into the ciphertext queue).
void tg_conn_client_hello(struct tg_conns *cs, struct tg_conn *c);

// tg_conn_tls_failed ends a connection whose TLS stream broke (a protocol error, a refused
// renegotiation): an alert BoringSSL queued goes out first, within the handshake timeout, then
// the connection closes. The error has been logged.
void tg_conn_tls_failed(struct tg_conns *cs, struct tg_conn *c, const char *why);

// tg_conn_touch notes activity on |c| for its idle timeout.
void tg_conn_touch(struct tg_conns *cs, struct tg_conn *c);

// tg_conns_rearm_nobufs re-arms the receives that found no provided buffer.
void tg_conns_rearm_nobufs(struct tg_conns *cs);

// tg_conn_sockopts sets the options of a connection's socket: TCP_NODELAY, and the kernel
// buffers when `socket_buffer` caps them (a peer that never reads otherwise makes the kernel
// grow our send buffer, and the far side our receive buffer, to their autotuned maximum).
void tg_conn_sockopts(const struct tg_conns *cs, int fd);

// tg_conn_log_tls_error logs the TLS error queue of a connection.
void tg_conn_log_tls_error(struct tg_conns *cs, struct tg_conn *c);

// --- The step decision: pure, table-tested ----------------------------------------------------

// tg_conn_view is what the step decision looks at.
struct tg_conn_view {
    uint8_t state;
    uint32_t flags; // tg_conn.flags, plus TG_F_TLS_SENDING and TG_F_TCP_EOF from tg_tlsio
    uint32_t to_tls, to_plain, pend_tls, pend_plain; // queued bytes
    uint32_t cap;                                    // buffer_size: the bound of each queue
    uint8_t sip_wait_pbx, sip_wait_prov;             // complete SIP messages wait for a queue
};

// tg_conn_action is one thing the step does; tg_conn_decide returns the first one due, the
// step does it and asks again until TG_ACT_NONE (or a close).
enum tg_conn_action {
    TG_ACT_NONE = 0,
    TG_ACT_TLS_SHUTDOWN,   // queue our close_notify (the plain side finished)
    TG_ACT_SEND_TLS,       // send what to_tls holds
    TG_ACT_SEND_PLAIN,     // send what to_plain holds
    TG_ACT_CLOSE_FLUSHED,  // a fatal close whose close_notify has gone out
    TG_ACT_TLS_WR_SHUT,    // SHUT_WR on the TLS socket after our close_notify
    TG_ACT_PLAIN_WR_SHUT,  // SHUT_WR on the plain socket after the TLS side finished
    TG_ACT_CLOSE_FINISHED, // both directions are done
    TG_ACT_ARM_TLS_RECV,
    TG_ACT_CANCEL_TLS_RECV,
    TG_ACT_ARM_PLAIN_RECV,
    TG_ACT_CANCEL_PLAIN_RECV,
};

enum tg_conn_action tg_conn_decide(const struct tg_conn_view *v);

// tg_conn_action_name names an action (tests and debug logs).
const char *tg_conn_action_name(enum tg_conn_action a);

#endif // TLSGATE_CONN_H
