#!/usr/bin/env python3
"""mode = sip against request smuggling and Contact forgery.

A provider (Python TLS client) sends INVITEs whose Content-Length a weak parser frames
differently from tlsgate (folded onto a second line with SP or HTAB, the compact form folded,
a space before the colon), each with a whole OPTIONS carrying a forged X-TLS-Peer-Name as its
body, and a fold that hides a forged X-TLS-Peer-Name inside another header. The PBX behind the
inbound listener is a Python PBX that frames as naively as a weak parser does (the first line
starting with Content-Length or l, digits on that line only), and SIPp. Each must see exactly
the requests tlsgate saw, with one correct Content-Length and only the verified identity.
Control characters and duplicate Max-Forwards are answered 400 to the provider.

Outbound: the PBX's Contact reaches the provider with its address sealed in tg-orig (nothing
of it readable, as text or base64), comes back restored exactly, and a tg-orig the provider
made up or altered is answered 400 and reaches nobody. Everything on 127.0.0.1, bounded waits.
"""

import base64
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

SIPP = shutil.which("sipp")
PEER = "sip.um.example.net"  # the name tlsgate verified in the provider's certificate
FQDN = "sbc.tlsgate.test"
PBX_CONTACT = "sip:pbxuser@10.20.30.40:5060;transport=tcp"
PBX_ADDR = "10.20.30.40"

SMUGGLED = (b"OPTIONS sip:pbx@10.20.30.40 SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 6.6.6.6:5060;branch=z9hG4bK-smuggled\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:evil@6.6.6.6>;tag=evil\r\n"
            b"To: <sip:pbx@10.20.30.40>\r\nCall-ID: smuggled\r\nCSeq: 1 OPTIONS\r\n"
            b"X-TLS-Peer-Name: evil.example\r\nContent-Length: 0\r\n\r\n")

# The tester's four shapes: (name, Content-Length header as sent).
SHAPES = [
    ("fold-sp", b"Content-Length:\r\n %d"),
    ("fold-tab", b"Content-Length:\r\n\t%d"),
    ("compact-fold", b"l:\r\n %d"),
    ("space-colon", b"Content-Length : %d"),
]


def naive_frame(buf):
    """How a weak parser frames: the head ends at the first CRLFCRLF; the body is as long as
    the first line that starts with Content-Length or l (any case) says, reading digits on
    that line only (0 without one). Returns the message length, or None for more bytes."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    cl = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        low = line.lower()
        if low.startswith(b"content-length:") or low.startswith(b"l:"):
            m = re.match(rb"[ ]*(\d*)", line.split(b":", 1)[1])
            cl = int(m.group(1) or b"0")
            break
    need = end + 4 + cl
    return need if len(buf) >= need else None


def header_lines(raw, name):
    """Values of the header lines that *start* with |name| (what a line parser sees)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out = []
    for line in head.split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name.lower():
            out.append(v.strip())
    return out


class NaivePbx:
    """A PBX with a weak parser on a plain TCP socket. Every message it frames is kept in
    |seen|; requests but ACK are answered 200 with their Via/From/To/Call-ID/CSeq lines."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.seen = []
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        h.accept_loop(self.lsock, lambda: self.stop, lambda s, peer: self._serve(s))

    def _serve(self, s):
        buf = b""
        s.settimeout(0.2)
        try:
            while not self.stop:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                buf += chunk
                while True:
                    while buf.startswith(b"\r\n"):
                        buf = buf[2:]
                    n = naive_frame(buf)
                    if n is None:
                        break
                    raw, buf = buf[:n], buf[n:]
                    with self.lock:
                        self.seen.append(raw)
                    if not raw.startswith(b"SIP/2.0 ") and not raw.startswith(b"ACK "):
                        s.sendall(self._ok(raw))
        except OSError:
            pass
        finally:
            s.close()

    @staticmethod
    def _ok(raw):
        lines = [b"SIP/2.0 200 OK"]
        for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"):
                lines.append(line)
        return b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"

    def requests(self):
        with self.lock:
            return [m for m in self.seen if not m.startswith(b"SIP/2.0 ")]

    def close(self):
        self.stop = True
        self.lsock.close()


class Stream:
    """Strict SIP framing (every Content-Length form) over a socket, for the test's own ends."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read(self):
        while True:
            while self.buf.startswith(b"\r\n"):
                self.buf = self.buf[2:]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = re.sub(rb"\r\n[ \t]+", b" ", self.buf[:end])
                m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
                need = end + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) >= need:
                    raw, self.buf = self.buf[:need], self.buf[need:]
                    return raw
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"EOF with {self.buf!r} buffered")
            self.buf += chunk

    def read_status(self, code):
        """Reads until a response with |code|; returns it."""
        while True:
            raw = self.read()
            if raw.startswith(b"SIP/2.0 %d " % code):
                return raw

    def send(self, data):
        self.sock.sendall(data)


