#!/usr/bin/env python3
"""Soak: tlsgate under a mixed load for a long while, watching its memory and descriptors.

  bench/soak/soak.py [--minutes 10] [--out DIR] [--idle 500] [--rss-tolerance-kib 4096]
                     [--fd-tolerance 32] [--allow-errors] [--malloc-conf CONF]

Not a CTest test (it runs for minutes and its verdict depends on the machine); run it by hand,
in the background for long runs:

  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build
  nohup python3 bench/soak/soak.py --minutes 10 --out /tmp/tg-soak > /tmp/tg-soak.out 2>&1 &
  tail -f /tmp/tg-soak.out          # a line every sample; the summary at the end

What runs (everything on 127.0.0.1, everything stops by itself):

- tlsgate with `workers = 2`, an `[inbound tcp]` listener forwarding to tg-echo and an
  `[inbound sip]` listener (`mode = sip`) forwarding to tg-sip-responder (the SIP load is
  skipped when the responder is not built). Per-source admission limits lifted (one source),
  idle timeout off, log level warn.
- tlsgate-load, several at once, each in rounds until the time is up:
    idle       --idle connections (default 500) established at the start and held throughout
               (so the descriptor count has a flat floor);
    handshake  2 s bursts every 10 s, 2 loops, alternately TLS 1.3 full, TLS 1.2 full and
               TLS 1.3 resumed;
    bulk       2 s bursts every 10 s, 2 connections, write sizes 1 KiB / 16 KiB / 64 KiB in turn,
               the echo checked byte for byte;
    latency    1 KiB round trips, 200/s open loop over 8 connections, rounds of 60 s
               (reconnecting each round);
    sip        OPTIONS through the sip listener, 200/s open loop over 8 connections, rounds of
               60 s.
- Every 5 s: tlsgate's VmRSS (/proc/PID/status), open descriptors (/proc/PID/fd), threads,
  CPU seconds, and the connections /metrics says are active; one CSV row each
  (DIR/samples.csv). Each load round's JSON result goes to DIR/loads.jsonl, tlsgate's log to
  DIR/tlsgate.log.

At the end the loads stop, tlsgate is given a few seconds to close everything, and a last
"quiet" sample is taken. The summary: RSS and descriptors first / last / max, the least-squares
slope of RSS (KiB/min) and of descriptors (per min) over the second half of the run, the
descriptors when quiet at the start and at the end, load errors (tlsgate-load's own count plus
rounds that failed), tlsgate's refused handshakes and `level=error` log lines.

Exit status: 0 when the fitted RSS growth over the second half (slope x its minutes) is within
--rss-tolerance-kib, the fitted descriptor growth within --fd-tolerance, the quiet descriptor
count at the end within --fd-tolerance of the one at the start, tlsgate still running, and (unless
--allow-errors) no load errors; 1 otherwise, with the reasons printed; 2 usage or setup failure.

The first half is not judged: receive buffers (16 MiB a worker, resident as the kernel first
writes into them), the per-worker queue cache and the allocator's arenas warm up there.
tlsgate runs with the allocator's defaults unless --malloc-conf is given (jemalloc keeps freed
pages for dirty_decay_ms, 10 s, so RSS moves by a few MiB with the load; the fit over a few
minutes of samples averages that out).

Binaries come from the environment (TLSGATE, TLSGATE_LOAD, TG_ECHO, TG_SIP_RESPONDER,
MAKE_PKI) or build/.
"""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

# The binaries, the peer name and the small process helpers are compare.py's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "compare"))
from compare import (CLK_TCK, ECHO, LOAD, MAKE_PKI, PEER_NAME, SIP_RESPONDER, TLSGATE, free_port,
                     wait_port)  # noqa: E402

SAMPLE_S = 5.0


def proc_status(pid):
    """(VmRSS KiB, threads) of |pid|."""
    rss = threads = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def slope(points):
    """Least-squares slope of [(x, y)]; None with fewer than 3 points."""
    n = len(points)
    if n < 3:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


