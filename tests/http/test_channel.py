"""
The connection (stproxy.http.channel.ProxyChannel): request heads up to --max-header-size, and a
proper, counted and logged answer (431, 414, 400) with a closed connection whenever a head
cannot be read, where twisted.web would drop the connection or write a bare status line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, connect
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pki import PKI, files_for
from site_connection import Server, parse
from stproxy.edge.certificates import ServerCertificate
from stproxy.http.linger import LINGER_SECONDS
from stproxy.http.site import ProxySite
from stproxy.http.timeouts import ABORT_TIMEOUT

#: The Cookie st.login sends once its identity cookie is split into chunks.
BIG_COOKIE = b"Cookie: " + b"; ".join(b"_streamlit_user_%d=%s" % (i, b"x" * 4000) for i in range(5))


def request(*headers: bytes, target: bytes = b"/", method: bytes = b"GET") -> bytes:
    """A request head with a Host and C{headers}."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: app.example", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def assertRefused(output: bytes, status: int) -> None:
    """C{output} is one complete text answer with C{status} that closes the connection."""
    [answer] = parse(output)
    assert answer.status == status
    assert answer.header(b"content-type") == b"text/plain; charset=utf-8"
    assert answer.header(b"content-length") == b"%d" % (len(answer.body),)
    assert answer.header(b"connection") == b"close"
    assert answer.body.endswith(b".\n")


def test_a_20_kb_cookie_is_accepted() -> None:
    """st.login's chunked identity cookie (20 KB) reaches the upstream whole, where twisted.web dropped the connection."""
    assert len(BIG_COOKIE) > 20_000
    server = Server()
    client = server.connect()
    client.send(request(BIG_COOKIE))
    [rendered] = server.http.requests
    assert rendered.getHeader(b"cookie") == BIG_COOKIE.split(b": ", 1)[1]
    assert parse(client.output())[0].status == 200


def test_a_websocket_handshake_with_a_20_kb_cookie_reaches_the_relay() -> None:
    """The WebSocket handshake comes through the same channel and gets the same head limit."""
    server = Server()
    server.connect().send(request(BIG_COOKIE, b"Upgrade: websocket", b"Connection: Upgrade"))
    [rendered] = server.webSocket.requests
    assert rendered.getHeader(b"cookie") == BIG_COOKIE.split(b": ", 1)[1]


@pytest.mark.parametrize(
    "head",
    [
        request(*[b"X-Filler-%d: %s" % (i, b"y" * 1000) for i in range(70)]),
        request(b"Cookie: " + b"z" * 100_000),
        request(b"Cookie: " + b"z" * 100_000)[:-4],  # the line never ends
        request(BIG_COOKIE, b"Upgrade: websocket", b"Connection: Upgrade", b"X: " + b"w" * 50_000),
    ],
    ids=["many-lines", "one-long-line", "unended-line", "websocket"],
)
def test_a_head_over_the_limit_gets_431(head: bytes) -> None:
    """A head over 64 KB, or one header line over it, gets a 431 page and nothing goes on."""
    server = Server()
    client = server.connect()
    client.send(head)
    assertRefused(client.output(), 431)
    assert server.http.requests == server.webSocket.requests == []


