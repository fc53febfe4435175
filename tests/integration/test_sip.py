#!/usr/bin/env python3
"""mode = sip: tlsgate as a SIP proxy between a provider (mutual TLS) and a PBX (plain TCP).

The provider is played by Python TLS endpoints with certificates from the test PKI, the PBX by a
small Python TCP UAS (to look at every header it receives) and by SIPp (Debian sip-tester) as
UAS and as UAC for interop. Everything runs on 127.0.0.1 with bounded waits."""

import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from sipmsg import Msg, Stream  # noqa: E402,F401

SIPP = shutil.which("sipp")
UAS_XML = str(h.REPO / "tests" / "integration" / "sip" / "uas.xml")
PEER = "sip.um.example.net"
FQDN = "sbc.tlsgate.test"
SDP = (b"v=0\r\no=prov 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
IP_RE = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")


def request(method, uri, call_id, cseq, via, extra=(), body=b"", to_tag=None, frm="provider"):
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             f"From: <sip:{frm}@example.net>;tag=from-{call_id}",
             f"To: <sip:pbx@example.net>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    lines += list(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_to(req, code, reason, contact=None, to_tag="pbx-tag", body=b""):
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.all("Via")]
    lines += [f"Record-Route: {v}" for v in req.all("Record-Route")]
    lines.append(f"From: {req.get('From')}")
    to = req.get("To")
    if code > 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"To: {to}", f"Call-ID: {req.get('Call-ID')}", f"CSeq: {req.get('CSeq')}"]
    if contact:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Uas:
    """A SIP UAS on a listening socket (plain TCP, or TLS with |ctx|): INVITE gets 100, 180 and
    200 (SDP), BYE/OPTIONS/others 200, ACK nothing. Every request and the peer address of the
    connection it came on are kept in |seen|."""

    def __init__(self, ctx=None, contact_host="127.0.0.1"):
        self.ctx = ctx
        self.contact_host = contact_host
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.seen = []  # (peer (host, port), Msg)
        self.streams = []
        self.cond = threading.Condition()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        h.accept_loop(self.lsock, lambda: self.stop, self._serve)

    def _serve(self, s, peer):
        try:
            if self.ctx is not None:
                s = self.ctx.wrap_socket(s, server_side=True)
            s.settimeout(h.t(30))
            st = Stream(s)
            with self.cond:
                self.streams.append(st)
            while not self.stop:
                m = st.read()
                with self.cond:
                    self.seen.append((peer, m))
                    self.cond.notify_all()
                if not m.is_request or m.method == "ACK":
                    continue
                transport = "tls" if self.ctx is not None else "tcp"
                contact = (f"<sip:pbx@{self.contact_host}:{self.port};"
                           f"transport={transport}>")
                if m.method == "INVITE":
                    st.send(response_to(m, 100, "Trying"))
                    st.send(response_to(m, 180, "Ringing", contact))
                    st.send(response_to(m, 200, "OK", contact, body=SDP))
                else:
                    st.send(response_to(m, 200, "OK", contact))
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    def wait(self, method, count=1, timeout=15):
        def have():
            with self.cond:
                got = [(p, m) for p, m in self.seen if m.method == method]
            return got if len(got) >= count else None
        return h.wait_for(have, timeout, f"{count} {method} at the UAS")

    def close(self):
        self.stop = True
        self.lsock.close()


def sip_config(**listeners):
    cfg = h.base_config()
    for name, keys in listeners.items():
        cfg[name] = dict(keys, mode="sip")
    return cfg


def provider_tls(addr, timeout=15):
    s = h.tls_connect(addr, timeout=timeout)
    return Stream(s)


def read_response(st, code):
    """Read responses until one with |code| (provisional ones before it are returned too)."""
    got = []
    while True:
        m = st.read()
        got.append(m)
        if not m.is_request and m.code == code:
            return m, got


# ---------------------------------------------------------------------------------------------

