#include "tlsgate/adminpolicy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "tlsgate/config.h"

// ---------------------------------------------------------------------------------------------
// Addresses and networks.

// tg_ip is an address as bytes: 4 for AF_INET, 16 for AF_INET6.
struct tg_ip {
    uint8_t family;
    uint8_t addr[16];
};

static const uint8_t k_v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// tg_ip_from_sockaddr reads |sa| into |out|, an IPv4-mapped IPv6 address as its IPv4 address.
static int tg_ip_from_sockaddr(struct tg_ip *out, const struct sockaddr *sa) {
    memset(out, 0, sizeof(*out));
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        memcpy(out->addr, &in->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family != AF_INET6)
        return 0;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (memcmp(in6->sin6_addr.s6_addr, k_v4_mapped, sizeof(k_v4_mapped)) == 0) {
        out->family = AF_INET;
        memcpy(out->addr, in6->sin6_addr.s6_addr + 12, 4);
        return 1;
    }
    out->family = AF_INET6;
    memcpy(out->addr, in6->sin6_addr.s6_addr, 16);
    return 1;
}

// tg_ip_parse parses |s| (|len| bytes) as a numeric IPv4 or (unbracketed) IPv6 address.
static int tg_ip_parse(struct tg_ip *out, const char *s, size_t len) {
    char text[INET6_ADDRSTRLEN];
    memset(out, 0, sizeof(*out));
    if (len == 0 || len >= sizeof(text) || memchr(s, '\0', len) != NULL)
        return 0;
    memcpy(text, s, len);
    text[len] = '\0';
    if (inet_pton(AF_INET, text, out->addr) == 1) {
        out->family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, text, out->addr) != 1)
        return 0;
    out->family = AF_INET6;
    if (memcmp(out->addr, k_v4_mapped, sizeof(k_v4_mapped)) == 0) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->family = AF_INET;
    }
    return 1;
}

static size_t tg_ip_len(uint8_t family) {
    return family == AF_INET ? 4 : 16;
}

static int tg_ip_equal(const struct tg_ip *a, const struct tg_ip *b) {
    return a->family != 0 && a->family == b->family &&
           memcmp(a->addr, b->addr, tg_ip_len(a->family)) == 0;
}

static int tg_ip_is_loopback(const struct tg_ip *ip) {
    static const uint8_t v6_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (ip->family == AF_INET)
        return ip->addr[0] == 127;
    return ip->family == AF_INET6 && memcmp(ip->addr, v6_loopback, 16) == 0;
}

static int tg_ip_is_wildcard(const struct tg_ip *ip) {
    static const uint8_t zero[16];
    return ip->family != 0 && memcmp(ip->addr, zero, tg_ip_len(ip->family)) == 0;
}

// tg_prefix_match reports whether the first |prefix| bits of |a| and |b| agree.
static int tg_prefix_match(const uint8_t *a, const uint8_t *b, unsigned prefix) {
    size_t whole = prefix / 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    unsigned rest = prefix % 8;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int tg_cidr_parse(struct tg_cidr *out, const char *s, size_t len, char *why, size_t why_len) {
    memset(out, 0, sizeof(*out));
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), s, len);
    const char *slash = memchr(s, '/', len);
    size_t addr_len = slash != NULL ? (size_t)(slash - s) : len;
    struct tg_ip ip;
    if (addr_len > 0 && s[0] == '[')
        return tg_set_why(why, why_len, "'%s': write an IPv6 network without brackets", q);
    if (!tg_ip_parse(&ip, s, addr_len))
        return tg_set_why(why, why_len, "'%s' is not ADDR/PREFIX with a numeric address", q);
    unsigned max = ip.family == AF_INET ? 32 : 128;
    uint32_t prefix = max;
    if (slash != NULL) {
        char digits[8];
        size_t n = len - addr_len - 1;
        if (n == 0 || n >= sizeof(digits) || memchr(slash + 1, '\0', n) != NULL)
            return tg_set_why(why, why_len, "'%s': bad prefix length: expected 0..%u", q, max);
        memcpy(digits, slash + 1, n);
        digits[n] = '\0';
        if (tg_parse_uint(&prefix, digits, 0, max) != TG_UINT_OK)
            return tg_set_why(why, why_len, "'%s': bad prefix length: expected 0..%u", q, max);
    }
    uint8_t masked[16];
    memcpy(masked, ip.addr, 16);
    for (unsigned bit = prefix; bit < max; bit++)
        masked[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    if (memcmp(masked, ip.addr, 16) != 0) {
        char net[INET6_ADDRSTRLEN];
        if (inet_ntop(ip.family, masked, net, sizeof(net)) == NULL)
            net[0] = '\0';
        return tg_set_why(why, why_len, "'%s' has host bits set (the network is %s/%u)", q, net,
                          prefix);
    }
    out->family = ip.family;
    out->prefix = (uint8_t)prefix;
    memcpy(out->addr, ip.addr, 16);
    return 1;
}

