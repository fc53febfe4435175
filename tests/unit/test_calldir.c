// Unit tests for the call directory shared by the workers (proxy/calldir.c): entries found
// from the other workers only, removal (probe chains shrink back), full tables, posting to a
// worker that runs and to one that has left.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tlsgate/calldir.h"

static void test_put_find_del(void **state) {
    (void)state;
    struct tg_calldir *d = tg_calldir_new(3, 4); // 16 entries per worker
    assert_non_null(d);
    uint64_t h = tg_calldir_hash(d, "abc@pbx", 7);
    assert_true(h > 1);
    assert_int_equal(tg_calldir_hash(d, "abc@pbx", 7), h);
    assert_true(tg_calldir_put(d, 1, h, 0x1234));
    unsigned owner = 99;
    uint64_t cookie = 0;
    assert_false(tg_calldir_find(d, 1, h, &owner, &cookie)); // a worker never finds its own
    assert_true(tg_calldir_find(d, 0, h, &owner, &cookie));
    assert_int_equal(owner, 1);
    assert_int_equal(cookie, 0x1234);
    assert_true(tg_calldir_find(d, 2, h, &owner, &cookie));
    tg_calldir_del(d, 1, h);
    assert_false(tg_calldir_find(d, 0, h, &owner, &cookie));
    tg_calldir_free(d);
}

// Keys that collide on the first slot make a probe chain; removing from its middle and its end
// keeps every other key findable, and the slots are reused.
static void test_chains(void **state) {
    (void)state;
    struct tg_calldir *d = tg_calldir_new(2, 4);
    assert_non_null(d);
    const uint64_t size = d->mask + 1;
    uint64_t keys[6];
    for (int i = 0; i < 6; i++)
        keys[i] = 5 + (uint64_t)i * size; // all start at slot 5
    for (int i = 0; i < 6; i++)
        assert_true(tg_calldir_put(d, 0, keys[i], (uint64_t)i + 100));
    unsigned owner;
    uint64_t cookie;
    tg_calldir_del(d, 0, keys[2]); // middle: a removed mark
    tg_calldir_del(d, 0, keys[5]); // end: the chain shrinks
    for (int i = 0; i < 6; i++) {
        int found = tg_calldir_find(d, 1, keys[i], &owner, &cookie);
        assert_int_equal(found, i != 2 && i != 5);
        if (found)
            assert_int_equal(cookie, (uint64_t)i + 100);
    }
    tg_calldir_del(d, 0, keys[4]); // now 2, 4, 5 gone: the chain ends after keys[3]
    assert_int_equal(atomic_load(&d->tab[5 + 3].key), keys[3]);
    assert_int_equal(atomic_load(&d->tab[5 + 4].key), 0);
    assert_true(tg_calldir_put(d, 0, keys[2], 7)); // the removed slot is reused
    assert_int_equal(atomic_load(&d->tab[5 + 2].key), keys[2]);
    assert_true(tg_calldir_find(d, 1, keys[3], &owner, &cookie));
    // Full: as many keys as slots, then no more.
    for (uint64_t i = 0; i < size; i++)
        tg_calldir_put(d, 1, 1000 + i, i);
    assert_false(tg_calldir_put(d, 1, 99999, 1));
    for (uint64_t i = 0; i < size; i++)
        assert_true(tg_calldir_find(d, 0, 1000 + i, &owner, &cookie));
    tg_calldir_free(d);
}

static void test_post_needs_a_running_worker(void **state) {
    (void)state;
    struct tg_calldir *d = tg_calldir_new(2, 4);
    assert_non_null(d);
    struct tg_loop loop;
    char err[128];
    assert_true(tg_loop_init(&loop, 8, 16, err, sizeof(err)));
    assert_false(tg_calldir_post(d, NULL, 1, 42)); // not attached yet
    assert_false(tg_calldir_post(d, NULL, 5, 42)); // no such worker
    tg_calldir_attach(d, 1, &loop);
    assert_true(tg_calldir_post(d, NULL, 1, 42)); // into its mailbox
    tg_calldir_detach(d, 1);
    assert_false(tg_calldir_post(d, NULL, 1, 42));
    assert_int_equal(atomic_load(&d->users[1]), 0);
    tg_loop_cleanup(&loop);
    tg_calldir_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_find_del),
        cmocka_unit_test(test_chains),
        cmocka_unit_test(test_post_needs_a_running_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
