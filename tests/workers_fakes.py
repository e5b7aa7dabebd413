"""
Processes in memory, for ``tests/workers/``: L{ProcessReactor}, a L{MemoryReactorClock} that
also "spawns" processes (L{IReactorProcess}, which Twisted's memory reactor leaves out), each a
L{FakeProcess} the test ends as it likes (an exit status, a signal) and whose standard input
(what the supervisor asked) it reads; and L{events}, the log events of a test as a list.

Nothing here forks or touches the global reactor: time passes when the test advances the clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import (
    IProcessProtocol,
    IProcessTransport,
    IReactorFromThreads,
    IReactorProcess,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["FakeProcess", "ProcessReactor", "netstrings"]


@implementer(IProcessTransport)
class FakeProcess:
    """
    One spawned process: what it was started with, what was written to its standard input,
    the signals it was sent; L{exit} and L{die} end it as the kernel would report.
    """

    def __init__(
        self,
        reactor: ProcessReactor,
        protocol: IProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str] | None,
        childFDs: dict[int, int | str] | None,
        pid: int,
    ) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.executable = executable
        self.args = args
        self.env = env
        self.childFDs = childFDs
        self.pid: int | None = pid
        self.stdin = b""
        self.signals: list[str] = []
        self.closed = False

    # IProcessTransport, as far as the supervisor uses it
    def write(self, data: bytes) -> None:
        self.stdin += data

    def writeSequence(self, data: list[bytes]) -> None:
        self.stdin += b"".join(data)

    def loseConnection(self) -> None:
        self.closed = True

    def signalProcess(self, signalID: str | int) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(str(signalID))

    def __getattr__(self, name: str) -> Any:  # the rest of the interface: not used
        raise AttributeError(name)

    # the test's side
    def answer(self, data: bytes) -> None:
        """The worker writes C{data} on its control descriptor (3)."""
        self.protocol.childDataReceived(3, data)

    def exit(self, status: int = 0) -> None:
        """The process exits with C{status}."""
        self._end(ProcessDone(status) if status == 0 else ProcessTerminated(exitCode=status))

    def die(self, signal: int = 9) -> None:
        """The process is ended by C{signal}."""
        self._end(ProcessTerminated(signal=signal))

    def _end(self, reason: Exception) -> None:
        self.pid = None
        self.protocol.processEnded(Failure(reason))


@implementer(IReactorProcess, IReactorFromThreads)
class ProcessReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose C{spawnProcess} makes a L{FakeProcess} (in L{processes}),
    or raises L{failWith} if set, and whose C{callFromThread} calls on the next L{advance}.
    """

    def callFromThread(self, callable: Any, *args: Any, **kwargs: Any) -> None:
        self.callLater(0, callable, *args, **kwargs)

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.failWith: Exception | None = None
        self._nextPid = 1000

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: bytes | str,
        args: Any,
        env: dict[str, str] | None = None,
        path: Any = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: dict[int, int | str] | None = None,
    ) -> IProcessTransport:
        if self.failWith is not None:
            raise self.failWith
        self._nextPid += 1
        process = FakeProcess(
            self, processProtocol, str(executable), list(args), env, childFDs, self._nextPid
        )
        self.processes.append(process)
        processProtocol.makeConnection(process)
        return process

    def alive(self) -> list[FakeProcess]:
        """The processes not ended yet."""
        return [p for p in self.processes if p.pid is not None]


def netstrings(*strings: bytes) -> bytes:
    """C{strings} as netstrings, as the control channel frames them."""
    return b"".join(b"%d:%s," % (len(s), s) for s in strings)
