#!/usr/bin/env python3
"""Inbound data path: TLS clients (tg-client, openssl s_client, Python ssl) through an
[inbound] listener to tg-echo, byte for byte, with the metrics and admin endpoints checked."""

import json
import subprocess
import threading
import time

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from harness import MIB


def inbound_config(echo_addr, host="127.0.0.1", **tls):
    cfg = h.base_config(**tls)
    cfg["inbound provider"] = {"listen": f"{h.fmt_addr(host, h.AUTO)}", "forward": echo_addr}
    return cfg


class RecordLargerThanQueueTest(h.TestCase):
    """A TLS record whose plaintext is larger than the room left in the plaintext queue: the
    rest waits inside BoringSSL and must still come out once the queue drains, even though the
    client sends nothing more and keeps the connection open (no close_notify to wake it)."""

    def test_echo_without_closing(self):
        with h.Echo() as echo:
            cfg = h.base_config()
            cfg["global"]["buffer_size"] = 4096
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                s = h.tls_connect(px.addr("provider"))
                try:
                    for size in (16384, 7777, 16000, 1, 12345):
                        payload = bytes((i * 7 + size) & 0xFF for i in range(size))
                        s.sendall(payload)  # one record of up to 16 KiB, 4 KiB queue
                        self.assertEqual(h.tls_recv_exact(s, size), payload, f"size {size}")
                finally:
                    s.close()


class KernelFeaturesTest(h.TestCase):
    """What the kernel offers (kTLS, zero-copy send) is probed at start-up, logged once and
    shown in /metrics; none of it is required, and the data path works either way."""

    def test_features_logged_and_exposed(self):
        try:
            with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
                ulps = f.read().split()
        except OSError:
            ulps = None
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            body = px.http("/metrics")[1]
            line = px.wait_log("event=kernel_features")[0]
            for feature in ("ktls", "send_zc", "so_zerocopy"):
                series = 'tlsgate_kernel_feature{feature="%s"}' % feature
                self.assertEqual(body.count(series + " "), 1, body)
                v = px.metric("tlsgate_kernel_feature", feature=feature)
                self.assertIn(v, (0, 1), feature)
                self.assertIn(f"{feature}={int(v)}", line)
            if ulps is not None:  # read after the probe, which may have loaded the module
                with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
                    ulps = f.read().split()
                self.assertEqual(px.metric("tlsgate_kernel_feature", feature="ktls"),
                                 1 if "tls" in ulps else 0, ulps)
            self.assertEqual(len(px.log_lines("event=kernel_features")), 1)  # once, not per worker
            r = h.tg_client(px.addr("provider"), "--bulk", str(MIB))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class BulkTest(h.TestCase):
    """(a), (h): 64 MiB each way per client variant, random write sizes, every byte checked,
    then close_notify / half-close with the whole echo still received."""

    def test_bulk_64mib_tls13_tls12_rsa_ec(self):
        variants = [("1.3", "client"), ("1.3", "client-ec"), ("1.2", "client"),
                    ("1.2", "client-ec")]
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            addr = px.addr("provider")
            for i, (version, cert) in enumerate(variants):
                with self.subTest(tls=version, cert=cert):
                    r = h.tg_client(addr, "--bulk", str(64 * MIB), cert=cert, tls=version,
                                    timeout=120, extra=["--seed", str(1000 + i)])
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                    res = h.kv(r.stdout.strip().splitlines()[-1])
                    self.assertEqual(res.get("result"), "ok", r.stdout)
                    self.assertEqual(int(res["bytes_sent"]), 64 * MIB)
                    self.assertEqual(int(res["bytes_received"]), 64 * MIB)
                    self.assertEqual(res["version"], "TLSv" + version)
                    # (h) we half-closed with close_notify and still got everything back; the
                    # proxy then closed its side cleanly (close_notify, not a bare FIN).
                    self.assertEqual(res["peer_close"], "close_notify", r.stdout)
            total = len(variants) * 64 * MIB
            up = px.wait_metric("tlsgate_bytes_total", lambda v: v >= total,
                                listener="provider", direction="up")
            down = px.wait_metric("tlsgate_bytes_total", lambda v: v >= total,
                                  listener="provider", direction="down")
            self.assertEqual(up, total, "bytes up counts exactly the plaintext sent")
            self.assertEqual(down, total)
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="provider", kind="inbound")
            self.assertEqual(px.metric("tlsgate_connections_total", listener="provider",
                                       kind="inbound"), len(variants))
            self.assertEqual(px.metric("tlsgate_handshakes_total", listener="provider",
                                       result="ok"), len(variants))


class ConcurrencyTest(h.TestCase):
    """(b): 1,000 connections established at once, each moving its own byte stream."""

    def test_1000_concurrent(self):
        cfg = None
        with h.Echo() as echo:
            cfg = inbound_config(echo.addr)
            cfg["tls"]["handshake_timeout_ms"] = int(h.t(30000))
            # 1,000 handshakes at once from one address is a load test, exactly what the
            # per-source admission limits exist to refuse: lifted here.
            cfg["global"]["max_handshakes_per_source"] = 0
            cfg["global"]["new_connections_per_source"] = 0
            with h.Proxy(cfg) as px:
                r = h.tg_client(px.addr("provider"), "--concurrent", "1000", "--bytes", "4096",
                                timeout=120)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("established=1000", r.stdout)
                self.assertIn("result=ok mode=concurrent connections=1000", r.stdout)
                self.assertGreaterEqual(px.metric("tlsgate_handshakes_total",
                                                  listener="provider", result="ok"), 1000)
                px.wait_metric("tlsgate_bytes_total", lambda v: v >= 1000 * 4096,
                               listener="provider", direction="down")
                px.wait_metric("tlsgate_connections_active", lambda v: v == 0, timeout=30,
                               listener="provider", kind="inbound")
                self.assertEqual(px.metric("tlsgate_connections_total", listener="provider",
                                           kind="inbound"), 1000)


