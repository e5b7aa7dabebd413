"""
The WebSocket leg of the proxy: Streamlit's C{/_stcore/stream} through Autobahn.

For each browser connection (L{BrowserProtocol}, an Autobahn server protocol
behind twisted.web via L{WebSocketResource}) the opening handshake is held
until a new connection to the upstream (L{UpstreamProtocol}, an Autobahn
client) has finished its own:

  - the upstream gets the browser's request target, its raw C{Host}, its
    subprotocol list in order, C{Origin}, C{Cookie}, C{User-Agent} and every
    other end-to-end header byte for byte, plus C{X-Forwarded-*}/C{Forwarded}
    (L{stproxy.headers.forwardingHeaders});
  - the browser gets the subprotocol the upstream selected, or the upstream's
    refusal status (Streamlit answers 403 to a foreign C{Origin}), 502 when the
    upstream cannot be reached, 503 when it hangs up without a status and 504
    when it has not answered within L{WebSocketSettings.handshakeTimeout}.

After that, L{stproxy.relay} carries messages, closes and backpressure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest, ConnectionResponse
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from stproxy.handshake import (
    OWN_HANDSHAKE_FIELDS,
    parseRequestHead,
    spliceHandshake,
    upstreamRequestHead,
)
from stproxy.headers import Peer, TrustedProxies, forwardingHeaders, withoutHopByHop
from stproxy.logs import loggerFor
from stproxy.metrics import DOWNSTREAM, UPSTREAM, Metrics
from stproxy.relay import STATE_OPEN, UPSTREAM_LOST, ReactorTimer, RelayLeg, Session, join

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall
    from twisted.web.resource import IResource

    from stproxy.upstream import Upstream


@dataclass(frozen=True)
class WebSocketSettings:
    """
    How the proxy treats WebSocket connections.

    @ivar pingInterval: seconds between pings to the browser; 0 turns them off.
    @ivar pingTimeout: the browser connection is aborted when no pong (or any
        data frame) arrives this long after a ping; 0 waits for ever.
    @ivar compression: accept permessage-deflate from browsers that offer it.
        The upstream leg never compresses (it is loopback, usually).
    @ivar maxMessageSize: the largest message relayed, either way, in bytes;
        a bigger one closes that leg with 1009.  Streamlit's own
        C{server.maxMessageSize} is 200 MB.
    @ivar handshakeTimeout: how long a browser handshake may wait for the
        upstream's answer (connection included) before it is refused with 504.
        Autobahn's C{openHandshakeTimeout} on the browser leg is one second
        more, a backstop that only drops the connection.
    """

    pingInterval: float = 30.0
    pingTimeout: float = 30.0
    compression: bool = True
    maxMessageSize: int = 200 * 1024 * 1024
    handshakeTimeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("pingInterval", "pingTimeout", "maxMessageSize"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.handshakeTimeout <= 0:
            raise ValueError("handshakeTimeout must be positive")


def webSocketResource(
    upstream: Upstream,
    settings: WebSocketSettings,
    trusted: TrustedProxies,
    logObserver: ILogObserver | None = None,
    metrics: Metrics | None = None,
) -> IResource:
    """
    A resource that takes over any request carrying C{Upgrade: websocket}
    and relays it to the same path on C{upstream}.

    It does not look at the path: render it only for upgrade requests (any
    other request gets 426).

    @param logObserver: where the relay's own events go (see
        L{stproxy.logs.loggerFor}); the global publisher by default.
    @param metrics: where sessions, messages and bytes are counted.
    """
    return RelayResource(BrowserFactory(upstream, settings, trusted, logObserver, metrics))


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
        """
        Close every relayed WebSocket: browsers still waiting for the upstream
        get 503, open ones a 1001 "going away" close (the Streamlit frontend
        then reconnects), and their upstream legs follow.  Fires once every
        connection of either leg is gone; any still there after C{deadline}
        seconds is aborted.
        """
        return self.factory.closeAll(deadline)


def _acceptDeflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def _denial(code: int) -> ConnectionDeny:
    return ConnectionDeny(code, RESPONSES.get(code, b"Error").decode("ascii"))


class BrowserProtocol(RelayLeg, WebSocketServerProtocol):
    """
    The browser's leg: accepts once the upstream has, then relays.

    The pending upstream attempt lives in C{_accept} (the Deferred returned
    from L{onConnect}), C{_connecting} (the endpoint's connect), C{_upstream}
    and C{_deadline}; L{_settle} clears them all.
    """

    factory: BrowserFactory

    _accept: Deferred[str | None] | None = None
    _connecting: Deferred[Any] | None = None
    _deadline: IDelayedCall | None = None
    _upstream: UpstreamProtocol | None = None
    _gone = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._log = loggerFor(self, self.factory.logObserver)
        self.factory.track(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        try:
            super().connectionLost(reason)
        finally:
            self.factory.forget(self)

    @property
    def _peerName(self) -> str:
        return str(getattr(self.transport.getPeer(), "host", "unknown"))

    def onConnect(self, request: ConnectionRequest) -> Deferred[str | None]:
        target, host, headers = parseRequestHead(self.http_request_data)
        if not target.startswith(b"/") or host is None:
            raise _denial(400)
        settings = self.factory.settings
        upstream = self.factory.upstream
        address = getattr(self.transport.getPeer(), "host", None)
        secure = ISSLTransport(self.transport, None) is not None
        forwarded = forwardingHeaders(
            withoutHopByHop(headers, OWN_HANDSHAKE_FIELDS),
            Peer(address, host, secure),
            self.factory.trusted,
        )
        factory = UpstreamFactory(
            self,
            protocols=request.protocols,
            head=upstreamRequestHead(target, host, forwarded),
        )
        self._accept = Deferred()
        self._deadline = upstream.reactor.callLater(  # type: ignore[attr-defined]
            settings.handshakeTimeout, self._timedOut
        )
        self._connecting = upstream.endpoint().connect(factory)
        self._connecting.addCallbacks(self._connected, self._unreachable)
        return self._accept

    def _connected(self, protocol: UpstreamProtocol) -> None:
        self._connecting = None
        self._upstream = protocol

    def _unreachable(self, failure: Failure) -> None:
        self._connecting = None
        if failure.check(CancelledError) or self._accept is None:
            return
        self.factory.metrics.upstreamConnectErrors.inc()
        self._log.warn(
            "WebSocket upstream {upstream} unreachable for {peer}: {reason}",
            upstream=str(self.factory.upstream.address),
            peer=self._peerName,
            reason=failure.getErrorMessage(),
        )
        self._settle(_denial(502))

    def _timedOut(self) -> None:
        self._deadline = None
        self.factory.metrics.upstreamTimeouts.inc()
        self._log.warn(
            "WebSocket upstream {upstream} did not answer {peer} within {timeout} s",
            upstream=str(self.factory.upstream.address),
            peer=self._peerName,
            timeout=self.factory.settings.handshakeTimeout,
        )
        self._settle(_denial(504))

    def upstreamOpened(self, upstream: UpstreamProtocol, protocol: str | None) -> None:
        """The upstream accepted with C{protocol}: accept the browser with it."""
        accept = self._accept
        self._upstream = upstream
        self._settle(None)
        if accept is not None:
            accept.callback(protocol)

    def upstreamRefused(self, status: int | None) -> None:
        """The upstream connection ended before its handshake completed."""
        if self._accept is None:
            return
        self._log.info(
            "WebSocket upstream {upstream} refused {peer} with {status}",
            upstream=str(self.factory.upstream.address),
            peer=self._peerName,
            status=status,
        )
        if status is None or not 400 <= status <= 599:
            status = 503 if status is None else 502
        self._settle(_denial(status))

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
        if self._gone or upstream is None:
            return  # Autobahn's late open after a lost handshake (TWISTED.md 2).
        if upstream.state != STATE_OPEN:
            self.closeWith(*UPSTREAM_LOST)
            return
        join(self, upstream)
        self.factory.sessionStarted(self, upstream)

    def shutdown(self) -> None:
        """The proxy is stopping: refuse or close this browser (see L{RelayResource.closeAll})."""
        if self._accept is not None:
            self._settle(_denial(503))
        else:
            if self.session is not None and self.state == STATE_OPEN:
                self.session.closing("proxy", 1001)
            self.closeWith(1001, b"going away")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._gone = True
        if self._accept is not None:
            self._settle(_denial(503))
        super().onClose(wasClean, code, reason)


class UpstreamProtocol(RelayLeg, WebSocketClientProtocol):
    """The upstream leg: one Autobahn client connection per browser connection."""

    factory: UpstreamFactory
    lostCode = UPSTREAM_LOST
    side = "upstream"

    #: The HTTP status of a refused handshake (None: no status line seen).
    refusedStatus: int | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.relay.track(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        try:
            super().connectionLost(reason)
        finally:
            self.factory.relay.forget(self)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if self.state == self.STATE_CONNECTING and data.startswith(b"GET "):
            data = spliceHandshake(self.factory.head, data)
        super().sendData(data, sync, chopsize)

    def failHandshake(self, reason: str) -> None:
        statusLine = getattr(self, "http_status_line", None) or ""
        status = statusLine.split(None, 2)[1:2]
        if status and status[0].isdigit():
            self.refusedStatus = int(status[0])
        super().failHandshake(reason)

    def onConnect(self, response: ConnectionResponse) -> None:
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


class BrowserFactory(WebSocketServerFactory):
    """
    The server factory behind L{webSocketResource}.

    @ivar legs: every connection of either leg, from its C{connectionMade}
        to its C{connectionLost}.
    """

    protocol = BrowserProtocol

    def __init__(
        self,
        upstream: Upstream,
        settings: WebSocketSettings,
        trusted: TrustedProxies,
        logObserver: ILogObserver | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(server=None, reactor=upstream.reactor)
        self.upstream = upstream
        self.settings = settings
        self.trusted = trusted
        self.logObserver = logObserver
        self.metrics = Metrics() if metrics is None else metrics
        self._sessionLog = loggerFor(self, logObserver)
        self.legs: set[RelayLeg] = set()
        self._allGone: list[Deferred[None]] = []
        self._batched_timer = ReactorTimer(upstream.reactor)  # type: ignore[arg-type]
        self.setProtocolOptions(
            webStatus=False,
            maxMessagePayloadSize=settings.maxMessageSize,
            failByDrop=False,
            echoCloseCodeReason=True,
            openHandshakeTimeout=settings.handshakeTimeout + 1.0,
            autoPingInterval=settings.pingInterval,
            autoPingTimeout=settings.pingTimeout if settings.pingInterval else 0,
            perMessageCompressionAccept=(
                _acceptDeflate if settings.compression else (lambda offers: None)
            ),
            # Streamlit decides about Origins, "null" included.
            allowNullOrigin=True,
        )

    def track(self, leg: RelayLeg) -> None:
        self.legs.add(leg)

    def forget(self, leg: RelayLeg) -> None:
        self.legs.discard(leg)
        if not self.legs:
            waiting, self._allGone = self._allGone, []
            for d in waiting:
                d.callback(None)

    def sessionStarted(self, browser: BrowserProtocol, upstream: UpstreamProtocol) -> None:
        """Both legs are joined: count the session and bind its metric children."""
        metrics = self.metrics
        session = Session(browser, upstream, self.upstream.reactor.seconds(), self._sessionEnded)  # type: ignore[attr-defined]
        browser.session = upstream.session = session
        browser.messageCounter = metrics.relayedMessages[UPSTREAM]
        browser.byteCounter = metrics.relayedBytes[UPSTREAM]
        upstream.messageCounter = metrics.relayedMessages[DOWNSTREAM]
        upstream.byteCounter = metrics.relayedBytes[DOWNSTREAM]
        metrics.openWebSockets.inc()

    def _sessionEnded(self, session: Session) -> None:
        """One log line and the metrics for a WebSocket session whose legs are both gone."""
        self.metrics.openWebSockets.dec()
        self.metrics.webSocketClosed(session.code)
        browser, upstream = session.browser, session.upstream
        self._sessionLog.info(
            "WebSocket session {path} from {peer} ended after {duration:.3f}s:"
            " {messages_to_upstream} messages ({bytes_to_upstream} bytes) to upstream,"
            " {messages_to_browser} ({bytes_to_browser} bytes) to browser;"
            " closed by {closed_by} with {close_code}",
            log_websocket=True,
            path=getattr(browser, "http_request_path", None),
            peer=getattr(browser.transport.getPeer(), "host", "unknown"),
            duration=round(self.upstream.reactor.seconds() - session.started, 6),  # type: ignore[attr-defined]
            messages_to_upstream=browser.relayedMessages,
            bytes_to_upstream=browser.relayedBytes,
            messages_to_browser=upstream.relayedMessages,
            bytes_to_browser=upstream.relayedBytes,
            closed_by=session.closedBy,
            close_code=session.code,
        )

    def closeAll(self, deadline: float = 5.0) -> Deferred[None]:
        """
        See L{RelayResource.closeAll}.  A leg still connected C{deadline}
        seconds later (a browser that stopped reading never takes its close
        frame) is aborted.
        """
        if not self.legs:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._allGone.append(d)
        for leg in list(self.legs):
            if isinstance(leg, BrowserProtocol):
                leg.shutdown()
        for leg in list(self.legs):
            leg.abortLater(deadline)
        return d


class UpstreamFactory(WebSocketClientFactory):
    """
    The client factory of one upstream connection.

    Autobahn checks the upstream's selected subprotocol against its factory's
    list (TWISTED.md section 4), so each browser connection gets its own.

    @ivar browser: the browser leg waiting for this handshake, until it ends.
    @ivar head: the handshake's request line and headers (L{upstreamRequestHead}).
    """

    protocol = UpstreamProtocol
    noisy = False  # no "Starting factory" log line per WebSocket

    def __init__(self, browser: BrowserProtocol, protocols: list[str], head: bytes) -> None:
        upstream = browser.factory.upstream
        super().__init__(
            upstream.address.webSocketURL("/"),
            protocols=protocols,
            useragent=None,
            reactor=upstream.reactor,
        )
        self.browser: BrowserProtocol | None = browser
        self.head = head
        self.relay = browser.factory
        self._batched_timer = ReactorTimer(upstream.reactor)  # type: ignore[arg-type]
        self.setProtocolOptions(
            maxMessagePayloadSize=browser.factory.settings.maxMessageSize,
            failByDrop=False,
            echoCloseCodeReason=True,
            # The browser leg's deadline covers the whole upstream handshake.
            openHandshakeTimeout=0,
        )


__all__ = [
    "WebSocketSettings",
    "webSocketResource",
    "RelayResource",
    "BrowserProtocol",
    "UpstreamProtocol",
]
