"""
The supervisor's listening sockets: bound and listening, never accepted on.

The supervisor binds every public listener once, in C{privilegedStartService}
(before twistd drops privileges), and hands the sockets to its workers, which
accept on them (L{stproxy.workers.adopt}).  It must not accept a connection
itself, and closing its copy must not end the socket for the workers, which
a Twisted port would do on stop (it calls C{shutdown()} on the socket, which
every process sharing it feels).

So the descriptions go through Twisted's own endpoints (C{tcp:}, C{tcp6:},
C{unix:}, C{systemd:}, the port and interface of an C{ssl:} one), exactly as
a single stproxy parses them, but with a L{Binder} for a reactor: it binds
and listens as the reactor would (C{SO_REUSEADDR}, the backlog, a C{unix:}
socket's C{mode=} and C{lockfile=}) and returns a L{HeldPort}, which only
holds the socket.  Stopping one closes this process's copy and removes a
C{unix:} socket's file, so that new clients find nothing there, while the
workers finish what they accepted.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort, IStreamServerEndpoint
from twisted.python.lockfile import FilesystemLock
from zope.interface import implementer

from stproxy.edge.endpoints import SSLDescription, isSSLDescription, withDefaultBacklog


@implementer(IListeningPort)
class HeldPort:
    """
    A listening socket this process holds for others and never accepts on.

    @ivar socket: the socket; its descriptor is what workers inherit.
    """

    def __init__(
        self, sock: socket.socket, path: str | None = None, lock: FilesystemLock | None = None
    ) -> None:
        """
        @param path: a C{unix:} socket's file, removed on stop.
        @param lock: its C{lockfile=} lock, released on stop.
        """
        self.socket = sock
        self._path = path
        self._lock = lock
        self._address = self._hostAddress()

    def _hostAddress(self) -> IAddress:
        name = self.socket.getsockname()
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("TCP", name[0], name[1])
        if self.socket.family == socket.AF_INET:
            return IPv4Address("TCP", name[0], name[1])
        return UNIXAddress(name)

    def fileno(self) -> int:
        """The descriptor a worker is given (-1 once stopped)."""
        return self.socket.fileno()

    def startListening(self) -> None:
        """Nothing to do: the socket listens from the start."""

    def stopListening(self) -> None:
        """Close this process's copy (no C{shutdown()}); remove the file of a C{unix:} one."""
        if self.socket.fileno() == -1:
            return
        self.socket.close()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        if self._lock is not None:
            self._lock.unlock()

    def getHost(self) -> IAddress:
        return self._address


class Binder:
    """
    What Twisted's server endpoints are given for a reactor in the
    supervisor: the C{listenTCP}, C{listenUNIX} and C{adoptStreamPort}
    they call, each returning a L{HeldPort}; a bind that fails raises
    L{CannotListenError}, as the reactor's would.
    """

    def listenTCP(
        self, port: int, factory: object, backlog: int = 50, interface: str = ""
    ) -> HeldPort:
        """Bind and listen on C{interface}:C{port}, IPv6 when the interface is."""
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            address: Any = (interface, port)
            if family == socket.AF_INET6:
                flags = socket.AI_NUMERICHOST | socket.AI_PASSIVE
                address = socket.getaddrinfo(interface, port, family, 0, 0, flags)[0][4]
            sock.bind(address)
            sock.listen(backlog)
        except OSError as e:
            sock.close()
            raise CannotListenError(interface, port, e) from None
        sock.setblocking(False)
        return HeldPort(sock)

    def listenUNIX(
        self,
        address: str,
        factory: object,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> HeldPort:
        """
        Bind and listen on the C{unix:} socket C{address}, as Twisted's
        C{unix.Port} does: with C{wantPID} (C{lockfile=1}) a lock beside it,
        and a stale socket left by a dead owner removed.
        """
        inFileSystem = address[:1] != "\0"
        lock = None
        if wantPID:
            lock = FilesystemLock(address + ".lock")
            if not lock.lock():
                raise CannotListenError(None, address, "Cannot acquire lock")
            if not lock.clean and _isSocket(address):
                os.remove(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            if inFileSystem:
                os.chmod(address, mode)
            sock.listen(backlog)
        except OSError as e:
            sock.close()
            if lock is not None:
                lock.unlock()
            raise CannotListenError(None, address, e) from None
        sock.setblocking(False)
        return HeldPort(sock, address if inFileSystem else None, lock)

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: object) -> HeldPort:
        """Hold a socket listening already (C{systemd:}): a copy, as the reactor keeps."""
        sock = socket.fromfd(fileDescriptor, addressFamily, socket.SOCK_STREAM)
        sock.setblocking(False)
        return HeldPort(sock)


def _isSocket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def heldEndpoint(binder: Binder, description: str) -> IStreamServerEndpoint:
    """
    The endpoint binding C{description} for workers: the plain TCP of an
    C{ssl:} one (the workers add TLS), Twisted's own for the rest.
    """
    if isSSLDescription(description):
        ssl = SSLDescription.parse(description)
        return TCP4ServerEndpoint(binder, ssl.port, backlog=ssl.backlog, interface=ssl.interface)
    endpoint: IStreamServerEndpoint = serverFromString(binder, withDefaultBacklog(description))
    return endpoint


__all__ = ["Binder", "HeldPort", "heldEndpoint"]
