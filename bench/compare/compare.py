#!/usr/bin/env python3
"""Side-by-side comparison of tlsgate with HAProxy, stunnel and nginx stream, and of tlsgate's
SIP mode with Kamailio.

One command starts each proxy in turn with the same certificates, the same echo backend and the
same TLS settings (mutual TLS, client certificate required and verified against the same CA),
one worker each, the proxy pinned to one core and the load (tlsgate-load) plus the echo backend
on the other, runs the same loads against each, and prints one table. The proxy's own CPU time
is read from /proc (utime + stime of every process of the proxy), so the figures are CPU cost
per unit of work, not only wall-clock rates.

  bench/compare/compare.py [--duration S] [--quick] [--proxies tlsgate,haproxy,...] [--runs N]
                           [--json FILE] [--no-sip | --sip-only] [--sip-rate R] [--sip-conc N]

--runs N repeats the whole comparison N times, prints each run's table, then one table of the
median and spread (min-max) of every figure; ratios to HAProxy are taken within each run.
The bulk figure is also set against the micro benchmark's AES-128-GCM seal (tlsgate-bench
floor/aes128gcm_seal/16384, pinned where the proxies run, in the same run): a proxy decrypts
and encrypts every byte once, so two passes are its crypto floor. The 1 KiB figure counts two
messages per round trip (request and echo), its CPU read inside the load's steady part only.

SIP (second table; run unless --no-sip): tg-sip-responder plays the PBX on plain TCP (every
request answered 200) on the load's core; tlsgate with an `[inbound] mode = sip` listener and
Kamailio (tls module, one TCP worker, stateless forward() after record_route()) forward
`OPTIONS sip:pbx@127.0.0.1` from tlsgate-load --mode sip-options over mutual TLS to it.
Figures: transactions per CPU-second of the proxy (closed loop, --sip-conc connections, one
transaction outstanding on each) and p50/p99 at --sip-rate transactions/s (open loop), plus
the same load sent straight to the responder over plain TCP (--plain), so that the latency a
proxy adds is its round trip minus that direct one. Kamailio missing: skipped with a message.

Binaries come from the environment (TLSGATE, TLSGATE_LOAD, TG_ECHO, TLSGATE_BENCH, MAKE_PKI) or
build/.
Every load targets 127.0.0.1 only and stops by itself.
The media relay (SRTP<->RTP) beside rtpengine has its own bench here: media_bench.py.
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
KEYD = tool("TLSGATE_KEYD", "build/tlsgate-keyd")
ECHO = tool("TG_ECHO", "build/tests/tools/tg-echo")
SIP_RESPONDER = tool("TG_SIP_RESPONDER", "build/bench/load/tg-sip-responder")
MICRO = tool("TLSGATE_BENCH", "build/bench/micro/tlsgate-bench")
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
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
    mode = ""

    def key(self):
        return self.pki + "/server.key"

    def command(self):
        admin = free_port()
        conf = os.path.join(self.work, "tlsgate.conf")
        with open(conf, "w") as f:
            f.write(f"""[global]
workers = 1
log_level = error
max_connections = 9800
drain_timeout_ms = 1000
# The load comes from one address: the per-source admission limits (which the other proxies
# do not have) are lifted so that the handshake and idle loads measure the same work.
max_handshakes = 9800
max_handshakes_per_source = 0
new_connections_per_source = 0
[admin]
listen = 127.0.0.1:{admin}
[tls]
cert = {self.pki}/server.pem
key = {self.key()}
ca = {self.pki}/ca.pem
fqdn = sbc.tlsgate.test
peer_names = {PEER_NAME}
min_version = 1.2
handshake_timeout_ms = 30000
idle_timeout_ms = 0
[inbound bench]
listen = 127.0.0.1:{self.port}
forward = 127.0.0.1:{self.backend}
{self.mode}""")
        return [TLSGATE, "run", "-c", conf]


class TlsgateKeyd(Tlsgate):
    """tlsgate with its key in tlsgate-keyd ([tls] key = keyd:PATH). keyd is started by the
    shell that then becomes tlsgate, so keyd is tlsgate's child: its CPU is counted with
    tlsgate's (process_tree), and both stop with the process group."""
    name = "tlsgate-keyd"

    def key(self):
        return "keyd:" + os.path.join(self.work, "keyd.sock")

    def command(self):
        sock = os.path.join(self.work, "keyd.sock")
        tg = super().command()
        script = ('"$1" --socket "$2" --key "$3" --allow-uid %d & '
                  'n=0; while [ ! -S "$2" ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; '
                  'shift 3; exec "$@"' % os.getuid())
        return ["sh", "-c", script, "sh", KEYD, sock, self.pki + "/server.key"] + tg


