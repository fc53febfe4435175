// Unit tests of the deadline lanes (proxy/timer.c). No clock: every |now| is given.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tlsgate/timer.h"

struct item {
    int id;
    struct tg_timer timer;
    uint64_t pad;
};

#define N_ITEMS 8

static struct item g_items[N_ITEMS];

static int setup(void **state) {
    (void)state;
    memset(g_items, 0, sizeof(g_items));
    for (int i = 0; i < N_ITEMS; i++)
        g_items[i].id = i;
    return 0;
}

// check_lane walks |l| both ways and asserts it holds exactly |ids| (head first), with
// consistent links, lane pointers and count, and deadlines in order.
static void check_lane(const struct tg_tlane *l, const int *ids, unsigned n) {
    assert_int_equal(l->num, n);
    const struct tg_timer *t = l->head;
    const struct tg_timer *prev = NULL;
    for (unsigned i = 0; i < n; i++) {
        assert_non_null(t);
        assert_ptr_equal(t->prev, prev);
        assert_ptr_equal(t->lane, l);
        const struct item *it = tg_timer_owner(t, struct item, timer);
        if (it->id != ids[i])
            print_error("lane position %u: id %d, expected %d\n", i, it->id, ids[i]);
        assert_int_equal(it->id, ids[i]);
        if (prev != NULL)
            assert_true((int32_t)(t->deadline - prev->deadline) >= 0);
        prev = t;
        t = t->next;
    }
    assert_null(t);
    assert_ptr_equal(l->tail, prev);
    if (n == 0)
        assert_null(l->head);
}

// pop_ids pops everything expired at |now| into |out|; returns how many.
static unsigned pop_ids(struct tg_tlane *l, uint32_t now, int *out, unsigned max) {
    unsigned n = 0;
    struct tg_timer *t;
    while ((t = tg_tlane_pop_expired(l, now)) != NULL) {
        assert_true(n < max);
        assert_false(tg_timer_armed(t));
        assert_null(t->prev);
        assert_null(t->next);
        out[n++] = tg_timer_owner(t, struct item, timer)->id;
    }
    return n;
}

static void test_time_reached(void **state) {
    (void)state;
    assert_true(tg_time_reached(100, 100));
    assert_true(tg_time_reached(101, 100));
    assert_false(tg_time_reached(99, 100));
    // Across the wrap of the 32-bit clock.
    assert_true(tg_time_reached(5, UINT32_MAX - 5));
    assert_false(tg_time_reached(UINT32_MAX - 5, 5));
    assert_true(tg_time_reached(0, UINT32_MAX));
    assert_false(tg_time_reached(UINT32_MAX, 0));
}

static void test_owner(void **state) {
    (void)state;
    struct item *it = &g_items[3];
    assert_ptr_equal(tg_timer_owner(&it->timer, struct item, timer), it);
    assert_int_equal(tg_timer_owner(&g_items[5].timer, struct item, timer)->id, 5);
}

static void test_init(void **state) {
    (void)state;
    struct tg_tlane l;
    memset(&l, 0xff, sizeof(l));
    tg_tlane_init(&l, 1234);
    assert_null(l.head);
    assert_null(l.tail);
    assert_int_equal(l.timeout_ms, 1234);
    assert_int_equal(l.num, 0);
    assert_null(tg_tlane_pop_expired(&l, 0));
    assert_null(tg_tlane_pop_expired(&l, UINT32_MAX));
}

