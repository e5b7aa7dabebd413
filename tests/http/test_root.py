"""
Tests for L{stproxy.http.root}: which resource a request goes to, and what
the site hears when the WebSocket relay takes a connection over; raw HTTP
bytes into a real L{ProxySite} over a C{StringTransport}.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyRequest

from stproxy.http.accesslog import Accounting
from stproxy.http.root import ProxyRoot, isWebSocketUpgrade
from stproxy.http.site import buildSite
from stproxy.ops.drain import Drain
from stproxy.ops.metrics import Metrics


class Recorder(Resource):
    """Records what it renders; as the relay does, it may take the connection over."""

    isLeaf = True

    def __init__(self, name: bytes, takeOver: bool = False) -> None:
        super().__init__()
        self.name = name
        self.takeOver = takeOver
        self.paths: list[bytes] = []

    def render(self, request: Request) -> bytes | int:
        self.paths.append(request.uri)
        if self.takeOver:
            request.channel.transport = None  # what Autobahn's WebSocketResource does
            return NOT_DONE_YET
        return self.name


class Site:
    """A ProxySite over two recorders, instrumented as the service does, with one connection."""

    def __init__(self, takeOver: bool = True) -> None:
        self.clock = MemoryReactorClock()
        self.metrics = Metrics()
        self.http = Recorder(b"http")
        self.webSocket = Recorder(b"ws", takeOver)
        self.site = buildSite(self.http, self.webSocket, self.clock, 0, None)
        self.drain = Drain(self.clock, self.metrics, None)
        self.site.instrument(self.drain, Accounting(self.clock, self.metrics, None))
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        self.protocol = self.site.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    def send(self, target: bytes, *headers: bytes) -> None:
        lines = [b"GET " + target + b" HTTP/1.1", b"Host: app.example", *headers]
        self.protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")


UPGRADE = (b"Upgrade: websocket", b"Connection: Upgrade")


@pytest.mark.parametrize("target", [b"/_stcore/stream", b"/", b"/app/_stcore/stream?x=1", b"/static/a.js"])
def test_an_upgrade_goes_to_the_websocket_resource_whatever_the_path(target: bytes) -> None:
    """A WebSocket upgrade is relayed wherever Streamlit is mounted, prefix or not."""
    s = Site()
    s.send(target, *UPGRADE)
    assert s.webSocket.paths == [target]
    assert s.http.paths == []


@pytest.mark.parametrize("target", [b"/_stcore/stream", b"/"])
def test_a_request_without_an_upgrade_goes_to_the_http_resource_whatever_the_path(target: bytes) -> None:
    """A plain GET of the stream path is proxied as HTTP, never taken over by Autobahn."""
    s = Site(takeOver=False)
    s.send(target)
    assert s.http.paths == [target]
    assert s.webSocket.paths == []
    assert s.transport.value().endswith(b"\r\n\r\nhttp")


def test_an_upgrade_to_another_protocol_goes_to_the_http_resource() -> None:
    """Only the websocket token counts: an h2c upgrade is an ordinary request."""
    s = Site()
    s.send(b"/", b"Upgrade: h2c", b"Connection: Upgrade")
    assert s.http.paths == [b"/"] and s.webSocket.paths == []


def test_an_upgrade_whose_target_is_not_a_path_is_not_relayed() -> None:
    """An absolute-form target never reaches the relay, which would send it upstream as is."""
    request = DummyRequest([b""])
    request.uri = b"http://evil.example/_stcore/stream"
    request.requestHeaders = Headers({b"upgrade": [b"websocket"]})
    http, webSocket = Recorder(b"http"), Recorder(b"ws")
    assert ProxyRoot(http, webSocket).render(request) == b"http"
    assert webSocket.paths == []


def test_a_connection_handed_over_to_the_relay_is_reported_to_the_site() -> None:
    """The drain stops counting it as an HTTP connection or an in-flight request."""
    s = Site()
    assert s.metrics.registry.get_sample_value("stproxy_open_connections") == 1
    s.send(b"/_stcore/stream", *UPGRADE)
    assert s.drain.connections == set()
    assert s.drain.requests == {}
    assert s.metrics.registry.get_sample_value("stproxy_open_connections") == 0


def test_an_upgrade_answered_without_a_takeover_is_not_reported() -> None:
    """If the WebSocket resource answers in HTTP (a refusal), the connection stays the site's."""
    s = Site(takeOver=False)
    s.send(b"/_stcore/stream", *UPGRADE)
    assert s.webSocket.paths == [b"/_stcore/stream"]
    assert len(s.drain.connections) == 1
    assert s.metrics.registry.get_sample_value("stproxy_open_connections") == 1


@pytest.mark.parametrize(
    "upgrade, expected",
    [
        # RFC 6455: the token is case-insensitive, and may share the header.
        ([b"websocket"], True),
        ([b"WebSocket"], True),
        ([b"h2c, websocket"], True),
        ([b" websocket "], True),
        # Anything else is not a WebSocket upgrade.
        ([b"h2c"], False),
        ([b"websockets"], False),
        ([b""], False),
        (None, False),
    ],
)
def test_is_websocket_upgrade_reads_the_upgrade_tokens(upgrade: list[bytes] | None, expected: bool) -> None:
    """Only a C{websocket} token in C{Upgrade} makes a request an upgrade."""
    request = DummyRequest([b""])
    if upgrade is not None:
        request.requestHeaders.setRawHeaders(b"upgrade", upgrade)
    assert isWebSocketUpgrade(request) is expected
