// Unit tests for the SIP proxy rewriter: Via with flow token, Max-Forwards, Record-Route,
// Route, Contact, X-TLS-Peer-*, response Via pop, built responses, OPTIONS to us.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "tlsgate/sip.h"
#include "tlsgate/siprw.h"

#define NUM_HDRS 160

static const uint8_t k_key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static struct tg_sip_rw_cfg g_cfg;

static const struct tg_sip_flow k_pbx_flow = {
    .slot = 0x123456, .gen = 0xdeadbeef, .worker = 3, .side = TG_SIP_SIDE_PBX};
static const struct tg_sip_flow k_prov_flow = {
    .slot = 7, .gen = 1, .worker = 0, .side = TG_SIP_SIDE_PROVIDER};

static int setup(void **state) {
    (void)state;
    tg_sip_rw_cfg_init(&g_cfg, "sbc.example.com", 5061, "10.0.0.1", 5060, k_key);
    return 0;
}

// A scanned message: its bytes (owned) and index.
struct scanned {
    char buf[16384];
    size_t len;
    struct tg_sip_header hdrs[NUM_HDRS];
    struct tg_sip_msg msg;
};

static void must_scan(struct scanned *s, const char *text, size_t len) {
    assert_true(len < sizeof(s->buf));
    memcpy(s->buf, text, len);
    s->len = len;
    enum tg_sip_scan_result r =
        tg_sip_scan(NULL, &s->msg, s->hdrs, NUM_HDRS, (const uint8_t *)s->buf, len);
    if (r != TG_SIP_MESSAGE || s->msg.len != len)
        print_error("not one message (%d, %s):\n%.*s\n", r, tg_sip_err_name(s->msg.err), (int)len,
                    text);
    assert_int_equal(r, TG_SIP_MESSAGE);
    assert_int_equal(s->msg.len, len);
}

// msg_with_body builds head + Content-Length + body and scans it.
static void build(struct scanned *s, const char *head, const char *body) {
    char tmp[16384];
    int n = snprintf(tmp, sizeof(tmp), "%sContent-Length: %zu\r\n\r\n%s", head, strlen(body), body);
    assert_true(n > 0 && (size_t)n < sizeof(tmp));
    must_scan(s, tmp, (size_t)n);
}

// header_value returns a NUL-terminated copy of the |nth| header |id| of |s| (static storage).
static const char *value_of(const struct scanned *s, enum tg_sip_hdr id, unsigned nth) {
    static char v[4096];
    int k = tg_sip_find(&s->msg, id, nth);
    if (k < 0)
        return NULL;
    const struct tg_sip_header *h = &s->msg.headers[k];
    assert_true(h->value.len < sizeof(v));
    memcpy(v, s->buf + h->value.off, h->value.len);
    v[h->value.len] = '\0';
    return v;
}

static const char k_sdp[] = "v=0\r\n"
                            "o=- 3948 1 IN IP4 192.168.1.10\r\n"
                            "s=-\r\n"
                            "c=IN IP4 192.168.1.10\r\n"
                            "t=0 0\r\n"
                            "m=audio 40000 RTP/AVP 0 8 101\r\n"
                            "a=sendrecv\r\n";

static const char k_pbx_invite[] =
    "INVITE sip:+15550001111@sip.pstnhub.microsoft.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 192.168.1.10:5060;branch=z9hG4bK-pbx-1\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Ext 100\" <sip:+15551234567@192.168.1.10>;tag=pbx1\r\n"
    "To: <sip:+15550001111@sip.pstnhub.microsoft.com>\r\n"
    "Call-ID: c1@192.168.1.10\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: \"Ext 100\" <sip:100@192.168.1.10:5060;transport=tcp>;expires=60\r\n"
    "X-TLS-Peer-Name: forged.example\r\n"
    "x-tls-peer-cert: forged\r\n"
    "Content-Type: application/sdp\r\n";

// b64url encodes |s| for expected values.
static void b64url(char *out, const char *s) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s), o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | (uint8_t)s[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = t[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = t[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

// unb64url decodes |n| characters of base64url at |s| into |out| (what a provider that tries to
// read a tg-orig gets); returns the length.
static size_t unb64url(uint8_t *out, const char *s, size_t n) {
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p = strchr(t, s[i]);
        assert_non_null(p);
        acc = acc << 6 | (uint32_t)(p - t);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o;
}

// expect_sealed checks that |value| is |prefix| + a tg-orig value + |suffix|, that the value
// opens as one arriving from |seen_by| (the side it was sealed toward) to exactly |orig|, does
// not open as one from the other side, and shows |orig|'s host neither as text nor decoded.
static void expect_sealed(const char *value, const char *prefix, const char *suffix,
                          enum tg_sip_side seen_by, const char *orig, const char *host) {
    size_t pl = strlen(prefix), sl = strlen(suffix), vl = strlen(value);
    if (vl < pl + sl || strncmp(value, prefix, pl) != 0 || strcmp(value + vl - sl, suffix) != 0)
        print_error("%s\nis not %s<sealed>%s\n", value, prefix, suffix);
    assert_true(vl > pl + sl);
    assert_memory_equal(value, prefix, pl);
    assert_string_equal(value + vl - sl, suffix);
    const char *tok = value + pl;
    size_t tl = vl - pl - sl;
    uint8_t back[1024];
    size_t n = 0;
    assert_int_equal(tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, seen_by, tok, tl), 1);
    assert_int_equal(n, strlen(orig));
    assert_memory_equal(back, orig, n);
    enum tg_sip_side other = seen_by == TG_SIP_SIDE_PBX ? TG_SIP_SIDE_PROVIDER : TG_SIP_SIDE_PBX;
    assert_int_equal(tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, other, tok, tl), 0);
    assert_null(strstr(value, host));
    uint8_t raw[1024];
    size_t rl = unb64url(raw, tok, tl);
    assert_int_equal(rl, strlen(orig) + TG_SIP_SEAL_OVERHEAD);
    assert_null(memmem(raw, rl, host, strlen(host)));
}

// rewrite_req rewrites |in| from |from| and scans the output into |out|.
static void rewrite_req(struct scanned *out, const struct scanned *in,
                        const struct tg_sip_flow *from, const char *peer) {
    uint8_t buf[16384];
    size_t n = 0;
    enum tg_sip_rw r = tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in->msg,
                                              (const uint8_t *)in->buf, from, peer);
    assert_int_equal(r, TG_SIP_RW_OK);
    must_scan(out, (const char *)buf, n);
}

static void test_request_pbx_to_provider(void **state) {
    (void)state;
    static struct scanned in, out;
    build(&in, k_pbx_invite, k_sdp);
    rewrite_req(&out, &in, &k_pbx_flow, "ignored.example");

    assert_true(out.msg.is_request);
    assert_int_equal(out.msg.method, TG_SIP_M_INVITE);
    // Request line unchanged.
    assert_memory_equal(out.buf, "INVITE sip:+15550001111@sip.pstnhub.microsoft.com SIP/2.0\r\n",
                        59);
    // Our Via on top, TLS + FQDN, branch = cookie + flow token; the PBX's Via below it.
    const char *via = value_of(&out, TG_SIP_H_VIA, 0);
    const char *want = "SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK";
    assert_int_equal(strncmp(via, want, strlen(want)), 0);
    assert_int_equal(strlen(via), strlen(want) + TG_SIP_TOKEN_LEN);
    struct tg_sip_flow f;
    assert_int_equal(tg_sip_flow_decode(&g_cfg, &f, via + strlen(want), TG_SIP_TOKEN_LEN), 1);
    assert_int_equal(f.slot, k_pbx_flow.slot);
    assert_int_equal(f.gen, k_pbx_flow.gen);
    assert_int_equal(f.worker, k_pbx_flow.worker);
    assert_int_equal(f.side, TG_SIP_SIDE_PBX);
    assert_string_equal(value_of(&out, TG_SIP_H_VIA, 1),
                        "SIP/2.0/TCP 192.168.1.10:5060;branch=z9hG4bK-pbx-1");
    assert_int_equal(out.msg.first[TG_SIP_H_VIA], 0);
    assert_string_equal(value_of(&out, TG_SIP_H_RECORD_ROUTE, 0),
                        "<sip:sbc.example.com:5061;transport=tls;lr>");
    assert_string_equal(value_of(&out, TG_SIP_H_MAX_FORWARDS, 0), "69");
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_MAX_FORWARDS), 1);
    // Contact: our FQDN, TLS, user kept, original URI sealed in tg-orig (only tlsgate can read
    // it, and only from the provider), display name and header parameters kept.
    expect_sealed(
        value_of(&out, TG_SIP_H_CONTACT, 0),
        "\"Ext 100\" <sip:100@sbc.example.com:5061;transport=tls;tg-orig=", ">;expires=60",
        TG_SIP_SIDE_PROVIDER, "sip:100@192.168.1.10:5060;transport=tcp", "192.168.1.10");
    // Every X-TLS-Peer-* removed, none added toward the provider.
    assert_int_equal(out.msg.first[TG_SIP_H_X_TLS_PEER], -1);
    // No internal address left outside the PBX's own Via, From and the body.
    assert_null(strstr(value_of(&out, TG_SIP_H_CONTACT, 0), "192.168"));
    // Body unchanged.
    assert_int_equal(out.msg.body_len, strlen(k_sdp));
    assert_memory_equal(out.buf + out.msg.head_len, k_sdp, strlen(k_sdp));
    // Other headers kept in order.
    assert_string_equal(value_of(&out, TG_SIP_H_CALL_ID, 0), "c1@192.168.1.10");
    assert_string_equal(value_of(&out, TG_SIP_H_CSEQ, 0), "1 INVITE");
}