static void test_arm_order_and_expiry(void **state) {
    (void)state;
    struct tg_tlane l;
    tg_tlane_init(&l, 1000);
    tg_timer_arm(&l, &g_items[0].timer, 100);
    tg_timer_arm(&l, &g_items[1].timer, 200);
    tg_timer_arm(&l, &g_items[2].timer, 200); // same deadline: after the earlier one
    tg_timer_arm(&l, &g_items[3].timer, 300);
    check_lane(&l, (const int[]){0, 1, 2, 3}, 4);
    assert_int_equal(g_items[0].timer.deadline, 1100);
    assert_int_equal(g_items[3].timer.deadline, 1300);
    assert_true(tg_timer_armed(&g_items[0].timer));

    int out[N_ITEMS];
    // Nothing before the first deadline.
    assert_int_equal(pop_ids(&l, 0, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, 1099, out, N_ITEMS), 0);
    check_lane(&l, (const int[]){0, 1, 2, 3}, 4);
    // At the deadline exactly.
    assert_int_equal(pop_ids(&l, 1100, out, N_ITEMS), 1);
    assert_int_equal(out[0], 0);
    assert_false(tg_timer_armed(&g_items[0].timer));
    assert_int_equal(pop_ids(&l, 1199, out, N_ITEMS), 0);
    // Two at once, in arm order.
    assert_int_equal(pop_ids(&l, 1250, out, N_ITEMS), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 2);
    check_lane(&l, (const int[]){3}, 1);
    // Long past: the last one.
    assert_int_equal(pop_ids(&l, 100000, out, N_ITEMS), 1);
    assert_int_equal(out[0], 3);
    check_lane(&l, NULL, 0);
}

static void test_rearm_moves_to_tail(void **state) {
    (void)state;
    struct tg_tlane l;
    tg_tlane_init(&l, 500);
    for (int i = 0; i < 4; i++)
        tg_timer_arm(&l, &g_items[i].timer, 10);
    check_lane(&l, (const int[]){0, 1, 2, 3}, 4);

    // touch at the same millisecond: the deadline does not change, nothing moves.
    tg_timer_touch(&g_items[0].timer, 10);
    check_lane(&l, (const int[]){0, 1, 2, 3}, 4);
    assert_int_equal(g_items[0].timer.deadline, 510);

    // touch later: the head moves to the tail with a new deadline.
    tg_timer_touch(&g_items[0].timer, 20);
    check_lane(&l, (const int[]){1, 2, 3, 0}, 4);
    assert_int_equal(g_items[0].timer.deadline, 520);
    // a middle one.
    tg_timer_touch(&g_items[2].timer, 25);
    check_lane(&l, (const int[]){1, 3, 0, 2}, 4);
    // the tail, touched again at the same time: stays.
    tg_timer_touch(&g_items[2].timer, 25);
    check_lane(&l, (const int[]){1, 3, 0, 2}, 4);

    // touch of a timer not armed does nothing (and does not arm it).
    tg_timer_touch(&g_items[5].timer, 30);
    assert_false(tg_timer_armed(&g_items[5].timer));
    check_lane(&l, (const int[]){1, 3, 0, 2}, 4);

    // tg_timer_arm of an armed timer re-arms it (the same as touch).
    tg_timer_arm(&l, &g_items[1].timer, 30);
    check_lane(&l, (const int[]){3, 0, 2, 1}, 4);
    assert_int_equal(g_items[1].timer.deadline, 530);

    // Expiry follows the new order: 3 (510), 0 (520), 2 (525), 1 (530).
    int out[N_ITEMS];
    assert_int_equal(pop_ids(&l, 509, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, 524, out, N_ITEMS), 2);
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 0);
    assert_int_equal(pop_ids(&l, 530, out, N_ITEMS), 2);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 1);
    check_lane(&l, NULL, 0);
}

