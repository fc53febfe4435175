// Certificate lifecycle commands: `tlsgate csr` and `tlsgate cert-check`.
//
// Three layers, top to bottom of this file: builders that do no I/O (name check, key, CSR,
// report rendering), file helpers (read PEM, create a file without replacing one), and the two
// commands that parse arguments and tie them together. The certificate rules themselves live in
// policy.c (tg_policy_check_own); `tlsgate check` runs the same function, so the rule names and
// verdicts agree.

#include "tlsgate/certtool.h"
#include "tlsgate/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tlsgate/policy.h"

#define TG_LABEL_MAX 63
#define TG_RSA_DEFAULT_BITS 2048
#define TG_RSA_WEAK_FLOOR 1024
#define TG_RSA_RECOMMENDED 2048

// Names --------------------------------------------------------------------------------------

static int is_ldh(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

static void set_err(char *err, size_t err_len, const char *msg) {
    if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s", msg);
    }
}

// check_label checks the |len| bytes at |label|; |last| marks the top-level label.
static int check_label(const char *label, size_t len, int last, char *err, size_t err_len) {
    if (len == 0) {
        set_err(err, err_len, "empty label (two dots in a row, or a leading or trailing dot)");
        return 0;
    }
    if (len > TG_LABEL_MAX) {
        set_err(err, err_len, "a label is longer than 63 characters");
        return 0;
    }
    int all_digits = 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)label[i];
        if (c == '*') {
            set_err(err, err_len, "wildcards are not allowed: the SBC needs its exact FQDN");
            return 0;
        }
        if (!is_ldh(c)) {
            set_err(err, err_len, "only letters, digits, hyphens and dots are allowed");
            return 0;
        }
        if (c < '0' || c > '9') {
            all_digits = 0;
        }
    }
    if (label[0] == '-' || label[len - 1] == '-') {
        set_err(err, err_len, "a label starts or ends with a hyphen");
        return 0;
    }
    if (last && all_digits) {
        set_err(err, err_len, "an IP address is not an FQDN (the last label is all digits)");
        return 0;
    }
    return 1;
}

int tg_certtool_check_fqdn(const char *name, char *err, size_t err_len) {
    if (name == NULL || name[0] == '\0') {
        set_err(err, err_len, "empty name");
        return 0;
    }
    size_t len = strlen(name);
    if (len > TG_CERTTOOL_CN_MAX) {
        set_err(err, err_len, "longer than 64 characters, the most a certificate CN can hold");
        return 0;
    }
    if (memchr(name, '.', len) == NULL) {
        set_err(err, err_len, "not fully qualified (no dot)");
        return 0;
    }
    const char *label = name;
    for (;;) {
        const char *dot = strchr(label, '.');
        size_t label_len = dot != NULL ? (size_t)(dot - label) : strlen(label);
        if (!check_label(label, label_len, dot == NULL, err, err_len)) {
            return 0;
        }
        if (dot == NULL) {
            return 1;
        }
        label = dot + 1;
    }
}

// Keys and requests ----------------------------------------------------------------------------

EVP_PKEY *tg_certtool_key_new(int ec, unsigned rsa_bits) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(ec ? EVP_PKEY_EC : EVP_PKEY_RSA, NULL);
    EVP_PKEY *key = NULL;
    if (ctx == NULL || !EVP_PKEY_keygen_init(ctx)) {
        goto out;
    }
    if (ec ? !EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, NID_X9_62_prime256v1)
           : !EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)rsa_bits)) {
        goto out;
    }
    if (!EVP_PKEY_keygen(ctx, &key)) {
        key = NULL;
    }
out:
    EVP_PKEY_CTX_free(ctx);
    return key;
}