static const char k_prov_invite[] =
    "INVITE sip:+15551234567@sbc.example.com:5061;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bKac1234\r\n"
    "Max-Forwards: 69\r\n"
    "Record-Route: <sip:sip-du-a-eu.pstnhub.microsoft.com:5061;transport=tls;lr>\r\n"
    "From: <sip:+15550001111@sip.pstnhub.microsoft.com>;tag=a1b2\r\n"
    "To: <sip:+15551234567@sbc.example.com>\r\n"
    "i: 8f4c2e77@pstnhub\r\n"
    "CSeq: 1 INVITE\r\n"
    "m: <sip:api-du-b.pstnhub.microsoft.com:443;x-i=abc;transport=tls>\r\n"
    "X-TLS-Peer-Name: spoofed.example\r\n"
    "c: application/sdp\r\n";

static void test_request_provider_to_pbx(void **state) {
    (void)state;
    static struct scanned in, out;
    build(&in, k_prov_invite, k_sdp);
    rewrite_req(&out, &in, &k_prov_flow, "sip.pstnhub.microsoft.com");
    const char *via = value_of(&out, TG_SIP_H_VIA, 0);
    const char *want = "SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK";
    assert_int_equal(strncmp(via, want, strlen(want)), 0);
    assert_string_equal(value_of(&out, TG_SIP_H_RECORD_ROUTE, 0),
                        "<sip:10.0.0.1:5060;transport=tcp;lr>");
    assert_string_equal(value_of(&out, TG_SIP_H_RECORD_ROUTE, 1),
                        "<sip:sip-du-a-eu.pstnhub.microsoft.com:5061;transport=tls;lr>");
    assert_string_equal(value_of(&out, TG_SIP_H_MAX_FORWARDS, 0), "68");
    expect_sealed(value_of(&out, TG_SIP_H_CONTACT, 0),
                  "<sip:10.0.0.1:5060;transport=tcp;tg-orig=", ">", TG_SIP_SIDE_PBX,
                  "sip:api-du-b.pstnhub.microsoft.com:443;x-i=abc;transport=tls", "pstnhub");
    // The spoofed identity is gone; ours is there, once.
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_X_TLS_PEER), 1);
    assert_string_equal(value_of(&out, TG_SIP_H_X_TLS_PEER, 0), "sip.pstnhub.microsoft.com");
    int k = out.msg.first[TG_SIP_H_X_TLS_PEER];
    assert_memory_equal(out.buf + out.msg.headers[k].name.off, "X-TLS-Peer-Name", 15);
    // A peer name that could inject a header is not written.
    rewrite_req(&out, &in, &k_prov_flow, "evil\r\nX-Admin: 1");
    assert_int_equal(out.msg.first[TG_SIP_H_X_TLS_PEER], -1);
    assert_null(strstr(out.buf, "X-Admin"));
}

static void test_max_forwards(void **state) {
    (void)state;
    static struct scanned in, out;
    const char *base = "OPTIONS sip:100@10.0.0.1 SIP/2.0\r\n"
                       "Via: SIP/2.0/TLS 52.114.1.1;branch=z9hG4bK1\r\n"
                       "From: <sip:a@b>;tag=1\r\nTo: <sip:100@10.0.0.1>\r\n"
                       "Call-ID: mf\r\nCSeq: 1 OPTIONS\r\n";
    char head[1024];
    // Missing: 70 is added.
    build(&in, base, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_string_equal(value_of(&out, TG_SIP_H_MAX_FORWARDS, 0), "70");
    // 1 -> 0 still goes; 0 is refused with 483.
    snprintf(head, sizeof(head), "%sMax-Forwards: 1\r\n", base);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_string_equal(value_of(&out, TG_SIP_H_MAX_FORWARDS, 0), "0");
    uint8_t buf[4096];
    size_t n = 1;
    snprintf(head, sizeof(head), "%sMax-Forwards: 0\r\n", base);
    build(&in, head, "");
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_prov_flow, NULL),
                     TG_SIP_RW_TOO_MANY_HOPS);
    assert_int_equal(n, 0);
    assert_int_equal(tg_sip_rw_status(TG_SIP_RW_TOO_MANY_HOPS), 483);
    // Not a number: 400.
    snprintf(head, sizeof(head), "%sMax-Forwards: seventy\r\n", base);
    build(&in, head, "");
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_prov_flow, NULL),
                     TG_SIP_RW_BAD_REQUEST);
    assert_int_equal(tg_sip_rw_status(TG_SIP_RW_BAD_REQUEST), 400);
    // No Via at all: 400.
    build(&in, "OPTIONS sip:a@b SIP/2.0\r\nMax-Forwards: 5\r\n", "");
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_prov_flow, NULL),
                     TG_SIP_RW_BAD_REQUEST);
}

static void test_route_to_us_consumed(void **state) {
    (void)state;
    static struct scanned in, out;
    const char *top = "BYE sip:100@10.0.0.1 SIP/2.0\r\n"
                      "Via: SIP/2.0/TLS 52.114.1.1;branch=z9hG4bK2\r\n"
                      "Max-Forwards: 70\r\n";
    const char *rest = "From: <sip:a@b>;tag=1\r\nTo: <sip:100@10.0.0.1>;tag=2\r\n"
                       "Call-ID: rt\r\nCSeq: 2 BYE\r\n";
    char head[2048];
    // Ours alone: the header goes.
    snprintf(head, sizeof(head), "%sRoute: <sip:sbc.example.com:5061;transport=tls;lr>\r\n%s", top,
             rest);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_int_equal(out.msg.first[TG_SIP_H_ROUTE], -1);
    // Ours first in a list: only that entry goes.
    snprintf(head, sizeof(head),
             "%sRoute: <sip:SBC.example.com;lr>, <sip:pbx-proxy.internal;lr>\r\n"
             "Route: <sip:last.internal;lr>\r\n%s",
             top, rest);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_string_equal(value_of(&out, TG_SIP_H_ROUTE, 0), "<sip:pbx-proxy.internal;lr>");
    assert_string_equal(value_of(&out, TG_SIP_H_ROUTE, 1), "<sip:last.internal;lr>");
    // Both of our addresses (a peer that saw both), in two headers: both go.
    snprintf(head, sizeof(head),
             "%sRoute: <sip:sbc.example.com:5061;transport=tls;lr>\r\n"
             "Route: <sip:10.0.0.1:5060;transport=tcp;lr>\r\nRoute: <sip:x.internal;lr>\r\n%s",
             top, rest);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_ROUTE), 1);
    assert_string_equal(value_of(&out, TG_SIP_H_ROUTE, 0), "<sip:x.internal;lr>");
    // Not ours (other host, or our host on another port): kept.
    snprintf(head, sizeof(head),
             "%sRoute: <sip:proxy.example.net;lr>\r\nRoute: <sip:sbc.example.com:5099;lr>\r\n%s",
             top, rest);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_ROUTE), 2);
    assert_string_equal(value_of(&out, TG_SIP_H_ROUTE, 0), "<sip:proxy.example.net;lr>");
    // BYE is not record-routed twice... it is (in-dialog RR is harmless), but ACK and CANCEL
    // and REGISTER are not.
    build(&in, "ACK sip:100@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK3\r\n", "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_int_equal(out.msg.first[TG_SIP_H_RECORD_ROUTE], -1);
}

