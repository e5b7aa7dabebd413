"""
The twisted.web L{Site} every public listener serves: its connections are
tracked for a graceful stop, their request heads capped and timed
(L{stproxy.http.channel}, L{stproxy.http.timeouts}), its request bodies
capped (L{stproxy.http.request}), its requests counted and logged
(L{stproxy.http.accesslog}).
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from stproxy._twisted import StandardOutputLogMixin, channelProtocol
from stproxy.auth.gate import Gate
from stproxy.auth.identity import IdentityHeaders
from stproxy.config import ACCESS_LOG_OFF, DEFAULT_MAX_HEADER_SIZE, ClientLimits
from stproxy.http.accesslog import Accounting, combinedLogWithUser
from stproxy.http.channel import ProxyChannel
from stproxy.http.request import ProxyRequest
from stproxy.http.root import ProxyRoot
from stproxy.ops.drain import Drain


class ProxySite(StandardOutputLogMixin, Site):
    """
    The L{Site} stproxy listens with: transparent to bodies and headers,
    with request head and body caps and an optional combined-format access
    log (a file path, or C{"-"} for standard output).

    @ivar drain: the tracker of open connections and requests, once
        L{instrument}ed.
    @ivar accounting: counts and logs each finished request, once
        L{instrument}ed.
    """

    requestFactory = ProxyRequest
    drain: Drain | None = None
    accounting: Accounting | None = None

    def __init__(
        self,
        root: IResource,
        reactor: IReactorTime,
        maxBodySize: int = 0,
        accessLog: str | None = None,
        logObserver: ILogObserver | None = None,
        hsts: int | None = None,
        maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
        limits: ClientLimits = ClientLimits(),
    ) -> None:
        """
        @param hsts: C{Strict-Transport-Security} max-age, in seconds, for
            responses over TLS; C{None} sends none.
        @param maxHeaderSize: the largest request head (request line and
            headers) accepted, in bytes (then 431, or 414 for the line).
        @param limits: how long clients may take (L{stproxy.http.timeouts});
            its C{maxConnections} is the listeners' (L{stproxy.edge.connections}).
        """
        toStdout = accessLog == "-"
        #: C{--access-log off}: no combined-format line for any request.
        self.accessLines = accessLog != ACCESS_LOG_OFF
        super().__init__(
            root,
            logPath=None if toStdout or not self.accessLines else accessLog,
            reactor=reactor,
            parsePOSTFormSubmission=False,
            logFormatter=combinedLogWithUser,
        )
        if toStdout:
            self.logPath = "-"  # set after __init__, which would make it a path
        self.maxBodySize = maxBodySize
        self.maxHeaderSize = maxHeaderSize
        self.limits = limits
        # The channel's own timer (L{stproxy.http.timeouts}) replaces twisted.web's.
        self.timeOut = None
        self.logObserver = logObserver
        self.hstsHeader = None if hsts is None else b"max-age=%d" % (hsts,)
        self.noisy = False
        self.displayTracebacks = False

    # HTTPFactory.protocol is annotated as a class attribute returning
    # Twisted's private wrapper class; this method builds that same wrapper.
    def protocol(self) -> IProtocol:  # type: ignore[override]
        """A channel that caps heads and reports to L{drain}, in twisted.web's own wrapper."""
        return channelProtocol(ProxyChannel(self.maxHeaderSize, self.limits, self.reactor))

    def instrument(self, drain: Drain, accounting: Accounting) -> None:
        """Track connections and requests in C{drain}; count and log them with C{accounting}."""
        self.drain = drain
        self.accounting = accounting

    def handedOver(self, request: Request) -> None:
        """C{request}'s connection was taken over by the WebSocket relay."""
        if self.drain is not None:
            self.drain.connectionClosed(request.channel)
            self.drain.requestEnded(request)

    def requestEnded(self, result: object, request: ProxyRequest) -> None:
        """C{request} is finished (or its client went away): count it, log it, tell the drain."""
        aborted = isinstance(result, Failure)
        if self.accounting is not None:
            self.accounting.requestEnded(request, request.started, request.bodyBytes, aborted)
        if aborted:
            self.log(request)  # finish() logs the others; an abort never calls it
        if self.drain is not None:
            self.drain.requestEnded(request)

    def log(self, request: HTTPRequest) -> None:
        """
        The combined-format line (C{--access-log}, or twistd's log when none
        is given), unless JSON access events replace the latter or there
        are to be none.
        """
        if not self.accessLines:
            return
        if self.accounting is not None and self.accounting.events is not None:
            if not self.logPath:
                return
        super().log(request)

    def acceptableProtocols(self) -> list[bytes]:
        """HTTP/1.1 only: a WebSocket upgrade cannot happen over HTTP/2."""
        return [b"http/1.1"]


def buildSite(
    http: IResource,
    webSocket: IResource,
    reactor: IReactorTime,
    maxBodySize: int,
    accessLog: str | None,
    logObserver: ILogObserver | None = None,
    hsts: int | None = None,
    maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE,
    limits: ClientLimits = ClientLimits(),
    gate: Gate | None = None,
    identity: IdentityHeaders = IdentityHeaders(),
    clientCertificates: bool = True,
) -> ProxySite:
    """
    The resource tree (L{ProxyRoot}: C{gate} decides who a request is from,
    C{identity} names the headers that say so) and the L{Site} around it.
    """
    root = ProxyRoot(http, webSocket, gate, identity, logObserver, clientCertificates)
    return ProxySite(
        root, reactor, maxBodySize, accessLog, logObserver, hsts, maxHeaderSize, limits
    )


__all__ = ["ProxySite", "buildSite"]
