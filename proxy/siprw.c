// SIP proxy rewriter: the normal form every forwarded message leaves in, and Via,
// Max-Forwards, Route, Record-Route, Contact (sealed tg-orig) and X-TLS-Peer-* on the way
// through tlsgate. See include/tlsgate/siprw.h. Reads the input through a bounds-checked
// cursor and writes through a bounded emitter; neither allocates. The tg-orig seal, the flow
// token and the keys are siporig.c's.
#include "tlsgate/siprw.h"

#include "tlsgate/cursor.h"

#include <stdio.h>
#include <string.h>

#include <openssl/siphash.h>

// ---- input cursor ----------------------------------------------------------------------------

static int is_ws(int ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static int is_digit(int ch) {
    return ch >= '0' && ch <= '9';
}

// trim narrows [*a, *b) past whitespace and folds at both ends.
static void trim(const struct tg_cur *c, size_t *a, size_t *b) {
    while (*a < *b && is_ws(tg_cur_at(c, *a)))
        (*a)++;
    while (*b > *a && is_ws(tg_cur_at(c, *b - 1)))
        (*b)--;
}

size_t tg_sip_elem_end(const struct tg_cur *c, size_t i, size_t end) {
    int in_quote = 0, in_angle = 0;
    for (; i < end; i++) {
        int ch = tg_cur_at(c, i);
        if (in_quote) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_quote = 0;
            continue;
        }
        if (ch == '"')
            in_quote = 1;
        else if (ch == '<')
            in_angle = 1;
        else if (ch == '>')
            in_angle = 0;
        else if (ch == ',' && !in_angle)
            return i;
    }
    return end;
}

// find_unquoted returns the first |ch| in [i, end) outside quotes, or TG_NPOS.
static size_t find_unquoted(const struct tg_cur *c, size_t i, size_t end, int ch) {
    int in_quote = 0;
    for (; i < end; i++) {
        int x = tg_cur_at(c, i);
        if (in_quote) {
            if (x == '\\')
                i++;
            else if (x == '"')
                in_quote = 0;
            continue;
        }
        if (x == '"')
            in_quote = 1;
        else if (x == ch)
            return i;
    }
    return TG_NPOS;
}

// find_param looks for ";name[=value]" in the parameter section [i, end) and returns 1 with
// the (trimmed) value span, 0 when absent.
static int find_param(const struct tg_cur *c, size_t i, size_t end, const char *name, size_t *out_a,
                      size_t *out_b) {
    size_t name_len = strlen(name);
    for (;;) {
        size_t semi = find_unquoted(c, i, end, ';');
        if (semi == TG_NPOS)
            return 0;
        size_t next = find_unquoted(c, semi + 1, end, ';');
        size_t pend = next == TG_NPOS ? end : next;
        size_t eq = tg_cur_find(c, semi + 1, pend, '=');
        size_t na = semi + 1, nb = eq == TG_NPOS ? pend : eq;
        trim(c, &na, &nb);
        if (tg_cur_ieq(c, na, nb - na, name, name_len)) {
            size_t va = eq == TG_NPOS ? pend : eq + 1, vb = pend;
            trim(c, &va, &vb);
            *out_a = va;
            *out_b = vb;
            return 1;
        }
        if (next == TG_NPOS)
            return 0;
        i = next;
    }
}

// ---- URIs ------------------------------------------------------------------------------------

struct uri {
    size_t off, end;           // the whole URI
    size_t user_off, user_end; // userinfo without '@' (user_off == user_end: none)
    int has_user;
    size_t host_off, host_end;
    long port;         // -1 when absent
    size_t params_off; // first ';' after hostport (== params_end when none)
    size_t params_end; // '?' or end
};

// parse_sip_uri splits a sip: or sips: URI in [off, end). Returns 0 for another scheme or a
// URI without a host.
static int parse_sip_uri(const struct tg_cur *c, size_t off, size_t end, struct uri *u) {
    size_t colon = TG_NPOS;
    if (tg_cur_ieq(c, off, 4, "sip:", 4))
        colon = off + 3;
    else if (tg_cur_ieq(c, off, 5, "sips:", 5))
        colon = off + 4;
    if (colon == TG_NPOS)
        return 0;
    memset(u, 0, sizeof(*u));
    u->off = off;
    u->end = end;
    size_t i = colon + 1;
    size_t at = tg_cur_find(c, i, end, '@');
    if (at != TG_NPOS) {
        u->has_user = 1;
        u->user_off = i;
        u->user_end = at;
        i = at + 1;
    }
    u->host_off = i;
    if (tg_cur_at(c, i) == '[') {
        size_t rb = tg_cur_find(c, i, end, ']');
        if (rb == TG_NPOS)
            return 0;
        i = rb + 1;
    } else {
        while (i < end) {
            int ch = tg_cur_at(c, i);
            if (ch == ':' || ch == ';' || ch == '?' || ch == '>' || is_ws(ch))
                break;
            i++;
        }
    }
    u->host_end = i;
    if (u->host_end == u->host_off)
        return 0;
    u->port = -1;
    if (tg_cur_at(c, i) == ':' && i < end) {
        i++;
        long p = 0;
        size_t d = i;
        while (i < end && is_digit(tg_cur_at(c, i)) && i - d < 6) {
            p = p * 10 + (tg_cur_at(c, i) - '0');
            i++;
        }
        if (i == d)
            return 0;
        u->port = p;
    }
    size_t q = tg_cur_find(c, i, end, '?');
    u->params_end = q == TG_NPOS ? end : q;
    u->params_off = i < u->params_end ? i : u->params_end;
    return 1;
}