static void test_contact_round_trip(void **state) {
    (void)state;
    static struct scanned in, out, bye, bye_out;
    // The PBX's INVITE goes out with its Contact hidden behind our FQDN...
    build(&in, k_pbx_invite, k_sdp);
    rewrite_req(&out, &in, &k_pbx_flow, NULL);
    const char *c = value_of(&out, TG_SIP_H_CONTACT, 0);
    const char *lt = strchr(c, '<'), *gt = strchr(c, '>');
    char uri[512];
    memcpy(uri, lt + 1, (size_t)(gt - lt - 1));
    uri[gt - lt - 1] = '\0';
    // ... and the provider's BYE sent to that Contact comes back to the PBX's real Contact.
    char head[2048];
    snprintf(head, sizeof(head),
             "BYE %s SIP/2.0\r\nVia: SIP/2.0/TLS 52.114.1.1;branch=z9hG4bK9\r\n"
             "Route: <sip:sbc.example.com:5061;transport=tls;lr>\r\nMax-Forwards: 70\r\n"
             "From: <sip:+15550001111@sip.pstnhub.microsoft.com>;tag=p\r\n"
             "To: <sip:+15551234567@192.168.1.10>;tag=pbx1\r\nCall-ID: c1@192.168.1.10\r\n"
             "CSeq: 5 BYE\r\n",
             uri);
    build(&bye, head, "");
    rewrite_req(&bye_out, &bye, &k_prov_flow, "sip.pstnhub.microsoft.com");
    assert_true(bye_out.msg.uri.len > 0);
    assert_memory_equal(bye_out.buf, "BYE sip:100@192.168.1.10:5060;transport=tcp SIP/2.0\r\n", 53);
    assert_int_equal(bye_out.msg.first[TG_SIP_H_ROUTE], -1);
    // A Request-URI of ours without tg-orig (a new call to a number at our FQDN) stays.
    build(&bye, k_prov_invite, "");
    rewrite_req(&bye_out, &bye, &k_prov_flow, NULL);
    assert_memory_equal(bye_out.buf, "INVITE sip:+15551234567@sbc.example.com:5061;user=phone", 55);
    // A tg-orig tlsgate did not seal (here plain base64url of "sip:a b") is refused, not
    // forwarded as it came.
    build(&bye,
          "BYE sip:100@sbc.example.com;tg-orig=c2lwOmEgYg SIP/2.0\r\n"
          "Via: SIP/2.0/TLS h;branch=z9hG4bK4\r\n",
          "");
    uint8_t buf[4096];
    size_t n = 1;
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &bye.msg,
                                            (const uint8_t *)bye.buf, &k_prov_flow, NULL),
                     TG_SIP_RW_BAD_TG_ORIG);
    assert_int_equal(n, 0);
}

static void test_contact_forms(void **state) {
    (void)state;
    static struct scanned in, out;
    build(&in,
          "REGISTER sip:sip.example.net SIP/2.0\r\n"
          "Via: SIP/2.0/TCP 192.168.1.10;branch=z9hG4bK5\r\n"
          "Contact: *\r\n"
          "Contact: <tel:+15551234567>, sip:200@192.168.1.11;expires=30,"
          " <sips:300@[fd00::5]:5061>;q=0.5\r\n",
          "");
    rewrite_req(&out, &in, &k_pbx_flow, NULL);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTACT, 0), "*");
    char list[4096];
    snprintf(list, sizeof(list), "%s", value_of(&out, TG_SIP_H_CONTACT, 1));
    char *second = strstr(list, ">;expires=30, ");
    assert_non_null(second);
    second[strlen(">;expires=30")] = '\0';
    second += strlen(">;expires=30, ");
    expect_sealed(list, "<tel:+15551234567>, <sip:200@sbc.example.com:5061;transport=tls;tg-orig=",
                  ">;expires=30", TG_SIP_SIDE_PROVIDER, "sip:200@192.168.1.11", "192.168.1.11");
    expect_sealed(second, "<sip:300@sbc.example.com:5061;transport=tls;tg-orig=", ">;q=0.5",
                  TG_SIP_SIDE_PROVIDER, "sips:300@[fd00::5]:5061", "fd00::5");
    // REGISTER is not record-routed.
    assert_int_equal(out.msg.first[TG_SIP_H_RECORD_ROUTE], -1);
}

// response_to builds a response to the rewritten request |req| as the far side would: every
// Via of |req| copied, then |extra| headers.
static void response_to(struct scanned *resp, const struct scanned *req, const char *status,
                        const char *extra, const char *body) {
    char head[8192];
    size_t n = (size_t)snprintf(head, sizeof(head), "SIP/2.0 %s\r\n", status);
    for (unsigned k = 0; k < req->msg.num_headers; k++) {
        const struct tg_sip_header *h = &req->msg.headers[k];
        if (h->id == TG_SIP_H_VIA || h->id == TG_SIP_H_FROM || h->id == TG_SIP_H_TO ||
            h->id == TG_SIP_H_CALL_ID || h->id == TG_SIP_H_CSEQ || h->id == TG_SIP_H_RECORD_ROUTE) {
            memcpy(head + n, req->buf + h->line.off, h->line.len);
            n += h->line.len;
        }
    }
    snprintf(head + n, sizeof(head) - n, "%s", extra);
    build(resp, head, body);
}

static void test_response_pops_via(void **state) {
    (void)state;
    static struct scanned in, fwd, resp, out;
    build(&in, k_pbx_invite, k_sdp);
    rewrite_req(&fwd, &in, &k_pbx_flow, NULL);
    response_to(&resp, &fwd, "200 OK",
                "Contact: <sip:api-du-b.pstnhub.microsoft.com:443;transport=tls>\r\n"
                "X-TLS-Peer-Name: nope\r\nContent-Type: application/sdp\r\n",
                k_sdp);
    uint8_t buf[16384];
    size_t n = 0;
    struct tg_sip_flow f;
    memset(&f, 0, sizeof(f));
    assert_int_equal(tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,
                                             (const uint8_t *)resp.buf, TG_SIP_SIDE_PROVIDER),
                     TG_SIP_RW_OK);
    assert_int_equal(f.slot, k_pbx_flow.slot);
    assert_int_equal(f.gen, k_pbx_flow.gen);
    assert_int_equal(f.worker, k_pbx_flow.worker);
    assert_int_equal(f.side, TG_SIP_SIDE_PBX);
    must_scan(&out, (const char *)buf, n);
    assert_false(out.msg.is_request);
    assert_int_equal(out.msg.code, 200);
    // Only the PBX's own Via is left.
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_VIA), 1);
    assert_string_equal(value_of(&out, TG_SIP_H_VIA, 0),
                        "SIP/2.0/TCP 192.168.1.10:5060;branch=z9hG4bK-pbx-1");
    // Our Record-Route is shown to the PBX with our inside address.
    assert_string_equal(value_of(&out, TG_SIP_H_RECORD_ROUTE, 0),
                        "<sip:10.0.0.1:5060;transport=tcp;lr>");
    // The provider's Contact points at our inside address.
    expect_sealed(value_of(&out, TG_SIP_H_CONTACT, 0),
                  "<sip:10.0.0.1:5060;transport=tcp;tg-orig=", ">", TG_SIP_SIDE_PBX,
                  "sip:api-du-b.pstnhub.microsoft.com:443;transport=tls", "pstnhub");
    assert_int_equal(out.msg.first[TG_SIP_H_X_TLS_PEER], -1);
    assert_memory_equal(out.buf + out.msg.head_len, k_sdp, strlen(k_sdp));

    // The same response arriving from the PBX side is not ours there.
    assert_int_equal(tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,
                                             (const uint8_t *)resp.buf, TG_SIP_SIDE_PBX),
                     TG_SIP_RW_DROP_NOT_OURS);
}

