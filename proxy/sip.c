// SIP message scanner: framing and header index over the plaintext of one stream. See
// include/tlsgate/sip.h. Every read of the buffer goes through the bounds-checked cursor below.
#include "tlsgate/sip.h"

#include "tlsgate/cursor.h"

#include <string.h>

#define SIP_DEFAULT_MAX_MESSAGE 65536u
#define SIP_DEFAULT_MAX_LINE 8192u
#define SIP_DEFAULT_MAX_HEADERS 128u

void tg_sip_limits_init(struct tg_sip_limits *lim) {
    lim->max_message = SIP_DEFAULT_MAX_MESSAGE;
    lim->max_line = SIP_DEFAULT_MAX_LINE;
    lim->max_headers = SIP_DEFAULT_MAX_HEADERS;
}

const char *tg_sip_err_name(enum tg_sip_err err) {
    static const char *const names[TG_SIP_ERR_NUM] = {
        "none",
        "start_line",
        "version",
        "header",
        "nul",
        "line_too_long",
        "too_many_headers",
        "head_unterminated",
        "no_content_length",
        "bad_content_length",
        "content_length_differs",
        "body_too_large",
        "ctl",
    };
    if ((unsigned)err >= TG_SIP_ERR_NUM)
        return "unknown";
    return names[err];
}

static const char *const k_methods[TG_SIP_M_NUM] = {
    "OTHER",     "INVITE", "ACK",     "BYE",  "CANCEL", "OPTIONS", "REGISTER", "PRACK",
    "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER",  "MESSAGE", "UPDATE",
};

const char *tg_sip_method_name(enum tg_sip_method m) {
    if ((unsigned)m >= TG_SIP_M_NUM)
        return "OTHER";
    return k_methods[m];
}

// ---- bounds-checked cursor -------------------------------------------------------------------

// A read-only view of the scanned buffer. Positions are offsets; every access is checked.

// ---- character classes -----------------------------------------------------------------------

static int is_digit(int ch) {
    return ch >= '0' && ch <= '9';
}

static int is_alpha(int ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static int is_ws(int ch) {
    return ch == ' ' || ch == '\t';
}

// RFC 3261 token: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
static int is_token(int ch) {
    if (is_alpha(ch) || is_digit(ch))
        return 1;
    return ch > 0 && ch < 0x80 && strchr("-.!%*_+`'~", ch) != NULL;
}

static int is_ctl(int ch) {
    return (ch >= 0 && ch < 0x20) || ch == 0x7f;
}

// mem_ieq compares |n| bytes of |a| with the lower-case ASCII |lc|, ignoring ASCII case.
static int mem_ieq(const uint8_t *a, const char *lc, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (tg_ascii_lower(a[i]) != (unsigned char)lc[i])
            return 0;
    }
    return 1;
}

// ---- header names ----------------------------------------------------------------------------

struct hdr_name {
    const char *name; // lower case
    uint8_t len;
    char compact; // 0 when none
    uint8_t id;
};

#define HN(s, c, id)                                                                               \
    { s, (uint8_t)(sizeof(s) - 1), c, id }
static const struct hdr_name k_hdr_names[] = {
    HN("via", 'v', TG_SIP_H_VIA),
    HN("from", 'f', TG_SIP_H_FROM),
    HN("to", 't', TG_SIP_H_TO),
    HN("call-id", 'i', TG_SIP_H_CALL_ID),
    HN("cseq", 0, TG_SIP_H_CSEQ),
    HN("contact", 'm', TG_SIP_H_CONTACT),
    HN("content-length", 'l', TG_SIP_H_CONTENT_LENGTH),
    HN("content-type", 'c', TG_SIP_H_CONTENT_TYPE),
    HN("max-forwards", 0, TG_SIP_H_MAX_FORWARDS),
    HN("route", 0, TG_SIP_H_ROUTE),
    HN("record-route", 0, TG_SIP_H_RECORD_ROUTE),
    HN("supported", 'k', TG_SIP_H_SUPPORTED),
    HN("subject", 's', TG_SIP_H_SUBJECT),
    HN("content-encoding", 'e', TG_SIP_H_CONTENT_ENCODING),
    HN("event", 'o', TG_SIP_H_EVENT),
    HN("refer-to", 'r', TG_SIP_H_REFER_TO),
    HN("allow-events", 'u', TG_SIP_H_ALLOW_EVENTS),
    HN("session-expires", 'x', TG_SIP_H_SESSION_EXPIRES),
    HN("accept-contact", 'a', TG_SIP_H_ACCEPT_CONTACT),
    HN("referred-by", 'b', TG_SIP_H_REFERRED_BY),
    HN("reject-contact", 'j', TG_SIP_H_REJECT_CONTACT),
    HN("request-disposition", 'd', TG_SIP_H_REQUEST_DISPOSITION),
    HN("identity", 'y', TG_SIP_H_IDENTITY),
    HN("identity-info", 'n', TG_SIP_H_IDENTITY_INFO),
};
#undef HN

