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
// - Descriptors: two per connection, those media sessions hold (tg_guard_take_fds), and
//   `fd_reserve` kept free for the admin server, the
//   control thread and reloads, so the data plane never exhausts them (EMFILE would also stop
//   the admin server, whose library then busy-waits).
// - The unauthenticated budget (`max_handshakes`) is not here: each worker keeps its share
//   (conn.c), so that the worker a newcomer lands on can always evict its own oldest stale
//   handshake to admit it.
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
    uint32_t max_per_source;
    uint32_t rate_per_source;
    uint32_t fd_limit;   // RLIMIT_NOFILE when the guard was made (0: unknown or unlimited)
    uint32_t fd_reserve; // 0: no reservation
    uint64_t key[2];
    _Atomic uint32_t conns;     // connections counted, all listeners
    _Atomic uint32_t other_fds; // descriptors held besides connections (media sockets)
    size_t num_listeners;
    const uint32_t *listener_max;     // [listener]; 0 = no cap of its own
    _Atomic uint32_t *listener_conns; // [listener]
    struct tg_guard_bucket buckets[TG_GUARD_BUCKETS];
};

// tg_admit is the answer to a new connection.
enum tg_admit {
    TG_ADMIT_OK = 0,
    TG_ADMIT_FD_LIMIT,
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
// with tg_guard_release_conn), TG_ADMIT_FD_LIMIT or TG_ADMIT_LISTENER_MAX.
enum tg_admit tg_guard_admit_conn(struct tg_guard *g, size_t listener);
void tg_guard_release_conn(struct tg_guard *g, size_t listener);

// tg_guard_take_fds counts |n| descriptors held outside connections (a media session's UDP
// sockets): 1 when they fit under the limit less fd_reserve with the connections' (always 1
// when there is no limit or no reserve), 0 (nothing counted) when they would eat into the
// reserve. tg_guard_give_fds gives them back. Connections are admitted against the same sum,
// so neither kind can starve the admin server and reloads of descriptors.
int tg_guard_take_fds(struct tg_guard *g, uint32_t n);
void tg_guard_give_fds(struct tg_guard *g, uint32_t n);

// tg_guard_admit_handshake counts a new unauthenticated inbound connection from |bucket| at
// second |now_s|: TG_ADMIT_OK (counted; release it with tg_guard_release_handshake when it
// authenticates or ends) or the per-source limit it hit (nothing counted). The per-source rate
// counts every attempt, admitted or not.
enum tg_admit tg_guard_admit_handshake(struct tg_guard *g, uint16_t bucket, uint32_t now_s);
void tg_guard_release_handshake(struct tg_guard *g, uint16_t bucket);

#endif // TLSGATE_GUARD_H
