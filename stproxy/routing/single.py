"""
One app on one server, as routes: what a program (or a test) that built one
L{Upstream} gives the HTTP and WebSocket legs.

The command line never comes here: L{stproxy.assembly} builds its routes
from the configuration, with health checks and discovery.
"""

from __future__ import annotations

from twisted.logger import Logger

from stproxy.config import HEALTH_PATH
from stproxy.ops.metrics import Metrics
from stproxy.routing.affinity import DEFAULT_COOKIE, Affinity, randomSecret
from stproxy.routing.metrics import ReplicaMetrics
from stproxy.routing.replicaset import ReplicaSet
from stproxy.routing.route import Route, Routes
from stproxy.upstream.client import Upstream


def asRoutes(upstream: Upstream | Routes) -> Routes:
    """C{upstream} as the one replica of the app at C{/}, or the routes as they are."""
    if isinstance(upstream, Routes):
        return upstream
    log = Logger("stproxy.routing", None, upstream.logObserver)
    metrics = ReplicaMetrics(Metrics())
    replicas = ReplicaSet(
        "/",
        upstream.reactor,
        lambda address: upstream,
        HEALTH_PATH,
        healthInterval=5.0,
        drainTimeout=30.0,
        metrics=metrics,
        log=log,
    )
    replicas.add(upstream.address)
    affinity = Affinity(DEFAULT_COOKIE, randomSecret(), "/")
    route = Route("/", replicas, affinity, metrics, log, sticky=False)
    return Routes([route], upstream.reactor)


__all__ = ["asRoutes"]