static const char k_x_tls_peer[] = "x-tls-peer-";
static const char k_content_length[] = "content-length";

// name_like says whether |name| starts with the lower-case |prefix| when ASCII case is ignored
// and "_" read as "-", as some stacks read header names.
static int name_like(const uint8_t *name, size_t name_len, const char *prefix, size_t prefix_len) {
    if (name_len < prefix_len)
        return 0;
    for (size_t i = 0; i < prefix_len; i++) {
        int ch = name[i] == '_' ? '-' : tg_ascii_lower(name[i]);
        if (ch != (unsigned char)prefix[i])
            return 0;
    }
    return 1;
}

// The canonical spelling of each id, as tlsgate writes it (RFC 3261 section 20 and the RFCs
// that define the others).
static const char *const k_canonical[TG_SIP_H_NUM] = {
    [TG_SIP_H_VIA] = "Via",
    [TG_SIP_H_FROM] = "From",
    [TG_SIP_H_TO] = "To",
    [TG_SIP_H_CALL_ID] = "Call-ID",
    [TG_SIP_H_CSEQ] = "CSeq",
    [TG_SIP_H_CONTACT] = "Contact",
    [TG_SIP_H_CONTENT_LENGTH] = "Content-Length",
    [TG_SIP_H_CONTENT_TYPE] = "Content-Type",
    [TG_SIP_H_MAX_FORWARDS] = "Max-Forwards",
    [TG_SIP_H_ROUTE] = "Route",
    [TG_SIP_H_RECORD_ROUTE] = "Record-Route",
    [TG_SIP_H_SUPPORTED] = "Supported",
    [TG_SIP_H_SUBJECT] = "Subject",
    [TG_SIP_H_CONTENT_ENCODING] = "Content-Encoding",
    [TG_SIP_H_EVENT] = "Event",
    [TG_SIP_H_REFER_TO] = "Refer-To",
    [TG_SIP_H_ALLOW_EVENTS] = "Allow-Events",
    [TG_SIP_H_SESSION_EXPIRES] = "Session-Expires",
    [TG_SIP_H_ACCEPT_CONTACT] = "Accept-Contact",
    [TG_SIP_H_REFERRED_BY] = "Referred-By",
    [TG_SIP_H_REJECT_CONTACT] = "Reject-Contact",
    [TG_SIP_H_REQUEST_DISPOSITION] = "Request-Disposition",
    [TG_SIP_H_IDENTITY] = "Identity",
    [TG_SIP_H_IDENTITY_INFO] = "Identity-Info",
};

const char *tg_sip_header_name(enum tg_sip_hdr id) {
    if ((unsigned)id >= TG_SIP_H_NUM)
        return NULL;
    return k_canonical[id];
}

enum tg_sip_hdr tg_sip_header_id(const uint8_t *name, size_t name_len) {
    size_t n = sizeof(k_hdr_names) / sizeof(k_hdr_names[0]);
    if (name_len == 1) {
        int ch = tg_ascii_lower(name[0]);
        for (size_t i = 0; i < n; i++) {
            if (k_hdr_names[i].compact == ch)
                return (enum tg_sip_hdr)k_hdr_names[i].id;
        }
        return TG_SIP_H_OTHER;
    }
    for (size_t i = 0; i < n; i++) {
        if (k_hdr_names[i].len == name_len && mem_ieq(name, k_hdr_names[i].name, name_len))
            return (enum tg_sip_hdr)k_hdr_names[i].id;
    }
    if (name_like(name, name_len, k_x_tls_peer, sizeof(k_x_tls_peer) - 1))
        return TG_SIP_H_X_TLS_PEER;
    return TG_SIP_H_OTHER;
}

