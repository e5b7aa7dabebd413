"""
Helpers for the replica browser tests (``tests/e2e/test_replicas.py``): several real Streamlit
replicas, a proxy that can be restarted on the same port, one headless Chromium per "browser" (its
own profile, so its own cookie jar), and a tiny TCP balancer in front of two proxies.

- ``ReplicaProcess`` / ``ReplicaSet`` / ``start_replicas(app, addresses, port, cookie_secret)``:
  ``streamlit run`` on ``address:port`` (any loopback address: Linux answers all of 127/8), started
  in parallel, all with the same ``server.cookieSecret`` (Streamlit signs XSRF tokens with it, so a
  token issued by one replica must verify on another; set in each private HOME's config.toml, as
  Streamlit refuses it as a command-line flag);
- ``port_free_on(addresses)``: one TCP port free on every one of those addresses;
- ``RestartableProxy``: ``start_proxy`` on a fixed port, ``restart()`` keeps the port and the flags;
- ``new_driver(profile, downloads)`` and ``Browser``: one Chromium (``tests/chromium.py``'s, whose
  ``CHROMIUM``, ``CHROMEDRIVER``, ``CHROMIUM_FLAGS`` and ``HOST`` this module passes on) with network
  events recorded (``goog:loggingPrefs`` performance), waits on the app's own text, and failure
  reports with the console, the failed requests, the page text, a screenshot and every child's
  output (a ``ChromiumPage``, as in ``tests/e2e/test_browser.py``);
- ``TCPBalancer``: plain sockets and threads, a new backend per connection, in turn.

Every wait polls a condition against a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

from chromium import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, HOST, ChromiumPage, start_chromium
from harness import ProxyProcess, StreamlitProcess, free_port, start_proxy, wait_until

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "HOST",
    "Browser",
    "ReplicaProcess",
    "ReplicaSet",
    "RestartableProxy",
    "TCPBalancer",
    "expected_download",
    "new_driver",
    "port_free_on",
    "quiet",
    "start_replicas",
]

#: The file name the app's download button offers.
DOWNLOAD_NAME = "replica-download.bin"


def expected_download(replica: str) -> bytes:
    """What ``tests/apps/replica_app.py``'s download button serves on ``replica`` (``address:port``)."""
    return f"stproxy replica download from {replica}\n".encode() + bytes(range(256)) * 16


# ---------------------------------------------------------------------------------------- replicas


def port_free_on(addresses: Sequence[str], attempts: int = 50) -> int:
    """A TCP port that was free a moment ago on every address in ``addresses``."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
                        other.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {addresses} after {attempts} attempts")


class ReplicaProcess(StreamlitProcess):
    """
    A ``streamlit run`` child on ``address:port``; ``start()`` again reuses both.

    ``cookie_secret`` goes into ``~/.streamlit/config.toml`` of the child's private HOME: Streamlit
    refuses ``--server.cookieSecret`` on the command line.
    """

    def __init__(
        self, app: Path, address: str, port: int, cookie_secret: str, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__(app, port, extra_args)
        self.address = address
        self.url = f"http://{address}:{port}"
        config = self.home / ".streamlit" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"[server]\ncookieSecret = {json.dumps(cookie_secret)}\n")

    @property
    def name(self) -> str:
        """``address:port``, as the app prints it after "Replica: "."""
        return f"{self.address}:{self.port}"

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--server.address") + 1] = self.address
        return command

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ReplicaSet:
    """Several ``ReplicaProcess`` of one app; ``close()`` stops them all."""

    def __init__(self, replicas: Sequence[ReplicaProcess]) -> None:
        self.replicas = list(replicas)

    def __iter__(self):
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def __getitem__(self, index: int) -> ReplicaProcess:
        return self.replicas[index]

    def by_name(self, name: str) -> ReplicaProcess:
        for replica in self.replicas:
            if replica.name == name:
                return replica
        raise KeyError(f"no replica {name!r} among {[r.name for r in self.replicas]}")

    def ensure_running(self) -> list[ReplicaProcess]:
        """Start again (in parallel) every replica that is not running; returns those restarted."""
        dead = [r for r in self.replicas if not r.running]
        if dead:
            with ThreadPoolExecutor(len(dead)) as pool:
                list(pool.map(lambda r: r.start(), dead))
        return dead

    def output(self) -> str:
        return "\n".join(
            f"--- streamlit {r.name} output (tail):\n{r.output()[-3000:]}" for r in self.replicas
        )

    def close(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.replicas))) as pool:
            list(pool.map(lambda r: r.close(), self.replicas))


def start_replicas(
    app: Path,
    addresses: Iterable[str],
    port: int,
    cookie_secret: str,
    extra_args: Sequence[str] = (),
) -> ReplicaSet:
    """
    ``streamlit run app`` once per address, all on ``port`` and with ``server.cookieSecret``
    ``cookie_secret``, started in parallel; returns once every one answers ``/_stcore/health``.
    """
    replicas = [
        ReplicaProcess(app, address, port, cookie_secret, extra_args) for address in addresses
    ]
    with ThreadPoolExecutor(len(replicas)) as pool:
        futures = [pool.submit(r.start) for r in replicas]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        ReplicaSet(replicas).close()
        raise errors[0]
    return ReplicaSet(replicas)


# ------------------------------------------------------------------------------------------- proxy

#: Lines twisted.names logs for every DNS query (a UDP port opened and closed): noise in a report.
_NOISE = re.compile(r"^.*(DNSDatagramProtocol|\(UDP Port \d+ Closed\)).*\n?", re.MULTILINE)


def quiet(output: str) -> str:
    """A child's output without the per-query lines of twisted.names, for failure reports."""
    return _NOISE.sub("", output)


