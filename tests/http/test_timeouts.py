"""
Slow clients (stproxy.http.timeouts, through stproxy.http.channel): a request head gets
--header-timeout from its first byte however its bytes trickle in, a body must keep up
--min-body-rate, a kept-alive connection waits --idle-timeout for its next request; and nothing
of that touches a request being answered or a connection handed to the WebSocket relay.
Every clock here is a MemoryReactorClock the test advances.
"""

from __future__ import annotations

from twisted.web.server import NOT_DONE_YET, Request

from site_connection import Connection, Server, parse
from stproxy.config import ClientLimits
from stproxy.http.linger import LINGER_SECONDS
from stproxy.http.timeouts import ABORT_TIMEOUT

LIMITS = ClientLimits(headerTimeout=30, idleTimeout=75, minBodyRate=1024)

HEAD = b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n"


def assert408(client: Connection) -> None:
    """The client got one 408 text answer that closes the connection, closed once the lingering ends."""
    assert client.output().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    [answer] = parse(client.output())
    assert answer.header(b"connection") == b"close"
    assert answer.header(b"content-type") == b"text/plain; charset=utf-8"


def timers(server: Server) -> list[str]:
    """The channel timers pending on the server's clock."""
    return [repr(c) for c in server.clock.getDelayedCalls() if c.active() and "RequestTimer" in repr(c)]


