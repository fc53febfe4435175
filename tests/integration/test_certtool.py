#!/usr/bin/env python3
"""Certificate lifecycle commands against the openssl CLI: `tlsgate csr` output verified and
parsed by `openssl req`, signed by `openssl ca`; `tlsgate cert-check` over one certificate per
rule (made with `openssl ca`, -startdate/-enddate for the validity windows), its exit codes,
text lines and --json; and `tlsgate check` agreeing with cert-check on the rule names."""

import datetime
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import harness as h  # noqa: E402

FQDN = "sbc.example.com"
RULES = ("not_self_signed", "chain_length", "chain_order", "chain", "cn_matches_fqdn",
         "san_matches_fqdn", "key_type", "key_size", "key_matches", "validity", "eku")


def tlsgate(*args, timeout=120):
    r = h.run([h.TLSGATE, *args], timeout=timeout)
    for marker in h.SANITIZER_MARKERS:
        if marker in r.stderr:
            raise AssertionError(f"sanitizer report from tlsgate {' '.join(map(str, args))}:\n"
                                 f"{r.stderr}")
    return r


def ossl(*args, timeout=120):
    r = h.run([h.OPENSSL, *args], timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def rule_lines(out):
    """`STATUS rule detail` lines -> {rule: (status, detail)} (the format of `tlsgate check`)."""
    rules = {}
    for line in out.splitlines():
        m = re.match(r"^(PASS|WARN|FAIL)\s+(\S+)\s+(.*)$", line)
        if m:
            rules[m.group(2)] = (m.group(1), m.group(3))
    return rules


def stamp(delta_days):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=delta_days)
    return t.strftime("%Y%m%d%H%M%SZ")


class MiniCA:
    """A root, an intermediate signed by it, and `openssl ca` issuing leaves from the
    intermediate with whatever extensions and validity window a case needs."""

    def __init__(self, d):
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        (d / "newcerts").mkdir(exist_ok=True)
        (d / "index.txt").write_text("")
        (d / "serial").write_text("1000\n")
        self.cnf = d / "ca.cnf"
        self.cnf.write_text(f"""[ca]
default_ca = tg
[tg]
database = {d}/index.txt
new_certs_dir = {d}/newcerts
serial = {d}/serial
default_md = sha256
policy = pol
unique_subject = no
copy_extensions = none
[pol]
commonName = supplied
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
""")
        self.root, self.root_key = str(d / "root.pem"), str(d / "root.key")
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", self.root_key)
        ossl("req", "-x509", "-new", "-key", self.root_key, "-subj", "/CN=tlsgate it root",
             "-days", "3650", "-config", str(self.cnf), "-extensions", "v3_ca",
             "-out", self.root)
        self.inter, self.inter_key = str(d / "inter.pem"), str(d / "inter.key")
        ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", self.inter_key)
        csr = str(d / "inter.csr")
        ossl("req", "-new", "-key", self.inter_key, "-subj", "/CN=tlsgate it intermediate",
             "-config", str(self.cnf), "-out", csr)
        ossl("ca", "-batch", "-config", str(self.cnf), "-cert", self.root, "-keyfile",
             self.root_key, "-in", csr, "-out", self.inter, "-extfile", str(self.cnf),
             "-extensions", "v3_ca", "-startdate", stamp(-30), "-enddate", stamp(3000),
             "-notext")

    def key(self, name, bits=2048):
        path = str(self.d / f"{name}.key")
        if bits == "ec":
            ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", path)
        else:
            ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}",
                 "-out", path)
        return path

    def sign(self, csr, out, san=(FQDN,), eku="serverAuth, clientAuth", start=-1, end=365.5):
        """Sign |csr| with the intermediate into |out|; |start|/|end| are days from now, or
        literal YYYYMMDDHHMMSSZ strings. Extensions come from here, never from the CSR. (Half
        a day more keeps "N days left" from ticking over between two runs of a test.)"""
        ext = self.d / (os.path.basename(out) + ".ext")
        lines = ["basicConstraints = critical, CA:FALSE",
                 "keyUsage = critical, digitalSignature, keyEncipherment"]
        if eku:
            lines.append(f"extendedKeyUsage = {eku}")
        if san:
            lines.append("subjectAltName = " + ", ".join(f"DNS:{n}" for n in san))
        ext.write_text("[ext]\n" + "\n".join(lines) + "\n")
        ossl("ca", "-batch", "-config", str(self.cnf), "-cert", self.inter, "-keyfile",
             self.inter_key, "-in", csr, "-out", out, "-extfile", str(ext), "-extensions", "ext",
             "-startdate", start if isinstance(start, str) else stamp(start),
             "-enddate", end if isinstance(end, str) else stamp(end), "-notext")
        return out

    def leaf(self, name, cn=FQDN, bits=2048, chain=True, **kw):
        """A leaf for |cn| with a fresh key; returns (cert file, key file). The cert file holds
        the intermediate after the leaf unless |chain| is False."""
        key = self.key(name, bits)
        csr = str(self.d / f"{name}.csr")
        ossl("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-config", str(self.cnf),
             "-out", csr)
        leaf = self.sign(csr, str(self.d / f"{name}.leaf.pem"), **kw)
        cert = self.d / f"{name}.pem"
        text = Path(leaf).read_text()
        if chain:
            text += Path(self.inter).read_text()
        cert.write_text(text)
        return str(cert), key


