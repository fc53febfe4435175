// Unit tests for the per-connection SIP processing: what goes where, local answers, backpressure
// (a busy queue stops processing, nothing is lost), resynchronisation and giving up.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "tlsgate/sipconn.h"

static const uint8_t k_key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

// A fake worker: one output buffer per side and a switch that makes a side busy.
struct fake {
    char out[2][1 << 18];
    size_t out_len[2];
    int busy[2];
    int fail;
};

static int fake_can_send(void *arg, enum tg_sip_side side) {
    struct fake *f = arg;
    return !f->busy[side];
}

static int fake_send(void *arg, enum tg_sip_side side, const uint8_t *data, uint32_t len) {
    struct fake *f = arg;
    if (f->fail)
        return 0;
    assert_true(f->out_len[side] + len < sizeof(f->out[side]));
    memcpy(f->out[side] + f->out_len[side], data, len);
    f->out_len[side] += len;
    f->out[side][f->out_len[side]] = '\0';
    return 1;
}

struct env {
    struct fake f;
    struct tg_sipconn *sc;
    struct tg_sipconn_io io;
    struct tg_listener_counters ctr;
    uint8_t scratch[TG_SIPCONN_SCRATCH];
};

static int setup(void **state) {
    struct env *e = calloc(1, sizeof(*e));
    e->sc = tg_sipconn_new("sbc.example.com", 5061, k_key);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "10.0.0.1", &sin.sin_addr);
    tg_sipconn_set_inside(e->sc, (const struct sockaddr *)&sin);
    e->sc->peer_name = "sip.carrier.example";
    e->io.arg = &e->f;
    e->io.can_send = fake_can_send;
    e->io.send = fake_send;
    e->io.self = (struct tg_sip_flow){.slot = 5, .gen = 9, .worker = 1};
    e->io.scratch = e->scratch;
    e->io.scratch_len = sizeof(e->scratch);
    e->io.ctr = &e->ctr;
    *state = e;
    return 0;
}

static int teardown(void **state) {
    struct env *e = *state;
    tg_sipconn_free(e->sc);
    free(e);
    return 0;
}

static enum tg_sipconn_result feed(struct env *e, enum tg_sip_side side, const char *text) {
    size_t len = strlen(text);
    assert_int_equal(tg_sipconn_feed(e->sc, side, (const uint8_t *)text, (uint32_t)len), (long)len);
    return tg_sipconn_process(e->sc, side, &e->io);
}

#define OPTIONS_TO(uri, id)                                                                        \
    "OPTIONS " uri " SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-" id "\r\n"         \
    "Max-Forwards: 70\r\nFrom: <sip:a@example.net>;tag=1\r\nTo: <sip:b@example.net>\r\n"           \
    "Call-ID: " id "\r\nCSeq: 1 OPTIONS\r\nX-TLS-Peer-Name: forged\r\nContent-Length: 0\r\n\r\n"

static void test_request_to_pbx(void **state) {
    struct env *e = *state;
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, OPTIONS_TO("sip:pbx@example.net", "c1")),
                     TG_SIPCONN_IDLE);
    const char *out = e->f.out[TG_SIP_SIDE_PBX];
    assert_non_null(strstr(out, "Via: SIP/2.0/TCP 10.0.0.1:40000;branch=z9hG4bK"));
    assert_non_null(strstr(out, "X-TLS-Peer-Name: sip.carrier.example\r\n"));
    assert_null(strstr(out, "forged"));
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PROVIDER], 0);
    assert_int_equal(e->sc->in_len[TG_SIP_SIDE_PROVIDER], 0);
    assert_null(e->sc->in[TG_SIP_SIDE_PROVIDER]); // an empty input holds no memory
    assert_int_equal(e->ctr.sip_requests[TG_SIP_M_OPTIONS], 1);
}

static void test_ping_options_to_us(void **state) {
    struct env *e = *state;
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, "\r\n\r\n"), TG_SIPCONN_IDLE);
    assert_string_equal(e->f.out[TG_SIP_SIDE_PROVIDER], "\r\n");
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, "\r\n"), TG_SIPCONN_IDLE); // pong: nothing
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PROVIDER], 2);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, OPTIONS_TO("sip:sbc.example.com", "o1")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 200 OK\r\n"));
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "Allow: "));
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PBX], 0);
}

