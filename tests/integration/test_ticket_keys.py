#!/usr/bin/env python3
"""Session tickets shared across instances: `[tls] ticket_keys = FILE`.

1. Shared: two tlsgate instances A and B (own ports, same certificate, same key file): a
   TLS 1.2 and a TLS 1.3 session from A resumes on B (`handshake_ok ... resumed=yes` in B's
   log, data flows through B). An instance C with the same keys but a peer_names list without
   the client's name does not accept the resumed session: B and C each re-verify the identity
   of a session resumed there (tg_verify_resumed), whoever issued the ticket.
2. Without the file each process has its own random keys: a session from A does not resume on
   B (a full handshake follows).
3. Rotation: A gets a file whose newest key is new (the old ones kept) and reloads: the old
   ticket still resumes on A; a new ticket is issued under the new key (B, still on the old
   file, cannot resume it). After the old keys are removed and A reloads again, the old
   session falls back to a full handshake.
4. `tlsgate check` refuses a malformed key file with FILE:LINE, and one group or others may
   read.

The client is Python's ssl (explicit `session=`), the backend tg-echo; all on 127.0.0.1."""

import os
import signal
import socket
import ssl
import sys
import unittest

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

FQDN = "sbc.tlsgate.test"
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def new_key_file(name, keys=3):
    """A fresh key file written by `tlsgate ticket-keys`; returns its path."""
    path = h.workdir() / name
    if path.exists():
        path.unlink()
    r = h.run([h.TLSGATE, "ticket-keys", "--out", path, "--keys", str(keys)])
    if r.returncode != 0:
        raise AssertionError(f"tlsgate ticket-keys failed: {r.stdout}{r.stderr}")
    return path


def key_lines(path):
    return [l for l in path.read_text().splitlines() if l and not l.startswith("#")]


