"""
The browser's leg of a relayed WebSocket: Autobahn's server protocol, whose
opening handshake waits for the upstream's.

When a browser's handshake arrives, L{BrowserProtocol.onConnect} starts a new
connection to the upstream (L{stproxy.websocket.upstream}) with the browser's
request target, raw C{Host}, subprotocols in order, C{Origin}, cookies and
every other end-to-end header byte for byte and line for line, plus
C{X-Forwarded-*}/C{Forwarded} (L{stproxy.http.headers.forwardingHeaders}).
The browser then gets the subprotocol the upstream selected, or the
upstream's refusal status (Streamlit answers 403 to a foreign C{Origin}), 502
when the upstream cannot be reached, 503 when it hangs up without a status or
the proxy is stopping, and 504 when it has not answered within
L{stproxy.config.WebSocketSettings.handshakeTimeout}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IAddress, ISSLTransport
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from stproxy._autobahn import STATE_OPEN, requestHead, useReactorTimer
from stproxy.config import WebSocketSettings
from stproxy.http.headers import Peer, TrustedProxies, forwardingHeaders, withoutHopByHop
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics
from stproxy.routing.route import Pin, Routes
from stproxy.routing.single import asRoutes
from stproxy.upstream.client import Upstream
from stproxy.websocket.footprint import ClassOptions, lighten
from stproxy.websocket.handshake import (
    OWN_HANDSHAKE_FIELDS,
    BrowserHandshake,
    acceptHeaders,
    parseRequestHead,
    upstreamRequestHead,
)
from stproxy.websocket.options import browserLegOptions
from stproxy.websocket.relay import UPSTREAM_LOST, RelayLeg, join
from stproxy.websocket.sessions import Sessions
from stproxy.websocket.upstream import UpstreamFactories, UpstreamProtocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall


def denial(code: int) -> ConnectionDeny:
    return ConnectionDeny(code, RESPONSES.get(code, b"Error").decode("ascii"))


# Autobahn's own classes disagree about _transport_details and peer, and it
# types message_data and localClose* narrower than what it assigns (see
# LeanProtocol in stproxy._autobahn).
class BrowserProtocol(RelayLeg, WebSocketServerProtocol):  # type: ignore[misc]
    """
    The browser's leg: accepts once the upstream has, then relays.

    The pending upstream attempt lives in C{_accept} (the Deferred returned
    from L{onConnect}), C{_connecting} (the endpoint's connect), C{_upstream}
    and C{_deadline}; L{_settle} clears them all.
    """

    factory: BrowserFactory

    #: The handshake as twisted.web parsed it, when it came through
    #: L{stproxy.websocket.resource.RelayResource}.
    handshake: BrowserHandshake | None = None

    _accept: Deferred[str | None | tuple[str | None, dict[str, list[str]]]] | None = None
    #: Where this browser's session goes (L{stproxy.routing}), once decided.
    pin: Pin | None = None
    _connecting: Deferred[Any] | None = None
    _deadline: IDelayedCall | None = None
    _upstream: UpstreamProtocol | None = None
    _gone = False
    _cookies: tuple[bytes, ...] = ()  # the authentication's, for the 101

    def connectionMade(self) -> None:
        # It takes messages up to the browser's limit, and sends Streamlit's
        # up to the overall one.
        self.sendLimit = self.factory.settings.maxMessageSize
        super().connectionMade()

    @property
    def _log(self) -> Logger:
        return loggerFor(self, self.factory.logObserver)  # made when used: seldom

    @property
    def tracker(self) -> Sessions:
        return self.factory.sessions

    @property
    def _peerName(self) -> str:
        return str(getattr(self.transport.getPeer(), "host", "unknown"))

    # Autobahn's annotation leaves out the Deferred it accepts (txaio.as_future).
    def onConnect(  # type: ignore[override]
        self, request: ConnectionRequest
    ) -> Deferred[str | None | tuple[str | None, dict[str, list[str]]]]:
        # Behind twisted.web, the lines it parsed (RelayResource); otherwise
        # Autobahn's own copy of the bytes received.
        handshake, self.handshake = self.handshake, None  # not kept for the session's life
        if handshake is None:
            handshake = parseRequestHead(requestHead(self))
        target, host, headers = handshake.target, handshake.host, handshake.headers
        self.user, self._cookies = handshake.user, handshake.cookies
        if not target.startswith(b"/") or host is None:
            raise denial(400)
        if self.factory.sessions.closing:
            raise denial(503)
        secure = ISSLTransport(self.transport, None) is not None
        pin = self.factory.routes.pinSession(
            target, headers.getRawHeaders(b"cookie"), secure, request.protocols
        )
        if isinstance(pin, int):
            raise denial(pin)
        self.pin = pin
        settings = self.factory.settings
        upstream = pin.replica.upstream
        address = getattr(self.transport.getPeer(), "host", None)
        forwarded = forwardingHeaders(
            withoutHopByHop(headers, OWN_HANDSHAKE_FIELDS),
            Peer(address, host, secure),
            self.factory.trusted,
        )
        for name, value in handshake.added:
            forwarded.addRawHeader(name, value)
        head = upstreamRequestHead(target, host, forwarded)
        # A local reference: an endpoint may fail at once, and then
        # _unreachable has settled (and cleared) self._accept before connect
        # returns; Autobahn must still get the failed Deferred, not None (a 101).
        accept = self._accept = Deferred()
        self._deadline = upstream.reactor.callLater(settings.handshakeTimeout, self._timedOut)
        self._connecting = self.factory.upstreams.connect(upstream, self, request.protocols, head)
        self._connecting.addCallbacks(self._connected, self._unreachable)
        return accept

    @property
    def _where(self) -> str:
        return "unknown" if self.pin is None else str(self.pin.replica.address)

    def _connected(self, protocol: UpstreamProtocol) -> None:
        self._connecting = None
        self._upstream = protocol

    def _unreachable(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError) or self._accept is None:
            return
        self.factory.metrics.upstreamConnectErrors.inc()
        if self.pin is not None and self.pin.route.sticky and failure.check(ConnectError):
            self.pin.replica.failed(f"WebSocket connection failed: {failure.getErrorMessage()}")
        self._log.warn(
            "WebSocket upstream {upstream} unreachable for {peer}: {reason}",
            upstream=self._where,
            peer=self._peerName,
            reason=failure.getErrorMessage(),
        )
        self._settle(denial(502))

    def _timedOut(self) -> None:
        self._deadline = None
        self.factory.metrics.upstreamTimeouts.inc()
        self._log.warn(
            "WebSocket upstream {upstream} did not answer {peer} within {timeout} s",
            upstream=self._where,
            peer=self._peerName,
            timeout=self.factory.settings.handshakeTimeout,
        )
        self._settle(denial(504))

    def upstreamOpened(self, upstream: UpstreamProtocol, protocol: str | None) -> None:
        """The upstream accepted with C{protocol}: accept the browser with it."""
        accept = self._accept
        self._upstream = upstream
        self._settle(None)
        if accept is None:
            return
        pinned = () if self.pin is None or self.pin.setCookie is None else (self.pin.setCookie,)
        headers, self._cookies = acceptHeaders(pinned + self._cookies), ()
        accept.callback((protocol, headers) if headers else protocol)

    def upstreamRefused(self, status: int | None) -> None:
        """The upstream connection ended before its handshake completed."""
        if self._accept is None:
            return
        self._log.info(
            "WebSocket upstream {upstream} refused {peer} with {status}",
            upstream=self._where,
            peer=self._peerName,
            status=status,
        )
        if status is None or not 400 <= status <= 599:
            status = 503 if status is None else 502
        self._settle(denial(status))

    def _settle(self, denial: ConnectionDeny | None) -> None:
        """
        End the wait for the upstream: cancel the deadline, and unless the
        upstream opened (C{denial} is None) abandon it and refuse the browser.
        """
        accept, self._accept = self._accept, None
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        if denial is None:
            return
        if self._connecting is not None:
            self._connecting.cancel()
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.abandon()
        if accept is not None and not self._gone:
            self.factory.metrics.webSocketsRefused.labels(status=str(denial.code)).inc()
            accept.errback(denial)
        # If the browser is gone, the Deferred is dropped unfired: firing it
        # would make Autobahn open (and call onOpen) after onClose.

    def onOpen(self) -> None:
        upstream, self._upstream = self._upstream, None
        lighten(self)
        if self._gone or upstream is None:
            return  # Autobahn's late open after a lost handshake (TWISTED.md 2).
        if upstream.state != STATE_OPEN:
            self.closeWith(*UPSTREAM_LOST)
            return
        join(self, upstream)
        self.factory.sessions.started(self, upstream)
        if self.pin is not None:
            self.pin.replica.sessionOpened(self)

    def shutdown(self) -> None:
        """The proxy is stopping: refuse or close this browser (see L{Sessions.closeAll})."""
        if self._accept is not None:
            self._settle(denial(503))
        else:
            if self.session is not None and self.state == STATE_OPEN:
                self.session.closing("proxy", 1001)
            self.closeWith(1001, b"going away")

    def restart(self) -> None:
        """
        Its replica is down or gone: close with 1012 "service restart", so
        the Streamlit frontend reconnects, and is routed to one that is up.
        """
        if self.session is not None and self.state == STATE_OPEN:
            self.session.closing("proxy", UPSTREAM_LOST[0])
        self.closeWith(*UPSTREAM_LOST)
        self.abortLater()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._gone = True
        if self._accept is not None:
            self._settle(denial(503))
        if self.pin is not None:
            self.pin.replica.sessionClosed(self)
        super().onClose(wasClean, code, reason)


class BrowserFactory(ClassOptions, WebSocketServerFactory):
    """
    The server factory of every browser leg, and what those legs share.

    @ivar nextHandshake: set by L{stproxy.websocket.resource.RelayResource}
        just before Autobahn's resource builds the protocol for a request,
        and handed to that protocol (L{BrowserProtocol.handshake}).
    """

    # Autobahn's factories subclass Twisted's generic Factory without naming
    # their protocol, so mypy wants one whose factory is a plain Factory.
    protocol = BrowserProtocol  # type: ignore[assignment]
    nextHandshake: BrowserHandshake | None = None

    def __init__(
        self,
        upstream: Upstream | Routes,
        settings: WebSocketSettings,
        trusted: TrustedProxies,
        sessions: Sessions,
        logObserver: ILogObserver | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.routes = asRoutes(upstream)
        super().__init__(server=None, reactor=self.routes.reactor)
        self.settings = settings
        self.trusted = trusted
        self.sessions = sessions
        self.logObserver = logObserver
        self.metrics = Metrics() if metrics is None else metrics
        self.upstreams = UpstreamFactories(sessions, settings.maxMessageSize)
        useReactorTimer(self, self.routes.reactor)
        self.setProtocolOptions(**browserLegOptions(settings))

    def buildProtocol(self, addr: IAddress | None) -> BrowserProtocol | None:  # type: ignore[override]
        protocol = super().buildProtocol(addr)
        assert isinstance(protocol, BrowserProtocol)
        protocol.handshake, self.nextHandshake = self.nextHandshake, None
        return protocol


__all__ = ["BrowserProtocol", "BrowserFactory", "denial"]
