"""
The supervisor's listening sockets (stproxy.workers.binding): bound through Twisted's own
endpoint parsing, listening but never accepted on, and closed without ending the socket for
the processes that share it.  Real sockets on loopback, no reactor.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory

from stproxy.workers.binding import Binder, HeldPort, heldEndpoint


def hold(description: str) -> HeldPort:
    """Bind C{description} as the supervisor does, and return its port."""
    ports: list[HeldPort] = []
    heldEndpoint(Binder(), description).listen(Factory()).addCallback(ports.append)
    return ports[0]


def test_a_tcp_listener_listens_and_a_copy_keeps_it_after_the_holder_closes() -> None:
    """
    tcp:0 is bound to a port the kernel chose and listens (a client connects); closing the
    supervisor's copy does not end the socket for a process holding another copy of it.
    """
    port = hold("tcp:0:interface=127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address) and address.host == "127.0.0.1" and address.port
    worker = socket.socket(fileno=os.dup(port.fileno()))  # what a worker inherits
    try:
        port.stopListening()
        assert port.fileno() == -1
        with socket.create_connection(("127.0.0.1", address.port), timeout=5):
            connection, _ = worker.accept()
            connection.close()
    finally:
        worker.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", address.port), timeout=5)


def test_an_ssl_listener_is_bound_as_plain_tcp_on_its_port() -> None:
    """ssl: listeners are bound by their port, interface and backlog: the workers add TLS."""
    port = hold("ssl:0:interface=127.0.0.1:backlog=7")
    try:
        assert port.socket.family == socket.AF_INET
        assert port.getHost().port  # type: ignore[attr-defined]
    finally:
        port.stopListening()


def test_a_busy_port_cannot_listen() -> None:
    """Binding a port already listened on raises CannotListenError, as the reactor would."""
    port = hold("tcp:0:interface=127.0.0.1")
    try:
        taken = port.getHost().port  # type: ignore[attr-defined]
        ports: list = []
        heldEndpoint(Binder(), f"tcp:{taken}:interface=127.0.0.1").listen(Factory()).addErrback(
            ports.append
        )
        assert ports[0].check(CannotListenError)
    finally:
        port.stopListening()


def test_a_unix_listener_gets_its_mode_and_its_file_goes_on_stop(tmp_path: Path) -> None:
    """unix:PATH:mode=600 makes a socket file of mode 0600, removed when the supervisor closes it."""
    path = tmp_path / "s.sock"
    port = hold(f"unix:{path}:mode=600")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(port.getHost(), UNIXAddress)
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
    port.stopListening()
    assert not path.exists()
    port.stopListening()  # twice: nothing more


def test_a_unix_listener_with_a_lock_file_takes_and_releases_it(tmp_path: Path) -> None:
    """lockfile=1 takes PATH.lock (a second supervisor cannot listen) and releases it on stop."""
    path = tmp_path / "s.sock"
    port = hold(f"unix:{path}:lockfile=1")
    assert os.path.lexists(f"{path}.lock")
    failures: list = []
    heldEndpoint(Binder(), f"unix:{path}:lockfile=1").listen(Factory()).addErrback(failures.append)
    assert failures[0].check(CannotListenError)
    port.stopListening()
    assert not os.path.lexists(f"{path}.lock")
