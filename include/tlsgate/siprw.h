#ifndef TLSGATE_SIPRW_H
#define TLSGATE_SIPRW_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/cursor.h"
#include "tlsgate/sip.h"
#include "tlsgate/siporig.h"

// SIP proxy rewriter: pure functions from one scanned message (its bytes and the index that
// tg_sip_scan built) to the bytes to forward, written into a caller buffer. No I/O, no
// allocation of its own. tlsgate proxies between exactly two sides: the provider (mutual TLS,
// addressed by our FQDN) and the PBX (plain TCP, addressed by our inside address).
//
// Only what tlsgate understood is forwarded, in both directions, in a normal form, so that
// whatever parser the far side runs it sees the message boundaries tlsgate saw:
//   - one header per line, every fold (LWS holding a CRLF) replaced by one SP, "Name: value";
//   - the headers tlsgate knows by id written with their canonical long name (compact forms
//     expanded: "l" and "Content-Length :" both become "Content-Length"); other names as they
//     came (a token, the scanner checked);
//   - every Content-Length dropped and one "Content-Length: <body length tlsgate framed>"
//     written last;
//   - duplicates of a single-valued header tlsgate reads (Max-Forwards, Call-ID, CSeq, From,
//     To, Content-Type) refused: TG_SIP_RW_DUPLICATE (400 for a request, dropped response).
// Control characters never get here: the scanner refuses them (TG_SIP_ERR_CTL, TG_SIP_ERR_NUL).
//
// What a request gets, on its way to side S:
//   - a new top Via: "SIP/2.0/TLS fqdn:port" toward the provider, "SIP/2.0/TCP inside:port"
//     toward the PBX, with branch = "z9hG4bK" + a flow token (tg_sip_flow_encode): the
//     originating connection, a hash of the incoming transaction (so a retransmission, its
//     CANCEL and its non-2xx ACK get the same branch, as RFC 3261 16.11 asks of stateless
//     proxies) and a MAC under a per-instance key;
//   - Max-Forwards decremented (70 added when missing; 0 is TG_SIP_RW_TOO_MANY_HOPS: 483);
//   - Record-Route "<sip:fqdn:port;transport=tls;lr>" toward the provider,
//     "<sip:inside:port;transport=tcp;lr>" toward the PBX (not on REGISTER, ACK, CANCEL);
//   - leading Route entries addressed to us (either address) removed;
//   - a Request-URI addressed to us carrying ";tg-orig=" restored to the original URI;
//   - every sip/sips Contact URI rewritten to our address on S (user part kept, transport=tls
//     or tcp) with the original URI sealed in ";tg-orig=" (tg_sip_seal_uri), or restored when
//     it already is one of ours carrying tg-orig;
//   - every X-TLS-Peer-* header removed; "X-TLS-Peer-Name: <name>" added on requests from the
//     provider.
// A tg-orig (in the Request-URI or a Contact of ours) that tlsgate did not seal, sealed under
// another key or toward the other side, or altered, is TG_SIP_RW_BAD_TG_ORIG: nothing is
// restored, a request is answered 400 (an ACK dropped), a response dropped; both counted.
// What a response gets: our top Via popped (its flow token verified, which also says which
// connection the response goes back on), Record-Route entries naming our address on the side
// it came from renamed to our address on the side it goes to, Contact as for requests,
// X-TLS-Peer-* removed. Bodies are copied unchanged.
//
// The sides (enum tg_sip_side), connections (struct tg_sip_flow), flow tokens and the sealing
// of tg-orig values are declared in siporig.h, which this header includes.

