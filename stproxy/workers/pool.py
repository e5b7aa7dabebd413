"""
The workers of a supervisor: started, watched, restarted, stopped.

A worker that ends while the supervisor runs is logged (how it ended) and
started again with the same number and the same listening sockets.  A
worker that keeps dying young (a certificate gone, a broken upstream
flag) is not restarted in a tight loop: after L{QUICK_RESTARTS} deaths each
within L{STABLE_SECONDS} of its start, its restarts wait 1 s, then 2, 4...
up to L{MAX_DELAY}; a worker that ran L{STABLE_SECONDS} starts the count
again.

Stopping asks every worker to drain (L{stproxy.workers.control}) and
fires once all have exited, whether every one exited with status 0; a
worker still running L{backstop} seconds later is killed.
"""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.logger import ILogObserver

from stproxy.ops.logs import loggerFor
from stproxy.workers.control import CONTROL_FD
from stproxy.workers.process import WorkerProcess

#: Deaths in a row, each soon after its start, restarted at once.
QUICK_RESTARTS = 3

#: A worker that ran this many seconds did not die young.
STABLE_SECONDS = 10.0

#: The longest wait before a restart, in seconds.
MAX_DELAY = 30.0


def restartDelay(quickDeaths: int) -> float:
    """Seconds to wait before restarting a worker that died young C{quickDeaths} times in a row."""
    if quickDeaths <= QUICK_RESTARTS:
        return 0.0
    return min(MAX_DELAY, 2.0 ** (quickDeaths - QUICK_RESTARTS - 1))


class WorkerPool:
    """
    N workers, each in a slot of its number.

    @ivar workers: the latest process of each slot (C{None} before the first start).
    @ivar restarts: how many times each slot was restarted.
    """

    def __init__(
        self,
        count: int,
        processes: IReactorProcess,
        clock: IReactorTime,
        command: Callable[[int], Sequence[str]],
        environment: dict[str, str],
        listeners: Callable[[], Sequence[int]],
        logObserver: ILogObserver | None = None,
        restarted: Callable[[int], None] = lambda index: None,
    ) -> None:
        """
        @param command: the command line of worker C{index} (program first).
        @param listeners: the listening sockets' descriptors, for the workers
            to inherit after L{CONTROL_FD}.
        @param restarted: told of each restart (for the metrics).
        """
        self.count = count
        self._processes = processes
        self._clock = clock
        self._command = command
        self._environment = environment
        self._listeners = listeners
        self._log = loggerFor(self, logObserver)
        self._restarted = restarted
        self.workers: list[WorkerProcess | None] = [None] * count
        self.restarts = [0] * count
        self._quickDeaths = [0] * count
        self._pending: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._exits: list[Deferred[None]] = []

    @property
    def running(self) -> list[WorkerProcess]:
        """The workers running now."""
        return [w for w in self.workers if w is not None and w.running]

    def start(self) -> None:
        """Start every worker."""
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        worker = WorkerProcess(index, self._clock, self._ended)
        childFDs: dict[int, int | str] = {0: "w", 1: 1, 2: 2, CONTROL_FD: "r"}
        for offset, fd in enumerate(self._listeners()):
            childFDs[CONTROL_FD + 1 + offset] = fd
        command = list(self._command(index))
        self.workers[index] = worker
        try:
            self._processes.spawnProcess(
                worker, command[0], command, env=self._environment, childFDs=childFDs
            )
        except OSError as e:  # no process to be had (EAGAIN, ENOMEM): try again later
            self._log.error(
                "stproxy worker {index} could not be started: {error}; trying again in {delay:g} s",
                index=index,
                error=e,
                delay=MAX_DELAY,
            )
            self._pending[index] = self._clock.callLater(MAX_DELAY, self._spawn, index)
            return
        self._log.info("stproxy worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def _ended(self, worker: WorkerProcess) -> None:
        index = worker.index
        if self._stopping:
            self._log.info(
                "stproxy worker {index} (pid {pid}) {how}",
                index=index,
                pid=worker.pid,
                how=worker.describe(),
            )
            self._checkStopped()
            return
        young = self._clock.seconds() - worker.started < STABLE_SECONDS
        self._quickDeaths[index] = self._quickDeaths[index] + 1 if young else 0
        delay = restartDelay(self._quickDeaths[index])
        self._log.error(
            "stproxy worker {index} (pid {pid}) {how}; restarting it{after}",
            index=index,
            pid=worker.pid,
            how=worker.describe(),
            after=f" in {delay:g} s" if delay else "",
            delay=delay,
        )
        self.restarts[index] += 1
        self._restarted(index)
        if delay:
            self._pending[index] = self._clock.callLater(delay, self._spawn, index)
        else:
            self._spawn(index)

    def signal(self, name: str) -> None:
        """Send every running worker the signal C{name} (C{"HUP"}, C{"KILL"})."""
        for worker in self.running:
            worker.kill(name)

    def stop(self, backstop: float) -> Deferred[bool]:
        """
        Ask every worker to drain and exit; fires once all have, with
        whether every one exited with status 0.  Those still running after
        C{backstop} seconds are killed.
        """
        self._stopping = True
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        for worker in self.running:
            worker.stop()
        kill = self._clock.callLater(backstop, self._killLate, backstop)
        stopped: Deferred[None] = Deferred()
        self._exits.append(stopped)
        self._checkStopped()

        def clean(_: object) -> bool:
            if kill.active():
                kill.cancel()
            return all(w is None or w.clean for w in self.workers)

        return stopped.addCallback(clean)

    def _killLate(self, backstop: float) -> None:
        for worker in self.running:
            self._log.error(
                "stproxy worker {index} (pid {pid}) still running {backstop:g} s after it was"
                " asked to stop: killing it",
                index=worker.index,
                pid=worker.pid,
                backstop=backstop,
            )
            worker.kill("KILL")

    def _checkStopped(self) -> None:
        if self._stopping and not self.running:
            exits, self._exits = self._exits, []
            for stopped in exits:
                stopped.callback(None)

    def ask(self, question: bytes, timeout: float) -> Deferred[list[bytes | None]]:
        """Every slot's answer to C{question}, in order (C{None}: no worker, or no answer)."""
        return gatherResults(
            [_none() if w is None else w.ask(question, timeout) for w in self.workers]
        )


def _none() -> Deferred[bytes | None]:
    return succeed(None)


__all__ = ["MAX_DELAY", "QUICK_RESTARTS", "STABLE_SECONDS", "WorkerPool", "restartDelay"]
