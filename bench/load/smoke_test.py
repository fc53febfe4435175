#!/usr/bin/env python3
"""bench.load: a smoke test of tlsgate-load (Python 3 standard library only).

Starts tg-echo and tlsgate (one worker) on free loopback ports with a throwaway PKI, runs every
mode of tlsgate-load for about a second with --json, and checks that the one JSON object parses,
that the numbers are there (> 0) and that nothing failed (errors == 0). It never checks speed.
Then it SIGTERMs the proxy and expects exit 0.

Binaries come from the environment (CTest sets TLSGATE, TG_ECHO, TLSGATE_LOAD, MAKE_PKI);
manual runs fall back to build/... relative to the repository. TG_SANITIZE=ON (the ASan/UBSan
build) multiplies every timeout by 5 and fails on any sanitizer report.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SANITIZE = os.environ.get("TG_SANITIZE", "").upper() not in ("", "0", "OFF", "FALSE", "NO")
SCALE = 5 if SANITIZE else 1
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def binary(env, default):
    path = os.environ.get(env) or str(REPO / default)
    if not os.path.exists(path):
        sys.exit(f"bench.load: {env}: {path} does not exist (build first or set {env})")
    return path


TLSGATE = binary("TLSGATE", "build/tlsgate")
TG_ECHO = binary("TG_ECHO", "build/tests/tools/tg-echo")
LOAD = binary("TLSGATE_LOAD", "build/bench/load/tlsgate-load")
MAKE_PKI = binary("MAKE_PKI", "scripts/make-pki.sh")

failures = []


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    failures.append(msg)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, pred, timeout):
    deadline = time.monotonic() + timeout * SCALE
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def check_sanitizer(name, text):
    for marker in SANITIZER_MARKERS:
        if marker in text:
            fail(f"{name}: sanitizer report:\n{text}")
            return


def metric(admin_port, name, labels):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5 * SCALE) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") and all(l in line for l in labels):
                return int(line.rsplit(" ", 1)[1])
    return None


# Each case: name, arguments, keys that must be > 0 besides count.
CASES = [
    ("handshake tls1.3", ["--mode", "handshake", "--concurrency", "2", "--tls", "1.3"],
     ["handshakes_per_s"]),
    ("handshake tls1.2", ["--mode", "handshake", "--concurrency", "2", "--tls", "1.2"],
     ["handshakes_per_s"]),
    ("handshake tls1.2 resume",
     ["--mode", "handshake", "--concurrency", "2", "--tls", "1.2", "--resume"],
     ["handshakes_per_s", "resumed"]),
    ("handshake tls1.3 resume",
     ["--mode", "handshake", "--concurrency", "2", "--tls", "1.3", "--resume"],
     ["handshakes_per_s", "resumed"]),
    ("bulk echo", ["--mode", "bulk", "--concurrency", "2", "--write-size", "5000"],
     ["bytes_per_s_sent", "bytes_per_s_received"]),
    ("bulk sink", ["--mode", "bulk", "--concurrency", "2", "--write-size", "16384", "--sink"],
     ["bytes_per_s_sent"]),
    ("latency", ["--mode", "latency", "--concurrency", "4", "--size", "1024", "--rate", "400"],
     ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "duration_s"]),
    ("idle", ["--mode", "idle", "--concurrency", "20", "--hold", "1"], ["established"]),
    ("bulk echo, 2 threads",
     ["--mode", "bulk", "--concurrency", "4", "--threads", "2", "--write-size", "1024"],
     ["bytes_per_s_sent", "bytes_per_s_received"]),
]


def run_case(base, name, args, keys):
    cmd = base + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30 * SCALE)
    except subprocess.TimeoutExpired:
        fail(f"{name}: did not finish in {30 * SCALE} s: {' '.join(cmd)}")
        return None
    check_sanitizer(name, p.stderr)
    if p.returncode != 0:
        fail(f"{name}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return None
    lines = p.stdout.strip().splitlines()
    if len(lines) != 1:
        fail(f"{name}: want one JSON line on stdout, got: {p.stdout!r}")
        return None
    try:
        res = json.loads(lines[0])
    except json.JSONDecodeError as e:
        fail(f"{name}: stdout is not JSON ({e}): {lines[0]!r}")
        return None
    print(f"{name}: {lines[0]}", flush=True)
    for key in ("mode", "connections", "duration_s", "count", "errors"):
        if key not in res:
            fail(f"{name}: key {key} missing")
    if res.get("errors") != 0:
        fail(f"{name}: errors = {res.get('errors')}\nstderr: {p.stderr}")
    for key in ["count"] + keys:
        v = res.get(key)
        if not isinstance(v, (int, float)) or v <= 0:
            fail(f"{name}: {key} = {v!r}, want a number > 0")
    if "--resume" in args and res.get("resumed") != res.get("count"):
        fail(f"{name}: resumed {res.get('resumed')} of {res.get('count')} handshakes")
    if res.get("mode") == "idle":
        want = int(args[args.index("--concurrency") + 1])
        if res.get("established") != want:
            fail(f"{name}: established {res.get('established')}, want {want}")
        if f"established={want}" not in p.stderr.splitlines():
            fail(f"{name}: no 'established={want}' line on stderr: {p.stderr!r}")
    return res


def main():
    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-load-"))
    procs = []
    try:
        pki = tmp / "pki"
        subprocess.run([MAKE_PKI, str(pki)], check=True, capture_output=True,
                       timeout=120 * SCALE)

        port_file = tmp / "echo.port"
        echo_log = open(tmp / "echo.log", "w")
        echo = subprocess.Popen([TG_ECHO, "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
                                stdout=echo_log, stderr=subprocess.STDOUT)
        procs.append(echo)
        wait_until("tg-echo's port file", lambda: port_file.exists() and
                   port_file.read_text().strip() != "", 10)
        echo_port = int(port_file.read_text().strip().replace("port=", ""))

        proxy_port, admin_port = free_port(), free_port()
        conf = tmp / "tlsgate.conf"
        conf.write_text(f"""[global]
