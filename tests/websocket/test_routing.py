"""
The WebSocket leg's routing (stproxy.websocket.browser with stproxy.routing): in memory, a
browser's handshake goes to one of two fake Streamlit replicas (each a MemoryUpstream); without
a cookie its 101 pins it with Set-Cookie, with a valid one it reaches that replica and nothing is
set; an open session counts on its replica until it closes; a replica going down or draining
past its deadline closes its browsers with 1012; a refused connection marks the replica down
(502); no app at the path is 404, an app without replica 503.
"""

from __future__ import annotations

from typing import Any

from routing_fakes import ADDRESSES, App

from stproxy.config import WebSocketSettings
from stproxy.http.headers import TrustedProxies
from stproxy.routing.replica import DOWN
from stproxy.routing.route import Routes
from stproxy.testing import (
    FakeBrowser,
    FakeBrowserFactory,
    FakeStreamlitFactory,
    MemoryNetwork,
    MemoryUpstream,
    connectBrowser,
    connectThroughSite,
)
from stproxy.upstream.address import UpstreamAddress
from stproxy.websocket.browser import BrowserFactory
from stproxy.websocket.sessions import Sessions

COOKIE = "stproxy_replica"


class Replicas:
    """
    Two replicas of the app at C{prefix}, each a fake Streamlit behind a L{MemoryUpstream}
    (C{refusing}: the numbers of those nothing listens on), and the relay routing over them.
    """

    def __init__(
        self, count: int = 2, prefix: str = "/", refusing: tuple[int, ...] = (), **kwargs: Any
    ):
        self.net = MemoryNetwork()
        self.streamlits: dict[UpstreamAddress, FakeStreamlitFactory | None] = {}

        def upstream(clock: Any, address: UpstreamAddress) -> MemoryUpstream:
            number = ADDRESSES.index(address)
            server = None if number in refusing else FakeStreamlitFactory(clock)
            self.streamlits[address] = server
            return MemoryUpstream(self.net, server, address)

        self.app = App(
            count=count, prefix=prefix, clock=self.net.reactor, upstream=upstream, **kwargs
        )
        self.events: list[dict[str, Any]] = []
        self.relay = self.relayFor(self.app.routes)

    def relayFor(self, routes: Routes) -> BrowserFactory:
        metrics = self.app.metrics
        sessions = Sessions(self.net.reactor, metrics, self.events.append)
        settings = WebSocketSettings(pingInterval=0)
        return BrowserFactory(
            routes, settings, TrustedProxies(), sessions, self.events.append, metrics
        )

    def browser(
        self,
        cookie: bytes | None = None,
        path: str = "/_stcore/stream",
        protocols: tuple[str, ...] = ("streamlit", "PLACEHOLDER_AUTH_TOKEN"),
    ) -> FakeBrowser:
        """A fake browser that will ask for C{path} with C{cookie}."""
        factory = FakeBrowserFactory(
            self.net.reactor, url=f"ws://app.example{path}", protocols=protocols
        )
        if cookie is not None:
            factory.headers = {"Cookie": cookie.decode("ascii")}
        browser: FakeBrowser = factory.buildProtocol(None)
        return browser

    def open(
        self,
        cookie: bytes | None = None,
        path: str = "/_stcore/stream",
        protocols: tuple[str, ...] = ("streamlit", "PLACEHOLDER_AUTH_TOKEN"),
        relay: BrowserFactory | None = None,
        site: bool = False,
    ) -> FakeBrowser:
        """
        A browser's handshake through the relay (straight to the browser leg, or through
        twisted.web as the proxy serves it), moved along until nothing moves.
        """
        browser = self.browser(cookie, path, protocols)
        connect = connectThroughSite if site else connectBrowser
        connect(self.net, relay or self.relay, browser)
        self.net.flush()
        return browser

    def reached(self, number: int) -> int:
        """How many WebSocket connections replica C{number}'s Streamlit got."""
        server = self.streamlits[ADDRESSES[number]]
        return 0 if server is None else len(server.connections)

    def replica(self, number: int):
        return self.app.replica(number)


def setCookie(browser: FakeBrowser) -> str | None:
    """The Set-Cookie of the browser's 101, if any."""
    assert browser.response is not None
    headers = {name.lower(): value for name, value in browser.response.headers.items()}
    return headers.get("set-cookie")