// host_is checks the URI's host and port against one of our addresses.
static int host_is(const struct tg_cur *c, const struct uri *u, const char *host, uint16_t port) {
    if (host == NULL || !tg_cur_ieq(c, u->host_off, u->host_end - u->host_off, host, strlen(host)))
        return 0;
    return u->port < 0 || u->port == port;
}

// uri_is_ours says whether |u| names tlsgate on either side.
static int uri_is_ours(const struct tg_sip_rw_cfg *cfg, const struct tg_cur *c,
                       const struct uri *u) {
    return host_is(c, u, cfg->fqdn, cfg->fqdn_port) ||
           host_is(c, u, cfg->inside_host, cfg->inside_port);
}

// ---- output emitter --------------------------------------------------------------------------

struct out {
    uint8_t *p;
    size_t cap;
    size_t len;
    int overflow;          // ran out of |cap|
    int over_limit;        // a header line longer than the limit
    enum tg_sip_rw refuse; // the message cannot be forwarded (TG_SIP_RW_OK: it can)
    size_t line_start;     // where the current header began
    unsigned num_headers;  // headers written
    uint32_t max_line;
};

static void put(struct out *o, const void *data, size_t n) {
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    if (n > 0)
        memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void put_str(struct out *o, const char *s) {
    put(o, s, strlen(s));
}

static void put_span(struct out *o, const struct tg_cur *c, size_t a, size_t b) {
    if (b < a || b > c->len) {
        o->overflow = 1;
        return;
    }
    put(o, c->b + a, b - a);
}

static void put_uint(struct out *o, unsigned long v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 && n < sizeof(tmp));
    put(o, tmp + sizeof(tmp) - n, n);
}

// refuse notes the first reason the message cannot be forwarded.
static void refuse(struct out *o, enum tg_sip_rw why) {
    if (o->refuse == TG_SIP_RW_OK)
        o->refuse = why;
}

static int is_lws(int ch) {
    return ch == ' ' || ch == '\t';
}

// put_val copies header value bytes [a, b) unfolded: each run of whitespace holding a CR or LF
// (a fold) becomes one SP; other whitespace stays as it came.
static void put_val(struct out *o, const struct tg_cur *c, size_t a, size_t b) {
    if (b < a || b > c->len) {
        o->overflow = 1;
        return;
    }
    size_t i = a;
    while (i < b) {
        size_t k = i;
        while (k < b && c->b[k] != '\r' && c->b[k] != '\n')
            k++;
        size_t e = k;
        if (k < b)
            while (e > i && is_lws(c->b[e - 1]))
                e--;
        put(o, c->b + i, e - i);
        if (k >= b)
            return;
        while (k < b && is_ws(c->b[k]))
            k++;
        if (e > a && k < b)
            put(o, " ", 1);
        i = k;
    }
}

static void header_begin(struct out *o) {
    o->line_start = o->len;
}

static void header_end(struct out *o) {
    o->num_headers++;
    if (o->len - o->line_start > o->max_line)
        o->over_limit = 1;
}

// put_name starts header |h|: its canonical name when tlsgate knows it, else its own, ": ".
static void put_name(struct out *o, const struct tg_cur *c, const struct tg_sip_header *h) {
    header_begin(o);
    const char *name = tg_sip_header_name((enum tg_sip_hdr)h->id);
    if (name != NULL)
        put_str(o, name);
    else
        put_span(o, c, h->name.off, (size_t)h->name.off + h->name.len);
    put_str(o, ": ");
}

static void put_eol(struct out *o) {
    put_str(o, "\r\n");
    header_end(o);
}

// put_hdr writes header |h| in the normal form: name, ": ", the value unfolded, CRLF.
static void put_hdr(struct out *o, const struct tg_cur *c, const struct tg_sip_header *h) {
    put_name(o, c, h);
    put_val(o, c, h->value.off, (size_t)h->value.off + h->value.len);
    put_eol(o);
}

// ---- configuration and names -----------------------------------------------------------------

int tg_sip_rw_cfg_init(struct tg_sip_rw_cfg *cfg, const char *fqdn, uint16_t fqdn_port,
                       const char *inside_host, uint16_t inside_port, const uint8_t key[16]) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->fqdn = fqdn;
    cfg->fqdn_port = fqdn_port;
    cfg->inside_host = inside_host;
    cfg->inside_port = inside_port;
    tg_sip_limits_init(&cfg->limits);
    return tg_sip_derive_keys(cfg, key);
}

const char *tg_sip_rw_name(enum tg_sip_rw r) {
    static const char *const names[TG_SIP_RW_NUM] = {
        "ok",       "no_space",  "too_large", "too_many_hops",    "bad_request", "no_via",
        "not_ours", "bad_token", "last_via",  "duplicate_header", "bad_tg_orig", "bad_contact",
    };
    if ((unsigned)r >= TG_SIP_RW_NUM)
        return "unknown";
    return names[r];
}

