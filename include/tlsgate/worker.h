#ifndef TLSGATE_WORKER_H
#define TLSGATE_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/calldir.h"
#include "tlsgate/config.h"
#include "tlsgate/guard.h"
#include "tlsgate/metrics.h"
#include "tlsgate/peers.h"
#include "tlsgate/resolver.h"
#include "tlsgate/tls.h"

// tg_runtime is what every worker reads and none writes: the configuration, the metrics
// registry, and the TLS generation the workers start on (later ones arrive through
// tg_worker_set_contexts). It outlives the workers.
struct tg_runtime {
    const struct tg_config *cfg;
    struct tg_tls *tls;
    struct tg_metrics *metrics;
    struct tg_peers *peers;      // recently verified peers, one ring per worker (may be NULL)
    struct tg_guard *guard;      // admission control before any cryptography (may be NULL)
    struct tg_dns_snapshot *dns; // the connect targets' addresses the workers start on
    unsigned num_workers;
    struct tg_calldir *calldir; // [media]: which worker owns each call (NULL without)
    uint8_t sip_key[16];        // flow-token MAC key of mode = sip (RAND_bytes at startup)
};

// tg_worker is one I/O thread: its own loop (io_uring, provided buffers), its own SO_REUSEPORT
// listening sockets, its own connection table. Nothing on its data path is shared, and it
// takes no lock: a new generation arrives through an atomic mailbox and a wake-up.
struct tg_worker;

// tg_listen_probe tells whether |addr| is free for us: it binds a socket without SO_REUSEPORT
// (SO_REUSEADDR and, for IPv6, V6ONLY as tg_listen_open sets them) and closes it again. Call it
// before tg_listen_open, whose SO_REUSEPORT would let a second process on the same address
// share its connections unnoticed. Returns 1 when the bind succeeded; 0 with `ADDR: address
// already in use by another process` (EADDRINUSE: the kernel decides, wildcard and specific
// addresses included) or `ADDR: bind: why` in |err|.
int tg_listen_probe(const struct tg_target *addr, char *err, size_t err_len);

// tg_listen_open creates a bound, listening TCP socket for |addr| with SO_REUSEPORT set, so
// that every worker can hold its own socket on the same address. Returns the fd, or -1 with
// a reason in |err|.
int tg_listen_open(const struct tg_target *addr, char *err, size_t err_len);

// tg_worker_start creates worker |id| with the listening sockets |listen_fds| (one per
// configured listener; the worker takes ownership) and at most |max_conns| connections, and
// starts its thread pinned to the (id mod n)-th of the n CPUs the process may run on (taskset,
// systemd's CPUAffinity=). It returns once the thread has set up its ring: the worker, or NULL
// with a reason in |err|.
struct tg_worker *tg_worker_start(const struct tg_runtime *rt, unsigned id, int *listen_fds,
                                  uint32_t max_conns, char *err, size_t err_len);

// tg_worker_stop asks the worker to stop accepting and drain: open connections get up to
// `drain_timeout_ms` to finish, then are closed. Safe from any thread, signal-safe.
void tg_worker_stop(struct tg_worker *w);

// tg_worker_set_contexts hands the worker a new generation: connections it accepts from then on
// use |server| and |client| (it takes its own references); open connections keep theirs. Safe
// from any thread. Returns 1, or 0 when memory is short (nothing changed).
int tg_worker_set_contexts(struct tg_worker *w, SSL_CTX *server, SSL_CTX *client);

// tg_worker_set_dns hands the worker a newer snapshot of the connect targets' addresses (it
// takes its own reference): connections it starts from then on use it; open ones keep theirs.
// Safe from any thread.
void tg_worker_set_dns(struct tg_worker *w, struct tg_dns_snapshot *snap);

// tg_worker_join waits for the thread to end and frees the worker.
void tg_worker_join(struct tg_worker *w);

#endif // TLSGATE_WORKER_H
