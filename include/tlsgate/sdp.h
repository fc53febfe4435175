#ifndef TLSGATE_SDP_H
#define TLSGATE_SDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsgate/srtp.h"

// SDP (RFC 4566) as a call's media needs it: parse an offer or answer into the facts tlsgate
// acts on, and write the body to forward with every address, port, transport and key pointing
// at tlsgate's own sockets on the far side. Pure functions over caller memory: no I/O, no
// allocation, no lock. Bodies come from the internet (the provider) and from the PBX; both are
// hostile input: every length is checked, nothing is read past |len|, and a body tlsgate does
// not understand is refused (the caller answers 488 or 400), never forwarded as it came.
//
// What the writer emits, from the parsed body and one tg_sdp_media_out per media section:
//   - o=: the address replaced by |addr| (username, session id and version kept: the version
//     moves when the far side's does, RFC 3264 8);
//   - c= (session and media level): |addr|, except a hold address (0.0.0.0 or ::) kept as is;
//   - m=: the port replaced (0 declines the stream, as RFC 3264 6 says), the transport
//     RTP/SAVP when |secure| else RTP/AVP, formats kept;
//   - a=rtcp: replaced by the out rtcp port (dropped when the port is 0 or rtcp-mux is kept);
//   - every a=crypto line removed; when |secure|, one line for |crypto| written in its place;
//   - ICE attributes (a=candidate, a=ice-ufrag, a=ice-pwd, a=end-of-candidates, ...) dropped:
//     they carry the sender's own addresses (the PBX's internal ones) and paths around tlsgate;
//   - every other line copied, in order, with CRLF line ends.
// Lines end in CRLF or LF on input; output always uses CRLF.
//
// Details the parser and writer settle (for the callers and the far side to rely on):
//   - Grammar: "x=value" lines, x one of v o s i u e p c b t r z k a m (RFC 4566 5: an unknown
//     type refuses the body), v=0 first, o= second, s= third, each once; in a media section
//     only i c b k a. Empty lines are refused, except at the very end (ignored). A last line
//     without its line end is accepted. Bytes below 0x20 other than HT, and 0x7f, are refused.
//   - o= must carry a numeric address too (TG_SDP_BAD_ADDR otherwise); c= at most once per
//     level, unicast only (a /ttl or /count suffix is refused); every section needs a c=, its
//     own or the session's.
//   - m= with a port count (49170/2) is refused. A proto other than RTP/AVP, RTP/SAVP,
//     RTP/AVPF, RTP/SAVPF (udptl, UDP/TLS/RTP/SAVP, ...) parses as TG_SDP_PROTO_OTHER and is
//     written back verbatim: tlsgate declines such a section (its out port is 0).
//   - a=rtcp (media level; port 1..65535, optional numeric "IN IP4|IP6 addr"), a=rtcp-mux and
//     the direction attributes at most once per level. a=crypto at media level is parsed with
//     tg_sdp_crypto_parse (a line that is not well formed refuses the body); at session level
//     (RFC 4568 does not allow it) it is not parsed and never written. a=rtcp at session level
//     is dropped too.
//   - The writer emits one a=crypto line where the section's first one was, or at the end of
//     the section when it had none; a=rtcp:PORT (no address: c= names tlsgate) where the input
//     had one, or at the end of the section when the out RTCP port is not port + 1; a=rtcp-mux
//     only when the input had it and |rtcp_mux| is set.

#define TG_SDP_MAX_MEDIA 8  // m= sections in one body; more is refused
#define TG_SDP_MAX_CRYPTO 8 // a=crypto lines kept per section; more are ignored (counted)
#define TG_SDP_MAX_BODY 16384

enum tg_sdp_proto {
    TG_SDP_PROTO_OTHER = 0, // udptl, TCP/..., anything not RTP: declined by tlsgate
    TG_SDP_RTP_AVP,
    TG_SDP_RTP_SAVP,
    TG_SDP_RTP_AVPF,
    TG_SDP_RTP_SAVPF,
};

