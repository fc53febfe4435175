#ifndef TLSGATE_SIPCONN_H
#define TLSGATE_SIPCONN_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/metrics.h"
#include "tlsgate/sip.h"
#include "tlsgate/siprw.h"

struct sockaddr;

// Per-connection SIP state of a `mode = sip` connection pair and the code that turns the
// plaintext arriving from either side into messages for the other side (or answers on the same
// side). No sockets and no TLS here: the worker hands bytes in and gets bytes out through
// tg_sipconn_io. Allocated only for SIP connections, so tcp-mode connections carry none of it.

// TG_SIPCONN_MAX_MESSAGE is the default bound on one message (head + body) and so on each
// input buffer: the listener's `sip_max_message`, kept in |rw.limits.max_message|.
#define TG_SIPCONN_MAX_MESSAGE 65536u

// TG_SIPCONN_SCRATCH_FOR is the size of the output scratch buffer tg_sipconn_process needs for
// messages of up to |max| bytes: more than one message, so the rewriter never reports
// TG_SIP_RW_NO_SPACE. TG_SIPCONN_SCRATCH is that for the default bound.
#define TG_SIPCONN_SCRATCH_FOR(max) ((max) + 1024u)
#define TG_SIPCONN_SCRATCH TG_SIPCONN_SCRATCH_FOR(TG_SIPCONN_MAX_MESSAGE)

// tg_sip_body is what the body hook decides for a message about to be forwarded.
enum tg_sip_body {
    TG_SIP_BODY_KEEP = 0, // forward as rewritten
    TG_SIP_BODY_REPLACE,  // forward with the body the hook wrote (Content-Length follows)
    TG_SIP_BODY_REFUSE,   // a request: not forwarded, answered with the hook's status (an
                          // ACK, or status 0: dropped); a response with status 0: dropped; a
                          // response with a status: failed back, i.e. replaced toward its
                          // destination by a response with that status and no body (a 2xx
                          // whose answer tlsgate cannot use becomes 488)
};

// tg_sip_body_fn is the body hook ([media] SDP anchoring; NULL without it). It sees each
// request and response once it has been rewritten and is about to go to the other side (a
// response only once its flow is known to be this connection), |from| the side it came from,
// its body at |buf| + |m->head_len|. It may write a new body into |out| (|cap| bytes; length in
// |*out_len|) or refuse the message with |*status| (488, 503, ...). |sent| (|sent_len| bytes) is
// the message as rewritten for the other side, before any new body: what a request tlsgate
// sends itself about it (a CANCEL) must repeat.
typedef enum tg_sip_body (*tg_sip_body_fn)(void *arg, enum tg_sip_side from,
                                           const struct tg_sip_msg *m, const uint8_t *buf,
                                           const uint8_t *sent, uint32_t sent_len, uint8_t *out,
                                           uint32_t cap, uint32_t *out_len, uint16_t *status);

// tg_sipconn_io is how processing reaches the worker: |can_send| says whether the queue toward
// |side| takes one more message now (no send in flight, under its bound, side up); |send|
// queues |len| bytes toward |side| and returns 1, or 0 when the connection failed (it is then
// closing and processing stops).
struct tg_sipconn_io {
    void *arg;
    int (*can_send)(void *arg, enum tg_sip_side side);
    int (*send)(void *arg, enum tg_sip_side side, const uint8_t *data, uint32_t len);
    struct tg_sip_flow self; // this connection (side unused)
    uint8_t *scratch;        // the worker's, |scratch_len| bytes: at least
                             // TG_SIPCONN_SCRATCH_FOR(the connection's max_message)
    uint32_t scratch_len;
    struct tg_listener_counters *ctr; // this listener's counters on this worker
    uint32_t conn_seq;                // for log lines: `conn=w<self.worker>-<conn_seq>`
    tg_sip_body_fn body;              // NULL: bodies pass as they came
    void *body_arg;
    uint8_t *body_buf; // the hook's output, |body_cap| bytes
    uint32_t body_cap;
};

// tg_sipconn is one connection pair's SIP state: an input buffer per side (taken on first use,
// given back when it empties), the bytes still to discard after an oversized message, the
// verified provider name and the rewriting context.
struct tg_sipconn {
    uint8_t *in[2]; // indexed by enum tg_sip_side
    uint32_t in_len[2];
    uint32_t skip[2];        // bytes of an oversized message still to drop as they arrive
    uint8_t blocked[2];      // the last processing of a side stopped on a busy queue
    uint8_t pong_wait;       // our CRLFCRLF ping went to the provider; cleared by its CRLF pong
    uint32_t provider_seen;  // ms (worker clock): last bytes received from or sent to the provider
    const char *peer_name;   // verified provider certificate name (borrowed from the
                             // policy of the SSL_CTX the connection's SSL holds), or NULL
    char inside_host[48];    // our address toward the PBX ("[v6]" bracketed)
    struct tg_sip_rw_cfg rw; // points at |inside_host| and the configuration's fqdn
};

