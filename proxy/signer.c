// Private-key operations off the I/O loop (see include/tlsgate/signer.h).
#include "tlsgate/signer.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "tlsgate/keyd.h"
#include "tlsgate/log.h"
#include "tlsgate/loop.h"
#include "tlsgate/tlsconn.h"

// One cell of the MPMC ring: |seq| says whose turn it is (the classic bounded-queue scheme:
// a producer may fill cell i when seq == pos, a consumer may take it when seq == pos + 1).
struct cell {
    _Atomic uint64_t seq;
    struct tg_sign_req *req;
};

struct tg_signer {
    struct cell *cells;
    uint64_t mask;
    _Atomic uint64_t head; // next position to take
    _Atomic uint64_t tail; // next position to fill
    char pad[64];
    sem_t items; // one count per queued request, plus one per thread at stop
    _Atomic int stop;
    pthread_t *threads;
    unsigned num_threads;
    struct tg_signer_stats stats;
};

static struct tg_signer_stats g_inline_stats;

struct tg_signer_stats *tg_signer_stats(struct tg_signer *s) {
    return s != NULL ? &s->stats : &g_inline_stats;
}

// push queues |r|; 0 when the ring is full.
static int push(struct tg_signer *s, struct tg_sign_req *r) {
    uint64_t pos = atomic_load_explicit(&s->tail, memory_order_relaxed);
    for (;;) {
        struct cell *c = &s->cells[pos & s->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos) {
            if (atomic_compare_exchange_weak_explicit(&s->tail, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                c->req = r;
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                return 1;
            }
        } else if (seq < pos) {
            return 0; // the cell still holds a request a lap behind: full
        } else {
            pos = atomic_load_explicit(&s->tail, memory_order_relaxed);
        }
    }
}

// pop takes the oldest request; NULL when none is ready (empty, or a producer is between
// claiming its cell and filling it).
static struct tg_sign_req *pop(struct tg_signer *s) {
    uint64_t pos = atomic_load_explicit(&s->head, memory_order_relaxed);
    for (;;) {
        struct cell *c = &s->cells[pos & s->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos + 1) {
            if (atomic_compare_exchange_weak_explicit(&s->head, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                struct tg_sign_req *r = c->req;
                atomic_store_explicit(&c->seq, pos + s->mask + 1, memory_order_release);
                return r;
            }
        } else if (seq < pos + 1) {
            return NULL;
        } else {
            pos = atomic_load_explicit(&s->head, memory_order_relaxed);
        }
    }
}

int tg_sign_now(EVP_PKEY *key, uint16_t alg, const uint8_t *in, size_t in_len, uint8_t *out,
                size_t *out_len, size_t max_out) {
    // The scheme must be one of the key's: BoringSSL offers only those, but a scheme of
    // another key type must never reach EVP (an RSA key asked for ECDSA, say).
    if (SSL_get_signature_algorithm_key_type(alg) != EVP_PKEY_id(key) ||
        (size_t)EVP_PKEY_size(key) > max_out)
        return 0;
    const EVP_MD *md = SSL_get_signature_algorithm_digest(alg);
    EVP_MD_CTX ctx;
    EVP_MD_CTX_init(&ctx);
    EVP_PKEY_CTX *pctx = NULL;
    size_t len = max_out;
    int ok = EVP_DigestSignInit(&ctx, &pctx, md, NULL, key);
    if (ok && SSL_is_signature_algorithm_rsa_pss(alg))
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, -1); // salt = digest length (RFC 8446 4.2.3)
    ok = ok && EVP_DigestSign(&ctx, out, &len, in, in_len);
    EVP_MD_CTX_cleanup(&ctx);
    if (!ok) {
        ERR_clear_error();
        return 0;
    }
    *out_len = len;
    return 1;
}

// complete_req hands a finished request back to its worker. The request may be freed by the
// worker as soon as the state is stored, so the loop and user_data are read first.
static void complete_req(struct tg_signer *s, struct tg_sign_req *r, int ok) {
    struct tg_loop *loop = r->loop;
    uint64_t ud = r->ud;
    atomic_fetch_add_explicit(ok ? &s->stats.signed_ok : &s->stats.failed, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->stats.depth, 1, memory_order_relaxed);
    atomic_store_explicit(&r->state, ok ? TG_SIGN_DONE : TG_SIGN_FAILED, memory_order_release);
    // The worker's mailbox is bounded: when it is full, wait a little (the worker is busy
    // draining it) rather than lose the completion, which would leave the connection hanging.
    while (!tg_loop_post(NULL, loop, ud, 0)) {
        struct timespec ts = {0, 50 * 1000};
        nanosleep(&ts, NULL);
    }
}

// keyd_conn is one thread's connection to tlsgate-keyd (-1: none yet, or lost).
struct keyd_conn {
    int fd;
    char path[108];
    uint32_t next_id;
};

// keyd_sign has keyd sign for |r|. A connection that fails is dropped and made again once at
// once (keyd was restarted: its old connections are gone); keyd that cannot be reached fails
// the signature now, so the handshake fails fast rather than wait.
static int keyd_sign(struct tg_signer_stats *st, struct keyd_conn *kc, const char *keyd,
                     const uint8_t *spki, uint16_t alg, const uint8_t *in, size_t in_len,
                     uint8_t *out, size_t *out_len, size_t max_out) {
    char err[256] = "";
    if (kc->fd >= 0 && strcmp(kc->path, keyd) != 0) {
        close(kc->fd);
        kc->fd = -1;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (kc->fd < 0) {
            kc->fd = tg_keyd_connect(keyd, err, sizeof(err));
            if (kc->fd < 0)
                break;
            snprintf(kc->path, sizeof(kc->path), "%s", keyd);
        }
        int r = tg_keyd_sign(kc->fd, ++kc->next_id, spki, alg, in, in_len, out, out_len, max_out,
                             err, sizeof(err));
        if (r >= 0) {
            if (r != TG_KEYD_OK)
                TG_WARN("keyd_refused", "socket=%s status=%d", keyd, r);
            return r == TG_KEYD_OK;
        }
        close(kc->fd);
        kc->fd = -1;
    }
    atomic_fetch_add_explicit(&st->keyd_down, 1, memory_order_relaxed);
    TG_WARN("keyd_unreachable", "socket=%s reason=\"%s\"", keyd, err);
    return 0;
}

// sign_req makes |r|'s signature with the key itself or through keyd.
static int sign_req(struct tg_signer_stats *st, struct keyd_conn *kc, struct tg_sign_req *r) {
    if (r->keyd != NULL)
        return keyd_sign(st, kc, r->keyd, r->spki, r->alg, r->in, r->in_len, r->sig, &r->sig_len,
                         sizeof(r->sig));
    return tg_sign_now(r->key, r->alg, r->in, r->in_len, r->sig, &r->sig_len, sizeof(r->sig));
}

static void *signer_main(void *arg) {
    struct tg_signer *s = arg;
    struct keyd_conn kc = {.fd = -1};
    for (;;) {
        while (sem_wait(&s->items) != 0 && errno == EINTR) // off the data path
            ;
        struct tg_sign_req *r;
        while ((r = pop(s)) == NULL) {
            if (atomic_load(&s->stop)) {
                if (kc.fd >= 0)
                    close(kc.fd);
                return NULL;
            }
            sched_yield(); // a producer is filling the cell the count is for
        }
        complete_req(s, r, sign_req(&s->stats, &kc, r));
    }
}

struct tg_signer *tg_signer_new(unsigned threads, uint32_t queue) {
    if (threads == 0 || threads > 64 || queue < 2 || (queue & (queue - 1)) != 0)
        return NULL;
    struct tg_signer *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cells = calloc(queue, sizeof(*s->cells));
    s->threads = calloc(threads, sizeof(*s->threads));
    if (s->cells == NULL || s->threads == NULL || sem_init(&s->items, 0, 0) != 0) {
        free(s->cells);
        free(s->threads);
        free(s);
        return NULL;
    }
    s->mask = queue - 1;
    for (uint64_t i = 0; i < queue; i++)
        atomic_init(&s->cells[i].seq, i);
    // Signals belong to the main thread (signalfd): the signers are made with all of them
    // blocked, so none is ever delivered to one (SIGTERM would end the process there).
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int failed = 0;
    for (unsigned i = 0; i < threads && !failed; i++) {
        failed = pthread_create(&s->threads[i], NULL, signer_main, s) != 0;
        if (!failed)
            s->num_threads = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (failed) {
        tg_signer_free(s);
        return NULL;
    }
    return s;
}

void tg_signer_free(struct tg_signer *s) {
    if (s == NULL)
        return;
    // Requests already queued are signed first: their connections wait for the completion.
    while (atomic_load(&s->stats.depth) > 0) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&s->stop, 1);
    for (unsigned i = 0; i < s->num_threads; i++)
        sem_post(&s->items);
    for (unsigned i = 0; i < s->num_threads; i++)
        pthread_join(s->threads[i], NULL);
    sem_destroy(&s->items);
    free(s->cells);
    free(s->threads);
    free(s);
}

void tg_sign_req_free(struct tg_sign_req *r) {
    if (r == NULL)
        return;
    free(r->in);
    free(r);
}

// ---------------------------------------------------------------------------------------------
// The private-key method.

// signer_key is what a context signs with: the key (a reference) and the pool (NULL: inline).
struct signer_key {
    EVP_PKEY *key;
    struct tg_signer *pool;
    char keyd[108];   // tlsgate-keyd's socket; empty: |key| is the private key
    uint8_t spki[32]; // keyd's name for the key
};

static int g_key_idx = -1;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

static void key_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                     void *argp) {
    (void)parent;
    (void)ad;
    (void)index;
    (void)argl;
    (void)argp;
    struct signer_key *k = ptr;
    if (k == NULL)
        return;
    EVP_PKEY_free(k->key);
    free(k);
}

