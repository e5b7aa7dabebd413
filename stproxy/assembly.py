"""
The one place a proxy is wired together: L{assemble} builds the whole
service tree from a L{Config} and a reactor.

The twistd plugin (L{stproxy.tap.makeService}), C{python -m stproxy} and
L{stproxy.api.StreamlitProxy} all call it; no other module builds a part
from another's.  Nothing is started or bound here, so tests can inspect the
tree it returns.

The tree::

    ProxyService                       stproxy.service
      descriptors   DescriptorLimit    raises the descriptor limit, first
      upstream      RoutingService     replicas: lookups, health checks, discovery,
                                       their connection pools (closed last)
      listener-N    one per --listen   serving the ProxySite
      admin         admin listener     only with --admin (not in a worker)
      control       WorkerControl      only in a --workers worker: its supervisor's questions
      redirect-http redirect listener  only with --redirect-http
      tls           TLSService         certificate reload, SIGHUP
      auth          AuthService        only with authentication: password files
                                       reloaded, the auth service's pool closed
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorSocket, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger

from stproxy.assembleapps import appAuth, appRouting, describeUpstreams
from stproxy.config import ACCESS_LOG_OFF, Config
from stproxy.edge.certificates import ServerCertificate
from stproxy.edge.connections import ConnectionLimit, LimitedEndpoint
from stproxy.edge.descriptors import DescriptorLimit, plannedConnections
from stproxy.edge.endpoints import listenerEndpoint, withDefaultBacklog
from stproxy.edge.listeners import AnnouncedEndpoint, listeningService
from stproxy.edge.redirect import RedirectToHTTPS
from stproxy.edge.reload import TLSService
from stproxy.http.accesslog import Accounting
from stproxy.http.forward import ReverseProxyResource
from stproxy.http.site import ProxySite, buildSite
from stproxy.ops.admin import adminSite
from stproxy.ops.drain import Drain
from stproxy.ops.logs import publisherAt
from stproxy.ops.metrics import Metrics
from stproxy.service import PUBLIC_LISTENER_PREFIX, REDIRECT_LISTENER, ProxyService
from stproxy.websocket.resource import webSocketResource
from stproxy.workers.adopt import Adoption, workerConfig
from stproxy.workers.control import workerControl
from stproxy.workers.flags import WorkerSpec

if TYPE_CHECKING:
    from stproxy.reactor import ProxyReactor


def assemble(
    config: Config,
    reactor: ProxyReactor,
    ownsProcess: bool = False,
    raiseSoftLimit: Callable[[int, int], None] | None = None,
    worker: WorkerSpec | None = None,
) -> ProxyService:
    """
    Build the whole proxy: listeners, upstream pool, WebSocket relay,
    operations, the TLS edge, logging; ready to start under any Twisted
    application.

    @param reactor: the reactor everything runs on.
    @param ownsProcess: see L{ProxyService.ownsProcess}.
    @param raiseSoftLimit: sets the soft descriptor limit, on start
        (L{DescriptorLimit}); C{setrlimit} by default.
    @param worker: in a C{--workers} worker, what its supervisor passed it:
        the listeners are adopted rather than bound (L{stproxy.workers.adopt}),
        and the supervisor, not the worker, serves C{--admin}.
    @raise stproxy.edge.certificates.CertificateError: if a certificate
        file can no longer be loaded.
    """
    config = config if worker is None else workerConfig(config, worker)
    adoption = None if worker is None else Adoption(IReactorSocket(reactor), config, worker)
    log = publisherAt(config.logging.level, config.logging.format)
    metrics = Metrics()
    routing = appRouting(config, reactor, metrics, log)
    routes = routing.routes
    gate, auth = appAuth(config, reactor, metrics, log)
    metrics.upstreamHealthy.set_function(lambda: 1 if routes.ready() else 0)
    relay = webSocketResource(routes, config.websocket, config.trusted, log, metrics)
    site = buildSite(
        http=ReverseProxyResource(routes, config.trusted, log, metrics),
        webSocket=relay,
        reactor=reactor,
        maxBodySize=config.maxBodySize,
        accessLog=config.logging.accessLog,
        logObserver=log,
        hsts=config.tls.hsts,
        maxHeaderSize=config.maxHeaderSize,
        limits=config.clients,
        gate=gate,
        identity=config.auth.identity,
        clientCertificates=any(files.clientCA for files in config.tls.listeners.values()),
    )
    drain = Drain(reactor, metrics, log)
    events = None
    if config.logging.format == "json" and config.logging.accessLog != ACCESS_LOG_OFF:
        events = Logger("stproxy.access", None, log)
    site.instrument(drain, Accounting(reactor, metrics, events))
    # One count for every public listener, the redirect one included; not the admin one.
    # Its cap is final once the descriptor limit is raised, on start.
    requested = config.clients.maxConnections
    connections = ConnectionLimit(plannedConnections(requested), reactor, metrics, log)
    certificates = {
        description: ServerCertificate(files) for description, files in config.tls.listeners.items()
    }
    announce: dict[str, str] = {} if adoption is None else {"message": adoption.announcement}

    def public(description: str) -> IStreamServerEndpoint:
        if adoption is None:
            return listenerEndpoint(reactor, description, certificates, connections)
        return adoption.endpoint(description, connections, certificates.get(description))

    endpoints = [
        AnnouncedEndpoint(public(description), description, log, **announce)
        for description in config.listen
    ]
    service = ProxyService(
        reactor,
        routes,
        drain,
        relay,
        endpoints,
        config.operations.shutdownTimeout,
        log,
        ownsProcess,
        connections,
    )
    DescriptorLimit(requested, connections.resize, log, raiseSoftLimit).setServiceParent(service)
    routing.setServiceParent(service)
    if auth is not None:
        auth.setServiceParent(service)
    for number, endpoint in enumerate(endpoints):
        name = f"{PUBLIC_LISTENER_PREFIX}{number}"
        listeningService(endpoint, site, name).setServiceParent(service)
    if worker is None:
        _addOperations(service, config, reactor, metrics, log)
    else:
        control = workerControl(reactor, worker.index, worker.control, metrics, service.ready, log)
        control.setServiceParent(service)
        service.exitOnSecondSignal = False  # the supervisor's to do
    _addRedirect(service, config, reactor, certificates, connections, log, adoption)
    insecure = describeUpstreams(config.routes) if config.tls.upstreamInsecure else None
    TLSService(reactor, certificates, config.tls.reloadInterval, log, insecure).setServiceParent(
        service
    )
    return service


def _addOperations(
    service: ProxyService,
    config: Config,
    reactor: ProxyReactor,
    metrics: Metrics,
    log: ILogObserver,
) -> None:
    """With C{--admin}, the admin listener: metrics, and readiness from the replicas' health."""
    operations = config.operations
    if operations.admin is None:
        return
    endpoint = AnnouncedEndpoint(
        serverFromString(reactor, operations.admin),
        operations.admin,
        log,
        message="stproxy admin endpoint on {where} ({description})",
    )
    pages = adminSite(metrics, service.ready, reactor)
    listeningService(endpoint, pages, "admin").setServiceParent(service)


