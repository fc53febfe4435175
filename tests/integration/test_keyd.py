#!/usr/bin/env python3
"""Key isolation (tlsgate-keyd, [tls] key = keyd:PATH): tlsgate runs as a user that cannot read
the private key file, and every full handshake is signed by keyd. keyd down: new handshakes fail
fast with a clear reason and a metric while an established connection keeps relaying; keyd
restarted: picked up without restarting tlsgate. keyd refuses a peer whose uid it was not told
to serve; `check` says when keyd is missing or holds another key; a reload keeps working."""

import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

NOBODY = 65534
KEYD = os.environ.get("TLSGATE_KEYD") or str(Path(h.TLSGATE).parent / "tlsgate-keyd")


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


class Keyd:
    """tlsgate-keyd on |sock| serving |keys| to |uids|."""

    def __init__(self, sock, keys, uids=(NOBODY,)):
        self.sock, self.keys, self.uids = sock, keys, uids
        self.log_path = h.tmpfile("keyd-", ".log")
        self.proc = None

    def start(self):
        cmd = [KEYD, "--socket", self.sock, "--socket-group", str(NOBODY)]
        for k in self.keys:
            cmd += ["--key", k]
        for u in self.uids:
            cmd += ["--allow-uid", str(u)]
        self._log = open(self.log_path, "ab")
        self.proc = h.popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        h.wait_for(lambda: self.proc.poll() is not None or os.path.exists(self.sock), 10,
                   "keyd's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"keyd exited {self.proc.returncode}: {self.log()}")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=h.t(10))
        self._log.close()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class KeydTest(h.TestCase):

    @classmethod
    def setUpClass(cls):
        # A world-readable place for what tlsgate (as nobody) must read: the binary, the
        # certificates and the configuration. The key stays where make-pki put it, root's 0600.
        cls.dir = Path(tempfile.mkdtemp(prefix="tg-keyd-"))
        cls.dir.chmod(0o755)
        p = h.pki()
        cls.key = p.key("server")
        os.chmod(cls.key, 0o600)
        cls.cert = shutil.copy(p.cert("server"), cls.dir / "server.pem")
        cls.ca = shutil.copy(p.ca, cls.dir / "ca.pem")
        cls.binary = shutil.copy(h.TLSGATE, cls.dir / "tlsgate")
        for f in (cls.cert, cls.ca):
            os.chmod(f, 0o644)
        os.chmod(cls.binary, 0o755)
        os.chmod(h.workdir(), 0o755)  # the configuration files and logs the harness writes
        cls.sock = str(cls.dir / "keyd.sock")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def config(self, echo_addr, **tls):
        cfg = h.base_config(cert=self.cert, ca=self.ca, key=f"keyd:{self.sock}", **tls)
        cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo_addr}
        return cfg

    def proxy(self, cfg, **kw):
        return h.Proxy(cfg, binary=self.binary, preexec=as_nobody, **kw)

    def roundtrip(self, px, data=b"INVITE sip:x SIP/2.0\r\n\r\n"):
        s = h.tls_connect(px.addr("provider"))
        try:
            s.sendall(data)
            self.assertEqual(h.tls_recv_exact(s, len(data)), data)
        finally:
            s.close()

    def test_handshakes_signed_by_keyd_and_key_never_read(self):
        with Keyd(self.sock, [self.key]) as kd, h.Echo() as echo, \
                self.proxy(self.config(echo.addr)) as px:
            for _ in range(5):
                self.roundtrip(px)
            px.wait_metric("tlsgate_signatures_total", lambda v: v == 5, by="pool", result="ok")
            # tlsgate runs as nobody: the key file is not readable to it at all.
            st = os.stat(self.key)
            self.assertEqual(stat.S_IMODE(st.st_mode) & 0o077, 0)
            self.assertNotEqual(st.st_uid, NOBODY)
            with open(f"/proc/{px.proc.pid}/status") as f:
                uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
            self.assertEqual(set(uids), {str(NOBODY)})
            self.assertRegex(kd.log(), r"event=keyd_peer uid=65534")

    def test_keyd_down_fails_fast_and_restart_is_picked_up(self):
        with h.Echo() as echo:
            kd = Keyd(self.sock, [self.key]).start()
            try:
                # A long handshake time-out, so that failing fast (keyd unreachable: at once)
                # and failing by the time-out stay far apart even on a loaded machine.
                cfg = self.config(echo.addr, handshake_timeout_ms=20000)
                with self.proxy(cfg, allow_errors=True) as px:
                    live = h.tls_connect(px.addr("provider"))
                    try:
                        live.sendall(b"before")
                        self.assertEqual(h.tls_recv_exact(live, 6), b"before")
                        kd.stop()
                        # New handshakes fail at once with the reason, and are counted.
                        t0 = time.monotonic()
                        with self.assertRaises((ssl.SSLError, OSError)):
                            h.tls_connect(px.addr("provider"), timeout=25).close()
                        took = time.monotonic() - t0
                        self.assertLess(took, h.t(8), f"did not fail fast: {took:.1f} s")
                        px.wait_metric("tlsgate_signatures_total", lambda v: v >= 1, by="pool",
                                       result="keyd_down")
                        px.wait_log("event=keyd_unreachable")
                        # The established connection goes on.
                        live.sendall(b"during")
                        self.assertEqual(h.tls_recv_exact(live, 6), b"during")
                        # keyd comes back: the next handshake works, no restart of tlsgate.
                        kd = Keyd(self.sock, [self.key]).start()
                        self.roundtrip(px)
                        live.sendall(b"after")
                        self.assertEqual(h.tls_recv_exact(live, 5), b"after")
                    finally:
                        live.close()
            finally:
                kd.stop()

    def test_reload_with_keyd(self):
        with Keyd(self.sock, [self.key]), h.Echo() as echo, \
                self.proxy(self.config(echo.addr)) as px:
            self.roundtrip(px)
            px.proc.send_signal(signal.SIGHUP)
            px.wait_log("event=reload trigger=SIGHUP result=ok")
            self.roundtrip(px)

    def test_keyd_refuses_other_uids(self):
        with Keyd(self.sock, [self.key], uids=(12345,)) as kd:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(h.t(5))
            s.connect(self.sock)
            try:
                s.send(b"TGK1" + bytes(40 + 32))
                got = s.recv(2048)
            except (ConnectionResetError, BrokenPipeError):  # refused before or after the send
                got = b""
            self.assertEqual(got, b"", "keyd answered a uid it does not serve")
            s.close()
            h.wait_for(lambda: "event=keyd_peer_refused uid=0" in kd.log(), 5, "the refusal")

    def test_keyd_rejects_malformed_requests(self):
        with Keyd(self.sock, [self.key], uids=(0,)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(h.t(5))
            s.connect(self.sock)
            # (A packet of 0 bytes is end-of-stream on SOCK_SEQPACKET: not a request.)
            for pkt in (b"TGK1", b"TGK1\0\0\0\7" + bytes(100), b"x" * 5000):
                s.send(pkt)
                r = s.recv(2048)
                self.assertGreaterEqual(len(r), 12)
                self.assertEqual(r[8:10], b"\0\2", f"{pkt[:12]!r}: want bad_request")
                self.assertEqual(r[10:12], b"\0\0", "no signature on a refusal")
            s.close()

    def test_check_names_a_missing_or_wrong_keyd(self):
        with h.Echo() as echo:
            cfg = self.config(echo.addr)
            for sect in cfg.values():
                for k, v in sect.items():
                    if isinstance(v, str) and v.endswith(f":{h.AUTO}"):
                        sect[k] = v[:-len(h.AUTO)] + str(h.free_port())
            path = h.write_config(cfg)
            r = h.run([self.binary, "check", "-c", str(path)])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(f"keyd:{self.sock}: cannot connect", r.stderr)
            other = h.pki().key("client")
            with Keyd(self.sock, [other], uids=(0,)):
                r = h.run([self.binary, "check", "-c", str(path)])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("keyd holds no private key for our certificate's public key", r.stderr)
            with Keyd(self.sock, [other, self.key], uids=(0,)):
                r = h.run([self.binary, "check", "-c", str(path)])
            self.assertEqual(r.returncode, 0, r.stderr)
            cfg["tls"]["signers"] = "0"
            path = h.write_config(cfg)
            r = h.run([self.binary, "check", "-c", str(path)])
            self.assertIn("needs tls.signers >= 1", r.stderr)


if __name__ == "__main__":
    h.main()
