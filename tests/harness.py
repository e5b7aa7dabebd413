"""
Process helpers for end-to-end tests: real Streamlit, real ``twistd stproxy``, a test upstream.

Every child announces where it listens (Streamlit answers ``/_stcore/health``, the proxy logs
``stproxy listening on HOST:PORT``, the test upstream prints one JSON line), and every wait here
polls a condition against a deadline; nothing sleeps for a fixed time hoping a child is ready.

The API (kept stable because several test files use it):

- ``free_port()``, ``wait_until(predicate, timeout, interval, message)``
- ``start_streamlit(app, port=None, extra_args=()) -> StreamlitProcess``
- ``start_proxy(*args, env=None, command=None) -> ProxyProcess``
- ``run_proxy(*args, env=None, command=None, timeout=30) -> subprocess.CompletedProcess``
  (for commands expected to exit by themselves, such as bad flags)
- ``start_upstream_server(port=None) -> UpstreamServerProcess`` (``tests/upstream_server.py``)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

__all__ = [
    "HERE",
    "PROJECT_ROOT",
    "APPS",
    "LISTENING_RE",
    "ProcessOutput",
    "ProxyProcess",
    "StreamlitProcess",
    "UpstreamServerProcess",
    "free_port",
    "proxy_command",
    "run_proxy",
    "start_proxy",
    "start_streamlit",
    "start_upstream_server",
    "wait_until",
]

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
APPS = HERE / "apps"
LISTENING_RE = r"stproxy listening on ([0-9.]+):(\d+)"

#: The environment variables ``python -m stproxy`` and ``stproxy`` read; removed from the children's
#: environment unless a test sets them, so a developer's shell cannot change what a test checks.
_PROXY_ENV_VARS = ("STREAMLIT_HOST", "STREAMLIT_PORT", "PROXY_HOST", "PROXY_PORT")

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """
    Call ``predicate`` until it returns something truthy and return that value.

    Raises ``TimeoutError`` carrying ``message`` (or ``message()``, evaluated at the deadline so it
    can include fresh process output) when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"after {timeout} s: {text}")
        time.sleep(interval)


def _child_env(env: Mapping[str, str | None] | None) -> dict[str, str]:
    """
    ``os.environ`` without the proxy's own variables, plus ``env``; a ``None`` value removes a key.

    ``PYTHONUNBUFFERED`` makes children flush each log line, so announcements arrive promptly.
    The project root goes first on ``PYTHONPATH``, so children run (and twistd discovers the
    plugin of) this working tree even before or without ``pip install -e``.
    """
    result = {k: v for k, v in os.environ.items() if k not in _PROXY_ENV_VARS}
    result["PYTHONUNBUFFERED"] = "1"
    result["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    for key, value in (env or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


class ProcessOutput:
    """Reads a child's merged stdout+stderr in a background thread, so waits can match on it."""

    def __init__(self, stream) -> None:
        self._chunks: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        fd = stream.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                with self._cond:
                    self._chunks.append(data.decode("utf-8", "replace"))
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            stream.close()

    def text(self) -> str:
        with self._cond:
            return "".join(self._chunks)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def wait_for(
        self,
        regex: str | re.Pattern[str],
        timeout: float,
        since: int = 0,
        alive: Callable[[], bool] = lambda: True,
    ) -> re.Match[str] | None:
        """
        The first match of ``regex`` in the output from character ``since`` on, waiting up to
        ``timeout`` seconds; ``None`` if the deadline passes, the stream closes, or ``alive()``
        turns false without a match.
        """
        pattern = re.compile(regex) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = pattern.search("".join(self._chunks), since)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed or not alive():
                    return None
                self._cond.wait(min(remaining, 0.1))

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)


def _stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Send ``sig``, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


# --------------------------------------------------------------------------------------- Streamlit


def _http_status(url: str, timeout: float = 2) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