enum tg_sdp_dir { TG_SDP_SENDRECV = 0, TG_SDP_SENDONLY, TG_SDP_RECVONLY, TG_SDP_INACTIVE };

// tg_sdp_crypto is one `a=crypto` line (RFC 4568 9.1): tag, suite, the first key's key, salt,
// lifetime (2^N packets; 0 = none given) and MKI. A line with a suite tlsgate does not know, or
// session parameters it does not implement (UNENCRYPTED_SRTP, KDR, FEC_ORDER, ...), is
// parsed with |usable| = 0 so that the offer/answer logic can skip it.
struct tg_sdp_crypto {
    uint32_t tag;
    int usable;
    struct tg_srtp_params params; // params.mki / params.mki_len carry the MKI
    uint8_t lifetime_log2;        // 0: none given
};

// tg_sdp_addr is a c= or o= address: numeric IPv4 or IPv6 (family AF_INET / AF_INET6), with
// |hold| set for 0.0.0.0 and ::. A FQDN is taken in o= only (RFC 4566 allows it there, and
// tlsgate rewrites o= anyway): |name| set, |bytes| zero. A FQDN in c= is refused by the parser.
struct tg_sdp_addr {
    int family; // 0: none given at this level
    uint8_t bytes[16];
    int hold;
    int name; // o= only: a host name, not a number
};

// tg_sdp_media is one m= section.
struct tg_sdp_media {
    int audio;          // media type "audio"
    uint16_t port;      // 0: declined
    uint16_t rtcp_port; // from a=rtcp:, else 0 (port + 1 implied)
    int rtcp_mux;       // a=rtcp-mux present
    enum tg_sdp_proto proto;
    enum tg_sdp_dir dir;     // this section's, else the session's, else sendrecv
    struct tg_sdp_addr conn; // this section's c=, else the session's (family 0: none at all)
    struct tg_sdp_crypto crypto[TG_SDP_MAX_CRYPTO];
    size_t num_crypto;
    size_t num_crypto_ignored; // well-formed a=crypto lines past TG_SDP_MAX_CRYPTO
    int conn_here;             // |conn| comes from this section's own c= line
    // Where the writer splices the m= line (offsets into the body): the port, the proto and
    // the space before the formats.
    uint16_t port_off;
    uint16_t proto_off;
    uint16_t fmt_off;
};

// tg_sdp is a parsed body. The offsets it keeps point into the body given to tg_sdp_parse,
// which tg_sdp_write is given again.
struct tg_sdp {
    struct tg_sdp_addr origin; // o= address
    struct tg_sdp_media media[TG_SDP_MAX_MEDIA];
    size_t num_media;
    struct tg_sdp_addr conn; // session-level c= (family 0: none)
    enum tg_sdp_dir dir;     // session-level direction attribute, else sendrecv
    uint16_t origin_net_off; // offset of the o= nettype ("IN ..."), where the writer splices
    uint16_t end;            // offset past the last line parsed (trailing empty lines excluded)
    uint16_t len;            // |len| given to tg_sdp_parse: tg_sdp_write checks it is the same
};

enum tg_sdp_status {
    TG_SDP_OK = 0,
    TG_SDP_MALFORMED, // not SDP: no v=0 first, a line without "x=", a NUL or control byte, ...
    TG_SDP_TOO_MANY,  // more than TG_SDP_MAX_MEDIA sections
    TG_SDP_BAD_ADDR,  // c= or o= with an address that is not numeric IPv4/IPv6
    TG_SDP_NO_SPACE,  // write: |cap| too small
};

// tg_sdp_parse parses |body| (|len| bytes). On failure |why| says what and where ("line 7: m=
// port not a number"; always NUL-terminated when |why_len| > 0; |why| may be NULL) and |out| is
// not to be used.
enum tg_sdp_status tg_sdp_parse(struct tg_sdp *out, const char *body, size_t len, char *why,
                                size_t why_len);

