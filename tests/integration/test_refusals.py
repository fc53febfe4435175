#!/usr/bin/env python3
"""Inbound refusals and failures: bad client certificates (and, outbound, an upstream
certificate made for another purpose), garbage instead of a ClientHello, a backend that is
down, handshake and idle timeouts. Each outcome is checked on the wire, in /metrics and in the
log, and the proxy must stay healthy for everyone else."""

import re
import socket
import ssl
import time

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from harness import MIB


def inbound_config(forward, **tls):
    cfg = h.base_config(**tls)
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": forward}
    return cfg


def handshakes(px, result, listener="provider"):
    return px.metric("tlsgate_handshakes_total", listener=listener, result=result)


def outbound_config(*targets, **tls):
    cfg = h.base_config(**tls)
    cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": ", ".join(targets)}
    return cfg


class CertificateRefusalTest(h.TestCase):
    """(d): each bad client certificate is refused, counted once under its own reason and
    logged as event=handshake_refused with that reason; nothing reaches the backend."""

    CASES = [
        # (client cert or None, reason)
        (None, "no_certificate"),
        ("selfsigned", "self_signed"),
        ("wrongcase", "cn_case_mismatch"),
        ("expired", "expired"),
        ("notyet", "not_yet_valid"),
        ("untrusted", "untrusted"),
    ]

    def test_refusals(self):
        p = h.pki().extra()
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            addr = px.addr("provider")
            for cert, reason in self.CASES:
                for version in ("1.3", "1.2"):
                    with self.subTest(cert=cert, tls=version):
                        before = handshakes(px, reason)
                        r = h.tg_client(addr, "--expect-refused", cert=cert, tls=version,
                                        timeout=20, p=p)
                        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                        self.assertIn("result=refused", r.stdout)
                        px.wait_metric("tlsgate_handshakes_total", lambda v: v == before + 1,
                                       listener="provider", result=reason)
                        self.assertEqual(len(px.log_lines("event=handshake_refused",
                                                          "listener=provider",
                                                          f"reason={reason} ")),
                                         before + 1)
            m = px.metrics()
            for _, reason in self.CASES:
                self.assertEqual(m[("tlsgate_handshakes_total",
                                    frozenset({"listener": "provider",
                                               "result": reason}.items()))], 2, reason)
            self.assertEqual(handshakes(px, "ok"), 0)
            # Refused peers never reach the backend.
            self.assertEqual(px.metric("tlsgate_bytes_total", listener="provider",
                                       direction="up"), 0)
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="provider", kind="inbound")
            # The good certificate still works afterwards.
            r = h.tg_client(addr, "--bulk", "100000", timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_refusal_log_line_shape(self):
        """The brief's one-count-each case on a fresh proxy: == 1 each, and the log line
        carries conn=, peer= and detail=."""
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            addr = px.addr("provider")
            for cert in (None, "selfsigned", "wrongcase"):
                r = h.tg_client(addr, "--expect-refused", cert=cert, timeout=20)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            for reason in ("no_certificate", "self_signed", "cn_case_mismatch"):
                px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1,
                               listener="provider", result=reason)
                lines = px.log_lines("event=handshake_refused", f"reason={reason} ")
                self.assertEqual(len(lines), 1, lines)
                fields = h.kv(lines[0])
                self.assertEqual(fields["level"], "warn")
                self.assertEqual(fields["listener"], "provider")
                self.assertRegex(fields["conn"], r"^w\d+-\d+$")
                self.assertRegex(fields["peer"], r"^127\.0\.0\.1:\d+$")
                self.assertTrue(fields["detail"], lines[0])