uint16_t tg_sip_rw_status(enum tg_sip_rw r) {
    switch (r) {
    case TG_SIP_RW_TOO_LARGE:
        return 513;
    case TG_SIP_RW_TOO_MANY_HOPS:
        return 483;
    case TG_SIP_RW_BAD_REQUEST:
    case TG_SIP_RW_DUPLICATE:
    case TG_SIP_RW_BAD_TG_ORIG:
    case TG_SIP_RW_BAD_CONTACT:
        return 400;
    default:
        return 0;
    }
}

// ---- Via -------------------------------------------------------------------------------------

static const char k_cookie[] = "z9hG4bK";

struct via {
    size_t host_off, host_end;
    long port;
    size_t params_off, end;
};

// parse_via splits one Via element [a, b): "SIP / 2.0 / TLS host[:port] *(;param)".
static int parse_via(const struct tg_cur *c, size_t a, size_t b, struct via *v) {
    size_t i = a;
    int slashes = 0;
    // sent-protocol: three tokens separated by '/', whitespace allowed around the slashes.
    while (i < b) {
        int ch = tg_cur_at(c, i);
        if (ch == '/') {
            slashes++;
            i++;
            while (i < b && is_ws(tg_cur_at(c, i)))
                i++;
            continue;
        }
        if (is_ws(ch)) {
            size_t j = i;
            while (j < b && is_ws(tg_cur_at(c, j)))
                j++;
            if (slashes == 2 || tg_cur_at(c, j) != '/') {
                i = j;
                break;
            }
            i = j;
            continue;
        }
        i++;
    }
    if (slashes != 2 || i >= b)
        return 0;
    v->host_off = i;
    if (tg_cur_at(c, i) == '[') {
        size_t rb = tg_cur_find(c, i, b, ']');
        if (rb == TG_NPOS)
            return 0;
        i = rb + 1;
    } else {
        while (i < b && tg_cur_at(c, i) != ':' && tg_cur_at(c, i) != ';' && !is_ws(tg_cur_at(c, i)))
            i++;
    }
    v->host_end = i;
    if (v->host_end == v->host_off)
        return 0;
    while (i < b && is_ws(tg_cur_at(c, i)))
        i++;
    v->port = -1;
    if (tg_cur_at(c, i) == ':' && i < b) {
        i++;
        while (i < b && is_ws(tg_cur_at(c, i)))
            i++;
        long p = 0;
        size_t d = i;
        while (i < b && is_digit(tg_cur_at(c, i)) && i - d < 6) {
            p = p * 10 + (tg_cur_at(c, i) - '0');
            i++;
        }
        v->port = p;
    }
    v->params_off = i;
    v->end = b;
    return 1;
}

// tx_hash identifies the incoming transaction: its top Via's branch (or the whole top Via when
// it has none, RFC 2543 style), so retransmissions, CANCEL and non-2xx ACK map to one branch.
static uint32_t tx_hash(const struct tg_sip_rw_cfg *cfg, const struct tg_cur *c, size_t a,
                        size_t b) {
    struct via v;
    size_t va, vb;
    if (parse_via(c, a, b, &v) && find_param(c, v.params_off, v.end, "branch", &va, &vb) &&
        vb > va) {
        a = va;
        b = vb;
    }
    return (uint32_t)SIPHASH_24(cfg->txh_key, c->b + a, b - a);
}

// ---- tg-orig (siporig.c seals and opens) -----------------------------------------------------

// put_sealed writes the tg-orig value of the URI [a, b) of the input, sealed toward |toward|.
static void put_sealed(struct out *o, const struct tg_sip_rw_cfg *cfg, enum tg_sip_side toward,
                       const struct tg_cur *c, size_t a, size_t b) {
    if (b - a > TG_SIP_SEAL_MAX_URI) {
        refuse(o, TG_SIP_RW_TOO_LARGE);
        return;
    }
    if (!tg_sip_sealable(c->b + a, b - a)) {
        refuse(o, TG_SIP_RW_BAD_CONTACT);
        return;
    }
    size_t n = tg_sip_sealed_len(b - a);
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    if (!tg_sip_seal_uri(cfg, (char *)o->p + o->len, o->cap - o->len, &n, toward, c->b + a,
                         b - a)) {
        refuse(o, TG_SIP_RW_BAD_CONTACT); // the AEAD fails only when memory is short
        return;
    }
    o->len += n;
}

// ---- shared pieces ---------------------------------------------------------------------------

static enum tg_sip_side other_side(enum tg_sip_side s) {
    return s == TG_SIP_SIDE_PROVIDER ? TG_SIP_SIDE_PBX : TG_SIP_SIDE_PROVIDER;
}

static const char *side_host(const struct tg_sip_rw_cfg *cfg, enum tg_sip_side s) {
    return s == TG_SIP_SIDE_PROVIDER ? cfg->fqdn : cfg->inside_host;
}

static uint16_t side_port(const struct tg_sip_rw_cfg *cfg, enum tg_sip_side s) {
    return s == TG_SIP_SIDE_PROVIDER ? cfg->fqdn_port : cfg->inside_port;
}

static const char *side_transport(enum tg_sip_side s) {
    return s == TG_SIP_SIDE_PROVIDER ? "tls" : "tcp";
}

// put_our_uri writes "sip:[user@]host:port;transport=..." for side |s|.
static void put_our_uri(struct out *o, const struct tg_sip_rw_cfg *cfg, enum tg_sip_side s,
                        const struct tg_cur *c, const struct uri *u) {
    put_str(o, "sip:");
    if (u != NULL && u->has_user) {
        put_span(o, c, u->user_off, u->user_end);
        put_str(o, "@");
    }
    put_str(o, side_host(cfg, s));
    put_str(o, ":");
    put_uint(o, side_port(cfg, s));
    put_str(o, ";transport=");
    put_str(o, side_transport(s));
}

