"""
Tests for L{stproxy.websocket.resource} and L{stproxy.websocket.relay}: the WebSocket relay.

End to end on real loopback sockets, in this process: a browser-like client
(Autobahn, or raw bytes where the handshake itself is under test) talks to a
twisted.web C{Site} whose root is L{webSocketResource}, which relays to a
fake Streamlit (an Autobahn server on 127.0.0.1:0 that records what it got).
Two kinds of test use real processes through C{tests/harness.py}: the 500 MB
backpressure test (a real C{twistd stproxy} in front of a C{websockets} pusher
child) and L{RealStreamlitTests} (a real Streamlit behind a real proxy).

Trial test cases (pytest runs them): each test waits on conditions, never on
sleeps, and trial fails any test that leaves a socket or a DelayedCall behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys
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
from twisted.logger import LogLevel
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from harness import APPS, start_proxy, start_streamlit
from stproxy.http.headers import TrustedProxies
from stproxy._autobahn import ReactorTimer
from stproxy.config import Timeouts
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream
from stproxy.websocket.handshake import parseRequestHead, spliceHandshake, upstreamRequestHead
from stproxy.config import WebSocketSettings
from stproxy.websocket.browser import BrowserFactory
from stproxy.websocket.resource import webSocketResource

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


def peakRSS(pid: int) -> int:
    """The most resident memory process C{pid} has had (C{VmHWM})."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# --- the fake Streamlit --------------------------------------------------------


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


# --- the browser-like client ---------------------------------------------------


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


# --- the tests -----------------------------------------------------------------


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


