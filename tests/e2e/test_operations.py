"""
Operations through real ``twistd stproxy`` processes: graceful shutdown, the admin listener
(/metrics, /healthz, /readyz) and JSON logs.

The health poller, the drain and log redaction on their own are in ``tests/ops/``.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness import (
    APPS,
    ProcessOutput,
    ProxyProcess,
    UpstreamServerProcess,
    _child_env,
    start_proxy,
    start_streamlit,
    wait_until,
)
from upstream_server import big_body_sha256

ADMIN_RE = r"stproxy admin endpoint on ([0-9.]+):(\d+)"

#: A WebSocket upstream that echoes every message and prints the close code it saw.
ECHO_SERVER = r"""
import asyncio, json
from websockets.asyncio.server import serve

async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except Exception:
        pass
    print(json.dumps({"closed": ws.close_code}), flush=True)

async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


class EchoServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_child_env(None),
        )
        self.output = ProcessOutput(self.process.stdout)
        match = self.output.wait_for(r'\{"port": (\d+)\}', 20)
        assert match, self.output.text()
        self.port = int(match.group(1))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.output.join()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.stop()


def admin_url(proxy: ProxyProcess) -> str:
    match = proxy.wait_for_output(ADMIN_RE)
    return f"http://127.0.0.1:{match.group(2)}"


def status_of(url: str, headers: dict[str, str] | None = None) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def scrape(admin: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the admin /metrics, keyed by name and sorted labels."""
    with urllib.request.urlopen(admin + "/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def exit_code(proxy: ProxyProcess, timeout: float = 20) -> int:
    return proxy.process.wait(timeout)


class Download(threading.Thread):
    """A GET read to the end (or until the connection breaks) in the background."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.received = 0
        self.digest = hashlib.sha256()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=60) as response:
                while chunk := response.read(65536):
                    self.received += len(chunk)
                    self.digest.update(chunk)
        except Exception as e:
            self.error = e


# ---------------------------------------------------------------------------- graceful shutdown


def test_sigterm_lets_a_slow_download_finish_intact_then_exits_0(
    upstream_server: UpstreamServerProcess,
) -> None:
    """
    SIGTERM in the middle of a slow 20 MiB download: the proxy stops
    accepting, the download completes byte for byte, then the proxy exits 0.
    """
    proxy = start_proxy("--upstream", upstream_server.address)
    try:
        download = Download(f"{proxy.url}/big?mb=20&delay_ms=8")
        download.start()
        wait_until(lambda: download.received > 1024 * 1024, 20, message="download never started")
        proxy.signal(signal.SIGTERM)
        proxy.wait_for_output("stproxy stopping")
        wait_until(lambda: status_of(proxy.url + "/echo") is None, 5, message="still accepting")
        assert proxy.process.poll() is None, "exited before the download finished"
        download.join(60)
        assert download.error is None, download.error
        assert download.received == 20 * 1024 * 1024
        assert download.digest.hexdigest() == big_body_sha256(20 * 1024 * 1024)
        assert exit_code(proxy) == 0, proxy.output()
    finally:
        proxy.stop()


def test_requests_still_running_at_the_shutdown_timeout_are_aborted(
    upstream_server: UpstreamServerProcess,
) -> None:
    """With --shutdown-timeout 1, a download that would take half a minute is cut and the proxy exits 0."""
    proxy = start_proxy("--upstream", upstream_server.address, "--shutdown-timeout", "1")
    try:
        download = Download(f"{proxy.url}/big?mb=20&delay_ms=100")
        download.start()
        wait_until(lambda: download.received > 0, 20, message="download never started")
        started = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert exit_code(proxy) == 0, proxy.output()
        assert time.monotonic() - started < 8
        download.join(10)
        assert download.received < 20 * 1024 * 1024
        assert "Aborting 1 HTTP request(s)" in proxy.output()
    finally:
        proxy.stop()


def test_a_second_signal_exits_at_once(upstream_server: UpstreamServerProcess) -> None:
    """While draining a long download, a second SIGTERM ends the process immediately."""
    proxy = start_proxy("--upstream", upstream_server.address)
    try:
        download = Download(f"{proxy.url}/big?mb=20&delay_ms=100")
        download.start()
        wait_until(lambda: download.received > 0, 20, message="download never started")
        proxy.signal(signal.SIGTERM)
        proxy.wait_for_output("stproxy stopping")
        started = time.monotonic()
        proxy.signal(signal.SIGTERM)
        assert exit_code(proxy, 10) == 1
        assert time.monotonic() - started < 5
    finally:
        proxy.stop()