def request(method, uri, call_id, via, extra=b"", body=b"", cl=None, cseq=1):
    """A request; |cl| replaces the Content-Length line (a bytes template with %d)."""
    head = (b"%s %s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\n"
            b"From: <sip:carrier@example.net>;tag=f-%s\r\nTo: <sip:pbx@example.net>\r\n"
            b"Call-ID: %s\r\nCSeq: %d %s\r\n" % (method, uri, via, call_id, call_id, cseq, method))
    head += extra
    head += (cl if cl is not None else b"Content-Length: %d") % len(body) + b"\r\n\r\n"
    return head + body


def sip_config(**listeners):
    cfg = h.base_config()
    for name, keys in listeners.items():
        cfg[name] = dict(keys, mode="sip")
    return cfg


def via(tag):
    return b"SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-" + tag


class InboundSmugglingTest(h.TestCase):
    """The four shapes and a folded X-TLS-Peer-Name, through an inbound listener to a PBX
    that frames naively: one request each, one Content-Length, only the verified name."""

    def test_naive_pbx_sees_what_tlsgate_saw(self):
        pbx = NaivePbx()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": pbx.addr}})
            with h.Proxy(cfg) as px:
                st = Stream(h.tls_connect(px.addr("provider")))
                st.sock.settimeout(h.t(15))
                sent = []
                for name, cl in SHAPES:
                    cid = b"smug-" + name.encode()
                    st.send(request(b"INVITE", b"sip:+15551230000@" + FQDN.encode(), cid,
                                    via(cid), b"Content-Type: text/plain\r\n", SMUGGLED, cl))
                    sent.append(cid)
                cid = b"fold-peer"
                st.send(request(b"MESSAGE", b"sip:pbx@example.net", cid, via(cid),
                                b"X-Foo: a\r\n X-TLS-Peer-Name: evil.example\r\n"
                                b"Content-Type: text/plain\r\n", b"hello", None))
                sent.append(cid)
                oks = [st.read_status(200) for _ in sent]
                self.assertEqual([header_lines(r, "Call-ID")[0].encode() for r in oks], sent)
                time.sleep(h.t(0.5))  # anything smuggled would have arrived by now
                reqs = pbx.requests()
                self.assertEqual([header_lines(r, "Call-ID") for r in reqs],
                                 [[c.decode()] for c in sent], reqs)
                for raw in reqs:
                    head, body = raw.split(b"\r\n\r\n", 1)
                    self.assertEqual(header_lines(raw, "Content-Length"), [str(len(body))], raw)
                    self.assertEqual(header_lines(raw, "l"), [], raw)
                    self.assertEqual(header_lines(raw, "X-TLS-Peer-Name"), [PEER], raw)
                    self.assertNotIn(b"\r\n ", head)
                    self.assertNotIn(b"\r\n\t", head)
                    if raw.startswith(b"INVITE "):
                        self.assertEqual(body, SMUGGLED)
                    else:
                        self.assertEqual(body, b"hello")
                        self.assertEqual(header_lines(raw, "X-Foo"),
                                         ["a X-TLS-Peer-Name: evil.example"], raw)
                self.assertFalse([r for r in reqs if b"Call-ID: smuggled" in r.split(
                    b"\r\n\r\n", 1)[0]])
                st.sock.close()
                self.assertEqual(px.metric("tlsgate_sip_requests_total", listener="provider",
                                           method="INVITE"), len(SHAPES))
        finally:
            pbx.close()

    def test_control_bytes_and_duplicates_answered_400(self):
        pbx = NaivePbx()
        try:
            cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                     "forward": pbx.addr}})
            with h.Proxy(cfg) as px:
                st = Stream(h.tls_connect(px.addr("provider")))
                st.sock.settimeout(h.t(15))
                cases = [(b"vt", b"Subject: a\x0b b\r\n", "ctl"),
                         (b"esc", b"X-Note: \x1b[2J\r\n", "ctl"),
                         (b"del", b"X-Note: a\x7f\r\n", "ctl")]
                for cid, extra, _ in cases:
                    st.send(request(b"INFO", b"sip:pbx@example.net", cid, via(cid), extra))
                    r = st.read_status(400)
                    self.assertEqual(header_lines(r, "Call-ID"), [cid.decode()])
                # Two Max-Forwards (0 and 70): malformed, 400.
                raw = request(b"INFO", b"sip:pbx@example.net", b"mf2", via(b"mf2"))
                st.send(raw.replace(b"Max-Forwards: 70\r\n",
                                    b"Max-Forwards: 0\r\nMax-Forwards: 70\r\n"))
                r = st.read_status(400)
                self.assertEqual(header_lines(r, "Call-ID"), ["mf2"])
                # The stream goes on; nothing refused reached the PBX.
                st.send(request(b"INFO", b"sip:pbx@example.net", b"good", via(b"good")))
                st.read_status(200)
                self.assertEqual([header_lines(r, "Call-ID") for r in pbx.requests()],
                                 [["good"]])
                st.sock.close()

                def err(reason):
                    return px.metric("tlsgate_sip_errors_total", listener="provider",
                                     reason=reason)
                self.assertEqual(err("ctl"), 3)
                self.assertEqual(err("duplicate_header"), 1)
        finally:
            pbx.close()


