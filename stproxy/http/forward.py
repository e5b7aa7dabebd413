"""
The HTTP leg: the resource that forwards to the upstream what
L{stproxy.http.refusal} does not refuse, to the replica of the app that
L{stproxy.routing} chooses (L{stproxy.http.exchange} streams each response).

Request bodies are spooled by twisted.web before rendering starts, to memory
below 100 kB and to a temporary file above (L{stproxy.http.request.ProxyRequest}
caps their size).
"""

from __future__ import annotations

import os
from typing import IO, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import ILogObserver
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import IBodyProducer
from twisted.web.pages import errorPage
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stproxy.http.exchange import Exchange
from stproxy.http.headers import Peer, TrustedProxies, requestHeadersForUpstream
from stproxy.http.refusal import refusal, refuse, validHost
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics
from stproxy.routing.forwarding import ReplicaForwarding, uploadSession
from stproxy.routing.route import Routes
from stproxy.routing.single import asRoutes
from stproxy.upstream.client import Upstream


def peerOf(request: Request) -> Peer:
    """Who is on the other end of C{request}'s connection, for the forwarding headers."""
    address = request.getClientAddress()
    return Peer(
        address=getattr(address, "host", None),
        host=request.getHeader(b"host"),
        secure=request.isSecure(),
    )


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
        upstream: Upstream | Routes,
        trusted: TrustedProxies = TrustedProxies(),
        logObserver: ILogObserver | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """
        @param upstream: the apps and their replicas; an L{Upstream}, for
            one server serving everything.
        @param logObserver: where log events go (see L{stproxy.ops.logs}); the
            global publisher when C{None}.
        @param metrics: where upstream errors and timeouts are counted.
        """
        super().__init__()
        self._metrics = Metrics() if metrics is None else metrics
        self._routes = routes = asRoutes(upstream)
        self._trusted = trusted
        self._logObserver = logObserver
        self._log = loggerFor(self, logObserver)
        reactor: IReactorTime = routes.reactor
        self._cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))

    def render(self, request: Request) -> object:
        refused = refusal(request)
        if refused is not None:
            return refuse(request, self._log, *refused)
        path = request.path
        route = self._routes.find(path)
        if route is None:
            return errorPage(404, "Not Found", "No app is served at this path.").render(request)
        relative = route.relative(path)
        secure = request.isSecure()
        pin = route.pin(
            request.requestHeaders.getRawHeaders(b"cookie"), secure, session=uploadSession(relative)
        )
        if pin is None:
            detail = f"The app at {route.prefix} has no replica."
            return errorPage(503, "Service Unavailable", detail).render(request)
        headers = requestHeadersForUpstream(request.requestHeaders, peerOf(request), self._trusted)
        for name, value in getattr(request, "upstreamHeaders", ()):
            headers.addRawHeader(name, value)
        if not headers.hasHeader(b"host"):
            # HTTP/1.0 makes Host optional (load balancer health checks often
            # send none); the upstream gets its own name.
            headers.setRawHeaders(b"host", [pin.replica.address.netloc.encode("idna")])
        forwarding = ReplicaForwarding(
            pin, request.method, request.uri, relative, self._body(request), secure, self._log
        )
        Exchange(request, forwarding, self._logObserver, self._metrics).send(headers)
        return NOT_DONE_YET

    def _body(self, request: Request) -> Callable[[], IBodyProducer | None]:
        """The request body from its start, each time it is asked for (a retry sends it again)."""
        if not _hasBody(request):
            return lambda: None
        content = request.content
        assert content is not None  # spooled by twisted.web before rendering

        def body() -> IBodyProducer:
            return FileBodyProducer(SpooledBody(content), cooperator=self._cooperator)

        return body


class SpooledBody:
    """
    One reading of a spooled request body, from its start: what each
    attempt of a request (L{ReplicaForwarding}) sends.

    Each has its own position, so an attempt still being stopped cannot move
    another's; and closing it (L{FileBodyProducer} closes what it has read)
    leaves the spooled file open for the next attempt; twisted.web closes it
    with the request.
    """

    def __init__(self, content: IO[bytes]) -> None:
        self._content = content
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        self._content.seek(self._position)
        data = self._content.read(size)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._content.seek(0, os.SEEK_END)
            self._position = self._content.tell() + offset
        elif whence == os.SEEK_CUR:
            self._position += offset
        else:
            self._position = offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        """The spooled file stays open for another attempt."""


# refusal and validHost lived here; re-exported for existing imports.
__all__ = ["ReverseProxyResource", "SpooledBody", "refusal", "peerOf", "validHost"]
