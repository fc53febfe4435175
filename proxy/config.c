#include "tlsgate/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tlsgate/keyd.h"

// The loader drives inih's ini_parse_stream() with its own line reader (tg_reader below). The
// reader frames lines itself, so it knows the line number of everything inih sees, refuses
// what inih would silently mangle (over-long lines, NUL bytes, `name: value` pairs, indented
// continuation lines, section names over inih's 50 bytes) and handles section headers, which
// Debian's inih does not report to the handler. inih then strips comments and whitespace and
// calls tg_handler once per `key = value` line, always before it asks for the next line.

// TG_CONFIG_MAX_FILE is the largest configuration file tg_config_load reads.
#define TG_CONFIG_MAX_FILE (1024 * 1024)
// TG_MAX_LISTENERS bounds the number of [inbound]/[outbound] sections.
#define TG_MAX_LISTENERS 256
// TG_MAX_KEYS bounds the number of keys in one section's table.
#define TG_MAX_KEYS 16

enum tg_section {
    TG_SECT_NONE = 0,
    TG_SECT_GLOBAL,
    TG_SECT_ADMIN,
    TG_SECT_TLS,
    TG_SECT_INBOUND,
    TG_SECT_OUTBOUND,
    TG_SECT_MEDIA,
};

struct tg_parse_state;
struct tg_key;

// tg_setter stores |value| for |key|. Returns 1, or 0 with a reason in |why|.
typedef int (*tg_setter)(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                         char *why, size_t why_len);

// tg_key describes one key of a section: its setter, the range of an integer and where the
// value lives in struct tg_config (|off|, |size|) for the generic setters.
struct tg_key {
    const char *name;
    tg_setter set;
    int required;
    uint32_t min, max;
    size_t off, size;
};

struct tg_parse_state {
    struct tg_config *cfg;
    const char *name; // names the input in messages
    const char *data;
    size_t data_len;
    size_t pos; // offset of the next line in |data|
    int line;   // number of the line last handed to inih
    int failed; // an error has been written to |err|
    char *err;
    size_t err_len;

    enum tg_section sect; // the section being read
    int sect_line;        // line of its header
    size_t listener;      // index in cfg->listeners when sect is inbound/outbound
    int global_line;      // header lines of the fixed sections; 0 while absent
    int admin_line;
    int tls_line;
    int media_line;
    int seen[TG_MAX_KEYS]; // line of each key of the current section; 0 while absent
    size_t listeners_cap;
};

// ---------------------------------------------------------------------------------------------
// Errors. tg_set_why and tg_quote, shared with the target parser, are in target.c.

// tg_fail writes `NAME:LINE: KEY: ` and the formatted text into st->err, unless an error
// was already written. Returns 0 so callers can `return tg_fail(...)`.
static int tg_fail(struct tg_parse_state *st, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int tg_fail(struct tg_parse_state *st, int line, const char *key, const char *fmt, ...) {
    if (st->failed)
        return 0;
    st->failed = 1;
    if (st->err == NULL || st->err_len == 0)
        return 0;
    int n = snprintf(st->err, st->err_len, "%s:%d: %s: ", st->name, line, key);
    if (n < 0 || (size_t)n >= st->err_len)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err + n, st->err_len - (size_t)n, fmt, ap);
    va_end(ap);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Value parsers (no state).

// tg_uint_why parses |s| with tg_parse_uint and words a failure as `bad value 'x': expected
// an integer MIN..MAX` or `value X out of range MIN..MAX`.
static int tg_uint_why(uint32_t *out, const char *s, uint32_t min, uint32_t max, char *why,
                       size_t why_len) {
    char q[TG_QUOTE_MAX + 4];
    switch (tg_parse_uint(out, s, min, max)) {
    case TG_UINT_OK:
        return 1;
    case TG_UINT_RANGE:
        tg_quote(q, sizeof(q), s, strlen(s));
        return tg_set_why(why, why_len, "value %s out of range %u..%u", q, min, max);
    case TG_UINT_SYNTAX:
        break;
    }
    tg_quote(q, sizeof(q), s, strlen(s));
    return tg_set_why(why, why_len, "bad value '%s': expected an integer %u..%u", q, min, max);
}

// tg_valid_name reports whether |s| (|len| bytes) is 1..TG_NAME_MAX-1 of [A-Za-z0-9_.-].
static int tg_valid_name(const char *s, size_t len) {
    if (len == 0 || len >= TG_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!tg_is_name_char(s[i]))
            return 0;
    }
    return 1;
}

// tg_parse_numeric parses |text| as a numeric `ADDR:PORT` into |out|.
static int tg_parse_numeric(struct tg_target *out, const char *text, char *why, size_t why_len) {
    if (!tg_parse_hostport(out, text, why, why_len))
        return 0;
    if (out->resolved)
        return 1;
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), out->host, strlen(out->host));
    return tg_set_why(why, why_len, "'%s' is not a numeric address (names only in connect)", q);
}

// ---------------------------------------------------------------------------------------------
// Setters, one per kind of value.

static void *tg_field(struct tg_parse_state *st, const struct tg_key *key) {
    return (char *)st->cfg + key->off;
}

static struct tg_listener_conf *tg_cur_listener(struct tg_parse_state *st) {
    return &st->cfg->listeners[st->listener];
}

// tg_set_listener_u32 stores an integer key of the current listener (|key->off| into
// struct tg_listener_conf).
static int tg_set_listener_u32(struct tg_parse_state *st, const struct tg_key *key,
                               const char *value, char *why, size_t why_len) {
    uint32_t v;
    if (!tg_uint_why(&v, value, key->min, key->max, why, why_len))
        return 0;
    memcpy((char *)tg_cur_listener(st) + key->off, &v, sizeof(v));
    return 1;
}

static int tg_set_u32(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                      char *why, size_t why_len) {
    uint32_t v;
    if (!tg_uint_why(&v, value, key->min, key->max, why, why_len))
        return 0;
    memcpy(tg_field(st, key), &v, sizeof(v));
    return 1;
}

// tg_set_path stores a string of at most key->size - 1 bytes with no control characters.
static int tg_set_path(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                       char *why, size_t why_len) {
    size_t len = strlen(value);
    if (len >= key->size)
        return tg_set_why(why, why_len, "value longer than %zu bytes", key->size - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f)
            return tg_set_why(why, why_len, "control character in value");
    }
    // A relative path is taken from the configuration file's directory, not the working
    // directory, so a config and its certificates can move together.
    const char *slash = value[0] == '/' ? NULL : strrchr(st->cfg->path, '/');
    size_t dir_len = slash != NULL ? (size_t)(slash - st->cfg->path) + 1 : 0;
    if (dir_len + len >= key->size)
        return tg_set_why(why, why_len, "path longer than %zu bytes", key->size - 1);
    char *field = tg_field(st, key);
    memcpy(field, st->cfg->path, dir_len);
    memcpy(field + dir_len, value, len + 1);
    return 1;
}