int tg_sip_find(const struct tg_sip_msg *msg, enum tg_sip_hdr id, unsigned nth) {
    for (unsigned i = 0; i < msg->num_headers; i++) {
        if (msg->headers[i].id != id)
            continue;
        if (nth == 0)
            return (int)i;
        nth--;
    }
    return -1;
}

int tg_sip_value(const struct tg_sip_msg *msg, const uint8_t *buf, enum tg_sip_hdr id,
                 const char **v, size_t *len) {
    if (msg->first[id] < 0)
        return 0;
    const struct tg_sip_header *h = &msg->headers[msg->first[id]];
    *v = (const char *)buf + h->value.off;
    *len = h->value.len;
    return 1;
}

unsigned tg_sip_count(const struct tg_sip_msg *msg, enum tg_sip_hdr id) {
    unsigned n = 0;
    for (unsigned i = 0; i < msg->num_headers; i++)
        n += msg->headers[i].id == id;
    return n;
}

// ---- lines -----------------------------------------------------------------------------------

#define LF_NUL 1u   // a NUL byte
#define LF_STRAY 2u // a CR not followed by LF, or an LF not preceded by CR
#define LF_CTL 4u   // any other control character (HTAB excepted)

// seg_flags notes what [from, to) (no CR in it) holds that a header line must not.
static unsigned seg_flags(const struct tg_cur *c, size_t from, size_t to) {
    unsigned f = 0;
    if (to > c->len)
        to = c->len;
    for (size_t i = from; i < to; i++) {
        uint8_t ch = c->b[i];
        if (ch >= 0x20 && ch != 0x7f)
            continue;
        if (ch == 0)
            f |= LF_NUL;
        else if (ch == '\n')
            f |= LF_STRAY;
        else if (ch != '\t')
            f |= LF_CTL;
    }
    return f;
}

// line_end finds the CRLF ending the physical line that starts at |from|, looking no further
// than |limit|. Returns 1 with the CR's offset in |*out_eol|, 0 when the CRLF is not (yet)
// within the limit. Flags of what the line holds are added to |*flags|.
static int line_end(const struct tg_cur *c, size_t from, size_t limit, size_t *out_eol,
                    unsigned *flags) {
    size_t i = from;
    for (;;) {
        size_t cr = tg_cur_find(c, i, limit, '\r');
        if (cr == TG_NPOS) {
            *flags |= seg_flags(c, i, limit);
            return 0;
        }
        *flags |= seg_flags(c, i, cr);
        if (cr + 1 >= limit)
            return 0;
        if (tg_cur_at(c, cr + 1) == '\n') {
            *out_eol = cr;
            return 1;
        }
        *flags |= LF_STRAY;
        i = cr + 1;
    }
}

// ---- start line ------------------------------------------------------------------------------

static enum tg_sip_method method_id(const struct tg_cur *c, size_t off, size_t len) {
    for (unsigned m = 1; m < TG_SIP_M_NUM; m++) {
        size_t ml = strlen(k_methods[m]);
        if (ml == len && off + len <= c->len && memcmp(c->b + off, k_methods[m], len) == 0)
            return (enum tg_sip_method)m;
    }
    return TG_SIP_M_OTHER;
}