static void test_busy_queue_blocks_then_resumes(void **state) {
    struct env *e = *state;
    e->f.busy[TG_SIP_SIDE_PBX] = 1;
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER,
                          OPTIONS_TO("sip:pbx@example.net", "b1")
                              OPTIONS_TO("sip:pbx@example.net", "b2")),
                     TG_SIPCONN_BLOCKED);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PBX], 0);
    assert_true(e->sc->blocked[TG_SIP_SIDE_PROVIDER]);
    e->f.busy[TG_SIP_SIDE_PBX] = 0;
    assert_int_equal(tg_sipconn_process(e->sc, TG_SIP_SIDE_PROVIDER, &e->io), TG_SIPCONN_IDLE);
    const char *out = e->f.out[TG_SIP_SIDE_PBX];
    const char *b1 = strstr(out, "Call-ID: b1");
    const char *b2 = strstr(out, "Call-ID: b2");
    assert_non_null(b1);
    assert_non_null(b2);
    assert_true(b1 < b2);
    assert_false(e->sc->blocked[TG_SIP_SIDE_PROVIDER]);
}

static void test_response_round_trip_and_foreign_flow(void **state) {
    struct env *e = *state;
    assert_int_equal(feed(e, TG_SIP_SIDE_PBX, OPTIONS_TO("sip:carrier@192.0.2.1", "r1")),
                     TG_SIPCONN_IDLE);
    const char *req = e->f.out[TG_SIP_SIDE_PROVIDER];
    const char *via = strstr(req, "Via: SIP/2.0/TLS sbc.example.com:5061;branch=");
    assert_non_null(via);
    // The provider answers: copy every Via of the request.
    char resp[2048];
    int n = snprintf(resp, sizeof(resp), "SIP/2.0 200 OK\r\n");
    for (const char *v = strstr(req, "Via: "); v != NULL; v = strstr(v + 1, "Via: ")) {
        const char *end = strstr(v, "\r\n");
        n += snprintf(resp + n, sizeof(resp) - (size_t)n, "%.*s\r\n", (int)(end - v), v);
    }
    snprintf(resp + n, sizeof(resp) - (size_t)n,
             "From: <sip:a@example.net>;tag=1\r\nTo: <sip:b@example.net>;tag=2\r\n"
             "Call-ID: r1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, resp), TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS "
                                                      "192.0.2.1:5061;branch=z9hG4bK-r1\r\n"));
    assert_int_equal(e->ctr.sip_responses[1], 1);
    // The same response on another connection (another slot): dropped and counted.
    size_t before = e->f.out_len[TG_SIP_SIDE_PBX];
    e->io.self.slot = 6;
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, resp), TG_SIPCONN_IDLE);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PBX], before);
    assert_int_equal(e->ctr.sip_flow_errors, 1);
}

