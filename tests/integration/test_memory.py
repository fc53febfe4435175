#!/usr/bin/env python3
"""Per-connection memory bound (issue 10): clients that write toward the echo backend as fast as
they can and never read must not grow tlsgate's memory beyond what the design bounds, and what
they held must be given back when they leave.

Why this can hold at all (docs/ARCHITECTURE.md, "Backpressure"): a client that never reads
fills, in order, its own receive buffer, tlsgate's TLS send buffer, the ciphertext queue toward
it (`to_tls`, bounded by buffer_size + one record), then tlsgate stops reading the plain side,
the echo backend stops being able to send and so stops reading, the plaintext queue toward the
backend (`to_plain`, bounded by buffer_size) fills, and tlsgate stops reading the TLS side; the
client's writes then block in its kernel. Each receive is single-shot, so what arrives beyond a
full queue is at most one provided buffer per side (`pend_tls`, `pend_plain`).

The bound per connection, derived from the design before measuring (tcp mode, buffer_size
B = 65536; the constants are those of include/tlsgate/conn.h, tlsconn.h, bufq.h):

  to_plain      B                                  = 64 KiB (allocation: B)
  to_tls        B + TLS_SLACK (TG_TLS_CHUNK + 1 KiB) = 81 KiB (allocation: B + 17 KiB)
  pend_tls      one provided buffer, TG_BUF_SIZE   = 16.5 KiB
  pend_plain    one provided buffer, TG_BUF_SIZE   = 16.5 KiB
  BoringSSL     read buffer + write buffer, each one record (16 KiB + header/tag/alignment)
                                                    ~ 34 KiB
  SSL object    SSL, s3 state, AEAD contexts, session with the peer chain (the chain's
                CRYPTO_BUFFERs are pooled and shared by every connection of the same client
                certificate), tg_conn slot          ~ 16 KiB (allowance)
  -------------------------------------------------------------------------------------------
  sum                                               ~ 226 KiB
  allocator slack (jemalloc rounds B + 17 KiB up to its 96 KiB size class, page granularity,
  extents per thread)                               + 25 %  -> bound 282 KiB per connection

In `mode = sip` each connection also holds its SIP state (struct tg_sipconn, ~1 KiB) and one
input buffer per side of up to sip_max_message M = 65536 bytes (taken only while a message is
incomplete or waiting), and a queue may exceed B by one message (a message is processed while
the queue is under B, then appended whole): + 2 M + 2 x (message size) + 1 KiB, with the same
25 % slack: 367 KiB, bound 459 KiB. The test's messages are 4 KiB requests (MESSAGE with a
body) to sip:pbx@127.0.0.1, which tlsgate forwards; tg-echo sends each back, so it comes to
tlsgate as a request from the PBX and is relayed toward the client that never reads.

Kernel socket memory is not in RSS and not part of this bound: with the clients' own buffers
kept small, most of what each client wrote before it was blocked (13-20 MiB on the test
machine, whose tcp_rmem allows 32 MiB) sits in the receive buffer of tlsgate's TLS socket,
which the kernel autotunes. The stderr line shows /proc/net/sockstat `TCP: mem` (whole
machine, pages) for scale.

The warm baseline: tlsgate's receive buffers (TG_BUF_COUNT x TG_BUF_SIZE = 16.5 MiB per worker,
one malloc) become resident as the kernel writes into them, one buffer after another around the
ring; a warm-up bulk transfer of 32 MiB each way (through a second, tcp listener of the same
worker) touches all of them, and a short round of two writers of the same kind warms the rest
(SIP state, the allocator's extents of these sizes) before the baseline is read, so the growth
measured afterwards is the connections' own. After the clients leave, the
per-worker buffer cache may keep up to TG_BUFCACHE_BYTES (1 MiB) per size class (two classes)
and the allocator some pages of its own: RSS must come back within AFTER_SLACK of the baseline.

jemalloc gives freed pages back to the kernel only after dirty_decay_ms (10 s by default), and
only when the thread that freed them allocates or frees again: an idle tlsgate would keep them
and the 'after' check would measure jemalloc's policy, not tlsgate's. tlsgate is therefore run
with MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 (only in this test): freed memory goes back
at once, and what is still resident is what tlsgate still holds.

Figures (baseline, growth per connection, after) are printed on stderr for every case.
"""

