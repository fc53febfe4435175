#!/usr/bin/env python3
"""Smoke test of tlsgate-bench: runs every benchmark briefly and checks that each expected one
produced a sane result. Never judges speed, so a slow or noisy machine cannot fail it.

usage: smoke.py BENCH_BINARY OUT_JSON [benchmark flags...]
"""
import json
import math
import subprocess
import sys

EXPECTED = [
    "handshake/full/tls13/client_rsa2048",
    "handshake/full/tls13/client_ecdsa_p256",
    "handshake/full/tls12/client_rsa2048",
    "handshake/full/tls12/client_ecdsa_p256",
    "handshake/resumed/tls13",
    "handshake/resumed/tls12",
    "record/seal/64",
    "record/seal/1024",
    "record/seal/16384",
    "record/open/64",
    "record/open/1024",
    "record/open/16384",
    "policy/check_peer",
    "policy/check_peer_parsed",
    "floor/rsa2048_sign_pkcs1",
    "floor/rsa2048_sign_pss",
    "floor/rsa2048_verify_pkcs1",
    "floor/rsa2048_verify_pss",
    "floor/ecdsa_p256_sign",
    "floor/ecdsa_p256_verify",
    "floor/x25519",
    "floor/aes128gcm_seal/64",
    "floor/aes128gcm_seal/1024",
    "floor/aes128gcm_seal/16384",
    "floor/aes128gcm_open/16384",
    "floor/hmac_sha256/1024",
    "floor/handshake_tls13_rsa",
    "floor/handshake_tls13_ecdsa",
    "srtp/protect/tlsgate/aes_cm_sha1_80",
    "srtp/protect/libsrtp2/aes_cm_sha1_80",
    "srtp/unprotect/tlsgate/aes_cm_sha1_80",
    "srtp/unprotect/libsrtp2/aes_cm_sha1_80",
    "srtp/protect/tlsgate/aes_cm_sha1_32",
    "srtp/protect/libsrtp2/aes_cm_sha1_32",
    "srtp/unprotect/tlsgate/aes_cm_sha1_32",
    "srtp/unprotect/libsrtp2/aes_cm_sha1_32",
    "srtp/protect/tlsgate/aead_aes_128_gcm",
    "srtp/protect/libsrtp2/aead_aes_128_gcm",
    "srtp/unprotect/tlsgate/aead_aes_128_gcm",
    "srtp/unprotect/libsrtp2/aead_aes_128_gcm",
    "srtp/hmac_sha1_precomputed/176",
    "srtp/hmac_sha1_ctx_copy/176",
    "srtp/aes_ctr128_encrypt/160",
    "srtp/evp_aes_128_ctr/160",
]

# Benchmarks that report bytes_per_second.
THROUGHPUT = ("record/", "floor/aes128gcm_", "floor/hmac_", "srtp/hmac_", "srtp/aes_", "srtp/evp_")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, out = sys.argv[1], sys.argv[2]
    cmd = [binary, "--benchmark_out=" + out, "--benchmark_out_format=json"] + sys.argv[3:]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    problems = []
    if proc.returncode != 0:
        problems.append("%s exited with %d" % (binary, proc.returncode))
    if "the floor" not in proc.stdout:
        problems.append("no handshake floor summary in the output")
    try:
        with open(out) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        problems.append("cannot read %s: %s" % (out, e))
        report = {"benchmarks": []}

    seen = {}
    for b in report.get("benchmarks", []):
        seen[b.get("run_name", b.get("name"))] = b
    for name in EXPECTED:
        b = seen.get(name)
        if b is None:
            problems.append("%s: missing" % name)
            continue
        if b.get("error_occurred"):
            problems.append("%s: error: %s" % (name, b.get("error_message")))
            continue
        real = b.get("real_time", 0)
        if not (isinstance(real, (int, float)) and math.isfinite(real) and real > 0):
            problems.append("%s: real_time %r" % (name, real))
        if b.get("iterations", 0) < 1:
            problems.append("%s: no iteration" % name)
        if name.startswith(THROUGHPUT):
            bps = b.get("bytes_per_second", 0)
            if not (math.isfinite(bps) and bps > 0):
                problems.append("%s: bytes_per_second %r" % (name, bps))
    for name in sorted(set(seen) - set(EXPECTED)):
        problems.append("%s: not in smoke.py's list (add it)" % name)

    for p in problems:
        print("bench.micro: FAIL: " + p, file=sys.stderr)
    if problems:
        return 1
    print("bench.micro: %d benchmarks ran and reported sane numbers" % len(EXPECTED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
