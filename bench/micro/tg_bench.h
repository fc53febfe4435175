#ifndef TLSGATE_TG_BENCH_H
#define TLSGATE_TG_BENCH_H

#include <stdint.h>

// A small C API over Google Benchmark (libbenchmark), so that the micro benchmarks are plain C
// like the rest of tlsgate. tg_bench.cc is the one C++ file; it maps these calls onto
// benchmark::RegisterBenchmark and benchmark::State.
//
// A benchmark is a function that sets up, then loops on tg_bench_keep_running and cleans up:
//
//   static void bench_thing(struct tg_bench_state *st, void *arg) {
//       struct thing *t = thing_new(arg);         // not timed
//       while (tg_bench_keep_running(st)) {
//           thing_do(t);                          // timed
//       }
//       tg_bench_set_items_processed(st, tg_bench_iterations(st));
//       thing_free(t);                            // not timed
//   }
//
// The function may be called several times per run (Google Benchmark grows the iteration count
// until the run is long enough), so set-up that must happen once belongs in main().

#if defined(__cplusplus)
extern "C" {
#endif

// tg_bench_state is one run of one benchmark: benchmark::State behind an opaque pointer.
struct tg_bench_state;

// tg_bench_fn is a benchmark body. |arg| is the pointer given at registration.
typedef void (*tg_bench_fn)(struct tg_bench_state *st, void *arg);

// tg_bench_unit is the unit a benchmark's times are reported in.
enum tg_bench_unit {
    TG_BENCH_NS = 0,
    TG_BENCH_US,
    TG_BENCH_MS,
};

// tg_bench_register registers |fn| under |name| (copied), to be called with |arg| (borrowed: it
// must outlive tg_bench_main). Times are reported in nanoseconds. Returns 1 on success.
int tg_bench_register(const char *name, tg_bench_fn fn, void *arg);

// tg_bench_register_unit is tg_bench_register with times reported in |unit|.
int tg_bench_register_unit(const char *name, tg_bench_fn fn, void *arg, enum tg_bench_unit unit);

// tg_bench_keep_running returns 1 while the benchmark should run one more iteration, 0 when it
// is done (or an error was reported with tg_bench_skip_with_error). The first call starts the
// timer; the call that returns 0 stops it.
int tg_bench_keep_running(struct tg_bench_state *st);

// tg_bench_iterations returns the number of iterations run so far.
int64_t tg_bench_iterations(const struct tg_bench_state *st);

// tg_bench_pause_timing stops the timer (for per-iteration set-up that must not be measured).
// It costs a clock read or two: amortise it over many iterations.
void tg_bench_pause_timing(struct tg_bench_state *st);

// tg_bench_resume_timing restarts the timer stopped by tg_bench_pause_timing.
void tg_bench_resume_timing(struct tg_bench_state *st);

// tg_bench_set_bytes_processed reports |bytes| processed in total by the run: the report shows
// bytes per second.
void tg_bench_set_bytes_processed(struct tg_bench_state *st, int64_t bytes);

// tg_bench_set_items_processed reports |items| processed in total by the run: the report shows
// items per second.
void tg_bench_set_items_processed(struct tg_bench_state *st, int64_t items);

// tg_bench_counter sets the user counter |name| (copied) to |value|, reported as is.
void tg_bench_counter(struct tg_bench_state *st, const char *name, double value);

// tg_bench_set_label attaches |label| (copied) to the run's report line.
void tg_bench_set_label(struct tg_bench_state *st, const char *label);

// tg_bench_skip_with_error marks the run failed with |msg| (copied). The next
// tg_bench_keep_running returns 0; the report shows the error instead of times.
void tg_bench_skip_with_error(struct tg_bench_state *st, const char *msg);

// tg_bench_main parses Google Benchmark's command line flags out of |argc| / |argv|, runs the
// selected benchmarks and shuts the library down. Returns 0 when every flag was understood and
// no benchmark reported an error, 1 on an unknown flag, 2 when a benchmark failed. The results
// stay available to tg_bench_result_ns afterwards.
int tg_bench_main(int argc, char **argv);

// tg_bench_result_ns sets |*out_ns| to the real time per iteration, in nanoseconds, that the last
// tg_bench_main measured for the benchmark |name|: the median when repetitions were asked for,
// the single run otherwise. Returns 1 on success, 0 when |name| did not run or failed.
int tg_bench_result_ns(const char *name, double *out_ns);

// tg_bench_result_cpu_ns is tg_bench_result_ns for the CPU time per iteration (of the process),
// which a busy machine disturbs less than the real time.
int tg_bench_result_cpu_ns(const char *name, double *out_ns);

// tg_bench_output_is_console returns 1 when the last tg_bench_main printed its report in the
// console format, so that a caller may append lines of its own to stdout; 0 for JSON or CSV.
int tg_bench_output_is_console(void);

#if defined(__cplusplus)
} // extern "C"
#endif

#endif // TLSGATE_TG_BENCH_H
