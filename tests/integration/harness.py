"""Shared helpers for the tlsgate integration tests (Python 3 standard library only).

Every test runs real processes on loopback: tlsgate itself, tg-echo as the plain backend,
tg-client / openssl s_client / Python's ssl as TLS clients and openssl s_server as a TLS
upstream. Everything a test starts is registered here and killed (by pid) when the test ends,
whatever happened, and again at interpreter exit. Every wait is bounded.

Binaries come from the environment that CTest sets (TLSGATE, TG_CLIENT, TG_ECHO, MAKE_PKI);
for manual runs they fall back to build/... relative to the repository. TG_SANITIZE=1 (the
ASan/UBSan build) multiplies every timeout by 5.
"""

import atexit
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SANITIZE = os.environ.get("TG_SANITIZE", "") not in ("", "0", "OFF")
SCALE = 5 if SANITIZE else 1
MIB = 1024 * 1024


def t(seconds):
    """A timeout in seconds, scaled for the sanitizer build."""
    return seconds * SCALE


def _binary(env, default):
    path = os.environ.get(env) or str(REPO / default)
    if not os.path.exists(path):
        raise RuntimeError(f"{env}: {path} does not exist (build first or set {env})")
    return path


TLSGATE = _binary("TLSGATE", "build/tlsgate")
TG_CLIENT = _binary("TG_CLIENT", "build/tests/tools/tg-client")
TG_ECHO = _binary("TG_ECHO", "build/tests/tools/tg-echo")
MAKE_PKI = _binary("MAKE_PKI", "scripts/make-pki.sh")
OPENSSL = shutil.which("openssl")

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")

_workdir = Path(tempfile.mkdtemp(prefix="tg-it-"))
_procs = []  # every Popen this process started, for cleanup
_procs_lock = threading.Lock()


def _kill(p):
    if p.poll() is None:
        try:
            p.kill()
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def kill_all():
    """Kill every process this test process started that is still running."""
    with _procs_lock:
        procs = list(_procs)
        _procs.clear()
    for p in procs:
        _kill(p)


def _at_exit():
    kill_all()
    if os.environ.get("TG_KEEP_TMP"):
        print(f"harness: kept {_workdir}", file=sys.stderr)
    else:
        shutil.rmtree(_workdir, ignore_errors=True)


atexit.register(_at_exit)


def workdir():
    return _workdir


def tmpfile(prefix, suffix=""):
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=_workdir)
    os.close(fd)
    return Path(path)


def popen(cmd, **kw):
    """subprocess.Popen registered for cleanup."""
    p = subprocess.Popen([str(c) for c in cmd], **kw)
    with _procs_lock:
        _procs.append(p)
    return p