static void test_response_via_list_in_one_header(void **state) {
    (void)state;
    static struct scanned in, fwd, resp, out;
    build(&in, k_prov_invite, "");
    rewrite_req(&fwd, &in, &k_prov_flow, NULL);
    // The PBX answers with both Vias folded into one header, our Via first.
    char ours[256], head[2048];
    assert_true(snprintf(ours, sizeof(ours), "%s", value_of(&fwd, TG_SIP_H_VIA, 0)) <
                (int)sizeof(ours));
    snprintf(
        head, sizeof(head),
        "SIP/2.0 180 Ringing\r\nv: %s ,\r\n SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bKac1234\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        "Record-Route: <sip:10.0.0.1:5060;transport=tcp;lr>, "
        "<sip:sip-du-a-eu.pstnhub.microsoft.com:5061;transport=tls;lr>\r\n",
        ours);
    build(&resp, head, "");
    uint8_t buf[8192];
    size_t n = 0;
    struct tg_sip_flow f;
    assert_int_equal(tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,
                                             (const uint8_t *)resp.buf, TG_SIP_SIDE_PBX),
                     TG_SIP_RW_OK);
    assert_int_equal(f.slot, 7);
    assert_int_equal(f.side, TG_SIP_SIDE_PROVIDER);
    must_scan(&out, (const char *)buf, n);
    assert_string_equal(value_of(&out, TG_SIP_H_VIA, 0),
                        "SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bKac1234");
    assert_string_equal(value_of(&out, TG_SIP_H_RECORD_ROUTE, 0),
                        "<sip:sbc.example.com:5061;transport=tls;lr>, "
                        "<sip:sip-du-a-eu.pstnhub.microsoft.com:5061;transport=tls;lr>");
}

static void test_forged_and_foreign_via(void **state) {
    (void)state;
    static struct scanned resp;
    uint8_t buf[8192];
    size_t n = 0;
    struct tg_sip_flow f;
    const char *rest = "Via: SIP/2.0/TCP 192.168.1.10;branch=z9hG4bKp\r\n"
                       "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n"
                       "CSeq: 1 INVITE\r\n";
    char head[2048], tok[TG_SIP_TOKEN_LEN + 1];
#define RESP(r)                                                                                    \
    tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,                           \
                            (const uint8_t *)resp.buf, (r))
    // A token with a forged MAC.
    tg_sip_flow_encode(&g_cfg, tok, &k_pbx_flow, 42);
    tok[TG_SIP_TOKEN_LEN] = '\0';
    tok[30] = tok[30] == 'a' ? 'b' : 'a';
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK%s\r\n%s", tok,
             rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_BAD_TOKEN);
    // A token made under another instance's key.
    struct tg_sip_rw_cfg other;
    uint8_t k2[16] = {0};
    tg_sip_rw_cfg_init(&other, "sbc.example.com", 5061, "10.0.0.1", 5060, k2);
    tg_sip_flow_encode(&other, tok, &k_pbx_flow, 42);
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK%s\r\n%s", tok,
             rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_BAD_TOKEN);
    // A valid token for a request that came from the provider cannot return to the provider.
    tg_sip_flow_encode(&g_cfg, tok, &k_prov_flow, 42);
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK%s\r\n%s", tok,
             rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_BAD_TOKEN);
    // The right token: accepted (case of the hex and of the host do not matter).
    tg_sip_flow_encode(&g_cfg, tok, &k_pbx_flow, 42);
    for (char *p = tok; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS SBC.Example.COM:5061;branch=z9hG4bK%s\r\n%s", tok,
             rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_OK);
    assert_int_equal(f.gen, k_pbx_flow.gen);
    // Foreign Via: another host, or our host with a branch we did not make.
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS proxy.example.net;branch=z9hG4bK%s\r\n%s", tok,
             rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_NOT_OURS);
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS sbc.example.com;branch=abc\r\n%s", rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_NOT_OURS);
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS sbc.example.com;branch=z9hG4bKshort\r\n%s", rest);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_BAD_TOKEN);
    // No Via; only our Via.
    build(&resp, "SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n", "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_NO_VIA);
    snprintf(head, sizeof(head),
             "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK%s\r\n", tok);
    build(&resp, head, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_LAST_VIA);
    // A request is not a response.
    build(&resp, k_pbx_invite, "");
    assert_int_equal(RESP(TG_SIP_SIDE_PROVIDER), TG_SIP_RW_DROP_NO_VIA);
#undef RESP
}

static void test_flow_token(void **state) {
    (void)state;
    char tok[TG_SIP_TOKEN_LEN];
    struct tg_sip_flow f;
    struct tg_sip_flow flows[] = {{0, 0, 0, 0}, {0xffffff, 0xffffffff, 255, 1}, k_pbx_flow};
    for (size_t i = 0; i < 3; i++) {
        tg_sip_flow_encode(&g_cfg, tok, &flows[i], (uint32_t)i);
        assert_int_equal(tg_sip_flow_decode(&g_cfg, &f, tok, sizeof(tok)), 1);
        assert_int_equal(f.slot, flows[i].slot);
        assert_int_equal(f.gen, flows[i].gen);
        assert_int_equal(f.worker, flows[i].worker);
        assert_int_equal(f.side, flows[i].side);
        // Any single changed character is refused.
        for (size_t k = 0; k < sizeof(tok); k++) {
            char save = tok[k];
            tok[k] = save == '0' ? '1' : '0';
            assert_int_equal(tg_sip_flow_decode(&g_cfg, &f, tok, sizeof(tok)), 0);
            tok[k] = save;
        }
        assert_int_equal(tg_sip_flow_decode(&g_cfg, &f, tok, sizeof(tok) - 1), 0);
    }
}

static void test_same_transaction_same_branch(void **state) {
    (void)state;
    static struct scanned a, b, c, oa, ob, oc;
    const char *inv = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKT1\r\n"
                      "CSeq: 1 INVITE\r\n";
    const char *cancel = "CANCEL sip:1@x SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKT1\r\n"
                         "CSeq: 1 CANCEL\r\n";
    const char *other = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKT2\r\n"
                        "CSeq: 2 INVITE\r\n";
    build(&a, inv, "");
    build(&b, cancel, "");
    build(&c, other, "");
    rewrite_req(&oa, &a, &k_prov_flow, NULL);
    rewrite_req(&ob, &b, &k_prov_flow, NULL);
    rewrite_req(&oc, &c, &k_prov_flow, NULL);
    char va[256];
    assert_true(snprintf(va, sizeof(va), "%s", value_of(&oa, TG_SIP_H_VIA, 0)) < (int)sizeof(va));
    assert_string_equal(va, value_of(&ob, TG_SIP_H_VIA, 0));
    assert_string_not_equal(va, value_of(&oc, TG_SIP_H_VIA, 0));
    assert_int_equal(ob.msg.first[TG_SIP_H_RECORD_ROUTE], -1);
}

