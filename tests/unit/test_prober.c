// Unit tests of the OPTIONS prober's pure state machine, request formatting and response scan
// (proxy/prober.c). No clock: every |now| is given.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tlsgate/prober.h"
#include "tlsgate/sip.h"

static const char *step_name(enum tg_probe_step s) {
    switch (s) {
    case TG_PROBE_IDLE:
        return "idle";
    case TG_PROBE_DUE:
        return "due";
    case TG_PROBE_TIMED_OUT:
        return "timed_out";
    }
    return "?";
}

static void expect_tick(struct tg_probe_state *p, uint32_t now, uint32_t interval,
                        enum tg_probe_step want) {
    enum tg_probe_step got = tg_probe_tick(p, now, interval);
    if (got != want)
        print_error("tick at %u (interval %u): %s, expected %s\n", now, interval, step_name(got),
                    step_name(want));
    assert_int_equal(got, want);
}

static void new_probe(struct tg_probe_state *p, uint32_t now) {
    memset(p, 0, sizeof(*p));
    tg_probe_start(p, now);
}

// --- The schedule --------------------------------------------------------------------------

static void test_timeout_ms(void **state) {
    (void)state;
    assert_int_equal(tg_probe_timeout_ms(1000), 1000);
    assert_int_equal(tg_probe_timeout_ms(9999), 9999);
    assert_int_equal(tg_probe_timeout_ms(10000), 10000);
    assert_int_equal(tg_probe_timeout_ms(10001), 10000);
    assert_int_equal(tg_probe_timeout_ms(60000), 10000);
    assert_int_equal(tg_probe_timeout_ms(0), 0);
}

static void test_first_due_at_start(void **state) {
    (void)state;
    struct tg_probe_state p;
    new_probe(&p, 5000);
    assert_int_equal(p.awaiting, 0);
    expect_tick(&p, 4999, 30000, TG_PROBE_IDLE); // before the start
    assert_int_equal(p.awaiting, 0);
    expect_tick(&p, 5000, 30000, TG_PROBE_DUE);
    assert_int_equal(p.awaiting, 1);
    assert_int_equal(p.sent, 5000);
    assert_int_equal(p.due, 35000);
    // Outstanding: not due again, whatever the time, until the result or the timeout.
    expect_tick(&p, 5000, 30000, TG_PROBE_IDLE);
    expect_tick(&p, 5001, 30000, TG_PROBE_IDLE);
}

static void test_not_again_before_interval(void **state) {
    (void)state;
    struct tg_probe_state p;
    new_probe(&p, 0);
    const uint32_t iv = 30000;
    expect_tick(&p, 0, iv, TG_PROBE_DUE);
    expect_tick(&p, 100, iv, TG_PROBE_IDLE);
    assert_int_equal(tg_probe_result(&p, 1, 3), TG_PROBE_SAME);
    assert_int_equal(p.awaiting, 0);
    // Answered quickly: the next one is still due an interval after the first was sent.
    expect_tick(&p, 100, iv, TG_PROBE_IDLE);
    expect_tick(&p, 29999, iv, TG_PROBE_IDLE);
    expect_tick(&p, 30000, iv, TG_PROBE_DUE);
    assert_int_equal(p.due, 60000);
    assert_int_equal(tg_probe_result(&p, 1, 3), TG_PROBE_SAME);
    // A late tick: due at once, the next one an interval after this send.
    expect_tick(&p, 61234, iv, TG_PROBE_DUE);
    assert_int_equal(p.sent, 61234);
    assert_int_equal(p.due, 91234);
}

static void test_timeout_is_min_interval_10s(void **state) {
    (void)state;
    struct tg_probe_state p;
    // Interval 30 s: the answer may take 10 s.
    new_probe(&p, 1000);
    expect_tick(&p, 1000, 30000, TG_PROBE_DUE);
    expect_tick(&p, 10999, 30000, TG_PROBE_IDLE);
    expect_tick(&p, 11000, 30000, TG_PROBE_TIMED_OUT);
    // The timeout repeats until a result is recorded.
    expect_tick(&p, 11001, 30000, TG_PROBE_TIMED_OUT);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(p.failures, 1);
    // A timeout does not move the schedule: next due 30 s after the send.
    expect_tick(&p, 11001, 30000, TG_PROBE_IDLE);
    expect_tick(&p, 30999, 30000, TG_PROBE_IDLE);
    expect_tick(&p, 31000, 30000, TG_PROBE_DUE);

    // Interval 4 s: the answer may take 4 s, no more.
    new_probe(&p, 0);
    expect_tick(&p, 0, 4000, TG_PROBE_DUE);
    expect_tick(&p, 3999, 4000, TG_PROBE_IDLE);
    expect_tick(&p, 4000, 4000, TG_PROBE_TIMED_OUT);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    // ... and the next is due at once.
    expect_tick(&p, 4000, 4000, TG_PROBE_DUE);
    assert_int_equal(p.sent, 4000);

    // Exactly 10 s.
    new_probe(&p, 0);
    expect_tick(&p, 0, 10000, TG_PROBE_DUE);
    expect_tick(&p, 9999, 10000, TG_PROBE_IDLE);
    expect_tick(&p, 10000, 10000, TG_PROBE_TIMED_OUT);
}