// csr_extensions builds the requested extensions: subjectAltName DNS:|fqdn| and
// extendedKeyUsage serverAuth, clientAuth. NULL on failure.
static STACK_OF(X509_EXTENSION) *csr_extensions(const char *fqdn) {
    STACK_OF(X509_EXTENSION) *exts = NULL;
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    int ok = gens != NULL && gen != NULL && dns != NULL && eku != NULL &&
             ASN1_STRING_set(dns, fqdn, (int)strlen(fqdn));
    if (ok) {
        GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
        dns = NULL;
        ok = sk_GENERAL_NAME_push(gens, gen) != 0;
    }
    if (ok) {
        gen = NULL;
        ok = sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) != 0 &&
             sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) != 0;
    }
    ok = ok && X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1 &&
         X509V3_add1_i2d(&exts, NID_ext_key_usage, eku, 0, X509V3_ADD_APPEND) == 1;
    if (!ok) {
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        exts = NULL;
    }
    ASN1_IA5STRING_free(dns);
    GENERAL_NAME_free(gen);
    GENERAL_NAMES_free(gens);
    EXTENDED_KEY_USAGE_free(eku); // the objects are static ones from OBJ_nid2obj
    return exts;
}

X509_REQ *tg_certtool_csr_new(EVP_PKEY *key, const char *fqdn) {
    if (key == NULL || fqdn == NULL || !tg_certtool_check_fqdn(fqdn, NULL, 0)) {
        return NULL;
    }
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subject = X509_NAME_new();
    STACK_OF(X509_EXTENSION) *exts = csr_extensions(fqdn);
    int ok = req != NULL && subject != NULL && exts != NULL &&
             X509_REQ_set_version(req, X509_REQ_VERSION_1) &&
             X509_NAME_add_entry_by_NID(subject, NID_commonName, V_ASN1_UTF8STRING,
                                        (const uint8_t *)fqdn, (int)strlen(fqdn), -1, 0) &&
             X509_REQ_set_subject_name(req, subject) && X509_REQ_add_extensions(req, exts) &&
             X509_REQ_set_pubkey(req, key) && X509_REQ_sign(req, key, EVP_sha256()) > 0;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(subject);
    if (!ok) {
        X509_REQ_free(req);
        return NULL;
    }
    return req;
}

// pem_label_kind ranks one PEM label (the text between `-----BEGIN ` and `-----`): 3 a
// private key of any form, 2 a certificate, 1 a certificate request, 0 anything else.
static int pem_label_kind(const char *label, size_t len) {
    static const char kKey[] = "PRIVATE KEY";
    static const char kReq[] = "CERTIFICATE REQUEST";
    static const char kCert[] = "CERTIFICATE";
    if (len >= sizeof(kKey) - 1 &&
        memcmp(label + len - (sizeof(kKey) - 1), kKey, sizeof(kKey) - 1) == 0) {
        return 3;
    }
    if (len >= sizeof(kReq) - 1 &&
        memcmp(label + len - (sizeof(kReq) - 1), kReq, sizeof(kReq) - 1) == 0) {
        return 1;
    }
    if (len >= sizeof(kCert) - 1 &&
        memcmp(label + len - (sizeof(kCert) - 1), kCert, sizeof(kCert) - 1) == 0) {
        return 2;
    }
    return 0;
}

const char *tg_certtool_pem_kind(const uint8_t *data, size_t len) {
    static const char kBegin[] = "-----BEGIN ";
    static const char *const kNames[] = {NULL, "a CSR", "a certificate", "a private key"};
    int best = 0;
    size_t pos = 0;
    while (pos + sizeof(kBegin) - 1 <= len) {
        const uint8_t *hit = memchr(data + pos, '-', len - pos);
        if (hit == NULL) {
            break;
        }
        pos = (size_t)(hit - data);
        if (len - pos < sizeof(kBegin) - 1 || memcmp(hit, kBegin, sizeof(kBegin) - 1) != 0) {
            pos++;
            continue;
        }
        size_t start = pos + sizeof(kBegin) - 1, end = start;
        while (end < len && end - start < 64 && data[end] != '-' && data[end] != '\n') {
            end++;
        }
        int kind = pem_label_kind((const char *)data + start, end - start);
        best = kind > best ? kind : best;
        pos = end;
    }
    return kNames[best];
}

// File helpers ---------------------------------------------------------------------------------

// file_id identifies the file a path names: its device and inode when it exists (symbolic links
// followed), else the real path of its directory joined with its last component.
struct file_id {
    int exists;
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX + NAME_MAX + 2];
};

