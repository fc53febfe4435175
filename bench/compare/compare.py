#!/usr/bin/env python3
"""Side-by-side comparison of tlsgate with HAProxy, stunnel and nginx stream.

One command starts each proxy in turn with the same certificates, the same echo backend and the
same TLS settings (mutual TLS, client certificate required and verified against the same CA),
one worker each, the proxy pinned to one core and the load (tlsgate-load) plus the echo backend
on the other, runs the same loads against each, and prints one table. The proxy's own CPU time
is read from /proc (utime + stime of every process of the proxy), so the figures are CPU cost
per unit of work, not only wall-clock rates.

  bench/compare/compare.py [--duration S] [--quick] [--only tlsgate,haproxy,...] [--json FILE]

Binaries come from the environment (TLSGATE, TLSGATE_LOAD, TG_ECHO, MAKE_PKI) or build/.
Every load targets 127.0.0.1 only and stops by itself.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def tool(env, default):
    return os.environ.get(env) or os.path.join(ROOT, default)


TLSGATE = tool("TLSGATE", "build/tlsgate")
LOAD = tool("TLSGATE_LOAD", "build/bench/load/tlsgate-load")
ECHO = tool("TG_ECHO", "build/tests/tools/tg-echo")
MAKE_PKI = tool("MAKE_PKI", "scripts/make-pki.sh")
PEER_NAME = "sip.um.example.net"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpus():
    n = os.cpu_count() or 1
    return ("0", "1") if n >= 2 else ("0", "0")


def wait_port(port, proc, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def process_tree(pid):
    """pid and all its descendants (nginx master + worker)."""
    pids = [pid]
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
        except OSError:
            continue
    i = 0
    while i < len(pids):
        pids.extend(children.get(pids[i], []))
        i += 1
    return pids


def cpu_seconds(pid):
    total = 0
    for p in process_tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
        except OSError:
            pass
    return total / CLK_TCK


def rss_kib(pid):
    total = 0
    for p in process_tree(pid):
        try:
            with open("/proc/%d/statm" % p) as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except OSError:
            pass
    return total


class Proxy:
    """One proxy under test: writes its configuration, starts it pinned, stops it."""

    name = ""

    def __init__(self, work, pki, port, backend):
        self.work, self.pki, self.port, self.backend = work, pki, port, backend
        self.proc = None
        self.log = None

    def command(self):
        raise NotImplementedError

    def start(self, cpu):
        self.log = open(os.path.join(self.work, self.name + ".log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", cpu] + self.command(),
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, self.proc)
        time.sleep(0.3)

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


class Tlsgate(Proxy):
    name = "tlsgate"

    def command(self):
        admin = free_port()
        conf = os.path.join(self.work, "tlsgate.conf")
        with open(conf, "w") as f:
            f.write(f"""[global]
workers = 1
log_level = error
max_connections = 9800
drain_timeout_ms = 1000
[admin]
listen = 127.0.0.1:{admin}
[tls]
cert = {self.pki}/server.pem
key = {self.pki}/server.key
ca = {self.pki}/ca.pem
fqdn = sbc.tlsgate.test
peer_names = {PEER_NAME}
min_version = 1.2
handshake_timeout_ms = 30000
idle_timeout_ms = 0
[inbound bench]
listen = 127.0.0.1:{self.port}
forward = 127.0.0.1:{self.backend}
""")
        return [TLSGATE, "run", "-c", conf]


class Haproxy(Proxy):
    name = "haproxy"

    def command(self):
        crt = os.path.join(self.work, "haproxy.pem")
        with open(crt, "w") as out:
            for part in ("server.pem", "server.key"):
                with open(os.path.join(self.pki, part)) as f:
                    out.write(f.read())
        conf = os.path.join(self.work, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""global
    nbthread 1
    # two sockets a connection: 9800 fits the 20,000 descriptors a process may hold here
    maxconn 9800
    log stderr format raw local0 err
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    maxconn 9800
frontend fe
    bind 127.0.0.1:{self.port} ssl crt {crt} ca-file {self.pki}/ca.pem verify required
    # the same identity rule as tlsgate's peer_names (CN only: HAProxy has no SAN fetch)
    tcp-request session reject unless {{ ssl_c_s_dn(cn) -m str {PEER_NAME} }}
    default_backend be
backend be
    server echo 127.0.0.1:{self.backend}
""")
        return ["haproxy", "-db", "-f", conf]


class Stunnel(Proxy):
    name = "stunnel"

    def command(self):
        conf = os.path.join(self.work, "stunnel.conf")
        with open(conf, "w") as f:
            f.write(f"""foreground = yes
pid =
debug = err
[bench]
accept = 127.0.0.1:{self.port}
connect = 127.0.0.1:{self.backend}
cert = {self.pki}/server.pem
key = {self.pki}/server.key
CAfile = {self.pki}/ca.pem
requireCert = yes
verifyChain = yes
checkHost = {PEER_NAME}
sslVersionMin = TLSv1.2
""")
        return ["stunnel", conf]


