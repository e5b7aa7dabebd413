"""
The request body cap (stproxy.http.request.ProxyRequest, C{--max-body-size}): a body over the
limit is refused with 413 as the bytes arrive, before anything goes upstream.
"""

from __future__ import annotations

from fake_upstream import Proxy


def test_declared_body_over_the_limit_is_refused_with_413_before_reading() -> None:
    """
    A declared Content-Length over --max-body-size gets a 413 and a closed connection before the
    body is read or anything goes upstream.
    """
    proxy = Proxy(maxBodySize=10)
    proxy.send(b"PUT /up HTTP/1.1\r\nHost: app\r\nContent-Length: 11\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 413")
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
