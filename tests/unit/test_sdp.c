// Unit tests for the SDP parser and writer and the a=crypto attribute: real-world shaped offers
// and answers (a carrier SAVP offer with two crypto lines, a PBX RTP/AVP offer, rtcp-mux, hold,
// declined sections, IPv6) rewritten and compared line by line; malformed bodies refused with
// the right status and line; crypto parse/format round trips; the suite choice. The base64
// literals below were computed with Python's base64 module; BoringSSL's EVP_EncodeBlock checks
// the formatter's encoding independently.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <openssl/base64.h>

#include "tlsgate/sdp.h"

// key||salt of the test keys: bytes 1..30, 0x40..0x5d, 0xa0..0xbb (GCM, 28 bytes), and
// 16 x 0x11 then 14 x 0x22.
#define K80 "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"
#define K32 "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xd"
#define KGCM "oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6uw=="
#define KOUT "ERERERERERERERERERERESIiIiIiIiIiIiIiIiIi"

static void fill_seq(uint8_t *p, size_t n, uint8_t first) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(first + i);
}

static struct tg_sdp g_sdp; // large: kept out of the stack frames
static char g_out[TG_SDP_MAX_BODY * 3];

static void must_parse(struct tg_sdp *s, const char *body) {
    char why[160];
    enum tg_sdp_status st = tg_sdp_parse(s, body, strlen(body), why, sizeof(why));
    if (st != TG_SDP_OK)
        print_error("parse failed (%d): %s\n", st, why);
    assert_int_equal(st, TG_SDP_OK);
}

// expect_lines compares |got| (|n| bytes, CRLF lines) with |want| (LF lines) line by line.
static void expect_lines(const char *got, size_t n, const char *want) {
    size_t gi = 0, wi = 0, line = 1;
    size_t wn = strlen(want);
    while (gi < n && wi < wn) {
        const char *ge = memchr(got + gi, '\r', n - gi);
        const char *we = memchr(want + wi, '\n', wn - wi);
        assert_non_null(ge);
        assert_non_null(we);
        assert_true(ge + 1 < got + n && ge[1] == '\n');
        size_t gl = (size_t)(ge - (got + gi)), wl = (size_t)(we - (want + wi));
        if (gl != wl || memcmp(got + gi, want + wi, gl) != 0) {
            print_error("line %zu:\n  got  %.*s\n  want %.*s\n", line, (int)gl, got + gi, (int)wl,
                        want + wi);
            fail();
        }
        gi += gl + 2;
        wi += wl + 1;
        line++;
    }
    if (gi != n || wi != wn)
        print_error("line %zu: got %zu more bytes, want %zu more\n", line, n - gi, wn - wi);
    assert_int_equal(gi, n);
    assert_int_equal(wi, wn);
}

// rewrite parses |body|, writes it with |addr| and |mo| and compares with |want|; the output
// must parse again, with the out ports.
static void rewrite(const char *body, const char *addr, const struct tg_sdp_media_out *mo,
                    const char *want) {
    must_parse(&g_sdp, body);
    size_t n = 0;
    assert_true(tg_sdp_write_max(&g_sdp) <= sizeof(g_out));
    assert_int_equal(
        tg_sdp_write(&g_sdp, body, strlen(body), addr, mo, g_out, tg_sdp_write_max(&g_sdp), &n),
        TG_SDP_OK);
    expect_lines(g_out, n, want);
    static struct tg_sdp again;
    char why[160];
    enum tg_sdp_status st = tg_sdp_parse(&again, g_out, n, why, sizeof(why));
    if (st != TG_SDP_OK)
        print_error("the output does not parse: %s\n", why);
    assert_int_equal(st, TG_SDP_OK);
    assert_int_equal(again.num_media, g_sdp.num_media);
    for (size_t i = 0; i < again.num_media; i++)
        assert_int_equal(again.media[i].port, mo[i].port);
}

// ---- a carrier (Teams-shaped) SAVP offer -----------------------------------------------------

static const char k_carrier_offer[] =
    "v=0\r\n"
    "o=- 3847 0 IN IP4 52.114.76.76\r\n"
    "s=SmartDialer\r\n"
    "c=IN IP4 52.114.76.76\r\n"
    "b=CT:10000000\r\n"
    "t=0 0\r\n"
    "m=audio 53210 RTP/SAVP 104 9 111 18 0 8 103 97 13 118 101\r\n"
    "c=IN IP4 52.114.76.76\r\n"
    "a=rtcp:53211\r\n"
    "a=label:main-audio\r\n"
    "a=mid:1\r\n"
    "a=sendrecv\r\n"
    "a=rtpmap:104 SILK/16000\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:111 SIREN/16000\r\n"
    "a=fmtp:111 bitrate=16000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^31|1:1\r\n"
    "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:" K32 "|2^31\r\n"
    "a=ptime:20\r\n";

static void test_carrier_offer_parse(void **state) {
    (void)state;
    must_parse(&g_sdp, k_carrier_offer);
    assert_int_equal(g_sdp.origin.family, AF_INET);
    const uint8_t ip[4] = {52, 114, 76, 76};
    assert_memory_equal(g_sdp.origin.bytes, ip, 4);
    assert_int_equal(g_sdp.num_media, 1);
    const struct tg_sdp_media *m = &g_sdp.media[0];
    assert_true(m->audio);
    assert_int_equal(m->port, 53210);
    assert_int_equal(m->rtcp_port, 53211);
    assert_false(m->rtcp_mux);
    assert_int_equal(m->proto, TG_SDP_RTP_SAVP);
    assert_int_equal(m->dir, TG_SDP_SENDRECV);
    assert_int_equal(m->conn.family, AF_INET);
    assert_false(m->conn.hold);
    assert_int_equal(m->num_crypto, 2);
    uint8_t ks[30];
    fill_seq(ks, 30, 1);
    const struct tg_sdp_crypto *c = &m->crypto[0];
    assert_int_equal(c->tag, 2);
    assert_true(c->usable);
    assert_int_equal(c->params.suite, TG_SRTP_AES_CM_128_HMAC_SHA1_80);
    assert_memory_equal(c->params.key, ks, 16);
    assert_memory_equal(c->params.salt, ks + 16, 14);
    assert_int_equal(c->lifetime_log2, 31);
    assert_int_equal(c->params.mki, 1);
    assert_int_equal(c->params.mki_len, 1);
    c = &m->crypto[1];
    fill_seq(ks, 30, 0x40);
    assert_int_equal(c->tag, 3);
    assert_true(c->usable);
    assert_int_equal(c->params.suite, TG_SRTP_AES_CM_128_HMAC_SHA1_32);
    assert_memory_equal(c->params.key, ks, 16);
    assert_memory_equal(c->params.salt, ks + 16, 14);
    assert_int_equal(c->lifetime_log2, 31);
    assert_int_equal(c->params.mki_len, 0);
}