static void file_id_of(struct file_id *out, const char *path) {
    memset(out, 0, sizeof(*out));
    struct stat st;
    if (stat(path, &st) == 0) {
        out->exists = 1;
        out->dev = st.st_dev;
        out->ino = st.st_ino;
        return;
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    char dir[PATH_MAX];
    char real[PATH_MAX];
    size_t dir_len = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
    if (dir_len >= sizeof(dir)) {
        snprintf(out->path, sizeof(out->path), "%s", path);
        return;
    }
    memcpy(dir, dir_len > 0 ? path : ".", dir_len > 0 ? dir_len : 1);
    dir[dir_len > 0 ? dir_len : 1] = '\0';
    // A directory that cannot be resolved (missing) is compared as written: writing into it
    // fails anyway.
    if (base[0] == '\0' || realpath(dir, real) == NULL) {
        snprintf(out->path, sizeof(out->path), "%s", path);
        return;
    }
    snprintf(out->path, sizeof(out->path), "%s/%s", strcmp(real, "/") == 0 ? "" : real, base);
}

int tg_certtool_same_file(const char *a, const char *b) {
    struct file_id ia, ib;
    file_id_of(&ia, a);
    file_id_of(&ib, b);
    if (ia.exists != ib.exists) {
        return 0;
    }
    if (ia.exists) {
        return ia.dev == ib.dev && ia.ino == ib.ino;
    }
    return strcmp(ia.path, ib.path) == 0;
}

// describe_existing words what replacing the existing |path| would lose, for a refusal:
// `it holds a private key`, `it holds a CSR`, `it exists (12 bytes, neither a private key nor
// a CSR)`.
static void describe_existing(const char *path, const struct stat *lst, char *out, size_t out_len) {
    if (S_ISLNK(lst->st_mode)) {
        snprintf(out, out_len, "it is a symbolic link (--force replaces the link, not its target)");
        return;
    }
    if (S_ISDIR(lst->st_mode)) {
        snprintf(out, out_len, "it is a directory");
        return;
    }
    if (!S_ISREG(lst->st_mode)) {
        snprintf(out, out_len, "it exists and is not a regular file");
        return;
    }
    uint8_t buf[65536];
    ssize_t n = -1;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        do {
            n = read(fd, buf, sizeof(buf));
        } while (n < 0 && errno == EINTR);
        int saved = errno;
        close(fd);
        errno = saved;
    }
    if (n < 0) {
        snprintf(out, out_len, "it exists (unreadable: %s)", strerror(errno));
        return;
    }
    const char *kind = tg_certtool_pem_kind(buf, (size_t)n);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (kind != NULL) {
        snprintf(out, out_len, "it holds %s", kind);
        return;
    }
    snprintf(out, out_len, "it exists (%lld bytes, neither a private key nor a CSR)",
             (long long)lst->st_size);
}

// write_all writes |len| bytes of |data| to |fd|. Returns 1 on success.
static int write_all(int fd, const uint8_t *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 0;
        }
        data += n;
        len -= (size_t)n;
    }
    return 1;
}

// write_fd_file creates |path| with O_CREAT|O_EXCL and |mode| (never following a link, never
// replacing a file), writes |data| and syncs it. On failure nothing is left behind and errno
// says why. Returns 1 on success.
static int write_fd_file(const char *path, const uint8_t *data, size_t len, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        return 0;
    }
    if (!write_all(fd, data, len) || fsync(fd) != 0) {
        int saved = errno;
        close(fd);
        unlink(path);
        errno = saved;
        return 0;
    }
    if (close(fd) != 0) {
        int saved = errno;
        unlink(path);
        errno = saved;
        return 0;
    }
    return 1;
}

// write_new_file writes |data| to |path| with |mode|. Without |force| the file must not exist;
// with it, the data goes to a new file beside |path| which then replaces |path| by rename, so
// the result has |mode| whatever the old file had and is never seen half-written. Returns 1 on
// success; otherwise 0 with a reason in |err|.
static int write_new_file(const char *path, const uint8_t *data, size_t len, mode_t mode, int force,
                          char *err, size_t err_len) {
    if (!force) {
        if (write_fd_file(path, data, len, mode)) {
            return 1;
        }
        snprintf(err, err_len, "%s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (not replaced; --force replaces it)" : "");
        return 0;
    }
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.tlsgate-new-%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        snprintf(err, err_len, "%s: path too long", path);
        return 0;
    }
    if (!write_fd_file(tmp, data, len, mode)) {
        snprintf(err, err_len, "%s: %s", tmp, strerror(errno));
        return 0;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return 0;
    }
    return 1;
}