class PurposeRefusalTest(h.TestCase):
    """A peer certificate made for another purpose is refused, whichever name it carries:
    inbound (the peer is the TLS client) its extendedKeyUsage must allow clientAuth, outbound
    (the peer is the TLS server) serverAuth, and it must not be a CA certificate. Each refusal
    is counted under its own reason, logged with a detail that says what is missing, and
    answered with the unsupported_certificate alert. The certificates come from make-pki.sh."""

    INBOUND = [
        # (client cert, reason, what the log's detail says)
        ("codesign", "eku_mismatch",
         "extendedKeyUsage lacks clientAuth for a TLS client (has codeSigning)"),
        ("serveronly", "eku_mismatch",
         "extendedKeyUsage lacks clientAuth for a TLS client (has serverAuth)"),
        ("leafca", "leaf_is_ca", "certificate is a CA (basicConstraints CA:TRUE)"),
    ]

    def test_inbound_purpose_refusals(self):
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            addr = px.addr("provider")
            for cert, reason, detail in self.INBOUND:
                for version in ("1.3", "1.2"):
                    with self.subTest(cert=cert, tls=version):
                        before = handshakes(px, reason)
                        logged = len(px.log_lines("event=handshake_refused",
                                                  "listener=provider", f"reason={reason} "))
                        r = h.tg_client(addr, "--expect-refused", cert=cert, tls=version,
                                        timeout=20)
                        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                        self.assertIn("result=refused", r.stdout)
                        self.assertIn("unsupported certificate", r.stdout)
                        px.wait_metric("tlsgate_handshakes_total", lambda v: v == before + 1,
                                       listener="provider", result=reason)
                        lines = px.log_lines("event=handshake_refused", "listener=provider",
                                             f"reason={reason} ")
                        self.assertEqual(len(lines), logged + 1, lines)
                        self.assertEqual(h.kv(lines[-1])["detail"], detail, lines[-1])
            self.assertEqual(handshakes(px, "eku_mismatch"), 4)
            self.assertEqual(handshakes(px, "leaf_is_ca"), 2)
            self.assertEqual(handshakes(px, "ok"), 0)
            # Refused peers never reach the backend.
            self.assertEqual(px.metric("tlsgate_bytes_total", listener="provider",
                                       direction="up"), 0)
            # Certificates with both EKUs (RSA and EC) still get through.
            for cert in ("client", "client-ec"):
                r = h.tg_client(addr, "--bulk", "100000", cert=cert, timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(handshakes(px, "ok"), 2)

    def _send_plain(self, addr, data):
        host, port = h.split_addr(addr)
        s = socket.create_connection((host, port), timeout=h.t(5))
        s.sendall(data)
        return s

    def test_outbound_upstream_without_server_auth_is_refused(self):
        """s_server presents a certificate whose EKU is clientAuth only: refused before any
        byte of ours reaches it."""
        payload = b"OPTIONS sip:sip.provider.test SIP/2.0\r\nCall-ID: purpose-1\r\n\r\n"
        with h.SServer("provider-clientonly") as srv, \
                h.Proxy(outbound_config(srv.addr)) as px:
            s = self._send_plain(px.addr("pbx"), payload)
            try:
                data, how = h.read_until_closed(s, 10)
            finally:
                s.close()
            self.assertIn(how, ("eof", "reset"), "our plain client was not closed")
            self.assertEqual(data, b"")
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1, listener="pbx",
                           result="eku_mismatch")
            self.assertEqual(handshakes(px, "ok", listener="pbx"), 0)
            lines = px.log_lines("event=handshake_refused", "listener=pbx",
                                 "reason=eku_mismatch ")
            self.assertEqual(len(lines), 1, px.log_tail())
            self.assertEqual(h.kv(lines[0])["detail"],
                             "extendedKeyUsage lacks serverAuth for a TLS server (has clientAuth)")
            # s_server heard why: the unsupported_certificate alert (number 43).
            h.wait_for(lambda: re.search(r"unsupported certificate|alert number 43",
                                         srv.stderr() + srv.stdout()), 10,
                       "s_server to report the alert")
            time.sleep(0.3)
            self.assertNotIn(b"Call-ID", srv.out_path.read_bytes())
            self.assertEqual(px.metric("tlsgate_bytes_total", listener="pbx", direction="up"), 0)

    def test_outbound_server_auth_only_is_accepted(self):
        """The serverAuth-only certificate refused from a client above is right for a server:
        outbound, it is accepted (its name, sip.um.example.net, is in peer_names)."""
        payload = b"OPTIONS sip:sip.um.example.net SIP/2.0\r\nCall-ID: purpose-2\r\n\r\n"
        with h.SServer("serveronly") as srv, h.Proxy(outbound_config(srv.addr)) as px:
            s = self._send_plain(px.addr("pbx"), payload)
            try:
                h.wait_for(lambda: payload in srv.out_path.read_bytes(), 15,
                           "the payload on s_server's stdout")
            finally:
                s.close()
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1, listener="pbx",
                           result="ok")
            self.assertEqual(handshakes(px, "eku_mismatch", listener="pbx"), 0)


