// Unit tests for the SIP proxy rewriter: Via with flow token, Max-Forwards, Record-Route,
// Route, Contact, X-TLS-Peer-*, response Via pop, built responses, OPTIONS to us.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    // Contact: our FQDN, TLS, user kept, original URI in tg-orig, display name and header
    // parameters kept.
    char b64[256], contact[512];
    b64url(b64, "sip:100@192.168.1.10:5060;transport=tcp");
    snprintf(contact, sizeof(contact),
             "\"Ext 100\" <sip:100@sbc.example.com:5061;transport=tls;tg-orig=%s>;expires=60", b64);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTACT, 0), contact);
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
    char b64[256], contact[512];
    b64url(b64, "sip:api-du-b.pstnhub.microsoft.com:443;x-i=abc;transport=tls");
    snprintf(contact, sizeof(contact), "<sip:10.0.0.1:5060;transport=tcp;tg-orig=%s>", b64);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTACT, 0), contact);
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
    // A tg-orig that does not decode to a clean URI is not restored.
    build(&bye,
          "BYE sip:100@sbc.example.com;tg-orig=c2lwOmEgYg SIP/2.0\r\n"
          "Via: SIP/2.0/TLS h;branch=z9hG4bK4\r\n",
          "");
    rewrite_req(&bye_out, &bye, &k_prov_flow, NULL);
    assert_memory_equal(bye_out.buf, "BYE sip:100@sbc.example.com;tg-orig=c2lwOmEgYg SIP/2.0", 54);
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
    char a[128], b[128], want[1024];
    b64url(a, "sip:200@192.168.1.11");
    b64url(b, "sips:300@[fd00::5]:5061");
    snprintf(want, sizeof(want),
             "<tel:+15551234567>, <sip:200@sbc.example.com:5061;transport=tls;tg-orig=%s>;"
             "expires=30, <sip:300@sbc.example.com:5061;transport=tls;tg-orig=%s>;q=0.5",
             a, b);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTACT, 1), want);
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
    char b64[256], contact[512];
    b64url(b64, "sip:api-du-b.pstnhub.microsoft.com:443;transport=tls");
    snprintf(contact, sizeof(contact), "<sip:10.0.0.1:5060;transport=tcp;tg-orig=%s>", b64);
    assert_string_equal(value_of(&out, TG_SIP_H_CONTACT, 0), contact);
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
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
