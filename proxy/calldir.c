// The call directory shared by the workers (see include/tlsgate/calldir.h).
#include "tlsgate/calldir.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <openssl/siphash.h>

#define EMPTY 0
#define REMOVED 1

struct tg_calldir *tg_calldir_new(unsigned num_workers, uint32_t calls) {
    struct tg_calldir *d = calloc(1, sizeof(*d));
    if (d == NULL || num_workers == 0)
        goto fail;
    uint32_t size = 16;
    while (size < calls * 2u && size < (1u << 24))
        size *= 2;
    d->num_workers = num_workers;
    d->mask = size - 1;
    RAND_bytes((uint8_t *)d->hkey, sizeof(d->hkey));
    d->tab = calloc((size_t)num_workers * size, sizeof(*d->tab));
    d->loops = calloc(num_workers, sizeof(*d->loops));
    d->users = calloc(num_workers, sizeof(*d->users));
    if (d->tab == NULL || d->loops == NULL || d->users == NULL)
        goto fail;
    return d;
fail:
    tg_calldir_free(d);
    return NULL;
}

void tg_calldir_free(struct tg_calldir *d) {
    if (d == NULL)
        return;
    free(d->tab);
    free((void *)d->loops);
    free((void *)d->users);
    free(d);
}

uint64_t tg_calldir_hash(const struct tg_calldir *d, const char *cid, size_t len) {
    uint64_t h = SIPHASH_24(d->hkey, (const uint8_t *)cid, len);
    return h > REMOVED ? h : h + 2;
}

static struct tg_calldir_entry *table(const struct tg_calldir *d, unsigned w) {
    return d->tab + (size_t)w * (d->mask + 1);
}

int tg_calldir_put(struct tg_calldir *d, unsigned w, uint64_t h, uint64_t cookie) {
    struct tg_calldir_entry *t = table(d, w);
    for (uint32_t n = 0, i = (uint32_t)h & d->mask; n <= d->mask; n++, i = (i + 1) & d->mask) {
        uint64_t k = atomic_load_explicit(&t[i].key, memory_order_relaxed);
        if (k != EMPTY && k != REMOVED)
            continue;
        // The value first: a reader that sees the key sees its value.
        atomic_store_explicit(&t[i].val, cookie, memory_order_relaxed);
        atomic_store_explicit(&t[i].key, h, memory_order_release);
        return 1;
    }
    return 0;
}

void tg_calldir_del(struct tg_calldir *d, unsigned w, uint64_t h) {
    struct tg_calldir_entry *t = table(d, w);
    for (uint32_t n = 0, i = (uint32_t)h & d->mask; n <= d->mask; n++, i = (i + 1) & d->mask) {
        uint64_t k = atomic_load_explicit(&t[i].key, memory_order_relaxed);
        if (k == EMPTY)
            return;
        if (k != h)
            continue;
        // Where the probe chain ends right after, the chain shrinks back over removed entries
        // (a reader racing this may stop early: a miss, never a wrong hit).
        uint32_t next = (i + 1) & d->mask;
        if (atomic_load_explicit(&t[next].key, memory_order_relaxed) != EMPTY) {
            atomic_store_explicit(&t[i].key, REMOVED, memory_order_release);
            return;
        }
        for (uint32_t j = i;; j = (j - 1) & d->mask) {
            atomic_store_explicit(&t[j].key, EMPTY, memory_order_release);
            uint32_t prev = (j - 1) & d->mask;
            if (prev == i || atomic_load_explicit(&t[prev].key, memory_order_relaxed) != REMOVED)
                return;
        }
    }
}

int tg_calldir_find(const struct tg_calldir *d, unsigned self, uint64_t h, unsigned *owner,
                    uint64_t *cookie) {
    for (unsigned w = 0; w < d->num_workers; w++) {
        if (w == self)
            continue;
        struct tg_calldir_entry *t = table(d, w);
        for (uint32_t n = 0, i = (uint32_t)h & d->mask; n <= d->mask; n++, i = (i + 1) & d->mask) {
            uint64_t k = atomic_load_explicit(&t[i].key, memory_order_acquire);
            if (k == EMPTY)
                break;
            if (k != h)
                continue;
            uint64_t v = atomic_load_explicit(&t[i].val, memory_order_relaxed);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&t[i].key, memory_order_relaxed) != h)
                break; // removed meanwhile
            *owner = w;
            *cookie = v;
            return 1;
        }
    }
    return 0;
}

void tg_calldir_attach(struct tg_calldir *d, unsigned w, struct tg_loop *loop) {
    atomic_store_explicit(&d->loops[w], loop, memory_order_release);
}

void tg_calldir_detach(struct tg_calldir *d, unsigned w) {
    atomic_store_explicit(&d->loops[w], NULL, memory_order_seq_cst);
    while (atomic_load_explicit(&d->users[w], memory_order_seq_cst) != 0)
        sched_yield(); // off the data path: the worker is leaving
}

int tg_calldir_post(struct tg_calldir *d, struct tg_loop *from, unsigned w, uint64_t ud) {
    if (w >= d->num_workers)
        return 0;
    atomic_fetch_add_explicit(&d->users[w], 1, memory_order_seq_cst);
    struct tg_loop *to = atomic_load_explicit(&d->loops[w], memory_order_seq_cst);
    int ok = to != NULL && tg_loop_post(from, to, ud, 0);
    atomic_fetch_sub_explicit(&d->users[w], 1, memory_order_release);
    return ok;
}
