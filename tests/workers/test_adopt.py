"""
A worker's listeners (stproxy.workers.adopt): inherited sockets adopted on the reactor by
their own family, the inherited descriptor closed once adopted, and the listen descriptions
matched to the sockets the supervisor passed.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from option_parsing import parse
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock

from stproxy.config import ConfigError
from stproxy.edge.connections import ConnectionLimit
from stproxy.ops.metrics import Metrics
from stproxy.workers.adopt import AdoptedEndpoint, Adoption, workerConfig
from stproxy.workers.flags import WorkerSpec


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_tcp_socket_is_adopted_as_its_family_and_the_inherited_fd_closed() -> None:
    """An inherited IPv4 listening socket goes to adoptStreamPort as AF_INET; its fd is closed after."""
    reactor = MemoryReactorClock()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    fd = sock.detach()
    factory = Factory()
    ports: list = []
    AdoptedEndpoint(reactor, fd).listen(factory).addCallback(ports.append)
    assert reactor.adoptedPorts == [(fd, socket.AF_INET, factory)]
    assert ports and closed(fd)


def test_a_unix_socket_is_adopted_leaving_its_file_alone(tmp_path: Path) -> None:
    """
    An inherited unix socket is adopted without a chmod (its 0600 stays) and, once the port
    stops, its file is still there: it is the supervisor's.
    """
    reactor = MemoryReactorClock()
    path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen()
    fd = sock.detach()
    ports: list = []
    AdoptedEndpoint(reactor, fd).listen(Factory()).addCallback(ports.append)
    [port] = ports
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert port.getHost().name == str(path).encode()
    assert closed(fd)
    port.stopListening()
    reactor.advance(0)
    assert path.exists()


def test_a_descriptor_that_was_not_inherited_fails_to_listen() -> None:
    """A spec naming a descriptor that is not open fails the listen (and so the worker's start)."""
    failures: list = []
    AdoptedEndpoint(MemoryReactorClock(), 987).listen(Factory()).addErrback(failures.append)
    assert failures and failures[0].check(OSError)


def listening() -> int:
    """The descriptor of a new listening socket on loopback."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.detach()


def test_sockets_are_matched_to_listeners_and_the_redirect_one_in_order(pki) -> None:
    """Each --listen, then --redirect-http, takes the next inherited descriptor."""
    options = parse(
        "--listen", "ssl:1", *pki.server_args(), "--listen", "tcp:2", "--redirect-http", "tcp:3"
    )  # fmt: skip
    reactor = MemoryReactorClock()
    fds = (listening(), listening(), listening())
    adoption = Adoption(reactor, options.config, WorkerSpec(1, 3, fds))
    limit = ConnectionLimit(10, reactor, Metrics())
    for description in ("tcp:3", "tcp:2", "ssl:1"):
        adoption.endpoint(description, limit).listen(Factory())
    assert [fd for fd, _, _ in reactor.adoptedPorts] == [fds[2], fds[1], fds[0]]
    assert adoption.announcement == "stproxy worker 1 serving {where} ({description})"


def test_as_many_sockets_as_listeners_are_needed() -> None:
    """A spec with fewer sockets than listeners is refused, naming both counts."""
    options = parse("--listen", "tcp:1", "--listen", "tcp:2")
    with pytest.raises(ConfigError, match="1 sockets for 2 listeners"):
        Adoption(MemoryReactorClock(), options.config, WorkerSpec(0, 3, (4,)))


def test_the_supervisors_affinity_key_replaces_a_random_one() -> None:
    """A worker given a key uses it; without one, the configuration is left as it is."""
    config = parse().config
    assert workerConfig(config, WorkerSpec(0, 3, (4,))) is config
    secret = b"k" * 32
    assert workerConfig(config, WorkerSpec(0, 3, (4,), secret)).replicas.secret == secret
