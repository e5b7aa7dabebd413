"""
``--workers N`` end to end: a real supervisor (``python -m stproxy`` or ``twistd -n stproxy``)
and its real workers in front of the stdlib test upstream, on ports chosen by the kernel.

The supervisor announces each listener once (``stproxy listening on``), each worker says when
it serves (``stproxy worker N serving``) and the supervisor logs every start and end of a worker
with its pid, which is how these tests find the processes.  The supervision on its own (restart,
back-off, stop, second signal) is in ``tests/workers/`` on a fake process reactor.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest
from harness import (
    ProxyProcess,
    UpstreamServerProcess,
    proxy_command,
    run_proxy,
    start_proxy,
    wait_until,
)
from pki import PKI
from prometheus_client.parser import text_string_to_metric_families
from upstream_server import big_body_sha256

PYTHON_M_STPROXY = [sys.executable, "-m", "stproxy"]
ADMIN_RE = r"stproxy admin endpoint on ([0-9.]+):(\d+)"
STARTED_RE = r"stproxy worker (\d+) started \(pid (\d+)\)"


# -------------------------------------------------------------------------------------- helpers


def worker_pids(proxy: ProxyProcess) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    return {int(n): int(pid) for n, pid in re.findall(STARTED_RE, proxy.output())}


def every_worker_pid(proxy: ProxyProcess) -> set[int]:
    """Every worker pid the supervisor ever logged (restarts included)."""
    return {int(pid) for _, pid in re.findall(STARTED_RE, proxy.output())}


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.fixture
def workers(upstream_server: UpstreamServerProcess) -> Iterator[Callable[..., ProxyProcess]]:
    """
    Starts a supervisor of 2 workers (``python -m stproxy`` unless ``command`` says otherwise)
    with an admin listener, and waits until both workers serve; on teardown, stops it and kills
    any worker left behind, so a failing test leaks no process.
    """
    started: list[ProxyProcess] = []

    def start(*args: str, command: list[str] | None = None, count: int = 2) -> ProxyProcess:
        proxy = start_proxy(
            "--workers", str(count),
            "--upstream", upstream_server.address,
            "--admin", "tcp:0:interface=127.0.0.1",
            *args,
            command=command or PYTHON_M_STPROXY,
        )  # fmt: skip
        started.append(proxy)
        for index in range(count):
            proxy.wait_for_output(rf"stproxy worker {index} serving", timeout=30)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()
            for pid in every_worker_pid(proxy):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def admin_url(proxy: ProxyProcess) -> str:
    return f"http://127.0.0.1:{proxy.wait_for_output(ADMIN_RE).group(2)}"


def samples(admin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the supervisor's /metrics, keyed by name and sorted labels."""
    with urllib.request.urlopen(admin + "/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_by_worker(admin: str) -> dict[str, float]:
    """``stproxy_http_requests_total`` summed per ``worker`` label."""
    totals: dict[str, float] = {}
    for (name, labels), value in samples(admin).items():
        if name == "stproxy_http_requests_total":
            worker = dict(labels)["worker"]
            totals[worker] = totals.get(worker, 0.0) + value
    return totals


def status_of(url: str, timeout: float = 10) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def burst(url: str, count: int = 16) -> list[int | None]:
    """``count`` requests at once, each on its own connection; their statuses."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: status_of(url), range(count)))


class Download(threading.Thread):
    """A GET read to the end (or until the connection breaks) in the background."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.received = 0
        self.body = bytearray()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=60) as response:
                while chunk := response.read(65536):
                    self.received += len(chunk)
                    self.body += chunk
        except Exception as e:
            self.error = e


# ------------------------------------------------------------------------------------- serving


def test_both_workers_serve_the_one_port_and_metrics_show_each(workers) -> None:
    """
    Two workers behind one announced port: concurrent clients are served by both (the
    supervisor's /metrics counts requests under worker="0" and worker="1"), /readyz is 200 once
    both are ready, and the supervisor announced the listener once.
    """
    proxy = workers()
    admin = admin_url(proxy)
    assert len(proxy.ports) == 1, proxy.output()

    def bothServed() -> bool:
        assert set(burst(f"{proxy.url}/slow?seconds=0.2")) == {200}
        return set(requests_by_worker(admin)) == {"0", "1"}

    wait_until(bothServed, 30, interval=0, message=lambda: str(requests_by_worker(admin)))
    found = samples(admin)
    assert found[("stproxy_workers", ())] == 2
    assert found[("stproxy_worker_restarts_total", (("worker", "0"),))] == 0
    wait_until(lambda: status_of(admin + "/readyz") == 200, 15, message=proxy.output)
    assert status_of(admin + "/healthz") == 200
    assert len(set(worker_pids(proxy).values()) | {proxy.pid}) == 3


