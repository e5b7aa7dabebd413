"""
The per-replica metrics (stproxy.routing.metrics): labelled by route and replica address, the
re-pins by route, and a replica that leaves taking its label values with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stproxy.ops.metrics import Metrics
from stproxy.routing.metrics import ReplicaMetrics
from stproxy.upstream.address import UpstreamAddress


@dataclass
class Named:
    route: str
    address: UpstreamAddress


ONE = Named("/app", UpstreamAddress("http", "10.0.0.1", 8501))
TWO = Named("/app", UpstreamAddress("http", "10.0.0.2", 8501))
FAMILIES = (
    "stproxy_replica_up",
    "stproxy_replica_sessions",
    "stproxy_replica_requests_total",
    "stproxy_replica_health_failures_total",
)


def sample(metrics: Metrics, name: str, replica: Named) -> float | None:
    labels = {"route": replica.route, "replica": str(replica.address)}
    return metrics.registry.get_sample_value(name, labels)


def everything(replicas: ReplicaMetrics, replica: Named) -> None:
    replicas.up(replica, True)
    replicas.sessions(replica, 3)
    replicas.request(replica)
    replicas.request(replica)
    replicas.healthFailed(replica)


def test_each_replica_has_its_own_labelled_values() -> None:
    """up, sessions, requests and health failures, per route and replica address."""
    metrics = Metrics()
    replicas = ReplicaMetrics(metrics)
    everything(replicas, ONE)
    replicas.up(TWO, False)
    assert [sample(metrics, name, ONE) for name in FAMILIES] == [1, 3, 2, 1]
    assert sample(metrics, "stproxy_replica_up", TWO) == 0
    assert sample(metrics, "stproxy_replica_requests_total", TWO) is None


def test_re_pins_are_counted_per_route() -> None:
    """Browsers moved off their replica, by route."""
    metrics = Metrics()
    replicas = ReplicaMetrics(metrics)
    replicas.repinned("/app")
    replicas.repinned("/app")
    replicas.repinned("/other")
    assert metrics.registry.get_sample_value("stproxy_replica_repins_total", {"route": "/app"}) == 2
    assert (
        metrics.registry.get_sample_value("stproxy_replica_repins_total", {"route": "/other"}) == 1
    )


def test_a_forgotten_replica_leaves_no_label_values_and_others_keep_theirs() -> None:
    """forget() drops every family's values for that replica only; forgetting again is harmless."""
    metrics = Metrics()
    replicas = ReplicaMetrics(metrics)
    everything(replicas, ONE)
    everything(replicas, TWO)
    replicas.forget(ONE)
    replicas.forget(ONE)
    assert [sample(metrics, name, ONE) for name in FAMILIES] == [None] * 4
    assert [sample(metrics, name, TWO) for name in FAMILIES] == [1, 3, 2, 1]
    exposition = "".join(
        str(s.labels) for family in metrics.registry.collect() for s in family.samples
    )
    assert "10.0.0.1" not in exposition and "10.0.0.2" in exposition


def test_forgetting_a_replica_never_seen_is_harmless() -> None:
    """A replica with only some families set (or none) is forgotten without error."""
    metrics = Metrics()
    replicas = ReplicaMetrics(metrics)
    replicas.up(ONE, True)
    replicas.forget(ONE)
    replicas.forget(TWO)
    assert sample(metrics, "stproxy_replica_up", ONE) is None
