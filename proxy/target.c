#include "tlsgate/target.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// Helpers shared with the configuration loader.

int tg_set_why(char *why, size_t why_len, const char *fmt, ...) {
    if (why == NULL || why_len == 0)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return 0;
}

void tg_quote(char *out, size_t out_len, const char *s, size_t s_len) {
    if (out_len == 0)
        return;
    size_t n = 0;
    for (size_t i = 0; i < s_len && n + 1 < out_len; i++) {
        if (i == TG_QUOTE_MAX && n + 4 < out_len) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[n] = '\0';
}

// |*out| is set first: gcc -O3 cannot prove that callers (tg_uint_why) never read it on failure.
enum tg_uint_result tg_parse_uint(uint32_t *out, const char *s, uint32_t min, uint32_t max) {
    *out = 0;
    if (s[0] == '\0')
        return TG_UINT_SYNTAX;
    uint64_t v = 0;
    int too_big = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return TG_UINT_SYNTAX;
        if (v <= UINT32_MAX)
            v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            too_big = 1;
    }
    if (too_big || v < min || v > max)
        return TG_UINT_RANGE;
    *out = (uint32_t)v;
    return TG_UINT_OK;
}

int tg_is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

int tg_valid_dns_name(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!tg_is_name_char(c) || ++label > 63 || (label == 1 && c == '-'))
            return 0;
    }
    return label != 0 && s[len - 1] != '-';
}

// ---------------------------------------------------------------------------------------------
// HOST:PORT.

static int tg_only_digits_and_dots(const char *s) {
    for (; *s != '\0'; s++) {
        if ((*s < '0' || *s > '9') && *s != '.')
            return 0;
    }
    return 1;
}

// tg_set_sockaddr fills |t|'s address from its numeric host and port. Returns 1 when the host
// is a numeric IPv4 (|family| AF_INET) or IPv6 (AF_INET6) address.
static int tg_set_sockaddr(struct tg_target *t, int family) {
    memset(&t->addr, 0, sizeof(t->addr));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;
        if (inet_pton(AF_INET, t->host, &sin->sin_addr) != 1)
            return 0;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(t->port);
        t->addr_len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->addr;
        if (inet_pton(AF_INET6, t->host, &sin6->sin6_addr) != 1)
            return 0;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(t->port);
        t->addr_len = sizeof(*sin6);
    }
    t->resolved = 1;
    return 1;
}

// tg_split_hostport finds the host and the port text of |text|: `[V6]:PORT` or `HOST:PORT`.
static int tg_split_hostport(const char *text, const char **out_host, size_t *out_host_len,
                             const char **out_port, int *out_bracketed, char *err, size_t err_len) {
    *out_bracketed = text[0] == '[';
    if (*out_bracketed) {
        const char *close = strchr(text, ']');
        if (close == NULL)
            return tg_set_why(err, err_len, "missing ']' after IPv6 address");
        if (close[1] == '\0')
            return tg_set_why(err, err_len, "missing port: expected [ADDR]:PORT");
        if (close[1] != ':')
            return tg_set_why(err, err_len, "expected ':' after ']'");
        *out_host = text + 1;
        *out_host_len = (size_t)(close - text - 1);
        *out_port = close + 2;
        return 1;
    }
    const char *colon = strchr(text, ':');
    if (colon == NULL)
        return tg_set_why(err, err_len, "missing port: expected HOST:PORT");
    if (strchr(colon + 1, ':') != NULL)
        return tg_set_why(err, err_len, "IPv6 address must be in brackets: [ADDR]:PORT");
    *out_host = text;
    *out_host_len = (size_t)(colon - text);
    *out_port = colon + 1;
    return 1;
}

