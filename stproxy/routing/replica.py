"""
One Streamlit process of an app, as the router sees it: where it is, whether
it may take new sessions, and the WebSocket sessions it holds.

Streamlit keeps a session (its WebSocket, its uploads, its media files, its
login state) in one process, so the router pins each browser to one replica
(L{stproxy.routing.affinity}); this is what it pins to.  A replica is:

  - up: it takes new browsers, and keeps its own;
  - down: its health check failed or a connection to it was refused; it
    takes no browser, and the WebSockets it held are closed with 1012 so the
    Streamlit frontend reconnects, through the router, to a replica that is
    up; it comes back up when its health check passes again;
  - draining: it left the set (DNS no longer names it); its browsers keep
    their HTTP requests there and its WebSockets stay open, but no new
    session starts on it, until they close or the drain deadline passes.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Callable, Protocol

from twisted.logger import Logger

from stproxy.upstream.address import UpstreamAddress

if TYPE_CHECKING:
    from stproxy.routing.metrics import ReplicaMetrics
    from stproxy.upstream.client import Upstream

UP = "up"
DOWN = "down"
DRAINING = "draining"


def replicaId(address: UpstreamAddress) -> str:
    """
    A short name for C{address} that every stproxy process derives alike
    (no shared state): 12 hex digits of the SHA-256 of C{scheme://host:port}.
    """
    return hashlib.sha256(str(address).encode("utf-8")).hexdigest()[:12]


class SessionLeg(Protocol):
    """The browser leg of a WebSocket session held by a replica."""

    def restart(self) -> None:
        """Close the session toward the browser with 1012, so that it reconnects."""


class Replica:
    """
    One replica of one app.

    @ivar id: L{replicaId} of its address, what the affinity cookie names.
    @ivar upstream: the client that reaches it (its own pool and address).
    @ivar state: L{UP}, L{DOWN} or L{DRAINING}.
    @ivar sessions: the browser legs of the WebSocket sessions open on it.
    @ivar log: where its state changes are logged.
    """

    def __init__(
        self,
        upstream: Upstream,
        route: str,
        metrics: ReplicaMetrics,
        log: Logger,
        state: str = UP,
    ) -> None:
        """
        @param route: the prefix of the app it serves, for log lines.
        @param state: its state at first: L{UP} (it is tried, and its health
            check takes it down if it does not answer) or L{DOWN}.
        """
        self.upstream = upstream
        self.address = upstream.address
        self.id = replicaId(self.address)
        self.route = route
        self.state = state
        self.sessions: set[SessionLeg] = set()
        #: Called once a draining replica has no session left (L{ReplicaSet}).
        self.drained: Callable[[Replica], None] | None = None
        #: Set when it has left the set for good: its metrics are forgotten.
        self.retired = False
        self._metrics = metrics
        self.log = log
        metrics.up(self, state == UP)
        metrics.sessions(self, 0)

    def __repr__(self) -> str:
        return f"<Replica {self.address} of {self.route} {self.state}>"

    @property
    def isUp(self) -> bool:
        return self.state == UP

    def passed(self, why: str) -> None:
        """Its health check passed: a down replica is up again (a draining one stays draining)."""
        if self.state == DOWN:
            self._become(UP, why)

    def failed(self, why: str) -> None:
        """
        It does not answer: no new browser goes to it, and the sessions it
        held are told to reconnect elsewhere (1012).
        """
        if self.state == UP:
            self._become(DOWN, why)
            self.restartSessions()

    def drain(self, why: str) -> None:
        """It left the set: keep its sessions, start none."""
        if self.state != DRAINING:
            self._become(DRAINING, why)

    def rejoin(self, why: str) -> None:
        """It is back in the set before it was gone: it takes browsers again."""
        if self.state == DRAINING:
            self._become(UP, why)

    def restartSessions(self) -> None:
        """Close every session on this replica with 1012 (the frontend reconnects)."""
        for leg in list(self.sessions):
            leg.restart()

    def sessionOpened(self, leg: SessionLeg) -> None:
        """
        A session opened on it; one whose handshake began before the
        replica left the set is sent elsewhere at once (1012).
        """
        if self.retired:
            leg.restart()
            return
        self.sessions.add(leg)
        self._metrics.sessions(self, len(self.sessions))

    def sessionClosed(self, leg: SessionLeg) -> None:
        if leg not in self.sessions:
            return
        self.sessions.discard(leg)
        self._metrics.sessions(self, len(self.sessions))
        if not self.sessions and self.state == DRAINING and self.drained is not None:
            self.drained(self)

    def requested(self) -> None:
        """One HTTP request went to it."""
        self._metrics.request(self)

    def _become(self, state: str, why: str) -> None:
        self.state = state
        self._metrics.up(self, state == UP)
        self.log.info(
            "Replica {replica} of {route} is {state} ({why})",
            replica=str(self.address),
            route=self.route,
            state=state,
            why=why,
        )


__all__ = ["DOWN", "DRAINING", "UP", "Replica", "SessionLeg", "replicaId"]
