"""
One request and its streamed response (stproxy.http.exchange) against a fake upstream agent:
status, headers and body as they arrive, backpressure, cancellation when the client leaves,
502 and 504 pages, the idle timeout of a stalled exchange, and what the client gets when the
upstream answers badly or breaks off.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, DNSLookupError
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from fake_upstream import FakeResponse, Proxy
from stproxy._twisted import ResponseHeadTooLarge
from stproxy.config import Timeouts
from stproxy.ops.metrics import Metrics

GET = b"GET /page HTTP/1.1\r\nHost: app\r\n\r\n"
UPSTREAM = "http://127.0.0.1:8501"


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
    assert lines[0] == b"HTTP/1.1 206 Partial Content"
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
    assert [c for c in calls if "RequestTimer" not in repr(c)] == []  # only the channel's own


def errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exchange's log events about an upstream at fault: one per failed request."""
    return [e for e in events if e.get("upstream") == UPSTREAM]


def counted(metrics: Metrics, statusClass: str) -> float | None:
    """How many GETs the metrics counted with responses of C{statusClass}."""
    return metrics.registry.get_sample_value(
        "stproxy_http_requests_total", {"method": "GET", "status_class": statusClass}
    )


@pytest.mark.parametrize(
    "code, phrase, expected",
    [
        (200, b"OK\rSet-Cookie: evil=1", b"HTTP/1.1 200 OK"),
        (404, b"Whatever You Like", b"HTTP/1.1 404 Not Found"),
        (299, b"Fine", b"HTTP/1.1 299 Unknown Status"),
    ],
    ids=["bare-cr", "custom", "unregistered-code"],
)
def test_the_upstreams_reason_phrase_never_reaches_the_client(code: int, phrase: bytes, expected: bytes) -> None:
    """The status line carries Twisted's standard phrase for the code, whatever phrase the upstream sent."""
    proxy = Proxy()
    proxy.send(GET)
    proxy.agent.requests[0].respond(code, phrase=phrase, length=0).finish()
    head = proxy.output().split(b"\r\n\r\n", 1)[0]
    assert head.split(b"\r\n")[0] == expected
    assert b"evil" not in head and b"Whatever" not in head and b"Fine" not in head


@pytest.mark.parametrize("code", [0, 1, 99, 100, 101, 199, 600, 999, 9999, -200])
def test_a_status_outside_200_to_599_gives_502_and_one_log_line(
    code: int, caplog_events: list[dict[str, Any]]
) -> None:
    """A response whose status is not a final HTTP status is never passed on: 502, its connection closed."""
    proxy = Proxy()
    proxy.send(GET)
    response = proxy.agent.requests[0].respond(code, headers={b"Set-Cookie": [b"evil=1"]})
    output = proxy.output()
    assert output.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"evil" not in output
    assert response.transport.stopped
    [event] = errors(caplog_events)
    assert event["status"] == 502 and str(code) in event["reason"]


@pytest.mark.parametrize(
    "headers, status",
    [
        ({b"X-H%d" % i: [b"v"] for i in range(500)}, b"200"),
        ({b"X-H%d" % i: [b"v"] for i in range(501)}, b"502"),
        ({b"Set-Cookie": [b"c=%d" % i for i in range(501)]}, b"502"),
    ],
    ids=["500-fields", "501-fields", "501-repeats"],
)
def test_more_than_500_response_header_fields_give_502(headers: dict[bytes, list[bytes]], status: bytes) -> None:
    """An upstream response with over 500 header fields, repeats counted, is answered with a 502."""
    proxy = Proxy()
    proxy.send(GET)
    response = proxy.agent.requests[0].respond(200, headers=Headers(headers), length=0)
    response.finish()
    assert proxy.output().startswith(b"HTTP/1.1 " + status + b" ")
    assert response.transport.stopped == (status == b"502")


def test_a_response_head_over_the_limit_gives_502_naming_the_limit(caplog_events: list[dict[str, Any]]) -> None:
    """The HTTP client failing a response for its oversized head gives a 502 saying so, not "could not be reached"."""
    proxy = Proxy()
    proxy.send(GET)
    proxy.agent.requests[0].deferred.errback(Failure(ResponseFailed([Failure(ResponseHeadTooLarge(65536))])))
    output = proxy.output()
    assert output.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"sent an invalid response (response head over 65536 bytes)" in output
    [event] = errors(caplog_events)
    assert event["what"] == "sent an invalid response"


def test_a_body_that_breaks_before_its_first_byte_gives_502(caplog_events: list[dict[str, Any]]) -> None:
    """
    An upstream whose body breaks before any of it arrived gets the client a 502 page, not an
    empty reply, and is logged and counted as a 502, not as a client that went away (499).
    """
    metrics = Metrics()
    proxy = Proxy(metrics=metrics)
    proxy.send(GET)
    response = proxy.agent.requests[0].respond(200, headers={b"Set-Cookie": [b"a=1"]}, length=10)
    response.breakOff(ConnectionLost())
    output = proxy.output()
    assert output.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Set-Cookie" not in output and b"Content-Length: 10\r\n" not in output
    assert b"broke off its response (connection lost: " in output
    assert not proxy.transport.disconnecting  # a complete answer: the connection stays usable
    [event] = errors(caplog_events)
    assert (event["status"], event["what"]) == (502, "broke off its response")
    assert (counted(metrics, "5xx"), counted(metrics, "4xx")) == (1, None)


def test_a_body_that_breaks_after_bytes_were_sent_cuts_the_client_off(caplog_events: list[dict[str, Any]]) -> None:
    """Once body bytes went out the client connection is closed, a visibly truncated body, and the upstream blamed."""
    proxy = Proxy()
    proxy.send(GET)
    response = proxy.agent.requests[0].respond(200, length=10)
    response.deliver(b"abc")
    response.breakOff(ConnectionLost())
    assert proxy.output().endswith(b"\r\n\r\nabc")
    assert proxy.transport.disconnecting
    [event] = errors(caplog_events)
    assert event["sent"] == 3 and event["reason"].startswith("connection lost: ")


def test_an_upstream_silent_after_its_headers_gives_504(caplog_events: list[dict[str, Any]]) -> None:
    """Response headers followed by nothing for --upstream-timeout get the client a 504 page, not a dropped connection."""
    proxy = Proxy(timeouts=Timeouts(connect=1, response=7))
    proxy.send(GET)
    response = proxy.agent.requests[0].respond(200, length=100)
    proxy.clock.advance(7)
    assert proxy.output().startswith(b"HTTP/1.1 504 ")
    assert b"<h1>Gateway Timeout</h1>" in proxy.output()
    assert response.transport.stopped
    assert not proxy.transport.disconnecting
    [event] = errors(caplog_events)
    assert event["what"] == "sent nothing after the response headers"
