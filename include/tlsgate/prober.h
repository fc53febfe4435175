#ifndef TLSGATE_PROBER_H
#define TLSGATE_PROBER_H

#include <stddef.h>
#include <stdint.h>

// The OPTIONS keepalive of one connect target, as a pure state machine: time comes in as
// |now| (ms of the worker's clock), decisions go out as return values; no sockets, no TLS.
// Every interval an OPTIONS goes out; any final response within min(interval, 10 s) is a
// success, anything else (no answer, connect or handshake failure, the connection lost while
// waiting) a failure. After |threshold| consecutive failures the target is down, after one
// success up again. probes.c does the I/O around it.

struct tg_probe_state {
    uint32_t due;  // ms: when the next OPTIONS goes out
    uint32_t sent; // ms: when the outstanding one was started (connect included)
    uint32_t cseq;
    uint8_t awaiting; // an OPTIONS is outstanding
    uint8_t failures; // consecutive
    uint8_t down;
};

enum tg_probe_step {
    TG_PROBE_IDLE = 0,  // nothing to do now
    TG_PROBE_DUE,       // an OPTIONS is due: send it (opening the connection if needed)
    TG_PROBE_TIMED_OUT, // the outstanding OPTIONS had no answer in time: record a failure
};

enum tg_probe_change {
    TG_PROBE_SAME = 0,
    TG_PROBE_WENT_UP,
    TG_PROBE_WENT_DOWN,
};

// tg_probe_timeout_ms is how long an OPTIONS may wait for its answer.
static inline uint32_t tg_probe_timeout_ms(uint32_t interval_ms) {
    return interval_ms < 10000u ? interval_ms : 10000u;
}

// tg_probe_start makes the first OPTIONS due at |now|.
void tg_probe_start(struct tg_probe_state *p, uint32_t now);

// tg_probe_tick says what is due at |now|. TG_PROBE_DUE also marks the OPTIONS outstanding and
// schedules the next one |interval_ms| later.
enum tg_probe_step tg_probe_tick(struct tg_probe_state *p, uint32_t now, uint32_t interval_ms);

// tg_probe_result records the outcome of the outstanding OPTIONS (|ok|: a final response came)
// and says whether the target changed state; |threshold| consecutive failures make it down.
enum tg_probe_change tg_probe_result(struct tg_probe_state *p, int ok, unsigned threshold);

// tg_probe_format_options writes the OPTIONS request of probe |listener|/|target| toward
// |host|:|port| (|host| as configured: an IPv6 literal gets brackets) from |fqdn|:|fqdn_port|
// into |out|. Returns its length, or 0 when it does not fit.
size_t tg_probe_format_options(char *out, size_t out_len, const char *host, uint16_t port,
                               const char *fqdn, uint16_t fqdn_port, unsigned listener,
                               unsigned target, uint32_t cseq, uint32_t conn_seq);

// tg_probe_scan_result is what tg_probe_scan found in what the target sent.
enum tg_probe_scan_result {
    TG_PROBE_SCAN_MORE = 0, // no complete message (left in place)
    TG_PROBE_SCAN_SKIP,     // a complete message that is not a final response (consume it)
    TG_PROBE_SCAN_ANSWER,   // a final response (consume it)
    TG_PROBE_SCAN_BROKEN,   // the stream cannot be framed: close the connection
};

// tg_probe_scan looks at the first message in |data|; |*out_len| is its length.
enum tg_probe_scan_result tg_probe_scan(const uint8_t *data, uint32_t len, uint32_t *out_len);

#endif // TLSGATE_PROBER_H
