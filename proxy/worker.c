// One worker: a thread with its loop (loop.c), its SO_REUSEPORT listeners, its connections
// (conn.c) and, on worker 0, the OPTIONS probes. This file only orchestrates: setup, accept,
// the tick, new generations from the control thread, draining and teardown.
#include "tlsgate/worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsgate/conn.h"
#include "tlsgate/log.h"
#include "tlsgate/loop.h"
#include "tlsgate/mediasig.h"
#include "tlsgate/probes.h"
#include "tlsgate/sipglue.h"

#define TICK_MS 100

// A generation's contexts on their way to a worker, each with a reference for the worker.
struct ctx_pair {
    SSL_CTX *server, *client;
};

static void ctx_pair_free(struct ctx_pair *p) {
    if (p == NULL)
        return;
    SSL_CTX_free(p->server);
    SSL_CTX_free(p->client);
    free(p);
}

// accept_pause is a listener whose accepting stopped for lack of descriptors (EMFILE, ENFILE)
// or memory: re-armed after a back-off that doubles while the condition lasts, not at once
// (the kernel would fail it again at once: a busy loop and a log line per attempt).
struct accept_pause {
    uint32_t until;     // ms: when accepting is tried again (0: not paused)
    uint32_t backoff;   // ms: the current back-off
    uint32_t since;     // ms: start of the episode
    uint32_t failures;  // in this episode
    int error;          // the errno that started it
    uint8_t armed;      // single-shot accepts in flight on the listener (ACCEPT_DEPTH at most)
    uint8_t cancelling; // ... and we cancelled them to pause
};

// ACCEPT_DEPTH bounds the accepts in flight per listener and worker. Accepts are single-shot on
// purpose: a multishot accept drains the whole backlog into descriptors inside the kernel,
// before admission (guard.c) sees one, so a burst of connections overshoots fd_reserve and the
// process meets EMFILE. With single-shot accepts, at most ACCEPT_DEPTH x workers x listeners
// descriptors exist that admission has not counted; fd_reserve covers them.
#define ACCEPT_DEPTH 4

#define ACCEPT_BACKOFF_MIN_MS 50
#define ACCEPT_BACKOFF_MAX_MS 2000

struct tg_worker {
    const struct tg_runtime *rt;
    unsigned id;
    uint32_t max_conns;
    pthread_t thread;
    sem_t ready;
    int init_ok;
    char *init_err;
    size_t init_err_len;

    struct tg_loop loop;
    int loop_ok;
    struct tg_conns conns;
    int conns_ok;
    struct tg_mediasig *msig; // [media] configured: calls and media sessions

    int *listen_fds; // one per listener; -1 once closed
    size_t num_listeners;
    unsigned accepts_armed;
    struct accept_pause *pause; // one per listener

    _Atomic(struct ctx_pair *) mailbox; // a newer generation, handed over by the control thread
    struct tg_dns_view dns;             // connect targets' addresses, from the resolver thread
    int dns_ok;
    _Atomic int stop;
    int draining;
    uint32_t drain_deadline;
};

// ---------------------------------------------------------------------------------------------
// Listeners (kind TG_KIND_LISTENER: the slot is the listener index).

// arm_accept fills |listener|'s accepts in flight up to ACCEPT_DEPTH.
static void arm_accept(struct tg_worker *w, uint32_t listener) {
    struct accept_pause *p = &w->pause[listener];
    while (p->armed < ACCEPT_DEPTH) {
        struct io_uring_sqe *sqe = tg_loop_sqe(&w->loop);
        io_uring_prep_accept(sqe, w->listen_fds[listener], NULL, NULL, SOCK_CLOEXEC);
        io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_LISTENER, 0, listener, 0));
        w->accepts_armed++;
        p->armed++;
    }
}

