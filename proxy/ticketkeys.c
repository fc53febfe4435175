// Session ticket key files: parsing (no I/O), loading, generating, and the `ticket-keys`
// command. Installing the keys on a context is tls.c's.
#include "tlsgate/ticketkeys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/base64.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "tlsgate/cursor.h"

void tg_ticket_keys_cleanse(struct tg_ticket_keys *keys) {
    OPENSSL_cleanse(keys, sizeof(*keys));
}

static int is_space(int ch) {
    return ch == ' ' || ch == '\t' || ch == '\r';
}

// parse_line decodes the key line [from, to) of |c| (spaces already trimmed) into |out|.
// Returns 1 on success; 0 with what is wrong in |why|.
static int parse_line(struct tg_ticket_key *out, const struct tg_cur *c, size_t from, size_t to,
                      char *why, size_t why_len) {
    uint8_t raw[TG_TICKET_KEY_LEN + 3];
    size_t raw_len = 0, max_len = 0;
    size_t n = to - from;
    if (!EVP_DecodedLength(&max_len, n) || max_len > sizeof(raw)) {
        snprintf(why, why_len, "a key is the base64 of %d bytes (%zu characters here)",
                 TG_TICKET_KEY_LEN, n);
        return 0;
    }
    if (!EVP_DecodeBase64(raw, &raw_len, sizeof(raw), c->b + from, n)) {
        snprintf(why, why_len, "not valid base64");
        OPENSSL_cleanse(raw, sizeof(raw));
        return 0;
    }
    if (raw_len != TG_TICKET_KEY_LEN) {
        snprintf(why, why_len, "a key is %d bytes, this line decodes to %zu", TG_TICKET_KEY_LEN,
                 raw_len);
        OPENSSL_cleanse(raw, sizeof(raw));
        return 0;
    }
    memcpy(out->name, raw, TG_TICKET_KEY_NAME_LEN);
    memcpy(out->hmac_key, raw + TG_TICKET_KEY_NAME_LEN, TG_TICKET_KEY_SECRET_LEN);
    memcpy(out->aes_key, raw + TG_TICKET_KEY_NAME_LEN + TG_TICKET_KEY_SECRET_LEN,
           TG_TICKET_KEY_SECRET_LEN);
    OPENSSL_cleanse(raw, sizeof(raw));
    return 1;
}

int tg_ticket_keys_parse(struct tg_ticket_keys *out, const char *name, const char *data,
                         size_t data_len, char *err, size_t err_len) {
    memset(out, 0, sizeof(*out));
    struct tg_cur c = {(const uint8_t *)data, data_len};
    char why[160];
    int line = 0;
    for (size_t pos = 0; pos < c.len;) {
        line++;
        size_t end = tg_cur_find(&c, pos, c.len, '\n');
        size_t next = end == TG_NPOS ? c.len : end + 1;
        if (end == TG_NPOS)
            end = c.len;
        size_t from = pos, to = end;
        pos = next;
        while (from < to && is_space(c.b[from]))
            from++;
        while (to > from && is_space(c.b[to - 1]))
            to--;
        if (from == to || c.b[from] == '#')
            continue;
        if (out->num_keys == TG_TICKET_KEYS_MAX) {
            snprintf(err, err_len, "%s:%d: more than %d keys", name, line, TG_TICKET_KEYS_MAX);
            goto fail;
        }
        if (!parse_line(&out->keys[out->num_keys], &c, from, to, why, sizeof(why))) {
            snprintf(err, err_len, "%s:%d: %s", name, line, why);
            goto fail;
        }
        if (tg_ticket_keys_find(out, out->keys[out->num_keys].name) >= 0) {
            snprintf(err, err_len,
                     "%s:%d: the key name (its first %d bytes) repeats an earlier key", name, line,
                     TG_TICKET_KEY_NAME_LEN);
            goto fail;
        }
        out->num_keys++;
    }
    if (out->num_keys == 0) {
        snprintf(err, err_len,
                 "%s:0: no key (1 to %d lines of base64; `tlsgate ticket-keys` "
                 "writes a new file)",
                 name, TG_TICKET_KEYS_MAX);
        goto fail;
    }
    return 1;
fail:
    tg_ticket_keys_cleanse(out);
    return 0;
}