class InboundCallTest(h.TestCase):
    """(1) provider -> PBX through inbound: INVITE/100/180/200/ACK/BYE/200, headers checked at
    both ends."""

    def test_call_headers(self):
        uas = Uas()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": uas.addr}})
            with h.Proxy(cfg) as px:
                st = provider_tls(px.addr("provider"))
                via = "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-inv1"
                inv = request("INVITE", "sip:+15551230000@sbc.tlsgate.test", "call-1", 1, via,
                              ["Contact: <sip:carrier@192.0.2.10:5061;transport=tls>",
                               "X-TLS-Peer-Forged: evil", "X-TLS-Peer-Name: forged.example"],
                              SDP)
                st.send(inv)
                ok, got = read_response(st, 200)
                codes = [m.code for m in got]
                self.assertEqual(codes, [100, 180, 200], got)
                # At the PBX.
                (peer, pinv), = uas.wait("INVITE")
                top = pinv.all("Via")[0]
                self.assertTrue(top.startswith(f"SIP/2.0/TCP {peer[0]}:{peer[1]};branch=z9hG4bK"),
                                f"top Via {top!r}, connection from {peer}")
                self.assertEqual(pinv.all("Via")[1], via)
                rr = pinv.all("Record-Route")
                self.assertTrue(rr and f"{peer[0]}:{peer[1]}" in rr[0], pinv)
                self.assertEqual(pinv.all("X-TLS-Peer-Name"), [PEER], pinv)
                self.assertEqual(pinv.all("X-TLS-Peer-Forged"), [], pinv)
                self.assertEqual(pinv.body, SDP)
                self.assertEqual(pinv.get("Max-Forwards"), "69")
                pc = pinv.get("Contact")
                self.assertIn(f"{peer[0]}:{peer[1]}", pc, "provider Contact -> our inside address")
                # At the provider: our Via popped, Contact carries the FQDN with TLS, no IP.
                for m in got:
                    self.assertEqual(m.all("Via"), [via], m)
                contact = ok.get("Contact")
                self.assertIn(FQDN, contact)
                self.assertIn("transport=tls", contact)
                self.assertIsNone(IP_RE.search(contact), contact)
                for v in ok.all("Record-Route"):
                    self.assertIsNone(IP_RE.search(v), v)
                self.assertEqual(ok.body, SDP)
                # ACK and BYE in the dialog: to the Contact, through the Record-Route.
                uri = re.search(r"<([^>]+)>", contact).group(1)
                route = [f"Route: {v}" for v in ok.all("Record-Route")]
                tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
                st.send(request("ACK", uri, "call-1", 1,
                                "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-ack1", route,
                                to_tag=tag))
                (_, pack), = uas.wait("ACK")
                self.assertEqual(pack.uri, f"sip:pbx@127.0.0.1:{uas.port};transport=tcp", pack)
                st.send(request("BYE", uri, "call-1", 2,
                                "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-bye1", route,
                                to_tag=tag))
                bye_ok, _ = read_response(st, 200)
                self.assertIn("BYE", bye_ok.get("CSeq"))
                self.assertEqual(bye_ok.all("Via"),
                                 ["SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-bye1"])
                st.sock.close()
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener="provider",
                                           method="INVITE"), 1)
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener="provider",
                                           method="BYE"), 1)
                self.assertEqual(px.metric("tlsgate_sip_responses_total", listener="provider",
                                           **{"class": "2xx"}), 2)
                self.assertEqual(px.metric("tlsgate_sip_responses_total", listener="provider",
                                           **{"class": "1xx"}), 2)
        finally:
            uas.close()

    def test_pbx_request_back_to_provider(self):
        """A request from the PBX on the same pair goes to the provider with our FQDN."""
        uas = Uas()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": uas.addr}})
            with h.Proxy(cfg) as px:
                st = provider_tls(px.addr("provider"))
                st.send(request("OPTIONS", "sip:pbx@example.net", "opt-1", 1,
                                "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-o1"))
                read_response(st, 200)
                uas.wait("OPTIONS")
                # The PBX sends a request back on the same connection pair.
                pbx_via = "SIP/2.0/TCP 10.1.1.5:5060;branch=z9hG4bK-pbx-1"
                uas.streams[0].send(request("INFO", "sip:carrier@192.0.2.10:5061", "pbx-1", 1,
                                            pbx_via, ["Contact: <sip:pbx@10.1.1.5:5060>",
                                                      "X-TLS-Peer-Name: forged"], frm="pbx"))
                req = st.read()
                self.assertEqual(req.method, "INFO", req)
                vias = req.all("Via")
                self.assertTrue(vias[0].startswith(f"SIP/2.0/TLS {FQDN}:"), req)
                self.assertEqual(vias[1], pbx_via)
                self.assertEqual(req.all("X-TLS-Peer-Name"), [], req)
                contact = req.get("Contact")
                self.assertIn(FQDN, contact)
                self.assertIn("transport=tls", contact)
                self.assertIsNone(IP_RE.search(contact), contact)
                st.send(response_to(req, 200, "OK"))

                def answered():
                    return [m for _, m in uas.seen if not m.is_request and m.code == 200]
                (resp,) = h.wait_for(answered, 10, "the 200 back at the PBX")
                self.assertEqual(resp.all("Via"), [pbx_via], resp)
                st.sock.close()
        finally:
            uas.close()


