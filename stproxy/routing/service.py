"""
The routes while the proxy runs: every replica's address lookups and health
check, the DNS discovery that adds and drains replicas, and the replicas'
connection pools, closed when the proxy stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from stproxy.upstream.address import UpstreamAddress

if TYPE_CHECKING:
    from stproxy.routing.discovery import DNSDiscovery
    from stproxy.routing.replicaset import ReplicaSet
    from stproxy.routing.route import Routes


class Membership:
    """
    Which replicas an app has: those given by address, and what each of its
    DNS names lists now (L{found}, from L{stproxy.routing.discovery}).
    """

    def __init__(self, replicas: ReplicaSet, static: tuple[UpstreamAddress, ...]) -> None:
        self.replicas = replicas
        self._static = static
        self._listed: dict[UpstreamAddress, set[UpstreamAddress]] = {}

    def found(self, name: UpstreamAddress, addresses: frozenset[str]) -> None:
        """C{name} now lists exactly C{addresses} (IP addresses, at its scheme and port)."""
        self._listed[name] = {UpstreamAddress(name.scheme, ip, name.port) for ip in addresses}
        every = set(self._static).union(*self._listed.values())
        self.replicas.update(sorted(every, key=str))


class RoutingService(Service):
    """
    Runs the routes: replicas' lookups and health checks, and discovery.

    @ivar routes: what the HTTP and WebSocket legs route with.
    """

    name = "upstream"

    def __init__(
        self,
        routes: Routes,
        discoveries: list[DNSDiscovery],
        log: Logger,
        sharedSecret: bool,
    ) -> None:
        """
        @param sharedSecret: whether the affinity cookie's key was given
            (C{--affinity-secret-file}); without it, the log says what that means.
        """
        self.routes = routes
        self._discoveries = discoveries
        self._log = log
        self._sharedSecret = sharedSecret

    def startService(self) -> None:
        super().startService()
        for route in self.routes.routes:
            route.replicas.start()
        for discovery in self._discoveries:
            discovery.start()
        sticky = [route.prefix for route in self.routes.routes if route.sticky]
        if sticky and not self._sharedSecret:
            self._log.info(
                "Affinity cookies for {routes} are signed with a random key of this process:"
                " another stproxy in front of the same replicas cannot read them"
                " (give every stproxy the same --affinity-secret-file)",
                routes=", ".join(sticky),
            )

    def stopService(self) -> Deferred[None]:
        """Stop discovery and health checks; fires once every replica's pool is closed."""
        super().stopService()
        for discovery in self._discoveries:
            discovery.stop()
        closing: list[Deferred[None]] = []
        for route in self.routes.routes:
            route.replicas.stop()
            closing.extend(route.replicas.close())
        return gatherResults(closing).addCallback(lambda _: None)


__all__ = ["Membership", "RoutingService"]
