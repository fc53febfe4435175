// SDP parse and rewrite for media anchoring, and the SDES a=crypto attribute. See
// include/tlsgate/sdp.h. The parser walks the body line by line through a bounds-checked cursor
// and records, besides the facts, the offsets the writer splices at; the writer walks the same
// lines again (already checked) and dispatches on their prefix. Neither allocates. The suite
// names are a static table here, not srtp.c's, so that this module links on its own.
#include "tlsgate/sdp.h"

#include "tlsgate/cursor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

_Static_assert(TG_SDP_MAX_BODY <= UINT16_MAX, "body offsets are kept in uint16_t");

// ---- suites ----------------------------------------------------------------------------------

struct suite {
    enum tg_srtp_suite suite;
    const char *name;
    size_t salt_len; // key||salt is TG_SRTP_KEY_LEN + salt_len bytes
};

static const struct suite k_suites[] = {
    {TG_SRTP_AES_CM_128_HMAC_SHA1_80, "AES_CM_128_HMAC_SHA1_80", 14},
    {TG_SRTP_AES_CM_128_HMAC_SHA1_32, "AES_CM_128_HMAC_SHA1_32", 14},
    {TG_SRTP_AEAD_AES_128_GCM, "AEAD_AES_128_GCM", 12},
};

static const struct suite *suite_by_id(enum tg_srtp_suite s) {
    for (size_t i = 0; i < sizeof(k_suites) / sizeof(k_suites[0]); i++) {
        if (k_suites[i].suite == s)
            return &k_suites[i];
    }
    return NULL;
}

static const struct suite *suite_by_name(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < sizeof(k_suites) / sizeof(k_suites[0]); i++) {
        if (strlen(k_suites[i].name) == n && memcmp(k_suites[i].name, p, n) == 0)
            return &k_suites[i];
    }
    return NULL;
}

// ---- small lexical helpers -------------------------------------------------------------------

static int is_digit(int ch) {
    return ch >= '0' && ch <= '9';
}

static int is_wsp(int ch) {
    return ch == ' ' || ch == '\t';
}

// is_vchar: a visible character (RFC 5234), which is what tokens of SDP fields are made of.
static int is_vchar(int ch) {
    return ch > 0x20 && ch < 0x7f;
}

// span is a range [a, b) of the body.
struct span {
    size_t a, b;
};

static size_t span_len(struct span s) {
    return s.b - s.a;
}

static int span_is(const struct tg_cur *c, struct span s, const char *lit) {
    size_t n = strlen(lit);
    return span_len(s) == n && memcmp(c->b + s.a, lit, n) == 0;
}

// next_field returns the next field of a line in [*i, end): a run of bytes other than SP and
// HT, past the separators before it; *i moves past it. Length 0: there is none left.
static struct span next_field(const struct tg_cur *c, size_t *i, size_t end) {
    while (*i < end && is_wsp(c->b[*i]))
        (*i)++;
    struct span s = {*i, *i};
    while (s.b < end && !is_wsp(c->b[s.b]))
        s.b++;
    *i = s.b;
    return s;
}

// parse_u64 reads a decimal number of at most |max_digits| digits spanning all of |s|.
static int parse_u64(const struct tg_cur *c, struct span s, size_t max_digits, uint64_t *out) {
    size_t n = span_len(s);
    if (n == 0 || n > max_digits)
        return 0;
    uint64_t v = 0;
    for (size_t i = s.a; i < s.b; i++) {
        if (!is_digit(c->b[i]))
            return 0;
        v = v * 10 + (uint64_t)(c->b[i] - '0');
    }
    *out = v;
    return 1;
}

// parse_port reads a UDP port (0..65535) spanning all of |s|.
static int parse_port(const struct tg_cur *c, struct span s, uint16_t *out) {
    uint64_t v;
    if (!parse_u64(c, s, 5, &v) || v > 65535)
        return 0;
    *out = (uint16_t)v;
    return 1;
}

// ---- base64 (RFC 4648, padded) ---------------------------------------------------------------

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_val(int ch) {
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (is_digit(ch))
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

// b64_decode decodes padded base64 [p, p+n) into |out| (|cap| bytes). Returns 1 and the length,
// 0 when it is not base64 or decodes to more than |cap| bytes.
static int b64_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *out_len) {
    if (n == 0 || n % 4 != 0)
        return 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (size_t k = 0; k < 4; k++) {
            v[k] = b64_val(p[i + k]);
            if (p[i + k] == '=' && k >= 2 && i + 4 == n) {
                v[k] = 0;
                pad++;
            } else if (v[k] < 0 || pad > 0) {
                return 0; // not the alphabet, or data after a '='
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t m = 3 - (size_t)pad;
        if (m > cap - len)
            return 0;
        for (size_t k = 0; k < m; k++)
            out[len++] = (uint8_t)(w >> (16 - 8 * k));
    }
    *out_len = len;
    return 1;
}

// b64_encode writes |n| bytes as padded base64 into |out| (4 * ceil(n / 3) bytes).
static size_t b64_encode(const uint8_t *p, size_t n, char *out) {
    size_t len = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            w |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            w |= p[i + 2];
        out[len++] = k_b64[w >> 18 & 63];
        out[len++] = k_b64[w >> 12 & 63];
        out[len++] = i + 1 < n ? k_b64[w >> 6 & 63] : '=';
        out[len++] = i + 2 < n ? k_b64[w & 63] : '=';
    }
    return len;
}

