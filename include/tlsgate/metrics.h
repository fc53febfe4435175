#ifndef TLSGATE_METRICS_H
#define TLSGATE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tlsgate/policy.h"
#include "tlsgate/sip.h"
#include "tlsgate/siprw.h"

// Counters are written by exactly one worker thread and read by the admin thread. A counter
// is a relaxed atomic updated with a plain load + store (no locked instruction on the data
// path); readers sum the per-worker copies.

typedef _Atomic uint64_t tg_counter;

static inline void tg_counter_add(tg_counter *c, uint64_t n) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t tg_counter_get(const tg_counter *c) {
    return atomic_load_explicit((tg_counter *)c, memory_order_relaxed);
}

// Why a connection was turned away before any handshake (before any cryptography).
enum tg_reject_reason {
    TG_REJECT_MAX_CONNECTIONS = 0, // the worker's connection slots are all taken
    TG_REJECT_DRAINING,
    TG_REJECT_LISTENER_MAX,      // the listener's own max_connections
    TG_REJECT_HANDSHAKES,        // max_handshakes in progress (unauthenticated budget)
    TG_REJECT_SOURCE_HANDSHAKES, // max_handshakes_per_source in progress from this address
    TG_REJECT_SOURCE_RATE,       // new_connections_per_source in this second from this address
    TG_REJECT_FD_LIMIT,          // the descriptor limit less fd_reserve
    TG_REJECT_NUM
};

// tg_listener_counters are one worker's counters for one listener.
struct tg_listener_counters {
    tg_counter conns_opened;
    tg_counter conns_closed; // active = opened - closed
    tg_counter handshakes[TG_VERDICT_NUM];
    tg_counter bytes_up;                // plaintext from the accepted side toward the far side
    tg_counter bytes_down;              // plaintext from the far side back to the accepted side
    tg_counter upstream_connect_errors; // connect() to a forward/connect target failed
    tg_counter rejected[TG_REJECT_NUM];
    tg_counter accept_paused; // accepting paused for lack of descriptors (episodes)
    tg_counter recv_nobufs;   // receives that found no provided buffer (re-armed later)
    tg_counter hs_evicted;    // handshakes in progress closed to admit new ones under a flood
    // mode = sip only (zero elsewhere):
    tg_counter sip_requests[TG_SIP_M_NUM];      // requests received, by method
    tg_counter sip_responses[6];                // responses received, by class 1xx..6xx
    tg_counter sip_scan_errors[TG_SIP_ERR_NUM]; // framing errors, by scanner reason
    tg_counter sip_rw_errors[TG_SIP_RW_NUM];    // refused or dropped by the rewriter
    tg_counter sip_flow_errors;                 // responses whose flow names another connection
};

// tg_media_counters are one worker's media counters ([media] only). Directions: 0 is from the
// provider toward the PBX (SRTP in, RTP out), 1 from the PBX toward the provider.
struct tg_media_counters {
    // Each worker's block on its own cache lines (sizeof is a multiple of 64).
    _Alignas(64) tg_counter calls_opened; // calls given media sessions; active = opened - closed
    tg_counter calls_closed;
    tg_counter streams_opened; // media sessions (one per m= stream): four UDP sockets each
    tg_counter streams_closed;
    tg_counter packets[2];     // relayed, by direction
    tg_counter bytes[2];       // bytes received that were relayed, by direction
    tg_counter auth_failures;  // SRTP/SRTCP tag did not verify: dropped, never latched
    tg_counter replays;        // SRTP/SRTCP replayed or too old: dropped
    tg_counter bad_packets;    // not RTP/RTCP, truncated, or no key yet: dropped
    tg_counter foreign_source; // from an address that is not the PBX's: dropped
    tg_counter no_destination; // nowhere to send yet (no SDP address, on hold): dropped
    tg_counter send_errors;    // sendmsg failed
    tg_counter latches;        // the provider's source address learnt or moved (authenticated)
    tg_counter timeouts;       // streams ended by [media] timeout_s
    tg_counter port_exhausted; // a call refused for lack of ports or of max_calls (503)
    tg_counter crypto_refused; // offers answered 488: no acceptable a=crypto
    tg_counter sdp_errors;     // SDP bodies refused as malformed (400 / response dropped)
    tg_counter recv_nobufs;    // a receive stopped for lack of buffers (re-armed as they return)
    tg_counter answers_failed; // a 2xx whose SDP could not be used: failed back (488, ACK, BYE)
    tg_counter byes_sent;      // BYEs tlsgate sent itself (media timeout, failed answer)
};