// accept_failed handles a failed accept. Out of descriptors or memory, accepting pauses for a
// back-off (one log line and one count per episode); the connections wait in the backlog.
static void accept_failed(struct tg_worker *w, uint32_t listener, int error) {
    const char *name = w->rt->cfg->listeners[listener].name;
    struct accept_pause *p = &w->pause[listener];
    if (error != EMFILE && error != ENFILE && error != ENOMEM && error != ENOBUFS) {
        TG_WARN("accept_failed", "worker=%u listener=%s error=\"%s\"", w->id, name,
                strerror(error));
        return; // the peer's problem (ECONNABORTED, ...): the accept goes on
    }
    p->failures++;
    if (p->until == 0 && p->backoff == 0) {
        p->since = w->loop.now;
        p->error = error;
        tg_counter_add(&w->conns.ctr[listener].accept_paused, 1);
        TG_WARN("accept_paused", "worker=%u listener=%s error=\"%s\" backoff_ms=%u", w->id, name,
                strerror(error), ACCEPT_BACKOFF_MIN_MS);
    }
    p->backoff = p->backoff == 0 ? ACCEPT_BACKOFF_MIN_MS : p->backoff * 2;
    if (p->backoff > ACCEPT_BACKOFF_MAX_MS)
        p->backoff = ACCEPT_BACKOFF_MAX_MS;
    p->until = w->loop.now + p->backoff;
    if (p->until == 0)
        p->until = 1;
    if (p->armed > 0 && !p->cancelling) { // others in flight: stop them, the tick re-arms
        p->cancelling = 1;
        tg_loop_cancel_ud(&w->loop, tg_ud(TG_KIND_LISTENER, 0, listener, 0), 1);
    }
}

// accept_succeeded ends a pause episode once a connection has been accepted again.
static void accept_succeeded(struct tg_worker *w, uint32_t listener) {
    struct accept_pause *p = &w->pause[listener];
    if (p->backoff == 0)
        return;
    TG_INFO("accept_resumed", "worker=%u listener=%s error=\"%s\" failures=%u paused_ms=%u", w->id,
            w->rt->cfg->listeners[listener].name, strerror(p->error), p->failures,
            w->loop.now - p->since);
    // The episode ends; the accept's own state (armed, a cancel in flight) stays.
    p->until = p->backoff = p->since = p->failures = 0;
    p->error = 0;
}

// resume_accepts ends the back-offs that have passed and tops up the accepts in flight of every
// listener not paused (an accept that ended a pause episode early leaves it short).
static void resume_accepts(struct tg_worker *w) {
    for (size_t l = 0; l < w->num_listeners; l++) {
        struct accept_pause *p = &w->pause[l];
        if (p->until != 0) {
            if (!tg_time_reached(w->loop.now, p->until))
                continue;
            p->until = 0;
        }
        if (!p->cancelling && w->listen_fds[l] >= 0 && !w->draining)
            arm_accept(w, (uint32_t)l);
    }
}

static void on_accept(void *arg, void *obj, uint32_t listener, unsigned op,
                      const struct io_uring_cqe *cqe) {
    (void)obj;
    (void)op;
    struct tg_worker *w = arg;
    if (listener >= w->num_listeners)
        return;
    struct accept_pause *p = &w->pause[listener];
    w->accepts_armed--;
    p->armed--;
    if (cqe->res < 0 && cqe->res != -ECANCELED)
        accept_failed(w, listener, -cqe->res);
    int cancelled = cqe->res == -ECANCELED;
    int pause_cancel = cancelled && p->cancelling;
    if (p->armed == 0) {
        p->cancelling = 0;
        if (w->draining || (cancelled && !pause_cancel)) {
            if (w->listen_fds[listener] >= 0) {
                close(w->listen_fds[listener]);
                w->listen_fds[listener] = -1;
            }
        }
    }
    if (!w->draining && (!cancelled || pause_cancel) && p->until == 0 &&
        w->listen_fds[listener] >= 0)
        arm_accept(w, listener); // else paused: resume_accepts re-arms after the back-off
    if (cqe->res < 0)
        return;
    accept_succeeded(w, listener);
    int fd = cqe->res;
    if (w->draining) {
        tg_counter_add(&w->conns.ctr[listener].rejected[TG_REJECT_DRAINING], 1);
        close(fd);
        return;
    }
    tg_conn_accepted(&w->conns, listener, fd);
}

