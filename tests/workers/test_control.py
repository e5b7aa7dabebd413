"""
A worker's end of the control channel (stproxy.workers.control): its answers, and the three
ways it stops (asked, supervisor gone, a signal), each only once.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from workers_fakes import netstrings

from stproxy.ops.metrics import Metrics
from stproxy.workers.control import WorkerControl


class Worker:
    """A started L{WorkerControl} on a L{StringTransport}, its stops and logs recorded."""

    def __init__(self, ready: bool = True) -> None:
        self.metrics = Metrics()
        self.transport = StringTransport()
        self.stops = 0
        self.events: list[dict] = []
        self.signalled: list = []
        self.protocol: IProtocol | None = None
        self.ready = ready
        self.control = WorkerControl(
            2,
            self.metrics,
            lambda: self.ready,
            self._connect,
            self._stop,
            self.events.append,
            self.signalled.append,
        )
        self.control.startService()

    def _connect(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def _stop(self) -> None:
        self.stops += 1

    def ask(self, *questions: bytes) -> bytes:
        self.transport.clear()
        assert self.protocol is not None
        self.protocol.dataReceived(netstrings(*questions))
        return self.transport.value()

    def messages(self) -> list[str]:
        return [formatEvent(event) for event in self.events]


def test_metrics_are_the_workers_own_exposition() -> None:
    """The question "metrics" is answered with the worker's Prometheus exposition."""
    worker = Worker()
    worker.metrics.requestDone("GET", 200, 0.1, 0, 10)
    answer = worker.ask(b"metrics")
    assert answer.startswith(b"%d:" % len(worker.metrics.exposition()[0]))
    assert b'stproxy_http_requests_total{method="GET",status_class="2xx"} 1.0' in answer


def test_ready_says_1_or_0() -> None:
    """The answer to "ready" is 1 while the worker is ready, 0 otherwise; an unknown question gets an empty answer."""
    worker = Worker()
    assert worker.ask(b"ready", b"what?") == netstrings(b"1", b"")
    worker.ready = False
    assert worker.ask(b"ready") == netstrings(b"0")


def test_stop_stops_the_worker_once() -> None:
    """The question "stop" stops the worker, answered at once; asking again changes nothing."""
    worker = Worker()
    assert worker.ask(b"stop", b"stop") == netstrings(b"", b"")
    assert worker.stops == 1
    assert "stproxy worker 2: asked by the supervisor: stopping" in worker.messages()


def test_the_end_of_stdin_means_the_supervisor_is_gone() -> None:
    """When the supervisor's end closes, the worker says so and stops."""
    worker = Worker()
    assert worker.protocol is not None
    worker.protocol.connectionLost(Failure(ConnectionError("closed")))
    assert worker.stops == 1
    assert "stproxy worker 2: the supervisor is gone; stopping" in worker.messages()


def test_a_signal_stops_the_worker_and_later_ones_change_nothing() -> None:
    """
    SIGTERM (through the handler the worker installs) stops it; the supervisor's "stop" and a
    second signal then do nothing more: the supervisor, not the worker, ends it at once.
    """
    worker = Worker()
    [stopWorker] = worker.signalled
    stopWorker("SIGTERM")
    worker.ask(b"stop")
    stopWorker("SIGTERM")
    assert worker.stops == 1
    assert worker.control.stopping
    assert "stproxy worker 2: SIGTERM: stopping" in worker.messages()