class StreamlitProcess:
    """A ``streamlit run`` child on a fixed port; ``start()`` again reuses the same port."""

    startup_timeout = 60.0

    def __init__(self, app: Path, port: int, extra_args: Sequence[str] = ()) -> None:
        self.app = Path(app)
        self.port = port
        self.extra_args = tuple(extra_args)
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self._output: ProcessOutput | None = None
        self._previous_output = ""
        # A private HOME: no ~/.streamlit config or credentials from the developer's machine.
        self.home = Path(tempfile.mkdtemp(prefix="stproxy-streamlit-home-"))

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "streamlit", "run", str(self.app),
            "--server.port", str(self.port),
            "--server.address", "127.0.0.1",
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> StreamlitProcess:
        """Start (or restart) Streamlit and wait until ``/_stcore/health`` answers 200."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("Streamlit is already running")
        if self._output is not None:
            self._previous_output += self._output.text()
        env = _child_env({"HOME": str(self.home), "TMPDIR": str(self.home)})
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.home),
            start_new_session=True,
        )
        self._output = ProcessOutput(self.process.stdout)
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"Streamlit exited with {process.returncode} before becoming healthy:\n{self.output()}"
                )
            return _http_status(f"{self.url}/_stcore/health", timeout=1) == 200

        try:
            wait_until(
                healthy,
                self.startup_timeout,
                interval=0.1,
                message=lambda: f"Streamlit on {self.url} never became healthy:\n{self.output()}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def output(self) -> str:
        """Everything Streamlit printed, across restarts."""
        return self._previous_output + (self._output.text() if self._output else "")

    def stop(self, timeout: float = 10) -> int | None:
        """Terminate Streamlit and wait for it (SIGKILL after ``timeout``); the port is free afterwards."""
        if self.process is None:
            return None
        code = _stop_process(self.process, signal.SIGTERM, timeout)
        if self._output is not None:
            self._output.join()
        return code

    def close(self) -> None:
        """Stop and remove the private HOME."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> StreamlitProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_streamlit(app: Path, port: int | None = None, extra_args: Iterable[str] = ()) -> StreamlitProcess:
    """Run ``streamlit run app`` on 127.0.0.1:``port`` (a free one if ``None``) and wait until it is healthy."""
    return StreamlitProcess(Path(app), port or free_port(), tuple(extra_args)).start()


# ------------------------------------------------------------------------------------------- proxy


def proxy_command() -> list[str]:
    """``twistd -n --pidfile= stproxy`` with the ``twistd`` next to this interpreter (no pid file: parallel runs)."""
    twistd = Path(sys.executable).parent / "twistd"
    if not twistd.exists():
        found = shutil.which("twistd")
        if found is None:
            raise RuntimeError("twistd not found next to sys.executable nor on PATH")
        twistd = Path(found)
    return [str(twistd), "-n", "--pidfile=", "stproxy"]


def _has_listener_flag(args: Sequence[str], env: Mapping[str, str | None] | None) -> bool:
    for arg in args:
        if arg in ("--listen", "--proxy-port") or arg.startswith(("--listen=", "--proxy-port=")):
            return True
    return bool(env and env.get("PROXY_PORT"))


