"""
The demo app in real headless Chromium over HTTPS and WSS, through a ``twistd stproxy`` whose
only listener is ``ssl:``.

Same page, helpers and waits as ``tests/test_browser.py`` (imported, not copied); what changes
is the URL (``https://app.test:PORT/``, so the Streamlit stream can only be ``wss://``) and the
certificate, made for this run by a throw-away CA (``tests/certs.py``) that the browser does not
know, hence ``--ignore-certificate-errors`` on this test browser only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from certs import CertificateAuthority
from harness import StreamlitProcess, start_proxy
from test_browser import (  # noqa: F401  (demo_streamlit is a fixture; pytestmark skips without Chromium)
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    HOST,
    DemoPage,
    Served,
    demo_streamlit,
    pytestmark,
)
from selenium import webdriver  # noqa: E402  (importable: test_browser would have skipped us)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver


class TLSServed(Served):
    """stproxy listening on TLS only, in front of the demo app."""

    def __init__(self, streamlit: StreamlitProcess, certificates: Path) -> None:
        ca = CertificateAuthority.create(certificates / "ca")
        server = ca.intermediate().issue(certificates / "server", HOST, dns=[HOST, "localhost"], ips=["127.0.0.1"])
        self.streamlit = streamlit
        self.proxy = start_proxy(
            "--listen", "ssl:0:interface=127.0.0.1",
            "--tls-cert", str(server.cert_path), "--tls-key", str(server.key_path),
            "--upstream", f"127.0.0.1:{streamlit.port}",
        )  # fmt: skip
        self.url = f"https://{HOST}:{self.proxy.port}/"


@pytest.fixture(scope="module")
def tls_served(demo_streamlit: StreamlitProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServed]:
    served = TLSServed(demo_streamlit, tmp_path_factory.mktemp("browser-pki"))
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def tls_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Chromium as in test_browser.py, told to accept the test CA's certificate."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, "--ignore-certificate-errors"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-tls-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def tls_page(tls_driver: WebDriver, tls_served: TLSServed, tmp_path: Path) -> DemoPage:
    return DemoPage(tls_driver, tls_served, tmp_path).open()


def test_the_app_renders_over_https(tls_page: DemoPage) -> None:
    """The page comes over HTTPS, its stream connects over WSS, and the script's output appears."""
    assert tls_page.driver.current_url.startswith(f"https://{HOST}:")
    tls_page.wait_for_text("Upload a file")
    tls_page.assert_no_connection_error()


def test_increment_works_over_wss(tls_page: DemoPage) -> None:
    """Each click is a rerun over the wss:// stream; the session keeps its state between them."""
    for expected in (1, 2, 3):
        tls_page.click("Increment")
        tls_page.wait_for_text(f"Count: {expected}")
    tls_page.assert_no_connection_error()