enum restore {
    RESTORE_NONE = 0, // not one of ours with a tg-orig: nothing written
    RESTORE_DONE,     // the original URI written (or the output overflowed)
    RESTORE_BAD,      // ours with a tg-orig tlsgate did not seal toward |from|: refuse
};

// restore writes the original URI sealed in the ";tg-orig=" of |u| when |u| names us; |u|
// arrived from side |from|.
static enum restore restore(struct out *o, const struct tg_sip_rw_cfg *cfg, const struct tg_cur *c,
                            const struct uri *u, enum tg_sip_side from) {
    size_t a, b, n = 0;
    if (!uri_is_ours(cfg, c, u) || !find_param(c, u->params_off, u->params_end, "tg-orig", &a, &b))
        return RESTORE_NONE;
    if (o->overflow || b - a > o->cap - o->len) {
        o->overflow = 1;
        return RESTORE_DONE;
    }
    if (!tg_sip_open_uri(cfg, o->p + o->len, o->cap - o->len, &n, from, (const char *)c->b + a,
                         b - a))
        return RESTORE_BAD;
    o->len += n;
    return RESTORE_DONE;
}

// put_contact_elem rewrites one Contact element [a, b) that arrived from |from|: an original
// restored, any other sip or sips URI hidden behind ours on the other side.
static void put_contact_elem(struct out *o, const struct tg_sip_rw_cfg *cfg, enum tg_sip_side from,
                             const struct tg_cur *c, size_t a, size_t b) {
    size_t lt = find_unquoted(c, a, b, '<');
    size_t ua, ub, rest;
    if (lt != TG_NPOS) {
        size_t gt = tg_cur_find(c, lt, b, '>');
        if (gt == TG_NPOS) {
            refuse(o, TG_SIP_RW_BAD_CONTACT);
            return;
        }
        ua = lt + 1;
        ub = gt;
        rest = gt + 1;
    } else {
        ua = a;
        ub = tg_cur_find(c, a, b, ';');
        if (ub == TG_NPOS)
            ub = b;
        rest = ub;
    }
    struct uri u;
    if (!parse_sip_uri(c, ua, ub, &u)) {
        if ((ub - ua >= 4 && tg_cur_ieq(c, ua, 4, "sip:", 4)) ||
            (ub - ua >= 5 && tg_cur_ieq(c, ua, 5, "sips:", 5))) {
            refuse(o, TG_SIP_RW_BAD_CONTACT); // a sip URI we cannot read is not forwarded
            return;
        }
        put_val(o, c, a, b); // "*", tel:, urn: ... stay as they are
        return;
    }
    if (lt != TG_NPOS)
        put_val(o, c, a, lt);
    put_str(o, "<");
    enum restore r = restore(o, cfg, c, &u, from);
    if (r == RESTORE_BAD) {
        refuse(o, TG_SIP_RW_BAD_TG_ORIG);
        return;
    }
    if (r == RESTORE_NONE) {
        put_our_uri(o, cfg, other_side(from), c, &u);
        put_str(o, ";tg-orig=");
        put_sealed(o, cfg, other_side(from), c, ua, ub);
    }
    put_str(o, ">");
    put_val(o, c, rest, b);
}

// put_contact writes a Contact header with every element rewritten (see put_contact_elem).
static void put_contact(struct out *o, const struct tg_sip_rw_cfg *cfg, enum tg_sip_side from,
                        const struct tg_cur *c, const struct tg_sip_header *h) {
    put_name(o, c, h);
    size_t i = h->value.off, end = (size_t)h->value.off + h->value.len;
    int first = 1;
    while (i <= end) {
        size_t e = tg_sip_elem_end(c, i, end);
        size_t a = i, b = e;
        trim(c, &a, &b);
        if (!first)
            put_str(o, ", ");
        first = 0;
        put_contact_elem(o, cfg, from, c, a, b);
        if (e >= end)
            break;
        i = e + 1;
    }
    put_eol(o);
}

int tg_sip_elem_uri(const struct tg_cur *c, size_t a, size_t b, size_t *off, size_t *end) {
    size_t lt = find_unquoted(c, a, b, '<');
    if (lt == TG_NPOS) {
        size_t semi = tg_cur_find(c, a, b, ';');
        b = semi == TG_NPOS ? b : semi;
        trim(c, &a, &b);
    } else {
        size_t gt = tg_cur_find(c, lt, b, '>');
        if (gt == TG_NPOS)
            return 0;
        a = lt + 1;
        b = gt;
    }
    *off = a;
    *end = b;
    return b > a;
}

// elem_uri finds and splits the sip/sips URI of a name-addr / addr-spec element [a, b).
static int elem_uri(const struct tg_cur *c, size_t a, size_t b, struct uri *u) {
    size_t off, end;
    return tg_sip_elem_uri(c, a, b, &off, &end) && parse_sip_uri(c, off, end, u);
}

int tg_sip_uri_host_is(const struct tg_cur *c, size_t off, size_t end, const char *host) {
    struct uri u;
    return host != NULL && parse_sip_uri(c, off, end, &u) &&
           tg_cur_ieq(c, u.host_off, u.host_end - u.host_off, host, strlen(host));
}