// tg_sdp_media_out says what tlsgate offers or answers for one m= section on the far side.
struct tg_sdp_media_out {
    uint16_t port;      // tlsgate's RTP port on that side; 0 declines the stream
    uint16_t rtcp_port; // tlsgate's RTCP port; 0 with rtcp-mux (RTCP on |port|)
    int rtcp_mux;       // keep a=rtcp-mux
    int secure;         // RTP/SAVP(F) with |crypto|, else RTP/AVP(F) without crypto lines
    struct tg_sdp_crypto crypto;
};

// tg_sdp_write writes the body to forward into |out| (|cap| bytes) from |in| (parsed from
// |body|, |len| bytes), |addr| (tlsgate's address on the far side: numeric text) and one
// tg_sdp_media_out per section of |in|. |*out_len| is the length written. Returns
// TG_SDP_BAD_ADDR when |addr| is not a numeric IPv4 or IPv6 address, TG_SDP_MALFORMED when
// |len| is not the length |in| was parsed from or a secure |media| has a crypto line
// tg_sdp_crypto_format refuses,
// TG_SDP_NO_SPACE when |cap| is too small (|*out_len| is then 0). It never writes past |cap|.
enum tg_sdp_status tg_sdp_write(const struct tg_sdp *in, const char *body, size_t len,
                                const char *addr, const struct tg_sdp_media_out *media, char *out,
                                size_t cap, size_t *out_len);

// tg_sdp_write_max returns a |cap| with which tg_sdp_write never answers TG_SDP_NO_SPACE for
// |in|, whatever the media out and address: twice the body (LF becomes CRLF) plus room for the
// longest address on each o=/c= line, a=crypto and a=rtcp lines added and m= lines grown.
size_t tg_sdp_write_max(const struct tg_sdp *in);

// tg_sdp_crypto_parse parses the value of one `a=crypto:` attribute (after the colon).
// Returns 1 when it is well formed (|out->usable| then says whether tlsgate can meet it), 0
// when it is not.
int tg_sdp_crypto_parse(struct tg_sdp_crypto *out, const char *value, size_t len);

// tg_sdp_crypto_format writes the value of an `a=crypto:` attribute for |c| (tag, suite,
// inline:base64(key||salt), |2^N when lifetime_log2 > 0, |MKI:LEN when mki_len > 0), then a
// NUL. Returns its length (the NUL not counted), or 0 when |cap| is too small (it needs the
// length + 1) or |c| would not parse back the same: a suite without a name, a tag over 9
// digits, lifetime_log2 over 48, an MKI longer than TG_SRTP_MKI_MAX or larger than its length.
//
// Accepted by tg_sdp_crypto_parse (RFC 4568 9.1; the key-salt in padded base64): a tag of 1..9
// digits; the suites of srtp.h (another suite parses with |usable| = 0); key-params separated by
// ';' of which the first is used, "inline:" then key||salt (30 bytes for AES_CM, 28 for GCM);
// a lifetime "2^N" (N 1..48) or a decimal power of two (another value: |usable| = 0); an MKI
// "value:length", length 1..128 (more than TG_SRTP_MKI_MAX: |usable| = 0) and the value within
// length bytes. Session params: WSH=N (a hint) is accepted; any other (KDR, UNENCRYPTED_*,
// UNAUTHENTICATED_SRTP, FEC_*) makes the line |usable| = 0.
#define TG_SDP_CRYPTO_MAX 128 // the longest value tg_sdp_crypto_format writes, NUL included

size_t tg_sdp_crypto_format(const struct tg_sdp_crypto *c, char *out, size_t cap);

// tg_sdp_choose_crypto picks the offered line tlsgate answers: the first suite of |prefs|
// (|num_prefs| suites, the operator's order) that some usable line of |m| offers. Returns the
// index in m->crypto, or -1 when none can be met (answer 488).
int tg_sdp_choose_crypto(const struct tg_sdp_media *m, const enum tg_srtp_suite *prefs,
                         size_t num_prefs);

#endif // TLSGATE_SDP_H