def test_a_head_over_the_limit_in_small_pieces_gets_431() -> None:
    """However the head arrives, no more than the limit of it is ever held before the 431."""
    server = Server(maxHeaderSize=2048)
    client = server.connect()
    client.send(b"GET / HTTP/1.1\r\nCookie: ")
    for _ in range(2048 // 16):
        if client.output():
            break
        client.send(b"c" * 16)
    assertRefused(client.output(), 431)


def test_the_limit_counts_every_byte_of_the_head() -> None:
    """A head of exactly --max-header-size bytes (line endings included) is read; one byte more is refused."""
    base = len(request(b"X-Pad: "))
    server = Server(maxHeaderSize=2048)
    client = server.connect()
    client.send(request(b"X-Pad: " + b"p" * (2048 - base)))
    assert parse(client.output())[0].status == 200
    client = server.connect()
    client.send(request(b"X-Pad: " + b"p" * (2049 - base)))
    assertRefused(client.output(), 431)


def test_too_many_header_fields_get_431() -> None:
    """More than twisted.web's 500 header fields is a head too large, not a bare 400."""
    client = Server().connect()
    client.send(request(*[b"X-%d: 1" % (i,) for i in range(501)]))
    assertRefused(client.output(), 431)


@pytest.mark.parametrize(
    "head",
    [
        request(target=b"/?q=" + b"a" * 17_000),
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: app.example\r\n\r\n",
        b"GET /" + b"a" * 100_000,  # the line never ends
    ],
    ids=["target-over-16-kb", "line-over-the-head", "unended-line"],
)
def test_a_request_line_too_long_gets_414(head: bytes) -> None:
    """A request target over 16 KB, or a request line longer than a head may be, gets 414."""
    server = Server()
    client = server.connect()
    client.send(head)
    assertRefused(client.output(), 414)
    assert server.http.requests == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\nHost: app.example\n\n",
        b"GET / HTTP/1.1\r\nHost: app.example\nX-Smuggled: 1\r\n\r\n",
    ],
    ids=["all-bare", "one-bare"],
)
def test_a_bare_lf_line_ending_gets_400_at_once(head: bytes) -> None:
    """A line ended by a bare LF is answered 400 at once, where twisted.web waited 60 s for a CRLF."""
    server = Server()
    client = server.connect()
    client.send(head)
    assertRefused(client.output(), 400)
    assert server.http.requests == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: app.example\r\nNo colon here\r\n\r\n",
        b"GET /\r\nHost: app.example\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    ],
    ids=["field", "request-line", "two-lengths"],
)
def test_what_twisted_web_cannot_parse_gets_a_proper_400(head: bytes) -> None:
    """A request twisted.web refuses gets a 400 page with headers, not a bare status line."""
    client = Server().connect()
    client.send(head)
    assertRefused(client.output(), 400)


def test_a_refusal_is_counted_and_logged_once(tmp_path: Path) -> None:
    """A 431 shows in the metrics, the JSON access events and the access log, once each."""
    log = tmp_path / "access.log"
    server = Server(accessLog=str(log))
    server.site.startFactory()
    try:
        server.connect().send(request(b"Cookie: " + b"z" * 100_000))
    finally:
        server.site.stopFactory()
    assert server.counted("GET", "4xx") == 1
    [event] = server.events
    assert (event["method"], event["path"], event["status"]) == ("GET", "/", 431)
    [line] = log.read_text().splitlines()
    assert '"GET / HTTP/1.1" 431 ' in line


def test_a_414_logs_the_start_of_the_target_only() -> None:
    """The logs get a 414's target cut short, not 100 KB of it."""
    server = Server()
    server.connect().send(b"GET /" + b"a" * 100_000)
    [event] = server.events
    assert event["status"] == 414
    assert event["path"].startswith("/aaa") and event["path"].endswith("...")
    assert len(event["path"]) < 2000


def test_a_refusal_over_tls_carries_hsts() -> None:
    """With --hsts, the proxy's own 431 over TLS carries Strict-Transport-Security too."""
    client = Server(hsts=600).connect(secure=True)
    client.send(request(b"Cookie: " + b"z" * 100_000))
    [answer] = parse(client.output())
    assert answer.header(b"strict-transport-security") == b"max-age=600"


def test_after_a_refusal_nothing_more_is_read_as_http() -> None:
    """A request pipelined after a refused one is never served: where it starts is unknown."""
    server = Server()
    client = server.connect()
    client.send(b"GET / HTTP/1.1\nHost: app.example\n\n" + request(target=b"/second"))
    assertRefused(client.output(), 400)
    assert server.http.requests == []


def test_a_refused_connection_is_closed_after_the_lingering() -> None:
    """After the answer, what the client still sends is discarded for a while, then the connection closes."""
    server = Server()
    client = server.connect()
    client.send(request(b"Cookie: " + b"z" * 100_000))
    assert not client.closed
    client.send(b"more of what the client had queued")
    server.clock.advance(LINGER_SECONDS)
    assert client.closed
    assert len(parse(client.output())) == 1