// tlsgate's own request (the BYE of a call it ends): its Via only, Route, Reason; the answer
// comes back verified and ends at tlsgate (neither forwarded nor counted as an error); a value
// holding CR or LF is refused.
static void test_own_request_and_its_answer(void **state) {
    struct env *e = *state;
    static const char k_route[] = "<sip:edge1.carrier.example;lr>";
    struct tg_sip_own_req r = {
        .method = TG_SIP_M_BYE,
        .ruri = "sip:carrier@192.0.2.1:5061;transport=tls",
        .route = k_route,
        .from = "<sip:pbx@example.net>;tag=p",
        .to = "<sip:carrier@example.net>;tag=c",
        .call_id = "own-1",
        .reason = "SIP;cause=408;text=\"media timeout\"",
        .cseq = 7,
    };
    r.ruri_len = (uint16_t)strlen(r.ruri);
    r.route_len = (uint16_t)strlen(r.route);
    r.from_len = (uint16_t)strlen(r.from);
    r.to_len = (uint16_t)strlen(r.to);
    r.call_id_len = (uint16_t)strlen(r.call_id);
    char out[2048];
    size_t n = 0;
    assert_true(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 42, &r,
                                         (uint8_t *)out, sizeof(out) - 1, &n));
    out[n] = '\0';
    const char *via = "Via: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK";
    assert_memory_equal(out, "BYE sip:carrier@192.0.2.1:5061;transport=tls SIP/2.0\r\n", 54);
    assert_non_null(strstr(out, via));
    assert_non_null(strstr(out, "\r\nMax-Forwards: 70\r\nRoute: <sip:edge1.carrier.example;lr>\r\n"
                                "From: <sip:pbx@example.net>;tag=p\r\n"
                                "To: <sip:carrier@example.net>;tag=c\r\nCall-ID: own-1\r\n"
                                "CSeq: 7 BYE\r\nReason: SIP;cause=408;text=\"media timeout\"\r\n"
                                "Content-Length: 0\r\n\r\n"));
    assert_int_equal(strlen(out), n);
    // Too small a buffer, a CR in a value: refused.
    assert_false(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 42, &r,
                                          (uint8_t *)out, n - 1, &n));
    r.to = "<sip:carrier@example.net>\r\nX: y";
    r.to_len = (uint16_t)strlen(r.to);
    assert_false(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 42, &r,
                                          (uint8_t *)out, sizeof(out), &n));
    r.to = "<sip:carrier@example.net>;tag=c";
    r.to_len = (uint16_t)strlen(r.to);
    r.ruri = "sip:carrier@192.0.2.1 x";
    r.ruri_len = (uint16_t)strlen(r.ruri);
    assert_false(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 42, &r,
                                          (uint8_t *)out, sizeof(out), &n));
    r.ruri = "sip:carrier@192.0.2.1:5061;transport=tls";
    r.ruri_len = (uint16_t)strlen(r.ruri);
    assert_true(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 42, &r,
                                         (uint8_t *)out, sizeof(out) - 1, &n));
    out[n] = '\0';
    // The provider's answer carries back our Via, the only one: absorbed.
    const char *v = strstr(out, "Via: ");
    const char *end = strstr(v, "\r\n");
    char resp[1024];
    snprintf(resp, sizeof(resp),
             "SIP/2.0 200 OK\r\n%.*s\r\nFrom: <sip:pbx@example.net>;tag=p\r\n"
             "To: <sip:carrier@example.net>;tag=c\r\nCall-ID: own-1\r\nCSeq: 7 BYE\r\n"
             "Content-Length: 0\r\n\r\n",
             (int)(end - v), v);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, resp), TG_SIPCONN_IDLE);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PBX], 0);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PROVIDER], 0);
    for (size_t i = 0; i < TG_SIP_RW_NUM; i++)
        assert_int_equal(e->ctr.sip_rw_errors[i], 0);
    // Toward the PBX: our inside address.
    assert_true(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PBX, &e->io.self, 43, &r,
                                         (uint8_t *)out, sizeof(out) - 1, &n));
    out[n] = '\0';
    assert_non_null(strstr(out, "Via: SIP/2.0/TCP 10.0.0.1:40000;branch=z9hG4bK"));
}