// tg_set_key takes `key = FILE` or `key = keyd:PATH` (the socket of tlsgate-keyd, which holds
// the key instead: tlsgate never reads it). Both paths are taken from the configuration file's
// directory when relative.
static int tg_set_key(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                      char *why, size_t why_len) {
    size_t plen = strlen(TG_KEYD_PREFIX);
    if (strncmp(value, TG_KEYD_PREFIX, plen) != 0) {
        st->cfg->keyd[0] = '\0';
        return tg_set_path(st, key, value, why, why_len);
    }
    if (value[plen] == '\0')
        return tg_set_why(why, why_len, "keyd: needs the path of tlsgate-keyd's socket");
    struct tg_key k = {
        key->name, tg_set_path, 1, 0, 0, offsetof(struct tg_config, keyd), sizeof(st->cfg->keyd)};
    st->cfg->key[0] = '\0';
    return tg_set_path(st, &k, value + plen, why, why_len);
}

static int tg_set_workers(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                          char *why, size_t why_len) {
    if (strcmp(value, "auto") == 0) {
        st->cfg->workers = 0;
        return 1;
    }
    uint32_t v;
    if (tg_parse_uint(&v, value, key->min, key->max) == TG_UINT_OK) {
        st->cfg->workers = v;
        return 1;
    }
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, strlen(value));
    return tg_set_why(why, why_len, "bad value '%s': expected auto or an integer %u..%u", q,
                      key->min, key->max);
}

static int tg_set_log_level(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                            char *why, size_t why_len) {
    (void)key;
    if (tg_log_level_parse(value, &st->cfg->log_level))
        return 1;
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, strlen(value));
    return tg_set_why(why, why_len, "bad value '%s': expected debug, info, warn or error", q);
}

static int tg_set_user(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                       char *why, size_t why_len) {
    (void)key;
    size_t len = strlen(value);
    if (!tg_valid_name(value, len)) {
        char q[TG_QUOTE_MAX + 4];
        tg_quote(q, sizeof(q), value, len);
        return tg_set_why(why, why_len, "bad user name '%s': 1..%d characters of [A-Za-z0-9_.-]", q,
                          TG_NAME_MAX - 1);
    }
    memcpy(st->cfg->user, value, len + 1);
    st->cfg->user_line = st->line;
    return 1;
}

static int tg_set_admin_listen(struct tg_parse_state *st, const struct tg_key *key,
                               const char *value, char *why, size_t why_len) {
    (void)key;
    st->cfg->admin_listen_line = st->line;
    return tg_parse_numeric(&st->cfg->admin_listen, value, why, why_len);
}

static int tg_set_admin_enabled(struct tg_parse_state *st, const struct tg_key *key,
                                const char *value, char *why, size_t why_len) {
    (void)key;
    if (strcmp(value, "yes") == 0 || strcmp(value, "no") == 0) {
        st->cfg->admin_enabled = value[0] == 'y';
        return 1;
    }
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, strlen(value));
    return tg_set_why(why, why_len, "bad value '%s': expected yes or no", q);
}

static int tg_set_fqdn(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                       char *why, size_t why_len) {
    (void)key;
    if (!tg_valid_dns_name(value)) {
        char q[TG_QUOTE_MAX + 4];
        tg_quote(q, sizeof(q), value, strlen(value));
        return tg_set_why(why, why_len, "bad DNS name '%s'", q);
    }
    memcpy(st->cfg->fqdn, value, strlen(value) + 1);
    return 1;
}

// tg_trim returns |s| (|*len| bytes) without surrounding spaces and tabs.
static const char *tg_trim(const char *s, size_t *len) {
    while (*len > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        (*len)--;
    }
    while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
        (*len)--;
    return s;
}

// tg_next_item returns the next comma-separated item of |*p|, trimmed, in |*out_len| bytes,
// and advances |*p| past it (to NULL after the last item).
static const char *tg_next_item(const char **p, size_t *out_len) {
    const char *s = *p;
    const char *comma = strchr(s, ',');
    size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
    *p = comma != NULL ? comma + 1 : NULL;
    *out_len = len;
    return tg_trim(s, out_len);
}

// tg_valid_peer_name reports whether an item of peer_names is 1..TG_HOST_MAX-1 printable
// ASCII characters other than space.
static int tg_valid_peer_name(const char *s, size_t len) {
    if (len == 0 || len >= TG_HOST_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] <= ' ' || s[i] >= 0x7f)
            return 0;
    }
    return 1;
}

static int tg_add_peer_name(struct tg_config *cfg, const char *s, size_t len) {
    char **names = realloc(cfg->peer_names, (cfg->num_peer_names + 1) * sizeof(*names));
    if (names == NULL)
        return 0;
    cfg->peer_names = names;
    char *copy = strndup(s, len);
    if (copy == NULL)
        return 0;
    names[cfg->num_peer_names++] = copy;
    return 1;
}

static int tg_set_peer_names(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                             char *why, size_t why_len) {
    (void)key;
    const char *p = value;
    for (size_t n = 1; p != NULL; n++) {
        size_t len;
        const char *item = tg_next_item(&p, &len);
        if (len == 0)
            return tg_set_why(why, why_len, "item %zu is empty", n);
        if (!tg_valid_peer_name(item, len)) {
            char q[TG_QUOTE_MAX + 4];
            tg_quote(q, sizeof(q), item, len);
            return tg_set_why(why, why_len, "item %zu '%s' is not a peer name", n, q);
        }
        if (!tg_add_peer_name(st->cfg, item, len))
            return tg_set_why(why, why_len, "out of memory");
    }
    return 1;
}

static int tg_set_admin_allow(struct tg_parse_state *st, const struct tg_key *key,
                              const char *value, char *why, size_t why_len) {
    (void)key;
    struct tg_config *cfg = st->cfg;
    const char *p = value;
    for (size_t n = 1; p != NULL; n++) {
        size_t len;
        const char *item = tg_next_item(&p, &len);
        if (len == 0)
            return tg_set_why(why, why_len, "item %zu is empty", n);
        if (cfg->num_admin_allow == TG_ADMIN_MAX_ALLOW)
            return tg_set_why(why, why_len, "more than %d networks", TG_ADMIN_MAX_ALLOW);
        char reason[200];
        if (!tg_cidr_parse(&cfg->admin_allow[cfg->num_admin_allow], item, len, reason,
                           sizeof(reason)))
            return tg_set_why(why, why_len, "item %zu: %s", n, reason);
        cfg->num_admin_allow++;
    }
    return 1;
}

// tg_valid_admin_host reports whether |s| is a DNS name or a numeric (unbracketed) address.
static int tg_valid_admin_host(const char *s, size_t len) {
    struct tg_cidr net;
    if (memchr(s, '/', len) == NULL && tg_cidr_parse(&net, s, len, NULL, 0))
        return 1;
    return tg_valid_dns_name(s);
}