// Toward the PBX: RTP/AVP, tlsgate's inside address and ports, no crypto line.
static void test_carrier_offer_to_pbx(void **state) {
    (void)state;
    struct tg_sdp_media_out mo = {.port = 40000, .rtcp_port = 40001};
    rewrite(k_carrier_offer, "10.0.0.1", &mo,
            "v=0\n"
            "o=- 3847 0 IN IP4 10.0.0.1\n"
            "s=SmartDialer\n"
            "c=IN IP4 10.0.0.1\n"
            "b=CT:10000000\n"
            "t=0 0\n"
            "m=audio 40000 RTP/AVP 104 9 111 18 0 8 103 97 13 118 101\n"
            "c=IN IP4 10.0.0.1\n"
            "a=rtcp:40001\n"
            "a=label:main-audio\n"
            "a=mid:1\n"
            "a=sendrecv\n"
            "a=rtpmap:104 SILK/16000\n"
            "a=rtpmap:9 G722/8000\n"
            "a=rtpmap:111 SIREN/16000\n"
            "a=fmtp:111 bitrate=16000\n"
            "a=rtpmap:18 G729/8000\n"
            "a=fmtp:18 annexb=no\n"
            "a=rtpmap:0 PCMU/8000\n"
            "a=rtpmap:8 PCMA/8000\n"
            "a=rtpmap:101 telephone-event/8000\n"
            "a=fmtp:101 0-16\n"
            "a=ptime:20\n");
}

// The answer back toward the provider: RTP/SAVP with tlsgate's own key, in place of the first
// crypto line, answering the offer's tag and MKI length.
static void test_carrier_answer_to_provider(void **state) {
    (void)state;
    struct tg_sdp_media_out mo = {.port = 30000, .rtcp_port = 30001, .secure = 1};
    mo.crypto.tag = 2;
    mo.crypto.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    memset(mo.crypto.params.key, 0x11, 16);
    memset(mo.crypto.params.salt, 0x22, 14);
    mo.crypto.params.mki = 1;
    mo.crypto.params.mki_len = 1;
    mo.crypto.lifetime_log2 = 31;
    rewrite(k_carrier_offer, "203.0.113.5", &mo,
            "v=0\n"
            "o=- 3847 0 IN IP4 203.0.113.5\n"
            "s=SmartDialer\n"
            "c=IN IP4 203.0.113.5\n"
            "b=CT:10000000\n"
            "t=0 0\n"
            "m=audio 30000 RTP/SAVP 104 9 111 18 0 8 103 97 13 118 101\n"
            "c=IN IP4 203.0.113.5\n"
            "a=rtcp:30001\n"
            "a=label:main-audio\n"
            "a=mid:1\n"
            "a=sendrecv\n"
            "a=rtpmap:104 SILK/16000\n"
            "a=rtpmap:9 G722/8000\n"
            "a=rtpmap:111 SIREN/16000\n"
            "a=fmtp:111 bitrate=16000\n"
            "a=rtpmap:18 G729/8000\n"
            "a=fmtp:18 annexb=no\n"
            "a=rtpmap:0 PCMU/8000\n"
            "a=rtpmap:8 PCMA/8000\n"
            "a=rtpmap:101 telephone-event/8000\n"
            "a=fmtp:101 0-16\n"
            "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" KOUT "|2^31|1:1\n"
            "a=ptime:20\n");
}

// ---- a PBX RTP/AVP offer (LF line ends) ------------------------------------------------------

static const char k_pbx_offer[] = "v=0\n"
                                  "o=root 1821 1821 IN IP4 192.168.1.10\n"
                                  "s=Asterisk PBX 18.20.0\n"
                                  "c=IN IP4 192.168.1.10\n"
                                  "t=0 0\n"
                                  "m=audio 10000 RTP/AVP 0 8 101\n"
                                  "a=rtpmap:0 PCMU/8000\n"
                                  "a=rtpmap:8 PCMA/8000\n"
                                  "a=rtpmap:101 telephone-event/8000\n"
                                  "a=fmtp:101 0-16\n"
                                  "a=ptime:20\n"
                                  "a=maxptime:150\n"
                                  "a=sendrecv\n";

