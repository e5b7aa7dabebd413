"""
One worker as its supervisor sees it (stproxy.workers.process): questions and answers over
the control channel, answers that come late or never, and how the worker ended.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from workers_fakes import ProcessReactor, netstrings

from stproxy.workers.process import WorkerProcess


def spawned() -> tuple[ProcessReactor, WorkerProcess, list[WorkerProcess]]:
    reactor = ProcessReactor()
    ended: list[WorkerProcess] = []
    worker = WorkerProcess(0, reactor, ended.append)
    reactor.spawnProcess(worker, "python", ["python"])
    return reactor, worker, ended


def test_a_question_is_a_netstring_on_stdin_and_its_answer_fires_the_deferred() -> None:
    """ask() writes the question as a netstring to the worker's stdin; the answer on fd 3 fires it."""
    reactor, worker, _ = spawned()
    answer = worker.ask(b"metrics", timeout=5)
    assert reactor.processes[0].stdin == netstrings(b"metrics")
    reactor.processes[0].answer(b"5:hel")
    assert not answer.called
    reactor.processes[0].answer(b"lo,")
    assert answer.result == b"hello"


def test_answers_are_matched_to_questions_in_order() -> None:
    """Two questions in flight: the first answer is the first question's."""
    reactor, worker, _ = spawned()
    first, second = worker.ask(b"ready", 5), worker.ask(b"metrics", 5)
    reactor.processes[0].answer(netstrings(b"1", b"text"))
    assert (first.result, second.result) == (b"1", b"text")


def test_a_late_answer_is_given_up_on_and_not_taken_for_the_next() -> None:
    """
    A question unanswered within its timeout gives None; when its answer comes at last, it is
    dropped, and the next question gets its own answer.
    """
    reactor, worker, _ = spawned()
    late = worker.ask(b"ready", 5)
    reactor.advance(5)
    assert late.result is None
    following = worker.ask(b"metrics", 5)
    reactor.processes[0].answer(netstrings(b"1"))
    assert not following.called
    reactor.processes[0].answer(netstrings(b"text"))
    assert following.result == b"text"


def test_an_ended_worker_answers_everything_with_none() -> None:
    """Questions waiting when the worker ends, and questions asked after, give None."""
    reactor, worker, ended = spawned()
    waiting = worker.ask(b"ready", 5)
    reactor.processes[0].die(9)
    assert waiting.result is None
    assert worker.ask(b"ready", 5).result is None
    assert ended == [worker]
    assert (worker.running, worker.signal, worker.clean) == (False, 9, False)
    assert worker.describe() == "killed by signal 9"


def test_stop_writes_stop_and_its_answer_is_not_taken_for_a_question() -> None:
    """stop() asks the worker to stop; its (empty) answer does not answer a later question."""
    reactor, worker, _ = spawned()
    worker.stop()
    question = worker.ask(b"ready", 5)
    assert reactor.processes[0].stdin == netstrings(b"stop", b"ready")
    reactor.processes[0].answer(netstrings(b"", b"0"))
    assert question.result == b"0"


def test_exit_status_and_clean() -> None:
    """Status 0 is clean; any other status is not, and is described."""
    reactor, worker, _ = spawned()
    reactor.processes[0].exit(0)
    assert worker.clean and worker.describe() == "exited with status 0"
    reactor, worker, _ = spawned()
    reactor.processes[0].exit(3)
    assert not worker.clean and worker.describe() == "exited with status 3"


def test_kill_signals_a_running_worker_only() -> None:
    """kill() sends the signal while the worker runs, and does nothing once it ended."""
    reactor, worker, _ = spawned()
    worker.kill("HUP")
    assert reactor.processes[0].signals == ["HUP"]
    reactor.processes[0].exit(0)
    worker.kill()
    assert reactor.processes[0].signals == ["HUP"]


def test_a_worker_is_stamped_with_its_start() -> None:
    """started is the clock's time when the worker was made (for the back-off)."""
    clock = MemoryReactorClock()
    clock.advance(42)
    assert WorkerProcess(1, clock, lambda w: None).started == 42