def test_a_head_trickling_in_gets_408_at_the_header_timeout() -> None:
    """A head sent a byte every 5 s is answered 408 at 30 s: bytes no longer buy time (slowloris)."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(b"GET / HTTP/1.1\r\nHost: app.example\r\n")
    for _ in range(5):
        server.clock.advance(5)
        client.send(b"X")
    server.clock.advance(4.9)
    assert client.output() == b"" and not client.closed
    server.clock.advance(0.1)
    assert408(client)
    assert server.http.requests == []
    assert server.counted("GET", "4xx") == 1
    server.clock.advance(LINGER_SECONDS)
    assert client.closed


def test_the_first_head_is_timed_from_the_connection() -> None:
    """The first request's head has 30 s from the connection's opening, not from its first byte."""
    server = Server(limits=LIMITS)
    client = server.connect()
    server.clock.advance(20)
    client.send(b"GET /sl")
    server.clock.advance(10)
    assert408(client)
    [event] = server.events
    assert (event["status"], event["path"]) == (408, "-")  # the request line never ended


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    """A connection silent for the header timeout (a browser's preconnect) is closed, with no 408 and nothing counted."""
    server = Server(limits=LIMITS)
    client = server.connect()
    server.clock.advance(29.9)
    assert not client.closed
    server.clock.advance(0.1)
    assert client.closed and client.output() == b""
    assert server.events == []


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    """After a response, the connection waits 75 s for the next request, then closes without a word."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(HEAD)
    answered = client.output()
    server.clock.advance(74.9)
    assert not client.closed
    server.clock.advance(0.1)
    assert client.closed and client.output() == answered


def test_an_idle_connection_that_does_not_go_is_aborted() -> None:
    """An idle connection closed but still there (its client reads nothing) is aborted 15 s later."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(HEAD)
    server.clock.advance(75)
    assert client.closed and not client.transport.disconnected
    server.clock.advance(ABORT_TIMEOUT)
    assert client.transport.disconnected


def test_twisted_webs_own_60_s_timer_is_off() -> None:
    """With --idle-timeout 120 a connection idle for 61 s stays open: twisted.web's 60 s timer no longer runs."""
    server = Server(limits=ClientLimits(idleTimeout=120))
    client = server.connect()
    client.send(HEAD)
    server.clock.advance(61)
    assert not client.closed
    server.clock.advance(59)
    assert client.closed


def test_a_later_head_is_timed_from_its_first_byte() -> None:
    """On a kept-alive connection the next head gets its 30 s from its own first byte."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(HEAD)
    server.clock.advance(70)
    client.send(b"GET /second HTTP/1.1\r\n")
    server.clock.advance(29.9)
    assert not client.closed
    server.clock.advance(0.1)
    answers = parse(client.output())
    assert [a.status for a in answers] == [200, 408]
    assert server.events[-1]["path"] == "/second"


def test_a_complete_head_in_time_is_served() -> None:
    """A head that takes 29 s to arrive is served, and the connection waits for the next one."""
    server = Server(limits=LIMITS)
    client = server.connect()
    for piece in (b"GET / HTTP/1.1\r\n", b"Host: app.example\r\n", b"\r\n"):
        client.send(piece)
        server.clock.advance(9.5)
    assert [a.status for a in parse(client.output())] == [200]
    assert not client.closed


def post(length: int) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\n\r\n" % (length,)


def test_a_trickling_body_gets_408() -> None:
    """A body arriving at 10 bytes/s, under the 1 KB/s minimum, is answered 408 at the end of its first window."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(post(100_000))
    for _ in range(29):
        client.send(b"b" * 10)
        server.clock.advance(1)
    assert client.output() == b""
    server.clock.advance(1)
    assert408(client)
    assert server.http.requests == []
    assert server.events[-1]["path"] == "/upload"


def test_a_body_at_the_minimum_rate_is_read() -> None:
    """A body that keeps 1 KB/s over each 30 s window, however it bunches, is read and served."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(post(4 * 30 * 1024))
    for _ in range(4):
        server.clock.advance(29)
        client.send(b"b" * (30 * 1024))
        server.clock.advance(1)
    assert [a.status for a in parse(client.output())] == [200]
    [rendered] = server.http.requests
    assert rendered.uri == b"/upload"


def test_with_no_minimum_rate_a_body_needs_a_byte_in_every_window() -> None:
    """With --min-body-rate 0 a byte every 29 s keeps a body going; a 30 s window without one gets 408."""
    server = Server(limits=ClientLimits(headerTimeout=30, minBodyRate=0))
    client = server.connect()
    client.send(post(10))
    for _ in range(3):
        server.clock.advance(29)
        client.send(b"b")
    server.clock.advance(90 - 87)  # windows end at 30, 60, 90, 120: the fourth has no byte
    assert client.output() == b""
    server.clock.advance(30)
    assert408(client)
    assert b"No byte of the request body came for 30 s." in client.output()


def test_a_long_response_is_not_cut() -> None:
    """A response still being sent after far longer than every client timeout keeps its connection."""
    server = Server(limits=LIMITS)
    pending: list[Request] = []
    server.http.render = lambda request: pending.append(request) or NOT_DONE_YET  # type: ignore[method-assign]
    client = server.connect()
    client.send(HEAD)
    assert timers(server) == []
    for _ in range(100):
        server.clock.advance(10)
        pending[0].write(b"chunk")
    assert not client.closed
    pending[0].finish()
    assert len(timers(server)) == 1  # now idle, waiting for the next request


def test_a_connection_handed_to_the_websocket_relay_is_not_timed() -> None:
    """Once the relay has taken the connection over, no client timer of the HTTP channel remains."""
    server = Server(limits=LIMITS)

    def takeOver(request: Request) -> object:
        request.channel.transport = None  # what Autobahn's resource does
        return NOT_DONE_YET

    server.webSocket.render = takeOver  # type: ignore[method-assign]
    client = server.connect()
    client.send(b"GET /_stcore/stream HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert timers(server) == []
    server.clock.advance(3600)
    assert not client.closed and client.output() == b""


def test_a_closing_connection_whose_client_reads_nothing_is_aborted() -> None:
    """After a Connection: close response, a client that never reads it is dropped after 75 s, not held for ever."""
    server = Server(limits=LIMITS)
    client = server.connect()
    client.send(b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")
    assert client.closed  # closing: waiting for the answer to be read
    server.clock.advance(74.9)
    assert not client.transport.disconnected
    server.clock.advance(0.1)
    assert client.transport.disconnected
