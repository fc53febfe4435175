// Byte queues and their per-worker buffer cache (see include/tlsgate/bufq.h).
#include "tlsgate/bufq.h"

#include <stdlib.h>
#include <string.h>

static unsigned class_max(uint32_t size) {
    if (size == 0)
        return 0;
    uint32_t n = TG_BUFCACHE_BYTES / size;
    if (n < TG_BUFCACHE_MIN)
        return TG_BUFCACHE_MIN;
    return n > TG_BUFCACHE_MAX ? TG_BUFCACHE_MAX : n;
}

void tg_bufcache_init(struct tg_bufcache *bc, uint32_t size_a, uint32_t size_b) {
    memset(bc, 0, sizeof(*bc));
    bc->cls[0].size = size_a;
    bc->cls[1].size = size_b != size_a ? size_b : 0;
    for (unsigned k = 0; k < TG_BUFCACHE_CLASSES; k++)
        bc->cls[k].max = class_max(bc->cls[k].size);
}

void tg_bufcache_cleanup(struct tg_bufcache *bc) {
    for (unsigned k = 0; k < TG_BUFCACHE_CLASSES; k++)
        while (bc->cls[k].num > 0)
            free(bc->cls[k].bufs[--bc->cls[k].num]);
}

static int class_of(const struct tg_bufcache *bc, uint32_t size) {
    if (bc == NULL || size == 0)
        return -1;
    for (int k = 0; k < TG_BUFCACHE_CLASSES; k++)
        if (bc->cls[k].size == size)
            return k;
    return -1;
}

uint8_t *tg_bufcache_get(struct tg_bufcache *bc, uint32_t size) {
    int k = class_of(bc, size);
    if (k >= 0 && bc->cls[k].num > 0)
        return bc->cls[k].bufs[--bc->cls[k].num];
    return malloc(size);
}

void tg_bufcache_put(struct tg_bufcache *bc, uint8_t *data, uint32_t size) {
    int k = class_of(bc, size);
    if (data == NULL)
        return;
    if (k < 0 || bc->cls[k].num >= bc->cls[k].max) {
        free(data);
        return;
    }
    bc->cls[k].bufs[bc->cls[k].num++] = data;
}

void tg_bufq_reset(struct tg_bufq *q, struct tg_bufcache *bc) {
    tg_bufcache_put(bc, q->data, q->cap);
    memset(q, 0, sizeof(*q));
}

uint8_t *tg_bufq_space(struct tg_bufq *q, struct tg_bufcache *bc, uint32_t size, int busy,
                       uint32_t *out_room) {
    *out_room = 0;
    if (q->data == NULL) {
        q->data = tg_bufcache_get(bc, size);
        if (q->data == NULL)
            return NULL;
        q->head = q->tail = 0;
        q->cap = size;
    } else if (!busy && q->head > 0) {
        memmove(q->data, q->data + q->head, tg_bufq_len(q));
        q->tail -= q->head;
        q->head = 0;
    }
    *out_room = q->cap - q->tail;
    return q->data + q->tail;
}

int tg_bufq_append(struct tg_bufq *q, struct tg_bufcache *bc, const uint8_t *p, uint32_t n,
                   uint32_t size, int busy) {
    uint32_t room;
    uint8_t *dst = tg_bufq_space(q, bc, size, busy, &room);
    if (dst == NULL)
        return 0;
    if (room < n) {
        if (busy) {
            if (tg_bufq_len(q) == 0)
                tg_bufq_reset(q, bc); // an idle queue holds no buffer
            return 0;
        }
        uint32_t cap = q->cap > 0 ? q->cap : n;
        while (cap - q->tail < n) {
            if (cap > UINT32_MAX / 2)
                return 0;
            cap *= 2;
        }
        uint8_t *data = realloc(q->data, cap);
        if (data == NULL)
            return 0;
        q->data = data;
        q->cap = cap;
        dst = q->data + q->tail;
    }
    memcpy(dst, p, n);
    q->tail += n;
    return 1;
}

void tg_bufq_consume(struct tg_bufq *q, struct tg_bufcache *bc, uint32_t n) {
    q->head += n;
    if (q->head == q->tail)
        tg_bufq_reset(q, bc);
}
