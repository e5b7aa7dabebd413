"""
The WebSocket relay (stproxy.websocket.resource and the legs behind it) on real loopback
sockets: how a relayed WebSocket ends (either side vanishing, the proxy stopping) and is kept
alive (pings).

The browser-like clients, the fake Streamlit and L{RelayTestCase} are in
``tests/websocket_harness.py``.
"""

from __future__ import annotations

import time

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from websocket_harness import RawClient, RelayTestCase, upgradeRequest, waitFor


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
