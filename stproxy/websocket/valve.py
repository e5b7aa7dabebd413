"""
Backpressure between the two legs of a relayed WebSocket: a peer that reads
slowly stops the proxy reading from the side that feeds it, so no more than
about one message per direction waits in the proxy's memory.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class ReadingValve:
    """
    Pauses reading from one leg while the other leg's transport is full.

    It is registered as the streaming producer of the I{other} leg's
    transport, which pauses it when its write buffer passes its high-water
    mark and resumes it once drained.  It is deliberately not the source
    transport itself: the target transport calls C{stopProducing} on its
    producer when it disconnects, and that must not abort the source.

    @ivar paused: whether reading from the source is paused by this valve.
    """

    paused = False

    def __init__(self, source: IPushProducer) -> None:
        """
        @param source: the transport to pause reading from.
        """
        self._source = source

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self._source.pauseProducing()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self._source.resumeProducing()

    def stopProducing(self) -> None:
        """The target is gone; L{RelayLeg.onClose} reopens the source."""


__all__ = ["ReadingValve"]