workers = 1
log_level = warn
max_handshakes_per_source = 0
new_connections_per_source = 0
[admin]
listen = 127.0.0.1:{admin_port}
[tls]
cert = {pki}/server.pem
key = {pki}/server.key
ca = {pki}/ca.pem
fqdn = sbc.tlsgate.test
peer_names = sip.um.example.net
[inbound in]
listen = 127.0.0.1:{proxy_port}
forward = 127.0.0.1:{echo_port}
""")
        proxy_log = open(tmp / "tlsgate.log", "w")
        proxy = subprocess.Popen([TLSGATE, "-c", str(conf)], stdout=proxy_log,
                                 stderr=subprocess.STDOUT)
        procs.append(proxy)
        wait_until("tlsgate's listener", lambda: proxy.poll() is not None or port_open(proxy_port),
                   10)
        if proxy.poll() is not None:
            raise RuntimeError(f"tlsgate exited {proxy.returncode}: "
                               f"{(tmp / 'tlsgate.log').read_text()}")

        base = [LOAD, "--connect", f"127.0.0.1:{proxy_port}", "--cert", str(pki / "client.pem"),
                "--key", str(pki / "client.key"), "--ca", str(pki / "ca.pem"),
                "--sni", "sbc.tlsgate.test", "--warmup", "0.2", "--duration", "1", "--json"]
        ok_before = metric(admin_port, "tlsgate_handshakes_total", ['result="ok"']) or 0
        established = 0
        for name, args, keys in CASES:
            res = run_case(base, name, args, keys)
            if res is not None:
                established += res["count"] if res["mode"] == "handshake" else 0
        ok_after = metric(admin_port, "tlsgate_handshakes_total", ['result="ok"'])
        # The proxy saw at least the handshakes counted in the windows (plus warmup and setup).
        if ok_after is None or ok_after - ok_before < established:
            fail(f"proxy counted {ok_after} - {ok_before} ok handshakes, the load generator "
                 f"{established} in its windows alone")

        proxy.send_signal(signal.SIGTERM)
        try:
            rc = proxy.wait(timeout=20 * SCALE)
        except subprocess.TimeoutExpired:
            rc = None
        proxy_log.close()
        log = (tmp / "tlsgate.log").read_text()
        check_sanitizer("tlsgate", log)
        if rc != 0:
            fail(f"tlsgate: exit {rc} after SIGTERM, want 0\n{log}")
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        fail(str(e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        if os.environ.get("TG_KEEP_TMP"):
            print(f"bench.load: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"bench.load: {len(failures)} failure(s)")
        return 1
    print("bench.load: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