class PipelineTest(h.TestCase):
    """Backpressure: 1 MiB of pipelined requests with bodies in one go (far more than a queue
    holds) all reach the PBX in order, and every response comes back."""

    def test_pipelined_messages(self):
        uas = Uas()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": uas.addr}})
            cfg["global"]["buffer_size"] = 16384
            with h.Proxy(cfg) as px:
                st = provider_tls(px.addr("provider"))
                n = 500
                body = b"b" * 2000
                data = b"".join(request("MESSAGE", "sip:pbx@example.net", f"pipe-{i}", 1,
                                        f"SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-p{i}",
                                        body=body) for i in range(n))
                # One thread, non-blocking: write while reading what comes back.
                sock = st.sock
                sock.setblocking(False)
                sent, received = 0, b""
                deadline = time.monotonic() + h.t(60)
                while received.count(b"SIP/2.0 200 ") < n:
                    self.assertLess(time.monotonic(), deadline, f"{sent} sent, {received[-300:]}")
                    select.select([sock], [sock] if sent < len(data) else [], [], 0.2)
                    if sent < len(data):
                        try:
                            sent += sock.send(data[sent:sent + 16384])
                        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                            pass
                    try:
                        chunk = sock.recv(65536)
                        self.assertTrue(chunk, "EOF")
                        received += chunk
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                sock.setblocking(True)
                st.buf = received
                ids = [read_response(st, 200)[0].get("Call-ID") for _ in range(n)]
                self.assertEqual(ids, [f"pipe-{i}" for i in range(n)])
                got = [m.get("Call-ID") for _, m in uas.seen if m.method == "MESSAGE"]
                self.assertEqual(got, [f"pipe-{i}" for i in range(n)])
                self.assertTrue(all(m.body == body for _, m in uas.seen))
                st.sock.close()
        finally:
            uas.close()


