"""
Every relayed WebSocket of one proxy: its connections, for a graceful stop,
and its sessions, for the metrics and the one log line each gets.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver

from stproxy._autobahn import requestPath
from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import DOWNSTREAM, UPSTREAM, Metrics
from stproxy.websocket.relay import RelayLeg


class Session:
    """
    One relayed WebSocket, from L{stproxy.websocket.relay.join} until both
    legs are gone: what its log line and metrics report.

    @ivar closedBy: C{"browser"}, C{"upstream"} or C{"proxy"}: the side that
        started the close (or whose connection dropped) first.
    @ivar code: the close code that side sent (1006 for a dropped connection).
    """

    closedBy: str | None = None
    code: int | None = None

    def __init__(
        self,
        browser: RelayLeg,
        upstream: RelayLeg,
        started: float,
        ended: Callable[[Session], None],
    ) -> None:
        """@param ended: called with this session once both legs are gone."""
        self.browser = browser
        self.upstream = upstream
        self.started = started
        self._ended = ended
        self._open = 2

    def closing(self, side: str, code: int | None) -> None:
        """C{side} is ending the session with C{code}; only the first one counts."""
        if self.closedBy is None:
            self.closedBy = side
            self.code = code

    def legClosed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._ended(self)


class Sessions:
    """
    The connections of either leg, from their C{connectionMade} to their
    C{connectionLost}, and the sessions joined from them.

    @ivar legs: every connection of either leg that is open now.
    @ivar closing: set by L{closeAll}: the proxy is stopping, and no new
        WebSocket may open (the resource and the browser leg answer 503).
    """

    closing = False
    _deadline = 0.0

    def __init__(
        self,
        reactor: IReactorTime,
        metrics: Metrics,
        logObserver: ILogObserver | None = None,
    ) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self._log = loggerFor(self, logObserver)
        self.legs: set[RelayLeg] = set()
        self._allGone: list[Deferred[None]] = []

    def track(self, leg: RelayLeg) -> None:
        """
        C{leg}'s connection is open.  One that opens while the proxy is
        closing is refused, and aborted at L{closeAll}'s deadline (or a
        second from now, time to refuse it, if that is sooner), so that
        nothing can keep the stop waiting.
        """
        self.legs.add(leg)
        if self.closing:
            leg.abortLater(max(1.0, self._deadline - self._reactor.seconds()))

    def forget(self, leg: RelayLeg) -> None:
        """C{leg}'s connection is gone."""
        self.legs.discard(leg)
        if not self.legs:
            waiting, self._allGone = self._allGone, []
            for d in waiting:
                d.callback(None)

    def started(self, browser: RelayLeg, upstream: RelayLeg) -> None:
        """Both legs are joined: count the session and bind its metric children."""
        metrics = self._metrics
        session = Session(browser, upstream, self._reactor.seconds(), self._ended)
        browser.session = upstream.session = session
        browser.messageCounter = metrics.relayedMessages[UPSTREAM]
        browser.byteCounter = metrics.relayedBytes[UPSTREAM]
        upstream.messageCounter = metrics.relayedMessages[DOWNSTREAM]
        upstream.byteCounter = metrics.relayedBytes[DOWNSTREAM]
        metrics.openWebSockets.inc()

    def _ended(self, session: Session) -> None:
        """One log line and the metrics for a WebSocket session whose legs are both gone."""
        self._metrics.openWebSockets.dec()
        self._metrics.webSocketClosed(session.code)
        browser, upstream = session.browser, session.upstream
        self._log.info(
            "WebSocket session {path} from {peer} ended after {duration:.3f}s:"
            " {messages_to_upstream} messages ({bytes_to_upstream} bytes) to upstream,"
            " {messages_to_browser} ({bytes_to_browser} bytes) to browser;"
            " closed by {closed_by} with {close_code}",
            log_websocket=True,
            path=requestPath(browser),  # type: ignore[arg-type]
            peer=_peer(browser),
            user=browser.user,
            duration=round(self._reactor.seconds() - session.started, 6),
            messages_to_upstream=browser.relayedMessages,
            bytes_to_upstream=browser.relayedBytes,
            messages_to_browser=upstream.relayedMessages,
            bytes_to_browser=upstream.relayedBytes,
            closed_by=session.closedBy,
            close_code=session.code,
        )

    def closeAll(self, deadline: float = 5.0) -> Deferred[None]:
        """
        Close every relayed WebSocket: browsers still waiting for the upstream
        get 503, open ones a 1001 "going away" close (the Streamlit frontend
        then reconnects), and their upstream legs follow.  Fires once every
        connection of either leg is gone; any still there after C{deadline}
        seconds (a browser that stopped reading never takes its close frame)
        is aborted.  From then on no new WebSocket opens (see L{closing}).
        """
        self.closing = True
        self._deadline = self._reactor.seconds() + deadline
        if not self.legs:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._allGone.append(d)
        for leg in list(self.legs):
            leg.shutdown()
        for leg in list(self.legs):
            leg.abortLater(deadline)
        return d


def _peer(browser: RelayLeg) -> str:
    """The browser's address, and its user when the proxy knows it: C{10.0.0.7 (alice)}."""
    address = str(getattr(browser.transport.getPeer(), "host", "unknown"))
    return address if browser.user is None else f"{address} ({browser.user})"


__all__ = ["Session", "Sessions"]