// put_value_from writes header |h| with its value starting at |from| (dropping the elements
// before it).
static void put_value_from(struct out *o, const struct tg_cur *c, const struct tg_sip_header *h,
                           size_t from) {
    size_t end = (size_t)h->value.off + h->value.len;
    trim(c, &from, &end);
    put_name(o, c, h);
    put_val(o, c, from, end);
    put_eol(o);
}

// check_single refuses a message holding twice a single-valued header that tlsgate reads or
// that decides how a parser behind it sees the message (RFC 3261 section 7.3: malformed).
static enum tg_sip_rw check_single(const struct tg_sip_msg *msg) {
    static const uint8_t single[] = {TG_SIP_H_MAX_FORWARDS, TG_SIP_H_CALL_ID,
                                     TG_SIP_H_CSEQ,         TG_SIP_H_FROM,
                                     TG_SIP_H_TO,           TG_SIP_H_CONTENT_TYPE};
    for (size_t i = 0; i < sizeof(single); i++) {
        if (msg->first[single[i]] >= 0 && tg_sip_find(msg, (enum tg_sip_hdr)single[i], 1) >= 0)
            return TG_SIP_RW_DUPLICATE;
    }
    return TG_SIP_RW_OK;
}

// finish writes the one Content-Length, the end of the head and the body as framed.
static enum tg_sip_rw finish(const struct tg_sip_rw_cfg *cfg, struct out *o,
                             const struct tg_sip_msg *msg, const struct tg_cur *c,
                             size_t *out_len) {
    header_begin(o);
    put_str(o, "Content-Length: ");
    put_uint(o, msg->body_len);
    put_eol(o);
    put_str(o, "\r\n");
    put_span(o, c, msg->head_len, (size_t)msg->head_len + msg->body_len);
    if (o->refuse != TG_SIP_RW_OK)
        return o->refuse;
    // A buffer larger than max_message that overflowed means an output over the limit.
    if (o->overflow)
        return o->cap > cfg->limits.max_message ? TG_SIP_RW_TOO_LARGE : TG_SIP_RW_NO_SPACE;
    if (o->over_limit || o->num_headers > cfg->limits.max_headers ||
        o->len > cfg->limits.max_message)
        return TG_SIP_RW_TOO_LARGE;
    *out_len = o->len;
    return TG_SIP_RW_OK;
}

static void out_init(struct out *o, uint8_t *p, size_t cap, uint32_t max_line) {
    memset(o, 0, sizeof(*o));
    o->p = p;
    o->cap = p == NULL ? 0 : cap;
    o->max_line = max_line;
}

// ---- requests --------------------------------------------------------------------------------

// route_drop counts how many leading Route entries name us (at most two: one per side) and
// where the first kept entry starts: |*out_hdr| headers are dropped whole, then header
// |*out_hdr| keeps its value from |*out_from| (TG_NPOS: no partial header).
static void route_drop(const struct tg_sip_rw_cfg *cfg, const struct tg_cur *c,
                       const struct tg_sip_msg *msg, int *out_hdr, size_t *out_from) {
    *out_hdr = -1;
    *out_from = TG_NPOS;
    unsigned dropped = 0;
    for (unsigned k = 0; k < msg->num_headers && dropped < 2; k++) {
        const struct tg_sip_header *h = &msg->headers[k];
        if (h->id != TG_SIP_H_ROUTE)
            continue;
        size_t i = h->value.off, end = (size_t)h->value.off + h->value.len;
        for (;;) {
            size_t e = tg_sip_elem_end(c, i, end);
            size_t a = i, b = e;
            trim(c, &a, &b);
            struct uri u;
            if (dropped >= 2 || !elem_uri(c, a, b, &u) || !uri_is_ours(cfg, c, &u)) {
                *out_hdr = (int)k;
                *out_from = i;
                return;
            }
            dropped++;
            if (e >= end)
                break;
            i = e + 1;
        }
        *out_hdr = (int)k + 1; // this whole header went; the next Route decides
    }
}

static int method_record_routes(enum tg_sip_method m) {
    return m != TG_SIP_M_REGISTER && m != TG_SIP_M_ACK && m != TG_SIP_M_CANCEL;
}

// parse_max_forwards reads 1*DIGIT. Returns 0 when it is not a number.
static int parse_max_forwards(const struct tg_cur *c, const struct tg_sip_header *h,
                              unsigned long *out) {
    if (h->value.len == 0 || h->value.len > 9)
        return 0;
    unsigned long v = 0;
    for (size_t i = h->value.off; i < (size_t)h->value.off + h->value.len; i++) {
        int ch = tg_cur_at(c, i);
        if (!is_digit(ch))
            return 0;
        v = v * 10 + (unsigned long)(ch - '0');
    }
    *out = v;
    return 1;
}

