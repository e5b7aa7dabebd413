"""
Connections in memory (C{twisted.test.iosim}) that keep TCP's flow control,
on one L{MemoryReactorClock}: a side that pauses reading leaves the data in
its peer's send buffer, which pauses the peer's producer past a high-water
mark.  Backpressure then shows without a socket, and nothing moves until the
test calls L{MemoryNetwork.flush} (or L{MemoryNetwork.advance}).
"""

from __future__ import annotations

from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import IAddress, IProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, IOPump


class MemoryTransport(FakeTransport):
    """
    An iosim transport (no TLS) with TCP's flow control: its peer reads at
    most L{readSize} bytes a turn and nothing while paused, and its streaming
    producer is paused while more than L{highWater} bytes wait to be read.
    A lost connection waits for its data to be read, and a paused peer does
    not see it end (as a paused TCP transport does not see the FIN) until it
    reads again or closes itself; an aborted one drops its data and is seen
    at once.
    """

    readSize = highWater = 65536
    peer: MemoryTransport | None = None
    reading = True
    aborted = False
    _producerPaused = False

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.stream = []
        self.disconnecting = True
        self.disconnectReason = ConnectionAborted()  # type: ignore[assignment]
        if self.peer is not None:
            self.peer.disconnectReason = ConnectionLost()  # type: ignore[assignment]

    def buffered(self) -> int:
        """Bytes written but not yet read by the peer."""
        return sum(map(len, self.stream))

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streamingProducer and not self._producerPaused:
            if self.buffered() > self.highWater:
                self._producerPaused = True
                self.producer.pauseProducing()

    def getOutBuffer(self) -> bytes | None:
        """What the peer reads next: at most L{readSize} bytes, none while it is paused."""
        if self.peer is not None and self.peer.disconnected:
            self.stream = []  # nobody left to read it
        if not self.stream or (self.peer is not None and not self.peer.reading):
            return None
        data = b"".join(self.stream)
        data, rest = data[: self.readSize], data[self.readSize :]
        self.stream = [rest] if rest else []
        if self._producerPaused and self.buffered() <= self.highWater:
            self._producerPaused = False
            if self.producer is not None:
                self.producer.resumeProducing()
        return data

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self._producerPaused = False


class _Pump(IOPump):
    """An L{IOPump} that lets a closing side's unread data reach its peer first."""

    def pump(self, debug: bool = False, advanceClock: bool = True) -> bool:
        if advanceClock:
            self.clock.advance(0)
        moved = False
        for source, target in ((self.clientIO, self.serverIO), (self.serverIO, self.clientIO)):
            data = source.getOutBuffer()
            if data:
                target.bufferReceived(data)
                moved = True
        if moved:
            return True
        for io, other in ((self.serverIO, self.clientIO), (self.clientIO, self.serverIO)):
            if io.disconnecting and not io.disconnected and not io.stream:
                if not (other.reading or other.disconnecting or io.aborted):
                    continue  # a paused TCP transport does not see the peer's FIN
                io.disconnected = True
                other.disconnecting = True
                other.reportDisconnect()
                return True
        return False


class MemoryNetwork:
    """The in-memory connections of one test, on the clock they share."""

    def __init__(self, reactor: MemoryReactorClock | None = None) -> None:
        self.reactor = MemoryReactorClock() if reactor is None else reactor
        self.pumps: list[IOPump] = []

    def connect(
        self, server: IProtocol, client: IProtocol, serverAddress: IAddress, clientAddress: IAddress
    ) -> IOPump:
        """Connect two protocols; the pump's C{client}/C{server}/C{clientIO}/C{serverIO} are theirs."""
        serverIO = MemoryTransport(server, True, serverAddress, clientAddress)
        clientIO = MemoryTransport(client, False, clientAddress, serverAddress)
        serverIO.peer, clientIO.peer = clientIO, serverIO
        pump = _Pump(client, server, clientIO, serverIO, False, clock=self.reactor)
        self.pumps.append(pump)
        server.makeConnection(serverIO)
        client.makeConnection(clientIO)
        return pump

    def pump(self) -> bool:
        """One round of moving bytes (and calls due now) on every connection."""
        count = len(self.pumps)
        self.reactor.advance(0)
        return any([pump.pump() for pump in list(self.pumps)]) or len(self.pumps) > count

    def flush(self) -> bool:
        """Move bytes until nothing moves; return whether anything did."""
        for rounds in range(1000):
            if not self.pump():
                return rounds > 0
        raise AssertionError("still moving after 1000 rounds")

    def advance(self, seconds: float) -> None:
        """Let C{seconds} pass, then L{flush}."""
        self.reactor.advance(seconds)
        self.flush()


__all__ = ["MemoryNetwork", "MemoryTransport"]