def test_a_killed_worker_is_restarted_while_the_port_keeps_answering(workers) -> None:
    """
    SIGKILL to worker 0: the other keeps serving every request, the supervisor logs how it ended
    and starts a new worker 0, counted in stproxy_worker_restarts_total.
    """
    proxy = workers()
    admin = admin_url(proxy)
    first = worker_pids(proxy)
    since = len(proxy.output())
    os.kill(first[0], signal.SIGKILL)
    for _ in range(5):
        assert set(burst(f"{proxy.url}/echo", 8)) == {200}
    proxy.wait_for_output(
        rf"stproxy worker 0 \(pid {first[0]}\) killed by signal 9; restarting it", since=since
    )
    proxy.wait_for_output(r"stproxy worker 0 serving", timeout=30, since=since)
    again = worker_pids(proxy)
    assert again[0] != first[0] and again[1] == first[1]
    assert samples(admin)[("stproxy_worker_restarts_total", (("worker", "0"),))] == 1
    assert set(burst(f"{proxy.url}/echo", 8)) == {200}


# ------------------------------------------------------------------------------------- stopping


@pytest.mark.parametrize("command", [PYTHON_M_STPROXY, None], ids=["python-m", "twistd"])
def test_sigterm_drains_every_worker_then_exits_0(workers, command: list[str] | None) -> None:
    """
    SIGTERM to the supervisor in the middle of a slow download: the port stops taking new
    connections, the download completes intact, every worker exits and so does the supervisor,
    with status 0 (under ``python -m`` and under twistd alike).
    """
    proxy = workers(command=command or proxy_command())
    download = Download(f"{proxy.url}/big?mb=8&delay_ms=15")
    download.start()
    wait_until(lambda: download.received > 256 * 1024, 20, message="download never started")
    pids = worker_pids(proxy)
    proxy.signal(signal.SIGTERM)
    proxy.wait_for_output("stproxy stopping: asking 2 workers to drain")
    wait_until(lambda: status_of(f"{proxy.url}/echo", 2) is None, 10, message="still accepting")
    assert proxy.process.poll() is None, "exited before the download finished"
    download.join(60)
    assert download.error is None, download.error
    assert hashlib.sha256(download.body).hexdigest() == big_body_sha256(8 * 1024 * 1024)
    assert proxy.process.wait(30) == 0, proxy.output()
    assert not any(alive(pid) for pid in pids.values())
    assert "exited with status 0" in proxy.output()


def test_a_second_sigterm_kills_the_workers_and_exits_at_once(workers) -> None:
    """While the workers drain a long download, a second SIGTERM ends them all within seconds."""
    proxy = workers()
    download = Download(f"{proxy.url}/big?mb=20&delay_ms=100")
    download.start()
    wait_until(lambda: download.received > 0, 20, message="download never started")
    pids = worker_pids(proxy)
    proxy.signal(signal.SIGTERM)
    proxy.wait_for_output("stproxy stopping")
    started = time.monotonic()
    proxy.signal(signal.SIGTERM)
    assert proxy.process.wait(10) == 1
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), 5, message="workers live on")
    assert time.monotonic() - started < 5


def test_workers_stop_when_their_supervisor_is_killed(workers) -> None:
    """SIGKILL to the supervisor: each worker sees its control pipe close, drains and exits."""
    proxy = workers()
    pids = worker_pids(proxy)
    os.kill(proxy.pid, signal.SIGKILL)
    proxy.process.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), 20, message=proxy.output)
    assert "the supervisor is gone; stopping" in proxy.output()


# ---------------------------------------------------------------------------- other listeners


def test_a_unix_socket_keeps_its_mode_and_file_until_the_supervisor_stops(
    workers, tmp_path: Path
) -> None:
    """
    A unix: listener with mode=600 is served by both workers; restarting a worker neither
    widens its mode nor removes its file; SIGTERM removes it.
    """
    path = tmp_path / "stproxy.sock"
    proxy = workers("--listen", "tcp:0:interface=127.0.0.1", "--listen", f"unix:{path}:mode=600")

    def get() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        return response.split(b"\r\n", 1)[0]

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert get() == b"HTTP/1.1 200 OK"
    since = len(proxy.output())
    os.kill(worker_pids(proxy)[1], signal.SIGKILL)
    proxy.wait_for_output(r"stproxy worker 1 serving", timeout=30, since=since)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [get() for _ in range(6)] == [b"HTTP/1.1 200 OK"] * 6
    assert proxy.stop() == 0
    assert not path.exists()


def test_tls_and_the_redirect_listener_work_in_every_worker(workers, pki: PKI) -> None:
    """An ssl: listener with its certificate, and the HTTP→HTTPS redirect, through two workers."""
    proxy = workers(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--redirect-http", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    tls_port, redirect_port = wait_until(lambda: len(proxy.ports) >= 2 and proxy.ports, 10)
    context = ssl.create_default_context(cafile=pki.ca)
    for _ in range(8):
        with urllib.request.urlopen(
            f"https://localhost:{tls_port}/echo", timeout=10, context=context
        ) as response:
            assert response.status == 200
        with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as sock:
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            head = sock.recv(65536).split(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 308"), head
        assert f"location: https://app.test:{tls_port}/x".encode() in head.lower()


# --------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "100000"])
def test_a_bad_worker_count_is_one_line_and_status_2(value: str) -> None:
    """--workers takes a whole number of processes, 1 to 1024; anything else is one line, exit 2."""
    result = run_proxy("--workers", value, command=PYTHON_M_STPROXY)
    assert result.returncode == 2, result.stdout
    assert result.stdout.strip().splitlines() == [
        f"stproxy: error: --workers {value}: must be a whole number of processes, 1 to 1024"
        " (see --help)"
    ]
