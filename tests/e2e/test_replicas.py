"""
Several real Streamlit replicas behind stproxy, driven by real headless Chromium (issue #10).

Three replicas of ``tests/apps/replica_app.py`` run on 127.0.0.1, 127.0.0.2 and 127.0.0.3, all on
the same port (Linux loopback answers all of 127/8) and with the same ``server.cookieSecret``; the
page says which one rendered it ("Replica: <address>:<port>"). Each "browser" is its own Chromium
with its own profile, so its own cookie jar; every page is loaded from ``http://app.test:<port>/``
(Chromium maps ``app.test`` to 127.0.0.1, as in ``test_browser.py``).

What is checked, against the behaviour issue #10 promises:

- browsers spread over the replicas, and uploads, ``/media/`` images and downloads work on each,
  with no 4xx/5xx anywhere (the Chromium network log is read);
- a WebSocket reconnect (here: stproxy restarted on its port, same affinity secret) keeps the
  session: the count goes on from where it was;
- SIGKILL of a replica: its browser gets a working page on another replica within 30 s, a browser on
  another replica keeps its count;
- a replica that appears in DNS (a test resolver on loopback) receives new sessions;
- two stproxy processes with one secret behind a round-robin TCP balancer serve one browser, its
  WebSocket alternating between them, without losing its session.

The replicas, the main proxy and the Chromiums are started once for the module; each test forgets
the browsers' cookies first, and starts again any replica a previous test killed. Every wait is for a
condition (the app's own text, a log line, a metric); a failed wait reports the browser console, the
failed requests, the page text, a screenshot and the output of stproxy and the replicas.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest
from harness import APPS, ProxyProcess, start_proxy, wait_until
from replicas_harness import (
    CHROMEDRIVER,
    CHROMIUM,
    HOST,
    Browser,
    ReplicaSet,
    RestartableProxy,
    TCPBalancer,
    expected_download,
    new_driver,
    port_free_on,
    quiet,
    start_replicas,
)

pytest.importorskip("selenium.webdriver")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian chromium and chromium-driver",
)

APP = APPS / "replica_app.py"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
#: Streamlit signs its XSRF tokens with ``server.cookieSecret``: every replica needs the same one.
COOKIE_SECRET = "stproxy-replica-tests-" + "c0ffee" * 6
ADMIN_RE = r"stproxy admin endpoint on ([0-9.]+):(\d+)"
AFFINITY_COOKIE = "stproxy_replica"
#: How long a browser on a killed replica may take to get a working page elsewhere.
FAILOVER_SECONDS = 30


# ------------------------------------------------------------------------------------ helpers


def admin_url(proxy: ProxyProcess) -> str:
    match = proxy.wait_for_output(ADMIN_RE)
    return f"http://127.0.0.1:{match.group(2)}"


def replicas_up(admin: str) -> dict[str, float]:
    """``stproxy_replica_up`` per ``replica`` label (``scheme://host:port``), from the admin /metrics."""
    try:
        with urllib.request.urlopen(admin + "/metrics", timeout=5) as response:
            text = response.read().decode("utf-8")
    except (OSError, urllib.error.URLError):
        return {}
    return {
        sample.labels.get("replica", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "stproxy_replica_up"
    }


def wait_all_up(proxy: ProxyProcess, urls: list[str], timeout: float = 20) -> None:
    """Wait until the proxy's metrics say every replica in ``urls`` is up."""
    admin = admin_url(proxy)
    wait_until(
        lambda: all(replicas_up(admin).get(url) == 1 for url in urls),
        timeout,
        interval=0.2,
        message=lambda: (
            f"replicas not all up: {replicas_up(admin)} (wanted {urls})\n{quiet(proxy.output())[-6000:]}"
        ),
    )


def click_until(browser: Browser, changed: Callable[[], bool], timeout: float, what: str) -> None:
    """
    Click Increment until ``changed()`` is true: clicks made while the page is disconnected are lost
    (the widgets are disabled), and after a reconnect the page shows its old render until the next
    rerun, so one click is not enough. Each click gets 3 s to take effect before the next one.
    """

    def clicked(d) -> bool:
        try:
            d.find_element(By.XPATH, "//button[normalize-space()='Increment']").click()
        except WebDriverException:
            return False
        end = time.monotonic() + 3
        while time.monotonic() < end:
            if changed():
                return True
            time.sleep(0.1)
        return False

    browser.wait(clicked, max(1.0, timeout), what)


def click_until_count_moves(browser: Browser, stuck: int, timeout: float, what: str) -> int:
    """Click Increment until the count shown is no longer ``stuck``; returns the new count."""
    click_until(browser, lambda: browser.count() not in (None, stuck), timeout, what)
    count = browser.count()
    assert count is not None
    return count


def affinity_set_cookies(port: int, value: str) -> list[str]:
    """The ``Set-Cookie: stproxy_replica=...`` lines a proxy answers a health check carrying ``value`` with."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/_stcore/health",
        headers={"Host": f"{HOST}:{port}", "Cookie": f"{AFFINITY_COOKIE}={value}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        lines = response.headers.get_all("Set-Cookie") or []
    return [line for line in lines if line.startswith(f"{AFFINITY_COOKIE}=")]


def affinity_cookie(browser: Browser) -> dict | None:
    for cookie in browser.driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]:
        if cookie["name"] == AFFINITY_COOKIE:
            return cookie
    return None


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def replicas() -> Iterator[ReplicaSet]:
    """Three replicas of the app on 127.0.0.1/.2/.3, one shared port and cookie secret, for the module."""
    port = port_free_on(ADDRESSES)
    started = start_replicas(APP, ADDRESSES, port, COOKIE_SECRET)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``--affinity-secret-file`` (32 random bytes as hex), shared by every proxy of the module."""
    path = tmp_path_factory.mktemp("affinity") / "secret"
    path.write_text(secrets.token_hex(32) + "\n")
    return path


def replica_flags(replicas: ReplicaSet) -> list[str]:
    return [arg for r in replicas for arg in ("--upstream", r.url)]


@pytest.fixture(scope="module")
def proxy(replicas: ReplicaSet, secret_file: Path) -> Iterator[RestartableProxy]:
    """``twistd -n stproxy`` with the three replicas as ``--upstream``, on a fixed port (it is restarted)."""
    started = RestartableProxy(
        *replica_flags(replicas),
        "--health-interval", "1",
        "--affinity-secret-file", str(secret_file),
        "--shutdown-timeout", "2",
        "--admin", "tcp:0:interface=127.0.0.1",
        name="stproxy",
    )  # fmt: skip
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browsers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Browser]]:
    """Three Chromiums (three cookie jars), started in parallel once for the module."""
    root = tmp_path_factory.mktemp("browsers")

    def launch(index: int) -> Browser:
        downloads = root / f"downloads-{index}"
        downloads.mkdir()
        driver = new_driver(root / f"profile-{index}", downloads)
        return Browser(f"browser-{index}", driver, downloads, root)

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(launch, i) for i in range(3)]
    launched = [f.result() for f in futures if f.exception() is None]
    try:
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        yield launched
    finally:
        for browser in launched:
            try:
                browser.driver.quit()
            except WebDriverException:
                pass