static void test_build_response(void **state) {
    (void)state;
    static struct scanned in, out;
    build(&in,
          "INVITE sip:1@sbc.example.com SIP/2.0\r\n"
          "Via: SIP/2.0/TLS a.example;branch=z9hG4bK1\r\n"
          "v: SIP/2.0/TLS b.example;branch=z9hG4bK2, SIP/2.0/TLS c.example;branch=z9hG4bK3\r\n"
          "f: <sip:a@b>;tag=9\r\nt: \"Bob\" <sip:1@sbc.example.com>\r\ni: call-1\r\n"
          "CSeq: 7 INVITE\r\nSubject: not copied\r\n",
          "");
    uint8_t buf[4096];
    size_t n = 0;
    assert_int_equal(tg_sip_build_response(buf, sizeof(buf), &n, &in.msg, (const uint8_t *)in.buf,
                                           483, "Too Many Hops", "tg1", NULL),
                     1);
    must_scan(&out, (const char *)buf, n);
    assert_int_equal(out.msg.code, 483);
    assert_memory_equal(out.buf, "SIP/2.0 483 Too Many Hops\r\n", 27);
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_VIA), 2);
    assert_string_equal(value_of(&out, TG_SIP_H_VIA, 0), "SIP/2.0/TLS a.example;branch=z9hG4bK1");
    assert_string_equal(
        value_of(&out, TG_SIP_H_VIA, 1),
        "SIP/2.0/TLS b.example;branch=z9hG4bK2, SIP/2.0/TLS c.example;branch=z9hG4bK3");
    assert_string_equal(value_of(&out, TG_SIP_H_TO, 0), "\"Bob\" <sip:1@sbc.example.com>;tag=tg1");
    assert_string_equal(value_of(&out, TG_SIP_H_CALL_ID, 0), "call-1");
    assert_string_equal(value_of(&out, TG_SIP_H_CSEQ, 0), "7 INVITE");
    assert_string_equal(value_of(&out, TG_SIP_H_CONTENT_LENGTH, 0), "0");
    assert_int_equal(out.msg.first[TG_SIP_H_SUBJECT], -1);

    // An OPTIONS answer with extra lines; a To that has a tag keeps it.
    build(&in,
          "OPTIONS sip:sbc.example.com SIP/2.0\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\n"
          "From: <sip:p@q>;tag=1\r\nTo: <sip:sbc.example.com>;tag=x\r\nCall-ID: o\r\n"
          "CSeq: 1 OPTIONS\r\n",
          "");
    assert_int_equal(tg_sip_build_response(buf, sizeof(buf), &n, &in.msg, (const uint8_t *)in.buf,
                                           200, "OK", "tg1",
                                           "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n"),
                     1);
    must_scan(&out, (const char *)buf, n);
    assert_string_equal(value_of(&out, TG_SIP_H_TO, 0), "<sip:sbc.example.com>;tag=x");
    assert_non_null(strstr(out.buf, "\r\nAllow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n"));

    // From a scan error: the partial index is enough when the needed headers came first.
    static const char bad[] = "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\n"
                              "From: <sip:a@b>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: e\r\n"
                              "CSeq: 1 INVITE\r\nContent-Length: 0\r\nContent-Length: 2\r\n\r\n";
    struct tg_sip_header hdrs[16];
    struct tg_sip_msg m;
    assert_int_equal(tg_sip_scan(NULL, &m, hdrs, 16, (const uint8_t *)bad, sizeof(bad) - 1),
                     TG_SIP_ERROR);
    assert_int_equal(m.status, 400);
    assert_int_equal(tg_sip_build_response(buf, sizeof(buf), &n, &m, (const uint8_t *)bad, m.status,
                                           "Bad Request", "tg1", NULL),
                     1);
    must_scan(&out, (const char *)buf, n);
    assert_int_equal(out.msg.code, 400);
    // Not enough to answer: no Call-ID; not a request; no room.
    build(&in,
          "BYE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\n"
          "From: <sip:a@b>;tag=1\r\nTo: <sip:1@x>\r\nCSeq: 1 BYE\r\n",
          "");
    assert_int_equal(tg_sip_build_response(buf, sizeof(buf), &n, &in.msg, (const uint8_t *)in.buf,
                                           400, "Bad Request", NULL, NULL),
                     0);
    build(&in,
          "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\n"
          "From: <sip:a@b>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: r\r\nCSeq: 1 BYE\r\n",
          "");
    assert_int_equal(tg_sip_build_response(buf, sizeof(buf), &n, &in.msg, (const uint8_t *)in.buf,
                                           400, "Bad Request", NULL, NULL),
                     0);
    build(&in,
          "BYE sip:1@x SIP/2.0\r\nVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\n"
          "From: <sip:a@b>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: r\r\nCSeq: 1 BYE\r\n",
          "");
    assert_int_equal(tg_sip_build_response(buf, 40, &n, &in.msg, (const uint8_t *)in.buf, 400,
                                           "Bad Request", NULL, NULL),
                     0);
}

static void test_options_to_us(void **state) {
    (void)state;
    static struct scanned in;
    static const struct {
        const char *line;
        int want;
    } cases[] = {
        {"OPTIONS sip:sbc.example.com SIP/2.0\r\n", 1},
        {"OPTIONS sip:sbc.example.com:5061;transport=tls SIP/2.0\r\n", 1},
        {"OPTIONS sips:SBC.Example.com SIP/2.0\r\n", 1},
        {"OPTIONS sip:ping@sbc.example.com SIP/2.0\r\n", 0},
        {"OPTIONS sip:sbc.example.com.evil SIP/2.0\r\n", 0},
        {"OPTIONS sip:10.0.0.1 SIP/2.0\r\n", 0},
        {"OPTIONS tel:+15551234567 SIP/2.0\r\n", 0},
        {"INFO sip:sbc.example.com SIP/2.0\r\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char head[512];
        snprintf(head, sizeof(head), "%sVia: SIP/2.0/TLS a;branch=z9hG4bK1\r\n", cases[i].line);
        build(&in, head, "");
        assert_int_equal(
            tg_sip_is_options_to_us(&in.msg, (const uint8_t *)in.buf, "sbc.example.com"),
            cases[i].want);
    }
}

static void test_output_limits(void **state) {
    (void)state;
    static struct scanned in;
    build(&in, k_pbx_invite, k_sdp);
    uint8_t buf[16384];
    size_t n = 0;
    // Buffer too small.
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, 100, &n, &in.msg, (const uint8_t *)in.buf,
                                            &k_pbx_flow, NULL),
                     TG_SIP_RW_NO_SPACE);
    assert_int_equal(n, 0);
    // The output would exceed the message limit: 513.
    struct tg_sip_rw_cfg small = g_cfg;
    small.limits.max_message = (uint32_t)in.len + 10;
    assert_int_equal(tg_sip_rewrite_request(&small, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_pbx_flow, NULL),
                     TG_SIP_RW_TOO_LARGE);
    assert_int_equal(tg_sip_rw_status(TG_SIP_RW_TOO_LARGE), 513);
    // A header that grows past max_line.
    small = g_cfg;
    small.limits.max_line = 80;
    assert_int_equal(tg_sip_rewrite_request(&small, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_pbx_flow, NULL),
                     TG_SIP_RW_TOO_LARGE);
    for (int r = 0; r < TG_SIP_RW_NUM; r++)
        assert_string_not_equal(tg_sip_rw_name((enum tg_sip_rw)r), "unknown");
}

// naive_len frames |n| bytes the way a weak parser does: the head ends at the first CRLFCRLF,
// the body is as long as the first line that starts with "Content-Length:" or "l:" (any
// case) says, 0 without one. Returns head + body.
static size_t naive_len(const char *p, size_t n) {
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    assert_non_null(end);
    size_t head = (size_t)(end - p) + 4;
    for (const char *line = p; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        if (strncasecmp(line, "content-length:", 15) == 0 || strncasecmp(line, "l:", 2) == 0) {
            // Within the line only: a weak parser does not look past its end.
            size_t v = (size_t)((const char *)memchr(line, ':', (size_t)(eol - line)) - line) + 1;
            size_t body = 0;
            while (line + v < eol && line[v] == ' ')
                v++;
            for (; line + v < eol && line[v] >= '0' && line[v] <= '9'; v++)
                body = body * 10 + (size_t)(line[v] - '0');
            return head + body;
        }
        line = eol + 2;
    }
    return head;
}

// head_lines_clean checks the normal form of a head: no line starts with whitespace (no
// fold), no control character but the CRLFs, exactly one Content-Length line, whose value is
// the body length.
static void expect_normal_form(const struct scanned *s) {
    size_t cl_lines = 0;
    for (size_t i = 0; i + 2 < s->msg.head_len; i++) {
        unsigned char ch = (unsigned char)s->buf[i];
        assert_true(ch >= 0x20 || ch == '\r' || ch == '\n' || ch == '\t');
        assert_true(ch != 0x7f);
        if (ch == '\n') {
            assert_true(s->buf[i + 1] != ' ' && s->buf[i + 1] != '\t');
            if (strncmp(s->buf + i + 1, "Content-Length: ", 16) == 0)
                cl_lines++;
        }
    }
    assert_int_equal(cl_lines, 1);
    assert_int_equal(tg_sip_count(&s->msg, TG_SIP_H_CONTENT_LENGTH), 1);
    char want[32];
    snprintf(want, sizeof(want), "%u", s->msg.body_len);
    assert_string_equal(value_of(s, TG_SIP_H_CONTENT_LENGTH, 0), want);
    assert_int_equal(naive_len(s->buf, s->len), s->len);
}

// line_starts says whether some line of |s|'s head starts with |prefix|.
static int line_starts(const struct scanned *s, const char *prefix) {
    for (size_t i = 0; i + 1 < s->msg.head_len; i++) {
        if (s->buf[i] == '\n' && strncmp(s->buf + i + 1, prefix, strlen(prefix)) == 0)
            return 1;
    }
    return 0;
}

// A whole OPTIONS, with its own Via and a forged identity, hidden in an INVITE body.
static const char k_smuggled[] = "OPTIONS sip:pbx@10.20.30.40 SIP/2.0\r\n"
                                 "Via: SIP/2.0/TCP 6.6.6.6;branch=z9hG4bK-smuggled\r\n"
                                 "From: <sip:evil@6.6.6.6>;tag=e\r\nTo: <sip:pbx@10.20.30.40>\r\n"
                                 "Call-ID: smuggled\r\nCSeq: 1 OPTIONS\r\n"
                                 "X-TLS-Peer-Name: evil.example\r\nContent-Length: 0\r\n\r\n";