def test_sighup_reloads_nothing_and_never_ends_a_plain_proxy(
    upstream_server: UpstreamServerProcess,
) -> None:
    """systemctl reload on a proxy without TLS: logged, and the proxy keeps serving."""
    proxy = start_proxy("--upstream", upstream_server.address)
    try:
        proxy.wait_for_output("stproxy forwarding to")  # logged once every service has started
        proxy.signal(signal.SIGHUP)
        proxy.wait_for_output("SIGHUP: no TLS certificates to reload")
        with urllib.request.urlopen(f"{proxy.url}/echo", timeout=10) as response:
            assert response.status == 200
        assert proxy.process.poll() is None
    finally:
        proxy.stop()


def test_sigterm_closes_an_open_websocket_with_1001_on_both_legs_and_exits_0(
    echo_server: EchoServer,
) -> None:
    """An open WebSocket gets 1001 "going away", and so does the upstream; then exit 0."""
    proxy = start_proxy("--upstream", f"127.0.0.1:{echo_server.port}")
    try:
        with connect(f"ws://127.0.0.1:{proxy.port}/_stcore/stream", open_timeout=10) as ws:
            ws.send(b"hello")
            assert ws.recv(timeout=10) == b"hello"
            proxy.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
        assert exit_code(proxy) == 0, proxy.output()
        assert echo_server.output.wait_for(r'\{"closed": 1001\}', 10), echo_server.output.text()
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------- admin listener


def test_readyz_follows_streamlit_within_one_check_interval() -> None:
    """/readyz is 200 while Streamlit answers, 503 within an interval of it stopping, 200 once back."""
    streamlit = start_streamlit(APPS / "basic_app.py")
    proxy = None
    try:
        proxy = start_proxy(
            "--upstream", f"127.0.0.1:{streamlit.port}",
            "--admin", "tcp:0:interface=127.0.0.1",
            "--health-interval", "0.5",
        )  # fmt: skip
        admin = admin_url(proxy)
        assert status_of(admin + "/healthz") == 200
        wait_until(lambda: status_of(admin + "/readyz") == 200, 5, message=proxy.output)
        assert value(scrape(admin), "stproxy_upstream_healthy") == 1
        streamlit.stop()
        stopped = time.monotonic()
        wait_until(lambda: status_of(admin + "/readyz") == 503, 3, message=proxy.output)
        assert time.monotonic() - stopped < 1.5
        assert value(scrape(admin), "stproxy_upstream_healthy") == 0
        assert status_of(admin + "/healthz") == 200
        streamlit.start()
        wait_until(lambda: status_of(admin + "/readyz") == 200, 3, message=proxy.output)
    finally:
        if proxy is not None:
            proxy.stop()
        streamlit.close()


def test_admin_paths_are_not_served_on_the_public_listener(
    upstream_server: UpstreamServerProcess,
) -> None:
    """/metrics, /healthz and /readyz on the public port go to the upstream like any path."""
    proxy = start_proxy(
        "--upstream", upstream_server.address, "--admin", "tcp:0:interface=127.0.0.1"
    )
    try:
        admin_url(proxy)
        assert len(proxy.ports) == 1  # the admin line is not a "listening on" line
        for path in ("/metrics", "/healthz", "/readyz"):
            status_of(proxy.url + path)
        lines = upstream_server.stats()["request_lines"]
        for path in ("/metrics", "/healthz", "/readyz"):
            assert any(line.startswith(f"GET {path} ") for line in lines), lines
    finally:
        proxy.stop()


