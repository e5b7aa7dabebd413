"""
The HTTP leg: one client request in, the same request upstream, the response
streamed back as it arrives.

Bodies never sit whole in memory on the way back: the upstream connection is
the producer and the client connection the consumer, so a slow browser pauses
the read from Streamlit.  (Request bodies are spooled by twisted.web before
rendering starts, to memory below 100 kB and to a temporary file above; see
L{stproxy.site.ProxyRequest} for the size cap.)
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.error import DNSLookupError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.pages import errorPage
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from stproxy.headers import (
    Peer,
    TrustedProxies,
    requestHeadersForUpstream,
    responseHeadersForClient,
)
from stproxy.logs import loggerFor
from stproxy.metrics import Metrics
from stproxy.upstream import ResponseTimeout, Upstream

#: Methods that could turn stproxy into a tunnel or echo a client's cookies.
REFUSED_METHODS = frozenset({b"CONNECT", b"TRACE"})

#: What a request target may consist of (RFC 3986 characters are a subset):
#: twisted.web lets control bytes and DEL through, the HTTP client refuses them.
_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")


def peerOf(request: Request) -> Peer:
    """Who is on the other end of C{request}'s connection, for the forwarding headers."""
    address = request.getClientAddress()
    return Peer(
        address=getattr(address, "host", None),
        host=request.getHeader(b"host"),
        secure=request.isSecure(),
    )


def refusal(request: Request) -> tuple[int, str, str] | None:
    """
    Why C{request} must not be forwarded at all, as (status, title, detail),
    or C{None} when it may be.

    stproxy only ever speaks to its one upstream: a request line naming
    another host (absolute form), a tunnel, or a request whose target host
    is ambiguous never leaves the proxy.
    """
    if request.method in REFUSED_METHODS:
        return 405, "Method Not Allowed", "This server does not proxy CONNECT or TRACE."
    if not request.uri.startswith(b"/"):
        return 400, "Bad Request", "Only origin-form request targets (/path) are accepted."
    if not _VISIBLE_ASCII.fullmatch(request.uri):
        return 400, "Bad Request", "The request target holds bytes a URI may not hold."
    hosts = len(request.requestHeaders.getRawHeaders(b"host", []))
    if hosts > 1 or (hosts == 0 and request.clientproto != b"HTTP/1.0"):
        return 400, "Bad Request", "A request needs exactly one Host header."
    return None


def _hasBody(request: Request) -> bool:
    headers = request.requestHeaders
    return headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding")


