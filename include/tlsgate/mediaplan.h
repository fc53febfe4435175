#ifndef TLSGATE_MEDIAPLAN_H
#define TLSGATE_MEDIAPLAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsgate/loop.h"
#include "tlsgate/sdp.h"
#include "tlsgate/sip.h"

// The pure parts of media anchoring: the port allocator of a worker's slice, the dialog table
// (calls by Call-ID, with their media streams), and the offer/answer decisions (which crypto
// line, which streams are relayed, 488, hold). No I/O, no clock, no lock: media.c and
// mediasig.c act on what these decide.

// ---------------------------------------------------------------------------------------------
// Port allocator (pure).

// tg_portalloc hands out even ports (RTP; RTCP is port + 1) of one worker's slice of the range.
// Taking is next-fit from a cursor, so a freed pair is reused as late as possible: a port a
// cancelled receive may still hold for a moment, and a late packet of an ended call, meet a new
// call only after the whole slice has been used.
struct tg_portalloc {
    uint16_t base;   // first RTP port of the slice
    uint32_t pairs;  // pairs in the slice
    uint32_t next;   // cursor (pair index)
    uint32_t in_use; // pairs taken
    uint8_t *used;   // per pair
};

// tg_portalloc_slice computes worker |worker|'s slice of [min, max] among |num_workers|:
// disjoint slices of whole pairs, every pair in one. Returns the number of pairs (0: none).
uint32_t tg_portalloc_slice(uint16_t min, uint16_t max, unsigned worker, unsigned num_workers,
                            uint16_t *out_base);

// tg_portalloc_init sets |pa| up for |pairs| pairs from |base|. Returns 0 when memory is short.
int tg_portalloc_init(struct tg_portalloc *pa, uint16_t base, uint32_t pairs);
void tg_portalloc_cleanup(struct tg_portalloc *pa);

// tg_portalloc_take returns a free RTP port (even), or 0 when the slice is exhausted.
uint16_t tg_portalloc_take(struct tg_portalloc *pa);

// tg_portalloc_give returns |port| (taken from |pa|); anything else is ignored.
void tg_portalloc_give(struct tg_portalloc *pa, uint16_t port);

// ---------------------------------------------------------------------------------------------
// Dialog table.

#define TG_DIALOG_STREAMS 4 // m= sections relayed per call; later ones are declined (port 0)
#define TG_CALL_ID_MAX 256  // longer Call-IDs are refused (400)

enum tg_dlg_side { TG_DLG_NONE = 0, TG_DLG_PROVIDER, TG_DLG_PBX };

// tg_dstream is one relayed m= section of a call.
struct tg_dstream {
    uint32_t slot, gen;        // media session (slot TG_NIL: none)
    uint8_t suite;             // enum tg_srtp_suite toward the provider (the offer's, then in use)
    uint32_t tag;              // a=crypto tag of the provider's offer (answered with the same tag)
    uint8_t prov_mux, pbx_mux; // a=rtcp-mux in that side's last SDP
    // tlsgate's crypto toward the provider and the CSeq it was made for: a repeated answer
    // (183 then 200 to one INVITE) carries the same key, a new exchange a fresh one.
    struct tg_sdp_crypto ours;
    uint32_t ours_cseq;
    uint8_t ours_valid;
};

// TG_DIALOG_ID_MAX bounds what a call keeps for the requests tlsgate sends in it on its own
// (the BYEs of a media timeout, the ACK and BYE of an answer it cannot use, the CANCEL of an
// INVITE whose 18x it cannot use): From and To of the dialog, each side's remote target (its
// Contact URI) and route set, and the initial INVITE as tlsgate sent it (Request-URI, top Via,
// Route, From, To). A call whose identity does not fit gets no request of tlsgate's (it still
// ends inside tlsgate; logged).
#define TG_DIALOG_ID_MAX 1536

enum tg_did_field {
    TG_DID_FROM = 0,    // From of the dialog's requests from the caller (with its tag)
    TG_DID_TO,          // To of them (with the callee's tag)
    TG_DID_TARGET_PROV, // the provider's remote target (its Contact URI)
    TG_DID_TARGET_PBX,  // the PBX's
    TG_DID_ROUTE_PROV,  // the Route value toward the provider (the proxies beyond tlsgate)
    TG_DID_ROUTE_PBX,   // toward the PBX
    TG_DID_INV_RURI,    // the initial INVITE as tlsgate sent it: its Request-URI,
    TG_DID_INV_VIA,     // its top Via (tlsgate's),
    TG_DID_INV_ROUTE,   // its Route entries (empty: none),
    TG_DID_INV_FROM,    // its From
    TG_DID_INV_TO,      // and its To (no tag)
    TG_DID_NUM
};

