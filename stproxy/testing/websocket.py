"""
The WebSocket relay in memory: L{MemoryUpstream} (an L{Upstream} whose
WebSocket leg connects through a L{MemoryNetwork}), L{memoryRelay} (the
relay's L{BrowserFactory} in front of it), L{connectBrowser} (straight to
the browser leg) and L{connectThroughSite} (through twisted.web), and a fake
Streamlit and a fake browser, Autobahn's own protocols that record what they
get.  Every timer runs on the network's clock.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest, ConnectionResponse
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IAddress, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump
from twisted.web.iweb import IAgent
from twisted.web.server import Site
from zope.interface import implementer

from stproxy._autobahn import ClientDropTimer, requestHead, useReactorTimer
from stproxy.config import Timeouts, WebSocketSettings
from stproxy.http.headers import TrustedProxies
from stproxy.ops.metrics import Metrics
from stproxy.testing.http import FakeUpstreamAgent
from stproxy.testing.memory import MemoryNetwork
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream
from stproxy.websocket.browser import BrowserFactory
from stproxy.websocket.resource import RelayResource
from stproxy.websocket.sessions import Sessions

STREAMLIT = UpstreamAddress("http", "127.0.0.1", 8501)
BROWSER = IPv4Address("TCP", "192.0.2.7", 40000)
PROXY = IPv4Address("TCP", "192.0.2.1", 443)


@implementer(IStreamClientEndpoint)
class _MemoryEndpoint:
    """
    Connects on the next turn of the clock, as a TCP endpoint does, or at
    once (L{MemoryUpstream.atOnce}), as an endpoint may: a refused one then
    returns a Deferred that has already failed.
    """

    def __init__(self, upstream: MemoryUpstream) -> None:
        self._upstream = upstream

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        upstream = self._upstream
        if upstream.atOnce:
            d: Deferred[IProtocol] = Deferred()
            self._attempt(factory, d)
            return d
        call = upstream.reactor.callLater(0, lambda: self._attempt(factory, d))
        d = Deferred(lambda _: call.cancel())
        return d

    def _attempt(self, factory: IProtocolFactory, d: Deferred[IProtocol]) -> None:
        upstream = self._upstream
        if upstream.server is None:
            d.errback(Failure(ConnectionRefusedError()))
            return
        address = IPv4Address("TCP", upstream.address.host, upstream.address.port)
        local = IPv4Address("TCP", "127.0.0.1", 50000 + len(upstream.connections))
        client = factory.buildProtocol(address)
        server = upstream.server.buildProtocol(local)
        assert client is not None and server is not None
        upstream.connections.append(upstream.network.connect(server, client, address, local))
        d.callback(client)


class MemoryUpstream(Upstream):
    """
    An L{Upstream} whose WebSocket leg connects in memory to C{server} (a
    L{FakeStreamlitFactory}, or any protocol factory; None refuses), and
    whose HTTP leg is a L{FakeUpstreamAgent} unless an agent is given.

    @ivar connections: the pump of each WebSocket connection made.
    @ivar atOnce: whether connections are made (or refused) within
        C{connect}, rather than on the next turn of the clock.
    """

    reactor: MemoryReactorClock
    atOnce = False

    def __init__(
        self,
        network: MemoryNetwork,
        server: IProtocolFactory | None,
        address: UpstreamAddress = STREAMLIT,
        timeouts: Timeouts = Timeouts(),
        agent: IAgent | None = None,
    ) -> None:
        super().__init__(network.reactor, address, timeouts, agent or FakeUpstreamAgent())
        self.network = network
        self.server = server
        self.connections: list[IOPump] = []

    def endpoint(self) -> IStreamClientEndpoint:
        return _MemoryEndpoint(self)


class MemoryRelay(BrowserFactory):
    """
    The relay's L{BrowserFactory} in front of one L{MemoryUpstream}, which
    tests reach as C{upstream} (its connections, its failures).
    """

    upstream: MemoryUpstream


def memoryRelay(
    network: MemoryNetwork,
    streamlit: IProtocolFactory | None,
    settings: WebSocketSettings = WebSocketSettings(),
    logObserver: ILogObserver | None = None,
    metrics: Metrics | None = None,
) -> MemoryRelay:
    """The relay's L{BrowserFactory}, in front of C{streamlit} through a L{MemoryUpstream}."""
    metrics = Metrics() if metrics is None else metrics
    upstream = MemoryUpstream(network, streamlit)
    sessions = Sessions(network.reactor, metrics, logObserver)
    relay = MemoryRelay(upstream, settings, TrustedProxies(), sessions, logObserver, metrics)
    relay.upstream = upstream
    return relay


