#include "tlsgate/config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>
#include <openssl/ssl.h>

#include "tlsgate/configparse.h"

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
