#!/usr/bin/env python3
"""Targets given by name follow DNS (issue 12): every address of a name is a target in turn,
the addresses are refreshed when their TTL runs out (without a reload), a `connect` name
without a port is looked up as SRV _sips._tcp.NAME (RFC 3263), a name that does not resolve
at start is a warning while another target resolves, and stale addresses keep working when
DNS goes away.

DNS is a small authoritative server in this process (UDP on 127.0.0.1, A/AAAA/SRV/NXDOMAIN,
answers changeable while it runs, TTLs of 1 s) that tlsgate is pointed at with
`[global] resolvers`. The provider targets are TLS servers on 127.0.0.2 and up, each with the
test PKI's `provider` certificate (CN=SAN=sip.provider.test): the name tlsgate must check."""

import socket
import ssl
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

NAME = "sip.provider.test"
T_A, T_AAAA, T_SRV = 1, 28, 33


# ---------------------------------------------------------------------------------------------
# DNS.

def enc_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


class DnsServer:
    """An authoritative DNS server on 127.0.0.1 (UDP). Records are set per name and type;
    a name with no record at all is NXDOMAIN, one without the asked type NODATA."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self.records = {}  # (name, type) -> [(ttl, rdata)]
        self.queries = []  # (name, type)
        self._stop = False
        self._th = None

    def set_a(self, name, addrs, ttl=1):
        with self._lock:
            self.records[(name.lower(), T_A)] = [(ttl, socket.inet_aton(a)) for a in addrs]

    def set_srv(self, name, entries, ttl=1):
        """entries: (priority, weight, port, target)."""
        with self._lock:
            self.records[(name.lower(), T_SRV)] = [
                (ttl, struct.pack("!HHH", p, w, port) + enc_name(t)) for p, w, port, t in entries]

    def asked(self, name, qtype):
        with self._lock:
            return sum(1 for q in self.queries if q == (name.lower(), qtype))

    def __enter__(self):
        self._th = threading.Thread(target=self._loop, daemon=True)
        self._th.start()
        return self

    def stop(self):
        """Stop answering: the port is closed (queries meet a refusal)."""
        if not self._stop:
            self._stop = True
            self._th.join(timeout=5)
            self.sock.close()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _loop(self):
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(data)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _answer(self, q):
        if len(q) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", q[:6])
        if qdcount != 1:
            return None
        labels, off = [], 12
        while off < len(q) and q[off] != 0:
            n = q[off]
            labels.append(q[off + 1:off + 1 + n].decode("ascii", "replace"))
            off += 1 + n
        off += 1
        if off + 4 > len(q):
            return None
        qtype, _ = struct.unpack("!HH", q[off:off + 4])
        question = q[12:off + 4]
        name = ".".join(labels).lower()
        with self._lock:
            self.queries.append((name, qtype))
            exists = any(n == name for n, _ in self.records)
            answers = list(self.records.get((name, qtype), []))
        rcode = 0 if exists else 3
        out = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers),
                          0, 0) + question
        for ttl, rdata in answers:
            out += enc_name(name) + struct.pack("!HHIH", qtype, 1, ttl, len(rdata)) + rdata
        return out


# ---------------------------------------------------------------------------------------------
# Provider targets.

class Target:
    """A mutual-TLS provider on HOST:PORT (the `provider` certificate) that records what each
    connection sends. stop() closes the listening socket: later connects are refused."""

    def __init__(self, host, port):
        p = h.pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(p.cert("provider"), p.key("provider"))
        self.ctx.load_verify_locations(p.ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.addr = f"{host}:{port}"
        self.data = []  # bytes received, per connection
        self._lock = threading.Lock()
        self._stop = False
        self._threads = []

    def __enter__(self):
        th = threading.Thread(target=self._accept, daemon=True)
        th.start()
        self._threads.append(th)
        return self

    def stop(self):
        if not self._stop:
            self._stop = True
            for th in list(self._threads):
                th.join(timeout=5)
            self.sock.close()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _accept(self):
        while not self._stop:
            try:
                s, _ = self.sock.accept()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            th = threading.Thread(target=self._serve, args=(s,), daemon=True)
            th.start()
            self._threads.append(th)

    def _serve(self, s):
        buf = bytearray()
        with self._lock:
            self.data.append(buf)
        try:
            s.settimeout(h.t(5))
            s = self.ctx.wrap_socket(s, server_side=True)
            s.settimeout(0.05)
            while not self._stop:
                try:
                    chunk = s.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                if not chunk:
                    break
                with self._lock:
                    buf += chunk
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    def got(self, payload):
        with self._lock:
            return any(payload in bytes(b) for b in self.data)


def free_port_on(*hosts):
    """A TCP port free on every one of |hosts| (loopback addresses)."""
    for _ in range(50):
        port = h.free_port(hosts[0])
        ok = True
        for host in hosts[1:]:
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise AssertionError(f"no port free on all of {hosts}")


def config(dns, connect, **listener):
    cfg = h.base_config()
    cfg["global"]["resolvers"] = dns.addr
    cfg["global"]["log_level"] = "debug"
    cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": connect,
                           "connect_timeout_ms": 1000, **listener}
    return cfg


def fixed_config(dns, connect):
    """A configuration file with fixed ports, for `check` and a `run` that stops early."""
    cfg = config(dns, connect)
    cfg["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"
    cfg["outbound pbx"]["listen"] = f"127.0.0.1:{h.free_port()}"
    return h.write_config(cfg)


_seq = [0]


def send_from_pbx(px):
    """A PBX connection sending a unique payload; returns (socket, payload)."""
    _seq[0] += 1
    payload = b"OPTIONS sip:%s SIP/2.0\r\nCall-ID: dns-%d-%f\r\n\r\n" % (
        NAME.encode(), _seq[0], time.monotonic())
    host, port = h.split_addr(px.addr("pbx"))
    s = socket.create_connection((host, port), timeout=h.t(5))
    s.sendall(payload)
    return s, payload


def deliver(px, target, timeout=8):
    """Send from the PBX and wait for the payload at |target|."""
    s, payload = send_from_pbx(px)
    try:
        h.wait_for(lambda: target.got(payload), timeout, f"the PBX's bytes at {target.addr}")
    finally:
        s.close()
    return payload


class DnsTest(h.TestCase):

    def test_every_address_first_refuses(self):
        """A name with two A records whose first address refuses: the PBX's bytes arrive at
        the second, and both addresses are counted for the target."""
        port = free_port_on("127.0.0.2", "127.0.0.3")
        with DnsServer() as dns, Target("127.0.0.3", port) as second:
            dns.set_a(NAME, ["127.0.0.2", "127.0.0.3"], ttl=60)
            with h.Proxy(config(dns, f"{NAME}:{port}")) as px:
                px.wait_log("event=dns_changed", f"name={NAME}",
                            f'new="127.0.0.2:{port},127.0.0.3:{port}"')
                target = f"{NAME}:{port}"
                self.assertEqual(px.metric("tlsgate_target_addresses", listener="pbx",
                                           target=target), 2)
                deliver(px, second)
                px.wait_log("event=connect_failed", f"target=127.0.0.2:{port}")
                px.wait_log("event=target_address_down", f"address=127.0.0.2:{port}")
                # One address is down, its sibling is up: the target stays up.
                self.assertEqual(px.metric("tlsgate_target_up", listener="pbx", target=target),
                                 1)
                # A new connection skips the failed address (back-off): no new refusal.
                refusals = len(px.log_lines("event=connect_failed", f"127.0.0.2:{port}"))
                deliver(px, second)
                time.sleep(1.1)  # the log is flushed once a second
                self.assertEqual(
                    len(px.log_lines("event=connect_failed", f"127.0.0.2:{port}")), refusals)
                self.assertGreater(px.metric("tlsgate_dns_queries_total", result="ok"), 0)

    def test_address_change_followed(self):
        """The A record changes (TTL 1 s): new connections reach the new address within a few
        seconds, without a reload, and dns_changed names both lists."""
        port = free_port_on("127.0.0.3", "127.0.0.4")
        with DnsServer() as dns, Target("127.0.0.3", port) as old, \
                Target("127.0.0.4", port) as new:
            dns.set_a(NAME, ["127.0.0.3"], ttl=1)
            with h.Proxy(config(dns, f"{NAME}:{port}")) as px:
                deliver(px, old)
                t0 = time.monotonic()
                dns.set_a(NAME, ["127.0.0.4"], ttl=1)
                px.wait_log("event=dns_changed", f'old="127.0.0.3:{port}"',
                            f'new="127.0.0.4:{port}"', timeout=h.t(6))
                payload = None
                deadline = time.monotonic() + h.t(6)
                while time.monotonic() < deadline:
                    s, payload = send_from_pbx(px)
                    try:
                        h.wait_for(lambda: old.got(payload) or new.got(payload), 5,
                                   "the PBX's bytes at either address")
                    finally:
                        s.close()
                    if new.got(payload):
                        break
                self.assertTrue(new.got(payload), "new connections still go to the old address")
                sys.stderr.write(f"  timing: A record change to new connections there: "
                                 f"{time.monotonic() - t0:.3f} s\n")
                self.assertEqual(px.status().get("last_reload"), None)

    def test_srv_without_port(self):
        """`connect = NAME` without a port: SRV _sips._tcp.NAME; the lower priority value is
        used with its port; when it stops, the other. The certificate checked is NAME's."""
        p1 = free_port_on("127.0.0.5")
        p2 = free_port_on("127.0.0.6")
        with DnsServer() as dns, Target("127.0.0.5", p1) as first, \
                Target("127.0.0.6", p2) as second:
            dns.set_srv(f"_sips._tcp.{NAME}",
                        [(20, 1, p2, "b.provider.test"), (10, 1, p1, "a.provider.test")])
            dns.set_a("a.provider.test", ["127.0.0.5"])
            dns.set_a("b.provider.test", ["127.0.0.6"])
            with h.Proxy(config(dns, NAME)) as px:
                px.wait_log("event=dns_changed", f"name={NAME}",
                            f'new="127.0.0.5:{p1},127.0.0.6:{p2}"')
                self.assertGreater(dns.asked(f"_sips._tcp.{NAME}", T_SRV), 0)
                deliver(px, first)
                self.assertFalse(second.data, "the higher priority value was tried first")
                first.stop()
                deliver(px, second)
                px.wait_log("event=connect_failed", f"target=127.0.0.5:{p1}")

    def test_srv_absent_falls_back_to_5061_and_address(self):
        """No SRV record: the name's A record on port 5061 (the fallback is visible in the
        addresses it stands for)."""
        with DnsServer() as dns:
            dns.set_a(NAME, ["127.0.0.7"])
            with h.Proxy(config(dns, NAME)) as px:
                px.wait_log("event=dns_changed", f"name={NAME}", 'new="127.0.0.7:5061"')
                self.assertGreater(dns.asked(f"_sips._tcp.{NAME}", T_SRV), 0)

    def test_unresolved_at_start_is_a_warning(self):
        """One name NXDOMAIN at start, another resolves: tlsgate starts with a dns_unresolved
        warning and works; `check` says the same and passes. When no target resolves, both
        refuse with FILE:LINE."""
        port = free_port_on("127.0.0.3")
        with DnsServer() as dns, Target("127.0.0.3", port) as good:
            dns.set_a(NAME, ["127.0.0.3"], ttl=60)
            connect = f"gone.provider.test:{port}, {NAME}:{port}"
            with h.Proxy(config(dns, connect)) as px:
                px.wait_log("event=dns_unresolved", "name=gone.provider.test", "NXDOMAIN")
                deliver(px, good)
                self.assertEqual(px.metric("tlsgate_target_up", listener="pbx",
                                           target=f"gone.provider.test:{port}"), 0)
                self.assertEqual(px.metric("tlsgate_target_addresses", listener="pbx",
                                           target=f"gone.provider.test:{port}"), 0)
                # It is picked up once it resolves.
                dns.set_a("gone.provider.test", ["127.0.0.3"], ttl=60)
                px.wait_log("event=dns_changed", "name=gone.provider.test", timeout=h.t(8))
                h.wait_for(lambda: px.metric("tlsgate_target_addresses", listener="pbx",
                                             target=f"gone.provider.test:{port}") == 1,
                           5, "the late name's address in the metrics")
            dns.records.pop(("gone.provider.test", T_A))
            r = h.run([h.TLSGATE, "check", "-c", str(fixed_config(dns, connect))])
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("outbound pbx.connect: warning: cannot resolve gone.provider.test: "
                          "NXDOMAIN", r.stderr)
            only_gone = fixed_config(dns, f"gone.provider.test:{port}")
            for cmd in ("check", "run"):
                r = h.run([h.TLSGATE, cmd, "-c", str(only_gone)])
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertRegex(r.stderr, r"\.conf:\d+: outbound pbx\.connect: cannot resolve "
                                           r"gone\.provider\.test: NXDOMAIN")

    def test_dns_down_keeps_stale_addresses(self):
        """The DNS server stops: the last good addresses keep working, dns_failed is logged
        once for the episode and the failed queries are counted."""
        port = free_port_on("127.0.0.3")
        with DnsServer() as dns, Target("127.0.0.3", port) as good:
            dns.set_a(NAME, ["127.0.0.3"], ttl=1)
            with h.Proxy(config(dns, f"{NAME}:{port}")) as px:
                deliver(px, good)
                dns.stop()
                px.wait_log("event=dns_failed", f"name={NAME}", timeout=h.t(10))
                deliver(px, good)
                time.sleep(3.5)  # back-offs of 1 and 2 s: more failed queries, one line
                deliver(px, good)
                self.assertEqual(len(px.log_lines("event=dns_failed", f"name={NAME}")), 1)
                self.assertGreater(px.metric("tlsgate_dns_queries_total", result="error"), 1)
                self.assertEqual(px.metric("tlsgate_target_up", listener="pbx",
                                           target=f"{NAME}:{port}"), 1)


if __name__ == "__main__":
    h.main()