// tg_sipconn_new allocates the state of one connection: |fqdn|:|fqdn_port| toward the provider,
// the instance secret |key| (16 bytes; the flow-token and tg-orig keys are derived from it, see
// tg_sip_rw_cfg_init). The inside address is set by tg_sipconn_set_inside; the message bound
// is TG_SIPCONN_MAX_MESSAGE until tg_sipconn_set_max_message changes it. NULL when memory is
// short.
struct tg_sipconn *tg_sipconn_new(const char *fqdn, uint16_t fqdn_port, const uint8_t key[16]);

// tg_sipconn_set_max_message sets the bound on one message (and on each input buffer) of a
// connection that has buffered nothing yet.
void tg_sipconn_set_max_message(struct tg_sipconn *sc, uint32_t max_message);

// tg_sipconn_free releases |sc| and its buffers. NULL is a no-op.
void tg_sipconn_free(struct tg_sipconn *sc);

// tg_sipconn_set_inside sets our address toward the PBX from a socket address.
void tg_sipconn_set_inside(struct tg_sipconn *sc, const struct sockaddr *sa);

// tg_sipconn_room returns how many more bytes side |side|'s input buffer takes now.
uint32_t tg_sipconn_room(const struct tg_sipconn *sc, enum tg_sip_side side);

// tg_sipconn_feed copies up to |len| bytes that arrived from |side| into its input buffer
// (dropping what an oversized message still owes first). Returns how many bytes it took (all
// but what does not fit), or -1 when memory is short.
long tg_sipconn_feed(struct tg_sipconn *sc, enum tg_sip_side side, const uint8_t *data,
                     uint32_t len);

// tg_sipconn_reserve returns where bytes from |side| may be written directly (|*out_room|
// bytes), for SSL_read; tg_sipconn_commit then accounts |n| of them. NULL when memory is short.
uint8_t *tg_sipconn_reserve(struct tg_sipconn *sc, enum tg_sip_side side, uint32_t *out_room);
void tg_sipconn_commit(struct tg_sipconn *sc, enum tg_sip_side side, uint32_t n);

// tg_sip_own_req is a request tlsgate sends in a dialog on its own account (the ACK and BYE of
// a call it ends itself, the CANCEL of an INVITE it relayed and the ACK of that INVITE's final
// failure): its Request-URI (the side's remote target), route set (the Route header value,
// |route_len| 0: none), From, To and Call-ID header values, CSeq, an optional Reason header
// value and an optional Via value (|via_len| 0: a fresh Via of tlsgate's; a CANCEL and the ACK
// of a non-2xx response repeat the top Via of the INVITE, RFC 3261 9.1, 17.1.1.3). Every
// string is borrowed and holds no CR or LF.
struct tg_sip_own_req {
    enum tg_sip_method method; // TG_SIP_M_ACK, TG_SIP_M_BYE or TG_SIP_M_CANCEL
    const char *ruri, *route, *from, *to, *call_id, *reason, *via;
    uint16_t ruri_len, route_len, from_len, to_len, call_id_len, via_len;
    uint32_t cseq;
};

// tg_sipconn_build_request writes the request |r| toward side |toward| of the connection pair
// |self| into |out| (|cap| bytes): |r->via| when given, else tlsgate's own Via (SIP/2.0/TLS
// fqdn:port toward the provider, SIP/2.0/TCP inside:port toward the PBX) with a branch, a flow
// token of |self| under transaction hash |txh|; either way the response comes back verified
// and, its Via being the only one, is absorbed (never forwarded); Max-Forwards 70;
// Content-Length 0.
// Returns 1 with |*out_len|, 0 when it does not fit, a string holds CR or LF, or the
// Request-URI is not "scheme:" then %x21-7E (tg_sip_sealable).
int tg_sipconn_build_request(const struct tg_sipconn *sc, enum tg_sip_side toward,
                             const struct tg_sip_flow *self, uint32_t txh,
                             const struct tg_sip_own_req *r, uint8_t *out, size_t cap,
                             size_t *out_len);

// tg_sipconn_result is what processing the input of one side came to.
enum tg_sipconn_result {
    TG_SIPCONN_IDLE = 0, // everything complete was handled; the rest needs more bytes
    TG_SIPCONN_BLOCKED,  // an output queue is busy: call again once it has room
    TG_SIPCONN_CLOSE,    // the stream cannot be resynchronised: close the pair
    TG_SIPCONN_FAILED,   // |io->send| failed: the connection is already closing
};

// tg_sipconn_process handles the complete messages buffered from |from|, in order: requests
// and responses rewritten and sent to the other side, keepalive pings answered, OPTIONS to us
// and refused messages answered on |from|, undeliverable responses dropped and counted.
enum tg_sipconn_result tg_sipconn_process(struct tg_sipconn *sc, enum tg_sip_side from,
                                          const struct tg_sipconn_io *io);

#endif // TLSGATE_SIPCONN_H