// ---- a=crypto --------------------------------------------------------------------------------

// Why a crypto attribute is not well formed; named in the parser's |why|.
enum crypto_err {
    CRYPTO_OK = 0,
    CRYPTO_TAG,
    CRYPTO_SUITE,
    CRYPTO_METHOD,
    CRYPTO_BASE64,
    CRYPTO_KEY_LEN,
    CRYPTO_LIFETIME,
    CRYPTO_MKI,
    CRYPTO_PARAM,
};

static const char *crypto_err_text(enum crypto_err e) {
    switch (e) {
    case CRYPTO_TAG:
        return "tag is not 1 to 9 digits";
    case CRYPTO_SUITE:
        return "no crypto-suite";
    case CRYPTO_METHOD:
        return "key-params are not inline:";
    case CRYPTO_BASE64:
        return "key is not base64";
    case CRYPTO_KEY_LEN:
        return "key||salt has the wrong length for the suite";
    case CRYPTO_LIFETIME:
        return "bad lifetime";
    case CRYPTO_MKI:
        return "bad MKI";
    case CRYPTO_PARAM:
        return "bad session parameter";
    case CRYPTO_OK:
        break;
    }
    return "ok";
}

// crypto_lifetime reads "2^N" or a decimal number of packets into out->lifetime_log2; a
// lifetime that is not a power of two in 2..2^48 leaves the line unusable.
static enum crypto_err crypto_lifetime(const struct tg_cur *c, struct span s,
                                       struct tg_sdp_crypto *out) {
    uint64_t v;
    if (span_len(s) > 2 && c->b[s.a] == '2' && c->b[s.a + 1] == '^') {
        if (!parse_u64(c, (struct span){s.a + 2, s.b}, 3, &v))
            return CRYPTO_LIFETIME;
        if (v < 1 || v > 48)
            out->usable = 0;
        else
            out->lifetime_log2 = (uint8_t)v;
        return CRYPTO_OK;
    }
    if (!parse_u64(c, s, 19, &v) || v == 0)
        return CRYPTO_LIFETIME;
    unsigned log2 = 0;
    while (log2 < 48 && (UINT64_C(1) << log2) < v)
        log2++;
    if ((UINT64_C(1) << log2) != v || log2 < 1)
        out->usable = 0;
    else
        out->lifetime_log2 = (uint8_t)log2;
    return CRYPTO_OK;
}

// crypto_mki reads "value:length": length 1..128 bytes; up to TG_SRTP_MKI_MAX the value must
// fit in it and is kept, longer MKIs leave the line unusable.
static enum crypto_err crypto_mki(const struct tg_cur *c, struct span s,
                                  struct tg_sdp_crypto *out) {
    size_t colon = tg_cur_find(c, s.a, s.b, ':');
    uint64_t len, val;
    if (colon == TG_NPOS || !parse_u64(c, (struct span){colon + 1, s.b}, 3, &len) || len < 1 ||
        len > 128)
        return CRYPTO_MKI;
    struct span vs = {s.a, colon};
    if (len > TG_SRTP_MKI_MAX) {
        for (size_t i = vs.a; i < vs.b; i++) {
            if (!is_digit(c->b[i]))
                return CRYPTO_MKI;
        }
        if (span_len(vs) == 0)
            return CRYPTO_MKI;
        out->usable = 0;
        return CRYPTO_OK;
    }
    if (!parse_u64(c, vs, 10, &val) || val >= (UINT64_C(1) << (8 * len)))
        return CRYPTO_MKI;
    out->params.mki = (uint32_t)val;
    out->params.mki_len = (uint8_t)len;
    return CRYPTO_OK;
}

// crypto_key reads the first key-param "inline:KEY||SALT[|lifetime][|mki]" in |s|.
static enum crypto_err crypto_key(const struct tg_cur *c, struct span s, const struct suite *st,
                                  struct tg_sdp_crypto *out) {
    static const char k_inline[] = "inline:";
    size_t n = sizeof(k_inline) - 1;
    if (span_len(s) < n || memcmp(c->b + s.a, k_inline, n) != 0)
        return CRYPTO_METHOD;
    size_t i = s.a + n;
    size_t bar = tg_cur_find(c, i, s.b, '|');
    size_t key_end = bar == TG_NPOS ? s.b : bar;
    if (key_end == i)
        return CRYPTO_BASE64;
    if (st == NULL)
        return CRYPTO_OK; // another suite's key: its length and fields are not ours to judge
    uint8_t buf[48];
    size_t got = 0;
    if (!b64_decode(c->b + i, key_end - i, buf, sizeof(buf), &got))
        return key_end - i > 64 ? CRYPTO_KEY_LEN : CRYPTO_BASE64;
    if (got != TG_SRTP_KEY_LEN + st->salt_len)
        return CRYPTO_KEY_LEN;
    memcpy(out->params.key, buf, TG_SRTP_KEY_LEN);
    memcpy(out->params.salt, buf + TG_SRTP_KEY_LEN, st->salt_len);
    // Up to two more fields: a lifetime, then an MKI (the one with a colon).
    int seen_lifetime = 0, seen_mki = 0;
    while (bar != TG_NPOS) {
        size_t a = bar + 1;
        bar = tg_cur_find(c, a, s.b, '|');
        struct span f = {a, bar == TG_NPOS ? s.b : bar};
        enum crypto_err e;
        if (tg_cur_find(c, f.a, f.b, ':') != TG_NPOS) {
            if (seen_mki)
                return CRYPTO_MKI;
            seen_mki = 1;
            e = crypto_mki(c, f, out);
        } else {
            if (seen_lifetime || seen_mki)
                return CRYPTO_LIFETIME;
            seen_lifetime = 1;
            e = crypto_lifetime(c, f, out);
        }
        if (e != CRYPTO_OK)
            return e;
    }
    return CRYPTO_OK;
}