@pytest.fixture
def up(replicas: ReplicaSet, proxy: RestartableProxy) -> RestartableProxy:
    """Every replica running (a previous test may have killed one) and seen up by the main proxy."""
    replicas.ensure_running()
    wait_all_up(proxy.proxy, [r.url for r in replicas])
    return proxy


def fresh(
    browsers: list[Browser], outputs: Callable[[], str], artifacts: Path, count: int | None = None
) -> list[Browser]:
    """The first ``count`` browsers, on no page and with no cookies: browsers the proxy never saw."""
    chosen = browsers[: count or len(browsers)]
    # The others leave their pages too: no session of an earlier test stays open.
    for browser in browsers:
        browser.reset(outputs, artifacts)
    return chosen


def outputs_of(
    replicas: ReplicaSet, *proxies: RestartableProxy | ProxyProcess
) -> Callable[[], str]:
    def outputs() -> str:
        parts = [
            f"--- {getattr(p, 'name', 'stproxy')} output (tail):\n{quiet(p.output())[-8000:]}"
            for p in proxies
        ]
        return "\n".join(parts) + "\n" + replicas.output()

    return outputs


# -------------------------------------------------------------------------------------- tests


def test_browsers_spread_over_replicas_and_uploads_images_and_downloads_work(
    up: RestartableProxy, replicas: ReplicaSet, browsers: list[Browser], tmp_path: Path
) -> None:
    """
    Three new browsers, opened one after the other with their pages kept open, each land on a
    different replica (new browsers go to the replica with the fewest open sessions) and are pinned
    by a signed, HttpOnly ``stproxy_replica`` cookie with ``Path=/``. On each, a 300 kB upload is
    hashed by the app, the ``/media/`` image decodes, and the downloaded file is the one the
    browser's own replica serves (its content names that replica), with no response >= 400.
    """
    outputs = outputs_of(replicas, up)
    group = fresh(browsers, outputs, tmp_path)
    names = {r.name for r in replicas}
    landed = []
    for browser in group:
        browser.open(up.url)
        landed.append(browser.replica())
    assert set(landed) <= names, (landed, names)
    if len(set(landed)) != len(group):
        group[0].fail(
            f"three new browsers, one after the other, should use three replicas; got {landed}"
        )

    for index, browser in enumerate(group):
        cookie = affinity_cookie(browser)
        if cookie is None:
            browser.fail(f"{browser.name} has no {AFFINITY_COOKIE} cookie")
        assert re.fullmatch(r"[0-9a-f]{12}\.[^.]+", cookie["value"]), cookie
        assert cookie["httpOnly"] and cookie["path"] == "/", cookie
        assert cookie.get("sameSite") == "Lax", cookie

        data = os.urandom(300 * 1024)
        browser.upload(data, tmp_path / f"upload-{index}.bin")
        src = browser.wait_for_image()
        assert src.startswith(up.url + "media/"), (src, up.url)
        downloaded = browser.download()
        assert downloaded == expected_download(browser.replica()), (
            f"{browser.name} on {browser.replica()} downloaded {downloaded[:60]!r}..."
        )
        # Nothing moved meanwhile: the page is still the one rendered by the same replica.
        assert browser.replica() == landed[index]
        browser.assert_no_connection_error()

    cookies = {affinity_cookie(b)["value"].split(".")[0] for b in group}
    assert len(cookies) == len(group), cookies  # one replica id per replica
    for browser in group:
        browser.assert_no_failed_responses()
        assert any(status == 200 and "/media/" in url for status, url in browser.responses), (
            browser.responses
        )