class OpenSSLClientTest(h.TestCase):
    """(c): a second TLS stack (the OpenSSL CLI) does a mutual handshake and round-trips a
    line through the proxy to the echo backend."""

    def test_s_client_mutual_roundtrip(self):
        if h.OPENSSL is None:
            self.skipTest("openssl CLI not found")
        p = h.pki()
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr)) as px:
            line = b"INVITE sip:alice@sbc.tlsgate.test SIP/2.0 roundtrip-7f3a\n"
            proc = h.popen([h.OPENSSL, "s_client", "-connect", px.addr("provider"),
                            "-cert", p.cert("client"), "-key", p.key("client"),
                            "-CAfile", p.ca, "-servername", "sbc.tlsgate.test",
                            "-verify_return_error", "-verify_hostname", "sbc.tlsgate.test",
                            "-quiet"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
            got = bytearray()
            errs = bytearray()

            def pump(src, dst):
                for chunk in iter(lambda: src.read1(4096), b""):
                    dst.extend(chunk)

            threads = [threading.Thread(target=pump, args=(proc.stdout, got), daemon=True),
                       threading.Thread(target=pump, args=(proc.stderr, errs), daemon=True)]
            for th in threads:
                th.start()
            proc.stdin.write(line)
            proc.stdin.flush()
            try:
                h.wait_for(lambda: line in bytes(got), 15, "the echoed line on s_client stdout")
            except AssertionError as e:
                raise AssertionError(f"{e}\nstdout={bytes(got)!r}\nstderr={bytes(errs)!r}")
            finally:
                proc.stdin.close()
                proc.terminate()
                try:
                    proc.wait(timeout=h.t(10))
                except subprocess.TimeoutExpired:
                    proc.kill()
                for th in threads:
                    th.join(timeout=5)
                proc.stdout.close()
                proc.stderr.close()
            # s_client verified our certificate (-verify_return_error would have aborted).
            self.assertIn(b"sbc.tlsgate.test", bytes(errs))
            self.assertIn(b"verify return:1", bytes(errs))
            # ... and we verified its certificate.
            self.assertEqual(px.metric("tlsgate_handshakes_total", listener="provider",
                                       result="ok"), 1)
            px.wait_metric("tlsgate_bytes_total", lambda v: v == len(line),
                           listener="provider", direction="up")
            px.wait_metric("tlsgate_connections_active", lambda v: v == 0,
                           listener="provider", kind="inbound")


class IPv6Test(h.TestCase):
    """(k): an inbound listener on [::1] forwarding to an echo on [::1]."""

    def test_ipv6_loopback(self):
        why = h.ipv6_available()
        if why is not None:
            self.skipTest(f"IPv6 loopback unavailable, IPv6 NOT TESTED: {why}")
        with h.Echo(host="::1") as echo, h.Proxy(inbound_config(echo.addr, host="::1")) as px:
            addr = px.addr("provider")
            self.assertTrue(addr.startswith("[::1]:"), addr)
            r = h.tg_client(addr, "--bulk", str(4 * MIB), timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("bytes_received=%d" % (4 * MIB), r.stdout)
            st = px.status()
            self.assertEqual(st["listeners"][0]["listen"], addr)
            self.assertEqual(px.metric("tlsgate_handshakes_total", listener="provider",
                                       result="ok"), 1)


class AdminTest(h.TestCase):
    """(m): /healthz, /status (valid JSON naming every listener), /metrics well formed."""

    def test_healthz_status_metrics(self):
        with h.Echo() as echo:
            cfg = inbound_config(echo.addr)
            cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.AUTO}",
                                   "connect": f"127.0.0.1:{h.closed_port()}"}
            with h.Proxy(cfg) as px:
                code, body = px.http("/healthz")
                self.assertEqual((code, body.strip()), (200, "ok"))
                code, body = px.http("/status")
                self.assertEqual(code, 200)
                st = json.loads(body)
                self.assertEqual(st["workers"], 2)
                self.assertIs(st["draining"], False)
                self.assertIsInstance(st["uptime_s"], int)
                self.assertTrue(st["version"])
                by_name = {l["name"]: l for l in st["listeners"]}
                self.assertEqual(set(by_name), {"provider", "pbx"})
                self.assertEqual(by_name["provider"]["kind"], "inbound")
                self.assertEqual(by_name["provider"]["listen"], px.addr("provider"))
                self.assertEqual(by_name["pbx"]["kind"], "outbound")
                self.assertEqual(by_name["pbx"]["listen"], px.addr("pbx"))
                self.assertEqual(by_name["provider"]["active"], 0)
                m = px.metrics()
                for listener, kind in (("provider", "inbound"), ("pbx", "outbound")):
                    key = ("tlsgate_connections_active",
                           frozenset({"listener": listener, "kind": kind}.items()))
                    self.assertIn(key, m)
                    self.assertEqual(m[key], 0)
                # One real connection shows in /status.
                r = h.tg_client(px.addr("provider"), "--bulk", "1000", timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                st = h.wait_for(lambda: (lambda s: s if {l["name"]: l for l in s["listeners"]}
                                         ["provider"]["total"] == 1 else None)(px.status()),
                                10, "/status total == 1")
                self.assertEqual(st["listeners"][0]["name"], "provider")
                code, _ = px.http("/nonexistent")
                self.assertEqual(code, 404)


if __name__ == "__main__":
    h.main()