static void test_threshold(void **state) {
    (void)state;
    struct tg_probe_state p;
    new_probe(&p, 0);
    // Two failures, threshold 3: still up.
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(p.down, 0);
    // A success in between starts the count again.
    assert_int_equal(tg_probe_result(&p, 1, 3), TG_PROBE_SAME);
    assert_int_equal(p.failures, 0);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    // The third in a row: down, once.
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_WENT_DOWN);
    assert_int_equal(p.down, 1);
    for (int i = 0; i < 300; i++)
        assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(p.failures, UINT8_MAX); // saturates, no wrap back below the threshold
    assert_int_equal(p.down, 1);
    // One success: up, once.
    assert_int_equal(tg_probe_result(&p, 1, 3), TG_PROBE_WENT_UP);
    assert_int_equal(p.down, 0);
    assert_int_equal(p.failures, 0);
    assert_int_equal(tg_probe_result(&p, 1, 3), TG_PROBE_SAME);
    // Down again needs the full threshold again.
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_SAME);
    assert_int_equal(tg_probe_result(&p, 0, 3), TG_PROBE_WENT_DOWN);

    // Threshold 1: the first failure.
    new_probe(&p, 0);
    assert_int_equal(tg_probe_result(&p, 0, 1), TG_PROBE_WENT_DOWN);
    assert_int_equal(tg_probe_result(&p, 0, 1), TG_PROBE_SAME);
    assert_int_equal(tg_probe_result(&p, 1, 1), TG_PROBE_WENT_UP);

    // A result clears the outstanding OPTIONS.
    new_probe(&p, 0);
    expect_tick(&p, 0, 1000, TG_PROBE_DUE);
    assert_int_equal(p.awaiting, 1);
    tg_probe_result(&p, 0, 2);
    assert_int_equal(p.awaiting, 0);
}

static void test_full_cycle(void **state) {
    (void)state;
    // Ticks every 100 ms for 10 minutes (one tg_probe_tick per tick, as probes.c does),
    // interval 5 s, threshold 2; the target stops answering at t = 60 s and answers again from
    // t = 120 s. WENT_DOWN and WENT_UP come exactly once each, and no two OPTIONS go out less
    // than an interval apart.
    struct tg_probe_state p;
    new_probe(&p, 0);
    const uint32_t iv = 5000;
    unsigned sent = 0, downs = 0, ups = 0;
    uint32_t down_at = 0, up_at = 0, last_sent = 0, second_lost_sent = 0, first_after = 0;
    unsigned lost = 0;
    for (uint32_t now = 0; now <= 600000; now += 100) {
        enum tg_probe_step s = tg_probe_tick(&p, now, iv);
        enum tg_probe_change ch = TG_PROBE_SAME;
        if (s == TG_PROBE_DUE) {
            if (sent > 0 && now - last_sent < iv)
                print_error("OPTIONS at %u, the previous at %u\n", now, last_sent);
            assert_true(sent == 0 || now - last_sent >= iv);
            sent++;
            last_sent = now;
            int answering = now < 60000 || now >= 120000;
            if (answering) {
                if (now >= 120000 && first_after == 0)
                    first_after = now;
                ch = tg_probe_result(&p, 1, 2); // answered at once
            } else if (++lost == 2) {
                second_lost_sent = now;
            }
        } else if (s == TG_PROBE_TIMED_OUT) {
            ch = tg_probe_result(&p, 0, 2);
        }
        if (ch == TG_PROBE_WENT_DOWN) {
            downs++;
            down_at = now;
        } else if (ch == TG_PROBE_WENT_UP) {
            ups++;
            up_at = now;
        }
    }
    assert_true(sent >= 100 && sent <= 600000 / iv + 1);
    assert_int_equal(downs, 1);
    assert_int_equal(ups, 1);
    // Down when the second unanswered OPTIONS times out; up at the first answer.
    assert_true(second_lost_sent > 60000);
    assert_int_equal(down_at, second_lost_sent + iv);
    assert_int_equal(up_at, first_after);
    assert_false(p.down);
}

