"""
The HTTP leg: what may be forwarded at all, and the resource that forwards
the rest to the upstream (L{stproxy.http.exchange} streams each response).

Request bodies are spooled by twisted.web before rendering starts, to memory
below 100 kB and to a temporary file above (L{stproxy.http.request.ProxyRequest}
caps their size).
"""

from __future__ import annotations

import ipaddress
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

#: C{host[:port]} as a Host header may hold it (RFC 9110 section 7.2): an
#: IPv6 literal in brackets, or a reg-name (which covers IPv4 addresses) of
#: RFC 3986's unreserved characters and percent-escapes.  Its sub-delims are
#: left out: C{,} and C{;} separate the values of X-Forwarded-Host and
#: Forwarded, and no DNS name holds any of them.
_HOST = re.compile(
    rb"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+)(?::[0-9]{1,5})?"
)


def peerOf(request: Request) -> Peer:
    """Who is on the other end of C{request}'s connection, for the forwarding headers."""
    address = request.getClientAddress()
    return Peer(
        address=getattr(address, "host", None),
        host=request.getHeader(b"host"),
        secure=request.isSecure(),
    )


def validHost(value: bytes) -> bool:
    """
    Whether C{value}, a Host header (or C{:authority}), is a C{host[:port]}:
    a name or an IPv4 address, or an IPv6 address in brackets, and port
    digits.  Anything else (spaces from an obs-folded line, a second host,
    user info, a path) would reach Streamlit and the forwarding headers as
    it is.
    """
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    literal = match.group("ipv6")
    if literal is None:
        return True
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        return False
    return True


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
    hosts = request.requestHeaders.getRawHeaders(b"host", [])
    if len(hosts) > 1 or (not hosts and request.clientproto != b"HTTP/1.0"):
        return 400, "Bad Request", "A request needs exactly one Host header."
    if hosts and not validHost(hosts[0]):
        return 400, "Bad Request", "The Host header is not a host[:port]."
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


__all__ = ["ReverseProxyResource", "refusal", "peerOf", "validHost"]