int tg_parse_hostport(struct tg_target *out, const char *text, char *err, size_t err_len) {
    memset(out, 0, sizeof(*out));
    const char *host = NULL, *port_text = NULL;
    size_t host_len = 0;
    int bracketed;
    if (!tg_split_hostport(text, &host, &host_len, &port_text, &bracketed, err, err_len))
        return 0;
    char q[TG_QUOTE_MAX + 4];
    if (host_len == 0)
        return tg_set_why(err, err_len, "missing host: expected HOST:PORT");
    if (host_len >= TG_HOST_MAX) {
        tg_quote(q, sizeof(q), host, host_len);
        return tg_set_why(err, err_len, "host '%s' too long", q);
    }
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';

    uint32_t port;
    if (port_text[0] == '\0')
        return tg_set_why(err, err_len, "missing port: expected HOST:PORT");
    tg_quote(q, sizeof(q), port_text, strlen(port_text));
    switch (tg_parse_uint(&port, port_text, 1, 65535)) {
    case TG_UINT_OK:
        break;
    case TG_UINT_RANGE:
        return tg_set_why(err, err_len, "port %s out of range 1..65535", q);
    case TG_UINT_SYNTAX:
        return tg_set_why(err, err_len, "bad port '%s': expected 1..65535", q);
    }
    out->port = (uint16_t)port;

    tg_quote(q, sizeof(q), out->host, host_len);
    if (bracketed) {
        if (!tg_set_sockaddr(out, AF_INET6))
            return tg_set_why(err, err_len, "bad IPv6 address '%s'", q);
        return 1;
    }
    if (tg_set_sockaddr(out, AF_INET))
        return 1;
    if (tg_only_digits_and_dots(out->host))
        return tg_set_why(err, err_len, "bad IPv4 address '%s'", q);
    if (!tg_valid_dns_name(out->host))
        return tg_set_why(err, err_len, "bad host name '%s'", q);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Resolution and formatting.

int tg_resolve_target(struct tg_target *t, const char **out_why) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(t->host, NULL, &hints, &res);
    if (rc != 0) {
        *out_why = rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc);
        return 0;
    }
    if (res == NULL || res->ai_addrlen > sizeof(t->addr) ||
        (res->ai_family != AF_INET && res->ai_family != AF_INET6)) {
        freeaddrinfo(res);
        *out_why = "no IPv4 or IPv6 address";
        return 0;
    }
    memset(&t->addr, 0, sizeof(t->addr));
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = (socklen_t)res->ai_addrlen;
    if (res->ai_family == AF_INET)
        ((struct sockaddr_in *)&t->addr)->sin_port = htons(t->port);
    else
        ((struct sockaddr_in6 *)&t->addr)->sin6_port = htons(t->port);
    t->resolved = 1;
    freeaddrinfo(res);
    return 1;
}

void tg_target_format(const struct tg_target *t, char *out, size_t out_len) {
    if (out == NULL || out_len == 0)
        return;
    char host[INET6_ADDRSTRLEN];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&t->addr;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&t->addr;
    if (t->resolved && sin->sin_family == AF_INET &&
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host)) != NULL) {
        snprintf(out, out_len, "%s:%u", host, ntohs(sin->sin_port));
        return;
    }
    if (t->resolved && sin6->sin6_family == AF_INET6 &&
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host)) != NULL) {
        snprintf(out, out_len, "[%s]:%u", host, ntohs(sin6->sin6_port));
        return;
    }
    // Not resolved yet: the text as configured.
    if (strchr(t->host, ':') != NULL) {
        snprintf(out, out_len, "[%s]:%u", t->host, (unsigned)t->port);
        return;
    }
    snprintf(out, out_len, "%s:%u", t->host, (unsigned)t->port);
}

// tg_sockaddr_bytes returns the address bytes of |ss| (4 for IPv4, 16 for IPv6, in
// |*out_len|) and its port, or NULL for another family.
static const uint8_t *tg_sockaddr_bytes(const struct sockaddr_storage *ss, size_t *out_len,
                                        uint16_t *out_port) {
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        *out_len = 4;
        *out_port = ntohs(sin->sin_port);
        return (const uint8_t *)&sin->sin_addr;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        *out_len = 16;
        *out_port = ntohs(sin6->sin6_port);
        return (const uint8_t *)&sin6->sin6_addr;
    }
    return NULL;
}

static int tg_all_zero(const uint8_t *p, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (p[i] != 0)
            return 0;
    }
    return 1;
}

// tg_listen_overlap compares two numeric listen addresses as bind(2) sees them: the same
// family, address and port (TG_OVERLAP_SAME), or the same family and port with one address
// the wildcard, 0.0.0.0 or [::] (TG_OVERLAP_WILDCARD). IPv6 listeners are V6ONLY, so an IPv4
// and an IPv6 address never overlap.
enum tg_overlap tg_listen_overlap(const struct tg_target *a, const struct tg_target *b) {
    size_t a_len = 0, b_len = 0;
    uint16_t a_port = 0, b_port = 0;
    const uint8_t *a_addr = tg_sockaddr_bytes(&a->addr, &a_len, &a_port);
    const uint8_t *b_addr = tg_sockaddr_bytes(&b->addr, &b_len, &b_port);
    if (a_addr == NULL || b_addr == NULL || a->addr.ss_family != b->addr.ss_family ||
        a_port != b_port)
        return TG_OVERLAP_NONE;
    if (memcmp(a_addr, b_addr, a_len) == 0)
        return TG_OVERLAP_SAME;
    if (tg_all_zero(a_addr, a_len) || tg_all_zero(b_addr, b_len))
        return TG_OVERLAP_WILDCARD;
    return TG_OVERLAP_NONE;
}
