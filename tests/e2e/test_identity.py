"""
Identity at the edge (issue #12) end to end: who ``st.user`` says the viewer is, in real headless
Chromium, through a real ``python -m stproxy`` in front of a real Streamlit.

Streamlit runs ``tests/apps/user_app.py`` (it prints ``User: ...``, ``Email: ...``,
``Groups: ...``) with the ``.streamlit/config.toml`` that ``python -m stproxy
--print-streamlit-config`` prints, so ``st.user`` is filled from stproxy's ``X-Forwarded-User``,
``-Email`` and ``-Groups`` on the WebSocket handshake. The tests check each way stproxy names the
user, and that a browser cannot name itself:

- ``--auth htpasswd:FILE`` (a bcrypt line made here): ``http://alice:PASSWORD@app.test:PORT/``,
  whose credentials Chromium keeps for the origin and sends on every request and on the WebSocket
  handshake, shows ``User: alice``; without credentials a GET and a WebSocket upgrade get 401.
- A forged ``X-Forwarded-User: mallory`` (and e-mail and groups) added to every request of the
  browser through DevTools (``Network.setExtraHTTPHeaders``) never reaches the app, with auth on
  and with auth off (with the default header names and with ones given by ``--user-header`` and
  the like); the same browser straight at Streamlit *is* believed, which shows that the forgery
  really is sent (and why Streamlit must only be reachable through stproxy).
- ``--forward-auth`` at ``tests/auth_service.py`` (run as a child): an unauthenticated navigation
  lands on the service's sign-in page with ``rd=`` the app's URL; signing in there sets the
  session cookie and sends the browser back, and the page shows the user, e-mail and groups the
  service answered with.
- A client certificate (``--tls-client-ca`` and ``--user-from-cert cn``): Chromium is given
  alice's certificate in an NSS database under its ``HOME`` (``certutil``/``pk12util`` from
  libnss3-tools) and picks it without a prompt through the ``auto_select_certificate`` content
  setting of its profile, and the page shows its CN. Without those tools that one test is
  skipped; an HTTPS and a ``wss://`` client with the certificate check the same against a
  recording upstream either way.
- The access log names the user in its third field, the WebSocket session line names the user,
  and no password, password hash, ``Authorization`` value or session cookie appears in the
  proxy's output.

One Chromium serves every browser test (its Basic-auth cache, cookies and client certificate
choices are per origin, and each proxy has its own port); every wait is for a condition, and a
failed wait reports the browser console, the page text, a screenshot and the children's output.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import bcrypt
import pytest
from chromium import CHROMIUM_FLAGS as COMMON_FLAGS
from chromium import HOST, ChromiumPage, installed, start_chromium
from cryptography.x509.oid import NameOID
from harness import (
    APPS,
    HERE,
    ProcessOutput,
    ProxyProcess,
    StreamlitProcess,
    free_port,
    run_proxy,
    start_proxy,
)
from pki import PKI

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
except ImportError:  # pragma: no cover - selenium is a test dependency
    webdriver = None

PYTHON_M_STPROXY = [sys.executable, "-m", "stproxy"]
LOOPBACK = "tcp:0:interface=127.0.0.1"

CHROMIUM_FLAGS = (
    *COMMON_FLAGS,
    "--disable-features=BackForwardCache",  # leaving a page closes its WebSocket at once
    "--ignore-certificate-errors",  # the test CA's server certificate, test browser only
)

PASSWORD = "correct-horse-4917"
WRONG_PASSWORD = "wrong-battery-2281"
SESSION_COOKIE = "valid-alice"  # tests/auth_service.py's session of alice

#: What a browser forges; stproxy must drop every one of them.
FORGED = {
    "X-Forwarded-User": "mallory",
    "X-Forwarded-Email": "mallory@evil.test",
    "X-Forwarded-Groups": "mallory-admins",
}

needs_browser = pytest.mark.skipif(
    webdriver is None or not installed(),
    reason="needs selenium, Debian chromium and chromium-driver",
)
NSS_TOOLS = shutil.which("certutil") and shutil.which("pk12util")
needs_nss_tools = pytest.mark.skipif(
    not NSS_TOOLS,
    reason="giving Chromium a client certificate needs certutil and pk12util (libnss3-tools)",
)


# ------------------------------------------------------------------------------------ helpers


def basic(user: str, password: str) -> str:
    """An ``Authorization`` value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_get(url: str, headers: dict[str, str] | None = None, context=None):
    """(status, headers, body) of a GET, whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def websocket_upgrade(port: int, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """
    A WebSocket handshake for ``/_stcore/stream`` on a raw socket: the status and the head of the
    answer (read up to its blank line; a 101's frames are never read).
    """
    lines = [
        "GET /_stcore/stream HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: streamlit",
        f"Origin: http://{HOST}:{port}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    return int(head.split()[1]), head


def assert_no_secrets(output: str, *secrets: str) -> None:
    """None of ``secrets`` appears anywhere in ``output`` (named, not shown, when one does)."""
    found = [index for index, secret in enumerate(secrets) if secret in output]
    assert not found, f"secrets #{found} of {len(secrets)} appear in the proxy output"


def access_line(output: str, user: str, method: str, path: str, status: str) -> re.Match | None:
    """
    The combined-format access log line for ``method path`` -> ``status`` (a regular expression,
    e.g. ``200|304``) naming ``user`` in its third field.
    """
    return re.search(
        rf'^"?127\.0\.0\.1"? - {re.escape(user)} \[[^\]]+\] '
        rf'"{method} {re.escape(path)} HTTP/1\.1" (?:{status}) ',
        output,
        re.MULTILINE,
    )


class Page(ChromiumPage):
    """The browser on one URL, with waits that explain themselves when they fail."""

    def open(self, url: str) -> Page:
        self.driver.get(url)
        return self

    def user_fields(self, timeout: float = 60) -> dict[str, str]:
        """
        Wait until the app has run (its last line shows) and return its fields: ``User``,
        ``Email``, ``Groups``, ``Other`` (``(none)`` when absent).
        """
        self.wait(lambda d: "Rendered: yes" in self.body_text(), timeout, "the user app's text")
        text = self.body_text()
        if "Connection error" in text:
            self.fail("the page shows 'Connection error'")
        fields = dict(re.findall(r"^(User|Email|Groups|Other): (.*)$", text, re.MULTILINE))
        if set(fields) != {"User", "Email", "Groups", "Other"}:
            self.fail("the user app's fields are not all there")
        return fields


def forge_headers(driver: WebDriver, headers: dict[str, str]) -> None:
    """Add ``headers`` to every request the browser makes from now on (``{}``: none)."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


def _bcrypt_htpasswd(path: Path, user: str, password: str) -> Path:
    """An htpasswd file with one bcrypt line (cost 4: fast, and still what htpasswd -B writes)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert hashed.startswith("$2b$04$"), hashed
    path.write_text(f"{user}:{hashed}\n")
    return path


class RecordingUpstream:
    """
    A plain-HTTP upstream (the ``websockets`` library in a thread) that records the head of every
    request: a WebSocket handshake is accepted (subprotocol ``streamlit``) and held open until
    the client leaves; any other request gets 200 with its headers as JSON.
    """

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.handshakes: list[list[tuple[str, str]]] = []
        self.server = serve(
            self._session,
            "127.0.0.1",
            0,
            subprotocols=["streamlit"],
            process_request=self._process_request,
            compression=None,
        )
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _process_request(self, connection, request):
        headers = list(request.headers.raw_items())
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return connection.respond(200, json.dumps({"path": request.path, "headers": headers}))
        self.handshakes.append(headers)
        return None

    @staticmethod
    def _session(connection) -> None:
        for _ in connection:  # hold the session open until the client closes it
            pass

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


def values(headers: list[tuple[str, str]] | list[list[str]], name: str) -> list[str]:
    """Every value of header ``name`` (any case), in order."""
    return [value for key, value in headers if key.lower() == name.lower()]


# ----------------------------------------------------------------------------------- fixtures


#: Identity header names of one's own choosing (``--user-header`` and so on): headers that
#: stproxy's general forwarding-header rules know nothing of, so only its identity handling keeps
#: a client's copy away from Streamlit.
CUSTOM_NAMES = {
    "--user-header": "X-Remote-User",
    "--email-header": "X-Remote-Email",
    "--groups-header": "X-Remote-Groups",
}


def streamlit_config(*flags: str) -> str:
    """What ``python -m stproxy --print-streamlit-config FLAGS`` prints (checked as TOML)."""
    result = run_proxy("--print-streamlit-config", *flags, command=PYTHON_M_STPROXY)
    assert result.returncode == 0, result.stdout
    return result.stdout


def start_user_streamlit(config: str) -> StreamlitProcess:
    """
    A real Streamlit serving ``user_app.py`` with ``config`` in ``.streamlit/config.toml`` of its
    working directory (the harness runs it in its private HOME).
    """
    process = StreamlitProcess(APPS / "user_app.py", free_port())
    (process.home / ".streamlit").mkdir()
    (process.home / ".streamlit" / "config.toml").write_text(config)
    try:
        return process.start()
    except BaseException:
        process.close()
        raise


@pytest.fixture(scope="module")
def user_streamlit() -> Iterator[StreamlitProcess]:
    """Streamlit reading st.user from stproxy's default identity headers."""
    config = streamlit_config()
    assert tomllib.loads(config)["server"]["trustedUserHeaders"] == {
        "X-Forwarded-User": "user",
        "X-Forwarded-Email": "email",
        "X-Forwarded-Groups": "groups",
    }, config
    process = start_user_streamlit(config)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def custom_names_streamlit() -> Iterator[StreamlitProcess]:
    """Streamlit reading st.user from the headers named by ``CUSTOM_NAMES``."""
    flags = [item for pair in CUSTOM_NAMES.items() for item in pair]
    config = streamlit_config(*flags)
    assert tomllib.loads(config)["server"]["trustedUserHeaders"] == {
        "X-Remote-User": "user",
        "X-Remote-Email": "email",
        "X-Remote-Groups": "groups",
    }, config
    process = start_user_streamlit(config)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def browser_home(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Path:
    """
    Chromium's HOME: on Linux it finds client certificates in ``$HOME/.pki/nssdb``, where alice's
    certificate and key are put (when certutil and pk12util are there).
    """
    home = tmp_path_factory.mktemp("chromium-home")
    if NSS_TOOLS:
        from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        p12 = home / "alice.p12"
        p12.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"alice", pki.client.key, pki.client.cert, None, NoEncryption()
            )
        )
        for command in (
            ["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
            ["pk12util", "-i", str(p12), "-d", f"sql:{nssdb}", "-W", ""],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
    return home


@pytest.fixture(scope="module")
def driver(
    tmp_path_factory: pytest.TempPathFactory, browser_home: Path, pki: PKI
) -> Iterator[WebDriver]:
    """
    One headless Chromium for the module. Its profile picks, without a prompt, a client
    certificate issued by the test root CA for any https://*.app.test page (the
    ``auto_select_certificate`` content setting that the AutoSelectCertificateForUrls policy
    also fills).
    """
    if webdriver is None or not installed():
        pytest.skip("needs selenium, Debian chromium and chromium-driver")
    profile = tmp_path_factory.mktemp("chromium-profile")
    (profile / "Default").mkdir()
    [issuer] = pki.root.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    auto_select = {
        f"https://[*.]{HOST},*": {"setting": {"filters": [{"ISSUER": {"CN": issuer.value}}]}}
    }
    exceptions = {"auto_select_certificate": auto_select}
    preferences = {"profile": {"content_settings": {"exceptions": exceptions}}}
    (profile / "Default" / "Preferences").write_text(json.dumps(preferences))
    browser = start_chromium(profile, CHROMIUM_FLAGS, env={**os.environ, "HOME": str(browser_home)})
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page_for(driver: WebDriver, tmp_path: Path) -> Iterator[Callable[..., Page]]:
    """
    ``page_for(*children)``: a Page whose failure reports include those children's output. The
    browser forges nothing and holds no cookies when the test starts, and forges nothing after.
    """
    forge_headers(driver, {})
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})

    def make(*children) -> Page:
        def outputs() -> str:
            return "\n".join(
                f"--- {type(child).__name__} output (tail):\n{child.output()[-6000:]}"
                for child in children
            )

        return Page(driver, tmp_path, outputs)

    try:
        yield make
    finally:
        forge_headers(driver, {})


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's bcrypt line, as ``htpasswd -B`` writes it."""
    return _bcrypt_htpasswd(tmp_path_factory.mktemp("htpasswd") / "htpasswd", "alice", PASSWORD)


