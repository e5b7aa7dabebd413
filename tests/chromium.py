"""
Headless Chromium for the browser tests (``tests/e2e/test_browser.py``, ``test_identity.py`` and
``replicas_harness.py`` for ``test_replicas.py``): Debian's chromium and chromedriver, one way to
start them, and a page whose waits explain themselves when they fail.

- ``CHROMIUM``, ``CHROMEDRIVER``, ``installed()``: the binaries, and whether both are there;
- ``HOST``: the host name every page is loaded from; ``CHROMIUM_FLAGS`` map it to 127.0.0.1
  (Streamlit's WebSocket Origin check exempts localhost and 127.0.0.1, so only a real-looking
  name catches a proxy that rewrites ``Host``). A module that needs more flags adds them to the
  tuple;
- ``start_chromium(profile, ...)``: a headless Chromium WebDriver on its own profile, recording
  the browser console;
- ``ChromiumPage``: ``body_text``, ``wait(condition, timeout, what)``, ``wait_for_text``,
  ``assert_no_connection_error`` and ``fail``; a failure reports the browser console, the page
  text, a screenshot and the children's output (from the ``outputs`` callable).

Selenium is imported only when a browser is started or read, so a module can import this one
and still skip (or run its tests without a browser) when selenium is not installed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn, Sequence

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "HOST",
    "ChromiumPage",
    "installed",
    "start_chromium",
]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOST = "app.test"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
)


def installed() -> bool:
    """Whether Debian's chromium and chromium-driver are there."""
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def start_chromium(
    profile: Path,
    flags: Sequence[str] = CHROMIUM_FLAGS,
    *,
    logging_prefs: Mapping[str, str] | None = None,
    experimental: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> WebDriver:
    """
    A headless Chromium (``flags``) with its profile in ``profile``, recording what
    ``logging_prefs`` names (``goog:loggingPrefs``; the browser console by default), with the
    ``experimental`` ChromeOptions (``prefs``, ``perfLoggingPrefs``) and chromedriver run with
    ``env`` (its own environment when ``None``).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", dict(logging_prefs or {"browser": "ALL"}))
    for name, value in (experimental or {}).items():
        options.add_experimental_option(name, value)
    service = Service(executable_path=CHROMEDRIVER, env=env)
    return webdriver.Chrome(service=service, options=options)


class ChromiumPage:
    """
    The browser on a page, with waits that explain themselves when they fail. ``outputs()`` is
    the children's output for a failure report; ``name``, when given, names the browser in its
    screenshots and failure messages.
    """

    name: str | None = None

    def __init__(self, driver: WebDriver, artifacts: Path, outputs: Callable[[], str]) -> None:
        self.driver = driver
        self.artifacts = artifacts
        self.outputs = outputs

    # -- reading the page

    def body_text(self) -> str:
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.common.by import By

        try:
            return self.driver.find_element(By.TAG_NAME, "body").text
        except (StaleElementReferenceException, WebDriverException):
            return ""

    # -- failing

    def console_lines(self) -> list[str]:
        """The browser console since it was last read (read once: Chromium forgets it)."""
        from selenium.common.exceptions import WebDriverException

        try:
            return [f"{e.get('level')} {e.get('message')}" for e in self.driver.get_log("browser")]
        except WebDriverException as e:
            return [f"(unavailable: {e})"]

    def more_diagnostics(self) -> str:
        """Lines a subclass adds to ``diagnostics()`` before the console (each ending in a newline)."""
        return ""

    def diagnostics(self) -> str:
        """Browser console, page text, a screenshot and the children's output, for a failure message."""
        from selenium.common.exceptions import WebDriverException

        console = "\n".join(f"  {line}" for line in self.console_lines())
        shot = self.artifacts / f"{self.name or 'screenshot'}-{time.monotonic_ns()}.png"
        try:
            self.driver.save_screenshot(str(shot))
            current = self.driver.current_url
        except WebDriverException:
            shot, current = Path("(none)"), "?"
        browser = f"browser {self.name}, " if self.name else ""
        return (
            f"\n--- {browser}url: {current}\n--- screenshot: {shot}\n{self.more_diagnostics()}"
            f"--- browser console:\n{console}\n--- page text:\n{self.body_text()[-3000:]}\n"
            f"{self.outputs()}"
        )

    def fail(self, what: str) -> NoReturn:
        """Fail the test with ``what`` and the diagnostics (no traceback)."""
        pytest.fail(f"{what}{self.diagnostics()}", pytrace=False)

    def _named(self, what: str) -> str:
        return f"{self.name}: {what}" if self.name else what

    # -- waiting

    def wait(self, condition: Callable[[WebDriver], Any], timeout: float, what: str) -> Any:
        """``condition``'s first truthy answer within ``timeout`` s, else fail saying ``what``."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            pass  # fail outside the handler, so the report is not a chain of two exceptions
        self.fail(self._named(f"waited {timeout} s for {what}"))

    def wait_for_text(self, text: str, timeout: float = 30) -> None:
        self.wait(lambda d: text in self.body_text(), timeout, f"page text {text!r}")

    def assert_no_connection_error(self) -> None:
        if "Connection error" in self.body_text():
            self.fail(self._named("the page shows 'Connection error'"))
