"""
The request body cap (stproxy.http.request.ProxyRequest, C{--max-body-size}): a body over the
limit is refused with 413 as the bytes arrive, before anything goes upstream.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_upstream import Proxy
from site_connection import Server, parse
from stproxy.http.linger import LINGER_SECONDS


def test_declared_body_over_the_limit_is_refused_with_413_before_reading() -> None:
    """
    A declared Content-Length over --max-body-size gets a 413 before the body is read, nothing
    goes upstream, and the connection closes once the client has sent what it declared.
    """
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
    assert proxy.agent.requests == []
    proxy.send(b"0123456789")
    assert not proxy.transport.disconnecting  # a client still sending would get a reset
    proxy.send(b"X")
    assert proxy.transport.disconnecting
    assert proxy.agent.requests == []


def test_chunked_body_crossing_the_limit_is_refused_with_413() -> None:
    """
    A chunked body gets a 413 as soon as it crosses --max-body-size, and nothing goes upstream.
    """
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n")
    assert proxy.output() == b""
    proxy.send(b"8\r\n12345678\r\n0\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
    assert proxy.agent.requests == []


def test_a_refused_body_gets_its_413_and_no_stray_100_continue() -> None:
    """
    A client sending Expect: 100-continue with a body over the limit gets the 413 and never an
    invitation to send it.
    """
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in proxy.output()


def test_a_chunk_declaring_more_than_the_limit_is_refused_before_it_is_read() -> None:
    """A chunk size of 2**80 is a 413 as soon as its size line arrives, not after 201 MB."""
    server = Server(maxBodySize=1000)
    client = server.connect()
    client.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert client.output() == b""
    client.send(b"100000000000000000000\r\n")
    [answer] = parse(client.output())
    assert answer.status == 413
    assert server.http.requests == []


@pytest.mark.parametrize(
    "head",
    [
        b"Transfer-Encoding: chunked\r\n\r\n100000000000000000000\r\n",
        b"Content-Length: 1208925819614629174706176\r\n\r\n",
    ],
    ids=["chunk", "content-length"],
)
def test_without_a_limit_a_length_no_body_could_have_gets_400(head: bytes) -> None:
    """With no body cap, a declared length of 2**80 is still refused, with 400."""
    server = Server(maxBodySize=0)
    client = server.connect()
    client.send(b"PUT /up HTTP/1.1\r\nHost: app\r\n" + head)
    [answer] = parse(client.output())
    assert answer.status == 400
    assert server.http.requests == []


def test_a_413_is_counted_and_logged_like_any_response(tmp_path: Path) -> None:
    """A 413 shows in the metrics, the JSON access events and the access log, once each."""
    log = tmp_path / "access.log"
    server = Server(maxBodySize=10, accessLog=str(log))
    server.site.startFactory()
    try:
        server.connect().send(b"PUT /up?x=1 HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\n")
    finally:
        server.site.stopFactory()
    assert server.counted("PUT", "4xx") == 1
    [event] = server.events
    assert (event["method"], event["path"], event["status"]) == ("PUT", "/up?x=1", 413)
    [line] = log.read_text().splitlines()
    assert '"PUT /up?x=1 HTTP/1.1" 413 ' in line


def test_a_413_is_a_complete_answer_with_hsts_over_tls() -> None:
    """The 413 has a text body, its length and Connection: close, and with --hsts over TLS, HSTS."""
    client = Server(maxBodySize=10, hsts=600).connect(secure=True)
    client.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\n")
    [answer] = parse(client.output())
    assert answer.status == 413
    assert answer.header(b"content-type") == b"text/plain; charset=utf-8"
    assert answer.header(b"content-length") == b"%d" % (len(answer.body),)
    assert answer.header(b"connection") == b"close"
    assert answer.header(b"strict-transport-security") == b"max-age=600"


def test_a_refused_chunked_body_is_discarded_then_the_connection_closes() -> None:
    """After a 413 on a chunked body, the rest is discarded, never served, and the connection closes."""
    server = Server(maxBodySize=10)
    client = server.connect()
    client.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n")
    client.send(b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    client.send(b"GET /next HTTP/1.1\r\nHost: app\r\n\r\n")
    assert [answer.status for answer in parse(client.output())] == [413]
    assert server.http.requests == []
    server.clock.advance(LINGER_SECONDS)
    assert client.closed
