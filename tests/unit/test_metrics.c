// Unit tests for the metrics registry and its Prometheus rendering.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tlsgate/metrics.h"

static const char *k_names[] = {"provider", "pbx"};
static const char *k_kinds[] = {"inbound", "outbound"};

static char *render(const struct tg_metrics *m, const char *extra) {
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(tg_metrics_render(m, extra, &out, &len), 1);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_sums_across_workers(void **state) {
    (void)state;
    struct tg_metrics *m = tg_metrics_new(3, 2, k_names, k_kinds);
    assert_non_null(m);
    for (size_t w = 0; w < 3; w++) {
        struct tg_listener_counters *c = tg_metrics_worker(m, w);
        tg_counter_add(&c[0].conns_opened, 10);
        tg_counter_add(&c[0].conns_closed, 7);
        tg_counter_add(&c[0].handshakes[TG_VERDICT_OK], 5);
        tg_counter_add(&c[0].bytes_up, 1000);
        tg_counter_add(&c[1].bytes_down, 1);
    }
    tg_counter_add(&tg_metrics_worker(m, 1)[0].handshakes[TG_VERDICT_CN_CASE_MISMATCH], 2);
    char *out = render(m, NULL);
    assert_non_null(
        strstr(out, "tlsgate_connections_active{listener=\"provider\",kind=\"inbound\"} 9\n"));
    assert_non_null(
        strstr(out, "tlsgate_connections_total{listener=\"provider\",kind=\"inbound\"} 30\n"));
    assert_non_null(
        strstr(out, "tlsgate_handshakes_total{listener=\"provider\",result=\"ok\"} 15\n"));
    assert_non_null(strstr(
        out, "tlsgate_handshakes_total{listener=\"provider\",result=\"cn_case_mismatch\"} 2\n"));
    assert_non_null(
        strstr(out, "tlsgate_bytes_total{listener=\"provider\",direction=\"up\"} 3000\n"));
    assert_non_null(strstr(out, "tlsgate_bytes_total{listener=\"pbx\",direction=\"down\"} 3\n"));
    // ok is always shown; a reason that never happened is not.
    assert_non_null(strstr(out, "tlsgate_handshakes_total{listener=\"pbx\",result=\"ok\"} 0\n"));
    assert_null(strstr(out, "result=\"self_signed\""));
    free(out);
    tg_metrics_free(m);
}

static void test_every_sample_line_is_well_formed(void **state) {
    (void)state;
    struct tg_metrics *m = tg_metrics_new(1, 2, k_names, k_kinds);
    assert_non_null(m);
    for (int v = 0; v < TG_VERDICT_NUM; v++)
        tg_counter_add(&tg_metrics_worker(m, 0)[1].handshakes[v], (uint64_t)v + 1);
    char *out = render(m, "tlsgate_workers 1\n");
    size_t samples = 0;
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (line[0] == '#') {
            assert_true(strncmp(line, "# HELP tlsgate_", 15) == 0 ||
                        strncmp(line, "# TYPE tlsgate_", 15) == 0);
            continue;
        }
        samples++;
        assert_true(strncmp(line, "tlsgate_", 8) == 0);
        char *space = strrchr(line, ' ');
        assert_non_null(space);
        char *end;
        strtoull(space + 1, &end, 10);
        assert_int_equal(*end, '\0');
    }
    // Every verdict of the pbx listener is shown once it happened.
    assert_true(samples >= (size_t)TG_VERDICT_NUM + 1);
    free(out);
    tg_metrics_free(m);
}

static void test_free_null(void **state) {
    (void)state;
    tg_metrics_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_across_workers),
        cmocka_unit_test(test_every_sample_line_is_well_formed),
        cmocka_unit_test(test_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