static void test_cancel(void **state) {
    (void)state;
    struct tg_tlane l;
    tg_tlane_init(&l, 100);
    for (int i = 0; i < 5; i++)
        tg_timer_arm(&l, &g_items[i].timer, (uint32_t)i);
    check_lane(&l, (const int[]){0, 1, 2, 3, 4}, 5);

    tg_timer_cancel(&g_items[2].timer); // middle
    assert_false(tg_timer_armed(&g_items[2].timer));
    assert_null(g_items[2].timer.prev);
    assert_null(g_items[2].timer.next);
    check_lane(&l, (const int[]){0, 1, 3, 4}, 4);
    tg_timer_cancel(&g_items[0].timer); // head
    check_lane(&l, (const int[]){1, 3, 4}, 3);
    tg_timer_cancel(&g_items[4].timer); // tail
    check_lane(&l, (const int[]){1, 3}, 2);

    // Cancel of a timer not armed, twice, and of one already cancelled: nothing happens.
    tg_timer_cancel(&g_items[6].timer);
    tg_timer_cancel(&g_items[6].timer);
    tg_timer_cancel(&g_items[2].timer);
    check_lane(&l, (const int[]){1, 3}, 2);

    // A cancelled timer never pops.
    int out[N_ITEMS];
    assert_int_equal(pop_ids(&l, 1000, out, N_ITEMS), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);

    // The only member: head and tail at once.
    tg_timer_arm(&l, &g_items[7].timer, 0);
    check_lane(&l, (const int[]){7}, 1);
    tg_timer_cancel(&g_items[7].timer);
    check_lane(&l, NULL, 0);

    // A cancelled timer can be armed again.
    tg_timer_arm(&l, &g_items[2].timer, 50);
    check_lane(&l, (const int[]){2}, 1);
    assert_int_equal(pop_ids(&l, 150, out, N_ITEMS), 1);
    assert_int_equal(out[0], 2);
}

static void test_arm_at_ordered_insert(void **state) {
    (void)state;
    struct tg_tlane l;
    tg_tlane_init(&l, 0);
    // Out of order: a new head, a new tail, the middle, duplicates.
    tg_timer_arm_at(&l, &g_items[0].timer, 500);
    tg_timer_arm_at(&l, &g_items[1].timer, 100); // before the head
    tg_timer_arm_at(&l, &g_items[2].timer, 900); // after the tail
    tg_timer_arm_at(&l, &g_items[3].timer, 300); // middle
    tg_timer_arm_at(&l, &g_items[4].timer, 300); // equal: after the earlier 300
    tg_timer_arm_at(&l, &g_items[5].timer, 100); // equal to the head: after it
    tg_timer_arm_at(&l, &g_items[6].timer, 50);  // new head
    check_lane(&l, (const int[]){6, 1, 5, 3, 4, 0, 2}, 7);

    // Re-arming at an earlier deadline moves the member forward.
    tg_timer_arm_at(&l, &g_items[2].timer, 200);
    check_lane(&l, (const int[]){6, 1, 5, 2, 3, 4, 0}, 7);
    // ... and at a later one backward.
    tg_timer_arm_at(&l, &g_items[6].timer, 1000);
    check_lane(&l, (const int[]){1, 5, 2, 3, 4, 0, 6}, 7);
    // Same deadline again: moves behind its equals.
    tg_timer_arm_at(&l, &g_items[3].timer, 300);
    check_lane(&l, (const int[]){1, 5, 2, 4, 3, 0, 6}, 7);

    int out[N_ITEMS];
    assert_int_equal(pop_ids(&l, 99, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, 299, out, N_ITEMS), 3);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 5);
    assert_int_equal(out[2], 2);
    assert_int_equal(pop_ids(&l, 999, out, N_ITEMS), 3);
    assert_int_equal(out[0], 4);
    assert_int_equal(out[1], 3);
    assert_int_equal(out[2], 0);
    assert_int_equal(pop_ids(&l, 1000, out, N_ITEMS), 1);
    assert_int_equal(out[0], 6);
    check_lane(&l, NULL, 0);
}

static void test_move_between_lanes(void **state) {
    (void)state;
    struct tg_tlane hs, idle;
    tg_tlane_init(&hs, 100);
    tg_tlane_init(&idle, 10000);
    tg_timer_arm(&hs, &g_items[0].timer, 0);
    tg_timer_arm(&hs, &g_items[1].timer, 0);
    tg_timer_arm(&idle, &g_items[0].timer, 50); // leaves hs
    check_lane(&hs, (const int[]){1}, 1);
    check_lane(&idle, (const int[]){0}, 1);
    assert_ptr_equal(g_items[0].timer.lane, &idle);
    int out[N_ITEMS];
    assert_int_equal(pop_ids(&hs, 5000, out, N_ITEMS), 1);
    assert_int_equal(out[0], 1);
    assert_int_equal(pop_ids(&idle, 5000, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&idle, 10050, out, N_ITEMS), 1);
    assert_int_equal(out[0], 0);
}

