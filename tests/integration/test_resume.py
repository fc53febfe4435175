#!/usr/bin/env python3
"""TLS session resumption on a `mode = sip` inbound listener: the provider identity is the
verified certificate name, and a resumed session must carry it too, or not be accepted at all.

1. Identity: with `workers = 4`, one full handshake (client certificate) and then 20 resumed
   connections (TLS 1.2 and TLS 1.3 separately), each sending one SIP request. Every request at
   the PBX must carry exactly `X-TLS-Peer-Name: sip.um.example.net`, whichever worker the
   resumed connection landed on and however long after the full handshake it came.
2. Reload: a session saved before a reload that takes the client's name out of `peer_names`
   must not resume into an accepted connection: either it is not resumed and the full handshake
   is refused (counted in /metrics), or the handshake fails. Nothing reaches the PBX.
3. Expiry: a session saved while a short-lived client certificate was valid must not resume into
   an accepted connection once the certificate has expired. Nothing reaches the PBX.

The provider is Python's ssl (explicit `session=` resumption), the PBX a small Python TCP UAS
defined here (answers every request 200 and records what arrived, connection by connection).
Everything runs on 127.0.0.1 with bounded waits; processes are cleaned up by harness.py."""

import datetime
import re
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from sipmsg import Msg, Stream  # noqa: E402,F401

PEER = "sip.um.example.net"        # CN = DNS SAN of the test PKI's client certificate
OTHER_PEER = "sip.provider.test"   # CN = DNS SAN of the test PKI's provider certificate
FQDN = "sbc.tlsgate.test"
RESUMED = 20
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def request(method, uri, call_id, cseq=1):
    """A provider-side SIP request (TLS Via) with no body."""
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK-{call_id}",
             "Max-Forwards: 70",
             f"From: <sip:provider@example.net>;tag=from-{call_id}",
             "To: <sip:pbx@example.net>",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def options(call_id):
    # Not addressed to the SBC itself (that OPTIONS would be answered locally): to the PBX.
    return request("OPTIONS", "sip:pbx@example.net", call_id)


def response_to(req, code, reason):
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.all("Via")]
    lines += [f"Record-Route: {v}" for v in req.all("Record-Route")]
    lines.append(f"From: {req.get('From')}")
    to = req.get("To")
    if ";tag=" not in to:
        to += ";tag=pbx-tag"
    lines += [f"To: {to}", f"Call-ID: {req.get('Call-ID')}", f"CSeq: {req.get('CSeq')}",
              "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Pbx:
    """A plain-TCP SIP UAS: every request but ACK is answered 200 OK. Every message is kept in
    |seen| as (connection number, peer address, Msg); |connections| counts accepted TCP
    connections (tlsgate connects to the PBX only for an accepted provider connection)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.seen = []
        self.connections = 0
        self.cond = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop:
            try:
                s, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cond:
                self.connections += 1
                n = self.connections
            threading.Thread(target=self._serve, args=(s, peer, n), daemon=True).start()

    def _serve(self, s, peer, n):
        try:
            s.settimeout(h.t(30))
            st = Stream(s)
            while not self.stop:
                m = st.read()
                with self.cond:
                    self.seen.append((n, peer, m))
                    self.cond.notify_all()
                if m.is_request and m.method != "ACK":
                    st.send(response_to(m, 200, "OK"))
        except (EOFError, OSError):
            pass
        finally:
            s.close()

    def requests(self):
        with self.cond:
            return [m for _, _, m in self.seen if m.is_request]

    def by_call_id(self, call_id):
        return [m for m in self.requests() if m.get("Call-ID") == call_id]

    def wait_call_ids(self, call_ids, timeout=10):
        want = set(call_ids)

        def have():
            got = {m.get("Call-ID") for m in self.requests()}
            return want <= got
        h.wait_for(have, timeout, f"{len(want)} requests at the PBX")

    def close(self):
        self.stop = True
        self.lsock.close()


# ---------------------------------------------------------------------------------------------
# Configuration, reload and TLS helpers.

def render_ini(sections):
    """The INI text of |sections| (the harness's format; kept here so this file does not reach
    into harness internals)."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                v = ", ".join(map(str, v))
            lines.append(f"{k} = {v}")
        lines.append("")
    return "\n".join(lines)


def sip_inbound_config(forward, workers=4):
    cfg = h.base_config()
    cfg["global"]["workers"] = workers
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": forward,
                               "mode": "sip"}
    return cfg