class GarbageTest(h.TestCase):
    """(e): bytes that are not a ClientHello close that connection only."""

    def _garbage(self, addr, payload):
        host, port = h.split_addr(addr)
        with socket.create_connection((host, port), timeout=h.t(5)) as s:
            s.sendall(payload)
            data, how = h.read_until_closed(s, 5)
        return data, how

    def test_garbage_and_http_close_only_that_connection(self):
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            addr = px.addr("provider")
            bulk = h.tg_client_bg(addr, "--bulk", str(64 * MIB), timeout=120)
            # Wait until the stream is really flowing through the proxy.
            px.wait_metric("tlsgate_bytes_total", lambda v: v > 0, timeout=20,
                           listener="provider", direction="up")
            junk = bytearray(h.random_bytes(4096, seed=7))
            junk[0] = 0xff  # never a valid record type, so the handshake cannot wait for more
            payloads = {
                "random": bytes(junk),
                "http": b"GET / HTTP/1.1\r\nHost: sbc.tlsgate.test\r\nUser-Agent: it\r\n\r\n",
                "sip": b"OPTIONS sip:sbc.tlsgate.test SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n",
            }
            for name, payload in payloads.items():
                with self.subTest(payload=name):
                    start = time.monotonic()
                    data, how = self._garbage(addr, payload)
                    self.assertIn(how, ("eof", "reset"),
                                  f"{name}: connection not closed ({how}), got {data[:64]!r}")
                    self.assertLess(time.monotonic() - start, h.t(5))
                    # Whatever came back is at most a TLS alert, never our bytes echoed.
                    self.assertNotIn(payload[:16], data)
            rc, out, err = h.finish(bulk, 120)
            self.assertEqual(rc, 0, out + err)
            self.assertIn(f"bytes_received={64 * MIB}", out)
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == len(payloads),
                           listener="provider", result="handshake_error")
            self.assertEqual(handshakes(px, "ok"), 1)
            code, body = px.http("/healthz")
            self.assertEqual((code, body.strip()), (200, "ok"))
            r = h.tg_client(addr, "--bulk", "100000", timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(len(px.log_lines("event=handshake_refused",
                                              "reason=handshake_error")), len(payloads))

    def test_immediate_close_and_reset_during_handshake(self):
        """A client that connects and closes (or resets) before a ClientHello is counted and
        does not disturb the proxy."""
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            host, port = h.split_addr(px.addr("provider"))
            for _ in range(5):
                socket.create_connection((host, port), timeout=h.t(5)).close()
            for _ in range(5):
                s = socket.create_connection((host, port), timeout=h.t(5))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.send(b"\x16\x03\x01")  # a partial record header, then RST
                s.close()
            px.wait_metric("tlsgate_connections_total", lambda v: v == 10,
                           listener="provider", kind="inbound")
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="provider", kind="inbound")
            # FIN before a ClientHello is peer_closed; so is a reset mid-record.
            self.assertGreaterEqual(handshakes(px, "peer_closed"), 5, "FIN before a ClientHello")
            # Every accepted connection ends with exactly one handshake result; a reset in the
            # middle of the handshake is peer_closed or handshake_error, never uncounted.
            m = px.metrics()
            results = {dict(k[1])["result"]: v for k, v in m.items()
                       if k[0] == "tlsgate_handshakes_total"
                       and dict(k[1])["listener"] == "provider"}
            self.assertEqual(sum(results.values()), 10,
                             f"handshake results do not add up to the connections: "
                             f"{ {k: v for k, v in results.items() if v} }")
            r = h.tg_client(px.addr("provider"), "--bulk", "100000", timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class BackendDownTest(h.TestCase):
    """(f): forward to a closed port: the TLS handshake succeeds, then the client sees a clean
    close within seconds and the connect error is counted."""

    def test_backend_down(self):
        cfg = inbound_config(f"127.0.0.1:{h.closed_port()}")
        with h.Proxy(cfg) as px:
            addr = px.addr("provider")
            for n in (1, 2):
                s = h.tls_connect(addr)
                try:
                    try:
                        s.sendall(b"REGISTER sip:x SIP/2.0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                        pass  # the close may already be there
                    data, how, secs = h.tls_wait_close(s, 5)
                finally:
                    s.close()
                self.assertEqual(data, b"")
                self.assertEqual(how, "close_notify",
                                 f"expected a clean TLS close, got {how} after {secs:.2f} s")
                px.wait_metric("tlsgate_upstream_connect_errors_total", lambda v: v == n,
                               listener="provider")
            self.assertEqual(handshakes(px, "ok"), 2)
            self.assertEqual(px.metric("tlsgate_bytes_total", listener="provider",
                                       direction="down"), 0)
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="provider", kind="inbound")
            # tg-client's bulk mode fails quickly too (no hang until its own timeout).
            start = time.monotonic()
            r = h.tg_client(addr, "--bulk", "100000", timeout=30)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertNotEqual(r.returncode, 3, "tg-client timed out: the proxy hung\n"
                                + r.stdout)
            self.assertLess(time.monotonic() - start, h.t(10))
            px.wait_metric("tlsgate_upstream_connect_errors_total", lambda v: v == 3,
                           listener="provider")


class TimeoutTest(h.TestCase):
    """(i): handshake_timeout_ms closes a silent TCP client; idle_timeout_ms closes an
    established connection nobody uses."""

    def test_handshake_timeout(self):
        with h.Echo() as echo:
            cfg = inbound_config(echo.addr, handshake_timeout_ms=500)
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("provider"))
                start = time.monotonic()
                with socket.create_connection((host, port), timeout=h.t(5)) as s:
                    data, how = h.read_until_closed(s, 10)
                elapsed = time.monotonic() - start
                self.assertIn(how, ("eof", "reset"), "silent client not closed")
                self.assertEqual(data, b"")
                self.assertGreaterEqual(elapsed, 0.4, "closed before handshake_timeout_ms")
                px.wait_metric("tlsgate_handshakes_total", lambda v: v == 1,
                               listener="provider", result="timeout")
                self.assertTrue(px.log_lines("event=handshake_refused", "reason=timeout"))
                px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                               listener="provider", kind="inbound")
                # A client that sends half a ClientHello and stalls is timed out too.
                with socket.create_connection((host, port), timeout=h.t(5)) as s:
                    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                    data, how = h.read_until_closed(s, 10)
                self.assertIn(how, ("eof", "reset"))
                px.wait_metric("tlsgate_handshakes_total", lambda v: v == 2,
                               listener="provider", result="timeout")

    def test_idle_timeout(self):
        with h.Echo() as echo:
            cfg = inbound_config(echo.addr, idle_timeout_ms=1000)
            with h.Proxy(cfg) as px:
                addr = px.addr("provider")
                s = h.tls_connect(addr)
                try:
                    # Activity keeps it open: 5 round trips 0.4 s apart (2 s > idle timeout).
                    for i in range(5):
                        msg = b"keepalive %d\r\n" % i
                        s.sendall(msg)
                        self.assertEqual(h.tls_recv_exact(s, len(msg)), msg)
                        time.sleep(0.4)
                    start = time.monotonic()
                    data, how, secs = h.tls_wait_close(s, 10)
                finally:
                    s.close()
                self.assertEqual(data, b"")
                self.assertIn(how, ("close_notify", "eof"), how)
                self.assertGreaterEqual(secs, 0.5)
                self.assertTrue(px.wait_log("event=idle_timeout", "listener=provider"))
                px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                               listener="provider", kind="inbound")
                self.assertEqual(px.metric("tlsgate_bytes_total", listener="provider",
                                           direction="down"),
                                 sum(len(b"keepalive %d\r\n" % i) for i in range(5)))


if __name__ == "__main__":
    h.main()