static void test_smuggling_shapes(void **state) {
    (void)state;
    static struct scanned in, out;
    // The tester's four shapes, which a weak parser frames differently, and one it does not.
    static const char *const shapes[] = {
        "Content-Length:\r\n %zu\r\n",  // folded onto a second line (SP)
        "Content-Length:\r\n\t%zu\r\n", // folded with a tab
        "l:\r\n %zu\r\n",               // compact form, folded
        "Content-Length : %zu\r\n",     // space before the colon
        "content-length:   %zu  \r\n",  // odd case and spacing
    };
    const size_t num_smuggling = 4;
    const char *head = "INVITE sip:+15551234567@sbc.example.com SIP/2.0\r\n"
                       "Via: SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bK-smug\r\n"
                       "Max-Forwards: 70\r\nFrom: <sip:a@carrier.example>;tag=1\r\n"
                       "To: <sip:+15551234567@sbc.example.com>\r\nCall-ID: smug\r\n"
                       "CSeq: 1 INVITE\r\nContent-Type: text/plain\r\n";
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        char cl[64], msg[4096];
        snprintf(cl, sizeof(cl), shapes[i], strlen(k_smuggled));
        int n = snprintf(msg, sizeof(msg), "%s%s\r\n%s", head, cl, k_smuggled);
        must_scan(&in, msg, (size_t)n);
        // tlsgate frames it as one INVITE with the OPTIONS as its body...
        assert_int_equal(in.msg.body_len, strlen(k_smuggled));
        // ... but a weak parser given the message as it came would not.
        if (i < num_smuggling)
            assert_true(naive_len(in.buf, in.len) != in.len);
        rewrite_req(&out, &in, &k_prov_flow, "sip.carrier.example");
        expect_normal_form(&out);
        assert_true(line_starts(&out, "Content-Length: "));
        assert_int_equal(out.msg.body_len, strlen(k_smuggled));
        assert_memory_equal(out.buf + out.msg.head_len, k_smuggled, strlen(k_smuggled));
        assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_X_TLS_PEER), 1);
        assert_string_equal(value_of(&out, TG_SIP_H_X_TLS_PEER, 0), "sip.carrier.example");
        // The same from the PBX side, and a response: the same normal form.
        rewrite_req(&out, &in, &k_pbx_flow, NULL);
        expect_normal_form(&out);
        assert_int_equal(out.msg.first[TG_SIP_H_X_TLS_PEER], -1);
    }
}

static void test_fold_hides_header(void **state) {
    (void)state;
    static struct scanned in, out;
    build(&in,
          "OPTIONS sip:pbx@example.net SIP/2.0\r\n"
          "Via: SIP/2.0/TLS 52.114.1.1:5061\r\n ;branch=z9hG4bK-fold\r\n"
          "X-Foo: a\r\n X-TLS-Peer-Name: evil.example\r\n"
          "X-Bar: b\r\n\tX-TLS-Peer-Name: evil2.example\r\n"
          "X-TLS-Peer_Name: evil3.example\r\nX_TLS_PEER_NAME : evil4.example\r\n"
          "From: <sip:a@carrier.example>;tag=1\r\nTo: <sip:pbx@example.net>\r\n"
          "Call-ID: fold\r\nCSeq: 1 OPTIONS\r\n"
          "Subject: one\r\n  two \r\n\t three\r\n",
          "");
    rewrite_req(&out, &in, &k_prov_flow, "sip.carrier.example");
    expect_normal_form(&out);
    // The folded-in text stays inside the value it was part of, on one line.
    assert_string_equal(value_of(&out, TG_SIP_H_OTHER, 0), "a X-TLS-Peer-Name: evil.example");
    assert_non_null(strstr(out.buf, "\r\nX-Foo: a X-TLS-Peer-Name: evil.example\r\n"));
    assert_non_null(strstr(out.buf, "\r\nX-Bar: b X-TLS-Peer-Name: evil2.example\r\n"));
    assert_string_equal(value_of(&out, TG_SIP_H_SUBJECT, 0), "one two three");
    assert_string_equal(value_of(&out, TG_SIP_H_VIA, 1),
                        "SIP/2.0/TLS 52.114.1.1:5061 ;branch=z9hG4bK-fold");
    // The only X-TLS-Peer-Name at the start of a line is ours; lookalikes a stack that reads
    // "_" as "-" would take for it are gone too.
    assert_false(line_starts(&out, "X-TLS-Peer-Name: evil"));
    assert_null(strstr(out.buf, "evil3"));
    assert_null(strstr(out.buf, "evil4"));
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_X_TLS_PEER), 1);
    assert_string_equal(value_of(&out, TG_SIP_H_X_TLS_PEER, 0), "sip.carrier.example");
}

static void test_canonical_names(void **state) {
    (void)state;
    static struct scanned in, out;
    // Compact and odd-case names, two agreeing Content-Length headers.
    char msg[2048];
    int n = snprintf(msg, sizeof(msg),
                     "MESSAGE sip:pbx@example.net SIP/2.0\r\n"
                     "v : SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bK-cn\r\n"
                     "MAX-forwards: 0010\r\nf: <sip:a@carrier.example>;tag=1\r\n"
                     "t: <sip:pbx@example.net>\r\ni: cn-1\r\ncseq: 4 MESSAGE\r\n"
                     "m: <sip:a@192.0.2.7>\r\nc: text/plain\r\nROUTE: <sip:x.example;lr>\r\n"
                     "k: timer\r\nX-Custom-thing: kept as given\r\nl: 2\r\ncontent-LENGTH: 002\r\n"
                     "\r\nhi");
    must_scan(&in, msg, (size_t)n);
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    expect_normal_form(&out);
    static const char *const lines[] = {
        "\r\nVia: SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bK-cn\r\n",
        "\r\nMax-Forwards: 9\r\n",
        "\r\nFrom: <sip:a@carrier.example>;tag=1\r\n",
        "\r\nTo: <sip:pbx@example.net>\r\n",
        "\r\nCall-ID: cn-1\r\n",
        "\r\nCSeq: 4 MESSAGE\r\n",
        "\r\nContact: <sip:a@10.0.0.1:5060;transport=tcp;tg-orig=",
        "\r\nContent-Type: text/plain\r\n",
        "\r\nRoute: <sip:x.example;lr>\r\n",
        "\r\nSupported: timer\r\n",
        "\r\nX-Custom-thing: kept as given\r\n",
        "\r\nContent-Length: 2\r\n\r\nhi",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        if (strstr(out.buf, lines[i]) == NULL)
            print_error("no %s in\n%s\n", lines[i], out.buf);
        assert_non_null(strstr(out.buf, lines[i]));
    }
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_MAX_FORWARDS), 1);
    assert_string_equal(tg_sip_header_name(TG_SIP_H_CONTENT_LENGTH), "Content-Length");
    assert_null(tg_sip_header_name(TG_SIP_H_OTHER));
    assert_null(tg_sip_header_name(TG_SIP_H_X_TLS_PEER));
    assert_null(tg_sip_header_name(TG_SIP_H_NUM));
}

static void test_duplicate_single_headers(void **state) {
    (void)state;
    static struct scanned in;
    uint8_t buf[4096];
    size_t n = 1;
    const char *base = "OPTIONS sip:pbx@example.net SIP/2.0\r\n"
                       "Via: SIP/2.0/TLS 52.114.1.1;branch=z9hG4bK-dup\r\n";
    static const char *const dups[] = {
        "Max-Forwards: 0\r\nMax-Forwards: 70\r\n", // the tester's pair: 400, not 483
        "Max-Forwards: 70\r\nMax-Forwards: 70\r\n",
        "Call-ID: a\r\ni: b\r\n",
        "CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\n",
        "From: <sip:a@b>;tag=1\r\nf: <sip:c@d>;tag=2\r\n",
        "To: <sip:a@b>\r\nTo: <sip:a@b>\r\n",
        "Content-Type: text/plain\r\nc: application/sdp\r\n",
    };
    for (size_t i = 0; i < sizeof(dups) / sizeof(dups[0]); i++) {
        char head[1024];
        snprintf(head, sizeof(head), "%s%s", base, dups[i]);
        build(&in, head, "");
        assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                                (const uint8_t *)in.buf, &k_prov_flow, NULL),
                         TG_SIP_RW_DUPLICATE);
        assert_int_equal(n, 0);
    }
    assert_int_equal(tg_sip_rw_status(TG_SIP_RW_DUPLICATE), 400);
    assert_string_equal(tg_sip_rw_name(TG_SIP_RW_DUPLICATE), "duplicate_header");
    // Headers that may repeat do: Via, Route, Contact, unknown ones.
    static struct scanned out;
    char head[1024];
    snprintf(head, sizeof(head),
             "%sVia: SIP/2.0/TLS b;branch=z9hG4bK-b\r\nX-A: 1\r\nX-A: 2\r\n"
             "Contact: <sip:a@192.0.2.1>\r\nContact: <sip:b@192.0.2.2>\r\n",
             base);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_CONTACT), 2);
    // A response with two Call-IDs is dropped.
    static struct scanned fwd, resp;
    build(&in, k_pbx_invite, "");
    rewrite_req(&fwd, &in, &k_pbx_flow, NULL);
    response_to(&resp, &fwd, "200 OK", "Call-ID: second\r\n", "");
    struct tg_sip_flow f;
    assert_int_equal(tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,
                                             (const uint8_t *)resp.buf, TG_SIP_SIDE_PROVIDER),
                     TG_SIP_RW_DUPLICATE);
}

