// Unit tests of admission control (proxy/guard.c): per-listener caps, the unauthenticated
// budget, per-source handshakes in progress and per-source rate, and source bucketing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "tlsgate/guard.h"

static struct tg_config *config(uint32_t max_hs, uint32_t per_src, uint32_t rate) {
    struct tg_config *cfg = calloc(1, sizeof(*cfg));
    tg_config_init(cfg);
    cfg->max_handshakes = max_hs;
    cfg->max_handshakes_per_source = per_src;
    cfg->new_connections_per_source = rate;
    cfg->listeners = calloc(2, sizeof(*cfg->listeners));
    cfg->num_listeners = 2;
    cfg->listeners[0].max_connections = 3;
    cfg->listeners[1].max_connections = 0;
    return cfg;
}

static void done(struct tg_guard *g, struct tg_config *cfg) {
    tg_guard_free(g);
    tg_config_cleanup(cfg);
    free(cfg);
}

static struct sockaddr_in v4(const char *a) {
    struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(5061)};
    inet_pton(AF_INET, a, &s.sin_addr);
    return s;
}

static struct sockaddr_in6 v6(const char *a) {
    struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(5061)};
    inet_pton(AF_INET6, a, &s.sin6_addr);
    return s;
}

static void test_listener_cap(void **state) {
    (void)state;
    struct tg_config *cfg = config(100, 0, 0);
    struct tg_guard *g = tg_guard_new(cfg);
    assert_non_null(g);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_OK);
    assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_LISTENER_MAX);
    assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_LISTENER_MAX); // a refusal holds none
    tg_guard_release_conn(g, 0);
    assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_OK);
    for (int i = 0; i < 1000; i++) // no cap of its own
        assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_OK);
    assert_int_equal(tg_guard_admit_conn(g, 7), TG_ADMIT_OK); // out of range: not counted
    done(g, cfg);
}

static void test_fd_reserve(void **state) {
    (void)state;
    struct tg_config *cfg = config(100, 0, 0);
    cfg->fd_reserve = 64;
    struct tg_guard *g = tg_guard_new(cfg);
    g->fd_limit = 256; // two descriptors a connection, 64 kept: (256 - 64) / 2 = 96
    for (int i = 0; i < 96; i++)
        assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_OK);
    assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_FD_LIMIT);
    assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_FD_LIMIT); // every listener
    tg_guard_release_conn(g, 1);
    assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_OK);
    assert_int_equal(atomic_load(&g->conns), 96);
    // A listener refusal gives the descriptor count back too.
    assert_int_equal(tg_guard_admit_conn(g, 0), TG_ADMIT_FD_LIMIT);
    done(g, cfg);
    // No reserve: no limit from descriptors.
    cfg = config(100, 0, 0);
    cfg->fd_reserve = 0;
    g = tg_guard_new(cfg);
    g->fd_limit = 16;
    for (int i = 0; i < 100; i++)
        assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_OK);
    done(g, cfg);
}

// Media sessions' sockets and connections share one budget under the reserve: neither can
// starve the other of the reserve, and a refusal counts nothing.
static void test_fd_reserve_with_media(void **state) {
    (void)state;
    struct tg_config *cfg = config(100, 0, 0);
    cfg->fd_reserve = 64;
    struct tg_guard *g = tg_guard_new(cfg);
    g->fd_limit = 256;           // 192 usable
    for (int i = 0; i < 40; i++) // 40 streams of four sockets: 160
        assert_int_equal(tg_guard_take_fds(g, 4), 1);
    for (int i = 0; i < 16; i++) // 16 connections of two: 192
        assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_OK);
    assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_FD_LIMIT);
    assert_int_equal(tg_guard_take_fds(g, 4), 0);
    assert_int_equal(atomic_load(&g->other_fds), 160);
    tg_guard_give_fds(g, 4);
    assert_int_equal(tg_guard_admit_conn(g, 1), TG_ADMIT_OK); // two of the four freed
    assert_int_equal(tg_guard_take_fds(g, 4), 0);             // two left: not four
    assert_int_equal(tg_guard_take_fds(g, 2), 1);
    done(g, cfg);
}

