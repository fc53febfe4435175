// libFuzzer harness for the configuration loader: any bytes must give either a config or
// one error line, never a crash, a leak or a read out of bounds.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tg_config cfg;
    char err[512];
    err[0] = '\0';
    if (tg_config_parse(&cfg, "fuzz.conf", (const char *)data, size, err, sizeof(err))) {
        // A loaded config must be self-consistent.
        if (cfg.num_listeners == 0 || cfg.fqdn[0] == '\0')
            __builtin_trap();
    } else if (strncmp(err, "fuzz.conf:", 10) != 0) {
        __builtin_trap(); // every error names the file and a line
    }
    tg_config_cleanup(&cfg);
    return 0;
}
