#!/usr/bin/env python3
"""The SRTP<->RTP relay under load, tlsgate beside rtpengine in the same run: N calls through
the relay (pinned to CPU 0), each sending 160-byte G.711 payloads at 50 packets/s from the
provider side (SRTP, proxy/srtp.c in tg-media-load) to a PBX echo (tg-media-load echo) and back:
100 packets/s relayed per call. Measured the same way for both relays: the relay's CPU
(utime + stime of all its threads, /proc/PID/stat, over the load window) per relayed packet,
packets per CPU-second, the round trip p50/p99 (two relay passes: SRTP->RTP and RTP->SRTP, and
the echo) and loss. Relayed packets are counted at the two ends (the echo's receptions plus the
load's receptions), so neither relay's own counters are trusted; the echoes of every call
are also authenticated and decrypted with the key in the relay's SDP answer.

  tlsgate:   calls set up over its mutual-TLS SIP listener ([media], workers = 1).
  rtpengine: Debian's rtpengine-daemon in the foreground, user-space forwarding only
             (--table=-1), one worker thread (--num-threads=1: one core), calls set up through
             its ng control protocol (offer RTP/SAVP + SDES from the provider, transport-protocol
             RTP/AVP towards the PBX, answer RTP/AVP from the PBX).

    cmake --build build && python3 bench/compare/media_bench.py --relay both --calls 100,1000 \
        --seconds 10 --rounds 3

Rounds alternate the relays (tlsgate, rtpengine, tlsgate, ...); the table at the end gives the
median and the spread (min-max) of each figure. The load generator and the echo run on CPU 1.
--check (the bench.media smoke test) asserts that every figure is there, never how fast it is.
Numbers go in docs/PERFORMANCE.md."""

import argparse
import base64
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.dont_write_bytecode = True
import harness as h  # noqa: E402
from sipmsg import Stream  # noqa: E402

LOAD = os.environ.get("TG_MEDIA_LOAD") or str(REPO / "build/bench/media/tg-media-load")
RTPENGINE = os.environ.get("RTPENGINE") or shutil.which("rtpengine") or "/usr/bin/rtpengine"
SUITE = "AES_CM_128_HMAC_SHA1_80"
# The relay on the first CPU we may use, the load and the echo on the second (on one CPU, the
# smoke test's worst case, both on it).
_CPUS = sorted(os.sched_getaffinity(0))
RELAY_CPU, LOAD_CPU = _CPUS[0], _CPUS[1 if len(_CPUS) > 1 else 0]
# 4 sockets per call on the relay (RTP and RTCP, both sides): as many as the hard limit allows
# (raising it needs CAP_SYS_RESOURCE; this machine's 20,000 caps the calls near 4,900).
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def udp_port():
    """A UDP port free on 127.0.0.1 now, in 10000-19999: below the relays' ranges (from 20000)
    and the kernel's ephemeral ports, so that neither relay can take it meanwhile."""
    for _ in range(1000):
        port = 10000 + int.from_bytes(os.urandom(2), "big") % 10000
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in _UDP_GIVEN:
            _UDP_GIVEN.add(port)
            return port
    raise SystemExit("no free UDP port in 10000-19999")


_UDP_GIVEN = set()


def pin_relay():
    """preexec_fn of a relay: CPU 0 (every thread it starts inherits it), room for sockets."""
    os.sched_setaffinity(0, {RELAY_CPU})
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def cpu_split(pid):
    """(user, system) CPU seconds of every thread of |pid| so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def cpu_ticks(cpu):
    """(busy, total) jiffies of one CPU from /proc/stat: what else ran there (the loopback's
    softirq work, other processes) shows as busy time the relay's own CPU does not explain."""
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f[0] == f"cpu{cpu}":
            v = [int(x) for x in f[1:]]
            return sum(v) - v[3] - v[4], sum(v)  # idle and iowait are not busy
    return 0, 0


def udp_drops(pid):
    """Datagrams dropped at |pid|'s UDP sockets (full receive buffers): the drops column of
    /proc/net/udp for the socket inodes among its descriptors. Says where a loss happened."""
    inodes = set()
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if f[9] in inodes:
            total += int(f[12])
    return total