enum tg_sip_rw tg_sip_rewrite_request(const struct tg_sip_rw_cfg *cfg, uint8_t *out, size_t out_cap,
                                      size_t *out_len, const struct tg_sip_msg *msg,
                                      const uint8_t *buf, const struct tg_sip_flow *from,
                                      const char *peer_name) {
    *out_len = 0;
    if (!msg->is_request || msg->len == 0 || msg->truncated)
        return TG_SIP_RW_BAD_REQUEST;
    struct tg_cur c = {buf, msg->len};
    enum tg_sip_side to = other_side((enum tg_sip_side)from->side);
    int via = msg->first[TG_SIP_H_VIA];
    if (via < 0)
        return TG_SIP_RW_BAD_REQUEST;
    enum tg_sip_rw dup = check_single(msg);
    if (dup != TG_SIP_RW_OK)
        return dup;
    int mf = msg->first[TG_SIP_H_MAX_FORWARDS];
    unsigned long hops = 70;
    if (mf >= 0) {
        if (!parse_max_forwards(&c, &msg->headers[mf], &hops))
            return TG_SIP_RW_BAD_REQUEST;
        if (hops == 0)
            return TG_SIP_RW_TOO_MANY_HOPS;
        hops--;
    }

    struct out o;
    out_init(&o, out, out_cap, cfg->limits.max_line);

    // Request line, with a Request-URI of ours restored to the original it stands for.
    size_t ua = msg->uri.off, ub = (size_t)msg->uri.off + msg->uri.len;
    put_span(&o, &c, 0, ua);
    struct uri u;
    enum restore rr =
        parse_sip_uri(&c, ua, ub, &u) ? restore(&o, cfg, &c, &u, from->side) : RESTORE_NONE;
    if (rr == RESTORE_BAD)
        return TG_SIP_RW_BAD_TG_ORIG;
    if (rr == RESTORE_NONE)
        put_span(&o, &c, ua, ub);
    put_span(&o, &c, ub, (size_t)msg->start_line.off + msg->start_line.len);
    put_str(&o, "\r\n");
    if (o.len > cfg->limits.max_line)
        o.over_limit = 1; // a restored Request-URI made the start line too long

    // Our Via, Record-Route and (when missing) Max-Forwards go on top.
    const struct tg_sip_header *top = &msg->headers[via];
    size_t te = tg_sip_elem_end(&c, top->value.off, (size_t)top->value.off + top->value.len);
    char token[TG_SIP_TOKEN_LEN];
    tg_sip_flow_encode(cfg, token, from, tx_hash(cfg, &c, top->value.off, te));
    header_begin(&o);
    put_str(&o, to == TG_SIP_SIDE_PROVIDER ? "Via: SIP/2.0/TLS " : "Via: SIP/2.0/TCP ");
    put_str(&o, side_host(cfg, to));
    put_str(&o, ":");
    put_uint(&o, side_port(cfg, to));
    put_str(&o, ";branch=");
    put_str(&o, k_cookie);
    put(&o, token, sizeof(token));
    put_eol(&o);
    if (method_record_routes((enum tg_sip_method)msg->method)) {
        header_begin(&o);
        put_str(&o, "Record-Route: <");
        put_our_uri(&o, cfg, to, &c, NULL);
        put_str(&o, ";lr>");
        put_eol(&o);
    }
    if (mf < 0) {
        header_begin(&o);
        put_str(&o, "Max-Forwards: 70");
        put_eol(&o);
    }

    int route_hdr;
    size_t route_from;
    route_drop(cfg, &c, msg, &route_hdr, &route_from);
    for (unsigned k = 0; k < msg->num_headers; k++) {
        const struct tg_sip_header *h = &msg->headers[k];
        switch (h->id) {
        case TG_SIP_H_X_TLS_PEER:
        case TG_SIP_H_CONTENT_LENGTH: // ours goes last
            continue;
        case TG_SIP_H_MAX_FORWARDS: // the only one (check_single)
            header_begin(&o);
            put_str(&o, "Max-Forwards: ");
            put_uint(&o, hops);
            put_eol(&o);
            continue;
        case TG_SIP_H_ROUTE:
            if ((int)k < route_hdr)
                continue;
            if ((int)k == route_hdr && route_from != TG_NPOS) {
                put_value_from(&o, &c, h, route_from);
                continue;
            }
            break;
        case TG_SIP_H_CONTACT:
            put_contact(&o, cfg, (enum tg_sip_side)from->side, &c, h);
            continue;
        default:
            break;
        }
        put_hdr(&o, &c, h);
    }
    if (from->side == TG_SIP_SIDE_PROVIDER && peer_name != NULL && peer_name[0] != '\0') {
        int clean = 1;
        for (const char *p = peer_name; *p; p++)
            clean &= (unsigned char)*p >= 0x20 && *p != 0x7f;
        if (clean) {
            header_begin(&o);
            put_str(&o, "X-TLS-Peer-Name: ");
            put_str(&o, peer_name);
            put_eol(&o);
        }
    }
    return finish(cfg, &o, msg, &c, out_len);
}

// ---- responses -------------------------------------------------------------------------------

// put_record_route writes a Record-Route header, renaming entries that name our address on
// side |from| to our address on side |to|.
static void put_record_route(struct out *o, const struct tg_sip_rw_cfg *cfg, enum tg_sip_side from,
                             enum tg_sip_side to, const struct tg_cur *c,
                             const struct tg_sip_header *h) {
    put_name(o, c, h);
    size_t i = h->value.off, end = (size_t)h->value.off + h->value.len;
    int first = 1;
    for (;;) {
        size_t e = tg_sip_elem_end(c, i, end);
        size_t a = i, b = e;
        trim(c, &a, &b);
        if (!first)
            put_str(o, ", ");
        first = 0;
        struct uri u;
        if (elem_uri(c, a, b, &u) && host_is(c, &u, side_host(cfg, from), side_port(cfg, from))) {
            put_str(o, "<");
            put_our_uri(o, cfg, to, c, NULL);
            put_str(o, ";lr>");
        } else {
            put_val(o, c, a, b);
        }
        if (e >= end)
            break;
        i = e + 1;
    }
    put_eol(o);
}

