"""
Tests for L{stproxy.websocket.upstream}: the upstream leg's handshake is the
browser's, and what it reports back when the upstream refuses; in memory.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from stproxy.config import WebSocketSettings
from stproxy.ops.metrics import Metrics
from stproxy.testing import (
    FakeBrowserFactory,
    FakeStreamlit,
    FakeStreamlitFactory,
    MemoryNetwork,
    MemoryUpstream,
    connectBrowser,
    memoryRelay,
)
from stproxy.websocket.handshake import parseRequestHead
from stproxy.websocket.sessions import Sessions
from stproxy.websocket.upstream import UpstreamFactories, UpstreamProtocol

COOKIE = b"_streamlit_xsrf=2|ab|cd|1700000000; other=caf\xc3\xa9"
BROWSER_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
HANDSHAKE = b"\r\n".join(
    [
        b"GET /app/_stcore/stream?x=1 HTTP/1.1",
        b"Host: app.example",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + BROWSER_KEY,
        b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Protocol: streamlit, xsrf-token, session-id",
        b"Sec-WebSocket-Extensions: permessage-deflate",
        b"Origin: https://app.example",
        b"Cookie: " + COOKIE,
        b"User-Agent: Mozilla/5.0 (test)",
        b"X-Forwarded-For: 6.6.6.6",
        b"",
        b"",
    ]
)


class RawBrowser(Protocol):
    """Sends a handshake as raw bytes and keeps what comes back."""

    def __init__(self) -> None:
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(HANDSHAKE)

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def relayTo(streamlit: Any, net: MemoryNetwork) -> tuple[Any, RawBrowser]:
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0))
    browser = RawBrowser()
    connectBrowser(net, relay, browser)
    net.flush()
    return relay, browser


def test_the_upstream_handshake_is_the_browsers_with_autobahns_key_spliced_in() -> None:
    """
    Streamlit gets the browser's target, raw Host, subprotocols, Origin,
    Cookie (byte for byte) and User-Agent, forwarding headers naming the
    real peer, no extensions, and exactly one key: the upstream leg's own.
    """
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor)
    relay, browser = relayTo(streamlit, net)
    assert browser.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    [server] = streamlit.connections
    upstream: UpstreamProtocol = relay.upstream.connections[0].client
    assert server.head is not None
    target, host, headers, *_ = parseRequestHead(server.head)
    assert (target, host) == (b"/app/_stcore/stream?x=1", b"app.example")
    assert server.head.startswith(b"GET /app/_stcore/stream?x=1 HTTP/1.1\r\nHost: app.example\r\n")
    assert headers.getRawHeaders(b"cookie") == [COOKIE]
    assert headers.getRawHeaders(b"origin") == [b"https://app.example"]
    assert headers.getRawHeaders(b"user-agent") == [b"Mozilla/5.0 (test)"]
    assert headers.getRawHeaders(b"sec-websocket-protocol") == [
        b"streamlit, xsrf-token, session-id"
    ]
    assert headers.getRawHeaders(b"x-forwarded-for") == [b"192.0.2.7"]
    assert headers.getRawHeaders(b"sec-websocket-key") == [upstream.websocket_key]
    assert upstream.websocket_key != BROWSER_KEY
    assert headers.getRawHeaders(b"sec-websocket-version") == [b"13"]
    assert not headers.hasHeader(b"sec-websocket-extensions")
    assert upstream.offered == ["streamlit", "xsrf-token", "session-id"]
    assert upstream.factory.protocols == [], "the shared factory kept one leg's subprotocols"


@pytest.mark.parametrize("status", [403, 404, 302])
def test_a_refused_handshake_records_the_upstreams_status(status: int) -> None:
    """The status line of a refusal is kept on the upstream leg for the browser's answer."""
    net = MemoryNetwork()
    relay, browser = relayTo(FakeStreamlitFactory(net.reactor, refuse=status), net)
    upstream: UpstreamProtocol = relay.upstream.connections[0].client
    assert upstream.refusedStatus == status
    assert browser.received.split(b" ", 2)[1] == (b"%d" % status if status >= 400 else b"502")


