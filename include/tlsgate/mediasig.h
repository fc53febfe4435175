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
//   - Calls tlsgate ends itself, it ends on both sides, as a UA would (RFC 3261 12.2.1, 13.3.1.4,
//     15): on the media timeout a BYE goes to each side of a confirmed call (Reason: SIP;
//     cause=408), built from the dialog's identity (tg_dialog_id: From/To, each side's Contact
//     and route set, a CSeq above the last of the side it speaks for) with a Via of tlsgate's
//     whose answer is absorbed. A 2xx to an INVITE whose SDP tlsgate cannot use (no acceptable
//     crypto, malformed) is failed back: its destination gets 488 instead (the ACK it then sends
//     for that non-2xx is absorbed), its sender, whose dialog is now confirmed and who
//     retransmits the 2xx until it is ACKed, gets tlsgate's ACK then a BYE (Reason: SIP;
//     cause=488); a re-INVITE answered so ends the whole call, so the other side gets a BYE too.
//     A retransmitted 2xx is ACKed again, never forwarded. Such a call is counted
//     (tlsgate_media_answers_failed_total), its ports freed at once; its dialog stays in the
//     table, without media, until those requests are out and the late messages absorbed.
//     An 18x to the initial INVITE whose SDP tlsgate cannot use is failed back at once: its
//     destination gets 488 instead (its ACK absorbed), its sender a CANCEL of the INVITE
//     (RFC 3261 9.1: the INVITE's Request-URI, top Via (tlsgate's), Route, From, To and CSeq
//     number, kept from the INVITE as tlsgate sent it: tg_dialog_id_invite). The 200 to the
//     CANCEL comes back to tlsgate alone (its Via is the only one) and is absorbed; the INVITE's
//     487 and any other response to it are absorbed, the 487 ACKed by tlsgate hop by hop
//     (17.1.1.3); a 2xx that crossed the CANCEL is ACKed and its dialog ended with a BYE, as
//     above. The call waits for that final response (GIVE_UP_MS at most). An 18x to a
//     re-INVITE, or to an INVITE that could not be kept (too large), is dropped as before
//     (without 100rel the 2xx repeats its answer, and is failed back).
// A call belongs to the worker (and connection pair) its initial INVITE came on, listed in the
// call directory shared by the workers. A request of it that arrives on another worker reaches
// the owner as a message (kind TG_KIND_DIALOG): a BYE or CANCEL ends the call there; a
// re-INVITE (with an offer, or without one: the 2xx brings it) or an UPDATE with an offer moves
// the call: the owner ends its media and the worker the request came to anchors it anew (new
// ports and keys on both sides, in that exchange). An ACK or PRACK with SDP carries the answer
// to an offer the owner rewrote (its ports and key), which no other worker can apply and which
// no message between workers carries: it goes no further (ACK dropped, PRACK 481), and the
// owner, told so (OP_ANSWER), ends the call on both sides as for an answer it cannot use.

// tg_mediasig_send_fn sends tlsgate's own request |r| toward |toward| on the connection pair
// |conn_slot|/|conn_gen| (not from inside that pair's processing). Returns 1 when it went out,
// 0 when its queue is busy (tried again at the next tick), -1 when the pair is gone.
typedef int (*tg_mediasig_send_fn)(void *arg, uint32_t conn_slot, uint32_t conn_gen,
                                   enum tg_sip_side toward, const struct tg_sip_own_req *r);

struct tg_mediasig {
    struct tg_media media;
    struct tg_dialogs dialogs;
    const struct tg_config *cfg;
    struct tg_media_counters *ctr;
    unsigned worker;
    int media_ok, dialogs_ok;
    struct tg_calldir *dir; // shared by the workers (NULL: none)
    struct tg_loop *loop;
    tg_mediasig_send_fn send_own; // NULL: tlsgate sends nothing of its own
    void *send_arg;
    uint32_t num_ending; // dialogs lingering after tlsgate ended their call
};

// tg_mediasig_arg is the hook's argument: the table, the connection pair and its rewriting
// context (our addresses, to tell our own Record-Route entries; NULL: none known).
struct tg_mediasig_arg {
    struct tg_mediasig *ms;
    uint32_t conn_slot, conn_gen;
    const struct tg_sip_rw_cfg *rw;
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

// tg_mediasig_tick runs the media timeouts (each ends its call), sends the requests tlsgate
// owes the sides of calls it ended, and forgets those calls once done.
void tg_mediasig_tick(struct tg_mediasig *ms);

// tg_mediasig_body is the SIP body hook; |arg| is a struct tg_mediasig_arg.
enum tg_sip_body tg_mediasig_body(void *arg, enum tg_sip_side from, const struct tg_sip_msg *m,
                                  const uint8_t *buf, const uint8_t *sent, uint32_t sent_len,
                                  uint8_t *out, uint32_t cap, uint32_t *out_len, uint16_t *status);

// tg_mediasig_conn_closed ends the calls of the connection pair |slot|/|gen|, which is going.
void tg_mediasig_conn_closed(struct tg_mediasig *ms, uint32_t slot, uint32_t gen);

#endif // TLSGATE_MEDIASIG_H
