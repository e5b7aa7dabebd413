"""
Pins every private Twisted API stproxy relies on (listed in stproxy/_twisted.py):
a Twisted release that renames, removes or changes one fails here, with a
message naming it.  Everything runs on twisted.internet.testing's fakes, never
on the global reactor.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import sys
from typing import Any

import pytest
from twisted.application import app
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import interfaces
from twisted.internet.base import ReactorBase
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, platformTrust, trustRootFromCertificates
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import _newclient, client, http
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from stproxy import _twisted
from stproxy._twisted import (
    MALFORMED_RESPONSE,
    BadRequestHook,
    ResponseHeadTooLarge,
    StandardOutputLogMixin,
    UpstreamConnectionPool,
    adoptUNIXPort,
    channelProtocol,
    chunkRemaining,
    forgetExitSignal,
    raiseBindErrorsAtStart,
    requestParsed,
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
    """HTTPConnectionPool calls self._factory(callback, repr) per connection; its protocol keeps the callback."""
    factoryClass = private(client, "_HTTP11ClientFactory")
    assert private(client.HTTPConnectionPool, "_factory") is factoryClass

    built: list[Factory] = []

    class Endpoint:
        def connect(self, factory: Factory) -> Deferred[None]:
            built.append(factory)
            return Deferred()

    pools = [client.HTTPConnectionPool(MemoryReactorClock()), UpstreamConnectionPool(MemoryReactorClock(), 1024)]
    for pool, noisy in zip(pools, [True, False]):
        name = type(pool).__name__
        pool.getConnection(("http", b"example.com", 80), Endpoint())
        factory = built.pop()
        assert isinstance(factory, factoryClass), f"{name} no longer connects with its _factory"
        assert factory.noisy is noisy, f"{name}'s factory has noisy={factory.noisy}"
        callback = private(factory, "_quiescentCallback")
        protocol = factory.buildProtocol(None)
        assert isinstance(protocol, client.HTTP11ClientProtocol)
        assert protocol._quiescentCallback is callback, "the callback that returns connections is lost"


def test_quiet_pool_factory_does_not_log_starting_factory():
    """The factory an UpstreamConnectionPool connects with logs nothing when it starts and stops."""
    from twisted.logger import capturedLogs

    factory = UpstreamConnectionPool(MemoryReactorClock(), 1024)._factory(lambda protocol: None, "endpoint")
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


def test_adopting_a_unix_socket_leaves_its_file_alone(tmp_path):
    """
    unix.Port._fromListeningDescriptor builds the port of an inherited AF_UNIX socket, and
    adoptUNIXPort's port neither chmods its file (Twisted's own would make it 0666) nor
    unlinks it when it stops.
    """
    from twisted.internet import unix

    private(unix.Port, "_fromListeningDescriptor")
    path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen()
    reactor = MemoryReactorClock()
    try:
        port = adoptUNIXPort(reactor, sock.fileno(), Factory())
        assert port.getHost().name == str(path).encode()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert reactor.readers, "the adopted port does not read (accept)"
        port.stopListening()
        reactor.advance(0)
        assert path.exists()
    finally:
        sock.close()


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


def _clientExchange(protocol: client.HTTP11ClientProtocol) -> tuple[StringTransport, list[Any]]:
    """C{protocol} connected to a StringTransport with one GET sent: its transport and (later) its result."""
    transport = StringTransport()
    protocol.makeConnection(transport)
    results: list[Any] = []
    request = client.Request(b"GET", b"/", Headers({b"host": [b"example.com"]}), None)
    protocol.request(request).addBoth(results.append)
    return transport, results


def test_client_parser_keeps_the_connection_header_to_itself():
    """HTTP11ClientProtocol._parser holds the upstream's Connection in connHeaders, not in response.headers."""
    protocol = client.HTTP11ClientProtocol()
    _, results = _clientExchange(protocol)
    parser = private(protocol, "_parser")
    assert parser.state == private(_newclient, "STATUS")
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\n")
    assert parser.state == private(_newclient, "HEADER")
    protocol.dataReceived(b"Content-Length: 1\r\n\r\n")
    assert parser.state == "BODY"
    [response] = results
    assert not response.headers.hasHeader(b"connection"), "Twisted now passes Connection on itself"
    assert response.headers.getRawHeaders(b"x-hop") == [b"1"], "so X-Hop would reach the browser"
    assert parser.connHeaders.getRawHeaders(b"connection") == [b"X-Hop"]


def test_upstream_pool_protocol_hands_the_connection_header_on():
    """The protocol of an UpstreamConnectionPool puts the Connection header back in response.headers."""
    factory = UpstreamConnectionPool(MemoryReactorClock(), 1024)._factory(lambda protocol: None, "endpoint")
    protocol = factory.buildProtocol(None)
    _, results = _clientExchange(protocol)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n")
    [response] = results
    assert response.headers.getRawHeaders(b"connection") == [b"X-Hop"]


