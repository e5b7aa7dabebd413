"""
The service hierarchy of one proxy: its listeners and its upstream.

L{ProxyService} is an ordinary L{MultiService}, so any Twisted application can
embed it; starting it binds every listener.  Stopping it drains: it stops
accepting, lets HTTP requests in flight finish (for up to the shutdown
timeout, then aborts them), closes every WebSocket with 1001 "going away" on
both legs, then closes the upstream connection pool and the admin listener.
The Deferred C{stopService} returns fires once all of that is done, so
twistd's (and C{python -m stproxy}'s) "before shutdown" trigger waits for it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from stproxy.admin import adminSite
from stproxy.drain import Drain
from stproxy.endpoints import listeningService
from stproxy.health import HEALTH_PATH, HealthPoller
from stproxy.http import ReverseProxyResource
from stproxy.logs import loggerFor, publisherAt
from stproxy.metrics import Metrics
from stproxy.site import buildSite
from stproxy.upstream import Upstream
from stproxy.websocket import webSocketResource

if TYPE_CHECKING:
    from stproxy.tap import Options


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """
    A server endpoint that logs where it listens once it does, and
    remembers the port, so operators (and tests) learn the real address
    of a C{tcp:0} listener.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        description: str,
        logObserver: ILogObserver | None = None,
        message: str = "stproxy listening on {where} ({description})",
    ) -> None:
        """@param message: the announcement's log template (fields C{where}, C{description})."""
        self._endpoint = endpoint
        self._log = loggerFor(self, logObserver)
        self._message = message
        self.description = description
        self.port: IListeningPort | None = None

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            address = port.getHost()
            where = (
                f"{address.host}:{address.port}"
                if hasattr(address, "port")
                else str(getattr(address, "name", address))
            )
            self._log.info(
                self._message,
                where=where,
                description=self.description,
            )
            return port

        return self._endpoint.listen(factory).addCallback(listening)