class PingOptionsTest(h.TestCase):
    """(3) CRLFCRLF answered with CRLF on both sides; (4) OPTIONS to the SBC answered 200 by
    tlsgate itself."""

    def test_ping_and_options(self):
        uas = Uas()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": uas.addr}})
            with h.Proxy(cfg) as px:
                st = provider_tls(px.addr("provider"))
                st.send(b"\r\n\r\n")
                self.assertEqual(st.read_raw(2), b"\r\n")
                st.send(b"\r\n")  # a pong is ignored
                st.send(request("OPTIONS", f"sip:{FQDN}", "opt-us", 1,
                                "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-ous"))
                ok, _ = read_response(st, 200)
                self.assertIn("INVITE", ok.get("Allow") or "", ok)
                self.assertEqual(ok.all("Via"),
                                 ["SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-ous"])
                st.send(b"\r\n\r\n")
                self.assertEqual(st.read_raw(2), b"\r\n")
                # Only requests not addressed to us reach the PBX.
                self.assertEqual([m for _, m in uas.seen if m.method == "OPTIONS"], [])
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener="provider",
                                           method="OPTIONS"), 1)
        finally:
            uas.close()

    def test_ping_from_pbx(self):
        prov = Uas(ctx=provider_server_context())
        try:
            cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "connect": prov.addr}})
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                with socket.create_connection((host, port), timeout=h.t(10)) as s:
                    s.settimeout(h.t(10))
                    s.sendall(b"\r\n\r\n")
                    self.assertEqual(s.recv(2), b"\r\n")
        finally:
            prov.close()