static void test_clock_wrap(void **state) {
    (void)state;
    struct tg_probe_state p;
    const uint32_t t0 = UINT32_MAX - 2999; // 3 s before the wrap
    new_probe(&p, t0);
    expect_tick(&p, t0 - 1, 5000, TG_PROBE_IDLE);
    expect_tick(&p, t0, 5000, TG_PROBE_DUE);
    assert_int_equal(p.due, 2000); // t0 + 5000, past the wrap
    // The timeout (t0 + 5000 = 2000) is not reached at the wrap, nor just after.
    expect_tick(&p, UINT32_MAX, 5000, TG_PROBE_IDLE);
    expect_tick(&p, 0, 5000, TG_PROBE_IDLE);
    expect_tick(&p, 1999, 5000, TG_PROBE_IDLE);
    expect_tick(&p, 2000, 5000, TG_PROBE_TIMED_OUT);
    assert_int_equal(tg_probe_result(&p, 0, 5), TG_PROBE_SAME);
    expect_tick(&p, 2000, 5000, TG_PROBE_DUE);

    // Due across the wrap after an answer.
    new_probe(&p, UINT32_MAX - 100);
    expect_tick(&p, UINT32_MAX - 100, 1000, TG_PROBE_DUE);
    assert_int_equal(tg_probe_result(&p, 1, 5), TG_PROBE_SAME);
    expect_tick(&p, UINT32_MAX, 1000, TG_PROBE_IDLE);
    expect_tick(&p, 0, 1000, TG_PROBE_IDLE);
    expect_tick(&p, 898, 1000, TG_PROBE_IDLE);
    expect_tick(&p, 899, 1000, TG_PROBE_DUE);
}

// --- The request -----------------------------------------------------------------------------

static const char k_opt_v4[] =
    "OPTIONS sip:sip.example.net:5061;transport=tls SIP/2.0\r\n"
    "Via: SIP/2.0/TLS pbx.example.com:5062;branch=z9hG4bK-tgopt-2-1-7\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:pbx.example.com>;tag=tlsgate-2-1\r\n"
    "To: <sip:sip.example.net:5061>\r\n"
    "Call-ID: tlsgate-options-2-1-42@pbx.example.com\r\n"
    "CSeq: 7 OPTIONS\r\n"
    "Content-Length: 0\r\n"
    "\r\n";

static const char k_opt_v6[] = "OPTIONS sip:[2001:db8::1]:5061;transport=tls SIP/2.0\r\n"
                               "Via: SIP/2.0/TLS gw.example.org:5061;branch=z9hG4bK-tgopt-0-3-1\r\n"
                               "Max-Forwards: 70\r\n"
                               "From: <sip:gw.example.org>;tag=tlsgate-0-3\r\n"
                               "To: <sip:[2001:db8::1]:5061>\r\n"
                               "Call-ID: tlsgate-options-0-3-9@gw.example.org\r\n"
                               "CSeq: 1 OPTIONS\r\n"
                               "Content-Length: 0\r\n"
                               "\r\n";

static void test_format_exact(void **state) {
    (void)state;
    char out[1024];
    size_t n = tg_probe_format_options(out, sizeof(out), "sip.example.net", 5061, "pbx.example.com",
                                       5062, 2, 1, 7, 42);
    assert_int_equal(n, strlen(k_opt_v4));
    assert_string_equal(out, k_opt_v4);

    n = tg_probe_format_options(out, sizeof(out), "2001:db8::1", 5061, "gw.example.org", 5061, 0, 3,
                                1, 9);
    assert_int_equal(n, strlen(k_opt_v6));
    assert_string_equal(out, k_opt_v6);

    // An IPv4 literal gets no brackets.
    n = tg_probe_format_options(out, sizeof(out), "192.0.2.10", 5061, "pbx", 5061, 0, 0, 1, 1);
    assert_true(n > 0);
    assert_non_null(strstr(out, "OPTIONS sip:192.0.2.10:5061;transport=tls SIP/2.0\r\n"));
    assert_non_null(strstr(out, "To: <sip:192.0.2.10:5061>\r\n"));
    assert_null(strchr(out, '['));
}