def connectBrowser(
    network: MemoryNetwork, relay: IProtocolFactory, client: IProtocol, peer: IAddress = BROWSER
) -> IOPump:
    """Connect C{client} (a L{FakeBrowser}, or raw bytes) to C{relay} as if it had been accepted."""
    server = relay.buildProtocol(peer)
    assert server is not None
    return network.connect(server, client, PROXY, peer)


def connectThroughSite(
    network: MemoryNetwork, relay: BrowserFactory, client: IProtocol, peer: IAddress = BROWSER
) -> IOPump:
    """
    Connect C{client} to a twisted.web L{Site} whose root is C{relay}'s
    L{RelayResource}, as the proxy serves it: the handshake is parsed by
    twisted.web, checked by the resource and handed to Autobahn.  Once the
    upgrade is done, the browser leg is the pump's C{serverIO.protocol}.
    """
    site = Site(RelayResource(relay), reactor=network.reactor)
    channel = site.buildProtocol(peer)
    assert channel is not None
    return network.connect(channel, client, PROXY, peer)


class _Recording:
    """What both fakes record: each message as C{(payload, isBinary)}, and the close."""

    closed: tuple[bool, int | None, str | None] | None = None

    def connectionMade(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []
        super().connectionMade()  # type: ignore[misc]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)


class FakeStreamlit(_Recording, WebSocketServerProtocol):  # type: ignore[misc]
    """
    Keeps its handshake as received (C{head}); accepts with the first
    subprotocol offered, or refuses with C{factory.refuse}; may echo.
    """

    factory: FakeStreamlitFactory
    head: bytes | None = None

    def onConnect(self, request: ConnectionRequest) -> str | None:
        self.factory.connections.append(self)
        self.head = requestHead(self)
        if self.factory.refuse:
            raise ConnectionDeny(self.factory.refuse, "refused")
        return request.protocols[0] if request.protocols else None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        super().onMessage(payload, isBinary)
        if self.factory.echo:
            self.sendMessage(payload, isBinary)


class FakeStreamlitFactory(WebSocketServerFactory):
    """A fake Streamlit's C{/_stcore/stream}; C{options} go to C{setProtocolOptions}."""

    protocol = FakeStreamlit  # type: ignore[assignment]

    def __init__(self, reactor: Any, refuse: int | None = None, echo: bool = False, **options: Any):
        super().__init__(reactor=reactor)
        useReactorTimer(self, reactor)
        self.refuse, self.echo = refuse, echo
        self.connections: list[FakeStreamlit] = []
        self.setProtocolOptions(**options)


class FakeBrowser(_Recording, ClientDropTimer, WebSocketClientProtocol):  # type: ignore[misc]
    """Keeps the handshake's answer (C{response}, C{http_status_line}) and whether it opened."""

    response: ConnectionResponse | None = None
    opened = False

    def onConnect(self, response: ConnectionResponse) -> None:
        self.response = response

    def onOpen(self) -> None:
        self.opened = True


class FakeBrowserFactory(WebSocketClientFactory):
    """
    A browser opening C{url} with Streamlit's subprotocols; after a closing
    handshake it waits for the server to drop the connection, on the given
    reactor (L{ClientDropTimer}).
    """

    protocol = FakeBrowser

    def __init__(
        self,
        reactor: Any,
        url: str = "ws://app.example/_stcore/stream",
        protocols: tuple[str, ...] = ("streamlit", "PLACEHOLDER_AUTH_TOKEN"),
        **options: Any,
    ) -> None:
        super().__init__(url, protocols=list(protocols), reactor=reactor)
        useReactorTimer(self, reactor)
        self.setProtocolOptions(**options)


__all__ = [
    "FakeBrowser",
    "FakeBrowserFactory",
    "FakeStreamlit",
    "FakeStreamlitFactory",
    "MemoryUpstream",
    "connectBrowser",
    "connectThroughSite",
    "MemoryRelay",
    "memoryRelay",
]