// version_at checks "SIP/2.0" at [off, off+7) ignoring case. Returns 1 for 2.0, 0 for another
// well-formed "SIP/x.y", -1 for anything else. |*out_end| is where the version ends.
static int version_at(const struct tg_cur *c, size_t off, size_t end, size_t *out_end) {
    if (off + 4 > end || off + 4 > c->len || !mem_ieq(c->b + off, "sip/", 4))
        return -1;
    size_t i = off + 4;
    size_t d1 = i;
    while (i < end && is_digit(tg_cur_at(c, i)))
        i++;
    if (i == d1 || tg_cur_at(c, i) != '.' || i >= end)
        return -1;
    size_t dot = i++;
    size_t d2 = i;
    while (i < end && is_digit(tg_cur_at(c, i)))
        i++;
    if (i == d2)
        return -1;
    *out_end = i;
    if (dot - d1 == 1 && tg_cur_at(c, d1) == '2' && i - d2 == 1 && tg_cur_at(c, d2) == '0')
        return 1;
    return 0;
}

// parse_request_line: METHOD SP Request-URI SP SIP/2.0 over [0, eol).
static enum tg_sip_err parse_request_line(const struct tg_cur *c, size_t eol,
                                          struct tg_sip_msg *m) {
    size_t i = 0;
    while (i < eol && is_token(tg_cur_at(c, i)))
        i++;
    if (i == 0 || tg_cur_at(c, i) != ' ')
        return TG_SIP_ERR_START_LINE;
    m->method_name = (struct tg_sip_span){0, (uint32_t)i};
    m->method = (uint8_t)method_id(c, 0, i);
    size_t u = ++i;
    // scheme ":" then anything visible up to the next SP
    if (!is_alpha(tg_cur_at(c, i)))
        return TG_SIP_ERR_START_LINE;
    while (i < eol && (is_alpha(tg_cur_at(c, i)) || is_digit(tg_cur_at(c, i)) ||
                       tg_cur_at(c, i) == '+' || tg_cur_at(c, i) == '-' || tg_cur_at(c, i) == '.'))
        i++;
    if (tg_cur_at(c, i) != ':' || i >= eol)
        return TG_SIP_ERR_START_LINE;
    while (i < eol && tg_cur_at(c, i) != ' ' && !is_ctl(tg_cur_at(c, i)))
        i++;
    if (i >= eol || tg_cur_at(c, i) != ' ')
        return TG_SIP_ERR_START_LINE;
    m->uri = (struct tg_sip_span){(uint32_t)u, (uint32_t)(i - u)};
    i++;
    size_t vend = 0;
    int v = version_at(c, i, eol, &vend);
    if (v < 0 || vend != eol)
        return TG_SIP_ERR_START_LINE;
    if (v == 0)
        return TG_SIP_ERR_VERSION;
    return TG_SIP_ERR_NONE;
}

// parse_status_line: SIP/2.0 SP 3DIGIT [SP Reason-Phrase] over [0, eol).
static enum tg_sip_err parse_status_line(const struct tg_cur *c, size_t eol, struct tg_sip_msg *m) {
    size_t i = 0;
    int v = version_at(c, 0, eol, &i);
    if (v < 0 || tg_cur_at(c, i) != ' ' || i + 4 > eol)
        return TG_SIP_ERR_START_LINE;
    i++;
    unsigned code = 0;
    for (size_t k = 0; k < 3; k++) {
        int ch = tg_cur_at(c, i + k);
        if (!is_digit(ch))
            return TG_SIP_ERR_START_LINE;
        code = code * 10 + (unsigned)(ch - '0');
    }
    i += 3;
    if (code < 100 || code > 699)
        return TG_SIP_ERR_START_LINE;
    if (i < eol && tg_cur_at(c, i) != ' ')
        return TG_SIP_ERR_START_LINE;
    size_t r = i < eol ? i + 1 : eol;
    m->code = (uint16_t)code;
    m->reason = (struct tg_sip_span){(uint32_t)r, (uint32_t)(eol - r)};
    if (v == 0)
        return TG_SIP_ERR_VERSION;
    return TG_SIP_ERR_NONE;
}

// ---- Content-Length --------------------------------------------------------------------------

enum cl_state { CL_NONE = 0, CL_OK, CL_BAD, CL_HUGE, CL_DIFF };

