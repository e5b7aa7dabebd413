"""
End to end, the request limits: a real ``twistd -n stproxy`` on a loopback port (``tcp:0``) in
front of the stdlib test upstream, spoken to over raw sockets, so that what a client reads (or
the reset it gets instead) is the wire as it is.

A request refused before it was read to the end must be answered, never reset: a client sending
a big body without ``Expect: 100-continue`` reads its 413 once it has sent the body, and every
refused client's next connection is served.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request

from harness import ProxyProcess, UpstreamServerProcess, wait_until

#: Bigger than the socket buffers on loopback, so the client is still sending when the 413 comes.
BODY = 6 * 1024 * 1024


def exchange(proxy: ProxyProcess, data: bytes, timeout: float = 20) -> bytes:
    """Send C{data} on a new connection and read until the proxy closes it."""
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def echoed(proxy: ProxyProcess, *headers: bytes) -> dict:
    """What the test upstream's /echo saw of a GET carrying C{headers}."""
    head = b"\r\n".join([b"GET /echo HTTP/1.1", b"Host: app.test", *headers, b"Connection: close"])
    answer = exchange(proxy, head + b"\r\n\r\n")
    assert status(answer) == 200, answer[:300]
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def test_a_big_body_without_expect_reads_its_413_not_a_reset(proxy_factory) -> None:
    """A client that sends its whole 6 MB body before reading gets the 413, and its next connection is served."""
    proxy = proxy_factory("--upstream", "127.0.0.1:9", "--max-body-size", "1K")
    head = b"PUT /_stcore/upload_file/s/f HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % BODY
    answer = exchange(proxy, head + b"u" * BODY)
    assert answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), answer[:300]
    assert b"\r\nConnection: close\r\n" in answer
    answer = exchange(proxy, b"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    assert status(answer) == 502  # served: forwarded to the upstream, which is down


def test_a_20_kb_cookie_reaches_the_upstream(upstream_server: UpstreamServerProcess, proxy_factory) -> None:
    """st.login's chunked identity cookie, 20 KB in all, reaches Streamlit's side whole."""
    proxy = proxy_factory("--upstream", upstream_server.address)
    cookie = b"; ".join(b"_streamlit_user_%d=%s" % (i, b"x" * 4000) for i in range(5))
    info = echoed(proxy, b"Cookie: " + cookie)
    assert ["Cookie", cookie.decode()] in info["headers"]


def test_oversized_heads_and_bare_lf_get_answers(upstream_server: UpstreamServerProcess, proxy_factory) -> None:
    """A 100 KB header line gets 431, a 17 KB target 414, bare LF and a folded Host 400; then 200."""
    proxy = proxy_factory("--upstream", upstream_server.address)
    cases = [
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nCookie: " + b"z" * 100_000 + b"\r\n\r\n", 431),
        (b"GET /?q=" + b"a" * 17_000 + b" HTTP/1.1\r\nHost: app.test\r\n\r\n", 414),
        (b"GET / HTTP/1.1\nHost: app.test\n\n", 400),
        # Parsed whole, so answered on a connection kept alive unless asked otherwise.
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n evil.example\r\nConnection: close\r\n\r\n", 400),
    ]
    for request, expected in cases:
        answer = exchange(proxy, request)
        assert status(answer) == expected, answer[:300]
    assert echoed(proxy)["path"] == "/echo"


def metric(proxy: ProxyProcess, name: str) -> float:
    """One unlabelled sample of the proxy's admin /metrics."""
    port = proxy.wait_for_output(r"stproxy admin endpoint on [0-9.]+:(\d+)").group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def test_slow_heads_get_408_and_connections_past_the_cap_get_503(
    upstream_server: UpstreamServerProcess, proxy_factory
) -> None:
    """Five connections holding half a head fill --max-connections 5: a sixth reads a 503, the five a 408 after --header-timeout 1, and then a request is served."""
    proxy = proxy_factory(
        "--upstream", upstream_server.address, "--max-connections", "5", "--header-timeout", "1",
        "--admin", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    started = time.monotonic()
    slow = [socket.create_connection((proxy.host, proxy.port), timeout=20) for _ in range(5)]
    try:
        for sock in slow:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
        refused = exchange(proxy, b"GET /echo HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), refused[:300]
        assert b"\r\nConnection: close\r\n" in refused
        for sock in slow:
            received = []
            while chunk := sock.recv(65536):  # the proxy ends its answer, then closes
                received.append(chunk)
            answer = b"".join(received)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:300]
            assert b"\r\nConnection: close\r\n" in answer
        assert time.monotonic() - started >= 0.9  # not before the header timeout
    finally:
        for sock in slow:
            sock.close()
    wait_until(lambda: metric(proxy, "stproxy_client_connections") == 0, 10, message=proxy.output)
    assert echoed(proxy)["path"] == "/echo"
    assert metric(proxy, "stproxy_connections_refused_total") == 1
    assert proxy.output().count("At the connection limit (5 open)") == 1
