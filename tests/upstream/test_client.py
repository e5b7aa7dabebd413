"""
The HTTP client that reaches the upstream (stproxy.upstream.client), on its real pool and
Twisted's real HTTP client protocol, fed raw response bytes over a StringTransport: what it
accepts as a response, what it refuses, and what it hands on.
"""

from __future__ import annotations

from typing import Any

import pytest
from fake_resolver import FakeResolver
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource

from stproxy._twisted import MALFORMED_RESPONSE, ResponseHeadTooLarge
from stproxy.http.forward import ReverseProxyResource
from stproxy.http.headers import TrustedProxies, responseHeadersForClient
from stproxy.http.site import buildSite
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import (
    MAX_RESPONSE_HEAD,
    POOLED_IDLE_CONNECTIONS,
    InvalidResponse,
    Upstream,
)


class Exchange:
    """One request through an L{Upstream} on a memory reactor, its connection a StringTransport."""

    def __init__(self, method: bytes = b"GET") -> None:
        self.clock = MemoryReactorClock()
        self.upstream = Upstream(self.clock, UpstreamAddress("http", "127.0.0.1", 8501))
        self.results: list[IResponse | Failure] = []
        d = self.upstream.request(method, b"/page", Headers({b"Host": [b"app"]}), None)
        d.addBoth(self.results.append)
        host, port, factory, _, _ = self.clock.tcpClients[0]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def receive(self, data: bytes, size: int | None = None) -> None:
        """The upstream sends C{data}, in reads of C{size} bytes (all at once by default)."""
        size = size or len(data)
        for start in range(0, len(data), size):
            self.protocol.dataReceived(data[start : start + size])

    def response(self) -> IResponse:
        [result] = self.results
        assert not isinstance(result, Failure), result
        return result

    def failure(self) -> Failure:
        [result] = self.results
        assert isinstance(result, Failure), result
        return result


def head(*lines: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def test_a_field_the_upstreams_connection_header_names_does_not_reach_the_client() -> None:
    """A response field listed in the upstream's Connection header is hop-by-hop and is not passed on."""
    exchange = Exchange()
    exchange.receive(
        head(b"HTTP/1.1 200 OK", b"Connection: X-Hop, x-other", b"X-Hop: secret", b"X-Other: 1", b"X-Kept: yes", b"Content-Length: 0")
    )
    sent = responseHeadersForClient(exchange.response().headers)
    assert [name.lower() for name, _ in sent.getAllRawHeaders()] == [b"x-kept"]


def test_connection_close_still_closes_the_upstream_connection() -> None:
    """Handing the Connection header on does not change Twisted's own use of it: close still closes."""
    exchange = Exchange()
    exchange.receive(head(b"HTTP/1.1 200 OK", b"Connection: close", b"Content-Length: 0"))
    assert exchange.response().code == 200
    assert exchange.transport.disconnecting


@pytest.mark.parametrize("read", [None, 1000, 7], ids=["one-read", "1000-byte-reads", "7-byte-reads"])
def test_a_response_head_over_64_kib_fails_and_closes_the_connection(read: int | None) -> None:
    """10,000 header fields (over 64 KiB) fail the response however they arrive, and the connection is closed."""
    exchange = Exchange()
    fields = [b"X-Header-%05d: some value" % i for i in range(10_000)]
    exchange.receive(head(b"HTTP/1.1 200 OK", *fields, b"Content-Length: 0"), read)
    failure = exchange.failure()
    assert failure.check(ResponseFailed)
    [reason] = failure.value.reasons
    assert reason.check(ResponseHeadTooLarge) and reason.check(*MALFORMED_RESPONSE)
    assert exchange.transport.disconnecting


@pytest.mark.parametrize("size, accepted", [(MAX_RESPONSE_HEAD, True), (MAX_RESPONSE_HEAD + 1, False)])
def test_the_response_head_limit_is_exactly_64_kib(size: int, accepted: bool) -> None:
    """A head of exactly 64 KiB (status line to blank line) is read; one byte more is not."""
    exchange = Exchange()
    start, end = b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n"
    pad = b"X-Pad: " + b"p" * 1000 + b"\r\n"  # no line over Twisted's 16 KiB line limit
    lines, rest = divmod(size - len(start) - len(end), len(pad))
    data = start + pad * lines + b"X-Rest: " + b"r" * (rest - 10) + b"\r\n" + end
    assert len(data) == size
    exchange.receive(data + b"hi")
    assert bool(exchange.results and not isinstance(exchange.results[0], Failure)) is accepted


def test_the_body_after_a_head_under_the_limit_is_not_counted() -> None:
    """A body much larger than the head limit, arriving in the same reads as the head, is read as a body."""
    exchange = Exchange()
    body = b"x" * (3 * MAX_RESPONSE_HEAD)
    exchange.receive(head(b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body)) + body, 50_000)
    received: list[bytes] = []
    response = exchange.response()

    class Collect:
        def makeConnection(self, transport: Any) -> None:
            pass

        def dataReceived(self, data: bytes) -> None:
            received.append(data)

        def connectionLost(self, reason: Failure) -> None:
            received.append(b"<end>")

    response.deliverBody(Collect())  # type: ignore[arg-type]
    assert b"".join(received) == body + b"<end>"


