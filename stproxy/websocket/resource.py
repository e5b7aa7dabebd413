"""
The WebSocket leg of the proxy as a twisted.web resource: Streamlit's
C{/_stcore/stream} through Autobahn.

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

from stproxy.config import WebSocketSettings
from stproxy.http.headers import TrustedProxies
from stproxy.ops.metrics import Metrics
from stproxy.upstream.client import Upstream
from stproxy.websocket.browser import BrowserFactory
from stproxy.websocket.sessions import Sessions


def webSocketResource(
    upstream: Upstream,
    settings: WebSocketSettings,
    trusted: TrustedProxies,
    logObserver: ILogObserver | None = None,
    metrics: Metrics | None = None,
) -> RelayResource:
    """
    A resource that takes over any request carrying C{Upgrade: websocket}
    and relays it to the same path on C{upstream}.

    It does not look at the path: render it only for upgrade requests (any
    other request gets 426).

    @param logObserver: where the relay's own events go (see
        L{stproxy.ops.logs.loggerFor}); the global publisher by default.
    @param metrics: where sessions, messages and bytes are counted.
    """
    metrics = Metrics() if metrics is None else metrics
    reactor: IReactorTime = upstream.reactor
    sessions = Sessions(reactor, metrics, logObserver)
    factory = BrowserFactory(upstream, settings, trusted, sessions, logObserver, metrics)
    return RelayResource(factory)


class RelayResource(WebSocketResource):
    """
    Autobahn's resource, plus a way to end every relayed WebSocket when the
    service stops.

    @ivar factory: the L{BrowserFactory} behind it.
    """

    def __init__(self, factory: BrowserFactory) -> None:
        super().__init__(factory)
        self.factory = factory

    def closeAll(self, deadline: float = 5.0) -> Deferred[None]:
        """See L{Sessions.closeAll}."""
        return self.factory.sessions.closeAll(deadline)


__all__ = ["webSocketResource", "RelayResource"]