// sealed_contact copies the tg-orig value of the first Contact of |s| into |tok|.
static void sealed_contact(char *tok, size_t cap, const struct scanned *s) {
    const char *c = value_of(s, TG_SIP_H_CONTACT, 0);
    const char *p = strstr(c, ";tg-orig=");
    assert_non_null(p);
    p += 9;
    size_t n = strcspn(p, ">;");
    assert_true(n < cap);
    memcpy(tok, p, n);
    tok[n] = '\0';
}

static void test_tg_orig_sealed(void **state) {
    (void)state;
    const char *uri = "sip:pbxuser@10.20.30.40:5060;transport=tcp";
    char a[512], b[512], c[512];
    size_t na, nb, nc;
    // Deterministic per URI and side (registrar bindings stay one), different per side.
    assert_int_equal(tg_sip_seal_uri(&g_cfg, a, sizeof(a), &na, TG_SIP_SIDE_PROVIDER,
                                     (const uint8_t *)uri, strlen(uri)),
                     1);
    assert_int_equal(tg_sip_seal_uri(&g_cfg, b, sizeof(b), &nb, TG_SIP_SIDE_PROVIDER,
                                     (const uint8_t *)uri, strlen(uri)),
                     1);
    assert_int_equal(tg_sip_seal_uri(&g_cfg, c, sizeof(c), &nc, TG_SIP_SIDE_PBX,
                                     (const uint8_t *)uri, strlen(uri)),
                     1);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    assert_true(na != nc || memcmp(a, c, na) != 0);
    for (size_t i = 0; i < na; i++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]));
    uint8_t back[512];
    size_t n = 0;
    assert_int_equal(tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, a, na),
                     1);
    assert_int_equal(n, strlen(uri));
    assert_memory_equal(back, uri, n);
    // Altered anywhere (each character in turn), truncated, extended: refused.
    for (size_t i = 0; i < na; i++) {
        char save = a[i];
        a[i] = save == 'A' ? 'B' : 'A';
        assert_int_equal(
            tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, a, na), 0);
        a[i] = save;
    }
    assert_int_equal(
        tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, a, na - 1), 0);
    a[na] = 'A';
    assert_int_equal(
        tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, a, na + 1), 0);
    // Toward the other side, under another instance's key, or made by anyone else: refused.
    assert_int_equal(tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PBX, a, na), 0);
    struct tg_sip_rw_cfg other;
    uint8_t k2[16] = {0};
    assert_int_equal(tg_sip_rw_cfg_init(&other, "sbc.example.com", 5061, "10.0.0.1", 5060, k2), 1);
    assert_int_equal(tg_sip_open_uri(&other, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, a, na),
                     0);
    char forged[512];
    b64url(forged, "sip:evil@10.9.9.9:5060;transport=udp");
    assert_int_equal(tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, forged,
                                     strlen(forged)),
                     0);
    assert_int_equal(tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, "", 0),
                     0);
    assert_int_equal(
        tg_sip_open_uri(&g_cfg, back, sizeof(back), &n, TG_SIP_SIDE_PROVIDER, "a=b!", 4), 0);
    // What cannot be restored is not sealed: not a URI, a byte that cannot stand in one, too
    // long, no room.
    assert_int_equal(
        tg_sip_seal_uri(&g_cfg, c, sizeof(c), &nc, TG_SIP_SIDE_PBX, (const uint8_t *)"sip:a b", 7),
        0);
    assert_int_equal(
        tg_sip_seal_uri(&g_cfg, c, sizeof(c), &nc, TG_SIP_SIDE_PBX, (const uint8_t *)"noscheme", 8),
        0);
    assert_int_equal(
        tg_sip_seal_uri(&g_cfg, c, 10, &nc, TG_SIP_SIDE_PBX, (const uint8_t *)uri, strlen(uri)), 0);
    static uint8_t big[TG_SIP_SEAL_MAX_URI + 1];
    memset(big, 'a', sizeof(big));
    memcpy(big, "sip:", 4);
    static char bigout[2 * sizeof(big)];
    assert_int_equal(
        tg_sip_seal_uri(&g_cfg, bigout, sizeof(bigout), &nc, TG_SIP_SIDE_PBX, big, sizeof(big) - 1),
        1);
    assert_int_equal(
        tg_sip_seal_uri(&g_cfg, bigout, sizeof(bigout), &nc, TG_SIP_SIDE_PBX, big, sizeof(big)), 0);
}

static void test_forged_tg_orig_refused(void **state) {
    (void)state;
    static struct scanned in, out, fwd, resp;
    uint8_t buf[8192];
    size_t n = 1;
    struct tg_sip_flow f;
    char forged[256], head[2048];
    b64url(forged, "sip:evil@10.9.9.9:5060;transport=udp?X-Admin=1");
    const char *rest = "Via: SIP/2.0/TLS 52.114.1.1;branch=z9hG4bK-forge\r\nMax-Forwards: 70\r\n"
                       "From: <sip:a@carrier.example>;tag=1\r\nTo: <sip:pbx@example.net>;tag=2\r\n"
                       "Call-ID: forge\r\nCSeq: 2 BYE\r\n";
#define REQ_RW(r)                                                                                  \
    tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg, (const uint8_t *)in.buf, (r),    \
                           "sip.carrier.example")
    // The provider's own tg-orig in a Contact addressed to us: not restored, refused.
    snprintf(head, sizeof(head),
             "INFO sip:pbx@example.net SIP/2.0\r\n%s"
             "Contact: <sip:x@sbc.example.com:5061;transport=tls;tg-orig=%s>\r\n",
             rest, forged);
    build(&in, head, "");
    assert_int_equal(REQ_RW(&k_prov_flow), TG_SIP_RW_BAD_TG_ORIG);
    assert_int_equal(n, 0);
    assert_int_equal(tg_sip_rw_status(TG_SIP_RW_BAD_TG_ORIG), 400);
    // In the Request-URI.
    snprintf(head, sizeof(head), "BYE sip:x@sbc.example.com:5061;tg-orig=%s SIP/2.0\r\n%s", forged,
             rest);
    build(&in, head, "");
    assert_int_equal(REQ_RW(&k_prov_flow), TG_SIP_RW_BAD_TG_ORIG);
    // A real one, altered.
    build(&in, k_pbx_invite, "");
    rewrite_req(&fwd, &in, &k_pbx_flow, NULL);
    char tok[512];
    sealed_contact(tok, sizeof(tok), &fwd);
    tok[5] = tok[5] == 'x' ? 'y' : 'x';
    snprintf(head, sizeof(head), "BYE sip:100@sbc.example.com:5061;tg-orig=%s SIP/2.0\r\n%s", tok,
             rest);
    build(&in, head, "");
    assert_int_equal(REQ_RW(&k_prov_flow), TG_SIP_RW_BAD_TG_ORIG);
    // A real one, unaltered, but presented by the side it was not sealed toward (the PBX
    // replaying what tlsgate showed the provider): refused.
    sealed_contact(tok, sizeof(tok), &fwd);
    snprintf(head, sizeof(head), "BYE sip:100@sbc.example.com:5061;tg-orig=%s SIP/2.0\r\n%s", tok,
             rest);
    build(&in, head, "");
    assert_int_equal(REQ_RW(&k_pbx_flow), TG_SIP_RW_BAD_TG_ORIG);
    // ... and by the right side: restored exactly.
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_memory_equal(out.buf, "BYE sip:100@192.168.1.10:5060;transport=tcp SIP/2.0\r\n", 53);
    // A tg-orig on a URI that is not ours is someone else's parameter: left alone.
    snprintf(head, sizeof(head), "BYE sip:x@elsewhere.example;tg-orig=%s SIP/2.0\r\n%s", forged,
             rest);
    build(&in, head, "");
    rewrite_req(&out, &in, &k_prov_flow, NULL);
    assert_non_null(strstr(out.buf, forged));
    // A response carrying a forged one: dropped.
    snprintf(head, sizeof(head), "Contact: <sip:x@sbc.example.com;tg-orig=%s>\r\n", forged);
    response_to(&resp, &fwd, "200 OK", head, "");
    assert_int_equal(tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,
                                             (const uint8_t *)resp.buf, TG_SIP_SIDE_PROVIDER),
                     TG_SIP_RW_BAD_TG_ORIG);
    assert_string_equal(tg_sip_rw_name(TG_SIP_RW_BAD_TG_ORIG), "bad_tg_orig");
    // The provider echoing our sealed Contact in a response gets the original restored.
    sealed_contact(tok, sizeof(tok), &fwd);
    snprintf(head, sizeof(head), "Contact: <sip:100@sbc.example.com:5061;tg-orig=%s>;q=1\r\n", tok);
    response_to(&resp, &fwd, "200 OK", head, "");
    assert_int_equal(tg_sip_rewrite_response(&g_cfg, &f, buf, sizeof(buf), &n, &resp.msg,
                                             (const uint8_t *)resp.buf, TG_SIP_SIDE_PROVIDER),
                     TG_SIP_RW_OK);
    must_scan(&out, (const char *)buf, n);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTACT, 0),
                        "<sip:100@192.168.1.10:5060;transport=tcp>;q=1");
