// Unit tests of the logger's per-kind rate limit (proxy/log.c): lines go to stderr, which the
// tests point at a pipe and read back.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tlsgate/log.h"

static char g_out[1 << 20];

// capture runs |fn| with stderr on a temporary file and leaves what it printed in g_out.
static void capture(void (*fn)(void)) {
    FILE *f = tmpfile();
    assert_non_null(f);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(f), STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(f);
    size_t n = fread(g_out, 1, sizeof(g_out) - 1, f);
    g_out[n] = '\0';
    fclose(f);
}

static unsigned count(const char *needle) {
    unsigned k = 0;
    for (const char *p = g_out; (p = strstr(p, needle)) != NULL; p++)
        k++;
    return k;
}

// wait_next_second sleeps until the monotonic second changes, so a test starts a fresh window.
static void wait_next_second(void) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &a);
    do {
        usleep(5000);
        clock_gettime(CLOCK_MONOTONIC_COARSE, &b);
    } while (b.tv_sec == a.tv_sec);
}

static void flood(void) {
    wait_next_second();
    for (int i = 0; i < 5000; i++)
        TG_WARN("accept_failed", "n=%d", i);
    for (int i = 0; i < 3; i++)
        TG_INFO("other_event", "n=%d", i);
    wait_next_second();
    tg_log_flush();
}

static void test_flood_is_bounded_and_summarised(void **state) {
    (void)state;
    capture(flood);
    // One burst in the first second, nothing more from the flood, and one summary line.
    assert_int_equal(count(" event=accept_failed "), TG_LOG_BURST);
    assert_int_equal(count("event=log_suppressed suppressed_event=accept_failed count=4980"), 1);
    assert_int_equal(count("level=warn event=log_suppressed"), 1);
    // Another kind has its own budget.
    assert_int_equal(count(" event=other_event "), 3);
}

static void next_window(void) {
    wait_next_second();
    for (int i = 0; i < TG_LOG_BURST + 5; i++)
        TG_WARN("kind_a", "i=%d", i);
    wait_next_second();
    for (int i = 0; i < 2; i++)
        TG_WARN("kind_a", "j=%d", i);
}

static void test_new_second_summarises_then_prints(void **state) {
    (void)state;
    capture(next_window);
    assert_int_equal(count(" event=kind_a "), TG_LOG_BURST + 2);
    assert_int_equal(count("suppressed_event=kind_a count=5"), 1);
    // The summary comes before the first line of the new second.
    const char *sum = strstr(g_out, "suppressed_event=kind_a");
    const char *j0 = strstr(g_out, "j=0");
    assert_non_null(sum);
    assert_non_null(j0);
    assert_true(sum < j0);
}

static void many_kinds(void) {
    wait_next_second();
    static char names[TG_LOG_KINDS * 2][32];
    for (int k = 0; k < TG_LOG_KINDS * 2; k++) {
        snprintf(names[k], sizeof(names[k]), "kind_%d", k);
        for (int i = 0; i < 100; i++)
            TG_WARN(names[k], "i=%d", i);
    }
}

static void test_kinds_beyond_the_table_share_a_budget(void **state) {
    (void)state;
    capture(many_kinds);
    // Whatever the number of kinds, one second prints at most (kinds + 1) x burst lines.
    unsigned lines = count("level=warn event=kind_");
    assert_true(lines <= (TG_LOG_KINDS + 1) * TG_LOG_BURST);
    assert_true(lines >= TG_LOG_KINDS * TG_LOG_BURST / 2);
}

static void below_level(void) {
    tg_log_set_level(TG_LOG_WARN);
    for (int i = 0; i < 10; i++)
        TG_INFO("quiet", "i=%d", i);
    tg_log_set_level(TG_LOG_INFO);
}

static void test_disabled_level_prints_nothing(void **state) {
    (void)state;
    capture(below_level);
    assert_int_equal(count("event=quiet"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood_is_bounded_and_summarised),
        cmocka_unit_test(test_new_second_summarises_then_prints),
        cmocka_unit_test(test_kinds_beyond_the_table_share_a_budget),
        cmocka_unit_test(test_disabled_level_prints_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
