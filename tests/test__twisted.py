"""
Pins every private Twisted API stproxy relies on (listed in stproxy/_twisted.py):
a Twisted release that renames, removes or changes one fails here, with a
message naming it.  Everything runs on twisted.internet.testing's fakes, never
on the global reactor.
"""

from __future__ import annotations

import io
import signal
import sys
from typing import Any

import pytest
from twisted.application import app
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import interfaces
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, platformTrust, trustRootFromCertificates
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web import client, http
from twisted.web.resource import Resource
from twisted.web.server import Site

from stproxy import _twisted
from stproxy._twisted import (
    QuietConnectionPool,
    StandardOutputLogMixin,
    channelProtocol,
    forgetExitSignal,
    raiseBindErrorsAtStart,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


class Hello(Resource):
    """Answers every GET with C{hello}."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


def private(owner: object, name: str) -> Any:
    """C{owner.name}, or a failure naming the private Twisted API that is gone."""
    assert hasattr(owner, name), f"Twisted no longer has {getattr(owner, '__name__', owner)}.{name}"
    return getattr(owner, name)


class _RecordingChannel(http.HTTPChannel):
    """An L{HTTPChannel} that notes its connection, as stproxy's drain-reporting channel does."""

    made = False

    def connectionMade(self) -> None:
        self.made = True
        super().connectionMade()


class _ChannelSite(Site):
    """A L{Site} whose protocol is L{channelProtocol} around our own channel, as ProxySite's is."""

    channel: _RecordingChannel

    def protocol(self) -> Any:  # type: ignore[override]
        self.channel = _RecordingChannel()
        return channelProtocol(self.channel)


def serve(site: Site, request: bytes = REQUEST) -> bytes:
    """What C{site} answers C{request} with over a L{StringTransport}."""
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    return transport.value()


def test_generic_channel_protocol_wraps_a_channel():
    """twisted.web.http._GenericHTTPChannelProtocol wraps a given channel, which then serves HTTP."""
    wrapper = private(http, "_GenericHTTPChannelProtocol")
    channel = http.HTTPChannel()
    protocol = channelProtocol(channel)
    assert isinstance(protocol, wrapper), "_GenericHTTPChannelProtocol(channel) is not one"
    assert isinstance(Site(Hello(), reactor=MemoryReactorClock()).buildProtocol(None), wrapper), (
        "HTTPFactory.buildProtocol no longer builds a _GenericHTTPChannelProtocol"
    )

    site = _ChannelSite(Hello(), reactor=MemoryReactorClock())
    response = serve(site)
    assert site.channel.made, "_GenericHTTPChannelProtocol did not pass connectionMade on"
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert response.endswith(b"\r\n\r\nhello"), response


def test_generic_channel_protocol_passes_the_site_on():
    """_GenericHTTPChannelProtocol forwards factory, site, requestFactory and timeOut to its channel."""
    channel = http.HTTPChannel()
    protocol = channelProtocol(channel)
    site = Site(Hello(), reactor=MemoryReactorClock())
    protocol.factory = site  # type: ignore[attr-defined]
    protocol.site = site  # type: ignore[attr-defined]
    protocol.requestFactory = site.requestFactory  # type: ignore[attr-defined]
    protocol.timeOut = 7  # type: ignore[attr-defined]
    assert channel.factory is site
    assert channel.site is site  # type: ignore[attr-defined]
    assert channel.requestFactory is site.requestFactory
    assert channel.timeOut == 7


def test_connection_pool_builds_its_factory_from_underscore_factory():
    """HTTPConnectionPool._factory is _HTTP11ClientFactory, built per connection as (callback, repr)."""
    factoryClass = private(client, "_HTTP11ClientFactory")
    assert private(client.HTTPConnectionPool, "_factory") is factoryClass
    assert issubclass(QuietConnectionPool._factory, factoryClass)

    built: list[Factory] = []

    class Endpoint:
        def connect(self, factory: Factory) -> Deferred[None]:
            built.append(factory)
            return Deferred()

    for poolClass, noisy in [(client.HTTPConnectionPool, True), (QuietConnectionPool, False)]:
        pool = poolClass(MemoryReactorClock(), persistent=True)
        pool.getConnection(("http", b"example.com", 80), Endpoint())
        factory = built.pop()
        assert isinstance(factory, factoryClass), (
            f"{poolClass.__name__} no longer connects with its _factory"
        )
        assert factory.noisy is noisy, f"{poolClass.__name__}'s factory has noisy={factory.noisy}"


def test_quiet_pool_factory_does_not_log_starting_factory():
    """The factory a QuietConnectionPool connects with logs nothing when it starts and stops."""
    from twisted.logger import capturedLogs

    factory = QuietConnectionPool._factory(lambda protocol: None, "endpoint")
    with capturedLogs() as events:
        factory.doStart()
        factory.doStop()
    assert list(events) == []


class _FailingEndpoint:
    """A server endpoint whose C{listen} fails, as a busy port's does."""

    def listen(self, factory: Factory) -> Deferred[Any]:
        return fail(CannotListenError("127.0.0.1", 8501, OSError("address in use")))


def test_raise_synchronously_makes_a_bind_error_raise_at_start():
    """StreamServerEndpointService._raiseSynchronously makes privilegedStartService raise a listen error."""
    assert private(StreamServerEndpointService, "_raiseSynchronously") is False
    service = StreamServerEndpointService(_FailingEndpoint(), Factory())
    raiseBindErrorsAtStart(service)
    with pytest.raises(CannotListenError):
        service.privilegedStartService()


def test_without_raise_synchronously_a_bind_error_is_only_logged():
    """Without _raiseSynchronously the same error is logged, which is why stproxy sets it."""
    from twisted.logger import capturedLogs

    service = StreamServerEndpointService(_FailingEndpoint(), Factory())
    with capturedLogs() as events:
        service.privilegedStartService()
    failures = [event.get("log_failure", event.get("failure")) for event in events]
    failures = [failure for failure in failures if failure is not None]
    assert [failure.type for failure in failures] == [CannotListenError]


class _SignalledReactor:
    """Enough of a reactor for ReactorBase's signal handlers and twistd's runner."""

    _exitSignal = None

    def __init__(self, onRun: Any = None) -> None:
        self.onRun = onRun
        self.stopping: list[Any] = []

    def callFromThread(self, function: Any, *args: Any) -> None:
        self.stopping.append(function)

    def stop(self) -> None:
        pass

    def run(self) -> None:
        if self.onRun is not None:
            self.onRun(self)


def test_reactor_base_records_the_exit_signal():
    """ReactorBase._exitSignal starts None and sigTerm sets it; forgetExitSignal clears it."""
    assert private(ReactorBase, "_exitSignal") is None
    capturing = private(interfaces, "_ISupportsExitSignalCapturing")
    assert capturing.implementedBy(ReactorBase)
    reactor = _SignalledReactor()
    ReactorBase.sigTerm(reactor, signal.SIGTERM)  # type: ignore[arg-type]
    assert reactor._exitSignal == signal.SIGTERM, "ReactorBase.sigTerm no longer sets _exitSignal"
    forgetExitSignal(reactor)
    assert reactor._exitSignal is None
    forgetExitSignal(object())  # a reactor without one is left alone


@pytest.mark.parametrize("forget", [False, True])
def test_twistd_reads_the_exit_signal_after_the_reactor_stops(forget):
    """twistd's runner takes the signal to re-raise from reactor._exitSignal once run() returns."""
    from zope.interface import directlyProvides

    def run(reactor: _SignalledReactor) -> None:
        ReactorBase.sigTerm(reactor, signal.SIGTERM)  # type: ignore[arg-type]
        if forget:
            forgetExitSignal(reactor)

    reactor = _SignalledReactor(run)
    directlyProvides(reactor, private(interfaces, "_ISupportsExitSignalCapturing"))
    runner = app.ApplicationRunner.__new__(app.ApplicationRunner)
    runner.config = {"profile": False, "debug": False, "nodaemon": True}
    runner.profiler = None
    runner.startReactor(reactor, sys.stdout, sys.stderr)
    assert private(runner, "_exitSignal") == (None if forget else signal.SIGTERM)


class _StdoutSite(StandardOutputLogMixin, Site):
    """A site logging as ProxySite does."""


def test_start_factory_opens_the_log_with_open_log_file(monkeypatch, tmp_path):
    """HTTPFactory.startFactory opens logPath with _openLogFile, so "-" logs to the real stdout."""
    private(http.HTTPFactory, "_openLogFile")
    monkeypatch.chdir(tmp_path)  # were "-" opened as a path, it would be a file here
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", stdout)
    site = _StdoutSite(Hello(), reactor=MemoryReactorClock())
    site.logPath = "-"  # as ProxySite does: HTTPFactory.__init__ would make it a path
    site.startFactory()
    try:
        serve(site)
    finally:
        site.stopFactory()
    assert '"GET / HTTP/1.1" 200 5' in stdout.getvalue(), (
        "HTTPFactory.startFactory no longer opens the access log with _openLogFile"
    )
    assert not stdout.closed

    path = tmp_path / "access.log"
    site = _StdoutSite(Hello(), logPath=str(path), reactor=MemoryReactorClock())
    site.startFactory()
    try:
        serve(site)
    finally:
        site.stopFactory()
    assert '"GET / HTTP/1.1" 200 5' in path.read_text()


def test_open_ssl_trust_root_is_what_trust_roots_provide():
    """twisted.internet._sslverify.IOpenSSLTrustRoot is provided by platformTrust() and trustRootFromCertificates()."""
    from twisted.internet import _sslverify

    trustRoot = private(_sslverify, "IOpenSSLTrustRoot")
    assert trustRoot.providedBy(platformTrust()), "platformTrust() no longer provides it"
    certificate = Certificate.loadPEM(selfSignedPEM())
    fromCertificates = trustRootFromCertificates([certificate])
    assert trustRoot.providedBy(fromCertificates), (
        "trustRootFromCertificates() no longer provides it"
    )
    assert "IOpenSSLTrustRoot" in _twisted.__all__


def selfSignedPEM() -> bytes:
    """A throw-away self-signed EC certificate, in PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stproxy test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
