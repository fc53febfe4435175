// Peer-policy benchmarks: tg_policy_check_peer over a leaf <- intermediate <- root chain, as the
// verify callback sees it (DER from the wire) and with the certificates already parsed.

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/mem.h>

#include "bench_micro.h"
#include "tg_bench.h"

struct der {
    uint8_t *data;
    size_t len;
};

// policy_case is the chain as the peer sends it (leaf, then intermediate) and a policy that
// trusts the root and accepts the leaf's name, as tg_tls_init builds it.
struct policy_case {
    struct tg_policy *policy;
    X509 *leaf;
    STACK_OF(X509) *chain; // the intermediate
    struct der der[2];     // leaf, intermediate
};

static struct policy_case g_policy;

static int to_der(struct der *out, X509 *x) {
    uint8_t *data = NULL;
    int len = i2d_X509(x, &data);
    if (len <= 0)
        return 0;
    out->data = data;
    out->len = (size_t)len;
    return 1;
}

static void policy_case_cleanup(void) {
    struct policy_case *pc = &g_policy;
    tg_policy_free(pc->policy);
    X509_free(pc->leaf);
    sk_X509_pop_free(pc->chain, X509_free);
    for (size_t i = 0; i < 2; i++)
        OPENSSL_free(pc->der[i].data);
    memset(pc, 0, sizeof(*pc));
}

static int policy_case_init(struct policy_case *pc, struct tgb_world *w) {
    memset(pc, 0, sizeof(*pc));
    pc->policy = tg_policy_new();
    pc->chain = sk_X509_new_null();
    if (pc->policy == NULL || pc->chain == NULL || !tg_policy_add_ca(pc->policy, w->ca) ||
        !tg_policy_add_peer_name(pc->policy, TGB_CLIENT_RSA_NAME) ||
        !to_der(&pc->der[0], w->chain_leaf) || !to_der(&pc->der[1], w->chain_inter))
        return 0;
    X509_up_ref(w->chain_leaf);
    pc->leaf = w->chain_leaf;
    if (!sk_X509_push(pc->chain, w->chain_inter))
        return 0;
    X509_up_ref(w->chain_inter);
    return 1;
}

static int check(struct tg_bench_state *st, const struct policy_case *pc, X509 *leaf,
                 STACK_OF(X509) *chain) {
    char detail[256];
    const char *name = NULL;
    enum tg_verdict v = tg_policy_check_peer(pc->policy, TG_PEER_CLIENT, leaf, chain,
                                             (int64_t)time(NULL), &name, detail, sizeof(detail));
    if (v == TG_VERDICT_OK)
        return 1;
    tg_bench_skip_with_error(st, tg_verdict_name(v));
    return 0;
}

// bench_check_peer: one iteration is what the verify callback does with the peer's chain:
// d2i_X509 of both certificates, tg_policy_check_peer (self-signed test, validity, key size,
// X509_verify_cert with two RSA-2048 signature checks, names), and freeing the X509s.
static void bench_check_peer(struct tg_bench_state *st, void *arg) {
    const struct policy_case *pc = arg;
    while (tg_bench_keep_running(st)) {
        const uint8_t *p0 = pc->der[0].data;
        const uint8_t *p1 = pc->der[1].data;
        X509 *leaf = d2i_X509(NULL, &p0, (long)pc->der[0].len);
        X509 *inter = d2i_X509(NULL, &p1, (long)pc->der[1].len);
        STACK_OF(X509) *chain = sk_X509_new_null();
        if (leaf == NULL || inter == NULL || chain == NULL || !sk_X509_push(chain, inter)) {
            X509_free(leaf);
            X509_free(inter);
            sk_X509_free(chain);
            tg_bench_skip_with_error(st, "the chain does not parse");
            break;
        }
        int ok = check(st, pc, leaf, chain);
        X509_free(leaf);
        sk_X509_pop_free(chain, X509_free);
        if (!ok)
            break;
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

// bench_check_peer_parsed: tg_policy_check_peer alone, over certificates parsed once.
static void bench_check_peer_parsed(struct tg_bench_state *st, void *arg) {
    const struct policy_case *pc = arg;
    while (tg_bench_keep_running(st)) {
        if (!check(st, pc, pc->leaf, pc->chain))
            break;
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

int tgb_register_policy(struct tgb_world *w) {
    if (!policy_case_init(&g_policy, w)) {
        policy_case_cleanup();
        return 0;
    }
    atexit(policy_case_cleanup);
    return tg_bench_register_unit("policy/check_peer", bench_check_peer, &g_policy, TG_BENCH_US) &&
           tg_bench_register_unit("policy/check_peer_parsed", bench_check_peer_parsed, &g_policy,
                                  TG_BENCH_US);
}
