// libFuzzer harness for the SIP scanner: the input is a plaintext stream. Scanned message by
// message, every verdict must stay within the input, every span within its message, a prefix
// of a complete message must ask for more, and an answer built from any request index must
// itself scan as one message.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/sip.h"
#include "tlsgate/siprw.h"

#define NUM_HDRS 128

static void check_span(struct tg_sip_span sp, size_t limit) {
    if ((size_t)sp.off + sp.len > limit)
        __builtin_trap();
}

static void check_index(const struct tg_sip_msg *m, size_t limit) {
    if (m->num_headers > NUM_HDRS)
        __builtin_trap();
    for (unsigned k = 0; k < m->num_headers; k++) {
        const struct tg_sip_header *h = &m->headers[k];
        check_span(h->line, limit);
        check_span(h->name, limit);
        check_span(h->value, limit);
        if (h->name.off != h->line.off || h->value.off < h->name.off + h->name.len ||
            h->value.off + h->value.len > h->line.off + h->line.len || h->id >= TG_SIP_H_NUM)
            __builtin_trap();
    }
    for (int id = 0; id < TG_SIP_H_NUM; id++) {
        if (m->first[id] >= (int)m->num_headers ||
            (m->first[id] >= 0 && m->headers[m->first[id]].id != id))
            __builtin_trap();
    }
}

// A copy of exactly |n| bytes so that a read past the end is caught by ASan.
static enum tg_sip_scan_result scan_copy(struct tg_sip_msg *m, struct tg_sip_header *h,
                                         const uint8_t *p, size_t n) {
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL)
        return TG_SIP_NEED_MORE;
    memcpy(copy, p, n);
    enum tg_sip_scan_result r = tg_sip_scan(NULL, m, h, NUM_HDRS, copy, n);
    free(copy);
    return r;
}

static void check_answer(const struct tg_sip_msg *m, const uint8_t *p, unsigned status) {
    static uint8_t out[65536 + 1024];
    size_t n = 0;
    if (!tg_sip_build_response(out, sizeof(out), &n, m, p, status, "Bad Request", "tg", NULL))
        return;
    // An answer holds at most the request's indexed headers plus Content-Length, and copies
    // lines as they came (one may be longer than max_line after LINE_TOO_LONG).
    struct tg_sip_header h[NUM_HDRS + 8];
    struct tg_sip_msg r;
    struct tg_sip_limits lim;
    tg_sip_limits_init(&lim);
    lim.max_message = sizeof(out);
    lim.max_line = sizeof(out);
    lim.max_headers = NUM_HDRS + 8;
    if (tg_sip_scan(&lim, &r, h, NUM_HDRS + 8, out, n) != TG_SIP_MESSAGE || r.len != n ||
        r.is_request || r.code != status)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tg_sip_header hdrs[NUM_HDRS], tmp[NUM_HDRS];
    size_t off = 0;
    for (unsigned steps = 0; steps < 64 && off <= size; steps++) {
        const uint8_t *p = data + off;
        size_t left = size - off;
        struct tg_sip_msg m;
        enum tg_sip_scan_result r = tg_sip_scan(NULL, &m, hdrs, NUM_HDRS, p, left);
        switch (r) {
        case TG_SIP_NEED_MORE:
            if (m.need <= left)
                __builtin_trap();
            return 0;
        case TG_SIP_PING:
        case TG_SIP_PONG:
            if (m.len != (r == TG_SIP_PING ? 4u : 2u) || m.len > left)
                __builtin_trap();
            off += m.len;
            continue;
        case TG_SIP_MESSAGE: {
            if (m.len == 0 || m.len > left || m.head_len > m.len ||
                (size_t)m.head_len + m.body_len != m.len || m.truncated)
                __builtin_trap();
            check_index(&m, m.head_len);
            check_span(m.start_line, m.head_len);
            // Every prefix of a message is incomplete, and asks for no more than the message.
            struct tg_sip_msg pm;
            size_t cuts[2] = {m.len - 1, m.len / 2};
            for (int i = 0; i < 2; i++) {
                if (scan_copy(&pm, tmp, p, cuts[i]) != TG_SIP_NEED_MORE || pm.need <= cuts[i] ||
                    pm.need > m.len)
                    __builtin_trap();
            }
            if (m.is_request)
                check_answer(&m, p, 400);
            off += m.len;
            continue;
        }
        case TG_SIP_ERROR:
            if (m.err == TG_SIP_ERR_NONE || m.err >= TG_SIP_ERR_NUM)
                __builtin_trap();
            if (m.status != 0 && m.status != 400 && m.status != 413 && m.status != 505 &&
                m.status != 513)
                __builtin_trap();
            if (m.can_continue && m.len == 0)
                __builtin_trap();
            check_index(&m, left);
            if (m.status != 0)
                check_answer(&m, p, m.status);
            if (!m.can_continue || m.len > left)
                return 0;
            off += m.len;
            continue;
        }
        __builtin_trap();
    }
    return 0;
}
