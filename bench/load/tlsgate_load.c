// tlsgate-load: a mutual-TLS load generator (io_uring + BoringSSL) for tlsgate and its peers.
//
//   tlsgate-load --connect ADDR:PORT [--cert PEM --key PEM] [--ca PEM] [--sni NAME]
//                [--tls 1.2|1.3] --mode handshake|bulk|latency|idle [--concurrency N]
//                [--duration SECONDS] [--warmup SECONDS] [--threads N] [--json]
//     handshake: [--resume]              connect + mutual-TLS handshake + close, in N loops
//     bulk:      --write-size B [--sink] N connections streaming B-byte writes (echo checked)
//     latency:   --size B --rate R       open-loop requests of B bytes, echo of B bytes back
//     idle:      --hold SECONDS          N connections up, `established=N` on stderr, hold
//     sip-options: --rate R [--plain]    SIP OPTIONS sip:pbx@127.0.0.1 transactions, R/s open
//                                        loop, or closed loop (one outstanding per connection)
//                                        with --rate 0; non-200 answers are errors
//
// Results: a table on stdout, or with --json exactly one JSON object. Exit codes: 0 the run
// completed (errors are counted, not fatal), 1 every connection failed, 2 usage.
//
// The run itself is in load_engine.c; this file is the command line, the TLS context, the
// threads and the report.
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "load.h"

#define PATTERN_PERIOD 1048573u // a prime just under 1 MiB
#define MAX_MESSAGE (16u * 1024u * 1024u)
#define MAX_CONNECTIONS 1000000u
#define MAX_THREADS 64u

enum { EXIT_OK = 0, EXIT_ALL_FAILED = 1, EXIT_USAGE = 2 };

static volatile sig_atomic_t g_stop;

static const char *const k_mode_names[] = {"handshake", "bulk", "latency", "idle", "sip-options"};

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: tlsgate-load --connect ADDR:PORT [--cert PEM --key PEM] [--ca PEM] [--sni NAME]\n"
        "                    [--tls 1.2|1.3] --mode handshake|bulk|latency|idle|sip-options\n"
        "                    [--concurrency N] [--duration SECONDS] [--warmup SECONDS]\n"
        "                    [--threads N] [--json]\n"
        "  handshake: [--resume]             N loops of connect + handshake + close_notify\n"
        "  bulk:      --write-size B [--sink]  N connections streaming B-byte writes; the echo\n"
        "                                      is checked byte for byte unless --sink\n"
        "  latency:   --size B --rate R        R requests/s in total (open loop) over N\n"
        "                                      connections, B bytes each, echoed back\n"
        "  idle:      --hold SECONDS           N connections up, then held open\n"
        "  sip-options: --rate R [--plain]     SIP OPTIONS transactions (sip:pbx@127.0.0.1), R/s\n"
        "                                      open loop, or --rate 0: closed loop, one\n"
        "                                      outstanding per connection; --plain: TCP, no TLS\n"
        "  ADDR: IPv4 or [IPv6]. Defaults: --concurrency 1 --duration 5 --warmup 1\n"
        "  --write-size 16384 --size 1024 --rate 1000 --hold = --duration.\n"
        "exit: 0 run completed (errors reported), 1 every connection failed, 2 usage\n");
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tlsgate-load: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(stderr);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Parsers: text in, values out; 1 on success.

static int parse_u32(uint32_t *out, const char *text, uint32_t min, uint32_t max) {
    char *end;
    if (text[0] < '0' || text[0] > '9')
        return 0;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static int parse_seconds(double *out, const char *text, int allow_zero) {
    char *end;
    if ((text[0] < '0' || text[0] > '9') && text[0] != '.')
        return 0;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v > 1e6 || (!allow_zero && v == 0))
        return 0;
    *out = v;
    return 1;
}

