"""
The relay between the two legs of one proxied WebSocket.

A browser connection and its upstream connection are two Autobahn protocols
(L{stproxy.websocket.BrowserProtocol} and L{stproxy.websocket.UpstreamProtocol})
that both mix in L{RelayLeg}.  Once both handshakes are done, L{join} makes each
the C{other} of the other; from then on:

  - every complete message one leg receives is sent on the other with the same
    binary/text flag, in order: as frames passed on as they came
    (L{stproxy.websocket.passthrough}) unless an extension was negotiated,
    then as messages (Autobahn reassembles, the other leg re-frames);
  - a close frame one leg receives is passed on with its code and reason, and a
    leg that goes away without one closes the other with L{RelayLeg.lostCode};
  - backpressure (L{stproxy.websocket.valve}): a peer that reads slowly stops
    the proxy reading the side that feeds it: about a message (a read in raw
    passage), plus one held read, per direction waits in the proxy's memory;
  - once one leg is gone the other is closed, and aborted if still there
    after the close handshake timeout (its peer may have stopped reading).

Pings are answered by each leg itself and never crossed over (Autobahn answers
them), and a peer that does not read its pongs is not read either; keepalive
on the browser leg is Autobahn's auto-ping.  How big a message may be is the
receiving leg's limit (also while inflating); the browser leg takes smaller
messages than it sends (L{stproxy.config.WebSocketSettings}).
"""

from __future__ import annotations

from typing import Protocol

from autobahn.exception import Disconnected, PayloadExceededError
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from stproxy._autobahn import STATE_CLOSED, STATE_OPEN, LeanProtocol
from stproxy.websocket.passthrough import Counter, Passthrough, passThrough
from stproxy.websocket.valve import ReadingValve, SendBuffer

CLOSE_MESSAGE_TOO_BIG = WebSocketProtocol.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG

#: What the browser is told when Streamlit's connection ends without a close
#: frame (Streamlit killed or restarting).  The Streamlit frontend reconnects
#: after any close; 1012 says why, where 1011 would blame an internal error.
UPSTREAM_LOST = (WebSocketProtocol.CLOSE_STATUS_CODE_SERVICE_RESTART, b"service restart")

#: What Streamlit is told when the browser's connection ends without a close
#: frame: what a browser sends itself when a page goes away.
BROWSER_LOST = (WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, b"going away")


class _NoCounter:
    """Stands in for a metric child before a leg is joined (or in tests)."""

    def inc(self, amount: float = 1) -> None:
        pass


class SessionRecord(Protocol):
    """What a joined leg reports its end to (L{stproxy.websocket.sessions.Session})."""

    def closing(self, side: str, code: int | None) -> None: ...

    def legClosed(self) -> None: ...


class LegTracker(Protocol):
    """What keeps count of the open connections of either leg (L{stproxy.websocket.sessions})."""

    def track(self, leg: RelayLeg) -> None: ...

    def forget(self, leg: RelayLeg) -> None: ...


