"""
The WebSocket relay (stproxy.websocket.resource and the legs behind it) on real loopback
sockets: backpressure both ways, so a reader that stops holds the other side back in bounded
memory.

The browser-like clients, the fake Streamlit and L{RelayTestCase} are in
``tests/websocket_harness.py``.
"""

from __future__ import annotations

import socket
import struct

from twisted.internet import defer, reactor

from websocket_harness import Pusher, RelayTestCase, bufferedBytes, observe, waitFor


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
        yield waitFor(
            lambda: upstreamLeg.transport not in reactor.getReaders(),
            what="reading from Streamlit paused once a held read is full",
        )
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
        yield waitFor(
            lambda: browserLeg.transport not in reactor.getReaders(),
            what="reading from the browser paused once a held read is full",
        )
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
    def test_a_browser_leaving_while_streamlit_stops_reading_releases_both_legs(self):
        """
        With reading from the browser held back (Streamlit reads nothing) and
        no pings, the browser's going is still seen, and both legs end
        within the close timeout, not when Streamlit reads again.
        """
        browser, server, _ = yield self.openRelay(pingInterval=0)
        browserLeg, upstreamLeg = self.proxyLegs()
        server.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        upstreamLeg.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        server.transport.pauseProducing()
        while not browserLeg.valve.paused:  # one message at a time: nothing more in flight
            relayed = browserLeg.relayedMessages
            browser.sendMessage(b"x" * 100000, isBinary=True)
            yield waitFor(
                lambda: browserLeg.valve.paused or browserLeg.relayedMessages > relayed,
                what="a message relayed or held back",
            )
        browser.transport.loseConnection()
        yield waitFor(lambda: not self.relay.sessions.legs, timeout=5, what="both legs gone")
        server.transport.resumeProducing()

    @defer.inlineCallbacks
    def test_a_ping_flood_whose_pongs_are_not_read_stops_being_read(self):
        """
        Over TCP: a browser that pings flat out and reads none of its pongs
        is not read any more once its transport is full, the proxy holding a
        bounded amount of pongs; its going away then ends both legs.
        """
        browser, server, _ = yield self.openRelay(pingInterval=0)
        browserLeg, upstreamLeg = self.proxyLegs()
        browser.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        browserLeg.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        browser.transport.pauseProducing()
        pinger = Pinger(browser, count=200_000)
        yield waitFor(
            lambda: browserLeg.transport not in reactor.getReaders(),
            what="reading from the pinging browser paused",
        )
        yield observe(0.3)
        self.assertTrue(browserLeg.sendBuffer.full and browserLeg.valve.paused)
        self.assertTrue(pinger.paused)
        self.assertLess(pinger.sent, 200_000)
        self.assertLess(bufferedBytes(browserLeg.transport), 256 * 1024)
        browser.transport.abortConnection()
        yield waitFor(lambda: not self.relay.sessions.legs, what="both legs gone")
        yield waitFor(lambda: server.closed, what="Streamlit told")
        self.assertEqual(server.closed[1], 1001)


class Pinger:
    """Sends 125-byte pings on a WebSocket as fast as its transport takes them."""

    def __init__(self, ws, count: int):
        self.ws, self.count, self.sent, self.paused = ws, count, 0, False
        ws.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.sent < self.count:
            self.ws.sendPing(b"p" * 125)
            self.sent += 1

    def stopProducing(self):
        self.paused = True