// tg_dialog_id is what tlsgate knows of a dialog to speak in it itself: the fields above in one
// bounded buffer, which side called, and the highest CSeq seen in a request from each side (a
// request tlsgate sends on behalf of one side must go above it).
struct tg_dialog_id {
    uint16_t off[TG_DID_NUM], len[TG_DID_NUM];
    uint16_t used;
    uint8_t caller;   // enum tg_dlg_side that sent the initial INVITE
    uint8_t complete; // the 2xx to the initial INVITE filled it in
    uint8_t overflow; // a field did not fit: no request of tlsgate's in this call
    uint8_t invite;   // the TG_DID_INV_* fields are stored: tlsgate can CANCEL that INVITE
    uint32_t cseq[2]; // [side - 1]
    char buf[TG_DIALOG_ID_MAX];
};

// tg_dialog_id_set stores |len| bytes at |v| as field |f| (each field is stored once; a second
// call replaces it only when it fits). Returns 0 (and sets |overflow|) when it does not fit.
int tg_dialog_id_set(struct tg_dialog_id *id, enum tg_did_field f, const char *v, size_t len);

// tg_dialog_id_get returns field |f| and its length in |*len| (empty when unset).
const char *tg_dialog_id_get(const struct tg_dialog_id *id, enum tg_did_field f, uint16_t *len);

// tg_dialog_id_caller records, from the initial INVITE |m| (scanned from |buf|), which side
// called, its CSeq and its remote target (the Contact's URI).
void tg_dialog_id_caller(struct tg_dialog_id *id, enum tg_dlg_side caller, uint32_t cseq,
                         const struct tg_sip_msg *m, const uint8_t *buf);

// tg_dialog_id_invite stores, from the initial INVITE |m| as tlsgate sent it (scanned from
// |buf|), what a CANCEL of it and the ACK of its final failure repeat (RFC 3261 9.1, 17.1.1.3):
// the Request-URI, the top Via, the Route entries, From and To; and sets |invite|. Returns 0,
// storing nothing (neither |invite| nor |overflow| set), when they do not fit, the top Via line
// holds more than one value, or the Request-URI is not tg_sip_sealable.
int tg_dialog_id_invite(struct tg_dialog_id *id, const struct tg_sip_msg *m, const uint8_t *buf);

// tg_dialog_id_answer completes |id| (once) from the 2xx |m| of |callee| to the initial INVITE:
// From and To (with both tags), the callee's Contact URI, and the route sets, split at
// tlsgate's own Record-Route entry (the first whose host is |ours|, our address on the
// callee's side; NULL: none known): the entries before it lead to the callee (reversed, as its
// UAC would hold them: RFC 3261 12.1.2), those after it to the caller (in order, 12.1.1). No
// entry of ours: no route sets. A target URI that cannot stand in a start line (not
// tg_sip_sealable), more than 16 entries or more than TG_DIALOG_ID_MAX bytes set |overflow|.
void tg_dialog_id_answer(struct tg_dialog_id *id, enum tg_dlg_side callee,
                         const struct tg_sip_msg *m, const uint8_t *buf, const char *ours);

// tg_dialog_id_refresh replaces |side|'s remote target with the Contact URI of |m|, a target
// refresh that side sent (a re-INVITE or UPDATE) or the 2xx with which it answered one (RFC 3261
// 12.2.1.2, 12.2.2). No Contact: the target stays. A Contact whose URI cannot stand in a start
// line, or one that does not fit, sets |overflow| (the old target is stale) and leaves the
// stored fields as they were.
void tg_dialog_id_refresh(struct tg_dialog_id *id, enum tg_dlg_side side,
                          const struct tg_sip_msg *m, const uint8_t *buf);

// Requests tlsgate still owes the sides of a call it ended itself (tg_dialog.pending).
enum {
    TG_OWN_ACK = 1,       // the ACK of the 2xx whose answer could not be used (toward fail_side)
    TG_OWN_BYE_PROV = 2,  // a BYE toward the provider
    TG_OWN_BYE_PBX = 4,   // a BYE toward the PBX
    TG_OWN_CANCEL = 8,    // the CANCEL of the initial INVITE whose 18x could not be used
    TG_OWN_ACK_FINAL = 16 // the ACK of that INVITE's final failure (487), hop by hop
};

