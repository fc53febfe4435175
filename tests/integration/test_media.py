#!/usr/bin/env python3
"""[media]: a call's media anchored on tlsgate, SRTP toward the provider, RTP toward the PBX.

The provider is a Python SIP endpoint over mutual TLS whose media end is tg-srtp-peer (libsrtp2,
independent of proxy/srtp.c); the PBX is a Python SIP UAS over TCP whose media end echoes every
RTP and RTCP datagram back to where it came from. Audio goes SRTP -> tlsgate -> RTP -> echo ->
RTP -> tlsgate -> SRTP and must come back byte for byte. Everything on 127.0.0.1, bounded waits,
everything started is stopped."""

import base64
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from sipmsg import Msg, Stream  # noqa: E402,F401

SRTP_PEER = h._binary("TG_SRTP_PEER", "build/tests/tools/tg-srtp-peer")
SUITE80 = "AES_CM_128_HMAC_SHA1_80"


def b64key(n=30):
    return base64.b64encode(os.urandom(n)).decode()


def udp_pair():
    """An even UDP port P with P+1 free too (RTP and RTCP), on 127.0.0.1."""
    for _ in range(200):
        p = random.randrange(20000, 29000, 2)
        socks = []
        try:
            for q in (p, p + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free UDP port pair")


def can_bind(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def provider_sdp(port, cryptos, version=1, proto="RTP/SAVP", extra=""):
    lines = ["v=0", f"o=carrier 4711 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
             "t=0 0", f"m=audio {port} {proto} 0 101", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:101 telephone-event/8000"]
    lines += [f"a=crypto:{tag} {suite} inline:{key}" for tag, suite, key in cryptos]
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n").encode()


def pbx_sdp(port, version=1, direction="a=sendrecv"):
    return (f"v=0\r\no=pbx 99 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{direction}\r\n"
            ).encode()


def request(method, call_id, cseq, branch, body=b"", to_tag=None, route=()):
    lines = [f"{method} sip:+15551230000@sbc.tlsgate.test SIP/2.0",
             f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-{branch}", "Max-Forwards: 70",
             f"From: <sip:carrier@example.net>;tag=from-{call_id}",
             "To: <sip:pbx@example.net>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             "Contact: <sip:carrier@127.0.0.1:5061;transport=tls>"]
    lines += [f"Route: {r}" for r in route]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response_to(req, code, reason, body=b""):
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.all("Via")]
    lines += [f"Record-Route: {v}" for v in req.all("Record-Route")]
    lines.append(f"From: {req.get('From')}")
    to = req.get("To")
    if code > 100 and ";tag=" not in to:
        to += ";tag=pbx-tag"
    lines += [f"To: {to}", f"Call-ID: {req.get('Call-ID')}", f"CSeq: {req.get('CSeq')}",
              "Contact: <sip:pbx@127.0.0.1:5060;transport=tcp>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Pbx:
    """The PBX stand-in: a SIP UAS on TCP answering INVITE (and re-INVITE) 100 + 200 with an
    RTP/AVP answer on its echo port, BYE 200; and an RTP/RTCP echo on that port pair."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        self.rtp_port = udp_pair()
        self.udp = []
        for q in (self.rtp_port, self.rtp_port + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", q))
            s.settimeout(0.2)
            self.udp.append(s)
        self.seen = []
        self.echoed = 0
        self.sources = set()
        self.cond = threading.Condition()
        self.stop = False
        self.version = 1
        self.early_media = False  # 183 with the answer before the 200
        self.answer = 200  # 180 only: ring until CANCEL; 486: busy
        self.ring = (180, "Ringing")  # the 1xx of answer != 200 (and its body, if any)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads += [threading.Thread(target=self._echo, args=(s,), daemon=True)
                         for s in self.udp]
        for t in self.threads:
            t.start()

    def _echo(self, s):
        while not self.stop:
            try:
                data, src = s.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cond:
                self.echoed += 1
                self.sources.add(src)
            s.sendto(data, src)

    def _accept(self):
        h.accept_loop(self.lsock, lambda: self.stop, lambda s, peer: self._serve(s))

    def _serve(self, s):
        try:
            s.settimeout(h.t(30))
            st = Stream(s)
            while not self.stop:
                m = st.read()
                with self.cond:
                    self.seen.append(m)
                    self.cond.notify_all()
                if not m.is_request or m.method == "ACK":
                    continue
                if m.method == "INVITE" and self.answer != 200:
                    st.send(response_to(m, *self.ring))
                    if self.answer == 486:
                        st.send(response_to(m, 486, "Busy Here"))
                    else:
                        self.ringing = m
                    continue
                if m.method == "CANCEL":
                    st.send(response_to(m, 200, "OK"))
                    st.send(response_to(self.ringing, 487, "Request Terminated"))
                    continue
                if m.method == "INVITE":
                    st.send(response_to(m, 100, "Trying"))
                    self.version += 1
                    answer = pbx_sdp(self.rtp_port, self.version)
                    if self.early_media:
                        st.send(response_to(m, 183, "Session Progress", answer))
                    st.send(response_to(m, 200, "OK", answer))
                else:
                    st.send(response_to(m, 200, "OK"))
        except (EOFError, OSError):
            pass
        finally:
            s.close()

    def requests(self, method, call_id=None):
        with self.cond:
            return [m for m in self.seen if m.method == method and
                    (call_id is None or m.get("Call-ID") == call_id)]

    def wait(self, method, count=1, call_id=None):
        return h.wait_for(lambda: (lambda r: r if len(r) >= count else None)(
            self.requests(method, call_id)), 15, f"{count} {method} at the PBX")

    def close(self):
        self.stop = True
        self.lsock.close()
        for s in self.udp:
            s.close()


def read_final(st):
    got = []
    while True:
        m = st.read()
        got.append(m)
        if not m.is_request and m.code >= 200:
            return m, got


def media_port(body):
    m = re.search(rb"^m=audio (\d+) (\S+)", body, re.M)
    assert m, body
    return int(m.group(1)), m.group(2).decode()


def crypto_lines(body):
    return re.findall(rb"^a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", body, re.M)


def run_peer(bind_port, to_port, tx, rx, count=50, seq=1000, wrong=None, wrong_count=0,
             rtcp=True):
    cmd = [SRTP_PEER, "--bind", f"127.0.0.1:{bind_port}", "--to", f"127.0.0.1:{to_port}",
           "--suite", SUITE80, "--tx", tx, "--rx", rx, "--count", str(count), "--seq", str(seq),
           "--interval-ms", "10", "--wait-ms", str(int(h.t(3) * 1000))]
    if wrong:
        cmd += ["--wrong", wrong, "--wrong-count", str(wrong_count)]
    if rtcp:
        cmd += ["--rtcp-bind", f"127.0.0.1:{bind_port + 1}", "--rtcp-to",
                f"127.0.0.1:{to_port + 1}"]
    r = h.run(cmd, timeout=h.t(30))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def media_config(pbx, base):
    cfg = h.base_config()
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": pbx.addr,
                               "mode": "sip"}
    cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                    "port_range": f"{base}-{base + 199}", "timeout_s": 30}
    return cfg


class MediaCallTest(h.TestCase):

    def setUp(self):
        self.pbx = Pbx()
        self.base = random.randrange(30000, 39000, 200)

    def tearDown(self):
        self.pbx.close()
        super().tearDown()

    def invite(self, st, call_id, cseq, branch, body, to_tag=None, route=()):
        st.send(request("INVITE", call_id, cseq, branch, body, to_tag, route))
        return read_final(st)

    def test_call_rekey_bye(self):
        """SRTP -> RTP -> echo -> RTP -> SRTP byte-exact; a wrong-key packet dropped and
        counted; SRTCP both ways; a re-INVITE with new keys keeps audio flowing; BYE frees
        the ports."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            # The provider says one port in its SDP and sends from another (a NAT): tlsgate
            # must answer to where the authenticated packets come from.
            p_port, sdp_port = udp_pair(), udp_pair()
            k1 = b64key()
            offer = provider_sdp(sdp_port, [(1, "F8_128_HMAC_SHA1_80", b64key()), (2, SUITE80, k1)])
            ok, got = self.invite(st, "media-1", 1, "inv1", offer)
            self.assertEqual(ok.code, 200, got)
            # The PBX got plain RTP/AVP pointing at tlsgate, no key.
            (pinv,) = self.pbx.wait("INVITE")
            pbx_side_port, proto = media_port(pinv.body)
            self.assertEqual(proto, "RTP/AVP")
            self.assertEqual(crypto_lines(pinv.body), [], pinv.body)
            self.assertNotIn(str(sdp_port).encode(), pinv.body)
            self.assertTrue(self.base <= pbx_side_port < self.base + 200, pinv.body)
            # The provider got RTP/SAVP at tlsgate's port with tlsgate's own key, answering
            # the line it could meet (tag 2).
            q_port, proto = media_port(ok.body)
            self.assertEqual(proto, "RTP/SAVP")
            self.assertTrue(self.base <= q_port < self.base + 200, ok.body)
            self.assertNotIn(str(self.pbx.rtp_port).encode(), ok.body)
            (tag, suite, t1), = crypto_lines(ok.body)
            self.assertEqual((tag, suite), (b"2", SUITE80.encode()))
            t1 = t1.decode()
            self.assertNotEqual(t1, k1)
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            route = ok.all("Record-Route")
            st.send(request("ACK", "media-1", 1, "ack1", to_tag=to_tag, route=route))
            # Audio both ways, byte-exact; 5 packets under a wrong key in the middle.
            r = run_peer(p_port, q_port, k1, t1, count=50, wrong=b64key(), wrong_count=5)
            self.assertEqual(r["matched"], 50, r)
            self.assertEqual(r["mismatched"], 0, r)
            self.assertEqual(r["unprotect_failed"], 0, r)
            self.assertEqual(r["wrong_echoed"], 0, r)
            self.assertEqual(r["rtcp_received"], r["rtcp_sent"], r)
            self.assertEqual(px.metric("tlsgate_media_srtp_auth_failures_total"), 5)
            self.assertGreaterEqual(px.metric("tlsgate_media_packets_total",
                                              direction="provider_to_pbx"), 52)
            self.assertGreaterEqual(px.metric("tlsgate_media_packets_total",
                                              direction="pbx_to_provider"), 52)
            self.assertEqual(px.metric("tlsgate_media_calls_active"), 1)
            self.assertEqual(px.metric("tlsgate_media_latches_total"), 1)
            # The PBX only ever heard tlsgate's PBX-side ports.
            self.assertEqual({s[1] for s in self.pbx.sources}, {pbx_side_port, pbx_side_port + 1})

            # re-INVITE with a new key: a new key back, same ports, audio keeps flowing.
            k2 = b64key()
            ok2, got = self.invite(st, "media-1", 2, "reinv", provider_sdp(p_port, [(1, SUITE80, k2)], 2),
                                   to_tag, route)
            self.assertEqual(ok2.code, 200, got)
            (tag, suite, t2), = crypto_lines(ok2.body)
            t2 = t2.decode()
            self.assertNotIn(t2, (t1, k2))
            self.assertEqual(media_port(ok2.body)[0], q_port)
            st.send(request("ACK", "media-1", 2, "ack2", to_tag=to_tag, route=route))
            # Forged packets from elsewhere (no key) never move the latch: nothing goes there.
            junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            junk.bind(("127.0.0.1", 0))
            junk.settimeout(0.3)
            forged = bytes([0x80, 0, 0x13, 0x88, 0, 0, 0, 0, 0x5e, 0xed, 0x12, 0x34]) + os.urandom(170)
            for _ in range(5):
                junk.sendto(forged, ("127.0.0.1", q_port))
            r = run_peer(p_port, q_port, k2, t2, count=30, seq=5000)
            self.assertEqual(r["matched"], 30, r)
            self.assertEqual(r["mismatched"], 0, r)
            self.assertRaises(socket.timeout, junk.recvfrom, 4096)
            junk.close()
            self.assertEqual(px.metric("tlsgate_media_srtp_auth_failures_total"), 10)

            # BYE: the call ends, its ports are free again.
            st.send(request("BYE", "media-1", 3, "bye1", to_tag=to_tag, route=route))
            bye_ok, _ = read_final(st)
            self.assertEqual(bye_ok.code, 200)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            px.wait_metric("tlsgate_media_streams_active", lambda v: v == 0)
            for port in (q_port, q_port + 1, pbx_side_port, pbx_side_port + 1):
                h.wait_for(lambda: can_bind(port), 5, f"port {port} free after BYE")
            st.sock.close()

    def connection_worker(self, px, sock):
        """The worker that took the TLS connection |sock| (from its handshake_ok line)."""
        port = sock.getsockname()[1]
        line = px.wait_log("handshake_ok", f"peer=127.0.0.1:{port} ")[0]
        return re.search(r"conn=w(\d+)-", line).group(1)

    def test_second_connection_on_another_worker(self):
        """A re-INVITE on a second TLS connection that landed on another worker moves the call
        there (new ports and keys, audio flows); a BYE on the first connection, now on a
        worker that no longer owns the call, still ends it and frees the ports."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            a = Stream(h.tls_connect(px.addr("provider")))
            wa = self.connection_worker(px, a.sock)
            p_port, k1 = udp_pair(), b64key()
            ok, got = self.invite(a, "media-x", 1, "xinv", provider_sdp(p_port, [(1, SUITE80, k1)]))
            self.assertEqual(ok.code, 200, got)
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            route = ok.all("Record-Route")
            a.send(request("ACK", "media-x", 1, "xack", to_tag=to_tag, route=route))
            q1, _ = media_port(ok.body)
            (_, _, t1), = crypto_lines(ok.body)
            r = run_peer(p_port, q1, k1, t1.decode(), count=20, rtcp=False)
            self.assertEqual(r["matched"], 20, r)
            # A second connection on the other worker (the kernel picks: try a few).
            b, others = None, []
            for _ in range(40):
                s = h.tls_connect(px.addr("provider"))
                if self.connection_worker(px, s) != wa:
                    b = Stream(s)
                    break
                others.append(s)
            for s in others:
                s.close()
            if b is None:
                self.skipTest("no connection landed on the other worker in 40 tries")
            k2 = b64key()
            ok2, got = self.invite(b, "media-x", 2, "xreinv",
                                   provider_sdp(p_port, [(1, SUITE80, k2)], 2), to_tag, route)
            self.assertEqual(ok2.code, 200, got)
            q2, _ = media_port(ok2.body)
            (_, _, t2), = crypto_lines(ok2.body)
            b.send(request("ACK", "media-x", 2, "xack2", to_tag=to_tag, route=route))
            r = run_peer(p_port, q2, k2, t2.decode(), count=20, seq=3000, rtcp=False)
            self.assertEqual(r["matched"], 20, r)
            self.assertEqual(r["mismatched"], 0, r)
            self.assertEqual(len(px.log_lines("media_call_end", "reason=moved")), 1)
            self.assertEqual(px.metric("tlsgate_media_calls_active"), 1)
            # BYE on the first connection: its worker no longer has the call; the owner ends it.
            a.send(request("BYE", "media-x", 3, "xbye", to_tag=to_tag, route=route))
            bye_ok, _ = read_final(a)
            self.assertEqual(bye_ok.code, 200)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            px.wait_log("media_call_end", "reason=bye_elsewhere")
            for port in (q1, q2):
                h.wait_for(lambda: can_bind(port), 5, f"port {port} free after BYE")
            a.sock.close()
            b.sock.close()

    def other_worker_stream(self, px, worker):
        """A TLS connection that landed on another worker than |worker|, or None."""
        others = []
        try:
            for _ in range(40):
                s = h.tls_connect(px.addr("provider"))
                if self.connection_worker(px, s) != worker:
                    return Stream(s)
                others.append(s)
            return None
        finally:
            for s in others:
                s.close()

    def test_answer_in_ack_on_another_worker(self):
        """A late offer's answer (the provider's ACK with SDP) that arrives on a connection of
        another worker cannot be applied there (the offer's ports and key are the owner's, and
        no payload crosses workers): the ACK goes no further, the owner is told and ends the
        call on both sides (a BYE each, Reason cause=488), its ports freed."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            a = Stream(h.tls_connect(px.addr("provider")))
            wa = self.connection_worker(px, a.sock)
            ok, got = self.invite(a, "media-la", 1, "lainv", b"")
            self.assertEqual(ok.code, 200, got)
            q, _ = media_port(ok.body)
            (tag, _, _), = crypto_lines(ok.body)
            b = self.other_worker_stream(px, wa)
            if b is None:
                self.skipTest("no connection landed on the other worker in 40 tries")
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            b.send(request("ACK", "media-la", 1, "laack",
                           provider_sdp(udp_pair(), [(int(tag), SUITE80, b64key())]), to_tag,
                           ok.all("Record-Route")))
            a.sock.settimeout(h.t(10))
            bye = a.read()  # on the owner's connection
            self.assertEqual((bye.method, bye.get("Call-ID")), ("BYE", "media-la"), bye)
            self.assertIn("cause=488", bye.get("Reason"))
            (pbye,) = self.pbx.wait("BYE", call_id="media-la")
            self.assertIn("cause=488", pbye.get("Reason"))
            self.assertEqual(self.pbx.requests("ACK", "media-la"), [])
            px.wait_log("media_answer_failed", "from=elsewhere")
            self.assertEqual(px.metric("tlsgate_media_answers_failed_total"), 1)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            h.wait_for(lambda: can_bind(q), 5, f"port {q} free")
            a.sock.close()
            b.sock.close()

    def test_hold_and_resume(self):
        """The provider puts the call on hold (a=sendonly, then c=0.0.0.0) and resumes: the
        hold SDP reaches the PBX, nothing is sent toward the held side, audio flows again
        after the resume."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            p_port, k1 = udp_pair(), b64key()
            ok, got = self.invite(st, "media-hold", 1, "hinv", provider_sdp(p_port, [(1, SUITE80, k1)]))
            self.assertEqual(ok.code, 200, got)
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            route = ok.all("Record-Route")
            st.send(request("ACK", "media-hold", 1, "hack", to_tag=to_tag, route=route))
            q, _ = media_port(ok.body)
            (_, _, t1), = crypto_lines(ok.body)
            self.assertEqual(run_peer(p_port, q, k1, t1.decode(), count=10, rtcp=False)["matched"], 10)
            cseq = 2
            for hold in ("a=sendonly", "c=IN IP4 0.0.0.0"):
                k = b64key()
                body = provider_sdp(p_port, [(1, SUITE80, k)], cseq, extra=hold)
                if hold.startswith("c="):
                    body = body.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 0.0.0.0")
                ok2, got = self.invite(st, "media-hold", cseq, f"hold{cseq}", body, to_tag, route)
                self.assertEqual(ok2.code, 200, got)
                st.send(request("ACK", "media-hold", cseq, f"hack{cseq}", to_tag=to_tag, route=route))
                pinv = self.pbx.requests("INVITE", "media-hold")[-1]
                self.assertIn(hold.encode(), pinv.body)
                (_, _, t), = crypto_lines(ok2.body)
                before = px.metric("tlsgate_media_no_destination_total")
                r = run_peer(p_port, q, k, t.decode(), count=10, seq=1000 + 100 * cseq, rtcp=False)
                self.assertEqual(r["received"], 0, r)  # on hold: nothing comes back
                px.wait_metric("tlsgate_media_no_destination_total", lambda v: v >= before + 10)
                cseq += 1
            k = b64key()
            ok3, got = self.invite(st, "media-hold", cseq, "resume",
                                   provider_sdp(p_port, [(1, SUITE80, k)], cseq), to_tag, route)
            self.assertEqual(ok3.code, 200, got)
            (_, _, t), = crypto_lines(ok3.body)
            r = run_peer(p_port, q, k, t.decode(), count=20, seq=4000, rtcp=False)
            self.assertEqual(r["matched"], 20, r)
            st.sock.close()

    def test_media_timeout(self):
        """A call without packets for timeout_s ends: counted, ports freed. A call on hold
        (a=inactive) is exempt meanwhile."""
        cfg = media_config(self.pbx, self.base)
        cfg["media"]["timeout_s"] = 1
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            held, got = self.invite(st, "media-held", 1, "hinv",
                                    provider_sdp(udp_pair(), [(1, SUITE80, b64key())],
                                                 extra="a=inactive"))
            self.assertEqual(held.code, 200, got)
            ok, got = self.invite(st, "media-idle", 1, "iinv",
                                  provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(ok.code, 200, got)
            q, _ = media_port(ok.body)
            self.assertFalse(can_bind(q))
            px.wait_metric("tlsgate_media_timeouts_total", lambda v: v == 1, timeout=h.t(10))
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 1)
            h.wait_for(lambda: can_bind(q), 5, f"port {q} free after the timeout")
            time.sleep(1.5)  # the held call outlives several timeouts
            self.assertEqual(px.metric("tlsgate_media_timeouts_total"), 1)
            self.assertEqual(px.metric("tlsgate_media_calls_active"), 1)
            st.sock.close()

    def test_media_timeout_sends_bye(self):
        """On the media timeout tlsgate ends the call on both sides: a BYE in the dialog to the
        provider (over TLS, to its Contact, through its Record-Route proxies) and to the PBX,
        each with tlsgate's own Via, a CSeq above the last of the side it speaks for and
        Reason cause=408; the answers to them end at tlsgate."""
        cfg = media_config(self.pbx, self.base)
        cfg["media"]["timeout_s"] = 1
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            rr = b"Record-Route: <sip:edge1.carrier.example;lr>, <sip:edge2.carrier.example;lr>\r\n"
            inv = request("INVITE", "media-to", 1, "tinv",
                          provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            st.send(inv.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + rr))
            ok, got = read_final(st)
            self.assertEqual(ok.code, 200, got)
            q, _ = media_port(ok.body)
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            st.send(request("ACK", "media-to", 1, "tack", to_tag=to_tag, route=ok.all("Record-Route")))
            st.sock.settimeout(h.t(10))
            bye = st.read()
            self.assertEqual((bye.method, bye.uri), ("BYE", "sip:carrier@127.0.0.1:5061;transport=tls"), bye)
            self.assertEqual(bye.all("Route"), ["<sip:edge1.carrier.example;lr>, <sip:edge2.carrier.example;lr>"])
            self.assertEqual(bye.get("From"), ok.get("To"))  # tlsgate speaks for the PBX
            self.assertEqual(bye.get("To"), "<sip:carrier@example.net>;tag=from-media-to")
            self.assertEqual(bye.get("Call-ID"), "media-to")
            self.assertEqual(bye.get("CSeq"), "1 BYE")  # the PBX had sent no request
            self.assertIn("cause=408", bye.get("Reason"))
            (via,) = bye.all("Via")
            self.assertTrue(via.startswith("SIP/2.0/TLS sbc.tlsgate.test:"), via)
            (pbye,) = self.pbx.wait("BYE", call_id="media-to")
            self.assertEqual(pbye.uri, "sip:pbx@127.0.0.1:5060;transport=tcp")
            self.assertEqual(pbye.all("Route"), [])
            self.assertEqual(pbye.get("From"), "<sip:carrier@example.net>;tag=from-media-to")
            self.assertEqual(pbye.get("To"), ok.get("To"))
            self.assertEqual(pbye.get("CSeq"), "2 BYE")  # above the provider's INVITE
            self.assertIn("cause=408", pbye.get("Reason"))
            self.assertEqual(len(pbye.all("Via")), 1, pbye)
            # The provider answers its BYE; neither answer crosses to the other side.
            st.send(response_to(bye, 200, "OK"))
            st.sock.settimeout(h.t(1))
            self.assertRaises(socket.timeout, st.read)
            self.assertEqual([m for m in self.pbx.seen if not m.is_request], [])
            self.assertEqual(px.metric("tlsgate_media_byes_sent_total"), 2)
            self.assertEqual(px.metric("tlsgate_media_timeouts_total"), 1)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            h.wait_for(lambda: can_bind(q), 5, f"port {q} free after the timeout")
            st.sock.close()

    def test_media_timeout_bye_follows_target_refresh(self):
        """A re-INVITE's Contact replaces its sender's remote target (RFC 3261 12.2.2): the BYE
        of the media timeout goes to the provider's new Contact, not the one of its INVITE."""
        cfg = media_config(self.pbx, self.base)
        cfg["media"]["timeout_s"] = 1
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            p_port = udp_pair()
            ok, got = self.invite(st, "media-rt", 1, "rtinv", provider_sdp(p_port, [(1, SUITE80, b64key())]))
            self.assertEqual(ok.code, 200, got)
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            st.send(request("ACK", "media-rt", 1, "rtack", to_tag=to_tag, route=ok.all("Record-Route")))
            moved = b"Contact: <sip:carrier@127.0.0.1:5071;transport=tls>"
            reinv = request("INVITE", "media-rt", 2, "rtre", provider_sdp(p_port, [(1, SUITE80, b64key())]),
                            to_tag=to_tag, route=ok.all("Record-Route"))
            st.send(reinv.replace(b"Contact: <sip:carrier@127.0.0.1:5061;transport=tls>", moved))
            ok2, got = read_final(st)
            self.assertEqual(ok2.code, 200, got)
            st.send(request("ACK", "media-rt", 2, "rtack2", to_tag=to_tag, route=ok.all("Record-Route")))
            st.sock.settimeout(h.t(10))
            bye = st.read()
            self.assertEqual((bye.method, bye.uri), ("BYE", "sip:carrier@127.0.0.1:5071;transport=tls"), bye)
            self.assertEqual(bye.get("CSeq"), "1 BYE")
            (pbye,) = self.pbx.wait("BYE", call_id="media-rt")
            self.assertEqual(pbye.uri, "sip:pbx@127.0.0.1:5060;transport=tcp")
            self.assertEqual(pbye.get("CSeq"), "3 BYE")  # above the provider's re-INVITE
            st.send(response_to(bye, 200, "OK"))
            self.assertEqual(px.metric("tlsgate_media_byes_sent_total"), 2)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            st.sock.close()

    def test_unusable_pbx_early_answer_is_cancelled(self):
        """The PBX answers the provider's INVITE 183 with SDP tlsgate cannot use (a host name
        for an address): the provider gets 488 at once (its ACK of it ends at tlsgate), the PBX
        a CANCEL over TCP and then tlsgate's ACK of its 487; neither the PBX's 200 to the
        CANCEL nor its 487 reaches the provider."""
        self.pbx.answer = 180
        bad = pbx_sdp(self.pbx.rtp_port).replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 pbx.example")
        self.pbx.ring = (183, "Session Progress", bad)
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            p_port = udp_pair()
            final, got = self.invite(st, "media-e18", 1, "e18inv", provider_sdp(p_port, [(1, SUITE80, b64key())]))
            self.assertEqual(final.code, 488, got)
            self.assertEqual([m.code for m in got if m.code != 100], [488], got)  # no 183
            self.assertEqual(final.body, b"")
            self.assertEqual(final.get("CSeq"), "1 INVITE")
            self.assertEqual(final.all("Via"), ["SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-e18inv"])
            to_tag = re.search(r";tag=([^;>\s]+)", final.get("To")).group(1)
            st.send(request("ACK", "media-e18", 1, "e18inv", to_tag=to_tag))  # hop by hop
            (inv,) = self.pbx.wait("INVITE", call_id="media-e18")
            (cancel,) = self.pbx.wait("CANCEL", call_id="media-e18")
            self.assertEqual(cancel.uri, inv.uri)
            self.assertEqual(cancel.all("Via"), inv.all("Via")[:1])  # tlsgate's, alone
            for name in ("From", "To", "Call-ID"):
                self.assertEqual(cancel.get(name), inv.get(name), name)
            self.assertEqual(cancel.get("CSeq"), "1 CANCEL")
            self.assertIn("cause=488", cancel.get("Reason"))
            (ack,) = self.pbx.wait("ACK", call_id="media-e18")  # of the 487; the provider's stayed
            self.assertEqual(ack.uri, inv.uri)
            self.assertEqual(ack.all("Via"), inv.all("Via")[:1])
            self.assertEqual(ack.get("To"), inv.get("To") + ";tag=pbx-tag")
            self.assertEqual(ack.get("CSeq"), "1 ACK")
            # The provider got nothing but the 488: not the 200 to the CANCEL, not the 487.
            st.sock.settimeout(h.t(1))
            self.assertRaises(socket.timeout, st.read)
            self.assertEqual(len(self.pbx.requests("ACK", "media-e18")), 1)
            self.assertEqual(px.metric("tlsgate_media_answers_failed_total"), 1)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            px.wait_log("media_answer_failed", "from=pbx", "code=183", "cancel=1")
            px.wait_log("media_cancelled", "code=487", "acked=1")
            st.sock.close()

    def test_media_timeout_spares_a_call_with_packets(self):
        """Packets keep a call alive past timeout_s (the timer re-arms from the last packet);
        once they stop, it times out."""
        cfg = media_config(self.pbx, self.base)
        cfg["media"]["timeout_s"] = 1
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            p_port, k = udp_pair(), b64key()
            ok, got = self.invite(st, "media-busy", 1, "binv",
                                  provider_sdp(p_port, [(1, SUITE80, k)]))
            self.assertEqual(ok.code, 200, got)
            q, _ = media_port(ok.body)
            (_, _, t), = crypto_lines(ok.body)
            r = run_peer(p_port, q, k, t.decode(), count=250, rtcp=False)  # 2.5 s at 10 ms
            self.assertEqual(r["matched"], 250, r)
            self.assertEqual(px.metric("tlsgate_media_timeouts_total"), 0)
            px.wait_metric("tlsgate_media_timeouts_total", lambda v: v == 1, timeout=h.t(10))
            h.wait_for(lambda: can_bind(q), 5, f"port {q} free after the timeout")
            st.sock.close()

    def test_early_media_repeats_the_answer_key(self):
        """183 and 200 carry the same answer: the provider gets the same tlsgate key in both
        (a repeated answer is not a new exchange), and audio flows under it."""
        self.pbx.early_media = True
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            p_port, k = udp_pair(), b64key()
            ok, got = self.invite(st, "media-early", 1, "einv", provider_sdp(p_port, [(1, SUITE80, k)]))
            self.assertEqual([m.code for m in got], [100, 183, 200], got)
            early = got[1]
            self.assertEqual(crypto_lines(early.body), crypto_lines(ok.body))
            self.assertEqual(media_port(early.body), media_port(ok.body))
            (_, _, t), = crypto_lines(ok.body)
            r = run_peer(p_port, media_port(ok.body)[0], k, t.decode(), count=20, rtcp=False)
            self.assertEqual(r["matched"], 20, r)
            st.sock.close()

    def test_max_calls_503(self):
        """Over max_calls a new call is answered 503 by tlsgate; the calls in progress go on."""
        cfg = media_config(self.pbx, self.base)
        cfg["global"]["workers"] = 1
        cfg["media"]["max_calls"] = 1
        with h.Proxy(cfg) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            ok, got = self.invite(st, "media-m1", 1, "m1", provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(ok.code, 200, got)
            busy, got = self.invite(st, "media-m2", 1, "m2", provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(busy.code, 503, got)
            self.assertEqual(self.pbx.requests("INVITE", "media-m2"), [])
            self.assertEqual(px.metric("tlsgate_media_port_exhausted_total"), 1)
            self.assertEqual(px.metric("tlsgate_media_calls_active"), 1)
            st.sock.close()

    def test_descriptor_reserve_holds_against_calls(self):
        """Media sockets count against fd_reserve with the connections: under a small
        descriptor limit, calls beyond what fits are answered 503 (never EMFILE), the admin
        server keeps answering, and ending calls makes room again."""
        cfg = media_config(self.pbx, self.base)
        cfg["global"]["workers"] = 1
        cfg["global"]["fd_reserve"] = 64
        cfg["media"]["max_calls"] = 1000
        # 160 descriptors, 64 kept: 96 for connections (two each) and streams (four each).
        with h.Proxy(cfg, nofile=160) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            codes = []
            for i in range(30):
                r, got = self.invite(st, f"media-fd{i}", 1, f"fd{i}",
                                     provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
                codes.append(r.code)
            ok = codes.count(200)
            self.assertGreater(ok, 5, codes)
            self.assertLess(ok, 30, f"no call was refused: {codes}")
            self.assertEqual(set(codes), {200, 503}, codes)
            self.assertEqual(codes, [200] * ok + [503] * (30 - ok), "refused, then admitted")
            code, body = px.http("/healthz")
            self.assertEqual((code, body.strip()), (200, "ok"))
            self.assertEqual(px.log_lines("event=accept_paused"), [])
            self.assertEqual(px.metric("tlsgate_media_calls_active"), ok)
            st.sock.close()  # the connection's loss ends its calls and frees their sockets
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            st = Stream(h.tls_connect(px.addr("provider")))
            r, got = self.invite(st, "media-fd-after", 1, "fda",
                                 provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(r.code, 200, got)
            st.sock.close()

    def test_cancel_and_busy_free_the_ports(self):
        """A CANCEL before the answer, and a final failure response (486), end the call: its
        ports are freed."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            self.pbx.answer = 180
            st.send(request("INVITE", "media-c", 1, "cinv",
                            provider_sdp(udp_pair(), [(1, SUITE80, b64key())])))
            (pinv,) = self.pbx.wait("INVITE", call_id="media-c")
            pbx_port, _ = media_port(pinv.body)
            self.assertFalse(can_bind(pbx_port))
            self.assertEqual(st.read().code, 180)
            st.send(request("CANCEL", "media-c", 1, "cinv"))
            codes = {st.read().code, st.read().code}
            self.assertEqual(codes, {200, 487})
            st.send(request("ACK", "media-c", 1, "cinv", to_tag="pbx-tag"))
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            h.wait_for(lambda: can_bind(pbx_port), 5, f"port {pbx_port} free after CANCEL")
            self.pbx.answer = 486
            busy, got = self.invite(st, "media-b", 1, "binv",
                                    provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(busy.code, 486, got)
            (pinv,) = self.pbx.wait("INVITE", call_id="media-b")
            pbx_port, _ = media_port(pinv.body)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            self.assertEqual(px.metric("tlsgate_media_calls_total"), 2)
            h.wait_for(lambda: can_bind(pbx_port), 5, f"port {pbx_port} free after 486")
            st.sock.close()

    def test_late_offer(self):
        """An INVITE without SDP: the PBX offers in its 200, tlsgate offers the provider
        RTP/SAVP with its own key, the provider answers in the ACK, and audio flows."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            ok, got = self.invite(st, "media-late", 1, "linv", b"")
            self.assertEqual(ok.code, 200, got)
            q, proto = media_port(ok.body)
            self.assertEqual(proto, "RTP/SAVP")
            (tag, suite, t), = crypto_lines(ok.body)
            self.assertEqual(suite, SUITE80.encode())
            p_port, k = udp_pair(), b64key()
            to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
            st.send(request("ACK", "media-late", 1, "lack",
                            provider_sdp(p_port, [(int(tag), SUITE80, k)]), to_tag,
                            ok.all("Record-Route")))
            (pack,) = self.pbx.wait("ACK", call_id="media-late")
            self.assertEqual(media_port(pack.body)[1], "RTP/AVP")
            self.assertEqual(crypto_lines(pack.body), [])
            r = run_peer(p_port, q, k, t.decode(), count=20, rtcp=False)
            self.assertEqual(r["matched"], 20, r)
            st.sock.close()

    def test_unknown_suites_get_488(self):
        """An offer with only suites tlsgate cannot meet is answered 488 by tlsgate and never
        reaches the PBX."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            offer = provider_sdp(udp_pair(), [(1, "F8_128_HMAC_SHA1_80", b64key()),
                                              (2, "AES_256_CM_HMAC_SHA1_80", b64key(46))])
            resp, got = self.invite(st, "media-488", 1, "inv488", offer)
            self.assertEqual(resp.code, 488, got)
            self.assertEqual(px.metric("tlsgate_media_crypto_refused_total"), 1)
            self.assertEqual(px.metric("tlsgate_media_calls_active"), 0)
            # The same connection still carries a good call, which does reach the PBX.
            ok, got = self.invite(st, "media-ok", 1, "invok",
                                  provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(ok.code, 200, got)
            self.assertEqual(self.pbx.requests("INVITE", "media-488"), [])
            st.send(request("BYE", "media-ok", 2, "byeok",
                            to_tag=re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1),
                            route=ok.all("Record-Route")))
            read_final(st)
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            st.sock.close()

    def test_connection_loss_frees_ports(self):
        """The provider's TLS connection going away ends its calls and frees their ports."""
        with h.Proxy(media_config(self.pbx, self.base)) as px:
            st = Stream(h.tls_connect(px.addr("provider")))
            ok, got = self.invite(st, "media-lost", 1, "invlost",
                                  provider_sdp(udp_pair(), [(1, SUITE80, b64key())]))
            self.assertEqual(ok.code, 200, got)
            q_port, _ = media_port(ok.body)
            self.assertFalse(can_bind(q_port))
            self.assertEqual(px.metric("tlsgate_media_calls_active"), 1)
            st.sock.close()
            px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
            h.wait_for(lambda: can_bind(q_port), 5, f"port {q_port} free after the loss")


class Provider:
    """The provider as a SIP UAS over mutual TLS (for outbound calls): INVITE gets 200 with an
    RTP/SAVP answer on |port| under its own key |key|; BYE and others 200."""

    def __init__(self, port, key):
        p = h.pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(p.cert("provider"), p.key("provider"))
        self.ctx.load_verify_locations(p.ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.port, self.key = port, key
        self.suite = SUITE80  # of the answer
        self.retransmit = False  # send the 200 once more when the first ACK arrives
        # "183": an INVITE gets 183 with the answer, and waits; a CANCEL gets 200 then the
        # INVITE 487 ("cross": 200 with the answer, as when the CANCEL came too late).
        self.early = None
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        self.seen = []
        self.cond = threading.Condition()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        h.accept_loop(self.lsock, lambda: self.stop, lambda s, peer: self._serve(s))

    def _serve(self, s):
        try:
            s.settimeout(h.t(30))
            s = self.ctx.wrap_socket(s, server_side=True)
            st = Stream(s)
            while not self.stop:
                m = st.read()
                with self.cond:
                    self.seen.append(m)
                    self.cond.notify_all()
                if m.is_request and m.method == "ACK" and self.retransmit:
                    self.retransmit = False
                    st.send(self.last_ok)  # crossing the ACK, as a 2xx retransmission may
                if not m.is_request or m.method == "ACK":
                    continue
                if self.early is not None and self._early(st, m):
                    continue
                body = b""
                if m.method == "INVITE":
                    body = provider_sdp(self.port, [(1, self.suite, self.key)])
                resp = response_to(m, 200, "OK", body)
                if m.method == "INVITE":
                    self.last_ok = resp
                st.send(resp)
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            s.close()

    def _early(self, st, m):
        sdp = provider_sdp(self.port, [(1, self.suite, self.key)])
        if m.method == "INVITE":
            self.invite = m
            st.send(response_to(m, 183, "Session Progress", sdp))
            return True
        if m.method != "CANCEL":
            return False
        st.send(response_to(m, 200, "OK"))
        if self.early == "cross":
            st.send(response_to(self.invite, 200, "OK", sdp))
        else:
            st.send(response_to(self.invite, 487, "Request Terminated"))
        return True

    def wait(self, method, count=1):
        def have():
            with self.cond:
                r = [m for m in self.seen if m.method == method]
                return r if len(r) >= count else None
        return h.wait_for(have, 15, f"{count} {method} at the provider")

    def close(self):
        self.stop = True
        self.lsock.close()


def pbx_request(method, call_id, cseq, branch, body=b"", to_tag=None):
    lines = [f"{method} sip:+4930123456@carrier.example SIP/2.0",
             f"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{branch}", "Max-Forwards: 70",
             f"From: <sip:100@pbx.example>;tag=pbx-{call_id}",
             "To: <sip:+4930123456@carrier.example>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             "Contact: <sip:100@127.0.0.1:5060;transport=tcp>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class OutboundMediaTest(h.TestCase):
    """The PBX calls out through an outbound listener: tlsgate offers the provider RTP/SAVP
    with its own key, takes the provider's key from the answer, and audio comes back
    byte-exact."""

    def test_outbound_call(self):
        pbx = Pbx()  # its echo is the PBX's media end; the PBX's SIP is played below
        p_port, k = udp_pair(), b64key()
        prov = Provider(p_port, k)
        base = random.randrange(30000, 39000, 200)
        try:
            cfg = h.base_config()
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": prov.addr,
                                   "mode": "sip", "options_interval_s": 0}
            cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                            "port_range": f"{base}-{base + 199}"}
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                sock = socket.create_connection((host, port), timeout=h.t(10))
                st = Stream(sock)
                st.send(pbx_request("INVITE", "out-1", 1, "oinv", pbx_sdp(pbx.rtp_port)))
                ok, got = read_final(st)
                self.assertEqual(ok.code, 200, got)
                # The provider was offered SRTP at tlsgate, under tlsgate's key.
                (inv,) = prov.wait("INVITE")
                q_port, proto = media_port(inv.body)
                self.assertEqual(proto, "RTP/SAVP")
                self.assertTrue(base <= q_port < base + 200, inv.body)
                (tag, suite, t), = crypto_lines(inv.body)
                self.assertEqual(suite, SUITE80.encode())
                self.assertNotIn(str(pbx.rtp_port).encode(), inv.body)
                # The PBX got plain RTP at tlsgate's PBX-side port, no key.
                pbx_side, proto = media_port(ok.body)
                self.assertEqual(proto, "RTP/AVP")
                self.assertEqual(crypto_lines(ok.body), [])
                to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
                st.send(pbx_request("ACK", "out-1", 1, "oack", to_tag=to_tag))
                r = run_peer(p_port, q_port, k, t.decode(), count=40)
                self.assertEqual(r["matched"], 40, r)
                self.assertEqual(r["mismatched"], 0, r)
                self.assertEqual(r["rtcp_received"], r["rtcp_sent"], r)
                self.assertEqual({s[1] for s in pbx.sources}, {pbx_side, pbx_side + 1})
                st.send(pbx_request("BYE", "out-1", 2, "obye", to_tag=to_tag))
                bye_ok, _ = read_final(st)
                self.assertEqual(bye_ok.code, 200)
                px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
                h.wait_for(lambda: can_bind(q_port), 5, f"port {q_port} free after BYE")
                sock.close()
        finally:
            prov.close()
            pbx.close()

    def test_unusable_answer_is_failed_back(self):
        """The provider answers the PBX's INVITE 200 with crypto tlsgate did not offer: the PBX
        gets 488 (its ACK of it ends at tlsgate), the provider, whose dialog the 200 confirmed,
        gets tlsgate's ACK (again for a retransmitted 200, which never reaches the PBX) and a
        BYE with Reason cause=488; the ports are freed and the call counted."""
        pbx = Pbx()
        p_port = udp_pair()
        prov = Provider(p_port, b64key())
        prov.suite, prov.retransmit = "AES_CM_128_HMAC_SHA1_32", True
        base = random.randrange(30000, 39000, 200)
        try:
            cfg = h.base_config()
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": prov.addr,
                                   "mode": "sip", "options_interval_s": 0}
            cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                            "port_range": f"{base}-{base + 199}"}
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                st = Stream(socket.create_connection((host, port), timeout=h.t(10)))
                st.send(pbx_request("INVITE", "out-bad", 1, "binv", pbx_sdp(pbx.rtp_port)))
                final, got = read_final(st)
                self.assertEqual(final.code, 488, got)
                self.assertEqual(final.body, b"")
                self.assertEqual(final.get("CSeq"), "1 INVITE")
                self.assertEqual(final.all("Via"), ["SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-binv"])
                to_tag = re.search(r";tag=([^;>\s]+)", final.get("To")).group(1)
                st.send(pbx_request("ACK", "out-bad", 1, "binv", to_tag=to_tag))  # hop-by-hop
                (inv,) = prov.wait("INVITE")
                q_port, _ = media_port(inv.body)
                acks = prov.wait("ACK", 2)
                (bye,) = prov.wait("BYE")
                for ack in acks:
                    self.assertEqual(ack.get("CSeq"), "1 ACK")
                    self.assertEqual(ack.uri, "sip:pbx@127.0.0.1:5060;transport=tcp")
                    (via,) = ack.all("Via")  # tlsgate's own, not the PBX's hop-by-hop ACK
                    self.assertTrue(via.startswith("SIP/2.0/TLS sbc.tlsgate.test:"), via)
                    self.assertNotEqual(via, inv.all("Via")[0])
                self.assertLess(prov.seen.index(acks[0]), prov.seen.index(bye))
                self.assertEqual(bye.uri, "sip:pbx@127.0.0.1:5060;transport=tcp")
                self.assertEqual(bye.get("From"), inv.get("From"))
                self.assertEqual(bye.get("To"), inv.get("To") + ";tag=pbx-tag")
                self.assertEqual(bye.get("CSeq"), "2 BYE")
                self.assertIn("cause=488", bye.get("Reason"))
                # The PBX got nothing but the 488: no 2xx, no answer to tlsgate's BYE.
                st.sock.settimeout(h.t(1))
                self.assertRaises(socket.timeout, st.read)
                self.assertEqual(px.metric("tlsgate_media_answers_failed_total"), 1)
                self.assertEqual(px.metric("tlsgate_media_byes_sent_total"), 1)
                self.assertEqual(px.metric("tlsgate_media_crypto_refused_total"), 1)
                px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
                px.wait_log("media_answer_failed", "from=provider", "code=200")
                h.wait_for(lambda: can_bind(q_port), 5, f"port {q_port} free after the 488")
                st.sock.close()
        finally:
            prov.close()
            pbx.close()

    def test_unusable_early_answer_is_cancelled(self):
        """The provider answers the PBX's INVITE 183 with crypto tlsgate did not offer: the PBX
        gets 488 at once (its ACK of it ends at tlsgate), the provider a CANCEL of the INVITE
        (its Request-URI, top Via, From, To, CSeq number) and then tlsgate's ACK of its 487;
        neither the provider's 200 to the CANCEL nor its 487 reaches the PBX; ports freed, the
        call counted."""
        pbx = Pbx()
        p_port = udp_pair()
        prov = Provider(p_port, b64key())
        prov.suite, prov.early = "AES_CM_128_HMAC_SHA1_32", "183"
        base = random.randrange(30000, 39000, 200)
        try:
            cfg = h.base_config()
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": prov.addr,
                                   "mode": "sip", "options_interval_s": 0}
            cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                            "port_range": f"{base}-{base + 199}"}
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                st = Stream(socket.create_connection((host, port), timeout=h.t(10)))
                st.send(pbx_request("INVITE", "out-early", 1, "einv", pbx_sdp(pbx.rtp_port)))
                final, got = read_final(st)
                self.assertEqual([m.code for m in got], [488], got)  # no 183 before it
                self.assertEqual(final.body, b"")
                self.assertEqual(final.get("CSeq"), "1 INVITE")
                self.assertEqual(final.all("Via"), ["SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-einv"])
                to_tag = re.search(r";tag=([^;>\s]+)", final.get("To")).group(1)
                st.send(pbx_request("ACK", "out-early", 1, "einv", to_tag=to_tag))  # hop-by-hop
                (inv,) = prov.wait("INVITE")
                q_port, _ = media_port(inv.body)
                (cancel,) = prov.wait("CANCEL")
                self.assertEqual(cancel.uri, inv.uri)
                self.assertEqual(cancel.all("Via"), inv.all("Via")[:1])  # tlsgate's, alone
                self.assertTrue(cancel.get("Via").startswith("SIP/2.0/TLS sbc.tlsgate.test:"))
                for name in ("From", "To", "Call-ID"):
                    self.assertEqual(cancel.get(name), inv.get(name), name)
                self.assertNotIn(";tag=", cancel.get("To"))
                self.assertEqual(cancel.get("CSeq"), "1 CANCEL")
                self.assertEqual(cancel.all("Route"), inv.all("Route"))
                self.assertIn("cause=488", cancel.get("Reason"))
                (ack,) = prov.wait("ACK")  # of the 487; the PBX's ACK of its 488 stayed
                self.assertLess(prov.seen.index(cancel), prov.seen.index(ack))
                self.assertEqual(ack.uri, inv.uri)
                self.assertEqual(ack.all("Via"), inv.all("Via")[:1])
                self.assertEqual(ack.get("From"), inv.get("From"))
                self.assertEqual(ack.get("To"), inv.get("To") + ";tag=pbx-tag")
                self.assertEqual(ack.get("CSeq"), "1 ACK")
                # The PBX got nothing but the 488: not the 200 to the CANCEL, not the 487.
                st.sock.settimeout(h.t(1))
                self.assertRaises(socket.timeout, st.read)
                self.assertEqual(px.metric("tlsgate_media_answers_failed_total"), 1)
                self.assertEqual(px.metric("tlsgate_media_byes_sent_total"), 0)
                px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
                px.wait_log("media_answer_failed", "from=provider", "code=183", "cancel=1")
                px.wait_log("media_cancelled", "code=487", "acked=1")
                self.assertEqual(len(prov.wait("ACK")), 1)  # the PBX's ACK of its 488 stayed
                h.wait_for(lambda: can_bind(q_port), 5, f"port {q_port} free after the 488")
                st.sock.close()
        finally:
            prov.close()
            pbx.close()

    def test_unusable_early_answer_then_crossing_200(self):
        """The provider's 200 crosses tlsgate's CANCEL of an INVITE whose 183 it could not use:
        the provider's dialog is confirmed, so it gets tlsgate's ACK of the 200 and a BYE
        (Reason cause=488); the PBX has its 488 and nothing more."""
        pbx = Pbx()
        p_port = udp_pair()
        prov = Provider(p_port, b64key())
        prov.suite, prov.early = "AES_CM_128_HMAC_SHA1_32", "cross"
        base = random.randrange(30000, 39000, 200)
        try:
            cfg = h.base_config()
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": prov.addr,
                                   "mode": "sip", "options_interval_s": 0}
            cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                            "port_range": f"{base}-{base + 199}"}
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                st = Stream(socket.create_connection((host, port), timeout=h.t(10)))
                st.send(pbx_request("INVITE", "out-cross", 1, "xinv", pbx_sdp(pbx.rtp_port)))
                final, got = read_final(st)
                self.assertEqual([m.code for m in got], [488], got)
                (inv,) = prov.wait("INVITE")
                prov.wait("CANCEL")
                (ack,) = prov.wait("ACK")
                (bye,) = prov.wait("BYE")
                self.assertLess(prov.seen.index(ack), prov.seen.index(bye))
                self.assertEqual(ack.uri, "sip:pbx@127.0.0.1:5060;transport=tcp")  # the Contact
                self.assertEqual(ack.get("To"), inv.get("To") + ";tag=pbx-tag")
                self.assertNotEqual(ack.get("Via"), inv.all("Via")[0])  # a 2xx ACK: its own
                self.assertEqual(bye.get("CSeq"), "2 BYE")
                self.assertIn("cause=488", bye.get("Reason"))
                st.sock.settimeout(h.t(1))
                self.assertRaises(socket.timeout, st.read)  # not the 200s, not the BYE's answer
                self.assertEqual(px.metric("tlsgate_media_answers_failed_total"), 1)
                self.assertEqual(px.metric("tlsgate_media_byes_sent_total"), 1)
                px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
                st.sock.close()
        finally:
            prov.close()
            pbx.close()

    def test_unusable_reinvite_answer_ends_the_call(self):
        """A re-INVITE of the PBX answered 200 with crypto tlsgate cannot use ends the whole
        call: the PBX gets 488 for its re-INVITE and a BYE (CSeq above the provider's), the
        provider an ACK and a BYE (CSeq above the PBX's re-INVITE)."""
        pbx = Pbx()
        p_port = udp_pair()
        prov = Provider(p_port, b64key())
        base = random.randrange(30000, 39000, 200)
        try:
            cfg = h.base_config()
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}", "connect": prov.addr,
                                   "mode": "sip", "options_interval_s": 0}
            cfg["media"] = {"public_address": "127.0.0.1", "internal_address": "127.0.0.1",
                            "port_range": f"{base}-{base + 199}"}
            with h.Proxy(cfg) as px:
                host, port = h.split_addr(px.addr("pbx"))
                st = Stream(socket.create_connection((host, port), timeout=h.t(10)))
                st.send(pbx_request("INVITE", "out-re", 1, "rinv", pbx_sdp(pbx.rtp_port)))
                ok, got = read_final(st)
                self.assertEqual(ok.code, 200, got)
                to_tag = re.search(r";tag=([^;>\s]+)", ok.get("To")).group(1)
                st.send(pbx_request("ACK", "out-re", 1, "rack", to_tag=to_tag))
                prov.suite = "AES_CM_128_HMAC_SHA1_32"
                st.send(pbx_request("INVITE", "out-re", 5, "rreinv", pbx_sdp(pbx.rtp_port, 2),
                                    to_tag))
                final, got = read_final(st)
                self.assertEqual(final.code, 488, got)
                st.send(pbx_request("ACK", "out-re", 5, "rreinv", to_tag=to_tag))
                st.sock.settimeout(h.t(10))
                bye = st.read()
                self.assertEqual((bye.method, bye.uri), ("BYE", "sip:100@127.0.0.1:5060;transport=tcp"))
                self.assertEqual(bye.get("CSeq"), "1 BYE")  # the provider had sent no request
                self.assertEqual(bye.get("From"), ok.get("To"))
                self.assertIn("cause=488", bye.get("Reason"))
                (pbye,) = prov.wait("BYE")
                self.assertEqual(pbye.get("CSeq"), "6 BYE")
                acks = prov.wait("ACK", 2)  # the PBX's own of the first 200, tlsgate's of the second
                self.assertEqual(acks[1].get("CSeq"), "5 ACK")
                self.assertEqual(len(acks[1].all("Via")), 1, acks[1])  # not the PBX's ACK of 488
                self.assertLess(prov.seen.index(acks[1]), prov.seen.index(pbye))
                st.send(response_to(bye, 200, "OK"))
                self.assertEqual(px.metric("tlsgate_media_byes_sent_total"), 2)
                px.wait_metric("tlsgate_media_calls_active", lambda v: v == 0)
                st.sock.settimeout(h.t(1))
                self.assertRaises(socket.timeout, st.read)  # the provider's 200 to its BYE
                self.assertEqual(len(prov.wait("ACK")), 2)  # the PBX's ACK of the 488 stayed
                st.sock.close()
        finally:
            prov.close()
            pbx.close()


if __name__ == "__main__":
    h.unittest.main()
