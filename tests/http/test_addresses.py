"""
What a connection is, asked of it once (stproxy.http.addresses): twisted.web asks the channel for
its local address and security on every request.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel, Request

from stproxy.http.addresses import RememberedAddresses


class _CountingTransport(StringTransport):
    """A transport that counts C{getHost} calls (each a C{getsockname} on a socket)."""

    asked = 0

    def getHost(self) -> IPv4Address:
        self.asked += 1
        return IPv4Address("TCP", "127.0.0.1", 8500)


class _Answered(Request):
    """A request answered at once, so that the next one on the connection is read."""

    def process(self) -> None:
        self.finish()


class _Channel(RememberedAddresses, HTTPChannel):
    """An HTTPChannel that remembers, as stproxy's does."""

    requestFactory = _Answered


def test_three_requests_ask_the_socket_for_its_address_once() -> None:
    """Each request twisted.web builds reads the channel's host; the transport is asked once."""
    transport = _CountingTransport()
    channel = _Channel()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 3
    assert transport.asked == 1
    assert channel.getHost() == IPv4Address("TCP", "127.0.0.1", 8500)


def test_security_is_what_the_transport_says() -> None:
    """A plain transport is not secure, asked once or many times."""
    channel = _Channel()
    channel.makeConnection(StringTransport())
    assert channel.isSecure() is False
    assert channel.isSecure() is False
