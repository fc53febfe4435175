// Deadline lanes (see include/tlsgate/timer.h).
#include "tlsgate/timer.h"

void tg_tlane_init(struct tg_tlane *l, uint32_t timeout_ms) {
    l->head = l->tail = NULL;
    l->timeout_ms = timeout_ms;
    l->num = 0;
}

void tg_timer_cancel(struct tg_timer *t) {
    struct tg_tlane *l = t->lane;
    if (l == NULL)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        l->head = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    else
        l->tail = t->prev;
    t->prev = t->next = NULL;
    t->lane = NULL;
    l->num--;
}

void tg_timer_arm_at(struct tg_tlane *l, struct tg_timer *t, uint32_t deadline) {
    tg_timer_cancel(t);
    t->deadline = deadline;
    t->lane = l;
    l->num++;
    // Walk back from the tail to the last member not later than |deadline|.
    struct tg_timer *after = l->tail;
    while (after != NULL && (int32_t)(after->deadline - deadline) > 0)
        after = after->prev;
    t->prev = after;
    t->next = after != NULL ? after->next : l->head;
    if (t->next != NULL)
        t->next->prev = t;
    else
        l->tail = t;
    if (after != NULL)
        after->next = t;
    else
        l->head = t;
}

void tg_timer_arm(struct tg_tlane *l, struct tg_timer *t, uint32_t now) {
    tg_timer_arm_at(l, t, now + l->timeout_ms);
}

struct tg_timer *tg_tlane_pop_expired(struct tg_tlane *l, uint32_t now) {
    struct tg_timer *t = l->head;
    if (t == NULL || !tg_time_reached(now, t->deadline))
        return NULL;
    tg_timer_cancel(t);
    return t;
}