class Soak:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.procs = []
        self.load_errors = 0
        self.failed_rounds = []
        self.rounds = {}
        self.loads_log = open(os.path.join(self.out, "loads.jsonl"), "w")

    # -- processes

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def kill_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def start_backends(self):
        self.pki = os.path.join(self.out, "pki")
        subprocess.run(["bash", MAKE_PKI, self.pki], check=True, capture_output=True, timeout=120)
        self.echo_port = free_port()
        self.echo = self.spawn([ECHO, "--listen", "127.0.0.1:%d" % self.echo_port],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.echo_port, self.echo)
        self.sip = os.path.exists(SIP_RESPONDER) and not self.args.no_sip
        if self.sip:
            self.resp_port = free_port()
            self.resp = self.spawn([SIP_RESPONDER, "--listen", "127.0.0.1:%d" % self.resp_port],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(self.resp_port, self.resp)
        elif not self.args.no_sip:
            print("soak: %s missing: no SIP load" % SIP_RESPONDER, file=sys.stderr)

    def start_tlsgate(self):
        self.tcp_port = free_port()
        self.sip_port = free_port()
        self.admin_port = free_port()
        conf = os.path.join(self.out, "tlsgate.conf")
        sip = ""
        if self.sip:
            sip = ("[inbound sip]\nlisten = 127.0.0.1:%d\nforward = 127.0.0.1:%d\nmode = sip\n"
                   % (self.sip_port, self.resp_port))
        with open(conf, "w") as f:
            f.write("""[global]
workers = 2
log_level = warn
max_connections = 9000
drain_timeout_ms = 2000
# One source address for every load: the per-source admission limits are lifted.
max_handshakes_per_source = 0
new_connections_per_source = 0
[admin]
listen = 127.0.0.1:%d
[tls]
cert = %s/server.pem
key = %s/server.key
ca = %s/ca.pem
fqdn = sbc.tlsgate.test
peer_names = %s
min_version = 1.2
handshake_timeout_ms = 30000
idle_timeout_ms = 0
[inbound tcp]
listen = 127.0.0.1:%d
forward = 127.0.0.1:%d
%s""" % (self.admin_port, self.pki, self.pki, self.pki, PEER_NAME, self.tcp_port,
                self.echo_port, sip))
        env = dict(os.environ)
        if self.args.malloc_conf:
            env["MALLOC_CONF"] = self.args.malloc_conf
        self.tg_log = open(os.path.join(self.out, "tlsgate.log"), "wb")
        self.tg = self.spawn([TLSGATE, "run", "-c", conf], stdout=self.tg_log,
                             stderr=subprocess.STDOUT, env=env)
        wait_port(self.tcp_port, self.tg)
        wait_port(self.admin_port, self.tg)

    # -- observation

    def metrics(self):
        """{name: {labels text: value}} from /metrics (empty on failure)."""
        out = {}
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.admin_port,
                                        timeout=3) as r:
                text = r.read().decode()
        except OSError:
            return out
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name, _, labels = name_labels.partition("{")
            try:
                out.setdefault(name, {})["{" + labels if labels else ""] = float(value)
            except ValueError:
                pass
        return out

    def sample(self, t0):
        pid = self.tg.pid
        rss, threads = proc_status(pid)
        fds = fd_count(pid)
        m = self.metrics()
        active = sum(m.get("tlsgate_connections_active", {}).values())
        return {"t_s": round(time.monotonic() - t0, 1), "rss_kib": rss, "fds": fds,
                "threads": threads, "cpu_s": round(cpu_seconds(pid), 2),
                "conns_active": int(active)}

    @staticmethod
    def refused(m):
        """Handshakes that did not end ok, from /metrics."""
        return int(sum(v for k, v in m.get("tlsgate_handshakes_total", {}).items()
                       if 'result="ok"' not in k))

    # -- loads

    def load_cmd(self, port, extra):
        return [LOAD, "--connect", "127.0.0.1:%d" % port, "--cert", self.pki + "/client.pem",
                "--key", self.pki + "/client.key", "--ca", self.pki + "/ca.pem",
                "--sni", "sbc.tlsgate.test", "--json"] + extra

    def record(self, name, extra, p_rc, out, err):
        res = None
        try:
            res = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            pass
        with self.lock:
            self.rounds[name] = self.rounds.get(name, 0) + 1
            if res is None:
                self.failed_rounds.append("%s rc=%s %s" % (name, p_rc, err.strip()[-200:]))
            else:
                self.load_errors += int(res.get("errors", 0))
            self.loads_log.write(json.dumps({"load": name, "args": extra, "rc": p_rc,
                                             "result": res}) + "\n")
            self.loads_log.flush()

    def run_round(self, name, port, extra, timeout):
        p = self.spawn(self.load_cmd(port, extra), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            err = "timed out after %d s; %s" % (timeout, err)
        self.record(name, extra, p.returncode, out, err)

    def loop(self, name, port, rounds, period):
        """Runs the argument lists of |rounds| in turn, one every |period| seconds (a round
        that lasts longer delays the next), until the end."""
        i = 0
        while not self.stop.is_set():
            start = time.monotonic()
            left = self.end - start
            if left < 3:
                break
            extra = list(rounds[i % len(rounds)])
            dur = float(extra[extra.index("--duration") + 1])
            if dur > left - 1:
                extra[extra.index("--duration") + 1] = "%.0f" % max(1, left - 1)
                dur = max(1, left - 1)
            self.run_round(name, port, extra, timeout=dur + 60)
            i += 1
            self.stop.wait(max(0.0, period - (time.monotonic() - start)))

    def idle_holder(self):
        hold = self.end - time.monotonic() - 2
        extra = ["--mode", "idle", "--concurrency", str(self.args.idle), "--hold",
                 "%.0f" % max(1, hold), "--duration", "%.0f" % max(1, hold)]
        p = self.spawn(self.load_cmd(self.tcp_port, extra), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        # established=N comes on stderr once every connection is up; the rest at the end.
        err_lines = []
        for line in p.stderr:
            err_lines.append(line)
            if line.startswith("established="):
                self.idle_established = int(line.split("=")[1])
                self.idle_up.set()
                break
        self.idle_up.set()
        try:
            out, err = p.communicate(timeout=hold + 120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        self.record("idle", extra, p.returncode, out, "".join(err_lines) + err)

    def run(self):
        a = self.args
        t0 = time.monotonic()
        self.end = t0 + a.minutes * 60
        csv_path = os.path.join(self.out, "samples.csv")
        fields = ["t_s", "rss_kib", "fds", "threads", "cpu_s", "conns_active"]
        samples = []
        quiet_start = self.sample(t0)
        quiet_start["phase"] = "quiet-start"
        self.refused0 = self.refused(self.metrics())  # the start-up port probes count here
        self.idle_established = 0
        self.idle_up = threading.Event()
        threads = [threading.Thread(target=self.idle_holder, daemon=True)]
        threads[0].start()
        self.idle_up.wait(timeout=120)
        print("soak: %d idle connections held; loads start" % self.idle_established,
              file=sys.stderr, flush=True)
        tcp = self.tcp_port
        loads = [
            ("handshake", tcp, [["--mode", "handshake", "--concurrency", "2", "--duration", "2",
                                 "--warmup", "0", "--tls", "1.3"],
                                ["--mode", "handshake", "--concurrency", "2", "--duration", "2",
                                 "--warmup", "0", "--tls", "1.2"],
                                ["--mode", "handshake", "--concurrency", "2", "--duration", "2",
                                 "--warmup", "0", "--tls", "1.3", "--resume"]], 10),
            ("bulk", tcp, [["--mode", "bulk", "--concurrency", "2", "--duration", "2",
                            "--warmup", "0", "--write-size", str(ws)]
                           for ws in (1024, 16384, 65536)], 10),
            ("latency", tcp, [["--mode", "latency", "--size", "1024", "--rate", "200",
                               "--concurrency", "8", "--duration", "60", "--warmup", "1"]], 60),
        ]
        if self.sip:
            loads.append(("sip", self.sip_port,
                          [["--mode", "sip-options", "--rate", "200", "--concurrency", "8",
                            "--duration", "60", "--warmup", "1"]], 60))
        for name, port, rounds, period in loads:
            th = threading.Thread(target=self.loop, args=(name, port, rounds, period),
                                  daemon=True)
            th.start()
            threads.append(th)
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields + ["phase"])
            w.writeheader()
            quiet_start_row = dict(quiet_start)
            w.writerow(quiet_start_row)
            next_t = time.monotonic()
            while time.monotonic() < self.end:
                if self.tg.poll() is not None:
                    print("soak: tlsgate exited %s" % self.tg.returncode, file=sys.stderr)
                    break
                s = self.sample(t0)
                s["phase"] = "load"
                samples.append(s)
                w.writerow(s)
                f.flush()
                print("soak: t=%6.0fs rss=%d KiB fds=%d conns=%d cpu=%.1fs" %
                      (s["t_s"], s["rss_kib"], s["fds"], s["conns_active"], s["cpu_s"]),
                      file=sys.stderr, flush=True)
                next_t += SAMPLE_S
                self.stop.wait(max(0.0, next_t - time.monotonic()))
            self.stop.set()
            for th in threads:
                th.join(timeout=90)
            # Quiet: every load has ended; give tlsgate time to close what they left.
            quiet_end = None
            alive = self.tg.poll() is None
            if alive:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    quiet_end = self.sample(t0)
                    if quiet_end["conns_active"] == 0 and quiet_end["fds"] <= quiet_start["fds"]:
                        break
                    time.sleep(1)
                time.sleep(1)
                quiet_end = self.sample(t0)
                quiet_end["phase"] = "quiet-end"
                w.writerow(quiet_end)
        return self.summarize(samples, quiet_start, quiet_end, alive, csv_path)

    def summarize(self, samples, quiet_start, quiet_end, alive, csv_path):
        a = self.args
        refused = self.refused(self.metrics()) - self.refused0 if alive else 0
        tg_errors = 0
        try:
            with open(os.path.join(self.out, "tlsgate.log"), errors="replace") as f:
                tg_errors = sum(1 for line in f if "level=error" in line)
        except OSError:
            pass
        reasons = []
        if not samples:
            print("soak: no samples", file=sys.stderr)
            return 2
        dur_min = samples[-1]["t_s"] / 60.0
        half = [s for s in samples if s["t_s"] >= samples[-1]["t_s"] / 2]
        half_min = (half[-1]["t_s"] - half[0]["t_s"]) / 60.0 if half else 0
        rss_slope = slope([(s["t_s"] / 60.0, s["rss_kib"]) for s in half])
        fd_slope = slope([(s["t_s"] / 60.0, s["fds"]) for s in half])
        rss = [s["rss_kib"] for s in samples]
        fds = [s["fds"] for s in samples]
        rss_growth = rss_slope * half_min if rss_slope is not None else None
        fd_growth = fd_slope * half_min if fd_slope is not None else None
        cpu = samples[-1]["cpu_s"] - quiet_start["cpu_s"]
        rows = [
            ("duration", "%.1f min, %d samples every %.0f s" % (dur_min, len(samples), SAMPLE_S)),
            ("RSS KiB first / last / max", "%d / %d / %d" % (rss[0], rss[-1], max(rss))),
            ("RSS slope, second half (%.1f min)" % half_min,
             "%+.1f KiB/min (fitted growth %+.0f KiB; tolerance %d KiB)"
             % (rss_slope, rss_growth, a.rss_tolerance_kib) if rss_slope is not None
             else "n/a (too few samples)"),
            ("descriptors first / last / max", "%d / %d / %d" % (fds[0], fds[-1], max(fds))),
            ("descriptor slope, second half", "%+.2f /min (fitted growth %+.1f; tolerance %d)"
             % (fd_slope, fd_growth, a.fd_tolerance) if fd_slope is not None
             else "n/a (too few samples)"),
            ("quiet (no load) RSS KiB, start / end",
             "%d / %s" % (quiet_start["rss_kib"], quiet_end["rss_kib"] if quiet_end else "n/a")),
            ("quiet descriptors, start / end",
             "%d / %s" % (quiet_start["fds"], quiet_end["fds"] if quiet_end else "n/a")),
            ("idle connections held", "%d of %d" % (self.idle_established, a.idle)),
            ("load rounds", ", ".join("%s %d" % kv for kv in sorted(self.rounds.items()))),
            ("load errors (tlsgate-load count + failed rounds)",
             "%d + %d" % (self.load_errors, len(self.failed_rounds))),
            ("tlsgate handshakes not ok / level=error log lines", "%d / %d" % (refused, tg_errors)),
            ("tlsgate CPU seconds under load", "%.1f" % cpu),
        ]
        if not alive:
            reasons.append("tlsgate exited (%s)" % self.tg.returncode)
        if rss_growth is not None and rss_growth > a.rss_tolerance_kib:
            reasons.append("RSS grew %.0f KiB over the second half (tolerance %d)"
                           % (rss_growth, a.rss_tolerance_kib))
        if fd_growth is not None and fd_growth > a.fd_tolerance:
            reasons.append("descriptors grew %.1f over the second half (tolerance %d)"
                           % (fd_growth, a.fd_tolerance))
        if quiet_end is not None and quiet_end["fds"] - quiet_start["fds"] > a.fd_tolerance:
            reasons.append("%d descriptors open when quiet at the end, %d at the start"
                           % (quiet_end["fds"], quiet_start["fds"]))
        if self.idle_established < a.idle:
            reasons.append("only %d of %d idle connections established"
                           % (self.idle_established, a.idle))
        if not a.allow_errors and (self.load_errors or self.failed_rounds):
            reasons.append("load errors: %d counted, %d failed rounds%s"
                           % (self.load_errors, len(self.failed_rounds),
                              (": " + "; ".join(self.failed_rounds[:3]))
                              if self.failed_rounds else ""))
        print("command: %s" % " ".join(sys.argv))
        print("| soak | value |\n| --- | --- |")
        for k, v in rows:
            print("| %s | %s |" % (k, v))
        print("\nsamples: %s; load results: %s; tlsgate log: %s" %
              (csv_path, os.path.join(self.out, "loads.jsonl"),
               os.path.join(self.out, "tlsgate.log")))
        if reasons:
            print("\nsoak: FAIL: " + "; ".join(reasons))
            return 1
        print("\nsoak: ok")
        return 0

    def shutdown(self):
        self.stop.set()
        if getattr(self, "tg", None) is not None and self.tg.poll() is None:
            self.tg.send_signal(signal.SIGTERM)
            try:
                self.tg.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self.kill_all()
        self.loads_log.close()
        if getattr(self, "tg_log", None) is not None:
            self.tg_log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    ap.add_argument("--out", help="directory for samples.csv, loads.jsonl, tlsgate.log "
                    "(default: a new one under /tmp)")
    ap.add_argument("--idle", type=int, default=500, help="idle connections held throughout")
    ap.add_argument("--rss-tolerance-kib", type=int, default=4096,
                    help="fitted RSS growth allowed over the second half")
    ap.add_argument("--fd-tolerance", type=int, default=32,
                    help="fitted descriptor growth allowed over the second half, and quiet "
                    "descriptors at the end over those at the start")
    ap.add_argument("--allow-errors", action="store_true",
                    help="load errors are reported but do not fail the soak")
    ap.add_argument("--no-sip", action="store_true", help="no SIP listener and load")
    ap.add_argument("--malloc-conf", help="MALLOC_CONF for tlsgate (jemalloc)")
    args = ap.parse_args()
    if args.minutes <= 0 or args.idle < 0:
        ap.error("--minutes must be > 0 and --idle >= 0")
    for path in (TLSGATE, LOAD, ECHO, MAKE_PKI):
        if not os.path.exists(path):
            sys.exit("soak: missing %s (build first)" % path)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    else:
        args.out = tempfile.mkdtemp(prefix="tg-soak-")
    soak = Soak(args)
    rc = 2
    try:
        soak.start_backends()
        soak.start_tlsgate()
        print("soak: tlsgate pid %d, %.1f minutes, output in %s" % (soak.tg.pid, args.minutes,
              args.out), file=sys.stderr, flush=True)
        rc = soak.run()
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        rc = 2
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("soak: %s" % e, file=sys.stderr)
        rc = 2
    finally:
        soak.shutdown()
        shutil.rmtree(os.path.join(args.out, "pki"), ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