int tg_ticket_keys_find(const struct tg_ticket_keys *keys, const uint8_t *name) {
    for (size_t i = 0; i < keys->num_keys; i++) {
        if (CRYPTO_memcmp(keys->keys[i].name, name, TG_TICKET_KEY_NAME_LEN) == 0)
            return (int)i;
    }
    return -1;
}

int tg_ticket_keys_load(struct tg_ticket_keys *out, const char *path, char *err, size_t err_len) {
    memset(out, 0, sizeof(*out));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, err_len, "%s:0: cannot open: %s", path, strerror(errno));
        return 0;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, err_len, "%s:0: not a regular file", path);
        close(fd);
        return 0;
    }
    if ((sb.st_mode & 077) != 0) {
        snprintf(err, err_len,
                 "%s:0: has mode %04o: group and others must have no access "
                 "(chmod 600)",
                 path, (unsigned)(sb.st_mode & 07777));
        close(fd);
        return 0;
    }
    char *buf = malloc(TG_TICKET_KEYS_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(err, err_len, "%s:0: out of memory", path);
        close(fd);
        return 0;
    }
    size_t len = 0;
    int ok = 1;
    while (len <= TG_TICKET_KEYS_FILE_MAX) {
        ssize_t r = read(fd, buf + len, TG_TICKET_KEYS_FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, err_len, "%s:0: cannot read: %s", path, strerror(errno));
            ok = 0;
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (ok && len > TG_TICKET_KEYS_FILE_MAX) {
        snprintf(err, err_len, "%s:0: larger than %d bytes", path, TG_TICKET_KEYS_FILE_MAX);
        ok = 0;
    }
    ok = ok && tg_ticket_keys_parse(out, path, buf, len, err, err_len);
    OPENSSL_cleanse(buf, TG_TICKET_KEYS_FILE_MAX + 1);
    free(buf);
    return ok;
}

int tg_ticket_keys_generate(struct tg_ticket_keys *out, size_t num_keys) {
    memset(out, 0, sizeof(*out));
    if (num_keys == 0 || num_keys > TG_TICKET_KEYS_MAX ||
        !RAND_bytes((uint8_t *)out->keys, sizeof(out->keys)))
        return 0;
    for (size_t i = num_keys; i < TG_TICKET_KEYS_MAX; i++)
        OPENSSL_cleanse(&out->keys[i], sizeof(out->keys[i]));
    out->num_keys = num_keys;
    return 1;
}

int tg_ticket_keys_format(char *out, size_t out_len, size_t *out_text_len,
                          const struct tg_ticket_keys *keys) {
    static const char kHead[] = "# tlsgate session ticket keys: the last line is the newest "
                                "(it encrypts); all decrypt.\n";
    size_t b64_len = 0;
    EVP_EncodedLength(&b64_len, TG_TICKET_KEY_LEN); // with the NUL
    size_t need = sizeof(kHead) - 1 + keys->num_keys * b64_len + 1;
    *out_text_len = 0;
    if (need > out_len)
        return 0;
    size_t n = sizeof(kHead) - 1;
    memcpy(out, kHead, n);
    for (size_t i = 0; i < keys->num_keys; i++) {
        uint8_t raw[TG_TICKET_KEY_LEN];
        const struct tg_ticket_key *k = &keys->keys[i];
        memcpy(raw, k->name, TG_TICKET_KEY_NAME_LEN);
        memcpy(raw + TG_TICKET_KEY_NAME_LEN, k->hmac_key, TG_TICKET_KEY_SECRET_LEN);
        memcpy(raw + TG_TICKET_KEY_NAME_LEN + TG_TICKET_KEY_SECRET_LEN, k->aes_key,
               TG_TICKET_KEY_SECRET_LEN);
        n += EVP_EncodeBlock((uint8_t *)out + n, raw, sizeof(raw));
        OPENSSL_cleanse(raw, sizeof(raw));
        out[n++] = '\n';
    }
    out[n] = '\0';
    *out_text_len = n;
    return 1;
}