static int tg_set_admin_hosts(struct tg_parse_state *st, const struct tg_key *key,
                              const char *value, char *why, size_t why_len) {
    (void)key;
    struct tg_config *cfg = st->cfg;
    const char *p = value;
    for (size_t n = 1; p != NULL; n++) {
        size_t len;
        const char *item = tg_next_item(&p, &len);
        if (len == 0)
            return tg_set_why(why, why_len, "item %zu is empty", n);
        if (cfg->num_admin_hosts == TG_ADMIN_MAX_HOSTS)
            return tg_set_why(why, why_len, "more than %d names", TG_ADMIN_MAX_HOSTS);
        char *name = cfg->admin_hosts[cfg->num_admin_hosts];
        if (len < TG_HOST_MAX) {
            memcpy(name, item, len);
            name[len] = '\0';
        }
        if (len >= TG_HOST_MAX || !tg_valid_admin_host(name, len)) {
            char q[TG_QUOTE_MAX + 4];
            tg_quote(q, sizeof(q), item, len);
            return tg_set_why(why, why_len,
                              "item %zu '%s' is neither a DNS name nor a numeric address", n, q);
        }
        cfg->num_admin_hosts++;
    }
    return 1;
}

// tg_set_resolvers parses `[global] resolvers`: numeric IPv4 `ADDR:PORT` items.
static int tg_set_resolvers(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                            char *why, size_t why_len) {
    (void)key;
    struct tg_config *cfg = st->cfg;
    const char *p = value;
    cfg->num_resolvers = 0;
    for (size_t n = 1; p != NULL; n++) {
        size_t len;
        const char *item = tg_next_item(&p, &len);
        if (len == 0)
            return tg_set_why(why, why_len, "item %zu is empty", n);
        if (cfg->num_resolvers == TG_MAX_RESOLVERS)
            return tg_set_why(why, why_len, "more than %d nameservers", TG_MAX_RESOLVERS);
        char text[TG_HOST_MAX + 16], q[TG_QUOTE_MAX + 4], reason[128];
        tg_quote(q, sizeof(q), item, len);
        if (len >= sizeof(text))
            return tg_set_why(why, why_len, "item %zu too long", n);
        memcpy(text, item, len);
        text[len] = '\0';
        struct tg_target *t = &cfg->resolvers[cfg->num_resolvers];
        if (!tg_parse_hostport(t, text, reason, sizeof(reason)))
            return tg_set_why(why, why_len, "item %zu '%s': %s", n, q, reason);
        if (!t->resolved || t->addr.ss_family != AF_INET)
            return tg_set_why(why, why_len, "item %zu '%s': expected a numeric IPv4 ADDR:PORT", n,
                              q);
        cfg->num_resolvers++;
    }
    return 1;
}

static int tg_set_admin_token_file(struct tg_parse_state *st, const struct tg_key *key,
                                   const char *value, char *why, size_t why_len) {
    if (!tg_set_path(st, key, value, why, why_len))
        return 0;
    st->cfg->admin_token_file_line = st->line;
    return 1;
}

static int tg_set_min_key_bits(struct tg_parse_state *st, const struct tg_key *key,
                               const char *value, char *why, size_t why_len) {
    uint32_t v;
    if (tg_parse_uint(&v, value, 0, key->min - 1) == TG_UINT_OK) {
        return tg_set_why(why, why_len, "%u bits is under the floor of %u bits", v, key->min);
    }
    return tg_set_u32(st, key, value, why, why_len);
}

// tg_cipher_known returns 1 when BoringSSL takes |name| (|len| bytes, a name, alias or rule
// without its !, - or + prefix) as a cipher list of its own.
static int tg_cipher_known(SSL_CTX *ctx, const char *name, size_t len) {
    char one[128];
    while (len > 0 && (*name == '!' || *name == '-' || *name == '+')) {
        name++;
        len--;
    }
    if (len == 0 || len >= sizeof(one))
        return 0;
    memcpy(one, name, len);
    one[len] = '\0';
    int ok = SSL_CTX_set_strict_cipher_list(ctx, one);
    ERR_clear_error();
    return ok;
}

// tg_set_ciphers stores the TLS 1.2 cipher list after testing each of its names alone, so that
// an unknown one is named with its line (BoringSSL only says that the whole list failed).
static int tg_set_ciphers(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                          char *why, size_t why_len) {
    size_t len = strlen(value);
    if (len >= key->size)
        return tg_set_why(why, why_len, "value longer than %zu bytes", key->size - 1);
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL)
        return tg_set_why(why, why_len, "out of memory");
    static const char kSeparators[] = ":, []|";
    int ok = 1;
    for (size_t i = 0; ok && i < len;) {
        size_t n = strcspn(value + i, kSeparators);
        if (n > 0 && !tg_cipher_known(ctx, value + i, n)) {
            char q[TG_QUOTE_MAX + 4];
            tg_quote(q, sizeof(q), value + i, n);
            ok = tg_set_why(why, why_len, "unknown cipher '%s'", q);
        }
        i += n + (value[i + n] != '\0');
    }
    if (ok && !SSL_CTX_set_strict_cipher_list(ctx, value))
        ok = tg_set_why(why, why_len, "no usable cipher in the list");
    ERR_clear_error();
    SSL_CTX_free(ctx);
    if (ok)
        memcpy(tg_field(st, key), value, len + 1);
    return ok;
}

static int tg_set_min_version(struct tg_parse_state *st, const struct tg_key *key,
                              const char *value, char *why, size_t why_len) {
    (void)key;
    if (strcmp(value, "1.2") == 0) {
        st->cfg->min_version = 0x0303;
        return 1;
    }
    if (strcmp(value, "1.3") == 0) {
        st->cfg->min_version = 0x0304;
        return 1;
    }
    if (strcmp(value, "1.0") == 0 || strcmp(value, "1.1") == 0)
        return tg_set_why(why, why_len, "TLS %s is refused: expected 1.2 or 1.3", value);
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, strlen(value));
    return tg_set_why(why, why_len, "bad value '%s': expected 1.2 or 1.3", q);
}

static int tg_set_mode(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                       char *why, size_t why_len) {
    (void)key;
    if (strcmp(value, "tcp") == 0) {
        tg_cur_listener(st)->mode = TG_MODE_TCP;
        return 1;
    }
    if (strcmp(value, "sip") == 0) {
        tg_cur_listener(st)->mode = TG_MODE_SIP;
        return 1;
    }
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, strlen(value));
    return tg_set_why(why, why_len, "bad value '%s': expected tcp or sip", q);
}

static int tg_set_listen(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                         char *why, size_t why_len) {
    (void)key;
    tg_cur_listener(st)->listen_line = st->line;
    return tg_parse_numeric(&tg_cur_listener(st)->listen, value, why, why_len);
}

static int tg_set_forward(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                          char *why, size_t why_len) {
    (void)key;
    struct tg_listener_conf *l = tg_cur_listener(st);
    if (!tg_parse_numeric(&l->targets[0], value, why, why_len))
        return 0;
    l->num_targets = 1;
    return 1;
}

