// tlsgate-bench: the micro benchmarks. Mints the PKI, builds tlsgate's TLS contexts, registers
// every benchmark, runs Google Benchmark with the command line given (try --help,
// --benchmark_filter=REGEX, --benchmark_repetitions=N), then prints the handshake floor.

#include <stdio.h>

#include "bench_micro.h"
#include "tg_bench.h"

int main(int argc, char **argv) {
    static struct tgb_world w;
    char err[512];
    if (!tgb_world_init(&w, err, sizeof(err))) {
        fprintf(stderr, "tlsgate-bench: %s\n", err);
        return 1;
    }
    int rc = 1;
    if (!tgb_register_tls(&w) || !tgb_register_policy(&w) || !tgb_register_crypto(&w) ||
        !tgb_register_srtp()) {
        fprintf(stderr, "tlsgate-bench: cannot set up the benchmarks\n");
    } else {
        rc = tg_bench_main(argc, argv);
        // After a JSON or CSV report on stdout, the summary goes to stderr.
        if (rc != 1)
            tgb_print_floor_summary(tg_bench_output_is_console() ? stdout : stderr);
    }
    tgb_world_cleanup(&w);
    return rc;
}
