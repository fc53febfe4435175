#!/usr/bin/env python3
"""The admin listener's access rules (issue 10): the bearer token for POST /reload and /status,
the Host check against DNS rebinding, the cross-site POST shapes a browser can send, the source
allow-list (on a loopback and on a wildcard bind), `tlsgate check` refusing an admin off
loopback without an allow-list and a token, and /healthz answering while slow clients hold
connections.

Every request here is written by hand (http.client with our own Host, or a raw socket), from a
chosen source address on 127.0.0.0/8: Linux answers the whole /8 on lo, so 127.0.0.2 and
127.0.0.3 are other clients of the same admin."""

import http.client
import json
import os
import re
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

TOKEN = "it-admin-token-6f1c2a9d8e7b"


def token_file(token=TOKEN, mode=0o600):
    path = h.tmpfile("admin-token-")
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return str(path)


def request(addr, method, path, headers=None, source="127.0.0.1", body=None, timeout=5):
    """One request to |addr| ('HOST:PORT') from |source|, with exactly |headers| (Host too: None
    means the address as written). Returns (status, {lower-case header: value}, body text).
    Raises OSError / http.client errors when the server closes without answering."""
    host, port = h.split_addr(addr)
    conn = http.client.HTTPConnection(host, port, timeout=h.t(timeout),
                                      source_address=(source, 0))
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers = dict(headers or {})
        headers.setdefault("Host", addr)
        for k, v in headers.items():
            if v is not None:
                conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def admin_addr(px):
    return px.sections["admin"]["listen"]


def refused(px, reason):
    return px.metric("tlsgate_admin_refused_total", reason=reason)


def config(**admin):
    cfg = h.base_config()
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}",
                               "forward": f"127.0.0.1:{h.closed_port()}"}
    cfg["admin"].update(admin)
    return cfg


