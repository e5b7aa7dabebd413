"""
How many connections the descriptor limit holds (stproxy.edge.descriptors): the default
--max-connections is (soft limit - 64) / 2, an explicit one raises the soft limit up to the hard
one, and a cap the limits cannot hold is lowered to what they hold, with a warning.  The limits are passed in, never changed.
"""

from __future__ import annotations

import resource

import pytest

from stproxy.edge.descriptors import (
    UNLIMITED_DESCRIPTORS,
    descriptorLimits,
    maxConnections,
)


@pytest.mark.parametrize(
    "soft, cap",
    [(1024, 480), (65536, 32736), (1048576, 524256), (64, 1)],
)
def test_the_default_cap_comes_from_the_descriptor_limit(soft: int, cap: int) -> None:
    """Without --max-connections the cap is (soft limit - 64) / 2: a client and an upstream descriptor each."""
    assert maxConnections(None, limits=(soft, 1 << 20)) == cap


def test_an_unlimited_descriptor_limit_counts_as_linuxs_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """An "unlimited" RLIMIT_NOFILE is taken as 1048576 descriptors, not as -1."""
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert descriptorLimits() == (UNLIMITED_DESCRIPTORS, UNLIMITED_DESCRIPTORS)


def test_an_explicit_cap_raises_the_soft_limit() -> None:
    """--max-connections 1000 under a 1024 soft limit raises it to 2064, within the hard limit."""
    raised: list[tuple[int, int]] = []
    cap = maxConnections(1000, limits=(1024, 524288), raiseSoftLimit=lambda *limits: raised.append(limits))
    assert (cap, raised) == (1000, [(2064, 524288)])


def test_a_soft_limit_that_cannot_be_raised_lowers_the_cap_with_a_warning() -> None:
    """If the limit cannot be raised (a seccomp filter), the cap is what the soft limit holds, and a warning says so."""
    events: list[dict] = []

    def refuse(soft: int, hard: int) -> None:
        raise PermissionError("Operation not permitted")

    cap = maxConnections(1000, events.append, limits=(1024, 524288), raiseSoftLimit=refuse)
    assert cap == 480
    [event] = events
    assert (event["requested"], event["cap"]) == (1000, 480)
    assert "Operation not permitted" in event["reason"]


def test_an_explicit_cap_within_the_soft_limit_changes_nothing() -> None:
    """A cap the soft limit already holds is taken as it is."""
    assert maxConnections(5, limits=(1024, 1024), raiseSoftLimit=pytest.fail) == 5


def test_a_cap_over_the_hard_limit_is_lowered_with_a_warning() -> None:
    """A cap needing more descriptors than the hard limit allows is lowered to what it holds, and a warning names both."""
    events: list[dict] = []
    raised: list[tuple[int, int]] = []
    cap = maxConnections(40000, events.append, limits=(1024, 65536), raiseSoftLimit=lambda *limits: raised.append(limits))
    assert (cap, raised) == (32736, [(65536, 65536)])
    warning = events[-1]
    assert (warning["requested"], warning["needed"], warning["soft"], warning["cap"]) == (40000, 80064, 65536, 32736)