def test_give_up_fails_the_pending_response_with_its_reason():
    """HTTP11ClientProtocol._giveUp(reason) closes the connection and fails the response with ResponseFailed([reason])."""
    protocol = client.HTTP11ClientProtocol()
    transport, results = _clientExchange(protocol)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nX-Many: 1\r\n")
    private(protocol, "_giveUp")(Failure(ResponseHeadTooLarge(10)))
    assert transport.disconnecting
    [failure] = results
    assert failure.check(client.ResponseFailed)
    assert [reason.type for reason in failure.value.reasons] == [ResponseHeadTooLarge]


def test_upstream_pool_protocol_caps_the_response_head():
    """A head past the pool's limit fails the response with ResponseHeadTooLarge, through _giveUp."""
    factory = UpstreamConnectionPool(MemoryReactorClock(), 1024)._factory(lambda protocol: None, "endpoint")
    protocol = factory.buildProtocol(None)
    transport, results = _clientExchange(protocol)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 200)
    [failure] = results
    assert [reason.type for reason in failure.value.reasons] == [ResponseHeadTooLarge]
    assert transport.disconnecting


@pytest.mark.parametrize(
    "data, private_name",
    [
        (b"HTTP/1.1 abc OK\r\n\r\n", "ParseError"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "_MalformedChunkedDataError"),
    ],
    ids=["status-line", "chunk-size"],
)
def test_malformed_responses_fail_with_the_errors_stproxy_names(data: bytes, private_name: str):
    """A bad status line fails with _newclient.ParseError, a bad chunk size with http._MalformedChunkedDataError."""
    module = _newclient if private_name == "ParseError" else http
    error = private(module, private_name)
    assert error in MALFORMED_RESPONSE
    protocol = client.HTTP11ClientProtocol()
    _, results = _clientExchange(protocol)
    protocol.dataReceived(data)
    [result] = results
    if isinstance(result, Failure):  # the status line: no response at all
        reasons = result.value.reasons
    else:  # the chunk size: a response whose body fails
        ended: list[Failure] = []

        class Body(Protocol):
            def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
                ended.append(reason)

        result.deliverBody(Body())
        reasons = ended[0].value.reasons
    assert reasons[0].check(error), reasons


class _HookedChannel(BadRequestHook, http.HTTPChannel):
    """A channel answering bad requests as stproxy's does: here, by counting them."""

    refused = 0

    def badRequest(self) -> None:
        self.refused += 1
        self.loseConnection()


@pytest.mark.parametrize(
    "data",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request-line", "field", "two-lengths", "chunk-size"],
)
def test_respond_to_bad_request_and_disconnect_is_how_bad_requests_are_answered(data: bytes):
    """HTTPChannel._respondToBadRequestAndDisconnect writes twisted.web's bare 400; BadRequestHook replaces it."""
    private(http.HTTPChannel, "_respondToBadRequestAndDisconnect")
    for channel, written, refused in [
        (http.HTTPChannel(), b"HTTP/1.1 400 Bad Request\r\n\r\n", 0),
        (_HookedChannel(), b"", 1),
    ]:
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(data)
        assert transport.value() == written, f"{type(channel).__name__} answered {transport.value()!r}"
        assert getattr(channel, "refused", 0) == refused, "_respondToBadRequestAndDisconnect was not called"


