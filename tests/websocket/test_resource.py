"""
Tests for L{stproxy.websocket.resource}: what twisted.web's parse of the
browser's handshake turns into upstream, and what the resource refuses
before any upstream connection; in memory, through a twisted.web L{Site}
(L{connectThroughSite}) on a L{MemoryReactorClock}.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.protocol import Protocol

from stproxy.config import WebSocketSettings
from stproxy.testing import (
    FakeBrowserFactory,
    FakeStreamlitFactory,
    MemoryNetwork,
    connectThroughSite,
    memoryRelay,
)
from stproxy.websocket.handshake import parseRequestHead

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def handshake(*lines: bytes, target: bytes = b"/_stcore/stream", version: bytes = b"13") -> bytes:
    """A browser's upgrade request with C{lines} (Host among them) after its own headers."""
    head = [
        b"GET " + target + b" HTTP/1.1",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + KEY,
        b"Sec-WebSocket-Version: " + version,
        b"Sec-WebSocket-Protocol: streamlit, xsrf-token",
        *lines,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n"


class RawBrowser(Protocol):
    """Sends its bytes, keeps what comes back."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    @property
    def status(self) -> bytes:
        return self.received.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> list[bytes]:
        head = self.received.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        return [line.split(b": ", 1)[1] for line in head if line.lower().startswith(name + b":")]


class Proxy:
    """A relay behind a twisted.web Site, in front of a fake Streamlit, in memory."""

    def __init__(self, **settings: Any) -> None:
        self.net = MemoryNetwork()
        self.events: list[dict[str, Any]] = []
        self.streamlit = FakeStreamlitFactory(self.net.reactor)
        settings.setdefault("pingInterval", 0)
        self.relay = memoryRelay(
            self.net, self.streamlit, WebSocketSettings(**settings), self.events.append
        )

    def send(self, request: bytes) -> RawBrowser:
        browser = RawBrowser(request)
        connectThroughSite(self.net, self.relay, browser)
        self.net.flush()
        return browser

    def sample(self, name: str, **labels: str) -> float | None:
        return self.relay.metrics.registry.get_sample_value(name, labels)


def test_repeated_header_lines_reach_streamlit_as_separate_lines() -> None:
    """Two Cookie lines reach Streamlit as the same two lines, not joined with a comma."""
    proxy = Proxy()
    browser = proxy.send(handshake(b"Host: app.example", b"Cookie: a=1", b"Cookie: b=2"))
    assert browser.status == b"HTTP/1.1 101 Switching Protocols"
    [streamlit] = proxy.streamlit.connections
    assert streamlit.head is not None
    _, host, headers, *_ = parseRequestHead(streamlit.head)
    assert host == b"app.example"
    assert headers.getRawHeaders(b"cookie") == [b"a=1", b"b=2"]
    assert b"\r\nCookie: a=1\r\nCookie: b=2\r\n" in streamlit.head


def test_the_subprotocols_of_several_lines_are_offered_in_order() -> None:
    """Subprotocols split over two lines are still one ordered list, and Streamlit's choice comes back."""
    proxy = Proxy()
    request = handshake(b"Host: app.example", b"Sec-WebSocket-Protocol: session-id")
    browser = proxy.send(request)
    assert browser.status == b"HTTP/1.1 101 Switching Protocols"
    assert browser.header(b"sec-websocket-protocol") == [b"streamlit"]
    [streamlit] = proxy.streamlit.connections
    assert streamlit.websocket_protocols == ["streamlit", "xsrf-token", "session-id"]


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (handshake(b"Host: a.example", b"Host: b.example"), "two Host lines"),
        (handshake(), "no Host"),
        (handshake(b"Host: a.example, b.example"), "a Host that is no host"),
        (handshake(b"Host: a.example/x"), "a Host with a path"),
        (
            handshake(b"Host: app.example", target=b"/_stcore/stream?\x01"),
            "a control byte in the target",
        ),
        (handshake(b"Host: app.example", target=b"/_stcore/\x7fstream"), "DEL in the target"),
        (
            handshake(b"Host: app.example", target=b"http://evil.example/_stcore/stream"),
            "an absolute-form target",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_malformed_handshakes_get_400_before_any_upstream_connection(
    request_: bytes, why: str
) -> None:
    """What the HTTP leg refuses, and a Host that is not exactly one valid host, gets 400 and never reaches Streamlit."""
    proxy = Proxy()
    browser = proxy.send(request_)
    assert browser.status == b"HTTP/1.1 400 Bad Request", why
    assert proxy.relay.upstream.connections == []
    assert proxy.streamlit.connections == []


def test_a_refused_handshake_is_counted_and_logged() -> None:
    """The resource's own refusals count as refused handshakes, with one event naming the peer and why."""
    proxy = Proxy()
    proxy.send(handshake(b"Host: a.example", b"Host: b.example"))
    assert proxy.sample("stproxy_websocket_handshakes_refused_total", status="400") == 1
    [event] = [e for e in proxy.events if e.get("status") == 400]
    assert (event["peer"], event["uri"]) == ("192.0.2.7", "/_stcore/stream")
    assert "Host" in event["detail"]


def test_a_trace_upgrade_gets_405_with_allow_like_any_trace() -> None:
    """An upgrade with a refused method gets the HTTP leg's 405, Allow included, and is counted; nothing goes upstream."""
    proxy = Proxy()
    browser = proxy.send(handshake(b"Host: app.example").replace(b"GET ", b"TRACE ", 1))
    assert browser.status == b"HTTP/1.1 405 Method Not Allowed"
    assert browser.header(b"allow") == [b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"]
    assert proxy.relay.upstream.connections == []
    assert proxy.sample("stproxy_websocket_handshakes_refused_total", status="405") == 1
    [event] = [e for e in proxy.events if e.get("status") == 405]
    assert (event["method"], event["peer"]) == ("TRACE", "192.0.2.7")


def test_an_http_1_0_upgrade_without_host_gets_400() -> None:
    """Unlike a plain HTTP/1.0 request, a WebSocket handshake needs its Host even over HTTP/1.0."""
    proxy = Proxy()
    browser = proxy.send(handshake().replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1))
    assert browser.status.split(b" ", 2)[1] == b"400"
    assert proxy.relay.upstream.connections == []


@pytest.mark.parametrize("version", [b"8", b"7", b"12", b"14", b"13, 8", b"abc"])
def test_a_websocket_version_other_than_13_gets_426_naming_13(version: bytes) -> None:
    """RFC 6455 section 4.4: the browser learns the version the proxy speaks; nothing goes upstream."""
    proxy = Proxy()
    browser = proxy.send(handshake(b"Host: app.example", version=version))
    assert browser.status == b"HTTP/1.1 426 Upgrade Required"
    assert browser.header(b"sec-websocket-version") == [b"13"]
    assert proxy.relay.upstream.connections == []
    assert proxy.sample("stproxy_websocket_handshakes_refused_total", status="426") == 1


def test_an_autobahn_browser_speaking_13_is_relayed_through_the_site() -> None:
    """The ordinary case through twisted.web: 101 with Streamlit's choice, and messages cross."""
    proxy = Proxy()
    browser = FakeBrowserFactory(proxy.net.reactor).buildProtocol(None)
    connectThroughSite(proxy.net, proxy.relay, browser)
    proxy.net.flush()
    assert browser.opened
    browser.sendMessage(b"back", isBinary=True)
    proxy.net.flush()
    assert proxy.streamlit.connections[0].messages == [(b"back", True)]


def test_an_upgrade_while_the_proxy_stops_gets_503_and_the_stop_completes() -> None:
    """
    A handshake that arrives after closeAll gets 503 without reaching
    Streamlit, and the stop does not wait for it.
    """
    proxy = Proxy()
    first = FakeBrowserFactory(proxy.net.reactor).buildProtocol(None)
    connectThroughSite(proxy.net, proxy.relay, first)
    proxy.net.flush()
    first.transport.pauseProducing()  # it will take its close frame late
    done = proxy.relay.sessions.closeAll(5)
    proxy.net.flush()
    assert not done.called
    late = proxy.send(handshake(b"Host: app.example"))
    assert late.status == b"HTTP/1.1 503 Service Unavailable"
    assert len(proxy.streamlit.connections) == 1
    proxy.net.advance(5)
    assert done.called
    assert proxy.relay.sessions.legs == set()