def test_a_websocket_reconnect_keeps_the_session(
    up: RestartableProxy, replicas: ReplicaSet, browsers: list[Browser], tmp_path: Path
) -> None:
    """
    With a count of 2 and an upload shown, stproxy is restarted on the same port with the same
    ``--affinity-secret-file``: the frontend's WebSocket drops and reconnects through the new
    process, which routes it (by the cookie) to the same replica, so Streamlit resumes the session:
    the next click makes the count 3 (a new session would show 1), and the upload's hash is still there.
    """
    (browser,) = fresh(browsers, outputs_of(replicas, up), tmp_path, count=1)
    browser.open(up.url)
    replica = browser.replica()
    browser.increment_to(2)
    digest = browser.upload(os.urandom(64 * 1024), tmp_path / "upload.bin")
    browser.failed_responses()  # collect the handshakes so far
    handshakes_before = len([h for h in browser.websocket_handshakes if h[0] == 101])
    if handshakes_before < 1:
        browser.fail("no WebSocket handshake seen")

    up.restart()

    count = click_until_count_moves(
        browser, 2, 30, "a click to take effect after the proxy restarted"
    )
    if count != 3:
        browser.fail(f"after the reconnect the count is {count}, not 3: the session was lost")
    browser.failed_responses()
    handshakes_after = len([h for h in browser.websocket_handshakes if h[0] == 101])
    if handshakes_after <= handshakes_before:
        browser.fail("the WebSocket never reconnected")
    assert browser.replica() == replica
    browser.wait_for_text(f"sha256: {digest}", 5)
    browser.assert_no_connection_error()
    browser.assert_no_failed_responses(statuses=(400, 404))