// A CANCEL of a relayed INVITE repeats the INVITE's top Via (RFC 3261 9.1): its 200, carrying
// that Via alone, is absorbed; the INVITE's 487, which carries the PBX's Via below it, goes on to
// the PBX as the answer of the INVITE's own transaction.
static void test_cancel_repeats_the_invite_via(void **state) {
    struct env *e = *state;
    assert_int_equal(feed(e, TG_SIP_SIDE_PBX,
                          "INVITE sip:+4930@carrier.example SIP/2.0\r\n"
                          "Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK-inv\r\n"
                          "From: <sip:100@pbx.example>;tag=p\r\nTo: <sip:+4930@carrier.example>\r\n"
                          "Call-ID: can-1\r\nCSeq: 3 INVITE\r\nContent-Length: 0\r\n\r\n"),
                     TG_SIPCONN_IDLE);
    const char *inv = e->f.out[TG_SIP_SIDE_PROVIDER];
    const char *v = strstr(inv, "Via: ") + 5;
    const char *v_end = strstr(v, "\r\n");
    char via[256];
    snprintf(via, sizeof(via), "%.*s", (int)(v_end - v), v);
    assert_non_null(strstr(via, "SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bK"));
    struct tg_sip_own_req r = {
        .method = TG_SIP_M_CANCEL,
        .ruri = "sip:+4930@carrier.example",
        .from = "<sip:100@pbx.example>;tag=p",
        .to = "<sip:+4930@carrier.example>",
        .call_id = "can-1",
        .reason = "SIP;cause=488",
        .via = via,
        .cseq = 3,
    };
    r.ruri_len = (uint16_t)strlen(r.ruri);
    r.from_len = (uint16_t)strlen(r.from);
    r.to_len = (uint16_t)strlen(r.to);
    r.call_id_len = (uint16_t)strlen(r.call_id);
    r.via_len = (uint16_t)strlen(via);
    char out[2048], want[2048];
    size_t n = 0;
    assert_true(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 99, &r,
                                         (uint8_t *)out, sizeof(out) - 1, &n));
    out[n] = '\0';
    snprintf(want, sizeof(want),
             "CANCEL sip:+4930@carrier.example SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
             "From: <sip:100@pbx.example>;tag=p\r\nTo: <sip:+4930@carrier.example>\r\n"
             "Call-ID: can-1\r\nCSeq: 3 CANCEL\r\nReason: SIP;cause=488\r\n"
             "Content-Length: 0\r\n\r\n",
             via);
    assert_string_equal(out, want);
    e->f.out_len[TG_SIP_SIDE_PROVIDER] = 0;
    char resp[1024];
    snprintf(resp, sizeof(resp),
             "SIP/2.0 200 OK\r\nVia: %s\r\nFrom: <sip:100@pbx.example>;tag=p\r\n"
             "To: <sip:+4930@carrier.example>;tag=c\r\nCall-ID: can-1\r\nCSeq: 3 CANCEL\r\n"
             "Content-Length: 0\r\n\r\n",
             via);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, resp), TG_SIPCONN_IDLE);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PBX], 0);
    snprintf(resp, sizeof(resp),
             "SIP/2.0 487 Request Terminated\r\nVia: %s\r\n"
             "Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK-inv\r\n"
             "From: <sip:100@pbx.example>;tag=p\r\n"
             "To: <sip:+4930@carrier.example>;tag=c\r\nCall-ID: can-1\r\nCSeq: 3 INVITE\r\n"
             "Content-Length: 0\r\n\r\n",
             via);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, resp), TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "SIP/2.0 487 Request Terminated\r\n"
                                                      "Via: SIP/2.0/TCP 10.0.0.9:5060;"));
    for (size_t i = 0; i < TG_SIP_RW_NUM; i++)
        assert_int_equal(e->ctr.sip_rw_errors[i], 0);
    // A Via holding a CR or LF is refused like any other value.
    r.via = "SIP/2.0/TLS x\r\nX: y";
    r.via_len = (uint16_t)strlen(r.via);
    assert_false(tg_sipconn_build_request(e->sc, TG_SIP_SIDE_PROVIDER, &e->io.self, 99, &r,
                                          (uint8_t *)out, sizeof(out), &n));
}

static void test_errors(void **state) {
    struct env *e = *state;
    // Max-Forwards 0: 483 on the side it came from, the stream goes on.
    const char *mf0 =
        "OPTIONS sip:pbx@example.net SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK-m\r\n"
        "Max-Forwards: 0\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n"
        "Call-ID: mf\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, mf0), TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 483 "));
    assert_int_equal(e->ctr.sip_rw_errors[TG_SIP_RW_TOO_MANY_HOPS], 1);
    // A body over the limit: 513, then the rest of the body is dropped as it arrives.
    char big[256];
    snprintf(big, sizeof(big),
             "MESSAGE sip:pbx@example.net SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK-b\r\n"
             "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: big\r\nCSeq: 1 MESSAGE\r\n"
             "Content-Length: %u\r\n\r\n",
             100000u);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, big), TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 513 "));
    assert_int_equal(e->sc->skip[TG_SIP_SIDE_PROVIDER], 100000u);
    static uint8_t junk[100000];
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(tg_sipconn_feed(e->sc, TG_SIP_SIDE_PROVIDER, junk, sizeof(junk)),
                     (long)sizeof(junk));
    assert_int_equal(e->sc->in_len[TG_SIP_SIDE_PROVIDER], 0);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, OPTIONS_TO("sip:pbx@example.net", "after")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "Call-ID: after"));
    // Not SIP at all: the stream cannot be resynchronised.
    assert_int_equal(feed(e, TG_SIP_SIDE_PBX, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                     TG_SIPCONN_CLOSE);
    assert_int_equal(e->ctr.sip_scan_errors[TG_SIP_ERR_BODY_TOO_LARGE], 1);
}

