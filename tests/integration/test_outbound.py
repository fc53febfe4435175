#!/usr/bin/env python3
"""Outbound: a plain TCP client -> [outbound] listener -> TLS to `openssl s_server` with client
certificate verification. The upstream's identity is checked by us; failover walks the
`connect` list past unreachable and refused targets."""

import re
import socket
import struct
import subprocess
import threading
import time
import unittest

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

PAYLOAD = b"OPTIONS sip:sip.provider.test SIP/2.0\r\nCall-ID: outbound-%d-c0ffee\r\n\r\n"


def outbound_config(*targets, **tls):
    cfg = h.base_config(**tls)
    cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": ", ".join(targets)}
    return cfg


def handshakes(px, result):
    return px.metric("tlsgate_handshakes_total", listener="pbx", result=result)


def send_plain(addr, data):
    """Connect in clear to the outbound listener, send |data|; returns the socket."""
    host, port = h.split_addr(addr)
    s = socket.create_connection((host, port), timeout=h.t(5))
    s.sendall(data)
    return s


class OutboundTest(h.TestCase):

    def _assert_delivered(self, srv, px, payload):
        h.wait_for(lambda: payload in srv.out_path.read_bytes(), 15,
                   "the payload on s_server's stdout")
        err = srv.stderr()
        # s_server verified our client certificate: chain depth 0 is our CN, verify ok.
        self.assertRegex(err, r"depth=0 CN ?= ?sbc\.tlsgate\.test", err)
        self.assertIn("verify return:1", err)
        self.assertNotIn("verify error", err)
        px.wait_metric("tlsgate_handshakes_total", lambda v: v >= 1, listener="pbx",
                       result="ok")

    def test_delivery_to_s_server_with_mutual_tls(self):
        with h.SServer("provider") as srv, h.Proxy(outbound_config(srv.addr)) as px:
            payload = PAYLOAD % 1
            s = send_plain(px.addr("pbx"), payload)
            try:
                self._assert_delivered(srv, px, payload)
                # Downstream direction: s_server sends what it reads on its stdin.
                reply = b"SIP/2.0 200 OK reply-from-s_server\n"
                srv.proc.stdin.write(reply)
                srv.proc.stdin.flush()
                got = b""
                deadline = time.monotonic() + h.t(10)
                s.settimeout(0.2)
                while reply not in got and time.monotonic() < deadline:
                    try:
                        chunk = s.recv(4096)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    got += chunk
                self.assertEqual(got, reply)
            finally:
                s.close()
            px.wait_metric("tlsgate_bytes_total", lambda v: v == len(payload),
                           listener="pbx", direction="up")
            px.wait_metric("tlsgate_bytes_total", lambda v: v == len(reply),
                           listener="pbx", direction="down")
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="pbx", kind="outbound")
            self.assertEqual(handshakes(px, "ok"), 1)

    def test_wrong_upstream_name_is_refused(self):
        with h.SServer("wrongname") as srv, h.Proxy(outbound_config(srv.addr)) as px:
            payload = PAYLOAD % 2
            s = send_plain(px.addr("pbx"), payload)
            try:
                data, how = h.read_until_closed(s, 10)
            finally:
                s.close()
            self.assertIn(how, ("eof", "reset"), "our plain client was not closed")
            self.assertEqual(data, b"")
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1, listener="pbx",
                           result="cn_mismatch")
            self.assertEqual(handshakes(px, "ok"), 0)
            lines = px.log_lines("event=handshake_refused", "listener=pbx", "reason=cn_mismatch")
            self.assertEqual(len(lines), 1, px.log_tail())
            self.assertIn("evil.provider.test", lines[0])
            # Give s_server a moment to print anything it might have received: nothing.
            time.sleep(0.3)
            self.assertNotIn(payload, srv.out_path.read_bytes())
            self.assertNotIn(b"Call-ID", srv.out_path.read_bytes())
            self.assertEqual(px.metric("tlsgate_bytes_total", listener="pbx", direction="up"), 0)

    def test_failover_past_closed_port(self):
        dead = f"127.0.0.1:{h.closed_port()}"
        with h.SServer("provider") as srv, h.Proxy(outbound_config(dead, srv.addr)) as px:
            payload = PAYLOAD % 3
            s = send_plain(px.addr("pbx"), payload)
            try:
                self._assert_delivered(srv, px, payload)
            finally:
                s.close()
            px.wait_metric("tlsgate_upstream_connect_errors_total", lambda v: v == 1,
                           listener="pbx")
            self.assertEqual(handshakes(px, "ok"), 1)
            self.assertEqual(handshakes(px, "connect_failed"), 0)

    def test_failover_after_refusal(self):
        with h.SServer("wrongname") as bad, h.SServer("provider") as good, \
                h.Proxy(outbound_config(bad.addr, good.addr)) as px:
            payload = PAYLOAD % 4
            s = send_plain(px.addr("pbx"), payload)
            try:
                self._assert_delivered(good, px, payload)
            finally:
                s.close()
            self.assertEqual(handshakes(px, "cn_mismatch"), 1)
            self.assertEqual(handshakes(px, "ok"), 1)
            self.assertNotIn(payload, bad.out_path.read_bytes())

    def test_failover_after_upstream_reset_or_close(self):
        """A target that accepts TCP and then resets (or closes) during the handshake is a
        failed target like any other: the next one in `connect` gets the connection."""
        for mode in ("close", "reset"):
            with self.subTest(mode=mode), RudeServer(mode) as rude, \
                    h.SServer("provider") as good, \
                    h.Proxy(outbound_config(rude.addr, good.addr)) as px:
                payload = PAYLOAD % 6
                s = send_plain(px.addr("pbx"), payload)
                try:
                    self._assert_delivered(good, px, payload)
                finally:
                    s.close()
                self.assertGreaterEqual(rude.accepted, 1)

    def test_all_targets_down(self):
        targets = [f"127.0.0.1:{h.closed_port()}" for _ in range(3)]
        with h.Proxy(outbound_config(*targets)) as px:
            s = send_plain(px.addr("pbx"), PAYLOAD % 5)
            try:
                data, how = h.read_until_closed(s, 10)
            finally:
                s.close()
            self.assertIn(how, ("eof", "reset"))
            px.wait_metric("tlsgate_upstream_connect_errors_total", lambda v: v == 3,
                           listener="pbx")
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1, listener="pbx",
                           result="connect_failed")
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="pbx", kind="outbound")