class TokenTest(h.TestCase):
    """A loopback admin with a token: /reload and /status need it, nothing else does."""

    def test_token_and_browser_shapes(self):
        with h.Proxy(config(token_file=token_file())) as px:
            a = admin_addr(px)
            json_ct = {"Content-Type": "application/json"}
            # No token, wrong token: 401, nothing reloaded.
            code, hdrs, body = request(a, "POST", "/reload", json_ct)
            self.assertEqual(code, 401, body)
            self.assertIn("Bearer", hdrs.get("www-authenticate", ""))
            code, hdrs, body = request(a, "POST", "/reload", {**json_ct, **bearer("nope" * 5)})
            self.assertEqual(code, 401, body)
            self.assertIn("invalid_token", hdrs.get("www-authenticate", ""))
            self.assertEqual(px.metric("tlsgate_reloads_total", result="ok"), 0)
            # The right token reloads (curl -X POST sends no Content-Type at all).
            code, _, body = request(a, "POST", "/reload", bearer())
            self.assertEqual(code, 200, body)
            self.assertEqual(json.loads(body)["result"], "ok")
            code, _, body = request(a, "POST", "/reload", {**json_ct, **bearer()})
            self.assertEqual(code, 200, body)
            # DNS rebinding: a name that is not ours, token or not.
            code, _, body = request(a, "POST", "/reload", {"Host": "attacker.example",
                                                           **bearer()})
            self.assertEqual(code, 421, body)
            port = h.split_addr(a)[1]
            code, _, _ = request(a, "GET", "/healthz", {"Host": f"attacker.example:{port}"})
            self.assertEqual(code, 421)
            # The cross-site shapes: a foreign Origin, a form-like Content-Type.
            code, _, body = request(a, "POST", "/reload", {"Origin": "http://evil.example",
                                                           "Content-Type": "text/plain",
                                                           **bearer()}, body=b"x")
            self.assertEqual(code, 403, body)
            code, _, body = request(a, "POST", "/reload", {"Origin": "http://evil.example",
                                                           **json_ct, **bearer()})
            self.assertEqual(code, 403, body)
            for ct in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                       "multipart/form-data; boundary=zz"):
                code, _, body = request(a, "POST", "/reload", {"Content-Type": ct, **bearer()})
                self.assertEqual(code, 403, f"{ct}: {body}")
            # Our own origin is fine.
            code, _, body = request(a, "POST", "/reload", {"Origin": f"http://{a}", **bearer()})
            self.assertEqual(code, 200, body)
            # /status reveals paths and peers: token only. /healthz and /metrics: open.
            code, _, _ = request(a, "GET", "/status")
            self.assertEqual(code, 401)
            code, _, body = request(a, "GET", "/status", bearer())
            self.assertEqual(code, 200, body)
            self.assertIn("certificate", json.loads(body))
            self.assertEqual(request(a, "GET", "/healthz")[0], 200)
            self.assertEqual(request(a, "GET", "/metrics")[0], 200)
            # Methods.
            code, hdrs, _ = request(a, "GET", "/reload", bearer())
            self.assertEqual(code, 405)
            self.assertEqual(hdrs.get("allow"), "POST")
            code, hdrs, _ = request(a, "POST", "/status", bearer())
            self.assertEqual(code, 405)
            self.assertEqual(hdrs.get("allow"), "GET, HEAD")
            self.assertEqual(request(a, "GET", "/nope")[0], 404)
            # Three reloads went through; every refusal is counted by reason and logged.
            self.assertEqual(px.metric("tlsgate_reloads_total", result="ok"), 3)
            self.assertEqual(refused(px, "token_missing"), 2)
            self.assertEqual(refused(px, "token_wrong"), 1)
            self.assertEqual(refused(px, "host"), 2)
            self.assertEqual(refused(px, "origin"), 2)
            self.assertEqual(refused(px, "content_type"), 3)
            self.assertEqual(refused(px, "method"), 2)
            self.assertEqual(refused(px, "not_found"), 1)
            self.assertEqual(refused(px, "source"), 0)
            line = px.wait_log("event=admin_refused", "reason=host")[0]
            self.assertIn("peer=127.0.0.1", line)
            self.assertIn("path=/reload", line)
            self.assertTrue(px.log_lines("event=admin_listening", "token=yes"))
            self.assertNotIn(TOKEN, px.log())

    def test_without_token_loopback_still_refuses_browser_shapes(self):
        """No token configured (the default): a local POST /reload works as before, but the
        shapes a browser can be made to send do not."""
        with h.Proxy(config()) as px:
            a = admin_addr(px)
            self.assertEqual(request(a, "POST", "/reload")[0], 200)
            self.assertEqual(request(a, "POST", "/reload", {"Host": "localhost"})[0], 200)
            self.assertEqual(request(a, "POST", "/reload", {"Host": "attacker.example"})[0], 421)
            self.assertEqual(request(a, "POST", "/reload", {"Origin": "http://evil.example",
                                                            "Content-Type": "text/plain"},
                                     body=b"reload")[0], 403)
            self.assertEqual(request(a, "GET", "/status", {"Host": "attacker.example"})[0], 421)
            self.assertEqual(request(a, "GET", "/status")[0], 200)
            self.assertEqual(px.metric("tlsgate_reloads_total", result="ok"), 2)

    def test_rebinding_with_extra_host_name(self):
        with h.Proxy(config(hosts="tlsgate-admin.test")) as px:
            a = admin_addr(px)
            port = h.split_addr(a)[1]
            for host in (a, f"localhost:{port}", "tlsgate-admin.test", f"TLSGATE-admin.test:{port}"):
                self.assertEqual(request(a, "GET", "/healthz", {"Host": host})[0], 200, host)
            for host in (f"127.0.0.2:{port}", f"tlsgate-admin.test:{port + 1}",
                         "tlsgate-admin.test.attacker.example", "localhost.", f"[::1]:{port}"):
                self.assertEqual(request(a, "GET", "/healthz", {"Host": host})[0], 421, host)


def dropped(addr, source):
    """True when a request from |source| gets no HTTP answer (the connection is closed)."""
    try:
        request(addr, "GET", "/healthz", source=source, timeout=3)
    except (OSError, http.client.HTTPException):
        return True
    return False


