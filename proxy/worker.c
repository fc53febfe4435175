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

    int *listen_fds; // one per listener; -1 once closed
    size_t num_listeners;
    unsigned accepts_armed;

    _Atomic(struct ctx_pair *) mailbox; // a newer generation, handed over by the control thread
    _Atomic int stop;
    int draining;
    uint32_t drain_deadline;
};

// ---------------------------------------------------------------------------------------------
// Listeners (kind TG_KIND_LISTENER: the slot is the listener index).

static void arm_accept(struct tg_worker *w, uint32_t listener) {
    struct io_uring_sqe *sqe = tg_loop_sqe(&w->loop);
    io_uring_prep_multishot_accept(sqe, w->listen_fds[listener], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_LISTENER, 0, listener, 0));
    w->accepts_armed++;
}

static void on_accept(void *arg, void *obj, uint32_t listener, unsigned op,
                      const struct io_uring_cqe *cqe) {
    (void)obj;
    (void)op;
    struct tg_worker *w = arg;
    if (listener >= w->num_listeners)
        return;
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        w->accepts_armed--;
        if (w->draining || cqe->res == -ECANCELED) {
            if (w->listen_fds[listener] >= 0) {
                close(w->listen_fds[listener]);
                w->listen_fds[listener] = -1;
            }
        } else {
            arm_accept(w, listener);
        }
    }
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED)
            TG_WARN("accept_failed", "worker=%u listener=%s error=\"%s\"", w->id,
                    w->rt->cfg->listeners[listener].name, strerror(-cqe->res));
        return;
    }
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
    for (size_t l = 0; l < w->num_listeners; l++)
        tg_loop_cancel_ud(&w->loop, tg_ud(TG_KIND_LISTENER, 0, (uint32_t)l, 0), 1);
    TG_INFO("drain_start", "worker=%u connections=%u timeout_ms=%u", w->id,
            tg_conns_active(&w->conns), w->rt->cfg->drain_timeout_ms);
    tg_probes_close_all(&w->conns);
}

static int on_wake(void *arg) {
    struct tg_worker *w = arg;
    adopt_contexts(w);
    if (!atomic_load(&w->stop))
        return 1;
    begin_drain(w);
    return 0;
}

static void on_tick(void *arg) {
    struct tg_worker *w = arg;
    struct tg_conns *cs = &w->conns;
    tg_conns_expire(cs);
    if (cs->probes != NULL && !w->draining)
        tg_probes_tick(cs);
    if (cs->sip != NULL && !w->draining && tg_time_reached(w->loop.now, cs->next_keepalive))
        tg_sipglue_keepalive_tick(cs);
    if (w->draining && tg_conns_active(cs) > 0 && tg_time_reached(w->loop.now, w->drain_deadline))
        tg_conns_close_all(cs);
}

// ---------------------------------------------------------------------------------------------
// Setup and the thread.

static void pin_thread(unsigned id) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu <= 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(id % (unsigned long)ncpu), &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
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
    struct tg_peer_ring *peers = rt->peers != NULL ? tg_peers_ring(rt->peers, w->id) : NULL;
    w->conns_ok = tg_conns_init(&w->conns, &w->loop, rt->cfg, rt->metrics, w->id, w->max_conns,
                                rt->tls->server, rt->tls->client, rt->sip_key, peers);
    if (!w->conns_ok || (w->id == 0 && !tg_probes_init(&w->conns))) {
        snprintf(w->init_err, w->init_err_len, "out of memory");
        return 0;
    }
    struct tg_kind_ops k;
    tg_conns_kind(&w->conns, &k);
    tg_loop_set_kind(&w->loop, TG_KIND_CONN, &k);
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
    TG_INFO("worker_stopped", "worker=%u", w->id);
    return NULL;
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
    if (w->loop_ok)
        tg_loop_cleanup(&w->loop);
    for (size_t l = 0; w->listen_fds != NULL && l < w->num_listeners; l++)
        if (w->listen_fds[l] >= 0)
            close(w->listen_fds[l]);
    free(w->listen_fds);
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
    w->init_err = err;
    w->init_err_len = err_len;
    if (w->listen_fds == NULL) {
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

void tg_worker_join(struct tg_worker *w) {
    pthread_join(w->thread, NULL);
    worker_free(w);
}
