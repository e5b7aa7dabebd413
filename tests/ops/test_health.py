"""
The upstream health poller (stproxy.ops.health) on a fake clock, against a fake upstream.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone


class _FakeResponse:
    def __init__(self, code: int) -> None:
        self.code = code
        self.phrase = b"OK"

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(b"ok")
        protocol.connectionLost(Failure(ResponseDone()))


class _FakeUpstream:
    address = "http://upstream.test:8501"

    def __init__(self, clock: Clock) -> None:
        self.reactor = clock
        self.answers: list[Deferred] = []
        self.targets: list[bytes] = []

    def request(self, method: bytes, target: bytes, headers: Any, body: Any) -> Deferred:
        assert method == b"GET"
        self.targets.append(target)
        d: Deferred = Deferred()
        self.answers.append(d)
        return d


def test_health_poller_turns_unhealthy_on_a_failed_or_hanging_check() -> None:
    """A 200 makes the upstream healthy; a 503 or a check with no answer within the interval does not."""
    from stproxy.ops.health import HealthPoller
    from stproxy.ops.metrics import Metrics

    clock = Clock()
    upstream = _FakeUpstream(clock)
    metrics = Metrics()
    poller = HealthPoller(upstream, 2.0, metrics)  # type: ignore[arg-type]
    poller.startService()
    assert not poller.healthy
    upstream.answers[-1].callback(_FakeResponse(200))
    assert poller.healthy
    assert metrics.upstreamHealthy._value.get() == 1
    clock.advance(2.0)
    upstream.answers[-1].callback(_FakeResponse(503))
    assert not poller.healthy
    clock.advance(2.0)
    upstream.answers[-1].callback(_FakeResponse(200))
    assert poller.healthy
    clock.advance(2.0)  # this check hangs...
    clock.advance(2.0)  # ...and times out at the next tick
    assert not poller.healthy
    assert metrics.upstreamHealthy._value.get() == 0
    poller.stopService()


def test_health_poller_asks_for_the_configured_path() -> None:
    """The default is Streamlit's own; --health-path serves a Streamlit under a baseUrlPath."""
    from stproxy.ops.health import HealthPoller
    from stproxy.ops.metrics import Metrics

    for path in (None, b"/app/_stcore/health"):
        clock = Clock()
        upstream = _FakeUpstream(clock)
        extra = () if path is None else (None, path)
        poller = HealthPoller(upstream, 2.0, Metrics(), *extra)  # type: ignore[arg-type]
        poller.startService()
        assert upstream.targets == [path or b"/_stcore/health"]
        upstream.answers[-1].callback(_FakeResponse(200))
        poller.stopService()