class TlsgateSip(Tlsgate):
    """tlsgate as the SIP proxy: the same configuration, the listener in `mode = sip`."""
    mode = "mode = sip\n"


class Kamailio(Proxy):
    """Kamailio as a plain TLS -> TCP forwarding proxy: mutual TLS (client certificate required
    and verified against our CA), one TCP worker, stateless forward() after record_route()."""
    name = "kamailio"

    def command(self):
        tls = os.path.join(self.work, "kamailio-tls.cfg")
        with open(tls, "w") as f:
            f.write(f"""[server:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = {self.pki}/server.key
certificate = {self.pki}/server.pem
ca_list = {self.pki}/ca.pem

[client:default]
verify_certificate = no
require_certificate = no
""")
        conf = os.path.join(self.work, "kamailio.cfg")
        with open(conf, "w") as f:
            f.write(f"""#!KAMAILIO
debug=1
log_stderror=yes
children=1
tcp_children=1
enable_tls=yes
auto_aliases=no
listen=tls:127.0.0.1:{self.port}
mpath="{KAMAILIO_MODULES}/"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "tls.so"
modparam("tls", "config", "{tls}")
request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    record_route();
    $du = "sip:127.0.0.1:{self.backend};transport=tcp";
    forward();
    exit;
}}
""")
        # -DD: foreground, children forked (one TCP receiver); -E: log to stderr.
        return ["kamailio", "-f", conf, "-DD", "-E", "-m", "64", "-M", "8", "-Y", self.work,
                "-P", os.path.join(self.work, "kamailio.pid")]


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


PROXIES = {"tlsgate": Tlsgate, "haproxy": Haproxy, "stunnel": Stunnel, "nginx": Nginx,
           "tlsgate-keyd": TlsgateKeyd}
SIP_PROXIES = {"tlsgate": TlsgateSip, "kamailio": Kamailio}


def available(name):
    if name == "tlsgate":
        return os.path.exists(TLSGATE)
    if name == "tlsgate-keyd":
        return os.path.exists(TLSGATE) and os.path.exists(KEYD)
    if name == "kamailio":
        return shutil.which("kamailio") and os.path.exists(KAMAILIO_MODULES + "/tls.so")
    if name == "nginx":
        return shutil.which("nginx") and os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so")
    return shutil.which(name) is not None


def load_cmd(pki, port, cpu, extra, cert="client"):
    return ["taskset", "-c", cpu, LOAD, "--connect", "127.0.0.1:%d" % port,
            "--cert", "%s/%s.pem" % (pki, cert), "--key", "%s/%s.key" % (pki, cert),
            "--ca", pki + "/ca.pem",
            "--sni", "sbc.tlsgate.test", "--json"] + extra


def load_result(extra, rc, out, err):
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError("tlsgate-load %s: exit %d: %s %s" % (" ".join(extra), rc,
                                                                out[-300:], err[-300:]))


def run_load(args, pki, port, cpu, extra, timeout, cert="client"):
    p = subprocess.run(load_cmd(pki, port, cpu, extra, cert), capture_output=True, text=True,
                       timeout=timeout)
    return load_result(extra, p.returncode, p.stdout, p.stderr)