// parse_addr parses "a.b.c.d:port" or "[v6]:port".
static int parse_addr(struct sockaddr_storage *out_ss, socklen_t *out_len, const char *text) {
    char host[128];
    const char *port_text;
    memset(out_ss, 0, sizeof(*out_ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= sizeof(host))
            return 0;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_text = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL || (size_t)(colon - text) >= sizeof(host))
            return 0;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port_text = colon + 1;
    }
    uint32_t port;
    if (!parse_u32(&port, port_text, 1, 65535))
        return 0;
    struct sockaddr_in *sin = (struct sockaddr_in *)out_ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out_ss;
    if (text[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *out_len = sizeof(*sin);
        return 1;
    }
    if (text[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *out_len = sizeof(*sin6);
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The command line.

struct cli {
    struct lg_opts o;
    const char *connect;
    const char *cert;
    const char *key;
    const char *ca;
    uint16_t tls_version; // 0: 1.2 and 1.3
    int have_mode;
    int have_hold;
    // Which mode-specific options were given, to refuse them with the wrong mode.
    int have_resume, have_write_size, have_sink, have_size, have_rate;
};

static int parse_cli(struct cli *cl, int argc, char **argv) {
    struct lg_opts *o = &cl->o;
    memset(cl, 0, sizeof(*cl));
    o->concurrency = 1;
    o->num_threads = 1;
    o->duration_s = 5;
    o->warmup_s = 1;
    o->write_size = 16384;
    o->req_size = 1024;
    o->rate = 1000;
    for (int i = 1; i < argc; i++) {
        char name_buf[64];
        const char *arg = argv[i];
        const char *val = NULL;
        const char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) == 0 && eq != NULL && (size_t)(eq - arg) < sizeof(name_buf)) {
            memcpy(name_buf, arg, (size_t)(eq - arg));
            name_buf[eq - arg] = '\0';
            arg = name_buf;
            val = eq + 1;
        }
        // Flags.
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(EXIT_OK);
        }
        int *flag = strcmp(arg, "--json") == 0     ? &o->json
                    : strcmp(arg, "--plain") == 0  ? &o->plain
                    : strcmp(arg, "--resume") == 0 ? &cl->have_resume
                    : strcmp(arg, "--sink") == 0   ? &cl->have_sink
                                                   : NULL;
        if (flag != NULL) {
            if (val != NULL)
                return usage_error("%s takes no value", arg);
            *flag = 1;
            continue;
        }
        // Options with a value.
        if (val == NULL) {
            if (i + 1 >= argc)
                return usage_error("%s: missing value or unknown option", arg);
            val = argv[++i];
        }
        if (strcmp(arg, "--connect") == 0) {
            cl->connect = val;
            if (!parse_addr(&o->addr, &o->addr_len, val))
                return usage_error("--connect %s: want IPv4:PORT or [IPv6]:PORT", val);
        } else if (strcmp(arg, "--cert") == 0) {
            cl->cert = val;
        } else if (strcmp(arg, "--key") == 0) {
            cl->key = val;
        } else if (strcmp(arg, "--ca") == 0) {
            cl->ca = val;
        } else if (strcmp(arg, "--sni") == 0) {
            o->sni = val;
        } else if (strcmp(arg, "--tls") == 0) {
            if (strcmp(val, "1.2") == 0)
                cl->tls_version = TLS1_2_VERSION;
            else if (strcmp(val, "1.3") == 0)
                cl->tls_version = TLS1_3_VERSION;
            else
                return usage_error("--tls %s: want 1.2 or 1.3", val);
        } else if (strcmp(arg, "--mode") == 0) {
            size_t m;
            for (m = 0; m < sizeof(k_mode_names) / sizeof(k_mode_names[0]); m++)
                if (strcmp(val, k_mode_names[m]) == 0)
                    break;
            if (m == sizeof(k_mode_names) / sizeof(k_mode_names[0]))
                return usage_error("--mode %s: want handshake, bulk, latency, idle or sip-options",
                                   val);
            o->mode = (enum lg_mode)m;
            cl->have_mode = 1;
        } else if (strcmp(arg, "--concurrency") == 0) {
            if (!parse_u32(&o->concurrency, val, 1, MAX_CONNECTIONS))
                return usage_error("--concurrency %s: want 1..%u", val, MAX_CONNECTIONS);
        } else if (strcmp(arg, "--threads") == 0) {
            if (!parse_u32(&o->num_threads, val, 1, MAX_THREADS))
                return usage_error("--threads %s: want 1..%u", val, MAX_THREADS);
        } else if (strcmp(arg, "--duration") == 0) {
            if (!parse_seconds(&o->duration_s, val, 0))
                return usage_error("--duration %s: want seconds > 0", val);
        } else if (strcmp(arg, "--warmup") == 0) {
            if (!parse_seconds(&o->warmup_s, val, 1))
                return usage_error("--warmup %s: want seconds >= 0", val);
        } else if (strcmp(arg, "--hold") == 0) {
            if (!parse_seconds(&o->hold_s, val, 1))
                return usage_error("--hold %s: want seconds >= 0", val);
            cl->have_hold = 1;
        } else if (strcmp(arg, "--write-size") == 0) {
            if (!parse_u32(&o->write_size, val, 1, MAX_MESSAGE))
                return usage_error("--write-size %s: want 1..%u", val, MAX_MESSAGE);
            cl->have_write_size = 1;
        } else if (strcmp(arg, "--size") == 0) {
            if (!parse_u32(&o->req_size, val, 1, MAX_MESSAGE))
                return usage_error("--size %s: want 1..%u", val, MAX_MESSAGE);
            cl->have_size = 1;
        } else if (strcmp(arg, "--rate") == 0) {
            char *end;
            errno = 0;
            o->rate = strtod(val, &end);
            if (errno != 0 || *end != '\0' || !isfinite(o->rate) || o->rate < 0 || o->rate > 1e8)
                return usage_error("--rate %s: want requests per second > 0", val);
            cl->have_rate = 1;
        } else {
            return usage_error("unknown option %s", arg);
        }
    }
    if (cl->connect == NULL)
        return usage_error("--connect is required");
    if (!cl->have_mode)
        return usage_error("--mode is required");
    if ((cl->cert == NULL) != (cl->key == NULL))
        return usage_error("--cert and --key go together");
    if (cl->have_resume && o->mode != LG_MODE_HANDSHAKE)
        return usage_error("--resume applies to --mode handshake only");
    if ((cl->have_write_size || cl->have_sink) && o->mode != LG_MODE_BULK)
        return usage_error("--write-size and --sink apply to --mode bulk only");
    if (cl->have_size && o->mode != LG_MODE_LATENCY)
        return usage_error("--size applies to --mode latency only");
    if (cl->have_rate && o->mode != LG_MODE_LATENCY && o->mode != LG_MODE_SIP)
        return usage_error("--rate applies to --mode latency and sip-options only");
    if (o->mode == LG_MODE_LATENCY && o->rate <= 0)
        return usage_error("--rate: latency mode wants requests per second > 0");
    if (o->plain && o->mode != LG_MODE_SIP)
        return usage_error("--plain applies to --mode sip-options only");
    if (cl->have_hold && o->mode != LG_MODE_IDLE)
        return usage_error("--hold applies to --mode idle only");
    o->resume = cl->have_resume;
    o->sink = cl->have_sink;
    if (!cl->have_hold)
        o->hold_s = o->duration_s;
    if (o->num_threads > o->concurrency)
        o->num_threads = o->concurrency;
    if (o->concurrency / o->num_threads >= (1u << 24))
        return usage_error("at most %u connections per thread", (1u << 24) - 1);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// TLS context and the byte stream.

static void print_ssl_error(const char *what, const char *path) {
    unsigned long e = ERR_get_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    fprintf(stderr, "tlsgate-load: %s %s: %s\n", what, path, reason ? reason : "failed");
    ERR_clear_error();
}

static SSL_CTX *make_ctx(const struct cli *cl) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, cl->tls_version ? cl->tls_version : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, cl->tls_version ? cl->tls_version : TLS1_3_VERSION);
    if (cl->cert != NULL) {
        if (!SSL_CTX_use_certificate_chain_file(ctx, cl->cert)) {
            print_ssl_error("--cert", cl->cert);
            goto fail;
        }
        if (!SSL_CTX_use_PrivateKey_file(ctx, cl->key, SSL_FILETYPE_PEM) ||
            !SSL_CTX_check_private_key(ctx)) {
            print_ssl_error("--key", cl->key);
            goto fail;
        }
    }
    if (cl->ca != NULL) {
        if (!SSL_CTX_load_verify_locations(ctx, cl->ca, NULL)) {
            print_ssl_error("--ca", cl->ca);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (cl->o.resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, lg_engine_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

// make_pattern fills the stream table: PATTERN_PERIOD bytes of xorshift64 output, followed by
// its own beginning again so that any write or read of up to |extra| bytes is contiguous.
static uint8_t *make_pattern(uint32_t extra) {
    size_t len = (size_t)PATTERN_PERIOD + extra;
    uint8_t *p = malloc(len);
    if (p == NULL)
        return NULL;
    uint64_t x = 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < PATTERN_PERIOD; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 32);
    }
    for (size_t i = PATTERN_PERIOD; i < len; i++)
        p[i] = p[i - PATTERN_PERIOD];
    return p;
}

// ---------------------------------------------------------------------------------------------
// Threads and the report.

struct thread_arg {
    const struct lg_opts *o;
    struct lg_shared *sh;
    uint32_t first_id;
    uint32_t num_conns;
    double rate;
    int ok;
    pthread_t thread;
    struct lg_stats stats;
};

static void *thread_main(void *p) {
    struct thread_arg *a = p;
    a->ok = lg_engine_run(a->o, a->sh, a->first_id, a->num_conns, a->rate, &a->stats);
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

struct report {
    uint64_t count, errors, resumed, established;
    double duration_s, handshakes_per_s, sent_per_s, received_per_s;
    double p50, p90, p99, p999, max;  // µs
    double lag_p50, lag_p99, lag_max; // µs: the generator's own lateness in sending
};

static struct report summarize(const struct lg_opts *o, struct thread_arg *args, uint32_t n,
                               struct lg_hist *hist, struct lg_hist *lag) {
    struct report r;
    memset(&r, 0, sizeof(r));
    for (uint32_t t = 0; t < n; t++) {
        const struct lg_stats *s = &args[t].stats;
        double secs = (double)s->window_ns / 1e9;
        r.count += s->count;
        r.errors += s->errors;
        r.resumed += s->resumed;
        r.established += s->established;
        if (secs > r.duration_s)
            r.duration_s = secs;
        if (secs > 0) {
            // Each engine measured its own window: rates add up.
            r.handshakes_per_s += (double)s->count / secs;
            r.sent_per_s += (double)s->bytes_sent / secs;
            r.received_per_s += (double)s->bytes_received / secs;
        }
        lg_hist_merge(hist, &s->hist);
        lg_hist_merge(lag, &s->lag);
    }
    if (o->mode == LG_MODE_IDLE)
        r.count = r.established;
    r.p50 = (double)lg_hist_percentile(hist, 50) / 1e3;
    r.p90 = (double)lg_hist_percentile(hist, 90) / 1e3;
    r.p99 = (double)lg_hist_percentile(hist, 99) / 1e3;
    r.p999 = (double)lg_hist_percentile(hist, 99.9) / 1e3;
    r.max = (double)hist->max / 1e3;
    r.lag_p50 = (double)lg_hist_percentile(lag, 50) / 1e3;
    r.lag_p99 = (double)lg_hist_percentile(lag, 99) / 1e3;
    r.lag_max = (double)lag->max / 1e3;
    return r;
}

static void print_json(const struct lg_opts *o, const struct report *r) {
    printf("{\"mode\":\"%s\",\"connections\":%u,\"duration_s\":%.3f,\"count\":%llu,"
           "\"errors\":%llu",
           k_mode_names[o->mode], o->concurrency, r->duration_s, (unsigned long long)r->count,
           (unsigned long long)r->errors);
    switch (o->mode) {
    case LG_MODE_HANDSHAKE:
        printf(",\"handshakes_per_s\":%.1f,\"resumed\":%llu", r->handshakes_per_s,
               (unsigned long long)r->resumed);
        break;
    case LG_MODE_BULK:
        printf(",\"bytes_per_s_sent\":%.0f,\"bytes_per_s_received\":%.0f", r->sent_per_s,
               r->received_per_s);
        break;
    case LG_MODE_LATENCY:
    case LG_MODE_SIP:
        if (o->mode == LG_MODE_SIP)
            printf(",\"transactions_per_s\":%.1f,\"rate\":%.1f,\"plain\":%s",
                   r->duration_s > 0 ? (double)r->count / r->duration_s : 0.0, o->rate,
                   o->plain ? "true" : "false");
        printf(",\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
               r->p50, r->p90, r->p99, r->p999, r->max);
        break;
    case LG_MODE_IDLE:
        printf(",\"established\":%llu", (unsigned long long)r->established);
        break;
    }
    printf("}\n");
}

static void print_table(const struct lg_opts *o, const struct report *r) {
    printf("%-22s %s\n", "mode", k_mode_names[o->mode]);
    printf("%-22s %u\n", "connections", o->concurrency);
    printf("%-22s %.3f\n", o->mode == LG_MODE_IDLE ? "held (s)" : "duration (s)", r->duration_s);
    switch (o->mode) {
    case LG_MODE_HANDSHAKE:
        printf("%-22s %llu\n", "handshakes", (unsigned long long)r->count);
        printf("%-22s %.1f\n", "handshakes/s", r->handshakes_per_s);
        printf("%-22s %llu\n", "resumed", (unsigned long long)r->resumed);
        printf("%-22s %llu\n", "full", (unsigned long long)(r->count - r->resumed));
        break;
    case LG_MODE_BULK:
        printf("%-22s %llu x %u bytes\n", "writes", (unsigned long long)r->count, o->write_size);
        printf("%-22s %.1f MB/s\n", "sent", r->sent_per_s / 1e6);
        printf("%-22s %.1f MB/s%s\n", "received", r->received_per_s / 1e6,
               o->sink ? "" : " (echo, checked)");
        break;
    case LG_MODE_LATENCY:
    case LG_MODE_SIP:
        printf("%-22s %llu (%.1f/s)\n", o->mode == LG_MODE_SIP ? "transactions" : "responses",
               (unsigned long long)r->count,
               r->duration_s > 0 ? (double)r->count / r->duration_s : 0.0);
        printf("%-22s %.1f\n", "p50 (us)", r->p50);
        printf("%-22s %.1f\n", "p90 (us)", r->p90);
        printf("%-22s %.1f\n", "p99 (us)", r->p99);
        printf("%-22s %.1f\n", "p99.9 (us)", r->p999);
        printf("%-22s %.1f\n", "max (us)", r->max);
        printf("%-22s p50 %.1f  p99 %.1f  max %.1f\n", "send lag (us)", r->lag_p50, r->lag_p99,
               r->lag_max);
        break;
    case LG_MODE_IDLE:
        printf("%-22s %llu\n", "established", (unsigned long long)r->established);
        break;
    }
    printf("%-22s %llu\n", "errors", (unsigned long long)r->errors);
}

int main(int argc, char **argv) {
    struct cli cl;
    if (!parse_cli(&cl, argc, argv))
        return EXIT_USAGE;
    struct lg_opts *o = &cl.o;
    o->ctx = make_ctx(&cl);
    if (o->ctx == NULL)
        return EXIT_USAGE;
    uint32_t extra = 65536;
    if (o->write_size > extra)
        extra = o->write_size;
    if (o->req_size > extra)
        extra = o->req_size;
    uint8_t *pattern = make_pattern(extra);
    struct thread_arg *args = calloc(o->num_threads, sizeof(*args));
    struct lg_hist *hist = calloc(2, sizeof(*hist)); // latencies, send lag
    if (pattern == NULL || args == NULL || hist == NULL) {
        fprintf(stderr, "tlsgate-load: out of memory\n");
        SSL_CTX_free(o->ctx);
        free(pattern);
        free(args);
        free(hist);
        return EXIT_ALL_FAILED;
    }
    o->pattern = pattern;
    o->pattern_period = PATTERN_PERIOD;

    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; // no SA_RESTART: a wait returns EINTR
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct lg_shared sh = {.stop = &g_stop};
    uint32_t first = 0;
    for (uint32_t t = 0; t < o->num_threads; t++) {
        struct thread_arg *a = &args[t];
        a->o = o;
        a->sh = &sh;
        a->first_id = first;
        a->num_conns = o->concurrency / o->num_threads + (t < o->concurrency % o->num_threads);
        a->rate = o->rate * a->num_conns / o->concurrency;
        first += a->num_conns;
    }
    int ok = 1;
    if (o->num_threads == 1) {
        thread_main(&args[0]);
    } else {
        uint32_t started = 0;
        for (; started < o->num_threads; started++) {
            if (pthread_create(&args[started].thread, NULL, thread_main, &args[started]) != 0) {
                fprintf(stderr, "tlsgate-load: pthread_create failed\n");
                g_stop = 1;
                ok = 0;
                break;
            }
        }
        for (uint32_t t = 0; t < started; t++)
            pthread_join(args[t].thread, NULL);
    }
    for (uint32_t t = 0; t < o->num_threads; t++)
        ok = ok && args[t].ok;

    struct report r = summarize(o, args, o->num_threads, &hist[0], &hist[1]);
    if (o->json)
        print_json(o, &r);
    else
        print_table(o, &r);
    fflush(stdout);

    SSL_CTX_free(o->ctx);
    free(pattern);
    free(args);
    free(hist);
    if (!ok || r.established == 0)
        return EXIT_ALL_FAILED;
    return EXIT_OK;
}
