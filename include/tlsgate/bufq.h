#ifndef TLSGATE_BUFQ_H
#define TLSGATE_BUFQ_H

#include <stddef.h>
#include <stdint.h>

// Byte queues of the data path and the per-worker cache their memory comes from. No I/O and no
// hidden state: every function that may allocate or free takes the cache it uses.

// TG_BUFCACHE_MAX is how many buffers of one size a cache keeps at most, and TG_BUFCACHE_BYTES
// how many bytes a class keeps at most (but never fewer than TG_BUFCACHE_MIN buffers): what a
// worker holds in its cache after a burst is bounded (2 classes: about 2 MiB), whatever the
// configured buffer_size.
#define TG_BUFCACHE_MAX 64
#define TG_BUFCACHE_MIN 4
#define TG_BUFCACHE_BYTES (1u << 20)
#define TG_BUFCACHE_CLASSES 2

// tg_bufcache recycles queue memory of a few fixed sizes (one class per size), so a busy
// connection does not allocate and free its queues for every message; an idle one holds none.
// It belongs to one thread.
struct tg_bufcache {
    struct {
        uint32_t size; // 0: class unused
        unsigned num;
        unsigned max; // buffers kept at most
        uint8_t *bufs[TG_BUFCACHE_MAX];
    } cls[TG_BUFCACHE_CLASSES];
};

// tg_bufcache_init sets up an empty cache whose classes hold buffers of |size_a| and |size_b|
// bytes (0 leaves a class unused; equal sizes share the first class).
void tg_bufcache_init(struct tg_bufcache *bc, uint32_t size_a, uint32_t size_b);

// tg_bufcache_cleanup frees every cached buffer.
void tg_bufcache_cleanup(struct tg_bufcache *bc);

// tg_bufcache_get returns a buffer of |size| bytes, cached if one is, else malloc'ed (NULL when
// memory is short). |bc| may be NULL.
uint8_t *tg_bufcache_get(struct tg_bufcache *bc, uint32_t size);

// tg_bufcache_put takes back |data| of |size| bytes: cached when its class has room, else freed.
void tg_bufcache_put(struct tg_bufcache *bc, uint8_t *data, uint32_t size);

// tg_bufq is a byte queue: bytes [head, tail) of |data| are pending. Memory is taken on first
// use and given back when the queue empties, so an idle queue holds no buffer at all. While a
// send from the queue is in flight (|busy| below) the bytes may not move: the queue then only
// appends at its tail, and compacts once the send has completed.
struct tg_bufq {
    uint8_t *data;
    uint32_t head, tail, cap;
};

static inline uint32_t tg_bufq_len(const struct tg_bufq *q) {
    return q->tail - q->head;
}

// tg_bufq_peek returns the first pending byte (NULL when the queue holds no memory).
static inline const uint8_t *tg_bufq_peek(const struct tg_bufq *q) {
    return q->data != NULL ? q->data + q->head : NULL;
}

// tg_bufq_reset empties |q| and gives its memory back to |bc|.
void tg_bufq_reset(struct tg_bufq *q, struct tg_bufcache *bc);

// tg_bufq_space returns where the next bytes go and, in |*out_room|, how many fit there
// without moving what is queued. A queue without memory gets |size| bytes from |bc|; one with no
// send in flight (!|busy|) is compacted first. NULL when memory is short. Bytes written there
// are committed with tg_bufq_commit.
uint8_t *tg_bufq_space(struct tg_bufq *q, struct tg_bufcache *bc, uint32_t size, int busy,
                       uint32_t *out_room);

static inline void tg_bufq_commit(struct tg_bufq *q, uint32_t n) {
    q->tail += n;
}

// tg_bufq_append copies |n| bytes to the tail, growing the queue (beyond |size|) when it is not
// |busy|. Returns 1, or 0 when the bytes do not fit (busy) or memory is short.
int tg_bufq_append(struct tg_bufq *q, struct tg_bufcache *bc, const uint8_t *p, uint32_t n,
                   uint32_t size, int busy);

// tg_bufq_consume drops |n| bytes from the head; an emptied queue gives its memory back.
void tg_bufq_consume(struct tg_bufq *q, struct tg_bufcache *bc, uint32_t n);

#endif // TLSGATE_BUFQ_H
