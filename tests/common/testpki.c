#include "testpki.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define TG_TESTPKI_SECS_PER_DAY 86400
#define TG_TESTPKI_CACHE_MAX 16
#define TG_TESTPKI_CA_DAYS 3650

// Key cache --------------------------------------------------------------------------------------

struct cached_key {
    enum tg_testpki_key_type type;
    unsigned rsa_bits;
    EVP_PKEY *key;
};

static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached_key g_cache[TG_TESTPKI_CACHE_MAX];
static size_t g_num_cached;
static int g_atexit_done;

static void free_cache(void) {
    pthread_mutex_lock(&g_cache_lock);
    for (size_t i = 0; i < g_num_cached; i++) {
        EVP_PKEY_free(g_cache[i].key);
    }
    g_num_cached = 0;
    pthread_mutex_unlock(&g_cache_lock);
}

static EVP_PKEY *gen_rsa(unsigned bits) {
    EVP_PKEY *pkey = EVP_PKEY_new();
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    if (pkey == NULL || rsa == NULL || e == NULL || !BN_set_word(e, RSA_F4) ||
        !RSA_generate_key_ex(rsa, (int)bits, e, NULL) || !EVP_PKEY_assign_RSA(pkey, rsa)) {
        EVP_PKEY_free(pkey);
        RSA_free(rsa);
        BN_free(e);
        return NULL;
    }
    BN_free(e);
    return pkey;
}

static EVP_PKEY *gen_ec(int nid) {
    EVP_PKEY *pkey = EVP_PKEY_new();
    EC_KEY *ec = EC_KEY_new_by_curve_name(nid);
    if (pkey == NULL || ec == NULL || !EC_KEY_generate_key(ec) ||
        !EVP_PKEY_assign_EC_KEY(pkey, ec)) {
        EVP_PKEY_free(pkey);
        EC_KEY_free(ec);
        return NULL;
    }
    return pkey;
}

static EVP_PKEY *gen_ed25519(void) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    EVP_PKEY *pkey = NULL;
    if (ctx == NULL || !EVP_PKEY_keygen_init(ctx) || !EVP_PKEY_keygen(ctx, &pkey)) {
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

EVP_PKEY *tg_testpki_key_new(enum tg_testpki_key_type type, unsigned rsa_bits) {
    switch (type) {
    case TG_TESTPKI_RSA:
        return gen_rsa(rsa_bits != 0 ? rsa_bits : 2048);
    case TG_TESTPKI_EC_P256:
        return gen_ec(NID_X9_62_prime256v1);
    case TG_TESTPKI_EC_P224:
        return gen_ec(NID_secp224r1);
    case TG_TESTPKI_ED25519:
        return gen_ed25519();
    }
    return NULL;
}

EVP_PKEY *tg_testpki_key(enum tg_testpki_key_type type, unsigned rsa_bits) {
    if (type != TG_TESTPKI_RSA) {
        rsa_bits = 0;
    } else if (rsa_bits == 0) {
        rsa_bits = 2048;
    }
    pthread_mutex_lock(&g_cache_lock);
    if (!g_atexit_done) {
        g_atexit_done = atexit(free_cache) == 0;
    }
    EVP_PKEY *key = NULL;
    for (size_t i = 0; i < g_num_cached; i++) {
        if (g_cache[i].type == type && g_cache[i].rsa_bits == rsa_bits) {
            key = g_cache[i].key;
            break;
        }
    }
    if (key == NULL) {
        key = tg_testpki_key_new(type, rsa_bits);
        if (key != NULL && g_num_cached < TG_TESTPKI_CACHE_MAX) {
            g_cache[g_num_cached++] = (struct cached_key){type, rsa_bits, key};
            EVP_PKEY_up_ref(key);
        }
    } else {
        EVP_PKEY_up_ref(key);
    }
    pthread_mutex_unlock(&g_cache_lock);
    return key;
}

// Certificates -----------------------------------------------------------------------------------

void tg_testpki_opts_init(struct tg_testpki_opts *opts, const char *cn) {
    memset(opts, 0, sizeof(*opts));
    opts->cn = cn;
    opts->san_is_cn = 1;
    opts->key_type = TG_TESTPKI_RSA;
    opts->rsa_bits = 2048;
    opts->not_before = -TG_TESTPKI_SECS_PER_DAY;
    opts->not_after = 365 * (int64_t)TG_TESTPKI_SECS_PER_DAY;
    opts->eku = TG_TESTPKI_EKU_SERVER | TG_TESTPKI_EKU_CLIENT;
}

static int set_time(ASN1_TIME *t, int64_t now, int64_t offset) {
    long days = (long)(offset / TG_TESTPKI_SECS_PER_DAY);
    long secs = (long)(offset % TG_TESTPKI_SECS_PER_DAY);
    return ASN1_TIME_adj(t, (time_t)now, (int)days, secs) != NULL;
}

static int set_serial(X509 *x) {
    uint64_t serial;
    if (!RAND_bytes((uint8_t *)&serial, sizeof(serial))) {
        return 0;
    }
    serial = (serial >> 2) | 1; // positive, non-zero, at most 62 bits
    return ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial);
}

