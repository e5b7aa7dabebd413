"""
How many client connections the public listeners hold at once
(C{--max-connections}), and the answer past that.

A process has so many file descriptors (C{ulimit -n}), and when accept()
finds none left every client, old or new, gets a reset or an empty reply:
1,050 idle connections against the 1,024 a service gets by default did
that for the whole of an attack.  So the open connections of every public
listener together (the admin listener apart) are counted, from accept to
close, and a connection past the cap gets a short C{503} with
C{Connection: close} instead, is counted in
C{stproxy_connections_refused_total} and logged once per burst (then a
summary every L{LOG_INTERVAL} seconds), not once per connection; past
L{MAX_REFUSING} refusals at once, it is closed without a word.  The cap
itself comes from the descriptor limit (L{stproxy.edge.descriptors}).

The count sits right above the socket, below TLS: it counts connections
whatever they become (a TLS handshake that never ends, an HTTP request, a
WebSocket the relay took over), and a refused TLS client still reads its
503 over TLS.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    ILoggingContext,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ISSLTransport,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from stproxy.edge.descriptors import RESERVED
from stproxy.http.linger import Linger
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics

#: Seconds between the log lines of a burst of refusals.
LOG_INTERVAL = 10.0

#: A refused connection is aborted after this many seconds, or sooner once
#: the client closes it, or has sent this many bytes (its request, read and
#: thrown away so that the close is no reset that could overtake the 503).
#: Aborted, not closed: over TLS the 503 waits in the TLS layer for a
#: handshake the client may never finish, and a close would wait with it.
REFUSAL_SECONDS = 2.0
REFUSAL_BYTES = 64 * 1024

#: At most this many refused connections are answered at once; past it a
#: connection is closed as soon as accepted, without a word.  Each answered
#: one holds a descriptor (and a TLS one its memory) for up to
#: L{REFUSAL_SECONDS}, beyond the cap, against the L{RESERVED} descriptors
#: kept apart for everything else.
MAX_REFUSING = RESERVED // 2

_BODY = b"The proxy is at its connection limit; try again shortly.\n"

#: The whole answer to a connection past the cap.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n" % (len(_BODY),)
) + _BODY


class ConnectionLimit:
    """
    The open client connections of every public listener, against one cap.

    @ivar open: the connections counted now.
    @ivar refusing: the refused connections still being answered (not counted in C{open}).
    """

    def __init__(
        self,
        maximum: int,
        reactor: IReactorTime,
        metrics: Metrics,
        logObserver: ILogObserver | None = None,
    ) -> None:
        self.maximum = maximum
        self.open = 0
        self.refusing = 0
        self.reactor = reactor
        self._metrics = metrics
        self._log = loggerFor(self, logObserver)
        self._refused = 0  # in the current log interval
        self._burst = 0  # since the burst began
        self._report: IDelayedCall | None = None
        metrics.connectionLimit.set(maximum)

    def resize(self, maximum: int) -> None:
        """Enforce C{maximum} from now on (once the descriptor limit is known to hold it)."""
        self.maximum = maximum
        self._metrics.connectionLimit.set(maximum)

    def stop(self) -> None:
        """The listeners are stopped: no summary of refusals is due any more."""
        if self._report is not None and self._report.active():
            self._report.cancel()
        self._report = None

    @property
    def full(self) -> bool:
        """Whether a new connection must be refused."""
        return self.open >= self.maximum

    def opened(self) -> None:
        self.open += 1
        self._metrics.clientConnections.inc()

    def closed(self) -> None:
        self.open -= 1
        self._metrics.clientConnections.dec()

    def refused(self) -> None:
        """A connection was refused: count it, and log once per burst."""
        self._metrics.connectionsRefused.inc()
        self._refused += 1
        self._burst += 1
        if self._report is None:
            self._log.warn(
                "At the connection limit ({maximum} open): refusing new connections with 503",
                maximum=self.maximum,
            )
            self._refused = 0
            self._report = self.reactor.callLater(LOG_INTERVAL, self._summarize)

    def _summarize(self) -> None:
        """One line per interval while refusing, and one when the burst is over."""
        if self._refused:
            self._log.warn(
                "Refused {count} connections in {seconds:g} s at the connection limit ({maximum})",
                count=self._refused,
                seconds=LOG_INTERVAL,
                maximum=self.maximum,
            )
            self._refused = 0
            self._report = self.reactor.callLater(LOG_INTERVAL, self._summarize)
            return
        self._log.info(
            "Below the connection limit again; {count} connections refused in all",
            count=self._burst,
        )
        self._burst = 0
        self._report = None


@implementer(IStreamServerEndpoint)
class LimitedEndpoint:
    """
    A listening endpoint whose connections count against a L{ConnectionLimit}
    from accept to close, whatever protocol holds them (twisted.web's, then
    Autobahn's), and past whose cap a connection gets L{REFUSAL}.

    For a TLS listener, give it a plain TCP endpoint and the TLS connection
    creator: TLS is layered above the count here, as C{reactor.listenSSL}
    layers it, so that Autobahn, which takes a connection over from
    twisted.web by pointing its TLS layer at a new protocol, never meets
    the count, and so that a refusal is a 503 over TLS, not a reset.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        limit: ConnectionLimit,
        tls: IOpenSSLServerConnectionCreator | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._limit = limit
        self._tls = tls

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        refusal: IProtocolFactory = Factory.forProtocol(lambda: _Refusal(self._limit))
        if self._tls is not None:
            protocolFactory = TLSMemoryBIOFactory(self._tls, False, protocolFactory)
            refusal = TLSMemoryBIOFactory(self._tls, False, refusal)
        listening: Deferred[IListeningPort] = self._endpoint.listen(
            _CountingFactory(self._limit, protocolFactory, refusal)
        )
        return listening


class _Counted(ProtocolWrapper):
    """
    A connection's protocol, counted from C{makeConnection} to
    C{connectionLost}.  It hands the protocol it wraps the transport itself
    (nothing of it is ever in the write path, and the channel sees the real
    transport); Autobahn, taking a plain connection over, finds this wrapper
    in the transport's C{protocol} and replaces its C{wrappedProtocol}, so
    the close still comes through here.
    """

    def makeConnection(self, transport: ITransport) -> None:
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self.wrappedProtocol.makeConnection(transport)

    def logPrefix(self) -> str:
        return _logPrefix(self.wrappedProtocol)


class _CountingFactory(WrappingFactory[_Counted]):
    """
    Builds each connection's protocol counted, or a refusal past the cap.

    @ivar limit: where it counts.
    """

    noisy = False

    def __init__(
        self, limit: ConnectionLimit, factory: IProtocolFactory, refusal: IProtocolFactory
    ) -> None:
        super().__init__(factory)
        self.limit = limit
        self._refusal = refusal

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:  # type: ignore[override]
        if self.limit.full:
            self.limit.refused()
            if self.limit.refusing >= MAX_REFUSING:
                return None  # the listening port closes the socket at once
            return self._refusal.buildProtocol(addr)
        protocol = self.wrappedFactory.buildProtocol(addr)
        return None if protocol is None else _Counted(self, protocol)

    def registerProtocol(self, protocol: ProtocolWrapper) -> None:
        self.limit.opened()

    def unregisterProtocol(self, protocol: ProtocolWrapper) -> None:
        self.limit.closed()

    def logPrefix(self) -> str:
        return _logPrefix(self.wrappedFactory)


def _logPrefix(wrapped: object) -> str:
    """What the wrapped protocol or factory calls itself in the logs' system field."""
    if ILoggingContext.providedBy(wrapped):
        return str(wrapped.logPrefix())
    return type(wrapped).__name__


class _Refusal(Protocol):
    """
    A connection past the cap: the 503, then what the client sends is read
    and thrown away (L{Linger}) until it closes, or until L{REFUSAL_BYTES}
    or L{REFUSAL_SECONDS}, when it is aborted.  Counted in
    L{ConnectionLimit.refusing} meanwhile.
    """

    def __init__(self, limit: ConnectionLimit) -> None:
        self._limit = limit
        self._linger = Linger(limit.reactor, self._abort, REFUSAL_BYTES, REFUSAL_SECONDS)
        self._counted = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._counted = True
        self._limit.refusing += 1
        self.transport.write(REFUSAL)
        loseWriteConnection = getattr(self.transport, "loseWriteConnection", None)
        # A FIN ends the answer for a client reading to the end; not over TLS,
        # where it would come without a close_notify.
        if loseWriteConnection is not None and not ISSLTransport.providedBy(self.transport):
            loseWriteConnection()
        self._linger.start()

    def dataReceived(self, data: bytes) -> None:
        self._linger.discard(len(data))

    def _abort(self) -> None:
        if self.transport is not None:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    def connectionLost(self, reason: object = None) -> None:
        if self._counted:
            self._counted = False
            self._limit.refusing -= 1
        self._linger.stop()


__all__ = [
    "ConnectionLimit",
    "LimitedEndpoint",
    "LOG_INTERVAL",
    "MAX_REFUSING",
    "REFUSAL",
    "REFUSAL_SECONDS",
]