@pytest.mark.parametrize("secure, halfClosed", [(False, True), (True, False)])
def test_a_refusal_ends_the_answer_with_a_fin_except_over_tls(secure: bool, halfClosed: bool) -> None:
    """A client reading to the end of the connection gets its end at once; over TLS that needs a close_notify."""
    client = Server().connect(secure=secure, halfClose=True)
    client.send(request(b"Cookie: " + b"z" * 100_000))
    assert client.transport.writeClosed is halfClosed
    assert not client.closed


def test_the_next_request_on_a_new_connection_is_served() -> None:
    """A refusal ends one connection; the client's next one is served as usual."""
    server = Server()
    server.connect().send(request(b"Cookie: " + b"z" * 100_000))
    client = server.connect()
    client.send(request(target=b"/next"))
    [answer] = parse(client.output())
    assert (answer.status, answer.body) == (200, b"ok")
    assert [r.uri for r in server.http.requests] == [b"/next"]
    assert server.counted("GET", "2xx") == server.counted("GET", "4xx") == 1


@pytest.mark.parametrize(
    "connection",
    [[b"close, X-Foo"], [b"X-Foo,Close"], [b"keep-alive", b"close"], [b"X-Foo ,\tCLOSE"]],
)
def test_close_among_other_connection_tokens_closes_the_connection(connection: list[bytes]) -> None:
    """Connection: close is honoured among other tokens, in any case and spacing, in any Connection header."""
    client = Server().connect()
    client.send(request(*[b"Connection: " + value for value in connection]))
    [answer] = parse(client.output())
    assert answer.status == 200
    assert client.closed


def test_a_kept_alive_connection_stays_open() -> None:
    """Without close among its tokens, an HTTP/1.1 connection stays open for the next request."""
    server = Server()
    client = server.connect()
    client.send(request(b"Connection: keep-alive, X-Foo"))
    client.send(request(target=b"/second"))
    assert [a.status for a in parse(client.output())] == [200, 200]
    assert not client.closed


def test_a_refused_tls_client_that_goes_silent_is_aborted(pki: PKI) -> None:
    """A TLS client refused with 431 that never sends its close_notify is aborted, not held for ever."""
    clock = MemoryReactorClock()
    site = ProxySite(Resource(), clock, maxHeaderSize=1024)
    certificate = ServerCertificate(files_for(pki.server))
    server = TLSMemoryBIOFactory(certificate, False, site, clock=clock).buildProtocol(None)
    client = TLSMemoryBIOFactory(CertificateOptions(verify=False), True, Factory.forProtocol(_Reader), clock=clock)
    browser = client.buildProtocol(None)
    serverTransport = FakeTransport(server, isServer=True)
    pump = connect(server, serverTransport, browser, FakeTransport(browser, isServer=False), greet=False)
    browser.write(request(b"X: " + b"y" * 2000))
    for _ in range(3):  # the handshake, then the request, then the 431
        clock.advance(0)
        pump.flush()
    assert parse(browser.wrappedProtocol.received)[0].status == 431
    clock.advance(LINGER_SECONDS)  # the lingering ends in a close the client never completes
    assert server.disconnecting and not serverTransport.disconnecting
    clock.advance(ABORT_TIMEOUT)
    assert serverTransport.disconnecting  # aborted: FakeTransport.abortConnection only sets this


def test_a_response_cut_off_by_the_exchange_is_aborted_if_the_close_does_not_end() -> None:
    """A connection the exchange closes mid-response is aborted if the client does not let it go."""
    server = Server()
    server.http.render = lambda request: server.http.requests.append(request) or NOT_DONE_YET  # type: ignore[method-assign]
    client = server.connect()
    client.send(request())
    [answered] = server.http.requests
    answered.channel.loseConnection()  # what the exchange does when the upstream's response breaks
    assert client.closed and not client.transport.disconnected
    server.clock.advance(ABORT_TIMEOUT)
    assert client.transport.disconnected


class _Reader(Protocol):
    """A TLS client that keeps what it reads, and never closes."""

    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