def run(cmd, timeout=30, input=None, env=None):
    """Run |cmd| to completion (killed after |timeout| scaled seconds); CompletedProcess with
    text stdout/stderr. A timeout raises AssertionError naming the command."""
    try:
        return subprocess.run([str(c) for c in cmd], input=input, capture_output=True,
                              text=True, timeout=t(timeout), env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out after {t(timeout)} s: {' '.join(map(str, cmd))}\n"
                             f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None


class TestCase(unittest.TestCase):
    """unittest.TestCase that kills whatever a test left running."""

    def tearDown(self):
        kill_all()


def wait_for(cond, timeout, what, interval=0.05):
    """Poll |cond| until it returns a true value (returned) or |timeout| scaled seconds pass
    (AssertionError naming |what|)."""
    deadline = time.monotonic() + t(timeout)
    last = None
    while True:
        try:
            last = cond()
        except (OSError, ValueError) as e:
            last = None
            err = e
        else:
            err = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {t(timeout)} s waiting for {what}"
                                 + (f" (last error: {err})" if err else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Ports and addresses.

_given_ports = set()


def free_port(host="127.0.0.1"):
    """A TCP port that was free on |host| a moment ago (bind port 0, close). Never the same
    port twice in one process. Tests that can let the server pick (port 0) should."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise RuntimeError("no free port")


def closed_port(host="127.0.0.1"):
    """A port nothing listens on (connect gets ECONNREFUSED)."""
    return free_port(host)


def fmt_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_addr(addr):
    """'127.0.0.1:5061' or '[::1]:5061' -> (host, port)."""
    m = re.fullmatch(r"\[(.+)\]:(\d+)|([^:]+):(\d+)", addr)
    if m is None:
        raise ValueError(addr)
    if m.group(1):
        return m.group(1), int(m.group(2))
    return m.group(3), int(m.group(4))


def ipv6_available():
    """Returns None when ::1 works, else the reason it does not."""
    if not socket.has_ipv6:
        return "Python built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            s.listen(1)
            with socket.create_connection(("::1", s.getsockname()[1]), timeout=2):
                pass
    except OSError as e:
        return f"::1 unusable: {e}"
    return None


def accept_loop(lsock, stopped, handle):
    """Accept on |lsock| until |stopped()| is true (checked every 0.2 s) or the socket is
    closed, and start a daemon thread running |handle(sock, peer)| for each connection: the
    accept loop of every threaded test server."""
    lsock.settimeout(0.2)
    while not stopped():
        try:
            s, peer = lsock.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        threading.Thread(target=handle, args=(s, peer), daemon=True).start()


def connect_refused(addr, timeout=2):
    """True when a TCP connect to |addr| is refused (nothing listening)."""
    host, port = split_addr(addr)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True


def read_until_closed(sock, timeout):
    """Read from a plain socket until EOF/reset or |timeout| scaled seconds. Returns
    (data, how) with how in 'eof', 'reset', 'timeout'."""
    deadline = time.monotonic() + t(timeout)
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "timeout"
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk


# ---------------------------------------------------------------------------------------------
# PKI.

class PKI:
    """scripts/make-pki.sh output plus extra certificates made with the openssl CLI."""

    def __init__(self, path):
        self.dir = Path(path)
        self._extra_done = False

    def __getitem__(self, name):
        """pki['client'] -> (cert path, key path)."""
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key")

    def cert(self, name):
        return str(self.dir / f"{name}.pem")

    def key(self, name):
        return str(self.dir / f"{name}.key")

    @property
    def ca(self):
        return str(self.dir / "ca.pem")

    def extra(self):
        """Make (once) expired.pem, notyet.pem (signed by ca, backdated / future windows with
        `openssl ca`) and untrusted.pem (signed by a CA that is not in ca.pem), all with
        CN=SAN=sip.um.example.net and one shared RSA key each."""
        if self._extra_done:
            return self
        if OPENSSL is None:
            raise unittest.SkipTest("openssl CLI not found: cannot make expired/untrusted certs")
        d = self.dir / "extra"
        d.mkdir(exist_ok=True)
        (d / "newcerts").mkdir(exist_ok=True)
        (d / "index.txt").write_text("")
        (d / "serial").write_text("1000\n")
        ext = d / "leaf.ext"
        ext.write_text("basicConstraints = critical, CA:FALSE\n"
                       "keyUsage = critical, digitalSignature, keyEncipherment\n"
                       "extendedKeyUsage = clientAuth, serverAuth\n"
                       "subjectAltName = DNS:sip.um.example.net\n")
        cnf = d / "ca.cnf"
        cnf.write_text(f"""[ca]
default_ca = tg
[tg]
database = {d}/index.txt
new_certs_dir = {d}/newcerts
serial = {d}/serial
default_md = sha256
policy = pol
unique_subject = no
[pol]
commonName = supplied
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth, serverAuth
subjectAltName = DNS:sip.um.example.net
""")

        def ossl(*args):
            r = run([OPENSSL, *args], timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stdout}{r.stderr}")

        key = str(d / "leaf.key")
        ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
        csr = str(d / "leaf.csr")
        ossl("req", "-new", "-key", key, "-subj", "/CN=sip.um.example.net", "-out", csr)
        for name, start, end in (("expired", "20200101000000Z", "20200201000000Z"),
                                 ("notyet", "20990101000000Z", "20991231000000Z")):
            ossl("ca", "-batch", "-config", str(cnf), "-cert", self.ca, "-keyfile",
                 self.key("ca"), "-in", csr, "-out", str(self.dir / f"{name}.pem"),
                 "-startdate", start, "-enddate", end, "-extensions", "ext", "-notext")
            shutil.copy(key, self.dir / f"{name}.key")
        other_key = str(d / "other-ca.key")
        ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
             other_key)
        other_ca = str(self.dir / "other-ca.pem")
        ossl("req", "-x509", "-new", "-key", other_key, "-subj", "/CN=some other CA", "-days",
             "3650", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
             "keyUsage=critical,keyCertSign,cRLSign", "-out", other_ca)
        ossl("x509", "-req", "-in", csr, "-CA", other_ca, "-CAkey", other_key,
             "-CAcreateserial", "-CAserial", str(d / "other.srl"), "-days", "30", "-sha256",
             "-extfile", str(ext), "-out", str(self.dir / "untrusted.pem"))
        shutil.copy(key, self.dir / "untrusted.key")
        self._extra_done = True
        return self


_pki = None


def pki():
    """The PKI of this test process: scripts/make-pki.sh run once into a temp dir."""
    global _pki
    if _pki is None:
        d = _workdir / "pki"
        r = run(["bash", MAKE_PKI, str(d)], timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"make-pki.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        _pki = PKI(d)
    return _pki


# ---------------------------------------------------------------------------------------------
# Processes.

class Echo:
    """tg-echo on |host| port 0 (the port it picked is self.port / self.addr)."""

    def __init__(self, host="127.0.0.1", sink=False, port=0):
        self.host = host
        self.sink = sink
        self.proc = None
        self.port = None
        self.want_port = port  # 0: the kernel picks; else this port (a restarted backend)
        self.log_path = tmpfile("echo-", ".log")

    def __enter__(self):
        port_file = tmpfile("echo-port-")
        port_file.unlink()
        cmd = [TG_ECHO, "--listen", fmt_addr(self.host, self.want_port), "--port-file",
               port_file]
        if self.sink:
            cmd.append("--sink")
        self._log = open(self.log_path, "wb")
        self.proc = popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"tg-echo exited {self.proc.returncode}: "
                                     f"{self.log_path.read_text()}")
            if port_file.exists():
                text = port_file.read_text().strip()
                m = re.search(r"(\d+)", text)
                return int(m.group(1)) if m else None
            return None

        self.port = wait_for(ready, 10, "tg-echo to write its port")
        self.addr = fmt_addr(self.host, self.port)
        return self

    def __exit__(self, exc_type, exc, tb):
        self._log.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=t(10))
            except subprocess.TimeoutExpired:
                _kill(self.proc)
                if exc_type is None:
                    raise AssertionError("tg-echo did not exit on SIGTERM")
        return False


AUTO = "AUTO"  # as a port in a listen address: pick a free port


def _ini(sections):
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                v = ", ".join(map(str, v))
            lines.append(f"{k} = {v}")
        lines.append("")
    return "\n".join(lines)


def base_config(p=None, **tls):
    """The [global], [admin] and [tls] sections every test starts from. Keyword arguments
    override [tls] keys (None removes one)."""
    p = p or pki()
    cfg = {
        "global": {"workers": 2, "log_level": "info", "drain_timeout_ms": 2000},
        "admin": {"listen": f"127.0.0.1:{AUTO}"},
        "tls": {
            "cert": p.cert("server"), "key": p.key("server"), "ca": p.ca,
            "fqdn": "sbc.tlsgate.test",
            "peer_names": "sip.um.example.net, sip.provider.test",
            "handshake_timeout_ms": 3000,
        },
    }
    cfg["tls"].update(tls)
    return cfg


def write_config(sections, name="tlsgate"):
    path = tmpfile(name + "-", ".conf")
    path.write_text(_ini(sections))
    path.chmod(0o644)  # readable by a tlsgate started as another user (test_keyd.py)
    return path


class Proxy:
    """tlsgate run as a context manager.

    |sections| maps INI section names ('global', 'tls', 'inbound provider', ...) to dicts of
    keys. A `listen` value ending in ':AUTO' gets a free port (re-picked if the start fails
    because the port was taken meanwhile). On exit: SIGTERM, a bounded wait, and assertions
    that the exit code is 0 (or |expect_rc|), that no `level=error` line was logged (unless
    |allow_errors|) and that no sanitizer report is in the log. Anything left running is killed.
    |nofile|, when given, is the RLIMIT_NOFILE (soft and hard) tlsgate starts under.
    """

    def __init__(self, sections, allow_errors=False, expect_rc=0, args=(), nofile=None,
                 binary=None, preexec=None):
        self.template = sections
        self.binary = binary or TLSGATE  # another copy of tlsgate (e.g. one another user may run)
        self.preexec = preexec  # run in the child before exec (e.g. drop to another user)
        self.allow_errors = allow_errors
        self.expect_rc = expect_rc
        self.args = list(args)
        self.nofile = nofile
        self.proc = None
        self.log_path = tmpfile("tlsgate-", ".log")
        self.stopped_rc = None
        self.sections = None
        self.config_path = None

    # -- configuration

    def _materialise(self):
        out = {}
        for name, keys in self.template.items():
            out[name] = dict(keys)
            v = out[name].get("listen")
            if isinstance(v, str) and v.endswith(":" + AUTO):
                host = v[: -len(AUTO) - 1].strip("[]")
                out[name]["listen"] = fmt_addr(host, free_port(host))
        return out

    def addr(self, listener):
        """The listen address of the [inbound/outbound NAME] section |listener|."""
        for name, keys in self.sections.items():
            parts = name.split()
            if len(parts) == 2 and parts[1] == listener:
                return keys["listen"]
        raise KeyError(listener)

    @property
    def drain_timeout(self):
        return int(self.sections.get("global", {}).get("drain_timeout_ms", 10000)) / 1000.0

    # -- lifecycle

    def __enter__(self):
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        for attempt in range(4):
            self.sections = self._materialise()
            self.config_path = write_config(self.sections)
            self.admin = "http://" + self.sections["admin"]["listen"]
            self._log = open(self.log_path, "ab")
            extra = {}
            steps = ([_rlimit_nofile(self.nofile)] if self.nofile is not None else []) + (
                [self.preexec] if self.preexec is not None else [])
            if steps:
                extra["preexec_fn"] = lambda: [step() for step in steps]
            self.proc = popen([self.binary, "run", "-c", self.config_path, *self.args],
                              stdout=self._log, stderr=subprocess.STDOUT, env=env, **extra)
            try:
                wait_for(self._ready, 10, "tlsgate /healthz")
                return self
            except _EarlyExit:
                self._log.close()
                text = self.log()
                if attempt < 3 and re.search(r"listen_failed|admin_failed|in use", text):
                    continue  # a port picked for us was taken meanwhile: pick again
                raise AssertionError(f"tlsgate exited {self.proc.returncode} at startup:\n"
                                     f"{text}") from None
            except BaseException:
                self._log.close()
                _kill(self.proc)
                raise AssertionError(f"tlsgate did not become healthy:\n{self.log()}")
        raise AssertionError("unreachable")

    def _ready(self):
        if self.proc.poll() is not None:
            raise _EarlyExit()
        code, body = self.http("/healthz", timeout=1)
        return code == 200 and body.strip() == "ok"

    def stop(self, timeout=None):
        """SIGTERM and wait (bounded: drain_timeout + 15 s, scaled). Returns the exit code."""
        if self.stopped_rc is not None:
            return self.stopped_rc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        limit = timeout if timeout is not None else self.drain_timeout + 15
        try:
            self.stopped_rc = self.proc.wait(timeout=t(limit))
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise AssertionError(f"tlsgate did not exit within {t(limit)} s of SIGTERM:\n"
                                 f"{self.log_tail()}") from None
        self._log.close()
        return self.stopped_rc

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # The test failed: show what the proxy said, then make sure it is gone.
            sys.stderr.write(f"--- tlsgate log ({self.log_path}) ---\n{self.log_tail()}\n")
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=t(self.drain_timeout + 10))
                except subprocess.TimeoutExpired:
                    _kill(self.proc)
            if not self._log.closed:
                self._log.close()
            return False
        rc = self.stop()
        self.check_log()
        if rc != self.expect_rc:
            how = f"exited {rc}"
            if rc < 0:
                how = (f"was killed by {signal.Signals(-rc).name} (the signal was not handled:"
                       f" no drain, no clean exit)")
            raise AssertionError(f"tlsgate {how}, expected exit {self.expect_rc}:\n"
                                 f"{self.log_tail()}")
        return False

    def check_log(self):
        text = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                raise AssertionError(f"sanitizer report in the tlsgate log:\n{text[-20000:]}")
        if not self.allow_errors:
            errors = [l for l in text.splitlines() if "level=error" in l]
            if errors:
                raise AssertionError("tlsgate logged errors:\n" + "\n".join(errors))

    # -- observation

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def log_lines(self, *patterns):
        """Log lines containing every one of |patterns| (plain substrings)."""
        return [l for l in self.log().splitlines() if all(p in l for p in patterns)]

    def wait_log(self, *patterns, timeout=10):
        return wait_for(lambda: self.log_lines(*patterns), timeout,
                        f"a log line with {patterns}")

    def http(self, path, timeout=5):
        """GET |path| on the admin listener: (status, body text)."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=t(timeout)) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        """/metrics as {(name, frozenset(labels.items())): value}."""
        code, body = self.http("/metrics")
        if code != 200:
            raise AssertionError(f"/metrics answered {code}: {body}")
        return parse_metrics(body)

    def metric(self, name, **labels):
        """One sample's value; 0 when the series is absent (counters start at zero)."""
        return self.metrics().get((name, frozenset(labels.items())), 0)

    def wait_metric(self, name, pred, timeout=10, **labels):
        """Poll until pred(value) holds; returns the value."""
        box = {}

        def cond():
            box["v"] = self.metric(name, **labels)
            return pred(box["v"])

        try:
            wait_for(cond, timeout, f"{name}{labels}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last value {box.get('v')}") from None
        return box["v"]

    def status(self):
        code, body = self.http("/status")
        if code != 200:
            raise AssertionError(f"/status answered {code}: {body}")
        return json.loads(body)


class _EarlyExit(Exception):
    pass


def _rlimit_nofile(n):
    """A preexec_fn that sets RLIMIT_NOFILE to |n| (soft and hard) in the child."""
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise AssertionError(f"malformed metrics line: {line!r}")
        labels = {}
        if m.group(2):
            pos = 0
            s = m.group(2)
            while pos < len(s):
                lm = _LABEL.match(s, pos)
                if lm is None:
                    raise AssertionError(f"malformed labels: {line!r}")
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


# ---------------------------------------------------------------------------------------------
# Clients.

def tg_client(connect, *mode, cert="client", tls=None, timeout=60, p=None, extra=()):
    """Run tg-client to completion. |cert| names a PKI certificate (None: no client cert).
    Returns CompletedProcess; tg-client's own --timeout-ms is |timeout| (scaled) and the
    process is killed 10 s after that."""
    p = p or pki()
    cmd = [TG_CLIENT, "--connect", connect, "--ca", p.ca, "--sni", "sbc.tlsgate.test",
           "--timeout-ms", str(int(t(timeout) * 1000))]
    if cert is not None:
        cmd += ["--cert", p.cert(cert), "--key", p.key(cert)]
    if tls is not None:
        cmd += ["--tls", tls]
    cmd += list(extra) + list(mode)
    return run(cmd, timeout=timeout + 10)


def tg_client_bg(connect, *mode, cert="client", tls=None, timeout=60, p=None):
    """Start tg-client in the background: a Popen with text stdout/stderr pipes."""
    p = p or pki()
    cmd = [TG_CLIENT, "--connect", connect, "--ca", p.ca, "--sni", "sbc.tlsgate.test",
           "--timeout-ms", str(int(t(timeout) * 1000))]
    if cert is not None:
        cmd += ["--cert", p.cert(cert), "--key", p.key(cert)]
    if tls is not None:
        cmd += ["--tls", tls]
    cmd += list(mode)
    return popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout):
    """Wait for a background process (bounded); returns (rc, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=t(timeout))
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args[0]} did not finish in {t(timeout)} s:\n{out}{err}")
    return proc.returncode, out, err


def kv(line_text):
    """Parse 'a=1 b="x y"' into a dict."""
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in re.finditer(r'(\w+)=(?:"([^"]*)"|(\S*))', line_text)}


def client_context(cert="client", p=None, version=None):
    """A Python ssl client context trusting the test CA, with a client certificate."""
    p = p or pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(p.ca)
    if cert is not None:
        ctx.load_cert_chain(p.cert(cert), p.key(cert))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_connect(addr, cert="client", timeout=10, p=None, version=None, source=None):
    """A connected, handshaken Python TLS socket to |addr| (blocking, timeout scaled).
    Ragged EOFs raise (suppress_ragged_eofs=False) so close_notify and TCP EOF differ.
    |source|: the local address to connect from (e.g. '127.0.0.2')."""
    host, port = split_addr(addr)
    raw = socket.create_connection((host, port), timeout=t(timeout),
                                   source_address=(source, 0) if source else None)
    ctx = client_context(cert, p, version)
    s = ctx.wrap_socket(raw, server_hostname="sbc.tlsgate.test", suppress_ragged_eofs=False)
    s.settimeout(t(timeout))
    return s


def tls_recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(min(65536, n - len(data)))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def tls_wait_close(s, timeout):
    """Read until the TLS peer closes. Returns (data, how, seconds): how is 'close_notify',
    'eof' (TCP FIN without close_notify), 'reset' or 'timeout'."""
    s.settimeout(0.2)
    start = time.monotonic()
    deadline = start + t(timeout)
    data = b""
    while True:
        if time.monotonic() >= deadline:
            return data, "timeout", time.monotonic() - start
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ssl.SSLEOFError:
            return data, "eof", time.monotonic() - start
        except ConnectionResetError:
            return data, "reset", time.monotonic() - start
        except ssl.SSLError as e:
            return data, f"ssl_error:{e.reason}", time.monotonic() - start
        if not chunk:
            return data, "close_notify", time.monotonic() - start
        data += chunk


def random_bytes(n, seed):
    return random.Random(seed).randbytes(n)


class SServer:
    """openssl s_server on 127.0.0.1 (port picked by the kernel) accepting one connection,
    stdin a pipe kept open (s_server exits when its stdin ends). stdout/stderr go to files."""

    def __init__(self, cert, p=None, verify=True):
        self.p = p or pki()
        self.cert = cert
        self.verify = verify
        self.out_path = tmpfile("s_server-", ".out")
        self.err_path = tmpfile("s_server-", ".err")

    def __enter__(self):
        if OPENSSL is None:
            raise unittest.SkipTest("openssl CLI not found")
        cmd = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
               "-cert", self.p.cert(self.cert), "-key", self.p.key(self.cert),
               "-CAfile", self.p.ca]
        if self.verify:
            cmd += ["-Verify", "1", "-verify_return_error"]
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = popen(cmd, stdin=subprocess.PIPE, stdout=self._out, stderr=self._err)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"s_server exited {self.proc.returncode}: "
                                     f"{self.stdout()}{self.stderr()}")
            m = re.search(r"ACCEPT .*:(\d+)", self.stdout())
            return int(m.group(1)) if m else None

        self.port = wait_for(ready, 10, "s_server to print ACCEPT")
        self.addr = f"127.0.0.1:{self.port}"
        return self

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def __exit__(self, *exc):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        _kill(self.proc)
        self._out.close()
        self._err.close()
        return False


def main():
    """unittest.main with verbose output; the exit code is non-zero on failure."""
    unittest.main(verbosity=2)


def cert_serial(pem_path):
    """The serial number of a PEM certificate, in hex, as the openssl CLI reads it."""
    r = run([OPENSSL, "x509", "-in", pem_path, "-noout", "-serial"], timeout=30)
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    return r.stdout.strip().split("=", 1)[1].lower().lstrip("0")
