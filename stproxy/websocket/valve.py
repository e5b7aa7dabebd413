"""
Backpressure for the two legs of a relayed WebSocket: a leg is not read while
what reading it makes the proxy write cannot go out.

  - A peer that reads slowly stops the proxy reading from the side that feeds
    it, so no more than about one message, plus one held read, per direction
    waits in the proxy's memory.
  - A peer that asks for answers it does not read stops being read itself.
    Autobahn answers every ping with a pong on the same connection, and a
    browser never pings a server in practice: a ping flood whose pongs are
    never read would otherwise queue pongs without limit (400k pings took a
    proxy from 61 to 124 MB).  Like TCP between two endpoints, the proxy then
    leaves the pings in the peer's send buffer.

Each leg has a L{ReadingValve}, which holds back what the leg receives, and a
L{SendBuffer}, the streaming producer of its transport, which holds the
valves while that transport's write buffer is full.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: How much a held leg goes on reading (and keeping) before its transport
#: is paused: enough for a close frame and the end of the connection behind
#: it, which a paused TCP transport would never see.
HOLD_LIMIT = 64 * 1024

#: Held reads are joined into pieces of up to this size, so a peer sending one
#: byte per read costs a few pieces rather than one object (and one delivery)
#: per byte.
PIECE_SIZE = 16 * 1024


class ReadingValve:
    """
    Holds back what one leg receives while anything holds it (L{hold}): the
    other leg's full transport, or this leg's own while answers to this leg
    wait in it (L{SendBuffer}).

    A held valve does not pause the source transport at once: the source
    goes on reading, and the bytes are kept, unprocessed, until more than
    L{HOLD_LIMIT} wait.  A paused TCP transport does not notice its peer's
    FIN, so a browser that leaves while Streamlit is not reading (or the
    reverse) would otherwise keep both legs until the next ping, or for
    ever without pings; read on, its departure is seen at once unless it
    left more than that much unread behind it.
    """

    def __init__(
        self, source: IPushProducer, deliver: Callable[[bytes], None], limit: int = HOLD_LIMIT
    ) -> None:
        """
        @param source: the transport to read from.
        @param deliver: processes bytes the source received (the leg's
            Autobahn parser).
        @param limit: bytes kept before the source transport is paused.
        """
        self._source = source
        self._deliver = deliver
        self._limit = limit
        # Lists, not a set and a deque: a few entries at most (the holds,
        # HOLD_LIMIT in PIECE_SIZE pieces), and two per idle session cost
        # over a kilobyte more as a set and a deque.
        self._holds: list[object] = []
        self._held: list[bytearray] = []
        self._heldBytes = 0
        self._sourcePaused = False
        self._delivering = False

    @property
    def paused(self) -> bool:
        """Whether what the source receives is held back."""
        return bool(self._holds)

    @property
    def heldBytes(self) -> int:
        """Bytes received from the source and not yet processed."""
        return self._heldBytes

    def received(self, data: bytes) -> None:
        """The source received C{data}: process it now, or hold it."""
        if not self._holds and not self._held:
            self._deliver(data)
            return
        if self._held and len(self._held[-1]) < PIECE_SIZE:
            self._held[-1] += data
        else:
            self._held.append(bytearray(data))
        self._heldBytes += len(data)
        if self._heldBytes > self._limit and not self._sourcePaused:
            self._sourcePaused = True
            self._source.pauseProducing()

    def hold(self, cause: object) -> None:
        """Hold back what arrives until C{cause} releases it (again: no change)."""
        if cause not in self._holds:
            self._holds.append(cause)

    def release(self, cause: object) -> None:
        """
        C{cause} no longer holds the valve.  Once nothing does, what was
        held is processed, in order, until done or held again, and then the
        source reads again.  A release made while that processing is under
        way (by what it does) leaves the rest to it, in order.
        """
        if cause not in self._holds:
            return
        self._holds.remove(cause)
        if self._delivering:
            return  # released while what it held is being processed: that goes on
        self._delivering = True
        try:
            while self._held and not self._holds:
                piece = self._held.pop(0)
                self._heldBytes -= len(piece)
                self._deliver(bytes(piece))
        finally:
            self._delivering = False
        if not self._holds and self._sourcePaused:
            self._sourcePaused = False
            self._source.resumeProducing()

    def discard(self) -> None:
        """The source is gone: what it sent and was held goes nowhere."""
        self._held.clear()
        self._heldBytes = 0


@implementer(IPushProducer)
class SendBuffer:
    """
    The streaming producer of one leg's transport, which pauses it while its
    write buffer is full and resumes it once that has drained.

    While it is full, the valve of the leg that feeds this transport is held,
    and so is this leg's own valve once the leg has answered its peer here
    (L{answered}).  This leg's own valve is not held for the full buffer
    alone: what it receives goes to the other leg, and a browser falling
    behind Streamlit's stream still gets its own messages through.

    It is deliberately not the source transport itself: a transport calls
    C{stopProducing} on its producer when it disconnects, and that must not
    abort the other leg's.

    @ivar full: whether the transport's write buffer is full.
    """

    full = False

    def __init__(self, feeding: ReadingValve, own: ReadingValve) -> None:
        """
        @param feeding: the valve of the other leg, whose messages are sent here.
        @param own: the valve of the leg this transport belongs to.
        """
        self._feeding = feeding
        self._own = own

    def answered(self) -> None:
        """
        The leg has just written an answer to its peer (a pong): if that
        cannot go out now, the peer is not read until it can.  At most what
        the leg is processing when the buffer fills (one read) is answered
        past its high-water mark.
        """
        if self.full:
            self._own.hold(self)

    def pauseProducing(self) -> None:
        self.full = True
        self._feeding.hold(self)

    def resumeProducing(self) -> None:
        self.full = False
        self._feeding.release(self)
        self._own.release(self)

    def stopProducing(self) -> None:
        """The transport is gone; L{stproxy.websocket.relay.RelayLeg.onClose} calls L{releaseFeeding}."""

    def releaseFeeding(self) -> None:
        """This transport is gone: the leg that fed it may be read again, to see its own close."""
        self._feeding.release(self)


__all__ = ["ReadingValve", "SendBuffer", "HOLD_LIMIT", "PIECE_SIZE"]