class Nginx(Proxy):
    name = "nginx"

    def command(self):
        conf = os.path.join(self.work, "nginx.conf")
        module = "/usr/lib/nginx/modules/ngx_stream_module.so"
        with open(conf, "w") as f:
            f.write(f"""load_module {module};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {self.work}/nginx.pid;
error_log stderr error;
# worker_connections counts client and upstream connections alike
events {{ worker_connections 19500; }}
stream {{
    server {{
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {self.pki}/server.pem;
        ssl_certificate_key {self.pki}/server.key;
        ssl_client_certificate {self.pki}/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        proxy_pass 127.0.0.1:{self.backend};
    }}
}}
""")
        return ["nginx", "-p", self.work, "-c", conf]


PROXIES = {"tlsgate": Tlsgate, "haproxy": Haproxy, "stunnel": Stunnel, "nginx": Nginx}


def available(name):
    if name == "tlsgate":
        return os.path.exists(TLSGATE)
    if name == "nginx":
        return shutil.which("nginx") and os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so")
    return shutil.which(name) is not None


def run_load(args, pki, port, cpu, extra, timeout, cert="client"):
    cmd = ["taskset", "-c", cpu, LOAD, "--connect", "127.0.0.1:%d" % port,
           "--cert", "%s/%s.pem" % (pki, cert), "--key", "%s/%s.key" % (pki, cert),
           "--ca", pki + "/ca.pem",
           "--sni", "sbc.tlsgate.test", "--json"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError("tlsgate-load %s: exit %d: %s %s" % (" ".join(extra), p.returncode,
                                                                p.stdout[-300:], p.stderr[-300:]))


def measure(proxy, args, pki, load_cpu):
    """Runs every load against |proxy|; returns {metric: value}."""
    r = {}
    d = str(args.duration)
    t = args.duration + 30
    pid = proxy.proc.pid

    def cpu_of(extra, cert="client", warmup="0"):
        # No warm-up window for CPU figures: every unit of work the proxy does while its CPU
        # time is read is counted by the load generator, so CPU / count is the cost of one unit.
        c0 = cpu_seconds(pid)
        res = run_load(args, pki, proxy.port, load_cpu,
                       extra + ["--duration", d, "--warmup", warmup], t, cert)
        return cpu_seconds(pid) - c0, res

    for ver in ("1.3", "1.2"):
        # An ECDSA client certificate: the client's signature is cheap, so the load generator
        # on the other core is not what limits the rate (an RSA client signs as slowly as the
        # server). The proxy verifies one ECDSA P-256 signature per handshake.
        cpu, res = cpu_of(["--mode", "handshake", "--tls", ver, "--concurrency", str(args.hs_conc)],
                          cert="client-ec")
        n = res.get("count", 0)
        r["hs%s_per_s" % ver] = res.get("handshakes_per_s", 0)
        r["hs%s_cpu_us" % ver] = cpu * 1e6 / n if n else None
        r["hs%s_errors" % ver] = res.get("errors", 0)
    cpu, res = cpu_of(["--mode", "handshake", "--tls", "1.3", "--resume",
                       "--concurrency", str(args.hs_conc)])
    n = res.get("resumed", res.get("count", 0))
    r["resumed_per_s"] = res.get("handshakes_per_s", 0)
    r["resumed_cpu_us"] = cpu * 1e6 / n if n else None
    r["resumed_count"] = n
    cpu, res = cpu_of(["--mode", "bulk", "--write-size", "16384", "--concurrency", "4"])
    nbytes = res.get("bytes_per_s_sent", 0) * res.get("duration_s", 0) + \
        res.get("bytes_per_s_received", 0) * res.get("duration_s", 0)
    r["bulk_mb_s"] = res.get("bytes_per_s_received", 0) / 1e6
    r["bulk_cpu_ns_per_byte"] = cpu * 1e9 / nbytes if nbytes else None
    r["bulk_errors"] = res.get("errors", 0)
    # Latency keeps a warm-up second: the connections' handshakes are not round trips.
    _, res = cpu_of(["--mode", "latency", "--size", "1024", "--rate", str(args.rate),
                     "--concurrency", "16"], warmup="1")
    r["lat_p50_us"] = res.get("p50_us")
    r["lat_p99_us"] = res.get("p99_us")
    r["lat_errors"] = res.get("errors", 0)

    # Idle memory: RSS growth per held mutual-TLS connection (its backend socket included).
    base = rss_kib(pid)
    cmd = ["taskset", "-c", load_cpu, LOAD, "--connect", "127.0.0.1:%d" % proxy.port,
           "--cert", pki + "/client.pem", "--key", pki + "/client.key", "--ca", pki + "/ca.pem",
           "--sni", "sbc.tlsgate.test", "--json", "--mode", "idle",
           "--concurrency", str(args.idle), "--hold", str(args.idle_hold)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    established = 0
    deadline = time.time() + args.idle_hold + 60
    for line in p.stderr:
        if line.startswith("established="):
            established = int(line.split("=")[1])
            break
        if time.time() > deadline:
            break
    time.sleep(1.0)
    held = rss_kib(pid)
    try:
        out, _ = p.communicate(timeout=args.idle_hold + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    r["idle_established"] = established
    r["idle_kib_per_conn"] = (held - base) / established if established else None
    return r


ROWS = [
    ("hs1.3_per_s", "full handshakes/s, TLS 1.3", "%.0f", False),
    ("hs1.3_cpu_us", "proxy CPU us / full handshake, TLS 1.3", "%.0f", True),
    ("hs1.2_per_s", "full handshakes/s, TLS 1.2", "%.0f", False),
    ("hs1.2_cpu_us", "proxy CPU us / full handshake, TLS 1.2", "%.0f", True),
    ("resumed_cpu_us", "proxy CPU us / resumed handshake (TLS 1.3)", "%.1f", True),
    ("bulk_cpu_ns_per_byte", "bulk proxy CPU ns / byte (16 KiB writes, echo)", "%.2f", True),
    ("bulk_mb_s", "bulk echo MB/s received by the client", "%.0f", False),
    ("lat_p50_us", "1 KiB round trip p50 us", "%.0f", True),
    ("lat_p99_us", "1 KiB round trip p99 us", "%.0f", True),
    ("idle_kib_per_conn", "RSS KiB / idle mutual-TLS connection", "%.1f", True),
    ("idle_established", "idle connections held", "%d", False),
]


def table(results, names):
    head = "| metric | " + " | ".join(names) + " |"
    lines = [head, "|" + " --- |" * (len(names) + 1)]
    base = results.get("haproxy", {})
    for key, label, fmt, _ in ROWS:
        cells = []
        for n in names:
            v = results.get(n, {}).get(key)
            if v is None:
                cells.append("n/a")
                continue
            cell = fmt % v
            b = base.get(key)
            if n != "haproxy" and b:
                cell += " (%.2fx)" % (v / b)
            cells.append(cell)
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    ap.add_argument("--quick", action="store_true", help="smoke test: short loads, few idle conns")
    ap.add_argument("--only", default="tlsgate,haproxy,stunnel,nginx")
    ap.add_argument("--idle", type=int, default=9000, help="idle connections to hold")
    ap.add_argument("--idle-hold", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=2000, help="latency load, requests/s")
    ap.add_argument("--hs-conc", type=int, default=8, help="concurrent handshake loops")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every proxy produced every figure (smoke test; speed "
                         "is never judged)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.idle, args.idle_hold, args.rate = 1.0, 100, 1.0, 500
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in PROXIES:
            ap.error("unknown proxy %s" % n)
    for path in (LOAD, ECHO, MAKE_PKI):
        if not os.path.exists(path):
            sys.exit("compare: missing %s (build first)" % path)
    proxy_cpu, load_cpu = cpus()
    work = tempfile.mkdtemp(prefix="tg-compare-")
    pki = os.path.join(work, "pki")
    subprocess.run(["bash", MAKE_PKI, pki], check=True, capture_output=True)
    results = {}
    echo_port = free_port()
    echo = subprocess.Popen(["taskset", "-c", load_cpu, ECHO, "--listen",
                             "127.0.0.1:%d" % echo_port], stdout=subprocess.DEVNULL)
    try:
        wait_port(echo_port, echo)
        for n in names:
            if not available(n):
                print("compare: %s is not installed, skipped" % n, file=sys.stderr)
                continue
            proxy = PROXIES[n](work, pki, free_port(), echo_port)
            print("compare: measuring %s" % n, file=sys.stderr)
            try:
                proxy.start(proxy_cpu)
                results[n] = measure(proxy, args, pki, load_cpu)
            except Exception as e:  # one proxy failing must not hide the others' numbers
                print("compare: %s failed: %s" % (n, e), file=sys.stderr)
                results[n] = {"error": str(e)}
            finally:
                proxy.stop()
    finally:
        echo.terminate()
        echo.wait()
    shown = [n for n in names if n in results]
    print(table(results, shown))
    print("\nratios in parentheses are to HAProxy in this run; proxy pinned to CPU %s, load and "
          "echo on CPU %s; %.0f s per load" % (proxy_cpu, load_cpu, args.duration))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    failed = [n for n in shown if "error" in results[n]]
    if args.check:
        for n in shown:
            for key, _, _, _ in ROWS:
                v = results[n].get(key)
                # RSS per idle connection is only a signal with thousands held: with the few a
                # smoke test holds, the allocator returning pages can make it negative.
                if key == "idle_kib_per_conn" and v is not None:
                    continue
                if v is None or v <= 0:
                    print("compare: %s produced no sane %s (%r)" % (n, key, v), file=sys.stderr)
                    failed.append(n)
            if results[n].get("idle_established") != args.idle:
                print("compare: %s held %s of %d idle connections" %
                      (n, results[n].get("idle_established"), args.idle), file=sys.stderr)
                failed.append(n)
            for key in ("hs1.3_errors", "hs1.2_errors", "bulk_errors", "lat_errors"):
                if results[n].get(key):
                    print("compare: %s had %s = %s" % (n, key, results[n][key]), file=sys.stderr)
                    failed.append(n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