// tg_sip_rw_cfg is a connection's rewriting context. Immutable once set; the strings are
// borrowed and must outlive it. The keys are derived from one per-instance secret
// (tg_sip_rw_cfg_init), one key per use.
struct tg_sip_rw_cfg {
    const char *fqdn;            // our name toward the provider (the certificate's CN)
    const char *inside_host;     // our address toward the PBX (IPv6 in brackets: "[fd00::1]")
    uint16_t fqdn_port;          // e.g. 5061
    uint16_t inside_port;        // e.g. 5060
    uint64_t key[2];             // flow-token MAC key (SipHash-2-4)
    uint64_t txh_key[2];         // transaction hash key (SipHash-2-4)
    uint64_t nonce_key[2];       // tg-orig synthetic nonce (SipHash-2-4)
    uint8_t seal_key[16];        // tg-orig AEAD key (AES-128-GCM-SIV)
    struct tg_sip_limits limits; // the output must fit these (the scanner's limits)
};

// tg_sip_rw_cfg_init fills |cfg| with the given addresses, the keys derived from |key| (16
// bytes, the instance secret: HKDF-SHA256, one output slice per use) and the default limits.
// Returns 1, or 0 when the derivation failed (memory).
int tg_sip_rw_cfg_init(struct tg_sip_rw_cfg *cfg, const char *fqdn, uint16_t fqdn_port,
                       const char *inside_host, uint16_t inside_port, const uint8_t key[16]);

// tg_sip_rw is the outcome of a rewrite.
enum tg_sip_rw {
    TG_SIP_RW_OK = 0,
    TG_SIP_RW_NO_SPACE,       // |out_cap| too small; never when out_cap > limits.max_message
    TG_SIP_RW_TOO_LARGE,      // the output would exceed cfg->limits: answer 513
    TG_SIP_RW_TOO_MANY_HOPS,  // Max-Forwards is 0: answer 483
    TG_SIP_RW_BAD_REQUEST,    // no Via, Max-Forwards not a number, not a message: answer 400
    TG_SIP_RW_DROP_NO_VIA,    // response: no Via at all
    TG_SIP_RW_DROP_NOT_OURS,  // response: top Via is not ours (host or branch)
    TG_SIP_RW_DROP_BAD_TOKEN, // response: branch looks ours but the token fails its MAC/side
    TG_SIP_RW_DROP_LAST_VIA,  // response: our Via was the only one (sipconn: the answer to a
                              // request tlsgate sent itself, absorbed, not an error)
    TG_SIP_RW_DUPLICATE,      // a single-valued header twice (400 / dropped)
    TG_SIP_RW_BAD_TG_ORIG,    // a tg-orig tlsgate did not seal toward this side (400 / dropped)
    TG_SIP_RW_BAD_CONTACT,    // a Contact tlsgate cannot rewrite: "<" without ">", a sip or
                              // sips URI without a host, a URI byte outside %x21-7E or one of
                              // < > " (400 / dropped)
    TG_SIP_RW_NUM
};

// tg_sip_rw_name returns the metric label of |r|: "ok", "no_space", "too_large",
// "too_many_hops", "bad_request", "no_via", "not_ours", "bad_token", "last_via",
// "duplicate_header", "bad_tg_orig", "bad_contact".
const char *tg_sip_rw_name(enum tg_sip_rw r);

// tg_sip_rw_status returns the status to answer a request refused with |r| (400, 483, 513),
// or 0 when there is nothing to answer (a response's drop reasons).
uint16_t tg_sip_rw_status(enum tg_sip_rw r);

// tg_sip_rewrite_request rewrites the request |msg| (scanned from |buf|, result
// TG_SIP_MESSAGE) that arrived on connection |from| for the other side, into |out| (|out_cap|
// bytes); |*out_len| receives the length. |peer_name| is the verified certificate name of the
// provider (used when |from->side| is the provider; NULL adds nothing).
enum tg_sip_rw tg_sip_rewrite_request(const struct tg_sip_rw_cfg *cfg, uint8_t *out, size_t out_cap,
                                      size_t *out_len, const struct tg_sip_msg *msg,
                                      const uint8_t *buf, const struct tg_sip_flow *from,
                                      const char *peer_name);