def provider_server_context():
    p = h.pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(p.cert("provider"), p.key("provider"))
    ctx.load_verify_locations(p.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class MalformedTest(h.TestCase):
    """(5) Malformed requests get their answer; the stream goes on where it can, and another
    connection is never affected. Parse errors are counted by reason."""

    def setUp(self):
        self.uas = Uas()

    def tearDown(self):
        self.uas.close()
        super().tearDown()

    def options(self, st, n):
        via = f"SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-ok{n}"
        st.send(request("OPTIONS", "sip:pbx@example.net", f"ok-{n}", 1, via))
        ok, _ = read_response(st, 200)
        self.assertEqual(ok.get("Call-ID"), f"ok-{n}")

    def test_malformed(self):
        cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "forward": self.uas.addr}})
        with h.Proxy(cfg) as px:
            addr = px.addr("provider")
            other = provider_tls(addr)
            self.options(other, 0)
            st = provider_tls(addr)
            # A header line over 8 KiB: 513, the stream goes on.
            st.send(request("OPTIONS", "sip:pbx@example.net", "long-hdr", 1,
                            "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-lh",
                            ["X-Long: " + "a" * 9000]))
            r, _ = read_response(st, 513)
            self.assertEqual(r.get("Call-ID"), "long-hdr")
            self.options(st, 1)
            # A body over 64 KiB: 513 Message Too Large, the body is skipped, the stream goes on.
            big = b"x" * (70 * 1024)
            raw = request("MESSAGE", "sip:pbx@example.net", "big-body", 1,
                          "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-bb", body=big)
            st.send(raw)
            r, _ = read_response(st, 513)
            self.assertEqual(r.get("Call-ID"), "big-body")
            self.options(st, 2)
            # A NUL byte in the head: 400, the stream goes on.
            raw = request("OPTIONS", "sip:pbx@example.net", "nul", 1,
                          "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-nul",
                          ["Subject: a\x00b"])
            st.send(raw)
            r, _ = read_response(st, 400)
            self.assertEqual(r.get("Call-ID"), "nul")
            self.options(st, 3)
            # Max-Forwards 0: 483 from tlsgate.
            raw = request("OPTIONS", "sip:pbx@example.net", "hops", 1,
                          "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-mf0")
            st.send(raw.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
            r, _ = read_response(st, 483)
            self.assertEqual(r.get("Call-ID"), "hops")
            self.options(st, 4)
            # A response that names no flow of ours: dropped and counted, nothing breaks.
            st.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 192.0.2.99;branch=z9hG4bK-x\r\n"
                    b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: stray\r\n"
                    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            self.options(st, 5)
            # Missing Content-Length: 400, then the stream cannot be resynchronised: closed.
            st.send(b"OPTIONS sip:pbx@example.net SIP/2.0\r\n"
                    b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-ncl\r\n"
                    b"From: <sip:a@example.net>;tag=1\r\nTo: <sip:b@example.net>\r\n"
                    b"Call-ID: no-cl\r\nCSeq: 1 OPTIONS\r\n\r\n")
            r, _ = read_response(st, 400)
            self.assertEqual(r.get("Call-ID"), "no-cl")
            data, how, _ = h.tls_wait_close(st.sock, 10)
            self.assertEqual(how, "close_notify")
            # A body shorter than declared, then garbage: the declared length is taken as the
            # body, what follows is no SIP message: the connection is closed.
            st2 = provider_tls(addr)
            raw = request("MESSAGE", "sip:pbx@example.net", "short", 1,
                          "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-prov-short", body=b"x" * 40)
            st2.send(raw[:-30] + b"GARBAGE " * 8 + b"\r\nNOT SIP AT ALL\r\n\r\n")
            data, how, _ = h.tls_wait_close(st2.sock, 10)
            self.assertIn(how, ("close_notify", "eof", "reset"))
            # The other connection never noticed.
            self.options(other, 6)
            other.sock.close()

            def err(reason):
                return px.metric("tlsgate_sip_errors_total", listener="provider", reason=reason)
            self.assertEqual(err("line_too_long"), 1)
            self.assertEqual(err("body_too_large"), 1)
            self.assertEqual(err("nul"), 1)
            self.assertEqual(err("too_many_hops"), 1)
            self.assertEqual(err("no_content_length"), 1)
            self.assertEqual(err("start_line"), 1)
            self.assertGreaterEqual(err("not_ours") + err("no_via") + err("last_via"), 1)
            # Only the good requests reached the PBX.
            ids = sorted(m.get("Call-ID") for _, m in self.uas.seen)
            self.assertEqual(ids, sorted([f"ok-{i}" for i in range(7)] + ["short"]), ids)


class OutboundCallTest(h.TestCase):
    """(2) PBX -> provider through outbound: SIPp as the UAC, a Python TLS UAS as the provider;
    the headers the provider sees are checked."""

    def setUp(self):
        if SIPP is None:
            self.skipTest("sipp not installed (apt-get install sip-tester)")

    def test_sipp_uac(self):
        prov = Uas(ctx=provider_server_context(), contact_host="192.0.2.20")
        try:
            cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "connect": prov.addr}})
            with h.Proxy(cfg) as px:
                out = px.addr("pbx")
                host, port = h.split_addr(out)
                r = h.run([SIPP, "-sn", "uac", "-t", "tn", "-m", "1", "-s", "alice",
                           "-i", "127.0.0.1", "-p", str(h.free_port()), "-nostdin",
                           "-timeout", str(int(h.t(30))), "-timeout_error",
                           "-max_socket", "64", f"{host}:{port}"], timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
                (_, inv), = prov.wait("INVITE")
                top = inv.all("Via")[0]
                self.assertTrue(top.startswith(f"SIP/2.0/TLS {FQDN}:"), top)
                contact = inv.get("Contact")
                self.assertIn(FQDN, contact)
                self.assertIn("transport=tls", contact)
                for v in inv.all("Contact") + inv.all("Record-Route"):
                    self.assertNotIn("127.0.0.1", v)
                rr = inv.all("Record-Route")
                self.assertTrue(rr and FQDN in rr[0] and "transport=tls" in rr[0], inv)
                self.assertEqual(inv.all("X-TLS-Peer-Name"), [])
                prov.wait("ACK")
                prov.wait("BYE")
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener="pbx",
                                           method="INVITE"), 1)
        finally:
            prov.close()