class ProxyProcess:
    """A running stproxy child (``twistd -n`` or ``python -m stproxy``) and what it has printed."""

    def __init__(self, process: subprocess.Popen, output: ProcessOutput, command: Sequence[str]) -> None:
        self.process = process
        self.command = list(command)
        self._output = output

    def _announced(self) -> list[tuple[str, int]]:
        return [(m.group(1), int(m.group(2))) for m in re.finditer(LISTENING_RE, self._output.text())]

    @property
    def ports(self) -> list[int]:
        """Every port announced so far, in order (one line per listener)."""
        return [port for _, port in self._announced()]

    @property
    def hosts(self) -> list[str]:
        return [host for host, _ in self._announced()]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def host(self) -> str:
        host = self.hosts[0]
        return "127.0.0.1" if host in ("0.0.0.0", "") else host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def output(self) -> str:
        return self._output.text()

    def wait_for_output(self, regex: str | re.Pattern[str], timeout: float = 10, since: int = 0) -> re.Match[str]:
        """
        Wait until the output (from character ``since`` on, e.g. ``len(proxy.output())`` taken
        earlier) matches ``regex``; raise ``TimeoutError`` with the output otherwise.
        """
        match = self._output.wait_for(regex, timeout, since)
        if match is None:
            state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
            raise TimeoutError(f"no {regex!r} in proxy output within {timeout} s ({state}):\n{self.output()}")
        return match

    def _status(self) -> dict[str, str]:
        fields = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        return fields

    def rss_bytes(self) -> int:
        """Resident set size of the proxy process now (``VmRSS`` in ``/proc/<pid>/status``)."""
        value = self._status()["VmRSS"]  # "12345 kB"
        number, unit = value.split()
        assert unit == "kB", value
        return int(number) * 1024

    def _socket_inodes(self) -> set[str]:
        inodes = set()
        fd_dir = f"/proc/{self.pid}/fd"
        for name in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        return inodes

    def connections_to(self, port: int) -> int:
        """How many ESTABLISHED TCP connections this process holds to remote ``port`` (IPv4 and IPv6)."""
        inodes = self._socket_inodes()
        count = 0
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{self.pid}/net/{table}", encoding="ascii") as f:
                    lines = f.readlines()[1:]
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                    count += 1
        return count

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, wait up to ``timeout`` s (then SIGKILL); returns the exit code."""
        code = _stop_process(self.process, signal.SIGTERM, timeout)
        self._output.join()
        return code

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _spawn(command: Sequence[str], env: Mapping[str, str | None] | None) -> tuple[subprocess.Popen, ProcessOutput]:
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_child_env(env),
        cwd=str(PROJECT_ROOT),
        start_new_session=True,
    )
    return process, ProcessOutput(process.stdout)


def start_proxy(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 20,
) -> ProxyProcess:
    """
    Start stproxy with ``args`` and wait for its ``stproxy listening on HOST:PORT`` line.

    ``command`` defaults to ``twistd -n --pidfile= stproxy``; ``--listen tcp:0:interface=127.0.0.1``
    is appended unless ``args`` already hold ``--listen``/``--proxy-port`` (or ``env`` sets
    ``PROXY_PORT``). ``env`` is added to this process's environment (``None`` values remove keys).
    Fails with the captured output if the child exits first or nothing is announced within
    ``timeout`` seconds. It returns at the first announcement; ``.ports`` re-reads the output, so
    with several listeners use ``wait_for_output`` (or ``wait_until``) for the later ones.
    """
    argv = list(command) if command is not None else proxy_command()
    argv += args
    if not _has_listener_flag(args, env):
        argv += ["--listen", "tcp:0:interface=127.0.0.1"]
    process, output = _spawn(argv, env)
    proxy = ProxyProcess(process, output, argv)
    match = output.wait_for(LISTENING_RE, timeout, alive=lambda: process.poll() is None)
    if match is None:
        # Give the reader a moment to collect the last words of an exiting child.
        output.join(2)
        if process.poll() is None:
            _stop_process(process)
            output.join()
            raise RuntimeError(f"{argv} announced no listener within {timeout} s; output:\n{output.text()}")
        raise RuntimeError(f"{argv} exited with {process.returncode} before listening; output:\n{output.text()}")
    return proxy


def run_proxy(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess:
    """Run stproxy to completion (e.g. with bad flags); stdout holds stdout+stderr as text. No ``--listen`` added."""
    argv = (list(command) if command is not None else proxy_command()) + list(args)
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_child_env(env),
        cwd=str(PROJECT_ROOT),
        timeout=timeout,
        text=True,
    )


# ------------------------------------------------------------------------------- test upstream


class UpstreamServerProcess:
    """``tests/upstream_server.py`` as a child; ``start()`` again reuses the same port."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None
        self._output: ProcessOutput | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> UpstreamServerProcess:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("upstream server already running")
        self.process, self._output = _spawn(
            [sys.executable, str(HERE / "upstream_server.py"), "--port", str(self.port)], None
        )
        process = self.process
        match = self._output.wait_for(r'\{"port": (\d+)\}', timeout, alive=lambda: process.poll() is None)
        if match is None:
            self.stop()
            raise RuntimeError(f"upstream_server.py did not start:\n{self.output()}")
        self.port = int(match.group(1))
        return self

    def output(self) -> str:
        return self._output.text() if self._output else ""

    def stats(self) -> dict:
        """``GET /stats`` straight from the upstream (not through a proxy)."""
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return json.load(response)

    def stop(self, timeout: float = 10) -> int | None:
        if self.process is None:
            return None
        code = _stop_process(self.process, signal.SIGTERM, timeout)
        self._output.join()
        return code

    def __enter__(self) -> UpstreamServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_upstream_server(port: int | None = None) -> UpstreamServerProcess:
    """Run ``tests/upstream_server.py`` on 127.0.0.1:``port`` (any free port if ``None``) and wait for its JSON line."""
    return UpstreamServerProcess(port or 0).start()