def replace_key_file(path, lines):
    """Replace |path| atomically (mode 0600) with |lines|, the last the newest."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def config(echo_addr, keys=None, **tls):
    cfg = h.base_config(**tls)
    if keys is not None:
        cfg["tls"]["ticket_keys"] = str(keys)
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo_addr}
    return cfg


def connect(ctx, addr, session=None, timeout=10):
    """A handshaken TLS socket to |addr|, offering |session| when given."""
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


def echo_round(s, payload=b"ticket-keys ping"):
    s.sendall(payload)
    return h.tls_recv_exact(s, len(payload)) == payload


def session_from(ctx, addr):
    """A full handshake and one echo round (so a TLS 1.3 ticket has arrived); the session."""
    s = connect(ctx, addr)
    try:
        assert not s.session_reused, "the first connection must be a full handshake"
        assert echo_round(s), "no echo"
        sess = s.session
    finally:
        s.close()
    assert sess is not None and sess.has_ticket, "no session ticket was issued"
    return sess


def try_resume(ctx, addr, session):
    """Connect offering |session|: (session_reused, the echo came back)."""
    s = connect(ctx, addr, session=session)
    try:
        reused = s.session_reused
        try:
            ok = echo_round(s)
        except (AssertionError, ssl.SSLError, OSError):
            ok = False
        return reused, ok
    finally:
        s.close()


def reload(px):
    before = px.metric("tlsgate_reloads_total", result="ok")
    px.proc.send_signal(signal.SIGHUP)
    px.wait_metric("tlsgate_reloads_total", lambda v: v == before + 1, result="ok")


class SharedKeysTest(h.TestCase):
    def test_session_from_a_resumes_on_b(self):
        keys = new_key_file("shared.keys")
        with h.Echo() as echo, h.Proxy(config(echo.addr, keys)) as a, \
                h.Proxy(config(echo.addr, keys)) as b:
            for v, version in VERSIONS.items():
                with self.subTest(tls=v):
                    ctx = h.client_context(version=version)
                    sess = session_from(ctx, a.addr("provider"))
                    before = len(b.log_lines("event=handshake_ok", "resumed=yes"))
                    reused, ok = try_resume(ctx, b.addr("provider"), sess)
                    self.assertTrue(reused, f"TLS {v}: the session from A did not resume on B")
                    self.assertTrue(ok, f"TLS {v}: no data through B after resumption")
                    lines = b.wait_log("event=handshake_ok", "resumed=yes")
                    self.assertEqual(len(lines), before + 1, lines)
                    self.assertIn(f"version=TLSv{v}", lines[-1])

    def test_resumed_session_is_reverified_on_the_other_instance(self):
        """C shares the keys but does not accept the client's name: the ticket decrypts, the
        session's identity is checked against C's own policy, and nothing is accepted."""
        keys = new_key_file("reverify.keys")
        with h.Echo() as echo, h.Proxy(config(echo.addr, keys)) as a, \
                h.Proxy(config(echo.addr, keys, peer_names="sip.provider.test"),
                        allow_errors=True) as c:
            for v, version in VERSIONS.items():
                with self.subTest(tls=v):
                    ctx = h.client_context(version=version)
                    sess = session_from(ctx, a.addr("provider"))
                    try:
                        reused, ok = try_resume(ctx, c.addr("provider"), sess)
                    except (ssl.SSLError, OSError) as e:
                        reused, ok = f"handshake failed: {e!r}", False
                    sys.stderr.write(f"TLS {v} on C: reused={reused} data={ok}\n")
                    self.assertFalse(ok, f"TLS {v}: C accepted a session for a name it does "
                                         f"not allow")
            self.assertEqual(c.log_lines("event=handshake_ok"), [],
                             "C logged an accepted handshake")


class NoKeyFileTest(h.TestCase):
    def test_without_file_sessions_do_not_cross_instances(self):
        with h.Echo() as echo, h.Proxy(config(echo.addr)) as a, \
                h.Proxy(config(echo.addr)) as b:
            for v, version in VERSIONS.items():
                with self.subTest(tls=v):
                    ctx = h.client_context(version=version)
                    sess = session_from(ctx, a.addr("provider"))
                    # Still resumable on A itself (its own random keys)...
                    self.assertEqual(try_resume(ctx, a.addr("provider"), sess), (True, True))
                    # ... but not on B: a full handshake.
                    self.assertEqual(try_resume(ctx, b.addr("provider"), sess), (False, True),
                                     f"TLS {v}: a session from A resumed on B without "
                                     f"shared keys")


class RotationTest(h.TestCase):
    def test_rotate_then_retire_old_keys(self):
        keys = new_key_file("rotate.keys", keys=2)
        old = key_lines(keys)
        fresh = key_lines(new_key_file("fresh.keys", keys=1))
        self.assertEqual(len(old), 2)
        with h.Echo() as echo, h.Proxy(config(echo.addr, keys)) as a:
            # B keeps the original file (a copy: A's file is about to change).
            b_keys = h.workdir() / "rotate-b.keys"
            replace_key_file(b_keys, old)
            with h.Proxy(config(echo.addr, b_keys)) as b:
                ctxs = {v: h.client_context(version=ver) for v, ver in VERSIONS.items()}
                old_sessions = {v: session_from(ctx, a.addr("provider"))
                                for v, ctx in ctxs.items()}

                # 1. A new newest key, the old ones kept: old tickets still resume on A, new
                # tickets are under the new key (B, without it, cannot resume them).
                replace_key_file(keys, old + fresh)
                reload(a)
                for v, ctx in ctxs.items():
                    with self.subTest(tls=v, step="rotated"):
                        self.assertEqual(try_resume(ctx, a.addr("provider"), old_sessions[v]),
                                         (True, True),
                                         f"TLS {v}: an old ticket no longer resumes on A")
                        new_sess = session_from(ctx, a.addr("provider"))
                        self.assertEqual(try_resume(ctx, a.addr("provider"), new_sess),
                                         (True, True))
                        self.assertEqual(try_resume(ctx, b.addr("provider"), new_sess),
                                         (False, True),
                                         f"TLS {v}: the new ticket is not under the new key "
                                         f"(B, with the old keys only, resumed it)")

                # 2. The old keys removed: the old session falls back to a full handshake.
                replace_key_file(keys, fresh)
                reload(a)
                for v, ctx in ctxs.items():
                    with self.subTest(tls=v, step="retired"):
                        self.assertEqual(try_resume(ctx, a.addr("provider"), old_sessions[v]),
                                         (False, True),
                                         f"TLS {v}: a ticket under a removed key resumed")


class CheckTest(h.TestCase):
    def _check(self, keys):
        cfg = config("127.0.0.1:9", keys)
        cfg["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"  # check binds nothing
        cfg["inbound provider"]["listen"] = f"127.0.0.1:{h.free_port()}"
        path = h.write_config(cfg)
        return h.run([h.TLSGATE, "check", "-c", path])

    def test_check_reports_key_file_problems(self):
        keys = new_key_file("check.keys")
        r = self._check(keys)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("3 ticket keys", r.stdout)

        lines = key_lines(keys)
        replace_key_file(keys, [lines[0], lines[1][:-8] + "!!!!!!!="])
        r = self._check(keys)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{keys}:2: not valid base64", r.stderr)

        replace_key_file(keys, lines[:2] + ["QUJD"])  # 3 bytes
        r = self._check(keys)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{keys}:3: a key is 80 bytes, this line decodes to 3", r.stderr)

        replace_key_file(keys, lines)
        os.chmod(keys, 0o644)
        r = self._check(keys)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{keys}:0: has mode 0644: group and others must have no access",
                      r.stderr)


if __name__ == "__main__":
    h.main()