def test_sigkill_of_a_replica_moves_its_browser_and_spares_the_others(
    up: RestartableProxy, replicas: ReplicaSet, browsers: list[Browser], tmp_path: Path
) -> None:
    """
    Two browsers on two replicas, counts 2 and 3. The first one's replica gets SIGKILL: within 30 s
    a click in that browser is answered by another replica (the page says so, and the count starts
    again from 0: a new session there), it is re-pinned by a new cookie, and Increment goes on
    working; the second browser never moves, still shows 3 and increments on.
    """
    victim, bystander = fresh(browsers, outputs_of(replicas, up), tmp_path, count=2)
    victim.open(up.url)
    bystander.open(up.url)
    doomed, kept = victim.replica(), bystander.replica()
    if doomed == kept:
        victim.fail(f"both new browsers landed on {doomed}")
    victim.increment_to(2)
    bystander.increment_to(3)
    cookie_before = affinity_cookie(victim)["value"]

    replica = replicas.by_name(doomed)
    killed_at = time.monotonic()
    replica.process.send_signal(signal.SIGKILL)
    replica.process.wait(10)

    # The frontend reconnects by itself; the next rerun (a click) is rendered by the new replica.
    click_until(
        victim,
        lambda: victim.replica() not in (None, doomed),
        FAILOVER_SECONDS,
        f"a click to be answered by a replica other than the killed {doomed}",
    )
    elapsed = time.monotonic() - killed_at
    moved_to = victim.replica()
    assert moved_to in {r.name for r in replicas} - {doomed}, moved_to
    if victim.count() != 1:
        victim.fail(f"count {victim.count()} after one click on {moved_to}: not a new session")
    victim.increment_to(2)
    assert elapsed < FAILOVER_SECONDS, elapsed
    assert victim.replica() == moved_to
    victim.assert_no_connection_error()
    cookie_after = affinity_cookie(victim)
    assert cookie_after is not None and cookie_after["value"] != cookie_before, (
        cookie_before,
        cookie_after,
    )
    assert cookie_after["value"].split(".")[0] != cookie_before.split(".")[0]

    assert bystander.replica() == kept
    if bystander.count() != 3:
        bystander.fail("the bystander lost its count")
    bystander.increment_to(4)
    bystander.assert_no_connection_error()
    bystander.assert_no_failed_responses()
    up.wait_for_output(rf"Replica http://{re.escape(doomed)} of / is down")


def test_a_replica_added_through_dns_receives_new_sessions(
    replicas: ReplicaSet, secret_file: Path, browsers: list[Browser], tmp_path: Path
) -> None:
    """
    stproxy discovers the app's replicas by resolving ``replicas.test`` at a loopback DNS server.
    It lists 127.0.0.1 only, and the first browser lands there; then the record gains 127.0.0.2,
    stproxy sees that replica up within seconds (metrics, and a log line naming it), and of the
    next two new browsers at least one lands on it (it has the fewest sessions) and works there:
    Increment and an upload. 127.0.0.3, which runs the app too but is never in DNS, gets nobody.
    """
    from dns_server import start_dns_server

    replicas.ensure_running()
    port = replicas[0].port
    first, added, unused = (f"{a}:{port}" for a in ADDRESSES)
    with start_dns_server({"replicas.test": ["127.0.0.1"]}) as dns:
        discovering = RestartableProxy(
            "--upstream-dns", f"replicas.test:{port}",
            "--resolver", dns.address,
            "--discovery-interval", "1",
            "--health-interval", "1",
            "--affinity-secret-file", str(secret_file),
            "--shutdown-timeout", "2",
            "--admin", "tcp:0:interface=127.0.0.1",
            name="stproxy (dns)",
        )  # fmt: skip
        try:
            outputs = outputs_of(replicas, discovering)
            one, *later = fresh(browsers, outputs, tmp_path)
            wait_all_up(discovering.proxy, [f"http://{first}"])
            one.open(discovering.url)
            if one.replica() != first:
                one.fail(f"DNS lists only {first}")

            mark = discovering.mark()
            dns.set("replicas.test", ["127.0.0.1", "127.0.0.2"])
            wait_all_up(discovering.proxy, [f"http://{first}", f"http://{added}"])

            landed = []
            for browser in later:
                browser.open(discovering.url)
                landed.append(browser.replica())
            assert unused not in landed, landed  # never in DNS
            if added not in landed:
                one.fail(f"no new browser landed on the added replica {added}: {landed}")
            on_added = later[landed.index(added)]
            on_added.increment_to(1)
            on_added.upload(os.urandom(32 * 1024), tmp_path / "upload.bin")
            on_added.assert_no_connection_error()
            on_added.assert_no_failed_responses()
            assert set(replicas_up(admin_url(discovering.proxy))) == {
                f"http://{first}",
                f"http://{added}",
            }
            # One log line says the replica joined (discovery's, or a "Replica ... is up").
            discovering.wait_for_output(rf"(?m)^.*\b{re.escape(ADDRESSES[1])}\b", 5, since=mark)
        finally:
            discovering.stop()