def test_a_browser_without_cookie_is_pinned_by_the_101() -> None:
    """The handshake answer carries Set-Cookie naming the replica the session went to."""
    r = Replicas()
    browser = r.open()
    assert browser.opened and browser.http_status_line == "HTTP/1.1 101 Switching Protocols"
    cookie = setCookie(browser)
    assert cookie is not None and cookie.startswith(f"{COOKIE}=")
    assert "Path=/" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    named = r.app.affinity.replicaIn([cookie.split(";")[0].encode()])
    [number] = [n for n in (0, 1) if r.reached(n)]
    assert named == r.replica(number).id


def test_a_browser_with_a_valid_cookie_reaches_its_replica_and_gets_no_cookie() -> None:
    """Each browser's session goes to the replica its cookie names, whichever; nothing is set."""
    r = Replicas()
    for number in (1, 1, 0):
        before = r.reached(number)
        browser = r.open(cookie=r.app.cookie(r.replica(number)))
        assert browser.opened
        assert setCookie(browser) is None
        assert r.reached(number) == before + 1
    assert (r.reached(0), r.reached(1)) == (1, 2)


def test_a_forged_cookie_is_pinned_afresh() -> None:
    """A cookie that does not verify names nothing: the 101 sets a valid one, and the re-pin is logged."""
    r = Replicas()
    browser = r.open(cookie=f"{COOKIE}={r.replica(0).id}.AAAAAAAAAAAAAAAAAAAAAA".encode())
    assert browser.opened and setCookie(browser) is not None
    assert len(r.app.logged("Re-pinned")) == 1


def test_new_browsers_spread_over_the_replicas() -> None:
    """Cookieless browsers arriving one after another land on both replicas."""
    r = Replicas()
    for _ in range(4):
        assert r.open().opened
    assert (r.reached(0), r.reached(1)) == (2, 2)


def test_an_open_session_counts_on_its_replica_until_it_closes() -> None:
    """The replica holds the browser leg while the session is open, and its metric says so."""
    r = Replicas()
    browser = r.open(cookie=r.app.cookie(r.replica(0)))
    replica = r.replica(0)
    assert len(replica.sessions) == 1
    assert r.app.replicaSample("stproxy_replica_sessions", replica) == 1
    browser.sendClose(1000)
    r.net.flush()
    assert replica.sessions == set()
    assert r.app.replicaSample("stproxy_replica_sessions", replica) == 0


def test_open_sessions_steer_new_browsers_to_the_emptier_replica() -> None:
    """With a session open on one replica, the next new browser goes to the other."""
    r = Replicas()
    r.open(cookie=r.app.cookie(r.replica(0)))
    r.open(cookie=r.app.cookie(r.replica(0)))
    for _ in range(2):
        r.open()
    assert (r.reached(0), r.reached(1)) == (2, 2)


def test_a_replica_going_down_closes_its_browsers_with_1012() -> None:
    """failed() on a replica: each of its browsers gets 1012 (service restart); others keep theirs."""
    r = Replicas()
    gone = [r.open(cookie=r.app.cookie(r.replica(0))) for _ in range(2)]
    kept = r.open(cookie=r.app.cookie(r.replica(1)))
    r.replica(0).failed("health check: refused")
    r.net.flush()
    for browser in gone:
        assert browser.closed is not None and browser.closed[1] == 1012
    assert kept.closed is None
    assert r.replica(0).sessions == set() and len(r.replica(1).sessions) == 1


def test_a_browser_restarted_off_a_down_replica_reconnects_to_another_with_a_new_cookie() -> None:
    """The frontend's reconnect, with its old cookie, lands on an up replica and is re-pinned."""
    r = Replicas()
    old = r.app.cookie(r.replica(0))
    r.open(cookie=old)
    r.replica(0).failed("refused")
    r.net.flush()
    again = r.open(cookie=old)
    assert again.opened and r.reached(1) == 1
    assert r.app.affinity.replicaIn([setCookie(again).split(";")[0].encode()]) == r.replica(1).id
    [line] = r.app.logged("Re-pinned")
    assert line["why"] == DOWN


def test_a_refused_connection_marks_the_replica_down_and_gives_502() -> None:
    """Nothing listening on the browser's replica: 502 to the browser, and the replica is down at once."""
    r = Replicas(refusing=(0,))
    browser = r.open(cookie=r.app.cookie(r.replica(0)))
    assert browser.http_status_line == "HTTP/1.1 502 Bad Gateway"
    assert not browser.opened
    assert r.replica(0).state == DOWN
    [warning] = [e for e in r.events if "unreachable" in (e.get("log_format") or "")]
    assert warning["upstream"] == str(ADDRESSES[0])
    after = r.open(cookie=r.app.cookie(r.replica(0)))
    assert after.opened and r.reached(1) == 1