class PbxSip:
    """Answers every INVITE 200 with an RTP/AVP answer at the echo's port; BYE 200."""

    def __init__(self, echo_port):
        self.echo_port = echo_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.addr = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        st = Stream(s)
        sdp = (f"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {self.echo_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
        try:
            while True:
                m = st.read()
                if not m.is_request or m.method == "ACK":
                    continue
                body = sdp if m.method == "INVITE" else b""
                lines = ["SIP/2.0 200 OK"] + [f"Via: {v}" for v in m.all("Via")]
                lines += [f"Record-Route: {v}" for v in m.all("Record-Route")]
                to = m.get("To") + ("" if ";tag=" in m.get("To") else ";tag=pbx")
                lines += [f"From: {m.get('From')}", f"To: {to}", f"Call-ID: {m.get('Call-ID')}",
                          f"CSeq: {m.get('CSeq')}", "Contact: <sip:pbx@127.0.0.1:5060>"]
                if body:
                    lines.append("Content-Type: application/sdp")
                lines.append(f"Content-Length: {len(body)}")
                st.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        except (EOFError, OSError):
            pass


def invite(i, key):
    body = (f"v=0\r\no=carrier {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 9 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=crypto:1 {SUITE} inline:{key}\r\n").encode()
    lines = [f"INVITE sip:+1555{i:07d}@sbc.tlsgate.test SIP/2.0",
             f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-b{i}", "Max-Forwards: 70",
             f"From: <sip:carrier@example.net>;tag=f{i}", "To: <sip:pbx@example.net>",
             f"Call-ID: bench-{i}", f"CSeq: 1 INVITE", "Contact: <sip:c@127.0.0.1:5061>",
             "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def set_up_calls(st, n, key):
    """INVITEs in windows of 50; returns tlsgate's provider-side RTP port and SRTP key of each
    call (from the 200's SDP)."""
    ports = []
    for base in range(0, n, 50):
        batch = range(base, min(n, base + 50))
        st.send(b"".join(invite(i, key) for i in batch))
        for _ in batch:
            while True:
                m = st.read()
                if not m.is_request and m.code >= 200:
                    break
            if m.code != 200:
                raise SystemExit(f"call refused: {m.start}")
            ports.append(answer_media(m.body))
    return ports


def answer_media(sdp):
    """(port, base64 key) of the relay's provider-side media in its SDP answer."""
    port = re.search(rb"^m=audio (\d+) RTP/SAVP", sdp, re.M)
    key = re.search(rb"^a=crypto:\d+ " + SUITE.encode() + rb" inline:([A-Za-z0-9+/=]{40})", sdp,
                    re.M)
    if port is None or key is None:
        raise SystemExit(f"the relay's answer has no SRTP media: {sdp!r}")
    return int(port.group(1)), key.group(1).decode()


def bencode(v):
    """The ng protocol's encoding (BitTorrent's bencode): ints, strings, lists, dicts."""
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(map(bencode, v)) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in sorted(v.items())) + b"e"
    raise TypeError(type(v))


def bdecode(b, i=0):
    """(value, next index) of the bencoded value at b[i:]; strings stay bytes."""
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return (out if c == b"l" else dict(zip(out[::2], out[1::2]))), i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    if len(b) < j + 1 + n:
        raise ValueError("truncated bencode string")
    return b[j + 1:j + 1 + n], j + 1 + n


class Rtpengine:
    """rtpengine-daemon in the foreground on 127.0.0.1: kernel forwarding off, one worker
    thread, a private port range, its ng control port; the log (warnings) in a file."""

    def __init__(self, n):
        self.ng_port = h.free_port()
        lo = 20000  # the range tlsgate gets (Debian's service, disabled, would use 30000-40000)
        hi = min(65000, lo + 8 * n + 2000)
        self.log = h.tmpfile("rtpengine-", ".log")
        args = [RTPENGINE, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
                "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{self.ng_port}",
                f"--port-min={lo}", f"--port-max={hi}", "--num-threads=1", "--timeout=120",
                "--log-level=4", f"--max-sessions={n + 10}"]
        self.logf = open(self.log, "w")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                     preexec_fn=pin_relay)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", self.ng_port))
        self.sock.settimeout(0.5)
        for _ in range(100):  # until it answers a ping (refused at once until it listens)
            try:
                if self.ng({"command": "ping"}).get(b"result") == b"pong":
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.close()
        raise SystemExit(f"rtpengine did not start: {self.log.read_text()[-2000:]}")

    def ng(self, cmd):
        cookie = os.urandom(6).hex().encode()
        self.sock.send(cookie + b" " + bencode(cmd))
        while True:
            r = self.sock.recv(65536)
            if r.startswith(cookie + b" "):
                return bdecode(r, len(cookie) + 1)[0]

    def set_up_calls(self, n, key, load_port, echo_port):
        """offer (provider: RTP/SAVP with its key, at the load's port) and answer (PBX: RTP/AVP
        at the echo's port) for each call; (port, key) of rtpengine's provider side."""
        out = []
        for i in range(n):
            offer = (f"v=0\r\no=carrier {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                     f"t=0 0\r\nm=audio {load_port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                     f"a=crypto:1 {SUITE} inline:{key}\r\n")
            r = self.ng({"command": "offer", "call-id": f"bench-{i}", "from-tag": f"f{i}",
                         "sdp": offer, "transport-protocol": "RTP/AVP", "ICE": "remove"})
            if r.get(b"result") != b"ok":
                raise SystemExit(f"rtpengine refused offer {i}: {r}")
            answer = (f"v=0\r\no=pbx {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                      f"t=0 0\r\nm=audio {echo_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
            r = self.ng({"command": "answer", "call-id": f"bench-{i}", "from-tag": f"f{i}",
                         "to-tag": f"t{i}", "sdp": answer, "ICE": "remove"})
            if r.get(b"result") != b"ok":
                raise SystemExit(f"rtpengine refused answer {i}: {r}")
            out.append(answer_media(r[b"sdp"]))
        return out

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()
        self.sock.close()


@contextlib.contextmanager
def tlsgate(n, key, load_port, echo_port):
    """tlsgate with [media], one worker on CPU 0, the calls set up over mutual-TLS SIP; yields
    (pid, [(port, key)], a function returning tlsgate's own counters)."""
    pbx = PbxSip(echo_port)
    cfg = h.base_config()
    cfg["global"]["workers"] = 1
    cfg["global"]["log_level"] = "warn"
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": pbx.addr,
                               "mode": "sip"}
    cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                    "port_range": f"20000-{20000 + 4 * n + 999}", "max_calls": n + 10,
                    "timeout_s": 120}
    with h.Proxy(cfg, nofile=NOFILE, preexec=lambda: os.sched_setaffinity(0, {RELAY_CPU})) as px:
        st = Stream(h.tls_connect(px.addr("provider"), timeout=60))

        def counters():
            return {"relay_counted": int(sum(
                px.metric("tlsgate_media_packets_total", direction=d)
                for d in ("provider_to_pbx", "pbx_to_provider"))),
                "relay_auth_failures": int(px.metric("tlsgate_media_srtp_auth_failures_total"))}

        yield px.proc.pid, set_up_calls(st, n, key), counters
        st.sock.close()


@contextlib.contextmanager
def rtpengine(n, key, load_port, echo_port):
    """rtpengine (see Rtpengine) with the calls set up through ng; yields as tlsgate() does
    (rtpengine's counters are not read: the ends count for both)."""
    r = Rtpengine(n)
    try:  # also when setting up the calls fails
        yield r.proc.pid, r.set_up_calls(n, key, load_port, echo_port), dict
    finally:
        r.close()


@contextlib.contextmanager
def direct(n, key, load_port, echo_port):
    """No relay: the load straight at the echo, which returns its own SRTP (so the load's key
    authenticates it): the round trip floor of the load and the echo on this machine."""
    yield None, [(echo_port, key)] * n, dict


RELAYS = {"direct": direct, "tlsgate": tlsgate, "rtpengine": rtpengine}


def run(relay, n, seconds):
    """One measurement: |n| calls through |relay| for |seconds|; one JSON-able dict."""
    key = base64.b64encode(os.urandom(30)).decode()
    echo_port, load_port = udp_port(), udp_port()
    echo = subprocess.Popen(["taskset", "-c", str(LOAD_CPU), LOAD, "echo", "--bind",
                             f"127.0.0.1:{echo_port}", "--seconds", str(seconds + 600)],
                            stdout=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        with RELAYS[relay](n, key, load_port, echo_port) as (pid, calls, counters):
            setup_s = time.time() - t0
            path = h.tmpfile("calls-", ".txt")
            path.write_text("".join(f"{port} {k}\n" for port, k in calls))
            before = counters()
            split0 = cpu_split(pid) if pid else (0, 0)
            cpu0 = sum(split0)
            busy0, total0 = cpu_ticks(RELAY_CPU)
            r = subprocess.run(["taskset", "-c", str(LOAD_CPU), LOAD, "load", "--bind",
                                f"127.0.0.1:{load_port}", "--calls", str(path), "--key", key,
                                "--seconds", str(seconds)], capture_output=True, text=True,
                               timeout=seconds + 120)
            split1 = cpu_split(pid) if pid else (0, 0)
            cpu = sum(split1) - cpu0
            busy1, total1 = cpu_ticks(RELAY_CPU)
            after = counters()
            relay_drops = udp_drops(pid) if pid else 0
            echo_drops = udp_drops(echo.pid)
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            load = json.loads(r.stdout)
    finally:
        echo.terminate()
        out, _ = echo.communicate(timeout=30)
    echoed = json.loads(out)["echoed"]
    # provider->PBX at the echo, PBX->provider at the load (direct: nothing relayed)
    relayed = echoed + load["received"] if pid else 0
    row = {"relay": relay, "calls": n, "seconds": seconds, "setup_s": round(setup_s, 2),
           "relayed": relayed, "cpu_s": round(cpu, 3),
           "user_us_per_packet": round((split1[0] - split0[0]) * 1e6 / relayed, 2)
           if relayed else None,
           "system_us_per_packet": round((split1[1] - split0[1]) * 1e6 / relayed, 2)
           if relayed else None,
           "cpu_us_per_packet": round(cpu * 1e6 / relayed, 2) if relayed else None,
           "packets_per_cpu_s": int(relayed / cpu) if cpu > 0 else None,
           "relay_cpu_busy_pct": round(100.0 * (busy1 - busy0) / max(1, total1 - total0), 1),
           "sent": load["sent"], "echoed": echoed, "received": load["received"],
           "loss_pct": round(100.0 * (1 - load["received"] / load["sent"]), 3)
           if load["sent"] else None,
           "auth_failures": load["auth_failures"],
           "drops_at_relay": relay_drops, "drops_at_echo": echo_drops,
           "drops_at_load": load["drops"],
           "rtt_p50_us": load["p50_us"], "rtt_p99_us": load["p99_us"],
           "rtt_max_us": load["max_us"]}
    row.update({k: v - before[k] for k, v in after.items()})
    return row


FIGURES = ("cpu_us_per_packet", "packets_per_cpu_s", "loss_pct", "rtt_p50_us", "rtt_p99_us")


def summary(rows):
    """Markdown: per call count and relay, the median and min-max of each figure over the
    rounds, and tlsgate's packets per CPU-second over rtpengine's (medians)."""
    out = ["| calls | relay | rounds | CPU per packet | packets per CPU-second | loss | "
           "round trip p50 | round trip p99 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    med = {}
    for n in sorted({r["calls"] for r in rows}):
        for relay in RELAYS:  # direct (the floor) first
            rs = [r for r in rows if r["calls"] == n and r["relay"] == relay]
            if not rs:
                continue
            cells = []
            for f in FIGURES:
                vals = [r[f] for r in rs if r[f] is not None]
                m = statistics.median(vals) if vals else None
                med[(n, relay, f)] = m
                unit = {"cpu_us_per_packet": " µs", "loss_pct": " %", "rtt_p50_us": " µs",
                        "rtt_p99_us": " µs"}.get(f, "")
                cells.append(f"{m:g}{unit} ({min(vals):g}-{max(vals):g})" if vals else "-")
            out.append(f"| {n} | {relay} | {len(rs)} | " + " | ".join(cells) + " |")
    for n in sorted({r["calls"] for r in rows}):
        a, b = med.get((n, "tlsgate", "packets_per_cpu_s")), med.get((n, "rtpengine",
                                                                         "packets_per_cpu_s"))
        if a and b:
            out.append(f"\n{n} calls: tlsgate relays {a / b:.2f}x rtpengine's packets per "
                       f"CPU-second (medians)")
    return "\n".join(out)


def check(rows, relays, calls):
    """The smoke test's assertions: every relay and call count has its figures, packets went
    through both ways and no verified echo failed to authenticate. Never how fast."""
    for relay in relays:
        for n in calls:
            rs = [r for r in rows if r["relay"] == relay and r["calls"] == n]
            assert rs, f"no run of {relay} with {n} calls"
            for r in rs:
                for f in FIGURES + ("relayed", "cpu_s"):
                    if relay != "direct" or f.startswith(("rtt", "loss")):
                        assert r[f] is not None, f"{relay} {n}: {f} missing: {r}"
                assert r["sent"] > 0 and r["echoed"] > 0 and r["received"] > 0, r
                assert r["relayed"] <= 2 * r["sent"], r
                assert r["auth_failures"] == 0, r
                assert 0 < r["rtt_p50_us"] <= r["rtt_p99_us"] <= r["rtt_max_us"], r
                if relay == "tlsgate":  # tlsgate's counters agree with the ends'
                    assert r["relay_counted"] >= r["relayed"], r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--relay", choices=("tlsgate", "rtpengine", "both"), default="tlsgate",
                    help="both: direct (no relay: the floor), tlsgate, rtpengine in each round")
    ap.add_argument("--calls", default="100,1000")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--check", action="store_true",
                    help="assert that the figures are there (the bench.media smoke test); a "
                    "missing rtpengine is then skipped with --relay both")
    args = ap.parse_args()
    relays = list(RELAYS) if args.relay == "both" else [args.relay]
    if args.check and args.relay == "both" and not os.access(RTPENGINE, os.X_OK):
        print(f"rtpengine not installed ({RTPENGINE}): tlsgate only", flush=True)
        relays.remove("rtpengine")
    calls = [int(c) for c in args.calls.split(",")]
    rows = []
    for n in calls:
        for _ in range(args.rounds):
            for relay in relays:
                rows.append(run(relay, n, args.seconds))
                print(json.dumps(rows[-1]), flush=True)
    print(summary(rows), flush=True)
    if args.check:
        check(rows, relays, calls)
        print("bench.media: ok", flush=True)


if __name__ == "__main__":
    main()