static void test_pbx_offer_to_provider(void **state) {
    (void)state;
    must_parse(&g_sdp, k_pbx_offer);
    assert_int_equal(g_sdp.media[0].proto, TG_SDP_RTP_AVP);
    assert_int_equal(g_sdp.media[0].num_crypto, 0);
    assert_int_equal(g_sdp.media[0].rtcp_port, 0);
    assert_true(g_sdp.media[0].conn_here == 0 && g_sdp.media[0].conn.family == AF_INET);
    struct tg_sdp_media_out mo = {.port = 30002, .rtcp_port = 30003, .secure = 1};
    mo.crypto.tag = 1;
    mo.crypto.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    memset(mo.crypto.params.key, 0x11, 16);
    memset(mo.crypto.params.salt, 0x22, 14);
    mo.crypto.lifetime_log2 = 31;
    // No crypto line to replace: the key goes at the end of the section.
    rewrite(k_pbx_offer, "203.0.113.5", &mo,
            "v=0\n"
            "o=root 1821 1821 IN IP4 203.0.113.5\n"
            "s=Asterisk PBX 18.20.0\n"
            "c=IN IP4 203.0.113.5\n"
            "t=0 0\n"
            "m=audio 30002 RTP/SAVP 0 8 101\n"
            "a=rtpmap:0 PCMU/8000\n"
            "a=rtpmap:8 PCMA/8000\n"
            "a=rtpmap:101 telephone-event/8000\n"
            "a=fmtp:101 0-16\n"
            "a=ptime:20\n"
            "a=maxptime:150\n"
            "a=sendrecv\n"
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" KOUT "|2^31\n");
}

// RFC 4566 allows a host name in o= (unicast-address = ... / FQDN): taken, and rewritten like
// a number; c= stays numeric (media goes there).
static void test_origin_fqdn(void **state) {
    (void)state;
    static const char body[] = "v=0\n"
                               "o=- 7 8 IN IP4 pbx-1.example.com\n"
                               "s=-\n"
                               "c=IN IP4 192.168.1.10\n"
                               "t=0 0\n"
                               "m=audio 10000 RTP/AVP 0\n";
    must_parse(&g_sdp, body);
    assert_int_equal(g_sdp.origin.family, AF_INET);
    assert_true(g_sdp.origin.name);
    assert_false(g_sdp.origin.hold);
    assert_false(g_sdp.conn.name);
    struct tg_sdp_media_out mo = {.port = 30000, .rtcp_port = 30001};
    rewrite(body, "10.0.0.1", &mo,
            "v=0\n"
            "o=- 7 8 IN IP4 10.0.0.1\n"
            "s=-\n"
            "c=IN IP4 10.0.0.1\n"
            "t=0 0\n"
            "m=audio 30000 RTP/AVP 0\n");
    static const char v6[] = "v=0\r\no=- 1 1 IN IP6 sbc.example.net\r\ns=-\r\n";
    must_parse(&g_sdp, v6);
    assert_int_equal(g_sdp.origin.family, AF_INET6);
    assert_true(g_sdp.origin.name);
}

// An RTCP port that is not port + 1 needs an a=rtcp line even when the input had none.
static void test_rtcp_port_added(void **state) {
    (void)state;
    struct tg_sdp_media_out mo = {.port = 30002, .rtcp_port = 30007};
    rewrite(k_pbx_offer, "10.1.1.1", &mo,
            "v=0\n"
            "o=root 1821 1821 IN IP4 10.1.1.1\n"
            "s=Asterisk PBX 18.20.0\n"
            "c=IN IP4 10.1.1.1\n"
            "t=0 0\n"
            "m=audio 30002 RTP/AVP 0 8 101\n"
            "a=rtpmap:0 PCMU/8000\n"
            "a=rtpmap:8 PCMA/8000\n"
            "a=rtpmap:101 telephone-event/8000\n"
            "a=fmtp:101 0-16\n"
            "a=ptime:20\n"
            "a=maxptime:150\n"
            "a=sendrecv\n"
            "a=rtcp:30007\n");
}

// ---- ICE: never forwarded ---------------------------------------------------------------------

// A PBX that runs ICE lists its internal addresses as candidates: none may reach the provider,
// at session or media level, whatever the spelling of the property attributes.
static const char k_ice_offer[] = "v=0\r\n"
                                  "o=- 9 9 IN IP4 10.1.1.1\r\n"
                                  "s=-\r\n"
                                  "a=ice-lite\r\n"
                                  "a=ice-options:trickle\r\n"
                                  "c=IN IP4 10.1.1.1\r\n"
                                  "t=0 0\r\n"
                                  "m=audio 30000 RTP/AVP 0\r\n"
                                  "a=ice-ufrag:F7gI\r\n"
                                  "a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
                                  "a=candidate:1 1 UDP 2130706431 10.1.1.1 30000 typ host\r\n"
                                  "a=candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx "
                                  "raddr 10.1.1.1 rport 30000\r\n"
                                  "a=remote-candidates:1 192.0.2.9 5000\r\n"
                                  "a=end-of-candidates \r\n"
                                  "a=rtpmap:0 PCMU/8000\r\n";

static void test_ice_dropped(void **state) {
    (void)state;
    struct tg_sdp_media_out mo = {.port = 41000, .rtcp_port = 41001};
    rewrite(k_ice_offer, "203.0.113.5", &mo,
            "v=0\n"
            "o=- 9 9 IN IP4 203.0.113.5\n"
            "s=-\n"
            "c=IN IP4 203.0.113.5\n"
            "t=0 0\n"
            "m=audio 41000 RTP/AVP 0\n"
            "a=rtpmap:0 PCMU/8000\n"); // RTCP on port + 1: implied, no a=rtcp line
}

// ---- rtcp-mux, a=rtcp with an address --------------------------------------------------------

static const char k_mux_offer[] = "v=0\r\n"
                                  "o=- 7 2 IN IP4 198.51.100.7\r\n"
                                  "s=-\r\n"
                                  "t=0 0\r\n"
                                  "m=audio 5004 RTP/SAVPF 111 0\r\n"
                                  "c=IN IP4 198.51.100.7\r\n"
                                  "a=rtcp:5004 IN IP4 198.51.100.7\r\n"
                                  "a=rtcp-mux\r\n"
                                  "a=rtcp-fb:111 nack\r\n"
                                  "a=crypto:1 AEAD_AES_128_GCM inline:" KGCM "\r\n"
                                  "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n";

static void test_rtcp_mux(void **state) {
    (void)state;
    must_parse(&g_sdp, k_mux_offer);
    const struct tg_sdp_media *m = &g_sdp.media[0];
    assert_true(m->rtcp_mux);
    assert_int_equal(m->rtcp_port, 5004);
    assert_int_equal(m->proto, TG_SDP_RTP_SAVPF);
    assert_int_equal(g_sdp.conn.family, 0);
    assert_true(m->conn_here);
    assert_int_equal(m->crypto[0].params.suite, TG_SRTP_AEAD_AES_128_GCM);
    uint8_t ks[28];
    fill_seq(ks, 28, 0xa0);
    assert_memory_equal(m->crypto[0].params.key, ks, 16);
    assert_memory_equal(m->crypto[0].params.salt, ks + 16, 12);
    // Mux kept: a=rtcp dropped, a=rtcp-mux kept, AVPF stays feedback.
    struct tg_sdp_media_out mo = {.port = 40010, .rtcp_mux = 1};
    rewrite(k_mux_offer, "10.0.0.1", &mo,
            "v=0\n"
            "o=- 7 2 IN IP4 10.0.0.1\n"
            "s=-\n"
            "t=0 0\n"
            "m=audio 40010 RTP/AVPF 111 0\n"
            "c=IN IP4 10.0.0.1\n"
            "a=rtcp-mux\n"
            "a=rtcp-fb:111 nack\n");
    // Mux not kept: a=rtcp rewritten (no address: c= names tlsgate), a=rtcp-mux dropped.
    mo = (struct tg_sdp_media_out){.port = 40010, .rtcp_port = 40011};
    rewrite(k_mux_offer, "10.0.0.1", &mo,
            "v=0\n"
            "o=- 7 2 IN IP4 10.0.0.1\n"
            "s=-\n"
            "t=0 0\n"
            "m=audio 40010 RTP/AVPF 111 0\n"
            "c=IN IP4 10.0.0.1\n"
            "a=rtcp:40011\n"
            "a=rtcp-fb:111 nack\n");
}

// ---- hold ------------------------------------------------------------------------------------

static void test_hold_forms(void **state) {
    (void)state;
    // RFC 2543 hold: c=0.0.0.0 at session level, kept; a=sendonly at session level applies to
    // every section that says nothing; a=inactive in the second overrides it.
    static const char body[] = "v=0\r\n"
                               "o=- 1 2 IN IP4 192.168.1.10\r\n"
                               "s=-\r\n"
                               "c=IN IP4 0.0.0.0\r\n"
                               "t=0 0\r\n"
                               "a=sendonly\r\n"
                               "m=audio 10000 RTP/AVP 0\r\n"
                               "m=audio 10002 RTP/AVP 8\r\n"
                               "a=inactive\r\n";
    must_parse(&g_sdp, body);
    assert_int_equal(g_sdp.dir, TG_SDP_SENDONLY);
    assert_int_equal(g_sdp.media[0].dir, TG_SDP_SENDONLY);
    assert_int_equal(g_sdp.media[1].dir, TG_SDP_INACTIVE);
    assert_true(g_sdp.media[0].conn.hold);
    assert_true(g_sdp.media[1].conn.hold);
    struct tg_sdp_media_out mo[2] = {{.port = 40000, .rtcp_port = 40001},
                                     {.port = 40002, .rtcp_port = 40003}};
    rewrite(body, "10.0.0.1", mo,
            "v=0\n"
            "o=- 1 2 IN IP4 10.0.0.1\n"
            "s=-\n"
            "c=IN IP4 0.0.0.0\n"
            "t=0 0\n"
            "a=sendonly\n"
            "m=audio 40000 RTP/AVP 0\n"
            "m=audio 40002 RTP/AVP 8\n"
            "a=inactive\n");
    // Media-level sendonly and recvonly with a real address: the address moves, the
    // direction stays.
    static const char body2[] = "v=0\n"
                                "o=- 1 3 IN IP4 192.168.1.10\n"
                                "s=-\n"
                                "t=0 0\n"
                                "m=audio 10000 RTP/AVP 0\n"
                                "c=IN IP4 192.168.1.10\n"
                                "a=recvonly\n";
    must_parse(&g_sdp, body2);
    assert_int_equal(g_sdp.media[0].dir, TG_SDP_RECVONLY);
    rewrite(body2, "10.0.0.1", mo,
            "v=0\n"
            "o=- 1 3 IN IP4 10.0.0.1\n"
            "s=-\n"
            "t=0 0\n"
            "m=audio 40000 RTP/AVP 0\n"
            "c=IN IP4 10.0.0.1\n"
            "a=recvonly\n");
}

// ---- declined sections, IPv6 -----------------------------------------------------------------

static void test_declined_video_and_t38(void **state) {
    (void)state;
    static const char body[] = "v=0\r\n"
                               "o=- 10 10 IN IP4 52.114.76.76\r\n"
                               "s=-\r\n"
                               "c=IN IP4 52.114.76.76\r\n"
                               "t=0 0\r\n"
                               "m=audio 53000 RTP/SAVP 0\r\n"
                               "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                               "m=video 0 RTP/SAVP 96\r\n"
                               "a=rtpmap:96 H264/90000\r\n"
                               "m=image 53002 udptl t38\r\n"
                               "a=T38FaxVersion:0\r\n";
    must_parse(&g_sdp, body);
    assert_int_equal(g_sdp.num_media, 3);
    assert_false(g_sdp.media[1].audio);
    assert_int_equal(g_sdp.media[1].port, 0);
    assert_int_equal(g_sdp.media[2].proto, TG_SDP_PROTO_OTHER);
    struct tg_sdp_media_out mo[3] = {{.port = 40000, .rtcp_port = 40001}, {0}, {0}};
    rewrite(body, "10.0.0.1", mo,
            "v=0\n"
            "o=- 10 10 IN IP4 10.0.0.1\n"
            "s=-\n"
            "c=IN IP4 10.0.0.1\n"
            "t=0 0\n"
            "m=audio 40000 RTP/AVP 0\n"
            "m=video 0 RTP/AVP 96\n"
            "a=rtpmap:96 H264/90000\n"
            "m=image 0 udptl t38\n"
            "a=T38FaxVersion:0\n");
}

static void test_ipv6(void **state) {
    (void)state;
    static const char body[] = "v=0\r\n"
                               "o=- 5 5 IN IP6 2001:db8::1\r\n"
                               "s=-\r\n"
                               "c=IN IP6 2001:db8::1\r\n"
                               "t=0 0\r\n"
                               "m=audio 6000 RTP/AVP 0\r\n"
                               "m=audio 6002 RTP/AVP 0\r\n"
                               "c=IN IP6 ::\r\n";
    must_parse(&g_sdp, body);
    assert_int_equal(g_sdp.origin.family, AF_INET6);
    uint8_t want[16];
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", want), 1);
    assert_memory_equal(g_sdp.media[0].conn.bytes, want, 16);
    assert_int_equal(g_sdp.media[0].conn.family, AF_INET6);
    assert_false(g_sdp.media[0].conn.hold);
    assert_true(g_sdp.media[1].conn.hold);
    struct tg_sdp_media_out mo[2] = {{.port = 7000, .rtcp_port = 7001},
                                     {.port = 7002, .rtcp_port = 7003}};
    rewrite(body, "2001:db8:ffff::42", mo,
            "v=0\n"
            "o=- 5 5 IN IP6 2001:db8:ffff::42\n"
            "s=-\n"
            "c=IN IP6 2001:db8:ffff::42\n"
            "t=0 0\n"
            "m=audio 7000 RTP/AVP 0\n"
            "m=audio 7002 RTP/AVP 0\n"
            "c=IN IP6 ::\n");
    // An IPv4 far side for an IPv6 near side.
    rewrite(body, "192.0.2.1", mo,
            "v=0\n"
            "o=- 5 5 IN IP4 192.0.2.1\n"
            "s=-\n"
            "c=IN IP4 192.0.2.1\n"
            "t=0 0\n"
            "m=audio 7000 RTP/AVP 0\n"
            "m=audio 7002 RTP/AVP 0\n"
            "c=IN IP6 ::\n");
}

#define HEAD_T "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

// HT separates fields as SP does; the writer splices at the right places (found by the
// fuzzer: an o= with a tab before the nettype was written as "o=- 1 1IN IP4 ...").
static void test_tab_separators(void **state) {
    (void)state;
    struct tg_sdp_media_out mo = {.port = 9000, .rtcp_port = 9001};
    rewrite("v=0\r\no=- 1 1\tIN IP4 192.0.2.1\r\ns=-\r\nc=IN\tIP4  192.0.2.1\r\nt=0 0\r\n"
            "m=audio\t4000\tRTP/AVP\t0 8\r\n",
            "10.0.0.1", &mo,
            "v=0\n"
            "o=- 1 1\tIN IP4 10.0.0.1\n"
            "s=-\n"
            "c=IN IP4 10.0.0.1\n"
            "t=0 0\n"
            "m=audio\t9000 RTP/AVP\t0 8\n");
}

// Property attributes with trailing whitespace are what they say, for the parser and the
// writer alike; a name with a space before its colon is another attribute, for both.
static void test_trailing_whitespace(void **state) {
    (void)state;
    static const char body[] = HEAD_T "m=audio 4000 RTP/AVP 0\r\n"
                                      "a=rtcp-mux \r\n"
                                      "a=sendonly\t\r\n"
                                      "a=rtcp :4001\r\n"
                                      "a=crypto :1 x\r\n";
    must_parse(&g_sdp, body);
    assert_true(g_sdp.media[0].rtcp_mux);
    assert_int_equal(g_sdp.media[0].dir, TG_SDP_SENDONLY);
    assert_int_equal(g_sdp.media[0].rtcp_port, 0);
    assert_int_equal(g_sdp.media[0].num_crypto, 0);
    struct tg_sdp_media_out mo = {.port = 9000, .rtcp_port = 9001};
    rewrite(body, "10.0.0.1", &mo,
            "v=0\n"
            "o=- 1 1 IN IP4 10.0.0.1\n"
            "s=-\n"
            "c=IN IP4 10.0.0.1\n"
            "t=0 0\n"
            "m=audio 9000 RTP/AVP 0\n"
            "a=sendonly\t\n"
            "a=rtcp :4001\n"
            "a=crypto :1 x\n");
}

// ---- the writer's bounds ---------------------------------------------------------------------

// Every |cap| short of the output is refused with nothing written past it, for the longest
// address and crypto line there are and for a short one; tg_sdp_write_max is enough for both.
static void test_write_no_space(void **state) {
    (void)state;
    must_parse(&g_sdp, k_pbx_offer);
    struct tg_sdp_media_out mo = {.port = 30002, .rtcp_port = 30009, .secure = 1};
    mo.crypto.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_32;
    mo.crypto.params.mki_len = 4;
    mo.crypto.params.mki = 0xffffffffu;
    mo.crypto.lifetime_log2 = 48;
    mo.crypto.tag = 999999999;
    static const char *const addrs[] = {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
                                        "10.0.0.1"};
    for (size_t a = 0; a < 2; a++) {
        size_t full = 0;
        assert_int_equal(tg_sdp_write(&g_sdp, k_pbx_offer, strlen(k_pbx_offer), addrs[a], &mo,
                                      g_out, sizeof(g_out), &full),
                         TG_SDP_OK);
        assert_true(full <= tg_sdp_write_max(&g_sdp));
        assert_int_equal(tg_sdp_write(&g_sdp, k_pbx_offer, strlen(k_pbx_offer), addrs[a], &mo,
                                      g_out, full, &full),
                         TG_SDP_OK);
        for (size_t cap = 0; cap < full; cap++) {
            memset(g_out, 'Z', sizeof(g_out));
            size_t n = 7;
            assert_int_equal(tg_sdp_write(&g_sdp, k_pbx_offer, strlen(k_pbx_offer), addrs[a], &mo,
                                          g_out, cap, &n),
                             TG_SDP_NO_SPACE);
            assert_int_equal(n, 0);
            assert_int_equal(g_out[cap], 'Z');
        }
    }
}

static void test_write_refuses_bad_args(void **state) {
    (void)state;
    must_parse(&g_sdp, k_pbx_offer);
    struct tg_sdp_media_out mo = {.port = 1, .secure = 1};
    size_t n = 0;
    mo.crypto.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    assert_int_equal(tg_sdp_write(&g_sdp, k_pbx_offer, strlen(k_pbx_offer), "sbc.example.com", &mo,
                                  g_out, sizeof(g_out), &n),
                     TG_SDP_BAD_ADDR);
    assert_int_equal(tg_sdp_write(&g_sdp, k_pbx_offer, strlen(k_pbx_offer) - 1, "10.0.0.1", &mo,
                                  g_out, sizeof(g_out), &n),
                     TG_SDP_MALFORMED);
    mo.crypto.params.suite = TG_SRTP_NONE;
    assert_int_equal(tg_sdp_write(&g_sdp, k_pbx_offer, strlen(k_pbx_offer), "10.0.0.1", &mo, g_out,
                                  sizeof(g_out), &n),
                     TG_SDP_MALFORMED);
}

// ---- malformed bodies ------------------------------------------------------------------------

#define HEAD "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
#define AUDIO "m=audio 4000 RTP/AVP 0\r\n"
#define CRYPTO(k) AUDIO "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" k "\r\n"

struct bad_case {
    const char *body;
    size_t len; // 0: strlen(body)
    enum tg_sdp_status status;
    const char *why; // the start of |why|
};

static const struct bad_case k_bad[] = {
    {"o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", 0, TG_SDP_MALFORMED,
     "line 1: the body does not start with v=0"},
    {"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", 0, TG_SDP_MALFORMED,
     "line 1: the body does not start with v=0"},
    {"", 0, TG_SDP_MALFORMED, "line 1: empty body"},
    {"v=0\r\ns=-\r\n", 0, TG_SDP_MALFORMED, "line 2: o= is not second"},
    {"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n", 0, TG_SDP_MALFORMED, "line 2: no v=, o= and s="},
    {HEAD "m=audio 70000 RTP/AVP 0\r\n", 0, TG_SDP_MALFORMED, "line 6: m= port not a number"},
    {HEAD "m=audio -1 RTP/AVP 0\r\n", 0, TG_SDP_MALFORMED, "line 6: m= port not a number"},
    {HEAD "m=audio 4000/2 RTP/AVP 0\r\n", 0, TG_SDP_MALFORMED, "line 6: m= port count"},
    {HEAD "m=audio 4000 RTP/AVP\r\n", 0, TG_SDP_MALFORMED, "line 6: m= is not"},
    {HEAD "m= audio 4000 RTP/AVP 0\r\n", 0, TG_SDP_MALFORMED, "line 6: m= is not"},
    {"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 pbx.example.com\r\n", 0, TG_SDP_BAD_ADDR,
     "line 4: c= address is not numeric IPv4"},
    {HEAD AUDIO "c=IN IP6 sbc.example.com\r\n", 0, TG_SDP_BAD_ADDR,
     "line 7: c= address is not numeric IPv6"},
    {HEAD AUDIO "c=IN IP4 224.2.1.1/127\r\n", 0, TG_SDP_BAD_ADDR, "line 7: c= multicast"},
    {HEAD AUDIO "c=IN IP7 1.2.3.4\r\n", 0, TG_SDP_BAD_ADDR, "line 7: c= address type"},
    {HEAD AUDIO "c=IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.5\r\n", 0, TG_SDP_MALFORMED,
     "line 8: second c="},
    {"v=0\r\no=- 1 1 IN IP4 host_1.example.com\r\ns=-\r\n", 0, TG_SDP_BAD_ADDR,
     "line 2: o= address is not numeric"},
    {"v=0\r\no=- 1 1 IN IP4 192.0.2.300\r\ns=-\r\n", 0, TG_SDP_BAD_ADDR,
     "line 2: o= address is not numeric"},
    {"v=0\r\no=- 1 IN IP4 192.0.2.1\r\ns=-\r\n", 0, TG_SDP_MALFORMED, "line 2: o= is not"},
    {HEAD AUDIO AUDIO AUDIO AUDIO AUDIO AUDIO AUDIO AUDIO AUDIO, 0, TG_SDP_TOO_MANY,
     "line 14: more than 8 m= sections"},
    {"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=a\0b\r\n", 35, TG_SDP_MALFORMED, "line 3: NUL byte"},
    {HEAD "a=x\rb\r\n", 0, TG_SDP_MALFORMED, "line 6: control byte 0x0d"},
    {HEAD "a=\x1b[31m\r\n", 0, TG_SDP_MALFORMED, "line 6: control byte 0x1b"},
    {HEAD "this line has no equals sign\r\n", 0, TG_SDP_MALFORMED, "line 6: not a \"x=value\""},
    {HEAD "A=b\r\n", 0, TG_SDP_MALFORMED, "line 6: not a \"x=value\""},
    {HEAD "x=unknown\r\n", 0, TG_SDP_MALFORMED, "line 6: x= not allowed"},
    {HEAD AUDIO "t=0 0\r\n", 0, TG_SDP_MALFORMED, "line 7: t= not allowed in a media section"},
    {HEAD "s=again\r\n", 0, TG_SDP_MALFORMED, "line 6: s= not allowed"},
    {HEAD "\r\n" AUDIO, 0, TG_SDP_MALFORMED, "line 6: empty line"},
    {"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n" AUDIO, 0, TG_SDP_MALFORMED,
     "line 5: m= section 1 has no c="},
    {HEAD AUDIO "a=rtcp:0\r\n", 0, TG_SDP_MALFORMED, "line 7: a=rtcp port"},
    {HEAD AUDIO "a=rtcp:abc\r\n", 0, TG_SDP_MALFORMED, "line 7: a=rtcp port"},
    {HEAD AUDIO "a=rtcp:4001 IN IP4 rtcp.example.com\r\n", 0, TG_SDP_BAD_ADDR,
     "line 7: a=rtcp address is not numeric"},
    {HEAD AUDIO "a=sendonly\r\na=recvonly\r\n", 0, TG_SDP_MALFORMED,
     "line 8: second direction attribute"},
    {HEAD AUDIO "a=rtcp-mux\r\na=rtcp-mux \r\n", 0, TG_SDP_MALFORMED, "line 8: second a=rtcp-mux"},
    {HEAD AUDIO "a=\r\n", 0, TG_SDP_MALFORMED, "line 7: a= without an attribute name"},
    {HEAD AUDIO "a=:x\r\n", 0, TG_SDP_MALFORMED, "line 7: a= without an attribute name"},
    // Crypto: a truncated key (27 bytes), cut inside a base64 quantum, a byte outside the
    // alphabet, 16 bytes of key without salt, a CM key for GCM, no key at all, bad MKI.
    {HEAD CRYPTO("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRob"), 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key||salt has the wrong length"},
    {HEAD CRYPTO("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB"), 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key is not base64"},
    {HEAD CRYPTO("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRob*B0e"), 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key is not base64"},
    {HEAD CRYPTO("AAAAAAAAAAAAAAAAAAAAAA=="), 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key||salt has the wrong length"},
    {HEAD AUDIO "a=crypto:1 AEAD_AES_128_GCM inline:" K80 "\r\n", 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key||salt has the wrong length"},
    {HEAD AUDIO "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:\r\n", 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key is not base64"},
    {HEAD AUDIO "a=crypto:1 AES_CM_128_HMAC_SHA1_80\r\n", 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key-params"},
    {HEAD AUDIO "a=crypto:1 AES_CM_128_HMAC_SHA1_80 uri:" K80 "\r\n", 0, TG_SDP_MALFORMED,
     "line 7: a=crypto key-params"},
    {HEAD AUDIO "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n", 0, TG_SDP_MALFORMED,
     "line 7: a=crypto tag"},
    {HEAD CRYPTO(K80 "|256:1"), 0, TG_SDP_MALFORMED, "line 7: a=crypto bad MKI"},
    {HEAD CRYPTO(K80 "|2^x"), 0, TG_SDP_MALFORMED, "line 7: a=crypto bad lifetime"},
};

static void test_malformed(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        const struct bad_case *b = &k_bad[i];
        char why[160] = "unset";
        size_t len = b->len != 0 ? b->len : strlen(b->body);
        enum tg_sdp_status st = tg_sdp_parse(&g_sdp, b->body, len, why, sizeof(why));
        if (st != b->status || strncmp(why, b->why, strlen(b->why)) != 0) {
            print_error("case %zu: got %d \"%s\", want %d \"%s...\"\n", i, st, why, b->status,
                        b->why);
            fail();
        }
    }
}

static void test_too_long_and_edges(void **state) {
    (void)state;
    static char big[TG_SDP_MAX_BODY + 2];
    size_t n = (size_t)snprintf(big, sizeof(big), "%s", HEAD AUDIO);
    while (n + 12 <= TG_SDP_MAX_BODY - 4) // a=x lines, then one up to a byte past the limit
        n += (size_t)snprintf(big + n, sizeof(big) - n, "a=xxxxxxxx\r\n");
    n += (size_t)snprintf(big + n, sizeof(big) - n, "a=");
    while (n < TG_SDP_MAX_BODY + 1)
        big[n++] = 'x';
    char why[160];
    assert_int_equal(tg_sdp_parse(&g_sdp, big, TG_SDP_MAX_BODY + 1, why, sizeof(why)),
                     TG_SDP_MALFORMED);
    assert_non_null(strstr(why, "more than 16384"));
    // Exactly at the limit it parses (the last line ends without CRLF).
    assert_int_equal(tg_sdp_parse(&g_sdp, big, TG_SDP_MAX_BODY, why, sizeof(why)), TG_SDP_OK);
    // Trailing empty lines are ignored; a last line without its end is accepted.
    must_parse(&g_sdp, HEAD AUDIO "\r\n\r\n");
    assert_int_equal(g_sdp.end, strlen(HEAD AUDIO));
    must_parse(&g_sdp, HEAD "m=audio 4000 RTP/AVP 0");
    assert_int_equal(g_sdp.media[0].port, 4000);
    // why may be NULL or tiny.
    assert_int_equal(tg_sdp_parse(&g_sdp, "v=1", 3, NULL, 0), TG_SDP_MALFORMED);
    char tiny[4];
    assert_int_equal(tg_sdp_parse(&g_sdp, "v=1", 3, tiny, sizeof(tiny)), TG_SDP_MALFORMED);
    assert_string_equal(tiny, "lin");
    // More crypto lines than kept are counted, and all are dropped by the writer.
    must_parse(&g_sdp, HEAD CRYPTO(K80) "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:6 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:8 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n"
                                        "a=crypto:10 AES_CM_128_HMAC_SHA1_80 inline:" K80 "\r\n");
    assert_int_equal(g_sdp.media[0].num_crypto, TG_SDP_MAX_CRYPTO);
    assert_int_equal(g_sdp.media[0].num_crypto_ignored, 2);
    assert_int_equal(g_sdp.media[0].crypto[7].tag, 8);
    // Session-level a=crypto (not allowed by RFC 4568) and a=rtcp are dropped.
    struct tg_sdp_media_out mo = {.port = 9000, .rtcp_port = 9001};
    rewrite(HEAD "a=crypto:1 whatever\r\na=rtcp:5\r\na=rtcp-mux\r\n" AUDIO, "10.0.0.1", &mo,
            "v=0\n"
            "o=- 1 1 IN IP4 10.0.0.1\n"
            "s=-\n"
            "c=IN IP4 10.0.0.1\n"
            "t=0 0\n"
            "a=rtcp-mux\n"
            "m=audio 9000 RTP/AVP 0\n");
}

// ---- a=crypto --------------------------------------------------------------------------------

static void must_crypto(struct tg_sdp_crypto *c, const char *v) {
    if (!tg_sdp_crypto_parse(c, v, strlen(v)))
        print_error("does not parse: %s\n", v);
    assert_true(tg_sdp_crypto_parse(c, v, strlen(v)));
}

static void test_crypto_parse(void **state) {
    (void)state;
    struct tg_sdp_crypto c;
    uint8_t ks[30];
    fill_seq(ks, 30, 1);
    must_crypto(&c, "1 AES_CM_128_HMAC_SHA1_80 inline:" K80);
    assert_true(c.usable);
    assert_int_equal(c.tag, 1);
    assert_int_equal(c.lifetime_log2, 0);
    assert_int_equal(c.params.mki_len, 0);
    assert_memory_equal(c.params.key, ks, 16);
    assert_memory_equal(c.params.salt, ks + 16, 14);
    must_crypto(&c, "123456789 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^20|1:4");
    assert_true(c.usable);
    assert_int_equal(c.tag, 123456789);
    assert_int_equal(c.lifetime_log2, 20);
    assert_int_equal(c.params.mki, 1);
    assert_int_equal(c.params.mki_len, 4);
    must_crypto(&c, "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1048576");
    assert_true(c.usable);
    assert_int_equal(c.lifetime_log2, 20);
    must_crypto(&c, "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|4294967295:4");
    assert_true(c.usable);
    assert_int_equal(c.params.mki, 4294967295u);
    assert_int_equal(c.lifetime_log2, 0);
    // The first key-param is used; tabs and several spaces separate fields; WSH is a hint.
    must_crypto(&c, "7\tAES_CM_128_HMAC_SHA1_32  inline:" K32 "|2^31|2:2;inline:" K80
                    "|2^31|3:2 WSH=64 ");
    assert_true(c.usable);
    assert_int_equal(c.params.suite, TG_SRTP_AES_CM_128_HMAC_SHA1_32);
    assert_int_equal(c.params.mki, 2);
    fill_seq(ks, 30, 0x40);
    assert_memory_equal(c.params.key, ks, 16);
    must_crypto(&c, "1 AEAD_AES_128_GCM inline:" KGCM "|2^48");
    assert_true(c.usable);
    assert_int_equal(c.lifetime_log2, 48);
    // Well formed, but not something tlsgate can meet.
    static const char *const unusable[] = {
        "1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm|2^20|1:4",
        "1 AES_256_CM_HMAC_SHA1_80 inline:" K80 K80,
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 " KDR=1",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 " UNENCRYPTED_SRTP",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 " WSH=64 UNAUTHENTICATED_SRTP",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 " FEC_ORDER=FEC_SRTP",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1000",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^49",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^0",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|9999999999999999999",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1:5",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^31|99999999999999999999:128",
    };
    for (size_t i = 0; i < sizeof(unusable) / sizeof(unusable[0]); i++) {
        must_crypto(&c, unusable[i]);
        if (c.usable)
            print_error("usable: %s\n", unusable[i]);
        assert_false(c.usable);
    }
    static const char *const bad[] = {
        "",
        "1",
        "1 ",
        "AES_CM_128_HMAC_SHA1_80 inline:" K80,
        "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" K80,
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|0",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1:0",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1:129",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|:1",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|65536:2",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1:1|2^20",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^20|2^20",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1:1|2:1",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "=",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AQID=AUG" K80,
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 K80,
        "1 AEAD_AES_128_GCM inline:oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6uw",
        "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 " \x01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (tg_sdp_crypto_parse(&c, bad[i], strlen(bad[i])))
            print_error("parses: \"%s\"\n", bad[i]);
        assert_false(tg_sdp_crypto_parse(&c, bad[i], strlen(bad[i])));
    }
    // Nothing is read past |len|: the same text cut short is judged on what is inside it.
    const char *v = "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^31|1:1";
    assert_true(tg_sdp_crypto_parse(&c, v, strlen(v) - 4)); // "...|2^31"
    assert_int_equal(c.params.mki_len, 0);
    assert_false(tg_sdp_crypto_parse(&c, v, strlen(v) - 10)); // the key cut
}

// round_trip formats |c| and checks the text (base64 against BoringSSL's encoder) and that it
// parses back to the same values.
static void round_trip(const struct tg_sdp_crypto *c, const char *want) {
    char out[TG_SDP_CRYPTO_MAX];
    size_t n = tg_sdp_crypto_format(c, out, sizeof(out));
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
    uint8_t ks[30];
    size_t salt = c->params.suite == TG_SRTP_AEAD_AES_128_GCM ? 12 : 14;
    memcpy(ks, c->params.key, 16);
    memcpy(ks + 16, c->params.salt, salt);
    uint8_t b64[64];
    size_t b64_len = EVP_EncodeBlock(b64, ks, 16 + salt);
    const char *inl = strstr(out, "inline:");
    assert_non_null(inl);
    assert_memory_equal(inl + 7, b64, b64_len);
    struct tg_sdp_crypto back;
    assert_true(tg_sdp_crypto_parse(&back, out, n));
    assert_true(back.usable);
    assert_int_equal(back.tag, c->tag);
    assert_int_equal(back.params.suite, c->params.suite);
    assert_memory_equal(back.params.key, c->params.key, 16);
    assert_memory_equal(back.params.salt, c->params.salt, salt);
    assert_int_equal(back.lifetime_log2, c->lifetime_log2);
    assert_int_equal(back.params.mki_len, c->params.mki_len);
    assert_int_equal(back.params.mki, c->params.mki);
    // Every buffer too small for the text and its NUL is refused.
    for (size_t cap = 0; cap <= n; cap++)
        assert_int_equal(tg_sdp_crypto_format(c, out, cap), 0);
}

static void test_crypto_round_trip(void **state) {
    (void)state;
    struct tg_sdp_crypto c = {.tag = 1, .usable = 1};
    c.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    fill_seq(c.params.key, 16, 1);
    fill_seq(c.params.salt, 14, 17);
    round_trip(&c, "1 AES_CM_128_HMAC_SHA1_80 inline:" K80);
    c.lifetime_log2 = 31;
    round_trip(&c, "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^31");
    c.params.mki = 1;
    c.params.mki_len = 1;
    round_trip(&c, "1 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^31|1:1");
    c.lifetime_log2 = 0;
    c.params.mki = 70000;
    c.params.mki_len = 3;
    c.tag = 999999999;
    round_trip(&c, "999999999 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|70000:3");
    c = (struct tg_sdp_crypto){.tag = 5, .usable = 1, .lifetime_log2 = 48};
    c.params.suite = TG_SRTP_AEAD_AES_128_GCM;
    fill_seq(c.params.key, 16, 0xa0);
    fill_seq(c.params.salt, 12, 0xb0);
    round_trip(&c, "5 AEAD_AES_128_GCM inline:" KGCM "|2^48");
    // Random keys, every suite, with and without MKI.
    srand(42);
    for (int i = 0; i < 300; i++) {
        c = (struct tg_sdp_crypto){.tag = (uint32_t)(rand() % 1000), .usable = 1};
        c.params.suite = (enum tg_srtp_suite)(1 + i % 3);
        for (size_t k = 0; k < 16; k++)
            c.params.key[k] = (uint8_t)rand();
        for (size_t k = 0; k < (i % 3 == 2 ? 12u : 14u); k++)
            c.params.salt[k] = (uint8_t)rand();
        c.lifetime_log2 = (uint8_t)(i % 49);
        c.params.mki_len = (uint8_t)(i % 5);
        c.params.mki = c.params.mki_len ? (uint32_t)rand() % (1u << (8 * c.params.mki_len - 1)) : 0;
        char out[TG_SDP_CRYPTO_MAX];
        size_t n = tg_sdp_crypto_format(&c, out, sizeof(out));
        assert_true(n > 0);
        struct tg_sdp_crypto back;
        assert_true(tg_sdp_crypto_parse(&back, out, n));
        assert_true(back.usable);
        assert_memory_equal(&back.params, &c.params, sizeof(c.params));
        assert_int_equal(back.lifetime_log2, c.lifetime_log2);
    }
    // Nothing to format that would not parse back the same.
    char out[TG_SDP_CRYPTO_MAX];
    c = (struct tg_sdp_crypto){.tag = 1, .usable = 1};
    c.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    assert_true(tg_sdp_crypto_format(&c, out, sizeof(out)) > 0);
    c.params.suite = TG_SRTP_NONE;
    assert_int_equal(tg_sdp_crypto_format(&c, out, sizeof(out)), 0);
    c.params.suite = TG_SRTP_SUITE_NUM;
    assert_int_equal(tg_sdp_crypto_format(&c, out, sizeof(out)), 0);
    c.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    c.tag = 1000000000;
    assert_int_equal(tg_sdp_crypto_format(&c, out, sizeof(out)), 0);
    c.tag = 1;
    c.lifetime_log2 = 49;
    assert_int_equal(tg_sdp_crypto_format(&c, out, sizeof(out)), 0);
    c.lifetime_log2 = 0;
    c.params.mki_len = 5;
    assert_int_equal(tg_sdp_crypto_format(&c, out, sizeof(out)), 0);
    c.params.mki_len = 1;
    c.params.mki = 256;
    assert_int_equal(tg_sdp_crypto_format(&c, out, sizeof(out)), 0);
    c.params.mki = 255;
    assert_true(tg_sdp_crypto_format(&c, out, sizeof(out)) > 0);
}

// ---- the boundary with srtp.c -----------------------------------------------------------------

// sdp.c keeps its own suite table (so that it links alone); it must agree with srtp.c's names
// and salt lengths, and the keys it parses must make SRTP contexts.
static void test_agrees_with_srtp(void **state) {
    (void)state;
    for (int s = TG_SRTP_NONE + 1; s < TG_SRTP_SUITE_NUM; s++) {
        struct tg_sdp_crypto c = {.tag = 1, .usable = 1};
        c.params.suite = (enum tg_srtp_suite)s;
        char out[TG_SDP_CRYPTO_MAX];
        size_t n = tg_sdp_crypto_format(&c, out, sizeof(out));
        assert_true(n > 0);
        const char *name = tg_srtp_suite_name((enum tg_srtp_suite)s);
        assert_int_equal(strncmp(out + 2, name, strlen(name)), 0);
        assert_int_equal(out[2 + strlen(name)], ' ');
        assert_int_equal(tg_srtp_suite_parse(name, strlen(name)), s);
        // key||salt is 16 + tg_srtp_salt_len bytes: the base64 length says so.
        const char *b64 = strstr(out, "inline:") + 7;
        assert_int_equal(strlen(b64), 4 * ((16 + tg_srtp_salt_len((enum tg_srtp_suite)s) + 2) / 3));
    }
    must_parse(&g_sdp, k_mux_offer);
    must_parse(&g_sdp, k_carrier_offer);
    for (size_t i = 0; i < g_sdp.media[0].num_crypto; i++) {
        for (int protect = 0; protect < 2; protect++) {
            struct tg_srtp *ctx = tg_srtp_new(&g_sdp.media[0].crypto[i].params, protect);
            assert_non_null(ctx);
            tg_srtp_free(ctx);
        }
    }
}

// ---- suite choice ----------------------------------------------------------------------------

static void test_choose_crypto(void **state) {
    (void)state;
    must_parse(&g_sdp, k_carrier_offer); // [0] SHA1_80 with MKI, [1] SHA1_32
    const struct tg_sdp_media *m = &g_sdp.media[0];
    const enum tg_srtp_suite p80[] = {TG_SRTP_AES_CM_128_HMAC_SHA1_80,
                                      TG_SRTP_AES_CM_128_HMAC_SHA1_32};
    const enum tg_srtp_suite p32[] = {TG_SRTP_AEAD_AES_128_GCM, TG_SRTP_AES_CM_128_HMAC_SHA1_32,
                                      TG_SRTP_AES_CM_128_HMAC_SHA1_80};
    const enum tg_srtp_suite gcm[] = {TG_SRTP_AEAD_AES_128_GCM};
    assert_int_equal(tg_sdp_choose_crypto(m, p80, 2), 0);
    assert_int_equal(tg_sdp_choose_crypto(m, p32, 3), 1);
    assert_int_equal(tg_sdp_choose_crypto(m, gcm, 1), -1);
    assert_int_equal(tg_sdp_choose_crypto(m, p80, 0), -1);
    must_parse(&g_sdp, k_mux_offer); // [0] GCM, [1] SHA1_80
    assert_int_equal(tg_sdp_choose_crypto(&g_sdp.media[0], p80, 2), 1);
    assert_int_equal(tg_sdp_choose_crypto(&g_sdp.media[0], p32, 3), 0);
    // An unusable line is never chosen, even for a suite the operator lists.
    must_parse(&g_sdp, HEAD AUDIO "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" K80 " KDR=3\r\n"
                                  "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|1:5\r\n"
                                  "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:" K32 "\r\n");
    assert_int_equal(g_sdp.media[0].num_crypto, 3);
    assert_int_equal(tg_sdp_choose_crypto(&g_sdp.media[0], p80, 1), -1);
    assert_int_equal(tg_sdp_choose_crypto(&g_sdp.media[0], p80, 2), 2);
    // No crypto line at all.
    must_parse(&g_sdp, k_pbx_offer);
    assert_int_equal(tg_sdp_choose_crypto(&g_sdp.media[0], p32, 3), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_carrier_offer_parse),
        cmocka_unit_test(test_carrier_offer_to_pbx),
        cmocka_unit_test(test_carrier_answer_to_provider),
        cmocka_unit_test(test_pbx_offer_to_provider),
        cmocka_unit_test(test_rtcp_port_added),
        cmocka_unit_test(test_origin_fqdn),
        cmocka_unit_test(test_rtcp_mux),
        cmocka_unit_test(test_ice_dropped),
        cmocka_unit_test(test_hold_forms),
        cmocka_unit_test(test_declined_video_and_t38),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_tab_separators),
        cmocka_unit_test(test_trailing_whitespace),
        cmocka_unit_test(test_write_no_space),
        cmocka_unit_test(test_write_refuses_bad_args),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_too_long_and_edges),
        cmocka_unit_test(test_crypto_parse),
        cmocka_unit_test(test_crypto_round_trip),
        cmocka_unit_test(test_agrees_with_srtp),
        cmocka_unit_test(test_choose_crypto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