import os
import socket
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from harness import MIB  # noqa: E402

KIB = 1024
BUFFER_SIZE = 65536          # [global] buffer_size of this test
TG_BUF_SIZE = 16 * KIB + 512  # include/tlsgate/conn.h: one provided receive buffer
TLS_SLACK = 16 * KIB + KIB   # proxy/conn.c: TG_TLS_CHUNK + 1 KiB, room for one more record
SSL_RECORD_BUFS = 2 * (16 * KIB + 512)  # BoringSSL read + write buffer, one record each
SSL_AND_CONN = 16 * KIB      # SSL object, session, AEAD state, tg_conn: an allowance
SLACK = 1.25                 # allocator rounding and page granularity
SIP_MAX_MESSAGE = 65536      # sip_max_message default: each side's input buffer
SIP_MESSAGE_BODY = 4096      # body of each request the SIP writers send

TCP_DESIGN = (BUFFER_SIZE + (BUFFER_SIZE + TLS_SLACK) + 2 * TG_BUF_SIZE + SSL_RECORD_BUFS
              + SSL_AND_CONN)
TCP_BOUND = int(TCP_DESIGN * SLACK)
SIP_DESIGN = TCP_DESIGN + 2 * SIP_MAX_MESSAGE + 2 * (SIP_MESSAGE_BODY + 2 * KIB) + KIB
SIP_BOUND = int(SIP_DESIGN * SLACK)

CACHE_KEEP = 2 * MIB         # TG_BUFCACHE_BYTES x TG_BUFCACHE_CLASSES, one worker
AFTER_SLACK = CACHE_KEEP + 2 * MIB  # plus allocator metadata and thread caches

MALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
PER_CLIENT = 64 * MIB        # what each client would write at most (it blocks well before)
CLIENT_SOCKBUF = 64 * KIB     # SO_RCVBUF and SO_SNDBUF of each client


def status_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"{field} not in /proc/{pid}/status")


def smaps_rollup(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def tcp_mem_pages():
    """`TCP: ... mem N` of /proc/net/sockstat: pages of socket memory, the whole machine."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    parts = line.split()
                    return int(parts[parts.index("mem") + 1])
    except (OSError, ValueError):
        pass
    return -1


def sip_request(conn, seq):
    body = (b"x" * (SIP_MESSAGE_BODY - 2)) + b"\r\n"
    head = (f"MESSAGE sip:pbx@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKmem{conn}x{seq};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:provider@example.net>;tag=mem{conn}\r\n"
            f"To: <sip:pbx@example.net>\r\n"
            f"Call-ID: mem-{conn}-{seq}@provider\r\n"
            f"CSeq: {seq} MESSAGE\r\n"
            f"Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class Writers:
    """|n| mutual-TLS clients, each writing |total| bytes (or SIP requests) as fast as it can
    and never reading. A thread per client; sends time out every 0.2 s to look at the stop flag
    and are retried with the same bytes (Python's ssl accepts a moved write buffer)."""

    def __init__(self, addr, n, total, sip=False):
        self.addr, self.n, self.total, self.sip = addr, n, total, sip
        self.socks = []
        self.sent = [0] * n
        self.errors = []
        self.stop = threading.Event()
        self.threads = []
        self.raws = []

    def start(self):
        host, port = h.split_addr(self.addr)
        ctx = h.client_context()
        for _ in range(self.n):
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.raws.append(raw)  # closed by close() whatever happens next
            # Small socket buffers (which also turn autotuning off): the echoed bytes the
            # client never reads back up into tlsgate quickly instead of into a loopback
            # window of up to tcp_rmem's 32 MiB, and less sits in the client's own send
            # buffer; what tlsgate's sockets hold is the kernel's business (not in RSS).
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_SOCKBUF)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SOCKBUF)
            raw.settimeout(h.t(10))
            raw.connect((host, port))
            s = ctx.wrap_socket(raw, server_hostname="sbc.tlsgate.test")
            self.socks.append(s)
        for i, s in enumerate(self.socks):
            th = threading.Thread(target=self._write, args=(i, s), daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def _write(self, i, s):
        s.settimeout(0.2)
        chunk = bytes(range(256)) * 64  # 16 KiB
        seq = 0
        data = sip_request(i, seq) if self.sip else chunk
        try:
            while not self.stop.is_set() and self.sent[i] < self.total:
                try:
                    k = s.send(data)
                except (socket.timeout, ssl.SSLWantWriteError):
                    continue  # blocked: the same bytes again, until stopped
                self.sent[i] += k
                if k < len(data):
                    data = data[k:]
                elif self.sip:
                    seq += 1
                    data = sip_request(i, seq)
                else:
                    data = chunk
        except (OSError, ssl.SSLError) as e:
            self.errors.append(f"client {i}: {e!r}")

    def total_sent(self):
        return sum(self.sent)

    def close(self):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=h.t(5))
        for s in self.socks + self.raws:
            try:
                s.close()  # unread bytes in the receive buffer: the kernel sends a reset
            except OSError:
                pass


