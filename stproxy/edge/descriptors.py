"""
How many client connections the process's file descriptors can hold: the
default of C{--max-connections}, and the descriptor limit an explicit one
needs (L{stproxy.edge.connections} enforces the cap).

Each client connection may hold one connection to Streamlit at a time
(twisted.web answers a connection's requests one after another; a relayed
WebSocket has one upstream leg), so two descriptors each, plus L{RESERVED}:
the pool's idle upstream connections (a burst of HTTP requests leaves them
for 4 s, while the same clients may already hold WebSocket legs), and 64 for
the listeners, the health check, the log files and the reactor's own.  The
default cap is therefore C{(ulimit -n - 192) / 2}: 416 under the 1,024 a
service gets by default, 32,672 under C{LimitNOFILE=65536}.  The same sum
bounds the connections to Streamlit: at most the cap, plus the pool's idle
ones.

An explicit C{--max-connections} that needs more than the soft limit raises
it, up to the hard limit, as HAProxy does for its C{maxconn} (containers
often get a soft limit of 1,024 under a hard one of 524,288 and no way to
set it from the manifest); a cap the hard limit cannot hold, or one the
limit cannot be raised for (a seccomp filter forbidding C{setrlimit}), is
lowered to what fits, with a warning naming both numbers, rather than
left to fail with "too many open files" under load.

The limit is raised when the proxy starts (L{DescriptorLimit}, the first
service to start), not when it is assembled: assembling a proxy in a test,
or constructing L{stproxy.api.StreamlitProxy}, must not change the process.
"""

from __future__ import annotations

import resource
from typing import Callable

from twisted.application.service import Service
from twisted.logger import ILogObserver, Logger

#: Descriptors kept apart from the client connections and their upstream
#: ones: the pool's 128 idle connections
#: (L{stproxy.upstream.client.POOLED_IDLE_CONNECTIONS}; a test keeps the two
#: together), and 64 for everything else.
RESERVED = 128 + 64

#: What the cap is sized from when the descriptor limit is "unlimited":
#: Linux's own ceiling (C{fs.nr_open}'s default).
UNLIMITED_DESCRIPTORS = 1024 * 1024


def descriptorsFor(connections: int) -> int:
    """The descriptors C{connections} client connections may need (see the module docstring)."""
    return 2 * connections + RESERVED


def connectionsFor(descriptors: int) -> int:
    """The most client connections C{descriptors} descriptors hold (at least 1)."""
    return max(1, (descriptors - RESERVED) // 2)


def descriptorLimits() -> tuple[int, int]:
    """The process's soft and hard C{RLIMIT_NOFILE}, "unlimited" as L{UNLIMITED_DESCRIPTORS}."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _finite(soft), _finite(hard)


def _finite(limit: int) -> int:
    return UNLIMITED_DESCRIPTORS if limit == resource.RLIM_INFINITY else limit


def plannedConnections(requested: int | None, limits: tuple[int, int] | None = None) -> int:
    """
    The cap L{maxConnections} will give if the soft limit can be raised as
    far as the hard one allows, without raising it or logging anything.
    """
    soft, hard = descriptorLimits() if limits is None else limits
    if requested is None:
        return connectionsFor(soft)
    return min(requested, connectionsFor(max(soft, min(descriptorsFor(requested), hard))))


def maxConnections(
    requested: int | None,
    logObserver: ILogObserver | None = None,
    limits: tuple[int, int] | None = None,
    raiseSoftLimit: Callable[[int, int], None] | None = None,
) -> int:
    """
    The cap to enforce: C{requested}, with the soft descriptor limit raised
    to hold it if needed (and possible), or the most the soft limit holds.

    @param limits: the soft and hard limits (L{descriptorLimits} by default).
    @param raiseSoftLimit: sets the soft limit, given it and the hard one.
    """
    log = Logger(__name__, None, logObserver)
    soft, hard = descriptorLimits() if limits is None else limits
    if requested is None:
        return connectionsFor(soft)
    wanted = min(descriptorsFor(requested), hard)
    reason = "the hard limit (ulimit -Hn) is lower"
    if wanted > soft:
        try:
            (raiseSoftLimit or _setSoftLimit)(wanted, hard)
        except (OSError, ValueError) as e:
            reason = f"the limit could not be raised: {e}"
        else:
            log.info(
                "Raised the file descriptor limit from {soft} to {wanted} for"
                " --max-connections {requested}",
                soft=soft,
                wanted=wanted,
                requested=requested,
            )
            soft = wanted
    cap = min(requested, connectionsFor(soft))
    if cap < requested:
        log.warn(
            "--max-connections {requested} needs {needed} file descriptors and {soft} are"
            " allowed ({reason}): at most {cap} connections",
            requested=requested,
            needed=descriptorsFor(requested),
            soft=soft,
            reason=reason,
            cap=cap,
        )
    return cap


def _setSoftLimit(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class DescriptorLimit(Service):
    """
    Raises the soft descriptor limit for C{--max-connections} when the
    proxy starts, before any listener binds, and gives the connection cap
    what the limit then holds (L{maxConnections}).  Whichever start comes
    first does it: twistd calls C{privilegedStartService}, an embedder may
    call only C{startService}.
    """

    name = "descriptors"

    def __init__(
        self,
        requested: int | None,
        resize: Callable[[int], None],
        logObserver: ILogObserver | None = None,
        raiseSoftLimit: Callable[[int, int], None] | None = None,
    ) -> None:
        """
        @param resize: gives the cap its final value
            (L{stproxy.edge.connections.ConnectionLimit.resize}).
        @param raiseSoftLimit: sets the soft limit, given it and the hard one.
        """
        self._requested = requested
        self._resize = resize
        self._logObserver = logObserver
        self._raiseSoftLimit = raiseSoftLimit
        self._done = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._apply()

    def startService(self) -> None:
        super().startService()
        self._apply()

    def _apply(self) -> None:
        if not self._done:
            self._done = True
            cap = maxConnections(self._requested, self._logObserver, None, self._raiseSoftLimit)
            self._resize(cap)


__all__ = [
    "DescriptorLimit",
    "RESERVED",
    "UNLIMITED_DESCRIPTORS",
    "connectionsFor",
    "descriptorLimits",
    "descriptorsFor",
    "maxConnections",
    "plannedConnections",
]
