// Unit tests for the SIP scanner: framing, keepalives, the header index, limits, and a
// malformed set in the spirit of RFC 4475.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tlsgate/sip.h"

#define NUM_HDRS 160

static struct tg_sip_header g_hdrs[NUM_HDRS];

static enum tg_sip_scan_result scan_n(struct tg_sip_msg *m, const void *buf, size_t len) {
    return tg_sip_scan(NULL, m, g_hdrs, NUM_HDRS, buf, len);
}

static enum tg_sip_scan_result scan(struct tg_sip_msg *m, const char *s) {
    return scan_n(m, s, strlen(s));
}

// with_cl appends "Content-Length: <len of body>" and the body to |head| (CRLF-terminated
// header lines) into |dst|.
static size_t with_cl(char *dst, size_t cap, const char *head, const char *body) {
    int n = snprintf(dst, cap, "%sContent-Length: %zu\r\n\r\n%s", head, strlen(body), body);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static int span_is(const char *buf, struct tg_sip_span sp, const char *want) {
    return sp.len == strlen(want) && memcmp(buf + sp.off, want, sp.len) == 0;
}

static const char k_sdp[] = "v=0\r\n"
                            "o=- 3948 1 IN IP4 192.168.1.10\r\n"
                            "s=-\r\n"
                            "c=IN IP4 192.168.1.10\r\n"
                            "t=0 0\r\n"
                            "m=audio 40000 RTP/AVP 0 8 101\r\n"
                            "a=rtpmap:101 telephone-event/8000\r\n"
                            "a=sendrecv\r\n";

static const char k_invite_head[] =
    "INVITE sip:+15551234567@sbc.example.com:5061;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 52.114.1.1:5061;branch=z9hG4bKac1234\r\n"
    "Max-Forwards: 69\r\n"
    "From: \"Alice\" <sip:+15550001111@sip.pstnhub.microsoft.com>;tag=a1b2\r\n"
    "To: <sip:+15551234567@sbc.example.com>\r\n"
    "Call-ID: 8f4c2e77@pstnhub\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:api-du-b.pstnhub.microsoft.com:443;transport=tls>\r\n"
    "Content-Type: application/sdp\r\n";

static void test_invite_with_sdp(void **state) {
    (void)state;
    char buf[4096];
    size_t n = with_cl(buf, sizeof(buf), k_invite_head, k_sdp);
    struct tg_sip_msg m;
    assert_int_equal(scan_n(&m, buf, n), TG_SIP_MESSAGE);
    assert_int_equal(m.len, n);
    assert_int_equal(m.body_len, strlen(k_sdp));
    assert_int_equal(m.head_len, n - strlen(k_sdp));
    assert_true(m.is_request);
    assert_int_equal(m.method, TG_SIP_M_INVITE);
    assert_true(span_is(buf, m.method_name, "INVITE"));
    assert_true(span_is(buf, m.uri, "sip:+15551234567@sbc.example.com:5061;user=phone"));
    assert_int_equal(m.num_headers, 9);
    assert_int_equal(m.first[TG_SIP_H_VIA], 0);
    assert_int_equal(m.first[TG_SIP_H_CONTENT_LENGTH], 8);
    assert_int_equal(m.first[TG_SIP_H_ROUTE], -1);
    const struct tg_sip_header *h = &g_hdrs[m.first[TG_SIP_H_FROM]];
    assert_true(span_is(buf, h->name, "From"));
    assert_true(
        span_is(buf, h->value, "\"Alice\" <sip:+15550001111@sip.pstnhub.microsoft.com>;tag=a1b2"));
    assert_true(span_is(
        buf, h->line, "From: \"Alice\" <sip:+15550001111@sip.pstnhub.microsoft.com>;tag=a1b2\r\n"));
    assert_true(span_is(buf, g_hdrs[m.first[TG_SIP_H_CSEQ]].value, "1 INVITE"));
    assert_memory_equal(buf + m.head_len, k_sdp, strlen(k_sdp));
}

static void test_status_line(void **state) {
    (void)state;
    struct tg_sip_msg m;
    const char *ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK1\r\n"
                     "Content-Length: 0\r\n\r\n";
    assert_int_equal(scan(&m, ok), TG_SIP_MESSAGE);
    assert_false(m.is_request);
    assert_int_equal(m.code, 200);
    assert_true(span_is(ok, m.reason, "OK"));
    const char *ringing = "SIP/2.0 180 Ringing please wait\r\nl: 0\r\n\r\n";
    assert_int_equal(scan(&m, ringing), TG_SIP_MESSAGE);
    assert_int_equal(m.code, 180);
    assert_true(span_is(ringing, m.reason, "Ringing please wait"));
    // An empty reason phrase, with and without the space.
    assert_int_equal(scan(&m, "SIP/2.0 486 \r\nl: 0\r\n\r\n"), TG_SIP_MESSAGE);
    assert_int_equal(m.code, 486);
    assert_int_equal(scan(&m, "SIP/2.0 503\r\nl: 0\r\n\r\n"), TG_SIP_MESSAGE);
    assert_int_equal(m.code, 503);
    // Version is case-insensitive.
    assert_int_equal(scan(&m, "sip/2.0 200 OK\r\nl: 0\r\n\r\n"), TG_SIP_MESSAGE);
}

static void test_methods(void **state) {
    (void)state;
    static const struct {
        const char *name;
        enum tg_sip_method m;
    } cases[] = {
        {"ACK", TG_SIP_M_ACK},
        {"BYE", TG_SIP_M_BYE},
        {"OPTIONS", TG_SIP_M_OPTIONS},
        {"REGISTER", TG_SIP_M_REGISTER},
        {"CANCEL", TG_SIP_M_CANCEL},
        {"NOTIFY", TG_SIP_M_NOTIFY},
        {"UPDATE", TG_SIP_M_UPDATE},
        {"NEWMETHOD", TG_SIP_M_OTHER},
        {"invite", TG_SIP_M_OTHER}, // methods are case-sensitive
        {"!interesting-Method0123456789_*+`.%indeed'~", TG_SIP_M_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[512];
        snprintf(buf, sizeof(buf),
                 "%s sip:sbc.example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n"
                 "CSeq: 2 %s\r\nContent-Length: 0\r\n\r\n",
                 cases[i].name, cases[i].name);
        struct tg_sip_msg m;
        assert_int_equal(scan(&m, buf), TG_SIP_MESSAGE);
        assert_int_equal(m.method, cases[i].m);
        assert_true(span_is(buf, m.method_name, cases[i].name));
    }
}

static void test_compact_headers(void **state) {
    (void)state;
    static const struct {
        char c;
        enum tg_sip_hdr id;
    } cases[] = {
        {'i', TG_SIP_H_CALL_ID},
        {'m', TG_SIP_H_CONTACT},
        {'v', TG_SIP_H_VIA},
        {'f', TG_SIP_H_FROM},
        {'t', TG_SIP_H_TO},
        {'l', TG_SIP_H_CONTENT_LENGTH},
        {'c', TG_SIP_H_CONTENT_TYPE},
        {'k', TG_SIP_H_SUPPORTED},
        {'s', TG_SIP_H_SUBJECT},
        {'e', TG_SIP_H_CONTENT_ENCODING},
        {'o', TG_SIP_H_EVENT},
        {'r', TG_SIP_H_REFER_TO},
        {'u', TG_SIP_H_ALLOW_EVENTS},
        {'x', TG_SIP_H_SESSION_EXPIRES},
        {'a', TG_SIP_H_ACCEPT_CONTACT},
        {'b', TG_SIP_H_REFERRED_BY},
        {'j', TG_SIP_H_REJECT_CONTACT},
        {'d', TG_SIP_H_REQUEST_DISPOSITION},
        {'y', TG_SIP_H_IDENTITY},
        {'n', TG_SIP_H_IDENTITY_INFO},
        {'z', TG_SIP_H_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t lc = (uint8_t)cases[i].c, uc = (uint8_t)(cases[i].c - 32);
        assert_int_equal(tg_sip_header_id(&lc, 1), cases[i].id);
        assert_int_equal(tg_sip_header_id(&uc, 1), cases[i].id);
    }
    const char *names[] = {"cOnTeNt-LeNgTh",         "VIA",          "call-ID",
                           "Record-Route",           "max-forwards", "X-TLS-Peer-Name",
                           "x-tls-peer-cert-sha256", "X-TLS-Pee",    "Viaa",
                           "X_TLS_Peer_Name",        "x-tls_peer-"};
    enum tg_sip_hdr ids[] = {TG_SIP_H_CONTENT_LENGTH, TG_SIP_H_VIA,          TG_SIP_H_CALL_ID,
                             TG_SIP_H_RECORD_ROUTE,   TG_SIP_H_MAX_FORWARDS, TG_SIP_H_X_TLS_PEER,
                             TG_SIP_H_X_TLS_PEER,     TG_SIP_H_OTHER,        TG_SIP_H_OTHER,
                             TG_SIP_H_X_TLS_PEER,     TG_SIP_H_X_TLS_PEER};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        assert_int_equal(tg_sip_header_id((const uint8_t *)names[i], strlen(names[i])), ids[i]);

    // A whole message in compact form (RFC 4475 3.1.1.1 in spirit).
    const char *msg = "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
                      "TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
                      "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n"
                      "  ;\r\n  tag = 98asjd8\r\n"
                      "MaX-fOrWaRdS: 0068\r\n"
                      "Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
                      "cseq: 0009\r\n  INVITE\r\n"
                      "Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw\r\n"
                      "s :\r\n"
                      "NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
                      "v:  SIP/2.0/TCP t1.example.com;branch=z9hG4bKkdjuw\r\n"
                      "m:<sip:user@example.com>\r\n"
                      "l: 0\r\n\r\n";
    struct tg_sip_msg m;
    assert_int_equal(scan(&m, msg), TG_SIP_MESSAGE);
    assert_int_equal(m.num_headers, 11);
    assert_int_equal(tg_sip_count(&m, TG_SIP_H_VIA), 2);
    assert_int_equal(tg_sip_find(&m, TG_SIP_H_VIA, 1), 8);
    assert_int_equal(g_hdrs[0].id, TG_SIP_H_TO);
    assert_true(span_is(msg, g_hdrs[0].name, "TO"));
    assert_true(span_is(msg, g_hdrs[0].value,
                        "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"));
    assert_true(span_is(msg, g_hdrs[m.first[TG_SIP_H_CSEQ]].value, "0009\r\n  INVITE"));
    assert_true(span_is(msg, g_hdrs[m.first[TG_SIP_H_SUBJECT]].value, ""));
    assert_true(span_is(msg, g_hdrs[m.first[TG_SIP_H_CONTACT]].value, "<sip:user@example.com>"));
    assert_int_equal(g_hdrs[m.first[TG_SIP_H_MAX_FORWARDS]].id, TG_SIP_H_MAX_FORWARDS);
}

static void test_folded_headers(void **state) {
    (void)state;
    const char *msg = "OPTIONS sip:sbc.example.com SIP/2.0\r\n"
                      "Via: SIP/2.0/TCP 10.0.0.2:5060\r\n\t;branch=z9hG4bKf1\r\n"
                      "Subject: first line\r\n second line\r\n\tthird line\r\n"
                      "Content-Length:\r\n 0\r\n"
                      "\r\n";
    struct tg_sip_msg m;
    assert_int_equal(scan(&m, msg), TG_SIP_MESSAGE);
    assert_int_equal(m.num_headers, 3);
    assert_true(span_is(msg, g_hdrs[1].value, "first line\r\n second line\r\n\tthird line"));
    assert_true(
        span_is(msg, g_hdrs[1].line, "Subject: first line\r\n second line\r\n\tthird line\r\n"));
    assert_true(span_is(msg, g_hdrs[2].value, "0"));
    assert_int_equal(m.body_len, 0);
    // The scanner cannot tell a header is complete until it sees the next line's first byte.
    size_t cut = strstr(msg, "Content-Length") - msg;
    assert_int_equal(scan_n(&m, msg, cut - 1), TG_SIP_NEED_MORE);
    assert_int_equal(m.need, cut);
}

static void test_back_to_back(void **state) {
    (void)state;
    char buf[8192];
    size_t n = with_cl(buf, sizeof(buf), k_invite_head, k_sdp);
    const char *ack =
        "ACK sip:x@10.0.0.1 SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bK2\r\nl: 0\r\n\r\n";
    const char *ok = "SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    memcpy(buf + n, ack, strlen(ack));
    size_t n2 = n + strlen(ack);
    memcpy(buf + n2, "\r\n\r\n", 4);
    memcpy(buf + n2 + 4, ok, strlen(ok));
    memcpy(buf + n2 + 4 + strlen(ok), "\r\n", 2);
    size_t total = n2 + 4 + strlen(ok) + 2;
    struct tg_sip_msg m;
    size_t off = 0;
    enum tg_sip_scan_result want[] = {TG_SIP_MESSAGE, TG_SIP_MESSAGE, TG_SIP_PING, TG_SIP_MESSAGE,
                                      TG_SIP_PONG};
    size_t lens[] = {n, strlen(ack), 4, strlen(ok), 2};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(scan_n(&m, buf + off, total - off), want[i]);
        assert_int_equal(m.len, lens[i]);
        off += m.len;
    }
    assert_int_equal(off, total);
    assert_int_equal(scan_n(&m, buf + off, 0), TG_SIP_NEED_MORE);
    assert_int_equal(m.need, 1);
}

static void test_split_at_every_byte(void **state) {
    (void)state;
    char buf[4096];
    size_t n = with_cl(buf, sizeof(buf), k_invite_head, k_sdp);
    size_t head = n - strlen(k_sdp);
    for (size_t cut = 0; cut < n; cut++) {
        // A copy of exactly |cut| bytes, so any read past it is a sanitizer error.
        uint8_t *part = malloc(cut ? cut : 1);
        memcpy(part, buf, cut);
        struct tg_sip_msg m;
        assert_int_equal(scan_n(&m, part, cut), TG_SIP_NEED_MORE);
        assert_true(m.need > cut);
        assert_true(m.need <= n);
        if (cut >= head)
            assert_int_equal(m.need, n);
        free(part);
    }
    struct tg_sip_msg m;
    assert_int_equal(scan_n(&m, buf, n), TG_SIP_MESSAGE);
    assert_int_equal(m.len, n);
}

static void test_keepalive(void **state) {
    (void)state;
    struct tg_sip_msg m;
    assert_int_equal(scan(&m, "\r\n\r\n"), TG_SIP_PING);
    assert_int_equal(m.len, 4);
    assert_int_equal(scan(&m, "\r\n\r\nOPTIONS"), TG_SIP_PING);
    assert_int_equal(m.len, 4);
    assert_int_equal(scan(&m, "\r\n"), TG_SIP_PONG);
    assert_int_equal(m.len, 2);
    assert_int_equal(scan(&m, "\r\nSIP/2.0 200 OK\r\n"), TG_SIP_PONG);
    assert_int_equal(m.len, 2);
    assert_int_equal(scan(&m, "\r"), TG_SIP_NEED_MORE);
    assert_int_equal(m.need, 2);
    assert_int_equal(scan(&m, "\r\n\r"), TG_SIP_NEED_MORE);
    assert_int_equal(m.need, 4);
    assert_int_equal(scan(&m, "\r\n\r\n\r\n"), TG_SIP_PING);
    assert_int_equal(scan(&m, "\r\n"), TG_SIP_PONG);
    assert_int_equal(scan(&m, ""), TG_SIP_NEED_MORE);
    // A CR that is not part of a CRLF is not a keepalive.
    assert_int_equal(scan(&m, "\rX"), TG_SIP_ERROR);
    assert_int_equal(m.err, TG_SIP_ERR_START_LINE);
    assert_false(m.can_continue);
    assert_int_equal(scan(&m, "\r\n\rX"), TG_SIP_PONG);
}

// expect_error scans |s| (|len| bytes) and checks the verdict.
static void expect_error(const void *s, size_t len, enum tg_sip_err err, unsigned status,
                         int can_continue, size_t skip) {
    struct tg_sip_msg m;
    enum tg_sip_scan_result r = scan_n(&m, s, len);
    if (r != TG_SIP_ERROR || m.err != err || m.status != status || m.can_continue != can_continue ||
        (can_continue && m.len != skip))
        print_error("got result %d err %s status %u continue %u len %u for:\n%.*s\n", r,
                    tg_sip_err_name((enum tg_sip_err)m.err), m.status, m.can_continue, m.len,
                    (int)(len > 300 ? 300 : len), (const char *)s);
    assert_int_equal(r, TG_SIP_ERROR);
    assert_int_equal(m.err, err);
    assert_int_equal(m.status, status);
    assert_int_equal(m.can_continue, can_continue);
    if (can_continue)
        assert_int_equal(m.len, skip);
}

static void expect_error_str(const char *s, enum tg_sip_err err, unsigned status,
                             int can_continue) {
    expect_error(s, strlen(s), err, status, can_continue, strlen(s));
}

#define REQ "OPTIONS sip:sbc.example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKq\r\n"

static void test_content_length_errors(void **state) {
    (void)state;
    expect_error_str(REQ "\r\n", TG_SIP_ERR_NO_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length: -999\r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length: abc\r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length: 0x10\r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length: 5 5\r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length: +5\r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length:\r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    expect_error_str(REQ "Content-Length: 0\r\nl: 3\r\n\r\nabc", TG_SIP_ERR_CONTENT_LENGTH_DIFF,
                     400, 0);
    // Huge: more than fits in 32 bits, so the stream cannot be followed.
    expect_error_str(REQ "Content-Length: 99999999999999999999\r\n\r\n", TG_SIP_ERR_BODY_TOO_LARGE,
                     513, 0);
    // Over max_message but countable: the caller may discard and go on.
    const char *big = REQ "Content-Length: 100000\r\n\r\n";
    expect_error(big, strlen(big), TG_SIP_ERR_BODY_TOO_LARGE, 513, 1, strlen(big) + 100000);
    // Responses are never answered.
    expect_error_str("SIP/2.0 200 OK\r\nCSeq: 1 BYE\r\n\r\n", TG_SIP_ERR_NO_CONTENT_LENGTH, 0, 0);

    // Duplicates that agree are fine; leading zeros are a number.
    struct tg_sip_msg m;
    assert_int_equal(scan(&m, REQ "Content-Length: 3\r\nl: 003\r\n\r\nabc"), TG_SIP_MESSAGE);
    assert_int_equal(m.body_len, 3);
}

static void test_body_shorter_and_longer(void **state) {
    (void)state;
    struct tg_sip_msg m;
    // Shorter than declared: on a stream that only means "not all here yet".
    const char *shorter = REQ "Content-Length: 150\r\n\r\nv=0\r\n";
    size_t head = strlen(shorter) - 5;
    assert_int_equal(scan(&m, shorter), TG_SIP_NEED_MORE);
    assert_int_equal(m.need, head + 150);
    // Longer than declared: the message ends where Content-Length says, and the rest fails
    // as a start line.
    const char *longer = REQ "Content-Length: 4\r\n\r\nv=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n";
    assert_int_equal(scan(&m, longer), TG_SIP_MESSAGE);
    head = strlen(longer) - strlen("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n");
    assert_int_equal(m.len, head + 4);
    const char *rest = longer + m.len;
    expect_error_str(rest, TG_SIP_ERR_START_LINE, 400, 0);
}

static void test_nul_bytes(void **state) {
    (void)state;
    static const char in_header[] = REQ "Subject: a\0b\r\nContent-Length: 0\r\n\r\n";
    expect_error(in_header, sizeof(in_header) - 1, TG_SIP_ERR_NUL, 400, 1, sizeof(in_header) - 1);
    // NUL in the start line: garbage, refused at once, even before the line ends.
    static const char in_start[] = "INVITE sip:a\0b";
    expect_error(in_start, sizeof(in_start) - 1, TG_SIP_ERR_START_LINE, 400, 0, 0);
    // NUL in a body is just a byte.
    static const char in_body[] = REQ "Content-Length: 3\r\n\r\na\0b";
    struct tg_sip_msg m;
    assert_int_equal(scan_n(&m, in_body, sizeof(in_body) - 1), TG_SIP_MESSAGE);
}

static void test_start_line_torture(void **state) {
    (void)state;
    const char *tail = "Via: SIP/2.0/TCP h;branch=z9hG4bKq\r\nContent-Length: 0\r\n\r\n";
    static const char *bad[] = {
        "INVITE  sip:user@example.com SIP/2.0\r\n",    // two spaces (lwsstart)
        "INVITE sip:user@example.com  SIP/2.0\r\n",    // two spaces before the version
        "INVITE sip:user@example.com SIP/2.0 \r\n",    // trailing space (trws)
        "INVITE sip:user@example.com; lr SIP/2.0\r\n", // LWS inside the URI (lwsruri)
        "INVITE sip:user@example.com\tSIP/2.0\r\n",    // tab as separator
        "INVITE SIP/2.0\r\n",                          // no Request-URI
        "INVITE sip:user@example.com\r\n",             // no version
        "INVITE user@example.com SIP/2.0\r\n",         // no scheme
        " INVITE sip:user@example.com SIP/2.0\r\n",    // leading space
        "INV<ITE sip:user@example.com SIP/2.0\r\n",    // separator in the method
        "INVITE sip:user@example.com SIP/2.0X\r\n",    // junk after the version
        "INVITE sip:user@example.com SIPx2.0\r\n",     // not a version
        "v=0\r\n",                                     // a body line
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s%s", bad[i], tail);
        expect_error(buf, strlen(buf), TG_SIP_ERR_START_LINE, 400, 0, 0);
    }
    static const char *bad_status[] = {
        "SIP/2.0 4294967301 better not break the receiver\r\n", // bigcode
        "SIP/2.0 99 Too Small\r\n",
        "SIP/2.0 700 Too Big\r\n",
        "SIP/2.0 2O0 OK\r\n",
        "SIP/2.0  200 OK\r\n",
        "SIP/2.0\r\n",
    };
    for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%s%s", bad_status[i], tail);
        expect_error(buf, strlen(buf), TG_SIP_ERR_START_LINE, 0, 0, 0);
    }
    // Other SIP versions parse but are refused with 505 (badvers); the stream goes on.
    char buf[512];
    snprintf(buf, sizeof(buf), "OPTIONS sip:t.example.com SIP/7.0\r\n%s", tail);
    expect_error(buf, strlen(buf), TG_SIP_ERR_VERSION, 505, 1, strlen(buf));
    snprintf(buf, sizeof(buf), "SIP/3.0 200 OK\r\n%s", tail);
    expect_error(buf, strlen(buf), TG_SIP_ERR_VERSION, 0, 1, strlen(buf));
    // Escaped and odd but legal Request-URIs pass.
    struct tg_sip_msg m;
    snprintf(buf, sizeof(buf), "INVITE sip:sips%%3Auser%%40example.com@example.net SIP/2.0\r\n%s",
             tail);
    assert_int_equal(scan(&m, buf), TG_SIP_MESSAGE);
    snprintf(buf, sizeof(buf), "OPTIONS tel:+1-555-0100;phone-context=example.com SIP/2.0\r\n%s",
             tail);
    assert_int_equal(scan(&m, buf), TG_SIP_MESSAGE);
}

static void test_binary_garbage_closes_early(void **state) {
    (void)state;
    // A TLS ClientHello sent to the plain side: refused on the first byte.
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
    expect_error(hello, sizeof(hello), TG_SIP_ERR_START_LINE, 400, 0, 0);
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    expect_error(http, strlen(http), TG_SIP_ERR_START_LINE, 400, 0, 0);
    // Bare LF line ends are not SIP.
    static const char lf[] = "OPTIONS sip:a SIP/2.0\nVia: x\nl: 0\n\n\r\n";
    expect_error(lf, strlen(lf), TG_SIP_ERR_START_LINE, 400, 0, 0);
}

static void test_header_torture(void **state) {
    (void)state;
    expect_error_str(REQ "NoColonHere\r\nContent-Length: 0\r\n\r\n", TG_SIP_ERR_HEADER, 400, 1);
    expect_error_str(REQ ": empty name\r\nContent-Length: 0\r\n\r\n", TG_SIP_ERR_HEADER, 400, 1);
    expect_error_str(REQ "Bad Name: x\r\nContent-Length: 0\r\n\r\n", TG_SIP_ERR_HEADER, 400, 1);
    expect_error_str(REQ "Subject: a\rb\r\nContent-Length: 0\r\n\r\n", TG_SIP_ERR_HEADER, 400, 1);
    expect_error_str(REQ "Subject: a\nb\r\nContent-Length: 0\r\n\r\n", TG_SIP_ERR_HEADER, 400, 1);
    // A continuation line right after the start line continues nothing.
    expect_error_str("OPTIONS sip:a SIP/2.0\r\n continued\r\nContent-Length: 0\r\n\r\n",
                     TG_SIP_ERR_HEADER, 400, 1);
    // A name a weak parser may take for Content-Length (a prefix match, "_" for "-").
    expect_error_str(REQ "Content-Length-X: 0\r\nContent-Length: 3\r\n\r\nabc", TG_SIP_ERR_HEADER,
                     400, 1);
    expect_error_str(REQ "content_length: 0\r\nContent-Length: 3\r\n\r\nabc", TG_SIP_ERR_HEADER,
                     400, 1);
    expect_error_str(REQ "Content-Lengthy: 0\r\nContent-Length: 3\r\n\r\nabc", TG_SIP_ERR_HEADER,
                     400, 1);
    // Whitespace before the colon, tabs and odd spacing in values are legal.
    struct tg_sip_msg m;
    assert_int_equal(scan(&m, REQ "Subject \t :\t\tx  y \t\r\nContent-Length  :   0   \r\n\r\n"),
                     TG_SIP_MESSAGE);
    assert_true(span_is(REQ "Subject \t :\t\tx  y \t\r\n", g_hdrs[1].value, "x  y"));
}

static void test_control_bytes(void **state) {
    (void)state;
    // A control character other than HTAB in a header: 400, and the stream goes on (the
    // message is framed by its Content-Length and dropped).
    static const char *const bad[] = {
        REQ "Subject: a\x0b b\r\nContent-Length: 0\r\n\r\n",      // VT in a value
        REQ "Subject: a\x1b[2J\r\nContent-Length: 0\r\n\r\n",     // ESC
        REQ "Subject: a\x7f\r\nContent-Length: 0\r\n\r\n",        // DEL
        REQ "Subject: a\x01\r\nContent-Length: 0\r\n\r\n",        // SOH
        REQ "Subject: a\r\n \x0b b\r\nContent-Length: 0\r\n\r\n", // in a continuation line
        REQ "Max-Forwards: 70\x0c\r\nContent-Length: 0\r\n\r\n",  // FF after a number
        REQ "X\x0bY: a\r\nContent-Length: 0\r\n\r\n",             // in a name
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error_str(bad[i], TG_SIP_ERR_CTL, 400, 1);
    // Next to a CR that is not a line end, and NUL: those keep their own reasons.
    expect_error_str(REQ "Subject: a\x0b\rb\r\nContent-Length: 0\r\n\r\n", TG_SIP_ERR_HEADER, 400,
                     1);
    static const char nul[] = REQ "Subject: \x0b\0\r\nContent-Length: 0\r\n\r\n";
    expect_error(nul, sizeof(nul) - 1, TG_SIP_ERR_NUL, 400, 1, sizeof(nul) - 1);
    // In the start line: not SIP, close.
    expect_error_str("OPTIONS sip:a\x0b@b SIP/2.0\r\nContent-Length: 0\r\n\r\n",
                     TG_SIP_ERR_START_LINE, 400, 0);
    // HTAB and bytes above 0x7f (UTF-8) are fine.
    struct tg_sip_msg m;
    assert_int_equal(scan(&m, REQ "Subject: a\tb \xc3\xa9t\xc3\xa9\r\nContent-Length: 0\r\n\r\n"),
                     TG_SIP_MESSAGE);
    // The partial index still answers: the control character was not in Via/From/To/...
    static const char answerable[] = REQ "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n"
                                         "CSeq: 1 OPTIONS\r\nX-Evil: \x0b\r\nl: 0\r\n\r\n";
    assert_int_equal(scan(&m, answerable), TG_SIP_ERROR);
    assert_int_equal(m.err, TG_SIP_ERR_CTL);
    assert_int_equal(m.first[TG_SIP_H_CSEQ], 4);
}

static void test_smuggling_shapes_framed(void **state) {
    (void)state;
    // Content-Length folded onto a second line (SP, HTAB), compact and folded, space before
    // the colon: each frames the body it declares (and the rewriter writes it out unfolded).
    static const char *const shapes[] = {
        "Content-Length:\r\n 12\r\n", "Content-Length:\r\n\t12\r\n",      "l:\r\n 12\r\n",
        "Content-Length : 12\r\n",    "Content-Length:\r\n \r\n 12 \r\n",
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        char buf[512];
        int n = snprintf(buf, sizeof(buf), "%s%s\r\nOPTIONS xy\r\n", REQ, shapes[i]);
        struct tg_sip_msg m;
        assert_int_equal(scan_n(&m, buf, (size_t)n), TG_SIP_MESSAGE);
        assert_int_equal(m.body_len, 12);
        assert_int_equal(m.len, (size_t)n);
        assert_int_equal(m.num_headers, 2);
        const struct tg_sip_header *h = &g_hdrs[m.first[TG_SIP_H_CONTENT_LENGTH]];
        assert_true(span_is(buf, h->value, "12"));
    }
    // Content-Length folded with nothing but whitespace after it: empty, refused.
    expect_error_str(REQ "Content-Length:\r\n \r\n\r\n", TG_SIP_ERR_BAD_CONTENT_LENGTH, 400, 0);
    // Split across the fold in two arrivals: asks for more, then frames the same.
    const char *whole = REQ "Content-Length:\r\n 2\r\n\r\nab";
    size_t cut = strstr(whole, "\r\n 2") - whole + 2;
    struct tg_sip_msg m;
    assert_int_equal(scan_n(&m, whole, cut), TG_SIP_NEED_MORE);
    assert_int_equal(scan(&m, whole), TG_SIP_MESSAGE);
    assert_int_equal(m.body_len, 2);
}

static void test_limits(void **state) {
    (void)state;
    // Unterminated headers: NEED_MORE up to max_message, then 513 and close.
    size_t cap = 70000;
    char *buf = malloc(cap);
    size_t n = (size_t)snprintf(buf, cap, "%s", REQ);
    while (n + 16 < cap) {
        memcpy(buf + n, "X-Filler: abc\r\n", 15);
        n += 15;
    }
    struct tg_sip_msg m;
    assert_int_equal(scan_n(&m, buf, 60000), TG_SIP_NEED_MORE);
    expect_error(buf, n, TG_SIP_ERR_HEAD_UNTERMINATED, 513, 0, 0);

    // Too many headers: 513, and the stream goes on after the message.
    n = (size_t)snprintf(buf, cap, "%s", REQ);
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(buf + n, cap - n, "X-H%d: v\r\n", i);
    n += (size_t)snprintf(buf + n, cap - n, "Content-Length: 0\r\n\r\n");
    expect_error(buf, n, TG_SIP_ERR_TOO_MANY_HEADERS, 513, 1, n);
    assert_int_equal(scan_n(&m, buf, n), TG_SIP_ERROR);
    assert_true(m.truncated);
    assert_int_equal(m.num_headers, 128);

    // A header line over max_line: 513, stream goes on.
    n = (size_t)snprintf(buf, cap, "%sSubject: ", REQ);
    memset(buf + n, 'a', 9000);
    n += 9000;
    n += (size_t)snprintf(buf + n, cap - n, "\r\nContent-Length: 0\r\n\r\n");
    expect_error(buf, n, TG_SIP_ERR_LINE_TOO_LONG, 513, 1, n);

    // A start line over max_line: close (it is most likely not SIP).
    n = (size_t)snprintf(buf, cap, "INVITE sip:");
    memset(buf + n, 'a', 9000);
    n += 9000;
    expect_error(buf, n, TG_SIP_ERR_LINE_TOO_LONG, 513, 0, 0);
    free(buf);

    // Custom limits, and a caller array smaller than the limit.
    struct tg_sip_limits lim;
    tg_sip_limits_init(&lim);
    assert_int_equal(lim.max_message, 65536);
    assert_int_equal(lim.max_headers, 128);
    assert_int_equal(lim.max_line, 8192);
    lim.max_message = 120;
    const char *msg = REQ "Content-Length: 30\r\n\r\n012345678901234567890123456789";
    assert_int_equal(tg_sip_scan(&lim, &m, g_hdrs, NUM_HDRS, (const uint8_t *)msg, strlen(msg)),
                     TG_SIP_ERROR);
    assert_int_equal(m.err, TG_SIP_ERR_BODY_TOO_LARGE);
    assert_int_equal(m.status, 513);
    assert_int_equal(m.len, strlen(msg));
    struct tg_sip_header two[2];
    const char *three = REQ "Subject: x\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(tg_sip_scan(NULL, &m, two, 2, (const uint8_t *)three, strlen(three)),
                     TG_SIP_ERROR);
    assert_int_equal(m.err, TG_SIP_ERR_TOO_MANY_HEADERS);
    assert_int_equal(m.num_headers, 2);
    assert_true(m.truncated);
}

static void test_error_keeps_partial_index(void **state) {
    (void)state;
    static const char msg[] = REQ "From: <sip:a@b>;tag=1\r\nX: \0\r\nl: 0\r\n\r\n";
    struct tg_sip_msg m;
    assert_int_equal(scan_n(&m, msg, sizeof(msg) - 1), TG_SIP_ERROR);
    assert_int_equal(m.err, TG_SIP_ERR_NUL);
    assert_int_equal(m.first[TG_SIP_H_VIA], 0);
    assert_int_equal(m.first[TG_SIP_H_FROM], 1);
    assert_true(m.is_request);
    assert_int_equal(m.method, TG_SIP_M_OPTIONS);
}

static void test_names(void **state) {
    (void)state;
    for (int e = 0; e < TG_SIP_ERR_NUM; e++)
        assert_string_not_equal(tg_sip_err_name((enum tg_sip_err)e), "unknown");
    assert_string_equal(tg_sip_err_name(TG_SIP_ERR_BODY_TOO_LARGE), "body_too_large");
    assert_string_equal(tg_sip_err_name(TG_SIP_ERR_CTL), "ctl");
    assert_string_equal(tg_sip_err_name(TG_SIP_ERR_NUM), "unknown");
    assert_string_equal(tg_sip_method_name(TG_SIP_M_OPTIONS), "OPTIONS");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invite_with_sdp),
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_compact_headers),
        cmocka_unit_test(test_folded_headers),
        cmocka_unit_test(test_back_to_back),
        cmocka_unit_test(test_split_at_every_byte),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_content_length_errors),
        cmocka_unit_test(test_body_shorter_and_longer),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_start_line_torture),
        cmocka_unit_test(test_binary_garbage_closes_early),
        cmocka_unit_test(test_header_torture),
        cmocka_unit_test(test_control_bytes),
        cmocka_unit_test(test_smuggling_shapes_framed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_error_keeps_partial_index),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
