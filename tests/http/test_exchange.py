"""
The HTTP leg (stproxy.http.forward and stproxy.http.site) against a fake upstream agent,
with raw HTTP bytes in and out of a StringTransport: refusals, errors,
cancellation and backpressure, which real sockets reach only slowly or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from twisted.web.resource import Resource
from zope.interface import implementer

from stproxy.http.accesslog import Accounting
from stproxy.ops.drain import Drain
from stproxy.http.headers import TrustedProxies
from stproxy.http.forward import ReverseProxyResource
from stproxy.ops.metrics import Metrics
from stproxy.http.site import buildSite
from stproxy.config import Timeouts
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream

UPSTREAM = UpstreamAddress("http", "127.0.0.1", 8501)


@pytest.fixture
def caplog_events() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


class BodyTransport:
    """The transport an upstream response body is delivered over: records flow control."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IResponse)
class FakeResponse:
    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(self, code: int = 200, headers: dict[bytes, list[bytes]] | None = None, length: Any = UNKNOWN_LENGTH) -> None:
        self.code = code
        self.phrase = b"OK"
        self.headers = Headers(headers or {})
        self.length = length
        self.transport = BodyTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def setPreviousResponse(self, response: Any) -> None:
        pass


@implementer(IAgent)
class FakeAgent:
    """Records each request and leaves its answer to the test."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred[IResponse]:
        entry: dict[str, Any] = {"method": method, "uri": uri, "headers": headers, "body": bodyProducer, "cancelled": False}
        entry["deferred"] = Deferred(lambda d: entry.__setitem__("cancelled", True))
        self.requests.append(entry)
        return entry["deferred"]


class Proxy:
    """A ProxySite over a fake agent, fed raw bytes as one client connection."""

    def __init__(
        self, maxBodySize: int = 0, timeouts: Timeouts = Timeouts(), metrics: Metrics | None = None
    ) -> None:
        """@param metrics: instrument the site (a L{Drain} and these metrics), as the service does."""
        self.clock = MemoryReactorClock()
        self.agent = FakeAgent()
        self.upstream = Upstream(self.clock, UPSTREAM, timeouts, agent=self.agent)
        self.site = buildSite(
            ReverseProxyResource(self.upstream, TrustedProxies()), Resource(), self.clock, maxBodySize, None
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


def test_request_goes_upstream_with_target_method_and_host_intact() -> None:
    proxy = Proxy()
    proxy.send(b"GET /media/x.png?a=1&b=%7C HTTP/1.1\r\nHost: app.example:8500\r\nConnection: keep-alive\r\n\r\n")
    [sent] = proxy.agent.requests
    assert sent["method"] == b"GET"
    assert sent["uri"] == b"http://127.0.0.1:8501/media/x.png?a=1&b=%7C"
    assert sent["headers"].getRawHeaders(b"host") == [b"app.example:8500"]
    assert sent["headers"].getRawHeaders(b"x-forwarded-for") == [b"192.0.2.7"]
    assert not sent["headers"].hasHeader(b"connection")
    assert sent["body"] is None


@pytest.mark.parametrize(
    "request_line, status",
    [
        (b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example", b"400"),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443", b"405"),
        (b"TRACE / HTTP/1.1\r\nHost: app", b"405"),
        (b"OPTIONS * HTTP/1.1\r\nHost: app", b"200"),  # answered by twisted.web itself
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", b"400"),
        (b"GET / HTTP/1.1", b"400"),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b", b"400"),
    ],
)
def test_stproxy_is_never_an_open_proxy(request_line: bytes, status: bytes) -> None:
    """Absolute-form targets, tunnels and ambiguous hosts are refused and never forwarded."""
    proxy = Proxy()
    proxy.send(request_line + b"\r\n\r\n")
    assert proxy.output().split(b" ", 2)[1] == status
    assert proxy.agent.requests == []


def test_response_streams_through_with_headers_status_and_length() -> None:
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse(
        206,
        {b"Content-Range": [b"bytes 0-4/10"], b"Set-Cookie": [b"a=1", b"b=2"], b"Content-Encoding": [b"gzip"]},
        length=5,
    )
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.dataReceived(b"he")
    assert proxy.output().endswith(b"\r\n\r\nhe")
    response.protocol.dataReceived(b"llo")
    response.protocol.connectionLost(Failure(ResponseDone()))
    head, body = proxy.output().split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 206 OK"
    assert b"Content-Length: 5" in lines
    assert b"Set-Cookie: a=1" in lines and b"Set-Cookie: b=2" in lines
    assert b"Content-Encoding: gzip" in lines
    assert not any(line.lower().startswith(b"content-type") for line in lines)
    assert body == b"hello"


def test_unknown_length_is_chunked_to_the_client() -> None:
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.dataReceived(b"abc")
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert proxy.output().endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


def test_head_keeps_the_upstream_content_length() -> None:
    proxy = Proxy()
    proxy.send(b"HEAD /app.js HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse(200, {b"Content-Length": [b"1234"]}, length=0)
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.connectionLost(Failure(ResponseDone()))
    head, body = proxy.output().split(b"\r\n\r\n", 1)
    assert b"Content-Length: 1234" in head.split(b"\r\n")
    assert body == b""


def test_slow_client_pauses_the_upstream_read() -> None:
    """Backpressure: the client connection's pause and resume reach the upstream body."""
    proxy = Proxy()
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0]["deferred"].callback(response)
    proxy.transport.producer.pauseProducing()
    assert response.transport.paused
    proxy.transport.producer.resumeProducing()
    assert not response.transport.paused


