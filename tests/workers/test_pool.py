"""
The workers of a supervisor (stproxy.workers.pool) on a fake process reactor: how they are
started, restarted (and not too fast), asked questions and stopped.
"""

from __future__ import annotations

import pytest
from twisted.logger import formatEvent
from workers_fakes import ProcessReactor, netstrings

from stproxy.workers.pool import MAX_DELAY, QUICK_RESTARTS, STABLE_SECONDS, WorkerPool, restartDelay

LISTENERS = [7, 9]


def pool(
    reactor: ProcessReactor, events: list[dict], count: int = 2
) -> tuple[WorkerPool, list[int]]:
    """A pool of C{count} workers whose restarts are recorded in the list returned."""
    restarted: list[int] = []
    workers = WorkerPool(
        count,
        reactor,
        reactor,
        lambda index: ["/usr/bin/python3", "-m", "stproxy", "--worker", str(index)],
        {"ENV": "1"},
        lambda: LISTENERS,
        events.append,
        restarted.append,
    )
    return workers, restarted


def messages(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


@pytest.fixture
def reactor() -> ProcessReactor:
    return ProcessReactor()


@pytest.fixture
def events() -> list[dict]:
    return []


def test_start_spawns_every_worker_with_its_pipes_and_the_listeners(reactor, events) -> None:
    """
    Each worker gets a pipe on stdin, the supervisor's stdout and stderr, a pipe to answer on
    (fd 3) and the listening sockets from fd 4 on; its command line and environment as given.
    """
    workers, _ = pool(reactor, events)
    workers.start()
    assert [p.args[-1] for p in reactor.processes] == ["0", "1"]
    first = reactor.processes[0]
    assert first.executable == "/usr/bin/python3"
    assert first.childFDs == {0: "w", 1: 1, 2: 2, 3: "r", 4: 7, 5: 9}
    assert first.env == {"ENV": "1"}
    assert len(workers.running) == 2
    assert "stproxy worker 0 started (pid 1001)" in messages(events)


@pytest.mark.parametrize(
    "end, how",
    [
        (lambda p: p.exit(1), "exited with status 1"),
        (lambda p: p.die(9), "killed by signal 9"),
        (lambda p: p.exit(0), "exited with status 0"),
    ],
    ids=["status", "signal", "clean"],
)
def test_a_worker_that_ends_is_logged_and_restarted_at_once(reactor, events, end, how) -> None:
    """A worker ending while the supervisor runs, however it ends, is logged and started again."""
    workers, restarted = pool(reactor, events)
    workers.start()
    end(reactor.processes[1])
    assert f"stproxy worker 1 (pid 1002) {how}; restarting it" in messages(events)
    assert [p.args[-1] for p in reactor.alive()] == ["0", "1"]
    assert reactor.processes[-1].pid == 1003
    assert restarted == [1] and workers.restarts == [0, 1]


def test_restart_delay_grows_after_quick_deaths_and_is_capped() -> None:
    """The first quick deaths restart at once, then 1 s, 2 s, 4 s... up to the cap."""
    delays = [restartDelay(n) for n in range(1, QUICK_RESTARTS + 8)]
    assert delays[:QUICK_RESTARTS] == [0.0] * QUICK_RESTARTS
    assert delays[QUICK_RESTARTS : QUICK_RESTARTS + 4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == MAX_DELAY


def test_a_worker_crashing_in_a_loop_is_restarted_with_a_back_off(reactor, events) -> None:
    """
    A worker dying right after each start is restarted at once a few times, then only after a
    delay: no new process appears until the delay has passed.
    """
    workers, _ = pool(reactor, events, count=1)
    workers.start()
    for _ in range(QUICK_RESTARTS):
        reactor.alive()[0].exit(1)
    assert len(reactor.processes) == QUICK_RESTARTS + 1
    reactor.alive()[0].exit(1)
    assert not reactor.alive()
    assert messages(events)[-1].endswith("restarting it in 1 s")
    reactor.advance(0.9)
    assert not reactor.alive()
    reactor.advance(0.1)
    assert len(reactor.alive()) == 1
    reactor.alive()[0].exit(1)
    reactor.advance(1.9)
    assert not reactor.alive()
    reactor.advance(0.1)
    assert len(reactor.alive()) == 1


def test_a_worker_that_ran_a_while_is_restarted_at_once_again(reactor, events) -> None:
    """After running STABLE_SECONDS, a worker's death no longer counts towards the back-off."""
    workers, _ = pool(reactor, events, count=1)
    workers.start()
    for _ in range(QUICK_RESTARTS):
        reactor.alive()[0].exit(1)
    reactor.advance(STABLE_SECONDS)
    reactor.alive()[0].exit(1)
    assert len(reactor.alive()) == 1


def test_a_spawn_that_fails_is_tried_again_later(reactor, events) -> None:
    """When no process can be had (fork fails), the worker is tried again after a while."""
    workers, _ = pool(reactor, events, count=1)
    reactor.failWith = OSError(11, "Resource temporarily unavailable")
    workers.start()
    assert not reactor.alive()
    assert "could not be started" in messages(events)[-1]
    reactor.failWith = None
    reactor.advance(MAX_DELAY)
    assert len(reactor.alive()) == 1


def test_stop_asks_every_worker_and_fires_once_all_exited_cleanly(reactor, events) -> None:
    """Stop writes "stop" to each worker's stdin, fires when the last exits, True if all exited 0."""
    workers, _ = pool(reactor, events)
    workers.start()
    stopped = workers.stop(backstop=60)
    assert all(p.stdin == netstrings(b"stop") for p in reactor.processes)
    reactor.processes[0].exit(0)
    assert not stopped.called
    reactor.processes[1].exit(0)
    assert stopped.result is True
    assert len(reactor.processes) == 2  # nothing restarted
    assert "stproxy worker 1 (pid 1002) exited with status 0" in messages(events)


def test_stop_reports_a_worker_that_did_not_exit_cleanly(reactor, events) -> None:
    """A worker exiting with a failure status during the stop makes the stop unclean."""
    workers, _ = pool(reactor, events)
    workers.start()
    stopped = workers.stop(backstop=60)
    reactor.processes[0].exit(0)
    reactor.processes[1].exit(1)
    assert stopped.result is False


def test_stop_kills_workers_still_running_at_the_backstop(reactor, events) -> None:
    """A worker that has not exited by the backstop is sent SIGKILL, and the stop is unclean."""
    workers, _ = pool(reactor, events)
    workers.start()
    stopped = workers.stop(backstop=60)
    reactor.processes[0].exit(0)
    reactor.advance(60)
    assert reactor.processes[1].signals == ["KILL"]
    reactor.processes[1].die(9)
    assert stopped.result is False
    assert any("still running 60 s after it was asked to stop" in m for m in messages(events))


def test_stop_cancels_a_pending_restart(reactor, events) -> None:
    """A worker waiting out its back-off when the stop comes is not started again."""
    workers, _ = pool(reactor, events, count=1)
    workers.start()
    for _ in range(QUICK_RESTARTS + 1):
        reactor.alive()[0].exit(1)
    stopped = workers.stop(backstop=60)
    assert stopped.result is False  # the last worker died with status 1
    reactor.advance(MAX_DELAY)
    assert not reactor.alive()


def test_signal_reaches_every_running_worker(reactor, events) -> None:
    """signal("HUP") is sent to each running worker."""
    workers, _ = pool(reactor, events)
    workers.start()
    workers.signal("HUP")
    assert [p.signals for p in reactor.processes] == [["HUP"], ["HUP"]]


def test_ask_gathers_each_workers_answer_in_order(reactor, events) -> None:
    """A question goes to every worker; the answers come back in worker order, None for none."""
    workers, _ = pool(reactor, events)
    workers.start()
    answers = workers.ask(b"ready", timeout=5)
    reactor.processes[1].answer(netstrings(b"0"))
    reactor.processes[0].answer(netstrings(b"1"))
    assert answers.result == [b"1", b"0"]
    reactor.processes[1].exit(1)  # restarted; the new one is asked next
    answers = workers.ask(b"ready", timeout=5)
    reactor.advance(5)
    assert answers.result == [None, None]
