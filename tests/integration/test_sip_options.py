#!/usr/bin/env python3
"""mode = sip, tlsgate's own traffic toward the provider: OPTIONS keepalive to each connect target
of an outbound listener (up/down marking, target selection, tlsgate_sip_target_up) and CRLFCRLF
keepalive pings on idle provider connections. The providers are Python TLS endpoints with the
provider certificate of the test PKI that require tlsgate's client certificate; 127.0.0.1 only,
bounded waits."""

import re
import socket
import ssl
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from test_sip import (FQDN, Msg, Uas, provider_server_context, provider_tls,  # noqa: E402
                      read_response, request, response_to, sip_config)


class Provider:
    """A TLS SIP endpoint: answers requests 200 (tlsgate's own OPTIONS only while |answer| is
    set), answers a CRLFCRLF ping with CRLF, and records what it received: requests in |seen|,
    pings in |pings|."""

    def __init__(self):
        self.ctx = provider_server_context()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.answer = True
        self.seen = []
        self.pings = 0
        self.cond = threading.Condition()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        h.accept_loop(self.lsock, lambda: self.stop, lambda s, peer: self._serve(s))

    def _serve(self, s):
        try:
            s.settimeout(h.t(30))
            s = self.ctx.wrap_socket(s, server_side=True)
            buf = b""
            while not self.stop:
                if buf.startswith(b"\r\n\r\n"):
                    buf = buf[4:]
                    with self.cond:
                        self.pings += 1
                        self.cond.notify_all()
                    s.sendall(b"\r\n")
                    continue
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", buf[:end])
                    need = end + 4 + (int(m.group(1)) if m else 0)
                    if len(buf) >= need:
                        msg, buf = Msg(buf[:need]), buf[need:]
                        self._handle(s, msg)
                        continue
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    def _handle(self, s, m):
        with self.cond:
            self.seen.append(m)
            self.cond.notify_all()
        if not m.is_request or m.method == "ACK":
            return
        probe = (m.get("Call-ID") or "").startswith("tlsgate-options-")
        if probe and not self.answer:
            return
        s.sendall(response_to(m, 200, "OK"))

    def probes(self):
        with self.cond:
            return [m for m in self.seen
                    if m.is_request and (m.get("Call-ID") or "").startswith("tlsgate-options-")]

    def calls(self, call_id):
        with self.cond:
            return [m for m in self.seen if m.is_request and m.get("Call-ID") == call_id]

    def close(self):
        self.stop = True
        self.lsock.close()


def pbx_request(px, call_id):
    """One OPTIONS from the PBX through the outbound listener; returns the final response."""
    host, port = h.split_addr(px.addr("pbx"))
    with socket.create_connection((host, port), timeout=h.t(10)) as s:
        s.settimeout(h.t(10))
        via = f"SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{call_id}"
        s.sendall(request("OPTIONS", "sip:carrier@example.net", call_id, 1, via, frm="pbx"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError(buf)
            buf += chunk
        return Msg(buf[:buf.index(b"\r\n\r\n") + 4])


class OptionsKeepaliveTest(h.TestCase):

    def setUp(self):
        self.a = Provider()
        self.b = Provider()

    def tearDown(self):
        self.a.close()
        self.b.close()
        super().tearDown()

    def test_options_up_down(self):
        a, b = self.a, self.b
        cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                             "connect": f"{a.addr}, {b.addr}",
                                             "options_interval_s": "1",
                                             "options_failures": "2"}})
        with h.Proxy(cfg) as px:
            # OPTIONS arrive every second at both targets, over one connection each.
            h.wait_for(lambda: len(a.probes()) >= 2 and len(b.probes()) >= 2, h.t(15),
                       "two OPTIONS at each target")
            m = a.probes()[0]
            self.assertEqual(m.start, f"OPTIONS sip:{a.addr};transport=tls SIP/2.0")
            via = m.all("Via")
            self.assertEqual(len(via), 1, m)
            self.assertTrue(via[0].startswith(f"SIP/2.0/TLS {FQDN}:"), via)
            self.assertIn(";branch=z9hG4bK", via[0])
            self.assertEqual(m.get("Max-Forwards"), "70")
            self.assertEqual(m.get("Content-Length"), "0")
            self.assertIn(FQDN, m.get("From"))
            self.assertIn(";tag=", m.get("From"))
            self.assertEqual(m.get("To"), f"<sip:{a.addr}>")
            self.assertRegex(m.get("CSeq"), r"^\d+ OPTIONS$")
            self.assertNotEqual(a.probes()[0].get("CSeq"), a.probes()[1].get("CSeq"))
            for t in (a, b):
                px.wait_metric("tlsgate_sip_target_up", lambda v: v == 1, timeout=h.t(10),
                               listener="pbx", target=t.addr)
            self.assertEqual(pbx_request(px, "call-1").code, 200)
            self.assertEqual(len(a.calls("call-1")), 1)
            self.assertEqual(b.calls("call-1"), [])

            # The first target stops answering: down, and new connections go to the second.
            a.answer = False
            px.wait_metric("tlsgate_sip_target_up", lambda v: v == 0, timeout=h.t(15),
                           listener="pbx", target=a.addr)
            px.wait_log("sip_target_down", f"target={a.addr}", timeout=h.t(5))
            self.assertEqual(px.metric("tlsgate_sip_target_up", listener="pbx", target=b.addr), 1)
            self.assertEqual(pbx_request(px, "call-2").code, 200)
            self.assertEqual(a.calls("call-2"), [])
            self.assertEqual(len(b.calls("call-2")), 1)

            # It answers again: up after one success, and preferred again.
            a.answer = True
            px.wait_metric("tlsgate_sip_target_up", lambda v: v == 1, timeout=h.t(15),
                           listener="pbx", target=a.addr)
            px.wait_log("sip_target_up", f"target={a.addr}", timeout=h.t(5))
            self.assertEqual(pbx_request(px, "call-3").code, 200)
            self.assertEqual(len(a.calls("call-3")), 1)

    def test_target_closed(self):
        a, b = self.a, self.b
        cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                             "connect": f"{a.addr}, {b.addr}",
                                             "options_interval_s": "1"}})
        with h.Proxy(cfg) as px:
            h.wait_for(lambda: len(a.probes()) >= 1, h.t(15), "OPTIONS at the first target")
            a.close()  # no more connections: refused connects count as failures
            px.wait_metric("tlsgate_sip_target_up", lambda v: v == 0, timeout=h.t(20),
                           listener="pbx", target=a.addr)
            self.assertEqual(pbx_request(px, "call-4").code, 200)
            self.assertEqual(len(b.calls("call-4")), 1)

    def test_options_off(self):
        cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                             "connect": self.a.addr,
                                             "options_interval_s": "0"}})
        with h.Proxy(cfg) as px:
            self.assertEqual(pbx_request(px, "call-5").code, 200)
            self.assertEqual(self.a.probes(), [])
            self.assertEqual([k for k in px.metrics() if k[0] == "tlsgate_sip_target_up"], [])


