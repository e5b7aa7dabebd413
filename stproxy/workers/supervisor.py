"""
The root of a supervisor's service tree (C{--workers N}, N > 1): it binds,
starts the workers, watches them, answers for them, and stops them.

  - C{privilegedStartService} binds every public listener, before twistd
    drops privileges (L{stproxy.workers.binding}), and announces each once
    (C{stproxy listening on HOST:PORT}), as a single stproxy does.
  - C{startService} starts the workers (L{stproxy.workers.pool}), which
    inherit the sockets; a worker that dies is restarted.  SIGHUP is passed
    on to every worker (each reloads its certificates).
  - C{stopService} (SIGTERM, SIGINT) closes the supervisor's own copies of
    the sockets (a C{unix:} socket's file goes: new clients find nothing),
    asks every worker to drain and exit, and fires once all have.  It exits
    0 when every worker did; a second SIGTERM or SIGINT kills the workers
    and ends the supervisor at once.

It is built by L{stproxy.workers.assembly.supervise}.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.logger import ILogObserver
from twisted.python.failure import Failure

from stproxy._twisted import forgetExitSignal
from stproxy.edge.listeners import AnnouncedEndpoint
from stproxy.ops.logs import loggerFor
from stproxy.ops.signals import exitOnNextSignal
from stproxy.service import PUBLIC_LISTENER_PREFIX, REDIRECT_LISTENER
from stproxy.workers.binding import HeldPort
from stproxy.workers.control import METRICS, READY
from stproxy.workers.metrics import SupervisorMetrics, mergeExpositions
from stproxy.workers.pool import WorkerPool

#: Seconds a worker has to answer the supervisor's C{/readyz} and C{/metrics}.
ASK_TIMEOUT = 5.0

#: Seconds past twice the shutdown timeout (the drain, then closing
#: WebSockets) before a worker that has not exited is killed.
BACKSTOP_GRACE = 15.0


class SupervisorService(MultiService):
    """
    A supervisor: its held listeners and admin listener (the children), and
    its workers (L{pool}).

    @ivar draining: set from the start of L{stopService}.
    """

    draining = False

    def __init__(
        self,
        reactor: IReactorTime,
        pool: WorkerPool,
        metrics: SupervisorMetrics,
        endpoints: list[AnnouncedEndpoint],
        shutdownTimeout: float = 30.0,
        logObserver: ILogObserver | None = None,
        ownsProcess: bool = True,
    ) -> None:
        """
        @param endpoints: the held listeners' endpoints, whose ports the
            workers inherit.
        @param ownsProcess: as L{stproxy.service.ProxyService.ownsProcess}.
        """
        super().__init__()
        self._reactor = reactor
        self.pool = pool
        self.metrics = metrics
        self.endpoints = endpoints
        self.shutdownTimeout = shutdownTimeout
        self.ownsProcess = ownsProcess
        self._log = loggerFor(self, logObserver)
        self._stopped: Deferred[None] | None = None
        self._previousHUP: Callable[[int, FrameType | None], Any] | int | None = None
        metrics.workers.set_function(lambda: len(pool.running))

    def listeningDescriptors(self) -> list[int]:
        """The held sockets' descriptors, in the order of the endpoints."""
        # A Binder made every port (stproxy.workers.assembly).
        return [cast(HeldPort, e.port).fileno() for e in self.endpoints if e.port is not None]

    def privilegedStartService(self) -> None:
        """Bind every listener; one that cannot bind ends the process with one line."""
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError) as e:
            for endpoint in self.endpoints:
                if endpoint.port is not None:
                    endpoint.port.stopListening()
            if not self.ownsProcess:
                raise
            sys.stderr.write(f"stproxy: error: cannot listen: {e}\n")
            raise SystemExit(1) from None

    def startService(self) -> None:
        super().startService()
        self._log.info("stproxy starting {count} workers", count=self.pool.count)
        self.pool.start()
        self._installSIGHUP()

    def ready(self) -> Deferred[bool]:
        """Whether every worker runs and says it is ready, and the supervisor is not stopping."""
        if self.draining or len(self.pool.running) < self.pool.count:
            return succeed(False)
        return self.pool.ask(READY, ASK_TIMEOUT).addCallback(
            lambda answers: all(answer == b"1" for answer in answers)
        )

    def exposition(self) -> Deferred[bytes]:
        """Every worker's metrics, labelled, then the supervisor's own."""

        def merge(answers: list[bytes | None]) -> bytes:
            parts = [(str(i), text) for i, text in enumerate(answers) if text is not None]
            return mergeExpositions(parts) + self.metrics.exposition()

        return self.pool.ask(METRICS, ASK_TIMEOUT).addCallback(merge)

    def stopService(self) -> Deferred[None]:
        """Stop the workers as the module docstring says; fires once all have exited."""
        if self._stopped is None:
            self.draining = True
            Service.stopService(self)
            self._stopped = Deferred.fromCoroutine(self._stop())
        return self._stopped

    async def _stop(self) -> None:
        if self.ownsProcess:
            exitOnNextSignal(before=lambda: self.pool.signal("KILL"))
        self._restoreSIGHUP()
        self._log.info(
            "stproxy stopping: asking {count} workers to drain for up to {timeout} s",
            count=len(self.pool.running),
            timeout=self.shutdownTimeout,
        )
        public = [s for s in self if _isPublic(s.name)]
        for service in public:
            await self._stopChild(service)
        clean = await self.pool.stop(2 * self.shutdownTimeout + BACKSTOP_GRACE)
        for service in reversed(list(self)):
            if service.running and service not in public:
                await self._stopChild(service)
        if not clean:
            self._log.warn("stproxy stopped, but not every worker exited cleanly (see above)")
            return
        self._log.info("stproxy stopped")
        if self.ownsProcess:
            forgetExitSignal(self._reactor)

    async def _stopChild(self, child: IService) -> None:
        """Stop C{child} and wait; a failure is logged, and the supervisor's stop goes on."""

        def failed(failure: Failure) -> None:
            self._log.failure("stproxy stop: stopping {name} failed", failure, name=child.name)

        await maybeDeferred(child.stopService).addErrback(failed)

    def _installSIGHUP(self) -> None:
        """Pass SIGHUP on to every worker (main thread only, as Python allows)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._previousHUP = signal.signal(signal.SIGHUP, self._onSIGHUP)

    def _onSIGHUP(self, signum: int, frame: FrameType | None) -> None:
        IReactorFromThreads(self._reactor).callFromThread(self._passHUP)

    def _passHUP(self) -> None:
        self._log.info("SIGHUP: passed on to {count} workers", count=len(self.pool.running))
        self.pool.signal("HUP")

    def _restoreSIGHUP(self) -> None:
        if self._previousHUP is not None and signal.getsignal(signal.SIGHUP) == self._onSIGHUP:
            signal.signal(signal.SIGHUP, self._previousHUP)
        self._previousHUP = None


def _isPublic(name: str | None) -> bool:
    return name is not None and (
        name.startswith(PUBLIC_LISTENER_PREFIX) or name == REDIRECT_LISTENER
    )


__all__ = ["ASK_TIMEOUT", "BACKSTOP_GRACE", "SupervisorService"]
