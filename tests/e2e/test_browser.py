"""
The demo app (``deploy/demo_app.py``) in real headless Chromium, through a real ``twistd stproxy``.

Every test runs twice: over HTTP, and over HTTPS/WSS with stproxy as the TLS edge.
The page is loaded from ``http[s]://app.test:<port>/`` (Chromium maps ``app.test`` to 127.0.0.1):
Streamlit's WebSocket Origin check exempts localhost and 127.0.0.1, so only a real-looking host
name catches a proxy that rewrites ``Host``.

Every wait is for the app's own text (a refused WebSocket leaves a grey skeleton, not an error).
A failed wait reports the browser console, the page text, a screenshot path and the children's
output.

``STPROXY_BROWSER_DIRECT=1`` points the same tests at Streamlit directly (no proxy), to check the
tests themselves; ``STPROXY_BROWSER_DIRECT=both`` runs them both ways.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from certs import CertificateAuthority
from chromium import CHROMIUM_FLAGS, HOST, ChromiumPage, installed, start_chromium
from harness import PROJECT_ROOT, ProxyProcess, StreamlitProcess, start_proxy, start_streamlit

pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

DEMO_APP = PROJECT_ROOT / "deploy" / "demo_app.py"

_DIRECT = os.environ.get("STPROXY_BROWSER_DIRECT", "")
#: ``proxy``: plain HTTP through stproxy; ``proxy-tls``: HTTPS and WSS through stproxy as the TLS
#: edge (a test CA's certificate, accepted with --ignore-certificate-errors in the test browser).
TARGETS = {"1": ["direct"], "both": ["direct", "proxy", "proxy-tls"]}.get(
    _DIRECT, ["proxy", "proxy-tls"]
)

pytestmark = pytest.mark.skipif(
    not installed(),
    reason="needs Debian chromium and chromium-driver",
)


# ------------------------------------------------------------------------------------ helpers


class Served:
    """What the browser talks to: Streamlit, and the proxy in front of it unless ``direct``."""

    def __init__(self, target: str, streamlit: StreamlitProcess, workdir: Path) -> None:
        self.streamlit = streamlit
        self.proxy: ProxyProcess | None = None
        upstream = ("--upstream", f"127.0.0.1:{streamlit.port}")
        scheme = "http"
        if target == "proxy":
            self.proxy = start_proxy(*upstream)
        elif target == "proxy-tls":
            ca = CertificateAuthority.create(workdir / "ca")
            server = ca.issue(workdir / "server", HOST, dns=[HOST], ips=["127.0.0.1"])
            self.proxy = start_proxy(
                "--listen", "ssl:0:interface=127.0.0.1",
                "--tls-cert", str(server.cert_path), "--tls-key", str(server.key_path),
                *upstream,
            )  # fmt: skip
            scheme = "https"
        port = self.proxy.port if self.proxy else streamlit.port
        self.url = f"{scheme}://{HOST}:{port}/"

    def output(self) -> str:
        parts = [f"--- streamlit output (tail):\n{self.streamlit.output()[-4000:]}"]
        if self.proxy:
            parts.append(f"--- proxy output (tail):\n{self.proxy.output()[-8000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proxy:
            self.proxy.stop()


class DemoPage(ChromiumPage):
    """The demo app open in the browser, with waits that explain themselves when they fail."""

    def __init__(self, driver: WebDriver, served: Served, artifacts: Path) -> None:
        super().__init__(driver, artifacts, served.output)
        self.served = served

    def open(self) -> DemoPage:
        self.driver.get(self.served.url)
        self.wait_for_text("stproxy demo", 60)
        self.wait_for_text("Count: 0", 30)
        self.assert_no_connection_error()
        return self

    def click(self, label: str) -> None:
        """Click the button labelled ``label`` (found afresh: Streamlit re-renders)."""
        button = self.wait(
            lambda d: d.find_element(By.XPATH, f"//button[normalize-space()='{label}']"),
            30,
            f"button {label!r}",
        )
        button.click()

    def count(self) -> int | None:
        match = re.search(r"Count: (\d+)", self.body_text())
        return int(match.group(1)) if match else None


def _new_driver(profile: Path, target: str) -> WebDriver:
    flags = CHROMIUM_FLAGS
    if target == "proxy-tls":
        flags += ("--ignore-certificate-errors",)  # the test CA, test browser only
    return start_chromium(profile, flags)


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    """``proxy`` (the browser talks to stproxy) or ``direct`` (to Streamlit itself)."""
    return request.param


@pytest.fixture(scope="module")
def demo_streamlit() -> Iterator[StreamlitProcess]:
    process = start_streamlit(DEMO_APP)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def served(
    target: str, demo_streamlit: StreamlitProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    result = Served(target, demo_streamlit, tmp_path_factory.mktemp("served"))
    try:
        yield result
    finally:
        result.stop()


@pytest.fixture(scope="module")
def driver(target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    browser = _new_driver(tmp_path_factory.mktemp("chromium-profile"), target)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(driver: WebDriver, served: Served, tmp_path: Path) -> DemoPage:
    """A freshly loaded demo page (a new Streamlit session, so the count starts at 0)."""
    return DemoPage(driver, served, tmp_path).open()


# -------------------------------------------------------------------------------------- tests


def test_the_app_renders_without_a_connection_error(page: DemoPage) -> None:
    """The page loads, its WebSocket connects and the script's output appears, with no error dialog."""
    assert page.driver.current_url == page.served.url
    page.wait_for_text("Upload a file")
    page.assert_no_connection_error()


