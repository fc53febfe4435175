#ifndef TLSGATE_SIP_H
#define TLSGATE_SIP_H

#include <stddef.h>
#include <stdint.h>

// SIP message scanner: an I/O-free, zero-copy framer over the plaintext of one stream (RFC 3261
// section 18.3, RFC 5626 section 4.4.1 keepalives). Bytes in, a decision out. The scanner keeps
// no state between calls: give it the buffer from the start of what has not been consumed yet,
// act on the result, drop the bytes it names, and scan again. It allocates nothing; the header
// index goes into an array the caller provides, and every span is an offset into the buffer.

// tg_sip_scan_result is what the start of a stream buffer holds.
enum tg_sip_scan_result {
    TG_SIP_NEED_MORE = 0, // incomplete: wait until the buffer holds |need| bytes, then rescan
    TG_SIP_MESSAGE,       // one complete message of |len| bytes (head + Content-Length body)
    TG_SIP_PING,          // CRLFCRLF between messages (|len| = 4): answer with one CRLF
    TG_SIP_PONG,          // a single CRLF between messages (|len| = 2): a keepalive answer
    TG_SIP_ERROR,         // see |err|, |status|, |can_continue| and |len|
};

// tg_sip_err says why a message was refused. tg_sip_err_name gives each its metric label.
enum tg_sip_err {
    TG_SIP_ERR_NONE = 0,
    TG_SIP_ERR_START_LINE,          // not a request line or status line (400, close)
    TG_SIP_ERR_VERSION,             // SIP version other than 2.0 (505)
    TG_SIP_ERR_HEADER,              // header line without a name or colon, stray CR or LF, a
                                    // name that starts like Content-Length but is not it (400)
    TG_SIP_ERR_NUL,                 // NUL byte in the head (400)
    TG_SIP_ERR_LINE_TOO_LONG,       // a header (folds included) over max_line (513); the
                                    // start line over max_line (513, close)
    TG_SIP_ERR_TOO_MANY_HEADERS,    // over max_headers or the caller's array (513)
    TG_SIP_ERR_HEAD_UNTERMINATED,   // no CRLFCRLF within max_message bytes (513, close)
    TG_SIP_ERR_NO_CONTENT_LENGTH,   // Content-Length missing: mandatory on streams (400, close)
    TG_SIP_ERR_BAD_CONTENT_LENGTH,  // empty, negative or not a number (400, close)
    TG_SIP_ERR_CONTENT_LENGTH_DIFF, // several Content-Length headers that differ (400, close)
    TG_SIP_ERR_BODY_TOO_LARGE,      // head + body over max_message (513)
    TG_SIP_ERR_CTL,                 // a control character other than HTAB in a header (400)
    TG_SIP_ERR_NUM
};

// tg_sip_err_name returns the metric label of |err|: "none", "start_line", "version",
// "header", "nul", "line_too_long", "too_many_headers", "head_unterminated",
// "no_content_length", "bad_content_length", "content_length_differs", "body_too_large", "ctl".
const char *tg_sip_err_name(enum tg_sip_err err);

// tg_sip_method identifies a request method (methods are case-sensitive).
enum tg_sip_method {
    TG_SIP_M_OTHER = 0,
    TG_SIP_M_INVITE,
    TG_SIP_M_ACK,
    TG_SIP_M_BYE,
    TG_SIP_M_CANCEL,
    TG_SIP_M_OPTIONS,
    TG_SIP_M_REGISTER,
    TG_SIP_M_PRACK,
    TG_SIP_M_SUBSCRIBE,
    TG_SIP_M_NOTIFY,
    TG_SIP_M_PUBLISH,
    TG_SIP_M_INFO,
    TG_SIP_M_REFER,
    TG_SIP_M_MESSAGE,
    TG_SIP_M_UPDATE,
    TG_SIP_M_NUM
};

// tg_sip_hdr identifies a header name; compact forms map to the same id as the long form.
enum tg_sip_hdr {
    TG_SIP_H_OTHER = 0,
    TG_SIP_H_VIA,     // v
    TG_SIP_H_FROM,    // f
    TG_SIP_H_TO,      // t
    TG_SIP_H_CALL_ID, // i
    TG_SIP_H_CSEQ,
    TG_SIP_H_CONTACT,        // m
    TG_SIP_H_CONTENT_LENGTH, // l
    TG_SIP_H_CONTENT_TYPE,   // c
    TG_SIP_H_MAX_FORWARDS,
    TG_SIP_H_ROUTE,
    TG_SIP_H_RECORD_ROUTE,
    TG_SIP_H_SUPPORTED,           // k
    TG_SIP_H_SUBJECT,             // s
    TG_SIP_H_CONTENT_ENCODING,    // e
    TG_SIP_H_EVENT,               // o
    TG_SIP_H_REFER_TO,            // r
    TG_SIP_H_ALLOW_EVENTS,        // u
    TG_SIP_H_SESSION_EXPIRES,     // x
    TG_SIP_H_ACCEPT_CONTACT,      // a
    TG_SIP_H_REFERRED_BY,         // b
    TG_SIP_H_REJECT_CONTACT,      // j
    TG_SIP_H_REQUEST_DISPOSITION, // d
    TG_SIP_H_IDENTITY,            // y
    TG_SIP_H_IDENTITY_INFO,       // n
    TG_SIP_H_X_TLS_PEER,          // any name starting with "X-TLS-Peer-" ("_" read as "-")
    TG_SIP_H_NUM
};