// parse_cl reads a Content-Length value: 1*DIGIT, nothing else.
static enum cl_state parse_cl(const struct tg_cur *c, struct tg_sip_span v, uint32_t *out) {
    if (v.len == 0)
        return CL_BAD;
    uint64_t n = 0;
    int huge = 0;
    for (size_t i = v.off; i < (size_t)v.off + v.len; i++) {
        int ch = tg_cur_at(c, i);
        if (!is_digit(ch))
            return CL_BAD;
        n = n * 10 + (uint64_t)(ch - '0');
        if (n > UINT32_MAX) {
            huge = 1;
            n = UINT32_MAX + (uint64_t)1;
        }
    }
    if (huge)
        return CL_HUGE;
    *out = (uint32_t)n;
    return CL_OK;
}

// ---- the scanner -----------------------------------------------------------------------------

static uint16_t status_for(enum tg_sip_err err) {
    switch (err) {
    case TG_SIP_ERR_VERSION:
        return 505;
    case TG_SIP_ERR_LINE_TOO_LONG:
    case TG_SIP_ERR_TOO_MANY_HEADERS:
    case TG_SIP_ERR_HEAD_UNTERMINATED:
    case TG_SIP_ERR_BODY_TOO_LARGE: // a message over sip_max_message: 513 Message Too Large
        return 513;
    case TG_SIP_ERR_NONE:
        return 0;
    default:
        return 400;
    }
}

static enum tg_sip_scan_result fail(struct tg_sip_msg *m, enum tg_sip_err err, int answerable,
                                    int can_continue, uint64_t skip) {
    m->err = (uint8_t)err;
    m->status = answerable ? status_for(err) : 0;
    m->can_continue = (uint8_t)(can_continue && skip <= UINT32_MAX);
    m->len = m->can_continue ? (uint32_t)skip : 0;
    return TG_SIP_ERROR;
}

static enum tg_sip_scan_result need_more(struct tg_sip_msg *m, uint64_t need) {
    m->need = need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
    return TG_SIP_NEED_MORE;
}

// keepalive handles a buffer starting with CR: CRLFCRLF is a ping, a lone CRLF a pong.
static enum tg_sip_scan_result keepalive(const struct tg_cur *c, struct tg_sip_msg *m) {
    if (c->len < 2)
        return need_more(m, 2);
    if (tg_cur_at(c, 1) != '\n')
        return fail(m, TG_SIP_ERR_START_LINE, 0, 0, 0);
    // A lone CRLF at the end of what has arrived is a pong: waiting for a possible second
    // CRLF would hold a pong back indefinitely.
    if (c->len == 2 || tg_cur_at(c, 2) != '\r') {
        m->len = 2;
        return TG_SIP_PONG;
    }
    if (c->len == 3)
        return need_more(m, 4);
    if (tg_cur_at(c, 3) == '\n') {
        m->len = 4;
        return TG_SIP_PING;
    }
    m->len = 2;
    return TG_SIP_PONG;
}

// value_span trims a header value: after the colon at |colon|, up to the CRLF at |eol|.
static struct tg_sip_span value_span(const struct tg_cur *c, size_t colon, size_t eol) {
    size_t a = colon + 1;
    while (a < eol) {
        int ch = tg_cur_at(c, a);
        if (is_ws(ch)) {
            a++;
            continue;
        }
        if (ch == '\r' && tg_cur_at(c, a + 1) == '\n' && is_ws(tg_cur_at(c, a + 2))) {
            a += 3;
            continue;
        }
        break;
    }
    size_t b = eol;
    while (b > a) {
        int ch = tg_cur_at(c, b - 1);
        if (!is_ws(ch) && ch != '\r' && ch != '\n')
            break;
        b--;
    }
    return (struct tg_sip_span){(uint32_t)a, (uint32_t)(b - a)};
}

struct scan_state {
    enum tg_sip_err deferred; // first error that still lets the head be framed
    enum cl_state cl;
    uint32_t cl_value;
    unsigned num_seen;
};

static void defer(struct scan_state *s, enum tg_sip_err err) {
    if (s->deferred == TG_SIP_ERR_NONE)
        s->deferred = err;
}