def latency_cpu(args, pki, pid, port, cpu, extra, timeout):
    """Runs the open-loop latency load |extra| (its warm-up included) and reads the proxy's CPU
    time inside the measured part only, a margin clear of each end, so neither the handshakes
    nor the closes are in it. Returns (result, CPU seconds, round trips in that window): the
    round trips are the load's achieved rate (count / duration) times the window's wall time."""
    p = subprocess.Popen(load_cmd(pki, port, cpu, extra), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    margin = min(0.5, args.duration / 4)
    time.sleep(args.lat_warmup + margin)
    c0, w0 = cpu_seconds(pid), time.monotonic()
    time.sleep(args.duration - 2 * margin)
    c1, w1 = cpu_seconds(pid), time.monotonic()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    res = load_result(extra, p.returncode, out, err)
    rt_per_s = res.get("count", 0) / res["duration_s"] if res.get("duration_s") else 0
    return res, c1 - c0, rt_per_s * (w1 - w0)


def micro_aes(cpu, quick):
    """ns per byte of one AES-128-GCM seal pass over 16 KiB (the micro benchmark's
    floor/aes128gcm_seal/16384, CPU time), pinned where the proxies run; None without it."""
    if not os.path.exists(MICRO):
        return None
    b = None
    # --benchmark_min_time is a plain number of seconds up to libbenchmark 1.7; 1.8 wants a unit.
    for unit in ("", "s"):
        cmd = ["taskset", "-c", cpu, MICRO, "--benchmark_filter=^floor/aes128gcm_seal/16384$",
               "--benchmark_format=json",
               "--benchmark_min_time=%s%s" % ("0.05" if quick else "0.5", unit)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        try:
            b = json.loads(p.stdout)["benchmarks"][0]
            break
        except (ValueError, KeyError, IndexError):
            continue
    if b is None:
        print("compare: %s gave no result: %s" % (MICRO, p.stderr[-300:]), file=sys.stderr)
        return None
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}.get(b.get("time_unit", "ns"), 1.0)
    return b["cpu_time"] * scale / 16384


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
    # Latency keeps a warm-up second: the connections' handshakes are not round trips. A round
    # trip is two 1 KiB messages through the proxy (the request TLS -> plain, its echo plain ->
    # TLS): CPU per message is CPU per round trip / 2.
    res, cpu, rts = latency_cpu(args, pki, pid, proxy.port, load_cpu,
                                ["--mode", "latency", "--size", "1024", "--rate", str(args.rate),
                                 "--concurrency", "16", "--duration", d,
                                 "--warmup", str(args.lat_warmup)], t)
    r["lat_cpu_us_per_msg"] = cpu * 1e6 / (2 * rts) if rts > 0 and cpu > 0 else None
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


def measure_sip(pid, args, pki, port, load_cpu, plain=False):
    """SIP OPTIONS through the proxy |pid| (None: straight to the responder, --plain)."""
    r = {}
    d = str(args.sip_duration)
    t = args.sip_duration + 30
    extra = ["--plain"] if plain else []
    c0 = cpu_seconds(pid) if pid else 0
    # Closed loop, no warm-up: every transaction while the CPU time is read is counted.
    res = run_load(args, pki, port, load_cpu,
                   ["--mode", "sip-options", "--rate", "0", "--concurrency", str(args.sip_conc),
                    "--duration", d, "--warmup", "0"] + extra, t)
    cpu = cpu_seconds(pid) - c0 if pid else 0
    n = res.get("count", 0)
    r["sip_tx_per_s"] = res.get("transactions_per_s", 0)
    r["sip_closed_p50_us"] = res.get("p50_us")
    if pid:
        r["sip_cpu_s"] = cpu
        r["sip_tx_per_cpu_s"] = n / cpu if cpu > 0 else None
        r["sip_cpu_us"] = cpu * 1e6 / n if n else None
    r["sip_errors"] = res.get("errors", 0)
    # Open loop at a moderate rate; a warm-up keeps the handshakes out of the round trips.
    res = run_load(args, pki, port, load_cpu,
                   ["--mode", "sip-options", "--rate", str(args.sip_rate),
                    "--concurrency", str(args.sip_conc), "--duration", d,
                    "--warmup", str(args.sip_warmup)] + extra, t)
    r["sip_p50_us"] = res.get("p50_us")
    r["sip_p99_us"] = res.get("p99_us")
    r["sip_count"] = res.get("count", 0)
    r["sip_errors"] += res.get("errors", 0)
    return r


SIP_ROWS = [
    ("sip_tx_per_s", "OPTIONS transactions/s, closed loop", "%.0f", False),
    ("sip_tx_per_cpu_s", "transactions / proxy CPU-second", "%.0f", False),
    ("sip_cpu_us", "proxy CPU us / transaction", "%.1f", True),
    ("sip_p50_us", "round trip p50 us at the fixed rate", "%.0f", True),
    ("sip_p99_us", "round trip p99 us at the fixed rate", "%.0f", True),
    ("sip_added_p50_us", "added p50 us (minus responder direct)", "%.0f", True),
    ("sip_added_p99_us", "added p99 us (minus responder direct)", "%.0f", True),
    ("sip_errors", "errors (non-200, lost, unmatched)", "%d", True),
]


def run_sip(args, work, pki, proxy_cpu, load_cpu):
    """The SIP measurement; returns {name: results} with "direct" for the responder alone."""
    results = {}
    port = free_port()
    resp = subprocess.Popen(["taskset", "-c", load_cpu, SIP_RESPONDER, "--listen",
                             "127.0.0.1:%d" % port], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, resp)
        print("compare: measuring the SIP responder directly (plain TCP)", file=sys.stderr)
        try:
            results["direct"] = measure_sip(None, args, pki, port, load_cpu, plain=True)
        except Exception as e:
            print("compare: direct SIP failed: %s" % e, file=sys.stderr)
            results["direct"] = {"error": str(e)}
        for n in SIP_PROXIES:
            if n == "tlsgate" and "tlsgate" not in args.names:
                continue
            if not available(n):
                print("compare: %s is not installed, SIP comparison without it" % n,
                      file=sys.stderr)
                continue
            proxy = SIP_PROXIES[n](work, pki, free_port(), port)
            print("compare: measuring %s (SIP)" % n, file=sys.stderr)
            try:
                proxy.start(proxy_cpu)
                results[n] = measure_sip(proxy.proc.pid, args, pki, proxy.port, load_cpu)
            except Exception as e:
                print("compare: %s (SIP) failed: %s" % (n, e), file=sys.stderr)
                results[n] = {"error": str(e)}
            finally:
                proxy.stop()
    finally:
        resp.terminate()
        resp.wait()
    direct = results.get("direct", {})
    for n, r in results.items():
        if n == "direct" or "error" in r:
            continue
        for q in ("p50", "p99"):
            v, b = r.get("sip_%s_us" % q), direct.get("sip_%s_us" % q)
            if v is not None and b is not None:
                r["sip_added_%s_us" % q] = v - b
    return results


ROWS = [
    ("hs1.3_per_s", "full handshakes/s, TLS 1.3", "%.0f", False),
    ("hs1.3_cpu_us", "proxy CPU us / full handshake, TLS 1.3", "%.0f", True),
    ("hs1.2_per_s", "full handshakes/s, TLS 1.2", "%.0f", False),
    ("hs1.2_cpu_us", "proxy CPU us / full handshake, TLS 1.2", "%.0f", True),
    ("resumed_cpu_us", "proxy CPU us / resumed handshake (TLS 1.3)", "%.1f", True),
    ("bulk_cpu_ns_per_byte", "bulk proxy CPU ns / byte (16 KiB writes, echo)", "%.2f", True),
    ("bulk_vs_aes2", "bulk CPU / byte over two AES-128-GCM passes (micro, same run)", "%.2f",
     True),
    ("bulk_mb_s", "bulk echo MB/s received by the client", "%.0f", False),
    ("lat_cpu_us_per_msg", "proxy CPU us / 1 KiB message (2 per round trip)", "%.1f", True),
    ("lat_p50_us", "1 KiB round trip p50 us", "%.0f", True),
    ("lat_p99_us", "1 KiB round trip p99 us", "%.0f", True),
    ("idle_kib_per_conn", "RSS KiB / idle mutual-TLS connection", "%.1f", True),
    ("idle_established", "idle connections held", "%d", False),
]


def table(results, names, rows=None, title="metric", base_name="haproxy"):
    """One markdown table of |rows| for |names|; each figure also as a ratio to |base_name|'s
    (not for the base itself, for the responder-direct column, or for error counts)."""
    rows = ROWS if rows is None else rows
    lines = ["| %s | %s |" % (title, " | ".join(names)), "|" + " --- |" * (len(names) + 1)]
    base = results.get(base_name, {})
    for key, label, fmt, _ in rows:
        cells = []
        for n in names:
            v = results.get(n, {}).get(key)
            if v is None:
                cells.append("n/a")
                continue
            cell = fmt % v
            b = base.get(key)
            if n not in (base_name, "direct") and b and not key.endswith("errors"):
                cell += " (%.2fx)" % (v / b)
            cells.append(cell)
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines)