// tg_sip_rewrite_response pops our Via from the response |msg| (scanned from |buf|) that
// arrived from side |arrived_from|, writes what goes to the other side into |out| and the
// connection it goes back on into |*out_flow|. Returns TG_SIP_RW_OK or why it must be dropped
// (TG_SIP_RW_TOO_LARGE and TG_SIP_RW_NO_SPACE included: a response is never answered).
enum tg_sip_rw tg_sip_rewrite_response(const struct tg_sip_rw_cfg *cfg,
                                       struct tg_sip_flow *out_flow, uint8_t *out, size_t out_cap,
                                       size_t *out_len, const struct tg_sip_msg *msg,
                                       const uint8_t *buf, enum tg_sip_side arrived_from);

// tg_sip_set_body replaces the body of a message tlsgate wrote (the output of
// tg_sip_rewrite_request / tg_sip_rewrite_response: its head ends in the one Content-Length,
// then CRLFCRLF, then |old_body_len| bytes of body) by |body| (|body_len| bytes), with the
// Content-Length rewritten to match: the second step of a rewrite whose body changes (SDP),
// which keeps the rewriter itself body-blind. |*len| is the message length in and out, |cap|
// the room at |msg|. Returns TG_SIP_RW_OK, TG_SIP_RW_TOO_LARGE when the result would pass
// |limits->max_message| or |cap|, TG_SIP_RW_BAD_REQUEST when |msg| does not end that way.
enum tg_sip_rw tg_sip_set_body(uint8_t *msg, size_t *len, size_t cap, uint32_t old_body_len,
                               const uint8_t *body, uint32_t body_len,
                               const struct tg_sip_limits *limits);

// tg_sip_build_response writes a complete response with |status| and |reason| to the request
// |req| (scanned from |buf|; its index may be partial after a scan error) into |out|: every
// Via in order, From, To (with ";tag=|to_tag|" added when |to_tag| is not NULL, |status| > 100
// and To has no tag), Call-ID, CSeq, the raw header lines |extra| (NULL or CRLF-terminated
// lines), Content-Length: 0; the copied headers in the normal form above. Returns 1 on
// success, 0 when |req| is not a request, lacks one of those headers, one of them holds a byte
// that cannot stand in a header (NUL, a control character, a stray CR or LF: possible after a
// scan error), or |out_cap| is too small.
int tg_sip_build_response(uint8_t *out, size_t out_cap, size_t *out_len,
                          const struct tg_sip_msg *req, const uint8_t *buf, unsigned status,
                          const char *reason, const char *to_tag, const char *extra);

// tg_sip_is_options_to_us returns 1 when |msg| is an OPTIONS request whose Request-URI is
// addressed to the SBC itself: sip: or sips:, no user part, host equal to |fqdn| (ignoring
// case; any port and parameters).
int tg_sip_is_options_to_us(const struct tg_sip_msg *msg, const uint8_t *buf, const char *fqdn);

// Address headers (Contact, Route, Record-Route) as the rewriter reads them, for the modules
// that read them too (mediaplan.c's dialog record), so that both agree on every element.
// tg_sip_elem_end returns the end of the list element starting at |i| in [i, end) of |c|: the
// first comma outside quotes (with their backslash escapes) and angle brackets, or |end|.
size_t tg_sip_elem_end(const struct tg_cur *c, size_t i, size_t end);
// tg_sip_elem_uri finds the URI of the name-addr or addr-spec element [a, b): between the first
// '<' outside quotes and the next '>', else up to the first ';' (header parameters), trimmed.
// Returns 0 when there is none (no '>', or empty).
int tg_sip_elem_uri(const struct tg_cur *c, size_t a, size_t b, size_t *off, size_t *end);
// tg_sip_uri_host_is says whether the host of the sip/sips URI [off, end) is |host| (ASCII case
// ignored, any port).
int tg_sip_uri_host_is(const struct tg_cur *c, size_t off, size_t end, const char *host);

#endif // TLSGATE_SIPRW_H
