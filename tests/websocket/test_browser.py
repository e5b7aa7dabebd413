"""
Tests for L{stproxy.websocket.browser}: the browser's handshake waits for
the upstream's and takes its answer (the subprotocol chosen, or the refusal),
or gets 502, 503 or 504 from the proxy; in memory, with the clock advanced
by hand.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel

from option_parsing import parse
from stproxy.config import WebSocketSettings
from stproxy.tap import makeService
from stproxy.testing import (
    FakeBrowser,
    FakeBrowserFactory,
    FakeStreamlit,
    FakeStreamlitFactory,
    MemoryNetwork,
    connectBrowser,
    memoryRelay,
)


class Handshake:
    """
    A fake browser's handshake through the relay to the upstream
    C{server(reactor)} builds (None: nothing listens).
    """

    def __init__(self, server: Callable[[Any], IProtocolFactory] | None, **settings: Any) -> None:
        self.net = MemoryNetwork()
        self.events: list[dict[str, Any]] = []
        settings.setdefault("pingInterval", 0)
        upstream = None if server is None else server(self.net.reactor)
        self.relay = memoryRelay(self.net, upstream, WebSocketSettings(**settings), self.events.append)
        self.browser: FakeBrowser = FakeBrowserFactory(self.net.reactor).buildProtocol(None)
        self.pump = connectBrowser(self.net, self.relay, self.browser)
        self.net.flush()

    @property
    def status(self) -> str | None:
        """The status line the browser got, once it got one."""
        return getattr(self.browser, "http_status_line", None)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.relay.metrics.registry.get_sample_value(name, labels)


class Silent(Protocol):
    """An upstream that accepts the connection and never answers."""


class HangsUp(Protocol):
    """An upstream that closes the connection on the first bytes, without a status line."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()


class ChoosesTheLast(FakeStreamlit):
    def onConnect(self, request: ConnectionRequest) -> str:
        super().onConnect(request)
        return request.protocols[-1]


def test_the_browser_is_accepted_with_the_subprotocol_the_upstream_chose() -> None:
    """The 101 carries Streamlit's choice, not just the browser's first offer."""

    def streamlit(reactor: Any) -> FakeStreamlitFactory:
        factory = FakeStreamlitFactory(reactor)
        factory.protocol = ChoosesTheLast
        return factory

    h = Handshake(streamlit)
    assert h.browser.opened
    assert h.status == "HTTP/1.1 101 Switching Protocols"
    assert h.browser.response is not None and h.browser.response.protocol == "PLACEHOLDER_AUTH_TOKEN"
    assert h.sample("stproxy_open_websockets") == 1


def test_the_upstreams_refusal_status_is_passed_on_to_the_browser() -> None:
    """Streamlit's 403 (a foreign Origin) reaches the browser as 403, counted and logged."""
    h = Handshake(lambda reactor: FakeStreamlitFactory(reactor, refuse=403))
    assert h.status == "HTTP/1.1 403 Forbidden"
    assert not h.browser.opened
    assert h.sample("stproxy_websocket_handshakes_refused_total", status="403") == 1
    [event] = [e for e in h.events if "status" in e]
    assert (event["status"], event["peer"]) == (403, "192.0.2.7")
    assert h.relay.sessions.legs == set()


def test_an_upstream_answer_that_is_no_error_status_gives_502() -> None:
    """A redirect (or anything but 4xx/5xx) instead of 101 is a bad gateway, not passed on."""
    h = Handshake(lambda reactor: FakeStreamlitFactory(reactor, refuse=302))
    assert h.status == "HTTP/1.1 502 Bad Gateway"


def test_an_upstream_hanging_up_without_a_status_gives_503() -> None:
    """A connection closed before any answer means the upstream is unavailable."""
    h = Handshake(lambda _: Factory.forProtocol(HangsUp))
    assert h.status == "HTTP/1.1 503 Service Unavailable"


def test_an_unreachable_upstream_gives_502_counted_and_logged() -> None:
    """When the upstream connection fails, the browser gets 502 and one warning names the upstream."""
    h = Handshake(None)
    assert h.status == "HTTP/1.1 502 Bad Gateway"
    assert h.sample("stproxy_upstream_connect_errors_total") == 1
    assert h.sample("stproxy_websocket_handshakes_refused_total", status="502") == 1
    [warning] = [e for e in h.events if e["log_level"] == LogLevel.warn]
    assert warning["upstream"] == "http://127.0.0.1:8501"
    assert warning["peer"] == "192.0.2.7"
    assert "refused" in warning["reason"]


