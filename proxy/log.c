#include "tlsgate/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = TG_LOG_INFO;

static const char *const k_level_names[] = {"debug", "info", "warn", "error"};

void tg_log_set_level(enum tg_log_level level) {
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

int tg_log_enabled(enum tg_log_level level) {
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

int tg_log_level_parse(const char *s, enum tg_log_level *out) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, k_level_names[i]) == 0) {
            *out = (enum tg_log_level)i;
            return 1;
        }
    }
    return 0;
}

void tg_log(enum tg_log_level level, const char *event, const char *fmt, ...) {
    if (!tg_log_enabled(level))
        return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, k_level_names[level], event);
    if (n < 0)
        return;
    size_t len = (size_t)n;
    if (fmt != NULL && fmt[0] != '\0' && len < sizeof(line) - 2) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
        va_end(ap);
        if (m > 0)
            len += (size_t)m;
    }
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    // One write per line: lines from different threads never interleave.
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