// check_top_via verifies that the element [a, b) is our Via on side |from| and decodes its
// token.
static enum tg_sip_rw check_top_via(const struct tg_sip_rw_cfg *cfg, const struct tg_cur *c,
                                    size_t a, size_t b, enum tg_sip_side from,
                                    struct tg_sip_flow *out_flow) {
    struct via v;
    if (!parse_via(c, a, b, &v))
        return TG_SIP_RW_DROP_NOT_OURS;
    const char *host = side_host(cfg, from);
    if (host == NULL || !tg_cur_ieq(c, v.host_off, v.host_end - v.host_off, host, strlen(host)))
        return TG_SIP_RW_DROP_NOT_OURS;
    size_t ba, bb;
    size_t cookie = sizeof(k_cookie) - 1;
    if (!find_param(c, v.params_off, v.end, "branch", &ba, &bb) || bb - ba < cookie ||
        memcmp(c->b + ba, k_cookie, cookie) != 0)
        return TG_SIP_RW_DROP_NOT_OURS;
    struct tg_sip_flow f;
    if (!tg_sip_flow_decode(cfg, &f, (const char *)c->b + ba + cookie, bb - ba - cookie))
        return TG_SIP_RW_DROP_BAD_TOKEN;
    // The request came from the side this response goes back to.
    if (f.side == (uint8_t)from)
        return TG_SIP_RW_DROP_BAD_TOKEN;
    *out_flow = f;
    return TG_SIP_RW_OK;
}

enum tg_sip_rw tg_sip_rewrite_response(const struct tg_sip_rw_cfg *cfg,
                                       struct tg_sip_flow *out_flow, uint8_t *out, size_t out_cap,
                                       size_t *out_len, const struct tg_sip_msg *msg,
                                       const uint8_t *buf, enum tg_sip_side arrived_from) {
    *out_len = 0;
    if (msg->is_request || msg->len == 0 || msg->truncated)
        return TG_SIP_RW_DROP_NO_VIA;
    struct tg_cur c = {buf, msg->len};
    enum tg_sip_side to = other_side(arrived_from);
    int via = msg->first[TG_SIP_H_VIA];
    if (via < 0)
        return TG_SIP_RW_DROP_NO_VIA;
    const struct tg_sip_header *top = &msg->headers[via];
    size_t vend = (size_t)top->value.off + top->value.len;
    size_t te = tg_sip_elem_end(&c, top->value.off, vend);
    size_t a = top->value.off, b = te;
    trim(&c, &a, &b);
    enum tg_sip_rw r = check_top_via(cfg, &c, a, b, arrived_from, out_flow);
    if (r != TG_SIP_RW_OK)
        return r;
    if (te >= vend && tg_sip_count(msg, TG_SIP_H_VIA) < 2)
        return TG_SIP_RW_DROP_LAST_VIA;
    r = check_single(msg);
    if (r != TG_SIP_RW_OK)
        return r;

    struct out o;
    out_init(&o, out, out_cap, cfg->limits.max_line);
    put_span(&o, &c, 0, (size_t)msg->start_line.off + msg->start_line.len);
    put_str(&o, "\r\n");
    for (unsigned k = 0; k < msg->num_headers; k++) {
        const struct tg_sip_header *h = &msg->headers[k];
        switch (h->id) {
        case TG_SIP_H_X_TLS_PEER:
        case TG_SIP_H_CONTENT_LENGTH: // ours goes last
            continue;
        case TG_SIP_H_VIA:
            if ((int)k != via)
                break;
            if (te < vend)
                put_value_from(&o, &c, h, te + 1);
            continue;
        case TG_SIP_H_CONTACT:
            put_contact(&o, cfg, arrived_from, &c, h);
            continue;
        case TG_SIP_H_RECORD_ROUTE:
            put_record_route(&o, cfg, arrived_from, to, &c, h);
            continue;
        default:
            break;
        }
        put_hdr(&o, &c, h);
    }
    return finish(cfg, &o, msg, &c, out_len);
}

// ---- answers from tlsgate itself -------------------------------------------------------------

// line_clean says whether header |h| can be copied into an answer: after a scan error the
// index may hold lines with NUL bytes, other control characters or stray CR / LF, which would
// make the answer malformed.
static int line_clean(const struct tg_cur *c, const struct tg_sip_header *h) {
    size_t end = (size_t)h->line.off + h->line.len;
    if (h->line.len < 2 || end > c->len)
        return 0;
    for (size_t i = h->line.off; i < end - 2; i++) {
        int ch = tg_cur_at(c, i);
        if ((ch < 0x20 && ch != '\t' && ch != '\r') || ch == 0x7f)
            return 0;
        if (ch == '\r') {
            if (tg_cur_at(c, i + 1) != '\n' ||
                (tg_cur_at(c, i + 2) != ' ' && tg_cur_at(c, i + 2) != '\t'))
                return 0;
            i++;
        }
    }
    return tg_cur_at(c, end - 2) == '\r' && tg_cur_at(c, end - 1) == '\n';
}