class KeepalivePingTest(h.TestCase):

    def test_ping_on_idle_provider_side(self):
        prov = Provider()
        try:
            cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "connect": prov.addr,
                                                 "options_interval_s": "0",
                                                 "keepalive_interval_ms": "500"}})
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                with socket.create_connection((host, port), timeout=h.t(10)) as s:
                    h.wait_for(lambda: prov.pings >= 2, h.t(15), "two CRLFCRLF pings")
                    # The connection is still good after the pings and their pongs.
                    s.settimeout(h.t(10))
                    via = "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-ka"
                    s.sendall(request("OPTIONS", "sip:carrier@example.net", "ka-1", 1, via,
                                      frm="pbx"))
                    self.assertTrue(s.recv(65536).startswith(b"SIP/2.0 200"))
        finally:
            prov.close()

    def test_ping_off(self):
        prov = Provider()
        try:
            cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "connect": prov.addr,
                                                 "options_interval_s": "0",
                                                 "keepalive_interval_ms": "0"}})
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                with socket.create_connection((host, port), timeout=h.t(10)) as s:
                    s.settimeout(h.t(10))
                    via = "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-ka0"
                    s.sendall(request("OPTIONS", "sip:carrier@example.net", "ka-0", 1, via,
                                      frm="pbx"))
                    self.assertTrue(s.recv(65536).startswith(b"SIP/2.0 200"))
                    time.sleep(1.5)
                    self.assertEqual(prov.pings, 0)
        finally:
            prov.close()


class MaxMessageTest(h.TestCase):
    """sip_max_message: a body over the configured bound gets 513 and is skipped; the stream goes
    on, and a message under the default but over the bound is what shows the key is used."""

    def test_sip_max_message(self):
        uas = Uas()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": uas.addr,
                                                     "sip_max_message": "4096"}})
            with h.Proxy(cfg) as px:
                st = provider_tls(px.addr("provider"))
                via = "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-mm"
                st.send(request("MESSAGE", "sip:pbx@example.net", "mm-big", 1, via,
                                body=b"x" * 8000))
                r, _ = read_response(st, 513)
                self.assertEqual(r.get("Call-ID"), "mm-big")
                st.send(request("MESSAGE", "sip:pbx@example.net", "mm-ok", 1,
                                via + "2", body=b"y" * 1000))
                r, _ = read_response(st, 200)
                self.assertEqual(r.get("Call-ID"), "mm-ok")
                self.assertEqual(px.metric("tlsgate_sip_errors_total", listener="provider",
                                           reason="body_too_large"), 1)
        finally:
            uas.close()


if __name__ == "__main__":
    h.main()
