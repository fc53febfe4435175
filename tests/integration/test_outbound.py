#!/usr/bin/env python3
"""Outbound: a plain TCP client -> [outbound] listener -> TLS to `openssl s_server` with client
certificate verification. The upstream's identity is checked by us; failover walks the
`connect` list past unreachable and refused targets."""

import socket
import struct
import threading
import time

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
