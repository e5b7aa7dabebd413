"""
End to end, an upstream that misbehaves: a real ``twistd -n stproxy`` in front of
``tests/upstream_server.py``, which sends what Streamlit never would (a bad status line, 10,000
headers, a broken chunk, a body cut short) or is killed in the middle of a response, and a
client forging the headers that say who it is.

What the browser must see: a 502 page and one log line naming the upstream when nothing was sent
yet, a truncated body on a closed connection when something was, never a hang and never the
upstream's bytes where they do not belong.  (An upstream that accepts and never answers is
``test_504_when_upstream_headers_are_late`` in ``test_http.py``.)
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from harness import ProxyProcess, UpstreamServerProcess, start_upstream_server, wait_until

#: Log lines naming the upstream that are no reason: an access line, the start-up announcement.
NOT_A_REASON = re.compile(r'"(GET|HEAD) /|stproxy forwarding to ')


def exchange(port: int, target: str, headers: str = "", timeout: float = 10) -> tuple[bytes, bytes]:
    """
    One GET on a fresh connection, read until the proxy closes it or the reply is complete
    (a Content-Length met or a last chunk): the head and the body as they came off the wire.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: app.test\r\n{headers}\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)) or body.endswith(b"\r\n0\r\n\r\n"):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def reasons(proxy: ProxyProcess, since: int, address: str) -> list[str]:
    """The proxy's log lines after C{since} that name the upstream as the cause of something."""
    text = proxy.output()[since:]
    assert "Traceback" not in text and "Unhandled" not in text, text
    return [line for line in text.splitlines() if address in line and not NOT_A_REASON.search(line)]


@pytest.mark.parametrize(
    "name, why",
    [
        ("status-9999", "status 9999"),
        ("status-0", "status 0"),
        ("status-not-a-number", "non-integer status code"),
        ("bad-chunk-size", "invalid response"),
    ],
)
def test_a_malformed_response_gives_502_and_one_log_line(
    upstream_server: UpstreamServerProcess, upstream_proxy: ProxyProcess, name: str, why: str
) -> None:
    """A bad status line, or a chunked body broken right after the headers, gets the browser a 502 and one log line."""
    mark = len(upstream_proxy.output())
    head, body = exchange(upstream_proxy.port, f"/raw/{name}")
    assert head.startswith(b"HTTP/1.1 502 "), head
    assert upstream_server.address.encode() in body and b"a=1" not in head
    upstream_proxy.wait_for_output(re.escape(why), since=mark)
    assert len(reasons(upstream_proxy, mark, upstream_server.address)) == 1, upstream_proxy.output()[mark:]


def test_10000_response_headers_give_502_and_one_log_line(
    upstream_server: UpstreamServerProcess, upstream_proxy: ProxyProcess
) -> None:
    """An upstream response with 10,000 header fields (over the 64 KiB head limit) gets the browser a 502."""
    mark = len(upstream_proxy.output())
    head, body = exchange(upstream_proxy.port, "/headers?n=10000")
    assert head.startswith(b"HTTP/1.1 502 "), head[:200]
    assert b"X-Header" not in head
    upstream_proxy.wait_for_output("response head over 65536 bytes", since=mark)
    assert len(reasons(upstream_proxy, mark, upstream_server.address)) == 1
    head, _ = exchange(upstream_proxy.port, "/headers?n=100")  # a reasonable head still passes
    assert head.startswith(b"HTTP/1.1 200 ") and head.count(b"X-Header-") == 100


def test_the_upstreams_reason_phrase_is_replaced(upstream_proxy: ProxyProcess) -> None:
    """A bare CR in the upstream's reason phrase cannot smuggle a header: the browser gets the standard phrase."""
    head, body = exchange(upstream_proxy.port, "/raw/cr-in-reason")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert b"evil" not in head and body == b"hi"


def test_a_response_field_named_by_connection_is_not_passed_on(upstream_proxy: ProxyProcess) -> None:
    """Fields the upstream's Connection header names are hop-by-hop: they do not reach the browser."""
    head, body = exchange(upstream_proxy.port, "/raw/connection-listed")
    names = {line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]}
    assert b"x-kept" in names and body == b"hi"
    assert not names & {b"x-hop", b"x-other"}, head


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_cut_by_the_upstream_is_cut_for_the_browser(
    upstream_server: UpstreamServerProcess, upstream_proxy: ProxyProcess, chunked: bool
) -> None:
    """The upstream closing mid-body gets the browser a truncated body and a closed connection, and one log line."""
    mark = len(upstream_proxy.output())
    head, body = exchange(upstream_proxy.port, f"/cut?kb=64&chunked={int(chunked)}")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert 64 * 1024 <= len(body) < 1024 * 1024
    assert not body.endswith(b"\r\n0\r\n\r\n")  # no last chunk: the browser knows it is cut short
    upstream_proxy.wait_for_output("broke off its response", since=mark)
    assert len(reasons(upstream_proxy, mark, upstream_server.address)) == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upstream_killed_mid_download_truncates_and_closes(proxy_factory, chunked: bool) -> None:
    """Killing the upstream in the middle of a download ends it for the browser at once: truncated and closed."""
    with start_upstream_server() as upstream:
        proxy = proxy_factory("--upstream", upstream.address)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(f"GET /big?mb=50&delay_ms=20&chunked={int(chunked)} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            received = 0
            while received < 1024 * 1024:
                chunk = sock.recv(65536)
                assert chunk, "closed before the upstream was killed"
                received += len(chunk)
            upstream.process.kill()  # type: ignore[union-attr]
            started = time.monotonic()
            while chunk := sock.recv(65536):  # a hang would raise socket.timeout
                received += len(chunk)
            assert time.monotonic() - started < 5
        assert received < 50 * 1024 * 1024
        wait_until(lambda: "broke off its response" in proxy.output(), 5, message=proxy.output)


def test_forged_identity_and_address_headers_never_reach_the_upstream(upstream_proxy: ProxyProcess) -> None:
    """X-Real-IP, CDN address headers and an authenticating proxy's user headers from a client are not believed."""
    forged = {
        "X-Real-IP": "6.6.6.6",
        "True-Client-IP": "6.6.6.6",
        "CF-Connecting-IP": "6.6.6.6",
        "X-Forwarded-Port": "1",
        "X-Forwarded-Prefix": "/admin",
        "X-Forwarded-User": "admin",
        "X-Forwarded-Email": "admin@example.com",
        "X-Forwarded-Groups": "admins",
        "X-Forwarded-Preferred-Username": "admin",
        "X-Auth-Request-User": "admin",
        "X-Auth-Request-Email": "admin@example.com",
        "X-Auth-Request-Groups": "admins",
        "Remote-User": "admin",
    }
    head, body = exchange(upstream_proxy.port, "/echo", "".join(f"{k}: {v}\r\n" for k, v in forged.items()))
    assert head.startswith(b"HTTP/1.1 200 ")
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["x-real-ip"] == "127.0.0.1"
    leaked = {name for name in forged if name.lower() != "x-real-ip" and name.lower() in seen}
    assert not leaked
