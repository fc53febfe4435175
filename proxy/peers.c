// Recently verified peers, one single-writer ring per worker (see include/tlsgate/peers.h).
#include "tlsgate/peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlsgate/json.h"

struct tg_peers *tg_peers_new(unsigned num_workers) {
    struct tg_peers *p = calloc(1, sizeof(*p) + num_workers * sizeof(struct tg_peer_ring));
    if (p != NULL)
        p->num_rings = num_workers;
    return p;
}

void tg_peers_free(struct tg_peers *p) {
    free(p);
}

// The handle of an entry: its index in the low bits, its sequence number above them.
#define HANDLE(idx, seq) (((seq) << 8) | (idx))

uint32_t tg_peer_ring_note(struct tg_peer_ring *r, const char *name, const char *issuer,
                           int64_t not_after, int64_t now) {
    uint32_t idx = r->next;
    r->next = (r->next + 1) % TG_PEERS_PER_WORKER;
    struct tg_peer_entry *e = &r->e[idx];
    uint32_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    snprintf(e->name, sizeof(e->name), "%s", name != NULL ? name : "");
    snprintf(e->issuer, sizeof(e->issuer), "%s", issuer != NULL ? issuer : "");
    e->not_after = not_after;
    atomic_store_explicit(&e->seen, now, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
    return HANDLE(idx, seq + 2);
}

void tg_peer_ring_seen(struct tg_peer_ring *r, uint32_t *handle, const char *name,
                       const char *issuer, int64_t not_after, int64_t now) {
    uint32_t idx = *handle & 0xff;
    if (idx < TG_PEERS_PER_WORKER &&
        HANDLE(idx, atomic_load_explicit(&r->e[idx].seq, memory_order_relaxed)) == *handle) {
        atomic_store_explicit(&r->e[idx].seen, now, memory_order_relaxed);
        return;
    }
    *handle = tg_peer_ring_note(r, name, issuer, not_after, now);
}

// read_entry copies |e| consistently; returns 0 for an empty entry.
static int read_entry(const struct tg_peer_entry *e, struct tg_peer_entry *out) {
    for (int tries = 0; tries < 16; tries++) {
        uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
        if (s1 == 0)
            return 0;
        if (s1 & 1)
            continue;
        memcpy(out->name, e->name, sizeof(out->name));
        memcpy(out->issuer, e->issuer, sizeof(out->issuer));
        out->not_after = e->not_after;
        int64_t seen = atomic_load_explicit(&e->seen, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s1)
            continue;
        atomic_store_explicit(&out->seen, seen, memory_order_relaxed);
        out->name[sizeof(out->name) - 1] = '\0';
        out->issuer[sizeof(out->issuer) - 1] = '\0';
        return 1;
    }
    return 0;
}

static void iso_time(int64_t t, char *out, size_t out_len) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

// put appends |s| when it fits with |reserve| bytes to spare; returns 0 when it does not.
static int put(char *buf, size_t len, size_t *n, const char *s, size_t reserve) {
    size_t k = strlen(s);
    if (*n + k + 1 + reserve > len)
        return 0;
    memcpy(buf + *n, s, k + 1);
    *n += k;
    return 1;
}

size_t tg_peers_json(const struct tg_peers *p, char *buf, size_t len) {
    size_t n = 0;
    if (len == 0)
        return 0;
    buf[0] = '\0';
    size_t total = (size_t)p->num_rings * TG_PEERS_PER_WORKER;
    struct tg_peer_entry *all = calloc(total > 0 ? total : 1, sizeof(*all));
    size_t num = 0;
    for (unsigned r = 0; all != NULL && r < p->num_rings; r++)
        for (unsigned i = 0; i < TG_PEERS_PER_WORKER; i++)
            if (read_entry(&p->rings[r].e[i], &all[num]))
                num++;
    // The array is always well formed: entries that do not fit (with room kept for the "]")
    // are left out, and "[]" itself needs 3 bytes.
    if (!put(buf, len, &n, "[", 1)) {
        free(all);
        return 0;
    }
    unsigned shown = 0;
    for (unsigned round = 0; round < TG_PEERS_SHOWN; round++) {
        // The newest entry not shown yet (a selection: at most 16 rounds).
        size_t best = num;
        int64_t best_seen = 0;
        for (size_t i = 0; i < num; i++) {
            int64_t s = atomic_load_explicit(&all[i].seen, memory_order_relaxed);
            if (s > best_seen) {
                best = i;
                best_seen = s;
            }
        }
        if (best == num)
            break;
        struct tg_peer_entry *e = &all[best];
        char name[300], issuer[600], seen[32], na[32], item[1100];
        tg_json_escape(name, sizeof(name), e->name);
        tg_json_escape(issuer, sizeof(issuer), e->issuer);
        iso_time(best_seen, seen, sizeof(seen));
        iso_time(e->not_after, na, sizeof(na));
        snprintf(item, sizeof(item),
                 "%s{\"name\":\"%s\",\"issuer\":\"%s\",\"not_after\":\"%s\",\"seen\":\"%s\"}",
                 shown ? "," : "", name, issuer, na, seen);
        atomic_store_explicit(&e->seen, 0, memory_order_relaxed);
        if (!put(buf, len, &n, item, 1))
            break;
        shown++;
    }
    put(buf, len, &n, "]", 0);
    free(all);
    return n;
}
