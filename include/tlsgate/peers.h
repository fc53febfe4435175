#ifndef TLSGATE_PEERS_H
#define TLSGATE_PEERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

// The record of recently verified peers that /status shows. Each worker writes its own ring
// and nobody else does (single writer, no lock): an entry is published under a sequence
// number the reader checks, so the admin thread copies it without stopping the worker. A
// worker writes an entry when it verifies a chain it has not cached; a cache hit only moves
// the entry's |seen| time (one relaxed atomic store), which keeps the record off the handshake
// path.

#define TG_PEERS_PER_WORKER 16
#define TG_PEERS_SHOWN 16

struct tg_peer_entry {
    _Atomic uint32_t seq; // odd while being written
    _Atomic int64_t seen; // seconds since the epoch
    char name[128];
    char issuer[256];
    int64_t not_after;
};

struct tg_peer_ring {
    struct tg_peer_entry e[TG_PEERS_PER_WORKER];
    uint32_t next; // the writer's alone
};

struct tg_peers {
    unsigned num_rings;
    struct tg_peer_ring rings[];
};

// tg_peers_new allocates one ring per worker. NULL when memory is short.
struct tg_peers *tg_peers_new(unsigned num_workers);
void tg_peers_free(struct tg_peers *p);

// tg_peers_ring returns worker |id|'s ring.
static inline struct tg_peer_ring *tg_peers_ring(struct tg_peers *p, unsigned id) {
    return &p->rings[id];
}

// tg_peer_ring_note records a verified peer; returns a handle for tg_peer_ring_seen.
uint32_t tg_peer_ring_note(struct tg_peer_ring *r, const char *name, const char *issuer,
                           int64_t not_after, int64_t now);

// tg_peer_ring_seen marks the peer recorded under |handle| as seen again at |now|, unless its
// entry has since been reused for another peer (then the peer is recorded anew).
void tg_peer_ring_seen(struct tg_peer_ring *r, uint32_t *handle, const char *name,
                       const char *issuer, int64_t not_after, int64_t now);

// tg_peers_json writes the most recently seen peers of all rings, newest first, as a JSON array
// into |buf| (NUL-terminated, at most |len| bytes). Returns the length. Any thread.
size_t tg_peers_json(const struct tg_peers *p, char *buf, size_t len);

#endif // TLSGATE_PEERS_H
