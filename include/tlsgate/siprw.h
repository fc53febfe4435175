#ifndef TLSGATE_SIPRW_H
#define TLSGATE_SIPRW_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/sip.h"

// SIP proxy rewriter: pure functions from one scanned message (its bytes and the index that
// tg_sip_scan built) to the bytes to forward, written into a caller buffer. No I/O, no
// allocation. tlsgate proxies between exactly two sides: the provider (mutual TLS, addressed
// by our FQDN) and the PBX (plain TCP, addressed by our inside address).
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
//   - every Contact URI rewritten to our address on S (user part kept, transport=tls or tcp)
//     with the original URI in ";tg-orig=<base64url>", or restored when it already is one of
//     ours carrying tg-orig;
//   - every X-TLS-Peer-* header removed; "X-TLS-Peer-Name: <name>" added on requests from the
//     provider.
// What a response gets: our top Via popped (its flow token verified, which also says which
// connection the response goes back on), Record-Route entries naming our address on the side
// it came from renamed to our address on the side it goes to, Contact as for requests,
// X-TLS-Peer-* removed. Bodies are copied unchanged, so Content-Length is too.

// tg_sip_side names the two sides tlsgate proxies between.
enum tg_sip_side { TG_SIP_SIDE_PROVIDER = 0, TG_SIP_SIDE_PBX = 1 };

// tg_sip_flow names a connection: what the flow token in our Via branch carries.
struct tg_sip_flow {
    uint32_t slot; // connection slot index on the worker (24 bits used)
    uint32_t gen;  // slot generation
    uint8_t worker;
    uint8_t side; // enum tg_sip_side the request arrived from
};

// TG_SIP_TOKEN_LEN is the length of a flow token (lower-case hex) in a Via branch, after
// the "z9hG4bK" magic cookie.
#define TG_SIP_TOKEN_LEN 42

// tg_sip_rw_cfg is a listener's rewriting context. Immutable once set; the strings are
// borrowed and must outlive it.
struct tg_sip_rw_cfg {
    const char *fqdn;            // our name toward the provider (the certificate's CN)
    const char *inside_host;     // our address toward the PBX (IPv6 in brackets: "[fd00::1]")
    uint16_t fqdn_port;          // e.g. 5061
    uint16_t inside_port;        // e.g. 5060
    uint64_t key[2];             // flow-token MAC key (SipHash-2-4), secret per instance
    struct tg_sip_limits limits; // the output must fit these (the scanner's limits)
};

// tg_sip_rw_cfg_init fills |cfg| with the given addresses, |key| (16 bytes) and the default
// limits.
void tg_sip_rw_cfg_init(struct tg_sip_rw_cfg *cfg, const char *fqdn, uint16_t fqdn_port,
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
    TG_SIP_RW_DROP_LAST_VIA,  // response: our Via was the only one
    TG_SIP_RW_NUM
};

// tg_sip_rw_name returns the metric label of |r|: "ok", "no_space", "too_large",
// "too_many_hops", "bad_request", "no_via", "not_ours", "bad_token", "last_via".
const char *tg_sip_rw_name(enum tg_sip_rw r);

// tg_sip_rw_status returns the status to answer a request refused with |r| (400, 483, 513),
// or 0 when there is nothing to answer.
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
// connection it goes back on into |*out_flow|. Returns TG_SIP_RW_OK or why it must be dropped.
enum tg_sip_rw tg_sip_rewrite_response(const struct tg_sip_rw_cfg *cfg,
                                       struct tg_sip_flow *out_flow, uint8_t *out, size_t out_cap,
                                       size_t *out_len, const struct tg_sip_msg *msg,
                                       const uint8_t *buf, enum tg_sip_side arrived_from);

// tg_sip_flow_encode writes the flow token for |flow| and transaction hash |txh| (exactly
// TG_SIP_TOKEN_LEN bytes, not NUL-terminated) into |out|.
void tg_sip_flow_encode(const struct tg_sip_rw_cfg *cfg, char out[TG_SIP_TOKEN_LEN],
                        const struct tg_sip_flow *flow, uint32_t txh);

// tg_sip_flow_decode verifies the token |tok| (|tok_len| bytes) and fills |*out_flow|.
// Returns 1 when it is well-formed and its MAC verifies, 0 otherwise.
int tg_sip_flow_decode(const struct tg_sip_rw_cfg *cfg, struct tg_sip_flow *out_flow,
                       const char *tok, size_t tok_len);

// tg_sip_build_response writes a complete response with |status| and |reason| to the request
// |req| (scanned from |buf|; its index may be partial after a scan error) into |out|: every
// Via in order, From, To (with ";tag=|to_tag|" added when |to_tag| is not NULL, |status| > 100
// and To has no tag), Call-ID, CSeq, the raw header lines |extra| (NULL or CRLF-terminated
// lines), Content-Length: 0. Returns 1 on success, 0 when |req| is not a request, lacks one of
// those headers, or |out_cap| is too small.
int tg_sip_build_response(uint8_t *out, size_t out_cap, size_t *out_len,
                          const struct tg_sip_msg *req, const uint8_t *buf, unsigned status,
                          const char *reason, const char *to_tag, const char *extra);

// tg_sip_is_options_to_us returns 1 when |msg| is an OPTIONS request whose Request-URI is
// addressed to the SBC itself: sip: or sips:, no user part, host equal to |fqdn| (ignoring
// case; any port and parameters).
int tg_sip_is_options_to_us(const struct tg_sip_msg *msg, const uint8_t *buf, const char *fqdn);

#endif // TLSGATE_SIPRW_H