static void key_index_init(void) {
    g_key_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, key_free);
}

static enum ssl_private_key_result_t key_sign(SSL *ssl, uint8_t *out, size_t *out_len,
                                              size_t max_out, uint16_t alg, const uint8_t *in,
                                              size_t in_len) {
    const struct signer_key *k = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_key_idx);
    struct tg_tlsio *t = tg_tlsio_from_ssl(ssl);
    if (k == NULL)
        return ssl_private_key_failure;
    if (k->pool == NULL || t == NULL || t->env == NULL || t->env->loop == NULL) {
        int ok;
        if (k->keyd[0] != '\0') { // a connection of its own, for this one signature
            struct keyd_conn kc = {.fd = -1};
            ok = keyd_sign(&g_inline_stats, &kc, k->keyd, k->spki, alg, in, in_len, out, out_len,
                           max_out);
            if (kc.fd >= 0)
                close(kc.fd);
        } else {
            ok = tg_sign_now(k->key, alg, in, in_len, out, out_len, max_out);
        }
        if (!ok)
            return ssl_private_key_failure;
        atomic_fetch_add_explicit(&g_inline_stats.inline_ok, 1, memory_order_relaxed);
        return ssl_private_key_success;
    }
    struct tg_sign_req *r = t->sign;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return ssl_private_key_failure;
        t->sign = r;
    }
    if (atomic_load_explicit(&r->state, memory_order_acquire) == TG_SIGN_QUEUED)
        return ssl_private_key_failure; // one signature at a time per handshake
    if (in_len > r->in_cap) {
        uint8_t *p = realloc(r->in, in_len);
        if (p == NULL)
            return ssl_private_key_failure;
        r->in = p;
        r->in_cap = in_len;
    }
    memcpy(r->in, in, in_len);
    r->in_len = in_len;
    r->alg = alg;
    r->key = k->key;
    r->keyd = k->keyd[0] != '\0' ? k->keyd : NULL;
    r->spki = k->spki;
    r->loop = t->env->loop;
    r->ud = t->sign_ud;
    r->sig_len = 0;
    atomic_store_explicit(&r->state, TG_SIGN_QUEUED, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->pool->stats.depth, 1, memory_order_relaxed);
    if (!push(k->pool, r)) {
        atomic_fetch_sub_explicit(&k->pool->stats.depth, 1, memory_order_relaxed);
        atomic_store_explicit(&r->state, TG_SIGN_IDLE, memory_order_relaxed);
        atomic_fetch_add_explicit(&k->pool->stats.queue_full, 1, memory_order_relaxed);
        t->sign_busy = 1;
        return ssl_private_key_failure;
    }
    sem_post(&k->pool->items);
    t->sign_new = 1;
    return ssl_private_key_retry;
}

