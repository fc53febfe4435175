#ifndef TLSGATE_FUZZ_H
#define TLSGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

// LLVMFuzzerTestOneInput is a harness's entry point: libFuzzer (or regress_main.c, in builds
// without it) calls it once per input, |size| bytes at |data|. It returns 0; a bug aborts.
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif // TLSGATE_FUZZ_H
