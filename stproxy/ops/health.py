"""
Whether the upstream Streamlit is answering, polled in the background for
the admin C{/readyz} and the C{stproxy_upstream_healthy} gauge.

A poll is C{GET /_stcore/health} through the proxy's own L{Upstream} (the
same pool and address as real traffic) every C{interval} seconds; it counts
as a failure unless a 200 arrives within that interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from stproxy.config import HEALTH_PATH
from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.web.iweb import IResponse

    from stproxy.ops.metrics import Metrics
    from stproxy.upstream.client import Upstream


class HealthPoller(Service):
    """
    Polls the upstream's health endpoint while running.

    @ivar healthy: whether the last poll got a 200 within C{interval}
        seconds, and that poll is no older than two intervals (a poll that
        hangs must not leave a stale "healthy" behind).
    """

    name = "health"

    def __init__(
        self,
        upstream: Upstream,
        interval: float,
        metrics: Metrics,
        logObserver: ILogObserver | None = None,
        path: bytes = HEALTH_PATH,
    ) -> None:
        """
        @param path: what to ask for: Streamlit's health check, under its
            C{server.baseUrlPath} when it has one (C{--health-path}).
        """
        self._upstream = upstream
        self.path = path
        self._reactor: IReactorTime = upstream.reactor
        self.interval = interval
        self._metrics = metrics
        self._log = loggerFor(self, logObserver)
        self._lastOk: float | None = None
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._reactor
        self._inFlight: Deferred[None] | None = None
        self._reported: bool | None = None

    @property
    def healthy(self) -> bool:
        if self._lastOk is None:
            return False
        return self._reactor.seconds() - self._lastOk <= 2 * self.interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._inFlight is not None:
            self._inFlight.cancel()

    def check(self) -> Deferred[None] | None:
        """One poll; skipped while the previous one is still waiting."""
        if self._inFlight is not None:
            return None
        self._inFlight = (
            self._upstream.request(b"GET", self.path, Headers(), None)
            .addCallback(self._gotResponse)
            .addTimeout(self.interval, self._reactor)
            .addCallbacks(self._passed, self._failed)
        )
        return None  # LoopingCall must not wait on a hanging upstream.

    def _gotResponse(self, response: IResponse) -> Deferred[int]:
        return readBody(response).addCallback(lambda _: response.code)

    def _passed(self, code: int) -> None:
        self._inFlight = None
        if code == 200:
            self._lastOk = self._reactor.seconds()
            self._report(True, f"answered {code}")
        else:
            self._lastOk = None
            self._report(False, f"answered {code}")

    def _failed(self, failure: Failure) -> None:
        self._inFlight = None
        self._lastOk = None
        self._report(False, failure.getErrorMessage() or failure.value.__class__.__name__)

    def _report(self, healthy: bool, why: str) -> None:
        self._metrics.upstreamHealthy.set(1 if healthy else 0)
        if healthy != self._reported:
            self._reported = healthy
            self._log.info(
                "Upstream {upstream} is {state} ({why})",
                upstream=str(self._upstream.address),
                state="healthy" if healthy else "unhealthy",
                healthy=healthy,
                why=why,
            )


__all__ = ["HealthPoller", "HEALTH_PATH"]