// ---------------------------------------------------------------------------------------------
// Tick, wake-ups, draining.

// adopt_contexts switches new connections to the generation waiting in the mailbox. Open
// connections keep theirs: each SSL holds a reference on the context it was made from.
static void adopt_contexts(struct tg_worker *w) {
    struct ctx_pair *p = atomic_exchange(&w->mailbox, NULL);
    if (p == NULL)
        return;
    SSL_CTX_free(w->conns.server_ctx);
    SSL_CTX_free(w->conns.client_ctx);
    w->conns.server_ctx = p->server;
    w->conns.client_ctx = p->client;
    free(p);
    TG_DEBUG("generation_adopted", "worker=%u", w->id);
}

static void begin_drain(struct tg_worker *w) {
    if (w->draining)
        return;
    w->draining = 1;
    w->conns.draining = 1;
    w->drain_deadline = w->loop.now + w->rt->cfg->drain_timeout_ms;
    for (size_t l = 0; l < w->num_listeners; l++) {
        if (w->pause[l].armed) {
            tg_loop_cancel_ud(&w->loop, tg_ud(TG_KIND_LISTENER, 0, (uint32_t)l, 0), 1);
        } else if (w->listen_fds[l] >= 0) { // paused: nothing armed to cancel
            close(w->listen_fds[l]);
            w->listen_fds[l] = -1;
        }
    }
    TG_INFO("drain_start", "worker=%u connections=%u timeout_ms=%u", w->id,
            tg_conns_active(&w->conns), w->rt->cfg->drain_timeout_ms);
    tg_probes_close_all(&w->conns);
}

static int on_wake(void *arg) {
    struct tg_worker *w = arg;
    adopt_contexts(w);
    tg_dns_view_adopt(&w->dns);
    if (!atomic_load(&w->stop))
        return 1;
    begin_drain(w);
    return 0;
}

static void on_tick(void *arg) {
    struct tg_worker *w = arg;
    struct tg_conns *cs = &w->conns;
    tg_log_flush();
    resume_accepts(w);
    tg_conns_rearm_nobufs(cs);
    tg_conns_expire(cs);
    if (w->msig != NULL)
        tg_mediasig_tick(w->msig);
    if (cs->probes != NULL && !w->draining)
        tg_probes_tick(cs);
    if (cs->sip != NULL && !w->draining && tg_time_reached(w->loop.now, cs->next_keepalive))
        tg_sipglue_keepalive_tick(cs);
    if (w->draining && tg_conns_active(cs) > 0 && tg_time_reached(w->loop.now, w->drain_deadline))
        tg_conns_close_all(cs);
}

// ---------------------------------------------------------------------------------------------
// Setup and the thread.

// pin_thread puts worker |id| on the (id mod n)-th of the n CPUs the process was allowed
// (taskset, systemd's CPUAffinity=), never outside them: counting online CPUs from 0 moved the
// worker of a tlsgate started on CPU 1 to CPU 0.
static void pin_thread(unsigned id) {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
        return;
    int n = CPU_COUNT(&allowed);
    if (n <= 0)
        return;
    int want = (int)(id % (unsigned)n);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed) || want-- > 0)
            continue;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        return;
    }
}