SIPP_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- A PBX: each INVITE answered 200, then ACK and BYE; any other request (a smuggled OPTIONS)
     is unexpected and fails the run. -->
<scenario name="smuggling PBX">
  <recv request="INVITE" crlf="true"></recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]T[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" crlf="true"></recv>
  <recv request="BYE"></recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


class SippPbxSmugglingTest(h.TestCase):
    """SIPp as the PBX (server mode over TCP): the four shapes arrive as four calls and nothing
    else; SIPp fails the run on any request its scenario does not expect."""

    def setUp(self):
        if SIPP is None:
            self.skipTest("sipp not installed (apt-get install sip-tester)")

    def test_sipp_sees_one_request_each(self):
        scenario = h.tmpfile("smuggle-uas-", ".xml")
        scenario.write_text(SIPP_UAS)
        trace = h.tmpfile("smuggle-msgs-", ".log")
        sport = h.free_port()
        uas = h.popen([SIPP, "-sf", str(scenario), "-t", "t1", "-i", "127.0.0.1",
                       "-p", str(sport), "-m", str(len(SHAPES)), "-nostdin", "-max_socket", "64",
                       "-timeout", str(int(h.t(30))), "-timeout_error",
                       "-trace_msg", "-message_file", str(trace)],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        h.wait_for(lambda: not h.connect_refused(f"127.0.0.1:{sport}"), 10, "sipp to listen")
        cfg = sip_config(**{"inbound provider": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "forward": f"127.0.0.1:{sport}"}})
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            st.sock.settimeout(h.t(15))
            for i, (name, cl) in enumerate(SHAPES):
                cid = b"sipp-" + name.encode()
                st.send(request(b"INVITE", b"sip:service@" + FQDN.encode(), cid,
                                via(cid + b"-inv"), b"Content-Type: text/plain\r\n", SMUGGLED,
                                cl))
                ok = st.read_status(200)
                contact = re.search(rb"(?im)^Contact:.*<([^>]+)>", ok).group(1)
                route = b"".join(b"Route: %s\r\n" % v.encode()
                                 for v in header_lines(ok, "Record-Route"))
                tag = re.search(rb";tag=([^;>\s]+)", re.search(rb"(?im)^To:.*$", ok)
                                .group(0)).group(1)
                for method, n in ((b"ACK", 1), (b"BYE", 2)):
                    raw = request(method, contact, cid, via(cid + b"-" + method.lower()), route,
                                  cseq=n)
                    st.send(raw.replace(b"To: <sip:pbx@example.net>",
                                        b"To: <sip:pbx@example.net>;tag=" + tag))
                st.read_status(200)
            rc, out, _ = h.finish(uas, 30)
            st.sock.close()
            self.assertEqual(rc, 0, out[-3000:])
            text = trace.read_text(errors="replace") if trace.exists() else ""
            received = [m for m in text.split("----------------------------------------------")
                        if "message received" in m]
            invites = [m for m in received if re.search(r"(?m)^INVITE ", m)]
            self.assertEqual(len(invites), len(SHAPES), text[-3000:])
            starts = [re.search(r"(?m)^([A-Z]+ sip:|SIP/2\.0 )", m) for m in received]
            self.assertNotIn("OPTIONS sip:", [x.group(1) for x in starts if x], text[-3000:])
            for m in invites:
                msg = m.split("bytes :", 1)[1].lstrip("\r\n")
                head, body = re.split(r"\r?\n\r?\n", msg, maxsplit=1)
                self.assertEqual(re.findall(r"(?im)^X-TLS-Peer-Name:\s*(.*?)\s*$", head), [PEER],
                                 m)
                self.assertEqual(re.findall(r"(?im)^Content-Length:\s*(\d+)", head),
                                 [str(len(SMUGGLED))], m)
                self.assertTrue(body.startswith("OPTIONS sip:pbx@10.20.30.40 SIP/2.0"), m)


def provider_server_context():
    p = h.pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(p.cert("provider"), p.key("provider"))
    ctx.load_verify_locations(p.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Provider:
    """A TLS server that takes tlsgate's outbound connection and hands it to the test."""

    def __init__(self):
        self.ctx = provider_server_context()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]

    def accept(self, timeout):
        """The next connection that is not tlsgate's OPTIONS prober: a Stream on it."""
        self.lsock.settimeout(timeout)
        s, _ = self.lsock.accept()
        s.settimeout(timeout)
        return Stream(self.ctx.wrap_socket(s, server_side=True))

    def close(self):
        self.lsock.close()


def tg_orig_of(uri):
    m = re.search(rb";tg-orig=([A-Za-z0-9_-]+)", uri)
    return m.group(1) if m else None


def b64url_decode(v):
    return base64.urlsafe_b64decode(v + b"=" * (-len(v) % 4))


class OutboundTgOrigTest(h.TestCase):
    """The PBX's Contact travels sealed (no internal address readable), comes back restored
    exactly; a tg-orig the provider forged or altered is answered 400 and reaches nobody."""

    def test_sealed_contact(self):
        prov = Provider()
        try:
            cfg = sip_config(**{"outbound pbx": {"listen": f"127.0.0.1:{h.AUTO}",
                                                 "connect": prov.addr,
                                                 "options_interval_s": "0"}})
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                pbx = Stream(socket.create_connection((host, port), timeout=h.t(10)))
                pbx.sock.settimeout(h.t(15))
                pbx_via = b"SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-pbx-inv"
                pbx.send(request(b"INVITE", b"sip:+15550001111@carrier.example", b"out-1",
                                 pbx_via, b"Contact: <%s>\r\n" % PBX_CONTACT.encode()))
                st = prov.accept(h.t(15))
                inv = st.read()
                self.assertTrue(inv.startswith(b"INVITE "), inv)
                # Nothing of the PBX's address reaches the provider: not as text, not in any
                # base64 alignment, not in the tg-orig decoded.
                self.assertNotIn(PBX_ADDR.encode(), inv)
                for k, skip in ((0, 0), (1, 2), (2, 3)):  # chars made of address bits only
                    enc = base64.urlsafe_b64encode(b"x" * k + PBX_ADDR.encode())[skip:skip + 12]
                    self.assertNotIn(enc, inv)
                contact = re.search(rb"(?im)^Contact: <([^>]+)>", inv).group(1)
                self.assertTrue(contact.startswith(
                    b"sip:pbxuser@%s:5061;transport=tls;tg-orig=" % FQDN.encode()), contact)
                sealed = tg_orig_of(contact)
                self.assertNotIn(PBX_ADDR.encode(), b64url_decode(sealed))
                self.assertNotIn(b"pbxuser@10", b64url_decode(sealed))
                # The provider answers, then hangs up toward that Contact: the PBX gets the BYE
                # at exactly the URI it gave.
                ok = b"SIP/2.0 200 OK\r\n" + b"".join(
                    b"Via: %s\r\n" % v.encode() for v in header_lines(inv, "Via")) + (
                    b"From: <sip:carrier@example.net>;tag=f-out-1\r\n"
                    b"To: <sip:pbx@example.net>;tag=prov\r\nCall-ID: out-1\r\nCSeq: 1 INVITE\r\n"
                    b"Contact: <sip:carrier@192.0.2.10:5061;transport=tls>\r\n"
                    b"Content-Length: 0\r\n\r\n")
                st.send(ok)
                pbx.read_status(200)
                st.send(request(b"BYE", contact, b"out-1", via(b"bye"), cseq=2))
                bye = pbx.read()
                self.assertTrue(bye.startswith(b"BYE %s SIP/2.0\r\n" % PBX_CONTACT.encode()),
                                bye)
                pbx.send(NaivePbx._ok(bye))
                st.read_status(200)
                # Forged: the provider's own tg-orig, in a Contact and in a Request-URI.
                forged = base64.urlsafe_b64encode(
                    b"sip:evil@10.9.9.9:5060;transport=udp?X-Admin=1").rstrip(b"=")
                ours = b"sip:x@%s:5061;transport=tls;tg-orig=" % FQDN.encode()
                st.send(request(b"INFO", b"sip:pbx@example.net", b"forge-c", via(b"fc"),
                                b"Contact: <%s%s>\r\n" % (ours, forged)))
                st.read_status(400)
                st.send(request(b"INFO", ours + forged, b"forge-u", via(b"fu")))
                st.read_status(400)
                # Altered: one character of the real one changed.
                i = len(sealed) // 2
                altered = sealed[:i] + (b"A" if sealed[i:i + 1] != b"A" else b"B") + sealed[i + 1:]
                st.send(request(b"INFO", contact.replace(sealed, altered), b"alter", via(b"al")))
                st.read_status(400)
                # None of them reached the PBX; the pair still works.
                st.send(request(b"INFO", b"sip:pbx@example.net", b"after", via(b"af")))
                after = pbx.read()
                self.assertIn(b"\r\nCall-ID: after\r\n", after)
                pbx.send(NaivePbx._ok(after))
                st.read_status(200)
                self.assertEqual(px.metric("tlsgate_sip_errors_total", listener="pbx",
                                           reason="bad_tg_orig"), 3)
                pbx.sock.close()
                st.sock.close()
        finally:
            prov.close()


if __name__ == "__main__":
    h.main()
