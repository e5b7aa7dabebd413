"""
The root service (stproxy.service): a start that fails half-way releases what it had bound, and a
stop goes through every step whatever fails on the way, on a MemoryReactorClock.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, capturedLogs

from fake_resolver import FakeResolver
from option_parsing import parse
from stproxy.routing.service import RoutingService
from stproxy.routing.single import asRoutes
from stproxy.service import ProxyService
from stproxy.tap import makeService
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream

#: The port the tests' reactor refuses to listen on, as if another program had it.
BUSY = 8124


class RecordingPort:
    """A listening port that remembers whether it was closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.closed = False

    def getHost(self) -> IPv4Address:
        """Where the port listens (only its number matters here)."""
        return IPv4Address("TCP", "0.0.0.0", self.port)

    def stopListening(self) -> None:
        """Close the port."""
        self.closed = True


class BusyPortReactor(MemoryReactorClock):
    """A memory reactor on which port L{BUSY} is taken and every other port is a L{RecordingPort}."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[RecordingPort] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        """Listen on C{port}, unless it is L{BUSY}."""
        if port == BUSY:
            raise CannotListenError(interface, port, OSError("Address already in use"))
        self.ports.append(RecordingPort(port))
        return self.ports[-1]


class Child(Service):
    """A child service whose start or stop fails when told to, and which counts its stops."""

    def __init__(self, name: str, failure: str = "") -> None:
        self.name = name
        self.failure = failure
        self.stops = 0

    def startService(self) -> None:
        """Start, or fail to."""
        super().startService()
        if self.failure == "start":
            raise OSError(f"{self.name} cannot start")

    def stopService(self) -> Deferred[None] | None:
        """Stop; raise, or return a failed Deferred, when told to."""
        self.stops += 1
        super().stopService()
        if self.failure == "raise":
            raise RuntimeError(f"{self.name} cannot stop")
        if self.failure == "deferred":
            return fail(RuntimeError(f"{self.name} cannot stop"))
        return None


def proxy(reactor: MemoryReactorClock, *argv: str) -> ProxyService:
    """A proxy built from C{argv} on C{reactor}, with the admin listener and certificate reload."""
    arguments = ["--upstream", "127.0.0.1:9", "--admin", "tcp:9100", *argv]
    service = makeService(parse(*arguments), reactor)
    assert isinstance(service, ProxyService)
    return service


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The proxies' upstream pool closes, recorded instead of done."""
    closed: list[str] = []

    def close(self: Upstream) -> Deferred[None]:
        closed.append(str(self.address))
        return succeed(None)

    monkeypatch.setattr(Upstream, "close", close)
    return closed


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a proxy owning its process does to signals, recorded instead of done."""
    calls: list[str] = []
    monkeypatch.setattr(
        "stproxy.service.exitOnNextSignal", lambda: calls.append("exitOnNextSignal")
    )
    monkeypatch.setattr(
        "stproxy.service.forgetExitSignal", lambda reactor: calls.append("forgetExitSignal")
    )
    monkeypatch.setattr("stproxy.service.tuneCollector", lambda: None)  # the test process's own
    return calls


@pytest.mark.parametrize(
    "privileged", [False, True], ids=["startService", "privilegedStartService"]
)
def test_a_start_that_fails_half_way_closes_the_listeners_already_bound(
    privileged: bool, closes: list[str]
) -> None:
    """When the second listener's port is taken, the first is closed and the pool too, and the error is raised."""
    reactor = BusyPortReactor()
    service = proxy(reactor, "--listen", "tcp:8123", "--listen", f"tcp:{BUSY}")
    start = service.privilegedStartService if privileged else service.startService
    with pytest.raises(CannotListenError):
        start()
    [first] = reactor.ports
    assert first.port == 8123 and first.closed
    assert closes == ["http://127.0.0.1:9"]
    assert not any(child.running for child in service)
    assert service.stopService().called  # later stops wait on the same release


def test_a_start_that_fails_after_binding_every_listener_closes_them_all(closes: list[str]) -> None:
    """Under twistd the listeners bind first; an admin port taken at start still releases them all."""
    reactor = BusyPortReactor()
    service = makeService(
        parse("--upstream", "127.0.0.1:9", "--listen", "tcp:8123", "--listen", "tcp:8125"), reactor
    )
    service.privilegedStartService()
    late = Child("late", "start")  # begun only by startService, and stopped all the same
    late.setServiceParent(service)
    with pytest.raises(OSError):
        service.startService()
    assert [(p.port, p.closed) for p in reactor.ports] == [(8123, True), (8125, True)]
    assert late.stops == 1
    assert closes == ["http://127.0.0.1:9"]