def test_a_draining_replicas_sessions_get_1012_at_the_drain_deadline() -> None:
    """A replica no longer listed keeps its sessions until the deadline, then closes them with 1012."""
    r = Replicas(drainTimeout=10)
    browser = r.open(cookie=r.app.cookie(r.replica(0)))
    r.app.replicas.update([ADDRESSES[1]])
    r.net.advance(9)
    assert browser.closed is None
    moved = r.open(cookie=r.app.cookie(r.replica(0)))
    assert moved.opened and r.reached(1) == 1 and setCookie(moved) is not None
    r.net.advance(1)
    assert browser.closed is not None and browser.closed[1] == 1012
    assert ADDRESSES[0] not in {rep.address for rep in r.app.replicas.replicas.values()}


def test_a_draining_replica_goes_when_its_last_session_closes() -> None:
    """Its last browser leaving removes the draining replica at once."""
    r = Replicas(drainTimeout=30)
    browser = r.open(cookie=r.app.cookie(r.replica(0)))
    gone = r.replica(0)
    r.app.replicas.update([ADDRESSES[1]])
    browser.sendClose(1000)
    r.net.flush()
    assert gone.id not in r.app.replicas.replicas
    [removed] = r.app.logged("removed")
    assert removed["replica"] == str(ADDRESSES[0])


def test_a_session_resumed_by_its_third_subprotocol_goes_where_it_was_learned() -> None:
    """A cookieless reconnect naming a learned session id goes back to that replica."""
    r = Replicas()
    r.app.replicas.learn("sess-9", r.replica(1))
    for _ in range(2):
        browser = r.open(protocols=("streamlit", "xsrf", "sess-9"))
        assert browser.opened
    assert (r.reached(0), r.reached(1)) == (0, 2)


def test_a_websocket_outside_every_app_is_404_and_one_to_an_app_without_replica_503() -> None:
    """The path decides the app: none there is 404; an app with no replica is 503; nothing connects."""
    r = Replicas(prefix="/app")
    empty = App(count=0, prefix="/empty", clock=r.net.reactor)
    relay = r.relayFor(Routes([r.app.route, empty.route], r.net.reactor))
    nowhere = r.open(path="/nowhere/_stcore/stream", relay=relay)
    assert nowhere.http_status_line.startswith("HTTP/1.1 404")
    none = r.open(path="/empty/_stcore/stream", relay=relay)
    assert none.http_status_line.startswith("HTTP/1.1 503")
    assert (r.reached(0), r.reached(1)) == (0, 0)
    app = r.open(path="/app/_stcore/stream", relay=relay)
    assert app.opened and "Path=/app" in setCookie(app)


def test_through_twisted_web_the_101_carries_the_cookie_and_the_cookie_is_read() -> None:
    """As the proxy serves it (RelayResource in a Site), the Set-Cookie reaches the browser and is followed."""
    r = Replicas(prefix="/app")
    first = r.open(path="/app/_stcore/stream", site=True)
    assert first.opened
    cookie = setCookie(first)
    assert cookie is not None and "Path=/app" in cookie
    [number] = [n for n in (0, 1) if r.reached(n)]
    for _ in range(2):
        again = r.open(cookie=cookie.split(";")[0].encode(), path="/app/_stcore/stream", site=True)
        assert again.opened and setCookie(again) is None
    assert r.reached(number) == 3


def test_a_session_opening_on_a_replica_gone_meanwhile_is_restarted_and_forgotten() -> None:
    """
    A replica that left the set during a browser's handshake: the session is sent elsewhere at
    once (1012), and nothing of the replica remains in the metrics (a rolling Deployment must
    not grow them).
    """
    r = Replicas()
    browser = r.browser(cookie=r.app.cookie(r.replica(0)))
    pump = connectBrowser(r.net, r.relay, browser)
    pump.pump(advanceClock=False)  # the handshake is in; the upstream connect waits for the clock
    gone = r.replica(0)
    assert pump.server.pin.replica is gone
    r.app.replicas.update([ADDRESSES[1]])
    assert gone.id not in r.app.replicas.replicas
    r.net.flush()
    assert browser.closed is not None and browser.closed[1] == 1012
    assert gone.sessions == set()
    for name in ("stproxy_replica_sessions", "stproxy_replica_up"):
        assert r.app.replicaSample(name, gone) is None, name
    again = r.open(cookie=r.app.cookie(gone))
    assert again.opened and r.reached(1) == 1