static void test_send_failure(void **state) {
    struct env *e = *state;
    e->f.fail = 1;
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, OPTIONS_TO("sip:pbx@example.net", "f")),
                     TG_SIPCONN_FAILED);
}

static void test_ipv6_inside(void **state) {
    struct env *e = *state;
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(5060)};
    inet_pton(AF_INET6, "fd00::1", &sin6.sin6_addr);
    tg_sipconn_set_inside(e->sc, (const struct sockaddr *)&sin6);
    assert_string_equal(e->sc->inside_host, "[fd00::1]");
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, OPTIONS_TO("sip:pbx@example.net", "v6")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "Via: SIP/2.0/TCP [fd00::1]:5060;"));
}

// feed_bytewise hands |text| to |side| one byte at a time, processing after each.
static enum tg_sipconn_result feed_bytewise(struct env *e, enum tg_sip_side side, const char *text,
                                            size_t len) {
    enum tg_sipconn_result r = TG_SIPCONN_IDLE;
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(tg_sipconn_feed(e->sc, side, (const uint8_t *)text + i, 1), 1);
        r = tg_sipconn_process(e->sc, side, &e->io);
        assert_true(r == TG_SIPCONN_IDLE);
    }
    return r;
}

// naive_next frames the next message of |p| (|n| bytes) as a weak parser does: head to the
// first CRLFCRLF, body as long as the first line starting "Content-Length:" or "l:" says.
static size_t naive_next(const char *p, size_t n) {
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    assert_non_null(end);
    size_t head = (size_t)(end - p) + 4, body = 0;
    for (const char *line = p; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        if (strncasecmp(line, "content-length:", 15) == 0 || strncasecmp(line, "l:", 2) == 0) {
            const char *v = memchr(line, ':', (size_t)(eol - line)) + 1;
            while (v < eol && *v == ' ')
                v++;
            for (; v < eol && *v >= '0' && *v <= '9'; v++)
                body = body * 10 + (size_t)(*v - '0');
            break;
        }
        line = eol + 2;
    }
    return head + body;
}

#define SMUGGLED                                                                                   \
    "OPTIONS sip:pbx@10.20.30.40 SIP/2.0\r\nVia: SIP/2.0/TCP 6.6.6.6;branch=z9hG4bK-smuggled\r\n"  \
    "From: <sip:evil@6.6.6.6>;tag=e\r\nTo: <sip:pbx@10.20.30.40>\r\nCall-ID: smuggled\r\n"         \
    "CSeq: 1 OPTIONS\r\nX-TLS-Peer-Name: evil.example\r\nContent-Length: 0\r\n\r\n"

