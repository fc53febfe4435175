#ifndef TLSGATE_MEDIASIG_H
#define TLSGATE_MEDIASIG_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/calldir.h"
#include "tlsgate/media.h"
#include "tlsgate/mediaplan.h"
#include "tlsgate/sipconn.h"

// Call signalling for the media relay ([media] configured): the SIP body hook (tg_sip_body_fn)
// of every SIP connection of a worker, over the worker's dialog table and media sessions.
//   - INVITE, UPDATE, PRACK and ACK requests and 18x/2xx responses with an SDP body
//     (Content-Type application/sdp) are parsed and rewritten: toward the provider RTP/SAVP with
//     tlsgate's address and ports and a fresh a=crypto key per direction and per offer/answer
//     exchange (a repeated answer, 183 then 200, repeats its key); toward the PBX RTP/AVP with
//     no crypto. An offer from the provider whose crypto cannot be met is answered 488 (never
//     forwarded); a call over max_calls or out of ports 503; a malformed body 400.
//   - A re-INVITE re-keys (new keys both ways; the provider's previous key keeps verifying
//     until its new one does). Hold passes through (the held side gets no packets).
//   - BYE, CANCEL (before the 2xx), a final failure response to the initial INVITE, the media
//     timeout and the loss of the owning SIP connection end the call and free its ports.
// A call belongs to the worker (and connection pair) its initial INVITE came on, listed in the
// call directory shared by the workers. A request of it that arrives on another worker reaches
// the owner as a message (kind TG_KIND_DIALOG): a BYE or CANCEL ends the call there; a
// re-INVITE or UPDATE with an offer moves the call: the owner ends its media and the worker the
// request came to anchors it anew (new ports and keys on both sides, in that exchange).

struct tg_mediasig {
    struct tg_media media;
    struct tg_dialogs dialogs;
    const struct tg_config *cfg;
    struct tg_media_counters *ctr;
    unsigned worker;
    int media_ok, dialogs_ok;
    struct tg_calldir *dir; // shared by the workers (NULL: none)
    struct tg_loop *loop;
};

// tg_mediasig_arg is the hook's argument: the table and the connection pair.
struct tg_mediasig_arg {
    struct tg_mediasig *ms;
    uint32_t conn_slot, conn_gen;
};

// tg_mediasig_init sets up worker |worker|'s media state and dialog table on |loop|. Returns 0
// with a reason in |err|.
int tg_mediasig_init(struct tg_mediasig *ms, struct tg_loop *loop, const struct tg_config *cfg,
                     struct tg_media_counters *ctr, struct tg_calldir *dir, unsigned worker,
                     unsigned num_workers, char *err, size_t err_len);
void tg_mediasig_cleanup(struct tg_mediasig *ms);

// tg_mediasig_detach withdraws the worker from the call directory (at its exit, before its
// loop goes).
void tg_mediasig_detach(struct tg_mediasig *ms);

// tg_mediasig_tick runs the media timeouts (each ends its call).
void tg_mediasig_tick(struct tg_mediasig *ms);

// tg_mediasig_body is the SIP body hook; |arg| is a struct tg_mediasig_arg.
enum tg_sip_body tg_mediasig_body(void *arg, enum tg_sip_side from, const struct tg_sip_msg *m,
                                  const uint8_t *buf, uint8_t *out, uint32_t cap, uint32_t *out_len,
                                  uint16_t *status);

// tg_mediasig_conn_closed ends the calls of the connection pair |slot|/|gen|, which is going.
void tg_mediasig_conn_closed(struct tg_mediasig *ms, uint32_t slot, uint32_t gen);

#endif // TLSGATE_MEDIASIG_H
