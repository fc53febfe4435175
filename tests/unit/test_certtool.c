// Unit tests of the certificate lifecycle commands (proxy/certtool.c): the FQDN check, the CSR
// builder, `tlsgate csr` (files, modes, refusals) and `tlsgate cert-check` over certificates made
// by testpki and written as PEM files, one certificate per rule it must fail.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "testpki.h"
#include "tlsgate/certtool.h"
#include "tlsgate/policy.h"

#define FQDN "sbc.example.com"
#define DAY ((int64_t)86400)

static struct {
    char dir[256];
    int64_t now;
    X509 *ca;
    EVP_PKEY *ca_key;
    X509 *inter;
    EVP_PKEY *inter_key;
    char ca_path[512];
} fx;

static int group_setup(void **state) {
    (void)state;
    fx.now = (int64_t)time(NULL); // cert-check reads the wall clock
    if (!tg_testpki_tmpdir(fx.dir, sizeof(fx.dir)) ||
        !tg_testpki_ca(&fx.ca, &fx.ca_key, "tlsgate test root", TG_TESTPKI_EC_P256, fx.now) ||
        !tg_testpki_intermediate(&fx.inter, &fx.inter_key, "tlsgate test intermediate",
                                 TG_TESTPKI_EC_P256, fx.ca, fx.ca_key, fx.now)) {
        return -1;
    }
    snprintf(fx.ca_path, sizeof(fx.ca_path), "%s/root.pem", fx.dir);
    return tg_testpki_write_certs(fx.ca_path, &fx.ca, 1) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    X509_free(fx.ca);
    EVP_PKEY_free(fx.ca_key);
    X509_free(fx.inter);
    EVP_PKEY_free(fx.inter_key);
    return tg_testpki_rmtree(fx.dir) ? 0 : -1;
}

static void path_in(char *out, size_t out_len, const char *name) {
    snprintf(out, out_len, "%s/%s", fx.dir, name);
}

// Captured output of one command run.
struct run {
    int rc;
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
};

static void run_free(struct run *r) {
    free(r->out);
    free(r->err);
}

// run_cmd runs |fn| with the NULL-terminated argument list, capturing its two streams.
static struct run run_cmd(int (*fn)(int, char **, FILE *, FILE *), ...) {
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, fn);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        assert_true(argc < 32);
        argv[argc++] = a;
    }
    va_end(ap);
    struct run r;
    memset(&r, 0, sizeof(r));
    FILE *out = open_memstream(&r.out, &r.out_len);
    FILE *err = open_memstream(&r.err, &r.err_len);
    assert_non_null(out);
    assert_non_null(err);
    r.rc = fn(argc, argv, out, err);
    fclose(out);
    fclose(err);
    assert_int_equal(ERR_peek_error(), 0);
    return r;
}

#define CSR(...) run_cmd(tg_certtool_csr_main, __VA_ARGS__, (char *)NULL)
#define CHECK(...) run_cmd(tg_certtool_cert_check_main, __VA_ARGS__, (char *)NULL)

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// FQDN check -----------------------------------------------------------------------------------

static void test_check_fqdn(void **state) {
    (void)state;
    static const char *const kGood[] = {
        "sbc.example.com",
        "Sbc.Example.COM",
        "a.b",
        "sbc-1.x9.example.net",
        "0sbc.example.c0m",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.b", // 64 bytes, the most a
                                                                            // CN holds
    };
    static const char *const kBad[] = {
        "",
        "sbc",
        "*.example.com",
        "sbc.example.com.",
        ".example.com",
        "sbc..example.com",
        "-sbc.example.com",
        "sbc-.example.com",
        "sbc_1.example.com",
        "sbc example.com",
        "192.0.2.1",
        "sbc.ex\xc3\xa4mple.com",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bc", // 65 bytes
    };
    char err[128];
    for (size_t i = 0; i < sizeof(kGood) / sizeof(kGood[0]); i++) {
        if (!tg_certtool_check_fqdn(kGood[i], err, sizeof(err))) {
            fail_msg("'%s' refused: %s", kGood[i], err);
        }
    }
    for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++) {
        err[0] = '\0';
        if (tg_certtool_check_fqdn(kBad[i], err, sizeof(err))) {
            fail_msg("'%s' accepted", kBad[i]);
        }
        assert_true(err[0] != '\0');
    }
    assert_int_equal(tg_certtool_check_fqdn(NULL, NULL, 0), 0);
}

