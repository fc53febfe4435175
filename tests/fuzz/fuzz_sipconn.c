// libFuzzer harness for the SIP connection layer: the input is a script of arrivals on both
// sides of one connection pair. Each step takes a control byte (which side, whether the other
// side's queue is busy, how many bytes arrive: 1 to 64, or a multiple of 256) and then that many
// bytes, fed through tg_sipconn_feed or tg_sipconn_reserve/commit and processed; the busy queue
// then frees and processing resumes. A stub io checks what leaves toward each side: a CRLF
// pong, or exactly one message in the normal form (no fold, no control character in the head,
// one Content-Length equal to the body, a weak parser's framing the same as the scanner's, at
// most one Max-Forwards, an X-TLS-Peer-* only toward the PBX and only the verified name).
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz.h"
#include "tlsgate/sipconn.h"

#define NUM_HDRS 160
#define PEER_NAME "sip.carrier.example"

static const uint8_t k_key[16] = {0x74, 0x67, 0x2d, 0x63, 0x6f, 0x6e, 0x6e, 0x2d,
                                  0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x6b, 0x65, 0x79};

static uint8_t g_scratch[TG_SIPCONN_SCRATCH];

struct stub {
    int busy[2];
    uint32_t max_message;
};

static int stub_can_send(void *arg, enum tg_sip_side side) {
    const struct stub *st = arg;
    return !st->busy[side];
}

// naive_len frames |p| as a weak parser does: head to the first CRLFCRLF, body as long as the
// first line starting "Content-Length:" or "l:" (any case) says, digits on that line only.
static size_t naive_len(const uint8_t *p, size_t n) {
    const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (end == NULL)
        __builtin_trap();
    size_t head = (size_t)(end - p) + 4, body = 0;
    for (const uint8_t *line = p; line < end;) {
        const uint8_t *eol = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        size_t ll = (size_t)(eol - line);
        size_t v = 0;
        if (ll >= 15 && strncasecmp((const char *)line, "content-length:", 15) == 0)
            v = 15;
        else if (ll >= 2 && strncasecmp((const char *)line, "l:", 2) == 0)
            v = 2;
        if (v > 0) {
            while (v < ll && line[v] == ' ')
                v++;
            for (; v < ll && line[v] >= '0' && line[v] <= '9'; v++)
                body = body * 10 + (size_t)(line[v] - '0');
            break;
        }
        line = eol + 2;
    }
    return head + body;
}

// check_message traps unless |n| bytes at |p| are one message in the normal form.
static void check_message(const struct stub *st, enum tg_sip_side side, const uint8_t *p,
                          size_t n) {
    struct tg_sip_header h[NUM_HDRS];
    struct tg_sip_msg m;
    struct tg_sip_limits lim;
    tg_sip_limits_init(&lim);
    lim.max_message = st->max_message + 1024; // local answers may exceed a tiny bound
    lim.max_line = lim.max_message;
    lim.max_headers = NUM_HDRS;
    if (tg_sip_scan(&lim, &m, h, NUM_HDRS, p, n) != TG_SIP_MESSAGE || m.len != n)
        __builtin_trap();
    for (size_t i = 0; i + 2 < m.head_len; i++) {
        uint8_t ch = p[i];
        if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f)
            __builtin_trap();
        if (ch == '\n' && (p[i + 1] == ' ' || p[i + 1] == '\t'))
            __builtin_trap(); // a fold left in
        if ((ch == '\r') != (p[i + 1] == '\n'))
            __builtin_trap();
    }
    if (tg_sip_count(&m, TG_SIP_H_CONTENT_LENGTH) != 1 || naive_len(p, n) != n)
        __builtin_trap();
    if (tg_sip_count(&m, TG_SIP_H_MAX_FORWARDS) > 1)
        __builtin_trap();
    unsigned peers = tg_sip_count(&m, TG_SIP_H_X_TLS_PEER);
    if (peers > 0) {
        const struct tg_sip_header *x = &h[m.first[TG_SIP_H_X_TLS_PEER]];
        if (side != TG_SIP_SIDE_PBX || !m.is_request || peers != 1 ||
            x->value.len != strlen(PEER_NAME) || memcmp(p + x->value.off, PEER_NAME, x->value.len))
            __builtin_trap();
    }
}

