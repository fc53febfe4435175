#ifndef TLSGATE_JSON_H
#define TLSGATE_JSON_H

#include <stddef.h>

// tg_json_escape writes |s| into |out| as the inside of a JSON string (NUL-terminated, cut to
// fit |out_len|). Returns the length.
size_t tg_json_escape(char *out, size_t out_len, const char *s);

#endif // TLSGATE_JSON_H