def test_metrics_count_exactly_the_requests_and_messages_sent(
    upstream_server: UpstreamServerProcess, echo_server: EchoServer
) -> None:
    """The HTTP and WebSocket counters move by exactly what the test sent and received."""
    http_proxy = start_proxy(
        "--upstream", upstream_server.address, "--admin", "tcp:0:interface=127.0.0.1"
    )
    ws_proxy = start_proxy(
        "--upstream", f"127.0.0.1:{echo_server.port}", "--admin", "tcp:0:interface=127.0.0.1"
    )
    try:
        admin = admin_url(http_proxy)
        before = scrape(admin)
        for _ in range(7):
            assert status_of(http_proxy.url + "/echo") == 200
        assert status_of(http_proxy.url + "/missing") == 404
        after = scrape(admin)
        key = "stproxy_http_requests_total"
        assert value(after, key, method="GET", status_class="2xx") - value(
            before, key, method="GET", status_class="2xx"
        ) == 7
        assert value(after, key, method="GET", status_class="4xx") - value(
            before, key, method="GET", status_class="4xx"
        ) == 1
        assert value(after, "stproxy_http_request_duration_seconds_count") - value(
            before, "stproxy_http_request_duration_seconds_count"
        ) == 8
        assert value(after, "stproxy_http_sent_bytes_total") > value(
            before, "stproxy_http_sent_bytes_total"
        )

        admin = admin_url(ws_proxy)
        payloads = [b"x" * n for n in (1, 10, 100, 1000, 10000)]
        with connect(f"ws://127.0.0.1:{ws_proxy.port}/_stcore/stream", open_timeout=10) as ws:
            for payload in payloads:
                ws.send(payload)
                assert ws.recv(timeout=10) == payload
            assert value(scrape(admin), "stproxy_open_websockets") == 1
        total = sum(map(len, payloads))

        def ended() -> dict:
            samples = scrape(admin)
            closed = value(samples, "stproxy_websocket_sessions_closed_total", code="1000")
            return samples if closed == 1 else {}

        samples = wait_until(ended, 10, message=ws_proxy.output)
        for direction in ("to_upstream", "to_browser"):
            assert value(samples, "stproxy_websocket_messages_total", direction=direction) == 5
            assert (
                value(samples, "stproxy_websocket_message_bytes_total", direction=direction)
                == total
            )
        assert value(samples, "stproxy_open_websockets") == 0
    finally:
        http_proxy.stop()
        ws_proxy.stop()


def test_upstream_errors_are_counted(upstream_server: UpstreamServerProcess) -> None:
    """A 502 counts as an upstream connect error, a 504 as a timeout."""
    proxy = start_proxy(  # nothing listens on port 1
        "--upstream", "127.0.0.1:1", "--admin", "tcp:0:interface=127.0.0.1",
    )
    slow = start_proxy(
        "--upstream", upstream_server.address, "--admin", "tcp:0:interface=127.0.0.1",
        "--upstream-timeout", "0.3",
    )  # fmt: skip
    try:
        assert status_of(proxy.url + "/") == 502
        assert value(scrape(admin_url(proxy)), "stproxy_upstream_connect_errors_total") == 1
        assert status_of(slow.url + "/slow?seconds=2") == 504
        assert value(scrape(admin_url(slow)), "stproxy_upstream_timeouts_total") == 1
    finally:
        proxy.stop()
        slow.stop()


# ----------------------------------------------------------------------------------------- logs


def test_json_logs_carry_access_and_session_fields_and_no_secrets(
    upstream_server: UpstreamServerProcess, echo_server: EchoServer
) -> None:
    """
    With --log-format json (at DEBUG), each request and WebSocket session
    gets one parseable line with its fields, and no Cookie or Authorization
    value appears anywhere in the output.
    """
    secrets = {"Cookie": "secret=cookie-value-123", "Authorization": "Bearer token-value-456"}
    proxy = start_proxy(
        "--upstream", upstream_server.address, "--log-format", "json", "--log-level", "DEBUG"
    )
    ws_proxy = start_proxy(
        "--upstream", f"127.0.0.1:{echo_server.port}", "--log-format", "json",
        "--log-level", "DEBUG",
    )  # fmt: skip
    try:
        assert status_of(proxy.url + "/echo?x=1", {**secrets, "User-Agent": "ops-test/1"}) == 200
        with connect(
            f"ws://127.0.0.1:{ws_proxy.port}/_stcore/stream",
            additional_headers=secrets,
            open_timeout=10,
        ) as ws:
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
        ws_proxy.wait_for_output(r'"closed_by"')
        proxy.wait_for_output(r'"namespace": "stproxy.access"')

        def records(output: str) -> list[dict[str, Any]]:
            return [json.loads(line) for line in output.splitlines() if line.startswith("{")]

        access = [r for r in records(proxy.output()) if r["namespace"] == "stproxy.access"]
        assert len(access) == 1, proxy.output()
        line = access[0]
        assert line["method"] == "GET" and line["path"] == "/echo?x=1"
        assert line["status"] == 200 and line["bytes"] > 0 and line["duration"] >= 0
        assert line["peer"] == "127.0.0.1" and line["user_agent"] == "ops-test/1"
        sessions = [r for r in records(ws_proxy.output()) if "closed_by" in r]
        assert len(sessions) == 1, ws_proxy.output()
        session = sessions[0]
        assert session["closed_by"] == "browser" and session["close_code"] == 1000
        assert session["messages_to_upstream"] == session["messages_to_browser"] == 1
        assert session["bytes_to_upstream"] == session["bytes_to_browser"] == 4
        assert session["duration"] >= 0
    finally:
        proxy.stop()
        ws_proxy.stop()
    for output in (proxy.output(), ws_proxy.output()):
        assert "cookie-value-123" not in output
        assert "token-value-456" not in output
