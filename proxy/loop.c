// The loop core: ring, dispatch by kind, slabs, buffer groups, tick, wake-ups and messages
// between loops (see include/tlsgate/loop.h).
#include "tlsgate/loop.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define TG_SLAB_LIVE (UINT32_MAX - 1)

// ---------------------------------------------------------------------------------------------
// Slabs.

int tg_slab_init(struct tg_slab *s, uint32_t obj_size, uint32_t cap) {
    memset(s, 0, sizeof(*s));
    if (cap > TG_SLAB_MAX)
        return 0;
    s->obj_size = obj_size;
    s->cap = cap;
    s->objs = calloc(cap > 0 ? cap : 1, obj_size);
    s->gen = calloc(cap > 0 ? cap : 1, sizeof(*s->gen));
    s->link = calloc(cap > 0 ? cap : 1, sizeof(*s->link));
    if (s->objs == NULL || s->gen == NULL || s->link == NULL) {
        tg_slab_cleanup(s);
        return 0;
    }
    for (uint32_t i = 0; i < cap; i++)
        s->link[i] = i + 1 < cap ? i + 1 : TG_NIL;
    s->free_head = cap > 0 ? 0 : TG_NIL;
    return 1;
}

void tg_slab_cleanup(struct tg_slab *s) {
    free(s->objs);
    free(s->gen);
    free(s->link);
    memset(s, 0, sizeof(*s));
}

void *tg_slab_alloc(struct tg_slab *s, uint32_t *out_slot) {
    uint32_t slot = s->free_head;
    if (slot == TG_NIL)
        return NULL;
    s->free_head = s->link[slot];
    s->link[slot] = TG_SLAB_LIVE;
    s->gen[slot]++;
    s->num_active++;
    void *obj = tg_slab_at(s, slot);
    memset(obj, 0, s->obj_size);
    *out_slot = slot;
    return obj;
}

void tg_slab_free(struct tg_slab *s, uint32_t slot) {
    if (slot >= s->cap || s->link[slot] != TG_SLAB_LIVE)
        return;
    s->link[slot] = s->free_head;
    s->free_head = slot;
    s->num_active--;
}

int tg_slab_live(const struct tg_slab *s, uint32_t slot) {
    return slot < s->cap && s->link[slot] == TG_SLAB_LIVE;
}

void *tg_slab_lookup(const struct tg_slab *s, uint32_t slot, uint32_t gen) {
    if (!tg_slab_live(s, slot) || s->gen[slot] != gen)
        return NULL;
    return tg_slab_at(s, slot);
}

// ---------------------------------------------------------------------------------------------
// Ring and buffer groups.

uint32_t tg_loop_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

// probe_send_addr reports whether IORING_OP_SEND takes a destination address (kernel 6.0+),
// asked of the fresh ring (nothing else in flight): a send to descriptor -1 fails at issue
// with EBADF where the address is understood, and at preparation with EINVAL where it is not.
static int probe_send_addr(struct io_uring *ring) {
    struct sockaddr_in to;
    memset(&to, 0, sizeof(to));
    to.sin_family = AF_INET;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe == NULL)
        return 0;
    io_uring_prep_send(sqe, -1, NULL, 0, 0);
    io_uring_prep_send_set_addr(sqe, (const struct sockaddr *)&to, sizeof(to));
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_CORE, TG_OP_IGNORE, 0, 0));
    struct io_uring_cqe *cqe;
    if (io_uring_submit_and_wait(ring, 1) < 0 || io_uring_peek_cqe(ring, &cqe) != 0)
        return 0;
    int ok = cqe->res != -EINVAL;
    io_uring_cqe_seen(ring, cqe);
    return ok;
}

int tg_loop_init(struct tg_loop *l, unsigned sq_entries, unsigned cq_entries, char *err,
                 size_t err_len) {
    memset(l, 0, sizeof(*l));
    l->wake_fd = -1;
    for (unsigned i = 0; i < TG_LOOP_MAILBOX; i++)
        atomic_init(&l->mailbox[i].seq, i);
    atomic_init(&l->mb_tail, 0);
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
              IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = cq_entries;
    int r = io_uring_queue_init_params(sq_entries, &l->ring, &p);
    if (r == -EINVAL) {
        // Kernels before 6.1 lack DEFER_TASKRUN / SINGLE_ISSUER.
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
        r = io_uring_queue_init_params(sq_entries, &l->ring, &p);
    }
    if (r < 0) {
        snprintf(err, err_len, "io_uring_queue_init: %s", strerror(-r));
        return 0;
    }
    l->ring_ok = 1;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);
    if (probe != NULL) {
        l->has_msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
        io_uring_free_probe(probe);
    }
    l->has_send_addr = probe_send_addr(&l->ring);
    l->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (l->wake_fd < 0) {
        snprintf(err, err_len, "eventfd: %s", strerror(errno));
        return 0;
    }
    l->now = tg_loop_now_ms();
    return 1;
}

