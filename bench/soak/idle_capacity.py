#!/usr/bin/env python3
"""Idle capacity: how much memory an idle, established mutual-TLS connection costs tlsgate,
and so how many one GiB holds.

  bench/soak/idle_capacity.py [--counts 2000,5000,9000] [--workers 1] [--hold 8]

Not a CTest test. For each count K, a fresh tlsgate (`workers` as given, tcp listener to
tg-echo, per-source admission limits lifted, idle timeout off) is warmed up with a 1 s bulk
load (which makes its whole receive-buffer ring resident: 16 MiB a worker, touched once by the
kernel and never again part of any connection's cost), then `tlsgate-load --mode idle
--concurrency K` establishes K mutual-TLS connections (each also connected through to the
backend: two sockets in tlsgate per connection) and holds them. Once all are up, tlsgate's
VmRSS (median of three reads) and descriptors are read, with /proc/net/sockstat (`TCP: mem`,
pages of socket buffer memory, whole machine) and /proc/slabinfo (kernel objects of sockets,
whole machine) before and after.

Printed: one row per K, the least-squares slope of RSS over K (bytes per idle connection, the
one-time costs falling into the intercept), the kernel's memory per socket from the slab deltas
(TCP, sock_inode_cache, filp, dentry; each proxied connection makes 4 sockets on this machine:
the client's, tlsgate's two and the backend's, of which tlsgate's two count), and connections
per GiB from both. Everything on 127.0.0.1; the machine-wide kernel figures are noisy on a shared
machine (other processes open and close sockets meanwhile).

The descriptor limit of the process bounds K: each connection holds 2 descriptors in tlsgate.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# The binaries, the peer name and the small process helpers are compare.py's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "compare"))
from compare import (ECHO, LOAD, MAKE_PKI, PEER_NAME, TLSGATE, free_port, wait_port)  # noqa: E402

SLAB_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_median(pid):
    vals = []
    for _ in range(3):
        vals.append(rss_kib(pid))
        time.sleep(0.3)
    return statistics.median(vals)


def sockstat_tcp():
    """{'inuse': n, 'mem': pages, ...} from the TCP line of /proc/net/sockstat."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()[1:]
                return {p[i]: int(p[i + 1]) for i in range(0, len(p) - 1, 2)}
    return {}


def slab():
    """{cache: (active objects, object size)} for SLAB_CACHES; {} when unreadable."""
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in SLAB_CACHES:
                    out[p[0]] = (int(p[1]), int(p[3]))
    except OSError:
        pass
    return out


def meminfo_slab_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


