"""
The supervisor's /metrics (stproxy.workers.metrics): every worker's exposition labelled and
merged into one that Prometheus' own parser reads, and the supervisor's own metrics.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stproxy.ops.metrics import Metrics
from stproxy.workers.metrics import SupervisorMetrics, labelled, mergeExpositions


@pytest.mark.parametrize(
    "line, expected",
    [
        # no labels: some are added
        (b"up 1.0", b'up{worker="0"} 1.0'),
        (b"up\t1.0", b'up{worker="0"}\t1.0'),
        (b"up{} 1.0", b'up{worker="0"} 1.0'),
        # labels: the worker's goes first, the rest as they were (even a } in a value)
        (b'req_total{method="GET"} 3.0', b'req_total{worker="0",method="GET"} 3.0'),
        (b'x{a="}"} 1 1700000000', b'x{worker="0",a="}"} 1 1700000000'),
        # comments and blank lines are left alone
        (b"# HELP up Whether it is up", b"# HELP up Whether it is up"),
        (b"", b""),
    ],
)
def test_labelled_puts_the_worker_label_first(line: bytes, expected: bytes) -> None:
    """A sample line gets worker="0" as its first label, whatever labels it had."""
    assert labelled(line, b'worker="0"') == expected


def families(text: bytes) -> dict[str, list]:
    return {
        family.name: family.samples
        for family in text_string_to_metric_families(text.decode("utf-8"))
    }


def test_two_workers_expositions_merge_into_one_that_prometheus_reads() -> None:
    """
    Two workers' real expositions: one HELP and TYPE per family, each sample labelled with its
    worker, worker 0's samples before worker 1's, and nothing lost.
    """
    zero, one = Metrics(), Metrics()
    zero.requestDone("GET", 200, 0.1, 0, 10)
    one.requestDone("POST", 502, 0.2, 5, 0)
    one.requestDone("POST", 502, 0.2, 5, 0)
    merged = mergeExpositions([("0", zero.exposition()[0]), ("1", one.exposition()[0])])
    assert merged.count(b"# TYPE stproxy_http_requests_total counter\n") == 1
    requests = families(merged)["stproxy_http_requests"]
    totals = [(s.labels, s.value) for s in requests if s.name == "stproxy_http_requests_total"]
    assert totals == [
        ({"worker": "0", "method": "GET", "status_class": "2xx"}, 1.0),
        ({"worker": "1", "method": "POST", "status_class": "5xx"}, 2.0),
    ]
    single = families(zero.exposition()[0])
    assert set(families(merged)) == set(single)
    for name, samples in single.items():
        assert len(families(merged)[name]) == 2 * len(samples), name


def test_a_family_only_one_worker_has_keeps_its_place_and_help() -> None:
    """Families appear in the order first seen; one only worker 1 has still gets its HELP and TYPE."""
    zero = b"# HELP a A\n# TYPE a gauge\na 1\n"
    one = b"# HELP a A\n# TYPE a gauge\na 2\n# HELP b B\n# TYPE b counter\nb_total 3\n"
    assert mergeExpositions([("0", zero), ("1", one)]) == (
        b'# HELP a A\n# TYPE a gauge\na{worker="0"} 1\na{worker="1"} 2\n'
        b'# HELP b B\n# TYPE b counter\nb_total{worker="1"} 3\n'
    )


def test_no_worker_gives_an_empty_exposition() -> None:
    """With no worker answering, the merge is empty (the supervisor's own metrics follow it)."""
    assert mergeExpositions([]) == b""


def test_a_label_value_is_escaped() -> None:
    """The part's name is escaped as a label value."""
    assert mergeExpositions([('a"b', b"x 1\n")], label="w") == b'x{w="a\\"b"} 1\n'


def test_supervisor_metrics_show_workers_and_restarts_per_worker() -> None:
    """stproxy_workers is a gauge; stproxy_worker_restarts_total has a 0 for every worker from the start."""
    metrics = SupervisorMetrics(2)
    metrics.workers.set(2)
    metrics.restarted(1)
    found = families(metrics.exposition())
    assert [s.value for s in found["stproxy_workers"]] == [2.0]
    restarts = {
        s.labels["worker"]: s.value
        for s in found["stproxy_worker_restarts"]
        if s.name.endswith("_total")
    }
    assert restarts == {"0": 0.0, "1": 1.0}
