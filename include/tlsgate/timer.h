#ifndef TLSGATE_TIMER_H
#define TLSGATE_TIMER_H

#include <stddef.h>
#include <stdint.h>

// The one timer facility of a worker: deadlines in milliseconds of the worker's clock, kept in
// lanes. A lane is a list ordered by deadline. Members of a lane with a fixed timeout (the
// handshake lane, the idle lane, later media inactivity) are armed at now + timeout, so arming
// appends at the tail and re-arming moves a member to the tail: O(1). A lane without a fixed
// timeout (tg_timer_arm_at) inserts in order from the tail, O(1) when deadlines come in order.
// The loop's tick pops what has expired. No I/O and no clock here: |now| is passed in.

// tg_time_reached reports whether |now| is at or past |deadline| (wrap-safe for spans < 24 days).
static inline int tg_time_reached(uint32_t now, uint32_t deadline) {
    return (int32_t)(now - deadline) >= 0;
}

// tg_timer is embedded in the object it times; tg_timer_owner gets the object back.
struct tg_timer {
    struct tg_timer *prev, *next;
    struct tg_tlane *lane; // NULL while not armed
    uint32_t deadline;
};

#define tg_timer_owner(t, type, member) ((type *)((char *)(t)-offsetof(type, member)))

// tg_tlane is one lane. |timeout_ms| is the fixed timeout of tg_timer_arm (0 for none).
struct tg_tlane {
    struct tg_timer *head, *tail;
    uint32_t timeout_ms;
    uint32_t num;
};

// tg_tlane_init sets up an empty lane whose members time out |timeout_ms| after being armed.
void tg_tlane_init(struct tg_tlane *l, uint32_t timeout_ms);

// tg_timer_arm (re-)arms |t| in |l| to fire at |now| + the lane's timeout.
void tg_timer_arm(struct tg_tlane *l, struct tg_timer *t, uint32_t now);

// tg_timer_arm_at (re-)arms |t| in |l| to fire at |deadline|, keeping the lane ordered.
void tg_timer_arm_at(struct tg_tlane *l, struct tg_timer *t, uint32_t deadline);

// tg_timer_touch moves |t|, armed in a fixed-timeout lane, to fire at |now| + timeout. Cheap
// when nothing changed (same millisecond).
static inline void tg_timer_touch(struct tg_timer *t, uint32_t now) {
    if (t->lane != NULL && t->deadline != now + t->lane->timeout_ms)
        tg_timer_arm(t->lane, t, now);
}

// tg_timer_cancel disarms |t|; a timer not armed is left alone.
void tg_timer_cancel(struct tg_timer *t);

static inline int tg_timer_armed(const struct tg_timer *t) {
    return t->lane != NULL;
}

// tg_tlane_pop_expired disarms and returns the earliest member whose deadline |now| has
// reached, or NULL when none has.
struct tg_timer *tg_tlane_pop_expired(struct tg_tlane *l, uint32_t now);

#endif // TLSGATE_TIMER_H