def test_clicking_increment_three_times_counts_to_three(page: DemoPage) -> None:
    """Each click is a rerun over the WebSocket, and the session keeps its state between them."""
    for expected in (1, 2, 3):
        page.click("Increment")
        page.wait_for_text(f"Count: {expected}")
    page.assert_no_connection_error()


def test_a_5_mb_upload_reaches_the_app_intact(page: DemoPage, tmp_path: Path) -> None:
    """A 5 MB file goes up through the XSRF-checked upload endpoint and the app hashes the same bytes."""
    data = os.urandom(5 * 1024 * 1024)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    page.driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
    page.wait_for_text(f"sha256: {hashlib.sha256(data).hexdigest()}", 60)
    page.assert_no_connection_error()


def test_the_generated_image_loads_from_media(page: DemoPage) -> None:
    """``st.image`` is served from ``/media/`` on the page's own host and decodes in the browser."""
    image = page.wait(
        lambda d: d.find_element(By.CSS_SELECTOR, "img[src*='/media/']"),
        30,
        "an <img> from /media/",
    )
    page.wait(
        lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        ),
        30,
        "the /media/ image to load (naturalWidth > 0)",
    )
    src = image.get_property("src")
    assert src.startswith(page.served.url), (src, page.served.url)


def test_500_placeholder_updates_end_on_the_last_one(page: DemoPage) -> None:
    """A burst of 500 placeholder updates streams down the WebSocket and the page ends on the last."""
    page.click("Run 500 updates")
    page.wait_for_text("Update 500 of 500", 60)
    page.assert_no_connection_error()


def test_the_page_recovers_after_streamlit_restarts(
    driver: WebDriver, target: str, tmp_path: Path
) -> None:
    """
    With the page open, Streamlit stops and starts again on the same port; within 30 s the page
    reconnects and Increment increments again (in a new session, so the count may have restarted).
    """
    streamlit = start_streamlit(DEMO_APP)
    served = Served(target, streamlit, tmp_path)
    try:
        page = DemoPage(driver, served, tmp_path).open()
        for expected in (1, 2):
            page.click("Increment")
            page.wait_for_text(f"Count: {expected}")

        deadline = time.monotonic() + 30
        streamlit.stop()
        streamlit.start()

        # Clicks while the page is still disconnected are lost (the widgets are disabled), so keep
        # clicking until one takes effect: the count moves away from 2 (1 in a new session).
        def count_moved(d: WebDriver) -> bool:
            try:
                d.find_element(By.XPATH, "//button[normalize-space()='Increment']").click()
            except WebDriverException:
                return False
            return _wait_quietly(lambda: page.count() not in (None, 2), 3)

        page.wait(
            count_moved,
            max(1, deadline - time.monotonic()),
            "a click to change the count after the restart",
        )
        before = page.count()
        page.click("Increment")
        page.wait_for_text(f"Count: {before + 1}", max(1, deadline - time.monotonic()))
        page.assert_no_connection_error()
    finally:
        served.stop()
        streamlit.close()


def _wait_quietly(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` for up to ``timeout`` s; its last answer, without raising."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)
    return True