// CSR builder ----------------------------------------------------------------------------------

// assert_csr checks |req|: signature, subject CN == |fqdn| byte for byte, the requested SAN and
// EKU extensions.
static void assert_csr(X509_REQ *req, const char *fqdn) {
    EVP_PKEY *pub = X509_REQ_get_pubkey(req);
    assert_non_null(pub);
    assert_int_equal(X509_REQ_verify(req, pub), 1);
    EVP_PKEY_free(pub);
    assert_int_equal(X509_REQ_get_signature_nid(req) == NID_sha256WithRSAEncryption ||
                         X509_REQ_get_signature_nid(req) == NID_ecdsa_with_SHA256,
                     1);

    X509_NAME *subject = X509_REQ_get_subject_name(req);
    assert_int_equal(X509_NAME_entry_count(subject), 1);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    assert_true(idx >= 0);
    ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    assert_int_equal(ASN1_STRING_length(cn), (int)strlen(fqdn));
    assert_memory_equal(ASN1_STRING_get0_data(cn), fqdn, strlen(fqdn));

    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    assert_non_null(exts);
    assert_int_equal(sk_X509_EXTENSION_num(exts), 2);
    GENERAL_NAMES *gens = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    assert_non_null(gens);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
    const GENERAL_NAME *gen = sk_GENERAL_NAME_value(gens, 0);
    assert_int_equal(gen->type, GEN_DNS);
    assert_int_equal(ASN1_STRING_length(gen->d.dNSName), (int)strlen(fqdn));
    assert_memory_equal(ASN1_STRING_get0_data(gen->d.dNSName), fqdn, strlen(fqdn));
    GENERAL_NAMES_free(gens);
    EXTENDED_KEY_USAGE *eku = X509V3_get_d2i(exts, NID_ext_key_usage, NULL, NULL);
    assert_non_null(eku);
    assert_int_equal(sk_ASN1_OBJECT_num(eku), 2);
    assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_server_auth);
    assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 1)), NID_client_auth);
    EXTENDED_KEY_USAGE_free(eku);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void test_csr_new(void **state) {
    (void)state;
    EVP_PKEY *rsa = tg_certtool_key_new(0, 2048);
    EVP_PKEY *ec = tg_certtool_key_new(1, 0);
    assert_non_null(rsa);
    assert_non_null(ec);
    assert_int_equal(EVP_PKEY_id(rsa), EVP_PKEY_RSA);
    assert_int_equal(EVP_PKEY_bits(rsa), 2048);
    assert_int_equal(EVP_PKEY_id(ec), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_bits(ec), 256);
    for (int i = 0; i < 2; i++) {
        X509_REQ *req = tg_certtool_csr_new(i == 0 ? rsa : ec, "Sbc.Example.COM");
        assert_non_null(req);
        assert_csr(req, "Sbc.Example.COM");
        X509_REQ_free(req);
    }
    // Negative: no key, no name, a name that is not a DNS name.
    assert_null(tg_certtool_csr_new(NULL, FQDN));
    assert_null(tg_certtool_csr_new(rsa, NULL));
    assert_null(tg_certtool_csr_new(rsa, "*.example.com"));
    assert_null(tg_certtool_csr_new(rsa, "sbc"));
    ERR_clear_error();
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

// `tlsgate csr` --------------------------------------------------------------------------------

static X509_REQ *read_csr(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509_REQ *req = PEM_read_X509_REQ(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(req);
    return req;
}

static EVP_PKEY *read_key(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(key);
    return key;
}

static mode_t file_mode(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

// assert_csr_files checks a key/CSR pair written by the command: key mode 0600, the CSR as
// assert_csr says, made for that key, and a key of |type| / |bits|.
static void assert_csr_files(const char *key_path, const char *csr_path, const char *fqdn, int type,
                             int bits) {
    assert_int_equal(file_mode(key_path), 0600);
    X509_REQ *req = read_csr(csr_path);
    EVP_PKEY *key = read_key(key_path);
    assert_csr(req, fqdn);
    EVP_PKEY *pub = X509_REQ_get_pubkey(req);
    assert_int_equal(EVP_PKEY_cmp(pub, key), 1);
    assert_int_equal(EVP_PKEY_id(key), type);
    assert_int_equal(EVP_PKEY_bits(key), bits);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
    X509_REQ_free(req);
}

static void test_csr_cmd_sizes(void **state) {
    (void)state;
    static const struct {
        const char *bits; // NULL: --ec
        int type;
        int size;
    } kCases[] = {{"2048", EVP_PKEY_RSA, 2048},
                  {"3072", EVP_PKEY_RSA, 3072},
                  {"4096", EVP_PKEY_RSA, 4096},
                  {NULL, EVP_PKEY_EC, 256}};
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        char key[512], csr[512];
        snprintf(key, sizeof(key), "%s/size%zu.key", fx.dir, i);
        snprintf(csr, sizeof(csr), "%s/size%zu.csr", fx.dir, i);
        struct run r =
            kCases[i].bits != NULL
                ? CSR("--fqdn", "Sbc.Example.COM", "--key-bits", kCases[i].bits, "--key-out", key,
                      "--csr-out", csr)
                : CSR("--fqdn", "Sbc.Example.COM", "--ec", "--key-out", key, "--csr-out", csr);
        if (r.rc != TG_CERTTOOL_OK) {
            fail_msg("case %zu: rc %d: %s", i, r.rc, r.err);
        }
        assert_csr_files(key, csr, "Sbc.Example.COM", kCases[i].type, kCases[i].size);
        run_free(&r);
    }
    // No --key-bits: RSA 2048.
    char key[512], csr[512];
    path_in(key, sizeof(key), "default.key");
    path_in(csr, sizeof(csr), "default.csr");
    struct run r = CSR("--fqdn", FQDN, "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    assert_csr_files(key, csr, FQDN, EVP_PKEY_RSA, 2048);
    run_free(&r);
}

static void test_csr_cmd_no_overwrite_and_force(void **state) {
    (void)state;
    char key[512], csr[512];
    path_in(key, sizeof(key), "exists.key");
    path_in(csr, sizeof(csr), "exists.csr");
    write_text(key, "old key\n");
    chmod(key, 0644);
    struct run r = CSR("--fqdn", FQDN, "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    assert_non_null(strstr(r.err, "refusing to overwrite"));
    assert_non_null(strstr(r.err, "exists (8 bytes, neither a private key nor a CSR)"));
    assert_non_null(strstr(r.err, "use --force"));
    run_free(&r);
    char *text = read_all(key);
    assert_string_equal(text, "old key\n");
    free(text);
    assert_int_equal(file_mode(key), 0644);
    assert_int_not_equal(access(csr, F_OK), 0); // nothing written for the CSR either

    // The CSR exists, the key does not: still refused, and no key left behind.
    unlink(key);
    write_text(csr, "old csr\n");
    r = CSR("--fqdn", FQDN, "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    run_free(&r);
    assert_int_not_equal(access(key, F_OK), 0);
    text = read_all(csr);
    assert_string_equal(text, "old csr\n");
    free(text);

    // --force replaces both; the key ends up 0600 whatever the old file had.
    write_text(key, "old key\n");
    chmod(key, 0644);
    r = CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", csr, "--force");
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    run_free(&r);
    assert_csr_files(key, csr, FQDN, EVP_PKEY_EC, 256);
}

// The refusal to overwrite says what the file holds: a key made earlier, or its CSR.
static void test_csr_cmd_refusal_names_contents(void **state) {
    (void)state;
    char key[512], csr[512], other_key[512], other_csr[512], msg[1200];
    path_in(key, sizeof(key), "named.key");
    path_in(csr, sizeof(csr), "named.csr");
    path_in(other_key, sizeof(other_key), "named2.key");
    path_in(other_csr, sizeof(other_csr), "named2.csr");
    struct run r = CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    run_free(&r);

    r = CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", other_csr);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    snprintf(msg, sizeof(msg),
             "tlsgate: csr: refusing to overwrite %s: it holds a private key; use --force to "
             "replace it\n",
             key);
    assert_string_equal(r.err, msg);
    run_free(&r);

    r = CSR("--fqdn", FQDN, "--ec", "--key-out", other_key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    snprintf(msg, sizeof(msg),
             "tlsgate: csr: refusing to overwrite %s: it holds a CSR; use --force to replace it\n",
             csr);
    assert_string_equal(r.err, msg);
    run_free(&r);
    assert_int_not_equal(access(other_key, F_OK), 0);
    assert_int_not_equal(access(other_csr, F_OK), 0);
}

// Key and CSR outputs that are one file are refused with or without --force, whatever the
// spelling; the files already there are left as they were.
static void test_csr_cmd_same_file(void **state) {
    (void)state;
    char key[512], csr[512], dotted[600], sym[512], hard[512], sub[512], via_sub[600];
    path_in(key, sizeof(key), "same.key");
    path_in(csr, sizeof(csr), "same.csr");
    snprintf(dotted, sizeof(dotted), "%s/./same.key", fx.dir);
    path_in(sub, sizeof(sub), "sub");
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(via_sub, sizeof(via_sub), "%s/sub/../same.key", fx.dir);
    const char *const spellings[] = {key, dotted, via_sub};
    for (size_t force = 0; force < 2; force++) {
        for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
            struct run r =
                force ? CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", spellings[i],
                            "--force")
                      : CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", spellings[i]);
            if (r.rc != TG_CERTTOOL_USAGE)
                fail_msg("force %zu spelling %zu: rc %d: %s", force, i, r.rc, r.err);
            assert_non_null(strstr(r.err, "are the same file"));
            run_free(&r);
            assert_int_not_equal(access(key, F_OK), 0); // nothing written
        }
    }

    // Existing files: a hard link and a symbolic link to the key are the key.
    struct run r = CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    run_free(&r);
    char *before = read_all(key);
    path_in(hard, sizeof(hard), "same-hard.key");
    path_in(sym, sizeof(sym), "same-link.key");
    assert_int_equal(link(key, hard), 0);
    assert_int_equal(symlink(key, sym), 0);
    r = CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", hard, "--force");
    assert_int_equal(r.rc, TG_CERTTOOL_USAGE);
    run_free(&r);
    r = CSR("--fqdn", FQDN, "--ec", "--key-out", sym, "--csr-out", key, "--force");
    assert_int_equal(r.rc, TG_CERTTOOL_USAGE);
    run_free(&r);
    char *after = read_all(key);
    assert_string_equal(before, after);
    free(before);
    free(after);
    assert_int_equal(file_mode(key), 0600);

    // Two different files in one directory are fine, spelled either way.
    assert_int_equal(tg_certtool_same_file(key, csr), 0);
    assert_int_equal(tg_certtool_same_file(dotted, key), 1);
    assert_int_equal(tg_certtool_same_file(hard, sym), 1);
    assert_int_equal(tg_certtool_same_file("no-such-dir/a", "no-such-dir/b"), 0);
    assert_int_equal(tg_certtool_same_file("relative.key", "./relative.key"), 1);
}

static void test_pem_kind(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } kCases[] = {
        {"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "a private key"},
        {"-----BEGIN RSA PRIVATE KEY-----\n", "a private key"},
        {"-----BEGIN EC PRIVATE KEY-----\n", "a private key"},
        {"-----BEGIN ENCRYPTED PRIVATE KEY-----\n", "a private key"},
        {"-----BEGIN CERTIFICATE REQUEST-----\n", "a CSR"},
        {"-----BEGIN NEW CERTIFICATE REQUEST-----\n", "a CSR"},
        {"-----BEGIN CERTIFICATE-----\n", "a certificate"},
        // The most valuable block wins, wherever it is.
        {"-----BEGIN CERTIFICATE-----\nx\n-----BEGIN PRIVATE KEY-----\n", "a private key"},
        {"junk\n-----BEGIN CERTIFICATE REQUEST-----\n", "a CSR"},
        // Negative cases: no PEM block, a broken header, a label of no interest.
        {"", NULL},
        {"precious\n", NULL},
        {"-----BEGIN ", NULL},
        {"----BEGIN PRIVATE KEY-----\n", NULL},
        {"-----BEGIN PUBLIC KEY-----\n", NULL},
        {"-----BEGIN X509 CRL-----\n", NULL},
        {"-----END PRIVATE KEY-----\n", NULL},
    };
    for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
        const char *got =
            tg_certtool_pem_kind((const uint8_t *)kCases[i].text, strlen(kCases[i].text));
        if (kCases[i].want == NULL ? got != NULL : got == NULL || strcmp(got, kCases[i].want) != 0)
            fail_msg("case %zu: got %s, want %s", i, got ? got : "NULL",
                     kCases[i].want ? kCases[i].want : "NULL");
    }
}

static void test_csr_cmd_weak_keys(void **state) {
    (void)state;
    char key[512], csr[512];
    path_in(key, sizeof(key), "weak.key");
    path_in(csr, sizeof(csr), "weak.csr");
    struct run r = CSR("--fqdn", FQDN, "--key-bits", "1024", "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_USAGE);
    assert_non_null(strstr(r.err, "--allow-weak"));
    run_free(&r);
    assert_int_not_equal(access(key, F_OK), 0);

    r = CSR("--fqdn", FQDN, "--key-bits", "1024", "--allow-weak", "--key-out", key, "--csr-out",
            csr);
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    assert_non_null(strstr(r.err, "warning"));
    run_free(&r);
    assert_csr_files(key, csr, FQDN, EVP_PKEY_RSA, 1024);

    // Under 1024 is refused even with --allow-weak.
    r = CSR("--fqdn", FQDN, "--key-bits", "512", "--allow-weak", "--force", "--key-out", key,
            "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_USAGE);
    run_free(&r);
}

static void test_csr_cmd_usage(void **state) {
    (void)state;
    char key[512], csr[512];
    path_in(key, sizeof(key), "usage.key");
    path_in(csr, sizeof(csr), "usage.csr");
    struct run cases[] = {
        CSR("--key-out", key, "--csr-out", csr),
        CSR("--fqdn", FQDN, "--csr-out", csr),
        CSR("--fqdn", FQDN, "--key-out", key),
        CSR("--fqdn", "sbc", "--key-out", key, "--csr-out", csr),
        CSR("--fqdn", "*.example.com", "--key-out", key, "--csr-out", csr),
        CSR("--fqdn", FQDN, "--key-bits", "2000", "--key-out", key, "--csr-out", csr),
        CSR("--fqdn", FQDN, "--key-bits", "two", "--key-out", key, "--csr-out", csr),
        CSR("--fqdn", FQDN, "--ec", "--key-bits", "2048", "--key-out", key, "--csr-out", csr),
        CSR("--fqdn", FQDN, "--key-out", key, "--csr-out", csr, "--colour"),
        CSR("--fqdn"),
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].rc != TG_CERTTOOL_USAGE) {
            fail_msg("case %zu: rc %d", i, cases[i].rc);
        }
        assert_non_null(strstr(cases[i].err, "usage:"));
        run_free(&cases[i]);
    }
    assert_int_not_equal(access(key, F_OK), 0);
    assert_int_not_equal(access(csr, F_OK), 0);
    struct run r = CSR("--help");
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    assert_non_null(strstr(r.out, "usage:"));
    run_free(&r);
}

static void test_csr_cmd_unwritable(void **state) {
    (void)state;
    // The CSR's directory does not exist: exit 1, and the key written first is removed again.
    char key[512], csr[512];
    path_in(key, sizeof(key), "orphan.key");
    path_in(csr, sizeof(csr), "no-such-dir/orphan.csr");
    struct run r = CSR("--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", csr);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    run_free(&r);
    assert_int_not_equal(access(key, F_OK), 0);
}

// `tlsgate cert-check` --------------------------------------------------------------------------

static const char *const kRules[] = {
    "not_self_signed", "chain_length",     "chain_order", "chain",
    "cn_matches_fqdn", "san_matches_fqdn", "key_type",    "key_size",
    "key_matches",     "validity",         "eku"};
#define NUM_RULES (sizeof(kRules) / sizeof(kRules[0]))

// A certificate case on disk.
struct cert_files {
    char cert[512];
    char key[512];
};

// write_case issues |o| from |issuer| (NULL: self-signed) and writes it (followed by the
// intermediate when |with_inter|) and its key under |name|.
static void write_case(struct cert_files *f, const char *name, const struct tg_testpki_opts *o,
                       X509 *issuer, EVP_PKEY *issuer_key, int with_inter) {
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    assert_int_equal(tg_testpki_issue(&leaf, &key, o, issuer, issuer_key, fx.now), 1);
    snprintf(f->cert, sizeof(f->cert), "%s/%s.pem", fx.dir, name);
    snprintf(f->key, sizeof(f->key), "%s/%s.key", fx.dir, name);
    X509 *certs[2] = {leaf, fx.inter};
    assert_int_equal(tg_testpki_write_certs(f->cert, certs, with_inter ? 2 : 1), 1);
    assert_int_equal(tg_testpki_write_key(f->key, key), 1);
    X509_free(leaf);
    EVP_PKEY_free(key);
}

// rule_line finds "STATUS rule detail" for |rule| in |out|; returns the status word's start.
static const char *rule_line(const char *out, const char *rule) {
    for (const char *line = out; line != NULL && *line != '\0';) {
        const char *eol = strchr(line, '\n');
        size_t len = eol != NULL ? (size_t)(eol - line) : strlen(line);
        if (len > 5 && strncmp(line + 5, rule, strlen(rule)) == 0 &&
            line[5 + strlen(rule)] == ' ') {
            return line;
        }
        line = eol != NULL ? eol + 1 : NULL;
    }
    fail_msg("no line for rule %s in:\n%s", rule, out);
    return NULL;
}

// assert_only checks that |rule| has |status| and every other rule PASSes, in |out|.
static void assert_only(const char *out, const char *rule, const char *status) {
    for (size_t i = 0; i < NUM_RULES; i++) {
        const char *want = strcmp(kRules[i], rule) == 0 ? status : "PASS";
        const char *line = rule_line(out, kRules[i]);
        if (strncmp(line, want, 4) != 0) {
            fail_msg("rule %s: want %s in:\n%s", kRules[i], want, out);
        }
    }
}

// check_case runs cert-check on |f| with its key, FQDN and the root, expects |rc|, that only
// |rule| has |status|, and (if not NULL) that the rule's line holds |detail|.
static void check_case(const struct cert_files *f, const char *key, int rc, const char *rule,
                       const char *status, const char *detail) {
    struct run r = CHECK("--cert", f->cert, "--key", key != NULL ? key : f->key, "--fqdn", FQDN,
                         "--ca", fx.ca_path);
    if (r.rc != rc) {
        fail_msg("%s: rc %d, want %d:\n%s%s", f->cert, r.rc, rc, r.out, r.err);
    }
    assert_only(r.out, rule, status);
    if (detail != NULL) {
        const char *line = rule_line(r.out, rule);
        const char *eol = strchr(line, '\n');
        const char *hit = strstr(line, detail);
        if (hit == NULL || (eol != NULL && hit > eol)) {
            fail_msg("rule %s: no '%s' in:\n%s", rule, detail, r.out);
        }
    }
    run_free(&r);
}

static void test_check_compliant(void **state) {
    (void)state;
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    struct cert_files f;
    write_case(&f, "good", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_OK, "", "PASS", NULL);
    o.key_type = TG_TESTPKI_EC_P256;
    write_case(&f, "good-ec", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_OK, "", "PASS", NULL);
}

static void test_check_one_rule_each(void **state) {
    (void)state;
    struct tg_testpki_opts o;
    struct cert_files f;
    static const char *const kCaseSan[] = {"Sbc.Example.com"};
    static const char *const kRightSan[] = {FQDN};

    tg_testpki_opts_init(&o, FQDN);
    write_case(&f, "missing-inter", &o, fx.inter, fx.inter_key, 0);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "chain", "FAIL", "CN=tlsgate test intermediate");

    tg_testpki_opts_init(&o, "Sbc.example.com");
    o.dns = kRightSan;
    o.num_dns = 1;
    write_case(&f, "cn-case", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "cn_matches_fqdn", "FAIL", "only in case");

    tg_testpki_opts_init(&o, FQDN);
    o.san_is_cn = 0;
    write_case(&f, "san-missing", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "san_matches_fqdn", "FAIL", "no DNS SAN");

    tg_testpki_opts_init(&o, FQDN);
    o.dns = kCaseSan;
    o.num_dns = 1;
    write_case(&f, "san-case", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "san_matches_fqdn", "FAIL", "only in case");

    tg_testpki_opts_init(&o, FQDN);
    o.rsa_bits = 1024;
    write_case(&f, "rsa1024", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_OK, "key_size", "WARN", "1024");

    tg_testpki_opts_init(&o, FQDN);
    write_case(&f, "mismatch", &o, fx.inter, fx.inter_key, 1);
    EVP_PKEY *other = tg_testpki_key_new(TG_TESTPKI_RSA, 2048);
    char other_path[512];
    path_in(other_path, sizeof(other_path), "other.key");
    assert_int_equal(tg_testpki_write_key(other_path, other), 1);
    EVP_PKEY_free(other);
    check_case(&f, other_path, TG_CERTTOOL_FAIL, "key_matches", "FAIL", "does not match");

    tg_testpki_opts_init(&o, FQDN);
    o.not_before = -60 * DAY;
    o.not_after = -DAY;
    write_case(&f, "expired", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "validity", "FAIL", "expired");

    tg_testpki_opts_init(&o, FQDN);
    o.not_before = 10 * DAY;
    o.not_after = 400 * DAY;
    write_case(&f, "not-yet", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "validity", "FAIL", "not valid for another");

    tg_testpki_opts_init(&o, FQDN);
    o.not_after = 10 * DAY;
    write_case(&f, "ten-days", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_OK, "validity", "WARN", "under 30 days");

    tg_testpki_opts_init(&o, FQDN);
    o.eku = TG_TESTPKI_EKU_SERVER;
    write_case(&f, "no-client-eku", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "eku", "FAIL", "clientAuth");
}

static void test_check_small_rsa(void **state) {
    (void)state;
    EVP_PKEY *small = tg_testpki_key_new(TG_TESTPKI_RSA, 512);
    ERR_clear_error();
    if (small == NULL) {
        skip(); // this BoringSSL makes no 512-bit keys; the integration test covers it
    }
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    o.key = small;
    struct cert_files f;
    write_case(&f, "rsa512", &o, fx.inter, fx.inter_key, 1);
    check_case(&f, NULL, TG_CERTTOOL_FAIL, "key_size", "FAIL", "512");
    EVP_PKEY_free(small);
}

static void test_check_self_signed(void **state) {
    (void)state;
    // Without --ca (chain skipped) only not_self_signed fails.
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    struct cert_files f;
    write_case(&f, "self", &o, NULL, NULL, 0);
    struct run r = CHECK("--cert", f.cert, "--key", f.key, "--fqdn", FQDN);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    assert_only(r.out, "not_self_signed", "FAIL");
    assert_non_null(strstr(rule_line(r.out, "not_self_signed"), "self-signed"));
    run_free(&r);
    // Against a root, the chain fails as well, and says the certificate is its own issuer.
    r = CHECK("--cert", f.cert, "--fqdn", FQDN, "--ca", fx.ca_path);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    assert_int_equal(strncmp(rule_line(r.out, "chain"), "FAIL", 4), 0);
    assert_non_null(strstr(rule_line(r.out, "chain"), "own issuer"));
    run_free(&r);
}

static void test_check_optional_inputs(void **state) {
    (void)state;
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    struct cert_files f;
    write_case(&f, "plain", &o, fx.inter, fx.inter_key, 1);
    // No --fqdn, --key or --ca: the names come from the CN, the rest is skipped with a note.
    struct run r = CHECK("--cert", f.cert);
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    assert_only(r.out, "", "PASS");
    assert_non_null(strstr(rule_line(r.out, "chain"), "skipped"));
    assert_non_null(strstr(rule_line(r.out, "key_matches"), "skipped"));
    assert_non_null(strstr(rule_line(r.out, "cn_matches_fqdn"), "taken from the CN"));
    assert_non_null(strstr(rule_line(r.out, "san_matches_fqdn"), "taken from the CN"));
    assert_non_null(strstr(r.out, "result: PASS"));
    run_free(&r);

    // No CN and no --fqdn: the name rules are skipped.
    tg_testpki_opts_init(&o, NULL);
    write_case(&f, "no-cn", &o, fx.inter, fx.inter_key, 1);
    r = CHECK("--cert", f.cert);
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    assert_non_null(strstr(rule_line(r.out, "cn_matches_fqdn"), "skipped"));
    run_free(&r);
    // ... but with --fqdn, a missing CN fails.
    r = CHECK("--cert", f.cert, "--fqdn", FQDN);
    assert_int_equal(r.rc, TG_CERTTOOL_FAIL);
    assert_int_equal(strncmp(rule_line(r.out, "cn_matches_fqdn"), "FAIL", 4), 0);
    run_free(&r);
}

static void test_check_json(void **state) {
    (void)state;
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    o.rsa_bits = 1024;
    struct cert_files f;
    write_case(&f, "json", &o, fx.inter, fx.inter_key, 1);
    struct run r =
        CHECK("--cert", f.cert, "--key", f.key, "--fqdn", FQDN, "--ca", fx.ca_path, "--json");
    assert_int_equal(r.rc, TG_CERTTOOL_OK);
    // One line, one object, the fields in order; the Python test parses it fully.
    assert_int_equal(strchr(r.out, '\n'), r.out + strlen(r.out) - 1);
    assert_int_equal(strncmp(r.out, "{\"cert\":\"", 9), 0);
    assert_non_null(strstr(r.out, "\"subject\":\"CN=" FQDN));
    assert_non_null(strstr(r.out, "\"issuer\":\"CN=tlsgate test intermediate"));
    assert_non_null(strstr(r.out, "\"serial\":\""));
    assert_non_null(strstr(r.out, "\"not_after\":\"20"));
    assert_non_null(strstr(r.out, "{\"rule\":\"key_size\",\"status\":\"WARN\",\"detail\":\"RSA "
                                  "1024 bits"));
    assert_non_null(strstr(r.out, "],\"result\":\"WARN\"}\n"));
    run_free(&r);
}

static void test_check_usage_and_unreadable(void **state) {
    (void)state;
    char garbage[512], missing[512];
    path_in(garbage, sizeof(garbage), "garbage.pem");
    path_in(missing, sizeof(missing), "missing.pem");
    write_text(garbage, "not a certificate\n");
    struct cert_files f;
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    write_case(&f, "usage", &o, fx.inter, fx.inter_key, 1);
    struct run cases[] = {
        CHECK("--json"),
        CHECK("--cert"),
        CHECK("--cert", f.cert, "--colour"),
        CHECK("--cert", f.cert, "--fqdn", "*.example.com"),
        CHECK("--cert", missing),
        CHECK("--cert", garbage),
        CHECK("--cert", f.cert, "--key", garbage),
        CHECK("--cert", f.cert, "--key", f.cert),
        CHECK("--cert", f.cert, "--ca", garbage),
        CHECK("--cert", f.cert, "--ca", missing),
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].rc != TG_CERTTOOL_USAGE) {
            fail_msg("case %zu: rc %d: %s", i, cases[i].rc, cases[i].err);
        }
        assert_true(cases[i].err_len > 0);
        assert_int_equal(cases[i].out_len, 0);
        run_free(&cases[i]);
    }
}