static void test_smuggling_one_message_each(void **state) {
    struct env *e = *state;
    static const char *const shapes[] = {"Content-Length:\r\n %zu", "Content-Length:\r\n\t%zu",
                                         "l:\r\n %zu", "Content-Length : %zu"};
    const size_t num = sizeof(shapes) / sizeof(shapes[0]);
    for (size_t i = 0; i < num; i++) {
        char cl[64], msg[2048];
        snprintf(cl, sizeof(cl), shapes[i], strlen(SMUGGLED));
        int n = snprintf(msg, sizeof(msg),
                         "INVITE sip:pbx@example.net SIP/2.0\r\n"
                         "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-s%zu\r\n"
                         "Max-Forwards: 70\r\nFrom: <sip:a@example.net>;tag=1\r\n"
                         "To: <sip:b@example.net>\r\nCall-ID: smug-%zu\r\nCSeq: 1 INVITE\r\n"
                         "X-Foo: a\r\n X-TLS-Peer-Name: evil.example\r\n"
                         "Content-Type: text/plain\r\n%s\r\n\r\n%s",
                         i, i, cl, SMUGGLED);
        feed_bytewise(e, TG_SIP_SIDE_PROVIDER, msg, (size_t)n);
    }
    // The PBX, framing as naively as it likes, sees exactly one INVITE per message sent, each
    // with the smuggled text as its body and only the verified identity.
    const char *p = e->f.out[TG_SIP_SIDE_PBX];
    size_t left = e->f.out_len[TG_SIP_SIDE_PBX], count = 0;
    while (left > 0) {
        size_t len = naive_next(p, left);
        assert_true(len <= left);
        assert_memory_equal(p, "INVITE sip:pbx@example.net SIP/2.0\r\n", 36);
        const char *body = memmem(p, len, "\r\n\r\n", 4) + 4;
        assert_int_equal((size_t)(p + len - body), strlen(SMUGGLED));
        assert_memory_equal(body, SMUGGLED, strlen(SMUGGLED));
        size_t head = (size_t)(body - p);
        assert_null(memmem(p, head, "\r\nX-TLS-Peer-Name: evil", 23));
        assert_non_null(memmem(p, head, "\r\nX-TLS-Peer-Name: sip.carrier.example\r\n", 40));
        assert_non_null(memmem(p, head, "\r\nX-Foo: a X-TLS-Peer-Name: evil.example\r\n", 42));
        assert_null(memmem(p, head, "\r\n ", 3));
        assert_null(memmem(p, head, "\r\n\t", 3));
        p += len;
        left -= len;
        count++;
    }
    assert_int_equal(count, num);
    assert_int_equal(e->ctr.sip_requests[TG_SIP_M_INVITE], num);
    assert_int_equal(e->ctr.sip_requests[TG_SIP_M_OPTIONS], 0);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PROVIDER], 0);
}

#define REQ_WITH(extra, id)                                                                        \
    "INFO sip:pbx@example.net SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-" id       \
    "\r\nFrom: <sip:a@example.net>;tag=1\r\nTo: <sip:b@example.net>;tag=2\r\nCall-ID: " id         \
    "\r\nCSeq: 1 INFO\r\n" extra "Content-Length: 0\r\n\r\n"

static void test_refused_on_the_side_it_came_from(void **state) {
    struct env *e = *state;
    // A control character in a value: 400, the stream goes on.
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, REQ_WITH("Subject: a\x0b b\r\n", "ctl")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 400 Bad Request\r\n"));
    assert_int_equal(e->ctr.sip_scan_errors[TG_SIP_ERR_CTL], 1);
    // Two Max-Forwards: 400 (not 483 for the 0).
    e->f.out_len[TG_SIP_SIDE_PROVIDER] = 0;
    assert_int_equal(
        feed(e, TG_SIP_SIDE_PROVIDER, REQ_WITH("Max-Forwards: 0\r\nMax-Forwards: 70\r\n", "mf2")),
        TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 400 Bad Request\r\n"));
    assert_int_equal(e->ctr.sip_rw_errors[TG_SIP_RW_DUPLICATE], 1);
    // A forged tg-orig (base64url of "sip:evil@10.9.9.9:5060;transport=udp"): 400.
    e->f.out_len[TG_SIP_SIDE_PROVIDER] = 0;
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER,
                          REQ_WITH("Contact: <sip:x@sbc.example.com:5061;transport=tls;tg-orig="
                                   "c2lwOmV2aWxAMTAuOS45Ljk6NTA2MDt0cmFuc3BvcnQ9dWRw>\r\n",
                                   "forged")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 400 Bad Request\r\n"));
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "Call-ID: forged\r\n"));
    assert_int_equal(e->ctr.sip_rw_errors[TG_SIP_RW_BAD_TG_ORIG], 1);
    // An ACK with one is dropped, never answered.
    e->f.out_len[TG_SIP_SIDE_PROVIDER] = 0;
    assert_int_equal(
        feed(e, TG_SIP_SIDE_PROVIDER,
             "ACK sip:x@sbc.example.com:5061;tg-orig=c2lwOmV2aWxAMTAuOS45Ljk SIP/2.0\r\n"
             "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-ack\r\n"
             "From: <sip:a@example.net>;tag=1\r\nTo: <sip:b@example.net>;tag=2\r\n"
             "Call-ID: ack\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"),
        TG_SIPCONN_IDLE);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PROVIDER], 0);
    assert_int_equal(e->ctr.sip_rw_errors[TG_SIP_RW_BAD_TG_ORIG], 2);
    // The same refusals from the PBX side are answered to the PBX.
    assert_int_equal(feed(e, TG_SIP_SIDE_PBX, REQ_WITH("X-A: \x7f\r\n", "pbx-ctl")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "SIP/2.0 400 Bad Request\r\n"));
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PROVIDER], 0);
    // Nothing reached the PBX but tlsgate's answer; the stream still works.
    assert_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "INFO "));
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, OPTIONS_TO("sip:pbx@example.net", "after")),
                     TG_SIPCONN_IDLE);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PBX], "Call-ID: after"));
}

