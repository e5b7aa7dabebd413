"""
The apps of one proxy wired from its configuration: their routes and
replicas (L{stproxy.routing}) and who may use them (L{stproxy.auth}).
Part of the assembly (L{stproxy.assembly.assemble} calls these, and nothing
else does); apart only to keep each module short.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from twisted.logger import ILogObserver, Logger
from twisted.web.iweb import IPolicyForHTTPS

from stproxy.auth.basic import BasicAuth
from stproxy.auth.forwardauth import ForwardAuth
from stproxy.auth.gate import BasicStep, CertificateUser, ForwardStep, Gate, Step
from stproxy.auth.service import AuthService
from stproxy.config import Config
from stproxy.ops.metrics import Metrics
from stproxy.routing.affinity import Affinity, randomSecret
from stproxy.routing.discovery import DNSDiscovery, dnsResolver
from stproxy.routing.metrics import ReplicaMetrics
from stproxy.routing.replicaset import ReplicaSet
from stproxy.routing.route import Route, Routes
from stproxy.routing.service import Membership, RoutingService
from stproxy.routing.settings import RouteSpec
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream
from stproxy.upstream.tls import upstreamPolicy

if TYPE_CHECKING:
    from stproxy.reactor import ProxyReactor


def appRouting(
    config: Config, reactor: ProxyReactor, metrics: Metrics, log: ILogObserver
) -> RoutingService:
    """
    The apps and their replicas: each replica a client of its own
    (L{Upstream}), each app's set checked and, for its DNS names, discovered.
    """
    policy = upstreamPolicyFor(config, log)
    settings = config.replicas
    replicaMetrics = ReplicaMetrics(metrics)
    logger = Logger("stproxy.routing", None, log)
    secret = settings.secret if settings.secret is not None else randomSecret()
    resolver = None

    def connect(address: UpstreamAddress) -> Upstream:
        return Upstream(reactor, address, config.timeouts, tlsPolicy=policy, logObserver=log)

    routes = [
        passthroughRoute(prefix, config, reactor, connect, replicaMetrics, logger)
        for prefix in config.auth.passthrough
    ]
    discoveries = []
    for spec in config.routes:
        # --health-path is the root app's (a Streamlit with a baseUrlPath behind --upstream).
        healthPath: bytes | None = (
            config.operations.healthPath if spec.prefix == "/" else spec.healthPath
        )
        if not spec.sticky and config.operations.admin is None:
            # One replica and no /readyz to answer: nothing would read the checks
            # (there is no other replica to send browsers to), so Streamlit is spared them.
            healthPath = None
        replicas = ReplicaSet(
            spec.prefix,
            reactor,
            connect,
            healthPath,
            config.operations.healthInterval,
            settings.drainTimeout,
            replicaMetrics,
            logger,
        )
        for address in spec.upstreams:
            replicas.add(address)
        affinity = Affinity(settings.cookie, secret, spec.prefix)
        routes.append(Route(spec.prefix, replicas, affinity, replicaMetrics, logger, spec.sticky))
        membership = Membership(replicas, spec.upstreams)
        for name in spec.discover:
            resolver = resolver or dnsResolver(reactor, settings.resolver)
            found = partial(membership.found, name)
            interval = settings.discoveryInterval
            discoveries.append(DNSDiscovery(reactor, name.host, interval, found, resolver, log))
    return RoutingService(Routes(routes, reactor), discoveries, logger, settings.secret is not None)


def passthroughRoute(
    prefix: str,
    config: Config,
    reactor: ProxyReactor,
    connect: Callable[[UpstreamAddress], Upstream],
    metrics: ReplicaMetrics,
    log: Logger,
) -> Route:
    """
    A C{--forward-auth-passthrough} prefix: the auth service's own pages
    (sign-in, callback), routed to the service (the origin of its URL)
    ahead of the apps, with no health check (it is not Streamlit).
    """
    assert config.auth.forward is not None  # AuthSettings requires it
    parts = urlsplit(config.auth.forward.url)
    service = UpstreamAddress.parse(f"{parts.scheme}://{parts.netloc}")
    replicas = ReplicaSet(
        prefix, reactor, connect, None, 1.0, config.replicas.drainTimeout, metrics, log
    )
    replicas.add(service)
    affinity = Affinity(config.replicas.cookie, randomSecret(), prefix)
    return Route(prefix, replicas, affinity, metrics, log, sticky=False)


def appAuth(
    config: Config, reactor: ProxyReactor, metrics: Metrics, log: ILogObserver
) -> tuple[Gate | None, AuthService | None]:
    """
    The authentication steps configured, in order (a client certificate,
    passwords, the auth service), and the service that runs what they hold.
    """
    auth = config.auth
    if not auth.enabled:
        return None, None
    steps: list[Step] = []
    if auth.userFromCert:
        steps.append(CertificateUser(metrics))
    if auth.checkers:
        basic = BasicAuth(
            auth.checkers, reactor, auth.maxFailures, logObserver=log, metrics=metrics
        )
        steps.append(BasicStep(basic, config.trusted))
    forward = None
    if auth.forward is not None:
        forward = ForwardAuth(reactor, auth.forward, logObserver=log, metrics=metrics)
        steps.append(ForwardStep(forward, config.trusted))
    gate = Gate(steps, [prefix.encode("ascii") for prefix in auth.passthrough])
    return gate, AuthService(reactor, auth.checkers, forward, log)


def describeUpstreams(routes: tuple[RouteSpec, ...]) -> str:
    """Every replica given and every name discovered, for log lines."""
    return ", ".join(
        [str(a) for spec in routes for a in spec.upstreams]
        + [f"dns:{a}" for spec in routes for a in spec.discover]
    )


def upstreamPolicyFor(config: Config, log: ILogObserver) -> IPolicyForHTTPS | None:
    """How an C{https://} upstream is verified; C{None} when every upstream is plain HTTP."""
    addresses = [a for spec in config.routes for a in spec.upstreams + spec.discover]
    if not any(address.isTLS for address in addresses):
        return None
    return upstreamPolicy(config.tls.upstreamCA, config.tls.upstreamInsecure, log)


__all__ = ["appAuth", "appRouting", "describeUpstreams", "passthroughRoute", "upstreamPolicyFor"]