#undef REQ_RW
}

static void test_bad_contacts(void **state) {
    (void)state;
    static struct scanned in;
    uint8_t buf[16384];
    size_t n = 1;
    const char *base = "INFO sip:pbx@example.net SIP/2.0\r\n"
                       "Via: SIP/2.0/TLS 52.114.1.1;branch=z9hG4bK-bc\r\n";
    static const char *const bad[] = {
        "Contact: <sip:evil@1.2.3.4\r\n",                // no closing angle bracket
        "Contact: <sip:>\r\n",                           // no host
        "Contact: \"x\" <sip:a@b.example\r\n ;x=1>\r\n", // a fold inside the URI
        "Contact: <sip:a@b.example;p=\"q\">\r\n",        // a quote inside the URI
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char head[1024];
        snprintf(head, sizeof(head), "%s%s", base, bad[i]);
        build(&in, head, "");
        assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                                (const uint8_t *)in.buf, &k_prov_flow, NULL),
                         TG_SIP_RW_BAD_CONTACT);
        assert_int_equal(n, 0);
    }
    assert_int_equal(tg_sip_rw_status(TG_SIP_RW_BAD_CONTACT), 400);
    // A URI too long to seal: 513.
    static char head[8192];
    int k = snprintf(head, sizeof(head), "%sContact: <sip:", base);
    memset(head + k, 'a', 5000);
    snprintf(head + k + 5000, sizeof(head) - (size_t)k - 5000, "@b.example>\r\n");
    build(&in, head, "");
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_prov_flow, NULL),
                     TG_SIP_RW_TOO_LARGE);
}

// tg_sip_set_body: the second step of a rewrite whose body changes (media SDP): the body
// replaced, Content-Length following it, grown and shrunk; a buffer that is not our output,
// and a result over the limits, refused.
static void test_set_body(void **state) {
    (void)state;
    static struct scanned in, out;
    build(&in, k_pbx_invite, k_sdp);
    uint8_t buf[16384];
    size_t n = 0;
    assert_int_equal(tg_sip_rewrite_request(&g_cfg, buf, sizeof(buf), &n, &in.msg,
                                            (const uint8_t *)in.buf, &k_pbx_flow, NULL),
                     TG_SIP_RW_OK);
    const size_t head = n - in.msg.body_len;
    static const char grown[] = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\n"
                                "c=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/SAVP 0\r\n"
                                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                                "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    size_t len = n;
    assert_int_equal(tg_sip_set_body(buf, &len, sizeof(buf), in.msg.body_len,
                                     (const uint8_t *)grown, sizeof(grown) - 1, &g_cfg.limits),
                     TG_SIP_RW_OK);
    must_scan(&out, (const char *)buf, len);
    assert_int_equal(out.msg.body_len, sizeof(grown) - 1);
    assert_memory_equal(out.buf + out.msg.head_len, grown, sizeof(grown) - 1);
    char cl[16];
    snprintf(cl, sizeof(cl), "%zu", sizeof(grown) - 1);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTENT_LENGTH, 0), cl);
    assert_int_equal(tg_sip_count(&out.msg, TG_SIP_H_CONTENT_LENGTH), 1);
    char old_cl[16];
    snprintf(old_cl, sizeof(old_cl), "%u", in.msg.body_len);
    assert_int_equal(out.msg.head_len, head - strlen(old_cl) + strlen(cl));
    // Shrunk to nothing, then a second replacement over the first.
    size_t len2 = len;
    assert_int_equal(tg_sip_set_body(buf, &len2, sizeof(buf), (uint32_t)(sizeof(grown) - 1),
                                     (const uint8_t *)"", 0, &g_cfg.limits),
                     TG_SIP_RW_OK);
    must_scan(&out, (const char *)buf, len2);
    assert_int_equal(out.msg.body_len, 0);
    assert_int_equal(len2, out.msg.head_len);
    // Not our output (no Content-Length last), or a body length that does not match.
    uint8_t other[] = "INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\nxyz";
    size_t olen = sizeof(other) - 1;
    assert_int_equal(
        tg_sip_set_body(other, &olen, sizeof(other), 3, (const uint8_t *)"a", 1, &g_cfg.limits),
        TG_SIP_RW_BAD_REQUEST);
    size_t cur = len2; // the message with an empty body
    assert_int_equal(
        tg_sip_set_body(buf, &cur, sizeof(buf), 5, (const uint8_t *)"a", 1, &g_cfg.limits),
        TG_SIP_RW_BAD_REQUEST);
    assert_int_equal(cur, len2);
    // Over the room or the message limit: refused, nothing written.
    assert_int_equal(
        tg_sip_set_body(buf, &cur, len2 + 101, 0, (const uint8_t *)grown, 100, &g_cfg.limits),
        TG_SIP_RW_TOO_LARGE); // "100" is two digits more than "0"
    struct tg_sip_limits small = g_cfg.limits;
    small.max_message = (uint32_t)len2 + 101;
    assert_int_equal(
        tg_sip_set_body(buf, &cur, sizeof(buf), 0, (const uint8_t *)grown, 100, &small),
        TG_SIP_RW_TOO_LARGE);
    assert_int_equal(cur, len2);
    small.max_message = (uint32_t)len2 + 102;
    assert_int_equal(tg_sip_set_body(buf, &cur, len2 + 102, 0, (const uint8_t *)grown, 100, &small),
                     TG_SIP_RW_OK);
    assert_int_equal(cur, len2 + 102);
    must_scan(&out, (const char *)buf, cur);
    assert_int_equal(out.msg.body_len, 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_pbx_to_provider),
        cmocka_unit_test(test_request_provider_to_pbx),
        cmocka_unit_test(test_max_forwards),
        cmocka_unit_test(test_route_to_us_consumed),
        cmocka_unit_test(test_contact_round_trip),
        cmocka_unit_test(test_contact_forms),
        cmocka_unit_test(test_response_pops_via),
        cmocka_unit_test(test_response_via_list_in_one_header),
        cmocka_unit_test(test_forged_and_foreign_via),
        cmocka_unit_test(test_flow_token),
        cmocka_unit_test(test_same_transaction_same_branch),
        cmocka_unit_test(test_build_response),
        cmocka_unit_test(test_options_to_us),
        cmocka_unit_test(test_output_limits),
        cmocka_unit_test(test_smuggling_shapes),
        cmocka_unit_test(test_fold_hides_header),
        cmocka_unit_test(test_canonical_names),
        cmocka_unit_test(test_duplicate_single_headers),
        cmocka_unit_test(test_tg_orig_sealed),
        cmocka_unit_test(test_forged_tg_orig_refused),
        cmocka_unit_test(test_bad_contacts),
        cmocka_unit_test(test_set_body),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