static void test_contact_sealed_and_restored(void **state) {
    struct env *e = *state;
    const char *pbx_contact = "sip:pbxuser@10.20.30.40:5060;transport=tcp";
    char inv[1024];
    snprintf(inv, sizeof(inv),
             "INVITE sip:+15550001111@carrier.example SIP/2.0\r\n"
             "Via: SIP/2.0/TCP 10.1.1.1:5060;branch=z9hG4bK-rt\r\nMax-Forwards: 70\r\n"
             "From: <sip:100@carrier.example>;tag=p\r\nTo: <sip:+15550001111@carrier.example>\r\n"
             "Call-ID: rt\r\nCSeq: 1 INVITE\r\nContact: <%s>\r\nContent-Length: 0\r\n\r\n",
             pbx_contact);
    assert_int_equal(feed(e, TG_SIP_SIDE_PBX, inv), TG_SIPCONN_IDLE);
    const char *out = e->f.out[TG_SIP_SIDE_PROVIDER];
    // Nothing of the PBX's address reaches the provider, as text or base64.
    assert_null(strstr(out, "10.20.30.40"));
    assert_null(strstr(out, "MTAuMjAuMzAuNDA")); // base64 of "10.20.30.40" at each alignment
    assert_null(strstr(out, "EwLjIwLjMwLjQw"));
    assert_null(strstr(out, "xMC4yMC4zMC40MA"));
    const char *c =
        strstr(out, "\r\nContact: <sip:pbxuser@sbc.example.com:5061;transport=tls;tg-orig=");
    assert_non_null(c);
    c = strchr(c, '<') + 1;
    char uri[512];
    size_t n = strcspn(c, ">");
    memcpy(uri, c, n);
    uri[n] = '\0';
    // The provider's BYE to that Contact reaches the PBX at exactly the URI it gave.
    char bye[1024];
    snprintf(bye, sizeof(bye),
             "BYE %s SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-rtb\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:+15550001111@carrier.example>;tag=q\r\n"
             "To: <sip:100@carrier.example>;tag=p\r\nCall-ID: rt\r\nCSeq: 2 BYE\r\n"
             "Content-Length: 0\r\n\r\n",
             uri);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, bye), TG_SIPCONN_IDLE);
    char want[256];
    snprintf(want, sizeof(want), "BYE %s SIP/2.0\r\n", pbx_contact);
    assert_memory_equal(e->f.out[TG_SIP_SIDE_PBX], want, strlen(want));
    // The same URI with one character of its tg-orig changed: refused with 400.
    char *t = strstr(uri, "tg-orig=") + 10;
    *t = *t == 'Q' ? 'R' : 'Q';
    size_t before = e->f.out_len[TG_SIP_SIDE_PBX];
    snprintf(bye, sizeof(bye),
             "BYE %s SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-rtc\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:+15550001111@carrier.example>;tag=q\r\n"
             "To: <sip:100@carrier.example>;tag=p\r\nCall-ID: rt\r\nCSeq: 3 BYE\r\n"
             "Content-Length: 0\r\n\r\n",
             uri);
    assert_int_equal(feed(e, TG_SIP_SIDE_PROVIDER, bye), TG_SIPCONN_IDLE);
    assert_int_equal(e->f.out_len[TG_SIP_SIDE_PBX], before);
    assert_non_null(strstr(e->f.out[TG_SIP_SIDE_PROVIDER], "SIP/2.0 400 Bad Request\r\n"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_to_pbx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_options_to_us, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_queue_blocks_then_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_round_trip_and_foreign_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_request_and_its_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_repeats_the_invite_via, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_inside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_smuggling_one_message_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_on_the_side_it_came_from, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contact_sealed_and_restored, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
