"""
The replicas of one app, and which of them a new browser goes to.

New browsers go to the up replica with the fewest open sessions, the ties
taken in turn (so that browsers arriving together, before any of their
WebSockets is open, still spread).  When no replica is up, the one with the
fewest sessions of those not draining is tried anyway, as nginx tries its
servers when all are marked failed: a health check can be wrong, and a 502
that names the replica says more than a 503 that names none.

The set changes under discovery (L{update}): a new address becomes a replica
that is up at once (DNS names only ready pods); a vanished one drains
(L{stproxy.routing.replica}) and is dropped once its last session closes or
the drain deadline passes, whichever is first, its sessions then closed with
1012.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Iterable

from twisted.logger import Logger

from stproxy.routing.health import HealthCheck
from stproxy.routing.replica import DRAINING, Replica, replicaId
from stproxy.upstream.address import UpstreamAddress

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from stproxy.routing.metrics import ReplicaMetrics
    from stproxy.upstream.client import Upstream

#: Session ids learned from retried requests (L{ReplicaSet.learn}), at most;
#: the oldest is forgotten first.
LEARNED_SESSIONS = 10_000


class ReplicaSet:
    """
    The replicas of the app at one route, their health checks, and the
    choice of a replica for a new browser.

    @ivar replicas: every replica by id, draining ones included.
    """

    def __init__(
        self,
        route: str,
        reactor: IReactorTime,
        connect: Callable[[UpstreamAddress], Upstream],
        healthPath: bytes | None,
        healthInterval: float,
        drainTimeout: float,
        metrics: ReplicaMetrics,
        log: Logger,
    ) -> None:
        """
        @param connect: makes the client of a new replica (its own pool).
        @param healthPath: what each replica's health check asks for; C{None}
            for no checks (a server that is not Streamlit, such as an auth
            service's own pages).
        """
        self.route = route
        self.healthPath = healthPath
        self.replicas: dict[str, Replica] = {}
        self._reactor = reactor
        self._connect = connect
        self._healthInterval = healthInterval
        self._drainTimeout = drainTimeout
        self._metrics = metrics
        self._log = log
        self._checks: dict[str, HealthCheck] = {}
        self._drains: dict[str, IDelayedCall] = {}
        self._turn = 0
        self._learned: OrderedDict[str, str] = OrderedDict()
        self.running = False

    def add(self, address: UpstreamAddress) -> Replica:
        """A replica at C{address} (the one there already, if any: then it stops draining)."""
        existing = self.replicas.get(replicaId(address))
        if existing is not None:
            pending = self._drains.pop(existing.id, None)
            if pending is not None and pending.active():
                pending.cancel()
            existing.rejoin("its address is listed again")
            return existing
        replica = Replica(self._connect(address), self.route, self._metrics, self._log)
        replica.drained = self._remove
        self.replicas[replica.id] = replica
        if self.healthPath is not None:
            check = HealthCheck(replica, self.healthPath, self._healthInterval, self._metrics)
            self._checks[replica.id] = check
        if self.running:
            self._start(replica)
            self._log.info(
                "Replica {replica} of {route} is up (new)",
                replica=str(replica.address),
                route=self.route,
            )
        return replica

    def _start(self, replica: Replica) -> None:
        replica.upstream.start()
        check = self._checks.get(replica.id)
        if check is not None:
            check.start()

    def update(self, addresses: Iterable[UpstreamAddress]) -> None:
        """Discovery found exactly C{addresses}: add the new, drain the vanished."""
        wanted = {replicaId(address): address for address in addresses}
        for address in wanted.values():
            self.add(address)
        for replica in list(self.replicas.values()):
            if replica.id not in wanted and replica.state != DRAINING:
                self._drain(replica)

    def _drain(self, replica: Replica) -> None:
        replica.drain("its address is no longer listed")
        if not replica.sessions:
            self._remove(replica)
            return
        self._drains[replica.id] = self._reactor.callLater(
            self._drainTimeout, self._drainExpired, replica
        )

    def _drainExpired(self, replica: Replica) -> None:
        self._drains.pop(replica.id, None)
        self._log.info(
            "Replica {replica} of {route}: drain timeout, closing {count} sessions with 1012",
            replica=str(replica.address),
            route=self.route,
            count=len(replica.sessions),
        )
        replica.restartSessions()
        self._remove(replica)

    def _remove(self, replica: Replica) -> None:
        if self.replicas.get(replica.id) is not replica:
            return
        del self.replicas[replica.id]
        replica.retired = True
        pending = self._drains.pop(replica.id, None)
        if pending is not None and pending.active():
            pending.cancel()
        check = self._checks.pop(replica.id, None)
        if check is not None:
            check.stop()
        self._metrics.forget(replica)
        replica.upstream.close()
        self._log.info(
            "Replica {replica} of {route} removed", replica=str(replica.address), route=self.route
        )

    def get(self, replica: str | None) -> Replica | None:
        return None if replica is None else self.replicas.get(replica)

    def choose(self, exclude: Iterable[Replica] = (), upOnly: bool = False) -> Replica | None:
        """
        The replica for a new browser: the up one with the fewest sessions
        (ties in turn); else, when none is up (and not C{upOnly}), the one
        not draining with the fewest; C{None} when there is none at all (or
        all are in C{exclude}).
        """
        excluded = set(exclude)
        candidates = [r for r in self.replicas.values() if r.isUp and r not in excluded]
        if not candidates and not upOnly:
            candidates = [
                r for r in self.replicas.values() if r.state != DRAINING and r not in excluded
            ]
        if not candidates:
            return None
        fewest = min(len(r.sessions) for r in candidates)
        tied = [r for r in candidates if len(r.sessions) == fewest]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def only(self) -> Replica | None:
        """
        The replica of a set that has one (a single C{--upstream}), whatever
        its state: with nowhere else to go, every request is tried there.
        """
        for replica in self.replicas.values():
            return replica
        return None

    @property
    def anyUp(self) -> bool:
        return any(r.isUp for r in self.replicas.values())

    def learn(self, session: str, replica: Replica) -> None:
        """A request naming Streamlit session C{session} succeeded on C{replica}."""
        self._learned[session] = replica.id
        self._learned.move_to_end(session)
        while len(self._learned) > LEARNED_SESSIONS:
            self._learned.popitem(last=False)

    def learned(self, session: str) -> Replica | None:
        """The replica a request naming C{session} last succeeded on, if known and there."""
        return self.get(self._learned.get(session))

    def start(self) -> None:
        """Start every replica's lookups and health check."""
        self.running = True
        for replica in self.replicas.values():
            self._start(replica)

    def stop(self) -> None:
        """Stop the health checks and drain timers; the pools are closed by L{close}."""
        self.running = False
        for check in self._checks.values():
            check.stop()
        for pending in self._drains.values():
            if pending.active():
                pending.cancel()
        self._drains.clear()

    def close(self) -> list[Deferred[None]]:
        """Close every replica's pool; the Deferreds of the closes."""
        return [replica.upstream.close() for replica in self.replicas.values()]


__all__ = ["LEARNED_SESSIONS", "ReplicaSet"]