class RudeServer:
    """A TCP server that accepts, reads the ClientHello, then closes (FIN) or resets (RST)."""

    def __init__(self, mode):
        self.mode = mode
        self.accepted = 0

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def _serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            c.settimeout(2)
            try:
                c.recv(4096)
            except OSError:
                pass
            if self.mode == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()
        return False


def first_address(host):
    """The address tlsgate connects to for |host|: the first getaddrinfo result, as
    tg_resolve_target takes it (AF_UNSPEC, SOCK_STREAM)."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise unittest.SkipTest(f"cannot resolve {host}: {e}")
    family, addr = infos[0][0], infos[0][4][0]
    return f"[{addr}]" if family == socket.AF_INET6 else addr


class NamedSServer(h.SServer):
    """h.SServer on |host| (an address as s_server's -accept takes it) that prints the SNI it
    receives: with -servername (and the same certificate as its second context), s_server
    writes `Hostname in TLS extension: "NAME"` to stdout for any name, and nothing without
    one."""

    def __init__(self, cert, host="127.0.0.1"):
        super().__init__(cert)
        self.host = host

    def __enter__(self):
        if h.OPENSSL is None:
            raise unittest.SkipTest("openssl CLI not found")
        cert, key = self.p.cert(self.cert), self.p.key(self.cert)
        cmd = [h.OPENSSL, "s_server", "-accept", f"{self.host}:0", "-naccept", "1",
               "-cert", cert, "-key", key, "-CAfile", self.p.ca,
               "-Verify", "1", "-verify_return_error",
               "-servername", "sni.tlsgate.test", "-cert2", cert, "-key2", key]
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = h.popen(cmd, stdin=subprocess.PIPE, stdout=self._out, stderr=self._err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"s_server exited {self.proc.returncode}: "
                                     f"{self.stdout()}{self.stderr()}")
            m = re.search(r"ACCEPT .*:(\d+)", self.stdout())
            return int(m.group(1)) if m else None

        self.port = h.wait_for(ready, 10, "s_server to print ACCEPT")
        self.addr = f"{self.host}:{self.port}"
        return self

    def sni(self):
        """The server names s_server was sent, in order, once it has said: it prints the name
        (buffered) before the `CIPHER is` line of a completed handshake, and flushes everything
        when it exits after its one connection."""
        def said():
            out = self.stdout()
            names = re.findall(r'Hostname in TLS extension: "([^"]*)"', out)
            if names or "CIPHER is" in out or self.proc.poll() is not None:
                return names, out
            return None

        names, _ = h.wait_for(said, 10, "s_server to report the handshake")
        return names


class TargetNameTest(h.TestCase):
    """Names bind to targets: a target given by host name (or with `=NAME`) must present a
    certificate for that name, whatever peer_names holds; a target given by address alone is
    held to peer_names. The name is also the SNI."""

    def _refused(self, srv, px, payload, reason, target_name):
        s = send_plain(px.addr("pbx"), payload)
        try:
            data, how = h.read_until_closed(s, 10)
        finally:
            s.close()
        self.assertIn(how, ("eof", "reset"), "our plain client was not closed")
        self.assertEqual(data, b"")
        px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1, listener="pbx",
                       result=reason)
        self.assertEqual(handshakes(px, "ok"), 0)
        lines = px.log_lines("event=handshake_refused", "listener=pbx", f"reason={reason}")
        self.assertEqual(len(lines), 1, px.log_tail())
        if target_name is not None:
            self.assertIn(f"target name '{target_name}'", lines[0])
        time.sleep(0.3)
        self.assertNotIn(payload, srv.out_path.read_bytes())

    def _delivered(self, srv, px, payload):
        s = send_plain(px.addr("pbx"), payload)
        try:
            OutboundTest._assert_delivered(self, srv, px, payload)
        finally:
            s.close()
        self.assertEqual(handshakes(px, "cn_mismatch"), 0)

    def test_host_name_refuses_a_peer_names_certificate(self):
        """(a) `connect = localhost:PORT` to a certificate for sip.um.example.net: refused,
        although sip.um.example.net is in peer_names."""
        with NamedSServer("client", first_address("localhost")) as srv, \
                h.Proxy(outbound_config(f"localhost:{srv.port}")) as px:
            self.assertIn("sip.um.example.net", px.sections["tls"]["peer_names"])
            self._refused(srv, px, PAYLOAD % 20, "cn_mismatch", "localhost")
            self.assertEqual(srv.sni(), ["localhost"])

    def test_host_name_accepts_its_own_certificate(self):
        """(b) `connect = localhost:PORT` to a certificate for localhost: accepted, although
        localhost is not in peer_names."""
        with NamedSServer("localhost", first_address("localhost")) as srv, \
                h.Proxy(outbound_config(f"localhost:{srv.port}")) as px:
            self.assertNotIn("localhost", px.sections["tls"]["peer_names"])
            self._delivered(srv, px, PAYLOAD % 21)
            self.assertEqual(srv.sni(), ["localhost"])

    def test_explicit_name_after_address(self):
        """(c) `connect = 127.0.0.1:PORT=sip.um.example.net`: the certificate for that name is
        accepted and the name is the SNI."""
        with NamedSServer("client") as srv, \
                h.Proxy(outbound_config(f"127.0.0.1:{srv.port}=sip.um.example.net")) as px:
            self._delivered(srv, px, PAYLOAD % 22)
            self.assertEqual(srv.sni(), ["sip.um.example.net"])

    def test_explicit_name_refuses_another_peer_name(self):
        """`=NAME` binds: a certificate for another name of peer_names is refused."""
        with NamedSServer("client") as srv, \
                h.Proxy(outbound_config(f"127.0.0.1:{srv.port}=sip.provider.test")) as px:
            self._refused(srv, px, PAYLOAD % 23, "cn_mismatch", "sip.provider.test")
            self.assertEqual(srv.sni(), ["sip.provider.test"])

    def test_explicit_name_after_host_name(self):
        """`connect = localhost:PORT=sip.um.example.net`: the explicit name wins over the
        host's, for the certificate and for SNI."""
        with NamedSServer("client", first_address("localhost")) as srv, \
                h.Proxy(outbound_config(f"localhost:{srv.port}=sip.um.example.net")) as px:
            self._delivered(srv, px, PAYLOAD % 24)
            self.assertEqual(srv.sni(), ["sip.um.example.net"])

    def test_address_alone_keeps_peer_names(self):
        """(d) `connect = 127.0.0.1:PORT`: peer_names as before, and no SNI for an address."""
        with NamedSServer("client") as srv, \
                h.Proxy(outbound_config(f"127.0.0.1:{srv.port}")) as px:
            self._delivered(srv, px, PAYLOAD % 25)
            self.assertEqual(srv.sni(), [])
        with NamedSServer("localhost") as srv, \
                h.Proxy(outbound_config(f"127.0.0.1:{srv.port}")) as px:
            s = send_plain(px.addr("pbx"), PAYLOAD % 26)
            try:
                h.read_until_closed(s, 10)
            finally:
                s.close()
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1, listener="pbx",
                           result="cn_mismatch")
            lines = px.log_lines("event=handshake_refused", "listener=pbx",
                                 "reason=cn_mismatch")
            self.assertEqual(len(lines), 1, px.log_tail())
            self.assertIn("none of the 2 peer name(s)", lines[0])
            self.assertEqual(srv.sni(), [])

    def test_cached_acceptance_does_not_cross_names(self):
        """The worker's verify cache keys on the name too: the same chain, accepted for
        sip.um.example.net a moment ago, is checked again (and refused) for a target bound to
        sip.provider.test. One worker, so that both handshakes meet the same cache."""
        with NamedSServer("client") as good, NamedSServer("client") as bad:
            cfg = h.base_config()
            cfg["global"]["workers"] = 1
            cfg["outbound good"] = {"listen": f"127.0.0.1:{h.AUTO}",
                                    "connect": f"127.0.0.1:{good.port}=sip.um.example.net"}
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}",
                                   "connect": f"127.0.0.1:{bad.port}=sip.provider.test"}
            with h.Proxy(cfg) as px:
                payload = PAYLOAD % 27
                s = send_plain(px.addr("good"), payload)
                try:
                    h.wait_for(lambda: payload in good.out_path.read_bytes(), 15,
                               "the payload on the first s_server")
                    px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1,
                                   listener="good", result="ok")
                    self._refused(bad, px, PAYLOAD % 28, "cn_mismatch", "sip.provider.test")
                finally:
                    s.close()


