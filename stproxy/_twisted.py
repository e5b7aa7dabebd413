"""
Every private Twisted API stproxy uses, and why; nothing else in stproxy
touches one.

Each is pinned by C{tests/test__twisted.py}, which fails loudly (naming the
name) if a Twisted release renames, removes or changes it; C{setup.py} caps
Twisted below the next major version so that such a release is a decision.

  - C{twisted.web.http._GenericHTTPChannelProtocol}: the wrapper that
    C{HTTPFactory.buildProtocol} puts around every L{HTTPChannel} (it is what
    switches a TLS connection to HTTP/2 after ALPN).  C{HTTPFactory} has no
    public hook for the channel class, and stproxy's channel must report to
    its drain, so the site builds the same wrapper around its own channel.
  - C{HTTPChannel._respondToBadRequestAndDisconnect}: how twisted.web answers
    a request it cannot parse: a bare C{400} status line, no headers, nothing
    counted or logged.  stproxy's channel answers with a proper page instead
    (L{BadRequestHook}).
  - C{HTTPChannel._transferDecoder}, a C{twisted.web.http._ChunkedTransferDecoder}'s
    C{state} and C{length}: what the chunk being read declared, so that a chunk
    larger than any body allowed is refused before it is read
    (L{chunkRemaining}); no public API tells it.
  - C{twisted.web.client._HTTP11ClientFactory} and C{HTTPConnectionPool._factory}:
    the pool's per-connection factory, replaced by a quiet one so that every
    new upstream connection does not log "Starting factory", and which builds
    stproxy's own L{HTTP11ClientProtocol} (its C{_quiescentCallback} is what
    returns a connection to the pool).
  - C{HTTP11ClientProtocol._parser} and C{_giveUp}: the parser of the
    response being read and how the protocol ends a connection with a reason
    the response then fails with.  The parser keeps the upstream's
    C{Connection} header in its C{connHeaders}, out of C{response.headers}, so
    the fields it names would reach the browser; stproxy puts it back.  And
    its C{state} (C{twisted.web._newclient.STATUS}, C{HEADER}) tells whether
    the head is still arriving, for the response head size limit, which
    Twisted's client does not have (an upstream could send headers forever).
  - C{HTTP11ClientProtocol._transportProxy} and C{TransportProxyProducer._producer}:
    what the response being read pauses and resumes.  Twisted's parser pauses
    the connection when a response's headers are in and the response resumes
    it when its body is asked for, which for every response whose head and
    body arrive together is two C{epoll_ctl} calls for nothing (7% of a small
    GET); stproxy holds both while the protocol is reading and applies their
    net effect once (L{_HeldPauses}).
  - C{Agent._requestWithEndpoint}: what C{Agent.request} does once it has
    parsed the URL it is given; stproxy's one upstream is parsed once
    (L{requestParsed}), not on every request (5% of a small GET).
  - C{twisted.web._newclient.ParseError} and
    C{twisted.web.http._MalformedChunkedDataError}: what Twisted's client
    fails a response with when its status line or its chunked framing is not
    HTTP; stproxy then names the upstream as having sent an invalid response
    rather than as unreachable.
  - C{StreamServerEndpointService._raiseSynchronously}: what
    C{twisted.application.strports.service} sets so that a listener that
    cannot bind raises from C{privilegedStartService} instead of being logged
    while the process runs on without it.
  - C{ReactorBase._exitSignal}: twistd re-raises the signal that stopped the
    reactor once it has stopped; after a completed graceful drain stproxy
    clears it, so a SIGTERM ends the process with status 0, as service
    managers expect of a clean stop.
  - C{HTTPFactory._openLogFile}: documented as the override point for where
    an access log goes; stproxy's C{--access-log -} is the process's real
    standard output, which twistd has replaced by its log.
  - C{unix.Port._fromListeningDescriptor}: how C{adoptStreamPort} builds the
    port of an inherited C{AF_UNIX} socket; a C{--workers} worker adopts its
    supervisor's C{unix:} sockets with a port that neither C{chmod}s the
    socket's file to 0666 on start (its C{mode=} undone, or EPERM where the
    supervisor owns it) nor unlinks it on stop (the other workers serve it).
  - C{twisted.internet._sslverify.IOpenSSLTrustRoot}: the interface of
    C{platformTrust()} and C{trustRootFromCertificates()}, for annotations
    (no public module re-exports it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import tcp, unix
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.python.failure import Failure
from twisted.web._newclient import HEADER, STATUS, ParseError
from twisted.web.client import (
    URI,
    Agent,
    HTTP11ClientProtocol,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.http import (
    HTTPChannel,
    HTTPFactory,
    _ChunkedTransferDecoder,
    _GenericHTTPChannelProtocol,
    _MalformedChunkedDataError,
)

from stproxy.buffers import useTransferBuffer

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import (
        IListeningPort,
        IProtocol,
        IProtocolFactory,
        IPushProducer,
        IReactorTime,
        IStreamClientEndpoint,
    )
    from twisted.web._newclient import HTTPClientParser
    from twisted.web.http_headers import Headers
    from twisted.web.iweb import IBodyProducer, IResponse


def channelProtocol(channel: HTTPChannel) -> IProtocol:
    """
    The protocol twisted.web's own factory would build around C{channel}
    (C{HTTPFactory.buildProtocol} builds it around a plain L{HTTPChannel}).
    """
    protocol: IProtocol = _GenericHTTPChannelProtocol(channel)
    return protocol


class BadRequestHook:
    """Mixed into an L{HTTPChannel} before it: a request it cannot parse goes to L{badRequest}."""

    def badRequest(self) -> None:
        """Answer the request being read with a 400 and close the connection."""
        raise NotImplementedError

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.badRequest()


def chunkRemaining(channel: HTTPChannel) -> int | None:
    """
    How many more bytes the chunk C{channel} is reading declared, or C{None}
    when it is not inside a chunk of a chunked body.
    """
    decoder = getattr(channel, "_transferDecoder", None)
    if isinstance(decoder, _ChunkedTransferDecoder) and decoder.state == "BODY":
        return int(decoder.length)
    return None


class ResponseHeadTooLarge(Exception):
    """The upstream's response head (status line and headers) went past the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response head over {limit} bytes")
        self.limit = limit


