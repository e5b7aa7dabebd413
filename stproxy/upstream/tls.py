"""
How stproxy checks an upstream it reaches over TLS (C{--upstream https://...}).

Both legs use one L{IPolicyForHTTPS}: the HTTP L{Agent} asks it per
connection, and L{stproxy.upstream.Upstream.endpoint} asks it for the
WebSocket leg (L{handshakenTLSEndpoint}), so the two can never disagree
about whom they trust.

By default the upstream's certificate must chain to the platform's trust
store, or to C{--upstream-ca} alone when that is given (as nginx's
C{proxy_ssl_trusted_certificate}), and must name the upstream's host
(service-identity, as browsers check).  C{--upstream-insecure} is the only
way to connect regardless, and it is never silent: every problem the check
would have refused a connection for is logged as a warning.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate as TwistedCertificate
from twisted.internet.ssl import (
    CertificateOptions,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from stproxy.edge.certificates import loadCertificates
from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    from stproxy._twisted import IOpenSSLTrustRoot

_VERIFY_ERRORS = {
    value: name.removeprefix("ERR_").lower().replace("_", " ")
    for name, value in vars(SSL.X509VerificationCodes).items()
    if name.startswith("ERR_")
}


def trustRootFromFile(path: str) -> IOpenSSLTrustRoot:
    """
    A trust root of exactly the CA certificates in the PEM file at C{path}.

    @raise stproxy.edge.certificates.CertificateError: naming the file.
    """
    certificates = loadCertificates(path, "upstream CA")
    trustRoot: IOpenSSLTrustRoot = trustRootFromCertificates(
        [TwistedCertificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    )
    return trustRoot


def upstreamPolicy(
    caFile: str | None = None,
    insecure: bool = False,
    logObserver: ILogObserver | None = None,
) -> IPolicyForHTTPS:
    """
    The policy for connections to an C{https://} upstream.

    @param caFile: trust only the CAs in this PEM file instead of the platform's.
    @param insecure: connect even when the check fails, logging why it failed.
    """
    trustRoot = trustRootFromFile(caFile) if caFile else platformTrust()
    if insecure:
        return UnverifiedPolicy(trustRoot, logObserver)
    return BrowserLikePolicyForHTTPS(trustRoot=trustRoot)


@implementer(IPolicyForHTTPS)
class UnverifiedPolicy:
    """
    C{--upstream-insecure}: every connection proceeds, and every certificate
    problem that would have stopped it is logged as a warning.
    """

    def __init__(
        self, trustRoot: IOpenSSLTrustRoot, logObserver: ILogObserver | None = None
    ) -> None:
        self._trustRoot = trustRoot
        self._log = loggerFor(self, logObserver)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _UnverifiedCreator(hostname.decode("ascii"), port, self._trustRoot, self._log)


def _isIPAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    def __init__(self, hostname: str, port: int, trustRoot: IOpenSSLTrustRoot, log: Logger) -> None:
        self._hostname = hostname
        self._port = port
        self._options = CertificateOptions(trustRoot=trustRoot)
        self._log = log

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        isIP = _isIPAddress(self._hostname)
        if not isIP:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        problems: list[str] = []

        def check(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
            # OpenSSL calls this once per problem, then once with ok=1 per
            # certificate from the root down; the leaf's (depth 0) comes last.
            try:
                subject = cert.to_cryptography().subject.rfc4514_string()
                if not ok:
                    what = _VERIFY_ERRORS.get(errno, f"verify error {errno}")
                    problems.append(f"{what} ({subject})")
                elif depth == 0:
                    problem = _identityProblem(cert.to_cryptography(), self._hostname, isIP)
                    if problem is not None:
                        problems.append(problem)
                    if problems:
                        self._log.warn(
                            "Upstream {host}:{port} TLS certificate would be refused: {reason};"
                            " connecting anyway because of --upstream-insecure",
                            host=self._hostname,
                            port=self._port,
                            reason="; ".join(dict.fromkeys(problems)),
                        )
                    problems.clear()
            except Exception:
                self._log.failure("While checking the upstream certificate")
            return True

        connection.set_verify(SSL.VERIFY_PEER, check)
        return connection


def handshakenTLSEndpoint(
    creator: IOpenSSLClientConnectionCreator, endpoint: IStreamClientEndpoint
) -> IStreamClientEndpoint:
    """
    C{endpoint} wrapped in TLS, whose C{connect} fires only once the TLS
    handshake, certificate check included, has succeeded, and otherwise fails
    with the reason (the certificate's problem, not "connection lost").

    L{wrapClientTLS} fires as soon as TCP connects, so a refused certificate
    would only show up later as a lost connection; the WebSocket leg treats a
    failed connect as "upstream unreachable" (502, with the reason logged),
    which is what a refused upstream certificate is.
    """
    return _HandshakenEndpoint(wrapClientTLS(creator, endpoint))


@implementer(IStreamClientEndpoint)
class _HandshakenEndpoint:
    def __init__(self, tlsEndpoint: IStreamClientEndpoint) -> None:
        self._tlsEndpoint = tlsEndpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        waiting = _UntilHandshake(protocolFactory)

        def cancel(d: Deferred[IProtocol]) -> None:
            connecting.cancel()
            if waiting.transport is not None:
                waiting.transport.abortConnection()

        waiting.done = Deferred(cancel)
        factory = Factory.forProtocol(lambda: waiting)
        factory.noisy = False
        connecting = self._tlsEndpoint.connect(factory)
        connecting.addErrback(waiting.failed)
        return waiting.done


@implementer(IHandshakeListener)
class _UntilHandshake(Protocol):
    """
    Stands in for the real protocol until the TLS handshake is done, then
    hands it the TLS transport (replacing itself as the wrapped protocol, so
    it costs nothing once the connection is up).
    """

    done: Deferred[IProtocol]
    transport: TLSMemoryBIOProtocol | None

    def __init__(self, protocolFactory: IProtocolFactory) -> None:
        self._protocolFactory = protocolFactory

    def makeConnection(self, transport: ITransport) -> None:
        # Not connectionMade: the handshake is not done yet.  The transport is
        # the TLS protocol wrapping this one (wrapClientTLS).
        self.transport = cast("TLSMemoryBIOProtocol", transport)

    def handshakeCompleted(self) -> None:
        transport = self.transport
        assert transport is not None  # the handshake was on it
        protocol = self._protocolFactory.buildProtocol(transport.getPeer())
        if protocol is None:
            transport.abortConnection()
            return
        transport.wrappedProtocol = protocol
        protocol.makeConnection(transport)
        if not self.done.called:
            self.done.callback(protocol)

    def failed(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.errback(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.failed(reason)


def _identityProblem(cert: x509.Certificate, host: str, isIP: bool) -> str | None:
    try:
        if isIP:
            verify_certificate_ip_address(cert, host)
        else:
            verify_certificate_hostname(cert, host)
    except Exception as e:  # VerificationError, or CertificateError for no subjectAltName
        return f"certificate does not name {host} ({e})"
    return None


__all__ = ["UnverifiedPolicy", "handshakenTLSEndpoint", "trustRootFromFile", "upstreamPolicy"]
