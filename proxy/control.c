// The control plane: configuration generations, reload, certificate expiry and /status.
#include "tlsgate/control.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tlsgate/json.h"
#include "tlsgate/log.h"
#include "tlsgate/policy.h"
#include "tlsgate/verify.h"

#define CA_SUBJECTS_MAX 64
// NOT_APPLIED_MAX bounds the settings a reload names as not applied; more are counted.
#define NOT_APPLIED_MAX 32

// not_applied is what a reload read but could not apply (tg_config_diff): the first names and
// how many there were in all.
struct not_applied {
    char names[NOT_APPLIED_MAX][TG_CONFIG_DIFF_NAME_MAX];
    size_t num_names; // written in |names|
    size_t total;     // found, possibly more than NOT_APPLIED_MAX
};

// A generation as /status describes it, next to the contexts it was built into.
struct generation {
    struct tg_tls *tls;
    struct tg_rule_result rules[TG_OWN_RULES_MAX];
    size_t num_rules;
    char cert_path[4096];
    char subject[256];
    char issuer[256];
    char serial[80];
    char sans[512];
    char key_desc[48];
    int64_t not_after;
    int64_t loaded_at;
    char *ca_subjects[CA_SUBJECTS_MAX];
    size_t num_ca;
    int warned_days; // the lowest expiry threshold already logged (INT32_MAX: none)
};

struct tg_control {
    pthread_mutex_t lock;
    const struct tg_config *cfg;
    int allow_noncompliant;
    struct generation *gen;
    tg_publish_fn publish; // hands a generation to the workers (wired in main); may be NULL
    void *publish_arg;
    uint64_t reloads_ok, reloads_failed;
    int64_t last_reload_time;
    int last_reload_ok;
    char last_reload_trigger[16];
    char last_reload_reason[1024];
    struct not_applied last_reload_not_applied; // empty after a failed reload
};