@pytest.mark.parametrize("failure", ["raise", "deferred"])
def test_a_public_listener_that_fails_to_stop_does_not_skip_the_rest(
    failure: str, closes: list[str], process: list[str]
) -> None:
    """A listener whose stop fails is logged once, by name, and the drain, pool, admin and reload still stop."""
    reactor = MemoryReactorClock()
    service = proxy(reactor)
    service.ownsProcess = True
    broken = Child("listener-9", failure)
    broken.setServiceParent(service)
    sighup = signal.getsignal(signal.SIGHUP)
    service.startService()
    with capturedLogs() as events:
        d = service.stopService()
    assert d.called and d.result is None
    failures = [e for e in events if "log_failure" in e]
    assert [e["step"] for e in failures] == ["stopping listener-9"]
    assert broken.stops == 1
    assert closes == ["http://127.0.0.1:9"]
    assert not any(child.running for child in service if child is not broken)
    assert signal.getsignal(signal.SIGHUP) == sighup  # certificate reload's handler is gone
    assert process == ["exitOnNextSignal"]  # not a clean stop: the process ends by its signal


def test_a_failed_drain_still_closes_websockets_and_stops_everything_else(
    closes: list[str], process: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If draining HTTP requests fails, WebSockets are still closed and every other child stopped."""
    reactor = MemoryReactorClock()
    service = proxy(reactor)
    service.startService()
    closedWebSockets: list[float] = []
    monkeypatch.setattr(service.drain, "drain", lambda timeout: fail(RuntimeError("drain broke")))
    monkeypatch.setattr(
        service.webSocket, "closeAll", lambda timeout: closedWebSockets.append(timeout)
    )
    with capturedLogs() as events:
        d = service.stopService()
    assert d.called and d.result is None
    assert [e["step"] for e in events if "log_failure" in e] == ["draining HTTP requests"]
    assert closedWebSockets == [30.0]
    assert closes == ["http://127.0.0.1:9"]
    assert not any(child.running for child in service)


def test_a_child_failing_to_stop_leaves_the_others_stopping(
    closes: list[str], process: list[str]
) -> None:
    """A non-public child whose stop fails does not keep the other children from stopping."""
    reactor = MemoryReactorClock()
    service = proxy(reactor)
    service.ownsProcess = True
    Child("first", "deferred").setServiceParent(service)
    last = Child("last")
    last.setServiceParent(service)
    service.startService()
    with capturedLogs() as events:
        d = service.stopService()
    assert d.called and d.result is None
    assert [e["step"] for e in events if "log_failure" in e] == ["stopping first"]
    assert last.stops == 1 and closes == ["http://127.0.0.1:9"]
    assert process == ["exitOnNextSignal"]


def test_a_clean_stop_of_a_process_owner_exits_0(closes: list[str], process: list[str]) -> None:
    """With every step done, a proxy owning its process forgets the exit signal, so it exits 0."""
    reactor = MemoryReactorClock()
    service = proxy(reactor)
    service.ownsProcess = True
    service.startService()
    with capturedLogs() as events:
        d = service.stopService()
    assert d.called and d.result is None
    assert not [e for e in events if "log_failure" in e]
    assert process == ["exitOnNextSignal", "forgetExitSignal"]


def test_a_worker_leaves_the_second_signal_to_its_supervisor(
    closes: list[str], process: list[str]
) -> None:
    """A --workers worker (exitOnSecondSignal off) installs no second-signal exit, and exits 0."""
    reactor = MemoryReactorClock()
    service = proxy(reactor)
    service.ownsProcess = True
    service.exitOnSecondSignal = False
    service.startService()
    service.stopService()
    assert process == ["forgetExitSignal"]


def test_no_report_of_refusals_outlives_the_stop(closes: list[str]) -> None:
    """Once stopped, the proxy never logs "Below the connection limit again" (or anything) about refusals later."""
    reactor = MemoryReactorClock()
    service = proxy(reactor, "--listen", "tcp:8123")
    service.startService()
    assert service.connections is not None
    service.connections.refused()  # a burst begins: its report is due in 10 s
    stopped = service.stopService()
    reactor.advance(0)
    assert stopped.called
    reports = [c for c in reactor.getDelayedCalls() if getattr(c.func, "__self__", None) is service.connections]
    assert reports == []


def test_the_routing_service_looks_the_name_up_while_it_runs() -> None:
    """Started, the routing service looks each replica's name up at once and on a timer; stopped, the timer is gone."""
    clock = MemoryReactorClock()
    resolver = FakeResolver()
    routes = asRoutes(Upstream(clock, UpstreamAddress("http", "app.internal", 8501), resolver=resolver))
    service = RoutingService(routes, [], Logger(), sharedSecret=False)
    service.startService()
    resolver.answer("10.0.0.7")
    assert clock.getDelayedCalls()
    service.stopService()
    assert not clock.getDelayedCalls()
    clock.advance(3600)
    assert resolver.lookups == []