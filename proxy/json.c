// JSON string escaping for /status and the admin answers.
#include "tlsgate/json.h"

#include <stdio.h>

size_t tg_json_escape(char *out, size_t out_len, const char *s) {
    size_t n = 0;
    if (out_len == 0)
        return 0;
    for (; s != NULL && *s != '\0' && n + 7 < out_len; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)snprintf(out + n, out_len - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = '\0';
    return n;
}