// tg_sip_span is a range of the scanned buffer: |off| bytes from its start, |len| bytes long.
struct tg_sip_span {
    uint32_t off;
    uint32_t len;
};

// tg_sip_header is one entry of the header index. |line| covers the whole header from the first
// byte of its name through its final CRLF (folded continuation lines included); |value| is the
// value without the leading and trailing whitespace (inner folds stay as they are: whoever
// writes the header out unfolds them, see siprw.h). A complete message holds no control
// character in a header other than HTAB and the CRLF of each fold.
struct tg_sip_header {
    struct tg_sip_span line;
    struct tg_sip_span name;
    struct tg_sip_span value;
    uint8_t id; // enum tg_sip_hdr
};

// tg_sip_limits bounds what one message may take.
struct tg_sip_limits {
    uint32_t max_message; // head + body (default 65536)
    uint32_t max_line;    // one header, folds and CRLF included; also the start line (8192)
    uint16_t max_headers; // header lines (default 128)
};

// tg_sip_limits_init sets |lim| to the defaults.
void tg_sip_limits_init(struct tg_sip_limits *lim);

// tg_sip_msg is the scanner's verdict on the start of a buffer and, for a message, its index.
// It lives as long as one scan; the header array it points to belongs to the caller.
struct tg_sip_msg {
    // MESSAGE: the message length. PING: 4. PONG: 2. ERROR with can_continue: the bytes to drop
    // to reach the next message; this may exceed the bytes buffered (a body over max_message), in
    // which case the caller discards the rest as it arrives. 0 otherwise.
    uint32_t len;
    // NEED_MORE: the buffer must hold at least this many bytes (always more than it holds now;
    // exact once the head is complete).
    uint32_t need;
    uint32_t head_len;    // start line + headers + CRLFCRLF, once known (0 before)
    uint32_t body_len;    // Content-Length, once known
    uint8_t err;          // enum tg_sip_err (ERROR)
    uint8_t can_continue; // ERROR: dropping |len| bytes resynchronises the stream; 0: close
    // ERROR: the status the error deserves as an answer (400, 505, 513), 0 when the
    // message is a response or not a SIP message at all. Whether an answer can actually be built
    // depends on the headers indexed so far: see tg_sip_build_response.
    uint16_t status;

    uint8_t is_request;
    uint8_t method;                 // enum tg_sip_method (requests)
    uint16_t code;                  // status code (responses)
    struct tg_sip_span start_line;  // without its CRLF
    struct tg_sip_span method_name; // requests
    struct tg_sip_span uri;         // requests: the Request-URI
    struct tg_sip_span reason;      // responses: the reason phrase (may be empty)

    struct tg_sip_header *headers; // the caller's array, in message order
    uint16_t num_headers;          // entries filled (at most the array size)
    uint8_t truncated;             // more headers than the array holds (ERROR only)
    int16_t first[TG_SIP_H_NUM];   // index of the first header of each id, -1 when absent
};

// tg_sip_scan examines the start of |buf| (|len| bytes, the unconsumed start of a stream) under
// |lim| (NULL: defaults), filling |out_msg| and up to |num_hdrs| entries of |hdrs|. Returns
// the result; |out_msg| says how many bytes it covers. On ERROR the index holds the headers
// that were read before the error, so an answer can often still be built.
enum tg_sip_scan_result tg_sip_scan(const struct tg_sip_limits *lim, struct tg_sip_msg *out_msg,
                                    struct tg_sip_header *hdrs, size_t num_hdrs, const uint8_t *buf,
                                    size_t len);

// tg_sip_header_id returns the id of the header name |name| (|name_len| bytes), compact forms
// and case-insensitivity included.
enum tg_sip_hdr tg_sip_header_id(const uint8_t *name, size_t name_len);

// tg_sip_header_name returns the canonical (long) name of |id| ("Via", "Content-Length", ...),
// or NULL for TG_SIP_H_OTHER and TG_SIP_H_X_TLS_PEER, whose names are the message's own.
const char *tg_sip_header_name(enum tg_sip_hdr id);

// tg_sip_find returns the index of the |nth| (0-based) header with id |id| in |msg|, or -1.
int tg_sip_find(const struct tg_sip_msg *msg, enum tg_sip_hdr id, unsigned nth);

// tg_sip_value points |*v| and |*len| at the value of the first header with id |id| of |msg|,
// in |buf| (the bytes |msg| indexes). Returns 0 when |msg| has none.
int tg_sip_value(const struct tg_sip_msg *msg, const uint8_t *buf, enum tg_sip_hdr id,
                 const char **v, size_t *len);

// tg_sip_count returns how many headers with id |id| |msg| indexed.
unsigned tg_sip_count(const struct tg_sip_msg *msg, enum tg_sip_hdr id);

// tg_sip_method_name returns the canonical name of |m| ("INVITE", ...; "OTHER").
const char *tg_sip_method_name(enum tg_sip_method m);

#endif // TLSGATE_SIP_H