def uses_jemalloc(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libjemalloc" in f.read()
    except OSError:
        return False


class MemoryTest(h.TestCase):
    def setUp(self):
        if h.SANITIZE:
            self.skipTest("RSS under ASan measures the sanitizer (shadow memory, quarantine)")
        self._old_conf = os.environ.get("MALLOC_CONF")
        os.environ["MALLOC_CONF"] = MALLOC_CONF  # for tlsgate (the harness passes os.environ)

    def tearDown(self):
        if self._old_conf is None:
            os.environ.pop("MALLOC_CONF", None)
        else:
            os.environ["MALLOC_CONF"] = self._old_conf
        super().tearDown()

    def wait_stable(self, pid, writers, what):
        """Samples RSS every 0.2 s until the writers have made no progress for 1 s and RSS has
        moved less than 64 KiB over the last 1.5 s; returns (rss KiB, samples)."""
        samples = []
        deadline = time.monotonic() + h.t(30)
        last_progress = time.monotonic()
        last_sent = -1
        while True:
            now = time.monotonic()
            rss = status_kib(pid)
            sent = writers.total_sent()
            samples.append((now, rss, sent))
            if sent != last_sent:
                last_sent, last_progress = sent, now
            window = [r for (ts, r, _) in samples if ts >= now - 1.5]
            if (now - last_progress >= 1.0 and now - samples[0][0] >= 1.5
                    and max(window) - min(window) < 64):
                return rss, samples
            if now >= deadline:
                last = [(round(ts - samples[0][0], 1), r, b) for ts, r, b in samples[-10:]]
                raise AssertionError(f"{what}: RSS or the writers never settled in "
                                     f"{h.t(30)} s: last samples (s, RSS KiB, bytes sent) {last}")
            time.sleep(0.2)

    def run_case(self, n, sip=False):
        mode = "sip" if sip else "tcp"
        what = f"{n} writers, mode = {mode}"
        with h.Echo() as echo:
            cfg = h.base_config()
            cfg["global"]["workers"] = 1
            cfg["global"]["buffer_size"] = BUFFER_SIZE
            cfg["global"]["log_level"] = "warn"
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr,
                                       "mode": mode}
            # A tcp listener on the same worker for the warm-up bulk transfer.
            cfg["inbound warm"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                pid = px.proc.pid
                addr = px.addr("provider")
                jemalloc = uses_jemalloc(pid)
                # Warm-up: 32 MiB each way touches every receive buffer of the ring (16 MiB)
                # and takes one queue of each size; then a short round of the same writers
                # (the SIP state and scratch, the allocator's extents for these sizes).
                r = h.tg_client(px.addr("warm"), "--bulk", str(32 * MIB), timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                w = Writers(addr, 2, 4 * MIB, sip=sip).start()
                try:
                    self.wait_stable(pid, w, f"{what} (warm-up)")
                finally:
                    w.close()
                for listener in ("provider", "warm"):
                    px.wait_metric("tlsgate_connections_active", lambda v: v == 0, timeout=20,
                                   listener=listener, kind="inbound")
                time.sleep(0.3)
                base = status_kib(pid)
                base_smaps = smaps_rollup(pid)
                base_tcp_mem = tcp_mem_pages()
                down0 = px.metric("tlsgate_bytes_total", listener="provider", direction="down")

                w = Writers(addr, n, PER_CLIENT, sip=sip).start()
                try:
                    held, samples = self.wait_stable(pid, w, what)
                    held_smaps = smaps_rollup(pid)
                    held_tcp_mem = tcp_mem_pages()
                    active = px.metric("tlsgate_connections_active", listener="provider",
                                       kind="inbound")
                    down = px.metric("tlsgate_bytes_total", listener="provider",
                                     direction="down") - down0
                    sent = list(w.sent)
                    errors = list(w.errors)
                finally:
                    w.close()
                self.assertEqual(errors, [], "a writer failed while the proxy held its data")
                self.assertEqual(active, n, "every writer holds its connection")
                # Backpressure engaged: every writer was blocked before it had written all it
                # wanted, and the echo came back through tlsgate toward the clients.
                self.assertLess(max(sent), PER_CLIENT, "a writer was never blocked")
                self.assertGreater(down, 0, "nothing was echoed back toward the clients")
                if sip:
                    errs = {k: v for k, v in px.metrics().items()
                            if k[0] == "tlsgate_sip_errors_total" and v}
                    self.assertEqual(errs, {}, "the SIP writers' requests were refused")
                px.wait_metric("tlsgate_connections_active", lambda v: v == 0, timeout=20,
                               listener="provider", kind="inbound")
                bound = SIP_BOUND if sip else TCP_BOUND
                per_conn = (held - base) * KIB / n
                # RSS falls back: polled, since the last completions and frees land a moment
                # after connections_active reaches 0.
                box = {}

                def back():
                    box["after"] = status_kib(pid)
                    return (box["after"] - base) * KIB <= AFTER_SLACK

                try:
                    h.wait_for(back, 10, "RSS back near the baseline", interval=0.2)
                    ok_after = True
                except AssertionError:
                    ok_after = False
                after = box["after"]
                after_smaps = smaps_rollup(pid)
                sys.stderr.write(
                    f"\nmemory[{what}]: baseline {base} KiB, held {held} KiB "
                    f"(+{held - base} KiB, {per_conn / KIB:.1f} KiB per connection; "
                    f"bound {bound / KIB:.0f} KiB from the design), after close {after} KiB "
                    f"(+{after - base} KiB; allowed {AFTER_SLACK // KIB} KiB); each client "
                    f"wrote {min(sent) / MIB:.1f}-{max(sent) / MIB:.1f} MiB before it was "
                    f"blocked, {down / MIB:.1f} MiB echoed toward them; settled in "
                    f"{samples[-1][0] - samples[0][0]:.1f} s; jemalloc: {jemalloc}\n"
                    f"  smaps_rollup Anonymous KiB: baseline {base_smaps.get('Anonymous')}, "
                    f"held {held_smaps.get('Anonymous')}, after {after_smaps.get('Anonymous')};"
                    f" sockstat TCP mem pages (whole machine, not in RSS): {base_tcp_mem} -> "
                    f"{held_tcp_mem}\n")
                self.assertLess(per_conn, bound,
                                f"{what}: {per_conn / KIB:.1f} KiB per connection, over the "
                                f"design bound of {bound / KIB:.0f} KiB")
                if not jemalloc:
                    sys.stderr.write("  tlsgate does not run on jemalloc here: the check after "
                                     "close (tuned through MALLOC_CONF) is skipped\n")
                    return
                self.assertTrue(ok_after, f"{what}: RSS {after} KiB after the clients left, "
                                f"{after - base} KiB over the baseline {base} KiB (allowed "
                                f"{AFTER_SLACK // KIB} KiB)")

    def test_tcp_10_writers(self):
        self.run_case(10)

    def test_tcp_40_writers(self):
        self.run_case(40)

    def test_sip_10_writers(self):
        self.run_case(10, sip=True)


if __name__ == "__main__":
    h.main()
