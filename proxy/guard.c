// Admission control before any cryptography (see include/tlsgate/guard.h).
#include "tlsgate/guard.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/rand.h>
#include <openssl/siphash.h>

struct tg_guard *tg_guard_new(const struct tg_config *cfg) {
    struct tg_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->max_per_source = cfg->max_handshakes_per_source;
    g->fd_reserve = cfg->fd_reserve;
    struct rlimit rl;
    g->fd_limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                          rl.rlim_cur < UINT32_MAX
                      ? (uint32_t)rl.rlim_cur
                      : 0;
    g->rate_per_source = cfg->new_connections_per_source;
    RAND_bytes((uint8_t *)g->key, sizeof(g->key));
    g->num_listeners = cfg->num_listeners;
    uint32_t *max = calloc(cfg->num_listeners + 1, sizeof(*max));
    g->listener_conns = calloc(cfg->num_listeners + 1, sizeof(*g->listener_conns));
    if (max == NULL || g->listener_conns == NULL) {
        free(max);
        free(g->listener_conns);
        free(g);
        return NULL;
    }
    for (size_t l = 0; l < cfg->num_listeners; l++)
        max[l] = cfg->listeners[l].max_connections;
    g->listener_max = max;
    return g;
}

void tg_guard_free(struct tg_guard *g) {
    if (g == NULL)
        return;
    free((void *)g->listener_max);
    free(g->listener_conns);
    free(g);
}

uint16_t tg_guard_bucket(const struct tg_guard *g, const struct sockaddr *sa) {
    uint8_t key[17];
    size_t len = 0;
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        key[0] = 4;
        memcpy(key + 1, &in->sin_addr, 4);
        len = 5;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            key[0] = 4;
            memcpy(key + 1, in6->sin6_addr.s6_addr + 12, 4);
            len = 5;
        } else {
            key[0] = 6;
            memcpy(key + 1, in6->sin6_addr.s6_addr, 8); // the /64: one site
            len = 9;
        }
    } else {
        return 0;
    }
    return (uint16_t)(SIPHASH_24(g->key, key, len) % TG_GUARD_BUCKETS);
}

enum tg_admit tg_guard_admit_conn(struct tg_guard *g, size_t listener) {
    if (listener >= g->num_listeners)
        return TG_ADMIT_OK;
    // Two descriptors per connection (its socket and the far side's), and fd_reserve kept for
    // the admin server, the control thread and reloads: the data plane never exhausts them.
    uint32_t all = atomic_fetch_add_explicit(&g->conns, 1, memory_order_relaxed);
    uint32_t other = atomic_load_explicit(&g->other_fds, memory_order_relaxed);
    if (g->fd_limit != 0 && g->fd_reserve != 0 &&
        2ull * (all + 1) + other + g->fd_reserve > (uint64_t)g->fd_limit) {
        atomic_fetch_sub_explicit(&g->conns, 1, memory_order_relaxed);
        return TG_ADMIT_FD_LIMIT;
    }
    uint32_t max = g->listener_max[listener];
    uint32_t n = atomic_fetch_add_explicit(&g->listener_conns[listener], 1, memory_order_relaxed);
    if (max != 0 && n >= max) {
        atomic_fetch_sub_explicit(&g->listener_conns[listener], 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&g->conns, 1, memory_order_relaxed);
        return TG_ADMIT_LISTENER_MAX;
    }
    return TG_ADMIT_OK;
}

int tg_guard_take_fds(struct tg_guard *g, uint32_t n) {
    uint32_t other = atomic_fetch_add_explicit(&g->other_fds, n, memory_order_relaxed);
    uint32_t conns = atomic_load_explicit(&g->conns, memory_order_relaxed);
    if (g->fd_limit != 0 && g->fd_reserve != 0 &&
        2ull * conns + other + n + g->fd_reserve > (uint64_t)g->fd_limit) {
        atomic_fetch_sub_explicit(&g->other_fds, n, memory_order_relaxed);
        return 0;
    }
    return 1;
}

void tg_guard_give_fds(struct tg_guard *g, uint32_t n) {
    atomic_fetch_sub_explicit(&g->other_fds, n, memory_order_relaxed);
}

void tg_guard_release_conn(struct tg_guard *g, size_t listener) {
    if (listener >= g->num_listeners)
        return;
    atomic_fetch_sub_explicit(&g->listener_conns[listener], 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&g->conns, 1, memory_order_relaxed);
}

// over_rate counts one attempt in |b|'s current second; returns 1 when it is beyond the rate.
static int over_rate(struct tg_guard *g, struct tg_guard_bucket *b, uint32_t now_s) {
    if (g->rate_per_source == 0)
        return 0;
    uint32_t sec = atomic_load_explicit(&b->second, memory_order_relaxed);
    if (sec != now_s && atomic_compare_exchange_strong_explicit(
                            &b->second, &sec, now_s, memory_order_relaxed, memory_order_relaxed))
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
    uint32_t n = atomic_fetch_add_explicit(&b->count, 1, memory_order_relaxed);
    return n >= g->rate_per_source;
}

enum tg_admit tg_guard_admit_handshake(struct tg_guard *g, uint16_t bucket, uint32_t now_s) {
    struct tg_guard_bucket *b = &g->buckets[bucket % TG_GUARD_BUCKETS];
    if (over_rate(g, b, now_s))
        return TG_ADMIT_SOURCE_RATE;
    uint32_t per = atomic_fetch_add_explicit(&b->handshakes, 1, memory_order_relaxed);
    if (g->max_per_source != 0 && per >= g->max_per_source) {
        atomic_fetch_sub_explicit(&b->handshakes, 1, memory_order_relaxed);
        return TG_ADMIT_SOURCE_HANDSHAKES;
    }
    return TG_ADMIT_OK;
}

void tg_guard_release_handshake(struct tg_guard *g, uint16_t bucket) {
    atomic_fetch_sub_explicit(&g->buckets[bucket % TG_GUARD_BUCKETS].handshakes, 1,
                              memory_order_relaxed);
}
