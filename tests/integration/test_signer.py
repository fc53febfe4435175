#!/usr/bin/env python3
"""Our private key signs off the I/O loop ([tls] signers, proxy/signer.c): full handshakes in
both directions complete through the signer pool, every signature counted by the pool, while an
established connection keeps relaying; with signers = 0 the key signs inline as before; a bad
value is refused with FILE:LINE."""

import socket
import sys
import threading

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402


def loop_config(echo_addr, signers):
    """An outbound listener whose target is the same tlsgate's inbound listener: every
    connection through it makes two full handshakes, each side signing once with our key."""
    cfg = h.base_config(peer_names="sip.um.example.net, sbc.tlsgate.test")
    if signers is not None:
        cfg["tls"]["signers"] = str(signers)
    inbound_port = h.free_port()
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{inbound_port}", "forward": echo_addr}
    cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}",
                           "connect": f"127.0.0.1:{inbound_port}"}
    return cfg


def echo_once(addr, payload):
    """Send |payload| through |addr| (plain) and read the echo back; returns it."""
    host, port = h.split_addr(addr)
    with socket.create_connection((host, port), timeout=h.t(15)) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


class SignerPoolTest(h.TestCase):

    N = 12

    def run_connections(self, px):
        """N connections through the loop at once, each echoing its own payload; and one
        long-lived connection that keeps round-tripping while they handshake."""
        stop = threading.Event()
        trunk = {"rounds": 0, "error": None}

        def keep_talking():
            host, port = h.split_addr(px.addr("pbx"))
            try:
                with socket.create_connection((host, port), timeout=h.t(15)) as s:
                    i = 0
                    while not stop.is_set() or i < 3:
                        msg = b"ping %06d\n" % i
                        s.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            chunk = s.recv(4096)
                            if not chunk:
                                raise OSError("closed")
                            got += chunk
                        if got != msg:
                            raise OSError(f"echo differs: {got!r}")
                        i += 1
                    trunk["rounds"] = i
            except OSError as e:
                trunk["error"] = repr(e)

        t = threading.Thread(target=keep_talking, daemon=True)
        t.start()
        results = [None] * self.N

        def one(k):
            payload = h.random_bytes(20000 + k, seed=500 + k)
            results[k] = echo_once(px.addr("pbx"), payload) == payload

        workers = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(self.N)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=h.t(30))
        stop.set()
        t.join(timeout=h.t(15))
        self.assertEqual(results, [True] * self.N)
        self.assertIsNone(trunk["error"], "the established connection broke")
        self.assertGreaterEqual(trunk["rounds"], 3)

    def test_pool_signs_both_directions(self):
        with h.Echo() as echo, h.Proxy(loop_config(echo.addr, 2)) as px:
            self.run_connections(px)
            full = self.N + 1  # each connection: one outbound and one inbound full handshake
            for listener in ("pbx", "provider"):
                px.wait_metric("tlsgate_handshakes_total", lambda v: v == full,
                               listener=listener, result="ok")
            px.wait_metric("tlsgate_signatures_total", lambda v: v == 2 * full, by="pool",
                           result="ok")
            self.assertEqual(px.metric("tlsgate_signatures_total", by="pool", result="failed"), 0)
            self.assertEqual(px.metric("tlsgate_signatures_total", by="pool",
                                       result="queue_full"), 0)
            px.wait_metric("tlsgate_sign_queue", lambda v: v == 0)

    def test_inline_when_zero(self):
        with h.Echo() as echo, h.Proxy(loop_config(echo.addr, 0)) as px:
            self.run_connections(px)
            px.wait_metric("tlsgate_handshakes_total", lambda v: v == self.N + 1,
                           listener="provider", result="ok")
            self.assertNotIn("tlsgate_signatures_total", px.metrics(),
                             "no pool: nothing signs off the loop")

    def test_default_is_one_signer(self):
        with h.Echo() as echo, h.Proxy(loop_config(echo.addr, None)) as px:
            self.assertEqual(echo_once(px.addr("pbx"), b"x" * 1000), b"x" * 1000)
            px.wait_metric("tlsgate_signatures_total", lambda v: v == 2, by="pool", result="ok")

    def test_bad_value_names_file_and_line(self):
        with h.Echo() as echo:
            cfg = loop_config(echo.addr, 65)
            for sect in cfg.values():  # `check` reads the file as it is: real ports
                for k, v in sect.items():
                    if isinstance(v, str) and v.endswith(f":{h.AUTO}"):
                        sect[k] = v[:-len(h.AUTO)] + str(h.free_port())
            path = h.write_config(cfg)
            r = h.run([h.TLSGATE, "check", "-c", str(path)])
            self.assertNotEqual(r.returncode, 0)
            self.assertRegex(r.stderr, rf"{path}:\d+: tls.signers: .*65", r.stderr)


if __name__ == "__main__":
    h.main()
