"""
One request and its streamed response (stproxy.http.exchange) against a fake upstream agent:
status, headers and body as they arrive, backpressure, cancellation when the client leaves,
502 and 504 pages, and the idle timeout of a stalled exchange.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse

from fake_upstream import FakeResponse, Proxy
from stproxy.config import Timeouts


@pytest.fixture
def caplog_events() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_response_streams_through_with_headers_status_and_length() -> None:
    """
    The upstream's status, headers, Content-Length and body reach the client as they arrive,
    with no Content-Type added.
    """
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse(
        206,
        {b"Content-Range": [b"bytes 0-4/10"], b"Set-Cookie": [b"a=1", b"b=2"], b"Content-Encoding": [b"gzip"]},
        length=5,
        phrase=b"Some Bytes",
    )
    proxy.agent.requests[0].deferred.callback(response)
    response.protocol.dataReceived(b"he")
    assert proxy.output().endswith(b"\r\n\r\nhe")
    response.protocol.dataReceived(b"llo")
    response.protocol.connectionLost(Failure(ResponseDone()))
    head, body = proxy.output().split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 206 Some Bytes"
    assert b"Content-Length: 5" in lines
    assert b"Set-Cookie: a=1" in lines and b"Set-Cookie: b=2" in lines
    assert b"Content-Encoding: gzip" in lines
    assert not any(line.lower().startswith(b"content-type") for line in lines)
    assert body == b"hello"


def test_unknown_length_is_chunked_to_the_client() -> None:
    """A response of unknown length is sent to the client chunked."""
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0].deferred.callback(response)
    response.protocol.dataReceived(b"abc")
    response.protocol.connectionLost(Failure(ResponseDone()))
    assert proxy.output().endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


def test_head_keeps_the_upstream_content_length() -> None:
    """A HEAD response keeps the upstream's Content-Length and sends no body."""
    proxy = Proxy()
    proxy.send(b"HEAD /app.js HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse(200, {b"Content-Length": [b"1234"]}, length=0)
    proxy.agent.requests[0].deferred.callback(response)
    response.protocol.connectionLost(Failure(ResponseDone()))
    head, body = proxy.output().split(b"\r\n\r\n", 1)
    assert b"Content-Length: 1234" in head.split(b"\r\n")
    assert body == b""


def test_slow_client_pauses_the_upstream_read() -> None:
    """Backpressure: the client connection's pause and resume reach the upstream body."""
    proxy = Proxy()
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0].deferred.callback(response)
    proxy.transport.producer.pauseProducing()
    assert response.transport.paused
    proxy.transport.producer.resumeProducing()
    assert not response.transport.paused


def test_client_leaving_mid_body_closes_the_upstream_connection() -> None:
    """
    A client that disconnects in the middle of a response body gets the upstream connection
    closed too.
    """
    proxy = Proxy()
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0].deferred.callback(response)
    response.protocol.dataReceived(b"x" * 100)
    proxy.disconnect()
    assert response.transport.stopped


def test_client_leaving_before_the_response_cancels_the_request() -> None:
    """A client that disconnects before the upstream answers gets the upstream request cancelled."""
    proxy = Proxy()
    proxy.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.disconnect()
    assert proxy.agent.requests[0].cancelled


@pytest.mark.parametrize(
    "error, reason",
    [(ConnectionRefusedError(), b"Connection was refused"), (DNSLookupError(), b"host name not found")],
)
def test_unreachable_upstream_gives_502_naming_it_and_one_log_line(
    error: Exception, reason: bytes, caplog_events: list[dict[str, Any]]
) -> None:
    """
    An upstream that refuses connections or whose name does not resolve gives a 502 naming it
    and the reason, and one error log line.
    """
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.agent.requests[0].deferred.errback(Failure(error))
    output = proxy.output()
    assert output.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"http://127.0.0.1:8501" in output and reason in output
    errors = [e for e in caplog_events if e.get("status") == 502]
    assert len(errors) == 1 and errors[0]["upstream"] == "http://127.0.0.1:8501"


def test_an_agent_that_raises_at_once_gives_502() -> None:
    """Errors the HTTP client raises synchronously still become a 502 page, not a 500."""
    proxy = Proxy()

    def refuse(*args: Any, **kwargs: Any) -> Deferred[IResponse]:
        raise ValueError("Invalid URI")

    proxy.agent.request = refuse  # type: ignore[method-assign]
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 502 ")


def test_silent_upstream_gives_504_after_the_response_timeout() -> None:
    """
    An upstream that sends no response headers within --upstream-timeout gets its request
    cancelled and the client a 504.
    """
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
    proxy.clock.advance(6.9)
    assert proxy.output() == b""
    proxy.clock.advance(0.2)
    assert proxy.agent.requests[0].cancelled
    assert proxy.output().startswith(b"HTTP/1.1 504 ")


def test_an_upstream_that_stalls_mid_body_is_cut_off_after_the_timeout() -> None:
    """Nothing moving for --upstream-timeout ends the exchange: both connections are released."""
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse(length=100)
    proxy.agent.requests[0].deferred.callback(response)
    for _ in range(3):  # progress keeps it alive past the timeout
        proxy.clock.advance(5)
        response.protocol.dataReceived(b"x" * 10)
    assert not response.transport.stopped and not proxy.transport.disconnected
    proxy.clock.advance(7)
    assert response.transport.stopped
    assert proxy.transport.disconnected


def test_a_client_that_stops_reading_is_dropped_after_the_timeout() -> None:
    """
    A client that reads nothing for --upstream-timeout is disconnected and the upstream
    connection closed, the clock restarting whenever it reads.
    """
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0].deferred.callback(response)
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
    """Once a response is complete, no timer of the exchange is left running."""
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    response = FakeResponse()
    proxy.agent.requests[0].deferred.callback(response)
    response.protocol.dataReceived(b"abc")
    response.protocol.connectionLost(Failure(ResponseDone()))
    calls = [c for c in proxy.clock.getDelayedCalls() if c.active()]
    assert [c for c in calls if "TimeoutMixin" not in repr(c)] == []  # only the channel's own
