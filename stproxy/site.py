"""
The twisted.web side of the proxy: the L{Site}, its request class and the
root resource that sends each request down the HTTP or the WebSocket leg.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from stproxy.logs import loggerFor

#: The status logged and counted for a request whose client went away before
#: any answer (nginx's convention; nothing is sent).
CLIENT_CLOSED_REQUEST = 499

#: The message a client gets when its body is over the limit.
_TOO_LARGE = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 34\r\n"
    b"Connection: close\r\n\r\n"
    b"Request body exceeds server limit\n"
)


class ProxyRequest(Request):
    """
    A request whose body may not exceed the site's C{maxBodySize}.

    twisted.web reads the whole body before any resource sees the request
    and sets no limit of its own, so the cap is enforced here, as the bytes
    arrive: a declared C{Content-Length} over the cap is refused before the
    body is read, a chunked body as soon as it crosses it.  The answer is a
    413 and a closed connection, as nginx gives.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodyBytes = 0
        self._refused = False

    def _limit(self) -> int:
        """The site's cap in bytes; 0 for none.  Only a L{ProxySite} makes these requests."""
        return self.channel.site.maxBodySize

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if length is not None and limit and length > limit:
            self._refuseBody(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self.bodyBytes += len(data)
        limit = self._limit()
        if limit and self.bodyBytes > limit:
            self._refuseBody(self.bodyBytes)
            return
        super().handleContentChunk(data)

    def _refuseBody(self, size: int) -> None:
        self._refused = True
        loggerFor(self, self.channel.site.logObserver).warn(
            "Refused a request body of {size} bytes (limit {limit})",
            size=size,
            limit=self._limit(),
        )
        # Answered already: twisted.web must not invite the body with a
        # "100 Continue" after the 413.
        self.requestHeaders.removeHeader(b"expect")
        transport = self.channel.transport
        transport.write(_TOO_LARGE)
        transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    #: When the request arrived (reactor time), for the duration metric and log.
    started: float = 0.0

    def process(self) -> None:
        """Register with the site's L{Drain} while in flight, so shutdown waits for it."""
        site = self.channel.site
        self.started = site.reactor.seconds()
        if site.drain is not None:
            site.drain.requestStarted(self, self.channel)
            self.notifyFinish().addBoth(site.requestEnded, self)
        super().process()

    def write(self, data: bytes) -> None:
        """
        Add C{Strict-Transport-Security} (C{--hsts}) as the headers go out,
        so it is on every response over TLS, proxied and error pages alike,
        whatever headers the upstream sent.
        """
        if not self.startedWriting:
            value = self.channel.site.hstsHeader
            if value is not None and self.isSecure():
                self.responseHeaders.setRawHeaders(b"strict-transport-security", [value])
        super().write(data)


def isWebSocketUpgrade(request: IRequest) -> bool:
    """Whether C{request} asks to switch to the WebSocket protocol (RFC 6455 section 4.1)."""
    upgrade = request.getHeader(b"upgrade") or b""
    tokens = {token.strip().lower() for token in upgrade.split(b",")}
    return b"websocket" in tokens


class ProxyRoot(Resource):
    """
    Sends WebSocket upgrades to the relay and everything else to the HTTP
    reverse proxy, whatever the path.

    Autobahn's resource is a leaf that takes over every request under its
    path, upgrade or not, so it is only ever asked to render upgrades.
    """

    isLeaf = True

    def __init__(self, http: IResource, webSocket: IResource) -> None:
        super().__init__()
        self._http = http
        self._webSocket = webSocket

    def render(self, request: Request) -> Any:
        if isWebSocketUpgrade(request) and request.uri.startswith(b"/"):
            result = self._webSocket.render(request)
            if request.channel.transport is None:
                # The connection now belongs to the relay.
                request.channel.site.handedOver(request)
            return result
        return self._http.render(request)


class _TrackedChannel(HTTPChannel):
    """An L{HTTPChannel} that tells its site's L{Drain} when it opens and closes."""

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.site.drain is not None:
            self.site.drain.connectionOpened(self)

    def connectionLost(self, reason: Failure) -> None:
        if self.site.drain is not None:
            self.site.drain.connectionClosed(self)
        super().connectionLost(reason)


class _StdoutLog:
    """
    An access log file that is the process's real standard output (twistd
    replaces C{sys.stdout} with its log), flushed per line and never closed.
    """

    def write(self, line: str) -> None:
        sys.__stdout__.write(line)
        sys.__stdout__.flush()

    def flush(self) -> None:
        sys.__stdout__.flush()

    def close(self) -> None:
        pass


class ProxySite(Site):
    """
    The L{Site} stproxy listens with: transparent to bodies and headers,
    with a request body cap and an optional combined-format access log
    (a file path, or C{"-"} for standard output).
    """

    requestFactory = ProxyRequest

    #: Set by L{instrument}: the connection tracker, the metrics and where
    #: access events go (C{None}: no access events, only C{--access-log}).
    drain: Any = None
    metrics: Any = None
    accessLog: Any = None

    def __init__(
        self,
        root: IResource,
        reactor: Any,
        maxBodySize: int = 0,
        accessLog: str | None = None,
        logObserver: ILogObserver | None = None,
        hsts: int | None = None,
    ) -> None:
        """
        @param hsts: C{Strict-Transport-Security} max-age, in seconds, for
            responses over TLS; C{None} sends none.
        """
        toStdout = accessLog == "-"
        super().__init__(
            root,
            logPath=None if toStdout else accessLog,
            reactor=reactor,
            parsePOSTFormSubmission=False,
        )
        if toStdout:
            self.logPath = "-"  # set after __init__, which would make it a path
        self.maxBodySize = maxBodySize
        self.logObserver = logObserver
        self.hstsHeader = None if hsts is None else b"max-age=%d" % (hsts,)
        self.noisy = False

    def protocol(self) -> Any:  # type: ignore[override]
        """
        A channel that reports to L{drain}.  This is what twisted.web's own
        C{_genericHTTPChannelProtocolFactory} builds, with our channel class
        inside (C{HTTPFactory} has no public hook for the channel class).
        """
        return _GenericHTTPChannelProtocol(_TrackedChannel())

    def instrument(self, drain: Any, metrics: Any, accessLog: Any = None) -> None:
        """
        Count connections and requests in C{drain} and C{metrics}
        (L{stproxy.drain.Drain}, L{stproxy.metrics.Metrics}), and emit one
        access event per request to the L{Logger} C{accessLog}, if given.
        """
        self.drain = drain
        self.metrics = metrics
        self.accessLog = accessLog

    def handedOver(self, request: Any) -> None:
        """C{request}'s connection was taken over by the WebSocket relay."""
        if self.drain is not None:
            self.drain.connectionClosed(request.channel)
            self.drain.requestEnded(request)

    def requestEnded(self, result: object, request: Any) -> None:
        """
        C{request} is finished (or its client went away): count it, log it
        and let the drain know.  Answers and request bodies are measured in
        body bytes, as the combined log format does.
        """
        duration = self.reactor.seconds() - request.started
        aborted = isinstance(result, Failure)
        if aborted and not request.startedWriting:
            # nginx's 499: the client closed the connection before any answer.
            request.code = CLIENT_CLOSED_REQUEST
        method = request.method.decode("latin-1")
        sent = request.sentLength
        received = request.bodyBytes
        if self.metrics is not None:
            self.metrics.requestDone(method, request.code, duration, received, sent)
        if self.accessLog is not None:
            address = request.getClientAddress()
            self.accessLog.info(
                '{peer} "{method} {path}" {status} {bytes} {duration:.3f}s',
                log_access=True,
                peer=getattr(address, "host", "-"),
                method=method,
                path=request.uri.decode("latin-1"),
                status=request.code,
                bytes=sent,
                duration=round(duration, 6),
                user_agent=(request.getHeader(b"user-agent") or b"").decode("latin-1"),
                completed=not aborted,
            )
        if aborted:
            self.log(request)  # finish() logs the others; an abort never calls it
        if self.drain is not None:
            self.drain.requestEnded(request)

    def log(self, request: Any) -> None:
        """
        The combined-format line (C{--access-log}, or twistd's log when none
        is given), unless JSON access events replace the latter.
        """
        if self.accessLog is not None and not self.logPath:
            return
        super().log(request)

    def _openLogFile(self, path: str | bytes) -> Any:
        if path in ("-", b"-"):
            return _StdoutLog()
        return super()._openLogFile(path)

    def acceptableProtocols(self) -> list[bytes]:
        """HTTP/1.1 only: a WebSocket upgrade cannot happen over HTTP/2."""
        return [b"http/1.1"]


def buildSite(
    http: IResource,
    webSocket: IResource,
    reactor: Any,
    maxBodySize: int,
    accessLog: str | None,
    logObserver: ILogObserver | None = None,
    hsts: int | None = None,
) -> ProxySite:
    """Assemble the resource tree and the L{Site} around it."""
    site = ProxySite(ProxyRoot(http, webSocket), reactor, maxBodySize, accessLog, logObserver, hsts)
    site.displayTracebacks = False
    return site