int tg_sip_build_response(uint8_t *out, size_t out_cap, size_t *out_len,
                          const struct tg_sip_msg *req, const uint8_t *buf, unsigned status,
                          const char *reason, const char *to_tag, const char *extra) {
    *out_len = 0;
    if (!req->is_request || status < 100 || status > 699 || req->headers == NULL)
        return 0;
    static const uint8_t need[] = {TG_SIP_H_VIA, TG_SIP_H_FROM, TG_SIP_H_TO, TG_SIP_H_CALL_ID,
                                   TG_SIP_H_CSEQ};
    for (size_t i = 0; i < sizeof(need); i++) {
        if (req->first[need[i]] < 0)
            return 0;
    }
    // The headers lie within the head; |buf| holds at least the last indexed line.
    const struct tg_sip_header *last = &req->headers[req->num_headers - 1];
    struct tg_cur c = {buf, (size_t)last->line.off + last->line.len};
    for (unsigned k = 0; k < req->num_headers; k++) {
        const struct tg_sip_header *h = &req->headers[k];
        int copied = h->id == TG_SIP_H_VIA || h->id == TG_SIP_H_FROM || h->id == TG_SIP_H_TO ||
                     h->id == TG_SIP_H_CALL_ID || h->id == TG_SIP_H_CSEQ;
        if (copied && !line_clean(&c, h))
            return 0;
    }
    struct out o;
    out_init(&o, out, out_cap, UINT32_MAX);
    put_str(&o, "SIP/2.0 ");
    put_uint(&o, status);
    put_str(&o, " ");
    put_str(&o, reason != NULL ? reason : "");
    put_str(&o, "\r\n");
    for (unsigned k = 0; k < req->num_headers; k++) {
        const struct tg_sip_header *h = &req->headers[k];
        if (h->id == TG_SIP_H_VIA)
            put_hdr(&o, &c, h);
    }
    const struct tg_sip_header *from = &req->headers[req->first[TG_SIP_H_FROM]];
    const struct tg_sip_header *tohdr = &req->headers[req->first[TG_SIP_H_TO]];
    put_hdr(&o, &c, from);
    size_t va = tohdr->value.off, vb = (size_t)tohdr->value.off + tohdr->value.len;
    size_t gt = tg_cur_find(&c, va, vb, '>');
    size_t pa, pb;
    int has_tag = find_param(&c, gt == TG_NPOS ? va : gt, vb, "tag", &pa, &pb);
    if (to_tag != NULL && status > 100 && !has_tag) {
        put_name(&o, &c, tohdr);
        put_val(&o, &c, va, vb);
        put_str(&o, ";tag=");
        put_str(&o, to_tag);
        put_eol(&o);
    } else {
        put_hdr(&o, &c, tohdr);
    }
    put_hdr(&o, &c, &req->headers[req->first[TG_SIP_H_CALL_ID]]);
    put_hdr(&o, &c, &req->headers[req->first[TG_SIP_H_CSEQ]]);
    if (extra != NULL)
        put_str(&o, extra);
    put_str(&o, "Content-Length: 0\r\n\r\n");
    if (o.overflow)
        return 0;
    *out_len = o.len;
    return 1;
}

int tg_sip_is_options_to_us(const struct tg_sip_msg *msg, const uint8_t *buf, const char *fqdn) {
    if (!msg->is_request || msg->method != TG_SIP_M_OPTIONS || fqdn == NULL)
        return 0;
    struct tg_cur c = {buf, (size_t)msg->uri.off + msg->uri.len};
    struct uri u;
    if (!parse_sip_uri(&c, msg->uri.off, (size_t)msg->uri.off + msg->uri.len, &u) || u.has_user)
        return 0;
    return tg_cur_ieq(&c, u.host_off, u.host_end - u.host_off, fqdn, strlen(fqdn));
}

enum tg_sip_rw tg_sip_set_body(uint8_t *msg, size_t *len, size_t cap, uint32_t old_body_len,
                               const uint8_t *body, uint32_t body_len,
                               const struct tg_sip_limits *limits) {
    static const char k_cl[] = "\r\nContent-Length: ";
    const size_t cl_len = sizeof(k_cl) - 1;
    if (*len < (size_t)old_body_len + 4)
        return TG_SIP_RW_BAD_REQUEST;
    size_t head_end = *len - old_body_len; // just past CRLFCRLF
    if (memcmp(msg + head_end - 4, "\r\n\r\n", 4) != 0)
        return TG_SIP_RW_BAD_REQUEST;
    // Find the start of the last header line: it must be our Content-Length.
    size_t line = head_end - 4; // the CR ending the last header
    size_t start = line;
    while (start > 0 && msg[start - 1] != '\n')
        start--;
    if (start < 2 || line - start < cl_len - 2 || memcmp(msg + start - 2, k_cl, cl_len) != 0)
        return TG_SIP_RW_BAD_REQUEST;
    char num[16];
    int n = snprintf(num, sizeof(num), "%u", body_len);
    size_t value_at = start + cl_len - 2;
    size_t out = value_at + (size_t)n + 4 + body_len;
    if (out > cap || out > limits->max_message)
        return TG_SIP_RW_TOO_LARGE;
    memcpy(msg + value_at, num, (size_t)n);
    memcpy(msg + value_at + (size_t)n, "\r\n\r\n", 4);
    memmove(msg + value_at + (size_t)n + 4, body, body_len);
    *len = out;
    return TG_SIP_RW_OK;
}