// tg_dialog is one call: its Call-ID, the connection pair that owns it, the offer/answer state
// and the streams.
struct tg_dialog {
    uint32_t hnext;               // hash chain (TG_NIL ends it)
    uint32_t conn_slot, conn_gen; // the connection pair whose SIP made it
    uint32_t invite_cseq;         // CSeq of the INVITE in progress
    uint8_t invite_offer;         // that INVITE carried an offer (its responses carry answers)
    uint8_t confirmed;            // a 2xx to the initial INVITE went through
    uint8_t offer_from;           // enum tg_dlg_side whose offer awaits its answer
    uint8_t has_call;             // holds one of the media module's call slots
    uint64_t dir_hash;            // its key in the call directory (0: not listed)
    // A call tlsgate ended itself stays in the table, its media gone, until its own requests
    // are out and the peers' late messages of it (a 2xx retransmitted until ACKed, the ACK of
    // the failed-back response) have been absorbed: |ending| set.
    uint8_t ending;
    uint8_t pending;    // TG_OWN_* still to send
    uint8_t fail_side;  // enum tg_dlg_side whose 2xx tlsgate could not use (0: none)
    uint8_t why;        // enum of mediasig: the Reason of its BYEs
    uint8_t cancelled;  // 1: tlsgate CANCELled the INVITE toward fail_side, its final response
                        // awaited; 2: that response came (and is ACKed)
    uint32_t fail_cseq; // that INVITE's CSeq: its ACK from the other side is absorbed
    uint32_t ended_at;  // loop ms when tlsgate ended the call
    struct tg_dialog_id id;
    uint16_t call_id_len;
    char call_id[TG_CALL_ID_MAX];
    struct tg_dstream st[TG_DIALOG_STREAMS];
};

struct tg_dialogs {
    struct tg_slab slab; // of struct tg_dialog
    uint32_t *buckets;
    uint32_t mask;
    uint64_t key[2]; // SipHash key: Call-IDs come from the network
};

// tg_dialogs_init makes a table of |cap| dialogs keyed with |key|. Returns 0 when memory is
// short.
int tg_dialogs_init(struct tg_dialogs *t, uint32_t cap, const uint64_t key[2]);
void tg_dialogs_cleanup(struct tg_dialogs *t);

// tg_dialog_find returns the dialog of Call-ID |cid| (|len| bytes), or NULL.
struct tg_dialog *tg_dialog_find(struct tg_dialogs *t, const char *cid, size_t len);

// tg_dialog_add makes a dialog for |cid| (absent from the table; 1..TG_CALL_ID_MAX bytes),
// with no streams. NULL when the table is full or |len| is out of bounds.
struct tg_dialog *tg_dialog_add(struct tg_dialogs *t, const char *cid, size_t len);

// tg_dialog_remove takes |d| out of the table.
void tg_dialog_remove(struct tg_dialogs *t, struct tg_dialog *d);

// tg_dialog_cookie / tg_dialog_by_cookie: a dialog named by slot and generation (64 bits), so
// that a timer or a message that outlives it finds nothing.
uint64_t tg_dialog_cookie(const struct tg_dialogs *t, const struct tg_dialog *d);
struct tg_dialog *tg_dialog_by_cookie(struct tg_dialogs *t, uint64_t cookie);

// ---------------------------------------------------------------------------------------------
// Offer/answer decisions.

// tg_mplan_relayable says whether section |m| can be relayed: an RTP profile (RTP/AVP, SAVP,
// AVPF, SAVPF) with a port. Anything else (udptl, TCP, a declined stream) is declined.
int tg_mplan_relayable(const struct tg_sdp_media *m);

// tg_mplan_provider_crypto chooses, for SDP from the provider, the a=crypto line of each
// section: in an offer the first of |prefs| (the operator's srtp_suites) that the section
// offers; in an answer the line with the suite tlsgate offered (|offered[i]|). |out_idx[i]| is
// the index in sdp->media[i].crypto, or -1 (the section is declined). Returns 1, or 0 when no
// relayable section can be met: an offer is then answered 488 Not Acceptable Here.
int tg_mplan_provider_crypto(const struct tg_sdp *sdp, int is_offer, const uint8_t *prefs,
                             size_t num_prefs, const uint8_t *offered, int out_idx[]);

// tg_mplan_peer fills |out| with the RTP address of section |m| (c= and port): where the peer
// receives and, with symmetric RTP, sends from. Returns 0 when there is none: c=0.0.0.0 or ::
// (the old way to hold), no address, or port 0.
int tg_mplan_peer(const struct tg_sdp_media *m, struct sockaddr_storage *out);

// tg_mplan_receives says whether the peer of section |m| wants media: not a=sendonly, not
// a=inactive, not on hold by address, not declined.
int tg_mplan_receives(const struct tg_sdp_media *m);

#endif // TLSGATE_MEDIAPLAN_H
