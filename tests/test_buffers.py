"""
How much each connection reads at once and holds for a slow reader (stproxy.buffers), on both legs.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport

from site_connection import Server
from stproxy._twisted import UpstreamConnectionPool
from stproxy.buffers import TRANSFER_BUFFER_SIZE, useTransferBuffer


class _Layer:
    """A transport over another one, as TLS or the connection count wraps the socket's."""

    def __init__(self, transport: object) -> None:
        self.transport = transport


class _LayeredTransport(StringTransport):
    """A StringTransport over a socket-like transport, as the TLS layer is over TCP's."""

    def __init__(self, socket: FileDescriptor) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.transport = socket


def test_twisted_reads_64_kib_at_once_by_default() -> None:
    """What the larger buffer replaces: FileDescriptor.bufferSize is Twisted's read size and pause mark."""
    assert FileDescriptor.bufferSize == 64 * 1024 < TRANSFER_BUFFER_SIZE


def test_a_socket_transport_gets_the_transfer_buffer_itself_or_below_its_layers() -> None:
    """The TCP connection is found under up to three wrappers; the class default is untouched."""
    for depth in range(4):
        socket = FileDescriptor(MemoryReactor())
        transport: object = socket
        for _ in range(depth):
            transport = _Layer(transport)
        useTransferBuffer(transport)
        assert socket.bufferSize == TRANSFER_BUFFER_SIZE, f"not found under {depth} layers"
    assert FileDescriptor.bufferSize == 64 * 1024


def test_other_transports_are_left_alone() -> None:
    """A transport with no socket under it (a test's, a pipe's) is left as it is."""
    transport = StringTransport()
    useTransferBuffer(transport)
    useTransferBuffer(_Layer(None))
    assert not hasattr(transport, "bufferSize")


def test_a_client_connection_to_the_site_reads_with_the_transfer_buffer() -> None:
    """The browser leg: the site's channel sets it on the connection it is given."""
    socket = FileDescriptor(MemoryReactorClock())
    protocol = Server().listener.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
    protocol.makeConnection(_LayeredTransport(socket))
    assert socket.bufferSize == TRANSFER_BUFFER_SIZE


def test_an_upstream_connection_reads_with_the_transfer_buffer() -> None:
    """The upstream leg: the pool's protocol sets it on its connection."""
    factory = UpstreamConnectionPool(MemoryReactorClock(), 1024)._factory(lambda protocol: None, "endpoint")
    socket = FileDescriptor(MemoryReactorClock())
    factory.buildProtocol(None).makeConnection(socket)
    assert socket.bufferSize == TRANSFER_BUFFER_SIZE