class RestartableProxy:
    """
    ``start_proxy(*args)`` listening on a fixed ``127.0.0.1`` port, so ``restart()`` brings the same
    proxy back where browsers expect it; ``output()`` holds every run's output.
    """

    def __init__(self, *args: str, port: int | None = None, name: str = "proxy") -> None:
        self.port = port or free_port()
        self.name = name
        self.args = ("--listen", f"tcp:{self.port}:interface=127.0.0.1", *args)
        self._previous = ""
        self.proxy: ProxyProcess = start_proxy(*self.args)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def output(self) -> str:
        return self._previous + self.proxy.output()

    def mark(self) -> int:
        """An offset into ``output()`` for ``wait_for_output(since=...)``."""
        return len(self.output())

    def wait_for_output(self, regex: str, timeout: float = 10, since: int = 0) -> re.Match[str]:
        """Wait for ``regex`` in the output from ``since`` (an offset from ``mark()``) on."""
        pattern = re.compile(regex)
        match = None

        def found() -> bool:
            nonlocal match
            match = pattern.search(self.output(), since)
            return match is not None

        wait_until(
            found,
            timeout,
            interval=0.1,
            message=lambda: f"no {regex!r} in {self.name} output:\n{quiet(self.output())[-8000:]}",
        )
        assert match is not None
        return match

    def restart(self) -> None:
        """Stop (SIGTERM) and start again with the same flags on the same port."""
        self.proxy.stop()
        self._previous += self.proxy.output()
        self.proxy = start_proxy(*self.args)

    def stop(self) -> None:
        self.proxy.stop()


# ------------------------------------------------------------------------------------------ browser


def new_driver(profile: Path, downloads: Path):
    """A headless Chromium with its own profile (cookie jar) and download folder, recording network events."""
    flags = (
        *CHROMIUM_FLAGS,
        "--window-size=1200,1600",
        # A page left for another must close its WebSocket (its Streamlit session): kept in the
        # back/forward cache, it stays open, and the proxy rightly counts it as an open session.
        "--disable-features=BackForwardCache",
    )
    prefs = {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
        "safebrowsing.enabled": False,
    }
    driver = start_chromium(
        profile,
        flags,
        logging_prefs={"browser": "ALL", "performance": "ALL"},
        experimental={
            "prefs": prefs,
            "perfLoggingPrefs": {"enableNetwork": True, "enablePage": False},
        },
    )
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