def _addRedirect(
    service: ProxyService,
    config: Config,
    reactor: ProxyReactor,
    certificates: dict[str, ServerCertificate],
    connections: ConnectionLimit,
    log: ILogObserver,
    adoption: Adoption | None = None,
) -> None:
    """With C{--redirect-http}, a plain listener sending every request to the HTTPS origin."""
    tls = config.tls
    if tls.redirect is None:
        return
    listener = next(e for e in service.endpoints if e.description in certificates)

    def httpsPort() -> int | None:
        if tls.redirectPort is not None:
            return tls.redirectPort
        if listener.port is None:
            return None
        address = listener.port.getHost()
        assert isinstance(address, (IPv4Address, IPv6Address))  # an ssl: listener's
        return address.port

    site = ProxySite(
        RedirectToHTTPS(httpsPort, tls.acmeWebroot),
        reactor,
        maxBodySize=config.maxBodySize,
        logObserver=log,
        maxHeaderSize=config.maxHeaderSize,
        limits=config.clients,
    )
    plain: IStreamServerEndpoint
    announce: dict[str, str] = {}
    if adoption is None:
        plain = LimitedEndpoint(
            serverFromString(reactor, withDefaultBacklog(tls.redirect)), connections
        )
    else:
        plain = adoption.endpoint(tls.redirect, connections)
        announce = {"message": adoption.announcement}
    endpoint = AnnouncedEndpoint(plain, f"{tls.redirect}, redirecting to HTTPS", log, **announce)
    listeningService(endpoint, site, REDIRECT_LISTENER).setServiceParent(service)


__all__ = ["assemble"]