static int set_subject(X509 *x, const struct tg_testpki_opts *opts) {
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_ASC,
                                    (const uint8_t *)"tlsgate-test", -1, -1, 0)) {
        return 0;
    }
    if (opts->cn == NULL) {
        return 1;
    }
    size_t len = opts->cn_len != 0 ? opts->cn_len : strlen(opts->cn);
    return X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                      (const uint8_t *)opts->cn, (int)len, -1, 0);
}

static int add_basic_constraints(X509 *x, int is_ca) {
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    if (bc == NULL) {
        return 0;
    }
    bc->ca = is_ca ? 1 : 0;
    int ok = X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT);
    BASIC_CONSTRAINTS_free(bc);
    return ok;
}

// Bit numbers of the KeyUsage BIT STRING (RFC 5280, section 4.2.1.3).
#define KU_BIT_DIGITAL_SIGNATURE 0
#define KU_BIT_KEY_ENCIPHERMENT 2
#define KU_BIT_KEY_CERT_SIGN 5
#define KU_BIT_CRL_SIGN 6

// set_key_usage_bits sets the keyUsage bits that TG_TESTPKI_KU_* |flags| name.
static int set_key_usage_bits(ASN1_BIT_STRING *ku, unsigned flags) {
    return ((flags & TG_TESTPKI_KU_DIGITAL_SIGNATURE) == 0 ||
            ASN1_BIT_STRING_set_bit(ku, KU_BIT_DIGITAL_SIGNATURE, 1)) &&
           ((flags & TG_TESTPKI_KU_KEY_ENCIPHERMENT) == 0 ||
            ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_ENCIPHERMENT, 1)) &&
           ((flags & TG_TESTPKI_KU_KEY_CERT_SIGN) == 0 ||
            ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_CERT_SIGN, 1));
}

// add_key_usage adds the keyUsage extension: the bits |flags| (TG_TESTPKI_KU_*) name, none with
// TG_TESTPKI_KU_NONE, or with |flags| == 0 the default of a CA or of a leaf with an RSA key or not.
static int add_key_usage(X509 *x, unsigned flags, int is_ca, int is_rsa) {
    if ((flags & TG_TESTPKI_KU_NONE) != 0) {
        return 1;
    }
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    if (ku == NULL) {
        return 0;
    }
    int ok;
    if (flags != 0) {
        ok = set_key_usage_bits(ku, flags);
    } else if (is_ca) {
        ok = ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_CERT_SIGN, 1) &&
             ASN1_BIT_STRING_set_bit(ku, KU_BIT_CRL_SIGN, 1);
    } else {
        ok = ASN1_BIT_STRING_set_bit(ku, KU_BIT_DIGITAL_SIGNATURE, 1) &&
             (!is_rsa || ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_ENCIPHERMENT, 1));
    }
    ok = ok && X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT);
    ASN1_BIT_STRING_free(ku);
    return ok;
}

static int add_eku(X509 *x, unsigned flags) {
    if ((flags & TG_TESTPKI_EKU_NONE) != 0) {
        return 1;
    }
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    if (eku == NULL) {
        return 0;
    }
    // OBJ_nid2obj returns static objects: the stack is freed without freeing them.
    int ok = ((flags & TG_TESTPKI_EKU_SERVER) == 0 ||
              sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth))) &&
             ((flags & TG_TESTPKI_EKU_CLIENT) == 0 ||
              sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth))) &&
             ((flags & TG_TESTPKI_EKU_CODE_SIGNING) == 0 ||
              sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_code_sign))) &&
             ((flags & TG_TESTPKI_EKU_ANY) == 0 ||
              sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_anyExtendedKeyUsage))) &&
             X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT);
    sk_ASN1_OBJECT_free(eku);
    return ok;
}

static int add_sans(X509 *x, const struct tg_testpki_opts *opts) {
    const char *const *dns = opts->dns;
    size_t num_dns = opts->num_dns;
    if (num_dns == 0 && opts->san_is_cn && opts->cn != NULL) {
        dns = &opts->cn;
        num_dns = 1;
    }
    if (num_dns == 0) {
        return 1;
    }
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    if (gens == NULL) {
        return 0;
    }
    int ok = 1;
    for (size_t i = 0; ok && i < num_dns; i++) {
        GENERAL_NAME *gen = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (gen == NULL || s == NULL || !ASN1_STRING_set(s, dns[i], (int)strlen(dns[i]))) {
            GENERAL_NAME_free(gen);
            ASN1_IA5STRING_free(s);
            ok = 0;
            break;
        }
        GENERAL_NAME_set0_value(gen, GEN_DNS, s);
        if (!sk_GENERAL_NAME_push(gens, gen)) {
            GENERAL_NAME_free(gen);
            ok = 0;
        }
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT);
    GENERAL_NAMES_free(gens);
    return ok;
}