class RoundTripTest(h.TestCase):
    """Outbound and inbound chained on one proxy: plain client -> outbound pbx -> TLS ->
    inbound provider -> tg-echo, byte for byte in both directions."""

    def test_outbound_to_own_inbound(self):
        with h.Echo() as echo:
            # The inbound side must accept our own certificate as a peer for this loop.
            cfg = h.base_config(peer_names="sip.um.example.net, sbc.tlsgate.test")
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            inbound_port = h.free_port()
            cfg["inbound provider"]["listen"] = f"127.0.0.1:{inbound_port}"
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}",
                                   "connect": f"127.0.0.1:{inbound_port}"}
            with h.Proxy(cfg) as px:
                data = h.random_bytes(4 * 1024 * 1024, seed=11)
                host, port = h.split_addr(px.addr("pbx"))
                with socket.create_connection((host, port), timeout=h.t(10)) as s:
                    got = bytearray()

                    def reader():
                        while True:
                            chunk = s.recv(65536)
                            if not chunk:
                                return
                            got.extend(chunk)

                    th = threading.Thread(target=reader, daemon=True)
                    th.start()
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    th.join(timeout=h.t(30))
                    self.assertFalse(th.is_alive(), f"echo incomplete: {len(got)} bytes")
                self.assertEqual(len(got), len(data))
                self.assertTrue(bytes(got) == data, "echoed bytes differ")
                for listener in ("pbx", "provider"):
                    px.wait_metric("tlsgate_bytes_total", lambda v: v == len(data),
                                   listener=listener, direction="up")
                    px.wait_metric("tlsgate_bytes_total", lambda v: v == len(data),
                                   listener=listener, direction="down")


if __name__ == "__main__":
    h.main()
