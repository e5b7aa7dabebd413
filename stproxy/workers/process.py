"""
One worker as its supervisor sees it: a child process, the supervisor's end
of its control channel (L{stproxy.workers.control}), and how it ended.

Questions are answered in the order asked, so each one waits in a queue
for its answer; one not answered in time gives C{None} to whoever asked,
but keeps its place, so that the late answer is not taken for the next
question's.  A worker that ends answers everything still waiting with
C{None}.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from stproxy.workers.control import CONTROL_FD, STOP, ControlChannel


class _Questions(ControlChannel):
    """The supervisor's end: what it sends goes to the worker's standard input."""

    def __init__(self, answered: Callable[[bytes], None]) -> None:
        self._answered = answered

    def stringReceived(self, string: bytes) -> None:
        self._answered(string)


class WorkerProcess(ProcessProtocol):
    """
    One run of one worker (a restart is a new one).

    @ivar index: the worker's number.
    @ivar pid: its process id, once started.
    @ivar started: when it was started, on the supervisor's clock.
    @ivar running: from its start until its end.
    @ivar status: how it ended: its exit status, or C{None} if a signal ended it.
    @ivar signal: the signal that ended it, if one did.
    """

    transport: IProcessTransport | None

    def __init__(
        self, index: int, clock: IReactorTime, ended: Callable[[WorkerProcess], None]
    ) -> None:
        """@param ended: called once it has ended."""
        self.index = index
        self.pid: int | None = None
        self.started = clock.seconds()
        self.running = False
        self.status: int | None = None
        self.signal: int | None = None
        self._clock = clock
        self._ended = ended
        self._waiting: deque[Deferred[bytes | None]] = deque()
        self._channel = _Questions(self._answered)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self.running = True
        self._channel.makeConnection(self.transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == CONTROL_FD:
            self._channel.dataReceived(data)

    def ask(self, question: bytes, timeout: float) -> Deferred[bytes | None]:
        """
        The worker's answer to C{question}, or C{None} if it has none within
        C{timeout} seconds or is not running.
        """
        if not self.running:
            return succeed(None)
        answer: Deferred[bytes | None] = Deferred()
        self._waiting.append(answer)
        self._channel.sendString(question)
        return answer.addTimeout(timeout, self._clock, onTimeoutCancel=lambda result, t: None)

    def _answered(self, answer: bytes) -> None:
        if self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.called:  # not given up on
                waiting.callback(answer)

    def stop(self) -> None:
        """Ask the worker to drain and exit (its answer is not waited for)."""
        if self.running:
            self._waiting.append(Deferred())
            self._channel.sendString(STOP)

    def kill(self, signal: str = "KILL") -> None:
        """Send the worker C{signal} (a name, as C{signalProcess} takes), if it runs."""
        if self.transport is not None and self.running:
            try:
                self.transport.signalProcess(signal)
            except ProcessExitedAlready:
                pass

    @property
    def clean(self) -> bool:
        """Whether it exited with status 0."""
        return not self.running and self.status == 0

    def describe(self) -> str:
        """How it ended, for the log: C{"exited with status 1"}, C{"killed by signal 9"}."""
        if self.running:
            return "is running"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exited with status {self.status}"

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        if isinstance(reason.value, ProcessDone):
            self.status = 0
        elif isinstance(reason.value, ProcessTerminated):
            self.status = reason.value.exitCode
            self.signal = reason.value.signal
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.called:
                waiting.callback(None)
        self._ended(self)


__all__ = ["WorkerProcess"]
