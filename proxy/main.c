// tlsgate: command line, startup, signals and shutdown (the control thread).
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "tlsgate/admin.h"
#include "tlsgate/certtool.h"
#include "tlsgate/config.h"
#include "tlsgate/control.h"
#include "tlsgate/kfeat.h"
#include "tlsgate/log.h"
#include "tlsgate/metrics.h"
#include "tlsgate/policy.h"
#include "tlsgate/resolver.h"
#include "tlsgate/signer.h"
#include "tlsgate/ticketkeys.h"
#include "tlsgate/tls.h"
#include "tlsgate/upstream.h"
#include "tlsgate/verify.h"
#include "tlsgate/version.h"
#include "tlsgate/worker.h"

enum { EXIT_OK = 0, EXIT_POLICY = 1, EXIT_USAGE = 2 };

#ifdef TG_HAVE_JEMALLOC
// jemalloc gives freed pages back to the kernel from a background thread (after its default
// 10 s decay), so memory a burst or a flood took is returned once it is over even when the
// worker that freed it goes idle. MALLOC_CONF in the environment still overrides this.
const char *malloc_conf = "background_thread:true";
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: tlsgate run -c FILE [--allow-noncompliant-cert]   run the proxy\n"
               "       tlsgate -c FILE                                    same as run\n"
               "       tlsgate check -c FILE                              validate config and "
               "certificates\n"
               "       tlsgate csr --fqdn NAME [--key-bits 2048|3072|4096 | --ec] --key-out FILE "
               "--csr-out FILE [--force] [--allow-weak]\n"
               "                                                          new key and CSR\n"
               "       tlsgate cert-check --cert FILE [--key FILE] [--fqdn NAME] [--ca FILE] "
               "[--json]\n"
               "                                                          check a certificate\n"
               "       tlsgate ticket-keys --out FILE [--keys N] [--force]  new session ticket "
               "key file\n"
               "       tlsgate version\n"
               "exit codes of check: 0 fine (warnings printed), 1 certificate or policy "
               "failure, 2 syntax or usage error\n");
}

struct options {
    const char *command;
    const char *config;
    int allow_noncompliant;
};

static int parse_args(int argc, char **argv, struct options *o) {
    memset(o, 0, sizeof(*o));
    int i = 1;
    if (i < argc && argv[i][0] != '-')
        o->command = argv[i++];
    else
        o->command = "run";
    for (; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            o->config = argv[++i];
        } else if (strcmp(argv[i], "--allow-noncompliant-cert") == 0) {
            o->allow_noncompliant = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            o->command = "help";
        } else {
            fprintf(stderr, "tlsgate: unknown argument '%s'\n", argv[i]);
            return 0;
        }
    }
    return 1;
}

// check_own_certificate prints one line per rule; returns the number of FAILs.
static int check_own_certificate(const struct tg_config *cfg, const struct tg_tls *tls, int print) {
    const struct tg_rule_result *res = tls->own_rules; // judged once, by tg_tls_init
    size_t n = tls->num_own_rules;
    int fails = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].status == TG_RULE_FAIL)
            fails++;
        if (print) {
            printf("%-4s %-18s %s\n", tg_rule_status_name(res[i].status), res[i].rule,
                   res[i].detail);
        } else if (res[i].status != TG_RULE_PASS) {
            tg_log(res[i].status == TG_RULE_FAIL ? TG_LOG_ERROR : TG_LOG_WARN, "cert_rule",
                   "cert=%s rule=%s result=%s detail=\"%s\"", cfg->cert, res[i].rule,
                   tg_rule_status_name(res[i].status), res[i].detail);
        }
    }
    return fails;
}

// check_user looks up `[global] user` (when set), so that `check` refuses what `run` would and
// both name the line: 0 with `FILE:LINE: global.user: why` in |err| when there is no such user.
// A user with uid 0 drops nothing: `check` says so on stderr; `run` logs user_root
// (drop_privileges).
static int check_user(const struct tg_config *cfg, int print, char *err, size_t err_len) {
    if (cfg->user[0] == '\0')
        return 1;
    errno = 0;
    const struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL) {
        int e = errno;
        if (e == 0 || e == ENOENT || e == ESRCH || e == EBADF || e == EPERM)
            return tg_set_why(err, err_len, "%s:%d: global.user: no such user '%s' on this system",
                              cfg->path, cfg->user_line, cfg->user);
        return tg_set_why(err, err_len, "%s:%d: global.user: cannot look up user '%s': %s",
                          cfg->path, cfg->user_line, cfg->user, strerror(e));
    }
    if (pw->pw_uid == 0 && print)
        fprintf(stderr,
                "%s:%d: global.user: warning: '%s' is uid 0: tlsgate keeps running as root "
                "(no privileges are dropped)\n",
                cfg->path, cfg->user_line, cfg->user);
    return 1;
}