def reload_by_sighup(px, new_tls):
    """Rewrite the running proxy's configuration file with [tls] keys |new_tls| changed, send
    SIGHUP and wait until the reload is reported ok (metric and log line)."""
    before = px.metric("tlsgate_reloads_total", result="ok")
    sections = {name: dict(keys) for name, keys in px.sections.items()}
    sections["tls"].update(new_tls)
    tmp = str(px.config_path) + ".new"
    with open(tmp, "w") as f:
        f.write(render_ini(sections))
    shutil.move(tmp, str(px.config_path))
    px.sections = sections
    px.proc.send_signal(signal.SIGHUP)
    px.wait_metric("tlsgate_reloads_total", lambda v: v == before + 1, result="ok")
    px.wait_log("event=reload", "trigger=SIGHUP", "result=ok")


def client_ctx(version, cert="client", p=None):
    return h.client_context(cert=cert, p=p, version=VERSIONS[version])


def tls_open(ctx, addr, session=None, timeout=10):
    """A handshaken TLS socket to |addr|, resuming |session| when given (the session must come
    from a socket of this same |ctx|)."""
    host, port = h.split_addr(addr)
    raw = socket.create_connection((host, port), timeout=h.t(timeout))
    try:
        s = ctx.wrap_socket(raw, server_hostname=FQDN, session=session,
                            suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise
    s.settimeout(h.t(timeout))
    return s


def sip_round(s, call_id):
    """Send one OPTIONS toward the PBX on |s| and read the 200 that comes back."""
    st = Stream(s)
    st.send(options(call_id))
    while True:
        m = st.read()
        if not m.is_request and m.code >= 200:
            return m


def full_handshake_session(test, ctx, addr, pbx, call_id):
    """One full handshake with the client certificate and one SIP round. Checks that it was not
    a resumption and that the request reached the PBX with the verified name; returns the
    session to resume (the 200 was read, so a TLS 1.3 ticket has arrived by then)."""
    s = tls_open(ctx, addr)
    try:
        test.assertFalse(s.session_reused, "the first connection must be a full handshake")
        ok = sip_round(s, call_id)
        test.assertEqual(ok.code, 200, ok)
        test.assertEqual(ok.get("Call-ID"), call_id, ok)
        sess = s.session
    finally:
        s.close()
    test.assertIsNotNone(sess, "no TLS session after a full round")
    test.assertTrue(sess.has_ticket, "the server issued no session ticket: nothing to resume")
    (m,) = pbx.by_call_id(call_id)
    test.assertEqual(m.all("X-TLS-Peer-Name"), [PEER],
                     f"full handshake: the request at the PBX lacks the verified name:\n{m!r}")
    return sess


def provider_refusals(px):
    """{reason: count} of tlsgate_handshakes_total{listener="provider"} for every result that
    is not ok."""
    out = {}
    for (name, labels), v in px.metrics().items():
        d = dict(labels)
        if (name == "tlsgate_handshakes_total" and d.get("listener") == "provider"
                and d.get("result") != "ok"):
            out[d["result"]] = v
    return out


def refusal_delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)
            if after.get(k, 0) != before.get(k, 0)}


def attempt_resume(ctx, addr, session, call_id):
    """Try to resume |session| and, if the handshake completes, send one SIP request and read.
    Returns a dict: handshake ('ok' or the error), reused (None when the handshake failed),
    answered (the response read back, or None), after (how the read ended)."""
    out = {"handshake": "ok", "reused": None, "answered": None, "after": None}
    try:
        s = tls_open(ctx, addr, session=session, timeout=5)
    except (ssl.SSLError, OSError) as e:
        out["handshake"] = f"failed: {e!r}"
        return out
    try:
        out["reused"] = s.session_reused
        try:
            m = sip_round(s, call_id)
            out["answered"] = m
            out["after"] = "response"
        except EOFError as e:
            out["after"] = f"eof: {e}"
        except ssl.SSLError as e:
            out["after"] = f"tls error: {e!r}"
        except socket.timeout:
            out["after"] = "timeout"
        except OSError as e:
            out["after"] = f"os error: {e!r}"
    finally:
        s.close()
    return out


