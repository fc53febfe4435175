#!/usr/bin/env python3
"""Process lifecycle: SIGTERM/SIGINT drain (in-flight transfers finish, new connections are
refused, exit 0), the drain timeout cutting a connection that stays open, SIGHUP; workers
pinned within the CPUs tlsgate was started on."""

import os
import signal
import subprocess
import time

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402
from harness import MIB


def inbound_config(forward, drain_ms, **tls):
    cfg = h.base_config(**tls)
    cfg["global"]["drain_timeout_ms"] = drain_ms
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": forward}
    return cfg


class DrainTest(h.TestCase):

    def test_sigterm_drains_in_flight_transfers(self):
        drain_s = h.t(30)
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr, int(drain_s * 1000))) as px:
            addr = px.addr("provider")
            # A connection under our control: half its data before SIGTERM, half after.
            s = h.tls_connect(addr)
            first = h.random_bytes(MIB, seed=1)
            second = h.random_bytes(MIB, seed=2)
            s.sendall(first)
            self.assertEqual(h.tls_recv_exact(s, len(first)), first)
            # And a tg-client bulk stream, started before SIGTERM.
            bulk = h.tg_client_bg(addr, "--bulk", str(256 * MIB), timeout=120)
            px.wait_metric("tlsgate_connections_active", lambda v: v == 2, timeout=20,
                           listener="provider", kind="inbound")
            px.wait_metric("tlsgate_bytes_total", lambda v: v > len(first), timeout=20,
                           listener="provider", direction="up")

            t0 = time.monotonic()
            px.proc.send_signal(signal.SIGTERM)
            # New connections are refused once the listeners are closed.
            h.wait_for(lambda: h.connect_refused(addr), 10,
                       "new connections to be refused after SIGTERM")
            # The admin listener still answers, and says we are draining.
            code, body = px.http("/healthz")
            self.assertEqual((code, body.strip()), (503, "draining"))
            self.assertIs(px.status()["draining"], True)
            # The established connection still works both ways.
            s.sendall(second)
            self.assertEqual(h.tls_recv_exact(s, len(second)), second)
            s.unwrap()  # our close_notify; the proxy answers with its own
            s.close()
            rc, out, err = h.finish(bulk, 120)
            self.assertEqual(rc, 0, out + err)
            self.assertIn(f"bytes_received={256 * MIB}", out)
            self.assertIn("peer_close=close_notify", out)
            rc = px.stop(timeout=drain_s + 15)
            elapsed = time.monotonic() - t0
            self.assertEqual(rc, 0, px.log_tail())
            # It exits once the connections are done, not at the end of the drain timeout.
            self.assertLess(elapsed, drain_s, "waited for the full drain_timeout_ms")
            self.assertTrue(px.log_lines("event=shutdown", "signal=SIGTERM"))
            self.assertTrue(px.log_lines("event=stopped"))

    def test_drain_timeout_cuts_lingering_connection(self):
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr, 1000,
                                                      idle_timeout_ms=0)) as px:
            s = h.tls_connect(px.addr("provider"))
            s.sendall(b"hello\n")
            self.assertEqual(h.tls_recv_exact(s, 6), b"hello\n")
            px.wait_metric("tlsgate_connections_active", lambda v: v == 1,
                           listener="provider", kind="inbound")
            t0 = time.monotonic()
            px.proc.send_signal(signal.SIGTERM)
            data, how, secs = h.tls_wait_close(s, 15)
            s.close()
            self.assertNotEqual(how, "timeout", "connection not cut after drain_timeout_ms")
            self.assertEqual(data, b"")
            self.assertGreaterEqual(secs, 0.5, "cut before drain_timeout_ms")
            rc = px.stop(timeout=15)
            self.assertEqual(rc, 0, px.log_tail())
            self.assertLess(time.monotonic() - t0, h.t(15))

    def test_sigint_is_a_clean_stop(self):
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr, 1000)) as px:
            r = h.tg_client(px.addr("provider"), "--bulk", "10000", timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            px.proc.send_signal(signal.SIGINT)
            try:
                rc = px.proc.wait(timeout=h.t(15))
            except subprocess.TimeoutExpired:
                raise AssertionError("no exit after SIGINT")
            self.assertEqual(rc, 0, px.log_tail())
            self.assertTrue(px.log_lines("event=shutdown", "signal=SIGINT"))

    def test_sighup_keeps_running(self):
        with h.Echo() as echo, h.Proxy(inbound_config(echo.addr, 1000)) as px:
            px.proc.send_signal(signal.SIGHUP)
            px.wait_log("event=reload trigger=SIGHUP result=ok")
            self.assertIsNone(px.proc.poll(), "SIGHUP ended the process")
            r = h.tg_client(px.addr("provider"), "--bulk", "10000", timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_sigterm_without_admin(self):
        """SIGTERM with [admin] enabled = no (the admin thread is not involved)."""
        with h.Echo() as echo:
            cfg = inbound_config(echo.addr, 1000)
            cfg["admin"] = {"enabled": "no"}
            cfg["inbound provider"]["listen"] = f"127.0.0.1:{h.free_port()}"
            path = h.write_config(cfg)
            log = h.tmpfile("tlsgate-noadmin-", ".log")
            with open(log, "wb") as f:
                proc = h.popen([h.TLSGATE, "run", "-c", path], stdout=f,
                               stderr=subprocess.STDOUT)
            h.wait_for(lambda: "event=started" in log.read_text(), 10, "event=started")
            r = h.tg_client(cfg["inbound provider"]["listen"], "--bulk", "10000", timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=h.t(15))
            self.assertEqual(rc, 0, log.read_text())
            for marker in h.SANITIZER_MARKERS:
                self.assertNotIn(marker, log.read_text())


class AffinityTest(h.TestCase):

    def test_workers_stay_on_the_cpus_tlsgate_was_given(self):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            self.skipTest("needs two CPUs")
        given = cpus[1:]  # not the first CPU: where counting from 0 pinned worker 0
        cfg = inbound_config("127.0.0.1:9", 2000)
        cfg["global"]["workers"] = len(given) + 1  # one more than CPUs: wraps within |given|
        # Workers pin themselves before they report ready, so before /healthz answers.
        with h.Proxy(cfg, preexec=lambda: os.sched_setaffinity(0, set(given))) as px:
            for tid in os.listdir(f"/proc/{px.proc.pid}/task"):
                allowed = os.sched_getaffinity(int(tid))
                self.assertTrue(allowed and allowed <= set(given),
                                f"thread {tid} may run on {sorted(allowed)}, outside {given}")


if __name__ == "__main__":
    h.main()

