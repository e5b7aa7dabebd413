"""
C{--workers N}, and what a supervisor tells each worker it starts.

With C{--workers 1} (the default) stproxy is the one process it always was.
With more, the process started (twistd or C{python -m stproxy}) becomes the
supervisor (L{stproxy.workers.supervisor}) and starts N workers, each
C{python -m stproxy} with the same flags plus C{--workers 1 --worker SPEC}:
L{WorkerSpec}, the worker's number and the descriptors it inherited.  The
affinity key the workers share, when no C{--affinity-secret-file} names
one, comes in the environment (L{SECRET_ENV}), never on the command line,
which any user of the machine can read.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from stproxy import parse
from stproxy.config import Config, ConfigError

#: The most workers C{--workers} takes: a typo such as C{--workers 800}
#: would start that many processes.
MAX_WORKERS = 1024

#: Where a worker finds the affinity key, in hexadecimal (the supervisor sets it).
SECRET_ENV = "STPROXY_WORKER_AFFINITY_SECRET"

_SPEC = re.compile(r"([0-9]+):([0-9]+):([0-9]+(?:,[0-9]+)*)?")


def publicListeners(config: Config) -> tuple[str, ...]:
    """
    The listen descriptions the supervisor binds for its workers, in the
    order of L{WorkerSpec.listeners}: every C{--listen}, then
    C{--redirect-http}.  The admin listener is the supervisor's own.
    """
    redirect = config.tls.redirect
    return config.listen + (() if redirect is None else (redirect,))


@dataclass(frozen=True)
class WorkerSpec:
    """
    What a supervisor tells one worker (C{--worker INDEX:CONTROL:FD,FD...}).

    @ivar index: the worker's number, 0 to N-1 (its C{worker} label in the
        supervisor's C{/metrics}, and the same across restarts).
    @ivar control: the descriptor the worker answers the supervisor's
        questions on; they come on its standard input, whose end means the
        supervisor is gone (L{stproxy.workers.control}).
    @ivar listeners: the inherited listening sockets, one per
        L{publicListeners} description, in that order.
    @ivar secret: the affinity key every worker shares, when the flags name none.
    """

    index: int
    control: int
    listeners: tuple[int, ...]
    secret: bytes | None = field(default=None, repr=False)

    def argument(self) -> str:
        """The C{--worker} value that says this spec (the secret apart)."""
        return f"{self.index}:{self.control}:{','.join(map(str, self.listeners))}"

    @classmethod
    def parse(cls, text: str, environ: Mapping[str, str]) -> WorkerSpec:
        """
        Read L{argument}'s text, and the secret from C{environ}.

        @raise ConfigError: naming C{--worker}.
        """
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ConfigError(
                f"--worker {text}: not INDEX:CONTROL:FD,FD... (set by --workers, not by hand)"
            )
        index, control, fds = match.groups()
        secret = None
        if SECRET_ENV in environ:
            try:
                secret = binascii.unhexlify(environ[SECRET_ENV])
            except (binascii.Error, ValueError):
                raise ConfigError(f"${SECRET_ENV}: not hexadecimal") from None
        listeners = tuple(int(fd) for fd in fds.split(",")) if fds else ()
        return cls(int(index), int(control), listeners, secret)


@dataclass(frozen=True)
class WorkerSettings:
    """
    How many processes serve, and whether this one is a worker.

    @ivar count: C{--workers}; more than 1 makes this process the supervisor.
    @ivar worker: set in a worker: what its supervisor told it.
    """

    count: int = 1
    worker: WorkerSpec | None = None

    @property
    def supervises(self) -> bool:
        """Whether this process starts and watches workers rather than serving."""
        return self.worker is None and self.count > 1


def workerCount(text: str) -> int:
    """C{--workers}: a whole number of processes, 1 to L{MAX_WORKERS}."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"must be a whole number of processes, 1 to {MAX_WORKERS}")
    return int(text)


class WorkerFlags(dict[str, Any]):
    """
    The flags of L{stproxy.tap.Options} for several processes (a mixin, like
    L{stproxy.parseroutes.RoutingFlags}).

    @ivar arguments: the command line as given to C{parseOptions}, which a
        supervisor repeats to its workers.
    @ivar processes: the parsed flags, once options are parsed.
    """

    optParameters = [
        [
            "workers",
            None,
            "1",
            "Processes serving the listeners, for more than one core: a supervisor binds them,"
            " starts the workers, restarts any that dies, and stops them all on SIGTERM",
        ],
        ["worker", None, None, "Internal: what --workers tells each worker process it starts"],
    ]

    arguments: list[str]
    processes: WorkerSettings
    environ: Mapping[str, str]

    def workerSettings(self) -> WorkerSettings:
        """
        C{--workers} and C{--worker}, checked.

        @raise ConfigError: with the one line to print.
        """
        count = parse.flag("workers", self["workers"], workerCount)
        spec = self["worker"]
        worker = None if spec is None else WorkerSpec.parse(spec, self.environ)
        return WorkerSettings(count=count, worker=worker)


__all__ = [
    "MAX_WORKERS",
    "SECRET_ENV",
    "WorkerFlags",
    "WorkerSettings",
    "WorkerSpec",
    "publicListeners",
    "workerCount",
]
