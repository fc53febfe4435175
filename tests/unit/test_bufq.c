// Unit tests of the byte queues and their buffer cache (proxy/bufq.c).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tlsgate/bufq.h"

#define SZ_A 64u
#define SZ_B 256u

static void fill(uint8_t *p, uint32_t n, uint8_t seed) {
    for (uint32_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i);
}

// check_bytes asserts the queue holds exactly |n| bytes of the pattern fill(seed) starting at
// the pattern's byte |from|.
static void check_bytes(const struct tg_bufq *q, uint32_t n, uint8_t seed, uint32_t from) {
    assert_int_equal(tg_bufq_len(q), n);
    const uint8_t *p = tg_bufq_peek(q);
    assert_non_null(p);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(p[i], (uint8_t)(seed + from + i));
}

// --- Cache -------------------------------------------------------------------------------------

static void test_cache_init(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, SZ_B);
    assert_int_equal(bc.cls[0].size, SZ_A);
    assert_int_equal(bc.cls[1].size, SZ_B);
    assert_int_equal(bc.cls[0].num, 0);
    assert_int_equal(bc.cls[1].num, 0);
    // Equal sizes share the first class.
    tg_bufcache_init(&bc, SZ_A, SZ_A);
    assert_int_equal(bc.cls[0].size, SZ_A);
    assert_int_equal(bc.cls[1].size, 0);
    tg_bufcache_cleanup(&bc);
}

static void test_cache_recycles_same_pointer(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, SZ_B);
    uint8_t *a = tg_bufcache_get(&bc, SZ_A);
    uint8_t *b = tg_bufcache_get(&bc, SZ_B);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 0xaa, SZ_A);
    memset(b, 0xbb, SZ_B);
    tg_bufcache_put(&bc, a, SZ_A);
    tg_bufcache_put(&bc, b, SZ_B);
    assert_int_equal(bc.cls[0].num, 1);
    assert_int_equal(bc.cls[1].num, 1);
    // Each class gives back its own buffer, not the other class's.
    assert_ptr_equal(tg_bufcache_get(&bc, SZ_B), b);
    assert_ptr_equal(tg_bufcache_get(&bc, SZ_A), a);
    assert_int_equal(bc.cls[0].num, 0);
    assert_int_equal(bc.cls[1].num, 0);
    // LIFO: the last one put is the first one got.
    uint8_t *c = tg_bufcache_get(&bc, SZ_A);
    assert_non_null(c);
    assert_ptr_not_equal(c, a);
    tg_bufcache_put(&bc, a, SZ_A);
    tg_bufcache_put(&bc, c, SZ_A);
    assert_ptr_equal(tg_bufcache_get(&bc, SZ_A), c);
    assert_ptr_equal(tg_bufcache_get(&bc, SZ_A), a);
    free(a);
    free(b);
    free(c);
    tg_bufcache_cleanup(&bc);
}

static void test_cache_full_class_frees(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, 0);
    uint8_t *bufs[TG_BUFCACHE_MAX + 3];
    for (unsigned i = 0; i < TG_BUFCACHE_MAX + 3; i++) {
        bufs[i] = tg_bufcache_get(&bc, SZ_A);
        assert_non_null(bufs[i]);
    }
    for (unsigned i = 0; i < TG_BUFCACHE_MAX + 3; i++) {
        tg_bufcache_put(&bc, bufs[i], SZ_A); // the last three are freed (ASan/valgrind: no leak)
        assert_true(bc.cls[0].num <= TG_BUFCACHE_MAX);
    }
    assert_int_equal(bc.cls[0].num, TG_BUFCACHE_MAX);
    // The cache holds the first TG_BUFCACHE_MAX, most recent on top.
    assert_ptr_equal(bc.cls[0].bufs[TG_BUFCACHE_MAX - 1], bufs[TG_BUFCACHE_MAX - 1]);
    assert_ptr_equal(bc.cls[0].bufs[0], bufs[0]);
    tg_bufcache_cleanup(&bc);
    assert_int_equal(bc.cls[0].num, 0);
}

static void test_cache_bounded_in_bytes(void **state) {
    (void)state;
    struct tg_bufcache bc;
    // buffer_size 64 KiB and its ciphertext queue: a class keeps about 1 MiB, not 64 buffers.
    tg_bufcache_init(&bc, 65536, 65536 + 17408);
    assert_int_equal(bc.cls[0].max, TG_BUFCACHE_BYTES / 65536);
    assert_int_equal(bc.cls[1].max, TG_BUFCACHE_BYTES / (65536 + 17408));
    uint8_t *bufs[40];
    for (unsigned i = 0; i < 40; i++)
        bufs[i] = tg_bufcache_get(&bc, 65536);
    for (unsigned i = 0; i < 40; i++)
        tg_bufcache_put(&bc, bufs[i], 65536);
    assert_int_equal(bc.cls[0].num, TG_BUFCACHE_BYTES / 65536);
    tg_bufcache_cleanup(&bc);
    // Huge buffers: still TG_BUFCACHE_MIN of them.
    tg_bufcache_init(&bc, 4u << 20, 0);
    assert_int_equal(bc.cls[0].max, TG_BUFCACHE_MIN);
    tg_bufcache_cleanup(&bc);
}