class RelayLeg(LeanProtocol):
    """
    What both legs share, mixed in before the Autobahn protocol class.

    @ivar other: the other leg once both are open, until either is lost.
    @ivar valve: the valve that holds back what I{this} leg receives.
    @ivar sendBuffer: the producer of this leg's transport (L{SendBuffer}).
    @ivar lostCode: the close code and reason the other gets when this leg's
        connection ends without a close frame.
    """

    other: RelayLeg | None = None
    valve: ReadingValve | None = None
    sendBuffer: SendBuffer | None = None
    #: What reads this leg's frames in raw passage (None: Autobahn does).
    passthrough: Passthrough | None = None
    lostCode: tuple[int, bytes] = BROWSER_LOST

    #: Which end this leg faces, for L{stproxy.websocket.sessions.Session.closedBy}.
    side = "browser"
    session: SessionRecord | None = None
    #: Who the browser is, when the proxy authenticated it (L{stproxy.auth}).
    user: str | None = None
    #: Messages and payload bytes received on this leg and relayed to the other.
    relayedMessages = 0
    relayedBytes = 0
    #: Pre-bound metric children (L{stproxy.ops.metrics.Metrics.relayedMessages}).
    messageCounter: Counter = _NoCounter()
    byteCounter: Counter = _NoCounter()

    # These come from the Autobahn protocol class this is mixed into.
    wasClean: bool
    localCloseCode: int | None
    localCloseReason: bytes | None
    remoteCloseCode: int | None
    remoteCloseReason: str | None
    closeHandshakeTimeout: float
    factory: WebSocketServerFactory | WebSocketClientFactory

    @property
    def tracker(self) -> LegTracker:
        """Where this leg's connection is tracked from made to lost (its factory's)."""
        raise NotImplementedError

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[misc]
        self.tracker.track(self)

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)  # type: ignore[misc]
        finally:
            self.tracker.forget(self)

    def dataReceived(self, data: bytes) -> None:
        """Bytes arrived: processed now, or held while the other leg is full (L{valve})."""
        if self.valve is None or self.failedByProxy:
            self.processReceived(data)
        else:
            self.valve.received(data)

    def processReceived(self, data: bytes) -> None:
        """
        Process bytes this leg received (what L{valve} delivers), unless this
        side failed the connection (a message too big): then, as RFC 6455
        advises (7.1.7), nothing more is, its close reply included, until the
        close handshake timeout drops it.  After a frame refused while being
        inflated, Autobahn's parser would keep all the peer sends until then.
        """
        if self.failedByProxy:
            return
        if self.passthrough is not None:
            self.passthrough.received(data)
        else:
            super().dataReceived(data)

    def messageReceived(self, payload: bytes, isBinary: bool) -> None:
        """A whole message arrived: send it on as it is (never logged)."""
        other = self.other
        if other is not None and other.relayMessage(payload, isBinary):
            size = len(payload)
            self.relayedMessages += 1
            self.relayedBytes += size
            self.messageCounter.inc()
            self.byteCounter.inc(size)

    def relayMessage(self, payload: bytes, isBinary: bool) -> bool:
        """
        Send a message that arrived on the other, and say whether it was sent.
        A leg that is closing drops it, as the WebSocket protocol does for
        messages after a close.
        """
        if self.state != STATE_OPEN:
            return False
        try:
            self.sendWholeMessage(payload, isBinary)
        except PayloadExceededError:
            # Only when compression made a message at the limit bigger.
            self.failWith(CLOSE_MESSAGE_TOO_BIG, "message too big")
            return False
        except Disconnected:
            return False
        return True

    def onPing(self, payload: bytes) -> None:
        """
        Autobahn answers with a pong here (while open); if that pong cannot
        go out now, this leg is not read until it can (L{SendBuffer.answered}).
        """
        super().onPing(payload)  # type: ignore[misc]
        if self.sendBuffer is not None and self.state == STATE_OPEN:
            self.sendBuffer.answered()

    def closeFrameReceived(self, opening: bool) -> None:
        """
        A close frame arrived.  If it opened the closing handshake (rather than
        answering ours), the other is closed with the same code and reason.

        Autobahn then closes the TCP connection gracefully, which waits for
        its write buffer to drain: a peer that stopped reading would keep it
        (and this session) for ever, so it is aborted if still there after
        the close handshake timeout.
        """
        if self.state == STATE_CLOSED:
            self.abortLater()
        if not opening:
            return
        if self.session is not None:
            self.session.closing(self.side, self.remoteCloseCode)
        other, reason = self.other, self.remoteCloseReason
        if not self.failedByProxy and other is not None:
            other.closeWith(self.remoteCloseCode, None if reason is None else reason.encode())

    def shutdown(self) -> None:
        """
        The proxy is stopping: the browser leg closes itself (and its
        upstream follows); an upstream leg waits for that.
        """

    def closeWith(self, code: int | None, reason: bytes | None) -> None:
        """Start the closing handshake on this leg, if it is open."""
        if self.state == STATE_OPEN:
            if code is None:
                reason = None
            self.sendCloseWith(code, reason)

    _abortCall: IDelayedCall | None = None

    def abortLater(self, seconds: float | None = None) -> None:
        """
        Abort this leg's connection unless it is gone within C{seconds}
        (by default the close handshake timeout, at least one second).
        """
        if self._abortCall is not None or self.transport is None:
            return
        delay = seconds if seconds is not None else max(1.0, self.closeHandshakeTimeout or 0)
        self._abortCall = self.factory.reactor.callLater(delay, self._abort)

    def _abort(self) -> None:
        self._abortCall = None
        if self.transport is not None:
            self.transport.abortConnection()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """
        This leg's connection is gone: nothing of it may linger, and the other
        is closed too unless it is closing already.
        """
        if self._abortCall is not None:
            if self._abortCall.active():
                self._abortCall.cancel()
            self._abortCall = None
        self.stopCloseHandshakeTimer()
        if self.valve is not None:
            self.valve.discard()
        session = self.session
        if session is not None:
            if self.failedByProxy and self.localCloseCode is not None:
                session.closing("proxy", self.localCloseCode)
            elif self.droppedByProxy and not self.wasClean:
                # The proxy dropped it without a closing handshake (ping timeout).
                session.closing("proxy", code)
            session.closing(self.side, code)
            session.legClosed()
        other, self.other = self.other, None
        if other is None:
            return
        other.other = None
        if self.sendBuffer is not None:
            # It may be held waiting for this transport to drain; it must
            # read again to see the end of its own closing handshake.
            self.sendBuffer.releaseFeeding()
        if self.passthrough is not None:
            self.passthrough.legGone()
        if self.failedByProxy and self.localCloseCode is not None:
            # This leg failed (e.g. 1009 message too big): pass that on.
            other.closeWith(self.localCloseCode, self.localCloseReason)
        else:
            lostCode, lostReason = self.lostCode
            other.closeWith(lostCode, lostReason)
        # Whatever its close is waiting for, the other goes too: a peer that stopped
        # reading would keep it behind a full write buffer for ever.
        other.abortLater()


def join(browser: RelayLeg, upstream: RelayLeg) -> None:
    """
    Start relaying between two open legs.

    The browser's transport was taken over from twisted.web's C{HTTPChannel},
    which is still registered as its producer (TWISTED.md section 3), so that
    is unregistered first.
    """
    browser.other, upstream.other = upstream, browser
    browser.transport.unregisterProducer()
    browser.valve = ReadingValve(browser.transport, browser.processReceived)
    upstream.valve = ReadingValve(upstream.transport, upstream.processReceived)
    browser.sendBuffer = SendBuffer(upstream.valve, browser.valve)
    upstream.sendBuffer = SendBuffer(browser.valve, upstream.valve)
    browser.transport.registerProducer(browser.sendBuffer, True)
    upstream.transport.registerProducer(upstream.sendBuffer, True)
    passThrough(browser, upstream)


__all__ = [
    "RelayLeg",
    "SessionRecord",
    "join",
    "UPSTREAM_LOST",
    "BROWSER_LOST",
]