class HandshakeTests(RelayTestCase):
    @defer.inlineCallbacks
    def test_subprotocols_and_identity_headers_reach_streamlit_unchanged(self):
        """
        Streamlit sees the browser's subprotocol list in order, its raw Host
        (no port added), Origin, Cookie (byte for byte), User-Agent, path and
        query, and an X-Forwarded-For naming the browser even when the browser
        forged one; the browser gets the subprotocol Streamlit selected.
        """
        streamlit = fakeStreamlitFactory()
        port = self.startProxy(self.listenUpstream(streamlit))
        cookie = b"_streamlit_xsrf=2|ab|cd|1700000000; other=caf\xc3\xa9"
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        self.closeAtEnd(raw)
        raw.transport.write(
            upgradeRequest(
                port,
                b"Origin: https://app.example",
                b"Cookie: " + cookie,
                b"User-Agent: Mozilla/5.0 (test)",
                b"X-Forwarded-For: 6.6.6.6",
                b"Sec-WebSocket-Protocol: streamlit, xsrf-token, session-id",
                b"Sec-WebSocket-Extensions: permessage-deflate",
                host=b"app.example",
            )
        )
        yield waitFor(lambda: b"\r\n\r\n" in raw.received, what="101")
        head = raw.received.split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(head[0], b"HTTP/1.1 101 Switching Protocols")
        self.assertIn(b"Sec-WebSocket-Protocol: streamlit", head)
        [request] = streamlit.requests
        target, host, headers = parseRequestHead(request)
        self.assertEqual(target, b"/_stcore/stream?x=1")
        self.assertEqual(host, b"app.example")
        self.assertEqual(headers.getRawHeaders(b"host"), [b"app.example"])
        self.assertEqual(headers.getRawHeaders(b"origin"), [b"https://app.example"])
        self.assertEqual(headers.getRawHeaders(b"cookie"), [cookie])
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [b"Mozilla/5.0 (test)"])
        self.assertEqual(
            headers.getRawHeaders(b"sec-websocket-protocol"),
            [b"streamlit, xsrf-token, session-id"],
        )
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"127.0.0.1"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"app.example"])
        self.assertFalse(headers.hasHeader(b"sec-websocket-extensions"))
        self.assertEqual(len(headers.getRawHeaders(b"sec-websocket-key")), 1)
        self.assertNotIn("xsrf", repr(self.events))

    @defer.inlineCallbacks
    def test_selected_subprotocol_is_returned_to_an_autobahn_browser(self):
        """An ordinary client gets the subprotocol Streamlit chose."""
        browser, server, streamlit = yield self.openRelay()
        self.assertEqual(browser.response.protocol, "streamlit")
        self.assertEqual(server.websocket_protocol_in_use, "streamlit")

    @defer.inlineCallbacks
    def rawHandshake(self, port: int) -> defer.Deferred:
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        self.closeAtEnd(raw)
        raw.transport.write(upgradeRequest(port, b"Sec-WebSocket-Protocol: streamlit"))
        yield raw.lost
        return raw.received.split(b"\r\n")[0]

    @defer.inlineCallbacks
    def test_unreachable_upstream_gives_502(self):
        """With nothing listening upstream, the browser's handshake gets 502."""
        closed = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        upstreamPort = closed.getHost().port
        yield closed.stopListening()
        status = yield self.rawHandshake(self.startProxy(upstreamPort))
        self.assertEqual(status, b"HTTP/1.1 502 Bad Gateway")
        [event] = [e for e in self.events if e["log_level"] == LogLevel.warn]
        self.assertEqual(event["upstream"], f"http://127.0.0.1:{upstreamPort}")
        self.assertEqual(event["peer"], "127.0.0.1")
        self.assertIn("refused", event["reason"])

    @defer.inlineCallbacks
    def test_a_null_origin_is_left_for_streamlit_to_judge(self):
        """
        Autobahn refuses Origin: null by default (400); the proxy must not:
        sandboxed pages send it, and Streamlit's own Origin check decides.
        """
        streamlit = fakeStreamlitFactory(allowNullOrigin=True)  # this fake Streamlit accepts it
        port = self.startProxy(self.listenUpstream(streamlit))
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        self.closeAtEnd(raw)
        raw.transport.write(
            upgradeRequest(port, b"Sec-WebSocket-Protocol: streamlit", b"Origin: null")
        )
        yield waitFor(lambda: b"\r\n\r\n" in raw.received, what="handshake answer")
        self.assertEqual(raw.received.split(b"\r\n")[0], b"HTTP/1.1 101 Switching Protocols")
        yield waitFor(lambda: streamlit.requests, what="upstream handshake")
        self.assertIn(b"\r\nOrigin: null\r\n", streamlit.requests[0])
        raw.transport.loseConnection()

    @defer.inlineCallbacks
    def test_upstream_refusal_status_is_passed_on(self):
        """Streamlit's 403 (foreign Origin) reaches the browser as 403."""
        port = self.startProxy(self.listenUpstream(fakeStreamlitFactory(refuse=403)))
        status = yield self.rawHandshake(port)
        self.assertEqual(status, b"HTTP/1.1 403 Forbidden")
        refused = self.relay.metrics.registry.get_sample_value(
            "stproxy_websocket_handshakes_refused_total", {"status": "403"}
        )
        self.assertEqual(refused, 1)

    @defer.inlineCallbacks
    def test_upstream_hanging_up_without_status_gives_503(self):
        """An upstream that closes without any response gives 503."""

        class HangUp(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.loseConnection()

        port = self.startProxy(self.listenUpstream(protocol.Factory.forProtocol(HangUp)))
        status = yield self.rawHandshake(port)
        self.assertEqual(status, b"HTTP/1.1 503 Service Unavailable")

    @defer.inlineCallbacks
    def test_upstream_silent_past_the_handshake_timeout_gives_504(self):
        """
        An upstream that never answers the handshake gets the browser a 504
        once handshakeTimeout has passed, and its connection is closed.
        """
        factory, upstreamPort = self.hangingUpstream()
        started = time.monotonic()
        status = yield self.rawHandshake(self.startProxy(upstreamPort, handshakeTimeout=0.3))
        self.assertEqual(status.split(b" ")[:2], [b"HTTP/1.1", b"504"])
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        yield waitFor(lambda: factory.lost, what="upstream connection closed")

    @defer.inlineCallbacks
    def test_browser_leaving_during_the_handshake_abandons_the_upstream(self):
        """
        A browser that disconnects while the upstream has not answered yet
        leaves nothing behind: the upstream connection is closed and the
        browser leg is never opened afterwards.
        """
        factory, upstreamPort = self.hangingUpstream()
        port = self.startProxy(upstreamPort, handshakeTimeout=30)
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        raw.transport.write(upgradeRequest(port))
        yield waitFor(lambda: factory.connections, what="upstream connected")
        raw.transport.abortConnection()
        yield waitFor(lambda: factory.lost, what="upstream connection closed")
        yield self.noLegsLeft()
        self.assertEqual(raw.received, b"")

    @defer.inlineCallbacks
    def test_non_upgrade_request_gets_426(self):
        """A plain GET that reaches the resource is not taken for a WebSocket."""
        port = self.startProxy(self.listenUpstream(fakeStreamlitFactory()))
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        self.closeAtEnd(raw)
        raw.transport.write(b"GET /_stcore/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        yield waitFor(lambda: b"\r\n" in raw.received)
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 426"), raw.received[:40])


class HandshakeTextTests(TestCase):
    """The pure functions that build the upstream handshake."""

    def test_splice_keeps_autobahns_key_and_version_only(self):
        """
        Autobahn's own Host, User-Agent, Origin and protocol lines are
        replaced by the browser's; its key and version lines stay.
        """
        generated = (
            b"GET / HTTP/1.1\r\nUser-Agent: AutobahnPython\r\nHost: 127.0.0.1:8501\r\n"
            b"Upgrade: WebSocket\r\nConnection: Upgrade\r\nPragma: no-cache\r\n"
            b"Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Protocol: streamlit\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        headers = Headers()
        headers.addRawHeader(b"Cookie", b"a=\xe9")
        headers.addRawHeader(b"Sec-WebSocket-Protocol", b"streamlit, tok")
        head = upstreamRequestHead(b"/p?q", b"app.example", headers)
        self.assertEqual(
            spliceHandshake(head, generated),
            b"GET /p?q HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nCookie: a=\xe9\r\n"
            # Twisted's Headers spell names its own way; values stay as they are.
            b"Sec-Websocket-Protocol: streamlit, tok\r\n"
            b"Sec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )

    def test_settings_reject_negative_values(self):
        """Nonsense settings fail when made, not when a browser connects."""
        self.assertRaises(ValueError, WebSocketSettings, pingInterval=-1)
        self.assertRaises(ValueError, WebSocketSettings, handshakeTimeout=0)


class MessageTests(RelayTestCase):
    @defer.inlineCallbacks
    def test_close_code_and_reason_pass_from_browser_to_streamlit(self):
        """The browser closing with 4000 "bye" closes Streamlit's side with the same."""
        browser, server, _ = yield self.openRelay()
        browser.sendClose(4000, "bye")
        yield waitFor(lambda: server.closed, what="upstream closed")
        self.assertEqual(server.closed[1:], (4000, "bye"))
        wasClean, code, reason = yield browser.factory.lost
        self.assertTrue(wasClean)

    @defer.inlineCallbacks
    def test_close_code_and_reason_pass_from_streamlit_to_browser(self):
        """Streamlit closing with 4001 "later" closes the browser with the same."""
        browser, server, _ = yield self.openRelay()
        server.sendClose(4001, "later")
        closed = yield browser.factory.lost
        self.assertEqual(closed, (True, 4001, "later"))

    @defer.inlineCallbacks
    def test_twenty_megabytes_cross_intact_both_ways(self):
        """A 20 MB binary message arrives whole and unchanged in each direction."""
        browser, server, _ = yield self.openRelay()
        up, down = os.urandom(20 * 2**20), os.urandom(20 * 2**20)
        browser.sendMessage(up, isBinary=True)
        server.sendMessage(down, isBinary=True)
        yield waitFor(lambda: server.messages and browser.messages, what="both arrived")
        self.assertEqual(
            hashlib.sha256(server.messages[0][0]).hexdigest(), hashlib.sha256(up).hexdigest()
        )
        self.assertEqual(
            hashlib.sha256(browser.messages[0][0]).hexdigest(),
            hashlib.sha256(down).hexdigest(),
        )
        self.assertEqual((server.messages[0][1], browser.messages[0][1]), (True, True))

    @defer.inlineCallbacks
    def test_ten_thousand_messages_each_way_keep_order_and_type(self):
        """
        10,000 small binary messages each way arrive complete and in order
        with their binary flag; a text message stays text.
        """
        browser, server, _ = yield self.openRelay()
        n = 10_000
        for i in range(n):
            browser.sendMessage(struct.pack("!I", i) * 4, isBinary=True)
            server.sendMessage(struct.pack("!I", i) * 4, isBinary=True)
        browser.sendMessage("héllo".encode(), isBinary=False)
        server.sendMessage("wörld".encode(), isBinary=False)
        yield waitFor(
            lambda: len(server.messages) > n and len(browser.messages) > n, what="all messages"
        )
        for received in (server.messages, browser.messages):
            self.assertEqual(
                [p for p, _ in received[:n]], [struct.pack("!I", i) * 4 for i in range(n)]
            )
            self.assertTrue(all(b for _, b in received[:n]))
        self.assertEqual(server.messages[n], ("héllo".encode(), False))
        self.assertEqual(browser.messages[n], ("wörld".encode(), False))

    @defer.inlineCallbacks
    def test_oversized_message_from_browser_closes_with_1009(self):
        """
        A browser message over maxMessageSize is not relayed: the browser gets
        a clean 1009 close, and Streamlit's side is closed too.
        """
        browser, server, _ = yield self.openRelay(maxMessageSize=2**20)
        browser.sendMessage(b"x" * (2**20 + 1), isBinary=True)
        closed = yield browser.factory.lost
        self.assertEqual(closed[1], 1009)
        yield waitFor(lambda: server.closed, what="upstream closed")
        self.assertEqual(server.messages, [])
        self.assertEqual(server.closed[1], 1009)

    @defer.inlineCallbacks
    def test_oversized_message_from_streamlit_closes_both_with_1009(self):
        """An upstream message over the limit closes both legs with 1009."""
        browser, server, _ = yield self.openRelay(maxMessageSize=2**20)
        server.sendMessage(b"x" * (2**20 + 1), isBinary=True)
        closed = yield browser.factory.lost
        self.assertEqual(closed[1], 1009)
        self.assertEqual(browser.messages, [])
        yield waitFor(lambda: server.closed, what="upstream closed")
        self.assertEqual(server.closed[1], 1009)

    @defer.inlineCallbacks
    def test_deflate_is_accepted_from_the_browser_but_not_offered_upstream(self):
        """
        With compression on, a browser offering permessage-deflate gets it;
        Streamlit is offered nothing; messages still cross unchanged.
        """
        browser, server, streamlit = yield self.openRelay(compression=True)
        self.assertEqual(len(browser.websocket_extensions_in_use), 1)
        self.assertNotIn(b"extensions", streamlit.requests[0].lower())
        payload = os.urandom(1000) + b"a" * 100_000
        browser.sendMessage(payload, isBinary=True)
        server.sendMessage(payload, isBinary=True)
        yield waitFor(lambda: server.messages and browser.messages)
        self.assertEqual(server.messages[0][0], payload)
        self.assertEqual(browser.messages[0][0], payload)

    @defer.inlineCallbacks
    def test_deflate_is_refused_when_compression_is_off(self):
        """With compression off the browser's offer is declined."""
        streamlit = fakeStreamlitFactory()
        port = self.startProxy(self.listenUpstream(streamlit), compression=False)
        browser = yield openBrowser(port, deflate=True)
        self.closeAtEnd(browser)
        self.assertEqual(browser.websocket_extensions_in_use, [])
        yield waitFor(lambda: streamlit.opened)
        self.closeAtEnd(streamlit.opened[0])

    @defer.inlineCallbacks
    def test_relay_works_over_tls_with_forwarded_proto_https(self):
        """
        Behind a TLS listener the relay takes over the TLS transport (its
        leftover HTTP producer included) and tells Streamlit the scheme.
        """
        streamlit = fakeStreamlitFactory(echo=True)
        port = self.startProxy(self.listenUpstream(streamlit), tls=True)
        factory = WebSocketClientFactory(f"wss://127.0.0.1:{port}{STREAM}", protocols=PROTOCOLS)
        factory.protocol = Browser
        factory.opened, factory.lost = defer.Deferred(), defer.Deferred()
        factory._batched_timer = ReactorTimer(reactor)
        reactor.connectSSL("127.0.0.1", port, factory, ssl.ClientContextFactory())
        browser = yield factory.opened
        self.closeAtEnd(browser)
        payload = os.urandom(3 * 2**20)
        browser.sendMessage(payload, isBinary=True)
        yield waitFor(lambda: browser.messages)
        self.assertEqual(browser.messages[0][0], payload)
        _, _, headers = parseRequestHead(streamlit.requests[0])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        browser.sendClose(1000)
        yield browser.factory.lost


class LifetimeTests(RelayTestCase):
    @defer.inlineCallbacks
    def test_streamlit_killed_closes_the_browser_with_1012(self):
        """
        Streamlit vanishing without a close frame closes the browser with
        1012 "service restart", on which the frontend reconnects.
        """
        browser, server, _ = yield self.openRelay()
        server.transport.abortConnection()
        closed = yield browser.factory.lost
        self.assertEqual(closed, (True, 1012, "service restart"))

    @defer.inlineCallbacks
    def test_browser_vanishing_closes_the_upstream_connection(self):
        """A browser that drops its TCP connection gets Streamlit's side closed (1001)."""
        browser, server, _ = yield self.openRelay()
        browser.transport.abortConnection()
        yield waitFor(lambda: server.closed, what="upstream closed")
        self.assertEqual(server.closed[1], 1001)

    @defer.inlineCallbacks
    def test_close_all_ends_open_websockets_on_both_legs(self):
        """
        Stopping the proxy closes open WebSockets with 1001 on both ends, and
        closeAll fires once no connection of either leg is left.
        """
        browser, server, _ = yield self.openRelay()
        done = self.resource.closeAll()
        self.assertEqual((yield browser.factory.lost)[1], 1001)
        yield done
        self.assertEqual(self.relay.sessions.legs, set())
        yield waitFor(lambda: server.closed, what="upstream closed")
        self.assertEqual(server.closed[1], 1001)

    @defer.inlineCallbacks
    def test_close_all_refuses_a_pending_handshake(self):
        """A browser still waiting for the upstream gets 503 when the proxy stops."""
        factory, upstreamPort = self.hangingUpstream()
        port = self.startProxy(upstreamPort, handshakeTimeout=30)
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        raw.transport.write(upgradeRequest(port))
        yield waitFor(lambda: factory.connections, what="upstream connected")
        yield self.resource.closeAll()
        yield raw.lost
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 503 "), raw.received)
        yield waitFor(lambda: factory.lost, what="upstream connection closed")

    @defer.inlineCallbacks
    def test_pings_are_sent_at_the_configured_interval(self):
        """With pingInterval 0.2 the browser gets a ping about every 0.2 s."""
        browser, _, _ = yield self.openRelay(pingInterval=0.2, pingTimeout=5)
        started = time.monotonic()
        yield waitFor(lambda: len(browser.pings) >= 4, what="4 pings")
        gaps = [b - a for a, b in zip(browser.pings, browser.pings[1:])]
        self.assertTrue(all(0.15 < gap < 0.6 for gap in gaps), gaps)
        self.assertGreater(browser.pings[0] - started, -0.01)

    @defer.inlineCallbacks
    def test_no_pings_when_the_interval_is_zero(self):
        """pingInterval 0 sends no pings, not even while messages flow."""
        browser, server, _ = yield self.openRelay(echo=True, pingInterval=0)
        [leg] = [p for p in self.relay.sessions.legs if p.factory is self.relay]
        self.assertEqual(leg.autoPingInterval, 0)
        deadline = time.monotonic() + 1.0
        for i in range(20):
            browser.sendMessage(b"%d" % i, isBinary=True)
            yield waitFor(lambda: len(browser.messages) > i)
            if time.monotonic() > deadline:
                break
        self.assertEqual(browser.pings, [])

    @defer.inlineCallbacks
    def test_browser_not_answering_pings_is_dropped(self):
        """
        A browser that stops answering pings is disconnected after
        pingTimeout, and Streamlit's side is closed with it.
        """
        browser, server, _ = yield self.openRelay(pingInterval=0.1, pingTimeout=0.2)
        browser.answerPings = False
        closed = yield browser.factory.lost
        self.assertFalse(closed[0])
        yield waitFor(lambda: server.closed, what="upstream closed")
        yield waitFor(lambda: any("closed_by" in e for e in self.events), what="session line")
        [session] = [e for e in self.events if "closed_by" in e]
        self.assertEqual((session["closed_by"], session["close_code"]), ("proxy", 1006))


class BackpressureTests(RelayTestCase):
    def proxyLegs(self):
        [browserLeg] = [p for p in self.relay.sessions.legs if p.factory is self.relay]
        return browserLeg, browserLeg.other

    @defer.inlineCallbacks
    def test_a_browser_that_stops_reading_pauses_reading_from_streamlit(self):
        """
        While the browser reads nothing, the proxy stops reading from
        Streamlit: Streamlit's sends stall (its transport pauses it) long
        before it has sent all it wants, and the proxy holds only a bounded
        amount; once the browser reads again every message arrives in order.
        """
        browser, server, _ = yield self.openRelay()
        browserLeg, upstreamLeg = self.proxyLegs()
        browser.transport.pauseProducing()
        pusher = Pusher(server, count=400, size=256 * 1024)
        yield waitFor(lambda: upstreamLeg.valve.paused, what="backpressure upstream")
        self.assertNotIn(upstreamLeg.transport, reactor.getReaders())
        yield observe(0.3)
        self.assertTrue(pusher.paused)
        self.assertLess(pusher.sent, 400)
        self.assertLess(bufferedBytes(browserLeg.transport), 8 * 2**20)
        browser.transport.resumeProducing()
        yield waitFor(lambda: len(browser.messages) == 400, what="all messages")
        self.assertEqual(
            [p[:4] for p, _ in browser.messages], [struct.pack("!I", i) for i in range(400)]
        )
        self.assertFalse(upstreamLeg.valve.paused)

    @defer.inlineCallbacks
    def test_a_browser_that_closes_and_stops_reading_is_not_kept_for_ever(self):
        """
        Its close is answered, but the graceful TCP close would wait for a
        write buffer it never drains: the connection is aborted instead, and
        the session ends.
        """
        browser, server, _ = yield self.openRelay()
        browserLeg, upstreamLeg = self.proxyLegs()
        # Small socket buffers, so that what the proxy holds for the browser
        # cannot all vanish into the kernel.
        browser.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        browserLeg.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        browser.transport.pauseProducing()
        Pusher(server, count=400, size=256 * 1024)
        yield waitFor(lambda: upstreamLeg.valve.paused, what="backpressure upstream")
        browser.closeHandshakeTimeout = 0  # a raw client: it waits for ever, it never aborts
        browser.sendClose(1000)
        yield waitFor(
            lambda: not browserLeg.transport.connected, timeout=10, what="browser connection gone"
        )
        yield waitFor(lambda: not self.relay.sessions.legs, what="both legs forgotten")
        browser.transport.resumeProducing()
        yield waitFor(lambda: not browser.transport.connected, what="the test browser closed")
        self.assertEqual([e["close_code"] for e in self.events if "close_code" in e], [1000])

    @defer.inlineCallbacks
    def test_streamlit_that_stops_reading_pauses_reading_from_the_browser(self):
        """The same the other way: a stalled Streamlit stops the proxy reading the browser."""
        browser, server, _ = yield self.openRelay()
        browserLeg, upstreamLeg = self.proxyLegs()
        server.transport.pauseProducing()
        pusher = Pusher(browser, count=400, size=256 * 1024)
        yield waitFor(lambda: browserLeg.valve.paused, what="backpressure downstream")
        self.assertNotIn(browserLeg.transport, reactor.getReaders())
        yield observe(0.3)
        self.assertTrue(pusher.paused)
        self.assertLess(pusher.sent, 400)
        self.assertLess(bufferedBytes(upstreamLeg.transport), 8 * 2**20)
        server.transport.resumeProducing()
        yield waitFor(lambda: len(server.messages) == 400, what="all messages")
        self.assertEqual(
            [p[:4] for p, _ in server.messages], [struct.pack("!I", i) for i in range(400)]
        )
        self.assertFalse(browserLeg.valve.paused)

    @defer.inlineCallbacks
    def test_proxy_rss_stays_bounded_while_streamlit_pushes_500_megabytes(self):
        """
        A browser that stops reading while Streamlit tries to push 500 MB
        stalls Streamlit and keeps a real C{twistd stproxy}'s resident memory
        bounded; when it reads again all 500 MB arrive, in order.
        """
        pusher = PusherProcess()
        reactor.spawnProcess(
            pusher, sys.executable, [sys.executable, "-c", PUSHER, "500"], env=os.environ
        )
        self.addCleanup(pusher.stop)
        upstreamPort = yield pusher.listening
        proxy = start_proxy("--upstream", f"127.0.0.1:{upstreamPort}")
        self.addCleanup(proxy.stop)
        baseline = proxy.rss_bytes()
        browser = yield openBrowser(proxy.port, protocols=None)
        self.closeAtEnd(browser)
        browser.transport.pauseProducing()
        yield waitFor(lambda: pusher.sent, what="Streamlit pushing")
        yield observe(1.0)
        self.assertLess(pusher.sent, 100, "Streamlit was not held back")
        self.assertLess(proxy.rss_bytes() - baseline, 64 * 2**20)
        received = []

        def onMessage(payload, isBinary):
            received.append(struct.unpack("!I", payload[:4])[0])

        browser.onMessage = onMessage
        browser.transport.resumeProducing()
        yield waitFor(lambda: len(received) == 500, timeout=40, what="500 MB received")
        self.assertEqual(received, list(range(500)))
        self.assertLess(peakRSS(proxy.pid) - baseline, 100 * 2**20)
        browser.sendClose(1000)
        yield browser.factory.lost
        yield waitFor(lambda: not proxy.connections_to(upstreamPort), what="upstream leg closed")


class StreamlitHost(Browser):
    """A browser on a page served as C{http://app.test:PORT}: that Host, not 127.0.0.1."""

    def sendData(self, data, sync=False, chopsize=None):
        if self.state == self.STATE_CONNECTING and data.startswith(b"GET "):
            data = data.replace(b"Host: 127.0.0.1:", b"Host: app.test:", 1)
        super().sendData(data, sync, chopsize)


class RealStreamlitTests(TestCase):
    """Through a real C{twistd stproxy} to a real Streamlit (C{tests/apps/basic_app.py})."""

    def setUp(self):
        self.streamlit = start_streamlit(APPS / "basic_app.py")
        self.addCleanup(self.streamlit.stop)
        self.proxy = start_proxy("--upstream", f"127.0.0.1:{self.streamlit.port}")
        self.addCleanup(self.proxy.stop)

    def connect(self, origin: str) -> defer.Deferred:
        port = self.proxy.port
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{port}/_stcore/stream",
            protocols=["streamlit", "PLACEHOLDER_AUTH_TOKEN"],
            origin=origin.replace("PORT", str(port)),
        )
        factory.protocol = StreamlitHost
        factory.opened, factory.lost = defer.Deferred(), defer.Deferred()
        factory._batched_timer = ReactorTimer(reactor)
        TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        return factory

    @defer.inlineCallbacks
    def test_a_session_runs_under_a_real_host_name_and_ends_with_1012_when_killed(self):
        """
        With Host and Origin C{app.test:PORT} (not exempt from Streamlit's
        Origin check) the session opens with subprotocol C{streamlit} and the
        app's script runs; when Streamlit is killed the browser gets 1012.
        """
        factory = self.connect("http://app.test:PORT")
        browser = yield factory.opened
        self.assertEqual(browser.response.protocol, "streamlit")
        rerun = BackMsg(rerun_script=ClientState(query_string="", page_script_hash=""))
        browser.sendMessage(rerun.SerializeToString(), isBinary=True)

        def kinds():
            for payload, isBinary in browser.messages:
                message = ForwardMsg()
                message.ParseFromString(payload)
                yield message.WhichOneof("type")

        yield waitFor(lambda: "script_finished" in set(kinds()), what="the script ran")
        self.assertIn("new_session", set(kinds()))
        self.assertTrue(all(isBinary for _, isBinary in browser.messages))
        self.streamlit.process.kill()
        closed = yield factory.lost
        self.assertEqual(closed[1:], (1012, "service restart"))

    @defer.inlineCallbacks
    def test_a_foreign_origin_gets_streamlits_403(self):
        """An Origin that does not match the Host is refused by Streamlit, and so by the proxy."""
        port = self.proxy.port
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        raw.transport.write(
            upgradeRequest(
                port,
                b"Origin: http://evil.example",
                b"Sec-WebSocket-Protocol: streamlit",
                host=b"app.test:%d" % port,
            ).replace(b"?x=1", b"")
        )
        yield raw.lost
        self.assertEqual(raw.received.split(b"\r\n")[0], b"HTTP/1.1 403 Forbidden")


PUSHER = r"""
import asyncio, os, struct, sys
from websockets.asyncio.server import serve

async def push(ws):
    chunk = os.urandom(2**20 - 4)
    for i in range(int(sys.argv[1])):
        await ws.send(struct.pack("!I", i) + chunk)
        print(i + 1, flush=True)
    await ws.wait_closed()

async def main():
    async with serve(push, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


class PusherProcess(protocol.ProcessProtocol):
    """A websockets server in a child process that pushes N 1 MB messages."""

    def __init__(self):
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.sent = 0

    def outReceived(self, data):
        self.out += data
        lines = self.out.split(b"\n")[:-1]
        if lines and not self.listening.called:
            self.listening.callback(int(lines[0]))
        if len(lines) > 1:
            self.sent = int(lines[-1])

    def processEnded(self, reason):
        self.ended.callback(None)
        if not self.listening.called:
            self.listening.errback(reason)

    def stop(self):
        if not self.ended.called:
            self.transport.signalProcess("KILL")
        return self.ended
