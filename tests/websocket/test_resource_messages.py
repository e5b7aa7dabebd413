"""
The WebSocket relay (stproxy.websocket.resource and the legs behind it) on real loopback
sockets: messages and close codes crossing both ways intact, size limits, compression, and TLS.

The browser-like clients, the fake Streamlit and L{RelayTestCase} are in
``tests/websocket_harness.py``.
"""

from __future__ import annotations

import hashlib
import os
import struct

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, reactor, ssl

from stproxy._autobahn import ReactorTimer
from stproxy.websocket.handshake import parseRequestHead
from websocket_harness import (
    PROTOCOLS,
    STREAM,
    Browser,
    RelayTestCase,
    fakeStreamlitFactory,
    openBrowser,
    waitFor,
)


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
        """A 20 MB binary message arrives whole and unchanged in each direction (the browser's limit raised)."""
        browser, server, _ = yield self.openRelay(maxBrowserMessageSize=25 * 2**20)
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
    def test_a_deflate_bomb_from_the_browser_closes_with_1009(self):
        """
        A compressed browser message that inflates past the browser's limit
        closes the browser with 1009 and reaches Streamlit as a 1009 alone,
        while Streamlit may still send more than that limit to the browser.
        """
        browser, server, _ = yield self.openRelay(compression=True, maxBrowserMessageSize=2**20)
        server.sendMessage(os.urandom(2 * 2**20), isBinary=True)  # incompressible
        yield waitFor(lambda: browser.messages, what="the big message down")
        browser.sendMessage(b"\0" * (64 * 2**20), isBinary=True)  # 64 KB on the wire
        closed = yield browser.factory.lost
        self.assertEqual(closed[1], 1009)
        yield waitFor(lambda: server.closed, what="upstream closed")
        self.assertEqual((server.messages, server.closed[1]), ([], 1009))

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
        _, _, headers, *_ = parseRequestHead(streamlit.requests[0])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        browser.sendClose(1000)
        yield browser.factory.lost