class LoopTest(h.TestCase):
    """PBX -> PBX through tlsgate's own outbound feeding its own inbound (one config): SIPp UAC
    to SIPp UAS, each on plain TCP, mutual TLS in the middle. The call completes."""

    def setUp(self):
        if SIPP is None:
            self.skipTest("sipp not installed (apt-get install sip-tester)")

    def test_outbound_into_inbound(self):
        sport = h.free_port()
        uas = h.popen([SIPP, "-sf", UAS_XML, "-t", "t1", "-i", "127.0.0.1", "-p", str(sport),
                       "-m", "1", "-nostdin", "-max_socket", "64", "-timeout",
                       str(int(h.t(30))), "-timeout_error"],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        h.wait_for(lambda: not h.connect_refused(f"127.0.0.1:{sport}"), 10, "sipp to listen")
        # Each side presents sbc.tlsgate.test to the other: accept that name both ways.
        cfg = h.base_config(peer_names=FQDN)
        cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}",
                                   "forward": f"127.0.0.1:{sport}", "mode": "sip"}
        # The outbound listener needs the inbound port: pick it now.
        in_port = h.free_port()
        cfg["inbound provider"]["listen"] = f"127.0.0.1:{in_port}"
        cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}",
                               "connect": f"127.0.0.1:{in_port}", "mode": "sip",
                               # Our OPTIONS to the inbound side would reach the SIPp UAS.
                               "options_interval_s": "0"}
        with h.Proxy(cfg) as px:
            host, port = h.split_addr(px.addr("pbx"))
            r = h.run([SIPP, "-sn", "uac", "-t", "tn", "-m", "1", "-s", "bob",
                       "-i", "127.0.0.1", "-p", str(h.free_port()), "-nostdin",
                       "-max_socket", "64", "-timeout", str(int(h.t(30))), "-timeout_error",
                       f"{host}:{port}"], timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
            rc, out, _ = h.finish(uas, 30)
            self.assertEqual(rc, 0, out[-3000:])
            for listener in ("pbx", "provider"):
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener=listener,
                                           method="INVITE"), 1, listener)
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener=listener,
                                           method="BYE"), 1, listener)


class SippUasTest(h.TestCase):
    """Interop: the provider's call through inbound to SIPp's built-in UAS over TCP."""

    def setUp(self):
        if SIPP is None:
            self.skipTest("sipp not installed (apt-get install sip-tester)")

    def test_sipp_uas(self):
        sport = h.free_port()
        err = h.tmpfile("sipp-uas-", ".err")
        uas = h.popen([SIPP, "-sf", UAS_XML, "-t", "t1", "-i", "127.0.0.1", "-p", str(sport),
                       "-m", "1", "-nostdin", "-max_socket", "64", "-timeout",
                       str(int(h.t(30))), "-timeout_error",
                       "-trace_err", "-error_file", err],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        h.wait_for(lambda: not h.connect_refused(f"127.0.0.1:{sport}"), 10, "sipp to listen")
        cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "forward": f"127.0.0.1:{sport}"}})
        with h.Proxy(cfg) as px:
            st = provider_tls(px.addr("provider"))
            via = "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-sipp-inv"
            st.send(request("INVITE", f"sip:service@{FQDN}", "sipp-call", 1, via,
                            ["Contact: <sip:carrier@192.0.2.10:5061;transport=tls>"], SDP))
            ok, got = read_response(st, 200)
            self.assertIn(180, [m.code for m in got])
            for m in got:
                self.assertEqual(m.all("Via"), [via], m)
            contact = ok.get("Contact")
            self.assertIn(FQDN, contact)
            self.assertIsNone(IP_RE.search(contact), contact)
            uri = re.search(r"<([^>]+)>", contact).group(1)
            route = [f"Route: {v}" for v in ok.all("Record-Route")]
            tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            st.send(request("ACK", uri, "sipp-call", 1,
                            "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-sipp-ack", route,
                            to_tag=tag))
            st.send(request("BYE", uri, "sipp-call", 2,
                            "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-sipp-bye", route,
                            to_tag=tag))
            bye_ok, _ = read_response(st, 200)
            self.assertIn("BYE", bye_ok.get("CSeq"))
            rc, out, _ = h.finish(uas, 30)
            self.assertEqual(rc, 0, out[-3000:] + (err.read_text() if err.exists() else ""))
            st.sock.close()


if __name__ == "__main__":
    h.main()
