"""
Fakes shared by the tests of how authentication is wired into the proxy (``tests/auth/test_gate.py``,
``tests/http/test_root_auth.py``...): a step whose verdict the test chooses (L{StubStep}), a
certificate made with ``cryptography`` and a TLS transport that reports it verified
(L{certificate}, L{VerifiedTLSTransport}), and a whole L{ProxySite} with a L{Gate} in front of a
fake upstream, in memory (L{GatedProxy}): HTTP requests over a C{StringTransport} answered by a
L{FakeUpstreamAgent}, WebSocket handshakes over a L{MemoryNetwork} to a L{FakeStreamlitFactory}.
"""

from __future__ import annotations

import datetime
from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from stproxy.auth.gate import Gate
from stproxy.auth.identity import IdentityHeaders
from stproxy.auth.verdict import Verdict
from stproxy.config import WebSocketSettings
from stproxy.http.accesslog import Accounting
from stproxy.http.forward import ReverseProxyResource
from stproxy.http.headers import TrustedProxies
from stproxy.http.site import ProxySite, buildSite
from stproxy.ops.drain import Drain
from stproxy.ops.metrics import Metrics
from stproxy.testing import (
    FakeBrowser,
    FakeBrowserFactory,
    FakeStreamlitFactory,
    FakeUpstreamAgent,
    MemoryNetwork,
    MemoryUpstream,
)
from stproxy.testing.websocket import PROXY, MemoryRelay
from stproxy.websocket.resource import RelayResource
from stproxy.websocket.sessions import Sessions

__all__ = [
    "LOOPBACK",
    "GatedProxy",
    "HTTPClient",
    "RawClient",
    "StubStep",
    "VerifiedTLSTransport",
    "certificate",
    "handshake",
    "request",
]

#: Where the test clients connect from: the session log line names this address.
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


class StubStep:
    """
    An authentication step that answers C{verdict} at once, or (C{verdict=None}) leaves each
    check pending in L{pending} for the test to fire; L{requests} holds what it was asked about.
    """

    def __init__(self, verdict: Verdict | None = None) -> None:
        self.verdict = verdict
        self.requests: list[Any] = []
        self.pending: list[Deferred[Verdict]] = []

    def check(self, request: Any) -> Deferred[Verdict]:
        self.requests.append(request)
        if self.verdict is None:
            d: Deferred[Verdict] = Deferred()
            self.pending.append(d)
            return d
        return succeed(self.verdict)


def certificate(
    commonName: str | None = "alice", organization: str = "stproxy tests"
) -> x509.Certificate:
    """A self-signed certificate for C{commonName} (none: a subject without a CN) of C{organization}."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if commonName is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, commonName))
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


class _VerifiedConnection:
    """What a TLS transport's C{getHandle()} gives: pyOpenSSL's C{get_verified_chain}, faked."""

    def __init__(self, chain: Sequence[x509.Certificate]) -> None:
        self._chain = list(chain)
        self.asked: list[bool] = []

    def get_verified_chain(self, as_cryptography: bool = False) -> list[x509.Certificate] | None:
        self.asked.append(as_cryptography)
        assert as_cryptography, "stproxy reads the chain as cryptography certificates"
        return self._chain or None  # pyOpenSSL gives None when nothing was verified


@implementer(ISSLTransport)
class VerifiedTLSTransport(StringTransport):
    """A TLS connection (as far as stproxy can tell) whose verified client chain is C{chain}."""

    def __init__(self, chain: Sequence[x509.Certificate] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handle = _VerifiedConnection(chain)

    def getHandle(self) -> _VerifiedConnection:
        return self.handle

    def loseWriteConnection(self) -> None:
        self.loseConnection()

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def request(
    method: bytes = b"GET", target: bytes = b"/", *headers: bytes, host: bytes = b"app.example"
) -> bytes:
    """An HTTP/1.1 request head with C{headers} (whole lines, C{b"Name: value"}) after its Host."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host, *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def handshake(*headers: bytes, target: bytes = b"/_stcore/stream") -> bytes:
    """A browser's WebSocket upgrade request, with C{headers} after its own."""
    return request(
        b"GET",
        target,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + KEY,
        b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Protocol: streamlit",
        *headers,
    )


