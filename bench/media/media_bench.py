#!/usr/bin/env python3
"""The SRTP<->RTP relay under load: N calls through tlsgate ([media], one worker pinned to CPU
0), each sending 160-byte G.711 payloads at 50 packets/s from the provider side (SRTP, libsrtp2
in tg-media-load) to a PBX echo (tg-media-load echo) and back: 100 packets/s relayed per call.
Measured: tlsgate's CPU (utime + stime from /proc over the load window) per relayed packet,
packets per CPU-second, the added round-trip latency p50/p99 (two relay passes: SRTP->RTP and
RTP->SRTP, and the echo), and loss.

    cmake --build build && python3 bench/media/media_bench.py --calls 100,1000 --seconds 10

The load generator and the echo run on CPU 1. Numbers go in docs/PERFORMANCE.md."""

import argparse
import base64
import json
import os
import re
import socket
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
SUITE = "AES_CM_128_HMAC_SHA1_80"


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """INVITEs in windows of 50; returns tlsgate's provider-side RTP port of each call."""
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
            ports.append(int(re.search(rb"^m=audio (\d+)", m.body, re.M).group(1)))
    return ports


def run(n, seconds):
    key = base64.b64encode(os.urandom(30)).decode()
    echo_port = h.free_port()
    echo = subprocess.Popen(["taskset", "-c", "1", LOAD, "echo", "--bind",
                             f"127.0.0.1:{echo_port}", "--seconds", str(seconds + 60)],
                            stdout=subprocess.PIPE, text=True)
    pbx = PbxSip(echo_port)
    cfg = h.base_config()
    cfg["global"]["workers"] = 1
    cfg["global"]["log_level"] = "warn"
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": pbx.addr,
                               "mode": "sip"}
    cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                    "port_range": f"20000-{20000 + 4 * n + 999}", "max_calls": n + 10,
                    "timeout_s": 120}
    try:
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider"), timeout=60))
            t0 = time.time()
            ports = set_up_calls(st, n, key)
            setup_s = time.time() - t0
            calls = h.tmpfile("calls-", ".txt")
            calls.write_text("\n".join(map(str, ports)) + "\n")
            pk0 = [px.metric("tlsgate_media_packets_total", direction=d)
                   for d in ("provider_to_pbx", "pbx_to_provider")]
            cpu0 = cpu_seconds(px.proc.pid)
            r = subprocess.run(["taskset", "-c", "1", LOAD, "load", "--bind",
                                f"127.0.0.1:{h.free_port()}", "--calls", str(calls), "--key",
                                key, "--seconds", str(seconds)], capture_output=True,
                               text=True, timeout=seconds + 60)
            cpu = cpu_seconds(px.proc.pid) - cpu0
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            load = json.loads(r.stdout)
            pk = sum(px.metric("tlsgate_media_packets_total", direction=d) - p0
                     for d, p0 in zip(("provider_to_pbx", "pbx_to_provider"), pk0))
            fails = px.metric("tlsgate_media_srtp_auth_failures_total")
            st.sock.close()
    finally:
        echo.kill()
        echo.wait()
    return {"calls": n, "setup_s": round(setup_s, 2), "relayed": int(pk),
            "cpu_s": round(cpu, 3),
            "cpu_us_per_packet": round(cpu * 1e6 / pk, 2) if pk else None,
            "packets_per_cpu_s": int(pk / cpu) if cpu > 0 else None,
            "sent": load["sent"], "received": load["received"],
            "loss_pct": round(100.0 * (1 - load["received"] / load["sent"]), 3),
            "rtt_p50_us": load["p50_us"], "rtt_p99_us": load["p99_us"],
            "rtt_max_us": load["max_us"], "auth_failures": int(fails)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="100,1000")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    for n in map(int, args.calls.split(",")):
        print(json.dumps(run(n, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