#: What Twisted's client fails a response with (inside L{ResponseFailed})
#: when the upstream sent something that is not HTTP.
MALFORMED_RESPONSE: tuple[type[Exception], ...] = (
    ParseError,
    _MalformedChunkedDataError,
    ResponseHeadTooLarge,
)


class _UpstreamClientProtocol(HTTP11ClientProtocol):
    """
    Twisted's client protocol, with the upstream's C{Connection} header back
    in C{response.headers} and a cap on the size of a response head.
    """

    def __init__(self, quiescentCallback: Any, maxHeadSize: int) -> None:
        super().__init__(quiescentCallback)
        self._maxHeadSize = maxHeadSize
        self._headSize = 0
        self._held: _HeldPauses | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        useTransferBuffer(self.transport)

    def request(self, request: Any) -> Any:
        before = self._parser
        response = super().request(request)
        parser = self._parser
        if parser is not None and parser is not before:  # sent: a response will be parsed
            self._headSize = 0
            response.addCallback(_withConnectionHeader, parser)
            proxy = self._transportProxy
            if proxy is not None:
                self._held = proxy._producer = _HeldPauses(proxy)
        return response

    def _readingHead(self) -> bool:
        return self._parser is not None and self._parser.state in (STATUS, HEADER)

    def dataReceived(self, bytes: bytes) -> None:
        """Read C{bytes}, the response's pauses and resumes held till the end (L{_HeldPauses})."""
        held = self._held
        if held is None:
            self._receive(bytes)
            return
        held.holding = True
        try:
            self._receive(bytes)
        finally:
            held.release()

    def _receive(self, data: bytes) -> None:
        """
        Feed the head to the parser no further than the limit, so however the
        upstream writes, no more than the limit of it is ever parsed: a head
        that has not ended there fails.  The body goes on as it comes.
        """
        while data and self._readingHead():
            parser = self._parser
            room = self._maxHeadSize - self._headSize
            piece, data = data[:room], data[room:]
            self._headSize += len(piece)
            super().dataReceived(piece)
            if self._parser is not parser:  # answered in full, or given up
                return
            if self._readingHead() and self._headSize >= self._maxHeadSize:
                self._giveUp(Failure(ResponseHeadTooLarge(self._maxHeadSize)))
                return
        if data:
            super().dataReceived(data)


class _HeldPauses:
    """
    The upstream connection as the response being read pauses and resumes
    it: while the protocol is in C{dataReceived} (C{holding}), the calls are
    only noted, and L{release} applies their net effect once.  Nothing is
    read from the socket while a chunk is being handled anyway, so holding
    them changes nothing but the number of system calls.
    """

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy  # the response's TransportProxyProducer
        self._transport: IPushProducer = proxy._producer
        self.holding = False
        self._wanted: bool | None = None  # paused or not, as last asked while holding
        self._paused = False

    def pauseProducing(self) -> None:
        self._ask(True)

    def resumeProducing(self) -> None:
        self._ask(False)

    def stopProducing(self) -> None:
        self._wanted = None
        self._transport.stopProducing()

    def loseConnection(self) -> None:
        self._transport.loseConnection()  # type: ignore[attr-defined]

    def release(self) -> None:
        """
        Stop holding: pause or resume the connection if the calls held
        changed it, unless the response ended meanwhile (Twisted then stopped
        proxying to it and resumed it for the pool).
        """
        self.holding = False
        wanted, self._wanted = self._wanted, None
        if wanted is not None and wanted != self._paused and self._proxy._producer is self:
            self._apply(wanted)

    def _ask(self, paused: bool) -> None:
        if self.holding:
            self._wanted = paused
        else:
            self._apply(paused)

    def _apply(self, paused: bool) -> None:
        self._paused = paused
        if paused:
            self._transport.pauseProducing()
        else:
            self._transport.resumeProducing()