// Argument helpers ------------------------------------------------------------------------------

// take_value returns the value of option |argv[*i]| (the next argument) and advances |*i|, or
// NULL (with a message) when it is missing.
static const char *take_value(int argc, char **argv, int *i, FILE *err) {
    if (*i + 1 >= argc || argv[*i + 1][0] == '\0') {
        fprintf(err, "tlsgate: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

// parse_bits parses a decimal key size. Returns 1 on success.
static int parse_bits(const char *s, unsigned *out) {
    unsigned long v = 0;
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > 100000) {
            return 0;
        }
        v = v * 10 + (unsigned long)(*s - '0');
    }
    *out = (unsigned)v;
    return 1;
}

// `tlsgate csr` ---------------------------------------------------------------------------------

static void csr_usage(FILE *f) {
    fprintf(f, "usage: tlsgate csr --fqdn NAME [--key-bits 2048|3072|4096 | --ec] --key-out FILE "
               "--csr-out FILE [--force] [--allow-weak]\n"
               "  a new private key (mode 0600) and a CSR with CN=NAME, DNS SAN=NAME (case kept),\n"
               "  EKU serverAuth + clientAuth, signed with SHA-256. --ec: ECDSA P-256.\n"
               "  --allow-weak permits --key-bits 1024. exit: 0 written, 1 failure, 2 usage\n");
}

struct csr_opts {
    const char *fqdn;
    const char *key_out;
    const char *csr_out;
    unsigned bits; // 0: not given
    int ec;
    int force;
    int allow_weak;
    int help;
};

static int csr_parse(int argc, char **argv, struct csr_opts *o, FILE *err) {
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--fqdn") == 0      ? &o->fqdn
                            : strcmp(a, "--key-out") == 0 ? &o->key_out
                            : strcmp(a, "--csr-out") == 0 ? &o->csr_out
                                                          : NULL;
        if (slot != NULL) {
            if ((*slot = take_value(argc, argv, &i, err)) == NULL) {
                return 0;
            }
        } else if (strcmp(a, "--key-bits") == 0) {
            const char *v = take_value(argc, argv, &i, err);
            if (v == NULL) {
                return 0;
            }
            if (!parse_bits(v, &o->bits)) {
                fprintf(err, "tlsgate: --key-bits: '%s' is not a number\n", v);
                return 0;
            }
        } else if (strcmp(a, "--ec") == 0) {
            o->ec = 1;
        } else if (strcmp(a, "--force") == 0) {
            o->force = 1;
        } else if (strcmp(a, "--allow-weak") == 0) {
            o->allow_weak = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
        } else {
            fprintf(err, "tlsgate: csr: unknown argument '%s'\n", a);
            return 0;
        }
    }
    return 1;
}

// csr_validate checks the combination of options. Returns 1 when they make sense.
static int csr_validate(struct csr_opts *o, FILE *err) {
    char why[128];
    if (o->fqdn == NULL || o->key_out == NULL || o->csr_out == NULL) {
        fprintf(err, "tlsgate: csr: --fqdn, --key-out and --csr-out are required\n");
        return 0;
    }
    if (!tg_certtool_check_fqdn(o->fqdn, why, sizeof(why))) {
        fprintf(err, "tlsgate: csr: --fqdn '%s' is not a usable DNS name: %s\n", o->fqdn, why);
        return 0;
    }
    if (o->ec) {
        if (o->bits != 0) {
            fprintf(err, "tlsgate: csr: --ec (P-256) and --key-bits exclude each other\n");
            return 0;
        }
        return 1;
    }
    if (o->bits == 0) {
        o->bits = TG_RSA_DEFAULT_BITS;
    }
    if (o->bits == 2048 || o->bits == 3072 || o->bits == 4096) {
        return 1;
    }
    if (o->bits == TG_RSA_WEAK_FLOOR && o->allow_weak) {
        fprintf(err,
                "tlsgate: warning: a %u-bit RSA key is under the %u bits recommended "
                "(and required by Teams Direct Routing); use it only for a peer that "
                "cannot take more\n",
                o->bits, TG_RSA_RECOMMENDED);
        return 1;
    }
    if (o->bits == TG_RSA_WEAK_FLOOR) {
        fprintf(err,
                "tlsgate: csr: refusing a %u-bit RSA key: %u bits are the recommended "
                "minimum (--allow-weak permits 1024)\n",
                o->bits, TG_RSA_RECOMMENDED);
        return 0;
    }
    if (o->bits < TG_RSA_WEAK_FLOOR) {
        fprintf(err,
                "tlsgate: csr: refusing a %u-bit RSA key: 1024 bits is the floor even with "
                "--allow-weak\n",
                o->bits);
        return 0;
    }
    fprintf(err, "tlsgate: csr: --key-bits must be 2048, 3072 or 4096 (1024 with --allow-weak)\n");
    return 0;
}