int tg_cidr_contains(const struct tg_cidr *net, const struct sockaddr *sa) {
    struct tg_ip ip;
    if (!tg_ip_from_sockaddr(&ip, sa) || ip.family != net->family)
        return 0;
    return tg_prefix_match(net->addr, ip.addr, net->prefix);
}

int tg_sockaddr_is_loopback(const struct sockaddr *sa) {
    struct tg_ip ip;
    return tg_ip_from_sockaddr(&ip, sa) && tg_ip_is_loopback(&ip);
}

void tg_sockaddr_format(const struct sockaddr *sa, char *out, size_t out_len) {
    if (out_len == 0)
        return;
    struct tg_ip ip;
    if (!tg_ip_from_sockaddr(&ip, sa) || inet_ntop(ip.family, ip.addr, out, out_len) == NULL)
        snprintf(out, out_len, "?");
}

// ---------------------------------------------------------------------------------------------
// Host and Origin.

// tg_split_host splits |s| (|len| bytes: `host`, `host:port`, `[v6]` or `[v6]:port`) into the
// host (without brackets) and the port (0 when absent). Returns 0 on anything else.
static int tg_split_host(const char *s, size_t len, const char **out_host, size_t *out_host_len,
                         uint32_t *out_port, int *out_bracketed) {
    *out_port = 0;
    *out_bracketed = 0;
    size_t rest;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return 0;
        *out_host = s + 1;
        *out_host_len = (size_t)(close - s) - 1;
        *out_bracketed = 1;
        rest = (size_t)(close - s) + 1;
    } else {
        const char *colon = memchr(s, ':', len);
        size_t host_end = colon != NULL ? (size_t)(colon - s) : len;
        if (colon != NULL && memchr(colon + 1, ':', len - host_end - 1) != NULL)
            return 0; // an IPv6 address must be bracketed
        *out_host = s;
        *out_host_len = host_end;
        rest = host_end;
    }
    if (*out_host_len == 0)
        return 0;
    if (rest == len)
        return 1;
    if (s[rest] != ':')
        return 0;
    char digits[8];
    size_t n = len - rest - 1;
    if (n == 0 || n >= sizeof(digits) || memchr(s + rest + 1, '\0', n) != NULL)
        return 0;
    memcpy(digits, s + rest + 1, n);
    digits[n] = '\0';
    return tg_parse_uint(out_port, digits, 1, 65535) == TG_UINT_OK;
}