def test_an_upstream_that_hangs_up_records_no_status() -> None:
    """No status line seen: C{refusedStatus} stays None (the browser then gets 503)."""

    class HangsUp(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.loseConnection()

    net = MemoryNetwork()
    relay, browser = relayTo(Factory.forProtocol(HangsUp), net)
    assert relay.upstream.connections[0].client.refusedStatus is None
    assert browser.received.startswith(b"HTTP/1.1 503 ")


class AnswersLater(FakeStreamlit):
    """Holds its handshake answer until the test fires C{answer}."""

    def onConnect(self, request: ConnectionRequest) -> Deferred[str | None]:
        accepted = super().onConnect(request)
        self.answer: Deferred[str | None] = Deferred()
        return self.answer.addCallback(lambda _: accepted)


def test_an_upstream_opening_for_nobody_is_closed_going_away() -> None:
    """A handshake that completes after the browser stopped waiting is closed with 1001, not left open."""
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor)
    streamlit.protocol = AnswersLater
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0))
    connectBrowser(net, relay, FakeBrowserFactory(net.reactor).buildProtocol(None))
    net.flush()
    [upstreamPump] = relay.upstream.connections
    upstreamPump.client.browser = None  # what abandon() and onClose leave
    streamlit.connections[0].answer.callback(None)
    net.flush()
    assert streamlit.connections[0].closed == (True, 1001, "going away")


def test_the_upstream_legs_timers_run_on_the_reactor_it_was_given() -> None:
    """After the upstream leg's own close is answered, its wait for the server's drop is on the proxy's clock."""
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor)
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0))
    browser = FakeBrowserFactory(net.reactor).buildProtocol(None)
    connectBrowser(net, relay, browser)
    net.flush()
    upstream = relay.upstream.connections[0].client
    browser.sendClose(1000)
    calls = []
    while net.pump():  # catch the timer between Streamlit's close reply and its drop
        calls.append(upstream.serverConnectionDropTimeoutCall)
    [call] = [c for c in calls if c is not None][:1]
    # Due one second after now on the proxy's clock, not on the wall clock.
    assert call.getTime() == pytest.approx(net.reactor.seconds() + 1)


def test_the_legs_to_one_upstream_share_a_factory_and_keep_their_own_handshakes() -> None:
    """
    Two browsers to one upstream: one client factory serves both upstream legs, and each
    leg's handshake is still its own browser's (target, cookie, subprotocols), and so is
    the subprotocol each gets back.
    """
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor)
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0))
    browsers = []
    for path, cookie, protocols in [
        ("/a/_stcore/stream", "who=alice", ("streamlit", "token-a")),
        ("/b/_stcore/stream", "who=bob", ("other", "streamlit")),
    ]:
        factory = FakeBrowserFactory(net.reactor, f"ws://app.example{path}", protocols)
        factory.headers = {"Cookie": cookie}
        browsers.append(factory.buildProtocol(None))
        connectBrowser(net, relay, browsers[-1])
    net.flush()
    alice, bob = browsers
    assert alice.opened and bob.opened
    legs = [pump.client for pump in relay.upstream.connections]
    assert legs[0].factory is legs[1].factory
    assert [leg.offered for leg in legs] == [["streamlit", "token-a"], ["other", "streamlit"]]
    heads = [parseRequestHead(server.head) for server in streamlit.connections]
    assert [(head.target, head.headers.getRawHeaders(b"cookie")) for head in heads] == [
        (b"/a/_stcore/stream", [b"who=alice"]),
        (b"/b/_stcore/stream", [b"who=bob"]),
    ]
    assert [head.headers.getRawHeaders(b"sec-websocket-protocol") for head in heads] == [
        [b"streamlit,token-a"],
        [b"other,streamlit"],
    ]
    assert alice.response is not None and alice.response.protocol == "streamlit"
    assert bob.response is not None and bob.response.protocol == "other"
    assert legs[0].factory.protocols == []


def test_each_upstream_gets_its_own_factory_for_as_long_as_it_is_in_use() -> None:
    """
    Legs to one upstream share a factory (with the relay's message limit), legs to another
    have their own, and an upstream no longer in use takes its factory with it.
    """
    net = MemoryNetwork()
    factories = UpstreamFactories(Sessions(net.reactor, Metrics()), 1 << 20)
    first, second = MemoryUpstream(net, None), MemoryUpstream(net, None)
    assert factories.factoryFor(first) is factories.factoryFor(first)
    assert factories.factoryFor(second) is not factories.factoryFor(first)
    assert factories.factoryFor(first).maxMessagePayloadSize == 1 << 20
    gone = weakref.ref(factories.factoryFor(second))
    del second
    gc.collect()
    assert gone() is None
