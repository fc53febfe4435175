// DNS messages, SRV order, hosts text and refresh scheduling (see include/tlsgate/dnsmsg.h).
#include "tlsgate/dnsmsg.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tlsgate/cursor.h"

// ---------------------------------------------------------------------------------------------
// Message parsing (RFC 1035 4.1).

#define DNS_HEADER_LEN 12
#define DNS_NAME_MAX 255
#define DNS_CLASS_IN 1

static int rd16(const struct tg_cur *c, size_t off, uint16_t *out) {
    if (off > c->len || c->len - off < 2)
        return 0;
    *out = (uint16_t)((c->b[off] << 8) | c->b[off + 1]);
    return 1;
}

static int rd32(const struct tg_cur *c, size_t off, uint32_t *out) {
    if (off > c->len || c->len - off < 4)
        return 0;
    *out = ((uint32_t)c->b[off] << 24) | ((uint32_t)c->b[off + 1] << 16) |
           ((uint32_t)c->b[off + 2] << 8) | c->b[off + 3];
    return 1;
}

static int label_char(uint8_t ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

// read_name decodes the name at |*off| into |out| (dotted, no trailing dot; "" for the root)
// and moves |*off| past it where it sits (a pointer counts two bytes). Pointers must point
// before the label that holds them, so every jump goes backwards and decoding ends.
static int read_name(const struct tg_cur *c, size_t *off, char *out, size_t out_len,
                     const char **why) {
    size_t pos = *off, end = 0, n = 0;
    int jumped = 0;
    out[0] = '\0';
    for (;;) {
        int len = tg_cur_at(c, pos);
        if (len < 0)
            return *why = "name runs past the end", 0;
        if ((len & 0xc0) == 0xc0) {
            int lo = tg_cur_at(c, pos + 1);
            if (lo < 0)
                return *why = "name pointer runs past the end", 0;
            size_t to = ((size_t)(len & 0x3f) << 8) | (size_t)lo;
            if (to >= pos)
                return *why = "name pointer does not point backwards", 0;
            if (!jumped)
                end = pos + 2;
            jumped = 1;
            pos = to;
            continue;
        }
        if ((len & 0xc0) != 0)
            return *why = "unknown label type", 0;
        if (len == 0) {
            if (!jumped)
                end = pos + 1;
            break;
        }
        if (pos + 1 + (size_t)len > c->len)
            return *why = "label runs past the end", 0;
        if (n + (n > 0) + (size_t)len > DNS_NAME_MAX || n + (n > 0) + (size_t)len >= out_len)
            return *why = "name longer than 255 bytes", 0;
        if (n > 0)
            out[n++] = '.';
        for (int i = 0; i < len; i++) {
            uint8_t ch = c->b[pos + 1 + (size_t)i];
            if (!label_char(ch))
                return *why = "name with a byte outside [A-Za-z0-9_-]", 0;
            out[n++] = (char)ch;
        }
        out[n] = '\0';
        pos += 1 + (size_t)len;
    }
    *off = end;
    return 1;
}

// read_rdata fills |rr| from the |rdlen| bytes of record data at |off|.
static int read_rdata(const struct tg_cur *c, size_t off, uint16_t rdlen, struct tg_dns_rr *rr,
                      const char **why) {
    size_t end = off + rdlen, pos = off;
    switch (rr->type) {
    case TG_DNS_A:
        if (rdlen != 4)
            return *why = "A record data is not 4 bytes", 0;
        rr->addr.family = AF_INET;
        memcpy(rr->addr.bytes, c->b + off, 4);
        return 1;
    case TG_DNS_AAAA:
        if (rdlen != 16)
            return *why = "AAAA record data is not 16 bytes", 0;
        rr->addr.family = AF_INET6;
        memcpy(rr->addr.bytes, c->b + off, 16);
        return 1;
    case TG_DNS_SRV:
        if (rdlen < 7 || !rd16(c, pos, &rr->srv.priority) || !rd16(c, pos + 2, &rr->srv.weight) ||
            !rd16(c, pos + 4, &rr->srv.port))
            return *why = "SRV record data too short", 0;
        pos += 6;
        break;
    default: // CNAME
        break;
    }
    // CNAME and SRV end with a name, which must end where the record data does.
    struct tg_cur rd = {c->b, end}; // the name's own bytes stay within the record
    if (!read_name(&rd, &pos, rr->srv.target, sizeof(rr->srv.target), why))
        return 0;
    if (pos != end)
        return *why = "record data longer than its name", 0;
    rr->srv.ttl = rr->ttl;
    return 1;
}

static int skip_questions(const struct tg_cur *c, size_t *off, uint16_t qdcount, const char **why) {
    char name[DNS_NAME_MAX + 1];
    for (uint16_t i = 0; i < qdcount; i++) {
        if (!read_name(c, off, name, sizeof(name), why))
            return 0;
        if (*off > c->len || c->len - *off < 4)
            return *why = "question runs past the end", 0;
        *off += 4;
    }
    return 1;
}

static int read_answers(struct tg_dns_answer *out, const struct tg_cur *c, size_t off,
                        uint16_t ancount, const char **why) {
    for (uint16_t i = 0; i < ancount; i++) {
        struct tg_dns_rr *rr = &out->rr[out->num_rr < TG_DNS_MAX_RR ? out->num_rr : 0];
        char owner[DNS_NAME_MAX + 1];
        uint16_t type, cls, rdlen;
        uint32_t ttl;
        if (!read_name(c, &off, owner, sizeof(owner), why))
            return 0;
        if (!rd16(c, off, &type) || !rd16(c, off + 2, &cls) || !rd32(c, off + 4, &ttl) ||
            !rd16(c, off + 8, &rdlen))
            return *why = "record header runs past the end", 0;
        off += 10;
        if (off > c->len || c->len - off < rdlen)
            return *why = "record data runs past the end", 0;
        int wanted = cls == DNS_CLASS_IN && (type == TG_DNS_A || type == TG_DNS_AAAA ||
                                             type == TG_DNS_CNAME || type == TG_DNS_SRV);
        if (wanted && out->num_rr < TG_DNS_MAX_RR) {
            memset(rr, 0, sizeof(*rr));
            rr->type = type;
            rr->ttl = ttl > 0x7fffffffu ? 0 : ttl; // RFC 2181 8: a TTL over 2^31-1 reads as 0
            memcpy(rr->owner, owner, strlen(owner) + 1);
            if (!read_rdata(c, off, rdlen, rr, why))
                return 0;
            out->num_rr++;
        }
        off += rdlen;
    }
    return 1;
}

int tg_dns_parse(struct tg_dns_answer *out, const uint8_t *msg, size_t len, char *why,
                 size_t why_len) {
    out->num_rr = 0;
    out->rcode = 0;
    out->id = 0;
    struct tg_cur c = {msg, len};
    const char *reason = NULL;
    uint16_t id, flags, qdcount, ancount;
    if (!rd16(&c, 0, &id) || !rd16(&c, 2, &flags) || !rd16(&c, 4, &qdcount) ||
        !rd16(&c, 6, &ancount) || len < DNS_HEADER_LEN)
        return tg_set_why(why, why_len, "shorter than a DNS header");
    if (!(flags & 0x8000))
        return tg_set_why(why, why_len, "not a response");
    if (flags & 0x0200)
        return tg_set_why(why, why_len, "truncated (TC)");
    out->id = id;
    out->rcode = (uint8_t)(flags & 0x0f);
    size_t off = DNS_HEADER_LEN;
    if (!skip_questions(&c, &off, qdcount, &reason) ||
        !read_answers(out, &c, off, ancount, &reason)) {
        out->num_rr = 0;
        return tg_set_why(why, why_len, "%s", reason);
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Answers to addresses and SRV records.

static void min_ttl(uint32_t *ttl, uint32_t v, int *any) {
    if (!*any || v < *ttl)
        *ttl = v;
    *any = 1;
}

// chain_end follows CNAME records from |qname|; returns the final owner name.
static const char *chain_end(const struct tg_dns_answer *a, const char *qname, uint32_t *ttl,
                             int *any) {
    const char *name = qname;
    for (int hop = 0; hop < TG_DNS_MAX_CNAME; hop++) {
        const struct tg_dns_rr *link = NULL;
        for (size_t i = 0; i < a->num_rr && link == NULL; i++)
            if (a->rr[i].type == TG_DNS_CNAME && strcasecmp(a->rr[i].owner, name) == 0)
                link = &a->rr[i];
        if (link == NULL)
            return name;
        min_ttl(ttl, link->ttl, any);
        name = link->srv.target;
    }
    return name;
}

static int addr_seen(const struct tg_dns_addr *list, size_t n, const struct tg_dns_addr *a) {
    for (size_t i = 0; i < n; i++)
        if (list[i].family == a->family &&
            memcmp(list[i].bytes, a->bytes, a->family == AF_INET ? 4 : 16) == 0)
            return 1;
    return 0;
}

size_t tg_dns_collect_addrs(const struct tg_dns_answer *a, const char *qname, uint16_t type,
                            struct tg_dns_addr *out, size_t max, uint32_t *out_ttl) {
    uint32_t ttl = 0;
    int any = 0;
    const char *name = chain_end(a, qname, &ttl, &any);
    size_t n = 0;
    for (size_t i = 0; i < a->num_rr && n < max; i++) {
        const struct tg_dns_rr *rr = &a->rr[i];
        if (rr->type != type || strcasecmp(rr->owner, name) != 0 || addr_seen(out, n, &rr->addr))
            continue;
        out[n++] = rr->addr;
        min_ttl(&ttl, rr->ttl, &any);
    }
    if (n > 0)
        *out_ttl = ttl;
    return n;
}

size_t tg_dns_collect_srv(const struct tg_dns_answer *a, const char *qname, struct tg_dns_srv *out,
                          size_t max, uint32_t *out_ttl) {
    uint32_t ttl = 0;
    int any = 0;
    const char *name = chain_end(a, qname, &ttl, &any);
    size_t n = 0;
    for (size_t i = 0; i < a->num_rr && n < max; i++) {
        const struct tg_dns_rr *rr = &a->rr[i];
        if (rr->type != TG_DNS_SRV || strcasecmp(rr->owner, name) != 0)
            continue;
        out[n++] = rr->srv;
        min_ttl(&ttl, rr->ttl, &any);
    }
    if (n > 0)
        *out_ttl = ttl;
    return n;
}

// ---------------------------------------------------------------------------------------------
// SRV order (RFC 2782, "Usage rules").

static void srv_swap(struct tg_dns_srv *a, struct tg_dns_srv *b) {
    struct tg_dns_srv t = *a;
    *a = *b;
    *b = t;
}

// order_priority orders the records [0, n) of one priority by weighted random draws.
static void order_priority(struct tg_dns_srv *s, size_t n, tg_dns_rand_fn rnd, void *arg) {
    // Weight 0 first (stable), so that a draw of 0 picks them and little else does.
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && s[j].weight == 0 && s[j - 1].weight != 0; j--)
            srv_swap(&s[j], &s[j - 1]);
    for (size_t first = 0; first + 1 < n; first++) {
        uint32_t sum = 0;
        for (size_t i = first; i < n; i++)
            sum += s[i].weight;
        uint32_t r = rnd(arg) % (sum + 1);
        uint32_t run = 0;
        size_t pick = n - 1;
        for (size_t i = first; i < n; i++) {
            run += s[i].weight;
            if (run >= r) {
                pick = i;
                break;
            }
        }
        // Keep the others in their order: the pick moves to the front of the rest.
        for (size_t j = pick; j > first; j--)
            srv_swap(&s[j], &s[j - 1]);
    }
}

void tg_dns_srv_order(struct tg_dns_srv *srv, size_t num_srv, tg_dns_rand_fn rnd, void *arg) {
    for (size_t i = 1; i < num_srv; i++) // stable insertion sort by priority
        for (size_t j = i; j > 0 && srv[j].priority < srv[j - 1].priority; j--)
            srv_swap(&srv[j], &srv[j - 1]);
    for (size_t i = 0; i < num_srv;) {
        size_t j = i;
        while (j < num_srv && srv[j].priority == srv[i].priority)
            j++;
        order_priority(srv + i, j - i, rnd, arg);
        i = j;
    }
}

// ---------------------------------------------------------------------------------------------
// TTL and refresh scheduling.

uint32_t tg_dns_clamp_ttl(uint32_t ttl) {
    if (ttl < TG_DNS_TTL_MIN)
        return TG_DNS_TTL_MIN;
    return ttl > TG_DNS_TTL_MAX ? TG_DNS_TTL_MAX : ttl;
}

int tg_dns_sched_ok(struct tg_dns_sched *s, uint64_t now_ms, uint32_t ttl) {
    int recovered = s->failing;
    s->due_ms = now_ms + (uint64_t)tg_dns_clamp_ttl(ttl) * 1000u;
    s->backoff_s = 0;
    s->failing = 0;
    return recovered;
}

int tg_dns_sched_fail(struct tg_dns_sched *s, uint64_t now_ms) {
    int starts = !s->failing;
    if (s->backoff_s == 0)
        s->backoff_s = TG_DNS_BACKOFF_MIN;
    else if (s->backoff_s < TG_DNS_BACKOFF_MAX)
        s->backoff_s =
            s->backoff_s * 2 > TG_DNS_BACKOFF_MAX ? TG_DNS_BACKOFF_MAX : s->backoff_s * 2;
    s->failing = 1;
    s->due_ms = now_ms + (uint64_t)s->backoff_s * 1000u;
    return starts;
}

// ---------------------------------------------------------------------------------------------
// hosts(5).

static int is_blank(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\r';
}

// next_field returns the next blank-separated field of [*p, end) and its length in |*len|.
static const char *next_field(const char **p, const char *end, size_t *len) {
    const char *s = *p;
    while (s < end && is_blank(*s))
        s++;
    const char *e = s;
    while (e < end && !is_blank(*e))
        e++;
    *p = e;
    *len = (size_t)(e - s);
    return s;
}

// parse_addr reads a numeric address field into |out|.
static int parse_addr(const char *s, size_t len, struct tg_dns_addr *out) {
    char text[64];
    if (len == 0 || len >= sizeof(text))
        return 0;
    memcpy(text, s, len);
    text[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, text, out->bytes) == 1) {
        out->family = AF_INET;
        return 1;
    }
    if (inet_pton(AF_INET6, text, out->bytes) == 1) {
        out->family = AF_INET6;
        return 1;
    }
    return 0;
}

// line_names reports whether the names of one hosts line [p, end) include |name|.
static int line_names(const char *p, const char *end, const char *name, size_t name_len) {
    for (;;) {
        size_t len;
        const char *f = next_field(&p, end, &len);
        if (len == 0)
            return 0;
        if (len == name_len && strncasecmp(f, name, len) == 0)
            return 1;
    }
}

size_t tg_hosts_lookup(const char *data, size_t len, const char *name, struct tg_dns_addr *out,
                       size_t max) {
    size_t n = 0, name_len = strlen(name);
    const char *p = data, *end = data + len;
    while (p < end && n < max) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        const char *hash = memchr(p, '#', (size_t)(line_end - p));
        const char *content_end = hash != NULL ? hash : line_end;
        const char *q = p;
        size_t alen;
        const char *af = next_field(&q, content_end, &alen);
        struct tg_dns_addr a;
        if (parse_addr(af, alen, &a) && line_names(q, content_end, name, name_len) &&
            !addr_seen(out, n, &a))
            out[n++] = a;
        p = nl != NULL ? nl + 1 : end;
    }
    return n;
}

int tg_hosts_read(const char *path, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    char *buf = malloc(TG_HOSTS_MAX_BYTES + 1);
    if (buf == NULL)
        return 0;
    size_t n = 0;
    FILE *f = fopen(path, "re");
    if (f != NULL) {
        n = fread(buf, 1, TG_HOSTS_MAX_BYTES, f);
        fclose(f);
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 1;
}

void tg_dns_addr_format(const struct tg_dns_addr *a, uint16_t port, char *out, size_t out_len) {
    char host[INET6_ADDRSTRLEN] = "?";
    inet_ntop(a->family == AF_INET ? AF_INET : AF_INET6, a->bytes, host, sizeof(host));
    snprintf(out, out_len, a->family == AF_INET ? "%s:%u" : "[%s]:%u", host, (unsigned)port);
}