def test_client_leaving_mid_body_closes_the_upstream_connection() -> None:
    proxy = Proxy()
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.dataReceived(b"x" * 100)
    proxy.disconnect()
    assert response.transport.stopped


def test_client_leaving_before_the_response_cancels_the_request() -> None:
    proxy = Proxy()
    proxy.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.disconnect()
    assert proxy.agent.requests[0]["cancelled"]


@pytest.mark.parametrize(
    "error, reason",
    [(ConnectionRefusedError(), b"Connection was refused"), (DNSLookupError(), b"host name not found")],
)
def test_unreachable_upstream_gives_502_naming_it_and_one_log_line(
    error: Exception, reason: bytes, caplog_events: list[dict[str, Any]]
) -> None:
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.agent.requests[0]["deferred"].errback(Failure(error))
    output = proxy.output()
    assert output.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"http://127.0.0.1:8501" in output and reason in output
    errors = [e for e in caplog_events if e.get("status") == 502]
    assert len(errors) == 1 and errors[0]["upstream"] == "http://127.0.0.1:8501"


def test_silent_upstream_gives_504_after_the_response_timeout() -> None:
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.clock.advance(6.9)
    assert proxy.output() == b""
    proxy.clock.advance(0.2)
    assert proxy.agent.requests[0]["cancelled"]
    assert proxy.output().startswith(b"HTTP/1.1 504 ")


def test_body_is_forwarded_from_the_spooled_content() -> None:
    proxy = Proxy()
    proxy.send(b"PUT /_stcore/upload_file/s/f HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello")
    [sent] = proxy.agent.requests
    assert sent["body"].length == 5
    assert not sent["headers"].hasHeader(b"content-length")


def test_declared_body_over_the_limit_is_refused_with_413_before_reading() -> None:
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
    assert proxy.transport.disconnecting
    assert proxy.agent.requests == []