static void test_cache_unknown_size_not_cached(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, SZ_B);
    uint8_t *x = tg_bufcache_get(&bc, 100);
    assert_non_null(x);
    tg_bufcache_put(&bc, x, 100); // freed
    assert_int_equal(bc.cls[0].num, 0);
    assert_int_equal(bc.cls[1].num, 0);
    // Size 0 never matches an unused class.
    tg_bufcache_init(&bc, SZ_A, 0);
    uint8_t *z = malloc(1);
    assert_non_null(z);
    tg_bufcache_put(&bc, z, 0);
    assert_int_equal(bc.cls[0].num, 0);
    assert_int_equal(bc.cls[1].num, 0);
    // NULL is ignored.
    tg_bufcache_put(&bc, NULL, SZ_A);
    assert_int_equal(bc.cls[0].num, 0);
    tg_bufcache_cleanup(&bc);
}

static void test_cache_null(void **state) {
    (void)state;
    uint8_t *p = tg_bufcache_get(NULL, SZ_A);
    assert_non_null(p);
    memset(p, 1, SZ_A);
    tg_bufcache_put(NULL, p, SZ_A); // freed
    tg_bufcache_put(NULL, NULL, SZ_A);

    // A queue without a cache works too.
    struct tg_bufq q = {0};
    uint8_t data[100];
    fill(data, sizeof(data), 3);
    assert_int_equal(tg_bufq_append(&q, NULL, data, sizeof(data), SZ_A, 0), 1);
    check_bytes(&q, sizeof(data), 3, 0);
    tg_bufq_consume(&q, NULL, 40);
    check_bytes(&q, 60, 3, 40);
    tg_bufq_consume(&q, NULL, 60);
    assert_null(q.data);
    assert_int_equal(tg_bufq_append(&q, NULL, data, 10, SZ_A, 0), 1);
    tg_bufq_reset(&q, NULL);
    assert_null(q.data);
}

// --- Queue -------------------------------------------------------------------------------------

static void test_queue_append_consume_reset(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, SZ_B);
    struct tg_bufq q = {0};
    assert_int_equal(tg_bufq_len(&q), 0);
    assert_null(tg_bufq_peek(&q));

    uint8_t d[SZ_A];
    fill(d, sizeof(d), 7);
    assert_int_equal(tg_bufq_append(&q, &bc, d, 10, SZ_A, 0), 1);
    assert_non_null(q.data);
    assert_int_equal(q.cap, SZ_A);
    assert_int_equal(tg_bufq_append(&q, &bc, d + 10, 20, SZ_A, 0), 1);
    check_bytes(&q, 30, 7, 0);

    tg_bufq_consume(&q, &bc, 5);
    check_bytes(&q, 25, 7, 5);
    assert_int_equal(q.head, 5);
    tg_bufq_consume(&q, &bc, 0);
    check_bytes(&q, 25, 7, 5);

    // Emptying gives the memory back to the cache: the next queue gets that very buffer.
    uint8_t *mem = q.data;
    tg_bufq_consume(&q, &bc, 25);
    assert_null(q.data);
    assert_int_equal(q.head, 0);
    assert_int_equal(q.tail, 0);
    assert_int_equal(q.cap, 0);
    assert_int_equal(bc.cls[0].num, 1);
    struct tg_bufq q2 = {0};
    assert_int_equal(tg_bufq_append(&q2, &bc, d, 1, SZ_A, 0), 1);
    assert_ptr_equal(q2.data, mem);
    assert_int_equal(bc.cls[0].num, 0);

    // reset with bytes pending drops them and caches the memory.
    tg_bufq_reset(&q2, &bc);
    assert_null(q2.data);
    assert_int_equal(tg_bufq_len(&q2), 0);
    assert_int_equal(bc.cls[0].num, 1);
    // reset of an empty queue is harmless.
    tg_bufq_reset(&q2, &bc);
    assert_int_equal(bc.cls[0].num, 1);

    // The other class.
    assert_int_equal(tg_bufq_append(&q2, &bc, d, 3, SZ_B, 0), 1);
    assert_int_equal(q2.cap, SZ_B);
    tg_bufq_reset(&q2, &bc);
    assert_int_equal(bc.cls[1].num, 1);
    tg_bufcache_cleanup(&bc);
}

