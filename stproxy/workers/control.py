"""
The channel between a supervisor and each of its workers: two pipes.

The supervisor writes to the worker's standard input and reads what the
worker writes on L{CONTROL_FD}, both ways netstrings.  Each question gets
exactly one answer, in order:

  - L{METRICS}: the worker's Prometheus exposition (its own L{Metrics}, as
    a single stproxy's C{/metrics} would show it);
  - L{READY}: C{1} or C{0}, what a single stproxy's C{/readyz} says;
  - L{STOP}: drain and exit, as on SIGTERM; answered at once.

The end of its standard input means the supervisor is gone (killed, say):
the worker then stops too, draining as on SIGTERM, so a worker never
outlives its supervisor for longer than a drain, on any platform.

Asking over a pipe rather than a signal is deliberate: a worker that gets
SIGTERM from elsewhere too (systemd's default C{KillMode=control-group}
signals every process of the service; Ctrl-C signals the whole process
group) must not take the supervisor's request for a second signal, which
ends a stproxy at once.  And the supervisor's C{/metrics} needs no socket
or file per worker.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import stdio
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import (
    IProtocol,
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
)
from twisted.logger import ILogObserver
from twisted.protocols.basic import NetstringReceiver
from twisted.python.failure import Failure

from stproxy.ops.logs import loggerFor
from stproxy.ops.metrics import Metrics

#: The descriptor a worker answers on; its listeners come after it.
CONTROL_FD = 3

METRICS = b"metrics"
READY = b"ready"
STOP = b"stop"

#: The largest message either side takes (an exposition with many routes
#: and replicas is tens of kilobytes; Twisted's default is 99,999 bytes).
MAX_MESSAGE = 64 * 1024 * 1024


class ControlChannel(NetstringReceiver):
    """Netstrings up to L{MAX_MESSAGE} bytes, both ways."""

    MAX_LENGTH = MAX_MESSAGE


class _Answers(ControlChannel):
    """The worker's end: each question answered by its L{WorkerControl}."""

    def __init__(self, control: WorkerControl) -> None:
        self._control = control

    def stringReceived(self, string: bytes) -> None:
        self.sendString(self._control.answer(string))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._control.supervisorGone()


class WorkerControl(Service):
    """
    A worker's side of the channel: answers its supervisor, and stops the
    worker when asked to, when the supervisor is gone, or on SIGTERM or
    SIGINT, whichever comes first; the others then change nothing.  A
    repeated signal does not end a worker at once, as it ends a single
    stproxy: its supervisor got it too, and kills every worker itself.

    It stays up while the worker drains, so the supervisor's C{/metrics}
    still shows a stopping worker.
    """

    name = "control"

    def __init__(
        self,
        index: int,
        metrics: Metrics,
        ready: Callable[[], bool],
        connect: Callable[[IProtocol], object],
        stop: Callable[[], None],
        logObserver: ILogObserver | None = None,
        handleSignals: Callable[[Callable[[str], None]], None] = lambda stopWorker: None,
    ) -> None:
        """
        @param index: the worker's number, for the log.
        @param ready: whether the worker takes traffic (L{stproxy.service.ProxyService.ready}).
        @param connect: connects a protocol to the channel's pipes.
        @param stop: stops the worker (its reactor), as SIGTERM would.
        @param handleSignals: makes SIGTERM and SIGINT call the function it
            is given, with the signal's name.
        """
        self.index = index
        self._metrics = metrics
        self._ready = ready
        self._connect = connect
        self._stop = stop
        self._handleSignals = handleSignals
        self._log = loggerFor(self, logObserver)
        self.stopping = False

    def startService(self) -> None:
        super().startService()
        self._connect(_Answers(self))
        self._handleSignals(self.stopWorker)

    def answer(self, question: bytes) -> bytes:
        """The answer to one of the supervisor's questions (empty for one it does not know)."""
        if question == METRICS:
            return self._metrics.exposition()[0]
        if question == READY:
            return b"1" if self._ready() else b"0"
        if question == STOP:
            self.stopWorker("asked by the supervisor")
        return b""

    def supervisorGone(self) -> None:
        """The supervisor's end closed."""
        if not self.stopping:
            self._log.warn(
                "stproxy worker {index}: the supervisor is gone; stopping", index=self.index
            )
        self.stopWorker("the supervisor is gone")

    def stopWorker(self, why: str) -> None:
        """Stop the worker, unless it is stopping already."""
        if self.stopping:
            self._log.debug(
                "stproxy worker {index}: {why}, stopping already", index=self.index, why=why
            )
            return
        self.stopping = True
        self._log.info("stproxy worker {index}: {why}: stopping", index=self.index, why=why)
        self._stop()


def workerControl(
    reactor: object,
    index: int,
    control: int,
    metrics: Metrics,
    ready: Callable[[], bool],
    logObserver: ILogObserver | None = None,
) -> WorkerControl:
    """
    A L{WorkerControl} on the real pipes (standard input, and C{control}),
    handling SIGTERM and SIGINT in place of the reactor, and stopping the
    worker by stopping C{reactor}.
    """

    # POSIX's StandardIO, which takes the descriptors (mypy reads Windows' signature).
    standardIO: Any = stdio.StandardIO

    def connect(protocol: IProtocol) -> object:
        return standardIO(protocol, stdin=0, stdout=control, reactor=IReactorFDSet(reactor))

    def stop() -> None:
        try:
            IReactorCore(reactor).stop()
        except ReactorNotRunning:
            pass

    def handleSignals(stopWorker: Callable[[str], None]) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            IReactorFromThreads(reactor).callFromThread(stopWorker, name)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, handler)

    return WorkerControl(index, metrics, ready, connect, stop, logObserver, handleSignals)


__all__ = [
    "CONTROL_FD",
    "ControlChannel",
    "MAX_MESSAGE",
    "METRICS",
    "READY",
    "STOP",
    "WorkerControl",
    "workerControl",
]
