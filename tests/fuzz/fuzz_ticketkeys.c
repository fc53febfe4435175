// libFuzzer harness for the session ticket key file parser: any bytes must give either 1..8
// keys with distinct names or one `NAME:LINE: ...` error with the keys cleansed.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/ticketkeys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tg_ticket_keys keys;
    char err[256];
    err[0] = '\0';
    if (tg_ticket_keys_parse(&keys, "fuzz.keys", (const char *)data, size, err, sizeof(err))) {
        if (keys.num_keys == 0 || keys.num_keys > TG_TICKET_KEYS_MAX)
            __builtin_trap();
        for (size_t i = 0; i < keys.num_keys; i++) {
            if (tg_ticket_keys_find(&keys, keys.keys[i].name) != (int)i)
                __builtin_trap(); // names are distinct
        }
    } else if (strncmp(err, "fuzz.keys:", 10) != 0 || keys.num_keys != 0) {
        __builtin_trap();
    }
    tg_ticket_keys_cleanse(&keys);
    return 0;
}