static void test_wrap_fixed_lane(void **state) {
    (void)state;
    struct tg_tlane l;
    tg_tlane_init(&l, 1000);
    const uint32_t t0 = UINT32_MAX - 1500;
    tg_timer_arm(&l, &g_items[0].timer, t0);        // UINT32_MAX - 500
    tg_timer_arm(&l, &g_items[1].timer, t0 + 600);  // UINT32_MAX + 100 - wraps to 99
    tg_timer_arm(&l, &g_items[2].timer, t0 + 1400); // wraps to 899
    assert_int_equal(g_items[1].timer.deadline, 99);
    check_lane(&l, (const int[]){0, 1, 2}, 3);

    int out[N_ITEMS];
    assert_int_equal(pop_ids(&l, UINT32_MAX - 501, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, UINT32_MAX, out, N_ITEMS), 1);
    assert_int_equal(out[0], 0);
    // A deadline of 99 (after the wrap) is not reached at UINT32_MAX, nor at 98.
    assert_int_equal(pop_ids(&l, 98, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, 99, out, N_ITEMS), 1);
    assert_int_equal(out[0], 1);

    // touch across the wrap moves to the tail.
    tg_timer_arm(&l, &g_items[3].timer, UINT32_MAX - 10); // 989
    tg_timer_touch(&g_items[2].timer, 100);               // 1100
    check_lane(&l, (const int[]){3, 2}, 2);
    assert_int_equal(pop_ids(&l, 1099, out, N_ITEMS), 1);
    assert_int_equal(out[0], 3);
    assert_int_equal(pop_ids(&l, 1100, out, N_ITEMS), 1);
    assert_int_equal(out[0], 2);
}

static void test_wrap_arm_at(void **state) {
    (void)state;
    struct tg_tlane l;
    tg_tlane_init(&l, 0);
    // Deadlines on both sides of UINT32_MAX, armed out of order: a deadline just after the wrap
    // is later than one just before it.
    tg_timer_arm_at(&l, &g_items[0].timer, 10);              // after the wrap
    tg_timer_arm_at(&l, &g_items[1].timer, UINT32_MAX - 10); // before
    tg_timer_arm_at(&l, &g_items[2].timer, UINT32_MAX);      // the last ms before the wrap
    tg_timer_arm_at(&l, &g_items[3].timer, 0);               // the first after it
    tg_timer_arm_at(&l, &g_items[4].timer, UINT32_MAX - 20);
    check_lane(&l, (const int[]){4, 1, 2, 3, 0}, 5);

    int out[N_ITEMS];
    assert_int_equal(pop_ids(&l, UINT32_MAX - 21, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, UINT32_MAX - 1, out, N_ITEMS), 2);
    assert_int_equal(out[0], 4);
    assert_int_equal(out[1], 1);
    assert_int_equal(pop_ids(&l, UINT32_MAX, out, N_ITEMS), 1);
    assert_int_equal(out[0], 2);
    assert_int_equal(pop_ids(&l, 0, out, N_ITEMS), 1);
    assert_int_equal(out[0], 3);
    assert_int_equal(pop_ids(&l, 9, out, N_ITEMS), 0);
    assert_int_equal(pop_ids(&l, 10, out, N_ITEMS), 1);
    assert_int_equal(out[0], 0);
    check_lane(&l, NULL, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_time_reached, setup),
        cmocka_unit_test_setup(test_owner, setup),
        cmocka_unit_test_setup(test_init, setup),
        cmocka_unit_test_setup(test_arm_order_and_expiry, setup),
        cmocka_unit_test_setup(test_rearm_moves_to_tail, setup),
        cmocka_unit_test_setup(test_cancel, setup),
        cmocka_unit_test_setup(test_arm_at_ordered_insert, setup),
        cmocka_unit_test_setup(test_move_between_lanes, setup),
        cmocka_unit_test_setup(test_wrap_fixed_lane, setup),
        cmocka_unit_test_setup(test_wrap_arm_at, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