class _UpstreamService(Service):
    """Owns the upstream's connection pool: closes it when the proxy stops."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.upstream.close()


class ProxyService(MultiService):
    """
    One stproxy: a listener per endpoint, all serving one L{ProxySite}, and
    the upstream they forward to.

    Stopping drains (see the module docstring); the listeners stop first,
    the other children in reverse order of addition once the traffic is gone.

    @ivar ownsProcess: set by L{stproxy.tap.makeService} for twistd and
        C{python -m stproxy} (options parsed to exit on error): a second
        SIGTERM or SIGINT during the drain ends the process at once, and a
        listener that cannot bind ends it with one line rather than a
        traceback.  Embedders keep their own signal and error handling: it
        is off unless asked for.
    @ivar draining: set from the start of L{stopService}; C{/readyz} is 503.
    """

    ownsProcess = False
    draining = False

    def __init__(
        self,
        upstream: Upstream,
        site: Any,
        endpoints: list[AnnouncedEndpoint],
        logObserver: ILogObserver | None = None,
        webSocket: Any = None,
        shutdownTimeout: float = 30.0,
    ) -> None:
        """
        @param webSocket: the L{stproxy.websocket.RelayResource} whose
            WebSockets are closed on stop.
        @param shutdownTimeout: seconds HTTP requests in flight get to finish.
        """
        super().__init__()
        self._log = loggerFor(self, logObserver)
        self.upstream = upstream
        self.site = site
        self.endpoints = endpoints
        self.webSocket = webSocket
        self.shutdownTimeout = shutdownTimeout
        self._reactor: Any = upstream.reactor
        self.metrics: Metrics | None = None
        self.health: HealthPoller | None = None
        self.adminEndpoint: AnnouncedEndpoint | None = None
        _UpstreamService(upstream).setServiceParent(self)
        for number, endpoint in enumerate(endpoints):
            listeningService(endpoint, site, f"listener-{number}").setServiceParent(self)

    @classmethod
    def fromOptions(cls, options: Options, reactor: Any) -> ProxyService:
        """Wire a proxy from parsed L{Options}; nothing is started or bound."""
        log = publisherAt(options["log-level"], options["log-format"])
        metrics = Metrics()
        tls = options["tls"]
        upstream = Upstream(
            reactor,
            options["upstream"],
            options["timeouts"],
            tlsPolicy=tls.upstreamPolicy(options["upstream"], log),
        )
        trusted = options["trust-forwarded"]
        relay = webSocketResource(upstream, options["websocket"], trusted, log, metrics)
        site = buildSite(
            http=ReverseProxyResource(upstream, trusted, log, metrics),
            webSocket=relay,
            reactor=reactor,
            maxBodySize=options["max-body-size"],
            accessLog=options["access-log"],
            logObserver=log,
            hsts=tls.hsts,
        )
        endpoints = [
            AnnouncedEndpoint(tls.endpoint(reactor, description), description, log)
            for description in options["listen"]
        ]
        accessLog = None
        if options["log-format"] == "json":
            accessLog = Logger("stproxy.access", None, log)
        site.instrument(Drain(reactor, metrics, log), metrics, accessLog)
        service = cls(upstream, site, endpoints, log, relay, options["shutdown-timeout"])
        service.addOperations(
            metrics, options["health-interval"], options["admin"], log, options["health-path"]
        )

        # The TLS edge's own services: the --redirect-http listener, certificate reload.
        def announce(endpoint: IStreamServerEndpoint, description: str) -> AnnouncedEndpoint:
            return AnnouncedEndpoint(endpoint, description, log)

        for child in tls.services(reactor, site, endpoints, announce, str(upstream.address), log):
            child.setServiceParent(service)
        return service

    def addOperations(
        self,
        metrics: Metrics,
        healthInterval: float,
        admin: str | None,
        logObserver: ILogObserver | None = None,
        healthPath: bytes = HEALTH_PATH,
    ) -> None:
        """
        If C{admin} names an endpoint, serve the admin pages there and poll
        the upstream's health every C{healthInterval} seconds for them (only
        then: nobody else reads the result, and the upstream is spared the
        requests).
        """
        self.metrics = metrics
        if admin is not None:
            self.health = HealthPoller(
                self.upstream, healthInterval, metrics, logObserver, healthPath
            )
            self.health.setServiceParent(self)
            self.adminEndpoint = AnnouncedEndpoint(
                serverFromString(self._reactor, admin),
                admin,
                logObserver,
                message="stproxy admin endpoint on {where} ({description})",
            )
            pages = adminSite(metrics, self.ready, self._reactor)
            listeningService(self.adminEndpoint, pages, "admin").setServiceParent(self)

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
        if self.draining:
            return self._stopped
        self.draining = True
        Service.stopService(self)
        if self.ownsProcess:
            self._exitOnNextSignal()
        self._log.info(
            "stproxy stopping: draining for up to {timeout} s", timeout=self.shutdownTimeout
        )
        public = [
            s
            for s in self.services
            if isinstance(s, StreamServerEndpointService) and s.name != "admin"
        ]
        stopped = gatherResults([maybeDeferred(s.stopService) for s in public])
        stopped.addCallback(lambda _: self._drain())
        stopped.addCallback(lambda _: self._stopRest())
        stopped.addCallback(lambda _: self._log.info("stproxy stopped"))
        if self.ownsProcess:
            stopped.addCallback(lambda _: self._cleanExit())
        stopped.addErrback(lambda f: self._log.failure("Stopping stproxy failed", f))
        self._stopped: Deferred[None] = stopped
        return stopped

    def _drain(self) -> Deferred[Any]:
        waits = []
        drain = self.site.drain
        if drain is not None:
            waits.append(drain.drain(self.shutdownTimeout))
        if self.webSocket is not None:
            waits.append(self.webSocket.closeAll(self.shutdownTimeout))
        return gatherResults(waits)

    def _stopRest(self) -> Deferred[Any]:
        rest = [s for s in reversed(self.services) if s.running]
        return gatherResults([maybeDeferred(s.stopService) for s in rest])

    def _cleanExit(self) -> None:
        """
        A finished drain is a clean exit: twistd would otherwise re-raise
        the SIGTERM it got once the reactor stops (the reactor's private
        C{_exitSignal}), and the process would die "killed by SIGTERM"
        rather than exit 0 as service managers expect of a graceful stop.
        """
        if getattr(self._reactor, "_exitSignal", None) is not None:
            self._reactor._exitSignal = None

    def _exitOnNextSignal(self) -> None:
        """Let a second SIGTERM/SIGINT end the process now (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def now(signum: int, frame: Any) -> None:
            sys.stderr.write(f"stproxy: signal {signum} during shutdown: exiting now\n")
            sys.stderr.flush()
            os._exit(1)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, now)

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports listened on, once started."""
        return [e.port for e in self.endpoints if e.port is not None]


__all__ = ["ProxyService", "AnnouncedEndpoint"]