def median(vs):
    vs = sorted(vs)
    n = len(vs)
    return vs[n // 2] if n % 2 else (vs[n // 2 - 1] + vs[n // 2]) / 2


def spread_table(runs, names, rows=None, title="metric", base_name="haproxy"):
    """The table of several runs: each cell is the median and, in brackets, the spread
    (min-max) of the figure over the runs; the ratio to |base_name| is taken within each run
    (side by side) and shown the same way."""
    rows = ROWS if rows is None else rows
    lines = ["| %s | %s |" % (title, " | ".join(names)), "|" + " --- |" * (len(names) + 1)]

    def span(vs, fmt):
        return "%s [%s-%s]" % (fmt % median(vs), fmt % min(vs), fmt % max(vs))

    for key, label, fmt, _ in rows:
        cells = []
        for n in names:
            vs = [r[n][key] for r in runs if r.get(n, {}).get(key) is not None]
            if not vs:
                cells.append("n/a")
                continue
            cell = span(vs, fmt)
            ratios = [r[n][key] / r[base_name][key] for r in runs
                      if r.get(n, {}).get(key) is not None and r.get(base_name, {}).get(key)]
            if n not in (base_name, "direct") and ratios and not key.endswith("errors"):
                cell += " (%sx)" % span(ratios, "%.2f")
            cells.append(cell)
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines)