// ---------------------------------------------------------------------------------------------
// Small helpers.

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    if (b->len + 1 >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

// sb_str appends |s| as a quoted JSON string.
static void sb_str(struct sbuf *b, const char *s) {
    char esc[1024];
    tg_json_escape(esc, sizeof(esc), s);
    sb_printf(b, "\"%s\"", esc);
}

// sb_names appends |na| as a JSON array of strings, keeping |reserve| bytes of the buffer free
// for what follows: names that do not fit, and those past NOT_APPLIED_MAX, become one last
// item `N more`.
static void sb_names(struct sbuf *b, const struct not_applied *na, size_t reserve) {
    sb_printf(b, "[");
    size_t i = 0;
    for (; i < na->num_names; i++) {
        // A name needs at most twice its length escaped, quotes and a comma; `"N more"` 32.
        if (b->len + 2 * strlen(na->names[i]) + 4 + 32 + reserve >= b->cap)
            break;
        sb_printf(b, "%s", i ? "," : "");
        sb_str(b, na->names[i]);
    }
    if (i < na->total)
        sb_printf(b, "%s\"%zu more\"", i ? "," : "", na->total - i);
    sb_printf(b, "]");
}

// join_names writes the names of |na| comma-separated into |out| for a log line; names that
// do not fit, and those past NOT_APPLIED_MAX, become one last item `N more`.
static void join_names(const struct not_applied *na, char *out, size_t out_len) {
    struct sbuf b = {.p = out, .len = 0, .cap = out_len};
    out[0] = '\0';
    size_t i = 0;
    for (; i < na->num_names; i++) {
        if (b.len + strlen(na->names[i]) + 1 + 32 >= b.cap)
            break;
        sb_printf(&b, "%s%s", i ? "," : "", na->names[i]);
    }
    if (i < na->total)
        sb_printf(&b, "%s%zu more", i ? "," : "", na->total - i);
}

static void iso_time(int64_t t, char *out, size_t out_len) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t asn1_epoch(const ASN1_TIME *t) {
    int days = 0, secs = 0;
    if (t == NULL || !ASN1_TIME_diff(&days, &secs, NULL, t))
        return 0;
    return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

static void name_line(X509_NAME *name, char *out, size_t out_len) {
    out[0] = '\0';
    if (name != NULL)
        X509_NAME_oneline(name, out, (int)out_len);
}

static void describe_sans(X509 *x, char *out, size_t out_len) {
    out[0] = '\0';
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    size_t n = 0;
    for (size_t i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        int w = snprintf(out + n, out_len - n, "%s%.*s", n ? "," : "", len, (const char *)d);
        if (w < 0 || (size_t)w >= out_len - n)
            break;
        n += (size_t)w;
    }
    GENERAL_NAMES_free(gens);
}

static void describe_key(EVP_PKEY *key, char *out, size_t out_len) {
    const char *type = "other";
    switch (key != NULL ? EVP_PKEY_id(key) : 0) {
    case EVP_PKEY_RSA:
        type = "RSA";
        break;
    case EVP_PKEY_EC:
        type = "EC";
        break;
    case EVP_PKEY_ED25519:
        type = "Ed25519";
        break;
    }
    snprintf(out, out_len, "%s %d", type, key != NULL ? EVP_PKEY_bits(key) : 0);
}

static void describe_serial(X509 *x, char *out, size_t out_len) {
    out[0] = '\0';
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex != NULL)
        snprintf(out, out_len, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
}

static void load_ca_subjects(struct generation *g, const char *path) {
    BIO *bio = BIO_new_file(path, "r");
    X509 *x;
    while (bio != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (g->num_ca < CA_SUBJECTS_MAX) {
            char line[256];
            name_line(X509_get_subject_name(x), line, sizeof(line));
            g->ca_subjects[g->num_ca] = strdup(line);
            if (g->ca_subjects[g->num_ca] != NULL)
                g->num_ca++;
        }
        X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error();
}

static void generation_free(struct generation *g) {
    if (g == NULL)
        return;
    if (g->tls != NULL) {
        tg_tls_cleanup(g->tls); // open connections keep the contexts they use
        free(g->tls);
    }
    for (size_t i = 0; i < g->num_ca; i++)
        free(g->ca_subjects[i]);
    free(g);
}

// key_permissions_warn warns when the private key file can be read by others.
static void key_permissions_warn(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 0077) != 0)
        TG_WARN("key_permissions",
                "key=%s mode=%04o reason=\"private key readable by group or "
                "others; chmod 600\"",
                path, (unsigned)(st.st_mode & 07777));
}

// generation_new describes |tls| (taking ownership) as built from |cfg|.
static struct generation *generation_new(struct tg_tls *tls, const struct tg_config *cfg) {
    struct generation *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->tls = tls;
    g->loaded_at = (int64_t)time(NULL);
    g->warned_days = INT32_MAX;
    snprintf(g->cert_path, sizeof(g->cert_path), "%s", cfg->cert);
    // The verdicts tg_tls_init reached when it loaded the files (own_ca included): the rules
    // run once, so /status, check and the reload decision never disagree.
    memcpy(g->rules, tls->own_rules, sizeof(tls->own_rules));
    g->num_rules = tls->num_own_rules;
    name_line(X509_get_subject_name(tls->leaf), g->subject, sizeof(g->subject));
    name_line(X509_get_issuer_name(tls->leaf), g->issuer, sizeof(g->issuer));
    describe_serial(tls->leaf, g->serial, sizeof(g->serial));
    describe_sans(tls->leaf, g->sans, sizeof(g->sans));
    describe_key(tls->key, g->key_desc, sizeof(g->key_desc));
    g->not_after = asn1_epoch(X509_get0_notAfter(tls->leaf));
    load_ca_subjects(g, cfg->ca);
    if (cfg->keyd[0] == '\0')
        key_permissions_warn(cfg->key);
    return g;
}

// ---------------------------------------------------------------------------------------------

struct tg_control *tg_control_new(const struct tg_config *cfg, struct tg_tls *tls,
                                  int allow_noncompliant) {
    struct tg_control *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->cfg = cfg;
    c->allow_noncompliant = allow_noncompliant;
    c->gen = generation_new(tls, cfg);
    if (c->gen == NULL) {
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    return c;
}

void tg_control_set_publisher(struct tg_control *c, tg_publish_fn publish, void *arg) {
    pthread_mutex_lock(&c->lock);
    c->publish = publish;
    c->publish_arg = arg;
    pthread_mutex_unlock(&c->lock);
}

void tg_control_free(struct tg_control *c) {
    if (c == NULL)
        return;
    generation_free(c->gen);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

// build_generation loads the configuration file again and builds a generation from its [tls]
// section. Returns NULL with the reason in |why|. On success |out_na| names the settings the
// file changed that the generation does not carry (they take a restart).
static struct generation *build_generation(struct tg_control *c, struct not_applied *out_na,
                                           char *why, size_t why_len) {
    struct tg_config cfg;
    char err[1024];
    struct generation *g = NULL;
    if (!tg_config_load(&cfg, c->cfg->path, err, sizeof(err))) {
        snprintf(why, why_len, "%s", err);
        return NULL;
    }
    struct tg_tls *tls = calloc(1, sizeof(*tls));
    if (tls == NULL) {
        snprintf(why, why_len, "out of memory");
        goto out;
    }
    // The signer pool is the process's: a reload keeps it (tls.signers is not reloaded).
    if (!tg_tls_init(tls, &cfg, tg_verify_peer, c->gen->tls->signer, err, sizeof(err))) {
        snprintf(why, why_len, "%s", err);
        free(tls);
        goto out;
    }
    g = generation_new(tls, &cfg);
    if (g == NULL) {
        tg_tls_cleanup(tls);
        free(tls);
        snprintf(why, why_len, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < g->num_rules; i++) {
        if (g->rules[i].status != TG_RULE_FAIL)
            continue;
        if (c->allow_noncompliant) {
            TG_WARN("noncompliant_certificate", "cert=%s rule=%s detail=\"%s\" override=yes",
                    g->cert_path, g->rules[i].rule, g->rules[i].detail);
            continue;
        }
        if (snprintf(why, why_len, "%s: certificate rule %s failed: %s", g->cert_path,
                     g->rules[i].rule, g->rules[i].detail) < 0)
            why[0] = '\0';
        generation_free(g);
        g = NULL;
        goto out;
    }
    out_na->total = tg_config_diff(c->cfg, &cfg, out_na->names, NOT_APPLIED_MAX);
    out_na->num_names = out_na->total < NOT_APPLIED_MAX ? out_na->total : NOT_APPLIED_MAX;
out:
    tg_config_cleanup(&cfg);
    return g;
}

int tg_control_reload(struct tg_control *c, const char *trigger, char *out_json, size_t out_len) {
    char why[1024] = "";
    pthread_mutex_lock(&c->lock);
    struct not_applied *na = &c->last_reload_not_applied;
    memset(na, 0, sizeof(*na));
    struct generation *g = build_generation(c, na, why, sizeof(why));
    int ok = g != NULL;
    if (ok && c->publish != NULL && !c->publish(c->publish_arg, g->tls->server, g->tls->client)) {
        // Workers already switched keep the new generation: it passed every rule.
        snprintf(why, sizeof(why), "out of memory handing the generation to the workers");
        ok = 0;
    }
    c->last_reload_time = (int64_t)time(NULL);
    c->last_reload_ok = ok;
    snprintf(c->last_reload_trigger, sizeof(c->last_reload_trigger), "%s", trigger);
    snprintf(c->last_reload_reason, sizeof(c->last_reload_reason), "%s", ok ? "" : why);
    char esc[1100];
    if (ok) {
        c->reloads_ok++;
        generation_free(c->gen);
        c->gen = g;
        TG_INFO("reload", "trigger=%s result=ok cert=%s serial=%s subject=\"%s\" not_applied=%zu",
                trigger, g->cert_path, g->serial, g->subject, na->total);
        if (na->total > 0) {
            char names[1024]; // a log line holds 2048 bytes
            join_names(na, names, sizeof(names));
            TG_WARN("reload_partial",
                    "trigger=%s not_applied=\"%s\" reason=\"a reload applies [tls] certificate, "
                    "key, ca, peer_names, min_key_bits, min_version and ciphers; these settings "
                    "take effect at the next restart\"",
                    trigger, names);
        }
        if (out_json != NULL && out_len > 0) {
            char not_after[32];
            iso_time(g->not_after, not_after, sizeof(not_after));
            struct sbuf b = {.p = out_json, .len = 0, .cap = out_len};
            out_json[0] = '\0';
            sb_printf(&b,
                      "{\"result\":\"ok\",\"trigger\":\"%s\",\"serial\":\"%s\","
                      "\"not_after\":\"%s\",\"not_applied\":",
                      trigger, g->serial, not_after);
            sb_names(&b, na, 3);
            sb_printf(&b, "}\n");
        }
    } else {
        c->reloads_failed++;
        memset(na, 0, sizeof(*na));
        if (g != NULL && c->gen != g)
            generation_free(g);
        tg_json_escape(esc, sizeof(esc), why);
        TG_WARN("reload", "trigger=%s result=failed reason=\"%s\"", trigger, esc);
        if (out_json != NULL)
            snprintf(out_json, out_len,
                     "{\"result\":\"failed\",\"trigger\":\"%s\",\"reason\":\"%s\"}\n", trigger,
                     esc);
    }
    pthread_mutex_unlock(&c->lock);
    return ok;
}

void tg_control_tick(struct tg_control *c) {
    static const int thresholds[] = {30, 7, 1};
    pthread_mutex_lock(&c->lock);
    struct generation *g = c->gen;
    int64_t left = g->not_after - (int64_t)time(NULL);
    for (size_t i = 0; i < sizeof(thresholds) / sizeof(thresholds[0]); i++) {
        int days = thresholds[i];
        if (left > (int64_t)days * 86400 || g->warned_days <= days)
            continue;
        g->warned_days = days;
        TG_WARN("cert_expiry", "cert=%s days_left=%lld threshold_days=%d serial=%s", g->cert_path,
                (long long)(left / 86400), days, g->serial);
    }
    pthread_mutex_unlock(&c->lock);
}

size_t tg_control_status_json(struct tg_control *c, char *buf, size_t len) {
    struct sbuf b = {.p = buf, .len = 0, .cap = len};
    if (len == 0)
        return 0;
    buf[0] = '\0';
    char t[32];
    pthread_mutex_lock(&c->lock);
    const struct generation *g = c->gen;
    sb_printf(&b, "\"certificate\":{\"path\":");
    sb_str(&b, g->cert_path);
    sb_printf(&b, ",\"subject\":");
    sb_str(&b, g->subject);
    sb_printf(&b, ",\"sans\":[");
    char sans[sizeof(g->sans)];
    snprintf(sans, sizeof(sans), "%s", g->sans);
    int first = 1;
    for (char *save = NULL, *s = strtok_r(sans, ",", &save); s != NULL;
         s = strtok_r(NULL, ",", &save)) {
        sb_printf(&b, "%s", first ? "" : ",");
        sb_str(&b, s);
        first = 0;
    }
    sb_printf(&b, "],\"issuer\":");
    sb_str(&b, g->issuer);
    iso_time(g->not_after, t, sizeof(t));
    sb_printf(&b,
              ",\"serial\":\"%s\",\"not_after\":\"%s\",\"days_left\":%lld,\"key\":\"%s\","
              "\"rules\":[",
              g->serial, t, (long long)((g->not_after - (int64_t)time(NULL)) / 86400), g->key_desc);
    for (size_t i = 0; i < g->num_rules; i++) {
        sb_printf(&b, "%s{\"rule\":\"%s\",\"status\":\"%s\",\"detail\":", i ? "," : "",
                  g->rules[i].rule, tg_rule_status_name(g->rules[i].status));
        sb_str(&b, g->rules[i].detail);
        sb_printf(&b, "}");
    }
    iso_time(g->loaded_at, t, sizeof(t));
    sb_printf(&b, "],\"loaded_at\":\"%s\"},\"ca\":{\"count\":%zu,\"subjects\":[", t, g->num_ca);
    for (size_t i = 0; i < g->num_ca; i++) {
        sb_printf(&b, "%s", i ? "," : "");
        sb_str(&b, g->ca_subjects[i]);
    }
    sb_printf(&b, "]},\"last_reload\":");
    if (c->last_reload_time == 0) {
        sb_printf(&b, "null");
    } else {
        iso_time(c->last_reload_time, t, sizeof(t));
        sb_printf(&b, "{\"time\":\"%s\",\"trigger\":\"%s\",\"result\":\"%s\",\"reason\":", t,
                  c->last_reload_trigger, c->last_reload_ok ? "ok" : "failed");
        sb_str(&b, c->last_reload_reason);
        sb_printf(&b, ",\"not_applied\":");
        sb_names(&b, &c->last_reload_not_applied, 2);
        sb_printf(&b, "}");
    }
    pthread_mutex_unlock(&c->lock);

    return b.len;
}

size_t tg_control_metrics(struct tg_control *c, char *buf, size_t len) {
    struct sbuf b = {.p = buf, .len = 0, .cap = len};
    if (len == 0)
        return 0;
    buf[0] = '\0';
    pthread_mutex_lock(&c->lock);
    sb_printf(&b,
              "# HELP tlsgate_reloads_total Configuration reloads by result.\n"
              "# TYPE tlsgate_reloads_total counter\n"
              "tlsgate_reloads_total{result=\"ok\"} %llu\n"
              "tlsgate_reloads_total{result=\"failed\"} %llu\n",
              (unsigned long long)c->reloads_ok, (unsigned long long)c->reloads_failed);
    char path[1024];
    tg_json_escape(path, sizeof(path), c->gen->cert_path);
    sb_printf(&b,
              "# HELP tlsgate_cert_expiry_seconds Seconds until our certificate expires.\n"
              "# TYPE tlsgate_cert_expiry_seconds gauge\n"
              "tlsgate_cert_expiry_seconds{cert=\"%s\"} %lld\n",
              path, (long long)(c->gen->not_after - (int64_t)time(NULL)));
    pthread_mutex_unlock(&c->lock);
    return b.len;
}
