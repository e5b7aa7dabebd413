"""
Routing in memory, for ``tests/routing/`` and ``tests/websocket/test_routing.py``: an app's
replicas built by hand (L{App}: a L{ReplicaSet}, its L{Route} and L{Routes}, on a
L{MemoryReactorClock}), each replica a real L{Upstream} over its own L{FakeUpstreamAgent}
(L{RecordingUpstream}, which also records its starts and closes) or any upstream the test
makes; the log events as a list; and L{FakeLeg}, a session's browser leg that records its
restarts.

Nothing here touches the global reactor: time passes when the test advances C{App.clock}.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from stproxy.config import Timeouts
from stproxy.ops.metrics import Metrics
from stproxy.routing.affinity import DEFAULT_COOKIE, Affinity
from stproxy.routing.metrics import ReplicaMetrics
from stproxy.routing.replica import Replica
from stproxy.routing.replicaset import ReplicaSet
from stproxy.routing.route import Route, Routes
from stproxy.testing.http import BodyTransport, FakeResponse, FakeUpstreamAgent, UpstreamRequest
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream

__all__ = [
    "ADDRESSES",
    "SECRET",
    "App",
    "FakeLeg",
    "RecordingUpstream",
    "AbortableBodyTransport",
    "answer",
    "formats",
    "respond",
]

#: Where the replicas of a test app are, in the order L{App} adds them.
ADDRESSES = tuple(UpstreamAddress("http", f"10.0.0.{n}", 8501) for n in range(1, 6))

#: The affinity key of a test app (any 16 bytes or more).
SECRET = b"0123456789abcdef0123456789abcdef"


class RecordingUpstream(Upstream):
    """
    An L{Upstream} over its own L{FakeUpstreamAgent} (C{agent}) that counts L{start} and
    L{close}.
    """

    started = 0
    closed = 0

    def __init__(self, reactor: MemoryReactorClock, address: UpstreamAddress) -> None:
        self.agent = FakeUpstreamAgent()
        super().__init__(reactor, address, Timeouts(), agent=self.agent)

    def start(self) -> None:
        self.started += 1
        super().start()

    def close(self) -> Deferred[None]:
        self.closed += 1
        return super().close()

    @property
    def requests(self) -> list[UpstreamRequest]:
        return self.agent.requests


class FakeLeg:
    """A WebSocket session's browser leg, as a replica holds it: counts its restarts."""

    def __init__(self, name: str = "leg") -> None:
        self.name = name
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1

    def __repr__(self) -> str:
        return f"<FakeLeg {self.name}>"


class App:
    """
    One app at C{prefix} with C{count} replicas at L{ADDRESSES}, as L{stproxy.assembly} builds
    it, but by hand.

    @ivar events: every log event of the routing, in order.
    @ivar upstreams: the upstream of each replica made, by address.
    """

    def __init__(
        self,
        count: int = 2,
        prefix: str = "/",
        sticky: bool = True,
        healthPath: bytes | None = b"/_stcore/health",
        healthInterval: float = 5.0,
        drainTimeout: float = 30.0,
        secret: bytes = SECRET,
        cookie: str = DEFAULT_COOKIE,
        clock: MemoryReactorClock | None = None,
        upstream: Callable[[MemoryReactorClock, UpstreamAddress], Upstream] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """
        @param upstream: makes the client of a new replica; a L{RecordingUpstream} by default.
        """
        self.clock = MemoryReactorClock() if clock is None else clock
        self.metrics = Metrics() if metrics is None else metrics
        self.replicaMetrics = ReplicaMetrics(self.metrics)
        self.events: list[dict[str, Any]] = []
        self.log = Logger(namespace="stproxy.routing", observer=self.events.append)
        self._makeUpstream = upstream or RecordingUpstream
        self.upstreams: dict[UpstreamAddress, Any] = {}
        self.replicas = ReplicaSet(
            prefix,
            self.clock,
            self._connect,
            healthPath,
            healthInterval,
            drainTimeout,
            self.replicaMetrics,
            self.log,
        )
        for address in ADDRESSES[:count]:
            self.replicas.add(address)
        self.affinity = Affinity(cookie, secret, prefix)
        self.route = Route(
            prefix, self.replicas, self.affinity, self.replicaMetrics, self.log, sticky
        )
        self.routes = Routes([self.route], self.clock)

    def _connect(self, address: UpstreamAddress) -> Upstream:
        upstream = self._makeUpstream(self.clock, address)
        self.upstreams[address] = upstream
        return upstream

    def replica(self, number: int) -> Replica:
        """The replica at C{ADDRESSES[number]}."""
        for replica in self.replicas.replicas.values():
            if replica.address == ADDRESSES[number]:
                return replica
        raise KeyError(number)

    def cookie(self, replica: Replica | str) -> bytes:
        """A C{Cookie} line carrying this app's valid affinity cookie for C{replica}."""
        name = replica if isinstance(replica, str) else replica.id
        return f"{self.affinity.name}={self.affinity.value(name)}".encode("ascii")

    def sample(self, name: str, **labels: str) -> float | None:
        """The value of metric sample C{name} with C{labels}, or None when there is none."""
        return self.metrics.registry.get_sample_value(name, labels)

    def replicaSample(self, name: str, replica: Replica) -> float | None:
        """The value of the per-replica metric C{name} for C{replica}."""
        return self.sample(name, route=replica.route, replica=str(replica.address))

    def logged(self, text: str) -> list[dict[str, Any]]:
        """The log events whose format contains C{text}."""
        return [event for event in self.events if text in (event.get("log_format") or "")]


class AbortableBodyTransport(BodyTransport):
    """A response body's transport that can also be aborted, as a TCP one (what C{readBody} wants)."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


def respond(
    request: UpstreamRequest, code: int = 200, headers: Headers | None = None
) -> FakeResponse:
    """Answer C{request} with C{code}, the body left to the test (over an abortable transport)."""
    response = FakeResponse(code, headers=Headers() if headers is None else headers)
    response.transport = AbortableBodyTransport()
    request.deferred.callback(response)
    return response


def answer(request: UpstreamRequest, code: int = 200, body: bytes = b"") -> FakeResponse:
    """Answer C{request} with C{code} and a complete C{body}."""
    response = respond(request, code)
    if body:
        response.deliver(body)
    response.finish()
    return response


def formats(events: Iterable[dict[str, Any]]) -> list[str]:
    """The log formats of C{events}, for failure messages."""
    return [event.get("log_format") or "" for event in events]
