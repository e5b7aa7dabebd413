"""
The upstream leg of a relayed WebSocket: one Autobahn client connection to
Streamlit per browser connection, whose handshake is the browser's
(L{stproxy.websocket.handshake}), made by one factory per upstream
(L{UpstreamFactories}).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence
from weakref import WeakKeyDictionary

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionResponse
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory

from stproxy._autobahn import STATE_OPEN, ClientDropTimer, UpstreamHandshake, useReactorTimer
from stproxy.upstream.client import Upstream
from stproxy.websocket.footprint import ClassOptions, lighten
from stproxy.websocket.handshake import spliceHandshake
from stproxy.websocket.relay import UPSTREAM_LOST, RelayLeg
from stproxy.websocket.sessions import Sessions


class WaitingBrowser(Protocol):
    """What an upstream handshake reports to: the browser leg waiting for it."""

    def upstreamOpened(self, upstream: UpstreamProtocol, protocol: str | None) -> None:
        """The upstream accepted with C{protocol}."""

    def upstreamRefused(self, status: int | None) -> None:
        """The upstream connection ended before its handshake completed."""


# Autobahn's own classes disagree about _transport_details and peer, and it
# types message_data and localClose* narrower than what it assigns (see
# LeanProtocol in stproxy._autobahn).
class UpstreamProtocol(  # type: ignore[misc]
    UpstreamHandshake, ClientDropTimer, RelayLeg, WebSocketClientProtocol
):
    """
    The upstream leg: one Autobahn client connection per browser connection,
    every timer of it on the proxy's reactor (L{ClientDropTimer}).  Its
    subprotocols are checked against the browser's (L{offered}), not its
    factory's, which all the legs to one upstream share.
    """

    factory: UpstreamFactory
    lostCode = UPSTREAM_LOST
    side = "upstream"
    #: The browser leg waiting for this handshake, until it ends.
    browser: WaitingBrowser | None = None
    #: The handshake's request line and headers (L{upstreamRequestHead}), until sent.
    head = b""

    @property
    def tracker(self) -> Sessions:
        return self.factory.sessions

    def rewriteHandshake(self, generated: bytes) -> bytes:
        """The browser's handshake, with Autobahn's key (L{spliceHandshake})."""
        return spliceHandshake(self.head, generated)

    def onConnect(self, response: ConnectionResponse) -> None:
        self.head = b""  # sent: not kept for the session's life
        browser, self.browser = self.browser, None
        if browser is None:
            self.abandon()
        else:
            browser.upstreamOpened(self, response.protocol)

    def onOpen(self) -> None:
        lighten(self)

    def abandon(self) -> None:
        """The browser no longer waits for this connection."""
        self.browser = None
        if self.state == STATE_OPEN:
            self.closeWith(1001, b"going away")
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        browser, self.browser = self.browser, None
        if browser is not None:
            browser.upstreamRefused(self.refusedStatus)
        super().onClose(wasClean, code, reason)


class UpstreamFactory(ClassOptions, WebSocketClientFactory):
    """The client factory of every upstream leg to one upstream."""

    # Autobahn's factories subclass Twisted's generic Factory without naming
    # their protocol, so mypy wants one whose factory is a plain Factory.
    protocol = UpstreamProtocol  # type: ignore[assignment]
    noisy = False  # no "Starting factory" log line

    def __init__(self, upstream: Upstream, sessions: Sessions, maxMessageSize: int) -> None:
        super().__init__(
            upstream.address.webSocketURL("/"), useragent=None, reactor=upstream.reactor
        )
        self.sessions = sessions
        useReactorTimer(self, upstream.reactor)
        self.setProtocolOptions(
            maxMessagePayloadSize=maxMessageSize,
            failByDrop=False,
            echoCloseCodeReason=True,
            # The browser leg's deadline covers the whole upstream handshake.
            openHandshakeTimeout=0,
        )


class UpstreamFactories:
    """
    The upstream legs of one browser factory: one L{UpstreamFactory} per
    upstream (a replica), for as long as that upstream is in use.
    """

    def __init__(self, sessions: Sessions, maxMessageSize: int) -> None:
        self._sessions = sessions
        self._maxMessageSize = maxMessageSize
        self._factories: WeakKeyDictionary[Upstream, UpstreamFactory] = WeakKeyDictionary()

    def factoryFor(self, upstream: Upstream) -> UpstreamFactory:
        """The client factory of the legs to C{upstream}, made for the first of them."""
        factory = self._factories.get(upstream)
        if factory is None:
            factory = UpstreamFactory(upstream, self._sessions, self._maxMessageSize)
            self._factories[upstream] = factory
        return factory

    def connect(
        self, upstream: Upstream, browser: WaitingBrowser, offered: Sequence[str], head: bytes
    ) -> Deferred[UpstreamProtocol]:
        """
        A new connection to C{upstream} for C{browser}, which the handshake
        C{head} (L{upstreamRequestHead}) asks for the subprotocols C{offered}.
        """
        protocol: UpstreamProtocol = self.factoryFor(upstream).buildProtocol(None)
        protocol.browser, protocol.offered, protocol.head = browser, offered, head
        connecting: Deferred[Any] = upstream.endpoint().connect(_OneLeg(protocol))
        return connecting


class _OneLeg(Factory):
    """
    What the endpoint connects: the leg made for it (C{connectProtocol}
    would make a class, and log a line, per connection).
    """

    noisy = False

    def __init__(self, leg: UpstreamProtocol) -> None:
        self.leg = leg

    def buildProtocol(self, addr: IAddress | None) -> UpstreamProtocol:  # type: ignore[override]
        return self.leg


__all__ = ["UpstreamFactories", "UpstreamFactory", "UpstreamProtocol"]
