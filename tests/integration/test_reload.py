#!/usr/bin/env python3
"""Hot reload (SIGHUP and POST /reload) while a connection streams data: a bad certificate is
refused and changes nothing; a good one is presented to new handshakes while the open stream
continues undisturbed; certificate files replaced by rename are picked up."""

import json
import os
import shutil
import signal
import ssl
import threading
import time
import unittest
import urllib.request

import harness as h


def make_server_cert(p, name, fqdn="sbc.tlsgate.test", days=90):
    """A second server certificate for |fqdn| signed by the test CA (new key, new serial)."""
    d = p.dir / "reload"
    d.mkdir(exist_ok=True)
    key, csr, pem = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    ext = d / f"{name}.ext"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth, clientAuth\n"
                   f"subjectAltName = DNS:{fqdn}\n")
    for args in (["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                  str(key)],
                 ["req", "-new", "-key", str(key), "-subj", f"/CN={fqdn}", "-out", str(csr)],
                 ["x509", "-req", "-in", str(csr), "-CA", p.ca, "-CAkey", p.key("ca"),
                  "-CAcreateserial", "-CAserial", str(d / "ca.srl"), "-days", str(days), "-sha256",
                  "-extfile", str(ext), "-out", str(pem)]):
        r = h.run([h.OPENSSL, *args], timeout=60)
        if r.returncode != 0:
            raise RuntimeError(r.stdout + r.stderr)
    os.chmod(key, 0o600)
    return str(pem), str(key)


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def served_der(addr):
    s = h.tls_connect(addr)
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def post_reload(px):
    # urllib would send an empty body as a form (Content-Type application/x-www-form-urlencoded),
    # which the admin refuses as a possible cross-site request.
    req = urllib.request.Request(px.admin + "/reload", data=b"", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=h.t(10)) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def replace_by_rename(src, dst):
    """What certificate tools and orchestrators do: write a new file, rename it over the old."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.rename(tmp, dst)


class Streamer(threading.Thread):
    """Keeps one TLS connection streaming request/echo rounds until stopped; records any
    mismatch or error."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.sock = h.tls_connect(addr)
        self.der = self.sock.getpeercert(binary_form=True)
        self.stop = threading.Event()
        self.rounds = 0
        self.error = None

    def run(self):
        try:
            n = 0
            while not self.stop.is_set():
                payload = bytes((n + i) & 0xFF for i in range(4096))
                self.sock.sendall(payload)
                got = h.tls_recv_exact(self.sock, len(payload))
                if got != payload:
                    raise AssertionError(f"round {n}: echo differs")
                n += 1
                self.rounds = n
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def rounds_after(self, extra, timeout=10):
        start = self.rounds
        h.wait_for(lambda: self.rounds >= start + extra or self.error is not None,
                   timeout, "the stream to make progress")
        if self.error is not None:
            raise AssertionError(f"stream broke: {self.error!r}")


class ReloadTest(h.TestCase):
    def test_reload_while_streaming(self):
        p = h.pki()
        work = h.workdir() / "reload-files"
        work.mkdir(exist_ok=True)
        cert, key = str(work / "sbc.pem"), str(work / "sbc.key")
        shutil.copyfile(p.cert("server"), cert)
        shutil.copyfile(p.key("server"), key)
        os.chmod(key, 0o600)
        new_cert, new_key = make_server_cert(p, "second")
        self.assertNotEqual(der_of(new_cert), der_of(cert))
        with h.Echo() as echo:
            cfg = h.base_config(cert=cert, key=key)
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                addr = px.addr("provider")
                old_der = der_of(cert)
                stream = Streamer(addr)
                self.assertEqual(stream.der, old_der)
                stream.start()
                try:
                    stream.rounds_after(20)

                    # 1. A bad certificate (self-signed) replaces ours by rename: refused.
                    replace_by_rename(p.cert("selfsigned"), cert)
                    replace_by_rename(p.key("selfsigned"), key)
                    code, body = post_reload(px)
                    self.assertEqual(code, 422, body)
                    self.assertEqual(body["result"], "failed")
                    self.assertIn("not_self_signed", body["reason"])
                    stream.rounds_after(20)
                    self.assertEqual(served_der(addr), old_der, "a refused reload changed nothing")
                    px.wait_metric("tlsgate_reloads_total", lambda v: v == 1, result="failed")
                    status = px.status()
                    self.assertEqual(status["last_reload"]["result"], "failed")
                    self.assertIn("not_self_signed", status["last_reload"]["reason"])
                    self.assertEqual(status["certificate"]["serial"].lower().lstrip("0"),
                                     h.cert_serial(p.cert("server")))

                    # The same by SIGHUP: refused too, logged with its reason.
                    px.proc.send_signal(signal.SIGHUP)
                    px.wait_metric("tlsgate_reloads_total", lambda v: v == 2, result="failed")
                    px.wait_log("event=reload trigger=SIGHUP result=failed")

                    # 2. A good certificate by rename + SIGHUP: new handshakes get it.
                    replace_by_rename(new_key, key)
                    replace_by_rename(new_cert, cert)
                    px.proc.send_signal(signal.SIGHUP)
                    px.wait_metric("tlsgate_reloads_total", lambda v: v == 1, result="ok")
                    h.wait_for(lambda: served_der(addr) == der_of(new_cert), 10,
                               "new handshakes to present the new certificate")
                    stream.rounds_after(20)
                    status = px.status()
                    self.assertEqual(status["last_reload"]["result"], "ok")
                    self.assertEqual(status["certificate"]["serial"].lower().lstrip("0"),
                                     h.cert_serial(new_cert))
                    self.assertEqual(status["certificate"]["sans"], ["sbc.tlsgate.test"])

                    # 3. POST /reload with nothing changed: ok, serial unchanged.
                    code, body = post_reload(px)
                    self.assertEqual(code, 200, body)
                    self.assertEqual(body["serial"].lower().lstrip("0"), h.cert_serial(new_cert))
                    stream.rounds_after(20)
                    self.assertEqual(served_der(addr), der_of(new_cert))
                finally:
                    stream.stop.set()
                    stream.join(h.t(10))
                self.assertIsNone(stream.error, f"the old stream broke: {stream.error!r}")
                self.assertGreater(stream.rounds, 100)
                # The stream ran on the first generation from start to end.
                m = px.metrics()
                self.assertIn(("tlsgate_cert_expiry_seconds",
                               frozenset({("cert", cert)})), m)

    def test_reload_names_what_it_cannot_apply(self):
        """listen, connect and log_level changed: the reload applies the new [tls] and names
        each of the others, in the POST answer, the log and /status, and by SIGHUP too."""
        p = h.pki()
        work = h.workdir() / "reload-partial"
        work.mkdir(exist_ok=True)
        cert, key = str(work / "sbc.pem"), str(work / "sbc.key")
        shutil.copyfile(p.cert("server"), cert)
        shutil.copyfile(p.key("server"), key)
        os.chmod(key, 0o600)
        new_cert, new_key = make_server_cert(p, "partial")
        with h.Echo() as echo:
            cfg = h.base_config(cert=cert, key=key)
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}",
                                   "connect": f"127.0.0.1:{h.closed_port()}"}
            with h.Proxy(cfg) as px:
                addr = px.addr("provider")
                self.assertEqual(served_der(addr), der_of(cert))
                status = px.status()
                self.assertIsNone(status["last_reload"])

                # Nothing changed: ok, nothing named, no warning.
                code, body = post_reload(px)
                self.assertEqual(code, 200, body)
                self.assertEqual(body["not_applied"], [])
                self.assertFalse(px.log_lines("event=reload_partial"))

                changed = {name: dict(keys) for name, keys in px.sections.items()}
                changed["inbound provider"]["listen"] = f"127.0.0.1:{h.free_port()}"
                changed["outbound pbx"]["connect"] = f"127.0.0.1:{h.closed_port()}"
                changed["global"]["log_level"] = "debug"
                px.config_path.write_text(h._ini(changed))
                replace_by_rename(new_key, key)
                replace_by_rename(new_cert, cert)
                want = ["global.log_level", "inbound provider.listen", "outbound pbx.connect"]

                code, body = post_reload(px)
                self.assertEqual(code, 200, body)
                self.assertEqual(body["result"], "ok")
                self.assertEqual(sorted(body["not_applied"]), want, body)
                line = px.wait_log("event=reload_partial", "trigger=admin")[-1]
                self.assertIn("level=warn", line)
                self.assertEqual(sorted(h.kv(line)["not_applied"].split(",")), want, line)
                last = px.status()["last_reload"]
                self.assertEqual((last["result"], last["trigger"]), ("ok", "admin"))
                self.assertEqual(sorted(last["not_applied"]), want, last)
                # The new [tls] is in service, on the listen address of the startup.
                self.assertEqual(served_der(addr), der_of(new_cert))
                self.assertTrue(h.connect_refused(changed["inbound provider"]["listen"]))

                # SIGHUP: the same names, since the running listeners are still the old ones.
                px.proc.send_signal(signal.SIGHUP)
                px.wait_metric("tlsgate_reloads_total", lambda v: v == 3, result="ok")
                line = px.wait_log("event=reload_partial", "trigger=SIGHUP")[-1]
                self.assertEqual(sorted(h.kv(line)["not_applied"].split(",")), want, line)
                last = px.status()["last_reload"]
                self.assertEqual(last["trigger"], "SIGHUP")
                self.assertEqual(sorted(last["not_applied"]), want, last)

                # A failed reload names nothing: nothing of it was applied, and it says why.
                replace_by_rename(p.cert("selfsigned"), cert)
                replace_by_rename(p.key("selfsigned"), key)
                code, body = post_reload(px)
                self.assertEqual(code, 422, body)
                self.assertNotIn("not_applied", body)
                last = px.status()["last_reload"]
                self.assertEqual((last["result"], last["not_applied"]), ("failed", []))
                self.assertEqual(served_der(addr), der_of(new_cert))

    def test_own_ca_refuses_a_chain_that_does_not_reach_it(self):
        """[tls] own_ca: a reload to a certificate that does not chain to it fails with the
        reason (answer, /status) and the old generation keeps serving."""
        p = h.pki().extra()
        work = h.workdir() / "reload-own-ca"
        work.mkdir(exist_ok=True)
        cert, key = str(work / "sbc.pem"), str(work / "sbc.key")
        shutil.copyfile(p.cert("server"), cert)
        shutil.copyfile(p.key("server"), key)
        os.chmod(key, 0o600)
        with h.Echo() as echo:
            cfg = h.base_config(cert=cert, key=key, own_ca=p.ca)
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                addr = px.addr("provider")
                old = der_of(cert)
                self.assertEqual(served_der(addr), old)
                # A certificate issued by a CA outside own_ca (its issuer is missing).
                replace_by_rename(p.key("untrusted"), key)
                replace_by_rename(p.cert("untrusted"), cert)
                code, body = post_reload(px)
                self.assertEqual(code, 422, body)
                self.assertEqual(body["result"], "failed", body)
                self.assertIn("does not chain to own_ca", body["reason"])
                self.assertIn("(rule chain)", body["reason"])
                status = px.status()
                self.assertEqual(status["last_reload"]["result"], "failed")
                self.assertIn("does not chain to own_ca", status["last_reload"]["reason"])
                self.assertEqual(served_der(addr), old)

    def test_many_changes_are_counted(self):
        """More changes than the answer and the log line hold: the first are named, the rest
        counted, and the JSON and the log line stay whole."""
        with h.Echo() as echo:
            cfg = h.base_config()
            names = [f"l{i:02d}-" + "x" * 59 for i in range(40)]  # 63 characters each
            for name in names:
                cfg[f"inbound {name}"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                fewer = {k: v for k, v in px.sections.items() if not k.startswith("inbound l")
                         or k == f"inbound {names[0]}"}
                px.config_path.write_text(h._ini(fewer))
                code, body = post_reload(px)
                self.assertEqual(code, 200, body)
                listed = body["not_applied"]
                self.assertRegex(listed[-1], r"^\d+ more$")
                shown = listed[:-1]
                self.assertTrue(shown, body)
                self.assertEqual(len(shown) + int(listed[-1].split()[0]), 39)
                for item in shown:
                    self.assertRegex(item, r"^inbound l\d\d-x+ \(removed\)$")
                line = px.wait_log("event=reload_partial")[-1]
                items = h.kv(line)["not_applied"].split(",")
                self.assertRegex(items[-1], r"^\d+ more$")
                self.assertEqual(len(items) - 1 + int(items[-1].split()[0]), 39)
                self.assertIn('reason="', line)
                status = px.status()["last_reload"]["not_applied"]
                self.assertEqual(len(status) - 1 + int(status[-1].split()[0]), 39)

    def test_expiry_warning_and_metric(self):
        """A certificate with 5 days left starts (a WARN, not a FAIL), logs the 30- and 7-day
        warnings at once, and /metrics shows the seconds left."""
        p = h.pki()
        cert, key = make_server_cert(p, "short", days=5)
        with h.Echo() as echo:
            cfg = h.base_config(cert=cert, key=key)
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                px.wait_log("event=cert_expiry", "threshold_days=7")
                self.assertTrue(px.log_lines("event=cert_expiry", "threshold_days=30"))
                left = px.metric("tlsgate_cert_expiry_seconds", cert=cert)
                self.assertTrue(4 * 86400 < left <= 5 * 86400, left)
                self.assertTrue(px.log_lines("event=cert_rule", "rule=validity", "result=WARN"))

    def test_key_readable_by_others_warns(self):
        p = h.pki()
        work = h.workdir() / "reload-perm"
        work.mkdir(exist_ok=True)
        key = str(work / "open.key")
        shutil.copyfile(p.key("server"), key)
        os.chmod(key, 0o644)
        with h.Echo() as echo:
            cfg = h.base_config(key=key)
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                px.wait_log("event=key_permissions")


if __name__ == "__main__":
    unittest.main()