def test_two_proxies_sharing_a_secret_serve_one_browser_alternately(
    up: RestartableProxy,
    replicas: ReplicaSet,
    secret_file: Path,
    browsers: list[Browser],
    tmp_path: Path,
) -> None:
    """
    Two stproxy processes with the same ``--affinity-secret-file`` behind a TCP balancer that sends
    each connection to the next proxy (WebSocket upgrades alternate among themselves). One browser
    loads the page, increments and uploads; then every connection is cut, and the frontend's
    WebSocket reconnects through the other proxy, which routes it to the same replica: the session
    survives (the next click makes 3, the hash is still shown), the cookie is the one the first
    proxy set (the second never re-pinned), the image and download work, both proxies served HTTP
    requests, and nothing got a 400 or 404.
    """
    flags = [
        *replica_flags(replicas),
        "--health-interval", "1",
        "--affinity-secret-file", str(secret_file),
        "--shutdown-timeout", "2",
        "--admin", "tcp:0:interface=127.0.0.1",
    ]  # fmt: skip
    logs = [tmp_path / "access-a.log", tmp_path / "access-b.log"]
    pair: list[ProxyProcess] = []
    try:
        for log in logs:
            pair.append(start_proxy(*flags, "--access-log", str(log)))
        for one in pair:
            wait_all_up(one, [r.url for r in replicas])
        with TCPBalancer([("127.0.0.1", p.port) for p in pair]) as balancer:

            def outputs() -> str:
                named = "\n".join(
                    f"--- stproxy {'AB'[i]} output (tail):\n{quiet(p.output())[-6000:]}"
                    for i, p in enumerate(pair)
                )
                return f"--- balancer connections: {balancer.connections}\n{named}\n{replicas.output()}"

            (browser,) = fresh(browsers, outputs, tmp_path, count=1)
            browser.open(balancer.url)
            replica = browser.replica()
            browser.increment_to(2)
            digest = browser.upload(os.urandom(128 * 1024), tmp_path / "upload.bin")
            assert balancer.used("websocket") == {0}, balancer.connections
            cookie = affinity_cookie(browser)
            if cookie is None:
                browser.fail(f"no {AFFINITY_COOKIE} cookie")

            balancer.reset()
            count = click_until_count_moves(
                browser, 2, 30, "a click to take effect after the reconnect"
            )
            if count != 3:
                browser.fail(
                    f"after reconnecting through the other proxy the count is {count}, not 3"
                )
            if balancer.used("websocket") != {0, 1}:
                browser.fail(
                    f"the WebSocket did not go through both proxies: {balancer.connections}"
                )
            assert browser.replica() == replica
            browser.wait_for_text(f"sha256: {digest}", 5)
            browser.wait_for_image()
            assert browser.download() == expected_download(replica)
            # The other proxy took the first one's cookie as it was: no re-pin, no new cookie.
            after = affinity_cookie(browser)
            if after is None or after["value"] != cookie["value"]:
                browser.fail(f"the cookie changed from {cookie['value']} to {after}: a re-pin")
            for one in pair:
                assert "Re-pinned" not in one.output(), outputs()
                # Asked directly, each proxy takes the cookie as it is: it sets no new one.
                renewed = affinity_set_cookies(one.port, cookie["value"])
                assert renewed == [], f"stproxy on {one.port} re-pinned: {renewed}\n{outputs()}"
            browser.assert_no_connection_error()
            browser.assert_no_failed_responses(statuses=(400, 404))

        for one in pair:
            one.stop()
        served = [len(log.read_text().splitlines()) if log.exists() else 0 for log in logs]
        assert all(served), f"requests in each proxy's access log: {served}\n{outputs()}"
    finally:
        for one in pair:
            one.stop()
