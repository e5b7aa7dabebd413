"""
The WebSocket relay (stproxy.websocket.resource and the legs behind it) on real loopback
sockets: the handshake, what Streamlit sees of it, and how refusals, failures and timeouts of
the upstream reach the browser.

The browser-like clients, the fake Streamlit and L{RelayTestCase} are in
``tests/websocket_harness.py``.
"""

from __future__ import annotations

import time

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import LogLevel

from stproxy.websocket.handshake import parseRequestHead
from websocket_harness import RawClient, RelayTestCase, fakeStreamlitFactory, upgradeRequest, waitFor


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
        target, host, headers, *_ = parseRequestHead(request)
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
    def test_repeated_cookie_lines_reach_streamlit_as_two_lines(self):
        """
        Two Cookie lines stay two lines upstream: Autobahn's replay of the
        request would have joined them into one C{Cookie: a=1,b=2}.
        """
        streamlit = fakeStreamlitFactory()
        port = self.startProxy(self.listenUpstream(streamlit))
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        self.closeAtEnd(raw)
        raw.transport.write(
            upgradeRequest(
                port, b"Cookie: a=1", b"Sec-WebSocket-Protocol: streamlit", b"Cookie: b=2"
            )
        )
        yield waitFor(lambda: b"\r\n\r\n" in raw.received, what="101")
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 101 "), raw.received[:40])
        [request] = streamlit.requests
        self.assertEqual(parseRequestHead(request).headers.getRawHeaders(b"cookie"), [b"a=1", b"b=2"])

    @defer.inlineCallbacks
    def test_refusals_are_answered_before_any_upstream_connection(self):
        """
        Two Host lines get 400 and WebSocket version 8 gets 426 naming
        version 13, and neither opens a connection to Streamlit.
        """
        factory, upstreamPort = self.hangingUpstream()
        port = self.startProxy(upstreamPort)
        answers = []
        for request in (
            upgradeRequest(port, b"Host: other.example"),
            upgradeRequest(port).replace(b"Version: 13", b"Version: 8"),
        ):
            raw = RawClient()
            yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                protocol.Factory.forProtocol(lambda: raw)
            )
            self.closeAtEnd(raw)
            raw.transport.write(request)
            yield waitFor(lambda: b"\r\n\r\n" in raw.received, what="an answer")
            answers.append(raw.received.split(b"\r\n\r\n")[0].split(b"\r\n"))
        self.assertEqual(answers[0][0], b"HTTP/1.1 400 Bad Request")
        self.assertEqual(answers[1][0], b"HTTP/1.1 426 Upgrade Required")
        self.assertIn(b"Sec-Websocket-Version: 13", answers[1])
        self.assertEqual(factory.connections, [])

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