static void test_format_scans_as_options(void **state) {
    (void)state;
    char out[1024];
    size_t n = tg_probe_format_options(out, sizeof(out), "2001:db8::1", 5061, "gw.example.org",
                                       5061, 4, 5, 123456, 7);
    assert_true(n > 0);
    struct tg_sip_header hdrs[32];
    struct tg_sip_msg m;
    assert_int_equal(tg_sip_scan(NULL, &m, hdrs, 32, (const uint8_t *)out, (uint32_t)n),
                     TG_SIP_MESSAGE);
    assert_int_equal(m.len, n);
    assert_true(m.is_request);
    assert_int_equal(m.method, TG_SIP_M_OPTIONS);
    // Our own request read back by the probe's scanner is not an answer.
    uint32_t len = 0;
    assert_int_equal(tg_probe_scan((const uint8_t *)out, (uint32_t)n, &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, n);
}

static void test_format_too_small(void **state) {
    (void)state;
    char out[1024];
    const size_t full = strlen(k_opt_v4);
    // Exactly the length leaves no room for the terminating NUL: refused.
    memset(out, 'x', sizeof(out));
    assert_int_equal(tg_probe_format_options(out, full, "sip.example.net", 5061, "pbx.example.com",
                                             5062, 2, 1, 7, 42),
                     0);
    assert_int_equal(tg_probe_format_options(out, 10, "sip.example.net", 5061, "pbx.example.com",
                                             5062, 2, 1, 7, 42),
                     0);
    assert_int_equal(tg_probe_format_options(NULL, 0, "sip.example.net", 5061, "pbx.example.com",
                                             5062, 2, 1, 7, 42),
                     0);
    // One more byte is enough.
    assert_int_equal(tg_probe_format_options(out, full + 1, "sip.example.net", 5061,
                                             "pbx.example.com", 5062, 2, 1, 7, 42),
                     full);
    assert_string_equal(out, k_opt_v4);
}

// --- The response scan -----------------------------------------------------------------------

static const char k_200[] = "SIP/2.0 200 OK\r\n"
                            "Via: SIP/2.0/TLS pbx.example.com:5061;branch=z9hG4bK-tgopt-2-1-7\r\n"
                            "From: <sip:pbx.example.com>;tag=tlsgate-2-1\r\n"
                            "To: <sip:sip.example.net:5061>;tag=abc\r\n"
                            "Call-ID: tlsgate-options-2-1-42@pbx.example.com\r\n"
                            "CSeq: 7 OPTIONS\r\n"
                            "Allow: INVITE, ACK, OPTIONS\r\n"
                            "Content-Length: 0\r\n"
                            "\r\n";

static const char k_100[] = "SIP/2.0 100 Trying\r\n"
                            "Via: SIP/2.0/TLS pbx.example.com:5061;branch=z9hG4bK-tgopt-2-1-7\r\n"
                            "CSeq: 7 OPTIONS\r\n"
                            "Content-Length: 0\r\n"
                            "\r\n";

static const char k_503_body[] = "SIP/2.0 503 Service Unavailable\r\n"
                                 "CSeq: 7 OPTIONS\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 5\r\n"
                                 "\r\n"
                                 "later";

static const char k_req[] = "OPTIONS sip:pbx.example.com SIP/2.0\r\n"
                            "Via: SIP/2.0/TLS 198.51.100.1:5061;branch=z9hG4bK-x\r\n"
                            "CSeq: 1 OPTIONS\r\n"
                            "Content-Length: 0\r\n"
                            "\r\n";

static enum tg_probe_scan_result scan_str(const char *s, size_t n, uint32_t *len) {
    *len = 0xdeadbeef;
    return tg_probe_scan((const uint8_t *)s, (uint32_t)n, len);
}

static void test_scan_answer(void **state) {
    (void)state;
    uint32_t len;
    assert_int_equal(scan_str(k_200, strlen(k_200), &len), TG_PROBE_SCAN_ANSWER);
    assert_int_equal(len, strlen(k_200));
    // Many headers: 64 header lines still make an answer.
    char many[4096];
    int off = snprintf(many, sizeof(many), "SIP/2.0 200 OK\r\nCSeq: 7 OPTIONS\r\n");
    for (int i = 0; i < 62; i++)
        off += snprintf(many + off, sizeof(many) - (size_t)off, "X-Hdr-%d: v\r\n", i);
    off += snprintf(many + off, sizeof(many) - (size_t)off, "Content-Length: 0\r\n\r\n");
    assert_true(off > 0 && (size_t)off < sizeof(many));
    assert_int_equal(scan_str(many, (size_t)off, &len), TG_PROBE_SCAN_ANSWER);
    assert_int_equal(len, (uint32_t)off);
    // Any final response is an answer, a body included.
    assert_int_equal(scan_str(k_503_body, strlen(k_503_body), &len), TG_PROBE_SCAN_ANSWER);
    assert_int_equal(len, strlen(k_503_body));
}

static void test_scan_skip(void **state) {
    (void)state;
    uint32_t len;
    // A provisional response.
    assert_int_equal(scan_str(k_100, strlen(k_100), &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, strlen(k_100));
    // A request from the target.
    assert_int_equal(scan_str(k_req, strlen(k_req), &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, strlen(k_req));
    // Keepalives: a ping (CRLFCRLF) and a pong (CRLF).
    assert_int_equal(scan_str("\r\n\r\n", 4, &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, 4);
    assert_int_equal(scan_str("\r\n", 2, &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, 2);
}

static void test_scan_more(void **state) {
    (void)state;
    uint32_t len;
    assert_int_equal(scan_str("", 0, &len), TG_PROBE_SCAN_MORE);
    assert_int_equal(len, 0);
    // Every proper prefix of the 200 (a CRLF alone aside) is incomplete.
    for (size_t n = 1; n < strlen(k_200); n++) {
        enum tg_probe_scan_result r = scan_str(k_200, n, &len);
        if (r != TG_PROBE_SCAN_MORE)
            print_error("prefix of %zu bytes: %d\n", n, (int)r);
        assert_int_equal(r, TG_PROBE_SCAN_MORE);
        assert_int_equal(len, 0);
    }
    // The body is not complete yet.
    assert_int_equal(scan_str(k_503_body, strlen(k_503_body) - 1, &len), TG_PROBE_SCAN_MORE);
    assert_int_equal(len, 0);
}

static void test_scan_broken(void **state) {
    (void)state;
    uint32_t len;
    static const char garbage[] = "HELLO WORLD\r\n\r\n";
    assert_int_equal(scan_str(garbage, strlen(garbage), &len), TG_PROBE_SCAN_BROKEN);
    assert_int_equal(len, 0);
    // A TLS record where plaintext was expected.
    static const uint8_t tls[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03};
    len = 0xdeadbeef;
    assert_int_equal(tg_probe_scan(tls, sizeof(tls), &len), TG_PROBE_SCAN_BROKEN);
    assert_int_equal(len, 0);
    // No Content-Length: a stream cannot be framed.
    static const char no_cl[] = "SIP/2.0 200 OK\r\nCSeq: 7 OPTIONS\r\n\r\n";
    assert_int_equal(scan_str(no_cl, strlen(no_cl), &len), TG_PROBE_SCAN_BROKEN);
    assert_int_equal(len, 0);
    // A malformed message that can be skipped is skipped, not taken as an answer.
    static const char bad_hdr[] = "SIP/2.0 200 OK\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(scan_str(bad_hdr, strlen(bad_hdr), &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, strlen(bad_hdr));
}

static void test_scan_pipelined(void **state) {
    (void)state;
    char buf[2048];
    const size_t a = strlen(k_100), b = strlen(k_200);
    memcpy(buf, k_100, a);
    memcpy(buf + a, k_200, b);
    uint32_t len;
    // The first message is the 100, with its own length; then the 200 after it.
    assert_int_equal(scan_str(buf, a + b, &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, a);
    assert_int_equal(scan_str(buf + len, a + b - len, &len), TG_PROBE_SCAN_ANSWER);
    assert_int_equal(len, b);
    // With the second message cut short, the first is still complete.
    assert_int_equal(scan_str(buf, a + 10, &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, a);
    assert_int_equal(scan_str(buf + a, 10, &len), TG_PROBE_SCAN_MORE);

    // A 200 with a body, then a keepalive.
    const size_t c = strlen(k_503_body);
    memcpy(buf, k_503_body, c);
    memcpy(buf + c, "\r\n\r\n", 4);
    assert_int_equal(scan_str(buf, c + 4, &len), TG_PROBE_SCAN_ANSWER);
    assert_int_equal(len, c);
    assert_int_equal(scan_str(buf + c, 4, &len), TG_PROBE_SCAN_SKIP);
    assert_int_equal(len, 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeout_ms),
        cmocka_unit_test(test_first_due_at_start),
        cmocka_unit_test(test_not_again_before_interval),
        cmocka_unit_test(test_timeout_is_min_interval_10s),
        cmocka_unit_test(test_threshold),
        cmocka_unit_test(test_full_cycle),
        cmocka_unit_test(test_clock_wrap),
        cmocka_unit_test(test_format_exact),
        cmocka_unit_test(test_format_scans_as_options),
        cmocka_unit_test(test_format_too_small),
        cmocka_unit_test(test_scan_answer),
        cmocka_unit_test(test_scan_skip),
        cmocka_unit_test(test_scan_more),
        cmocka_unit_test(test_scan_broken),
        cmocka_unit_test(test_scan_pipelined),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