def one_run(args, names, sip, proxy_cpu, load_cpu):
    """The whole comparison once: every proxy in |names| (and SIP when |sip|), fresh PKI and
    echo backend. Returns (results, sip_results)."""
    work = tempfile.mkdtemp(prefix="tg-compare-")
    pki = os.path.join(work, "pki")
    subprocess.run(["bash", MAKE_PKI, pki], check=True, capture_output=True)
    results = {}
    # The crypto reference of the bulk figure, on the proxies' core, in this run.
    aes_ns = micro_aes(proxy_cpu, args.quick) if not args.sip_only else None
    echo_port = free_port()
    echo = subprocess.Popen(["taskset", "-c", load_cpu, ECHO, "--listen",
                             "127.0.0.1:%d" % echo_port], stdout=subprocess.DEVNULL)
    try:
        wait_port(echo_port, echo)
        for n in names:
            if args.sip_only:
                break
            if not available(n):
                print("compare: %s is not installed, skipped" % n, file=sys.stderr)
                continue
            proxy = PROXIES[n](work, pki, free_port(), echo_port)
            print("compare: measuring %s" % n, file=sys.stderr)
            try:
                proxy.start(proxy_cpu)
                results[n] = measure(proxy, args, pki, load_cpu)
                b = results[n].get("bulk_cpu_ns_per_byte")
                results[n]["bulk_vs_aes2"] = b / (2 * aes_ns) if b and aes_ns else None
                results[n]["aes128gcm_ns_per_byte"] = aes_ns
            except Exception as e:  # one proxy failing must not hide the others' numbers
                print("compare: %s failed: %s" % (n, e), file=sys.stderr)
                results[n] = {"error": str(e)}
            finally:
                proxy.stop()
        sip_results = run_sip(args, work, pki, proxy_cpu, load_cpu) if sip else {}
    finally:
        echo.terminate()
        echo.wait()
    shutil.rmtree(work, ignore_errors=True)
    return results, sip_results