def check_not_accepted(test, px, pbx, ctx, addr, session, call_id, what, reasons):
    """Try to resume |session| (see attempt_resume) and check that it did not become an
    accepted connection: no response, nothing at the PBX, exactly one refusal counted in
    tlsgate_handshakes_total{listener="provider"}, and when the session was visibly not
    resumed (a full handshake) the refusal's reason is one of |reasons|. A handshake that
    fails, or a resumption the proxy aborts right after it (the client may then report
    session_reused for TLS 1.2, whose abbreviated handshake ends with the client), passes as
    long as nothing is accepted."""
    before = provider_refusals(px)
    out = attempt_resume(ctx, addr, session, call_id)
    sys.stderr.write(f"{what}: handshake={out['handshake']} reused={out['reused']} "
                     f"after={out['after']}\n")
    accepted = out["answered"] is not None
    test.assertFalse(out["reused"] and accepted,
                     f"{what}: the saved session was resumed into an accepted connection: "
                     f"{out}; at the PBX: {pbx.by_call_id(call_id)!r}")
    test.assertFalse(accepted, f"{what}: the request was answered: {out}")
    box = {}

    def counted():
        box["d"] = refusal_delta(before, provider_refusals(px))
        return sum(box["d"].values()) >= 1
    try:
        h.wait_for(counted, 5, "the refusal in /metrics")
    except AssertionError:
        test.fail(f"{what}: no refusal counted in tlsgate_handshakes_total ({out}; "
                  f"delta {box.get('d')})")
    sys.stderr.write(f"{what}: refusals counted {box['d']}\n")
    test.assertEqual(sum(box["d"].values()), 1, f"{what}: {box['d']}")
    if out["reused"] is False:
        # Not resumed: a full handshake, refused for the reason the policy gives.
        test.assertIn(next(iter(box["d"])), reasons, f"{what}: {box['d']} ({out})")
    test.assertEqual(pbx.by_call_id(call_id), [], f"{what}: the request reached the PBX")


def make_short_lived_client_cert(p, seconds):
    """A client certificate for PEER signed by the test CA, valid from two minutes ago until
    |seconds| from now (`openssl ca -enddate` takes seconds, `x509 -days` does not). Returns
    (cert path, key path, notAfter as a POSIX time) or raises unittest.SkipTest saying why."""
    if h.OPENSSL is None:
        raise unittest.SkipTest("openssl CLI not found: cannot make a short-lived certificate")
    d = p.dir / "short"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    (d / "newcerts").mkdir()
    (d / "index.txt").write_text("")
    (d / "serial").write_text("5000\n")
    cnf = d / "ca.cnf"
    cnf.write_text(f"""[ca]
default_ca = tg
[tg]
database = {d}/index.txt
new_certs_dir = {d}/newcerts
serial = {d}/serial
default_md = sha256
policy = pol
unique_subject = no
[pol]
commonName = supplied
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth, serverAuth
subjectAltName = DNS:{PEER}
""")
    key = str(d / "short.key")
    shutil.copyfile(p.key("client"), key)
    csr = str(d / "short.csr")
    r = h.run([h.OPENSSL, "req", "-new", "-key", key, "-subj", f"/CN={PEER}", "-out", csr])
    if r.returncode != 0:
        raise unittest.SkipTest(f"openssl req failed: {r.stdout}{r.stderr}")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    start = now - datetime.timedelta(seconds=120)
    end = now + datetime.timedelta(seconds=seconds)
    pem = str(d / "short.pem")
    r = h.run([h.OPENSSL, "ca", "-batch", "-config", str(cnf), "-cert", p.ca, "-keyfile",
               p.key("ca"), "-in", csr, "-out", pem, "-startdate",
               start.strftime("%Y%m%d%H%M%SZ"), "-enddate", end.strftime("%Y%m%d%H%M%SZ"),
               "-extensions", "ext", "-notext"])
    if r.returncode != 0:
        raise unittest.SkipTest(f"openssl ca -enddate (seconds) failed, no short-lived "
                                f"certificate: {r.stdout}{r.stderr}")
    # Read back what was really written.
    r = h.run([h.OPENSSL, "x509", "-in", pem, "-noout", "-enddate"])
    m = re.search(r"notAfter=(.+)", r.stdout)
    if r.returncode != 0 or m is None:
        raise unittest.SkipTest(f"cannot read the short-lived certificate back: {r.stderr}")
    not_after = datetime.datetime.strptime(m.group(1).strip(), "%b %d %H:%M:%S %Y %Z")
    not_after = not_after.replace(tzinfo=datetime.timezone.utc).timestamp()
    if abs(not_after - end.timestamp()) > 1:
        raise unittest.SkipTest(f"openssl wrote notAfter={m.group(1)}, not {end}: the CLI "
                                f"cannot make a certificate valid for seconds")
    return pem, key, not_after