// pem_key and pem_csr serialise into a memory BIO the caller frees.
static BIO *pem_key(EVP_PKEY *key) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL && !PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(bio);
        return NULL;
    }
    return bio;
}

static BIO *pem_csr(X509_REQ *req) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL && !PEM_write_bio_X509_REQ(bio, req)) {
        BIO_free(bio);
        return NULL;
    }
    return bio;
}

// free_secret_bio wipes a memory BIO holding a private key before freeing it.
static void free_secret_bio(BIO *bio) {
    const uint8_t *data;
    size_t len;
    if (bio != NULL && BIO_mem_contents(bio, &data, &len) && len > 0) {
        OPENSSL_cleanse((void *)data, len);
    }
    BIO_free(bio);
}

// refuse_same_file reports key and CSR outputs that are one file, by identity (a second name
// through `./`, `..`, a symbolic or a hard link): the CSR would replace the key just made, with
// or without --force.
static int refuse_same_file(const struct csr_opts *o, FILE *err) {
    if (!tg_certtool_same_file(o->key_out, o->csr_out)) {
        return 0;
    }
    fprintf(err,
            "tlsgate: csr: --key-out %s and --csr-out %s are the same file: the CSR would "
            "destroy the new private key; give two different files\n",
            o->key_out, o->csr_out);
    return 1;
}

// refuse_existing reports (without writing anything) an output that exists, saying what
// replacing it would lose, so no key is generated for nothing and the first file is not written
// when the second would be refused.
static int refuse_existing(const struct csr_opts *o, FILE *err) {
    const char *paths[2] = {o->key_out, o->csr_out};
    struct stat st;
    for (size_t i = 0; i < 2; i++) {
        if (lstat(paths[i], &st) == 0) {
            char what[160];
            describe_existing(paths[i], &st, what, sizeof(what));
            fprintf(err, "tlsgate: csr: refusing to overwrite %s: %s; use --force to replace it\n",
                    paths[i], what);
            return 1;
        }
    }
    return 0;
}

// csr_write writes the key then the CSR. When the CSR cannot be written after a new key file
// was created, the key file is removed again, so a failed run leaves nothing behind.
static int csr_write(const struct csr_opts *o, BIO *key_pem, BIO *csr_pem, FILE *err) {
    const uint8_t *key_data, *csr_data;
    size_t key_len, csr_len;
    char why[4200];
    if (!BIO_mem_contents(key_pem, &key_data, &key_len) ||
        !BIO_mem_contents(csr_pem, &csr_data, &csr_len)) {
        fprintf(err, "tlsgate: csr: out of memory\n");
        return 0;
    }
    if (!write_new_file(o->key_out, key_data, key_len, 0600, o->force, why, sizeof(why))) {
        fprintf(err, "tlsgate: csr: %s\n", why);
        return 0;
    }
    if (!write_new_file(o->csr_out, csr_data, csr_len, 0644, o->force, why, sizeof(why))) {
        fprintf(err, "tlsgate: csr: %s\n", why);
        if (!o->force) {
            unlink(o->key_out);
        }
        return 0;
    }
    return 1;
}

