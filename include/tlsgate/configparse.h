#ifndef TLSGATE_CONFIGPARSE_H
#define TLSGATE_CONFIGPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/config.h"

// The inside of the configuration loader, shared by its two files and by nothing else:
// config.c reads the file (lines, sections, inih, the checks over the whole file) and
// configkeys.c knows the keys (one table per section, a setter per kind of value, the value
// parsers). A new key is a row in a table of configkeys.c and, when its value is of a new
// kind, a setter there.

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

// tg_section_keys returns the key table of |sect| (ended by a row with a NULL name), NULL for
// TG_SECT_NONE.
const struct tg_key *tg_section_keys(enum tg_section sect);

// k_admin_keys is the [admin] table (config.c checks which of its keys were given).
extern const struct tg_key k_admin_keys[];

// tg_cur_listener is the listener of the [inbound NAME] / [outbound NAME] section being read.
struct tg_listener_conf *tg_cur_listener(struct tg_parse_state *st);

// tg_trim returns |s| without leading and trailing blanks, its length in |*len|.
const char *tg_trim(const char *s, size_t *len);

// tg_valid_name reports whether |s| (|len| bytes) is a section or listener name:
// [A-Za-z0-9_.-], 1..TG_NAME_MAX-1 bytes.
int tg_valid_name(const char *s, size_t len);

#endif // TLSGATE_CONFIGPARSE_H