def requestParsed(
    agent: Agent,
    endpoint: IStreamClientEndpoint,
    method: bytes,
    uri: URI,
    headers: Headers,
    body: IBodyProducer | None,
) -> Deferred[IResponse]:
    """
    C{agent.request(method, uri.toBytes(), headers, body)} without parsing
    the URL again: C{uri.path} is sent as the request target as it is (the
    client validates it as it writes it), over a connection to C{endpoint}
    pooled under the same key C{Agent.request} would use.
    """
    key = (uri.scheme, uri.host, uri.port)
    return agent._requestWithEndpoint(key, endpoint, method, uri, headers, body, uri.path)


def _withConnectionHeader(response: IResponse, parser: HTTPClientParser) -> IResponse:
    """C{response}, its C{headers} holding the C{Connection} field the parser kept to itself."""
    connection = parser.connHeaders.getRawHeaders(b"connection")
    if connection:
        response.headers.setRawHeaders(b"connection", connection)
    return response


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False

    def __init__(self, quiescentCallback: Any, metadata: Any, maxHeadSize: int) -> None:
        super().__init__(quiescentCallback, metadata)
        self._maxHeadSize = maxHeadSize

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _UpstreamClientProtocol(self._quiescentCallback, self._maxHeadSize)


class UpstreamConnectionPool(HTTPConnectionPool):
    """
    An L{HTTPConnectionPool} whose connections do not log "Starting factory"
    each, hand the upstream's C{Connection} header on in C{response.headers}
    (so that L{stproxy.http.headers} drops the fields it names), and fail a
    response whose head is longer than C{maxHeadSize} bytes with
    L{ResponseHeadTooLarge}.
    """

    def __init__(self, reactor: IReactorTime, maxHeadSize: int) -> None:
        super().__init__(reactor, persistent=True)
        self.maxHeadSize = maxHeadSize

    # Twisted calls self._factory(quiescentCallback, metadata) for each new
    # connection (HTTPConnectionPool._newConnection); a method, so the factory
    # gets this pool's limit.
    def _factory(self, quiescentCallback: Any, metadata: Any) -> _HTTP11ClientFactory:  # type: ignore[override]
        return _QuietClientFactory(quiescentCallback, metadata, self.maxHeadSize)


def raiseBindErrorsAtStart(service: StreamServerEndpointService) -> None:
    """
    Make C{service.privilegedStartService} raise when its endpoint cannot
    listen (a busy port), as C{strports.service} arranges.
    """
    service._raiseSynchronously = True


class _InheritedUNIXPort(unix.Port):
    """A C{unix.Port} over an inherited socket that leaves the socket's file alone."""

    def startListening(self) -> None:
        # tcp.Port's: take the socket as it is (no lock file, no chmod).
        tcp.Port.startListening(self)

    def connectionLost(self, reason: Failure) -> None:
        # tcp.Port's: close this copy (never shut down: it adopted) and keep the file.
        tcp.Port.connectionLost(self, reason)


def adoptUNIXPort(reactor: object, fd: int, factory: IProtocolFactory) -> IListeningPort:
    """
    C{reactor.adoptStreamPort(fd, AF_UNIX, factory)}, leaving the socket's
    file as it is, now and when the port stops.
    """
    port: IListeningPort = _InheritedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    port.startListening()
    return port


def forgetExitSignal(reactor: object) -> None:
    """
    Let a process whose reactor was stopped by a signal exit normally: twistd
    would re-raise that signal after the reactor stops.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]


class _StandardOutput:
    """
    An access log file that is the process's real standard output (twistd
    replaces C{sys.stdout} with its log), flushed per line and never closed.
    """

    def write(self, line: str) -> None:
        stream = sys.__stdout__
        if stream is not None:
            stream.write(line)
            stream.flush()

    def flush(self) -> None:
        if sys.__stdout__ is not None:
            sys.__stdout__.flush()

    def close(self) -> None:
        pass


class StandardOutputLogMixin:
    """
    Mixed into an L{HTTPFactory} (a L{Site}) before it: a C{logPath} of
    C{"-"} writes the access log to the process's real standard output.
    """

    def _openLogFile(self, path: str | bytes) -> Any:
        if path in ("-", b"-"):
            return _StandardOutput()
        return HTTPFactory._openLogFile(self, path)  # type: ignore[arg-type]


__all__ = [
    "BadRequestHook",
    "IOpenSSLTrustRoot",
    "MALFORMED_RESPONSE",
    "ResponseHeadTooLarge",
    "UpstreamConnectionPool",
    "StandardOutputLogMixin",
    "adoptUNIXPort",
    "channelProtocol",
    "chunkRemaining",
    "forgetExitSignal",
    "raiseBindErrorsAtStart",
    "requestParsed",
]
