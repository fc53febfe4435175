#!/usr/bin/env python3
"""`user = NAME`: the listening sockets are bound as root, then the process runs as NAME."""

import os
import pwd
import re
import unittest

import harness as h


class PrivilegeDropTest(h.TestCase):
    def test_runs_as_configured_user(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to drop privileges")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user 'nobody' on this machine")
        with h.Echo() as echo:
            cfg = h.base_config()
            cfg["global"]["user"] = "nobody"
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                px.wait_log("event=privileges_dropped", "user=nobody")
                with open(f"/proc/{px.proc.pid}/status") as f:
                    uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
                self.assertEqual({int(u) for u in uids}, {nobody.pw_uid}, uids)
                # Still serving: sockets were bound and certificates loaded before the drop.
                r = h.tg_client(px.addr("provider"), "--bulk", "100000", timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_unknown_user_refuses_to_start(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to drop privileges")
        with h.Echo() as echo:
            cfg = h.base_config()
            cfg["global"]["user"] = "no-such-user-tg"
            cfg["admin"] = {"enabled": "no"}
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.free_port()}",
                                       "forward": echo.addr}
            path = h.write_config(cfg)
            r = h.run([h.TLSGATE, "run", "-c", path], timeout=30)
            self.assertNotEqual(r.returncode, 0)
            # Refused while loading, naming the line of the key (test_cli.py: check does too).
            self.assertRegex(r.stderr, re.escape(str(path)) + r":\d+: global\.user: no such "
                             r"user 'no-such-user-tg'")
            self.assertNotIn("event=started", r.stderr)


if __name__ == "__main__":
    unittest.main()