def check_run(args, results, sip_results, shown, sip_shown):
    """--check: the names of the proxies that did not produce every figure sanely."""
    failed = []
    for n in sip_shown:
        r = sip_results[n]
        keys = ["sip_tx_per_s", "sip_p50_us", "sip_p99_us"]
        if n != "direct":
            keys += ["sip_tx_per_cpu_s", "sip_cpu_us"]
        for key in keys:
            v = r.get(key)
            if v is None or v <= 0:
                print("compare: SIP %s produced no sane %s (%r)" % (n, key, v), file=sys.stderr)
                failed.append("sip " + n)
        if r.get("sip_errors"):
            print("compare: SIP %s had %s errors" % (n, r["sip_errors"]), file=sys.stderr)
            failed.append("sip " + n)
    for n in shown:
        for key, _, _, _ in ROWS:
            v = results[n].get(key)
            # RSS per idle connection is only a signal with thousands held: with the few a
            # smoke test holds, the allocator returning pages can make it negative.
            if key == "idle_kib_per_conn" and v is not None:
                continue
            # The crypto reference needs the micro benchmark, which a build may leave out.
            if key == "bulk_vs_aes2" and not os.path.exists(MICRO):
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
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    ap.add_argument("--quick", action="store_true", help="smoke test: short loads, few idle conns")
    ap.add_argument("--only", "--proxies", dest="only", default="tlsgate,haproxy,stunnel,nginx",
                    help="the proxies to measure, comma-separated")
    ap.add_argument("--runs", type=int, default=1,
                    help="repeat the whole comparison N times; print each figure's median "
                         "and spread (min-max)")
    ap.add_argument("--idle", type=int, default=9000, help="idle connections to hold")
    ap.add_argument("--idle-hold", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=2000, help="latency load, requests/s")
    ap.add_argument("--hs-conc", type=int, default=8, help="concurrent handshake loops")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--no-sip", action="store_true", help="skip the SIP (Kamailio) comparison")
    ap.add_argument("--sip-only", action="store_true", help="only the SIP comparison")
    ap.add_argument("--sip-rate", type=int, default=2000,
                    help="SIP latency load, OPTIONS transactions/s")
    ap.add_argument("--sip-conc", type=int, default=16, help="SIP connections")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every proxy produced every figure (smoke test; speed "
                         "is never judged)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs wants 1 or more")
    if args.quick:
        args.duration, args.idle, args.idle_hold, args.rate = 1.0, 100, 1.0, 500
        args.sip_rate = 500
    args.lat_warmup = 0.3 if args.quick else 1.0
    args.sip_duration = args.duration
    args.sip_warmup = 0.3 if args.quick else 1.0
    names = [n for n in args.only.split(",") if n]
    args.names = names
    sip = not args.no_sip and os.path.exists(SIP_RESPONDER)
    if not args.no_sip and not sip:
        print("compare: %s missing, SIP comparison skipped" % SIP_RESPONDER, file=sys.stderr)
    for n in names:
        if n not in PROXIES:
            ap.error("unknown proxy %s" % n)
    for path in (LOAD, ECHO, MAKE_PKI):
        if not os.path.exists(path):
            sys.exit("compare: missing %s (build first)" % path)
    proxy_cpu, load_cpu = cpus()
    runs, failed = [], []
    for i in range(args.runs):
        if args.runs > 1:
            print("compare: run %d of %d" % (i + 1, args.runs), file=sys.stderr)
        results, sip_results = one_run(args, names, sip, proxy_cpu, load_cpu)
        runs.append((results, sip_results))
        shown = [n for n in names if n in results]
        sip_shown = [n for n in ("tlsgate", "kamailio", "direct") if n in sip_results]
        if args.runs > 1:
            print("### run %d of %d\n" % (i + 1, args.runs))
        if not args.sip_only:
            print(table(results, shown))
            print("\nratios in parentheses are to HAProxy in this run; proxy pinned to CPU %s, "
                  "load and echo on CPU %s; %.0f s per load" % (proxy_cpu, load_cpu,
                                                              args.duration))
        if sip_results:
            if not args.sip_only:
                print()
            print(table(sip_results, sip_shown, SIP_ROWS, "SIP OPTIONS", "kamailio"))
            print("\nSIP: ratios in parentheses are to Kamailio in this run; `direct` is "
                  "tlsgate-load --plain straight to tg-sip-responder; closed loop over %d "
                  "connections, fixed rate %d/s; proxy pinned to CPU %s, load and responder on "
                  "CPU %s; %.0f s per load" %
                  (args.sip_conc, args.sip_rate, proxy_cpu, load_cpu, args.sip_duration))
        print(flush=True)
        failed += [n for n in shown if "error" in results[n]]
        failed += ["sip " + n for n in sip_shown if "error" in sip_results[n]]
        if args.check:
            failed += check_run(args, results, sip_results, shown, sip_shown)
    if args.runs > 1:
        shown = [n for n in names if any(n in r for r, _ in runs)]
        sip_shown = [n for n in ("tlsgate", "kamailio", "direct") if any(n in s for _, s in runs)]
        print("### median [min-max] of %d runs\n" % args.runs)
        if not args.sip_only:
            print(spread_table([r for r, _ in runs], shown))
            print("\neach cell: median [min-max] over the runs; ratios to HAProxy taken within "
                  "each run, then their median [min-max]")
        if sip_shown:
            print()
            print(spread_table([s for _, s in runs], sip_shown, SIP_ROWS, "SIP OPTIONS",
                               "kamailio"))
    if args.json:
        def one(results, sip_results):
            # The TLS results by proxy as before; the SIP ones under "sip" (by proxy, "direct").
            return dict(results, **({"sip": sip_results} if sip_results else {}))
        with open(args.json, "w") as f:
            json.dump(one(*runs[0]) if args.runs == 1 else {"runs": [one(*r) for r in runs]},
                      f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