@pytest.mark.parametrize(
    "statusLine",
    [b"HTTP/1.1 9999 Weird", b"HTTP/1.1 0", b"HTTP/1.1 600 Too Far", b"HTTP/1.1 -1 Negative"],
)
def test_a_status_outside_200_to_599_fails_and_closes_the_connection(statusLine: bytes) -> None:
    """A response whose status is no final HTTP status fails with InvalidResponse; its connection is not reused."""
    exchange = Exchange()
    exchange.receive(head(statusLine, b"Content-Length: 5") + b"hello")
    assert exchange.failure().check(InvalidResponse)
    assert exchange.transport.disconnecting


def test_a_status_line_that_is_not_http_fails_as_malformed() -> None:
    """A status line whose code is not a number fails the response as one the upstream got wrong."""
    exchange = Exchange()
    exchange.receive(head(b"HTTP/1.1 abc OK", b"Content-Length: 0"))
    failure = exchange.failure()
    assert failure.check(ResponseFailed)
    assert failure.value.reasons[0].check(*MALFORMED_RESPONSE)


def test_interim_responses_are_read_past() -> None:
    """A 1xx before the final response is Twisted's to skip: the final one is what comes out."""
    exchange = Exchange()
    exchange.receive(head(b"HTTP/1.1 103 Early Hints", b"Link: </a.css>") + head(b"HTTP/1.1 204 No Content"))
    assert exchange.response().code == 204


class RecordingPolicy:
    """The browser-like TLS policy, recording whom each connection is checked for."""

    def __init__(self) -> None:
        self.netlocs: list[tuple[bytes, int]] = []
        self._policy = BrowserLikePolicyForHTTPS()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        self.netlocs.append((hostname, port))
        return self._policy.creatorForNetloc(hostname, port)


def test_an_https_upstream_is_reached_by_address_but_checked_for_its_name() -> None:
    """Both legs connect to the looked-up address, while SNI and the certificate check are for the host name."""
    clock = MemoryReactorClock()
    resolver = FakeResolver()
    policy = RecordingPolicy()
    upstream = Upstream(clock, UpstreamAddress("https", "app.example", 8443), tlsPolicy=policy, resolver=resolver)  # type: ignore[arg-type]
    upstream.request(b"GET", b"/", Headers({b"Host": [b"app.example"]}), None)
    resolver.answer("10.0.0.7")
    upstream.endpoint().connect(Factory.forProtocol(Protocol))
    assert [(host, port) for host, port, *_ in clock.tcpClients] == [("10.0.0.7", 8443)] * 2
    assert policy.netlocs == [(b"app.example", 8443)] * 2
    assert len(resolver.lookups) == 0


def test_a_name_that_does_not_resolve_is_a_502_saying_so() -> None:
    """A request to an upstream whose name has no address is answered 502, the page saying the host name was not found."""
    clock = MemoryReactorClock()
    resolver = FakeResolver()
    upstream = Upstream(clock, UpstreamAddress("http", "nowhere.invalid", 8501), resolver=resolver)
    site = buildSite(ReverseProxyResource(upstream, TrustedProxies()), Resource(), clock, 0, None)
    protocol = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    resolver.answer()
    assert transport.value().startswith(b"HTTP/1.1 502 ")
    assert b"host name not found" in transport.value()


def test_the_pool_keeps_a_connection_for_each_of_64_concurrent_requests() -> None:
    """After 64 requests at once, the next 64 all reuse those connections: none opens a new one."""
    clock = MemoryReactorClock()
    upstream = Upstream(clock, UpstreamAddress("http", "127.0.0.1", 8501))
    assert POOLED_IDLE_CONNECTIONS >= 64

    def requests() -> list[IResponse | Failure]:
        results: list[IResponse | Failure] = []
        for _ in range(64):
            upstream.request(b"GET", b"/", Headers({b"Host": [b"app"]}), None).addBoth(results.append)
        return results

    first = requests()
    for host, port, factory, _, _ in clock.tcpClients:
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(head(b"HTTP/1.1 200 OK", b"Content-Length: 0"))
    assert [getattr(r, "code", r) for r in first] == [200] * 64
    second = requests()
    assert len(clock.tcpClients) == 64
    assert second == []  # waiting on the reused connections' responses, not on new ones