// header parses one logical header [start, end) whose last CR is at |eol|.
static void header(const struct tg_cur *c, struct scan_state *s, struct tg_sip_msg *m,
                   size_t max_index, size_t start, size_t eol, size_t end) {
    size_t i = start;
    while (i < eol && is_token(tg_cur_at(c, i)))
        i++;
    size_t name_end = i;
    while (i < eol && is_ws(tg_cur_at(c, i)))
        i++;
    if (name_end == start || i >= eol || tg_cur_at(c, i) != ':') {
        defer(s, TG_SIP_ERR_HEADER);
        return;
    }
    size_t colon = i;
    enum tg_sip_hdr id = tg_sip_header_id(c->b + start, name_end - start);
    // A name a weak parser may take for Content-Length ("Content-Length-X", "Content_Length")
    // would let it frame differently from us: no such header exists, so it is malformed.
    if (id == TG_SIP_H_OTHER &&
        name_like(c->b + start, name_end - start, k_content_length, sizeof(k_content_length) - 1))
        defer(s, TG_SIP_ERR_HEADER);
    struct tg_sip_span value = value_span(c, colon, eol);
    if (id == TG_SIP_H_CONTENT_LENGTH && s->cl != CL_BAD && s->cl != CL_HUGE) {
        uint32_t v = 0;
        enum cl_state st = parse_cl(c, value, &v);
        if (st != CL_OK)
            s->cl = st;
        else if (s->cl == CL_OK && v != s->cl_value)
            s->cl = CL_DIFF;
        else if (s->cl == CL_NONE) {
            s->cl = CL_OK;
            s->cl_value = v;
        }
    }
    s->num_seen++;
    if (m->num_headers >= max_index) {
        m->truncated = 1;
        defer(s, TG_SIP_ERR_TOO_MANY_HEADERS);
        return;
    }
    struct tg_sip_header *h = &m->headers[m->num_headers];
    h->line = (struct tg_sip_span){(uint32_t)start, (uint32_t)(end - start)};
    h->name = (struct tg_sip_span){(uint32_t)start, (uint32_t)(name_end - start)};
    h->value = value;
    h->id = (uint8_t)id;
    if (m->first[id] < 0)
        m->first[id] = (int16_t)m->num_headers;
    m->num_headers++;
}