def test_chunk_remaining_reads_the_chunked_transfer_decoder():
    """HTTPChannel._transferDecoder is a _ChunkedTransferDecoder whose state and length tell the chunk's size."""
    decoderClass = private(http, "_ChunkedTransferDecoder")
    channel = http.HTTPChannel()
    channel.makeConnection(StringTransport())
    assert chunkRemaining(channel) is None
    channel.dataReceived(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(private(channel, "_transferDecoder"), decoderClass)
    assert chunkRemaining(channel) is None, "a chunk is reported before its size line"
    channel.dataReceived(b"100000000000000000000\r\n")
    assert chunkRemaining(channel) == 2**80, "the declared chunk size is not the decoder's length"
    channel.dataReceived(b"abc")
    assert chunkRemaining(channel) == 2**80 - 3, "the decoder's length is not what is left of the chunk"

    channel = http.HTTPChannel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc")
    assert chunkRemaining(channel) is None, "a chunk read whole is still reported"
    channel.dataReceived(b"\r\n0\r\n\r\n")
    assert private(channel, "_transferDecoder") is None
    assert chunkRemaining(channel) is None


class _CountingTransport(StringTransport):
    """A transport that counts how often it is paused and resumed (each an epoll_ctl on a socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.resumes += 1
        super().resumeProducing()


def _deliverTo(received: list[bytes]) -> Any:
    """A callback that asks for a response's body at once, into C{received}."""

    class Body(Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.append(data)

    def deliver(response: Any) -> Any:
        response.deliverBody(Body())
        return response

    return deliver


def test_response_pauses_and_resumes_the_connection_through_the_transport_proxy():
    """HTTP11ClientProtocol._transportProxy's _producer is the connection: the parser pauses it at the head, deliverBody resumes it."""
    protocol = client.HTTP11ClientProtocol()
    transport = _CountingTransport()
    protocol.makeConnection(transport)
    request = client.Request(b"GET", b"/", Headers({b"host": [b"example.com"]}), None)
    results: list[Any] = []
    protocol.request(request).addBoth(results.append)
    proxy = private(protocol, "_transportProxy")
    assert isinstance(proxy, private(_newclient, "TransportProxyProducer"))
    assert private(proxy, "_producer") is transport
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert (transport.pauses, transport.producerState) == (1, "paused"), "the parser no longer pauses"
    received: list[bytes] = []
    _deliverTo(received)(results[0])
    assert (transport.resumes, transport.producerState) == (1, "producing")
    assert received == [b"ab"]


def _upstreamExchange(onResponse: Any) -> tuple[Any, _CountingTransport, list[Any]]:
    """A protocol of an UpstreamConnectionPool with one GET sent over a counting transport."""
    factory = UpstreamConnectionPool(MemoryReactorClock(), 1024)._factory(lambda protocol: None, "endpoint")
    protocol = factory.buildProtocol(None)
    transport = _CountingTransport()
    protocol.makeConnection(transport)
    request = client.Request(b"GET", b"/", Headers({b"host": [b"example.com"]}), None)
    results: list[Any] = []
    protocol.request(request).addCallback(onResponse).addBoth(results.append)
    return protocol, transport, results


def test_upstream_pool_protocol_never_pauses_for_a_body_asked_for_at_once():
    """A body asked for as its head is read (as the proxy does): no pause and resume pair, the body whole."""
    received: list[bytes] = []
    protocol, transport, results = _upstreamExchange(_deliverTo(received))
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert transport.pauses == 0, "the pause Twisted's parser asks for reached the socket"
    assert transport.producerState == "producing"
    protocol.dataReceived(b"cde")
    assert received == [b"ab", b"cde"]
    assert results[0].code == 200


def test_upstream_pool_protocol_pauses_once_for_a_body_not_yet_asked_for():
    """A body nobody asked for yet: the connection is paused as the read ends, and resumed when it is asked for."""
    protocol, transport, results = _upstreamExchange(lambda response: response)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert (transport.pauses, transport.producerState) == (1, "paused")
    received: list[bytes] = []
    _deliverTo(received)(results[0])
    assert (transport.resumes, transport.producerState) == (1, "producing")
    protocol.dataReceived(b"cde")
    assert received == [b"ab", b"cde"]


def test_upstream_pool_protocol_leaves_a_finished_connection_reading():
    """A pause asked for in the read that ends the response (a slow browser) is not applied to the pooled connection."""
    bodies: list[Any] = []

    class SlowClient(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.pauseProducing()  # the browser's buffer is full

        def connectionLost(self, reason: Any) -> None:
            bodies.append(reason)

    def deliver(response: Any) -> Any:
        response.deliverBody(SlowClient())
        return response

    protocol, transport, results = _upstreamExchange(deliver)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert transport.producerState == "paused"
    private(protocol, "_transportProxy").resumeProducing()
    protocol.dataReceived(b"cde")  # the last bytes: paused again, and the response ends
    assert len(bodies) == 1, "the response did not end"
    assert transport.producerState == "producing", "the pooled connection was left paused"


def test_upstream_pool_protocol_pauses_at_once_outside_a_read():
    """A pause asked for between reads (a slow browser) reaches the connection at once."""
    received: list[bytes] = []
    protocol, transport, results = _upstreamExchange(_deliverTo(received))
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    bodyTransport = private(protocol, "_transportProxy")
    bodyTransport.pauseProducing()
    assert (transport.pauses, transport.producerState) == (1, "paused")
    bodyTransport.resumeProducing()
    assert (transport.resumes, transport.producerState) == (1, "producing")


def test_agent_request_with_endpoint_sends_the_parsed_uri_path():
    """Agent._requestWithEndpoint(key, endpoint, method, uri, headers, body, path) sends path over the pool (requestParsed)."""
    transport = StringTransport()

    class Endpoint:
        def connect(self, factory: Any) -> Deferred[Any]:
            protocol = factory.buildProtocol(None)
            protocol.makeConnection(transport)
            return succeed(protocol)

    pool = client.HTTPConnectionPool(MemoryReactorClock())
    agent = client.Agent(MemoryReactorClock(), pool=pool)
    assert callable(private(agent, "_requestWithEndpoint"))
    uri = client.URI(b"http", b"up:8501", b"up", 8501, b"/a?b=1", b"", b"", b"")
    headers = Headers({b"host": [b"up:8501"]})
    requestParsed(agent, Endpoint(), b"GET", uri, headers, None)  # type: ignore[arg-type]
    assert transport.value().startswith(b"GET /a?b=1 HTTP/1.1\r\n")
    assert b"\r\nHost: up:8501\r\n" in transport.value()