static void test_queue_compaction_only_when_not_busy(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, 0);
    struct tg_bufq q = {0};
    uint8_t d[SZ_A];
    fill(d, sizeof(d), 11);
    assert_int_equal(tg_bufq_append(&q, &bc, d, 40, SZ_A, 0), 1);
    tg_bufq_consume(&q, &bc, 30);
    assert_int_equal(q.head, 30);
    uint8_t *first = q.data + q.head;

    // Busy: nothing moves, the room is what is left after the tail.
    uint32_t room = 12345;
    uint8_t *sp = tg_bufq_space(&q, &bc, SZ_A, 1, &room);
    assert_ptr_equal(sp, q.data + 40);
    assert_int_equal(room, SZ_A - 40);
    assert_int_equal(q.head, 30);
    assert_ptr_equal(tg_bufq_peek(&q), first);
    check_bytes(&q, 10, 11, 30);

    // Not busy: compacted to the start.
    sp = tg_bufq_space(&q, &bc, SZ_A, 0, &room);
    assert_int_equal(q.head, 0);
    assert_int_equal(q.tail, 10);
    assert_ptr_equal(sp, q.data + 10);
    assert_int_equal(room, SZ_A - 10);
    check_bytes(&q, 10, 11, 30);
    tg_bufq_reset(&q, &bc);
    tg_bufcache_cleanup(&bc);
}

static void test_queue_append_busy(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, 0);
    struct tg_bufq q = {0};
    uint8_t d[2 * SZ_A];
    fill(d, sizeof(d), 21);
    assert_int_equal(tg_bufq_append(&q, &bc, d, 50, SZ_A, 0), 1);
    tg_bufq_consume(&q, &bc, 20); // head 20, tail 50: 14 bytes of room after the tail
    uint8_t *data = q.data;
    const uint8_t *head = tg_bufq_peek(&q);

    // Fits after the tail: appended in place, nothing moves.
    assert_int_equal(tg_bufq_append(&q, &bc, d + 50, 14, SZ_A, 1), 1);
    assert_ptr_equal(q.data, data);
    assert_ptr_equal(tg_bufq_peek(&q), head);
    assert_int_equal(q.head, 20);
    assert_int_equal(q.tail, SZ_A);
    check_bytes(&q, 44, 21, 20);

    // Full while busy: even one byte fails, although compaction would make room.
    assert_int_equal(tg_bufq_append(&q, &bc, d + 64, 1, SZ_A, 1), 0);
    assert_ptr_equal(q.data, data);
    assert_int_equal(q.head, 20);
    assert_int_equal(q.tail, SZ_A);
    assert_int_equal(q.cap, SZ_A);
    check_bytes(&q, 44, 21, 20);

    // Some room but not enough: fails, nothing copied, nothing moved.
    tg_bufq_reset(&q, &bc);
    assert_int_equal(tg_bufq_append(&q, &bc, d, 60, SZ_A, 0), 1);
    tg_bufq_consume(&q, &bc, 10); // head 10, tail 60: 4 bytes after the tail
    data = q.data;
    assert_int_equal(tg_bufq_append(&q, &bc, d + 60, 5, SZ_A, 1), 0);
    assert_ptr_equal(q.data, data);
    assert_int_equal(q.head, 10);
    assert_int_equal(q.tail, 60);
    check_bytes(&q, 50, 21, 10);

    // Once the send completed (not busy) the same append compacts and fits.
    assert_int_equal(tg_bufq_append(&q, &bc, d + 60, 5, SZ_A, 0), 1);
    assert_ptr_equal(q.data, data);
    assert_int_equal(q.head, 0);
    assert_int_equal(q.cap, SZ_A);
    check_bytes(&q, 55, 21, 10);
    tg_bufq_reset(&q, &bc);
    tg_bufcache_cleanup(&bc);
}