// sign_md picks the digest for |key|: Ed25519 signs the message itself.
static const EVP_MD *sign_md(EVP_PKEY *key) {
    return EVP_PKEY_id(key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
}

static EVP_PKEY *key_for(const struct tg_testpki_opts *opts) {
    if (opts->key != NULL) {
        EVP_PKEY_up_ref(opts->key);
        return opts->key;
    }
    return tg_testpki_key(opts->key_type, opts->rsa_bits);
}

int tg_testpki_issue(X509 **out_cert, EVP_PKEY **out_key, const struct tg_testpki_opts *opts,
                     X509 *issuer, EVP_PKEY *issuer_key, int64_t now) {
    *out_cert = NULL;
    if (out_key != NULL) {
        *out_key = NULL;
    }
    int self_signed = issuer == NULL || issuer_key == NULL || opts->self_signed;
    EVP_PKEY *key = key_for(opts);
    X509 *x = X509_new();
    if (key == NULL || x == NULL) {
        goto err;
    }
    int is_rsa = EVP_PKEY_id(key) == EVP_PKEY_RSA;
    if (!X509_set_version(x, X509_VERSION_3) || !set_serial(x) || !set_subject(x, opts) ||
        !X509_set_issuer_name(x, self_signed ? X509_get_subject_name(x)
                                             : X509_get_subject_name(issuer)) ||
        !set_time(X509_getm_notBefore(x), now, opts->not_before) ||
        !set_time(X509_getm_notAfter(x), now, opts->not_after) || !X509_set_pubkey(x, key) ||
        !add_basic_constraints(x, opts->is_ca || opts->ca_true_leaf) ||
        !add_key_usage(x, opts->key_usage, opts->is_ca, is_rsa) ||
        (!opts->is_ca && !add_eku(x, opts->eku)) || !add_sans(x, opts)) {
        goto err;
    }
    EVP_PKEY *signer = self_signed ? key : issuer_key;
    if (!X509_sign(x, signer, sign_md(signer))) {
        goto err;
    }
    *out_cert = x;
    if (out_key != NULL) {
        *out_key = key;
    } else {
        EVP_PKEY_free(key);
    }
    return 1;

err:
    X509_free(x);
    EVP_PKEY_free(key);
    return 0;
}

static int make_ca(X509 **out_cert, EVP_PKEY **out_key, const char *cn,
                   enum tg_testpki_key_type type, X509 *issuer, EVP_PKEY *issuer_key, int64_t now) {
    struct tg_testpki_opts opts;
    tg_testpki_opts_init(&opts, cn);
    opts.san_is_cn = 0;
    opts.key_type = type;
    opts.is_ca = 1;
    opts.not_before = -(int64_t)TG_TESTPKI_CA_DAYS * TG_TESTPKI_SECS_PER_DAY;
    opts.not_after = (int64_t)TG_TESTPKI_CA_DAYS * TG_TESTPKI_SECS_PER_DAY;
    // A CA always gets a key of its own, so no CA ever shares a key with a leaf or another CA
    // (two CAs with one key would vouch for each other's certificates).
    opts.key = tg_testpki_key_new(type, 0);
    if (opts.key == NULL) {
        return 0;
    }
    int ok = tg_testpki_issue(out_cert, out_key, &opts, issuer, issuer_key, now);
    EVP_PKEY_free(opts.key);
    return ok;
}

int tg_testpki_ca(X509 **out_cert, EVP_PKEY **out_key, const char *cn,
                  enum tg_testpki_key_type type, int64_t now) {
    return make_ca(out_cert, out_key, cn, type, NULL, NULL, now);
}

int tg_testpki_intermediate(X509 **out_cert, EVP_PKEY **out_key, const char *cn,
                            enum tg_testpki_key_type type, X509 *ca, EVP_PKEY *ca_key,
                            int64_t now) {
    if (ca == NULL || ca_key == NULL) {
        return 0;
    }
    return make_ca(out_cert, out_key, cn, type, ca, ca_key, now);
}

// Files ------------------------------------------------------------------------------------------

int tg_testpki_write_certs(const char *path, X509 *const *certs, size_t num_certs) {
    BIO *bio = BIO_new_file(path, "w");
    if (bio == NULL) {
        return 0;
    }
    int ok = 1;
    for (size_t i = 0; ok && i < num_certs; i++) {
        ok = PEM_write_bio_X509(bio, certs[i]);
    }
    return BIO_free(bio) && ok;
}

int tg_testpki_write_key(const char *path, EVP_PKEY *key) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return 0;
    }
    BIO *bio = BIO_new_fd(fd, BIO_CLOSE);
    if (bio == NULL) {
        close(fd);
        return 0;
    }
    int ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
    return BIO_free(bio) && ok;
}

int tg_testpki_tmpdir(char *out, size_t out_len) {
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    int n = snprintf(out, out_len, "%s/tg-testpki-XXXXXX", base);
    if (n < 0 || (size_t)n >= out_len) {
        return 0;
    }
    return mkdtemp(out) != NULL;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int tg_testpki_rmtree(const char *dir) {
    return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}