// TG_METRICS_MAX_TARGETS is the number of connect targets per listener (TG_MAX_TARGETS).
#define TG_METRICS_MAX_TARGETS 8

// tg_target_health is the OPTIONS verdict on one connect target of an outbound SIP listener:
// written by the worker that probes (worker 0), read by every worker picking a target and by
// the admin thread. |name| is written once, before |state| first leaves TG_TARGET_UNPROBED.
enum tg_target_state { TG_TARGET_UNPROBED = 0, TG_TARGET_UP, TG_TARGET_DOWN };

struct tg_target_health {
    _Atomic uint8_t state; // enum tg_target_state: the OPTIONS verdict (probed SIP listeners)
    char name[80];         // `HOST:PORT` as configured
    // Passive health of every outbound target (upstream.c): a failed attempt marks the target
    // down until |down_until| (monotonic ms, tg_loop_now_ms); new connections skip it until
    // then, the first connection after that probes it back. Written by any worker.
    _Atomic uint8_t passive_down;
    _Atomic uint32_t down_until;
    uint8_t named; // |name| is set: the target exists (written once, before the workers)
    // A name with no address now (resolver.h): not taken, whatever else says.
    _Atomic uint8_t unresolved;
};

// tg_target_is_up says whether target |h| is taken by new connections at |now_ms| (the
// monotonic clock of tg_loop_now_ms; neither marked down by OPTIONS nor within a failure's
// back-off).
int tg_target_is_up(const struct tg_target_health *h, uint32_t now_ms);

// tg_metrics holds every worker's counters for every listener.
struct tg_signer_stats;
struct tg_kfeats;

struct tg_metrics {
    struct tg_target_health *targets; // [listener * TG_METRICS_MAX_TARGETS + target]
    size_t num_workers;
    size_t num_listeners;
    const char **listener_names;              // borrowed, |num_listeners| entries
    const char **listener_kinds;              // borrowed: "inbound" or "outbound"
    struct tg_listener_counters **per_worker; // [worker] -> array of |num_listeners|
    struct tg_media_counters *media;          // [worker]
    int media_enabled;                        // render the media series ([media] configured)
    const struct tg_signer_stats *signer;     // the signer pool's counters; NULL: none
    const struct tg_kfeats *kfeats;           // the kernel's offers (kfeat.h); NULL: unprobed
};

// tg_metrics_new allocates zeroed counters; names are borrowed and must outlive the result.
struct tg_metrics *tg_metrics_new(size_t num_workers, size_t num_listeners,
                                  const char **listener_names, const char **listener_kinds);

// tg_metrics_free releases |m|. NULL is a no-op.
void tg_metrics_free(struct tg_metrics *m);

// tg_metrics_worker returns worker |w|'s counter array (|num_listeners| entries).
struct tg_listener_counters *tg_metrics_worker(struct tg_metrics *m, size_t w);

// tg_metrics_render writes the Prometheus text exposition of |m| into a malloc'd buffer
// returned in |*out| with its length in |*out_len|. |extra| (may be NULL) is appended verbatim.
// Returns 1 on success, 0 on allocation failure.
int tg_metrics_render(const struct tg_metrics *m, const char *extra, char **out, size_t *out_len);

#endif // TLSGATE_METRICS_H
