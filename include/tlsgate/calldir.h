#ifndef TLSGATE_CALLDIR_H
#define TLSGATE_CALLDIR_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tlsgate/loop.h"

// The call directory shared by the workers ([media]): which worker owns the call of a Call-ID,
// so that a request of the call arriving on another worker (a second TLS connection the kernel
// handed elsewhere) reaches the owner. One open-addressed table per worker, written by that
// worker alone and read by the others: an entry is a 64-bit SipHash of the Call-ID and the
// dialog's cookie (slot and generation), both relaxed/acquire-release atomics; no lock. A reader
// that races a removal may miss an entry (the request is then handled as if the call were
// unknown there); it never sees a half-written one. Messages to the owner go by tg_loop_post
// (op and dialog in user_data, nothing else), so no payload crosses threads.

struct tg_calldir_entry {
    _Atomic uint64_t key; // 0: empty, 1: removed, else the Call-ID's hash
    _Atomic uint64_t val; // the owner's dialog cookie
};

struct tg_calldir {
    unsigned num_workers;
    uint32_t mask; // per-worker table size - 1
    uint64_t hkey[2];
    struct tg_calldir_entry *tab; // [worker * (mask + 1) + i]
    // Each worker's loop while it runs: a poster counts itself in |users| and checks |alive|;
    // a worker leaving clears |alive| and waits for |users| to drain before its loop goes.
    struct tg_loop *_Atomic *loops;
    _Atomic uint32_t *users;
};

// tg_calldir_new makes the directory for |num_workers| workers of at most |calls| calls each.
// NULL when memory is short.
struct tg_calldir *tg_calldir_new(unsigned num_workers, uint32_t calls);
void tg_calldir_free(struct tg_calldir *d);

// tg_calldir_hash is the key of Call-ID |cid| (never 0 or 1).
uint64_t tg_calldir_hash(const struct tg_calldir *d, const char *cid, size_t len);

// tg_calldir_put records (worker |w| only) that |w| owns the call |h| as dialog |cookie|;
// tg_calldir_del forgets it. Put returns 0 when |w|'s table is full (the call then stays
// local, unknown to the other workers).
int tg_calldir_put(struct tg_calldir *d, unsigned w, uint64_t h, uint64_t cookie);
void tg_calldir_del(struct tg_calldir *d, unsigned w, uint64_t h);

// tg_calldir_find looks |h| up in the other workers' tables (not |self|'s). Returns 1 with the
// owner and its dialog cookie, or 0.
int tg_calldir_find(const struct tg_calldir *d, unsigned self, uint64_t h, unsigned *owner,
                    uint64_t *cookie);

// tg_calldir_attach publishes worker |w|'s loop; tg_calldir_detach withdraws it and waits for
// posters in flight (off the data path: at the worker's exit).
void tg_calldir_attach(struct tg_calldir *d, unsigned w, struct tg_loop *loop);
void tg_calldir_detach(struct tg_calldir *d, unsigned w);

// tg_calldir_post posts {|ud|, 0} from |from| (the caller's loop) to worker |w|'s loop.
// Returns 0 when |w| is not running or its queue is full.
int tg_calldir_post(struct tg_calldir *d, struct tg_loop *from, unsigned w, uint64_t ud);

#endif // TLSGATE_CALLDIR_H
