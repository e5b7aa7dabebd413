"""
The root of one proxy's service tree, and its graceful stop.

L{ProxyService} is an ordinary L{MultiService}, so any Twisted application can
embed it; starting it binds every listener.  Stopping it drains: it stops
accepting, lets HTTP requests in flight finish (for up to the shutdown
timeout, then aborts them), closes every WebSocket with 1001 "going away" on
both legs, then stops everything else (the upstream connection pool, the
admin listener, certificate reload).  The Deferred C{stopService} returns
fires once all of that is done, so twistd's (and C{python -m stproxy}'s)
"before shutdown" trigger waits for it.  A step that fails is logged, naming
it, and the stop goes on: a half-done stop would leave ports bound, the pool
open or signal handlers installed, and a stop that never fires would hang
the process.

A start that fails half-way (the second listener's port is taken) stops
whatever it had begun before raising, so nothing stays bound behind an
error the caller may well survive (L{stproxy.api.StreamlitProxy}).

It is built by L{stproxy.assembly.assemble}, the one place that wires parts.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Callable

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import ILogObserver
from twisted.python.failure import Failure

from stproxy._twisted import forgetExitSignal
from stproxy.edge.connections import ConnectionLimit
from stproxy.edge.listeners import AnnouncedEndpoint
from stproxy.ops.collector import tuneCollector
from stproxy.ops.drain import Drain
from stproxy.ops.logs import loggerFor
from stproxy.ops.signals import exitOnNextSignal
from stproxy.routing.route import Routes
from stproxy.websocket.resource import RelayResource

#: The names of the services that take traffic, stopped first on a drain.
PUBLIC_LISTENER_PREFIX = "listener-"
REDIRECT_LISTENER = "redirect-http"


class ProxyService(MultiService):
    """
    One stproxy: its listeners, its upstream and everything around them.

    Stopping drains (see the module docstring); the public listeners stop
    first, the other children in reverse order of addition once the traffic
    is gone.

    @ivar ownsProcess: for twistd and C{python -m stproxy}: a second SIGTERM
        or SIGINT during the drain ends the process at once, a finished
        drain exits 0, and a listener that cannot bind ends it with one line
        rather than a traceback.  Embedders keep their own signal and error
        handling: it is off unless asked for.
    @ivar draining: set from the start of L{stopService}; C{/readyz} is 503.
    @ivar routes: the apps and their replicas.
    """

    draining = False

    #: With L{ownsProcess}, whether a second SIGTERM/SIGINT ends the process at
    #: once; not in a C{--workers} worker, whose supervisor does that (and
    #: whose own request to stop must not count as a second signal).
    exitOnSecondSignal = True

    def __init__(
        self,
        reactor: IReactorTime,
        routes: Routes,
        drain: Drain,
        webSocket: RelayResource,
        endpoints: list[AnnouncedEndpoint],
        shutdownTimeout: float = 30.0,
        logObserver: ILogObserver | None = None,
        ownsProcess: bool = False,
        connections: ConnectionLimit | None = None,
    ) -> None:
        """
        @param drain: the tracker of the public site's HTTP requests.
        @param webSocket: the relay whose WebSockets are closed on stop.
        @param endpoints: the public listeners' endpoints (for L{ports}).
        @param shutdownTimeout: seconds HTTP requests in flight get to finish.
        @param connections: the public listeners' connection cap, whose
            report of refusals stops with them.
        """
        super().__init__()
        self._reactor = reactor
        self._log = loggerFor(self, logObserver)
        self.routes = routes
        self.drain = drain
        self.webSocket = webSocket
        self.endpoints = endpoints
        self.shutdownTimeout = shutdownTimeout
        self.ownsProcess = ownsProcess
        self.connections = connections
        self._stopped: Deferred[None] | None = None
        self._begun: list[IService] = []

    def ready(self) -> bool:
        """
        Whether to take traffic: every app has a replica that passes its
        health check, and the proxy is not stopping.
        """
        return not self.draining and self.routes.ready()

    def privilegedStartService(self) -> None:
        """Bind every listener (before twistd drops privileges)."""
        try:
            Service.privilegedStartService(self)
            self._startChildren(lambda child: child.privilegedStartService())
        except (CannotListenError, OSError, OverflowError) as e:
            # A busy port, a missing directory for a unix: socket, ...
            if not self.ownsProcess:
                raise
            sys.stderr.write(f"stproxy: error: cannot listen: {e}\n")
            raise SystemExit(1) from None

    def startService(self) -> None:
        Service.startService(self)
        self._startChildren(lambda child: child.startService())
        if self.ownsProcess:
            tuneCollector()  # everything start-up made is here now
        for route in self.routes.routes:
            self._log.info(
                "stproxy forwarding to {upstream} for {prefix}",
                prefix=route.prefix,
                upstream=", ".join(str(r.address) for r in route.replicas.replicas.values())
                or "the replicas DNS lists",
            )

    def _startChildren(self, start: Callable[[IService], None]) -> None:
        """
        C{MultiService}'s loop over the children, remembering each one it
        reaches; when one raises, every child begun (in this phase or the
        privileged one before it) is stopped before the error goes on, and
        L{stopService} returns that stop for callers to wait on.
        """
        try:
            for child in self:
                if child not in self._begun:
                    self._begun.append(child)
                start(child)
        except BaseException:
            self._stopped = self._abandon()
            raise

    def _abandon(self) -> Deferred[None]:
        """Stop the children a failed start had begun, last begun first."""
        self.draining = True
        Service.stopService(self)
        self._log.info("stproxy could not start: stopping what had started")
        begun = reversed(self._begun)
        return self._steps([(f"stopping {s.name}", s.stopService) for s in begun]).addCallback(
            lambda _: None
        )

    def stopService(self) -> Deferred[None]:
        """
        Drain, then stop: fires (with C{None}, whatever failed on the way)
        once no request or WebSocket is left and the upstream pool and admin
        listener are closed.
        """
        if self._stopped is None:
            self.draining = True
            Service.stopService(self)
            self._stopped = Deferred.fromCoroutine(self._stop())
        return self._stopped

    async def _stop(self) -> None:
        """
        The steps of a stop, in order, each run whatever became of those
        before it.  With L{ownsProcess}, only a stop where every step
        succeeded exits 0: after a failure the process ends by its signal,
        as any twistd process does, so the failure shows in its status too.
        """
        clean = True
        if self.ownsProcess and self.exitOnSecondSignal:
            clean &= await self._steps([("second-signal handler", exitOnNextSignal)])
        self._log.info(
            "stproxy stopping: draining for up to {timeout} s", timeout=self.shutdownTimeout
        )
        public = [s for s in self.services if _isPublic(s.name)]
        clean &= await self._steps([(f"stopping {s.name}", s.stopService) for s in public])
        if self.connections is not None:  # nothing is refused any more: no report is due
            clean &= await self._steps([("stopping the refusal reports", self.connections.stop)])
        timeout = self.shutdownTimeout
        clean &= await self._steps(
            [
                ("draining HTTP requests", partial(self.drain.drain, timeout)),
                ("closing WebSockets", partial(self.webSocket.closeAll, timeout)),
            ]
        )
        rest = [s for s in reversed(self.services) if s.running and not _isPublic(s.name)]
        clean &= await self._steps([(f"stopping {s.name}", s.stopService) for s in rest])
        if not clean:
            self._log.warn("stproxy stopped, but not cleanly: see the failures above")
            return
        self._log.info("stproxy stopped")
        if self.ownsProcess:
            forgetExitSignal(self._reactor)

    def _steps(self, steps: list[tuple[str, Callable[[], object]]]) -> Deferred[bool]:
        """
        Run C{steps} side by side; fires, never failing, with whether all
        succeeded.  Each failure is logged once, with its step's name.
        """

        def failed(failure: Failure, step: str) -> bool:
            self._log.failure("stproxy stop: {step} failed", failure, step=step)
            return False

        each = [
            maybeDeferred(action).addCallbacks(lambda _: True, failed, errbackArgs=(step,))
            for step, action in steps
        ]
        return gatherResults(each).addCallback(all)

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports listened on, once started."""
        return [e.port for e in self.endpoints if e.port is not None]


def _isPublic(name: str | None) -> bool:
    """Whether a child service takes traffic (a listener other than the admin one)."""
    return name is not None and (
        name.startswith(PUBLIC_LISTENER_PREFIX) or name == REDIRECT_LISTENER
    )


__all__ = ["ProxyService", "PUBLIC_LISTENER_PREFIX", "REDIRECT_LISTENER"]