// crypto_session_param judges one session parameter: WSH=N is a hint tlsgate may ignore;
// anything else changes the transform, which srtp.c does not implement.
static enum crypto_err crypto_session_param(const struct tg_cur *c, struct span s,
                                            struct tg_sdp_crypto *out) {
    uint64_t v;
    if (span_len(s) > 4 && memcmp(c->b + s.a, "WSH=", 4) == 0 &&
        parse_u64(c, (struct span){s.a + 4, s.b}, 10, &v))
        return CRYPTO_OK;
    out->usable = 0;
    return CRYPTO_OK;
}

static enum crypto_err crypto_parse(struct tg_sdp_crypto *out, const struct tg_cur *c, size_t i,
                                    size_t end) {
    memset(out, 0, sizeof(*out));
    out->usable = 1;
    while (end > i && is_wsp(c->b[end - 1]))
        end--;
    size_t a = i;
    while (i < end && is_digit(c->b[i]))
        i++;
    uint64_t tag;
    if (i == end || !is_wsp(c->b[i]) || !parse_u64(c, (struct span){a, i}, 9, &tag))
        return CRYPTO_TAG;
    out->tag = (uint32_t)tag;
    // The remaining fields are separated by one or more WSP.
    struct span f[2];
    for (size_t k = 0; k < 2; k++) {
        while (i < end && is_wsp(c->b[i]))
            i++;
        f[k].a = i;
        while (i < end && is_vchar(c->b[i]))
            i++;
        f[k].b = i;
        if (span_len(f[k]) == 0 || (i < end && !is_wsp(c->b[i])))
            return k == 0 ? CRYPTO_SUITE : CRYPTO_METHOD;
    }
    const struct suite *st = suite_by_name(c->b + f[0].a, span_len(f[0]));
    if (st == NULL)
        out->usable = 0;
    else
        out->params.suite = st->suite;
    size_t semi = tg_cur_find(c, f[1].a, f[1].b, ';');
    enum crypto_err e =
        crypto_key(c, (struct span){f[1].a, semi == TG_NPOS ? f[1].b : semi}, st, out);
    if (e != CRYPTO_OK)
        return e;
    while (i < end) {
        while (i < end && is_wsp(c->b[i]))
            i++;
        struct span p = {i, i};
        while (p.b < end && is_vchar(c->b[p.b]))
            p.b++;
        i = p.b;
        if (span_len(p) == 0 || (i < end && !is_wsp(c->b[i])))
            return CRYPTO_PARAM;
        crypto_session_param(c, p, out);
    }
    return CRYPTO_OK;
}

int tg_sdp_crypto_parse(struct tg_sdp_crypto *out, const char *value, size_t len) {
    struct tg_cur c = {(const uint8_t *)value, len};
    return crypto_parse(out, &c, 0, len) == CRYPTO_OK;
}

// crypto_writable says whether |c| formats to a line tg_sdp_crypto_parse reads back as usable:
// a suite with a name, a tag of at most 9 digits, a lifetime up to 2^48, an MKI that fits.
static int crypto_writable(const struct tg_sdp_crypto *c) {
    const struct tg_srtp_params *p = &c->params;
    return suite_by_id(p->suite) != NULL && c->tag <= 999999999u && c->lifetime_log2 <= 48 &&
           p->mki_len <= TG_SRTP_MKI_MAX &&
           (p->mki_len == 0 || p->mki_len == 4 || p->mki < (UINT32_C(1) << (8 * p->mki_len)));
}

