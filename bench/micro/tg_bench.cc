// tg_bench.cc maps the C API of tg_bench.h onto Google Benchmark. It is the only C++ in the
// micro benchmarks: everything else is C.

#include "tg_bench.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

namespace {

benchmark::State &state_of(tg_bench_state *st) {
    return *reinterpret_cast<benchmark::State *>(st);
}

const benchmark::State &state_of(const tg_bench_state *st) {
    return *reinterpret_cast<const benchmark::State *>(st);
}

// A result kept for tg_bench_result_ns: a median outranks a single run.
struct result {
    double ns;     // real time
    double cpu_ns; // CPU time
    int rank;      // 1: one run (the last wins), 2: the median of repetitions
};

std::map<std::string, result> g_results;
bool g_failed = false;
bool g_console = true;

// to_ns converts |t|, in |run|'s unit, to nanoseconds.
double to_ns(const benchmark::BenchmarkReporter::Run &run, double t) {
    switch (run.time_unit) {
    case benchmark::kNanosecond:
        return t;
    case benchmark::kMicrosecond:
        return t * 1e3;
    case benchmark::kMillisecond:
        return t * 1e6;
    case benchmark::kSecond:
        return t * 1e9;
    }
    return t;
}

// recorder passes every report on to the display reporter chosen by --benchmark_format, and
// keeps each benchmark's time per iteration for tg_bench_result_ns.
class recorder : public benchmark::BenchmarkReporter {
  public:
    explicit recorder(std::unique_ptr<benchmark::BenchmarkReporter> inner)
        : inner_(std::move(inner)) {}

    bool ReportContext(const Context &context) override {
        // RunSpecifiedBenchmarks set our streams; the reporter we wrap must write to the same.
        inner_->SetOutputStream(&GetOutputStream());
        inner_->SetErrorStream(&GetErrorStream());
        return inner_->ReportContext(context);
    }

    void ReportRuns(const std::vector<Run> &runs) override {
        for (const Run &run : runs)
            keep(run);
        inner_->ReportRuns(runs);
    }

    void Finalize() override {
        inner_->Finalize();
    }

  private:
    static void keep(const Run &run) {
        std::string name = run.run_name.str();
        if (run.error_occurred) {
            g_failed = true;
            g_results.erase(name);
            return;
        }
        int rank = 1;
        if (run.run_type == Run::RT_Aggregate) {
            if (run.aggregate_name != "median" || run.aggregate_unit != benchmark::kTime)
                return;
            rank = 2;
        }
        double ns = to_ns(run, run.GetAdjustedRealTime());
        double cpu_ns = to_ns(run, run.GetAdjustedCPUTime());
        if (!std::isfinite(ns) || !std::isfinite(cpu_ns))
            return;
        auto it = g_results.find(name);
        if (it != g_results.end() && it->second.rank > rank)
            return;
        g_results[name] = result{ns, cpu_ns, rank};
    }

    std::unique_ptr<benchmark::BenchmarkReporter> inner_;
};

// flag_value returns the value of the last `--NAME=VALUE` in |argv|, or NULL.
const char *flag_value(int argc, char **argv, const char *name) {
    size_t len = std::strlen(name);
    const char *value = nullptr;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (std::strncmp(a, "--", 2) == 0 && std::strncmp(a + 2, name, len) == 0 &&
            a[2 + len] == '=')
            value = a + 3 + len;
    }
    return value;
}