// tg_parse_connect_item parses one `connect` target (|len| bytes at |item|): `HOST:PORT` or
// `HOST:PORT=NAME`, blanks allowed around the '='. The name the target's certificate must
// carry goes to |out->expect_name|: NAME when given (the rules of a peer name), else the host
// when it is a DNS name; a target given by address alone leaves it empty (peer_names).
static int tg_parse_connect_item(struct tg_target *out, const char *item, size_t len, char *why,
                                 size_t why_len) {
    const char *eq = memchr(item, '=', len);
    size_t hp_len = eq != NULL ? (size_t)(eq - item) : len;
    const char *hp = tg_trim(item, &hp_len);
    char text[TG_HOST_MAX + 16];
    if (hp_len == 0)
        return tg_set_why(why, why_len, "missing HOST:PORT before '='");
    if (hp_len >= TG_HOST_MAX + 8)
        return tg_set_why(why, why_len, "too long");
    memcpy(text, hp, hp_len);
    text[hp_len] = '\0';
    // No port: `[V6]`, `V4` or `NAME`. An address takes 5061; a name asks SRV (RFC 3263 4.2).
    int no_port = text[0] == '[' ? text[hp_len - 1] == ']' : memchr(text, ':', hp_len) == NULL;
    if (no_port)
        snprintf(text + hp_len, sizeof(text) - hp_len, ":%d", TG_SIPS_PORT);
    if (!tg_parse_hostport(out, text, why, why_len))
        return 0;
    out->srv = (uint8_t)(no_port && !out->resolved);
    if (eq == NULL) {
        if (!out->resolved) // a DNS name, not an address: the target must prove it
            memcpy(out->expect_name, out->host, sizeof(out->expect_name));
        return 1;
    }
    size_t name_len = (size_t)(item + len - (eq + 1));
    const char *name = tg_trim(eq + 1, &name_len);
    if (name_len == 0)
        return tg_set_why(why, why_len, "missing name after '='");
    if (!tg_valid_peer_name(name, name_len)) {
        char q[TG_QUOTE_MAX + 4];
        tg_quote(q, sizeof(q), name, name_len);
        return tg_set_why(why, why_len, "'%s' after '=' is not a peer name", q);
    }
    memcpy(out->expect_name, name, name_len);
    out->expect_name[name_len] = '\0';
    return 1;
}

