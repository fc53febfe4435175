// tlsgate-load: the pieces shared by the command line (tlsgate_load.c), the io_uring engine
// (load_engine.c) and the latency histogram (load_hist.c).
#ifndef TLSGATE_LOAD_H
#define TLSGATE_LOAD_H

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

// ---------------------------------------------------------------------------------------------
// Histogram: HDR-style log-linear buckets over nanoseconds. Values below 2^LG_HIST_SUB_BITS are
// exact; above, each power of two is split into 2^(LG_HIST_SUB_BITS-1) linear buckets, so a
// bucket is at most 1/128 of its value wide (< 1% error). Range 1 ns .. 2^35 ns (~34 s);
// larger values land in the last bucket (|max| is kept exactly).

#define LG_HIST_SUB_BITS 8
#define LG_HIST_MAX_BITS 35
#define LG_HIST_NUM_BUCKETS                                                                        \
    ((1u << LG_HIST_SUB_BITS) +                                                                    \
     (LG_HIST_MAX_BITS - LG_HIST_SUB_BITS) * (1u << (LG_HIST_SUB_BITS - 1)))

// lg_hist counts values (nanoseconds). Zero it to initialise; it owns no memory.
struct lg_hist {
    uint64_t counts[LG_HIST_NUM_BUCKETS];
    uint64_t total;
    uint64_t max;
};

// lg_hist_record adds one value of |ns| nanoseconds.
void lg_hist_record(struct lg_hist *h, uint64_t ns);

// lg_hist_merge adds every count of |from| into |h|.
void lg_hist_merge(struct lg_hist *h, const struct lg_hist *from);

// lg_hist_percentile returns the value (ns) at or below which |pct| percent of the values lie:
// the highest value of the bucket holding that rank, capped at the maximum. 0 when empty.
uint64_t lg_hist_percentile(const struct lg_hist *h, double pct);

// ---------------------------------------------------------------------------------------------
// Options and results.

enum lg_mode {
    LG_MODE_HANDSHAKE = 0,
    LG_MODE_BULK,
    LG_MODE_LATENCY,
    LG_MODE_IDLE,
    LG_MODE_SIP, // sip-options: SIP OPTIONS transactions (open loop at --rate, closed at 0)
};

// lg_opts is the parsed command line plus what main() builds from it. Read-only once the
// engines run.
struct lg_opts {
    enum lg_mode mode;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    const char *sni;
    uint32_t concurrency;
    uint32_t num_threads;
    double duration_s;
    double warmup_s;
    double hold_s;
    int resume;
    int sink;
    int json;
    uint32_t write_size;    // bulk: bytes per SSL_write
    uint32_t req_size;      // latency: bytes per request (and per response)
    double rate;            // latency: requests per second, all connections together
                            // (sip-options: 0 = closed loop, one outstanding per connection)
    int plain;              // sip-options: plain TCP, no TLS (the responder-direct baseline)
    SSL_CTX *ctx;           // shared by every thread (BoringSSL contexts are thread-safe)
    const uint8_t *pattern; // the deterministic byte stream's table (see load_engine.c)
    uint32_t pattern_period;
};

// lg_stats is what one engine reports; main() adds them up.
struct lg_stats {
    uint64_t count; // handshakes / writes / responses / connections, per mode
    uint64_t errors;
    uint64_t resumed;    // handshake mode: handshakes that SSL_session_reused confirmed
    uint64_t bytes_sent; // plaintext, inside the measurement window
    uint64_t bytes_received;
    uint64_t established; // connections that completed their handshake and did not fail
                          // afterwards (TLS 1.3: the server judges our certificate after our
                          // side of the handshake is done), all phases
    uint64_t window_ns;   // length of the measurement window (hold time in idle mode)
    struct lg_hist hist;  // latency mode
    struct lg_hist lag;   // latency mode: how late after its scheduled time each request went
};

// lg_shared is the little state the engines share: stop requests and the idle-mode rendezvous.
struct lg_shared {
    volatile sig_atomic_t *stop;  // set by SIGINT/SIGTERM
    _Atomic uint32_t setup_done;  // idle: engines whose connections are all up (or failed)
    _Atomic uint64_t established; // idle: connections up, all engines together
    _Atomic int all_up;           // idle: every engine is done with setup, `established=` printed
};

// lg_engine_run runs one engine (one thread, one ring) over |num_conns| connections whose
// global ids start at |first_id|, doing |rate| requests per second in latency mode. Fills
// |out|. Returns 1 when the engine ran, 0 when it could not start (message on stderr).
int lg_engine_run(const struct lg_opts *o, struct lg_shared *sh, uint32_t first_id,
                  uint32_t num_conns, double rate, struct lg_stats *out);

// lg_engine_new_session is the SSL_CTX new-session callback used with --resume: it hands the
// first session a thread sees to that thread's engine (returns 1, taking the reference) and
// drops the rest (returns 0).
int lg_engine_new_session(SSL *ssl, SSL_SESSION *session);

#endif // TLSGATE_LOAD_H
