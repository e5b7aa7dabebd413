"""
stproxy side by side: direct, stproxy (1 process and ``--workers 2``) and nginx, one run, one table.

    python benchmarks/run.py [--quick | --smoke] [--pin] [--json FILE]

Starts a fast loopback upstream (``benchmarks/upstream.py``, standing in for Streamlit), stproxy
in front of it as ``python -m stproxy`` (and with ``--workers 2`` when this stproxy has that
option), nginx with the WebSocket config of Streamlit's docs when ``nginx`` is installed
(``benchmarks/nginx.conf.tmpl``), and measures each workload against every system in turn.
``direct`` is the upstream itself: the ceiling of this machine, upstream and load generator.

Workloads: http_small_c1 (keep-alive GETs of a 2 KiB file on 1 connection: p50 latency),
http_small_c64 (the same on 64 connections: requests/s), http_big (one 512 MiB download: MB/s,
and the growth of the proxy's RSS), ws_rtt_100B (one WebSocket, 100 B echoed one at a time: p50,
and what the proxy adds to direct's), ws_push_50c_100B and ws_push_50c_64KB (50 WebSockets the
upstream pushes to as fast as they read: messages/s, MB/s), ws_echo_50c_100B (50 WebSockets with
16 messages each in flight, echoed: messages/s), ws_echo_50c_100B_deflate (the same, the client
offering permessage-deflate as Chromium does), ws_idle (2000 idle WebSockets: KB of proxy RSS
each), ws_idle_deflate (the same, each having offered permessage-deflate and echoed one message).

Load: ``benchmarks/loadgen.py`` worker processes (asyncio on raw sockets, WebSocket framing and
permessage-deflate done there), or ``wrk`` for the small GETs when it is on PATH (not in
``--smoke``).  Every workload is repeated (``--reps``; systems in a rotated order each time) and
the median is kept: compare the columns of one run, not figures from different runs or machines.
Before each run the script waits for the upstream and the proxies to go idle.

Modes: full (default: 3 repetitions, several minutes), ``--quick`` (1 repetition of shorter
runs, a 128 MiB download: a minute or two), ``--smoke`` (a few seconds, tiny
sizes: checks that everything runs; its figures mean nothing).  With ``--pin`` (two CPUs or more)
the upstream and the load generator run on CPU 0 and the proxy on CPU 1 (CPUs 1-2 for
``--workers 2`` when there are three or more; for ``direct`` the upstream moves to CPU 1), so
each column is one core of that proxy.

In the table, * marks a figure taken while the load generator's CPU was saturated (the system is
at least this fast), † one taken while the upstream's was (a ceiling of this kit), ! an error in
a repetition; the ratio columns divide one column's figure by another's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK = os.sysconf("SC_CLK_TCK")
MB = 1e6

MODES = {
    "full": dict(
        reps=3, http_dur=3.0, http_warm=0.5, rtt_dur=2.0, ws_dur=2.0, ws_warm=0.5,
        big_bytes=512 * 2**20, idle=2000, idle_hold=1.0, settle_window=0.2, settle_limit=15.0,
        leftover_wait=5.0,
    ),
    "quick": dict(
        reps=1, http_dur=1.5, http_warm=0.3, rtt_dur=1.0, ws_dur=1.5, ws_warm=0.5,
        big_bytes=128 * 2**20, idle=2000, idle_hold=1.0, settle_window=0.2, settle_limit=5.0,
        leftover_wait=3.0,
    ),
    "smoke": dict(
        reps=1, http_dur=0.2, http_warm=0.05, rtt_dur=0.25, ws_dur=0.2, ws_warm=0.05,
        big_bytes=4 * 2**20, idle=20, idle_hold=0.2, settle_window=0.05, settle_limit=1.0,
        leftover_wait=1.0,
    ),
}  # fmt: skip

# (key, what the loadgen does, spec) — the workloads of issue 13's table, plus deflate echo
WORKLOADS = [
    ("ws_idle", "idle", {}),
    ("ws_idle_deflate", "idle", {"deflate": True}),
    ("http_small_c1", "http", {"conns": 1}),
    ("http_small_c64", "http", {"conns": 64}),
    ("http_big", "big", {}),
    ("ws_rtt_100B", "rtt", {"size": 100}),
    ("ws_push_50c_100B", "push", {"conns": 50, "size": 100}),
    ("ws_echo_50c_100B", "echo", {"conns": 50, "size": 100, "window": 16}),
    ("ws_echo_50c_100B_deflate", "echo", {"conns": 50, "size": 100, "window": 16, "deflate": True}),
    ("ws_push_50c_64KB", "push", {"conns": 50, "size": 65536}),
]
# Measured in the first repetition only (they hold thousands of sockets).
ONCE = {"ws_idle", "ws_idle_deflate"}

# The table: (workload, metric, label, better, format).
ROWS = [
    ("http_small_c1", "p50_us", "p50 µs", "low", "{:,.0f}"),
    ("http_small_c64", "rps", "req/s", "high", "{:,.0f}"),
    ("http_big", "mb_per_s", "MB/s", "high", "{:,.0f}"),
    ("http_big", "rss_growth_mb", "proxy RSS growth MB", "low", "{:,.1f}"),
    ("ws_rtt_100B", "p50_us", "p50 µs", "low", "{:,.0f}"),
    ("ws_rtt_100B", "added_p50_us", "p50 added over direct µs", "low", "{:,.0f}"),
    ("ws_push_50c_100B", "msgs_per_s", "msg/s", "high", "{:,.0f}"),
    ("ws_echo_50c_100B", "msgs_per_s", "msg/s", "high", "{:,.0f}"),
    ("ws_echo_50c_100B_deflate", "msgs_per_s", "msg/s", "high", "{:,.0f}"),
    ("ws_push_50c_64KB", "mb_per_s", "MB/s", "high", "{:,.0f}"),
    ("ws_idle", "kb_per_conn", "KB of proxy RSS each", "low", "{:,.1f}"),
    ("ws_idle_deflate", "kb_per_conn", "KB of proxy RSS each", "low", "{:,.1f}"),
]
# The figure every system has for each workload (the smoke test checks these are positive).
PRIMARY = {
    "http_small_c1": "p50_us",
    "http_small_c64": "rps",
    "http_big": "mb_per_s",
    "ws_rtt_100B": "p50_us",
    "ws_push_50c_100B": "msgs_per_s",
    "ws_echo_50c_100B": "msgs_per_s",
    "ws_echo_50c_100B_deflate": "msgs_per_s",
    "ws_push_50c_64KB": "mb_per_s",
    "ws_idle": "alive",
    "ws_idle_deflate": "alive",
}


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ /proc helpers
def process_tree(pid: int | None) -> list[int]:
    """``pid`` and its descendants (stproxy's workers, nginx's worker)."""
    if pid is None:
        return []
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            found.append(p)
            todo.extend(parents.get(p, []))
    return found


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pids: list[int]) -> int:
    return sum(status_kb(p, "VmRSS") for p in pids)


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for p in pids:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return ticks / CLK


def reset_peak_rss(pids: list[int]) -> bool:
    ok = bool(pids)
    for p in pids:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------- processes
class Child:
    """A server we started (upstream, stproxy, nginx), its output in a log file."""

    def __init__(self, name: str, argv: list[str], logdir: Path, cpus: set[int] | None) -> None:
        self.name = name
        self.argv = argv
        self.logpath = logdir / f"{name}.log"
        self.logfile = open(self.logpath, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            argv,
            cwd=str(ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)  # the session we started it in
                except OSError:
                    pass
                self.process.wait(5)
        self.logfile.close()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class System:
    """One column: a way to reach the upstream (``direct``) or a proxy in front of it."""

    def __init__(self, name: str, port: int, child: Child | None, cpus: set[int] | None) -> None:
        self.name = name
        self.port = port
        self.child = child
        self.cpus = cpus
        self.error: str | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def pids(self) -> list[int]:
        return process_tree(self.pid)


def http_get(port: int, path: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return response.read()


def wait_ready(system: System, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if system.child is not None and not system.child.alive():
            raise RuntimeError(
                f"{system.name} exited ({system.child.process.returncode}):\n{system.child.tail()}"
            )
        try:
            if http_get(system.port, "/_stcore/health", 2) == b"ok":
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    tail = system.child.tail() if system.child else ""
    raise RuntimeError(f"{system.name} not ready after {timeout} s: {last}\n{tail}")


class LineReader:
    """JSON lines from a child's stdout, with deadlines (select, no threads)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.fd = process.stdout.fileno()
        self.buf = b""

    def line(self, deadline: float) -> dict:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("load generator did not answer in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                data = os.read(self.fd, 1 << 16)
                if not data:
                    err = self.process.stderr.read().decode(errors="replace")[-500:]
                    raise RuntimeError(f"load generator exited: {err}")
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


# -------------------------------------------------------------------------------- measuring
class Bench:
    def __init__(self, args: argparse.Namespace, cfg: dict, workdir: Path) -> None:
        self.args = args
        self.cfg = cfg
        self.workdir = workdir
        self.systems: list[System] = []
        self.upstream: Child | None = None
        self.up_port = 0
        ncpu = len(os.sched_getaffinity(0))
        self.pinned = bool(args.pin and ncpu >= 2)
        cpus = sorted(os.sched_getaffinity(0))
        if self.pinned:
            self.upstream_cpus: set[int] | None = {cpus[0]}
            self.proxy_cpus = {cpus[1]}
            self.proxy2_cpus = {cpus[1], cpus[2]} if ncpu >= 3 else {cpus[1]}
            self.load_cpus: set[int] | None = {cpus[0]} | set(cpus[3:])
        else:
            self.upstream_cpus = self.proxy_cpus = self.proxy2_cpus = self.load_cpus = None
        load_cores = len(self.load_cpus) if self.load_cpus else ncpu
        self.procs = args.procs or max(1, min(4, load_cores))
        self.http_client = args.http_client
        if self.http_client == "auto":
            self.http_client = "wrk" if shutil.which("wrk") and args.mode != "smoke" else "python"
        elif self.http_client == "wrk" and not shutil.which("wrk"):
            raise SystemExit("--http-client wrk: wrk is not on PATH")

    # ----------------------------------------------------------------- load generator
    def loadgen(self, system: System, mode: str, spec: dict, procs: int, duration: float,
                warm: float, during=None) -> dict:  # fmt: skip
        """Run ``procs`` loadgen workers against ``system``; their results summed."""
        conns = spec.get("conns", 1)
        procs = max(1, min(procs, conns))
        workers = []
        for i in range(procs):
            share = dict(spec, mode=mode, host="127.0.0.1", port=system.port)
            share["conns"] = conns // procs + (1 if i < conns % procs else 0)
            if self.load_cpus:
                share["cpus"] = sorted(self.load_cpus)
            process = subprocess.Popen(
                [sys.executable, str(HERE / "loadgen.py"), json.dumps(share)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            workers.append((process, LineReader(process)))
        try:
            patience = 30 if self.args.mode == "smoke" else 300
            deadline = time.monotonic() + patience
            ready = [reader.line(deadline) for _, reader in workers]
            for r in ready:
                if "error" in r:
                    raise RuntimeError(r["error"])
            start = time.monotonic() + warm
            end = start + duration
            go = (json.dumps({"start": start, "end": end}) + "\n").encode()
            for process, _ in workers:
                process.stdin.write(go)
                process.stdin.flush()
            if during is not None:
                extra = during(workers)
            else:
                meter = Meter(self, system)
                time.sleep(max(0.0, start - time.monotonic()))
                meter.begin()
                time.sleep(max(0.0, end - time.monotonic()))
                meter.end()
                extra = meter.figures()
            deadline = max(end, time.monotonic()) + patience
            results = [reader.line(deadline) for _, reader in workers]
        finally:
            for process, _ in workers:
                try:
                    process.stdin.close()  # a worker still waiting for "go" exits
                except OSError:
                    pass
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        errors = [r["error"] for r in results if r.get("error")]
        total: dict = {"procs": procs, **extra}
        if "extensions" in ready[0]:
            total["negotiated"] = ready[0]["extensions"]  # the Sec-WebSocket-Extensions answer
        for key in ("msgs", "bytes", "errors", "alive", "conns"):
            values = [r[key] for r in results if key in r]
            if values:
                total[key] = sum(values)
        secs = max((r.get("secs", 0) for r in results), default=0) or 1e-9
        total["secs"] = secs
        cpu = sum(r.get("cpu_s", 0) for r in results)
        total["loadgen_cpu"] = cpu / secs
        total["loadgen_cpu_max_proc"] = max(r.get("cpu_s", 0) for r in results) / secs
        latencies = sorted(x for r in results for x in r.get("latencies_us", ()))
        if len(results) == 1 and "p50_us" in results[0]:
            total["p50_us"], total["p99_us"] = results[0]["p50_us"], results[0]["p99_us"]
        elif latencies:
            total["p50_us"] = latencies[len(latencies) // 2]
            total["p99_us"] = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
        if "open_s" in ready[0]:
            total["open_s"] = max(r.get("open_s", 0) for r in ready)
        if errors:
            total["error"] = "; ".join(sorted(set(errors)))[:300]
        return total

    # ----------------------------------------------------------------- workloads
    def measure(self, key: str, mode: str, spec: dict, system: System) -> dict:
        cfg = self.cfg
        if mode == "http":
            if self.http_client == "wrk":
                return self.wrk(system, spec["conns"])
            r = self.loadgen(
                system, "http", dict(spec, path="/static/small"),
                self.procs if spec["conns"] > 1 else 1, cfg["http_dur"], cfg["http_warm"],
            )  # fmt: skip
            r["rps"] = r.get("msgs", 0) / r["secs"]
            return r
        if mode == "big":
            return self.big(system)
        if mode == "idle":
            return self.idle(system, spec)
        if mode == "rtt":
            r = self.loadgen(system, "rtt", spec, 1, cfg["rtt_dur"], cfg["ws_warm"])
            r["msgs_per_s"] = r.get("msgs", 0) / r["secs"]
            return r
        r = self.loadgen(system, mode, spec, self.procs, cfg["ws_dur"], cfg["ws_warm"])
        r["msgs_per_s"] = r.get("msgs", 0) / r["secs"]
        r["mb_per_s"] = r.get("bytes", 0) / r["secs"] / MB
        if system.pid:
            r["rss_mb_after"] = rss_kb(system.pids()) / 1024
        return r

    def wrk(self, system: System, conns: int) -> dict:
        dur = max(1, round(self.cfg["http_dur"]))
        threads = max(1, min(self.procs, conns))
        argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{dur}s", "--latency", "--timeout", "5s"]
        argv.append(f"http://127.0.0.1:{system.port}/static/small")
        cpus = self.load_cpus
        meter = Meter(self, system)
        c0 = children_cpu()
        meter.begin()
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=dur + 30,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        ).stdout  # fmt: skip
        meter.end()
        r = parse_wrk(out)
        if r.get("rps") is None:
            raise RuntimeError("wrk output not understood: " + out[-300:])
        r.update(meter.figures())
        r["loadgen_cpu"] = r["loadgen_cpu_max_proc"] = (children_cpu() - c0) / meter.secs
        r["loadgen_cpu_max_proc"] /= threads
        r["procs"] = threads
        if r["errors"]:
            r["error"] = f"{r['errors']} wrk errors"
        return r

    def big(self, system: System) -> dict:
        size = self.cfg["big_bytes"]
        pids = system.pids()
        hwm_ok = reset_peak_rss(pids)
        base = rss_kb(pids)
        peak = [base]

        def during(workers):
            meter = Meter(self, system)
            meter.begin()
            process = workers[0][0]
            while True:
                ready, _, _ = select.select([process.stdout], [], [], 0.02)
                if pids:
                    peak[0] = max(peak[0], rss_kb(pids))
                if ready:
                    break
            meter.end()
            return meter.figures()

        spec = {"path": f"/static/big?bytes={size}", "expect": size}
        r = self.loadgen(system, "big", spec, 1, 0, 0, during=during)
        r["mb_per_s"] = r.get("bytes", 0) / r["secs"] / MB
        if pids:
            hwm = sum(status_kb(p, "VmHWM") for p in system.pids()) if hwm_ok else 0
            r["peak_rss_mb"] = max(hwm, peak[0]) / 1024
            r["base_rss_mb"] = base / 1024
            r["rss_growth_mb"] = r["peak_rss_mb"] - r["base_rss_mb"]
        return r

    def idle(self, system: System, spec: dict) -> dict:
        n = self.cfg["idle"]
        base = rss_kb(system.pids())
        held = [0]

        def during(workers):
            time.sleep(self.cfg["idle_hold"])  # let the proxy settle with them all open
            held[0] = rss_kb(system.pids())
            return {}

        r = self.loadgen(system, "idle", dict(spec, conns=n, size=100), 1, 0, 0, during=during)
        if r.get("alive") != n:
            r.setdefault("error", f"{r.get('alive')} of {n} idle WebSockets answered at the end")
        if system.pid:
            r["kb_per_conn"] = (held[0] - base) / n
            r["rss_mb_base"], r["rss_mb_held"] = base / 1024, held[0] / 1024
        for key in ("loadgen_cpu", "loadgen_cpu_max_proc", "secs"):
            r.pop(key, None)  # no measuring window here
        return r

    # ----------------------------------------------------------------- between runs
    def settle(self, quiet: float = 0.05) -> float | None:
        """
        Wait until the upstream and every proxy are idle (each under ``quiet`` of a core over a
        window), so that work left from the previous run (a proxy still draining a push into
        closed sockets) does not eat into the next; seconds waited (None: still busy).
        """
        window = self.cfg["settle_window"]
        started = time.monotonic()
        groups = [process_tree(self.upstream.pid)] + [s.pids() for s in self.systems if s.pid]
        while True:
            before = [cpu_seconds(g) for g in groups]
            time.sleep(window)
            busy = [(cpu_seconds(g) - b) / window for g, b in zip(groups, before)]
            if max(busy) < quiet:
                return round(time.monotonic() - started, 2)
            if time.monotonic() - started > self.cfg["settle_limit"]:
                return None

    def close_leftovers(self) -> int | None:
        """Wait for the upstream's WebSockets to close (the proxies' legs); abort the rest."""
        deadline = time.monotonic() + self.cfg["leftover_wait"]
        try:
            while True:
                left = json.loads(http_get(self.up_port, "/_bench/ws"))["open"]
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if left:
                http_get(self.up_port, "/_bench/reset")
            return left
        except (OSError, ValueError):
            return None

    # ----------------------------------------------------------------- systems
    def start(self, names: list[str]) -> list[str]:
        """Start the upstream and the systems ``names``; notes on those skipped."""
        notes = []
        # `--help` takes a second: ask it while the others start
        help_check = stproxy_help() if "stproxy-w2" in names else None
        self.up_port = free_port()
        cpus = ",".join(map(str, sorted(self.upstream_cpus))) if self.upstream_cpus else ""
        self.upstream = Child(
            "upstream",
            [sys.executable, str(HERE / "upstream.py"), "--port", str(self.up_port)]
            + (["--cpus", cpus] if cpus else []),
            self.workdir,
            None,
        )
        for name in names:
            if name == "stproxy-w2":
                continue  # once help_check has answered
            if name == "direct":
                self.systems.append(System("direct", self.up_port, None, None))
            elif name == "stproxy":
                self.start_stproxy(name, [], self.proxy_cpus)
            elif name == "nginx":
                nginx = shutil.which("nginx") or (
                    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
                )
                if nginx is None:
                    notes.append("nginx skipped: not installed")
                    continue
                port = free_port()
                prefix = self.workdir / "nginx"
                for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                    (prefix / d).mkdir(parents=True, exist_ok=True)
                conf = (HERE / "nginx.conf.tmpl").read_text()
                for k, v in (("{prefix}", str(prefix)), ("{up_port}", str(self.up_port))):
                    conf = conf.replace(k, v)
                conf = conf.replace("{port}", str(port))
                (prefix / "nginx.conf").write_text(conf)
                argv = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"]
                child = Child(name, argv, self.workdir, self.proxy_cpus)
                self.systems.append(System(name, port, child, self.proxy_cpus))
            else:
                raise SystemExit(f"unknown system {name!r}")
        if help_check is not None:
            if "--workers" in help_check.communicate(timeout=60)[0]:
                self.start_stproxy("stproxy-w2", ["--workers", "2"], self.proxy2_cpus)
                if self.pinned and len(self.proxy2_cpus) < 2:
                    notes.append(
                        "pinned on 2 CPUs: stproxy-w2's two workers share CPU 1 "
                        "(its gain over one worker needs a third CPU, or run without --pin)"
                    )
            else:
                notes.append("stproxy-w2 skipped: `python -m stproxy --help` lists no --workers")
        self.systems.sort(key=lambda system: names.index(system.name))
        wait_ready(System("upstream", self.up_port, self.upstream, None))
        for system in list(self.systems):
            try:
                wait_ready(system)
            except RuntimeError as e:  # the others are still worth measuring
                log(f"{system.name} did not start: {e}")
                notes.append(f"{system.name} did not start (see above): left out")
                system.child.stop()
                self.systems.remove(system)
        return notes

    def start_stproxy(self, name: str, extra: list[str], cpus: set[int] | None) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "stproxy", "--upstream", f"127.0.0.1:{self.up_port}"]
        argv += ["--listen", f"tcp:{port}:interface=127.0.0.1", *extra]
        argv += shlex.split(self.args.stproxy_args)
        self.systems.append(System(name, port, Child(name, argv, self.workdir, cpus), cpus))

    def stop(self) -> None:
        for system in self.systems:
            if system.child:
                system.child.stop()
        if self.upstream:
            self.upstream.stop()

    def place_upstream(self, system: System) -> None:
        """Pinned: the upstream on the proxy's CPU for ``direct`` (no proxy), else on CPU 0."""
        if not self.pinned:
            return
        cpus = self.proxy_cpus if system.name == "direct" else self.upstream_cpus
        for pid in process_tree(self.upstream.pid):
            try:
                os.sched_setaffinity(pid, cpus)
            except OSError:
                pass


class Meter:
    """CPU of the server side (the proxy's processes) and of the upstream over a window."""

    def __init__(self, bench: Bench, system: System) -> None:
        self.server = system.pids()
        self.up = process_tree(bench.upstream.pid)

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.s0, self.u0 = cpu_seconds(self.server), cpu_seconds(self.up)

    def end(self) -> None:
        self.secs = max(time.monotonic() - self.t0, 1e-6)
        self.s1, self.u1 = cpu_seconds(self.server), cpu_seconds(self.up)

    def figures(self) -> dict:
        figures = {"upstream_cpu": (self.u1 - self.u0) / self.secs}
        if self.server:
            figures["proxy_cpu"] = (self.s1 - self.s0) / self.secs
        return figures


UNIT = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def parse_wrk(out: str) -> dict:
    r: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        r[key] = float(m.group(1)) * UNIT[m.group(2)] if m else None
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    r["errors"] = errors
    return r


# ------------------------------------------------------------------------------------ report
def median_runs(runs: list[dict]) -> dict:
    out: dict = {}
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
    for k in sorted(keys):
        values = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        out[k] = statistics.median(values)
    for k in ("negotiated",):
        if any(k in r for r in runs):
            out[k] = next(r[k] for r in runs if k in r)
    errors = sorted({r["error"] for r in runs if r.get("error")})
    if errors:
        out["error"] = "; ".join(errors)
    return out


def saturation(bench: Bench, name: str, r: dict) -> tuple[bool, bool]:
    """(load generator saturated, upstream saturated) for one result of system ``name``."""
    load = r.get("loadgen_cpu")
    if not isinstance(load, (int, float)):
        return False, False
    procs = r.get("procs", 1)
    if bench.load_cpus:
        # pinned: the upstream shares the load generator's CPU, except for direct
        cores = min(procs, len(bench.load_cpus))
        shared = r.get("upstream_cpu", 0) if name != "direct" else 0
        loaded = (load + shared) >= 0.9 * len(bench.load_cpus) or load >= 0.9 * cores
    else:
        loaded = load >= 0.9 * min(procs, os.cpu_count() or 1)
    return loaded, r.get("upstream_cpu", 0) >= 0.9


def build_table(bench: Bench, results: dict) -> tuple[list[str], list[list[str]]]:
    names = [s.name for s in bench.systems]
    ratios = []
    for a, b in (
        ("stproxy", "nginx"),
        ("stproxy", "direct"),
        ("stproxy-w2", "nginx"),
        ("stproxy-w2", "stproxy"),
        ("nginx", "direct"),
    ):
        if a in names and b in names:
            ratios.append((a, b))
    header = ["workload", "figure", "better"] + names + [f"{a}/{b}" for a, b in ratios]
    rows = []
    for key, metric, label, better, fmt in ROWS:
        if key not in results:
            continue
        row = [key, label, better]
        values = {}
        for n in names:
            r = results[key].get(n)
            v = None if r is None else r.get(metric)
            if r is None:
                cell = "-"
            elif v is None:
                cell = "ERR" if r.get("error") else "-"
            else:
                cell = fmt.format(v)
                loaded, upstream = saturation(bench, n, r)
                cell += ("*" if loaded else "") + ("†" if upstream else "")
                if r.get("error"):
                    cell += "!"
            row.append(cell)
            values[n] = v
        for a, b in ratios:
            va, vb = values.get(a), values.get(b)
            ok = va is not None and vb is not None and float(fmt.format(vb).replace(",", "")) > 0
            if metric == "added_p50_us" and b == "direct":
                ok = False
            row.append(f"{va / vb:.2f}" if ok else "-")
        rows.append(row)
    return header, rows


def render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(r)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_model": model or platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        pass
    return info


def versions() -> dict:
    v: dict = {}
    for name, argv in (("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "-v"])):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            v[name] = (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            v[name] = None
    try:
        p = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        v["stproxy_git"] = p.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        v["stproxy_git"] = None
    from importlib import metadata

    for dist in ("stproxy", "twisted", "autobahn"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v[dist] = None
    return v


def stproxy_help() -> subprocess.Popen:
    """``python -m stproxy --help`` started (does this stproxy have ``--workers``?)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "stproxy", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(ROOT),
        env=env,
    )


# -------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="one repetition of shorter runs (about 2 minutes)")  # fmt: skip
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="a few seconds, tiny sizes: checks that it all runs")  # fmt: skip
    parser.set_defaults(mode="full")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (servers' logs, nginx.conf)")  # fmt: skip
    parser.add_argument("--pin", action="store_true",
                        help="upstream and load generator on CPU 0, the proxy on CPU 1")  # fmt: skip
    parser.add_argument("--systems", default="direct,stproxy,stproxy-w2,nginx",
                        help="comma-separated columns [default: %(default)s]")  # fmt: skip
    parser.add_argument("--only", help="comma-separated workloads: "
                        + " ".join(k for k, _, _ in WORKLOADS))  # fmt: skip
    parser.add_argument("--reps", type=int, help="repetitions (median kept)")
    parser.add_argument("--big-mb", type=int, help="size of the big download in MiB")
    parser.add_argument("--idle", type=int, help="idle WebSockets held in ws_idle(_deflate)")
    parser.add_argument("--procs", type=int,
                        help="load-generator processes for the many-connection workloads "
                        "[default: one per CPU the load may use, at most 4]")  # fmt: skip
    parser.add_argument("--stproxy-args", default="", metavar="ARGS",
                        help="more options for every stproxy column, e.g. "
                        "'--ws-compression on' (the deflate rows then compress)")  # fmt: skip
    parser.add_argument("--http-client", choices=("auto", "wrk", "python"), default="auto",
                        help="small GETs with wrk or loadgen.py [default: wrk when on PATH, "
                        "except in --smoke]")  # fmt: skip
    args = parser.parse_args(argv)

    cfg = dict(MODES[args.mode])
    if args.reps:
        cfg["reps"] = args.reps
    if args.big_mb:
        cfg["big_bytes"] = args.big_mb * 2**20
    if args.idle:
        cfg["idle"] = args.idle
    only = set(args.only.split(",")) if args.only else None
    if only and only - {k for k, _, _ in WORKLOADS}:
        parser.error(
            f"unknown workload(s): {', '.join(sorted(only - {k for k, _, _ in WORKLOADS}))}"
        )
    names = [n for n in args.systems.split(",") if n]

    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * cfg["idle"] + 200:
        cfg["idle"] = max(10, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200) // 4)
        log(f"ulimit -n is low: {cfg['idle']} idle WebSockets instead")

    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="stproxy-bench-"))
    bench = Bench(args, cfg, workdir)
    notes: list[str] = []
    raw: dict[str, dict[str, list[dict]]] = {}
    try:
        notes += bench.start(names)
        log(
            f"upstream :{bench.up_port}; "
            + ", ".join(f"{s.name} :{s.port}" + (f" pid {s.pid}" if s.pid else "") for s in bench.systems)
            + f"; {args.mode} run; HTTP load: {bench.http_client}; loadgen processes: {bench.procs}"
            + ("; pinned" if bench.pinned else "")
        )  # fmt: skip
        for rep in range(cfg["reps"]):
            for key, mode_, spec in WORKLOADS:
                if (only and key not in only) or (key in ONCE and rep > 0):
                    continue
                n = len(bench.systems)
                for system in bench.systems[rep % n :] + bench.systems[: rep % n]:
                    runs = raw.setdefault(key, {}).setdefault(system.name, [])
                    if system.child is not None and not system.child.alive():
                        runs.append({"error": "process died"})
                        continue
                    bench.place_upstream(system)
                    waited = bench.settle()
                    try:
                        r = bench.measure(key, mode_, spec, system)
                    except Exception as e:  # noqa: BLE001 - one failed measurement is a cell
                        r = {"error": f"{type(e).__name__}: {e}"[:300]}
                    r["settle_s"] = -1 if waited is None else waited
                    if mode_ in ("rtt", "push", "echo", "idle"):
                        left = bench.close_leftovers()
                        if left:
                            r["upstream_ws_left"] = left
                    runs.append(r)
                    shown = {
                        k: (round(v) if isinstance(v, float) and v > 10 else v)
                        for k, v in r.items()
                        if k in ("rps", "p50_us", "mb_per_s", "msgs_per_s", "kb_per_conn",
                                 "rss_growth_mb", "proxy_cpu", "loadgen_cpu", "error")
                    }  # fmt: skip
                    log(f"{key:26s} {rep + 1}/{cfg['reps']} {system.name:10s} {shown}")
        dead = [s.name for s in bench.systems if s.child is not None and not s.child.alive()]
        for system in bench.systems:
            if system.name in dead:
                log(f"{system.name} died during the run; its last words:\n{system.child.tail()}")
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    results = {k: {n: median_runs(runs) for n, runs in v.items()} for k, v in raw.items()}
    rtt = results.get("ws_rtt_100B", {})
    direct_p50 = rtt.get("direct", {}).get("p50_us")
    for r in rtt.values():
        if direct_p50 is not None and r.get("p50_us") is not None:
            r["added_p50_us"] = r["p50_us"] - direct_p50

    header, rows = build_table(bench, results)
    wall = time.time() - started
    info = machine()
    now = datetime.datetime.now().astimezone()
    lines = [
        f"stproxy benchmark, {now:%Y-%m-%d %H:%M %Z}: {info['cpu_model']}, {info['cores']} cores "
        f"({info['cores_usable']} usable), Linux {info['kernel']}, Python {info['python']}",
        "",
        render(header, rows),
        "",
    ]
    notes.insert(
        0,
        f"{args.mode} run, {cfg['reps']} repetition(s), median kept; {wall:.0f} s; "
        + (
            "pinned: upstream and load generator on CPU 0, proxy on CPU 1 (the upstream on CPU 1 "
            "for direct)"
            if bench.pinned
            else "not pinned (all processes share every CPU)"
        ),
    )
    notes.append(
        f"load: small GETs by {bench.http_client if bench.http_client == 'wrk' else 'loadgen.py'}, "
        f"the rest by loadgen.py; {bench.procs} load-generator process(es) for many connections"
    )
    if args.mode == "smoke":
        notes.append("SMOKE run: tiny sizes and sub-second windows, the figures mean nothing")
    if dead:
        notes.append("DIED during the run: " + ", ".join(dead))
    marks = [
        (key, n, r)
        for key, per_system in results.items()
        for n, r in per_system.items()
    ]  # fmt: skip
    loaded = [f"{n}:{k}" for k, n, r in marks if saturation(bench, n, r)[0]]
    upstream_full = [f"{n}:{k}" for k, n, r in marks if saturation(bench, n, r)[1]]
    notes.append(
        "* the load generator's CPU was saturated (the system is at least this fast)"
        + (": " + ", ".join(loaded) if loaded else ": nowhere")
    )
    notes.append(
        "† the upstream (one Python process) was saturated: a ceiling of this kit, not the system's"
        + (": " + ", ".join(upstream_full) if upstream_full else ": nowhere")
    )
    notes.append("! an error in at least one repetition (see the JSON); ERR: no figure")
    for key in ("ws_echo_50c_100B_deflate", "ws_idle_deflate"):
        deflate = {
            n: "deflate" in r.get("negotiated", "").lower()
            for n, r in results.get(key, {}).items()
            if "negotiated" in r
        }
        if deflate:
            notes.append(
                f"{key}: the client offers permessage-deflate; accepted by "
                + (", ".join(n for n, yes in deflate.items() if yes) or "none")
                + "; not by "
                + (", ".join(n for n, yes in deflate.items() if not yes) or "none")
                + " (the upstream, like Streamlit, never accepts it; nginx passes the offer on to it)"
            )
    left = [
        f"{n}:{k} {r['upstream_ws_left']:.0f}"
        for k, per_system in results.items()
        for n, r in per_system.items()
        if r.get("upstream_ws_left")
    ]
    if left:
        notes.append(
            f"upstream WebSockets still open {cfg['leftover_wait']:.0f} s after the clients "
            "closed (then aborted): " + ", ".join(left)
        )
    cpu_line = []
    for s in bench.systems:
        c = results.get("http_small_c64", {}).get(s.name, {}).get("proxy_cpu")
        w = results.get("ws_echo_50c_100B", {}).get(s.name, {}).get("proxy_cpu")
        if c is not None or w is not None:
            cpu_line.append(f"{s.name} {c or 0:.2f}/{w or 0:.2f}")
    if cpu_line:
        notes.append(
            "proxy CPU (1.0 = a core) in small GET c64 / WS echo 100B: " + ", ".join(cpu_line)
        )
    print("\n".join(lines + ["# " + n for n in notes]))

    if args.json:
        doc = {
            "date": now.isoformat(timespec="seconds"),
            "mode": args.mode,
            "config": cfg,
            "machine": info,
            "versions": versions(),
            "pinned": bench.pinned,
            "http_client": bench.http_client,
            "loadgen_procs": bench.procs,
            "wall_s": round(wall, 1),
            "systems": {
                s.name: {
                    "port": s.port,
                    "command": s.child.argv if s.child else None,
                    "cpus": sorted(s.cpus) if s.cpus else None,
                }
                for s in bench.systems
            },
            "workloads": [k for k, _, _ in WORKLOADS if not only or k in only],
            "primary": PRIMARY,
            "results": results,
            "runs": raw,
            "table": {"header": header, "rows": rows},
            "notes": notes,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        print(f"# JSON: {args.json}")
    if args.keep:
        print(f"# logs and configs: {workdir}")
    return 1 if dead else 0


if __name__ == "__main__":
    sys.exit(main())
