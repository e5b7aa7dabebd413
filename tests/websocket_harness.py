"""
The WebSocket relay on real loopback sockets, in the test process: a browser-like client
(Autobahn, or raw bytes where the handshake itself is under test) talks to a twisted.web
C{Site} whose root is L{webSocketResource}, which relays to a fake Streamlit (an Autobahn
server on 127.0.0.1:0 that records what it got).

Shared by ``tests/websocket/test_resource*.py`` and ``tests/e2e/test_websocket.py``.  Trial
test cases (pytest runs them): each test waits on conditions, never on sleeps, and trial fails
any test that leaves a socket or a DelayedCall behind.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Callable

import twisted.test
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from stproxy._autobahn import ReactorTimer
from stproxy.config import Timeouts, WebSocketSettings
from stproxy.http.headers import TrustedProxies
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream
from stproxy.websocket.browser import BrowserFactory
from stproxy.websocket.resource import webSocketResource

__all__ = [
    "PROTOCOLS",
    "STREAM",
    "Browser",
    "FakeStreamlit",
    "Hanging",
    "Pusher",
    "RawClient",
    "RelayTestCase",
    "bufferedBytes",
    "fakeStreamlitFactory",
    "observe",
    "openBrowser",
    "upgradeRequest",
    "waitFor",
]

PROTOCOLS = ["streamlit", "xsrf-token", "session-id"]
STREAM = "/_stcore/stream"


def waitFor(condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> defer.Deferred:
    """Fire once C{condition()} is true (polled every 5 ms); fail after C{timeout}."""
    deadline = time.monotonic() + timeout

    @defer.inlineCallbacks
    def poll():
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}")
            yield task.deferLater(reactor, 0.005, lambda: None)

    return poll()


def observe(seconds: float) -> defer.Deferred:
    """
    Let the reactor run for a while.  Only for showing that something does
    I{not} happen (a stall that lasts); everything else waits on conditions.
    """
    return task.deferLater(reactor, seconds, lambda: None)


# --------------------------------------------------------------------------- the fake Streamlit


class FakeStreamlit(WebSocketServerProtocol):
    """
    Records each handshake and message; selects the first offered
    subprotocol; echoes when its factory says so.
    """

    def onConnect(self, request):
        self.factory.requests.append(self.http_request_data)
        self.factory.connections.append(self)
        self.messages: list[tuple[bytes, bool]] = []
        self.closed: tuple | None = None
        if self.factory.refuse:
            raise ConnectionDeny(self.factory.refuse, "Forbidden")
        return request.protocols[0] if request.protocols else None

    def onOpen(self):
        self.factory.opened.append(self)

    def onMessage(self, payload, isBinary):
        if self.factory.echo:
            self.sendMessage(payload, isBinary)
        else:
            self.messages.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code, reason)


def fakeStreamlitFactory(**options) -> WebSocketServerFactory:
    factory = WebSocketServerFactory()
    factory.protocol = FakeStreamlit
    factory.requests = []
    factory.connections = []
    factory.opened = []
    factory.refuse = options.pop("refuse", None)
    factory.echo = options.pop("echo", False)
    factory._batched_timer = ReactorTimer(reactor)
    factory.setProtocolOptions(maxMessagePayloadSize=0, **options)
    return factory


# ---------------------------------------------------------------------- the browser-like client


class Browser(WebSocketClientProtocol):
    answerPings = True

    def onConnect(self, response):
        self.response = response

    def onOpen(self):
        self.messages: list[tuple[bytes, bool]] = []
        self.pings: list[float] = []
        if not self.factory.opened.called:
            self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))

    def onPing(self, payload):
        self.pings.append(time.monotonic())
        if self.answerPings:
            super().onPing(payload)

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code, reason)
        if not self.factory.opened.called:
            self.factory.opened.errback(AssertionError(f"not opened: {code} {reason}"))
        self.factory.lost.callback((wasClean, code, reason))


def openBrowser(
    port: int, protocols=PROTOCOLS, deflate: bool = False, path: str = STREAM
) -> defer.Deferred:
    factory = WebSocketClientFactory(
        f"ws://127.0.0.1:{port}{path}", protocols=protocols, origin=f"http://127.0.0.1:{port}"
    )
    factory.protocol = Browser
    factory.opened = defer.Deferred()
    factory.lost = defer.Deferred()
    factory._batched_timer = ReactorTimer(reactor)
    if deflate:
        factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],
            perMessageCompressionAccept=lambda r: (
                PerMessageDeflateResponseAccept(r)
                if isinstance(r, PerMessageDeflateResponse)
                else None
            ),
        )
    TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return factory.opened


class RawClient(protocol.Protocol):
    """Sends bytes, collects bytes: for handshake tests."""

    def __init__(self):
        self.received = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.callback(None)


def upgradeRequest(port: int, *extra: bytes, host: bytes | None = None) -> bytes:
    lines = [
        b"GET /_stcore/stream?x=1 HTTP/1.1",
        b"Host: " + (host or b"127.0.0.1:%d" % port),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Hanging(protocol.Protocol):
    """An upstream that accepts TCP and never answers."""

    def connectionMade(self):
        self.factory.connections.append(self)

    def connectionLost(self, reason):
        self.factory.lost.append(self)


class Pusher:
    """
    Sends numbered binary messages on a WebSocket as fast as its transport
    takes them: a push producer that stops when the transport pauses it.
    """

    def __init__(self, ws, count: int, size: int):
        self.ws, self.count, self.sent, self.paused = ws, count, 0, False
        self.chunk = os.urandom(size - 4)
        ws.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.sent < self.count:
            self.ws.sendMessage(struct.pack("!I", self.sent) + self.chunk, isBinary=True)
            self.sent += 1
        if self.sent == self.count:
            self.ws.transport.unregisterProducer()

    def stopProducing(self):
        self.paused = True


def bufferedBytes(transport) -> int:
    """What a TCP transport holds, not yet written to its socket."""
    return len(transport.dataBuffer) + sum(map(len, transport._tempDataBuffer))


# -------------------------------------------------------------------------------- the test case


class RelayTestCase(TestCase):
    """Sets up a fake Streamlit and a proxy in front of it, and tears both down."""

    def listenUpstream(self, factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def startProxy(self, upstreamPort: int, tls: bool = False, trusted=(), **settings) -> int:
        upstream = Upstream(
            reactor, UpstreamAddress("http", "127.0.0.1", upstreamPort), Timeouts(connect=5)
        )
        self.events: list[dict] = []
        resource = webSocketResource(
            upstream, WebSocketSettings(**settings), TrustedProxies(trusted), self.events.append
        )
        self.resource = resource
        self.relay: BrowserFactory = resource.factory
        site = Site(resource)
        if tls:
            pem = FilePath(twisted.test.__file__).sibling("server.pem").path
            contextFactory = ssl.DefaultOpenSSLContextFactory(pem, pem)
            port = reactor.listenSSL(0, site, contextFactory, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.noLegsLeft)
        self.addCleanup(upstream.close)
        return port.getHost().port

    def hangingUpstream(self):
        factory = protocol.Factory.forProtocol(Hanging)
        factory.connections, factory.lost = [], []
        return factory, self.listenUpstream(factory)

    def noLegsLeft(self):
        return waitFor(lambda: not self.relay.sessions.legs, what="every relayed connection closed")

    def closeAtEnd(self, *protocols):
        def close():
            for p in protocols:
                if p.transport is not None and p.transport.connected:
                    p.transport.abortConnection()
        self.addCleanup(close)

    @defer.inlineCallbacks
    def openRelay(self, echo=False, upstreamOptions=None, **settings):
        streamlit = fakeStreamlitFactory(echo=echo, **(upstreamOptions or {}))
        port = self.startProxy(self.listenUpstream(streamlit), **settings)
        browser = yield openBrowser(port, deflate=settings.get("compression", False))
        yield waitFor(lambda: streamlit.opened, what="upstream open")
        server = streamlit.opened[0]
        self.closeAtEnd(browser, server)
        return browser, server, streamlit