// The chain rule of tg_policy_check_own names a missing issuer (the extension made for
// cert-check), directly, without files.
static void test_policy_names_missing_issuer(void **state) {
    (void)state;
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, FQDN);
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    assert_int_equal(tg_testpki_issue(&leaf, &key, &o, fx.inter, fx.inter_key, fx.now), 1);
    X509_STORE *trust = X509_STORE_new();
    assert_non_null(trust);
    assert_int_equal(X509_STORE_add_cert(trust, fx.ca), 1);
    struct tg_rule_result r[TG_OWN_RULES_MAX];
    size_t n = tg_policy_check_own(FQDN, leaf, NULL, key, trust, fx.now, r, TG_OWN_RULES_MAX);
    assert_int_equal(n, NUM_RULES);
    assert_string_equal(r[3].rule, "chain");
    assert_int_equal(r[3].status, TG_RULE_FAIL);
    assert_non_null(strstr(r[3].detail, "issuer 'CN=tlsgate test intermediate"));
    assert_non_null(strstr(r[3].detail, "of 'CN=" FQDN));
    assert_int_equal(ERR_peek_error(), 0);

    char name[16];
    assert_int_equal(tg_policy_name_string(name, sizeof(name), X509_get_subject_name(fx.ca)), 1);
    assert_int_equal(strlen(name), sizeof(name) - 1); // cut, NUL-terminated
    assert_int_equal(tg_policy_name_string(name, sizeof(name), NULL), 0);
    assert_string_equal(name, "");
    X509_STORE_free(trust);
    EVP_PKEY_free(key);
    X509_free(leaf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_fqdn),
        cmocka_unit_test(test_csr_new),
        cmocka_unit_test(test_csr_cmd_sizes),
        cmocka_unit_test(test_csr_cmd_no_overwrite_and_force),
        cmocka_unit_test(test_csr_cmd_refusal_names_contents),
        cmocka_unit_test(test_csr_cmd_same_file),
        cmocka_unit_test(test_pem_kind),
        cmocka_unit_test(test_csr_cmd_weak_keys),
        cmocka_unit_test(test_csr_cmd_usage),
        cmocka_unit_test(test_csr_cmd_unwritable),
        cmocka_unit_test(test_check_compliant),
        cmocka_unit_test(test_check_one_rule_each),
        cmocka_unit_test(test_check_small_rsa),
        cmocka_unit_test(test_check_self_signed),
        cmocka_unit_test(test_check_optional_inputs),
        cmocka_unit_test(test_check_json),
        cmocka_unit_test(test_check_usage_and_unreadable),
        cmocka_unit_test(test_policy_names_missing_issuer),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
