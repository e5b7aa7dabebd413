"""
Tests for L{stproxy.ops.metrics}: the labels clients can influence stay a
small, fixed set, and each proxy counts on a registry of its own.
"""

from __future__ import annotations

import pytest

from stproxy.ops.metrics import Metrics, closeCodeLabel, statusClass


@pytest.mark.parametrize(
    ("code", "label"),
    [
        # Registered codes keep their own label.
        (1000, "1000"),
        (1001, "1001"),
        (1006, "1006"),
        (1012, "1012"),
        (1015, "1015"),
        # Library and application ranges are one label each.
        (3000, "3xxx"),
        (3999, "3xxx"),
        (4000, "4xxx"),
        (4321, "4xxx"),
        (4999, "4xxx"),
        # Unregistered or impossible codes, and no code at all.
        (1016, "other"),
        (2999, "other"),
        (999, "other"),
        (5000, "other"),
        (0, "other"),
        (65535, "other"),
        (None, "none"),
    ],
)
def test_close_codes_are_labelled_from_a_fixed_set(code: int | None, label: str) -> None:
    """A close code a client picks maps to its registered code, a range bucket, other or none."""
    assert closeCodeLabel(code) == label


def test_application_close_codes_share_one_label_value() -> None:
    """A thousand different application close codes add one label value, not a thousand."""
    metrics = Metrics()
    for code in range(4000, 5000):
        metrics.webSocketClosed(code)
    metrics.webSocketClosed(3007)
    metrics.webSocketClosed(1001)
    metrics.webSocketClosed(None)
    samples = [
        s
        for family in metrics.registry.collect()
        if family.name == "stproxy_websocket_sessions_closed"
        for s in family.samples
        if s.name.endswith("_total")
    ]
    assert {s.labels["code"]: s.value for s in samples} == {
        "4xxx": 1000,
        "3xxx": 1,
        "1001": 1,
        "none": 1,
    }


@pytest.mark.parametrize(
    ("code", "label"), [(101, "1xx"), (204, "2xx"), (599, "5xx"), (600, "other")]
)
def test_response_statuses_are_labelled_by_class(code: int, label: str) -> None:
    """An HTTP status counts under its class; anything outside 100-599 is other."""
    assert statusClass(code) == label


def test_two_proxies_never_share_numbers() -> None:
    """Each Metrics has a registry of its own."""
    a, b = Metrics(), Metrics()
    a.webSocketClosed(1000)
    assert (
        b.registry.get_sample_value("stproxy_websocket_sessions_closed_total", {"code": "1000"})
        is None
    )