def test_an_upstream_silent_past_the_handshake_timeout_gives_504_and_is_dropped() -> None:
    """The browser waits exactly handshakeTimeout seconds, then gets 504; the upstream connection is aborted."""
    h = Handshake(lambda _: Factory.forProtocol(Silent), handshakeTimeout=3)
    [upstream] = h.relay.upstream.connections
    h.net.advance(2.9)
    assert h.status is None and not upstream.clientIO.disconnecting
    h.net.advance(0.2)
    assert h.status is not None and h.status.startswith("HTTP/1.1 504 ")
    assert upstream.clientIO.aborted
    assert h.sample("stproxy_upstream_timeouts_total") == 1
    assert h.relay.sessions.legs == set()


def test_shutdown_while_waiting_for_the_upstream_gives_503() -> None:
    """A handshake still pending when the proxy stops is refused with 503, and its upstream dropped."""
    h = Handshake(lambda _: Factory.forProtocol(Silent))
    [upstream] = h.relay.upstream.connections
    done = h.relay.sessions.closeAll()
    h.net.flush()
    assert h.status == "HTTP/1.1 503 Service Unavailable"
    assert upstream.clientIO.aborted
    assert done.called


def test_a_browser_leaving_during_the_handshake_abandons_the_upstream_and_never_opens() -> None:
    """Nothing outlives a browser that gave up: the upstream is dropped, no late open, no 504."""
    h = Handshake(lambda _: Factory.forProtocol(Silent), handshakeTimeout=3)
    [upstream] = h.relay.upstream.connections
    leg = h.pump.server
    h.browser.transport.abortConnection()
    h.net.flush()
    assert upstream.clientIO.aborted
    assert h.relay.sessions.legs == set()
    h.net.advance(5)
    assert h.sample("stproxy_upstream_timeouts_total") == 0
    assert leg.other is None and leg.session is None


def test_a_browser_leaving_before_the_upstream_connects_cancels_the_connection() -> None:
    """The connection attempt itself is cancelled: the upstream never sees a connection."""
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor)
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0))
    browser = FakeBrowserFactory(net.reactor).buildProtocol(None)
    pump = connectBrowser(net, relay, browser)
    pump.pump(advanceClock=False)  # the handshake arrives; the connect waits for the clock
    browser.transport.abortConnection()
    pump.pump(advanceClock=False)
    pump.pump(advanceClock=False)
    net.flush()
    assert relay.upstream.connections == [] and streamlit.connections == []
    assert relay.sessions.legs == set()


def test_an_upstream_endpoint_failing_at_once_gives_502_not_an_open_websocket() -> None:
    """An endpoint whose connect fails before it returns still gets the browser 502, never a 101."""
    net = MemoryNetwork()
    relay = memoryRelay(net, None, WebSocketSettings(pingInterval=0))
    relay.upstream.atOnce = True
    browser = FakeBrowserFactory(net.reactor).buildProtocol(None)
    connectBrowser(net, relay, browser)
    net.flush()
    assert browser.http_status_line == "HTTP/1.1 502 Bad Gateway"
    assert not browser.opened
    assert relay.sessions.legs == set()
    assert relay.metrics.registry.get_sample_value(
        "stproxy_websocket_handshakes_refused_total", {"status": "502"}
    ) == 1


@pytest.mark.parametrize(
    "argv, takes, sends",
    [
        ((), 8 << 20, 200 << 20),
        (("--ws-max-browser-message-size", "1M"), 1 << 20, 200 << 20),
        (("--ws-max-message-size", "2M"), 2 << 20, 2 << 20),
        (("--ws-max-browser-message-size", "unlimited"), 200 << 20, 200 << 20),
        (("--ws-max-message-size", "unlimited", "--ws-max-browser-message-size", "unlimited"), 0, 0),
    ],
)
def test_the_browser_message_limit_flag_reaches_the_browser_leg(
    argv: tuple[str, ...], takes: int, sends: int
) -> None:
    """
    The browser leg built by makeService takes messages up to
    --ws-max-browser-message-size (capped by --ws-max-message-size) and
    sends Streamlit's up to --ws-max-message-size.
    """
    reactor = MemoryReactorClock()
    service = makeService(parse("--upstream", "127.0.0.1:9", *argv), reactor)
    factory = service.webSocket.factory
    net = MemoryNetwork(reactor)
    leg = connectBrowser(net, factory, FakeBrowserFactory(reactor).buildProtocol(None)).server
    assert (factory.maxMessagePayloadSize, leg.maxMessagePayloadSize, leg.sendLimit) == (takes, takes, sends)