// load prepares config, the connect targets' addresses (|*out_resolver|) and TLS; returns an
// exit code (EXIT_OK on success). With |signer|, the pool that signs with our key is started
// (`[tls] signers`) and the contexts use it.
static int load(const struct options *o, struct tg_config *cfg, struct tg_tls *tls,
                struct tg_resolver **out_resolver, int print, struct tg_signer **signer) {
    char err[1024];
    if (o->config == NULL) {
        fprintf(stderr, "tlsgate: -c FILE is required\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!tg_config_load(cfg, o->config, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return EXIT_USAGE;
    }
    tg_log_set_level(cfg->log_level);
    if (!check_user(cfg, print, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return EXIT_POLICY;
    }
    if (cfg->admin_enabled && !tg_admin_check_config(cfg, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err); // the admin token file: missing, unsafe or malformed
        return EXIT_POLICY;
    }
    *out_resolver = tg_resolver_new(cfg, NULL, err, sizeof(err));
    if (*out_resolver == NULL ||
        !tg_resolver_initial(*out_resolver, print ? stderr : NULL, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return EXIT_POLICY;
    }
    if (cfg->keyd[0] != '\0' && cfg->signers == 0) {
        fprintf(stderr,
                "%s: tls.key = keyd:%s needs tls.signers >= 1 (a signature through keyd must not "
                "wait on the I/O loop)\n",
                cfg->path, cfg->keyd);
        return EXIT_POLICY;
    }
    if (signer != NULL && cfg->signers > 0) {
        *signer = tg_signer_new(cfg->signers, 4096);
        if (*signer == NULL) {
            fprintf(stderr, "%s: tls.signers: cannot start %u signer threads\n", cfg->path,
                    cfg->signers);
            return EXIT_POLICY;
        }
    }
    if (!tg_tls_init(tls, cfg, tg_verify_peer, signer != NULL ? *signer : NULL, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return EXIT_POLICY;
    }
    int fails = check_own_certificate(cfg, tls, print);
    if (fails > 0) {
        if (print || !o->allow_noncompliant) {
            fprintf(stderr, "%s: %d certificate rule%s failed%s\n", cfg->cert, fails,
                    fails == 1 ? "" : "s",
                    print ? "" : " (--allow-noncompliant-cert starts anyway)");
            return EXIT_POLICY;
        }
        TG_WARN("noncompliant_certificate", "cert=%s failed_rules=%d override=yes", cfg->cert,
                fails);
    }
    return EXIT_OK;
}

static int cmd_check(const struct options *o) {
    struct tg_config cfg;
    struct tg_tls tls;
    tg_config_init(&cfg);
    memset(&tls, 0, sizeof(tls));
    struct tg_resolver *resolver = NULL;
    int rc = load(o, &cfg, &tls, &resolver, 1, NULL);
    if (rc == EXIT_OK) {
        printf("ok: %s: %zu listener%s, %zu trusted CA%s, %zu peer name%s", cfg.path,
               cfg.num_listeners, cfg.num_listeners == 1 ? "" : "s", tls.num_cas,
               tls.num_cas == 1 ? "" : "s", cfg.num_peer_names, cfg.num_peer_names == 1 ? "" : "s");
        if (tls.num_ticket_keys > 0)
            printf(", %zu ticket key%s", tls.num_ticket_keys, tls.num_ticket_keys == 1 ? "" : "s");
        printf("\n");
    }
    tg_tls_cleanup(&tls);
    tg_resolver_free(resolver);
    tg_config_cleanup(&cfg);
    return rc;
}

// raise_fd_limit lifts the soft descriptor limit to the hard one and warns when that is under
// what |cfg| may use at its busiest: two per connection, four per media stream (a stream per
// RTP port pair of [media] port_range, at most), and the reserve.
static void raise_fd_limit(const struct tg_config *cfg) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    uint64_t streams =
        cfg->media_enabled ? ((uint64_t)cfg->media_port_max - cfg->media_port_min + 1) / 4 : 0;
    uint64_t need = 2ull * cfg->max_connections + 4 * streams + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        TG_WARN("fd_limit", "limit=%llu needed=%llu max_connections=%u media_streams=%llu",
                (unsigned long long)rl.rlim_cur, (unsigned long long)need, cfg->max_connections,
                (unsigned long long)streams);
}

static int drop_privileges(const char *user) {
    if (user[0] == '\0')
        return 1;
    if (geteuid() != 0) {
        TG_WARN("user_ignored", "user=%s reason=\"not running as root\"", user);
        return 1;
    }
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        TG_ERROR("user_unknown", "user=%s", user);
        return 0;
    }
    if (pw->pw_uid == 0) {
        TG_WARN("user_root",
                "user=%s uid=0 reason=\"the configured user is root: no privileges "
                "are dropped, tlsgate keeps running as root\"",
                user);
        return 1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        TG_ERROR("drop_privileges_failed", "user=%s error=\"%s\"", user, strerror(errno));
        return 0;
    }
    TG_INFO("privileges_dropped", "user=%s uid=%u", user, (unsigned)pw->pw_uid);
    return 1;
}

// The publisher of new generations: every started worker gets the contexts.
struct publish_target {
    struct tg_worker **workers;
    unsigned num;
};

static int publish_to_workers(void *arg, SSL_CTX *server, SSL_CTX *client) {
    const struct publish_target *t = arg;
    int ok = 1;
    for (unsigned w = 0; w < t->num; w++)
        ok &= tg_worker_set_contexts(t->workers[w], server, client);
    return ok;
}

// The resolver's new snapshots go the same way, to every started worker.
static void publish_dns(void *arg, struct tg_dns_snapshot *snap) {
    const struct publish_target *t = arg;
    for (unsigned w = 0; w < t->num; w++)
        tg_worker_set_dns(t->workers[w], snap);
}

// no_core_dumps keeps the private key out of core files: no dump is written (RLIMIT_CORE 0)
// and the process is not dumpable (nor ptrace-attachable by its own user) from before the key
// is read until it exits.
static void no_core_dumps(void) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static int cmd_run(const struct options *o) {
    struct tg_config cfg;
    tg_config_init(&cfg);
    no_core_dumps();
    // The first generation; the control owns it from here on and replaces it on reload.
    struct tg_tls *tls = calloc(1, sizeof(*tls));
    struct tg_signer *signer = NULL;
    struct tg_resolver *resolver = NULL;
    int rc = tls != NULL ? load(o, &cfg, tls, &resolver, 0, &signer) : EXIT_POLICY;
    struct tg_control *control =
        rc == EXIT_OK ? tg_control_new(&cfg, tls, o->allow_noncompliant) : NULL;
    if (control == NULL) {
        if (tls != NULL)
            tg_tls_cleanup(tls);
        free(tls);
        tg_signer_free(signer);
        tg_resolver_free(resolver);
        tg_config_cleanup(&cfg);
        return rc != EXIT_OK ? rc : EXIT_POLICY;
    }
    char err[512];
    unsigned num_workers = cfg.workers;
    if (num_workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        num_workers = n > 0 ? (unsigned)n : 1;
    }
    uint32_t per_worker = (cfg.max_connections + num_workers - 1) / num_workers;
    raise_fd_limit(&cfg);

    const char **names = calloc(cfg.num_listeners, sizeof(char *));
    const char **kinds = calloc(cfg.num_listeners, sizeof(char *));
    for (size_t l = 0; l < cfg.num_listeners; l++) {
        names[l] = cfg.listeners[l].name;
        kinds[l] = cfg.listeners[l].direction == TG_INBOUND ? "inbound" : "outbound";
    }
    // What the kernel offers is probed once, shown once, and kept for /metrics; nothing on
    // the data path depends on it yet (docs/PERFORMANCE.md, "Small records and bulk").
    static struct tg_kfeats kfeats;
    tg_kfeat_probe(&kfeats);
    TG_INFO("kernel_features", "ktls=%u send_zc=%u so_zerocopy=%u used=none",
            kfeats.has[TG_KFEAT_KTLS], kfeats.has[TG_KFEAT_SEND_ZC],
            kfeats.has[TG_KFEAT_SO_ZEROCOPY]);
    struct tg_metrics *metrics = tg_metrics_new(num_workers, cfg.num_listeners, names, kinds);
    if (metrics != NULL) {
        metrics->kfeats = &kfeats;
        tg_upstream_init_health(metrics, &cfg);
        metrics->media_enabled = cfg.media_enabled;
        if (signer != NULL)
            metrics->signer = tg_signer_stats(signer);
    }
    struct tg_peers *peers = tg_peers_new(num_workers);
    struct tg_guard *guard = tg_guard_new(&cfg);
    struct tg_runtime rt = {.cfg = &cfg,
                            .tls = tls,
                            .metrics = metrics,
                            .peers = peers,
                            .guard = guard,
                            .dns = tg_resolver_get1(resolver),
                            .num_workers = num_workers};
    if (cfg.media_enabled) { // which worker owns each call
        uint32_t share = cfg.media_max_calls / num_workers;
        rt.calldir = tg_calldir_new(num_workers, share > 0 ? share : 1);
    }
    // The flow-token key of mode = sip: one per process, shared by every worker.
    RAND_bytes(rt.sip_key, sizeof(rt.sip_key));
    struct tg_worker **workers = calloc(num_workers, sizeof(*workers));
    int *fds = malloc(num_workers * cfg.num_listeners * sizeof(int));
    struct tg_admin *admin = NULL;
    _Atomic int draining = 0;
    struct tg_admin_info admin_info = {.cfg = &cfg,
                                       .metrics = metrics,
                                       .num_workers = num_workers,
                                       .draining = &draining,
                                       .started = (long long)time(NULL),
                                       .control = control,
                                       .peers = peers,
                                       .resolver = resolver};
    unsigned started = 0;
    rc = EXIT_POLICY;
    // Signals are taken by signalfd on this thread. They are blocked before any other thread
    // (admin, workers) exists, so every thread inherits the mask and none can die of them.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (metrics == NULL || peers == NULL || guard == NULL || workers == NULL || fds == NULL ||
        (cfg.media_enabled && rt.calldir == NULL) || names == NULL || kinds == NULL) {
        TG_ERROR("startup_failed", "reason=\"out of memory\"");
        goto out;
    }

    // Every worker's sockets are bound before any privilege is dropped.
    for (size_t i = 0; i < num_workers * cfg.num_listeners; i++)
        fds[i] = -1;
    // One owner per address: SO_REUSEPORT would let us share a port another process (another
    // tlsgate) holds, each taking part of the connections. Probe each address without it first.
    for (size_t l = 0; l < cfg.num_listeners; l++) {
        if (!tg_listen_probe(&cfg.listeners[l].listen, err, sizeof(err))) {
            TG_ERROR("listen_failed", "listener=%s reason=\"%s\"", cfg.listeners[l].name, err);
            goto out;
        }
    }
    for (unsigned w = 0; w < num_workers; w++) {
        for (size_t l = 0; l < cfg.num_listeners; l++) {
            int fd = tg_listen_open(&cfg.listeners[l].listen, err, sizeof(err));
            if (fd < 0) {
                TG_ERROR("listen_failed", "listener=%s reason=\"%s\"", cfg.listeners[l].name, err);
                goto out;
            }
            fds[w * cfg.num_listeners + l] = fd;
        }
    }
    if (cfg.admin_enabled) {
        admin = tg_admin_start(&admin_info, err, sizeof(err));
        if (admin == NULL) {
            TG_ERROR("admin_failed", "reason=\"%s\"", err);
            goto out;
        }
    }
    if (!drop_privileges(cfg.user))
        goto out;

    for (unsigned w = 0; w < num_workers; w++) {
        workers[w] =
            tg_worker_start(&rt, w, &fds[w * cfg.num_listeners], per_worker, err, sizeof(err));
        for (size_t l = 0; l < cfg.num_listeners; l++)
            fds[w * cfg.num_listeners + l] = -1; // owned by the worker now, or closed
        if (workers[w] == NULL) {
            TG_ERROR("worker_failed", "worker=%u reason=\"%s\"", w, err);
            goto stop;
        }
        started++;
    }
    struct publish_target publish = {.workers = workers, .num = started};
    tg_control_set_publisher(control, publish_to_workers, &publish);
    if (!tg_resolver_start(resolver, metrics, publish_dns, &publish, err, sizeof(err))) {
        TG_ERROR("resolver_failed", "reason=\"%s\"", err);
        goto stop;
    }
    for (size_t l = 0; l < cfg.num_listeners; l++) {
        char listen[80], target[80];
        const struct tg_listener_conf *lc = &cfg.listeners[l];
        tg_target_format(&lc->listen, listen, sizeof(listen));
        tg_target_format(&lc->targets[0], target, sizeof(target));
        TG_INFO("listening", "listener=%s kind=%s listen=%s target=%s%s mode=%s", lc->name,
                kinds[l], listen, target, lc->num_targets > 1 ? ",..." : "",
                lc->mode == TG_MODE_SIP ? "sip" : "tcp");
    }
    if (admin != NULL) {
        char where[80];
        tg_target_format(&cfg.admin_listen, where, sizeof(where));
        TG_INFO("admin_listening", "listen=http://%s token=%s allow=%zu", where,
                cfg.admin_token_file[0] != '\0' ? "yes" : "no", cfg.num_admin_allow);
    }
    TG_INFO("started", "version=%s workers=%u max_connections=%u pid=%d", TLSGATE_VERSION,
            num_workers, cfg.max_connections, (int)getpid());

    tg_control_tick(control);
    unsigned idle_s = 0;
    for (;;) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int pr = poll(&pfd, 1, 1000);
        tg_log_flush(); // summaries of what this thread's log budget suppressed
        if (pr == 0 || (pr < 0 && errno == EINTR)) {
            if (++idle_s >= 60) {
                idle_s = 0;
                tg_control_tick(control); // certificate expiry warnings
            }
            continue;
        }
        struct signalfd_siginfo si;
        ssize_t r = read(sfd, &si, sizeof(si));
        if (r != (ssize_t)sizeof(si)) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        if (si.ssi_signo == SIGHUP) {
            tg_control_reload(control, "SIGHUP", NULL, 0);
            continue;
        }
        TG_INFO("shutdown", "signal=%s drain_timeout_ms=%u",
                si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", cfg.drain_timeout_ms);
        break;
    }
    rc = EXIT_OK;
stop:
    atomic_store(&draining, 1);
    tg_control_set_publisher(control, NULL, NULL); // waits for a reload in progress
    for (unsigned w = 0; w < started; w++)
        tg_worker_stop(workers[w]);
    // While the workers drain: a refresh in progress may take a query's time-out; the workers
    // it publishes to are freed only once joined.
    tg_resolver_stop(resolver);
    for (unsigned w = 0; w < started; w++)
        tg_worker_join(workers[w]);
    if (rc == EXIT_OK)
        TG_INFO("stopped", "workers=%u", started);
out:
    if (sfd >= 0)
        close(sfd);
    tg_admin_stop(admin);
    if (fds != NULL)
        for (size_t i = 0; i < num_workers * cfg.num_listeners; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    free(fds);
    free(workers);
    tg_metrics_free(metrics);
    tg_peers_free(peers);
    tg_guard_free(guard);
    tg_calldir_free(rt.calldir);
    free(names);
    free(kinds);
    tg_control_free(control);
    tg_signer_free(signer); // after every context that signs through it
    tg_dns_snapshot_free(rt.dns);
    tg_resolver_free(resolver);
    tg_config_cleanup(&cfg);
    return rc;
}

int main(int argc, char **argv) {
    struct options o;
    if (argc >= 2 && strcmp(argv[1], "csr") == 0)
        return tg_certtool_csr_main(argc - 2, argv + 2, stdout, stderr);
    if (argc >= 2 && strcmp(argv[1], "cert-check") == 0)
        return tg_certtool_cert_check_main(argc - 2, argv + 2, stdout, stderr);
    if (argc >= 2 && strcmp(argv[1], "ticket-keys") == 0)
        return tg_ticket_keys_main(argc - 2, argv + 2, stdout, stderr);
    if (!parse_args(argc, argv, &o)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(o.command, "version") == 0) {
        printf("tlsgate %s (%s)\n", TLSGATE_VERSION, OpenSSL_version(OPENSSL_VERSION));
        return EXIT_OK;
    }
    if (strcmp(o.command, "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(o.command, "check") == 0)
        return cmd_check(&o);
    if (strcmp(o.command, "run") == 0)
        return cmd_run(&o);
    fprintf(stderr, "tlsgate: unknown command '%s'\n", o.command);
    usage(stderr);
    return EXIT_USAGE;
}
