"""
The upstream leg of a relayed WebSocket: one Autobahn client connection to
Streamlit per browser connection, whose handshake is the browser's
(L{stproxy.websocket.handshake}).
"""

from __future__ import annotations

from typing import Protocol

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionResponse

from stproxy._autobahn import STATE_OPEN, ClientDropTimer, UpstreamHandshake, useReactorTimer
from stproxy.upstream.client import Upstream
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
    every timer of it on the proxy's reactor (L{ClientDropTimer}).
    """

    factory: UpstreamFactory
    lostCode = UPSTREAM_LOST
    side = "upstream"

    @property
    def tracker(self) -> Sessions:
        return self.factory.sessions

    def rewriteHandshake(self, generated: bytes) -> bytes:
        """The browser's handshake, with Autobahn's key (L{spliceHandshake})."""
        return spliceHandshake(self.factory.head, generated)

    def onConnect(self, response: ConnectionResponse) -> None:
        self.factory.head = b""  # sent: not kept for the session's life
        browser, self.factory.browser = self.factory.browser, None
        if browser is None:
            self.abandon()
        else:
            browser.upstreamOpened(self, response.protocol)

    def abandon(self) -> None:
        """The browser no longer waits for this connection."""
        self.factory.browser = None
        if self.state == STATE_OPEN:
            self.closeWith(1001, b"going away")
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        browser, self.factory.browser = self.factory.browser, None
        if browser is not None:
            browser.upstreamRefused(self.refusedStatus)
        super().onClose(wasClean, code, reason)


class UpstreamFactory(WebSocketClientFactory):
    """
    The client factory of one upstream connection.

    Autobahn checks the upstream's selected subprotocol against its factory's
    list (TWISTED.md section 4), so each browser connection gets its own.

    @ivar browser: the browser leg waiting for this handshake, until it ends.
    @ivar head: the handshake's request line and headers (L{upstreamRequestHead}).
    """

    # Autobahn's factories subclass Twisted's generic Factory without naming
    # their protocol, so mypy wants one whose factory is a plain Factory.
    protocol = UpstreamProtocol  # type: ignore[assignment]
    noisy = False  # no "Starting factory" log line per WebSocket

    def __init__(
        self,
        browser: WaitingBrowser,
        upstream: Upstream,
        sessions: Sessions,
        protocols: list[str],
        head: bytes,
        maxMessageSize: int,
    ) -> None:
        super().__init__(
            upstream.address.webSocketURL("/"),
            protocols=protocols,
            useragent=None,
            reactor=upstream.reactor,
        )
        self.browser: WaitingBrowser | None = browser
        self.sessions = sessions
        self.head = head
        useReactorTimer(self, upstream.reactor)
        self.setProtocolOptions(
            maxMessagePayloadSize=maxMessageSize,
            failByDrop=False,
            echoCloseCodeReason=True,
            # The browser leg's deadline covers the whole upstream handshake.
            openHandshakeTimeout=0,
        )


__all__ = ["UpstreamProtocol", "UpstreamFactory"]
