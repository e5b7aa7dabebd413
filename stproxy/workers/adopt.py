"""
A worker's listeners: the sockets its supervisor bound, adopted.

The worker is built by L{stproxy.assembly.assemble} like any stproxy, from
the same flags; only where a single stproxy would bind a listener, a worker
adopts the socket its supervisor passed it for that description
(L{WorkerSpec.listeners}), and counts, wraps in TLS and serves it exactly as
it would have served its own.  Each adopted descriptor is closed once
adopted, so a worker that stops listening holds no copy of the socket.

A C{unix:} socket is adopted without what Twisted does to the socket's file
(L{stproxy._twisted.adoptUNIXPort}): it is the supervisor's, with the mode
the description asked for.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace

from twisted.internet.defer import Deferred, execute
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorSocket,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from stproxy._twisted import adoptUNIXPort
from stproxy.config import Config, ConfigError
from stproxy.edge.connections import ConnectionLimit, LimitedEndpoint
from stproxy.workers.flags import WorkerSpec, publicListeners


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    Listens on an inherited listening socket (of any family: the socket
    says which), then closes the inherited descriptor, the port keeping
    its own copy.
    """

    def __init__(self, reactor: IReactorSocket, fileDescriptor: int) -> None:
        self._reactor = reactor
        self._fd = fileDescriptor

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return execute(self._adopt, protocolFactory)

    def _adopt(self, factory: IProtocolFactory) -> IListeningPort:
        probe = socket.socket(fileno=self._fd)  # learns the family; EBADF if not inherited
        family = probe.family
        probe.detach()
        if family == socket.AF_UNIX:
            port = adoptUNIXPort(self._reactor, self._fd, factory)
        else:
            # Twisted annotates a ServerFactory; any IProtocolFactory serves.
            port = self._reactor.adoptStreamPort(self._fd, family, factory)  # type: ignore[arg-type]
        os.close(self._fd)
        return port


class Adoption:
    """
    A worker's inherited listeners, by listen description.

    @ivar announcement: the log template of a worker's listeners, which are
        not announced as C{"stproxy listening on"}: the supervisor announced
        them once already.
    """

    def __init__(self, reactor: IReactorSocket, config: Config, spec: WorkerSpec) -> None:
        """@raise ConfigError: when the supervisor passed more or fewer sockets than listeners."""
        descriptions = publicListeners(config)
        if len(descriptions) != len(spec.listeners):
            raise ConfigError(
                f"--worker {spec.argument()}: {len(spec.listeners)} sockets for"
                f" {len(descriptions)} listeners"
            )
        self._reactor = reactor
        self._fds = dict(zip(descriptions, spec.listeners))
        self.announcement = f"stproxy worker {spec.index} serving {{where}} ({{description}})"

    def endpoint(
        self,
        description: str,
        limit: ConnectionLimit,
        tls: IOpenSSLServerConnectionCreator | None = None,
    ) -> IStreamServerEndpoint:
        """
        The endpoint of one listener, its connections counted in C{limit},
        with C{tls} layered above the count as for an C{ssl:} listener
        (L{stproxy.edge.endpoints}).
        """
        return LimitedEndpoint(AdoptedEndpoint(self._reactor, self._fds[description]), limit, tls)


def workerConfig(config: Config, spec: WorkerSpec) -> Config:
    """C{config} with the affinity key the supervisor gave every worker, if it gave one."""
    if spec.secret is None:
        return config
    return replace(config, replicas=replace(config.replicas, secret=spec.secret))


__all__ = ["AdoptedEndpoint", "Adoption", "workerConfig"]
