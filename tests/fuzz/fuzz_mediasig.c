// libFuzzer harness for call signalling with [media] (proxy/mediasig.c over mediaplan, media
// and sdp): the input is a script of SIP messages, each a control byte (bit 0: from the PBX
// rather than the provider) and a message scanned with tg_sip_scan; every complete message goes
// through the body hook of one connection pair, as sipconn calls it, with real media sessions
// (UDP sockets on 127.0.0.1). What the hook gives back is checked: a replaced body is SDP that
// parses, fits its buffer, carries no a=crypto toward the PBX, names only tlsgate's address and
// ports in the range, and a refused request carries a status tlsgate answers with. After each
// input every call of the pair ends, as when the connection goes.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/mediasig.h"
#include "tlsgate/sdp.h"
#include "tlsgate/sip.h"

#define NUM_HDRS 128
#define PORT_MIN 52000
#define PORT_MAX 52199

static struct tg_loop g_loop;
static struct tg_config g_cfg;
static struct tg_media_counters g_ctr;
static struct tg_mediasig g_ms;
static uint8_t g_out[TG_SDP_MAX_BODY];

// send_own stands in for the worker: tlsgate's own requests (ACK, BYE of a call it ended, the
// CANCEL of an INVITE whose 18x it failed back and the ACK of its 487) are built as the worker
// builds them, and must be one well-formed SIP message each, with one Via.
static struct tg_sipconn *g_sc;
static int send_own(void *arg, uint32_t slot, uint32_t gen, enum tg_sip_side toward,
                    const struct tg_sip_own_req *r) {
    (void)arg;
    static uint8_t msg[4096];
    size_t n = 0;
    const struct tg_sip_flow self = {.slot = slot, .gen = gen};
    if (!tg_sipconn_build_request(g_sc, toward, &self, 1, r, msg, sizeof(msg), &n))
        return -1; // a value that cannot stand in a header (a fold): the request is lost
    struct tg_sip_header hdrs[NUM_HDRS];
    struct tg_sip_msg m;
    if (tg_sip_scan(NULL, &m, hdrs, NUM_HDRS, msg, n) != TG_SIP_MESSAGE || m.len != n ||
        !m.is_request ||
        (m.method != TG_SIP_M_ACK && m.method != TG_SIP_M_BYE && m.method != TG_SIP_M_CANCEL))
        __builtin_trap();
    unsigned vias = 0;
    for (unsigned i = 0; i < m.num_headers; i++)
        vias += hdrs[i].id == TG_SIP_H_VIA;
    if (vias != 1)
        __builtin_trap(); // its answer must come back to tlsgate alone (absorbed)
    return 1;
}

static void init_once(void) {
    static int done;
    if (done)
        return;
    done = 1;
    char err[256];
    tg_config_init(&g_cfg);
    g_cfg.media_enabled = 1;
    snprintf(g_cfg.media_public, sizeof(g_cfg.media_public), "127.0.0.1");
    snprintf(g_cfg.media_internal, sizeof(g_cfg.media_internal), "127.0.0.1");
    struct sockaddr_in *s4 = (struct sockaddr_in *)&g_cfg.media_public_addr;
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(0x7f000001);
    g_cfg.media_internal_addr = g_cfg.media_public_addr;
    g_cfg.media_port_min = PORT_MIN;
    g_cfg.media_port_max = PORT_MAX;
    g_cfg.media_max_calls = 8;
    if (!tg_loop_init(&g_loop, 256, 4096, err, sizeof(err)) ||
        !tg_mediasig_init(&g_ms, &g_loop, &g_cfg, &g_ctr, NULL, 0, 1, err, sizeof(err))) {
        fprintf(stderr, "fuzz_mediasig: %s\n", err);
        __builtin_trap();
    }
    static const uint8_t key[16] = {1};
    g_sc = tg_sipconn_new("sbc.example.com", 5061, key);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(5060)};
    in.sin_addr.s_addr = htonl(0x7f000001);
    tg_sipconn_set_inside(g_sc, (const struct sockaddr *)&in);
    g_ms.send_own = send_own;
}

