#!/usr/bin/env python3
"""Handshake storm: what a full-handshake storm does to established connections.

A trunk edge is judged in its worst minute: when a provider fails over, every trunk reconnects
at once, and each full handshake costs one signature with our RSA key (about 1 ms of CPU).
Signed on the I/O loop ([tls] signers = 0), every established connection of that worker waits
behind the signatures; signed by the pool (signers >= 1), the loop keeps relaying.

For each signers value, in alternation, ROUNDS times: tlsgate (one worker, RSA-2048 key) in
front of tg-echo; 100 established connections doing 1 KiB round trips at a fixed offered rate
(tlsgate-load --mode latency), measured once alone ("quiet") and once while tlsgate-load
--mode handshake runs full TLS 1.3 handshakes (no resumption) with --storm connections
("storm"). HAProxy (one thread, the same certificate, key and client-certificate rule as in
bench/compare/compare.py) runs the same two phases in the same round, beside tlsgate, when it is
installed (--no-haproxy leaves it out). No process is pinned: tlsgate's signer thread may use
the other core, as HAProxy's single thread may not. Prints one JSON object per run and a table
of medians over the rounds.

  python3 bench/load/storm.py [--rounds 3] [--duration 5] [--rate 2000] [--storm 8]
                              [--signers 0,1] [--no-haproxy]

Binaries come from the environment (TLSGATE, TG_ECHO, TLSGATE_LOAD, MAKE_PKI) or build/...
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True
# The binaries and the small process helpers are the smoke test's (same directory).
from smoke_test import (LOAD, MAKE_PKI, TG_ECHO, TLSGATE, free_port, port_open,  # noqa: E402
                        wait_until)

# HAProxy's configuration is compare.py's, so that both benches measure the same HAProxy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compare"))
from compare import Haproxy  # noqa: E402


def load(pki, port, *args):
    return subprocess.Popen([LOAD, "--connect", f"127.0.0.1:{port}", "--cert",
                             f"{pki}/client.pem", "--key", f"{pki}/client.key", "--ca",
                             f"{pki}/ca.pem", "--sni", "sbc.tlsgate.test", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(p, timeout):
    out, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"tlsgate-load exit {p.returncode}: {err}")
    return json.loads(out.strip().splitlines()[-1])


def run_proxy(tmp, pki, echo_port, signers):
    port, admin = free_port(), free_port()
    conf = tmp / f"tlsgate-{signers}.conf"
    conf.write_text(f"""[global]
workers = 1
log_level = warn
max_handshakes_per_source = 0
new_connections_per_source = 0
max_handshakes = 100000
[admin]
listen = 127.0.0.1:{admin}
[tls]
cert = {pki}/server.pem
key = {pki}/server.key
ca = {pki}/ca.pem
fqdn = sbc.tlsgate.test
peer_names = sip.um.example.net
signers = {signers}
[inbound in]
listen = 127.0.0.1:{port}
forward = 127.0.0.1:{echo_port}
""")
    log = open(tmp / f"tlsgate-{signers}.log", "w")
    proc = subprocess.Popen([TLSGATE, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_until("tlsgate", lambda: proc.poll() is not None or port_open(port), 10)
    if proc.poll() is not None:
        raise RuntimeError(f"tlsgate exited {proc.returncode}")
    return proc, port


class Stopper:
    """A started HAProxy, stopped like a tlsgate process (terminate, wait)."""

    def __init__(self, proxy):
        self.proxy = proxy

    def terminate(self):
        pass

    def wait(self, timeout):
        self.proxy.stop()


def run_haproxy(tmp, pki, echo_port):
    port = free_port()
    work = tmp / "haproxy"
    work.mkdir(exist_ok=True)
    hp = Haproxy(str(work), str(pki), port, echo_port)
    hp.start("0-%d" % ((os.cpu_count() or 1) - 1))  # not pinned, as tlsgate here
    return Stopper(hp), port


def one_run(pki, port, args, storm):
    lat_args = ["--mode", "latency", "--concurrency", "100", "--size", "1024", "--rate",
                str(args.rate), "--duration", str(args.duration), "--warmup", "1"]
    lat = load(pki, port, *lat_args)
    hs = None
    if storm:
        time.sleep(0.5)  # the latency run's connections are up before the storm starts
        hs = load(pki, port, "--mode", "handshake", "--concurrency", str(args.storm),
                  "--tls", "1.3", "--duration", str(args.duration), "--warmup", "0")
    res = {"latency": result(lat, args.duration * 4 + 30)}
    if hs is not None:
        res["handshake"] = result(hs, args.duration * 4 + 30)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--storm", type=int, default=8)
    ap.add_argument("--signers", default="0,1")
    ap.add_argument("--no-haproxy", action="store_true", help="tlsgate only")
    args = ap.parse_args()
    # A setup is a tlsgate signers value, or "haproxy".
    signers = [int(s) for s in args.signers.split(",")]
    if not args.no_haproxy and shutil.which("haproxy"):
        signers.append("haproxy")
    tmp = Path(tempfile.mkdtemp(prefix="tg-storm-"))
    procs = []
    rows = {}
    try:
        pki = tmp / "pki"
        subprocess.run([MAKE_PKI, str(pki)], check=True, capture_output=True, timeout=120)
        pf = tmp / "echo.port"
        echo = subprocess.Popen([TG_ECHO, "--listen", "127.0.0.1:0", "--port-file", str(pf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(echo)
        wait_until("tg-echo", lambda: pf.exists() and pf.read_text().strip() != "", 10)
        echo_port = int(pf.read_text().strip().replace("port=", ""))
        for rnd in range(args.rounds):
            for s in signers:
                if s == "haproxy":
                    proc, port = run_haproxy(tmp, pki, echo_port)
                else:
                    proc, port = run_proxy(tmp, pki, echo_port, s)
                try:
                    for storm in (False, True):
                        r = one_run(pki, port, args, storm)
                        key = (s, "storm" if storm else "quiet")
                        rows.setdefault(key, []).append(r)
                        print(json.dumps({"round": rnd, "signers": s, "phase": key[1], **r}),
                              flush=True)
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
    finally:
        for p in procs:
            p.kill()
            p.wait()

    def med(key, path):
        vals = []
        for r in rows.get(key, []):
            v = r
            for k in path:
                v = v.get(k, {}) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                vals.append(v)
        return statistics.median(vals) if vals else float("nan")

    print(f"\nmedians over {args.rounds} rounds; 100 connections, 1 KiB round trips at "
          f"{args.rate}/s; storm = {args.storm} connections of full TLS 1.3 handshakes")
    print(f"{'setup':>8} {'phase':>6} {'p50 us':>9} {'p99 us':>9} {'max us':>9} "
          f"{'handshakes/s':>13}")
    for s in signers:
        for phase in ("quiet", "storm"):
            key = (s, phase)
            print(f"{s:>8} {phase:>6} {med(key, ['latency', 'p50_us']):>9.0f} "
                  f"{med(key, ['latency', 'p99_us']):>9.0f} "
                  f"{med(key, ['latency', 'max_us']):>9.0f} "
                  f"{med(key, ['handshake', 'handshakes_per_s']):>13.0f}")


if __name__ == "__main__":
    main()
