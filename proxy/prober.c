// The OPTIONS prober's pure state machine (see include/tlsgate/prober.h).
#include "tlsgate/prober.h"

#include <stdio.h>
#include <string.h>

#include "tlsgate/sip.h"
#include "tlsgate/timer.h"

void tg_probe_start(struct tg_probe_state *p, uint32_t now) {
    p->due = now;
}

enum tg_probe_step tg_probe_tick(struct tg_probe_state *p, uint32_t now, uint32_t interval_ms) {
    if (p->awaiting)
        return tg_time_reached(now, p->sent + tg_probe_timeout_ms(interval_ms)) ? TG_PROBE_TIMED_OUT
                                                                                : TG_PROBE_IDLE;
    if (!tg_time_reached(now, p->due))
        return TG_PROBE_IDLE;
    p->due = now + interval_ms;
    p->awaiting = 1;
    p->sent = now;
    return TG_PROBE_DUE;
}

enum tg_probe_change tg_probe_result(struct tg_probe_state *p, int ok, unsigned threshold) {
    p->awaiting = 0;
    if (ok) {
        p->failures = 0;
        if (!p->down)
            return TG_PROBE_SAME;
        p->down = 0;
        return TG_PROBE_WENT_UP;
    }
    if (p->failures < UINT8_MAX)
        p->failures++;
    if (p->down || p->failures < threshold)
        return TG_PROBE_SAME;
    p->down = 1;
    return TG_PROBE_WENT_DOWN;
}

size_t tg_probe_format_options(char *out, size_t out_len, const char *host, uint16_t port,
                               const char *fqdn, uint16_t fqdn_port, unsigned listener,
                               unsigned target, uint32_t cseq, uint32_t conn_seq) {
    char h[300];
    snprintf(h, sizeof(h), strchr(host, ':') ? "[%s]" : "%s", host);
    int n = snprintf(out, out_len,
                     "OPTIONS sip:%s:%u;transport=tls SIP/2.0\r\n"
                     "Via: SIP/2.0/TLS %s:%u;branch=z9hG4bK-tgopt-%u-%u-%u\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:%s>;tag=tlsgate-%u-%u\r\n"
                     "To: <sip:%s:%u>\r\n"
                     "Call-ID: tlsgate-options-%u-%u-%u@%s\r\n"
                     "CSeq: %u OPTIONS\r\n"
                     "Content-Length: 0\r\n\r\n",
                     h, port, fqdn, fqdn_port, listener, target, cseq, fqdn, listener, target, h,
                     port, listener, target, conn_seq, fqdn, cseq);
    if (n <= 0 || (size_t)n >= out_len)
        return 0;
    return (size_t)n;
}

enum tg_probe_scan_result tg_probe_scan(const uint8_t *data, uint32_t len, uint32_t *out_len) {
    // As many header lines as the scanner's default limit allows, so that any response it
    // frames is also classified.
    struct tg_sip_header hdrs[128];
    struct tg_sip_msg m;
    *out_len = 0;
    enum tg_sip_scan_result s = tg_sip_scan(NULL, &m, hdrs, 128, data, len);
    if (s == TG_SIP_NEED_MORE)
        return TG_PROBE_SCAN_MORE;
    if (s == TG_SIP_ERROR && (!m.can_continue || m.len == 0 || m.len > len))
        return TG_PROBE_SCAN_BROKEN;
    *out_len = m.len;
    if (s == TG_SIP_MESSAGE && !m.is_request && m.code >= 200)
        return TG_PROBE_SCAN_ANSWER;
    return TG_PROBE_SCAN_SKIP;
}
