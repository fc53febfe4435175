// SDP benchmarks: what the media layer does with each offer or answer that crosses tlsgate. A
// carrier (Teams-shaped) RTP/SAVP offer of ~1 KiB with two crypto lines is parsed alone, and
// parsed then written toward the PBX (RTP/AVP, crypto lines removed) and, with a fresh key,
// toward the provider (RTP/SAVP, one crypto line written).

#include <string.h>

#include "bench_micro.h"
#include "tg_bench.h"
#include "tlsgate/sdp.h"

#define K80 "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"
#define K32 "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xd"

static const char k_offer[] = "v=0\r\n"
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
                              "a=fmtp:104 useinbandfec=1; usedtx=0\r\n"
                              "a=rtpmap:9 G722/8000\r\n"
                              "a=rtpmap:111 SIREN/16000\r\n"
                              "a=fmtp:111 bitrate=16000\r\n"
                              "a=rtpmap:18 G729/8000\r\n"
                              "a=fmtp:18 annexb=no\r\n"
                              "a=rtpmap:0 PCMU/8000\r\n"
                              "a=rtpmap:8 PCMA/8000\r\n"
                              "a=rtpmap:103 SILK/8000\r\n"
                              "a=rtpmap:97 RED/8000\r\n"
                              "a=rtpmap:13 CN/8000\r\n"
                              "a=rtpmap:118 CN/16000\r\n"
                              "a=rtpmap:101 telephone-event/8000\r\n"
                              "a=fmtp:101 0-16\r\n"
                              "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" K80 "|2^31|1:1\r\n"
                              "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:" K32 "|2^31\r\n"
                              "a=ptime:20\r\n"
                              "a=maxptime:200\r\n";

// sdp_case is the state of one benchmark: the parsed body and the output buffer.
struct sdp_case {
    struct tg_sdp sdp;
    struct tg_sdp_media_out out;
    const char *addr;
    char buf[4096];
};

static struct sdp_case g_to_pbx, g_to_provider;

static void bench_parse(struct tg_bench_state *st, void *arg) {
    struct sdp_case *c = arg;
    while (tg_bench_keep_running(st)) {
        if (tg_sdp_parse(&c->sdp, k_offer, sizeof(k_offer) - 1, NULL, 0) != TG_SDP_OK) {
            tg_bench_skip_with_error(st, "the offer does not parse");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)(sizeof(k_offer) - 1));
}

// bench_parse_write: one iteration is parse + write, what one SDP body costs tlsgate.
static void bench_parse_write(struct tg_bench_state *st, void *arg) {
    struct sdp_case *c = arg;
    while (tg_bench_keep_running(st)) {
        size_t n = 0;
        if (tg_sdp_parse(&c->sdp, k_offer, sizeof(k_offer) - 1, NULL, 0) != TG_SDP_OK ||
            tg_sdp_write(&c->sdp, k_offer, sizeof(k_offer) - 1, c->addr, &c->out, c->buf,
                         sizeof(c->buf), &n) != TG_SDP_OK) {
            tg_bench_skip_with_error(st, "the offer does not parse or write");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)(sizeof(k_offer) - 1));
}

int tgb_register_sdp(void) {
    g_to_pbx.addr = "10.0.0.1";
    g_to_pbx.out = (struct tg_sdp_media_out){.port = 40000, .rtcp_port = 40001};
    g_to_provider.addr = "203.0.113.5";
    g_to_provider.out = (struct tg_sdp_media_out){.port = 30000, .rtcp_port = 30001, .secure = 1};
    g_to_provider.out.crypto.tag = 2;
    g_to_provider.out.crypto.params.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    memset(g_to_provider.out.crypto.params.key, 0x11, TG_SRTP_KEY_LEN);
    memset(g_to_provider.out.crypto.params.salt, 0x22, TG_SRTP_SALT_MAX);
    g_to_provider.out.crypto.lifetime_log2 = 31;
    return tg_bench_register("sdp/parse", bench_parse, &g_to_pbx) &&
           tg_bench_register("sdp/parse_write/to_pbx", bench_parse_write, &g_to_pbx) &&
           tg_bench_register("sdp/parse_write/to_provider", bench_parse_write, &g_to_provider);
}
