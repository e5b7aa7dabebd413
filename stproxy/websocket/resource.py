"""
The WebSocket leg of the proxy as a twisted.web resource: Streamlit's
C{/_stcore/stream} through Autobahn.

Before Autobahn takes the connection over, L{RelayResource} refuses, with an
ordinary HTTP answer and before any upstream connection, what the HTTP leg
refuses (L{stproxy.http.refusal.refusal}), a handshake without one valid
C{Host}, a WebSocket version other than 13 (426) and any upgrade while the
proxy stops (503), answered and logged as the HTTP leg answers its own
(L{stproxy.http.refusal.refuse}).

For each browser connection (L{stproxy.websocket.browser}, an Autobahn server
protocol behind twisted.web via Autobahn's L{WebSocketResource}) the opening
handshake is held until a new connection to the upstream
(L{stproxy.websocket.upstream}, an Autobahn client) has finished its own;
after that, L{stproxy.websocket.relay} carries messages, closes and
backpressure, and L{stproxy.websocket.sessions} counts and logs each session.
"""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver
from twisted.web.server import Request

from stproxy.config import WebSocketSettings
from stproxy.http.headers import TrustedProxies
from stproxy.http.refusal import refusal, refuse, validHost
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics
from stproxy.routing.route import Routes
from stproxy.routing.single import asRoutes
from stproxy.upstream.client import Upstream
from stproxy.websocket.browser import BrowserFactory
from stproxy.websocket.handshake import receivedHandshake
from stproxy.websocket.sessions import Sessions

#: The only WebSocket version the relay speaks (RFC 6455), on both legs.
WEBSOCKET_VERSION = b"13"


def webSocketResource(
    upstream: Upstream | Routes,
    settings: WebSocketSettings,
    trusted: TrustedProxies,
    logObserver: ILogObserver | None = None,
    metrics: Metrics | None = None,
) -> RelayResource:
    """
    A resource that takes over any request carrying C{Upgrade: websocket}
    and relays it to the same path on the replica of the app that
    L{stproxy.routing} chooses (C{upstream}: the apps, or one server).

    It does not look at the path: render it only for upgrade requests (any
    other request gets 426).

    @param logObserver: where the relay's own events go (see
        L{stproxy.ops.logs.loggerFor}); the global publisher by default.
    @param metrics: where sessions, messages and bytes are counted.
    """
    metrics = Metrics() if metrics is None else metrics
    routes = asRoutes(upstream)
    reactor: IReactorTime = routes.reactor
    sessions = Sessions(reactor, metrics, logObserver)
    factory = BrowserFactory(routes, settings, trusted, sessions, logObserver, metrics)
    return RelayResource(factory)


def upgradeRefusal(request: Request) -> tuple[int, str, str] | None:
    """
    Why the WebSocket upgrade C{request} must not be relayed, as (status,
    title, detail), or None when it may be.

    The HTTP leg's rules first (an absolute-form target, control bytes in
    it, two Host lines, a Host that is no C{host[:port]}): Autobahn would
    take them all, the two Host lines joined into one.  Then a WebSocket
    needs its Host even over HTTP/1.0, and version 13.
    """
    refused = refusal(request)
    if refused is not None:
        return refused
    hosts = request.requestHeaders.getRawHeaders(b"host", [])
    if len(hosts) != 1 or not validHost(hosts[0]):
        return 400, "Bad Request", "A WebSocket handshake needs one valid Host header."
    if request.requestHeaders.getRawHeaders(b"sec-websocket-version") != [WEBSOCKET_VERSION]:
        return 426, "Upgrade Required", "This server speaks WebSocket version 13 only."
    return None


class RelayResource(WebSocketResource):
    """
    Autobahn's resource, behind the checks above, and a way to end every
    relayed WebSocket when the service stops.

    @ivar factory: the L{BrowserFactory} behind it.
    """

    def __init__(self, factory: BrowserFactory) -> None:
        super().__init__(factory)
        self.factory = factory
        self._log = loggerFor(self, factory.logObserver)

    def render(self, request: Request) -> object:
        """
        Refuse (see L{upgradeRefusal}), or hand the request to Autobahn
        together with the header lines twisted.web parsed, which the
        browser leg sends upstream (L{stproxy.websocket.handshake}).
        """
        refused = upgradeRefusal(request)
        if refused is None and self.factory.sessions.closing:
            refused = 503, "Service Unavailable", "The proxy is stopping."
        if refused is not None:
            return self._refuse(request, *refused)
        self.factory.nextHandshake = receivedHandshake(
            request.uri,
            request.requestHeaders.copy(),
            getattr(request, "upstreamHeaders", ()),
            getattr(request, "identity", {}).get("user"),
            tuple(value for _, value in getattr(request, "authCookies", ())),
        )
        try:
            result: object = super().render(request)
        finally:
            self.factory.nextHandshake = None
        return result

    def _refuse(self, request: Request, status: int, title: str, detail: str) -> object:
        if status == 426:
            # RFC 6455 section 4.4: name the version this server speaks.
            request.setHeader(b"sec-websocket-version", WEBSOCKET_VERSION)
            request.setHeader(b"upgrade", b"websocket")
        self.factory.metrics.webSocketsRefused.labels(status=str(status)).inc()
        return refuse(request, self._log, status, title, detail)

    def closeAll(self, deadline: float = 5.0) -> Deferred[None]:
        """See L{Sessions.closeAll}."""
        return self.factory.sessions.closeAll(deadline)


__all__ = ["webSocketResource", "upgradeRefusal", "RelayResource", "WEBSOCKET_VERSION"]