class ReverseProxyResource(Resource):
    """
    Forwards every request below it, unchanged but for hop-by-hop and
    forwarding headers, to the upstream, and streams the response back.
    """

    isLeaf = True

    def __init__(
        self,
        upstream: Upstream,
        trusted: TrustedProxies = TrustedProxies(),
        logObserver: ILogObserver | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """
        @param logObserver: where log events go (see L{stproxy.logs}); the
            global publisher when C{None}.
        @param metrics: where upstream errors and timeouts are counted.
        """
        super().__init__()
        self._metrics = Metrics() if metrics is None else metrics
        self._upstream = upstream
        self._trusted = trusted
        self._logObserver = logObserver
        self._log = loggerFor(self, logObserver)
        reactor: Any = upstream.reactor
        self._cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))

    def render(self, request: Request) -> Any:
        refused = refusal(request)
        if refused is not None:
            status, title, detail = refused
            if status == 405:
                request.setHeader(b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
            self._log.info(
                "Refused {method} {uri}: {detail}",
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
                detail=detail,
            )
            return errorPage(status, title, detail).render(request)
        headers = requestHeadersForUpstream(request.requestHeaders, peerOf(request), self._trusted)
        if not headers.hasHeader(b"host"):
            # HTTP/1.0 makes Host optional (load balancer health checks often
            # send none); the upstream gets its own name.
            headers.setRawHeaders(b"host", [self._upstream.address.netloc.encode("idna")])
        body = None
        if _hasBody(request):
            request.content.seek(0)
            body = FileBodyProducer(request.content, cooperator=self._cooperator)
        _Exchange(request, self._upstream, self._logObserver, self._metrics).send(headers, body)
        return NOT_DONE_YET


@implementer(IPushProducer)
class _Exchange(Protocol):
    """
    One client request and its upstream response, from sending the request
    to the last byte of the response body.

    Once the response headers are in, it is both the client request's
    producer (a slow browser pauses the upstream read) and the protocol the
    upstream body is delivered to.  If the browser goes away at any point,
    the upstream request is cancelled or its connection closed, so nothing
    keeps reading for nobody.
    """

    def __init__(
        self,
        request: Request,
        upstream: Upstream,
        logObserver: ILogObserver | None,
        metrics: Metrics,
    ) -> None:
        self._request = request
        self._metrics = metrics
        self._upstream = upstream
        self._log = loggerFor(self, logObserver)
        self._clientGone = False
        self._pending: Any = None
        self._idle: IDelayedCall | None = None

    def send(self, headers: Any, body: Any) -> None:
        request = self._request
        request.notifyFinish().addErrback(self._lostClient)
        self._pending = pending = self._upstream.request(request.method, request.uri, headers, body)
        pending.addCallbacks(self._gotResponse, self._failed)
        pending.addErrback(
            lambda failure: self._log.failure("Proxying {uri} failed", failure, uri=request.uri)
        )

    def _lostClient(self, failure: Failure) -> None:
        self._clientGone = True
        if self._pending is not None:
            self._pending.cancel()
        self.stopProducing()

    def _gotResponse(self, response: IResponse) -> None:
        self._pending = None
        if self._clientGone:
            response.deliverBody(self)
            self.stopProducing()
            return
        request = self._request
        request.setResponseCode(response.code, response.phrase)
        request.responseHeaders = responseHeadersForClient(response.headers)
        request.defaultContentType = None
        if request.method == b"HEAD":
            length = response.headers.getRawHeaders(b"content-length")
            if length:
                request.responseHeaders.setRawHeaders(b"content-length", length[-1:])
        elif response.length is not UNKNOWN_LENGTH and response.code not in (204, 304):
            request.setHeader(b"content-length", b"%d" % (response.length,))
        request.registerProducer(self, True)
        self._progress()
        response.deliverBody(self)

    def _progress(self) -> None:
        """
        Bytes moved: (re)start the idle timer.  Like nginx's
        C{proxy_read_timeout} and C{send_timeout} together, it ends an
        exchange that moves nothing for C{--upstream-timeout} seconds, a
        stalled upstream or a client that stopped reading, so neither keeps
        two connections open for ever.
        """
        if self._idle is not None and self._idle.active():
            self._idle.reset(self._upstream.timeouts.response)
        else:
            reactor: Any = self._upstream.reactor
            self._idle = reactor.callLater(self._upstream.timeouts.response, self._stalled)

    def _stopIdleTimer(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _stalled(self) -> None:
        self._idle = None
        request = self._request
        self._log.warn(
            "Closing {method} {uri}: nothing moved for {timeout} s ({side})",
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            timeout=self._upstream.timeouts.response,
            side="the client is not reading" if self._paused else "the upstream sent nothing",
        )
        self.stopProducing()
        request.channel.forceAbortClient()

    def _failed(self, failure: Failure) -> None:
        """Answer 502 or 504, once, with a page and a log line that say why."""
        self._pending = None
        if self._clientGone:
            return
        request = self._request
        upstream = str(self._upstream.address)
        if failure.check(ResponseTimeout, TimeoutError):
            status, title, what = 504, "Gateway Timeout", "did not answer in time"
            self._metrics.upstreamTimeouts.inc()
        else:
            status, title, what = 502, "Bad Gateway", "could not be reached"
            self._metrics.upstreamConnectErrors.inc()
        reason = _describe(failure)
        self._log.error(
            "{status} for {method} {uri}: upstream {upstream} {what}: {reason}",
            status=status,
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            upstream=upstream,
            what=what,
            reason=reason,
        )
        errorPage(status, title, f"The Streamlit server at {upstream} {what} ({reason}).").render(
            request
        )

    # IPushProducer: the client side asks us to slow down or stop.
    _paused = False

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._idle is not None:
            self._progress()
        if self.transport is not None:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """Close the upstream connection this body is read from; it is not reusable now."""
        self._stopIdleTimer()
        if self.transport is not None:
            self.transport.stopProducing()

    # IProtocol: the upstream body.
    def dataReceived(self, data: bytes) -> None:
        if not self._clientGone:
            self._progress()
            self._request.write(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self._stopIdleTimer()
        if self._clientGone:
            return
        request = self._request
        request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            return
        self._log.warn(
            "Upstream response to {uri} broke off after the headers: {reason}",
            uri=request.uri.decode("latin-1"),
            reason=_describe(reason),
        )
        request.channel.loseConnection()


def _describe(failure: Failure) -> str:
    """A short human reason for an upstream failure, for the page and the log."""
    if failure.check(ResponseFailed, ResponseNeverReceived):
        reasons = [r.getErrorMessage() or r.type.__name__ for r in failure.value.reasons]
        return "connection lost: " + "; ".join(reasons)
    if failure.check(DNSLookupError):
        return "host name not found"
    return failure.getErrorMessage() or failure.value.__class__.__name__