// setup builds the loop and the connection table on the worker's own thread (the ring is
// single-issuer). Returns 0 with the reason in |init_err|.
static int setup(struct tg_worker *w) {
    const struct tg_runtime *rt = w->rt;
    if (!tg_loop_init(&w->loop, 1024, 16384, w->init_err, w->init_err_len))
        return 0;
    w->loop_ok = 1;
    if (!tg_loop_add_bufgroup(&w->loop, TG_BUF_GROUP, TG_BUF_SIZE, TG_BUF_COUNT, w->init_err,
                              w->init_err_len))
        return 0;
    w->dns_ok = tg_dns_view_init(&w->dns, rt->dns);
    struct tg_peer_ring *peers = rt->peers != NULL ? tg_peers_ring(rt->peers, w->id) : NULL;
    w->conns_ok = tg_conns_init(&w->conns, &w->loop, rt->cfg, rt->metrics, w->id, w->max_conns,
                                rt->tls->server, rt->tls->client, rt->sip_key, peers, rt->guard);
    w->conns.dns = &w->dns;
    if (!w->dns_ok || !w->conns_ok || (w->id == 0 && !tg_probes_init(&w->conns))) {
        snprintf(w->init_err, w->init_err_len, "out of memory");
        return 0;
    }
    // The unauthenticated budget, shared out: each worker evicts within its own share.
    uint32_t share = rt->cfg->max_handshakes / (rt->num_workers > 0 ? rt->num_workers : 1);
    w->conns.hs_budget = share > 0 ? share : 1;
    struct tg_kind_ops k;
    tg_conns_kind(&w->conns, &k);
    tg_loop_set_kind(&w->loop, TG_KIND_CONN, &k);
    if (rt->cfg->media_enabled) {
        w->msig = calloc(1, sizeof(*w->msig));
        if (w->msig == NULL ||
            !tg_mediasig_init(w->msig, &w->loop, rt->cfg, &rt->metrics->media[w->id], rt->calldir,
                              w->id, rt->num_workers, w->init_err, w->init_err_len))
            return 0;
        w->msig->media.guard = rt->guard; // media sockets count against fd_reserve too
        w->conns.msig = w->msig;
        w->msig->send_own = tg_sipglue_send_own; // the BYEs of calls tlsgate ends itself
        w->msig->send_arg = &w->conns;
    }
    tg_loop_set_kind(
        &w->loop, TG_KIND_LISTENER,
        &(struct tg_kind_ops){.name = "listener", .on_cqe = on_accept, .arg = w, .bgid = -1});
    return 1;
}

static void *worker_main(void *arg) {
    struct tg_worker *w = arg;
    pin_thread(w->id);
    w->init_ok = setup(w);
    sem_post(&w->ready);
    if (!w->init_ok)
        return NULL;
    w->conns.next_keepalive = w->loop.now;
    for (size_t l = 0; l < w->num_listeners; l++)
        arm_accept(w, (uint32_t)l);
    tg_loop_start(&w->loop, TICK_MS, on_tick, on_wake, w);
    if (atomic_load(&w->stop))
        begin_drain(w);
    for (;;) {
        int r = tg_loop_run_once(&w->loop);
        if (r < 0) {
            TG_ERROR("io_uring_wait", "worker=%u error=\"%s\"", w->id, strerror(-r));
            break;
        }
        if (w->draining && tg_conns_active(&w->conns) == 0 && w->accepts_armed == 0)
            break;
    }
    if (w->msig != NULL)
        tg_mediasig_detach(w->msig); // no other worker posts to this loop from now on
    TG_INFO("worker_stopped", "worker=%u", w->id);
    return NULL;
}

int tg_listen_probe(const struct tg_target *addr, char *err, size_t err_len) {
    char where[80];
    tg_target_format(addr, where, sizeof(where));
    int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "%s: socket: %s", where, strerror(errno));
        return 0;
    }
    // As tg_listen_open, less SO_REUSEPORT: a socket already on the address, whoever holds it
    // and with whatever options, makes this bind fail. SO_REUSEADDR only lets connections of
    // an earlier run in TIME_WAIT pass.
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    int ok = bind(fd, (const struct sockaddr *)&addr->addr, addr->addr_len) == 0;
    int error = errno;
    close(fd);
    if (ok)
        return 1;
    if (error == EADDRINUSE)
        snprintf(err, err_len, "%s: address already in use by another process", where);
    else
        snprintf(err, err_len, "%s: bind: %s", where, strerror(error));
    return 0;
}

