#ifndef TLSGATE_GUARD_H
#define TLSGATE_GUARD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tlsgate/config.h"

struct sockaddr;

// Admission control: which accepted connections may start, decided before any cryptography
// and shared by every worker without a lock (relaxed atomics on counters).
//
// - Per listener: its own `max_connections` (0: only the global cap).
// - Unauthenticated budget: inbound connections whose handshake has not completed, at most
//   `max_handshakes` in the whole process (default max_connections / 2), so that a flood of
//   silent or slow TCP connections never holds the slots the provider's authenticated
//   connections need. When it is full a worker may evict its oldest handshake in progress.
// - Per source address (IPv4 address, IPv6 /64; IPv4-mapped addresses count as IPv4): at most
//   `max_handshakes_per_source` handshakes in progress and `new_connections_per_source` new
//   connections per second. Sources are kept in TG_GUARD_BUCKETS buckets under a keyed hash
//   (SipHash, random key), so an attacker can neither predict nor choose whose bucket he
//   shares; two sources that do share one share its limits (the safe side).

#define TG_GUARD_BUCKETS 4096

struct tg_guard_bucket {
    _Atomic uint32_t handshakes; // in progress from this bucket
    _Atomic uint32_t second;     // the second |count| is for
    _Atomic uint32_t count;      // new connections in that second
};

struct tg_guard {
    uint32_t max_handshakes;
    uint32_t max_per_source;
    uint32_t rate_per_source;
    uint64_t key[2];
    _Atomic uint32_t handshakes;
    size_t num_listeners;
    const uint32_t *listener_max;     // [listener]; 0 = no cap of its own
    _Atomic uint32_t *listener_conns; // [listener]
    struct tg_guard_bucket buckets[TG_GUARD_BUCKETS];
};

// tg_admit is the answer to a new connection.
enum tg_admit {
    TG_ADMIT_OK = 0,
    TG_ADMIT_LISTENER_MAX,
    TG_ADMIT_HANDSHAKES,
    TG_ADMIT_SOURCE_HANDSHAKES,
    TG_ADMIT_SOURCE_RATE,
};

// tg_guard_new sets up the guard for |cfg| (borrowed; it must outlive the guard) with a random
// hash key. NULL when memory is short.
struct tg_guard *tg_guard_new(const struct tg_config *cfg);
void tg_guard_free(struct tg_guard *g);

// tg_guard_bucket returns the bucket of source address |sa| (NULL: bucket 0).
uint16_t tg_guard_bucket(const struct tg_guard *g, const struct sockaddr *sa);

// tg_guard_admit_conn counts a new connection on |listener|: TG_ADMIT_OK (counted; release it
// with tg_guard_release_conn) or TG_ADMIT_LISTENER_MAX.
enum tg_admit tg_guard_admit_conn(struct tg_guard *g, size_t listener);
void tg_guard_release_conn(struct tg_guard *g, size_t listener);

// tg_guard_admit_handshake counts a new unauthenticated inbound connection from |bucket| at
// second |now_s|: TG_ADMIT_OK (counted; release it with tg_guard_release_handshake when it
// authenticates or ends) or the limit it hit (nothing counted). The per-source rate counts
// every attempt, admitted or not.
enum tg_admit tg_guard_admit_handshake(struct tg_guard *g, uint16_t bucket, uint32_t now_s);
void tg_guard_release_handshake(struct tg_guard *g, uint16_t bucket);

#endif // TLSGATE_GUARD_H