class Browser(ChromiumPage):
    """
    One browser (one Chromium, one cookie jar) with the replica app open in it, and waits that
    explain themselves: a failed wait reports the console, the page text, the failed requests, a
    screenshot and the output of every child named by ``outputs``.
    """

    def __init__(self, name: str, driver, downloads: Path, artifacts: Path) -> None:
        super().__init__(driver, artifacts, lambda: "")
        self.name = name
        self.downloads = downloads
        #: Every HTTP response the browser received (``(status, url)``) since ``reset()``.
        self.responses: list[tuple[int, str]] = []
        #: Every request that failed at the network level (``(error, url)``) since ``reset()``.
        self.network_errors: list[tuple[str, str]] = []
        self.websocket_handshakes: list[tuple[int, str]] = []
        self._console: list[str] = []
        self._request_urls: dict[str, str] = {}

    # -- lifecycle

    def reset(self, outputs: Callable[[], str], artifacts: Path | None = None) -> Browser:
        """
        Leave any page (its WebSocket closes, so its session is no longer open), forget every
        cookie and every recorded event: afterwards this is a browser the proxy has never seen.
        """
        from selenium.common.exceptions import WebDriverException

        self.outputs = outputs
        if artifacts is not None:
            self.artifacts = artifacts
        try:
            self.driver.get("about:blank")
        except WebDriverException:
            pass
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.delete_all_cookies()
        self._collect()
        self.responses.clear()
        self.network_errors.clear()
        self.websocket_handshakes.clear()
        self._console.clear()
        return self

    def open(self, url: str, timeout: float = 60) -> Browser:
        """Load ``url`` and wait until the script has run (the replica and a count are shown)."""
        self.driver.get(url)
        self.wait_for_text("stproxy replica app", timeout)
        self.wait(
            lambda d: self.replica() and self.count() is not None, 30, "'Replica:' and 'Count:'"
        )
        self.assert_no_connection_error()
        return self

    # -- reading the page

    def replica(self) -> str | None:
        """The replica the page says rendered it (``address:port``), or ``None`` before it shows."""
        match = re.search(r"Replica: (\S+)", self.body_text())
        return match.group(1) if match else None

    def count(self) -> int | None:
        match = re.search(r"Count: (\d+)", self.body_text())
        return int(match.group(1)) if match else None

    def cookies(self) -> dict[str, str]:
        return {
            c["name"]: c["value"]
            for c in self.driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
        }

    # -- network events

    def _collect(self) -> None:
        from selenium.common.exceptions import WebDriverException

        try:
            entries = self.driver.get_log("performance")
        except WebDriverException:
            entries = []
        urls = self._request_urls
        for entry in entries:
            try:
                message = json.loads(entry["message"])["message"]
            except (KeyError, ValueError):
                continue
            method = message.get("method")
            params = message.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params.get("requestId", "")] = params.get("request", {}).get("url", "")
            elif method == "Network.responseReceived":
                response = params.get("response", {})
                self.responses.append((int(response.get("status", 0)), response.get("url", "")))
            elif method == "Network.loadingFailed":
                self.network_errors.append(
                    (str(params.get("errorText")), urls.get(params.get("requestId", ""), "?"))
                )
            elif method == "Network.webSocketHandshakeResponseReceived":
                response = params.get("response", {})
                self.websocket_handshakes.append(
                    (int(response.get("status", 0)), urls.get(params.get("requestId", ""), "?"))
                )
            elif method == "Network.webSocketCreated":
                urls[params.get("requestId", "")] = params.get("url", "")
        try:
            self._console.extend(
                f"{e.get('level')} {e.get('message')}" for e in self.driver.get_log("browser")
            )
        except WebDriverException:
            pass

    def failed_responses(self, statuses: Iterable[int] = range(400, 600)) -> list[tuple[int, str]]:
        """The responses so far whose status is in ``statuses`` (all 4xx and 5xx by default)."""
        self._collect()
        wanted = set(statuses)
        return [(status, url) for status, url in self.responses if status in wanted]

    def assert_no_failed_responses(self, statuses: Iterable[int] = range(400, 600)) -> None:
        failed = self.failed_responses(statuses)
        if failed:
            self.fail(f"{self.name}: requests answered with an error status: {failed}")

    # -- failing

    def console_lines(self) -> list[str]:
        """The last 40 console lines since ``reset()`` (``_collect`` reads them with the network events)."""
        self._collect()
        return self._console[-40:]

    def more_diagnostics(self) -> str:
        """The cookies, the failed requests and the WebSocket handshakes."""
        failed = [(s, u) for s, u in self.responses if s >= 400]
        return (
            f"--- cookies: {self._safe_cookies()}\n"
            f"--- responses >= 400: {failed}\n--- network errors: {self.network_errors[-20:]}\n"
            f"--- websocket handshakes: {self.websocket_handshakes[-20:]}\n"
        )

    def _safe_cookies(self) -> dict[str, str] | str:
        try:
            return self.cookies()
        except Exception as e:  # diagnostics only
            return f"(unavailable: {e})"

    # -- acting

    def click(self, label: str, timeout: float = 30) -> None:
        """
        Click the button labelled ``label``, found afresh each try (Streamlit re-renders): a button
        being re-rendered is briefly stale or not interactable, so those errors mean "try again".
        """
        from selenium.common.exceptions import (
            ElementClickInterceptedException,
            ElementNotInteractableException,
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.common.by import By

        def clicked(d) -> bool:
            try:
                d.find_element(By.XPATH, f"//button[normalize-space()='{label}']").click()
            except (
                ElementClickInterceptedException,
                ElementNotInteractableException,
                NoSuchElementException,
                StaleElementReferenceException,
            ):
                return False
            return True

        self.wait(clicked, timeout, f"button {label!r} to take a click")

    def increment_to(self, target: int) -> None:
        """Click Increment until the count is ``target``, waiting for each rerun."""
        current = self.count()
        assert current is not None and current <= target, (current, target)
        for expected in range(current + 1, target + 1):
            self.click("Increment")
            self.wait_for_text(f"Count: {expected}")

    def upload(self, data: bytes, path: Path, timeout: float = 60) -> str:
        """Upload ``data`` (saved at ``path``) and wait for the app's sha256 of it; returns the hex."""
        from selenium.webdriver.common.by import By

        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        field = self.wait(
            lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"), 30, "the file input"
        )
        field.send_keys(str(path))
        self.wait_for_text(f"sha256: {digest}", timeout)
        return digest

    def wait_for_image(self, timeout: float = 30) -> str:
        """Wait until the app's ``/media/`` image has decoded (naturalWidth > 0); returns its src."""
        from selenium.webdriver.common.by import By

        image = self.wait(
            lambda d: d.find_element(By.CSS_SELECTOR, "img[src*='/media/']"),
            timeout,
            "an <img> from /media/",
        )
        self.wait(
            lambda d: d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image
            ),
            timeout,
            "the /media/ image to load (naturalWidth > 0)",
        )
        return image.get_property("src")

    def download(self, timeout: float = 30) -> bytes:
        """Click the app's download button and return the bytes Chromium saved."""
        for old in self.downloads.iterdir():
            old.unlink()
        self.click("Download the file")
        target = self.downloads / DOWNLOAD_NAME

        def saved() -> bool:
            names = [p.name for p in self.downloads.iterdir()]
            return target.exists() and not any(n.endswith(".crdownload") for n in names)

        self.wait(lambda d: saved(), timeout, f"{target} to be downloaded")
        return target.read_bytes()


