"""
The HTTP leg against a fake upstream agent (L{stproxy.testing.FakeUpstreamAgent}): a L{ProxySite} fed raw HTTP bytes as one client
connection over a C{StringTransport}, whose upstream requests the test answers itself.

Refusals, errors, cancellation and backpressure are reached this way at once, where real
sockets reach them only slowly or not at all.  Used by the tests under ``tests/http/`` and
``tests/ops/test_drain.py``.
"""

from __future__ import annotations


from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from stproxy.config import Timeouts
from stproxy.http.accesslog import Accounting
from stproxy.http.forward import ReverseProxyResource
from stproxy.http.headers import TrustedProxies
from stproxy.http.site import buildSite
from stproxy.ops.drain import Drain
from stproxy.ops.metrics import Metrics
from stproxy.upstream.address import UpstreamAddress
from stproxy.testing import FakeResponse, FakeUpstreamAgent
from stproxy.upstream.client import Upstream

__all__ = ["UPSTREAM", "FakeResponse", "Proxy"]

UPSTREAM = UpstreamAddress("http", "127.0.0.1", 8501)


class Proxy:
    """A ProxySite over a fake agent, fed raw bytes as one client connection."""

    def __init__(
        self,
        maxBodySize: int = 0,
        timeouts: Timeouts = Timeouts(),
        metrics: Metrics | None = None,
        accessLog: str | None = None,
    ) -> None:
        """
        @param metrics: instrument the site (a L{Drain} and these metrics), as the service does.
        @param accessLog: the site's C{--access-log}.
        """
        self.clock = MemoryReactorClock()
        self.agent = FakeUpstreamAgent()
        self.upstream = Upstream(self.clock, UPSTREAM, timeouts, agent=self.agent)
        self.site = buildSite(
            ReverseProxyResource(self.upstream, TrustedProxies()),
            Resource(),
            self.clock,
            maxBodySize,
            accessLog,
        )
        self.drain = None
        if metrics is not None:
            self.drain = Drain(self.clock, metrics, None)
            self.site.instrument(self.drain, Accounting(self.clock, metrics, None))
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        self.protocol = self.site.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def output(self) -> bytes:
        return self.transport.value()

    def disconnect(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))