void tg_loop_cleanup(struct tg_loop *l) {
    if (l->ring_ok)
        io_uring_queue_exit(&l->ring);
    l->ring_ok = 0;
    for (unsigned i = 0; i < l->num_groups; i++) {
        struct tg_bufgroup *g = &l->groups[i];
        if (g->br != NULL)
            munmap(g->br, g->br_size);
        free(g->mem);
    }
    l->num_groups = 0;
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    l->wake_fd = -1;
}

static struct tg_bufgroup *group_of(const struct tg_loop *l, uint16_t bgid) {
    for (unsigned i = 0; i < l->num_groups; i++)
        if (l->groups[i].bgid == bgid)
            return (struct tg_bufgroup *)&l->groups[i];
    return NULL;
}

int tg_loop_add_bufgroup(struct tg_loop *l, uint16_t bgid, uint32_t size, uint32_t count, char *err,
                         size_t err_len) {
    if (l->num_groups == TG_LOOP_MAX_GROUPS || group_of(l, bgid) != NULL || count == 0 ||
        (count & (count - 1)) != 0 || count > 32768) {
        snprintf(err, err_len, "buffer group %u: bad parameters", bgid);
        return 0;
    }
    struct tg_bufgroup *g = &l->groups[l->num_groups];
    memset(g, 0, sizeof(*g));
    // liburing 2.3 has no io_uring_setup_buf_ring: map and register the ring by hand.
    g->br_size = count * sizeof(struct io_uring_buf);
    g->br = mmap(NULL, g->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (g->br == MAP_FAILED) {
        g->br = NULL;
        snprintf(err, err_len, "mmap buffer ring: %s", strerror(errno));
        return 0;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)g->br;
    reg.ring_entries = count;
    reg.bgid = bgid;
    int r = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (r < 0) {
        munmap(g->br, g->br_size);
        g->br = NULL;
        snprintf(err, err_len, "io_uring_register_buf_ring: %s (kernel 5.19+ needed)",
                 strerror(-r));
        return 0;
    }
    g->mem = malloc((size_t)count * size);
    if (g->mem == NULL) {
        io_uring_unregister_buf_ring(&l->ring, bgid);
        munmap(g->br, g->br_size);
        g->br = NULL;
        snprintf(err, err_len, "out of memory for receive buffers");
        return 0;
    }
    g->size = size;
    g->count = count;
    g->bgid = bgid;
    io_uring_buf_ring_init(g->br);
    for (unsigned i = 0; i < count; i++)
        io_uring_buf_ring_add(g->br, g->mem + (size_t)i * size, size, (unsigned short)i,
                              io_uring_buf_ring_mask(count), (int)i);
    io_uring_buf_ring_advance(g->br, (int)count);
    l->num_groups++;
    return 1;
}

const uint8_t *tg_loop_buf(const struct tg_loop *l, uint16_t bgid, unsigned bid) {
    const struct tg_bufgroup *g = group_of(l, bgid);
    if (g == NULL || bid >= g->count)
        return NULL;
    return g->mem + (size_t)bid * g->size;
}

void tg_loop_buf_return(struct tg_loop *l, uint16_t bgid, unsigned bid) {
    struct tg_bufgroup *g = group_of(l, bgid);
    if (g == NULL || bid >= g->count)
        return;
    io_uring_buf_ring_add(g->br, g->mem + (size_t)bid * g->size, g->size, (unsigned short)bid,
                          io_uring_buf_ring_mask(g->count), 0);
    io_uring_buf_ring_advance(g->br, 1);
}

void tg_loop_set_kind(struct tg_loop *l, enum tg_kind kind, const struct tg_kind_ops *ops) {
    l->kinds[kind] = *ops;
}

struct io_uring_sqe *tg_loop_sqe(struct tg_loop *l) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    if (sqe != NULL)
        return sqe;
    io_uring_submit(&l->ring);
    sqe = io_uring_get_sqe(&l->ring);
    if (sqe == NULL) {
        // The SQ ring was just emptied by the submit: this cannot happen.
        fprintf(stderr, "tlsgate: io_uring submission queue full after submit\n");
        abort();
    }
    return sqe;
}

void tg_loop_cancel_ud(struct tg_loop *l, uint64_t ud, int all) {
    struct io_uring_sqe *sqe = tg_loop_sqe(l);
    io_uring_prep_cancel64(sqe, ud, all ? IORING_ASYNC_CANCEL_ALL : 0);
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_CORE, TG_OP_IGNORE, 0, 0));
}

void tg_loop_cancel_fd(struct tg_loop *l, int fd) {
    struct io_uring_sqe *sqe = tg_loop_sqe(l);
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_CORE, TG_OP_IGNORE, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Tick, wake-ups and messages.

static void arm_tick(struct tg_loop *l) {
    struct io_uring_sqe *sqe = tg_loop_sqe(l);
    io_uring_prep_timeout(sqe, &l->tick, 0, 0);
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_CORE, TG_OP_TICK, 0, 0));
}

static void arm_wake(struct tg_loop *l) {
    struct io_uring_sqe *sqe = tg_loop_sqe(l);
    io_uring_prep_read(sqe, l->wake_fd, &l->wake_val, sizeof(l->wake_val), 0);
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_CORE, TG_OP_WAKE, 0, 0));
    l->wake_armed = 1;
}