// check_body checks a body the hook wrote for the side |to_pbx| names.
static void check_body(const uint8_t *body, uint32_t len, int to_pbx) {
    if (len > sizeof(g_out))
        __builtin_trap();
    struct tg_sdp sdp;
    char why[128];
    if (tg_sdp_parse(&sdp, (const char *)body, len, why, sizeof(why)) != TG_SDP_OK)
        __builtin_trap(); // tlsgate never forwards SDP it cannot read itself
    for (size_t i = 0; i < sdp.num_media; i++) {
        const struct tg_sdp_media *m = &sdp.media[i];
        if (to_pbx && m->num_crypto > 0)
            __builtin_trap(); // no key toward the PBX
        if (m->port != 0 && (m->port < PORT_MIN || m->port > PORT_MAX))
            __builtin_trap(); // only tlsgate's ports
        if (m->port != 0 && !m->conn.hold &&
            (m->conn.family != AF_INET || memcmp(m->conn.bytes, "\x7f\x00\x00\x01", 4) != 0))
            __builtin_trap(); // only tlsgate's address
        if (!to_pbx && m->port != 0 && m->num_crypto != 1)
            __builtin_trap(); // exactly tlsgate's one key toward the provider
    }
}

static void drain_cqes(void) {
    struct io_uring_cqe *cqe;
    io_uring_submit(&g_loop.ring);
    while (io_uring_peek_cqe(&g_loop.ring, &cqe) == 0)
        io_uring_cqe_seen(&g_loop.ring, cqe);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init_once();
    struct tg_mediasig_arg arg = {.ms = &g_ms, .conn_slot = 7, .conn_gen = 1, .rw = &g_sc->rw};
    struct tg_sip_header hdrs[NUM_HDRS];
    size_t off = 0;
    while (off < size) {
        uint8_t ctl = data[off++];
        enum tg_sip_side from = (ctl & 1) ? TG_SIP_SIDE_PBX : TG_SIP_SIDE_PROVIDER;
        struct tg_sip_msg m;
        enum tg_sip_scan_result r = tg_sip_scan(NULL, &m, hdrs, NUM_HDRS, data + off, size - off);
        if (r != TG_SIP_MESSAGE) {
            if (r == TG_SIP_NEED_MORE || m.len == 0)
                break;
            off += m.len < size - off ? m.len : size - off;
            continue;
        }
        uint32_t out_len = 0;
        uint16_t status = 0;
        enum tg_sip_body b =
            tg_mediasig_body(&arg, from, &m, data + off, data + off, m.len, g_out, sizeof(g_out),
                             &out_len, &status); // as if the rewrite had changed nothing
        if (b == TG_SIP_BODY_REPLACE)
            check_body(g_out, out_len, from == TG_SIP_SIDE_PROVIDER);
        if (b == TG_SIP_BODY_REFUSE && m.is_request && status != 400 && status != 481 &&
            status != 488 && status != 500 && status != 503)
            __builtin_trap();
        if (b == TG_SIP_BODY_REFUSE && !m.is_request && status != 0 &&
            !(status == 488 && m.code > 100 && m.code < 300))
            __builtin_trap(); // a response is never answered; only a 18x or 2xx is failed back
        off += m.len;
    }
    tg_mediasig_tick(&g_ms); // the requests owed by calls tlsgate ended (send_own)
    tg_mediasig_conn_closed(&g_ms, arg.conn_slot, arg.conn_gen);
    if (g_ms.media.num_calls != 0 || g_ms.media.sess.num_active != 0 ||
        g_ms.media.ports.in_use != 0)
        __builtin_trap(); // every call, session and port given back
    drain_cqes();
    return 0;
}
