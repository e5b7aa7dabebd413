"""
Raw passage: once both legs of a relayed WebSocket are open and neither
negotiated an extension, data frames go from one leg's transport to the
other's as the bytes they came as (TWISTED.md section 12: Autobahn's
message path costs several times more).  A browser's frames are masked:
valid client frames for Streamlit as they stand; Streamlit's are unmasked:
valid server frames for the browser.  With permessage-deflate on the browser
leg (Chromium always offers it) the session keeps the message path.

  - L{passThrough}, from L{stproxy.websocket.relay.join}, switches both legs
    between messages.  What Autobahn received and has not parsed yet is
    taken from it and read first, on the next turn of the reactor, with the
    leg's valve held meanwhile so that nothing overtakes it.
  - A L{Passthrough} reads what its leg receives, through the leg's valve
    (so backpressure is as before: a full transport stops the proxy reading
    the side that feeds it).  Data frames go to the other leg's transport;
    control frames to the leg's own Autobahn, which answers pings, matches
    its auto-ping's pongs and acts on closes (which the relay passes on with
    their codes).  Size limits, protocol errors and UTF-8 are checked by
    L{stproxy.websocket.frames}; a refused frame fails the leg with the code
    Autobahn would send (1002, 1007, 1009).
  - Nothing is written into the middle of a frame.  While a frame is half
    passed on (a read ended inside it), the other leg's own frames (pongs,
    keepalive pings, a close) and its graceful TCP close wait in its
    C{heldWrites} until the frame ends, as its peer's own answers would
    behind a frame it is sending; a peer that pings on meanwhile (past
    L{HELD_LIMIT}) is not read until the pongs are out.  If the leg whose
    frame it is goes away first, the frame can never end: the other leg's
    connection is closed without a close frame (its peer sees 1006).
  - Messages (counted at their FIN frame) and their payload bytes go to the
    metrics and the session log once per read, not once per message.
"""

from __future__ import annotations

from typing import Any, Protocol

from stproxy._autobahn import STATE_CLOSED, STATE_OPEN
from stproxy.websocket.frames import PING, FrameError, FrameReader
from stproxy.websocket.valve import ReadingValve


class Counter(Protocol):
    """A metric child (L{stproxy.ops.metrics.Metrics.relayedMessages})."""

    def inc(self, amount: float = 1) -> None: ...


class PassingLeg(Protocol):
    """What raw passage needs of a leg (L{stproxy.websocket.relay.RelayLeg})."""

    state: int
    transport: Any
    factory: Any
    valve: ReadingValve | None
    heldWrites: list[bytes] | None
    passthrough: Passthrough | None
    relayedMessages: int
    relayedBytes: int
    messageCounter: Counter
    byteCounter: Counter

    @property
    def other(self) -> object: ...

    @property
    def failedByProxy(self) -> bool: ...

    @property
    def extensionsInUse(self) -> bool: ...

    @property
    def betweenMessages(self) -> bool: ...

    @property
    def receiveLimit(self) -> int: ...

    def takeUnparsed(self) -> bytes: ...

    def autobahnReceived(self, data: bytes) -> None: ...

    def trafficReceived(self) -> None: ...

    def releaseWrites(self) -> None: ...

    def breakOff(self) -> None: ...

    def failWith(self, code: int, reason: str) -> None: ...


#: What holds a leg's valve while the bytes Autobahn had not parsed wait.
_TAKEOVER = object()

#: How much of its own frames a leg may hold behind the other leg's frame
#: before a peer that pings stops being read: a ping now and then (Streamlit
#: pings every 30 s) never stalls its leg, a flood of them does.
HELD_LIMIT = 4096


def passThrough(browser: PassingLeg, upstream: PassingLeg) -> bool:
    """
    Switch two joined legs to raw passage, unless an extension was
    negotiated (or, which joining never leaves, Autobahn is inside a
    message); say whether they switched.
    """
    if browser.extensionsInUse or upstream.extensionsInUse:
        return False
    if not (browser.betweenMessages and upstream.betweenMessages):
        return False
    browser.passthrough = Passthrough(browser, upstream)
    upstream.passthrough = Passthrough(upstream, browser)
    for leg in (browser, upstream):
        unparsed = leg.takeUnparsed()
        if unparsed and leg.valve is not None:
            leg.valve.hold(_TAKEOVER)
            leg.valve.received(unparsed)
            leg.factory.reactor.callLater(0, leg.valve.release, _TAKEOVER)
    return True


class Passthrough(FrameReader):
    """
    The frames one leg receives: data frames written to the other leg's
    transport as they came, control frames handed to this leg's Autobahn.
    """

    __slots__ = ("_leg", "_target", "_write", "_answersHeld")

    def __init__(self, leg: PassingLeg, target: PassingLeg) -> None:
        """
        @param leg: the leg whose peer's frames are read (a server, the
            browser leg, reads masked frames).
        @param target: the leg whose transport the data frames go to.
        """
        super().__init__(masked=leg.factory.isServer, limit=leg.receiveLimit)
        self._leg, self._target = leg, target
        self._write = target.transport.write
        self._answersHeld = False

    def forward(self, data: bytes) -> None:
        self._write(data)

    def accepting(self) -> bool:
        """Data frames pass on while both legs are open and joined, and are dropped after."""
        leg, target = self._leg, self._target
        return leg.state == STATE_OPEN and target.state == STATE_OPEN and leg.other is target

    def control(self, frame: bytes) -> bool:
        """
        Autobahn acts on the control frame.  Once more than L{HELD_LIMIT} of
        pongs wait for the end of the other leg's frame, this leg is not read
        until they are out (L{releaseAnswers}), as with a full transport.
        """
        leg = self._leg
        leg.autobahnReceived(frame)
        held = leg.heldWrites
        if held is not None and frame[0] & 0x0F == PING and leg.valve is not None:
            if sum(map(len, held)) > HELD_LIMIT:
                leg.valve.hold(self)
                self._answersHeld = True
        return not leg.failedByProxy and leg.state != STATE_CLOSED

    def received(self, data: bytes) -> None:
        """What the leg's peer sent next, as the leg's valve delivers it."""
        leg, target = self._leg, self._target
        messages, payloadBytes = self.messages, self.payloadBytes
        try:
            rest = self.openFrameRemaining
            if rest:
                # The other leg's held frames go out right where this frame ends.
                head, data = data[:rest], data[rest:]
                self.feed(head)
                if not self.openFrameRemaining:
                    target.releaseWrites()
                    if target.passthrough is not None:
                        target.passthrough.releaseAnswers()
            if data:
                self.feed(data)
        except FrameError as error:
            leg.failWith(error.code, error.reason)
        if self.openFrameRemaining and target.heldWrites is None:
            target.heldWrites = []
        leg.trafficReceived()
        count = self.messages - messages
        if count:
            size = self.payloadBytes - payloadBytes
            leg.relayedMessages += count
            leg.relayedBytes += size
            leg.messageCounter.inc(count)
            leg.byteCounter.inc(size)

    def releaseAnswers(self) -> None:
        """This leg's held frames are out: if a ping stopped its reading, read on."""
        if self._answersHeld:
            self._answersHeld = False
            if self._leg.valve is not None:
                self._leg.valve.release(self)

    def legGone(self) -> None:
        """
        This leg's connection is gone: a frame of it half passed on can never
        end, and nothing more can be written after it on the other leg.
        """
        if self.openFrameRemaining:
            self._target.breakOff()


__all__ = ["HELD_LIMIT", "Counter", "PassingLeg", "Passthrough", "passThrough"]
