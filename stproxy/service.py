"""
The root of one proxy's service tree, and its graceful stop.

L{ProxyService} is an ordinary L{MultiService}, so any Twisted application can
embed it; starting it binds every listener.  Stopping it drains: it stops
accepting, lets HTTP requests in flight finish (for up to the shutdown
timeout, then aborts them), closes every WebSocket with 1001 "going away" on
both legs, then stops everything else (the upstream connection pool, the
admin listener, certificate reload).  The Deferred C{stopService} returns
fires once all of that is done, so twistd's (and C{python -m stproxy}'s)
"before shutdown" trigger waits for it.

It is built by L{stproxy.assembly.assemble}, the one place that wires parts.
"""

from __future__ import annotations

import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import ILogObserver
from twisted.python.failure import Failure

from stproxy._twisted import forgetExitSignal
from stproxy.edge.listeners import AnnouncedEndpoint
from stproxy.ops.drain import Drain
from stproxy.ops.health import HealthPoller
from stproxy.ops.logs import loggerFor
from stproxy.ops.signals import exitOnNextSignal
from stproxy.upstream.client import Upstream
from stproxy.websocket.resource import RelayResource

#: The names of the services that take traffic, stopped first on a drain.
PUBLIC_LISTENER_PREFIX = "listener-"
REDIRECT_LISTENER = "redirect-http"


class UpstreamService(Service):
    """Owns the upstream's connection pool: closes it when the proxy stops."""

    name = "upstream"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.upstream.close()


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
    @ivar health: the upstream health poller, when the admin listener wants it.
    """

    draining = False

    def __init__(
        self,
        reactor: IReactorTime,
        upstream: Upstream,
        drain: Drain,
        webSocket: RelayResource,
        endpoints: list[AnnouncedEndpoint],
        shutdownTimeout: float = 30.0,
        logObserver: ILogObserver | None = None,
        ownsProcess: bool = False,
    ) -> None:
        """
        @param drain: the tracker of the public site's HTTP requests.
        @param webSocket: the relay whose WebSockets are closed on stop.
        @param endpoints: the public listeners' endpoints (for L{ports}).
        @param shutdownTimeout: seconds HTTP requests in flight get to finish.
        """
        super().__init__()
        self._reactor = reactor
        self._log = loggerFor(self, logObserver)
        self.upstream = upstream
        self.drain = drain
        self.webSocket = webSocket
        self.endpoints = endpoints
        self.shutdownTimeout = shutdownTimeout
        self.ownsProcess = ownsProcess
        self.health: HealthPoller | None = None
        self._stopped: Deferred[None] | None = None

    def ready(self) -> bool:
        """Whether to take traffic: the upstream is healthy and the proxy is not stopping."""
        return not self.draining and self.health is not None and self.health.healthy

    def privilegedStartService(self) -> None:
        """Bind every listener (before twistd drops privileges)."""
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError, OverflowError) as e:
            # A busy port, a missing directory for a unix: socket, ...
            if not self.ownsProcess:
                raise
            sys.stderr.write(f"stproxy: error: cannot listen: {e}\n")
            raise SystemExit(1) from None

    def startService(self) -> None:
        super().startService()
        self._log.info("stproxy forwarding to {upstream}", upstream=str(self.upstream.address))

    def stopService(self) -> Deferred[None]:
        """
        Drain, then stop: fires once no request or WebSocket is left and the
        upstream pool and admin listener are closed.
        """
        if self._stopped is not None:
            return self._stopped
        self.draining = True
        Service.stopService(self)
        if self.ownsProcess:
            exitOnNextSignal()
        self._log.info(
            "stproxy stopping: draining for up to {timeout} s", timeout=self.shutdownTimeout
        )
        public = [s for s in self.services if _isPublic(s.name)]
        stopped = (
            gatherResults([maybeDeferred(s.stopService) for s in public])
            .addCallback(lambda _: self._drain())
            .addCallback(lambda _: self._stopRest())
            .addCallback(lambda _: self._log.info("stproxy stopped"))
        )
        if self.ownsProcess:
            stopped.addCallback(lambda _: forgetExitSignal(self._reactor))
        stopped.addErrback(self._stopFailed)
        self._stopped = stopped
        return stopped

    def _stopFailed(self, failure: Failure) -> None:
        self._log.failure("Stopping stproxy failed", failure)

    def _drain(self) -> Deferred[list[None]]:
        waits = [
            self.drain.drain(self.shutdownTimeout),
            self.webSocket.closeAll(self.shutdownTimeout),
        ]
        return gatherResults(waits)

    def _stopRest(self) -> Deferred[list[None]]:
        rest = [s for s in reversed(self.services) if s.running]
        return gatherResults([maybeDeferred(s.stopService) for s in rest])

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports listened on, once started."""
        return [e.port for e in self.endpoints if e.port is not None]


def _isPublic(name: str | None) -> bool:
    """Whether a child service takes traffic (a listener other than the admin one)."""
    return name is not None and (
        name.startswith(PUBLIC_LISTENER_PREFIX) or name == REDIRECT_LISTENER
    )


__all__ = ["ProxyService", "UpstreamService", "PUBLIC_LISTENER_PREFIX", "REDIRECT_LISTENER"]