int tg_listen_open(const struct tg_target *addr, char *err, size_t err_len) {
    char where[80];
    tg_target_format(addr, where, sizeof(where));
    int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "%s: socket: %s", where, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (addr->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->addr, addr->addr_len) != 0) {
        snprintf(err, err_len, "%s: bind: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 4096) != 0) {
        snprintf(err, err_len, "%s: listen: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void worker_free(struct tg_worker *w) {
    if (w == NULL)
        return;
    if (w->conns_ok) {
        tg_probes_cleanup(&w->conns);
        tg_conns_cleanup(&w->conns);
    }
    if (w->msig != NULL) { // after the connections: closing them ends their calls
        tg_mediasig_cleanup(w->msig);
        free(w->msig);
    }
    if (w->dns_ok)
        tg_dns_view_cleanup(&w->dns);
    if (w->loop_ok)
        tg_loop_cleanup(&w->loop);
    for (size_t l = 0; w->listen_fds != NULL && l < w->num_listeners; l++)
        if (w->listen_fds[l] >= 0)
            close(w->listen_fds[l]);
    free(w->listen_fds);
    free(w->pause);
    ctx_pair_free(atomic_exchange(&w->mailbox, NULL));
    sem_destroy(&w->ready);
    free(w);
}

struct tg_worker *tg_worker_start(const struct tg_runtime *rt, unsigned id, int *listen_fds,
                                  uint32_t max_conns, char *err, size_t err_len) {
    struct tg_worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        for (size_t l = 0; l < rt->cfg->num_listeners; l++)
            close(listen_fds[l]);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    sem_init(&w->ready, 0, 0);
    w->rt = rt;
    w->id = id;
    w->max_conns = max_conns;
    w->num_listeners = rt->cfg->num_listeners;
    w->listen_fds = malloc(w->num_listeners * sizeof(int) + 1);
    w->pause = calloc(w->num_listeners + 1, sizeof(*w->pause));
    w->init_err = err;
    w->init_err_len = err_len;
    if (w->listen_fds == NULL || w->pause == NULL) {
        for (size_t l = 0; l < w->num_listeners; l++)
            close(listen_fds[l]);
        snprintf(err, err_len, "out of memory");
        worker_free(w);
        return NULL;
    }
    memcpy(w->listen_fds, listen_fds, w->num_listeners * sizeof(int));
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        snprintf(err, err_len, "pthread_create: %s", strerror(errno));
        worker_free(w);
        return NULL;
    }
    sem_wait(&w->ready); // off the data path: the caller waits for the thread's setup
    if (!w->init_ok) {
        pthread_join(w->thread, NULL);
        worker_free(w);
        return NULL;
    }
    w->init_err = NULL;
    return w;
}

void tg_worker_stop(struct tg_worker *w) {
    atomic_store(&w->stop, 1);
    tg_loop_wake(&w->loop);
}

int tg_worker_set_contexts(struct tg_worker *w, SSL_CTX *server, SSL_CTX *client) {
    struct ctx_pair *p = malloc(sizeof(*p));
    if (p == NULL)
        return 0;
    SSL_CTX_up_ref(server);
    SSL_CTX_up_ref(client);
    p->server = server;
    p->client = client;
    // A generation the worker has not picked up yet is simply replaced.
    ctx_pair_free(atomic_exchange(&w->mailbox, p));
    tg_loop_wake(&w->loop);
    return 1;
}

void tg_worker_set_dns(struct tg_worker *w, struct tg_dns_snapshot *snap) {
    tg_dns_view_offer(&w->dns, snap);
    tg_loop_wake(&w->loop);
}

void tg_worker_join(struct tg_worker *w) {
    pthread_join(w->thread, NULL);
    worker_free(w);
}
