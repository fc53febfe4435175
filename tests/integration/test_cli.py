#!/usr/bin/env python3
"""Command line: `tlsgate check` exit codes and messages, `tlsgate version`, and `tlsgate run`
refusing bad configurations without starting."""

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
        self.assertIn("certificate and key do not go together", r.stderr)

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