static int stub_send(void *arg, enum tg_sip_side side, const uint8_t *data, uint32_t len) {
    const struct stub *st = arg;
    if (st->busy[side])
        __builtin_trap(); // sent to a queue that said it was busy
    if (len == 2 && data[0] == '\r' && data[1] == '\n')
        return 1; // our pong
    check_message(st, side, data, len);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    static const uint32_t bounds[4] = {TG_SIPCONN_MAX_MESSAGE, 4096, 1024, 512};
    struct stub st = {.max_message = bounds[data[0] & 3]};
    struct tg_sipconn *sc = tg_sipconn_new("sbc.example.com", 5061, k_key);
    if (sc == NULL)
        return 0;
    tg_sipconn_set_max_message(sc, st.max_message);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(5060)};
    sin.sin_addr.s_addr = htonl(0x0a000001);
    tg_sipconn_set_inside(sc, (const struct sockaddr *)&sin);
    sc->peer_name = PEER_NAME;
    struct tg_listener_counters ctr;
    memset(&ctr, 0, sizeof(ctr));
    struct tg_sipconn_io io = {
        .arg = &st,
        .can_send = stub_can_send,
        .send = stub_send,
        .self = {.slot = 3, .gen = 7, .worker = 1},
        .scratch = g_scratch,
        .scratch_len = sizeof(g_scratch),
        .ctr = &ctr,
    };
    int closed[2] = {0, 0};
    size_t off = 1;
    while (off < size) {
        uint8_t ctl = data[off++];
        enum tg_sip_side side = (enum tg_sip_side)(ctl & 1);
        uint32_t want = (ctl >> 2) < 48 ? (ctl >> 2) + 1u : ((ctl >> 2) - 47u) * 256u;
        uint32_t len = (uint32_t)(size - off < want ? size - off : want);
        const uint8_t *chunk = data + off;
        off += len;
        if (closed[side])
            continue;
        st.busy[!side] = (ctl >> 1) & 1;
        uint32_t done = 0;
        for (int rounds = 0; rounds < 64 && !closed[side]; rounds++) {
            if (done < len) {
                if (side == TG_SIP_SIDE_PROVIDER) { // the SSL_read path
                    uint32_t room = 0;
                    uint8_t *dst = tg_sipconn_reserve(sc, side, &room);
                    if (dst == NULL)
                        break;
                    uint32_t n = len - done < room ? len - done : room;
                    memcpy(dst, chunk + done, n);
                    tg_sipconn_commit(sc, side, n);
                    done += n;
                } else { // the plain path
                    long n = tg_sipconn_feed(sc, side, chunk + done, len - done);
                    if (n < 0)
                        break;
                    done += (uint32_t)n;
                }
            }
            enum tg_sipconn_result r = tg_sipconn_process(sc, side, &io);
            if (r == TG_SIPCONN_CLOSE || r == TG_SIPCONN_FAILED) {
                closed[side] = 1;
                break;
            }
            if (sc->in_len[side] > sc->rw.limits.max_message)
                __builtin_trap();
            if (r == TG_SIPCONN_BLOCKED) {
                st.busy[0] = st.busy[1] = 0; // the send completed: resume
                continue;
            }
            if (done == len)
                break;
        }
        st.busy[0] = st.busy[1] = 0;
        // Whatever the other side left blocked resumes too.
        if (!closed[!side] && sc->blocked[!side] &&
            tg_sipconn_process(sc, (enum tg_sip_side) !side, &io) >= TG_SIPCONN_CLOSE)
            closed[!side] = 1;
    }
    tg_sipconn_free(sc);
    return 0;
}