// tg_name_equal compares |s| (|len| bytes) with the NUL-terminated |name|, ignoring ASCII case.
static int tg_name_equal(const char *s, size_t len, const char *name) {
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

int tg_adminpolicy_host_ok(const struct tg_adminpolicy *p, const char *hostport, size_t len,
                           const struct sockaddr *local, uint16_t default_port) {
    const char *host;
    size_t host_len;
    uint32_t port;
    int bracketed;
    if (!tg_split_host(hostport, len, &host, &host_len, &port, &bracketed))
        return 0;
    if (port == 0)
        port = default_port;
    if (port != 0 && port != p->port)
        return 0;
    struct tg_ip ip;
    int numeric = tg_ip_parse(&ip, host, host_len);
    if (bracketed && (!numeric || ip.family != AF_INET6))
        return 0; // only an IPv6 address goes in brackets (and only there: see tg_split_host)
    // Ours: the listen address as written and, for a wildcard listen, the address the
    // connection arrived on (when known).
    struct tg_ip listen;
    listen.family = p->listen.family;
    memcpy(listen.addr, p->listen.addr, 16);
    struct tg_ip here;
    const struct tg_ip *ours = &listen;
    if (p->listen_wildcard)
        ours = tg_ip_from_sockaddr(&here, local) ? &here : NULL;
    if (numeric && (tg_ip_equal(&ip, &listen) || (ours != NULL && tg_ip_equal(&ip, ours))))
        return 1;
    if (!numeric && ours != NULL && tg_ip_is_loopback(ours) &&
        tg_name_equal(host, host_len, "localhost"))
        return 1;
    for (size_t i = 0; i < p->num_hosts; i++) {
        struct tg_ip listed;
        if (tg_ip_parse(&listed, p->hosts[i], strlen(p->hosts[i]))) {
            if (numeric && tg_ip_equal(&ip, &listed))
                return 1;
            continue;
        }
        if (!numeric && tg_name_equal(host, host_len, p->hosts[i]))
            return 1;
    }
    return 0;
}

// tg_origin_ok reports whether the Origin header |origin| is one of ours: `http://HOST[:PORT]`
// or `https://HOST[:PORT]` where HOST[:PORT] passes tg_adminpolicy_host_ok, a missing port
// being the scheme's default. `null` and anything else is not.
static int tg_origin_ok(const struct tg_adminpolicy *p, const char *origin,
                        const struct sockaddr *local) {
    size_t len = strlen(origin);
    static const struct {
        const char *prefix;
        uint16_t port;
    } k_schemes[] = {{"http://", 80}, {"https://", 443}};
    for (size_t i = 0; i < sizeof(k_schemes) / sizeof(k_schemes[0]); i++) {
        size_t n = strlen(k_schemes[i].prefix);
        if (len <= n || strncasecmp(origin, k_schemes[i].prefix, n) != 0)
            continue;
        const char *rest = origin + n;
        size_t rest_len = len - n;
        if (memchr(rest, '/', rest_len) != NULL || memchr(rest, '@', rest_len) != NULL)
            return 0;
        return tg_adminpolicy_host_ok(p, rest, rest_len, local, k_schemes[i].port);
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Content-Type and Authorization.

// tg_simple_content_type reports whether |ct|'s media type is one a browser sends cross-site
// without a CORS preflight.
static int tg_simple_content_type(const char *ct) {
    static const char *const k_simple[] = {"text/plain", "application/x-www-form-urlencoded",
                                           "multipart/form-data"};
    size_t len = strcspn(ct, ";");
    while (len > 0 && (ct[0] == ' ' || ct[0] == '\t')) {
        ct++;
        len--;
    }
    while (len > 0 && (ct[len - 1] == ' ' || ct[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < sizeof(k_simple) / sizeof(k_simple[0]); i++) {
        if (tg_name_equal(ct, len, k_simple[i]))
            return 1;
    }
    return 0;
}

// tg_token_ok reports whether |authorization| is `Bearer TOKEN` with our token. The comparison
// is of SHA-256 digests with CRYPTO_memcmp: its time depends neither on where the tokens differ
// nor on the configured token's length.
static int tg_token_ok(const struct tg_adminpolicy *p, const char *authorization) {
    static const char k_scheme[] = "bearer";
    size_t n = sizeof(k_scheme) - 1;
    if (strncasecmp(authorization, k_scheme, n) != 0)
        return 0;
    const char *t = authorization + n;
    if (*t != ' ' && *t != '\t')
        return 0;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t len = strlen(t);
    while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
        len--;
    if (len == 0 || len > TG_ADMIN_TOKEN_MAX)
        return 0;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)t, len, digest);
    return CRYPTO_memcmp(digest, p->token_sha256, sizeof(digest)) == 0;
}

// ---------------------------------------------------------------------------------------------
// The decision.

const char *tg_admin_refusal_name(enum tg_admin_refusal r) {
    switch (r) {
    case TG_ADMIN_OK:
        return "ok";
    case TG_ADMIN_REFUSE_SOURCE:
        return "source";
    case TG_ADMIN_REFUSE_HOST:
        return "host";
    case TG_ADMIN_REFUSE_NOT_FOUND:
        return "not_found";
    case TG_ADMIN_REFUSE_METHOD:
        return "method";
    case TG_ADMIN_REFUSE_ORIGIN:
        return "origin";
    case TG_ADMIN_REFUSE_CONTENT_TYPE:
        return "content_type";
    case TG_ADMIN_REFUSE_TOKEN_MISSING:
        return "token_missing";
    case TG_ADMIN_REFUSE_TOKEN_WRONG:
        return "token_wrong";
    case TG_ADMIN_REFUSE_NUM:
        break;
    }
    return "?";
}

int tg_adminpolicy_init(struct tg_adminpolicy *p, const struct tg_config *cfg, const uint8_t *token,
                        size_t token_len) {
    memset(p, 0, sizeof(*p));
    p->allow = cfg->admin_allow;
    p->num_allow = cfg->num_admin_allow;
    p->hosts = cfg->admin_hosts;
    p->num_hosts = cfg->num_admin_hosts;
    p->port = cfg->admin_listen.port;
    struct tg_ip ip;
    if (!tg_ip_from_sockaddr(&ip, (const struct sockaddr *)&cfg->admin_listen.addr))
        return 0;
    p->listen.family = ip.family;
    p->listen.prefix = (uint8_t)(ip.family == AF_INET ? 32 : 128);
    memcpy(p->listen.addr, ip.addr, 16);
    p->listen_wildcard = (uint8_t)tg_ip_is_wildcard(&ip);
    if (token == NULL)
        return 1;
    if (token_len < TG_ADMIN_TOKEN_MIN || token_len > TG_ADMIN_TOKEN_MAX)
        return 0;
    SHA256(token, token_len, p->token_sha256);
    p->have_token = 1;
    return 1;
}

int tg_adminpolicy_source_ok(const struct tg_adminpolicy *p, const struct sockaddr *source) {
    struct tg_ip ip;
    if (!tg_ip_from_sockaddr(&ip, source))
        return 0;
    if (p->num_allow == 0)
        return 1;
    for (size_t i = 0; i < p->num_allow; i++) {
        if (tg_cidr_contains(&p->allow[i], source))
            return 1;
    }
    return 0;
}

static enum tg_admin_refusal tg_refuse(struct tg_admin_decision *out, enum tg_admin_refusal why,
                                       uint16_t status) {
    out->refusal = why;
    out->status = status;
    return why;
}

static enum tg_admin_route tg_route_of(const char *path) {
    static const struct {
        const char *path;
        enum tg_admin_route route;
    } k_routes[] = {{"/healthz", TG_ADMIN_ROUTE_HEALTHZ},
                    {"/metrics", TG_ADMIN_ROUTE_METRICS},
                    {"/status", TG_ADMIN_ROUTE_STATUS},
                    {"/reload", TG_ADMIN_ROUTE_RELOAD}};
    for (size_t i = 0; i < sizeof(k_routes) / sizeof(k_routes[0]); i++) {
        if (strcmp(path, k_routes[i].path) == 0)
            return k_routes[i].route;
    }
    return TG_ADMIN_ROUTE_NONE;
}

enum tg_admin_refusal tg_adminpolicy_decide(const struct tg_adminpolicy *p,
                                            struct tg_admin_decision *out,
                                            const struct tg_admin_request *req) {
    memset(out, 0, sizeof(*out));
    if (!tg_adminpolicy_source_ok(p, req->source))
        return tg_refuse(out, TG_ADMIN_REFUSE_SOURCE, 403);
    if (req->host != NULL &&
        !tg_adminpolicy_host_ok(p, req->host, strlen(req->host), req->local, 0))
        return tg_refuse(out, TG_ADMIN_REFUSE_HOST, 421);
    if (req->method == NULL || req->path == NULL)
        return tg_refuse(out, TG_ADMIN_REFUSE_METHOD, 405);
    out->route = tg_route_of(req->path);
    if (out->route == TG_ADMIN_ROUTE_NONE)
        return tg_refuse(out, TG_ADMIN_REFUSE_NOT_FOUND, 404);
    int post = strcmp(req->method, "POST") == 0;
    int read = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    if (out->route == TG_ADMIN_ROUTE_RELOAD ? !post : !read)
        return tg_refuse(out, TG_ADMIN_REFUSE_METHOD, 405);
    if (post && req->origin != NULL && !tg_origin_ok(p, req->origin, req->local))
        return tg_refuse(out, TG_ADMIN_REFUSE_ORIGIN, 403);
    if (post && req->content_type != NULL && tg_simple_content_type(req->content_type))
        return tg_refuse(out, TG_ADMIN_REFUSE_CONTENT_TYPE, 403);
    int needs_token = out->route == TG_ADMIN_ROUTE_RELOAD || out->route == TG_ADMIN_ROUTE_STATUS;
    if (p->have_token && needs_token) {
        if (req->authorization == NULL)
            return tg_refuse(out, TG_ADMIN_REFUSE_TOKEN_MISSING, 401);
        if (!tg_token_ok(p, req->authorization))
            return tg_refuse(out, TG_ADMIN_REFUSE_TOKEN_WRONG, 401);
    }
    out->status = 200;
    return TG_ADMIN_OK;
}
