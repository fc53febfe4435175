#include "tlsgate/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
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

// The per-thread budget of one event kind: lines printed in the current second and lines
// suppressed since the last summary. Thread-local on purpose: the logger is called from every
// thread, and a budget per thread and kind needs no lock and no shared cache line.
struct kind_budget {
    const char *event; // NULL: slot free
    uint64_t second;
    uint32_t printed;
    uint32_t suppressed;
    enum tg_log_level level;
};

static _Thread_local struct kind_budget t_budget[TG_LOG_KINDS + 1]; // +1: the shared overflow

static uint64_t now_second(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec;
}

static struct kind_budget *budget_of(const char *event) {
    uint32_t h = 2166136261u;
    for (const char *p = event; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    for (unsigned i = 0; i < TG_LOG_KINDS; i++) {
        struct kind_budget *b = &t_budget[(h + i) % TG_LOG_KINDS];
        if (b->event == NULL) {
            b->event = event;
            return b;
        }
        if (b->event == event || strcmp(b->event, event) == 0)
            return b;
    }
    struct kind_budget *b = &t_budget[TG_LOG_KINDS];
    b->event = "other";
    return b;
}

static void emit(enum tg_log_level level, const char *event, const char *fmt, va_list ap);

static void emit_f(enum tg_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void emit_f(enum tg_log_level level, const char *event, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, fmt, ap);
    va_end(ap);
}

// summarise prints the count a budget suppressed, if any, and starts it afresh.
static void summarise(struct kind_budget *b) {
    if (b->suppressed > 0)
        emit_f(b->level, "log_suppressed", "suppressed_event=%s count=%u", b->event, b->suppressed);
    b->suppressed = 0;
}

void tg_log_flush(void) {
    uint64_t sec = now_second();
    for (unsigned i = 0; i <= TG_LOG_KINDS; i++)
        if (t_budget[i].event != NULL && t_budget[i].second != sec)
            summarise(&t_budget[i]);
}

void tg_log(enum tg_log_level level, const char *event, const char *fmt, ...) {
    if (!tg_log_enabled(level))
        return;
    struct kind_budget *b = budget_of(event);
    uint64_t sec = now_second();
    if (b->second != sec) {
        summarise(b);
        b->second = sec;
        b->printed = 0;
    }
    if (b->printed >= TG_LOG_BURST) {
        b->suppressed++;
        if (level > b->level || b->suppressed == 1)
            b->level = level;
        return;
    }
    b->printed++;
    va_list ap;
    va_start(ap, fmt);
    emit(level, event, fmt, ap);
    va_end(ap);
}

static void emit(enum tg_log_level level, const char *event, const char *fmt, va_list ap) {
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
        int m = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
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
