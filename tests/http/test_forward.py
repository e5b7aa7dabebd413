"""
What may be forwarded at all, and how (stproxy.http.forward): the request line, the Host, the
forwarding headers and the spooled body a fake upstream agent receives, and the requests that
are refused before anything goes upstream.
"""

from __future__ import annotations

import pytest
from twisted.logger import capturedLogs

from fake_upstream import Proxy
from stproxy.http.forward import validHost


def test_request_goes_upstream_with_target_method_and_host_intact() -> None:
    """
    A request reaches the upstream with its method, target and Host unchanged, X-Forwarded-For
    added and hop-by-hop headers removed.
    """
    proxy = Proxy()
    proxy.send(b"GET /media/x.png?a=1&b=%7C HTTP/1.1\r\nHost: app.example:8500\r\nConnection: keep-alive\r\n\r\n")
    [sent] = proxy.agent.requests
    assert sent.method == b"GET"
    assert sent.uri == b"http://127.0.0.1:8501/media/x.png?a=1&b=%7C"
    assert sent.headers.getRawHeaders(b"host") == [b"app.example:8500"]
    assert sent.headers.getRawHeaders(b"x-forwarded-for") == [b"192.0.2.7"]
    assert not sent.headers.hasHeader(b"connection")
    assert sent.bodyProducer is None


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


@pytest.mark.parametrize("target", [b"/echo?q=\x7f", b"/a\x01b", b"/caf\xc3\xa9"])
def test_targets_with_bytes_a_uri_cannot_hold_get_400_not_a_traceback(target: bytes) -> None:
    """A request target with control or non-ASCII bytes gets a 400 and is not forwarded."""
    proxy = Proxy()
    proxy.send(b"GET " + target + b" HTTP/1.1\r\nHost: app\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 400 ")
    assert proxy.agent.requests == []


def test_body_is_forwarded_from_the_spooled_content() -> None:
    """
    An upload's body is forwarded from the spooled content, with the upstream client setting its
    own Content-Length.
    """
    proxy = Proxy()
    proxy.send(b"PUT /_stcore/upload_file/s/f HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello")
    [sent] = proxy.agent.requests
    assert sent.bodyProducer.length == 5
    assert not sent.headers.hasHeader(b"content-length")


def test_an_http_1_0_request_without_host_goes_upstream_with_the_upstreams_name() -> None:
    """HTTP/1.0 makes Host optional: health checkers (HAProxy's httpchk) send none."""
    proxy = Proxy()
    proxy.send(b"OPTIONS / HTTP/1.0\r\n\r\n")
    [sent] = proxy.agent.requests
    assert sent.headers.getRawHeaders(b"host") == [b"127.0.0.1:8501"]
    assert not sent.headers.hasHeader(b"x-forwarded-host")


@pytest.mark.parametrize(
    "host",
    [
        b"app.example",
        b"app.example:8500",
        b"127.0.0.1:8500",
        b"localhost",
        b"xn--caf-dma.example",
        b"my_host-1.internal:1",
        b"[::1]",
        b"[2001:db8::7]:8443",
        b"[::ffff:192.0.2.7]:80",
    ],
)
def test_valid_hosts(host: bytes) -> None:
    """A name, an IPv4 address or a bracketed IPv6 address, with or without port digits, is a Host."""
    assert validHost(host)


@pytest.mark.parametrize(
    "host",
    [
        b"127.0.0.1:8500 evil.example",  # an obs-folded Host, once twisted.web has joined it
        b"a.example,b.example",
        b"a.example;proto=https",
        b"user@app.example",
        b"app.example/path",
        b"app.example:",
        b"app.example:80a",
        b"app.example:123456",
        b"::1",
        b"[::1",
        b"[not-an-address]",
        b"[fe80::1%25eth0]",
        b"app\texample",
        b"-x.example",
        b"",
    ],
)
def test_invalid_hosts(host: bytes) -> None:
    """Spaces, lists, user info, paths, bad ports, unbracketed or bad IPv6 and a leading dash are not a Host."""
    assert not validHost(host)


def test_an_obs_folded_host_is_refused_and_never_forwarded() -> None:
    """A Host continued on a second line (obs-fold) gets 400; its joined value never reaches the upstream."""
    proxy = Proxy()
    proxy.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8500\r\n evil.example\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 400 ")
    assert b"not a host[:port]" in proxy.output()
    assert proxy.agent.requests == []


def test_a_refusal_is_logged_naming_the_client() -> None:
    """A refused request's one event names its method, target, client address, status and why, as a WebSocket's does."""
    proxy = Proxy()
    with capturedLogs() as events:
        proxy.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    [event] = [e for e in events if e.get("status") == 400]
    assert (event["method"], event["uri"], event["peer"]) == ("GET", "/", "192.0.2.7")
    assert "Host" in event["detail"]
    assert proxy.agent.requests == []


def test_a_405_names_the_methods_that_are_forwarded() -> None:
    """A TRACE gets 405 with an Allow header listing what the proxy does forward."""
    proxy = Proxy()
    proxy.send(b"TRACE / HTTP/1.1\r\nHost: app\r\n\r\n")
    assert proxy.output().startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n" in proxy.output()
