"""
The per-replica metrics (L{stproxy.ops.metrics.Metrics} holds the families):
whether each replica is up, its open sessions, its requests, its failed
health checks, and the browsers re-pinned per route.

A replica that leaves the set takes its label values with it (L{forget}), so
a Deployment that rolls its pods every day does not grow the exposition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import Counter

    from stproxy.ops.metrics import Metrics
    from stproxy.upstream.address import UpstreamAddress


class Replica(Protocol):
    """What names a replica in the metrics (L{stproxy.routing.replica.Replica})."""

    route: str
    address: UpstreamAddress


class ReplicaMetrics:
    """The replica metrics of one proxy, labelled C{route} and C{replica}."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._requests: dict[tuple[str, UpstreamAddress], Counter] = {}

    def _labels(self, replica: Replica) -> tuple[str, str]:
        return replica.route, str(replica.address)

    def up(self, replica: Replica, isUp: bool) -> None:
        self._metrics.replicaUp.labels(*self._labels(replica)).set(1 if isUp else 0)

    def sessions(self, replica: Replica, count: int) -> None:
        self._metrics.replicaSessions.labels(*self._labels(replica)).set(count)

    def request(self, replica: Replica) -> None:
        # Every request counts: the child is looked up once per replica.
        key = (replica.route, replica.address)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self._metrics.replicaRequests.labels(
                *self._labels(replica)
            )
        child.inc()

    def healthFailed(self, replica: Replica) -> None:
        self._metrics.replicaHealthFailures.labels(*self._labels(replica)).inc()

    def repinned(self, route: str) -> None:
        self._metrics.replicaRepins.labels(route=route).inc()

    def forget(self, replica: Replica) -> None:
        """C{replica} is gone for good: drop its label values."""
        self._requests.pop((replica.route, replica.address), None)
        labels = self._labels(replica)
        for family in (
            self._metrics.replicaUp,
            self._metrics.replicaSessions,
            self._metrics.replicaRequests,
            self._metrics.replicaHealthFailures,
        ):
            try:
                family.remove(*labels)
            except KeyError:
                pass


__all__ = ["ReplicaMetrics"]