class AllowListTest(h.TestCase):

    def test_loopback_bind_allow_list(self):
        """127.0.0.1/32 keeps 127.0.0.2 out; 127.0.0.0/8 lets it in."""
        with h.Proxy(config(allow="127.0.0.1/32, ::1/128")) as px:
            a = admin_addr(px)
            self.assertEqual(request(a, "GET", "/healthz", source="127.0.0.1")[0], 200)
            self.assertTrue(dropped(a, "127.0.0.2"))
            self.assertTrue(dropped(a, "127.0.0.3"))
            self.assertEqual(refused(px, "source"), 2)
            px.wait_log("event=admin_refused", "reason=source", "peer=127.0.0.2")
        with h.Proxy(config(allow="127.0.0.0/8")) as px:
            a = admin_addr(px)
            self.assertEqual(request(a, "GET", "/healthz", source="127.0.0.2")[0], 200)
            self.assertEqual(refused(px, "source"), 0)

    def test_wildcard_bind_needs_allow_and_token(self):
        """A wildcard bind (off loopback as far as the rules go): the allow-list and the token
        both hold. The allow-list admits only 127.0.0.1, so nothing else can reach it even
        while the test runs."""
        cfg = config(listen=f"0.0.0.0:{h.AUTO}", allow="127.0.0.1/32", token_file=token_file())
        with h.Proxy(cfg) as px:
            port = h.split_addr(admin_addr(px))[1]
            a = f"127.0.0.1:{port}"
            self.assertTrue(dropped(a, "127.0.0.3"))
            self.assertEqual(request(a, "GET", "/healthz")[0], 200)
            self.assertEqual(request(a, "GET", "/healthz", {"Host": f"localhost:{port}"})[0], 200)
            self.assertEqual(request(a, "GET", "/healthz", {"Host": f"0.0.0.0:{port}"})[0], 200)
            self.assertEqual(request(a, "GET", "/healthz", {"Host": f"127.0.0.2:{port}"})[0], 421)
            self.assertEqual(request(a, "POST", "/reload")[0], 401)
            self.assertEqual(request(a, "GET", "/status")[0], 401)
            self.assertEqual(request(a, "POST", "/reload", bearer())[0], 200)
            self.assertEqual(refused(px, "source"), 1)


class CheckTest(h.TestCase):
    """`tlsgate check` (and `run`) refuse an admin off loopback without both an allow-list and
    a token, naming the file, the line and the key; a token file others can read is refused."""

    def write(self, **admin):
        cfg = config(**admin)
        cfg["inbound provider"]["listen"] = f"127.0.0.1:{h.free_port()}"
        if cfg["admin"]["listen"].endswith(h.AUTO):
            cfg["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"
        path = h.write_config(cfg)
        lines = path.read_text().splitlines()
        return path, lines

    def line_of(self, lines, key):
        for i, line in enumerate(lines, 1):
            if line.startswith(key + " ="):
                return i
        raise KeyError(key)

    def test_open_admin_refused(self):
        port = h.free_port()
        path, lines = self.write(listen=f"0.0.0.0:{port}")
        n = self.line_of(lines, "listen")
        for cmd in ("check", "run"):
            r = h.run([h.TLSGATE, cmd, "-c", path], timeout=20)
            self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
            self.assertIn(f"{path}:{n}: admin.listen: 0.0.0.0:{port} is not a loopback address: "
                          f"it needs admin.allow (source networks) and admin.token_file "
                          f"(bearer token)", r.stderr)
        path, lines = self.write(listen=f"0.0.0.0:{port}", allow="10.0.0.0/8")
        r = h.run([h.TLSGATE, "check", "-c", path])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertRegex(r.stderr, rf"{re.escape(str(path))}:\d+: admin.listen: .* it needs "
                                   r"admin.token_file")
        path, lines = self.write(listen=f"0.0.0.0:{port}", token_file=token_file())
        r = h.run([h.TLSGATE, "check", "-c", path])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertRegex(r.stderr, r"admin.listen: .* it needs admin.allow \(source networks\)$")
        path, lines = self.write(listen=f"0.0.0.0:{port}", allow="10.0.0.0/8",
                                 token_file=token_file())
        r = h.run([h.TLSGATE, "check", "-c", path])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_token_file_checked(self):
        for mode in (0o644, 0o640, 0o604, 0o620):
            tf = token_file(mode=mode)
            path, lines = self.write(token_file=tf)
            n = self.line_of(lines, "token_file")
            r = h.run([h.TLSGATE, "check", "-c", path])
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(f"{path}:{n}: admin.token_file: {tf} has mode {mode:04o}: group and "
                          f"others must have no access (chmod 600)", r.stderr)
        for token, why in (("short", "the token must be 16..256 characters"),
                           ("x" * 257, "the token must be 16..256 characters"),
                           ("two words here, long enough", "printable ASCII without blanks")):
            tf = token_file(token=token)
            path, _ = self.write(token_file=tf)
            r = h.run([h.TLSGATE, "check", "-c", path])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(why, r.stderr)
        path, _ = self.write(token_file=str(h.workdir() / "no-such-token"))
        r = h.run([h.TLSGATE, "run", "-c", path])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"admin.token_file: cannot open .*no-such-token: No such file")
        path, _ = self.write(token_file=token_file(mode=0o400))
        r = h.run([h.TLSGATE, "check", "-c", path])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class Slowloris(threading.Thread):
    """|n| connections from |source|, each sending a request line and then one more header
    line every |interval| seconds until stopped; counts how many the server closed."""

    def __init__(self, addr, n, interval, source="127.0.0.1"):
        super().__init__(daemon=True)
        self.addr = h.split_addr(addr)
        self.n = n
        self.interval = interval
        self.source = source
        self.stop = threading.Event()
        self.socks = []
        self.closed = 0
        self.opened = 0

    def run(self):
        for _ in range(self.n):
            try:
                s = socket.create_connection(self.addr, timeout=2, source_address=(self.source, 0))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: " +
                          f"{self.addr[0]}:{self.addr[1]}".encode() + b"\r\n")
                self.socks.append(s)
                self.opened += 1
            except OSError:
                self.closed += 1
        i = 0
        while not self.stop.wait(self.interval):
            i += 1
            for s in list(self.socks):
                try:
                    s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
                except OSError:
                    self.socks.remove(s)
                    s.close()
                    self.closed += 1
        for s in self.socks:
            s.close()

    def alive(self):
        """Connections the server has not closed (a closed one reads EOF or a reset)."""
        n = 0
        for s in list(self.socks):
            s.setblocking(False)
            try:
                data = s.recv(1, socket.MSG_PEEK)
                alive = False if data == b"" else True
            except BlockingIOError:
                alive = True
            except OSError:
                alive = False
            s.setblocking(True)
            n += alive
        return n

    def finish(self):
        self.stop.set()
        self.join(timeout=h.t(10))