class HTTPClient:
    """One client connection to a L{GatedProxy}'s site over a C{StringTransport} (TLS when C{chain} is given)."""

    def __init__(self, site: ProxySite, secure: bool, chain: Sequence[x509.Certificate]) -> None:
        self.protocol = site.buildProtocol(LOOPBACK)
        if secure:
            self.transport: StringTransport = VerifiedTLSTransport(chain, peerAddress=LOOPBACK)
        else:
            self.transport = StringTransport(peerAddress=LOOPBACK)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def output(self) -> bytes:
        return self.transport.value()

    def disconnect(self) -> None:
        """The client goes away."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


class RawClient(Protocol):
    """Sends its bytes on connecting, keeps what comes back."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    @property
    def status(self) -> bytes:
        return self.received.split(b"\r\n", 1)[0]


class GatedProxy:
    """
    A L{ProxySite} as L{stproxy.assembly} builds it, with C{gate} and C{identity}, instrumented
    (metrics, JSON access events in L{access}, log events in L{events}), in front of one fake
    Streamlit: HTTP requests go to L{agent}, WebSocket handshakes to L{streamlit} in memory.
    """

    def __init__(
        self,
        gate: Gate | None = None,
        identity: IdentityHeaders = IdentityHeaders(),
        accessLog: str | None = None,
        trusted: Sequence[str] = (),
    ) -> None:
        """
        @param accessLog: the combined-format access log's path, if any (then L{start} the site).
        @param trusted: C{--trust-forwarded} networks: with C{127.0.0.1} among them the clients'
            own forwarding and identity headers pass the forwarding filter, so that only the
            root's stripping of the identity headers keeps them from the upstream.
        """
        proxies = TrustedProxies(trusted)
        self.network = MemoryNetwork()
        self.clock = self.network.reactor
        self.metrics = Metrics()
        self.events: list[dict[str, Any]] = []
        self.access: list[dict[str, Any]] = []
        self.agent = FakeUpstreamAgent()
        self.streamlit = FakeStreamlitFactory(self.clock)
        self.upstream = MemoryUpstream(self.network, self.streamlit, agent=self.agent)
        sessions = Sessions(self.clock, self.metrics, self.events.append)
        self.relay = MemoryRelay(
            self.upstream,
            WebSocketSettings(pingInterval=0),
            proxies,
            sessions,
            self.events.append,
            self.metrics,
        )
        self.relay.upstream = self.upstream
        self.site = buildSite(
            ReverseProxyResource(self.upstream, proxies, self.events.append, self.metrics),
            RelayResource(self.relay),
            self.clock,
            0,
            accessLog,
            logObserver=self.events.append,
            gate=gate,
            identity=identity,
        )
        accessEvents = Logger("stproxy.access", None, self.access.append)
        self.site.instrument(
            Drain(self.clock, self.metrics, self.events.append),
            Accounting(self.clock, self.metrics, accessEvents),
        )

    def start(self) -> None:
        """Start the site, as a listener does: it opens its access log."""
        self.site.doStart()

    def stop(self) -> None:
        """Stop the site: it closes its access log."""
        self.site.doStop()

    def connect(self, secure: bool = False, chain: Sequence[x509.Certificate] = ()) -> HTTPClient:
        """A new HTTP client connection, over TLS with C{chain} verified when C{secure}."""
        return HTTPClient(self.site, secure, chain)

    def send(self, data: bytes, **kwargs: Any) -> HTTPClient:
        """C{data} on a new connection (see L{connect})."""
        client = self.connect(**kwargs)
        client.send(data)
        return client

    def openBrowser(self, headers: dict[str, str] | None = None) -> FakeBrowser:
        """An Autobahn browser's handshake (with C{headers} added), moved along until nothing moves."""
        factory = FakeBrowserFactory(self.clock, protocols=("streamlit",))
        factory.headers = dict(headers or {})
        browser = factory.buildProtocol(None)
        channel = self.site.buildProtocol(LOOPBACK)
        assert channel is not None
        self.network.connect(channel, browser, PROXY, LOOPBACK)
        self.network.flush()
        return browser

    def openWebSocket(self, data: bytes) -> RawClient:
        """C{data} (a handshake) on a new in-memory connection, moved along until nothing moves."""
        client = RawClient(data)
        channel = self.site.buildProtocol(LOOPBACK)
        assert channel is not None
        self.network.connect(channel, client, PROXY, LOOPBACK)
        self.network.flush()
        return client
