#!/usr/bin/env python3
"""Before/after of tlsgate binaries on the data path, side by side in one run.

  bench/compare/ab.py [--rounds N] [--duration S] BIN_A BIN_B [BIN ...]

Each round starts every binary in turn (compare.py's configuration: one worker, pinned to CPU
0, tg-echo and tlsgate-load on CPU 1) and measures the proxy CPU per 1 KiB message (latency
load, 2,000 round trips/s over 16 connections, two messages per round trip, CPU read inside
the steady part) and per bulk byte (16 KiB writes, 4 connections), then the 1 KiB p99. The
binaries alternate, so a change of load on a shared machine hits them alike; the medians over
the rounds are printed last. Wrap it in `flock /tmp/tg-bench.lock`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import types

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("bins", nargs="+")
    a = ap.parse_args()
    args = types.SimpleNamespace(duration=a.duration, lat_warmup=1.0, quick=False)
    d = str(a.duration)
    work = tempfile.mkdtemp(prefix="tg-ab-")
    pki = os.path.join(work, "pki")
    subprocess.run(["bash", C.MAKE_PKI, pki], check=True, capture_output=True)
    ep = C.free_port()
    echo = subprocess.Popen(["taskset", "-c", "1", C.ECHO, "--listen", "127.0.0.1:%d" % ep],
                            stdout=subprocess.DEVNULL)
    res = {b: {"msg": [], "byte": [], "p99": []} for b in a.bins}
    try:
        C.wait_port(ep, echo)
        for rnd in range(a.rounds):
            for b in a.bins:
                C.TLSGATE = b
                px = C.Tlsgate(work, pki, C.free_port(), ep)
                px.start("0")
                try:
                    r, cpu, rts = C.latency_cpu(
                        args, pki, px.proc.pid, px.port, "1",
                        ["--mode", "latency", "--size", "1024", "--rate", "2000",
                         "--concurrency", "16", "--duration", d, "--warmup", "1"], a.duration + 30)
                    res[b]["msg"].append(cpu * 1e6 / (2 * rts))
                    res[b]["p99"].append(r["p99_us"])
                    c0 = C.cpu_seconds(px.proc.pid)
                    r = C.run_load(args, pki, px.port, "1",
                                   ["--mode", "bulk", "--write-size", "16384", "--concurrency",
                                    "4", "--duration", d, "--warmup", "0"], a.duration + 30)
                    cpu = C.cpu_seconds(px.proc.pid) - c0
                    nb = (r["bytes_per_s_sent"] + r["bytes_per_s_received"]) * r["duration_s"]
                    res[b]["byte"].append(cpu * 1e9 / nb)
                finally:
                    px.stop()
                print("round %d %s: cpu_us_per_msg=%.1f bulk_cpu_ns_per_byte=%.3f p99_us=%.0f" %
                      (rnd + 1, b, res[b]["msg"][-1], res[b]["byte"][-1], res[b]["p99"][-1]),
                      flush=True)
    finally:
        echo.terminate()
        echo.wait()
    for b in a.bins:
        print("median %s: cpu_us_per_msg=%.1f bulk_cpu_ns_per_byte=%.3f p99_us=%.0f" %
              (b, *(statistics.median(res[b][k]) for k in ("msg", "byte", "p99"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