def healthz_latency(addr, source):
    start = time.monotonic()
    code, _, body = request(addr, "GET", "/healthz", source=source, timeout=5)
    return code, time.monotonic() - start


class SlowClientsTest(h.TestCase):
    """70+ connections that each send a header line every few seconds. What holds:
    - another source address (127.0.0.2) gets /healthz within a second throughout: one address
      holds at most 8 admin connections (the rest are closed on accept), and 4 threads serve;
    - the same source address is refused while its 8 slots are held, and answered again once
      they are released;
    - a connection that says nothing for 3 s is closed, so a header line every 4 s (the
      tester's shape) holds nothing."""

    def test_healthz_answers_under_slow_clients(self):
        with h.Proxy(config()) as px:
            a = admin_addr(px)
            loris = Slowloris(a, 80, interval=1.5)
            loris.start()
            try:
                h.wait_for(lambda: loris.opened + loris.closed == 80, 20, "80 slow connections")
                worst = 0.0
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    code, took = healthz_latency(a, "127.0.0.2")
                    self.assertEqual(code, 200)
                    worst = max(worst, took)
                    time.sleep(0.25)
                self.assertLess(worst, h.t(1.0), f"/healthz took {worst:.2f} s")
                print(f"slowest /healthz from 127.0.0.2 under 80 slow clients: "
                      f"{worst * 1000:.1f} ms", file=sys.stderr)
                # The slow clients still hold their slots (at most 8 from one address)...
                held = loris.alive()
                self.assertGreater(held, 0)
                self.assertLessEqual(held, 8)
                # ... so their own address is refused meanwhile.
                self.assertTrue(dropped(a, "127.0.0.1"))
            finally:
                loris.finish()
            # Released: the same address is answered again.
            code, took = h.wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
                healthz_latency(a, "127.0.0.1")), 5, "/healthz from 127.0.0.1 again")
            self.assertLess(took, h.t(1.0))

    def test_idle_timeout_closes_four_second_dribble(self):
        with h.Proxy(config()) as px:
            a = admin_addr(px)
            loris = Slowloris(a, 70, interval=4)
            loris.start()
            try:
                h.wait_for(lambda: loris.opened + loris.closed == 70, 20, "70 slow connections")
                start = time.monotonic()
                while time.monotonic() - start < 5:
                    code, took = healthz_latency(a, "127.0.0.2")
                    self.assertEqual(code, 200)
                    self.assertLess(took, h.t(1.0))
                    time.sleep(0.25)
                # 3 s without a byte: every connection of the slow client is gone, and its
                # address gets /healthz although the client is still dribbling.
                h.wait_for(lambda: loris.alive() == 0, 5, "the idle timeout to close them all")
                code, took = healthz_latency(a, "127.0.0.1")
                self.assertEqual(code, 200)
            finally:
                loris.finish()


if __name__ == "__main__":
    h.main()
