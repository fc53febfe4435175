#ifndef TLSGATE_CURSOR_H
#define TLSGATE_CURSOR_H

// A bounds-checked read-only view of a buffer, shared by the parsers (SIP scanner and
// rewriter). Positions are offsets; every access is checked against the length.

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tg_cur {
    const uint8_t *b;
    size_t len;
};

#define TG_NPOS ((size_t)-1)

// tg_ascii_lower folds an ASCII upper-case letter; other values are returned unchanged.
static inline int tg_ascii_lower(int ch) {
    return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch;
}

// tg_cur_at returns the byte at |i|, or -1 past the end.
static inline int tg_cur_at(const struct tg_cur *c, size_t i) {
    return i < c->len ? c->b[i] : -1;
}

// tg_cur_find returns the first offset in [from, to) holding |ch|, or TG_NPOS. |to| is
// clamped to the length.
static inline size_t tg_cur_find(const struct tg_cur *c, size_t from, size_t to, uint8_t ch) {
    if (to > c->len)
        to = c->len;
    if (from >= to)
        return TG_NPOS;
    const uint8_t *p = memchr(c->b + from, ch, to - from);
    return p != NULL ? (size_t)(p - c->b) : TG_NPOS;
}

// tg_cur_ieq returns 1 when [off, off+n) equals |s| (|s_len| bytes) ignoring ASCII case.
static inline int tg_cur_ieq(const struct tg_cur *c, size_t off, size_t n, const char *s,
                             size_t s_len) {
    if (n != s_len || off > c->len || n > c->len - off)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (tg_ascii_lower(c->b[off + i]) != tg_ascii_lower((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

#endif // TLSGATE_CURSOR_H
