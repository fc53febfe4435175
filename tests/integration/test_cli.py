#!/usr/bin/env python3
"""Command line: `tlsgate check` exit codes and messages, `tlsgate version`, and `tlsgate run`
refusing bad configurations without starting."""

import os
import re
import socket

import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402


def good_config(**tls):
    cfg = h.base_config(**tls)
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.free_port()}",
                               "forward": f"127.0.0.1:{h.closed_port()}"}
    cfg["outbound pbx"] = {"listen": f"127.0.0.1:{h.free_port()}",
                           "connect": f"127.0.0.1:{h.closed_port()}, 127.0.0.1:5061"}
    cfg["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"
    return cfg


def tlsgate(*args, timeout=20):
    return h.run([h.TLSGATE, *args], timeout=timeout)


def rule_lines(out):
    """`STATUS rule detail` lines of check's output -> {rule: (status, detail)}."""
    rules = {}
    for line in out.splitlines():
        m = re.match(r"^(PASS|WARN|FAIL)\s+(\S+)\s+(.*)$", line)
        if m:
            rules[m.group(2)] = (m.group(1), m.group(3))
    return rules


class CheckTest(h.TestCase):

    def test_good_config(self):
        path = h.write_config(good_config())
        r = tlsgate("check", "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"ok: {path}: 2 listeners, 1 trusted CA, 2 peer names", r.stdout)
        rules = rule_lines(r.stdout)
        for rule in ("not_self_signed", "cn_matches_fqdn", "san_matches_fqdn", "key_size",
                     "key_matches", "validity", "eku"):
            self.assertEqual(rules.get(rule, ("missing",))[0], "PASS", f"{rule}: {r.stdout}")

    def test_syntax_errors_exit_2_with_file_line_key(self):
        good = h.write_config(good_config()).read_text().splitlines()
        cases = [
            # (edit, expected message regex after "FILE:")
            (lambda l: l.replace("workers = 2", "workers 2"), r"2: syntax: "),
            (lambda l: l.replace("workers = 2", "workers = two"), r"2: global\.workers: "),
            (lambda l: l.replace("log_level = info", "log_level = loud"),
             r"3: global\.log_level: "),
            (lambda l: l.replace("handshake_timeout_ms = 3000", "handshake_timeout_ms = 5"),
             r"\d+: tls\.handshake_timeout_ms: "),
            (lambda l: l.replace("[tls]", "[tls]\ncolour = blue"), r"\d+: tls\.colour: "),
            (lambda l: re.sub(r"forward = .*", "forward = localhost:5060", l),
             r"\d+: inbound provider\.forward: "),
        ]
        for edit, pattern in cases:
            text = edit("\n".join(good))
            path = h.tmpfile("bad-", ".conf")
            path.write_text(text + "\n")
            with self.subTest(pattern=pattern):
                r = tlsgate("check", "-c", path)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertRegex(r.stderr, "^" + re.escape(str(path)) + ":" + pattern,
                                 r.stderr)
                # One line, no certificate rules printed for a file that did not load.
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
                self.assertNotIn("PASS", r.stdout)

    def test_missing_required_and_missing_file(self):
        cfg = good_config()
        del cfg["tls"]["cert"]
        path = h.write_config(cfg)
        r = tlsgate("check", "-c", path)
        self.assertEqual(r.returncode, 2)
        self.assertRegex(r.stderr, re.escape(str(path)) + r":\d+: tls\.cert: required key missing")
        r = tlsgate("check", "-c", str(h.workdir() / "does-not-exist.conf"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("does-not-exist.conf:0: file: cannot open", r.stderr)

    def test_certificate_problems_exit_1_naming_the_rule(self):
        p = h.pki()
        cases = [
            ({"cert": p.cert("selfsigned"), "key": p.key("selfsigned")},
             "not_self_signed", "self-signed"),
            ({"fqdn": "SBC.tlsgate.test"}, "cn_matches_fqdn", "case"),
            ({"fqdn": "other.tlsgate.test"}, "cn_matches_fqdn", "other.tlsgate.test"),
        ]
        for tls, rule, word in cases:
            with self.subTest(rule=rule, tls=tls):
                path = h.write_config(good_config(**tls))
                r = tlsgate("check", "-c", path)
                out = r.stdout + r.stderr
                self.assertEqual(r.returncode, 1, out)
                rules = rule_lines(r.stdout)
                self.assertEqual(rules.get(rule, ("missing", ""))[0], "FAIL", out)
                self.assertIn(word, rules[rule][1])
                self.assertRegex(r.stderr, r"certificate rules? failed")

    def test_key_not_matching_certificate_exit_1(self):
        p = h.pki()
        path = h.write_config(good_config(key=p.key("client")))
        r = tlsgate("check", "-c", path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("private key does not match the certificate (rule key_matches)",
                      r.stderr)

    def test_unreadable_certificate_exit_1(self):
        path = h.write_config(good_config(cert=str(h.workdir() / "nope.pem")))
        r = tlsgate("check", "-c", path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("nope.pem", r.stderr)

    def test_sip_mode_accepted(self):
        cfg = good_config()
        cfg["inbound provider"]["mode"] = "sip"
        path = h.write_config(cfg)
        r = tlsgate("check", "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("sip mode is not available", r.stderr)


def listen_line(path, section):
    """The line number of `listen` in |section| of the configuration at |path|."""
    current = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == section and line.startswith("listen ="):
            return n
    raise KeyError(section)


class OwnershipCheckTest(h.TestCase):
    """`check` (and the loader, so `run` too) refuses two listeners of ours on one address."""

    def assert_refused(self, cfg, section, message):
        path = h.write_config(cfg)
        for cmd in ("check", "run"):
            with self.subTest(cmd=cmd, section=section):
                r = tlsgate(cmd, "-c", path, timeout=15)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                line = listen_line(path, section)
                self.assertEqual(r.stderr.strip(), f"{path}:{line}: {message}")
                self.assertNotIn("event=started", r.stderr)
        return path

    def test_same_address_twice(self):
        cfg = good_config()
        addr = cfg["inbound provider"]["listen"]
        cfg["inbound second"] = {"listen": addr, "forward": cfg["inbound provider"]["forward"]}
        path = h.write_config(cfg)
        first = listen_line(path, "inbound provider")
        self.assert_refused(cfg, "inbound second",
                            f"inbound second.listen: {addr} is already the listen address of "
                            f"[inbound provider] (line {first})")

    def test_wildcard_and_specific(self):
        cfg = good_config()
        port = h.split_addr(cfg["inbound provider"]["listen"])[1]
        cfg["outbound pbx"]["listen"] = f"0.0.0.0:{port}"
        path = h.write_config(cfg)
        first = listen_line(path, "inbound provider")
        self.assert_refused(cfg, "outbound pbx",
                            f"outbound pbx.listen: 0.0.0.0:{port} overlaps 127.0.0.1:{port}, "
                            f"the listen address of [inbound provider] (line {first})")

    def test_admin_address(self):
        cfg = good_config()
        admin = cfg["admin"]["listen"]
        cfg["outbound pbx"]["listen"] = admin
        path = h.write_config(cfg)
        self.assert_refused(cfg, "outbound pbx",
                            f"outbound pbx.listen: {admin} is already the admin listen address "
                            f"(line {listen_line(path, 'admin')})")


class PortOwnerTest(h.TestCase):
    """`run` refuses an address another process listens on, even one with SO_REUSEPORT that
    would let our SO_REUSEPORT sockets share it (and take part of its connections)."""

    def run_refused(self, cfg, listener, addr):
        path = h.write_config(cfg)
        r = tlsgate("run", "-c", path, timeout=15)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f'event=listen_failed listener={listener} reason="{addr}: address already '
                      f'in use by another process"', r.stderr)
        self.assertNotIn("event=started", r.stderr)
        self.assertTrue(h.connect_refused(cfg["admin"]["listen"]))
        return r

    def test_second_tlsgate_refused(self):
        with h.Echo() as echo:
            cfg = h.base_config()
            cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.AUTO}", "forward": echo.addr}
            with h.Proxy(cfg) as px:
                second = {name: dict(keys) for name, keys in px.sections.items()}
                second["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"
                self.run_refused(second, "provider", px.addr("provider"))
                # The first one still has every connection.
                r = h.tg_client(px.addr("provider"), "--bulk", "10000", timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_foreign_reuseport_listener_refused(self):
        for foreign_host, ours in (("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1")):
            with self.subTest(foreign=foreign_host, ours=ours), socket.socket() as other:
                other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                other.bind((foreign_host, 0))
                other.listen(8)
                port = other.getsockname()[1]
                cfg = good_config()
                cfg["inbound provider"]["listen"] = f"{ours}:{port}"
                self.run_refused(cfg, "provider", f"{ours}:{port}")

    def test_ipv6_foreign_listener_refused(self):
        why = h.ipv6_available()
        if why is not None:
            self.skipTest(why)
        with socket.socket(socket.AF_INET6) as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            other.bind(("::1", 0))
            other.listen(8)
            port = other.getsockname()[1]
            cfg = good_config()
            cfg["inbound provider"]["listen"] = f"[::1]:{port}"
            self.run_refused(cfg, "provider", f"[::1]:{port}")
            # The IPv4 side of the same port is another address (our IPv6 sockets are V6ONLY):
            # that one starts.
            cfg["inbound provider"]["listen"] = f"127.0.0.1:{port}"
            del cfg["outbound pbx"]
            cfg["admin"]["listen"] = f"127.0.0.1:{h.AUTO}"
            with h.Proxy(cfg) as px:
                self.assertTrue(px.log_lines("event=listening", "listener=provider"))


class UserTest(h.TestCase):
    """`[global] user`: looked up by `check` and `run` alike, with the line of the key."""

    def test_unknown_user_refused_by_check_and_run(self):
        cfg = good_config()
        cfg["global"]["user"] = "no-such-user-tg"
        path = h.write_config(cfg)
        line = next(n for n, l in enumerate(path.read_text().splitlines(), 1)
                    if l.startswith("user ="))
        for cmd in ("check", "run"):
            with self.subTest(cmd=cmd):
                r = tlsgate(cmd, "-c", path, timeout=15)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(f"{path}:{line}: global.user: no such user 'no-such-user-tg' on "
                              f"this system", r.stderr)
                self.assertNotIn("event=started", r.stderr)
                self.assertNotIn("PASS", r.stdout)

    def test_root_drops_nothing(self):
        cfg = good_config()
        cfg["global"]["user"] = "root"
        path = h.write_config(cfg)
        r = tlsgate("check", "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.escape(str(path)) + r":\d+: global\.user: warning: 'root' "
                         r"is uid 0: tlsgate keeps running as root")
        if os.geteuid() != 0:
            self.skipTest("the run half needs root")
        cfg["admin"]["listen"] = f"127.0.0.1:{h.AUTO}"
        cfg["inbound provider"]["listen"] = f"127.0.0.1:{h.AUTO}"
        del cfg["outbound pbx"]
        with h.Proxy(cfg) as px:
            line = px.wait_log("event=user_root")[0]
            self.assertIn("level=warn", line)
            self.assertIn("no privileges are dropped", line)
            self.assertFalse(px.log_lines("event=privileges_dropped"))


class CommandTest(h.TestCase):

    def test_version(self):
        r = tlsgate("version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^tlsgate \d+\.\d+\.\d+ \(.+\)\n$")

    def test_help_and_usage_errors(self):
        r = tlsgate("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: tlsgate", r.stdout)
        r = tlsgate("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command", r.stderr)
        r = tlsgate("run", "--bogus")
        self.assertEqual(r.returncode, 2)
        r = tlsgate("check")
        self.assertEqual(r.returncode, 2)
        self.assertIn("-c FILE is required", r.stderr)

    def test_run_bad_config_exits_2_without_starting(self):
        cfg = good_config()
        cfg["global"]["workers"] = "many"
        path = h.write_config(cfg)
        r = tlsgate("run", "-c", path, timeout=10)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertRegex(r.stderr, re.escape(str(path)) + r":\d+: global\.workers: ")
        self.assertNotIn("event=started", r.stderr)
        self.assertNotIn("event=listening", r.stderr)
        # Nothing was left listening on the configured ports.
        for addr in (cfg["inbound provider"]["listen"], cfg["admin"]["listen"]):
            self.assertTrue(h.connect_refused(addr), addr)

    def test_run_noncompliant_certificate(self):
        p = h.pki()
        cfg = good_config(cert=p.cert("selfsigned"), key=p.key("selfsigned"))
        path = h.write_config(cfg)
        r = tlsgate("run", "-c", path, timeout=10)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("--allow-noncompliant-cert", r.stderr)
        self.assertIn("rule=not_self_signed result=FAIL", r.stderr)
        self.assertNotIn("event=started", r.stderr)
        self.assertTrue(h.connect_refused(cfg["inbound provider"]["listen"]))
        # With the override it starts (and says so), then stops cleanly.
        cfg["admin"]["listen"] = f"127.0.0.1:{h.AUTO}"
        cfg["inbound provider"]["listen"] = f"127.0.0.1:{h.AUTO}"
        del cfg["outbound pbx"]
        with h.Proxy(cfg, allow_errors=True, args=["--allow-noncompliant-cert"]) as px:
            px.wait_log("event=noncompliant_certificate", "override=yes")

    def test_run_port_in_use_fails(self):
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            cfg = good_config()
            cfg["inbound provider"]["listen"] = f"127.0.0.1:{blocker.getsockname()[1]}"
            path = h.write_config(cfg)
            r = tlsgate("run", "-c", path, timeout=15)
            self.assertNotEqual(r.returncode, 0, r.stderr)
            self.assertIn("event=listen_failed", r.stderr)
            self.assertNotIn("event=started", r.stderr)


if __name__ == "__main__":
    h.main()
