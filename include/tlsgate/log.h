#ifndef TLSGATE_LOG_H
#define TLSGATE_LOG_H

// One line per event on stderr, key=value pairs: `ts=... level=info event=NAME k=v ...`.
// Each line is written with a single write(2), so lines from different threads never interleave.
//
// Flooding is impossible by construction: each thread prints at most TG_LOG_BURST lines of one
// event kind per second; the rest are counted, and the first line of that kind in a later
// second (or tg_log_flush, which the worker tick and the control loop call) is preceded by
// `event=log_suppressed suppressed_event=NAME count=N`. A thread keeps at most
// TG_LOG_KINDS kinds apart; beyond that the kinds share one budget.

#define TG_LOG_BURST 20
#define TG_LOG_KINDS 64

enum tg_log_level { TG_LOG_DEBUG = 0, TG_LOG_INFO, TG_LOG_WARN, TG_LOG_ERROR };

// tg_log_set_level sets the lowest level that is printed (default TG_LOG_INFO).
void tg_log_set_level(enum tg_log_level level);

// tg_log_enabled returns one when |level| would be printed.
int tg_log_enabled(enum tg_log_level level);

// tg_log_level_parse sets |*out| from "debug", "info", "warn" or "error"; returns 1 on success.
int tg_log_level_parse(const char *s, enum tg_log_level *out);

// tg_log prints one line: the timestamp, the level, `event=EVENT`, then |fmt| (which should
// itself be `key=value` pairs separated by spaces). Values with spaces should be quoted by the
// caller: `reason="..."`.
void tg_log(enum tg_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// tg_log_flush prints the summaries of lines the calling thread suppressed in a second that
// has ended.
void tg_log_flush(void);

#define TG_DEBUG(event, ...)                                                                       \
    do {                                                                                           \
        if (tg_log_enabled(TG_LOG_DEBUG))                                                          \
            tg_log(TG_LOG_DEBUG, event, __VA_ARGS__);                                              \
    } while (0)
#define TG_INFO(event, ...) tg_log(TG_LOG_INFO, event, __VA_ARGS__)
#define TG_WARN(event, ...) tg_log(TG_LOG_WARN, event, __VA_ARGS__)
#define TG_ERROR(event, ...) tg_log(TG_LOG_ERROR, event, __VA_ARGS__)

#endif // TLSGATE_LOG_H