enum tg_sip_scan_result tg_sip_scan(const struct tg_sip_limits *lim, struct tg_sip_msg *out_msg,
                                    struct tg_sip_header *hdrs, size_t num_hdrs, const uint8_t *buf,
                                    size_t len) {
    struct tg_sip_limits defaults;
    if (lim == NULL) {
        tg_sip_limits_init(&defaults);
        lim = &defaults;
    }
    struct tg_sip_msg *m = out_msg;
    memset(m, 0, sizeof(*m));
    for (size_t k = 0; k < TG_SIP_H_NUM; k++)
        m->first[k] = -1;
    m->headers = hdrs;
    struct tg_cur c = {buf, buf == NULL ? 0 : len};
    if (c.len == 0)
        return need_more(m, 1);
    if (tg_cur_at(&c, 0) == '\r')
        return keepalive(&c, m);

    size_t max_index = num_hdrs < lim->max_headers ? num_hdrs : lim->max_headers;
    if (max_index > INT16_MAX)
        max_index = INT16_MAX;
    size_t limit = c.len < lim->max_message ? c.len : lim->max_message;
    int full = c.len >= lim->max_message; // nothing more may arrive for this head

    // Start line: garbage is refused as soon as it shows, so a desynchronised stream closes
    // early instead of after max_message bytes.
    size_t eol = 0;
    unsigned flags = 0;
    int found = line_end(&c, 0, limit, &eol, &flags);
    size_t seen = found ? eol : limit;
    if (!found && seen > 0 && tg_cur_at(&c, seen - 1) == '\r')
        seen--; // the CR of a CRLF whose LF has not arrived
    int looks_response = seen >= 4 && mem_ieq(c.b, "sip/", 4);
    for (size_t i = 0; i < seen; i++) {
        int ch = tg_cur_at(&c, i);
        if (is_ctl(ch) && ch != '\t')
            flags |= LF_CTL;
    }
    if (flags != 0 || (!found && c.len > 0 && !is_token(tg_cur_at(&c, 0))))
        return fail(m, TG_SIP_ERR_START_LINE, !looks_response, 0, 0);
    if (seen + 2 > lim->max_line)
        return fail(m, TG_SIP_ERR_LINE_TOO_LONG, !looks_response, 0, 0);
    if (!found) {
        if (full)
            return fail(m, TG_SIP_ERR_HEAD_UNTERMINATED, !looks_response, 0, 0);
        return need_more(m, (uint64_t)c.len + 1);
    }
    m->start_line = (struct tg_sip_span){0, (uint32_t)eol};
    m->is_request = !looks_response;
    struct scan_state s = {0};
    enum tg_sip_err e =
        looks_response ? parse_status_line(&c, eol, m) : parse_request_line(&c, eol, m);
    if (e == TG_SIP_ERR_START_LINE)
        return fail(m, e, m->is_request, 0, 0);
    if (e != TG_SIP_ERR_NONE)
        defer(&s, e);

    // Headers, one logical (folded) header at a time.
    size_t pos = eol + 2;
    for (;;) {
        if (pos + 2 > limit) {
            if (full)
                return fail(m, TG_SIP_ERR_HEAD_UNTERMINATED, m->is_request, 0, 0);
            return need_more(m, (uint64_t)c.len + 1);
        }
        if (tg_cur_at(&c, pos) == '\r' && tg_cur_at(&c, pos + 1) == '\n')
            break;
        size_t start = pos, p = pos;
        unsigned hf = 0;
        if (is_ws(tg_cur_at(&c, start)))
            hf |= LF_STRAY; // a continuation with nothing to continue
        for (;;) {
            if (!line_end(&c, p, limit, &eol, &hf) || eol + 2 >= limit) {
                if (full)
                    return fail(m, TG_SIP_ERR_HEAD_UNTERMINATED, m->is_request, 0, 0);
                return need_more(m, (uint64_t)c.len + 1);
            }
            if (!is_ws(tg_cur_at(&c, eol + 2)))
                break;
            p = eol + 2;
        }
        size_t end = eol + 2;
        if (hf & LF_NUL)
            defer(&s, TG_SIP_ERR_NUL);
        if (hf & LF_STRAY)
            defer(&s, TG_SIP_ERR_HEADER);
        if (hf & LF_CTL)
            defer(&s, TG_SIP_ERR_CTL);
        if (end - start > lim->max_line)
            defer(&s, TG_SIP_ERR_LINE_TOO_LONG);
        header(&c, &s, m, max_index, start, eol, end);
        if (s.num_seen > lim->max_headers)
            defer(&s, TG_SIP_ERR_TOO_MANY_HEADERS);
        pos = end;
    }
    m->head_len = (uint32_t)(pos + 2);

    // Framing: Content-Length is mandatory on a stream.
    switch (s.cl) {
    case CL_NONE:
        return fail(m, s.deferred ? s.deferred : TG_SIP_ERR_NO_CONTENT_LENGTH, m->is_request, 0, 0);
    case CL_BAD:
        return fail(m, s.deferred ? s.deferred : TG_SIP_ERR_BAD_CONTENT_LENGTH, m->is_request, 0,
                    0);
    case CL_DIFF:
        return fail(m, s.deferred ? s.deferred : TG_SIP_ERR_CONTENT_LENGTH_DIFF, m->is_request, 0,
                    0);
    case CL_HUGE:
        return fail(m, s.deferred ? s.deferred : TG_SIP_ERR_BODY_TOO_LARGE, m->is_request, 0, 0);
    case CL_OK:
        break;
    }
    m->body_len = s.cl_value;
    uint64_t total = (uint64_t)m->head_len + s.cl_value;
    if (s.deferred != TG_SIP_ERR_NONE)
        return fail(m, s.deferred, m->is_request, 1, total);
    if (total > lim->max_message)
        return fail(m, TG_SIP_ERR_BODY_TOO_LARGE, m->is_request, 1, total);
    if (c.len < total)
        return need_more(m, total);
    m->len = (uint32_t)total;
    return TG_SIP_MESSAGE;
}