size_t tg_sdp_crypto_format(const struct tg_sdp_crypto *c, char *out, size_t cap) {
    const struct suite *st = suite_by_id(c->params.suite);
    if (st == NULL || !crypto_writable(c))
        return 0;
    uint8_t ks[TG_SRTP_KEY_LEN + TG_SRTP_SALT_MAX];
    memcpy(ks, c->params.key, TG_SRTP_KEY_LEN);
    memcpy(ks + TG_SRTP_KEY_LEN, c->params.salt, st->salt_len);
    char b64[48];
    size_t b64_len = b64_encode(ks, TG_SRTP_KEY_LEN + st->salt_len, b64);
    char life[8] = "", mki[24] = "";
    if (c->lifetime_log2 > 0)
        snprintf(life, sizeof(life), "|2^%u", (unsigned)c->lifetime_log2);
    if (c->params.mki_len > 0)
        snprintf(mki, sizeof(mki), "|%lu:%u", (unsigned long)c->params.mki,
                 (unsigned)c->params.mki_len);
    int n = snprintf(out, cap, "%lu %s inline:%.*s%s%s", (unsigned long)c->tag, st->name,
                     (int)b64_len, b64, life, mki);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

int tg_sdp_choose_crypto(const struct tg_sdp_media *m, const enum tg_srtp_suite *prefs,
                         size_t num_prefs) {
    for (size_t p = 0; p < num_prefs; p++) {
        for (size_t i = 0; i < m->num_crypto && i < TG_SDP_MAX_CRYPTO; i++) {
            if (m->crypto[i].usable && m->crypto[i].params.suite == prefs[p] &&
                prefs[p] != TG_SRTP_NONE)
                return (int)i;
        }
    }
    return -1;
}

// ---- parser ----------------------------------------------------------------------------------

// parser is the state of one tg_sdp_parse: the body, where it is, and what the current level
// (session or the last m= section) has seen already.
struct parser {
    struct tg_sdp *out;
    struct tg_cur c;
    char *why;
    size_t why_len;
    unsigned line;          // 1-based number of the current line
    struct tg_sdp_media *m; // the current section; NULL at session level
    int seen_s, seen_dir, seen_rtcp, seen_mux;
};

__attribute__((format(printf, 3, 4))) static enum tg_sdp_status
fail(struct parser *p, enum tg_sdp_status st, const char *fmt, ...) {
    if (p->why == NULL || p->why_len == 0)
        return st;
    int n = snprintf(p->why, p->why_len, "line %u: ", p->line);
    if (n >= 0 && (size_t)n < p->why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->why + n, p->why_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return st;
}

// is_fqdn says whether [a, b) reads as a host name (RFC 4566 FQDN: letters, digits, '-' and
// '.', at most 253 bytes) and not as a malformed number: it holds a letter.
static int is_fqdn(const struct tg_cur *c, struct span s) {
    int letter = 0;
    if (span_len(s) == 0 || span_len(s) > 253)
        return 0;
    for (size_t k = s.a; k < s.b; k++) {
        int ch = tg_cur_at(c, k);
        int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        if (!alpha && !(ch >= '0' && ch <= '9') && ch != '-' && ch != '.')
            return 0;
        letter |= alpha;
    }
    return letter;
}

// parse_addr reads "IN IP4 addr" / "IN IP6 addr" from the fields at *i in [*i, end) into |out|.
// |what| names the line in |why|. A host name is taken only where |name_ok| (o=: tlsgate
// rewrites it and never sends anything there); a c= address must be numeric, since media goes
// to it and tlsgate resolves nothing on the data path.
static enum tg_sdp_status parse_addr(struct parser *p, size_t *i, size_t end,
                                     struct tg_sdp_addr *out, const char *what, int name_ok) {
    struct span net = next_field(&p->c, i, end);
    struct span type = next_field(&p->c, i, end);
    struct span addr = next_field(&p->c, i, end);
    if (!span_is(&p->c, net, "IN") || span_len(addr) == 0)
        return fail(p, TG_SDP_MALFORMED, "%s is not \"IN IP4|IP6 address\"", what);
    int family = span_is(&p->c, type, "IP4") ? AF_INET : span_is(&p->c, type, "IP6") ? AF_INET6 : 0;
    if (family == 0)
        return fail(p, TG_SDP_BAD_ADDR, "%s address type is not IP4 or IP6", what);
    if (tg_cur_find(&p->c, addr.a, addr.b, '/') != TG_NPOS)
        return fail(p, TG_SDP_BAD_ADDR, "%s multicast (address/ttl) is not supported", what);
    char text[INET6_ADDRSTRLEN];
    memset(out, 0, sizeof(*out));
    if (name_ok && is_fqdn(&p->c, addr)) {
        out->family = family;
        out->name = 1;
        return TG_SDP_OK;
    }
    if (span_len(addr) >= sizeof(text))
        return fail(p, TG_SDP_BAD_ADDR, "%s address is not numeric", what);
    memcpy(text, p->c.b + addr.a, span_len(addr));
    text[span_len(addr)] = '\0';
    if (inet_pton(family, text, out->bytes) != 1)
        return fail(p, TG_SDP_BAD_ADDR, "%s address is not numeric %s", what,
                    family == AF_INET ? "IPv4" : "IPv6");
    out->family = family;
    static const uint8_t zero[16];
    out->hold = memcmp(out->bytes, zero, family == AF_INET ? 4 : 16) == 0;
    return TG_SDP_OK;
}

// parse_o reads "o=username sess-id sess-version IN IP4|IP6 address".
static enum tg_sdp_status parse_o(struct parser *p, size_t i, size_t end) {
    if (i < end && is_wsp(p->c.b[i]))
        return fail(p, TG_SDP_MALFORMED, "o= starts with a space");
    for (int k = 0; k < 3; k++) {
        uint64_t v;
        struct span f = next_field(&p->c, &i, end);
        if (span_len(f) == 0 || (k > 0 && !parse_u64(&p->c, f, 20, &v)))
            return fail(p, TG_SDP_MALFORMED, "o= is not \"user id version IN IP4|IP6 address\"");
    }
    while (i < end && is_wsp(p->c.b[i]))
        i++;
    p->out->origin_net_off = (uint16_t)i;
    enum tg_sdp_status st = parse_addr(p, &i, end, &p->out->origin, "o=", 1);
    if (st != TG_SDP_OK)
        return st;
    if (span_len(next_field(&p->c, &i, end)) != 0)
        return fail(p, TG_SDP_MALFORMED, "o= has more than six fields");
    return TG_SDP_OK;
}

static enum tg_sdp_status parse_c(struct parser *p, size_t i, size_t end) {
    struct tg_sdp_addr *dst = p->m != NULL ? &p->m->conn : &p->out->conn;
    if (p->m != NULL ? p->m->conn_here : p->out->conn.family != 0)
        return fail(p, TG_SDP_MALFORMED, "second c= at this level");
    enum tg_sdp_status st = parse_addr(p, &i, end, dst, "c=", 0);
    if (st != TG_SDP_OK)
        return st;
    if (span_len(next_field(&p->c, &i, end)) != 0)
        return fail(p, TG_SDP_MALFORMED, "c= has more than three fields");
    if (p->m != NULL)
        p->m->conn_here = 1;
    return TG_SDP_OK;
}

static enum tg_sdp_proto proto_of(const struct tg_cur *c, struct span s) {
    if (span_is(c, s, "RTP/AVP"))
        return TG_SDP_RTP_AVP;
    if (span_is(c, s, "RTP/SAVP"))
        return TG_SDP_RTP_SAVP;
    if (span_is(c, s, "RTP/AVPF"))
        return TG_SDP_RTP_AVPF;
    if (span_is(c, s, "RTP/SAVPF"))
        return TG_SDP_RTP_SAVPF;
    return TG_SDP_PROTO_OTHER;
}

// end_section checks what a finished m= section must have: an address.
static enum tg_sdp_status end_section(struct parser *p) {
    if (p->m != NULL && p->m->conn.family == 0)
        return fail(p, TG_SDP_MALFORMED, "m= section %zu has no c= and the session none",
                    p->out->num_media);
    return TG_SDP_OK;
}

// parse_m starts a section: "m=media port proto fmt ...".
static enum tg_sdp_status parse_m(struct parser *p, size_t i, size_t end) {
    enum tg_sdp_status st = end_section(p);
    if (st != TG_SDP_OK)
        return st;
    if (p->out->num_media == TG_SDP_MAX_MEDIA)
        return fail(p, TG_SDP_TOO_MANY, "more than %d m= sections", TG_SDP_MAX_MEDIA);
    struct tg_sdp_media *m = &p->out->media[p->out->num_media++];
    memset(m, 0, sizeof(*m));
    p->m = m;
    p->seen_dir = p->seen_rtcp = p->seen_mux = 0;
    m->dir = p->out->dir;
    m->conn = p->out->conn;
    size_t start = i;
    struct span media = next_field(&p->c, &i, end);
    struct span port = next_field(&p->c, &i, end);
    struct span proto = next_field(&p->c, &i, end);
    size_t fmt_off = i;
    struct span fmt = next_field(&p->c, &i, end);
    if (span_len(media) == 0 || span_len(port) == 0 || span_len(proto) == 0 || span_len(fmt) == 0 ||
        media.a != start)
        return fail(p, TG_SDP_MALFORMED, "m= is not \"media port proto format...\"");
    if (tg_cur_find(&p->c, port.a, port.b, '/') != TG_NPOS)
        return fail(p, TG_SDP_MALFORMED, "m= port count (port/n) is not supported");
    if (!parse_port(&p->c, port, &m->port))
        return fail(p, TG_SDP_MALFORMED, "m= port not a number in 0..65535");
    while (span_len(next_field(&p->c, &i, end)) != 0)
        ; // the formats are kept as they are
    m->audio = span_is(&p->c, media, "audio");
    m->proto = proto_of(&p->c, proto);
    m->port_off = (uint16_t)port.a;
    m->proto_off = (uint16_t)proto.a;
    m->fmt_off = (uint16_t)fmt_off;
    return TG_SDP_OK;
}

// The attributes tlsgate acts on. attr_of is the one classification of an a= line, used by the
// parser and the writer alike, so that the two never disagree on what a line is.
enum attr {
    ATTR_OTHER = 0,
    ATTR_CRYPTO,   // a=crypto:VALUE
    ATTR_RTCP,     // a=rtcp:VALUE
    ATTR_RTCP_MUX, // a=rtcp-mux
    ATTR_ICE,      // a=candidate, a=ice-ufrag, ... (RFC 8839): never forwarded
    ATTR_DIR,      // a=sendrecv, sendonly, recvonly, inactive (ATTR_DIR + enum tg_sdp_dir)
};

// ICE attributes (RFC 8839) describe the sender's own transport addresses: the PBX's internal
// ones toward the provider, and paths around tlsgate for a far side that runs ICE. tlsgate
// anchors the media on its own sockets, so it drops them both ways.
static const char *const kIceValue[] = {"candidate", "remote-candidates", "ice-ufrag",
                                        "ice-pwd",   "ice-options",       "ice-pacing"};
static const char *const kIceProp[] = {"ice-lite", "ice-mismatch", "end-of-candidates"};

// attr_of classifies the line [a, b). A value attribute is "name:value" (the value starts at
// *out_value); a property attribute is its name alone, trailing SP/HT ignored (some stacks
// send "a=sendonly ").
static int attr_of(const struct tg_cur *c, size_t a, size_t b, size_t *out_value) {
    static const char *const props[] = {"sendrecv", "sendonly", "recvonly", "inactive", "rtcp-mux"};
    if (b - a < 2 || c->b[a] != 'a' || c->b[a + 1] != '=')
        return ATTR_OTHER;
    a += 2;
    size_t colon = tg_cur_find(c, a, b, ':');
    if (colon != TG_NPOS) {
        *out_value = colon + 1;
        if (span_is(c, (struct span){a, colon}, "crypto"))
            return ATTR_CRYPTO;
        for (size_t k = 0; k < sizeof(kIceValue) / sizeof(kIceValue[0]); k++)
            if (span_is(c, (struct span){a, colon}, kIceValue[k]))
                return ATTR_ICE;
        return span_is(c, (struct span){a, colon}, "rtcp") ? ATTR_RTCP : ATTR_OTHER;
    }
    while (b > a && is_wsp(c->b[b - 1]))
        b--;
    for (size_t k = 0; k < sizeof(kIceProp) / sizeof(kIceProp[0]); k++)
        if (span_is(c, (struct span){a, b}, kIceProp[k]))
            return ATTR_ICE;
    for (size_t k = 0; k < sizeof(props) / sizeof(props[0]); k++) {
        if (span_is(c, (struct span){a, b}, props[k]))
            return k == 4 ? ATTR_RTCP_MUX : ATTR_DIR + (int)k;
    }
    return ATTR_OTHER;
}

// parse_rtcp reads "a=rtcp:port [IN IP4|IP6 address]" (RFC 3605) from |i|, past the colon.
static enum tg_sdp_status parse_rtcp(struct parser *p, size_t i, size_t end) {
    if (p->seen_rtcp)
        return fail(p, TG_SDP_MALFORMED, "second a=rtcp in this section");
    p->seen_rtcp = 1;
    size_t start = i;
    struct span port = next_field(&p->c, &i, end);
    if (port.a != start || !parse_port(&p->c, port, &p->m->rtcp_port) || p->m->rtcp_port == 0)
        return fail(p, TG_SDP_MALFORMED, "a=rtcp port not a number in 1..65535");
    size_t rest = i;
    if (span_len(next_field(&p->c, &rest, end)) == 0)
        return TG_SDP_OK;
    struct tg_sdp_addr addr;
    enum tg_sdp_status st = parse_addr(p, &i, end, &addr, "a=rtcp", 0);
    if (st != TG_SDP_OK)
        return st;
    if (span_len(next_field(&p->c, &i, end)) != 0)
        return fail(p, TG_SDP_MALFORMED, "a=rtcp has more than four fields");
    return TG_SDP_OK;
}

static enum tg_sdp_status parse_crypto(struct parser *p, size_t i, size_t end) {
    struct tg_sdp_crypto cr;
    enum crypto_err e = crypto_parse(&cr, &p->c, i, end);
    if (e != CRYPTO_OK)
        return fail(p, TG_SDP_MALFORMED, "a=crypto %s", crypto_err_text(e));
    if (p->m->num_crypto == TG_SDP_MAX_CRYPTO) {
        p->m->num_crypto_ignored++;
        return TG_SDP_OK;
    }
    p->m->crypto[p->m->num_crypto++] = cr;
    return TG_SDP_OK;
}

// parse_a reads the attributes tlsgate acts on in the line [a, b); the others are kept as they
// are.
static enum tg_sdp_status parse_a(struct parser *p, size_t a, size_t b) {
    if (a + 2 == b || p->c.b[a + 2] == ':' || is_wsp(p->c.b[a + 2]))
        return fail(p, TG_SDP_MALFORMED, "a= without an attribute name");
    size_t v = b;
    int kind = attr_of(&p->c, a, b, &v);
    if (kind >= ATTR_DIR) {
        if (p->seen_dir)
            return fail(p, TG_SDP_MALFORMED, "second direction attribute at this level");
        p->seen_dir = 1;
        if (p->m != NULL)
            p->m->dir = (enum tg_sdp_dir)(kind - ATTR_DIR);
        else
            p->out->dir = (enum tg_sdp_dir)(kind - ATTR_DIR);
        return TG_SDP_OK;
    }
    if (p->m == NULL)
        return TG_SDP_OK; // a=crypto and a=rtcp are media-level; the writer drops them here
    if (kind == ATTR_RTCP_MUX) {
        if (p->seen_mux)
            return fail(p, TG_SDP_MALFORMED, "second a=rtcp-mux in this section");
        p->seen_mux = p->m->rtcp_mux = 1;
        return TG_SDP_OK;
    }
    if (kind == ATTR_RTCP)
        return parse_rtcp(p, v, b);
    if (kind == ATTR_CRYPTO)
        return parse_crypto(p, v, b);
    return TG_SDP_OK;
}

// check_line checks the bytes of a line [a, b) (its end excluded): "x=", x a lowercase
// letter, no control byte.
static enum tg_sdp_status check_line(struct parser *p, size_t a, size_t b) {
    for (size_t i = a; i < b; i++) {
        uint8_t ch = p->c.b[i];
        if (ch == 0)
            return fail(p, TG_SDP_MALFORMED, "NUL byte");
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return fail(p, TG_SDP_MALFORMED, "control byte 0x%02x", ch);
    }
    if (b - a < 2 || p->c.b[a] < 'a' || p->c.b[a] > 'z' || p->c.b[a + 1] != '=')
        return fail(p, TG_SDP_MALFORMED, "not a \"x=value\" line");
    return TG_SDP_OK;
}

// parse_line dispatches one checked line [a, b) on its type, enforcing the order of RFC 4566 5.
static enum tg_sdp_status parse_line(struct parser *p, size_t a, size_t b) {
    int type = p->c.b[a];
    size_t v = a + 2;
    if (p->line == 1)
        return type == 'v' && b - a == 3 && p->c.b[v] == '0'
                   ? TG_SDP_OK
                   : fail(p, TG_SDP_MALFORMED, "the body does not start with v=0");
    if (p->line == 2)
        return type == 'o' ? parse_o(p, v, b) : fail(p, TG_SDP_MALFORMED, "o= is not second");
    if (p->line == 3) {
        p->seen_s = type == 's';
        return p->seen_s ? TG_SDP_OK : fail(p, TG_SDP_MALFORMED, "s= is not third");
    }
    if (type == 'm')
        return parse_m(p, v, b);
    if (strchr(p->m != NULL ? "icbka" : "iuepcbtrzka", type) == NULL)
        return fail(p, TG_SDP_MALFORMED, "%c= not allowed %s", type,
                    p->m != NULL ? "in a media section" : "here");
    if (type == 'c')
        return parse_c(p, v, b);
    if (type == 'a')
        return parse_a(p, a, b);
    return TG_SDP_OK;
}

enum tg_sdp_status tg_sdp_parse(struct tg_sdp *out, const char *body, size_t len, char *why,
                                size_t why_len) {
    memset(out, 0, sizeof(*out));
    struct parser p = {
        .out = out, .c = {(const uint8_t *)body, len}, .why = why, .why_len = why_len};
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (len > TG_SDP_MAX_BODY)
        return fail(&p, TG_SDP_MALFORMED, "body of %zu bytes, more than %d", len, TG_SDP_MAX_BODY);
    size_t i = 0, empty_from = TG_NPOS;
    while (i < len) {
        size_t lf = tg_cur_find(&p.c, i, len, '\n');
        size_t next = lf == TG_NPOS ? len : lf + 1;
        size_t b = lf == TG_NPOS ? len : lf;
        if (b > i && p.c.b[b - 1] == '\r' && lf != TG_NPOS)
            b--;
        p.line++;
        if (b == i) { // empty: allowed only if nothing but empty lines follows
            if (empty_from == TG_NPOS)
                empty_from = p.line;
            i = next;
            continue;
        }
        if (empty_from != TG_NPOS) {
            p.line = (unsigned)empty_from;
            return fail(&p, TG_SDP_MALFORMED, "empty line");
        }
        enum tg_sdp_status st = check_line(&p, i, b);
        if (st == TG_SDP_OK)
            st = parse_line(&p, i, b);
        if (st != TG_SDP_OK)
            return st;
        out->end = (uint16_t)next;
        i = next;
    }
    if (out->end == 0) {
        p.line = 1;
        return fail(&p, TG_SDP_MALFORMED, "empty body");
    }
    if (!p.seen_s)
        return fail(&p, TG_SDP_MALFORMED, "no v=, o= and s= lines");
    enum tg_sdp_status st = end_section(&p);
    if (st != TG_SDP_OK)
        return st;
    out->len = (uint16_t)len;
    return TG_SDP_OK;
}

// ---- writer ----------------------------------------------------------------------------------

struct emit {
    char *p;
    size_t cap;
    size_t len;
    int full;
};

static void put(struct emit *o, const void *data, size_t n) {
    if (o->full || n > o->cap - o->len) {
        o->full = 1;
        return;
    }
    if (n > 0)
        memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void put_str(struct emit *o, const char *s) {
    put(o, s, strlen(s));
}

static void put_uint(struct emit *o, unsigned v) {
    char tmp[12];
    int n = snprintf(tmp, sizeof(tmp), "%u", v);
    put(o, tmp, (size_t)n);
}

// Where tg_sdp_write_max's margins come from: an address line is at most "IN IP6 " and the
// longest IPv6 text; a crypto line "a=crypto:" + TG_SDP_CRYPTO_MAX + CRLF; an a=rtcp line
// 14 bytes; an m= line grows by at most 4 port digits and 4 proto bytes.
#define ADDR_GROWTH (7 + INET6_ADDRSTRLEN)
#define SECTION_GROWTH (9 + TG_SDP_CRYPTO_MAX + 2 + 16 + 16)

size_t tg_sdp_write_max(const struct tg_sdp *in) {
    return 2 * (size_t)in->end + ADDR_GROWTH * (2 + in->num_media) + SECTION_GROWTH * in->num_media;
}

// writer is the state of one tg_sdp_write.
struct writer {
    const struct tg_sdp *in;
    const struct tg_cur *c;
    const char *addr_line; // "IN IP4 a.b.c.d" for o= and c=
    struct emit o;
};

static int starts(const struct tg_cur *c, size_t a, size_t b, const char *lit) {
    size_t n = strlen(lit);
    return b - a >= n && memcmp(c->b + a, lit, n) == 0;
}

static void put_line(struct writer *w, size_t a, size_t b) {
    put(&w->o, w->c->b + a, b - a);
    put(&w->o, "\r\n", 2);
}

static void put_crypto(struct writer *w, const struct tg_sdp_media_out *mo) {
    char v[TG_SDP_CRYPTO_MAX];
    size_t n = tg_sdp_crypto_format(&mo->crypto, v, sizeof(v));
    if (n == 0) {
        w->o.full = 1; // unreachable once tg_sdp_write checked the suites
        return;
    }
    put_str(&w->o, "a=crypto:");
    put(&w->o, v, n);
    put(&w->o, "\r\n", 2);
}

static void put_rtcp(struct writer *w, uint16_t port) {
    put_str(&w->o, "a=rtcp:");
    put_uint(&w->o, port);
    put(&w->o, "\r\n", 2);
}

static const char *proto_name(enum tg_sdp_proto p, int secure) {
    int feedback = p == TG_SDP_RTP_AVPF || p == TG_SDP_RTP_SAVPF;
    if (secure)
        return feedback ? "RTP/SAVPF" : "RTP/SAVP";
    return feedback ? "RTP/AVPF" : "RTP/AVP";
}

static void write_m(struct writer *w, const struct tg_sdp_media *m,
                    const struct tg_sdp_media_out *mo, size_t a, size_t b) {
    put(&w->o, w->c->b + a, m->port_off - a);
    put_uint(&w->o, mo->port);
    put_str(&w->o, " ");
    if (m->proto == TG_SDP_PROTO_OTHER)
        put(&w->o, w->c->b + m->proto_off, m->fmt_off - m->proto_off);
    else
        put_str(&w->o, proto_name(m->proto, mo->secure));
    put_line(w, m->fmt_off, b);
}

static void write_c(struct writer *w, int hold, size_t a, size_t b) {
    if (hold) {
        put_line(w, a, b);
        return;
    }
    put_str(&w->o, "c=");
    put_str(&w->o, w->addr_line);
    put(&w->o, "\r\n", 2);
}

// section is the writer's view of the section being written (session level: m == NULL).
struct section {
    const struct tg_sdp_media *m;
    const struct tg_sdp_media_out *mo;
    int crypto_done, rtcp_done;
};

// end_of_section adds what the section needs and did not have a line for.
static void end_of_section(struct writer *w, struct section *s) {
    if (s->m == NULL)
        return;
    if (s->mo->secure && !s->crypto_done)
        put_crypto(w, s->mo);
    if (!s->rtcp_done && s->mo->port != 0 && s->mo->rtcp_port != 0 &&
        s->mo->rtcp_port != (uint32_t)s->mo->port + 1)
        put_rtcp(w, s->mo->rtcp_port);
}

static void write_line(struct writer *w, struct section *s, size_t a, size_t b) {
    const struct tg_cur *c = w->c;
    if (starts(c, a, b, "o=")) {
        put(&w->o, c->b + a, w->in->origin_net_off - a);
        put_str(&w->o, w->addr_line);
        put(&w->o, "\r\n", 2);
        return;
    }
    if (starts(c, a, b, "c=")) {
        write_c(w, s->m != NULL ? s->m->conn.hold : w->in->conn.hold, a, b);
        return;
    }
    size_t v;
    int kind = attr_of(c, a, b, &v);
    if (kind == ATTR_CRYPTO) {
        if (s->m != NULL && s->mo->secure && !s->crypto_done)
            put_crypto(w, s->mo);
        s->crypto_done = 1;
        return;
    }
    if (kind == ATTR_RTCP) {
        if (s->m != NULL && s->mo->port != 0 && s->mo->rtcp_port != 0)
            put_rtcp(w, s->mo->rtcp_port);
        s->rtcp_done = 1;
        return;
    }
    if (kind == ATTR_RTCP_MUX && s->m != NULL) {
        if (s->mo->rtcp_mux)
            put_line(w, a, b);
        return;
    }
    if (kind == ATTR_ICE)
        return;
    put_line(w, a, b);
}

// addr_line builds "IN IP4 addr" / "IN IP6 addr" from |addr|, checked to be numeric.
static int addr_line(char *out, size_t cap, const char *addr) {
    uint8_t bin[16];
    int family = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;
    if (strlen(addr) >= INET6_ADDRSTRLEN || inet_pton(family, addr, bin) != 1)
        return 0;
    int n = snprintf(out, cap, "IN %s %s", family == AF_INET ? "IP4" : "IP6", addr);
    return n > 0 && (size_t)n < cap;
}

enum tg_sdp_status tg_sdp_write(const struct tg_sdp *in, const char *body, size_t len,
                                const char *addr, const struct tg_sdp_media_out *media, char *out,
                                size_t cap, size_t *out_len) {
    *out_len = 0;
    char al[ADDR_GROWTH + 1];
    if (!addr_line(al, sizeof(al), addr))
        return TG_SDP_BAD_ADDR;
    if (len != in->len || in->end > len || in->num_media > TG_SDP_MAX_MEDIA)
        return TG_SDP_MALFORMED;
    for (size_t k = 0; k < in->num_media; k++) {
        if (media[k].secure && !crypto_writable(&media[k].crypto))
            return TG_SDP_MALFORMED;
    }
    struct tg_cur c = {(const uint8_t *)body, len};
    struct writer w = {.in = in, .c = &c, .addr_line = al, .o = {out, cap, 0, 0}};
    struct section s = {0};
    size_t num = 0;
    for (size_t i = 0; i < in->end;) {
        size_t lf = tg_cur_find(&c, i, in->end, '\n');
        size_t next = lf == TG_NPOS ? in->end : lf + 1;
        size_t b = lf == TG_NPOS ? in->end : lf;
        if (b > i && c.b[b - 1] == '\r' && lf != TG_NPOS)
            b--;
        if (starts(&c, i, b, "m=") && num < in->num_media) {
            end_of_section(&w, &s);
            s = (struct section){.m = &in->media[num], .mo = &media[num]};
            num++;
            write_m(&w, s.m, s.mo, i, b);
        } else {
            write_line(&w, &s, i, b);
        }
        i = next;
    }
    end_of_section(&w, &s);
    if (w.o.full)
        return TG_SDP_NO_SPACE;
    *out_len = w.o.len;
    return TG_SDP_OK;
}