def test_chunked_body_crossing_the_limit_is_refused_with_413() -> None:
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n")
    assert proxy.output() == b""
    proxy.send(b"8\r\n12345678\r\n0\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
    assert proxy.agent.requests == []


def test_an_upstream_that_stalls_mid_body_is_cut_off_after_the_timeout() -> None:
    """Nothing moving for --upstream-timeout ends the exchange: both connections are released."""
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse(length=100)
    proxy.agent.requests[0]["deferred"].callback(response)
    for _ in range(3):  # progress keeps it alive past the timeout
        proxy.clock.advance(5)
        response.protocol.dataReceived(b"x" * 10)
    assert not response.transport.stopped and not proxy.transport.disconnected
    proxy.clock.advance(7)
    assert response.transport.stopped
    assert proxy.transport.disconnected


def test_a_client_that_stops_reading_is_dropped_after_the_timeout() -> None:
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.dataReceived(b"x" * 10)
    proxy.transport.producer.pauseProducing()
    proxy.clock.advance(6)
    proxy.transport.producer.resumeProducing()  # it read a little: the clock restarts
    proxy.transport.producer.pauseProducing()
    proxy.clock.advance(6)
    assert not proxy.transport.disconnected
    proxy.clock.advance(1)
    assert response.transport.stopped and proxy.transport.disconnected


def test_a_finished_response_leaves_no_timer_behind() -> None:
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.dataReceived(b"abc")
    response.protocol.connectionLost(Failure(ResponseDone()))
    calls = [c for c in proxy.clock.getDelayedCalls() if c.active()]
    assert [c for c in calls if "TimeoutMixin" not in repr(c)] == []  # only the channel's own


@pytest.mark.parametrize("target", [b"/echo?q=\x7f", b"/a\x01b", b"/caf\xc3\xa9"])
def test_targets_with_bytes_a_uri_cannot_hold_get_400_not_a_traceback(target: bytes) -> None:
    proxy = Proxy()
    proxy.send(b"GET " + target + b" HTTP/1.1\r\nHost: app\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 400 ")
    assert proxy.agent.requests == []


def test_an_agent_that_raises_at_once_gives_502() -> None:
    """Errors the HTTP client raises synchronously still become a 502 page, not a 500."""
    proxy = Proxy()

    def refuse(*args: Any, **kwargs: Any) -> Deferred[IResponse]:
        raise ValueError("Invalid URI")

    proxy.agent.request = refuse  # type: ignore[method-assign]
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 502 ")


def test_a_refused_body_gets_its_413_and_no_stray_100_continue() -> None:
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in proxy.output()


def test_a_request_abandoned_before_any_answer_is_logged_and_counted_as_499(tmp_path: Path) -> None:
    """nginx's convention: the access log and the metrics show the client gave up."""
    metrics = Metrics()
    proxy = Proxy(metrics=metrics)
    logPath = tmp_path / "access.log"
    proxy.site.logPath = str(logPath)
    proxy.site.startFactory()
    proxy.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.disconnect()
    proxy.site.stopFactory()
    assert '"GET /slow HTTP/1.1" 499 ' in logPath.read_text()
    assert metrics.registry.get_sample_value(
        "stproxy_http_requests_total", {"method": "GET", "status_class": "4xx"}
    ) == 1


def test_shutdown_waits_for_a_request_whose_body_is_still_arriving() -> None:
    """An upload half sent when the drain starts is finished and answered, then the connection closes."""
    proxy = Proxy(metrics=Metrics())
    drain = proxy.drain
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nhello")
    drained = drain.drain(30)
    assert not drained.called and not proxy.transport.disconnecting
    proxy.send(b"world")
    response = FakeResponse(length=2)
    proxy.agent.requests[0]["deferred"].callback(response)
    response.protocol.dataReceived(b"ok")
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert proxy.output().endswith(b"\r\n\r\nok")
    assert drained.called
    assert proxy.transport.disconnecting


def test_an_http_1_0_request_without_host_goes_upstream_with_the_upstreams_name() -> None:
    """HTTP/1.0 makes Host optional: health checkers (HAProxy's httpchk) send none."""
    proxy = Proxy()
    proxy.send(b"OPTIONS / HTTP/1.0\r\n\r\n")
    [sent] = proxy.agent.requests
    assert sent["headers"].getRawHeaders(b"host") == [b"127.0.0.1:8501"]
    assert not sent["headers"].hasHeader(b"x-forwarded-host")
