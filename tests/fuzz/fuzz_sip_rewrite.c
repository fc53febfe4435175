// libFuzzer harness for the SIP rewriter: every message the scanner accepts is rewritten as a
// request from each side (or as a response from each side); whatever the rewriter returns as
// OK must scan as exactly one message under the same limits, in the normal form. A request's
// rewritten form, answered by the far side, must come back through the response path to the
// connection that sent it.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/sip.h"
#include "tlsgate/siprw.h"

#define NUM_HDRS 128
#define OUT_CAP (65536 + 4096)

static const uint8_t k_key[16] = {0x74, 0x67, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d,
                                  0x6b, 0x65, 0x79, 0x2d, 0x30, 0x30, 0x30, 0x31};

static uint8_t g_out[OUT_CAP], g_out2[OUT_CAP], g_resp[OUT_CAP];

// rescan checks that |n| bytes of |p| are one message in the normal form (no fold, exactly one
// Content-Length, at most one Max-Forwards) and fills |m|.
static void rescan(const struct tg_sip_rw_cfg *cfg, struct tg_sip_msg *m, struct tg_sip_header *h,
                   const uint8_t *p, size_t n) {
    if (tg_sip_scan(&cfg->limits, m, h, NUM_HDRS, p, n) != TG_SIP_MESSAGE || m->len != n)
        __builtin_trap();
    if (tg_sip_count(m, TG_SIP_H_CONTENT_LENGTH) != 1 || tg_sip_count(m, TG_SIP_H_MAX_FORWARDS) > 1)
        __builtin_trap();
    for (size_t i = 0; i + 1 < m->head_len; i++) {
        if (p[i] == '\n' && (p[i + 1] == ' ' || p[i + 1] == '\t'))
            __builtin_trap();
    }
}

static void round_trip(const struct tg_sip_rw_cfg *cfg, const struct tg_sip_flow *from,
                       const uint8_t *fwd, size_t fwd_len) {
    struct tg_sip_header h[NUM_HDRS], h2[NUM_HDRS];
    struct tg_sip_msg m, r;
    rescan(cfg, &m, h, fwd, fwd_len);
    size_t n = 0;
    if (!tg_sip_build_response(g_resp, sizeof(g_resp), &n, &m, fwd, 200, "OK", "tg", NULL))
        return;
    if (tg_sip_scan(NULL, &r, h2, NUM_HDRS, g_resp, n) != TG_SIP_MESSAGE)
        return; // the copied headers may exceed the default limits
    struct tg_sip_flow back;
    size_t out_len = 0;
    enum tg_sip_side arrived =
        from->side == TG_SIP_SIDE_PBX ? TG_SIP_SIDE_PROVIDER : TG_SIP_SIDE_PBX;
    enum tg_sip_rw rw =
        tg_sip_rewrite_response(cfg, &back, g_out2, sizeof(g_out2), &out_len, &r, g_resp, arrived);
    if (rw == TG_SIP_RW_TOO_LARGE)
        return;
    if (rw != TG_SIP_RW_OK || back.slot != from->slot || back.gen != from->gen ||
        back.worker != from->worker || back.side != from->side)
        __builtin_trap();
    rescan(cfg, &m, h, g_out2, out_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tg_sip_rw_cfg cfg;
    tg_sip_rw_cfg_init(&cfg, "sbc.example.com", 5061, "10.0.0.1", 5060, k_key);
    struct tg_sip_header hdrs[NUM_HDRS], oh[NUM_HDRS];
    size_t off = 0;
    for (unsigned steps = 0; steps < 8 && off < size; steps++) {
        struct tg_sip_msg m, o;
        enum tg_sip_scan_result r =
            tg_sip_scan(&cfg.limits, &m, hdrs, NUM_HDRS, data + off, size - off);
        if (r == TG_SIP_PING || r == TG_SIP_PONG) {
            off += m.len;
            continue;
        }
        if (r != TG_SIP_MESSAGE)
            return 0;
        const uint8_t *p = data + off;
        for (int side = 0; side < 2; side++) {
            size_t n = 0;
            if (m.is_request) {
                struct tg_sip_flow from = {.slot = 0xabcdef,
                                           .gen = 77 + (uint32_t)side,
                                           .worker = 5,
                                           .side = (uint8_t)side};
                enum tg_sip_rw rw = tg_sip_rewrite_request(&cfg, g_out, sizeof(g_out), &n, &m, p,
                                                           &from, "sip.pstnhub.microsoft.com");
                if (rw == TG_SIP_RW_NO_SPACE)
                    __builtin_trap(); // OUT_CAP always suffices under the limits
                if (rw != TG_SIP_RW_OK)
                    continue;
                rescan(&cfg, &o, oh, g_out, n);
                if (!o.is_request || o.method != m.method || o.body_len != m.body_len ||
                    memcmp(g_out + o.head_len, p + m.head_len, m.body_len) != 0 ||
                    o.first[TG_SIP_H_VIA] != 0)
                    __builtin_trap();
                if (side == TG_SIP_SIDE_PBX && o.first[TG_SIP_H_X_TLS_PEER] >= 0)
                    __builtin_trap(); // nothing X-TLS-Peer-* reaches the provider
                round_trip(&cfg, &from, g_out, n);
            } else {
                struct tg_sip_flow back;
                enum tg_sip_rw rw = tg_sip_rewrite_response(&cfg, &back, g_out, sizeof(g_out), &n,
                                                            &m, p, (enum tg_sip_side)side);
                if (rw == TG_SIP_RW_NO_SPACE)
                    __builtin_trap();
                if (rw != TG_SIP_RW_OK)
                    continue;
                rescan(&cfg, &o, oh, g_out, n);
                if (o.is_request || o.code != m.code || back.side == side)
                    __builtin_trap();
            }
        }
        off += m.len;
    }
    return 0;
}