# ----------------------------------------------------------------------------------------- balancer


class TCPBalancer:
    """
    A tiny layer-4 balancer on ``127.0.0.1:<port>``: each accepted connection is relayed, bytes
    untouched, to the next backend in turn. WebSocket upgrades (seen in the first bytes the client
    sends) take turns among themselves, so each reconnect of the page's WebSocket crosses to the
    other backend, whatever the plain connections in between did.

    ``connections`` records ``(backend index, kind, request line)`` per connection;
    ``reset()`` cuts every open connection (the browser sees them drop).
    """

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._turn = {"http": 0, "websocket": 0}
        self._open: set[socket.socket] = set()
        self.connections: list[tuple[int, str, str]] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-balancer")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        held = [client]
        with self._lock:
            self._open.add(client)
        try:
            first = client.recv(65536)
            if not first:
                return
            kind = "websocket" if b"upgrade: websocket" in first.lower() else "http"
            line = first.split(b"\r\n", 1)[0].decode("latin-1")
            with self._lock:
                index = self._turn[kind] % len(self.backends)
                self._turn[kind] += 1
                self.connections.append((index, kind, line))
            upstream = socket.create_connection(self.backends[index], timeout=10)
            upstream.settimeout(None)
            held.append(upstream)
            with self._lock:
                self._open.add(upstream)
            upstream.sendall(first)
            back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
            back.start()
            self._pump(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update(held)
            for s in held:
                s.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def used(self, kind: str | None = None) -> set[int]:
        """The backend indexes that got at least one connection (of ``kind``, if given)."""
        with self._lock:
            return {index for index, k, _ in self.connections if kind is None or k == kind}

    def reset(self) -> None:
        """Cut every open connection, both ways."""
        with self._lock:
            sockets = list(self._open)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._listener.close()
        self.reset()

    def __enter__(self) -> TCPBalancer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