int tg_certtool_csr_main(int argc, char **argv, FILE *out, FILE *err) {
    struct csr_opts o;
    if (!csr_parse(argc, argv, &o, err)) {
        csr_usage(err);
        return TG_CERTTOOL_USAGE;
    }
    if (o.help) {
        csr_usage(out);
        return TG_CERTTOOL_OK;
    }
    if (!csr_validate(&o, err)) {
        csr_usage(err);
        return TG_CERTTOOL_USAGE;
    }
    if (refuse_same_file(&o, err)) {
        return TG_CERTTOOL_USAGE;
    }
    if (!o.force && refuse_existing(&o, err)) {
        return TG_CERTTOOL_FAIL;
    }
    int rc = TG_CERTTOOL_FAIL;
    BIO *key_pem = NULL, *csr_pem = NULL;
    X509_REQ *req = NULL;
    EVP_PKEY *key = tg_certtool_key_new(o.ec, o.bits);
    if (key == NULL) {
        fprintf(err, "tlsgate: csr: key generation failed\n");
        goto out;
    }
    req = tg_certtool_csr_new(key, o.fqdn);
    key_pem = pem_key(key);
    csr_pem = req != NULL ? pem_csr(req) : NULL;
    if (req == NULL || key_pem == NULL || csr_pem == NULL) {
        fprintf(err, "tlsgate: csr: cannot build the request\n");
        goto out;
    }
    if (!csr_write(&o, key_pem, csr_pem, err)) {
        goto out;
    }
    char kind[32];
    if (o.ec) {
        snprintf(kind, sizeof(kind), "ECDSA P-256");
    } else {
        snprintf(kind, sizeof(kind), "RSA %u bits", o.bits);
    }
    fprintf(out,
            "key: %s (%s, mode 0600)\n"
            "csr: %s (CN=%s, DNS SAN %s, EKU serverAuth clientAuth, SHA-256)\n"
            "next: have a CA sign %s, then: tlsgate cert-check --cert CERT --key %s --fqdn %s "
            "--ca CA\n",
            o.key_out, kind, o.csr_out, o.fqdn, o.fqdn, o.csr_out, o.key_out, o.fqdn);
    rc = TG_CERTTOOL_OK;
out:
    free_secret_bio(key_pem);
    BIO_free(csr_pem);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return rc;
}

// `tlsgate cert-check` ----------------------------------------------------------------------------

static void check_usage(FILE *f) {
    fprintf(f, "usage: tlsgate cert-check --cert FILE [--key FILE] [--fqdn NAME] [--ca FILE] "
               "[--json]\n"
               "  one PASS/WARN/FAIL line per certificate rule (the rules of `tlsgate check`).\n"
               "  --cert: leaf first, then intermediates. Without --fqdn the name rules use the "
               "CN;\n"
               "  without --ca the chain is not checked; without --key key_matches is skipped.\n"
               "  exit: 0 nothing failed, 1 a rule failed, 2 usage or unreadable input\n");
}

struct check_opts {
    const char *cert;
    const char *key;
    const char *fqdn;
    const char *ca;
    int json;
    int help;
};

static int check_parse(int argc, char **argv, struct check_opts *o, FILE *err) {
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--cert") == 0   ? &o->cert
                            : strcmp(a, "--key") == 0  ? &o->key
                            : strcmp(a, "--fqdn") == 0 ? &o->fqdn
                            : strcmp(a, "--ca") == 0   ? &o->ca
                                                       : NULL;
        if (slot != NULL) {
            if ((*slot = take_value(argc, argv, &i, err)) == NULL) {
                return 0;
            }
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
        } else {
            fprintf(err, "tlsgate: cert-check: unknown argument '%s'\n", a);
            return 0;
        }
    }
    if (!o->help && o->cert == NULL) {
        fprintf(err, "tlsgate: cert-check: --cert FILE is required\n");
        return 0;
    }
    return 1;
}

// The facts printed above the rules (and in the JSON object).
struct cert_facts {
    char subject[512];
    char issuer[512];
    char serial[128];
    char not_after[32];
};

