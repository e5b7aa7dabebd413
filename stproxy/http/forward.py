"""
The HTTP leg: what may be forwarded at all, and the resource that forwards
the rest to the upstream (L{stproxy.http.exchange} streams each response).

Request bodies are spooled by twisted.web before rendering starts, to memory
below 100 kB and to a temporary file above (L{stproxy.http.request.ProxyRequest}
caps their size).
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import ILogObserver
from twisted.web.client import FileBodyProducer
from twisted.web.pages import errorPage
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stproxy.http.exchange import Exchange
from stproxy.http.headers import Peer, TrustedProxies, requestHeadersForUpstream
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics
from stproxy.upstream.client import Upstream

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
        @param logObserver: where log events go (see L{stproxy.ops.logs}); the
            global publisher when C{None}.
        @param metrics: where upstream errors and timeouts are counted.
        """
        super().__init__()
        self._metrics = Metrics() if metrics is None else metrics
        self._upstream = upstream
        self._trusted = trusted
        self._logObserver = logObserver
        self._log = loggerFor(self, logObserver)
        reactor: IReactorTime = upstream.reactor
        self._cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))

    def render(self, request: Request) -> object:
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
            content = request.content
            assert content is not None  # spooled by twisted.web before rendering
            content.seek(0)
            body = FileBodyProducer(content, cooperator=self._cooperator)
        Exchange(request, self._upstream, self._logObserver, self._metrics).send(headers, body)
        return NOT_DONE_YET


__all__ = ["ReverseProxyResource", "refusal", "peerOf"]