// display_reporter builds the reporter for --benchmark_format (console, json or csv), as the
// library would for itself. NULL for an unknown format.
std::unique_ptr<benchmark::BenchmarkReporter> display_reporter(int argc, char **argv) {
    const char *format = flag_value(argc, argv, "benchmark_format");
    if (format == nullptr || std::strcmp(format, "console") == 0) {
        int opts = benchmark::ConsoleReporter::OO_None;
        const char *color = flag_value(argc, argv, "benchmark_color");
        const char *term = std::getenv("TERM");
        bool want_color =
            color == nullptr || std::strcmp(color, "auto") == 0
                ? isatty(STDOUT_FILENO) && term != nullptr && std::strcmp(term, "dumb") != 0
                : std::strcmp(color, "true") == 0 || std::strcmp(color, "yes") == 0;
        if (want_color)
            opts |= benchmark::ConsoleReporter::OO_Color;
        const char *tabular = flag_value(argc, argv, "benchmark_counters_tabular");
        if (tabular != nullptr && std::strcmp(tabular, "true") == 0)
            opts |= benchmark::ConsoleReporter::OO_Tabular;
        g_console = true;
        return std::make_unique<benchmark::ConsoleReporter>(
            static_cast<benchmark::ConsoleReporter::OutputOptions>(opts));
    }
    g_console = false;
    if (std::strcmp(format, "json") == 0)
        return std::make_unique<benchmark::JSONReporter>();
    if (std::strcmp(format, "csv") == 0) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        return std::make_unique<benchmark::CSVReporter>();
#pragma GCC diagnostic pop
    }
    return nullptr;
}

benchmark::TimeUnit time_unit(tg_bench_unit unit) {
    switch (unit) {
    case TG_BENCH_NS:
        return benchmark::kNanosecond;
    case TG_BENCH_US:
        return benchmark::kMicrosecond;
    case TG_BENCH_MS:
        return benchmark::kMillisecond;
    }
    return benchmark::kNanosecond;
}

} // namespace

extern "C" {

int tg_bench_register(const char *name, tg_bench_fn fn, void *arg) {
    return tg_bench_register_unit(name, fn, arg, TG_BENCH_NS);
}

int tg_bench_register_unit(const char *name, tg_bench_fn fn, void *arg, tg_bench_unit unit) {
    benchmark::internal::Benchmark *b = benchmark::RegisterBenchmark(
        name, [fn, arg](benchmark::State &s) { fn(reinterpret_cast<tg_bench_state *>(&s), arg); });
    if (b == nullptr)
        return 0;
    b->Unit(time_unit(unit));
    return 1;
}

int tg_bench_keep_running(tg_bench_state *st) {
    return state_of(st).KeepRunning() ? 1 : 0;
}

int64_t tg_bench_iterations(const tg_bench_state *st) {
    return static_cast<int64_t>(state_of(st).iterations());
}

void tg_bench_pause_timing(tg_bench_state *st) {
    state_of(st).PauseTiming();
}

void tg_bench_resume_timing(tg_bench_state *st) {
    state_of(st).ResumeTiming();
}

void tg_bench_set_bytes_processed(tg_bench_state *st, int64_t bytes) {
    state_of(st).SetBytesProcessed(bytes);
}

void tg_bench_set_items_processed(tg_bench_state *st, int64_t items) {
    state_of(st).SetItemsProcessed(items);
}

void tg_bench_counter(tg_bench_state *st, const char *name, double value) {
    state_of(st).counters[name] = benchmark::Counter(value);
}

void tg_bench_set_label(tg_bench_state *st, const char *label) {
    state_of(st).SetLabel(label);
}

void tg_bench_skip_with_error(tg_bench_state *st, const char *msg) {
    state_of(st).SkipWithError(msg);
}

int tg_bench_main(int argc, char **argv) {
    // Before Initialize, which takes the flags it knows out of |argv|.
    std::unique_ptr<benchmark::BenchmarkReporter> inner = display_reporter(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    if (inner == nullptr) {
        std::fprintf(stderr, "unknown --benchmark_format (console, json or csv)\n");
        benchmark::Shutdown();
        return 1;
    }
    g_results.clear();
    g_failed = false;
    recorder rec(std::move(inner));
    benchmark::RunSpecifiedBenchmarks(&rec);
    benchmark::Shutdown();
    return g_failed ? 2 : 0;
}

int tg_bench_result_ns(const char *name, double *out_ns) {
    auto it = g_results.find(name);
    if (it == g_results.end())
        return 0;
    *out_ns = it->second.ns;
    return 1;
}

int tg_bench_result_cpu_ns(const char *name, double *out_ns) {
    auto it = g_results.find(name);
    if (it == g_results.end())
        return 0;
    *out_ns = it->second.cpu_ns;
    return 1;
}

int tg_bench_output_is_console(void) {
    return g_console ? 1 : 0;
}

} // extern "C"