@pytest.fixture(scope="module")
def basic_proxy(user_streamlit: StreamlitProcess, htpasswd: Path) -> Iterator[ProxyProcess]:
    """``python -m stproxy --auth htpasswd:FILE --access-log -`` on loopback, for the module."""
    process = start_proxy(
        "--listen", LOOPBACK, "--upstream", f"127.0.0.1:{user_streamlit.port}",
        "--auth", f"htpasswd:{htpasswd}", "--access-log", "-",
        command=PYTHON_M_STPROXY,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.stop()


class AuthServiceProcess:
    """``tests/auth_service.py`` as a child, on a free port."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "auth_service.py")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._output = ProcessOutput(self.process.stdout)
        match = self._output.wait_for(
            r'\{"port": (\d+)\}', 20, alive=lambda: self.process.poll() is None
        )
        if match is None:
            self.stop()
            raise RuntimeError(f"auth_service.py did not start:\n{self.output()}")
        self.port = int(match.group(1))

    def output(self) -> str:
        return self._output.text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._output.join()


@pytest.fixture(scope="module")
def auth_service() -> Iterator[AuthServiceProcess]:
    """The test auth service (its default session ``valid-alice`` is alice), for the module."""
    service = AuthServiceProcess()
    try:
        yield service
    finally:
        service.stop()


# ------------------------------------------------------------------------------ HTTP Basic auth


@needs_browser
def test_basic_auth_the_page_shows_the_signed_in_user(
    page_for, basic_proxy: ProxyProcess, user_streamlit: StreamlitProcess
) -> None:
    """
    Through ``--auth htpasswd:`` (a bcrypt line), a browser signed in as alice (credentials in
    the URL, which Chromium then sends on the page's requests and its WebSocket handshake) sees
    ``User: alice``; Basic auth knows no e-mail or groups.
    """
    page = page_for(basic_proxy, user_streamlit)
    page.open(f"http://alice:{PASSWORD}@{HOST}:{basic_proxy.port}/")
    fields = page.user_fields()
    assert fields == {"User": "alice", "Email": "(none)", "Groups": "(none)", "Other": "(none)"}, (
        fields,
        page.diagnostics(),
    )


def test_basic_auth_refuses_requests_and_the_websocket_without_credentials(
    basic_proxy: ProxyProcess,
) -> None:
    """
    Without credentials (or with a wrong password) a GET gets 401 with a Basic
    ``WWW-Authenticate`` and nothing of the app, and so does the WebSocket upgrade; the same
    upgrade with alice's password gets 101, so the refusal is the credentials'.
    """
    url = f"http://127.0.0.1:{basic_proxy.port}/"
    for headers in ({}, {"Authorization": basic("alice", WRONG_PASSWORD)}):
        status, response_headers, body = http_get(url, headers)
        assert status == 401, (status, headers.keys())
        assert response_headers.get("WWW-Authenticate", "").startswith("Basic realm="), (
            response_headers.items()
        )
        assert b'id="root"' not in body, body[:300]  # nothing of Streamlit's page
    status, _, body = http_get(url, {"Authorization": basic("alice", PASSWORD)})
    assert status == 200 and b'id="root"' in body, (status, body[:300])

    for headers in ({}, {"Authorization": basic("alice", WRONG_PASSWORD)}):
        status, head = websocket_upgrade(basic_proxy.port, headers)
        assert status == 401, head
        assert re.search(r"(?im)^www-authenticate: basic realm=", head), head
    status, head = websocket_upgrade(basic_proxy.port, {"Authorization": basic("alice", PASSWORD)})
    assert status == 101, head


# ------------------------------------------------------------------------ forged identity headers


@needs_browser
def test_a_forged_user_header_never_reaches_the_app_with_auth_on(
    page_for, driver: WebDriver, basic_proxy: ProxyProcess, user_streamlit: StreamlitProcess
) -> None:
    """
    A browser signed in as alice that adds ``X-Forwarded-User: mallory`` (and e-mail and groups)
    to every request is still alice to the app, and nothing of mallory shows.
    """
    page = page_for(basic_proxy, user_streamlit)
    forge_headers(driver, FORGED)
    page.open(f"http://alice:{PASSWORD}@{HOST}:{basic_proxy.port}/")
    fields = page.user_fields()
    assert fields["User"] == "alice", (fields, page.diagnostics())
    assert (fields["Email"], fields["Groups"]) == ("(none)", "(none)"), fields
    assert "mallory" not in page.body_text(), page.diagnostics()


@needs_browser
@pytest.mark.parametrize("names", ["default-names", "custom-names"])
def test_a_forged_user_header_never_reaches_the_app_with_auth_off(
    page_for, driver: WebDriver, proxy_factory, request: pytest.FixtureRequest, names: str
) -> None:
    """
    Without any auth configured, the forged identity headers are still removed: the app shows no
    user, both with the default header names and with names chosen by ``--user-header`` and the
    like (Streamlit configured to match). The same browser straight at Streamlit is believed
    (``User: mallory``): the forgery is really sent on the WebSocket handshake, and Streamlit
    itself trusts whoever sends it.
    """
    if names == "default-names":
        streamlit, flags, forged = request.getfixturevalue("user_streamlit"), [], FORGED
    else:
        streamlit = request.getfixturevalue("custom_names_streamlit")
        flags = [item for pair in CUSTOM_NAMES.items() for item in pair]
        forged = {
            CUSTOM_NAMES["--user-header"]: FORGED["X-Forwarded-User"],
            CUSTOM_NAMES["--email-header"]: FORGED["X-Forwarded-Email"],
            CUSTOM_NAMES["--groups-header"]: FORGED["X-Forwarded-Groups"],
        }
    proxy = proxy_factory(
        "--listen", LOOPBACK, "--upstream", f"127.0.0.1:{streamlit.port}", *flags,
        "--access-log", "-", command=PYTHON_M_STPROXY,
    )  # fmt: skip
    page = page_for(proxy, streamlit)
    forge_headers(driver, forged)

    page.open(f"http://{HOST}:{proxy.port}/")
    fields = page.user_fields()
    assert fields == {"User": "(none)", "Email": "(none)", "Groups": "(none)", "Other": "(none)"}, (
        fields,
        page.diagnostics(),
    )
    assert "mallory" not in page.body_text()
    assert access_line(proxy.output(), "-", "GET", "/", "200|304"), proxy.output()[-3000:]

    page.open(f"http://{HOST}:{streamlit.port}/")
    direct = page.user_fields()
    assert (direct["User"], direct["Email"]) == ("mallory", "mallory@evil.test"), (
        direct,
        "the control failed: the forged headers did not reach Streamlit directly",
    )


# ------------------------------------------------------------------------------------ forward auth


@needs_browser
def test_forward_auth_sends_to_sign_in_then_shows_the_services_user(
    page_for,
    driver: WebDriver,
    proxy_factory,
    user_streamlit: StreamlitProcess,
    auth_service: AuthServiceProcess,
) -> None:
    """
    With ``--forward-auth`` at the test auth service, a browser without a session is sent to its
    sign-in page with ``rd=`` the app's URL; signing in there (it sets the session cookie for
    app.test and sends the browser back) shows the user, e-mail and groups the service answered
    with, even though the browser forges its own; a script's request or a WebSocket handshake
    without a cookie gets 401.
    The session cookie never appears in the proxy's output.
    """
    service = f"{HOST}:{auth_service.port}"  # same host as the app: cookies ignore ports
    proxy = proxy_factory(
        "--listen", LOOPBACK, "--upstream", f"127.0.0.1:{user_streamlit.port}",
        "--forward-auth", f"http://127.0.0.1:{auth_service.port}/auth",
        "--forward-auth-signin", f"http://{service}/signin",
        "--access-log", "-", command=PYTHON_M_STPROXY,
    )  # fmt: skip
    app_url = f"http://{HOST}:{proxy.port}/"
    page = page_for(proxy, user_streamlit, auth_service)
    forge_headers(driver, FORGED)

    page.open(app_url)
    page.wait(
        lambda d: d.current_url.startswith(f"http://{service}/signin?"),
        30,
        "the browser to land on the auth service's sign-in page",
    )
    assert parse_qs(urlsplit(driver.current_url).query)["rd"] == [app_url], driver.current_url
    link = page.wait(
        lambda d: d.find_element(By.ID, "login-alice"), 30, "the sign-in link for alice"
    )
    link.click()

    page.wait(lambda d: d.current_url == app_url, 30, "the redirect back to the app")
    fields = page.user_fields()
    assert fields == {
        "User": "alice",
        "Email": "alice@example.com",
        "Groups": "admins,staff",
        "Other": "(none)",
    }, (fields, page.diagnostics())
    assert "mallory" not in page.body_text()

    status, _, _ = http_get(f"http://127.0.0.1:{proxy.port}/_stcore/health")
    assert status == 401, status
    status, head = websocket_upgrade(proxy.port)
    assert status == 401, head
    status, _, body = http_get(
        f"http://127.0.0.1:{proxy.port}/_stcore/health", {"Cookie": f"session={SESSION_COOKIE}"}
    )
    assert (status, body) == (200, b"ok"), (status, body)

    output = proxy.output()
    assert access_line(output, "alice", "GET", "/", "200|304"), output[-3000:]
    assert access_line(output, "-", "GET", "/", "302"), output[-3000:]
    assert_no_secrets(output, SESSION_COOKIE)


# ----------------------------------------------------------------------------- client certificate


@pytest.fixture(scope="module")
def mtls_args(pki: PKI) -> list[str]:
    """An ``ssl:`` listener asking for client certificates of the test root, CN as the user."""
    return [
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--tls-client-ca", pki.ca, "--user-from-cert", "cn",
    ]  # fmt: skip


@needs_browser
@needs_nss_tools
def test_client_certificate_the_page_shows_its_cn(
    page_for, proxy_factory, user_streamlit: StreamlitProcess, mtls_args: list[str]
) -> None:
    """
    Chromium with alice's client certificate (picked automatically) on an ``ssl:`` listener with
    ``--tls-client-ca`` and ``--user-from-cert cn`` sees ``User: alice``, and the access log
    names her.
    """
    proxy = proxy_factory(
        *mtls_args, "--upstream", f"127.0.0.1:{user_streamlit.port}", "--access-log", "-",
        command=PYTHON_M_STPROXY,
    )  # fmt: skip
    page = page_for(proxy, user_streamlit)
    page.open(f"https://{HOST}:{proxy.port}/")
    fields = page.user_fields()
    assert fields["User"] == "alice", (fields, page.diagnostics())
    assert access_line(proxy.output(), "alice", "GET", "/", "200|304"), proxy.output()[-3000:]


def test_client_certificate_subject_and_cn_reach_the_upstream_on_http_and_websocket(
    pki: PKI, proxy_factory, mtls_args: list[str]
) -> None:
    """
    An HTTPS request and a ``wss://`` handshake with alice's certificate reach the upstream with
    ``X-Forwarded-User: alice`` and ``X-Forwarded-Client-Cert`` her subject (RFC 4514), each
    once, whatever the client sent in those headers itself.
    """
    from websockets.sync.client import connect

    upstream = RecordingUpstream()
    try:
        proxy = proxy_factory(
            *mtls_args, "--upstream", f"127.0.0.1:{upstream.port}", command=PYTHON_M_STPROXY
        )
        context = ssl.create_default_context(cafile=pki.ca)
        context.load_cert_chain(pki.client.cert_path, pki.client.key_path)
        forged = {**FORGED, "X-Forwarded-Client-Cert": "CN=mallory"}

        status, _, body = http_get(f"https://127.0.0.1:{proxy.port}/echo", forged, context)
        assert status == 200, (status, body, proxy.output()[-3000:])
        headers = json.loads(body)["headers"]
        assert values(headers, "X-Forwarded-User") == ["alice"], headers
        assert values(headers, "X-Forwarded-Client-Cert") == [pki.client.subject], headers
        assert values(headers, "X-Forwarded-Email") == values(headers, "X-Forwarded-Groups") == []

        with connect(
            f"wss://127.0.0.1:{proxy.port}/_stcore/stream",
            ssl=context,
            subprotocols=["streamlit"],
            additional_headers=forged,
            proxy=None,
            compression=None,
            open_timeout=20,
        ) as ws:
            assert ws.subprotocol == "streamlit"
        [handshake] = upstream.handshakes
        assert values(handshake, "X-Forwarded-User") == ["alice"], handshake
        assert values(handshake, "X-Forwarded-Client-Cert") == [pki.client.subject], handshake
        assert "mallory" not in json.dumps(handshake), handshake
    finally:
        upstream.close()


# ------------------------------------------------------------------------------------------- logs


@needs_browser
def test_the_logs_name_the_user_and_hold_no_password(
    page_for,
    driver: WebDriver,
    basic_proxy: ProxyProcess,
    user_streamlit: StreamlitProcess,
    htpasswd: Path,
) -> None:
    """
    After a signed-in page load, a wrong password and a closed WebSocket session, the access log
    has alice in its user field (``-`` for the refused request), the WebSocket session line names
    her, and neither password, any ``Authorization`` value nor the password hash appears in the
    proxy's output.
    """
    page = page_for(basic_proxy, user_streamlit)
    since = len(basic_proxy.output())
    page.open(f"http://alice:{PASSWORD}@{HOST}:{basic_proxy.port}/")
    assert page.user_fields()["User"] == "alice", page.diagnostics()
    wrong = {"Authorization": basic("alice", WRONG_PASSWORD)}
    status, _, _ = http_get(f"http://127.0.0.1:{basic_proxy.port}/_stcore/health", wrong)
    assert status == 401, status
    page.open("about:blank")  # ends the WebSocket session, which logs its line
    basic_proxy.wait_for_output(
        r"WebSocket session /_stcore/stream from 127\.0\.0\.1 \(alice\) ended", since=since
    )

    output = basic_proxy.output()
    assert access_line(output[since:], "alice", "GET", "/", "200|304"), output[since:][-3000:]
    assert access_line(output[since:], "-", "GET", "/_stcore/health", "401"), output[since:][-3000:]
    assert_no_secrets(
        output,
        htpasswd.read_text().split(":", 1)[1].strip(),  # the bcrypt hash
        PASSWORD,
        WRONG_PASSWORD,
        basic("alice", PASSWORD).split()[1],
        basic("alice", WRONG_PASSWORD).split()[1],
    )
