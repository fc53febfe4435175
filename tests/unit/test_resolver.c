// Unit tests of the resolver's I/O-free parts: DNS answers (built by hand) to addresses and
// snapshots, SRV order, TTL clamping and refresh scheduling, hosts text, worker views.
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tlsgate/config.h"
#include "tlsgate/dnsmsg.h"
#include "tlsgate/resolver.h"

// ---------------------------------------------------------------------------------------------
// A DNS message builder.

struct msg {
    uint8_t b[2048];
    size_t n;
};

static void put8(struct msg *m, unsigned v) {
    assert_true(m->n < sizeof(m->b));
    m->b[m->n++] = (uint8_t)v;
}

static void put16(struct msg *m, unsigned v) {
    put8(m, v >> 8);
    put8(m, v & 0xff);
}

static void put32(struct msg *m, uint32_t v) {
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

// put_name writes |name| uncompressed; returns its offset.
static size_t put_name(struct msg *m, const char *name) {
    size_t at = m->n;
    while (*name != '\0') {
        const char *dot = strchr(name, '.');
        size_t len = dot != NULL ? (size_t)(dot - name) : strlen(name);
        put8(m, (unsigned)len);
        for (size_t i = 0; i < len; i++)
            put8(m, (uint8_t)name[i]);
        name += len + (dot != NULL);
    }
    put8(m, 0);
    return at;
}

static void put_ptr(struct msg *m, size_t off) {
    put16(m, 0xc000 | (unsigned)off);
}

static void header(struct msg *m, unsigned flags, unsigned qd, unsigned an) {
    m->n = 0;
    put16(m, 0x1234);
    put16(m, flags);
    put16(m, qd);
    put16(m, an);
    put16(m, 0);
    put16(m, 0);
}

// question writes the question; returns the offset of its name (for pointers).
static size_t question(struct msg *m, const char *name, unsigned type) {
    size_t at = put_name(m, name);
    put16(m, type);
    put16(m, 1);
    return at;
}

static void rr_head(struct msg *m, size_t owner_ptr, unsigned type, uint32_t ttl, unsigned rdlen) {
    put_ptr(m, owner_ptr);
    put16(m, type);
    put16(m, 1);
    put32(m, ttl);
    put16(m, rdlen);
}

static void rr_a(struct msg *m, size_t owner, uint32_t ttl, const char *addr) {
    uint8_t b[4];
    assert_int_equal(inet_pton(AF_INET, addr, b), 1);
    rr_head(m, owner, TG_DNS_A, ttl, 4);
    for (int i = 0; i < 4; i++)
        put8(m, b[i]);
}

static void rr_aaaa(struct msg *m, size_t owner, uint32_t ttl, const char *addr) {
    uint8_t b[16];
    assert_int_equal(inet_pton(AF_INET6, addr, b), 1);
    rr_head(m, owner, TG_DNS_AAAA, ttl, 16);
    for (int i = 0; i < 16; i++)
        put8(m, b[i]);
}

// rr_cname writes a CNAME owned by |owner| to |target|; returns the target name's offset.
static size_t rr_cname(struct msg *m, size_t owner, uint32_t ttl, const char *target) {
    rr_head(m, owner, TG_DNS_CNAME, ttl, 0);
    size_t len_at = m->n - 2;
    size_t at = put_name(m, target);
    size_t rdlen = m->n - at;
    m->b[len_at] = (uint8_t)(rdlen >> 8);
    m->b[len_at + 1] = (uint8_t)rdlen;
    return at;
}

static void rr_srv(struct msg *m, size_t owner, uint32_t ttl, unsigned prio, unsigned weight,
                   unsigned port, const char *target) {
    rr_head(m, owner, TG_DNS_SRV, ttl, 0);
    size_t len_at = m->n - 2, start = m->n;
    put16(m, prio);
    put16(m, weight);
    put16(m, port);
    put_name(m, target);
    size_t rdlen = m->n - start;
    m->b[len_at] = (uint8_t)(rdlen >> 8);
    m->b[len_at + 1] = (uint8_t)rdlen;
}

static struct tg_dns_answer g_ans; // large: not on the stack

static void parse_ok(const struct msg *m) {
    char why[128] = "";
    if (!tg_dns_parse(&g_ans, m->b, m->n, why, sizeof(why)))
        fail_msg("parse failed: %s", why);
}

static void parse_bad(const struct msg *m, size_t len, const char *want) {
    char why[128] = "";
    // A copy of exactly |len| bytes on the heap: ASan sees a read past it.
    uint8_t *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    memcpy(copy, m->b, len);
    int ok = tg_dns_parse(&g_ans, copy, len, why, sizeof(why));
    free(copy);
    if (ok)
        fail_msg("parse of %zu bytes succeeded, expected: %s", len, want);
    assert_string_equal(why, want);
    assert_int_equal(g_ans.num_rr, 0);
}

static void addr_text(const struct tg_dns_addr *a, char *out, size_t len) {
    inet_ntop(a->family, a->bytes, out, (socklen_t)len);
}

// ---------------------------------------------------------------------------------------------
// Parsing and collecting.

static void test_parse_a_aaaa(void **state) {
    (void)state;
    struct msg m;
    header(&m, 0x8180, 1, 4);
    size_t q = question(&m, "sip.example.net", TG_DNS_A);
    rr_a(&m, q, 300, "192.0.2.1");
    rr_a(&m, q, 60, "192.0.2.2");
    rr_a(&m, q, 300, "192.0.2.1"); // a duplicate is dropped
    rr_aaaa(&m, q, 30, "2001:db8::1");
    parse_ok(&m);
    assert_int_equal(g_ans.num_rr, 4);
    assert_int_equal(g_ans.rcode, 0);
    assert_string_equal(g_ans.rr[0].owner, "sip.example.net");

    struct tg_dns_addr out[TG_DNS_MAX_ADDRS];
    uint32_t ttl = 0;
    char text[64];
    size_t n = tg_dns_collect_addrs(&g_ans, "SIP.Example.NET", TG_DNS_A, out, 16, &ttl);
    assert_int_equal(n, 2);
    addr_text(&out[0], text, sizeof(text));
    assert_string_equal(text, "192.0.2.1");
    addr_text(&out[1], text, sizeof(text));
    assert_string_equal(text, "192.0.2.2");
    assert_int_equal(ttl, 60);
    n = tg_dns_collect_addrs(&g_ans, "sip.example.net", TG_DNS_AAAA, out, 16, &ttl);
    assert_int_equal(n, 1);
    addr_text(&out[0], text, sizeof(text));
    assert_string_equal(text, "2001:db8::1");
    assert_int_equal(ttl, 30);
    // Another name owns nothing here; |ttl| is left as it was.
    ttl = 7;
    assert_int_equal(tg_dns_collect_addrs(&g_ans, "other.example", TG_DNS_A, out, 16, &ttl), 0);
    assert_int_equal(ttl, 7);
    // |max| bounds the copy.
    assert_int_equal(tg_dns_collect_addrs(&g_ans, "sip.example.net", TG_DNS_A, out, 1, &ttl), 1);
}

static void test_parse_cname_chain(void **state) {
    (void)state;
    struct msg m;
    header(&m, 0x8180, 1, 4);
    size_t q = question(&m, "sip.pstnhub.example", TG_DNS_A);
    size_t c1 = rr_cname(&m, q, 3600, "lb.pstnhub.example");
    size_t c2 = rr_cname(&m, c1, 120, "edge.cdn.example");
    rr_a(&m, c2, 20, "203.0.113.9");
    rr_a(&m, q, 20, "198.51.100.1"); // owned by the alias itself: not the chain's end
    parse_ok(&m);
    assert_string_equal(g_ans.rr[1].srv.target, "edge.cdn.example");
    struct tg_dns_addr out[4];
    uint32_t ttl = 0;
    assert_int_equal(tg_dns_collect_addrs(&g_ans, "sip.pstnhub.example", TG_DNS_A, out, 4, &ttl),
                     1);
    char text[64];
    addr_text(&out[0], text, sizeof(text));
    assert_string_equal(text, "203.0.113.9");
    assert_int_equal(ttl, 20);

    // A CNAME loop ends after TG_DNS_MAX_CNAME links, with no address.
    header(&m, 0x8180, 1, 2);
    q = question(&m, "a.example", TG_DNS_A);
    size_t b = rr_cname(&m, q, 60, "b.example");
    rr_cname(&m, b, 60, "a.example");
    parse_ok(&m);
    assert_int_equal(tg_dns_collect_addrs(&g_ans, "a.example", TG_DNS_A, out, 4, &ttl), 0);
}

static void test_parse_srv(void **state) {
    (void)state;
    struct msg m;
    header(&m, 0x8180, 1, 3);
    size_t q = question(&m, "_sips._tcp.example.net", TG_DNS_SRV);
    rr_srv(&m, q, 300, 10, 60, 5061, "sip1.example.net");
    rr_srv(&m, q, 100, 20, 0, 5062, "sip2.example.net");
    rr_srv(&m, q, 300, 10, 40, 5063, ""); // "." : not offered
    parse_ok(&m);
    struct tg_dns_srv srv[TG_DNS_MAX_SRV];
    uint32_t ttl = 0;
    size_t n = tg_dns_collect_srv(&g_ans, "_sips._tcp.example.net", srv, TG_DNS_MAX_SRV, &ttl);
    assert_int_equal(n, 3);
    assert_int_equal(ttl, 100);
    assert_int_equal(srv[0].priority, 10);
    assert_int_equal(srv[0].weight, 60);
    assert_int_equal(srv[0].port, 5061);
    assert_string_equal(srv[0].target, "sip1.example.net");
    assert_int_equal(srv[1].port, 5062);
    assert_string_equal(srv[2].target, "");
}

// An answer to snapshot: the addresses of two A records, with the target's port.
static void test_answer_to_snapshot(void **state) {
    (void)state;
    struct msg m;
    header(&m, 0x8180, 1, 3);
    size_t q = question(&m, "sip.example.net", TG_DNS_A);
    rr_a(&m, q, 45, "127.0.0.2");
    rr_a(&m, q, 30, "127.0.0.3");
    rr_aaaa(&m, q, 30, "::1"); // not of the type asked: ignored
    parse_ok(&m);

    struct tg_config cfg;
    tg_config_init(&cfg);
    char err[256];
    static const char text[] =
        "[tls]\ncert = c\nkey = k\nca = a\nfqdn = f.example\npeer_names = p.example\n"
        "[inbound in]\nlisten = 127.0.0.1:5060\nforward = 127.0.0.1:5070\n"
        "[outbound out]\nlisten = 127.0.0.1:5080\n"
        "connect = sip.example.net:5061, 192.0.2.9:5062\n";
    if (!tg_config_parse(&cfg, "t.conf", text, sizeof(text) - 1, err, sizeof(err)))
        fail_msg("%s", err);
    struct tg_dns_resolved *per = calloc(cfg.num_listeners * TG_MAX_TARGETS, sizeof(*per));
    assert_non_null(per);
    struct tg_dns_resolved *r = &per[1 * TG_MAX_TARGETS + 0];
    r->ttl = TG_DNS_TTL_MAX;
    assert_int_equal(tg_dns_resolved_from_answer(r, &g_ans, "sip.example.net", TG_DNS_A, 5061), 2);
    assert_int_equal(tg_dns_resolved_from_answer(r, &g_ans, "sip.example.net", TG_DNS_A, 5061), 0);
    assert_int_equal(r->ttl, 30);

    struct tg_dns_snapshot *s = tg_dns_snapshot_build(&cfg, per, NULL, 1);
    assert_non_null(s);
    assert_int_equal(s->num_listeners, 2);
    assert_int_equal(s->lists[0].num_entries, 0); // inbound: nothing
    const struct tg_dns_list *l = &s->lists[1];
    assert_int_equal(l->num_entries, 3);
    char buf[64];
    tg_dns_entry_format(&l->entries[0], buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.2:5061");
    tg_dns_entry_format(&l->entries[1], buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.3:5061");
    tg_dns_entry_format(&l->entries[2], buf, sizeof(buf));
    assert_string_equal(buf, "192.0.2.9:5062");
    assert_int_equal(l->entries[0].target, 0);
    assert_int_equal(l->entries[1].target, 0);
    assert_int_equal(l->entries[2].target, 1);
    assert_string_equal(l->entries[0].expect_name, "sip.example.net");
    assert_string_equal(l->entries[2].expect_name, ""); // by address: peer_names

    // A rebuild keeps the health of the addresses that stay, and forgets the others.
    atomic_store(&l->entries[1].down_until, 12345);
    atomic_store(&l->entries[2].down_until, 777);
    r->num = 0;
    struct tg_dns_addr a = {.family = AF_INET, .bytes = {127, 0, 0, 3}};
    struct tg_dns_addr b = {.family = AF_INET, .bytes = {127, 0, 0, 4}};
    r->addrs[0] = b;
    r->ports[0] = 5061;
    r->addrs[1] = a;
    r->ports[1] = 5061;
    r->num = 2;
    struct tg_dns_snapshot *s2 = tg_dns_snapshot_build(&cfg, per, s, 2);
    assert_non_null(s2);
    assert_int_equal(s2->serial, 2);
    const struct tg_dns_list *l2 = &s2->lists[1];
    assert_int_equal(l2->num_entries, 3);
    tg_dns_entry_format(&l2->entries[0], buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.4:5061");
    assert_int_equal(atomic_load(&l2->entries[0].down_until), 0);
    assert_int_equal(atomic_load(&l2->entries[1].down_until), 12345);
    assert_int_equal(atomic_load(&l2->entries[2].down_until), 777);
    tg_dns_snapshot_free(s);
    tg_dns_snapshot_free(s2);
    free(per);
    tg_config_cleanup(&cfg);
}

// Truncated and malformed messages are refused, with no read past their length (the copy on
// the heap is exactly as long as given: ASan would see one).
static void test_parse_refused(void **state) {
    (void)state;
    struct msg m;
    header(&m, 0x8180, 1, 2);
    size_t q = question(&m, "sip.example.net", TG_DNS_A);
    rr_a(&m, q, 300, "192.0.2.1");
    rr_srv(&m, q, 300, 1, 1, 5061, "sip1.example.net");
    parse_ok(&m);
    // Every cut of a good message is refused.
    for (size_t len = 0; len < m.n; len++) {
        char why[128] = "";
        uint8_t *copy = malloc(len > 0 ? len : 1);
        memcpy(copy, m.b, len);
        int ok = tg_dns_parse(&g_ans, copy, len, why, sizeof(why));
        free(copy);
        if (ok)
            fail_msg("a cut at %zu of %zu bytes parsed", len, m.n);
    }
    parse_bad(&m, 11, "shorter than a DNS header");
    parse_bad(&m, 20, "label runs past the end");
    parse_bad(&m, 12, "name runs past the end");
    parse_bad(&m, m.n - 1, "record data runs past the end");

    header(&m, 0x0100, 1, 0); // a query, not a response
    question(&m, "x.example", TG_DNS_A);
    parse_bad(&m, m.n, "not a response");
    header(&m, 0x8380, 1, 0); // TC
    question(&m, "x.example", TG_DNS_A);
    parse_bad(&m, m.n, "truncated (TC)");

    // A pointer to itself, and one forwards.
    header(&m, 0x8180, 1, 0);
    put_ptr(&m, 12);
    put16(&m, 1);
    put16(&m, 1);
    parse_bad(&m, m.n, "name pointer does not point backwards");
    header(&m, 0x8180, 1, 0);
    put_ptr(&m, 40);
    parse_bad(&m, m.n, "name pointer does not point backwards");
    // Label types 01 and 10 are not ours.
    header(&m, 0x8180, 1, 0);
    put8(&m, 0x41);
    parse_bad(&m, m.n, "unknown label type");
    // A byte no host name has.
    header(&m, 0x8180, 1, 0);
    question(&m, "a b.example", TG_DNS_A);
    parse_bad(&m, m.n, "name with a byte outside [A-Za-z0-9_-]");
    // A name over 255 bytes: five labels of 63.
    header(&m, 0x8180, 1, 0);
    for (int k = 0; k < 5; k++) {
        put8(&m, 63);
        for (int i = 0; i < 63; i++)
            put8(&m, 'a' + k);
    }
    put8(&m, 0);
    put16(&m, 1);
    put16(&m, 1);
    parse_bad(&m, m.n, "name longer than 255 bytes");

    // Record data of the wrong length.
    header(&m, 0x8180, 1, 1);
    q = question(&m, "x.example", TG_DNS_A);
    rr_head(&m, q, TG_DNS_A, 1, 3);
    put8(&m, 1);
    put8(&m, 2);
    put8(&m, 3);
    parse_bad(&m, m.n, "A record data is not 4 bytes");
    header(&m, 0x8180, 1, 1);
    q = question(&m, "x.example", TG_DNS_AAAA);
    rr_head(&m, q, TG_DNS_AAAA, 1, 4);
    put32(&m, 0);
    parse_bad(&m, m.n, "AAAA record data is not 16 bytes");
    header(&m, 0x8180, 1, 1);
    q = question(&m, "x.example", TG_DNS_SRV);
    rr_head(&m, q, TG_DNS_SRV, 1, 6);
    put16(&m, 1);
    put16(&m, 1);
    put16(&m, 5061);
    parse_bad(&m, m.n, "SRV record data too short");
    // An SRV target name running past its record data into the next bytes.
    header(&m, 0x8180, 1, 1);
    q = question(&m, "x.example", TG_DNS_SRV);
    rr_head(&m, q, TG_DNS_SRV, 1, 8);
    put16(&m, 1);
    put16(&m, 1);
    put16(&m, 5061);
    put8(&m, 3);
    put8(&m, 'a');
    put8(&m, 'b');
    put8(&m, 'c');
    put8(&m, 0);
    parse_bad(&m, m.n, "label runs past the end");
    // A CNAME whose record data is longer than its name.
    header(&m, 0x8180, 1, 1);
    q = question(&m, "x.example", TG_DNS_CNAME);
    rr_head(&m, q, TG_DNS_CNAME, 1, 3);
    put8(&m, 0);
    put8(&m, 0);
    put8(&m, 0);
    parse_bad(&m, m.n, "record data longer than its name");

    // Other classes and types are skipped, not refused; NXDOMAIN reads as its rcode.
    header(&m, 0x8183, 1, 1);
    q = question(&m, "x.example", TG_DNS_A);
    rr_head(&m, q, 16 /* TXT */, 1, 2);
    put8(&m, 1);
    put8(&m, 'x');
    parse_ok(&m);
    assert_int_equal(g_ans.num_rr, 0);
    assert_int_equal(g_ans.rcode, 3);
}

// ---------------------------------------------------------------------------------------------
// SRV order (RFC 2782).

struct seq {
    const uint32_t *v;
    size_t n, i;
};

static uint32_t seq_rand(void *arg) {
    struct seq *s = arg;
    assert_true(s->i < s->n);
    return s->v[s->i++];
}

static void fill_srv(struct tg_dns_srv *s, unsigned prio, unsigned weight, const char *name) {
    memset(s, 0, sizeof(*s));
    s->priority = (uint16_t)prio;
    s->weight = (uint16_t)weight;
    s->port = 5061;
    snprintf(s->target, sizeof(s->target), "%s", name);
}

static void test_srv_order(void **state) {
    (void)state;
    struct tg_dns_srv s[5];
    // Priority first: 20, 10, 30, 10 -> 10 10 20 30; within 10, weights 1 (x) and 3 (y): sum 4,
    // a draw of 2 % 5 = 2 passes x's running sum 1 and picks y (running sum 4).
    fill_srv(&s[0], 20, 5, "c");
    fill_srv(&s[1], 10, 1, "x");
    fill_srv(&s[2], 30, 5, "d");
    fill_srv(&s[3], 10, 3, "y");
    uint32_t v1[] = {2};
    struct seq q1 = {v1, 1, 0};
    tg_dns_srv_order(s, 4, seq_rand, &q1);
    assert_string_equal(s[0].target, "y");
    assert_string_equal(s[1].target, "x");
    assert_string_equal(s[2].target, "c");
    assert_string_equal(s[3].target, "d");
    assert_int_equal(q1.i, 1); // one draw: a priority of one record needs none

    // The same with a draw of 1 picks x (running sum 1 >= 1).
    fill_srv(&s[0], 10, 1, "x");
    fill_srv(&s[1], 10, 3, "y");
    uint32_t v2[] = {1};
    struct seq q2 = {v2, 1, 0};
    tg_dns_srv_order(s, 2, seq_rand, &q2);
    assert_string_equal(s[0].target, "x");
    assert_string_equal(s[1].target, "y");

    // Weight 0 goes first among the candidates: a draw of 0 picks it, any other skips it.
    fill_srv(&s[0], 1, 10, "w10");
    fill_srv(&s[1], 1, 0, "w0");
    fill_srv(&s[2], 1, 20, "w20");
    uint32_t v3[] = {0, 0};
    struct seq q3 = {v3, 2, 0};
    tg_dns_srv_order(s, 3, seq_rand, &q3);
    assert_string_equal(s[0].target, "w0");
    assert_string_equal(s[1].target, "w10");
    assert_string_equal(s[2].target, "w20");
    fill_srv(&s[0], 1, 10, "w10");
    fill_srv(&s[1], 1, 0, "w0");
    fill_srv(&s[2], 1, 20, "w20");
    uint32_t v4[] = {25, 5}; // 25 % 31 = 25 -> w20 (0+10+20 >= 25); then 5 % 11 -> w10
    struct seq q4 = {v4, 2, 0};
    tg_dns_srv_order(s, 3, seq_rand, &q4);
    assert_string_equal(s[0].target, "w20");
    assert_string_equal(s[1].target, "w10");
    assert_string_equal(s[2].target, "w0");

    // Many draws: weights 1 and 3 draw from 0..4 (RFC 2782: 0 to the sum, inclusive), so the
    // weight-3 record comes first for 2, 3 and 4: three times in five.
    int y_first = 0;
    uint32_t draws[4000];
    for (size_t i = 0; i < 4000; i++)
        draws[i] = (uint32_t)(i * 2654435761u >> 7);
    struct seq q5 = {draws, 4000, 0};
    for (int i = 0; i < 4000; i++) {
        fill_srv(&s[0], 10, 1, "x");
        fill_srv(&s[1], 10, 3, "y");
        tg_dns_srv_order(s, 2, seq_rand, &q5);
        y_first += strcmp(s[0].target, "y") == 0;
        if (q5.i == 4000)
            break;
    }
    assert_true(y_first > 2200 && y_first < 2600);
}

// ---------------------------------------------------------------------------------------------
// TTL and scheduling.

static void test_ttl_and_schedule(void **state) {
    (void)state;
    assert_int_equal(tg_dns_clamp_ttl(0), 1);
    assert_int_equal(tg_dns_clamp_ttl(1), 1);
    assert_int_equal(tg_dns_clamp_ttl(300), 300);
    assert_int_equal(tg_dns_clamp_ttl(3600), 3600);
    assert_int_equal(tg_dns_clamp_ttl(86400), 3600);
    assert_int_equal(tg_dns_clamp_ttl(UINT32_MAX), 3600);

    struct tg_dns_sched s = {0};
    assert_int_equal(tg_dns_sched_ok(&s, 1000, 0), 0);
    assert_int_equal(s.due_ms, 2000); // TTL 0 -> 1 s
    assert_int_equal(tg_dns_sched_ok(&s, 1000, 100000), 0);
    assert_int_equal(s.due_ms, 1000 + 3600 * 1000);
    // Failures: 1, 2, 4, 8, 16, 30, 30 s; only the first starts an episode.
    static const uint32_t want[] = {1, 2, 4, 8, 16, 30, 30};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(tg_dns_sched_fail(&s, 5000), i == 0);
        assert_int_equal(s.backoff_s, want[i]);
        assert_int_equal(s.due_ms, 5000 + want[i] * 1000);
    }
    // Recovery ends the episode (reported once) and the back-off.
    assert_int_equal(tg_dns_sched_ok(&s, 9000, 60), 1);
    assert_int_equal(s.due_ms, 9000 + 60000);
    assert_int_equal(s.backoff_s, 0);
    assert_int_equal(tg_dns_sched_fail(&s, 10000), 1);
    assert_int_equal(s.backoff_s, 1);
}

// ---------------------------------------------------------------------------------------------
// hosts(5).

static void test_hosts(void **state) {
    (void)state;
    char path[] = "/tmp/tg_hosts_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "# comment 10.0.0.1 sip.test\n"
                               "127.0.0.1\tlocalhost\n"
                               "::1 localhost ip6-localhost\n"
                               "\n"
                               "   127.0.0.2   SIP.Test alias.test   # trailing comment\n"
                               "not-an-address sip.test\n"
                               "fe80::1%eth0 sip.test\n"
                               "127.0.0.3 sip.testing\n"
                               "127.0.0.2 sip.test\n" // a duplicate
                               "2001:db8::7 other sip.test\r\n"
                               "127.0.0.9 sip.test"; // no final newline
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(tg_hosts_read(path, &data, &len), 1);
    unlink(path);
    assert_int_equal(len, sizeof(text) - 1);

    struct tg_dns_addr out[8];
    char a[64];
    size_t n = tg_hosts_lookup(data, len, "sip.test", out, 8);
    assert_int_equal(n, 3);
    addr_text(&out[0], a, sizeof(a));
    assert_string_equal(a, "127.0.0.2");
    addr_text(&out[1], a, sizeof(a));
    assert_string_equal(a, "2001:db8::7");
    addr_text(&out[2], a, sizeof(a));
    assert_string_equal(a, "127.0.0.9");
    n = tg_hosts_lookup(data, len, "localhost", out, 8);
    assert_int_equal(n, 2);
    addr_text(&out[0], a, sizeof(a));
    assert_string_equal(a, "127.0.0.1");
    addr_text(&out[1], a, sizeof(a));
    assert_string_equal(a, "::1");
    assert_int_equal(tg_hosts_lookup(data, len, "alias.test", out, 8), 1);
    assert_int_equal(tg_hosts_lookup(data, len, "comment", out, 8), 0);
    assert_int_equal(tg_hosts_lookup(data, len, "10.0.0.1", out, 8), 0);
    assert_int_equal(tg_hosts_lookup(data, len, "sip", out, 8), 0);
    assert_int_equal(tg_hosts_lookup(data, len, "sip.test", out, 1), 1); // |max| bounds it
    free(data);

    // A missing file reads as empty.
    assert_int_equal(tg_hosts_read("/nonexistent/hosts", &data, &len), 1);
    assert_int_equal(len, 0);
    assert_int_equal(tg_hosts_lookup(data, len, "localhost", out, 8), 0);
    free(data);
}

// ---------------------------------------------------------------------------------------------
// A worker's view: adopted snapshots, retired ones freed when their last connection ends.

static struct tg_dns_snapshot *tiny_snapshot(uint64_t serial) {
    struct tg_dns_snapshot *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    atomic_init(&s->refs, 1);
    s->serial = serial;
    return s;
}

static void test_view(void **state) {
    (void)state;
    struct tg_dns_snapshot *s1 = tiny_snapshot(1), *s2 = tiny_snapshot(2), *s3 = tiny_snapshot(3);
    struct tg_dns_view v;
    assert_int_equal(tg_dns_view_init(&v, s1), 1);
    assert_int_equal(atomic_load(&s1->refs), 2);
    struct tg_dns_hold *h1 = tg_dns_view_acquire(&v);
    assert_ptr_equal(h1->snap, s1);

    tg_dns_view_adopt(&v); // nothing offered
    assert_ptr_equal(v.cur, h1);
    tg_dns_view_offer(&v, s2);
    tg_dns_view_offer(&v, s3); // replaces s2 before the worker took it
    assert_int_equal(atomic_load(&s2->refs), 1);
    tg_dns_view_adopt(&v);
    assert_ptr_equal(v.cur->snap, s3);
    // s1 is retired, still used by h1's connection.
    assert_ptr_equal(v.retired, h1);
    assert_int_equal(atomic_load(&s1->refs), 2);
    struct tg_dns_hold *h3 = tg_dns_view_acquire(&v);
    tg_dns_view_release(&v, h1); // its last user: s1 goes back
    assert_null(v.retired);
    assert_int_equal(atomic_load(&s1->refs), 1);
    tg_dns_view_release(&v, h3); // the current hold stays, even with no user
    assert_ptr_equal(v.cur, h3);
    tg_dns_view_cleanup(&v);
    assert_int_equal(atomic_load(&s3->refs), 1);
    tg_dns_snapshot_free(s1);
    tg_dns_snapshot_free(s2);
    tg_dns_snapshot_free(s3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_a_aaaa),
        cmocka_unit_test(test_parse_cname_chain),
        cmocka_unit_test(test_parse_srv),
        cmocka_unit_test(test_answer_to_snapshot),
        cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_srv_order),
        cmocka_unit_test(test_ttl_and_schedule),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