class _CertPKI:
    """A view of the harness PKI with one extra name: pki['short'] is the short-lived cert."""

    def __init__(self, p, name, cert, key):
        self._p, self._name, self._cert, self._key = p, name, cert, key
        self.ca = p.ca
        self.dir = p.dir

    def cert(self, name):
        return self._cert if name == self._name else self._p.cert(name)

    def key(self, name):
        return self._key if name == self._name else self._p.key(name)


# ---------------------------------------------------------------------------------------------

class ResumedIdentityTest(h.TestCase):
    """(1) Every request of a resumed session reaches the PBX with the verified name, on
    whichever of 4 workers the resumed connection lands."""

    def _identity(self, version):
        pbx = Pbx()
        try:
            with h.Proxy(sip_inbound_config(pbx.addr, workers=4)) as px:
                addr = px.addr("provider")
                ctx = client_ctx(version)
                sess = full_handshake_session(self, ctx, addr, pbx, f"full-{version}")

                reused, call_ids = [], []
                for i in range(RESUMED):
                    call_id = f"resumed-{version}-{i}"
                    s = tls_open(ctx, addr, session=sess)
                    try:
                        reused.append(s.session_reused)
                        ok = sip_round(s, call_id)
                        self.assertEqual(ok.code, 200, ok)
                    finally:
                        s.close()
                    call_ids.append(call_id)
                self.assertEqual(reused, [True] * RESUMED,
                                 f"TLS {version}: not every connection resumed the session")
                pbx.wait_call_ids(call_ids)

                # The connections really spread over the workers (SO_REUSEPORT, by 4-tuple).
                px.wait_metric("tlsgate_handshakes_total", lambda v: v == RESUMED + 1,
                               listener="provider", result="ok")
                lines = px.log_lines("event=handshake_ok", "listener=provider")
                workers = [h.kv(l)["conn"].split("-")[0] for l in lines]
                self.assertEqual(len(workers), RESUMED + 1, lines)
                self.assertGreaterEqual(len(set(workers)), 2,
                                        f"all {RESUMED + 1} connections landed on one worker "
                                        f"({workers}): the cross-worker case was not exercised")

                # /status records the peer once per worker that verified its chain (each worker
                # writes its own ring; later handshakes only refresh the entry's time).
                peers = [e for e in px.status()["recent_peers"] if e["name"] == PEER]
                self.assertEqual(len(peers), len(set(workers)), peers)
                for e in peers:
                    self.assertRegex(e["seen"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
                    self.assertIn("CN=", e["issuer"])

                # The point: every request at the PBX carries exactly the verified name.
                bad = []
                for i, call_id in enumerate(call_ids):
                    (m,) = pbx.by_call_id(call_id)
                    got = m.all("X-TLS-Peer-Name")
                    if got != [PEER]:
                        bad.append(f"{call_id} (worker {workers[i + 1]}): "
                                   f"X-TLS-Peer-Name {got}")
                if bad:
                    self.fail(f"TLS {version}: {len(bad)} of {RESUMED} requests of resumed "
                              f"sessions reached the PBX without exactly "
                              f"'X-TLS-Peer-Name: {PEER}' (full handshake on worker "
                              f"{workers[0]}; resumed on {sorted(set(workers[1:]))}):\n  "
                              + "\n  ".join(bad))
        finally:
            pbx.close()

    def test_tls12_resumed_sessions_carry_peer_name(self):
        self._identity("1.2")

    def test_tls13_resumed_sessions_carry_peer_name(self):
        self._identity("1.3")


class ResumeAfterReloadTest(h.TestCase):
    """(2) A reload that takes the client's name out of peer_names: a session saved before it
    does not resume into an accepted connection, and nothing reaches the PBX."""

    def test_reload_removing_name_refuses_saved_session(self):
        pbx = Pbx()
        try:
            with h.Proxy(sip_inbound_config(pbx.addr, workers=4)) as px:
                addr = px.addr("provider")
                ctxs = {v: client_ctx(v) for v in VERSIONS}
                sessions = {}
                for v, ctx in ctxs.items():
                    sessions[v] = full_handshake_session(self, ctx, addr, pbx, f"pre-{v}")
                    # The saved session is resumable before the reload (so the outcome below
                    # is about the reload, not about a session that never resumed).
                    s = tls_open(ctx, addr, session=sessions[v])
                    try:
                        self.assertTrue(s.session_reused,
                                        f"TLS {v}: the saved session did not resume before "
                                        f"the reload")
                    finally:
                        s.close()

                reload_by_sighup(px, {"peer_names": OTHER_PEER})

                # The reload took effect: the other name is accepted, with its own header.
                octx = client_ctx("1.3", cert="provider")
                s = tls_open(octx, addr)
                try:
                    ok = sip_round(s, "other-after-reload")
                    self.assertEqual(ok.code, 200, ok)
                finally:
                    s.close()
                (m,) = pbx.by_call_id("other-after-reload")
                self.assertEqual(m.all("X-TLS-Peer-Name"), [OTHER_PEER], m)

                conns_before = pbx.connections
                seen_before = len(pbx.requests())
                for v, ctx in ctxs.items():
                    with self.subTest(tls=v):
                        check_not_accepted(self, px, pbx, ctx, addr, sessions[v],
                                           f"after-reload-{v}", f"TLS {v} after the reload",
                                           ("cn_mismatch", "san_mismatch"))

                time.sleep(h.t(0.5))  # anything late would arrive by now
                self.assertEqual(pbx.connections, conns_before,
                                 "a refused connection was connected to the PBX")
                self.assertEqual(len(pbx.requests()), seen_before,
                                 [repr(m) for m in pbx.requests()[seen_before:]])
        finally:
            pbx.close()


class ResumeAfterExpiryTest(h.TestCase):
    """(3) A session saved while a short-lived client certificate was valid does not resume
    into an accepted connection once the certificate has expired; nothing reaches the PBX."""

    # Seconds the client certificate is valid from when it is made (longer under sanitizers).
    LIFETIME = int(h.t(4)) + 2

    def test_expired_certificate_session_not_accepted(self):
        p = h.pki()
        pbx = Pbx()
        try:
            with h.Proxy(sip_inbound_config(pbx.addr, workers=4)) as px:
                addr = px.addr("provider")
                # Made after the proxy is up, so the whole window is left for the full rounds.
                cert, key, not_after = make_short_lived_client_cert(p, self.LIFETIME)
                sp = _CertPKI(p, "short", cert, key)
                ctxs = {v: client_ctx(v, cert="short", p=sp) for v in VERSIONS}
                sessions = {}
                for v, ctx in ctxs.items():
                    sessions[v] = full_handshake_session(self, ctx, addr, pbx, f"valid-{v}")
                self.assertLess(time.time(), not_after,
                                "the full handshakes took longer than the certificate lived")
                px.wait_metric("tlsgate_handshakes_total", lambda v: v == 2,
                               listener="provider", result="ok")

                # Wait until the proxy must see the certificate as expired (now > notAfter).
                while time.time() < not_after + 1.5:
                    time.sleep(0.1)

                conns_before = pbx.connections
                seen_before = len(pbx.requests())
                for v, ctx in ctxs.items():
                    with self.subTest(tls=v):
                        check_not_accepted(self, px, pbx, ctx, addr, sessions[v],
                                           f"expired-{v}", f"TLS {v} after expiry",
                                           ("expired",))

                time.sleep(h.t(0.5))
                self.assertEqual(pbx.connections, conns_before,
                                 "a connection with an expired certificate reached the PBX")
                self.assertEqual(len(pbx.requests()), seen_before,
                                 [repr(m) for m in pbx.requests()[seen_before:]])
        finally:
            pbx.close()


if __name__ == "__main__":
    h.main()