_ca = None


def ca():
    global _ca
    if h.OPENSSL is None:
        raise h.unittest.SkipTest("openssl CLI not found")
    if _ca is None:
        _ca = MiniCA(h.workdir() / "certtool-ca")
    return _ca


class CsrTest(h.TestCase):

    def csr(self, name, *args):
        key = h.workdir() / f"{name}.key"
        csr = h.workdir() / f"{name}.csr"
        r = tlsgate("csr", "--key-out", key, "--csr-out", csr, *args)
        return r, str(key), str(csr)

    def assert_csr(self, csr, fqdn):
        r = h.run([h.OPENSSL, "req", "-in", csr, "-verify", "-noout"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("verify OK", r.stdout + r.stderr)
        text = ossl("req", "-in", csr, "-noout", "-text")
        self.assertRegex(text, r"Subject: CN\s*=\s*" + re.escape(fqdn) + r"\n")
        san = re.search(r"X509v3 Subject Alternative Name:\s*\n\s*(.*)\n", text)
        self.assertIsNotNone(san, text)
        self.assertEqual(san.group(1).strip(), f"DNS:{fqdn}")
        eku = re.search(r"X509v3 Extended Key Usage:\s*\n\s*(.*)\n", text)
        self.assertIsNotNone(eku, text)
        self.assertEqual(eku.group(1).strip(),
                         "TLS Web Server Authentication, TLS Web Client Authentication")
        self.assertIn("Signature Algorithm: sha256With", text.replace("ecdsa-with-SHA256",
                                                                      "sha256WithECDSA"))
        return text

    def test_sizes_and_ec(self):
        if h.OPENSSL is None:
            self.skipTest("openssl CLI not found")
        for bits in ("2048", "3072", "4096", "ec"):
            with self.subTest(bits=bits):
                args = ["--ec"] if bits == "ec" else ["--key-bits", bits]
                r, key, csr = self.csr(f"size-{bits}", "--fqdn", FQDN, *args)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "")
                text = self.assert_csr(csr, FQDN)
                want = "(256 bit)" if bits == "ec" else f"({bits} bit)"
                self.assertIn(want, text)
                self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
                # The key is the CSR's key.
                pub_key = ossl("pkey", "-in", key, "-pubout")
                pub_csr = ossl("req", "-in", csr, "-noout", "-pubkey")
                self.assertEqual(pub_key, pub_csr)

    def test_mixed_case_kept(self):
        if h.OPENSSL is None:
            self.skipTest("openssl CLI not found")
        r, key, csr = self.csr("mixed", "--fqdn", "Sbc.Example.COM", "--ec")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_csr(csr, "Sbc.Example.COM")

    def test_refuses_to_overwrite_then_force(self):
        if h.OPENSSL is None:
            self.skipTest("openssl CLI not found")
        key = h.workdir() / "exists.key"
        csr = h.workdir() / "exists.csr"
        key.write_text("precious\n")
        os.chmod(key, 0o644)
        before = os.stat(key)
        r = tlsgate("csr", "--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", csr)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("exists", r.stderr)
        self.assertEqual(key.read_text(), "precious\n")
        after = os.stat(key)
        self.assertEqual((before.st_ino, before.st_mtime_ns, before.st_mode),
                         (after.st_ino, after.st_mtime_ns, after.st_mode))
        self.assertFalse(csr.exists())
        r = tlsgate("csr", "--fqdn", FQDN, "--ec", "--key-out", key, "--csr-out", csr, "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotEqual(key.read_text(), "precious\n")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assert_csr(str(csr), FQDN)

    def test_same_file_refused_with_or_without_force(self):
        """--key-out same.key --csr-out ./same.key --force used to leave only the CSR: the new
        private key was destroyed. Outputs that are one file are refused, spelled any way."""
        d = h.workdir() / "csr-same"
        d.mkdir(exist_ok=True)
        (d / "sub").mkdir(exist_ok=True)
        cases = [("same.key", "./same.key"), ("same.key", "sub/../same.key"),
                 ("same.key", str(d / "same.key"))]
        for key, csr in cases:
            for force in ([], ["--force"]):
                with self.subTest(key=key, csr=csr, force=force):
                    r = subprocess.run([h.TLSGATE, "csr", "--fqdn", FQDN, "--ec", "--key-out",
                                        key, "--csr-out", csr, *force], cwd=d,
                                       capture_output=True, text=True, timeout=h.t(60))
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    self.assertIn("are the same file", r.stderr)
                    self.assertFalse((d / "same.key").exists())
        # Existing files: a hard link or a symbolic link to the key is the key.
        r = tlsgate("csr", "--fqdn", FQDN, "--ec", "--key-out", d / "k.key", "--csr-out",
                    d / "k.csr")
        self.assertEqual(r.returncode, 0, r.stderr)
        key_text = (d / "k.key").read_text()
        os.link(d / "k.key", d / "hard.key")
        os.symlink(d / "k.key", d / "sym.key")
        for other in ("hard.key", "sym.key"):
            with self.subTest(other=other):
                r = tlsgate("csr", "--fqdn", FQDN, "--ec", "--key-out", d / "k.key",
                            "--csr-out", d / other, "--force")
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("are the same file", r.stderr)
                self.assertEqual((d / "k.key").read_text(), key_text)
                self.assertEqual(stat.S_IMODE(os.stat(d / "k.key").st_mode), 0o600)
        # Without --force, the refusal says what would be lost.
        r = tlsgate("csr", "--fqdn", FQDN, "--ec", "--key-out", d / "k.key", "--csr-out",
                    d / "new.csr")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"refusing to overwrite {d / 'k.key'}: it holds a private key; use --force",
                      r.stderr)
        r = tlsgate("csr", "--fqdn", FQDN, "--ec", "--key-out", d / "new.key", "--csr-out",
                    d / "k.csr")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"refusing to overwrite {d / 'k.csr'}: it holds a CSR; use --force",
                      r.stderr)
        self.assertFalse((d / "new.key").exists())
        self.assertFalse((d / "new.csr").exists())

    def test_weak_keys(self):
        if h.OPENSSL is None:
            self.skipTest("openssl CLI not found")
        r, key, csr = self.csr("weak", "--fqdn", FQDN, "--key-bits", "1024")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("--allow-weak", r.stderr)
        self.assertFalse(os.path.exists(key))
        r, key, csr = self.csr("weak", "--fqdn", FQDN, "--key-bits", "1024", "--allow-weak")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning", r.stderr)
        self.assertIn("(1024 bit)", self.assert_csr(csr, FQDN))
        r, key, csr = self.csr("weaker", "--fqdn", FQDN, "--key-bits", "512", "--allow-weak")
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertFalse(os.path.exists(key))

    def test_usage(self):
        for args in ([], ["--fqdn", FQDN], ["--fqdn", "sbc", "--key-out", "a", "--csr-out", "b"],
                     ["--fqdn", "10.0.0.1", "--key-out", "a", "--csr-out", "b"],
                     ["--fqdn", FQDN, "--key-bits", "1000", "--key-out", "a", "--csr-out", "b"]):
            with self.subTest(args=args):
                r = tlsgate("csr", *args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("usage:", r.stderr)
        r = tlsgate("--help")
        self.assertIn("tlsgate csr", r.stdout)
        self.assertIn("tlsgate cert-check", r.stdout)

    def test_csr_to_ca_to_cert_check_to_check(self):
        """The operator's procedure: csr, CA, cert-check, check (docs/CERTIFICATES.md)."""
        c = ca()
        r, key, csr = self.csr("procedure", "--fqdn", FQDN)
        self.assertEqual(r.returncode, 0, r.stderr)
        leaf = c.sign(csr, str(h.workdir() / "procedure.leaf.pem"))
        cert = h.workdir() / "procedure.pem"
        cert.write_text(Path(leaf).read_text() + Path(c.inter).read_text())
        r = tlsgate("cert-check", "--cert", cert, "--key", key, "--fqdn", FQDN, "--ca", c.root)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rules = rule_lines(r.stdout)
        self.assertEqual(tuple(rules), RULES, r.stdout)
        self.assertTrue(all(s == "PASS" for s, _ in rules.values()), r.stdout)
        # `tlsgate check` on a configuration with this certificate: same rule names, same
        # verdicts (its chain rule is skipped: check has no trust store for our own chain).
        cfg = h.base_config(cert=str(cert), key=key, fqdn=FQDN)
        cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.free_port()}",
                                   "forward": f"127.0.0.1:{h.closed_port()}"}
        cfg["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"
        r2 = tlsgate("check", "-c", h.write_config(cfg))
        self.assertEqual(r2.returncode, 0, r2.stdout + r2.stderr)
        check_rules = rule_lines(r2.stdout)
        self.assertEqual(tuple(check_rules), RULES, r2.stdout)
        for rule in RULES:
            if rule == "chain":
                continue
            self.assertEqual(check_rules[rule][0], rules[rule][0], rule)
            if rule != "validity":  # days left may tick over between the two runs
                self.assertEqual(check_rules[rule][1], rules[rule][1], rule)


def check_config(cert, key, **tls):
    cfg = h.base_config(cert=str(cert), key=str(key), fqdn=FQDN, **tls)
    cfg["inbound provider"] = {"listen": f"127.0.0.1:{h.free_port()}",
                               "forward": f"127.0.0.1:{h.closed_port()}"}
    cfg["admin"]["listen"] = f"127.0.0.1:{h.free_port()}"
    return h.write_config(cfg)


def named_rules(r):
    """The rules a run names as failing: FAIL lines, and `(rule X)` of a refusal."""
    fails = [k for k, (st, _) in rule_lines(r.stdout).items() if st == "FAIL"]
    fails += re.findall(r"\(rule (\w+)\)", r.stderr)
    return fails


class AgreementTest(h.TestCase):
    """`tlsgate check -c CONF` and `tlsgate cert-check` judge one table of certificates with
    one set of rules: both pass or both fail, naming the same rule."""

    def table(self):
        c = ca()
        good, good_key = c.leaf("agree-good")
        long_cert = h.workdir() / "agree-17.pem"
        # leaf + intermediate + the root 15 times: each issued (by name) by the next, 17 in all.
        long_cert.write_text(Path(good).read_text() + Path(c.root).read_text() * 15)
        wrong_order = h.workdir() / "agree-order.pem"
        leaf_only, order_key = c.leaf("agree-order-leaf", chain=False)
        wrong_order.write_text(Path(c.inter).read_text() + Path(leaf_only).read_text())
        _, other_key = c.leaf("agree-other")
        expired, expired_key = c.leaf("agree-expired", start=-60, end=-30)
        wrong_name, wrong_name_key = c.leaf("agree-name", cn="other.example.com",
                                            san=("other.example.com",))
        ec, ec_key = c.leaf("agree-ec", bits="ec")
        weak, weak_key = c.leaf("agree-1024", bits=1024)
        # (name, cert, key, expected result: rule named, or "" for a pass, and WARN rule)
        return [
            ("good", good, good_key, "", None),
            ("17-cert chain", long_cert, good_key, "chain_length", None),
            ("wrong order", wrong_order, order_key, "chain_order", None),
            ("key mismatch", good, other_key, "key_matches", None),
            ("expired", expired, expired_key, "validity", None),
            ("wrong fqdn", wrong_name, wrong_name_key, "cn_matches_fqdn", None),
            ("EC P-256", ec, ec_key, "", None),
            ("RSA 1024", weak, weak_key, "", "key_size"),
        ]

    def test_check_and_cert_check_agree(self):
        for name, cert, key, rule, warn in self.table():
            with self.subTest(case=name):
                a = tlsgate("check", "-c", check_config(cert, key))
                b = tlsgate("cert-check", "--cert", cert, "--key", key, "--fqdn", FQDN)
                both = f"check:\n{a.stdout}{a.stderr}\ncert-check:\n{b.stdout}{b.stderr}"
                self.assertEqual(a.returncode, b.returncode, both)
                self.assertEqual(a.returncode, 1 if rule else 0, both)
                na, nb = named_rules(a), named_rules(b)
                if rule:
                    self.assertEqual(na[0], rule, both)
                    self.assertEqual(nb[0], rule, both)
                    self.assertTrue(set(na) <= set(nb), both)
                else:
                    self.assertEqual(na, [], both)
                    self.assertEqual(nb, [], both)
                if warn:
                    self.assertEqual(rule_lines(a.stdout)[warn][0], "WARN", both)
                    self.assertEqual(rule_lines(b.stdout)[warn][0], "WARN", both)
                if rule == "chain_order":
                    self.assertIn("the chain is out of order: certificate 1 "
                                  "(CN=tlsgate it intermediate) is a CA; put the leaf first, "
                                  "then each issuer", a.stderr)
                    self.assertNotIn("do not go together", a.stderr)

    def test_file_messages(self):
        """An encrypted key, a directory, an Ed25519 key: the same words from both commands."""
        c = ca()
        cert, key = c.leaf("msg")
        enc = str(h.workdir() / "msg-enc.key")
        ossl("pkey", "-in", key, "-out", enc, "-aes256", "-passout", "pass:secret")
        ed = str(h.workdir() / "msg-ed.key")
        ossl("genpkey", "-algorithm", "ED25519", "-out", ed)
        d = h.workdir() / "msg-dir"
        d.mkdir(exist_ok=True)
        cases = [
            (cert, enc, f"{enc}: the private key is encrypted; tlsgate needs it unencrypted "
                        "(openssl pkey -in KEY -out KEY.plain)"),
            (cert, ed, f"{ed}: Ed25519 keys are not supported; supported: RSA"),
            (cert, str(d), f"{d}: is a directory, expected a PEM file"),
            (str(d), key, f"{d}: is a directory, expected a PEM file"),
        ]
        for cert_path, key_path, want in cases:
            with self.subTest(want=want):
                a = tlsgate("check", "-c", check_config(cert_path, key_path))
                b = tlsgate("cert-check", "--cert", cert_path, "--key", key_path, "--fqdn", FQDN)
                self.assertEqual(a.returncode, 1, a.stdout + a.stderr)
                self.assertEqual(b.returncode, 2, b.stdout + b.stderr)
                self.assertIn(want, a.stderr)
                self.assertIn(want, b.stderr)

    def test_own_ca(self):
        """own_ca: the chain must reach it with the file's intermediates; a leaf without its
        intermediate is refused by check (and so by startup and reload), naming the issuer."""
        c = ca()
        full, key = c.leaf("ownca")
        bare = h.workdir() / "ownca-bare.pem"
        bare.write_text(Path(c.d / "ownca.leaf.pem").read_text())
        r = tlsgate("check", "-c", check_config(full, key, own_ca=c.root))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(rule_lines(r.stdout)["chain"][0], "PASS", r.stdout)
        r = tlsgate("check", "-c", check_config(bare, key, own_ca=c.root))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{bare}: does not chain to own_ca {c.root}: issuer "
                      "'CN=tlsgate it intermediate' of", r.stderr)
        self.assertIn("(rule chain)", r.stderr)
        # Without own_ca the same file passes check (the chain rule is skipped) ...
        r = tlsgate("check", "-c", check_config(bare, key))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # ... and cert-check with --ca names the same rule.
        r = tlsgate("cert-check", "--cert", bare, "--key", key, "--fqdn", FQDN, "--ca", c.root)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(rule_lines(r.stdout)["chain"][0], "FAIL", r.stdout)
        # An own_ca that cannot be read is refused.
        r = tlsgate("check", "-c", check_config(full, key, own_ca=str(h.workdir() / "no.pem")))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("no.pem", r.stderr)