static enum ssl_private_key_result_t key_complete(SSL *ssl, uint8_t *out, size_t *out_len,
                                                  size_t max_out) {
    struct tg_tlsio *t = tg_tlsio_from_ssl(ssl);
    struct tg_sign_req *r = t != NULL ? t->sign : NULL;
    if (r == NULL)
        return ssl_private_key_failure;
    int state = atomic_load_explicit(&r->state, memory_order_acquire);
    if (state == TG_SIGN_QUEUED)
        return ssl_private_key_retry;
    atomic_store_explicit(&r->state, TG_SIGN_IDLE, memory_order_relaxed);
    if (state != TG_SIGN_DONE || r->sig_len > max_out)
        return ssl_private_key_failure;
    memcpy(out, r->sig, r->sig_len);
    *out_len = r->sig_len;
    return ssl_private_key_success;
}

static enum ssl_private_key_result_t key_decrypt(SSL *ssl, uint8_t *out, size_t *out_len,
                                                 size_t max_out, const uint8_t *in, size_t in_len) {
    // RSA key exchange: no cipher suite tlsgate allows uses it (ECDHE only).
    (void)ssl;
    (void)out;
    (void)out_len;
    (void)max_out;
    (void)in;
    (void)in_len;
    return ssl_private_key_failure;
}

static const SSL_PRIVATE_KEY_METHOD g_method = {
    .sign = key_sign,
    .decrypt = key_decrypt,
    .complete = key_complete,
};

int tg_signer_attach(SSL_CTX *ctx, CRYPTO_BUFFER *const *certs, size_t num, EVP_PKEY *key,
                     struct tg_signer *s, const char *keyd) {
    pthread_once(&g_key_once, key_index_init);
    if (g_key_idx < 0)
        return 0;
    struct signer_key *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return 0;
    EVP_PKEY_up_ref(key);
    k->key = key;
    k->pool = s;
    if (keyd != NULL && keyd[0] != '\0') {
        snprintf(k->keyd, sizeof(k->keyd), "%s", keyd);
        tg_keyd_spki_hash(key, k->spki);
    }
    if (!SSL_CTX_set_ex_data(ctx, g_key_idx, k)) {
        key_free(NULL, k, NULL, 0, 0, NULL);
        return 0;
    }
    // The chain goes in with the method; the key itself stays out of BoringSSL, which checks
    // the signature algorithms it offers against the leaf's public key.
    return SSL_CTX_set_chain_and_key(ctx, certs, num, NULL, &g_method);
}