static void test_queue_growth_when_not_busy(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, 0);
    struct tg_bufq q = {0};
    uint8_t d[5 * SZ_A];
    fill(d, sizeof(d), 31);

    // More than |size| in one append on an empty queue: grows.
    assert_int_equal(tg_bufq_append(&q, &bc, d, SZ_A + 1, SZ_A, 0), 1);
    assert_true(q.cap >= SZ_A + 1);
    assert_int_equal(q.cap, 2 * SZ_A);
    check_bytes(&q, SZ_A + 1, 31, 0);

    // And again, beyond twice the size.
    assert_int_equal(tg_bufq_append(&q, &bc, d + SZ_A + 1, 2 * SZ_A, SZ_A, 0), 1);
    assert_int_equal(q.cap, 4 * SZ_A);
    check_bytes(&q, 3 * SZ_A + 1, 31, 0);

    // Busy: no growth even with the queue grown, the append fails.
    uint32_t cap = q.cap;
    assert_int_equal(tg_bufq_append(&q, &bc, d, SZ_A, SZ_A, 1), 0);
    assert_int_equal(q.cap, cap);
    check_bytes(&q, 3 * SZ_A + 1, 31, 0);

    // A grown buffer is not of a cached size: emptying frees it instead of caching it.
    tg_bufq_consume(&q, &bc, 3 * SZ_A + 1);
    assert_null(q.data);
    assert_int_equal(bc.cls[0].num, 0);

    // Compaction first, growth only when that is not enough. Head 30, 30 pending: an append
    // of 34 fits once compacted (no growth), one more byte then needs growth.
    assert_int_equal(tg_bufq_append(&q, &bc, d, 60, SZ_A, 0), 1);
    tg_bufq_consume(&q, &bc, 30);
    assert_int_equal(tg_bufq_append(&q, &bc, d + 60, 34, SZ_A, 0), 1);
    assert_int_equal(q.head, 0);
    assert_int_equal(q.cap, SZ_A);
    check_bytes(&q, 64, 31, 30);
    tg_bufq_consume(&q, &bc, 10);
    assert_int_equal(tg_bufq_append(&q, &bc, d + 94, 11, SZ_A, 0), 1);
    assert_int_equal(q.head, 0);
    assert_int_equal(q.cap, 2 * SZ_A);
    check_bytes(&q, 65, 31, 40);
    tg_bufq_reset(&q, &bc);
    tg_bufcache_cleanup(&bc);
}

static void test_queue_space_commit(void **state) {
    (void)state;
    struct tg_bufcache bc;
    tg_bufcache_init(&bc, SZ_A, 0);
    struct tg_bufq q = {0};

    // A queue without memory takes |size| bytes from the cache.
    uint8_t *cached = tg_bufcache_get(&bc, SZ_A);
    tg_bufcache_put(&bc, cached, SZ_A);
    uint32_t room = 0;
    uint8_t *sp = tg_bufq_space(&q, &bc, SZ_A, 0, &room);
    assert_ptr_equal(sp, cached);
    assert_ptr_equal(q.data, cached);
    assert_int_equal(room, SZ_A);
    assert_int_equal(bc.cls[0].num, 0);
    assert_int_equal(tg_bufq_len(&q), 0);

    fill(sp, 16, 41);
    tg_bufq_commit(&q, 16);
    check_bytes(&q, 16, 41, 0);
    sp = tg_bufq_space(&q, &bc, SZ_A, 0, &room);
    assert_ptr_equal(sp, q.data + 16);
    assert_int_equal(room, SZ_A - 16);
    fill(sp, room, 41 + 16);
    tg_bufq_commit(&q, room);
    check_bytes(&q, SZ_A, 41, 0);

    // Full: no room, busy or not.
    sp = tg_bufq_space(&q, &bc, SZ_A, 1, &room);
    assert_non_null(sp);
    assert_int_equal(room, 0);
    sp = tg_bufq_space(&q, &bc, SZ_A, 0, &room);
    assert_int_equal(room, 0);

    // A commit of 0 changes nothing.
    tg_bufq_commit(&q, 0);
    check_bytes(&q, SZ_A, 41, 0);

    // After a consume the room comes back only when not busy.
    tg_bufq_consume(&q, &bc, 8);
    tg_bufq_space(&q, &bc, SZ_A, 1, &room);
    assert_int_equal(room, 0);
    tg_bufq_space(&q, &bc, SZ_A, 0, &room);
    assert_int_equal(room, 8);
    check_bytes(&q, SZ_A - 8, 41, 8);
    tg_bufq_reset(&q, &bc);
    assert_int_equal(bc.cls[0].num, 1);
    tg_bufcache_cleanup(&bc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_init),
        cmocka_unit_test(test_cache_recycles_same_pointer),
        cmocka_unit_test(test_cache_full_class_frees),
        cmocka_unit_test(test_cache_bounded_in_bytes),
        cmocka_unit_test(test_cache_unknown_size_not_cached),
        cmocka_unit_test(test_cache_null),
        cmocka_unit_test(test_queue_append_consume_reset),
        cmocka_unit_test(test_queue_compaction_only_when_not_busy),
        cmocka_unit_test(test_queue_append_busy),
        cmocka_unit_test(test_queue_growth_when_not_busy),
        cmocka_unit_test(test_queue_space_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
