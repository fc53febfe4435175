// The keys of the configuration file: one table per section, a setter per kind of value, and
// the value parsers (see include/tlsgate/configparse.h).
#include "tlsgate/configparse.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "tlsgate/keyd.h"

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
int tg_valid_name(const char *s, size_t len) {
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

struct tg_listener_conf *tg_cur_listener(struct tg_parse_state *st) {
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
const char *tg_trim(const char *s, size_t *len) {
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

const struct tg_key k_admin_keys[] = {
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

const struct tg_key *tg_section_keys(enum tg_section sect) {
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