// write_key_file creates |path| (mode 0600, never following a link) with |len| bytes of
// |data|. Without |force| an existing file is left alone; with it, a new file beside |path|
// replaces it by rename. Returns 1 on success; 0 with `PATH: why` in |err|.
static int write_key_file(const char *path, const char *data, size_t len, int force, char *err,
                          size_t err_len) {
    char tmp[4200];
    const char *target = path;
    if (force) {
        int n = snprintf(tmp, sizeof(tmp), "%s.tlsgate-new-%ld", path, (long)getpid());
        if (n < 0 || (size_t)n >= sizeof(tmp)) {
            snprintf(err, err_len, "%s: path too long", path);
            return 0;
        }
        target = tmp;
    }
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, err_len, "%s: %s%s", target, strerror(errno),
                 errno == EEXIST && !force ? " (not replaced; --force replaces it)" : "");
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int ok = done == len && fsync(fd) == 0;
    int e = errno;
    ok = close(fd) == 0 && ok;
    if (ok && force && rename(tmp, path) != 0) {
        e = errno;
        ok = 0;
    }
    if (!ok) {
        snprintf(err, err_len, "%s: %s", path, strerror(e));
        unlink(target);
    }
    return ok;
}

static void ticket_keys_usage(FILE *f) {
    fprintf(f,
            "usage: tlsgate ticket-keys --out FILE [--keys N] [--force]\n"
            "  a new session ticket key file (mode 0600) of N random keys (1..%d, default 3)\n"
            "  for [tls] ticket_keys; the last line is the newest key\n",
            TG_TICKET_KEYS_MAX);
}

int tg_ticket_keys_main(int argc, char **argv, FILE *out, FILE *errf) {
    const char *path = NULL;
    int force = 0;
    unsigned long num_keys = 3;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--out") == 0 && i + 1 < argc && argv[i + 1][0] != '\0') {
            path = argv[++i];
        } else if (strcmp(a, "--keys") == 0 && i + 1 < argc) {
            char *end = NULL;
            const char *v = argv[++i];
            errno = 0;
            num_keys = strtoul(v, &end, 10);
            if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || num_keys == 0 ||
                num_keys > TG_TICKET_KEYS_MAX) {
                fprintf(errf, "tlsgate: ticket-keys: --keys takes 1 to %d, not '%s'\n",
                        TG_TICKET_KEYS_MAX, v);
                return 2;
            }
        } else if (strcmp(a, "--force") == 0) {
            force = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            ticket_keys_usage(out);
            return 0;
        } else {
            fprintf(errf, "tlsgate: ticket-keys: unknown or incomplete argument '%s'\n", a);
            ticket_keys_usage(errf);
            return 2;
        }
    }
    if (path == NULL) {
        fprintf(errf, "tlsgate: ticket-keys: --out FILE is required\n");
        ticket_keys_usage(errf);
        return 2;
    }
    struct tg_ticket_keys keys;
    char text[1024];
    size_t text_len = 0;
    char why[4400];
    int ok = tg_ticket_keys_generate(&keys, num_keys) &&
             tg_ticket_keys_format(text, sizeof(text), &text_len, &keys);
    tg_ticket_keys_cleanse(&keys);
    if (!ok) {
        fprintf(errf, "tlsgate: ticket-keys: cannot generate keys\n");
        return 1;
    }
    ok = write_key_file(path, text, text_len, force, why, sizeof(why));
    OPENSSL_cleanse(text, sizeof(text));
    if (!ok) {
        fprintf(errf, "tlsgate: ticket-keys: %s\n", why);
        return 1;
    }
    fprintf(out, "ticket keys: %s (%lu key%s, mode 0600)\n", path, num_keys,
            num_keys == 1 ? "" : "s");
    return 0;
}