void tg_loop_start(struct tg_loop *l, uint32_t tick_ms, void (*on_tick)(void *),
                   int (*on_wake)(void *), void *owner) {
    l->on_tick = on_tick;
    l->on_wake = on_wake;
    l->owner = owner;
    l->tick.tv_sec = tick_ms / 1000;
    l->tick.tv_nsec = (long long)(tick_ms % 1000) * 1000000LL;
    arm_tick(l);
    arm_wake(l);
}

void tg_loop_wake(struct tg_loop *l) {
    uint64_t one = 1;
    ssize_t r = write(l->wake_fd, &one, sizeof(one));
    (void)r;
}

static void dispatch(struct tg_loop *l, const struct io_uring_cqe *cqe);

// mailbox_drain dispatches the messages other threads queued (Vyukov's bounded queue: many
// producers, this thread the one consumer).
static void mailbox_drain(struct tg_loop *l) {
    for (;;) {
        struct tg_loop_msg *m = &l->mailbox[l->mb_head % TG_LOOP_MAILBOX];
        uint32_t seq = atomic_load_explicit(&m->seq, memory_order_acquire);
        if (seq != l->mb_head + 1)
            return;
        struct io_uring_cqe cqe;
        memset(&cqe, 0, sizeof(cqe));
        cqe.user_data = m->ud;
        cqe.res = m->res;
        atomic_store_explicit(&m->seq, l->mb_head + TG_LOOP_MAILBOX, memory_order_release);
        l->mb_head++;
        dispatch(l, &cqe);
    }
}

static int mailbox_put(struct tg_loop *to, uint64_t ud, int32_t res) {
    uint32_t pos = atomic_load_explicit(&to->mb_tail, memory_order_relaxed);
    for (;;) {
        struct tg_loop_msg *m = &to->mailbox[pos % TG_LOOP_MAILBOX];
        uint32_t seq = atomic_load_explicit(&m->seq, memory_order_acquire);
        int32_t diff = (int32_t)(seq - pos);
        if (diff < 0)
            return 0; // full
        if (diff > 0) {
            pos = atomic_load_explicit(&to->mb_tail, memory_order_relaxed);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&to->mb_tail, &pos, pos + 1, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            m->ud = ud;
            m->res = res;
            atomic_store_explicit(&m->seq, pos + 1, memory_order_release);
            tg_loop_wake(to);
            return 1;
        }
    }
}

int tg_loop_post(struct tg_loop *from, struct tg_loop *to, uint64_t ud, int32_t res) {
    if (from != NULL && from->has_msg_ring && to->ring_ok && res >= 0) {
        struct io_uring_sqe *sqe = tg_loop_sqe(from);
        io_uring_prep_msg_ring(sqe, to->ring.ring_fd, (unsigned)res, ud, 0);
        io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_CORE, TG_OP_IGNORE, 0, 0));
        return 1;
    }
    return mailbox_put(to, ud, res);
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

static void core_cqe(struct tg_loop *l, unsigned op) {
    switch (op) {
    case TG_OP_WAKE:
        l->wake_armed = 0;
        mailbox_drain(l);
        if (l->on_wake == NULL || l->on_wake(l->owner))
            arm_wake(l);
        break;
    case TG_OP_TICK:
        if (l->on_tick != NULL)
            l->on_tick(l->owner);
        arm_tick(l);
        break;
    default:
        break;
    }
}

static void dispatch(struct tg_loop *l, const struct io_uring_cqe *cqe) {
    uint64_t ud = cqe->user_data;
    unsigned kind = tg_ud_kind(ud);
    if (kind == TG_KIND_CORE) {
        core_cqe(l, tg_ud_op(ud));
        return;
    }
    const struct tg_kind_ops *k = &l->kinds[kind];
    void *obj = NULL;
    if (k->slab != NULL) {
        obj = tg_slab_lookup(k->slab, tg_ud_slot(ud), tg_ud_gen(ud));
        if (obj == NULL) {
            // An older occupant's completion (should not happen: a slot is freed only after
            // its last completion), or a message for an object that has gone.
            l->stale++;
            if ((cqe->flags & IORING_CQE_F_BUFFER) && k->bgid >= 0)
                tg_loop_buf_return(l, (uint16_t)k->bgid, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            return;
        }
    }
    if (k->on_cqe == NULL) {
        if ((cqe->flags & IORING_CQE_F_BUFFER) && k->bgid >= 0)
            tg_loop_buf_return(l, (uint16_t)k->bgid, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        return;
    }
    k->on_cqe(k->arg, obj, tg_ud_slot(ud), tg_ud_op(ud), cqe);
}

int tg_loop_run_once(struct tg_loop *l) {
    int r = io_uring_submit_and_wait(&l->ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
        return r;
    l->now = tg_loop_now_ms();
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&l->ring, head, cqe) {
        seen++;
        dispatch(l, cqe);
    }
    io_uring_cq_advance(&l->ring, seen);
    return 1;
}