class CertCheckTest(h.TestCase):

    def check(self, cert, key, *extra, fqdn=FQDN, use_ca=True):
        args = ["cert-check", "--cert", cert]
        if key is not None:
            args += ["--key", key]
        if fqdn is not None:
            args += ["--fqdn", fqdn]
        if use_ca:
            args += ["--ca", ca().root]
        return tlsgate(*args, *extra)

    def assert_only(self, r, rule, status, detail=None, rc=None):
        """Exactly |rule| has |status| and every other rule PASSes; exit code matches."""
        rules = rule_lines(r.stdout)
        self.assertEqual(tuple(rules), RULES, r.stdout + r.stderr)
        for name, (got, why) in rules.items():
            self.assertEqual(got, status if name == rule else "PASS", f"{name}: {r.stdout}")
        if detail is not None:
            self.assertIn(detail, rules[rule][1], r.stdout)
        want_rc = rc if rc is not None else (1 if status == "FAIL" else 0)
        self.assertEqual(r.returncode, want_rc, r.stdout + r.stderr)
        self.assertRegex(r.stdout, rf"\nresult: {status if rule else 'PASS'} ")

    def test_compliant(self):
        for bits in (2048, "ec"):
            with self.subTest(bits=bits):
                cert, key = ca().leaf(f"good-{bits}", bits=bits)
                self.assert_only(self.check(cert, key), "", "PASS")

    def test_self_signed(self):
        c = ca()
        key = c.key("self")
        cert = str(c.d / "self.pem")
        ext = c.d / "self.ext"
        ext.write_text("[ext]\nbasicConstraints = critical, CA:FALSE\n"
                       "extendedKeyUsage = serverAuth, clientAuth\n"
                       f"subjectAltName = DNS:{FQDN}\n")
        ossl("req", "-x509", "-new", "-key", key, "-subj", f"/CN={FQDN}", "-days", "365",
             "-config", str(ext), "-extensions", "ext", "-out", cert)
        # No --ca: the chain rule is skipped, so exactly not_self_signed fails.
        r = self.check(cert, key, use_ca=False)
        self.assert_only(r, "not_self_signed", "FAIL", "self-signed")
        self.assertIn("skipped", rule_lines(r.stdout)["chain"][1])

    def test_missing_intermediate(self):
        cert, key = ca().leaf("nointer", chain=False)
        r = self.check(cert, key)
        self.assert_only(r, "chain", "FAIL", "issuer 'CN=tlsgate it intermediate'")

    def test_cn_case(self):
        cert, key = ca().leaf("cncase", cn="Sbc.example.com", san=(FQDN,))
        self.assert_only(self.check(cert, key), "cn_matches_fqdn", "FAIL", "only in case")

    def test_san_missing(self):
        cert, key = ca().leaf("nosan", san=())
        self.assert_only(self.check(cert, key), "san_matches_fqdn", "FAIL", "no DNS SAN")

    def test_san_case(self):
        cert, key = ca().leaf("sancase", san=("Sbc.Example.com",))
        self.assert_only(self.check(cert, key), "san_matches_fqdn", "FAIL", "only in case")

    def test_rsa_1024_warns(self):
        cert, key = ca().leaf("rsa1024", bits=1024)
        self.assert_only(self.check(cert, key), "key_size", "WARN", "1024")

    def test_rsa_512_fails(self):
        cert, key = ca().leaf("rsa512", bits=512)
        self.assert_only(self.check(cert, key), "key_size", "FAIL", "512")

    def test_key_mismatch(self):
        c = ca()
        cert, _ = c.leaf("mismatch")
        other = c.key("mismatch-other")
        self.assert_only(self.check(cert, other), "key_matches", "FAIL", "does not match")

    def test_expired(self):
        cert, key = ca().leaf("expired", start="20200101000000Z", end="20200201000000Z")
        self.assert_only(self.check(cert, key), "validity", "FAIL", "expired")

    def test_not_yet_valid(self):
        cert, key = ca().leaf("notyet", start=stamp(10), end=stamp(400))
        self.assert_only(self.check(cert, key), "validity", "FAIL", "not valid for another")

    def test_expires_soon_warns(self):
        cert, key = ca().leaf("soon", end=10.5)
        self.assert_only(self.check(cert, key), "validity", "WARN", "under 30 days")

    def test_no_client_auth(self):
        cert, key = ca().leaf("noclient", eku="serverAuth")
        self.assert_only(self.check(cert, key), "eku", "FAIL", "clientAuth")

    def test_defaults_without_fqdn_key_ca(self):
        cert, key = ca().leaf("defaults")
        r = self.check(cert, None, fqdn=None, use_ca=False)
        self.assert_only(r, "", "PASS")
        rules = rule_lines(r.stdout)
        self.assertIn("skipped", rules["chain"][1])
        self.assertIn("skipped", rules["key_matches"][1])
        self.assertIn("taken from the CN", rules["cn_matches_fqdn"][1])
        self.assertIn("taken from the CN", rules["san_matches_fqdn"][1])

    def test_json(self):
        c = ca()
        cert, key = c.leaf("json", bits=1024)
        text = self.check(cert, key)
        r = self.check(cert, key, "--json")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("\n"), 1, r.stdout)
        doc = json.loads(r.stdout)
        self.assertEqual(list(doc), ["cert", "subject", "issuer", "serial", "not_after", "rules",
                                     "result"])
        self.assertEqual(doc["cert"], cert)
        self.assertEqual(doc["subject"], f"CN={FQDN}")
        self.assertEqual(doc["issuer"], "CN=tlsgate it intermediate")
        serial = ossl("x509", "-in", cert, "-noout", "-serial").strip().split("=", 1)[1]
        self.assertEqual(doc["serial"], serial)
        end = ossl("x509", "-in", cert, "-noout", "-enddate").strip().split("=", 1)[1]
        want = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z")
        self.assertEqual(doc["not_after"], want.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.assertEqual(doc["result"], "WARN")
        self.assertEqual([x["rule"] for x in doc["rules"]], list(RULES))
        # The JSON says what the text says, rule for rule.
        lines = rule_lines(text.stdout)
        for x in doc["rules"]:
            self.assertEqual(set(x), {"rule", "status", "detail"})
            self.assertEqual((x["status"], x["detail"]), lines[x["rule"]])
        # A failing certificate: result FAIL, exit 1, still valid JSON.
        cert, key = c.leaf("json-fail", eku="serverAuth")
        r = self.check(cert, key, "--json")
        self.assertEqual(r.returncode, 1)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["result"], "FAIL")
        self.assertEqual([x["rule"] for x in doc["rules"] if x["status"] != "PASS"], ["eku"])

    def test_usage_and_unreadable(self):
        garbage = h.workdir() / "garbage.pem"
        garbage.write_text("not a certificate\n")
        cert, key = ca().leaf("usage")
        for args in ([], ["--cert"], ["--cert", cert, "--bogus"],
                     ["--cert", str(h.workdir() / "missing.pem")], ["--cert", str(garbage)],
                     ["--cert", cert, "--key", str(garbage)],
                     ["--cert", cert, "--ca", str(garbage)]):
            with self.subTest(args=args):
                r = tlsgate("cert-check", *args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertEqual(r.stdout, "")
                self.assertNotEqual(r.stderr, "")


if __name__ == "__main__":
    h.main()