def measure(k, args, pki, work):
    echo_port, port, admin = free_port(), free_port(), free_port()
    procs = []
    log = open(os.path.join(work, "tlsgate-%d.log" % k), "wb")
    try:
        echo = subprocess.Popen([ECHO, "--listen", "127.0.0.1:%d" % echo_port],
                                stdout=subprocess.DEVNULL, start_new_session=True)
        procs.append(echo)
        wait_port(echo_port, echo)
        conf = os.path.join(work, "tlsgate-%d.conf" % k)
        with open(conf, "w") as f:
            f.write("""[global]
workers = %d
log_level = warn
max_connections = 9900
max_handshakes = 9900
max_handshakes_per_source = 0
new_connections_per_source = 0
[admin]
listen = 127.0.0.1:%d
[tls]
cert = %s/server.pem
key = %s/server.key
ca = %s/ca.pem
fqdn = sbc.tlsgate.test
peer_names = %s
handshake_timeout_ms = 60000
idle_timeout_ms = 0
[inbound idle]
listen = 127.0.0.1:%d
forward = 127.0.0.1:%d
""" % (args.workers, admin, pki, pki, pki, PEER_NAME, port, echo_port))
        tg = subprocess.Popen([TLSGATE, "run", "-c", conf], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
        procs.append(tg)
        wait_port(port, tg)
        base_cmd = [LOAD, "--connect", "127.0.0.1:%d" % port, "--cert", pki + "/client.pem",
                    "--key", pki + "/client.key", "--ca", pki + "/ca.pem",
                    "--sni", "sbc.tlsgate.test", "--json"]
        # Warm-up: every receive buffer of the ring becomes resident.
        subprocess.run(base_cmd + ["--mode", "bulk", "--concurrency", str(2 * args.workers),
                                   "--duration", "1", "--warmup", "0"],
                       capture_output=True, timeout=60, check=True)
        time.sleep(1.5)
        base = rss_median(tg.pid)
        base_fds = len(os.listdir("/proc/%d/fd" % tg.pid))
        ss0, slab0, mi0 = sockstat_tcp(), slab(), meminfo_slab_kib()
        p = subprocess.Popen(base_cmd + ["--mode", "idle", "--concurrency", str(k),
                                         "--hold", str(args.hold)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        procs.append(p)
        established = 0
        for line in p.stderr:
            if line.startswith("established="):
                established = int(line.split("=")[1])
                break
        time.sleep(1.5)
        held = rss_median(tg.pid)
        fds = len(os.listdir("/proc/%d/fd" % tg.pid))
        ss1, slab1, mi1 = sockstat_tcp(), slab(), meminfo_slab_kib()
        p.communicate(timeout=args.hold + 120)
        slab_delta = {c: slab1[c][0] * slab1[c][1] - slab0[c][0] * slab0[c][1]
                      for c in SLAB_CACHES if c in slab0 and c in slab1}
        tcp_objs = (slab1["TCP"][0] - slab0["TCP"][0]) if "TCP" in slab0 else None
        return {"k": k, "established": established, "base": base, "held": held,
                "fds": fds - base_fds, "tcp_mem_pages": ss1.get("mem", 0) - ss0.get("mem", 0),
                "tcp_inuse": ss1.get("inuse", 0) - ss0.get("inuse", 0),
                "slab": slab_delta, "tcp_objs": tcp_objs, "meminfo_slab": mi1 - mi0}
    finally:
        for pr in reversed(procs):
            if pr.poll() is None:
                try:
                    os.killpg(pr.pid, signal.SIGTERM)
                    pr.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(pr.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    pr.wait()
        log.close()


def fit(points):
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return b, my - b * mx


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="2000,5000,9000")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--hold", type=int, default=8, help="seconds each set is held")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c]
    for path in (TLSGATE, LOAD, ECHO, MAKE_PKI):
        if not os.path.exists(path):
            sys.exit("idle_capacity: missing %s (build first)" % path)
    work = tempfile.mkdtemp(prefix="tg-idlecap-")
    pki = os.path.join(work, "pki")
    subprocess.run(["bash", MAKE_PKI, pki], check=True, capture_output=True, timeout=120)
    rows = []
    for k in counts:
        print("idle_capacity: %d connections" % k, file=sys.stderr, flush=True)
        rows.append(measure(k, args, pki, work))
    print("command: %s" % " ".join(sys.argv))
    print("| idle connections | established | tlsgate RSS KiB (warm base -> held) | growth KiB "
          "| KiB / connection | tlsgate fds added | sockstat TCP mem pages added | "
          "kernel slab KiB added (TCP, inode, filp, dentry) | all slab KiB added (meminfo) | "
          "TCP sockets added |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    pts = []
    kern = []
    for r in rows:
        g = r["held"] - r["base"]
        n = r["established"] or 1
        pts.append((r["established"], g * 1024.0))
        slab_kib = sum(r["slab"].values()) / 1024.0
        if r["tcp_objs"]:
            kern.append((r["established"], sum(r["slab"].values()), r["tcp_objs"],
                         r["meminfo_slab"] * 1024))
        print("| %d | %d | %d -> %d | %d | %.2f | %d | %d | %.0f | %d | %s |" %
              (r["k"], r["established"], r["base"], r["held"], g, g / n, r["fds"],
               r["tcp_mem_pages"], slab_kib, r["meminfo_slab"], r["tcp_objs"]))
    if len(pts) >= 2:
        b, a = fit(pts)
        print("\nRSS slope: %.0f bytes per idle connection (intercept %.0f KiB): %.0f connections "
              "per GiB of tlsgate RSS" % (b, a / 1024, 2 ** 30 / b))
        if kern:
            per_sock = [s / t for _, s, t, _ in kern if t > 0]
            ps = statistics.median(per_sock) if per_sock else 0
            all_sock = statistics.median(m / t for _, _, t, m in kern if t > 0)
            socks = statistics.median(t / k for k, _, t, _ in kern)
            print("kernel: %.1f TCP sockets added per proxied connection (client, tlsgate x2, "
                  "backend); %.0f bytes of slab per socket in TCP, sock_inode_cache, filp and "
                  "dentry (median; %.0f bytes per socket counting all of the machine's slab "
                  "growth, noisier); tlsgate's two sockets: %.0f bytes per connection"
                  % (socks, ps, all_sock, 2 * ps))
            total = b + 2 * ps
            print("RSS + kernel sockets: %.0f bytes per connection: %.0f connections per GiB" %
                  (total, 2 ** 30 / total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
