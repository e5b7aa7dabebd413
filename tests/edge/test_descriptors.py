"""
How many connections the descriptor limit holds (stproxy.edge.descriptors): the default
--max-connections is (soft limit - 192) / 2, an explicit one raises the soft limit up to the hard
one, and a cap the limits cannot hold is lowered to what they hold, with a warning.  The limits are passed in, never changed,
and they are raised when a proxy starts, not when it is built.
"""

from __future__ import annotations

import resource

import pytest
from twisted.internet.testing import MemoryReactorClock

from option_parsing import parse
from stproxy.assembly import assemble
from stproxy.edge.descriptors import (
    RESERVED,
    UNLIMITED_DESCRIPTORS,
    connectionsFor,
    descriptorLimits,
    descriptorsFor,
    maxConnections,
)
from stproxy.service import ProxyService
from stproxy.tap import makeService
from stproxy.upstream.client import POOLED_IDLE_CONNECTIONS


@pytest.mark.parametrize(
    "soft, cap",
    [(1024, 416), (65536, 32672), (1048576, 524192), (64, 1)],
)
def test_the_default_cap_comes_from_the_descriptor_limit(soft: int, cap: int) -> None:
    """Without --max-connections the cap is (soft limit - 192) / 2: a client and an upstream descriptor each, the pool's 128 idle ones and 64 apart."""
    assert maxConnections(None, limits=(soft, 1 << 20)) == cap


def test_an_unlimited_descriptor_limit_counts_as_linuxs_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """An "unlimited" RLIMIT_NOFILE is taken as 1048576 descriptors, not as -1."""
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert descriptorLimits() == (UNLIMITED_DESCRIPTORS, UNLIMITED_DESCRIPTORS)


def test_an_explicit_cap_raises_the_soft_limit() -> None:
    """--max-connections 1000 under a 1024 soft limit raises it to 2192, within the hard limit."""
    raised: list[tuple[int, int]] = []
    cap = maxConnections(1000, limits=(1024, 524288), raiseSoftLimit=lambda *limits: raised.append(limits))
    assert (cap, raised) == (1000, [(2192, 524288)])


def test_a_soft_limit_that_cannot_be_raised_lowers_the_cap_with_a_warning() -> None:
    """If the limit cannot be raised (a seccomp filter), the cap is what the soft limit holds, and a warning says so."""
    events: list[dict] = []

    def refuse(soft: int, hard: int) -> None:
        raise PermissionError("Operation not permitted")

    cap = maxConnections(1000, events.append, limits=(1024, 524288), raiseSoftLimit=refuse)
    assert cap == 416
    [event] = events
    assert (event["requested"], event["cap"]) == (1000, 416)
    assert "Operation not permitted" in event["reason"]


def test_an_explicit_cap_within_the_soft_limit_changes_nothing() -> None:
    """A cap the soft limit already holds is taken as it is."""
    assert maxConnections(5, limits=(1024, 1024), raiseSoftLimit=pytest.fail) == 5


def test_a_cap_over_the_hard_limit_is_lowered_with_a_warning() -> None:
    """A cap needing more descriptors than the hard limit allows is lowered to what it holds, and a warning names both."""
    events: list[dict] = []
    raised: list[tuple[int, int]] = []
    cap = maxConnections(40000, events.append, limits=(1024, 65536), raiseSoftLimit=lambda *limits: raised.append(limits))
    assert (cap, raised) == (32672, [(65536, 65536)])
    warning = events[-1]
    assert (warning["requested"], warning["needed"], warning["soft"], warning["cap"]) == (40000, 80192, 65536, 32672)


def test_the_reserve_holds_every_idle_pooled_upstream_connection() -> None:
    """The descriptors kept apart hold the pool's idle upstream connections and 64 more, so a larger pool cannot eat into the cap."""
    assert RESERVED == POOLED_IDLE_CONNECTIONS + 64


@pytest.fixture
def setrlimit(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """A process whose soft limit is 1,024 under a hard one of 524,288, and its setrlimit calls, recorded instead of made."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 524288))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    return calls


def test_building_a_proxy_leaves_the_descriptor_limit_alone(setrlimit: list[tuple[int, int]]) -> None:
    """makeService only wires the proxy: the soft limit is raised for --max-connections when it starts, not before."""
    arguments = ["--upstream", "127.0.0.1:9", "--listen", "tcp:8123", "--max-connections", "1000"]
    service = makeService(parse(*arguments), MemoryReactorClock())
    assert setrlimit == []
    service.startService()
    assert setrlimit == [(descriptorsFor(1000), 524288)]
    assert isinstance(service, ProxyService) and service.connections is not None
    assert service.connections.maximum == 1000


def test_a_limit_that_cannot_be_raised_on_start_lowers_the_cap(setrlimit: list[tuple[int, int]]) -> None:
    """When the raise fails at start, the cap the listeners enforce is what the soft limit holds."""
    config = parse("--upstream", "127.0.0.1:9", "--listen", "tcp:8123", "--max-connections", "1000000").config
    raised: list[tuple[int, int]] = []

    def refuse(soft: int, hard: int) -> None:
        raised.append((soft, hard))
        raise OSError("Operation not permitted")

    service = assemble(config, MemoryReactorClock(), raiseSoftLimit=refuse)
    assert raised == [] and service.connections is not None
    assert service.connections.maximum == connectionsFor(524288)  # as far as the hard limit allows
    service.privilegedStartService()
    assert raised == [(524288, 524288)] and service.connections is not None
    assert service.connections.maximum == connectionsFor(1024)
