"""
Backpressure between the two legs of a relayed WebSocket: a peer that reads
slowly stops the proxy reading from the side that feeds it, so no more than
about one message, plus one held read, per direction waits in the proxy's
memory.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: How much a held leg goes on reading (and keeping) before its transport
#: is paused: enough for a close frame and the end of the connection behind
#: it, which a paused TCP transport would never see.
HOLD_LIMIT = 64 * 1024


@implementer(IPushProducer)
class ReadingValve:
    """
    Holds back what one leg receives while the other leg's transport is full.

    It is registered as the streaming producer of the I{other} leg's
    transport, which pauses it when its write buffer passes its high-water
    mark and resumes it once drained.  It is deliberately not the source
    transport itself: the target transport calls C{stopProducing} on its
    producer when it disconnects, and that must not abort the source.

    A paused valve does not pause the source transport at once: the source
    goes on reading, and the bytes are kept, unprocessed, until more than
    L{HOLD_LIMIT} wait.  A paused TCP transport does not notice its peer's
    FIN, so a browser that leaves while Streamlit is not reading (or the
    reverse) would otherwise keep both legs until the next ping, or for
    ever without pings; read on, its departure is seen at once unless it
    left more than that much unread behind it.

    @ivar paused: whether what the source receives is held back.
    """

    paused = False

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
        self._held: list[bytes] = []
        self._heldBytes = 0
        self._sourcePaused = False

    @property
    def heldBytes(self) -> int:
        """Bytes received from the source and not yet processed."""
        return self._heldBytes

    def received(self, data: bytes) -> None:
        """The source received C{data}: process it now, or hold it."""
        if not self.paused and not self._held:
            self._deliver(data)
            return
        self._held.append(data)
        self._heldBytes += len(data)
        if self._heldBytes > self._limit and not self._sourcePaused:
            self._sourcePaused = True
            self._source.pauseProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Process what was held, in order, until done or paused again, then
        let the source read again.
        """
        if not self.paused:
            return
        self.paused = False
        while self._held and not self.paused:
            data = self._held.pop(0)
            self._heldBytes -= len(data)
            self._deliver(data)
        if not self.paused and self._sourcePaused:
            self._sourcePaused = False
            self._source.resumeProducing()

    def stopProducing(self) -> None:
        """The target is gone; L{RelayLeg.onClose} reopens the source."""

    def discard(self) -> None:
        """The source is gone: what it sent and was held goes nowhere."""
        self._held = []
        self._heldBytes = 0


__all__ = ["ReadingValve", "HOLD_LIMIT"]
