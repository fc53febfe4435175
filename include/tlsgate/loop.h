#ifndef TLSGATE_LOOP_H
#define TLSGATE_LOOP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

// The loop core of a worker: one io_uring, the user_data encoding, dispatch of completions to
// a handler per kind of object, per-kind slabs with generations, provided-buffer groups, the
// tick that drives the timer lanes, wake-ups from other threads and messages between loops.
// It knows nothing of TLS, SIP or connections: adding a kind of object (a media session, a UDP
// socket) adds a file with a handler and one tg_loop_set_kind call, not branches here.
//
// user_data, the one place it is defined:
//   bits  0..3   kind (enum tg_kind): which handler, which slab
//   bits  4..7   op: the kind's own operation code (what completed)
//   bits  8..31  slot index in the kind's slab (listener index for TG_KIND_LISTENER)
//   bits 32..63  the slot's generation when the operation was submitted
// A completion whose generation is not the slot's current one, or whose slot is free, belongs
// to an older occupant: the loop drops it (returning its provided buffer) without calling the
// handler. A recv's provided buffer id travels in cqe->flags, not in user_data.

enum tg_kind {
    TG_KIND_CORE = 0, // the loop's own: ignored completions, wake-ups, the tick
    TG_KIND_LISTENER, // single-shot accepts; slot = listener index, no slab
    TG_KIND_CONN,     // a proxied TLS connection pair (conn.c)
    TG_KIND_MEDIA,    // a media session's UDP receives (media.c); op = the socket
    TG_KIND_MEDIA_TX, // a relayed datagram's send (media.c); slot = its buffer id, no slab
    TG_KIND_DIALOG,   // a message from another worker about a call (mediasig.c)
    TG_KIND_MAX = 16,
};

enum tg_core_op {
    TG_OP_IGNORE = 0, // cancel requests and other completions nobody waits for
    TG_OP_WAKE,       // the wake eventfd was written
    TG_OP_TICK,       // the periodic timeout
};

static inline uint64_t tg_ud(unsigned kind, unsigned op, uint32_t slot, uint32_t gen) {
    return (uint64_t)(kind & 0xf) | ((uint64_t)(op & 0xf) << 4) |
           ((uint64_t)(slot & 0xffffff) << 8) | ((uint64_t)gen << 32);
}
static inline unsigned tg_ud_kind(uint64_t ud) {
    return (unsigned)(ud & 0xf);
}
static inline unsigned tg_ud_op(uint64_t ud) {
    return (unsigned)(ud >> 4) & 0xf;
}
static inline uint32_t tg_ud_slot(uint64_t ud) {
    return (uint32_t)(ud >> 8) & 0xffffff;
}
static inline uint32_t tg_ud_gen(uint64_t ud) {
    return (uint32_t)(ud >> 32);
}

#define TG_SLAB_MAX (1u << 24)
#define TG_NIL UINT32_MAX

// tg_slab holds the objects of one kind: |cap| objects of |obj_size| bytes, each slot with a
// generation that grows on every allocation. Objects do not move.
struct tg_slab {
    uint8_t *objs;
    uint32_t obj_size, cap;
    uint32_t *gen;
    uint32_t *link; // free list; TG_SLAB_LIVE for a slot in use
    uint32_t free_head;
    uint32_t num_active;
};

// tg_slab_init allocates |cap| zeroed slots. Returns 0 when memory is short.
int tg_slab_init(struct tg_slab *s, uint32_t obj_size, uint32_t cap);
void tg_slab_cleanup(struct tg_slab *s);

// tg_slab_alloc takes a free slot, zeroes its object and gives it a new generation. Returns the
// object (its slot in |*out_slot|), or NULL when every slot is taken.
void *tg_slab_alloc(struct tg_slab *s, uint32_t *out_slot);

// tg_slab_free gives |slot| back; completions still carrying its generation will be dropped.
void tg_slab_free(struct tg_slab *s, uint32_t slot);

static inline void *tg_slab_at(const struct tg_slab *s, uint32_t slot) {
    return s->objs + (size_t)slot * s->obj_size;
}
static inline uint32_t tg_slab_index(const struct tg_slab *s, const void *obj) {
    return (uint32_t)(((const uint8_t *)obj - s->objs) / s->obj_size);
}
static inline uint32_t tg_slab_gen(const struct tg_slab *s, uint32_t slot) {
    return s->gen[slot];
}
int tg_slab_live(const struct tg_slab *s, uint32_t slot);

// tg_slab_lookup returns the object in |slot| if it is in use with generation |gen|, else NULL.
void *tg_slab_lookup(const struct tg_slab *s, uint32_t slot, uint32_t gen);

struct tg_loop;

// tg_cqe_fn handles one completion of a kind: |obj| is the slab object (NULL for a kind without
// slab), |slot| and |op| come from user_data.
typedef void (*tg_cqe_fn)(void *arg, void *obj, uint32_t slot, unsigned op,
                          const struct io_uring_cqe *cqe);

