"""
The supervisor's root service (stproxy.workers.supervisor) on a fake process reactor: start,
the order of a stop, its exit status, the second signal, SIGHUP, and what it answers for its
workers (/readyz, /metrics).
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Service
from twisted.logger import formatEvent
from workers_fakes import ProcessReactor, netstrings

from stproxy.workers.metrics import SupervisorMetrics
from stproxy.workers.pool import WorkerPool
from stproxy.workers.supervisor import ASK_TIMEOUT, BACKSTOP_GRACE, SupervisorService


class Recorded(Service):
    """A child service whose stop is recorded in a shared list."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.setName(name)
        self._log = log

    def stopService(self) -> None:
        super().stopService()
        self._log.append(f"stopped {self.name}")


class Supervisor:
    """A started L{SupervisorService} of two workers, with a listener and an admin child."""

    def __init__(self, count: int = 2) -> None:
        self.reactor = ProcessReactor()
        self.order: list[str] = []
        self.events: list[dict] = []
        self.metrics = SupervisorMetrics(count)
        self.pool = WorkerPool(
            count,
            self.reactor,
            self.reactor,
            lambda index: ["python", str(index)],
            {},
            lambda: [],
            self.events.append,
            self.metrics.restarted,
        )
        self.service = SupervisorService(
            self.reactor, self.pool, self.metrics, [], 10.0, self.events.append, ownsProcess=True
        )
        Recorded("listener-0", self.order).setServiceParent(self.service)
        Recorded("admin", self.order).setServiceParent(self.service)
        self.service.privilegedStartService()
        self.service.startService()

    @property
    def workers(self) -> list:
        return self.reactor.processes

    def messages(self) -> list[str]:
        return [formatEvent(event) for event in self.events]


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What a supervisor does to its process (signals, exit status), recorded instead of done."""
    done: dict[str, Any] = {"handlers": {}, "forgot": False, "before": None}
    monkeypatch.setattr(
        "stproxy.workers.supervisor.exitOnNextSignal",
        lambda before: done.__setitem__("before", before),
    )
    monkeypatch.setattr(
        "stproxy.workers.supervisor.forgetExitSignal",
        lambda reactor: done.__setitem__("forgot", True),
    )

    def install(signum: int, handler: Any) -> Any:
        previous = done["handlers"].get(signum, signal.SIG_DFL)
        done["handlers"][signum] = handler
        return previous

    monkeypatch.setattr("stproxy.workers.supervisor.signal.signal", install)
    monkeypatch.setattr(
        "stproxy.workers.supervisor.signal.getsignal",
        lambda signum: done["handlers"].get(signum, signal.SIG_DFL),
    )
    return done


def test_start_starts_every_worker(process) -> None:
    """Starting the supervisor starts its workers and takes over SIGHUP."""
    supervisor = Supervisor()
    assert len(supervisor.pool.running) == 2
    assert signal.SIGHUP in process["handlers"]
    assert "stproxy starting 2 workers" in supervisor.messages()


def test_stop_closes_the_listeners_then_drains_the_workers_then_the_rest(process) -> None:
    """
    A stop closes the held listeners first, then asks the workers to drain, and stops the admin
    listener only once every worker has exited; all exited 0: exit status 0.
    """
    supervisor = Supervisor()
    stopped = supervisor.service.stopService()
    assert supervisor.order == ["stopped listener-0"]
    assert all(w.stdin == netstrings(b"stop") for w in supervisor.workers)
    supervisor.workers[0].exit(0)
    supervisor.workers[1].exit(0)
    assert supervisor.order == ["stopped listener-0", "stopped admin"]
    assert stopped.called and process["forgot"]
    assert supervisor.messages()[-1] == "stproxy stopped"
    assert process["handlers"][signal.SIGHUP] == signal.SIG_DFL  # given back


def test_a_worker_failing_its_stop_makes_an_unclean_exit(process) -> None:
    """A worker exiting non-zero during the stop: the supervisor says so and exits by its signal."""
    supervisor = Supervisor()
    stopped = supervisor.service.stopService()
    supervisor.workers[0].exit(0)
    supervisor.workers[1].exit(1)
    assert stopped.called and not process["forgot"]
    assert "not every worker exited cleanly" in supervisor.messages()[-1]


def test_a_second_signal_kills_every_worker(process) -> None:
    """During a stop, the second-signal handler kills the workers before the process exits."""
    supervisor = Supervisor()
    supervisor.service.stopService()
    process["before"]()
    assert [w.signals for w in supervisor.workers] == [["KILL"], ["KILL"]]


def test_workers_that_never_exit_are_killed_at_the_backstop(process) -> None:
    """A worker still running twice the shutdown timeout and a grace later is killed."""
    supervisor = Supervisor()
    stopped = supervisor.service.stopService()
    supervisor.reactor.advance(2 * 10.0 + BACKSTOP_GRACE)
    assert [w.signals for w in supervisor.workers] == [["KILL"], ["KILL"]]
    for worker in supervisor.workers:
        worker.die(9)
    assert stopped.called and not process["forgot"]


def test_sighup_is_passed_on_to_every_worker(process) -> None:
    """SIGHUP to the supervisor reaches each worker (which reloads its certificates)."""
    supervisor = Supervisor()
    process["handlers"][signal.SIGHUP](signal.SIGHUP, None)
    assert not any(w.signals for w in supervisor.workers)  # not from the signal handler itself
    supervisor.reactor.advance(0)
    assert [w.signals for w in supervisor.workers] == [["HUP"], ["HUP"]]


def test_ready_only_when_every_worker_says_so(process) -> None:
    """/readyz is ready once both workers say 1; one saying 0, or a stop begun, is not ready."""
    supervisor = Supervisor()
    ready = supervisor.service.ready()
    supervisor.workers[0].answer(netstrings(b"1"))
    supervisor.workers[1].answer(netstrings(b"1"))
    assert ready.result is True
    ready = supervisor.service.ready()
    supervisor.workers[0].answer(netstrings(b"1"))
    supervisor.workers[1].answer(netstrings(b"0"))
    assert ready.result is False
    supervisor.service.stopService()
    assert supervisor.service.ready().result is False


def test_a_worker_that_does_not_answer_is_not_ready(process) -> None:
    """A worker silent for ASK_TIMEOUT seconds makes the supervisor not ready."""
    supervisor = Supervisor()
    ready = supervisor.service.ready()
    supervisor.workers[0].answer(netstrings(b"1"))
    supervisor.reactor.advance(ASK_TIMEOUT)
    assert ready.result is False


def test_metrics_merge_the_workers_that_answered_with_the_supervisors(process) -> None:
    """/metrics has each answering worker's samples, labelled, then the supervisor's own."""
    supervisor = Supervisor()
    exposition = supervisor.service.exposition()
    supervisor.workers[0].answer(netstrings(b"# TYPE up gauge\nup 1\n"))
    supervisor.reactor.advance(ASK_TIMEOUT)  # worker 1 never answers
    text = exposition.result.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("up", (("worker", "0"),))] == 1
    assert ("up", (("worker", "1"),)) not in samples
    assert samples[("stproxy_workers", ())] == 2
