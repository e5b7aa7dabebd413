"""
A L{ProxySite} over two recording resources (the HTTP and the WebSocket side), instrumented as
the service instruments it (metrics, JSON access events, optionally a combined access log), and
client connections to it over C{StringTransport}s fed raw bytes.

For what the site and its channel do before any resource is involved: head and body limits,
refusals, how a connection closes.  Used by the tests under ``tests/http/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, ISSLTransport, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from stproxy.config import DEFAULT_MAX_HEADER_SIZE, ClientLimits
from stproxy.edge.connections import ConnectionLimit, LimitedEndpoint
from stproxy.http.accesslog import Accounting
from stproxy.http.site import buildSite
from stproxy.ops.drain import Drain
from stproxy.ops.metrics import Metrics

__all__ = ["Answer", "Connection", "Recorder", "Server", "listenedFactory", "parse"]


class Recorder(Resource):
    """Answers C{ok} to everything, and keeps the requests it rendered."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> bytes:
        self.requests.append(request)
        return b"ok"


class Server:
    """A ProxySite over two L{Recorder}s, counting in C{metrics} and logging to C{events}."""

    def __init__(
        self,
        maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
        maxBodySize: int = 0,
        hsts: int | None = None,
        accessLog: str | None = None,
        limits: ClientLimits = ClientLimits(),
    ) -> None:
        """@param limits: the timeouts, and with C{maxConnections} a connection cap."""
        self.clock = MemoryReactorClock()
        self.metrics = Metrics()
        self.events: list[dict[str, Any]] = []
        self.http = Recorder()
        self.webSocket = Recorder()
        self.site = buildSite(
            self.http,
            self.webSocket,
            self.clock,
            maxBodySize,
            accessLog,
            hsts=hsts,
            maxHeaderSize=maxHeaderSize,
            limits=limits,
        )
        events = Logger("stproxy.access", None, self.events.append)
        self.site.instrument(Drain(self.clock, self.metrics), Accounting(self.clock, self.metrics, events))
        #: What connections are built by: the site, or with a connection cap the factory that counts them.
        self.listener: IProtocolFactory = self.site
        if limits.maxConnections is not None:
            self.limit = ConnectionLimit(limits.maxConnections, self.clock, self.metrics, self.events.append)
            self.listener = listenedFactory(self.limit, self.site)

    def connect(self, secure: bool = False, halfClose: bool = False) -> Connection:
        """
        A new client connection: over TLS, as far as the site can tell, when C{secure}; on a
        transport that can half-close (as TCP's can) when C{halfClose} or C{secure}.
        """
        return Connection(self, TLSTransport if secure else HalfCloseTransport if halfClose else StringTransport)

    def counted(self, method: str, statusClass: str) -> float:
        """How many requests the metrics counted for C{method} and C{statusClass} (C{"4xx"})."""
        value = self.metrics.registry.get_sample_value(
            "stproxy_http_requests_total", {"method": method, "status_class": statusClass}
        )
        return value or 0.0


@implementer(IStreamServerEndpoint)
class _Recording:
    """An endpoint that only keeps the factory it is asked to listen with."""

    factory: IProtocolFactory

    def listen(self, factory: IProtocolFactory) -> Deferred[None]:
        self.factory = factory
        return succeed(None)


def listenedFactory(limit: ConnectionLimit, factory: IProtocolFactory) -> IProtocolFactory:
    """The factory a L{LimitedEndpoint} counting in C{limit} listens with for C{factory}."""
    recording = _Recording()
    LimitedEndpoint(recording, limit).listen(factory)
    return recording.factory


class HalfCloseTransport(StringTransport):
    """A C{StringTransport} that can end its output while still reading, as TCP's can."""

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


@implementer(ISSLTransport)
class TLSTransport(HalfCloseTransport):
    """A transport the site takes for a TLS connection (Twisted's have C{loseWriteConnection} too)."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class Connection:
    """One client connection to a L{Server}'s site."""

    def __init__(self, server: Server, transport: type[StringTransport]) -> None:
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        self.protocol = server.listener.buildProtocol(peer)
        self.transport = transport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def output(self) -> bytes:
        return self.transport.value()

    @property
    def closed(self) -> bool:
        """Whether the proxy has closed the connection."""
        return bool(self.transport.disconnecting)


@dataclass
class Answer:
    """One HTTP/1.1 response, as the client reads it."""

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def parse(output: bytes) -> list[Answer]:
    """The responses in C{output}, each with a C{Content-Length} body (as the proxy's own are)."""
    answers = []
    while output:
        head, _, output = output.partition(b"\r\n\r\n")
        statusLine, *lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(headers.get(b"content-length", [b"0"])[0])
        body, output = output[:length], output[length:]
        answers.append(Answer(int(statusLine.split(b" ")[1]), headers, body))
    return answers