// tg_kind_ops is one entry of the dispatch table.
struct tg_kind_ops {
    const char *name;
    tg_cqe_fn on_cqe;
    void *arg;
    struct tg_slab *slab; // NULL: the slot is an index the handler checks itself
    int bgid;             // provided-buffer group its receives use (-1: none)
};

// tg_bufgroup is one provided-buffer ring: |count| buffers of |size| bytes, registered as
// group |bgid|. Received bytes are handed back to the ring at once by the handler.
struct tg_bufgroup {
    struct io_uring_buf_ring *br;
    uint8_t *mem;
    size_t br_size;
    uint32_t size, count;
    uint16_t bgid;
};

#define TG_LOOP_MAX_GROUPS 4
#define TG_LOOP_MAILBOX 256 // messages from threads that have no ring, or kernels without MSG_RING

// tg_loop_msg is a message for a loop when MSG_RING cannot carry it.
struct tg_loop_msg {
    _Atomic uint32_t seq;
    uint64_t ud;
    int32_t res;
};

struct tg_loop {
    struct io_uring ring;
    int ring_ok;
    int has_msg_ring;
    int has_send_addr; // IORING_OP_SEND takes a destination address (a sendto without msghdr)
    struct tg_kind_ops kinds[TG_KIND_MAX];
    struct tg_bufgroup groups[TG_LOOP_MAX_GROUPS];
    unsigned num_groups;
    uint32_t now; // ms, monotonic (coarse), refreshed once per loop turn
    int wake_fd;
    uint64_t wake_val;
    int wake_armed;
    struct __kernel_timespec tick;
    // The owner's callbacks: each tick, and each wake-up (returns 0 to stop listening for
    // wake-ups, when the owner is shutting down).
    void (*on_tick)(void *arg);
    int (*on_wake)(void *arg);
    void *owner;
    // Bounded multi-producer queue, drained by the owning thread on wake-up.
    struct tg_loop_msg mailbox[TG_LOOP_MAILBOX];
    _Atomic uint32_t mb_tail;
    uint32_t mb_head;
    uint64_t stale; // completions dropped for a stale generation
};

// tg_loop_now_ms reads the monotonic clock in milliseconds.
uint32_t tg_loop_now_ms(void);

// tg_loop_init creates the ring (SINGLE_ISSUER and DEFER_TASKRUN where the kernel has them) with
// |sq_entries| submissions and |cq_entries| completions, and the wake eventfd. It must run on
// the thread that will drive the loop. Returns 0 with a reason in |err|.
int tg_loop_init(struct tg_loop *l, unsigned sq_entries, unsigned cq_entries, char *err,
                 size_t err_len);

// tg_loop_cleanup releases the ring, the buffer groups and the eventfd.
void tg_loop_cleanup(struct tg_loop *l);

// tg_loop_add_bufgroup registers a provided-buffer group |bgid| of |count| (a power of two)
// buffers of |size| bytes. Returns 0 with a reason in |err|.
int tg_loop_add_bufgroup(struct tg_loop *l, uint16_t bgid, uint32_t size, uint32_t count, char *err,
                         size_t err_len);

// tg_loop_buf returns the memory of buffer |bid| of group |bgid|.
const uint8_t *tg_loop_buf(const struct tg_loop *l, uint16_t bgid, unsigned bid);

// tg_loop_buf_return hands buffer |bid| back to group |bgid|'s ring.
void tg_loop_buf_return(struct tg_loop *l, uint16_t bgid, unsigned bid);

// tg_loop_set_kind installs the handler of |kind|.
void tg_loop_set_kind(struct tg_loop *l, enum tg_kind kind, const struct tg_kind_ops *ops);

// tg_loop_sqe returns a submission entry, submitting what is queued when the ring is full.
struct io_uring_sqe *tg_loop_sqe(struct tg_loop *l);

// tg_loop_cancel_ud cancels the operation(s) submitted with |ud| (all of them with |all|).
void tg_loop_cancel_ud(struct tg_loop *l, uint64_t ud, int all);

// tg_loop_cancel_fd cancels every operation on |fd|.
void tg_loop_cancel_fd(struct tg_loop *l, int fd);

// tg_loop_start arms the tick (every |tick_ms|) and the wake-up, with the owner's callbacks.
void tg_loop_start(struct tg_loop *l, uint32_t tick_ms, void (*on_tick)(void *),
                   int (*on_wake)(void *), void *owner);

// tg_loop_run_once submits what is queued, waits for at least one completion and dispatches
// every completion there is. Returns 1, or a negative errno when the ring itself failed.
int tg_loop_run_once(struct tg_loop *l);

// tg_loop_wake wakes the loop from any thread (async-signal-safe).
void tg_loop_wake(struct tg_loop *l);

// tg_loop_post delivers a completion {|ud|, |res|} to loop |to|, where it is dispatched like
// any other (to the kind and slot |ud| names). |from| is the calling thread's own loop, or
// NULL from a thread without one. Uses IORING_OP_MSG_RING where the kernel has it, else the
// target's mailbox and eventfd. Returns 0 when the message could not be queued.
int tg_loop_post(struct tg_loop *from, struct tg_loop *to, uint64_t ud, int32_t res);

#endif // TLSGATE_LOOP_H
