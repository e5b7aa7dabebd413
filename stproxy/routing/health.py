"""
The active health check of one replica: C{GET PREFIX/_stcore/health} every
C{--health-interval} seconds, through the replica's own client.

A check fails unless a 200 arrives within the interval.  Two failures in a
row take an up replica down (one slow answer under load must not close every
session on it with 1012), as HAProxy's C{fall 2}; one pass brings a down
replica back, as its C{rise 1} would, since a Streamlit that answers its
health check is ready for sessions.  A refused connection takes a replica
down at once, without waiting for a check (the passive check, in the
request and WebSocket paths).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.web.iweb import IResponse

    from stproxy.routing.metrics import ReplicaMetrics
    from stproxy.routing.replica import Replica

#: Failed checks in a row that take an up replica down.
FALL = 2


class HealthCheck:
    """Checks one replica while started."""

    def __init__(
        self,
        replica: Replica,
        path: bytes,
        interval: float,
        metrics: ReplicaMetrics,
    ) -> None:
        self.replica = replica
        self.path = path
        self.interval = interval
        self._metrics = metrics
        self._reactor: IReactorTime = replica.upstream.reactor
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._inFlight: Deferred[None] | None = None
        self.failures = 0
        self._mismatchTold = False

    def start(self) -> None:
        """Check now, then every interval."""
        if not self._loop.running:
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        if self._inFlight is not None:
            self._inFlight.cancel()

    def check(self) -> None:
        """One check; skipped while the previous one is still waiting."""
        if self._inFlight is not None:
            return
        self._inFlight = (
            self.replica.upstream.request(b"GET", self.path, Headers(), None)
            .addCallback(self._readCode)
            .addTimeout(self.interval, self._reactor)
            .addCallbacks(self._answered, self._failed)
        )

    def _readCode(self, response: IResponse) -> Deferred[int]:
        return readBody(response).addCallback(lambda _: response.code)

    def _answered(self, code: int) -> None:
        """
        A 404 is what a Streamlit whose C{server.baseUrlPath} is not the
        route's prefix answers: said once, plainly, as the first check runs
        at start-up.
        """
        self._inFlight = None
        path = self.path.decode("latin-1")
        if code == 200:
            self.failures = 0
            self.replica.passed(f"{path} answered 200")
            return
        if code == 404 and not self._mismatchTold:
            self._mismatchTold = True
            route = self.replica.route
            hint = (
                "does its Streamlit have a server.baseUrlPath? Route it with --route /PATH=..."
                if route == "/"
                else f"is its Streamlit running with --server.baseUrlPath={route.strip('/')}?"
            )
            self.replica.log.error(
                "Replica {replica} of {route} answers 404 at {path}: {hint}",
                replica=str(self.replica.address),
                route=route,
                path=path,
                hint=hint,
            )
        self._failedWith(f"{path} answered {code}")

    def _failed(self, failure: Failure) -> None:
        self._inFlight = None
        if failure.check(CancelledError):
            return  # stopped (a check that timed out fails with TimeoutError)
        self._failedWith(failure.getErrorMessage() or failure.value.__class__.__name__)

    def _failedWith(self, why: str) -> None:
        self.failures += 1
        self._metrics.healthFailed(self.replica)
        if self.failures >= FALL or not self.replica.isUp:
            self.replica.failed(f"health check: {why}")


__all__ = ["FALL", "HealthCheck"]