static void facts_of(struct cert_facts *f, X509 *leaf) {
    tg_policy_name_string(f->subject, sizeof(f->subject), X509_get_subject_name(leaf));
    tg_policy_name_string(f->issuer, sizeof(f->issuer), X509_get_issuer_name(leaf));
    snprintf(f->serial, sizeof(f->serial), "?");
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex != NULL) {
        for (char *c = hex; *c != '\0'; c++) {
            *c = (*c >= 'a' && *c <= 'f') ? (char)(*c - 'a' + 'A') : *c;
        }
        snprintf(f->serial, sizeof(f->serial), "%s", hex);
    }
    OPENSSL_free(hex);
    BN_free(bn);
    // notAfter as ISO 8601 from its GeneralizedTime form YYYYMMDDHHMMSSZ.
    snprintf(f->not_after, sizeof(f->not_after), "?");
    ASN1_GENERALIZEDTIME *gt = ASN1_TIME_to_generalizedtime(X509_get0_notAfter(leaf), NULL);
    if (gt != NULL && ASN1_STRING_length(gt) == 15) {
        const char *s = (const char *)ASN1_STRING_get0_data(gt);
        snprintf(f->not_after, sizeof(f->not_after), "%.4s-%.2s-%.2sT%.2s:%.2s:%.2sZ", s, s + 4,
                 s + 6, s + 8, s + 10, s + 12);
    }
    ASN1_GENERALIZEDTIME_free(gt);
    ERR_clear_error();
}

// first_cn copies |leaf|'s first subject CN (UTF-8) into |out|. Returns 0 when there is none or
// it does not fit. A CN with an embedded NUL is cut there, and then fails the CN rule by length.
static int first_cn(X509 *leaf, char *out, size_t out_len) {
    const X509_NAME *subject = X509_get_subject_name(leaf);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    X509_NAME_ENTRY *e = idx >= 0 ? X509_NAME_get_entry(subject, idx) : NULL;
    unsigned char *utf8 = NULL;
    int len = e != NULL ? ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e)) : -1;
    int ok = len > 0 && (size_t)len < out_len;
    if (ok) {
        memcpy(out, utf8, (size_t)len);
        out[len] = '\0';
    }
    OPENSSL_free(utf8);
    ERR_clear_error();
    return ok;
}

static int is_name_rule(const char *rule) {
    return strcmp(rule, "cn_matches_fqdn") == 0 || strcmp(rule, "san_matches_fqdn") == 0;
}

// note_fqdn_source rewrites the name rules when no --fqdn was given: either they were checked
// against the CN (|from_cn|: say so), or there was no CN to take and they are skipped.
static void note_fqdn_source(struct tg_rule_result *r, size_t n, int from_cn) {
    for (size_t i = 0; i < n; i++) {
        if (!is_name_rule(r[i].rule)) {
            continue;
        }
        if (!from_cn) {
            r[i].status = TG_RULE_PASS;
            snprintf(r[i].detail, sizeof(r[i].detail),
                     "skipped: no --fqdn given and no subject CN to take it from");
            continue;
        }
        size_t len = strlen(r[i].detail);
        snprintf(r[i].detail + len, sizeof(r[i].detail) - len,
                 " (FQDN taken from the CN: no --fqdn given)");
    }
}

static enum tg_rule_status overall(const struct tg_rule_result *r, size_t n) {
    enum tg_rule_status worst = TG_RULE_PASS;
    for (size_t i = 0; i < n; i++) {
        if (r[i].status > worst) {
            worst = r[i].status;
        }
    }
    return worst;
}

// json_string prints |s| as a JSON string. Bytes outside printable ASCII are escaped (a byte
// over 0x7e as \u00XX: paths are bytes, not necessarily UTF-8).
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20 || c > 0x7e) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static void print_json(FILE *f, const char *path, const struct cert_facts *facts,
                       const struct tg_rule_result *r, size_t n) {
    static const char *const kKeys[] = {"cert", "subject", "issuer", "serial", "not_after"};
    const char *values[] = {path, facts->subject, facts->issuer, facts->serial, facts->not_after};
    fputc('{', f);
    for (size_t i = 0; i < sizeof(kKeys) / sizeof(kKeys[0]); i++) {
        fprintf(f, "\"%s\":", kKeys[i]);
        json_string(f, values[i]);
        fputc(',', f);
    }
    fputs("\"rules\":[", f);
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s{\"rule\":", i == 0 ? "" : ",");
        json_string(f, r[i].rule);
        fprintf(f, ",\"status\":\"%s\",\"detail\":", tg_rule_status_name(r[i].status));
        json_string(f, r[i].detail);
        fputc('}', f);
    }
    fprintf(f, "],\"result\":\"%s\"}\n", tg_rule_status_name(overall(r, n)));
}