static void test_per_source_in_progress(void **state) {
    (void)state;
    struct tg_config *cfg = config(1000, 2, 0);
    struct tg_guard *g = tg_guard_new(cfg);
    assert_int_equal(tg_guard_admit_handshake(g, 5, 1), TG_ADMIT_OK);
    assert_int_equal(tg_guard_admit_handshake(g, 5, 1), TG_ADMIT_OK);
    assert_int_equal(tg_guard_admit_handshake(g, 5, 1), TG_ADMIT_SOURCE_HANDSHAKES);
    assert_int_equal(tg_guard_admit_handshake(g, 6, 1), TG_ADMIT_OK); // another source
    assert_int_equal(atomic_load(&g->buckets[5].handshakes), 2);
    tg_guard_release_handshake(g, 5);
    assert_int_equal(tg_guard_admit_handshake(g, 5, 1), TG_ADMIT_OK);
    done(g, cfg);
}

static void test_per_source_rate(void **state) {
    (void)state;
    struct tg_config *cfg = config(1000, 0, 3);
    struct tg_guard *g = tg_guard_new(cfg);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tg_guard_admit_handshake(g, 7, 100), TG_ADMIT_OK);
        tg_guard_release_handshake(g, 7); // completes at once: the rate still counts it
    }
    assert_int_equal(tg_guard_admit_handshake(g, 7, 100), TG_ADMIT_SOURCE_RATE);
    assert_int_equal(tg_guard_admit_handshake(g, 8, 100), TG_ADMIT_OK); // another source
    // A new second starts a new count.
    assert_int_equal(tg_guard_admit_handshake(g, 7, 101), TG_ADMIT_OK);
    assert_int_equal(atomic_load(&g->buckets[7].handshakes), 1);
    done(g, cfg);
}

static void test_no_limits(void **state) {
    (void)state;
    struct tg_config *cfg = config(0, 0, 0);
    struct tg_guard *g = tg_guard_new(cfg);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(tg_guard_admit_handshake(g, 1, 1), TG_ADMIT_OK);
    done(g, cfg);
}

static void test_buckets(void **state) {
    (void)state;
    struct tg_config *cfg = config(10, 10, 10);
    struct tg_guard *g = tg_guard_new(cfg);
    struct sockaddr_in a = v4("192.0.2.7"), a2 = v4("192.0.2.7");
    a2.sin_port = htons(40000); // the port does not matter
    assert_int_equal(tg_guard_bucket(g, (struct sockaddr *)&a),
                     tg_guard_bucket(g, (struct sockaddr *)&a2));
    // An IPv4-mapped IPv6 address is the IPv4 address.
    struct sockaddr_in6 m = v6("::ffff:192.0.2.7");
    assert_int_equal(tg_guard_bucket(g, (struct sockaddr *)&a),
                     tg_guard_bucket(g, (struct sockaddr *)&m));
    // One IPv6 /64 is one source.
    struct sockaddr_in6 x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff:1:2:3");
    assert_int_equal(tg_guard_bucket(g, (struct sockaddr *)&x),
                     tg_guard_bucket(g, (struct sockaddr *)&y));
    // Different sources spread over the buckets (keyed hash): 200 addresses, many buckets.
    unsigned distinct = 0;
    static uint8_t seen[TG_GUARD_BUCKETS];
    memset(seen, 0, sizeof(seen));
    for (int i = 1; i <= 200; i++) {
        char s[32];
        snprintf(s, sizeof(s), "198.51.100.%d", i);
        struct sockaddr_in p = v4(s);
        uint16_t b = tg_guard_bucket(g, (struct sockaddr *)&p);
        assert_true(b < TG_GUARD_BUCKETS);
        distinct += !seen[b];
        seen[b] = 1;
    }
    assert_true(distinct > 180);
    assert_int_equal(tg_guard_bucket(g, NULL), 0);
    // Another instance has another key: the same address lands elsewhere (almost surely).
    struct tg_guard *g2 = tg_guard_new(cfg);
    unsigned same = 0;
    for (int i = 1; i <= 50; i++) {
        char s[32];
        snprintf(s, sizeof(s), "203.0.113.%d", i);
        struct sockaddr_in p = v4(s);
        same +=
            tg_guard_bucket(g, (struct sockaddr *)&p) == tg_guard_bucket(g2, (struct sockaddr *)&p);
    }
    assert_true(same < 5);
    tg_guard_free(g2);
    done(g, cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listener_cap),
        cmocka_unit_test(test_fd_reserve),
        cmocka_unit_test(test_fd_reserve_with_media),
        cmocka_unit_test(test_per_source_in_progress),
        cmocka_unit_test(test_per_source_rate),
        cmocka_unit_test(test_no_limits),
        cmocka_unit_test(test_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