static int tg_set_connect(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                          char *why, size_t why_len) {
    (void)key;
    struct tg_listener_conf *l = tg_cur_listener(st);
    const char *p = value;
    while (p != NULL) {
        size_t len;
        const char *item = tg_next_item(&p, &len);
        size_t n = l->num_targets + 1;
        if (len == 0)
            return tg_set_why(why, why_len, "target %zu is empty", n);
        if (n > TG_MAX_TARGETS)
            return tg_set_why(why, why_len, "more than %d targets", TG_MAX_TARGETS);
        char reason[128];
        if (!tg_parse_connect_item(&l->targets[l->num_targets], item, len, reason, sizeof(reason)))
            return tg_set_why(why, why_len, "target %zu: %s", n, reason);
        l->num_targets = n;
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Key tables.

#define TG_U32(name, required, min, max, field)                                                    \
    { name, tg_set_u32, required, min, max, offsetof(struct tg_config, field), 0 }
#define TG_PATH(name, field)                                                                       \
    {                                                                                              \
        name, tg_set_path, 1, 0, 0, offsetof(struct tg_config, field),                             \
            sizeof(((struct tg_config *)0)->field)                                                 \
    }

static const struct tg_key k_global_keys[] = {
    {"workers", tg_set_workers, 0, 1, 256, 0, 0},
    TG_U32("max_connections", 0, 1, 1000000, max_connections),
    {"log_level", tg_set_log_level, 0, 0, 0, 0, 0},
    {"user", tg_set_user, 0, 0, 0, 0, 0},
    TG_U32("drain_timeout_ms", 0, 0, 3600000, drain_timeout_ms),
    TG_U32("buffer_size", 0, 4096, 4194304, buffer_size),
    TG_U32("max_handshakes", 0, 1, 1000000, max_handshakes),
    TG_U32("max_handshakes_per_source", 0, 0, 1000000, max_handshakes_per_source),
    TG_U32("new_connections_per_source", 0, 0, 1000000, new_connections_per_source),
    TG_U32("fd_reserve", 0, 0, 1000000, fd_reserve),
    TG_U32("socket_buffer", 0, 0, 67108864, socket_buffer),
    {"resolvers", tg_set_resolvers, 0, 0, 0, 0, 0},
    {NULL, NULL, 0, 0, 0, 0, 0},
};

static const struct tg_key k_admin_keys[] = {
    {"listen", tg_set_admin_listen, 0, 0, 0, 0, 0},
    {"enabled", tg_set_admin_enabled, 0, 0, 0, 0, 0},
    {"allow", tg_set_admin_allow, 0, 0, 0, 0, 0},
    {"hosts", tg_set_admin_hosts, 0, 0, 0, 0, 0},
    {"token_file", tg_set_admin_token_file, 0, 0, 0, offsetof(struct tg_config, admin_token_file),
     sizeof(((struct tg_config *)0)->admin_token_file)},
    {NULL, NULL, 0, 0, 0, 0, 0},
};

static const struct tg_key k_tls_keys[] = {
    TG_PATH("cert", cert),
    {"key", tg_set_key, 1, 0, 0, offsetof(struct tg_config, key),
     sizeof(((struct tg_config *)0)->key)},
    TG_PATH("ca", ca),
    {"own_ca", tg_set_path, 0, 0, 0, offsetof(struct tg_config, own_ca),
     sizeof(((struct tg_config *)0)->own_ca)},
    {"fqdn", tg_set_fqdn, 1, 0, 0, 0, 0},
    {"peer_names", tg_set_peer_names, 1, 0, 0, 0, 0},
    {"min_key_bits", tg_set_min_key_bits, 0, 1024, 16384, offsetof(struct tg_config, min_key_bits),
     0},
    {"min_version", tg_set_min_version, 0, 0, 0, 0, 0},
    {"ciphers", tg_set_ciphers, 0, 0, 0, offsetof(struct tg_config, ciphers),
     sizeof(((struct tg_config *)0)->ciphers)},
    TG_U32("handshake_timeout_ms", 0, 100, 600000, handshake_timeout_ms),
    TG_U32("idle_timeout_ms", 0, 0, 86400000, idle_timeout_ms),
    {"ticket_keys", tg_set_path, 0, 0, 0, offsetof(struct tg_config, ticket_keys),
     sizeof(((struct tg_config *)0)->ticket_keys)},
    TG_U32("signers", 0, 0, 64, signers),
    {NULL, NULL, 0, 0, 0, 0, 0},
};

// The SRTP suites of [media] srtp_suites, numbered as enum tg_srtp_suite (srtp.h): config.c
// stays free of the transform's code.
static const char *const k_srtp_suites[] = {"", "AES_CM_128_HMAC_SHA1_80",
                                            "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"};

// tg_set_media_addr stores a numeric IPv4 or IPv6 address (no port, no brackets) in the text
// field |key->off| and its parsed form right after the text fields.
static int tg_set_media_addr(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                             char *why, size_t why_len) {
    struct tg_config *cfg = st->cfg;
    size_t len = strlen(value);
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, len);
    int internal = key->off == offsetof(struct tg_config, media_internal);
    struct sockaddr_storage *ss = internal ? &cfg->media_internal_addr : &cfg->media_public_addr;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (len < sizeof(cfg->media_public) && inet_pton(AF_INET, value, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
    } else if (len < sizeof(cfg->media_public) && inet_pton(AF_INET6, value, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
    } else {
        return tg_set_why(why, why_len, "bad address '%s': expected a numeric IPv4 or IPv6 address",
                          q);
    }
    memcpy((char *)cfg + key->off, value, len + 1);
    return 1;
}

static int tg_set_port_range(struct tg_parse_state *st, const struct tg_key *key, const char *value,
                             char *why, size_t why_len) {
    (void)key;
    char q[TG_QUOTE_MAX + 4];
    tg_quote(q, sizeof(q), value, strlen(value));
    const char *dash = strchr(value, '-');
    char lo[16], hi[16];
    uint32_t a, b;
    if (dash == NULL || (size_t)(dash - value) >= sizeof(lo) || strlen(dash + 1) >= sizeof(hi))
        return tg_set_why(why, why_len, "bad value '%s': expected MIN-MAX (40000-49999)", q);
    memcpy(lo, value, (size_t)(dash - value));
    lo[dash - value] = '\0';
    memcpy(hi, dash + 1, strlen(dash + 1) + 1);
    if (tg_parse_uint(&a, lo, 1024, 65535) != TG_UINT_OK ||
        tg_parse_uint(&b, hi, 1024, 65535) != TG_UINT_OK)
        return tg_set_why(why, why_len, "bad value '%s': expected MIN-MAX within 1024-65535", q);
    if (a % 2 != 0)
        return tg_set_why(why, why_len, "'%s': MIN must be even (RTP on even ports)", q);
    if (b < a + 3)
        return tg_set_why(why, why_len, "'%s': at least two port pairs needed", q);
    st->cfg->media_port_min = (uint16_t)a;
    st->cfg->media_port_max = (uint16_t)b;
    return 1;
}

static int tg_set_srtp_suites(struct tg_parse_state *st, const struct tg_key *key,
                              const char *value, char *why, size_t why_len) {
    (void)key;
    struct tg_config *cfg = st->cfg;
    cfg->media_num_suites = 0;
    const char *p = value;
    while (p != NULL) {
        size_t len;
        const char *item = tg_next_item(&p, &len);
        char q[TG_QUOTE_MAX + 4];
        tg_quote(q, sizeof(q), item, len);
        if (len == 0)
            return tg_set_why(why, why_len, "empty item in the list");
        size_t s = 1;
        while (s < sizeof(k_srtp_suites) / sizeof(k_srtp_suites[0]) &&
               !(strlen(k_srtp_suites[s]) == len && memcmp(item, k_srtp_suites[s], len) == 0))
            s++;
        if (s == sizeof(k_srtp_suites) / sizeof(k_srtp_suites[0]))
            return tg_set_why(why, why_len,
                              "unknown suite '%s': expected AES_CM_128_HMAC_SHA1_80, "
                              "AES_CM_128_HMAC_SHA1_32 or AEAD_AES_128_GCM",
                              q);
        for (size_t i = 0; i < cfg->media_num_suites; i++)
            if (cfg->media_suites[i] == s)
                return tg_set_why(why, why_len, "suite '%s' listed twice", q);
        cfg->media_suites[cfg->media_num_suites++] = (uint8_t)s;
    }
    if (cfg->media_num_suites == 0)
        return tg_set_why(why, why_len, "no suite given");
    return 1;
}

static const struct tg_key k_media_keys[] = {
    {"public_address", tg_set_media_addr, 1, 0, 0, offsetof(struct tg_config, media_public), 0},
    {"internal_address", tg_set_media_addr, 1, 0, 0, offsetof(struct tg_config, media_internal), 0},
    {"port_range", tg_set_port_range, 0, 0, 0, 0, 0},
    {"srtp_suites", tg_set_srtp_suites, 0, 0, 0, 0, 0},
    TG_U32("timeout_s", 0, 1, 86400, media_timeout_s),
    TG_U32("max_calls", 0, 1, 1000000, media_max_calls),
    {NULL, NULL, 0, 0, 0, 0, 0},
};

#define TG_LU32(name, min, max, field)                                                             \
    { name, tg_set_listener_u32, 0, min, max, offsetof(struct tg_listener_conf, field), 0 }

static const struct tg_key k_inbound_keys[] = {
    {"listen", tg_set_listen, 1, 0, 0, 0, 0},
    {"forward", tg_set_forward, 1, 0, 0, 0, 0},
    {"mode", tg_set_mode, 0, 0, 0, 0, 0},
    TG_LU32("keepalive_interval_ms", 0, 3600000, keepalive_interval_ms),
    TG_LU32("sip_max_message", 1024, 1048576, sip_max_message),
    TG_LU32("max_connections", 0, 1000000, max_connections),
    {NULL, NULL, 0, 0, 0, 0, 0},
};

static const struct tg_key k_outbound_keys[] = {
    {"listen", tg_set_listen, 1, 0, 0, 0, 0},
    {"connect", tg_set_connect, 1, 0, 0, 0, 0},
    {"mode", tg_set_mode, 0, 0, 0, 0, 0},
    TG_LU32("keepalive_interval_ms", 0, 3600000, keepalive_interval_ms),
    TG_LU32("options_interval_s", 0, 3600, options_interval_s),
    TG_LU32("options_failures", 1, 100, options_failures),
    TG_LU32("sip_max_message", 1024, 1048576, sip_max_message),
    TG_LU32("max_connections", 0, 1000000, max_connections),
    TG_LU32("connect_timeout_ms", 100, 600000, connect_timeout_ms),
    TG_LU32("failover_timeout_ms", 0, 3600000, failover_timeout_ms),
    TG_LU32("target_backoff_s", 0, 3600, target_backoff_s),
    {NULL, NULL, 0, 0, 0, 0, 0},
};

static const struct tg_key *tg_section_keys(enum tg_section sect) {
    switch (sect) {
    case TG_SECT_GLOBAL:
        return k_global_keys;
    case TG_SECT_ADMIN:
        return k_admin_keys;
    case TG_SECT_TLS:
        return k_tls_keys;
    case TG_SECT_INBOUND:
        return k_inbound_keys;
    case TG_SECT_OUTBOUND:
        return k_outbound_keys;
    case TG_SECT_MEDIA:
        return k_media_keys;
    case TG_SECT_NONE:
        break;
    }
    return NULL;
}

// tg_key_name writes the name of |key| in the current section for messages: `tls.cert`,
// `inbound NAME.listen`.
static void tg_key_name(struct tg_parse_state *st, enum tg_section sect, const char *key, char *out,
                        size_t out_len) {
    switch (sect) {
    case TG_SECT_INBOUND:
    case TG_SECT_OUTBOUND:
        snprintf(out, out_len, "%s %s.%s", sect == TG_SECT_INBOUND ? "inbound" : "outbound",
                 tg_cur_listener(st)->name, key);
        return;
    case TG_SECT_GLOBAL:
        snprintf(out, out_len, "global.%s", key);
        return;
    case TG_SECT_ADMIN:
        snprintf(out, out_len, "admin.%s", key);
        return;
    case TG_SECT_TLS:
        snprintf(out, out_len, "tls.%s", key);
        return;
    case TG_SECT_MEDIA:
        snprintf(out, out_len, "media.%s", key);
        return;
    case TG_SECT_NONE:
        break;
    }
    snprintf(out, out_len, "%s", key);
}

// ---------------------------------------------------------------------------------------------
// Sections.

// tg_check_required reports the first required key of |sect| absent from st->seen, naming
// the header line |line| (0: the section is absent).
static int tg_check_required(struct tg_parse_state *st, enum tg_section sect, int line) {
    const struct tg_key *keys = tg_section_keys(sect);
    for (size_t i = 0; keys[i].name != NULL; i++) {
        if (keys[i].required && st->seen[i] == 0) {
            char name[160];
            tg_key_name(st, sect, keys[i].name, name, sizeof(name));
            return tg_fail(st, line, name, "required key missing");
        }
    }
    return 1;
}

// tg_check_admin refuses an [admin] listen address other than loopback without both a source
// allow-list and a token: the admin can reload and shows paths and peers.
static int tg_check_admin(struct tg_parse_state *st) {
    const struct tg_config *cfg = st->cfg;
    if (!cfg->admin_enabled ||
        tg_sockaddr_is_loopback((const struct sockaddr *)&cfg->admin_listen.addr))
        return 1;
    int has_allow = cfg->num_admin_allow > 0, has_token = cfg->admin_token_file[0] != '\0';
    if (has_allow && has_token)
        return 1;
    int line = st->sect_line;
    for (size_t i = 0; k_admin_keys[i].name != NULL; i++) {
        if (strcmp(k_admin_keys[i].name, "listen") == 0 && st->seen[i] != 0)
            line = st->seen[i];
    }
    char where[80];
    tg_target_format(&cfg->admin_listen, where, sizeof(where));
    return tg_fail(st, line, "admin.listen", "%s is not a loopback address: it needs %s", where,
                   !has_allow && !has_token
                       ? "admin.allow (source networks) and admin.token_file (bearer token)"
                   : has_allow ? "admin.token_file (bearer token)"
                               : "admin.allow (source networks)");
}

// tg_close_section checks the section being read when the next one starts or at the end.
static int tg_close_section(struct tg_parse_state *st) {
    if (st->sect == TG_SECT_NONE)
        return 1;
    if (!tg_check_required(st, st->sect, st->sect_line))
        return 0;
    return st->sect != TG_SECT_ADMIN || tg_check_admin(st);
}

static void tg_open_section(struct tg_parse_state *st, enum tg_section sect) {
    st->sect = sect;
    st->sect_line = st->line;
    memset(st->seen, 0, sizeof(st->seen));
}

static int tg_open_fixed(struct tg_parse_state *st, enum tg_section sect, int *header_line,
                         const char *label) {
    if (*header_line != 0)
        return tg_fail(st, st->line, label, "duplicate section (first at line %d)", *header_line);
    *header_line = st->line;
    tg_open_section(st, sect);
    return 1;
}

static int tg_open_listener(struct tg_parse_state *st, enum tg_section sect, const char *name,
                            size_t name_len, const char *label) {
    struct tg_config *cfg = st->cfg;
    if (!tg_valid_name(name, name_len))
        return tg_fail(st, st->line, label, "bad listener name: 1..%d characters of [A-Za-z0-9_.-]",
                       TG_NAME_MAX - 1);
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        struct tg_listener_conf *l = &cfg->listeners[i];
        if (strlen(l->name) == name_len && memcmp(l->name, name, name_len) == 0)
            return tg_fail(st, st->line, label, "duplicate listener name (first at line %d)",
                           l->line);
    }
    if (cfg->num_listeners == TG_MAX_LISTENERS)
        return tg_fail(st, st->line, label, "more than %d listener sections", TG_MAX_LISTENERS);
    if (cfg->num_listeners == st->listeners_cap) {
        size_t cap = st->listeners_cap == 0 ? 4 : st->listeners_cap * 2;
        struct tg_listener_conf *ls = realloc(cfg->listeners, cap * sizeof(*ls));
        if (ls == NULL)
            return tg_fail(st, st->line, label, "out of memory");
        cfg->listeners = ls;
        st->listeners_cap = cap;
    }
    struct tg_listener_conf *l = &cfg->listeners[cfg->num_listeners];
    memset(l, 0, sizeof(*l));
    memcpy(l->name, name, name_len);
    l->direction = sect == TG_SECT_INBOUND ? TG_INBOUND : TG_OUTBOUND;
    l->mode = TG_MODE_TCP;
    l->line = st->line;
    l->options_interval_s = 60;
    l->options_failures = 2;
    l->keepalive_interval_ms = 30000;
    l->sip_max_message = 65536;
    l->connect_timeout_ms = 3000;
    l->failover_timeout_ms = 30000;
    l->target_backoff_s = 30;
    st->listener = cfg->num_listeners++;
    tg_open_section(st, sect);
    return 1;
}

// tg_word_is reports whether |s| (|len| bytes) is |word|.
static int tg_word_is(const char *s, size_t len, const char *word) {
    return len == strlen(word) && memcmp(s, word, len) == 0;
}

static int tg_is_blank(char c) {
    return c == ' ' || c == '\t';
}

// tg_open_named opens the section `[KIND NAME]` (NAME may be empty). |label| is the header as
// written, for messages.
static int tg_open_named(struct tg_parse_state *st, const char *kind, size_t kind_len,
                         const char *name, size_t name_len, const char *label) {
    static const struct {
        const char *word;
        enum tg_section sect;
    } k_fixed[] = {{"global", TG_SECT_GLOBAL},
                   {"admin", TG_SECT_ADMIN},
                   {"tls", TG_SECT_TLS},
                   {"media", TG_SECT_MEDIA}};
    int *header_lines[] = {&st->global_line, &st->admin_line, &st->tls_line, &st->media_line};
    for (size_t i = 0; i < sizeof(k_fixed) / sizeof(k_fixed[0]); i++) {
        if (!tg_word_is(kind, kind_len, k_fixed[i].word))
            continue;
        if (name_len != 0)
            return tg_fail(st, st->line, label, "this section takes no name");
        return tg_open_fixed(st, k_fixed[i].sect, header_lines[i], label);
    }
    int inbound = tg_word_is(kind, kind_len, "inbound");
    if (!inbound && !tg_word_is(kind, kind_len, "outbound"))
        return tg_fail(st, st->line, label, "unknown section");
    if (name_len == 0)
        return tg_fail(st, st->line, label, "missing listener name: [%s NAME]",
                       inbound ? "inbound" : "outbound");
    return tg_open_listener(st, inbound ? TG_SECT_INBOUND : TG_SECT_OUTBOUND, name, name_len,
                            label);
}

// tg_section_header handles the header |s| (|len| bytes, starting with '['): `[KIND]` or
// `[KIND NAME]`, blanks allowed inside the brackets, a comment allowed after them.
static int tg_section_header(struct tg_parse_state *st, const char *s, size_t len) {
    const char *close = memchr(s, ']', len);
    char label[TG_QUOTE_MAX + 8];
    tg_quote(label, sizeof(label), s, close != NULL ? (size_t)(close - s) + 1 : len);
    if (close == NULL)
        return tg_fail(st, st->line, "syntax", "section header without ']'");
    const char *rest = close + 1, *end = s + len;
    while (rest < end && tg_is_blank(*rest))
        rest++;
    if (rest < end && *rest != ';' && *rest != '#')
        return tg_fail(st, st->line, label, "text after the section header");
    if (!tg_close_section(st))
        return 0;

    size_t in_len = (size_t)(close - s - 1);
    const char *in = tg_trim(s + 1, &in_len), *in_end = in + in_len;
    const char *kind_end = in;
    while (kind_end < in_end && !tg_is_blank(*kind_end))
        kind_end++;
    const char *name = kind_end;
    while (name < in_end && tg_is_blank(*name))
        name++;
    return tg_open_named(st, in, (size_t)(kind_end - in), name, (size_t)(in_end - name), label);
}

// tg_key_line checks that |s| (|len| bytes) is `KEY = VALUE` with KEY of [A-Za-z0-9_.-], so
// that inih splits it the same way (it would also split `KEY: VALUE` and refuse some lines
// without saying why).
static int tg_key_line(struct tg_parse_state *st, const char *s, size_t len) {
    const char *eq = memchr(s, '=', len);
    if (eq == NULL)
        return tg_fail(st, st->line, "syntax", "expected 'key = value' or a [section] header");
    size_t key_len = (size_t)(eq - s);
    s = tg_trim(s, &key_len);
    if (key_len == 0)
        return tg_fail(st, st->line, "syntax", "missing key before '='");
    for (size_t i = 0; i < key_len; i++) {
        if (!tg_is_name_char(s[i])) {
            char q[TG_QUOTE_MAX + 4];
            tg_quote(q, sizeof(q), s, key_len);
            return tg_fail(st, st->line, "syntax", "bad key '%s'", q);
        }
    }
    return 1;
}

// tg_classify_line checks one line (leading blanks removed) before inih sees it.
static int tg_classify_line(struct tg_parse_state *st, const char *s, size_t len) {
    if (len == 0 || s[0] == ';' || s[0] == '#')
        return 1;
    if (s[0] == '[')
        return tg_section_header(st, s, len);
    return tg_key_line(st, s, len);
}

// tg_reader is inih's line reader: it hands out one line of st->data per call (without the
// line ending or leading whitespace) and counts lines. It returns NULL at the end of the data
// and after an error, which ends ini_parse_stream.
static char *tg_reader(char *str, int num, void *stream) {
    struct tg_parse_state *st = stream;
    if (st->failed || st->pos >= st->data_len || num < 2)
        return NULL;
    if (st->line == INT_MAX - 1) {
        tg_fail(st, st->line, "syntax", "too many lines");
        return NULL;
    }
    st->line++;
    const char *s = st->data + st->pos;
    size_t avail = st->data_len - st->pos;
    const char *nl = memchr(s, '\n', avail);
    size_t len = nl != NULL ? (size_t)(nl - s) : avail;
    st->pos += nl != NULL ? len + 1 : len;
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (memchr(s, '\0', len) != NULL) {
        tg_fail(st, st->line, "syntax", "NUL byte in line");
        return NULL;
    }
    if (len > (size_t)num - 1) {
        tg_fail(st, st->line, "syntax", "line longer than %d characters", num - 1);
        return NULL;
    }
    if (st->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        len -= 3;
    }
    // Leading blanks go, so inih never takes an indented line as a continuation.
    while (len > 0 && (tg_is_blank(s[0]) || s[0] == '\r' || s[0] == '\v' || s[0] == '\f')) {
        s++;
        len--;
    }
    if (!tg_classify_line(st, s, len))
        return NULL;
    memcpy(str, s, len);
    str[len] = '\0';
    return str;
}

// tg_handler is inih's callback for each `key = value` of the line last read.
static int tg_handler(void *user, const char *section, const char *name, const char *value) {
    (void)section; // inih truncates it; the reader tracks the section.
    struct tg_parse_state *st = user;
    if (st->failed)
        return 0;
    if (st->sect == TG_SECT_NONE)
        return tg_fail(st, st->line, name, "key outside any section");
    char key_name[160];
    tg_key_name(st, st->sect, name, key_name, sizeof(key_name));
    const struct tg_key *keys = tg_section_keys(st->sect);
    size_t i = 0;
    while (keys[i].name != NULL && strcmp(keys[i].name, name) != 0)
        i++;
    if (keys[i].name == NULL)
        return tg_fail(st, st->line, key_name, "unknown key");
    if (st->seen[i] != 0)
        return tg_fail(st, st->line, key_name, "duplicate key (first at line %d)", st->seen[i]);
    st->seen[i] = st->line;
    if (value[0] == '\0')
        return tg_fail(st, st->line, key_name, "empty value");
    char why[256];
    if (!keys[i].set(st, &keys[i], value, why, sizeof(why)))
        return tg_fail(st, st->line, key_name, "%s", why);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Listen addresses: one owner per address.

// tg_fail_overlap reports |mine| (the value of |key| at |line|) clashing with |theirs|, which
// |owner| describes (`the listen address of [inbound a] (line 9)`).
static int tg_fail_overlap(struct tg_parse_state *st, int line, const char *key,
                           const struct tg_target *mine, enum tg_overlap ov,
                           const struct tg_target *theirs, const char *owner) {
    char a[80], b[80];
    tg_target_format(mine, a, sizeof(a));
    tg_target_format(theirs, b, sizeof(b));
    if (ov == TG_OVERLAP_SAME)
        return tg_fail(st, line, key, "%s is already %s", a, owner);
    return tg_fail(st, line, key, "%s overlaps %s, %s", a, b, owner);
}

// tg_check_admin_owner refuses a listener on the admin listen address, reported at whichever
// of the two `listen` lines comes later (the listener's when the admin's is the default).
static int tg_check_admin_owner(struct tg_parse_state *st, const struct tg_listener_conf *l) {
    const struct tg_config *cfg = st->cfg;
    enum tg_overlap ov = tg_listen_overlap(&l->listen, &cfg->admin_listen);
    if (!cfg->admin_enabled || ov == TG_OVERLAP_NONE)
        return 1;
    char key[160], owner[160];
    if (cfg->admin_listen_line > l->listen_line) {
        snprintf(owner, sizeof(owner), "the listen address of [%s %s] (line %d)",
                 tg_direction_word(l->direction), l->name, l->listen_line);
        return tg_fail_overlap(st, cfg->admin_listen_line, "admin.listen", &cfg->admin_listen, ov,
                               &l->listen, owner);
    }
    if (cfg->admin_listen_line > 0)
        snprintf(owner, sizeof(owner), "the admin listen address (line %d)",
                 cfg->admin_listen_line);
    else
        snprintf(owner, sizeof(owner),
                 "the admin listen address (the default: set admin.listen, or admin.enabled = "
                 "no)");
    snprintf(key, sizeof(key), "%s %s.listen", tg_direction_word(l->direction), l->name);
    return tg_fail_overlap(st, l->listen_line, key, &l->listen, ov, &cfg->admin_listen, owner);
}

// tg_check_listen_owners refuses two listeners on one address (or a wildcard and a specific
// address of one family and port), and a listener on the admin's address: each would take a
// share of the other's connections (SO_REUSEPORT) or fail to bind.
static int tg_check_listen_owners(struct tg_parse_state *st) {
    const struct tg_config *cfg = st->cfg;
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct tg_listener_conf *l = &cfg->listeners[i];
        for (size_t j = 0; j < i; j++) {
            const struct tg_listener_conf *o = &cfg->listeners[j];
            enum tg_overlap ov = tg_listen_overlap(&l->listen, &o->listen);
            if (ov == TG_OVERLAP_NONE)
                continue;
            char key[160], owner[160];
            snprintf(key, sizeof(key), "%s %s.listen", tg_direction_word(l->direction), l->name);
            snprintf(owner, sizeof(owner), "the listen address of [%s %s] (line %d)",
                     tg_direction_word(o->direction), o->name, o->listen_line);
            return tg_fail_overlap(st, l->listen_line, key, &l->listen, ov, &o->listen, owner);
        }
        if (!tg_check_admin_owner(st, l))
            return 0;
    }
    return 1;
}

// tg_check_whole reports what only the whole file can show: an absent [tls], no listener.
static int tg_check_whole(struct tg_parse_state *st) {
    if (!tg_close_section(st))
        return 0;
    if (st->tls_line == 0) {
        memset(st->seen, 0, sizeof(st->seen));
        if (!tg_check_required(st, TG_SECT_TLS, 0))
            return 0;
    }
    if (st->cfg->num_listeners == 0)
        return tg_fail(st, 0, "listeners",
                       "at least one [inbound NAME] or [outbound NAME] section required");
    if (!tg_check_listen_owners(st))
        return 0;
    if (st->media_line != 0) {
        st->cfg->media_enabled = 1;
        st->cfg->media_line = st->media_line;
    }
    // Unauthenticated connections get a budget smaller than the slots, so that a flood of them
    // never takes the slots the provider's authenticated connections need.
    if (st->cfg->max_handshakes == 0)
        st->cfg->max_handshakes = st->cfg->max_connections > 1 ? st->cfg->max_connections / 2 : 1;
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Public API.

void tg_config_init(struct tg_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 0;
    cfg->max_connections = 10000;
    cfg->max_handshakes = 0; // 0 until loaded: max_connections / 2 (tg_config_load)
    cfg->max_handshakes_per_source = 128;
    cfg->new_connections_per_source = 256;
    cfg->fd_reserve = 64;
    cfg->log_level = TG_LOG_INFO;
    cfg->drain_timeout_ms = 10000;
    cfg->buffer_size = 65536;
    cfg->admin_enabled = 1;
    tg_parse_hostport(&cfg->admin_listen, "127.0.0.1:9900", NULL, 0);
    cfg->min_key_bits = 2048;
    cfg->min_version = 0x0303;
    cfg->handshake_timeout_ms = 10000;
    cfg->signers = 1;
    cfg->idle_timeout_ms = 300000;
    cfg->media_port_min = 40000;
    cfg->media_port_max = 49999;
    cfg->media_suites[0] = 1; // AES_CM_128_HMAC_SHA1_80
    cfg->media_suites[1] = 2; // AES_CM_128_HMAC_SHA1_32
    cfg->media_suites[2] = 3; // AEAD_AES_128_GCM
    cfg->media_num_suites = 3;
    cfg->media_timeout_s = 30;
    cfg->media_max_calls = 1000;
}

void tg_config_cleanup(struct tg_config *cfg) {
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->num_peer_names; i++)
        free(cfg->peer_names[i]);
    free(cfg->peer_names);
    free(cfg->listeners);
    memset(cfg, 0, sizeof(*cfg));
}

int tg_config_parse(struct tg_config *cfg, const char *name, const char *data, size_t data_len,
                    char *err, size_t err_len) {
    tg_config_init(cfg);
    if (name == NULL)
        name = "config";
    snprintf(cfg->path, sizeof(cfg->path), "%s", name);
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    struct tg_parse_state st = {
        .cfg = cfg,
        .name = name,
        .data = data,
        .data_len = data_len,
        .err = err,
        .err_len = err_len,
    };
    int ret = ini_parse_stream(tg_reader, &st, tg_handler, &st);
    // inih's own complaints cannot happen after tg_classify_line; keep them as a backstop.
    if (!st.failed && ret > 0)
        tg_fail(&st, ret, "syntax", "expected 'key = value' or a [section] header");
    if (!st.failed && ret < 0)
        tg_fail(&st, 0, "file", "out of memory");
    if (!st.failed)
        tg_check_whole(&st);
    if (st.failed) {
        tg_config_cleanup(cfg);
        return 0;
    }
    return 1;
}

// tg_read_file reads all of |fd| (at most TG_CONFIG_MAX_FILE bytes) into a new buffer.
static int tg_read_file(int fd, char **out_data, size_t *out_len, const char **out_why) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        *out_why = "out of memory";
        return 0;
    }
    for (;;) {
        if (len == cap && len > TG_CONFIG_MAX_FILE) {
            free(buf);
            *out_why = "file larger than 1 MiB";
            return 0;
        }
        if (len == cap) {
            // Room for one byte over the limit, to tell a file of exactly the limit apart.
            cap = cap * 2 > TG_CONFIG_MAX_FILE + 1 ? TG_CONFIG_MAX_FILE + 1 : cap * 2;
            char *bigger = realloc(buf, cap);
            if (bigger == NULL) {
                free(buf);
                *out_why = "out of memory";
                return 0;
            }
            buf = bigger;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            *out_why = strerror(errno);
            return 0;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *out_data = buf;
    *out_len = len;
    return 1;
}

int tg_config_load(struct tg_config *cfg, const char *path, char *err, size_t err_len) {
    tg_config_init(cfg);
    if (strlen(path) >= sizeof(cfg->path))
        return tg_set_why(err, err_len, "%.64s...:0: file: path too long", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tg_set_why(err, err_len, "%s:0: file: cannot open: %s", path, strerror(errno));
    char *data = NULL;
    size_t len = 0;
    const char *why = NULL;
    int ok = tg_read_file(fd, &data, &len, &why);
    close(fd);
    if (!ok)
        return tg_set_why(err, err_len, "%s:0: file: cannot read: %s", path, why);
    ok = tg_config_parse(cfg, path, data, len, err, err_len);
    free(data);
    return ok;
}

int tg_config_resolve(struct tg_config *cfg, char *err, size_t err_len) {
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        struct tg_listener_conf *l = &cfg->listeners[i];
        int inbound = l->direction == TG_INBOUND;
        for (size_t j = 0; j < l->num_targets; j++) {
            struct tg_target *t = &l->targets[j];
            const char *why = NULL;
            if (t->resolved || tg_resolve_target(t, &why))
                continue;
            return tg_set_why(err, err_len, "%s:%d: %s %s.%s: cannot resolve %s: %s", cfg->path,
                              l->line, inbound ? "inbound" : "outbound", l->name,
                              inbound ? "forward" : "connect", t->host, why);
        }
    }
    return 1;
}