static void print_text(FILE *f, const char *path, const struct cert_facts *facts,
                       const struct tg_rule_result *r, size_t n) {
    fprintf(f,
            "certificate: %s\nsubject:     %s\nissuer:      %s\nserial:      %s\n"
            "not after:   %s\n",
            path, facts->subject, facts->issuer, facts->serial, facts->not_after);
    size_t warns = 0, fails = 0;
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%-4s %-18s %s\n", tg_rule_status_name(r[i].status), r[i].rule, r[i].detail);
        warns += r[i].status == TG_RULE_WARN;
        fails += r[i].status == TG_RULE_FAIL;
    }
    fprintf(f, "result: %s (%zu failed, %zu warning%s)\n", tg_rule_status_name(overall(r, n)),
            fails, warns, warns == 1 ? "" : "s");
}

int tg_certtool_cert_check_main(int argc, char **argv, FILE *out, FILE *err) {
    struct check_opts o;
    if (!check_parse(argc, argv, &o, err)) {
        check_usage(err);
        return TG_CERTTOOL_USAGE;
    }
    if (o.help) {
        check_usage(out);
        return TG_CERTTOOL_OK;
    }
    char why[4200];
    if (o.fqdn != NULL && !tg_certtool_check_fqdn(o.fqdn, why, sizeof(why))) {
        fprintf(err, "tlsgate: cert-check: --fqdn '%s' is not a usable DNS name: %s\n", o.fqdn,
                why);
        return TG_CERTTOOL_USAGE;
    }
    int rc = TG_CERTTOOL_USAGE;
    EVP_PKEY *key = NULL;
    X509_STORE *trust = NULL;
    // The same readers as `tlsgate check`, startup and reload (tls.c), so a file is refused
    // with the same words everywhere.
    X509 *leaf = NULL;
    STACK_OF(X509) *certs = NULL; // the intermediates
    if (!tg_tls_read_cert_file(o.cert, &leaf, &certs, why, sizeof(why)) ||
        (o.key != NULL && (key = tg_tls_read_key_file(o.key, why, sizeof(why))) == NULL) ||
        (o.ca != NULL && (trust = tg_tls_read_trust_file(o.ca, why, sizeof(why))) == NULL)) {
        fprintf(err, "tlsgate: cert-check: %s\n", why);
        X509_free(leaf);
        goto out;
    }
    char cn[TG_CERTTOOL_CN_MAX * 4 + 1];
    const char *fqdn = o.fqdn;
    int from_cn = 0;
    if (fqdn == NULL) {
        from_cn = first_cn(leaf, cn, sizeof(cn));
        // Without any name the rules still run (against a name no certificate holds); their
        // verdicts are replaced by a skip note below.
        fqdn = from_cn ? cn : "";
    }
    struct tg_rule_result rules[TG_OWN_RULES_MAX];
    size_t n = tg_policy_check_own(fqdn, leaf, certs, key, trust, (int64_t)time(NULL), rules,
                                   TG_OWN_RULES_MAX);
    if (o.fqdn == NULL) {
        note_fqdn_source(rules, n, from_cn);
    }
    struct cert_facts facts;
    facts_of(&facts, leaf);
    if (o.json) {
        print_json(out, o.cert, &facts, rules, n);
    } else {
        print_text(out, o.cert, &facts, rules, n);
    }
    X509_free(leaf);
    rc = overall(rules, n) == TG_RULE_FAIL ? TG_CERTTOOL_FAIL : TG_CERTTOOL_OK;
out:
    sk_X509_pop_free(certs, X509_free);
    EVP_PKEY_free(key);
    X509_STORE_free(trust);
    ERR_clear_error();
    return rc;
}
