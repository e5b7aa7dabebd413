"""
End to end over HTTP: a real ``twistd -n stproxy`` (or ``python -m stproxy``) process in front of
a real Streamlit or the stdlib test upstream, spoken to with clients that show the wire as it is
(``http.client``, which never decompresses, and raw sockets).

These are the acceptance criteria of the HTTP leg: what a browser gets through the proxy is
what it would get from Streamlit directly, bodies stream in bounded memory in both directions,
failures become 502/504 with a reason, and the command line fails like a command line.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import re
import socket
import sys
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import pytest

from harness import (
    APPS,
    ProxyProcess,
    StreamlitProcess,
    UpstreamServerProcess,
    free_port,
    run_proxy,
    start_streamlit,
    wait_until,
)
from upstream_server import MIB, big_body_sha256

PYTHON_M_STPROXY = [sys.executable, "-m", "stproxy"]

#: Response headers a browser acts on, compared between direct and proxied answers.
RELEVANT_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "cache-control",
    "vary",
)


# ------------------------------------------------------------------------------------ helpers


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        return found[-1] if found else None

    def relevant(self) -> dict[str, list[str]]:
        return {name: self.values(name) for name in RELEVANT_HEADERS}

    def cookies(self) -> list[tuple[str, str]]:
        """Set-Cookie as (name, attributes): the value is a fresh random token per response."""
        result = []
        for value in self.values("set-cookie"):
            pair, _, attributes = value.partition(";")
            result.append((pair.split("=", 1)[0], attributes))
        return result


def fetch(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    chunks: Iterable[bytes] | None = None,
    timeout: float = 30,
) -> Response:
    """
    One request on a fresh connection, headers sent exactly as given (plus ``Host:
    127.0.0.1:port`` when none is given, and Content-Length for ``body``, or chunked framing
    for ``chunks``); the response body as it came off the wire, never decompressed.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        names = {k.lower() for k, _ in headers}
        if "host" not in names:
            conn.putheader("Host", f"127.0.0.1:{port}")
        for name, value in headers:
            conn.putheader(name, value)
        if chunks is not None:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for chunk in chunks:
                if chunk:
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        else:
            if body is not None and "content-length" not in names:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return Response(response.status, response.getheaders(), data)
    finally:
        conn.close()


def raw_exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or the status line and headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def status_of(raw: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    assert match, f"not an HTTP response: {raw[:200]!r}"
    return int(match.group(1))


def echo(proxy: ProxyProcess, method: str = "GET", target: str = "/echo", **kwargs) -> dict:
    """What the test upstream saw of a request sent through ``proxy``."""
    response = fetch(proxy.port, method, target, **kwargs)
    assert response.status == 200, (response.status, response.body[:500])
    return json.loads(response.body)


def seen(info: dict, name: str) -> list[str]:
    return [v for k, v in info["headers"] if k.lower() == name.lower()]


@pytest.fixture(scope="module")
def js_asset(streamlit: StreamlitProcess) -> str:
    """The path of the first ``<script src=...>`` of Streamlit's index.html (a hashed, immutable asset)."""
    index = fetch(streamlit.port, "GET", "/")
    assert index.status == 200
    match = re.search(rb'<script[^>]*\bsrc="([^"]+\.js)"', index.body)
    assert match, "index.html has no <script src=...>"
    return "/" + match.group(1).decode().removeprefix("./").lstrip("/")


# ------------------------------------------------------- 1. responses identical to direct ones

#: Streamlit gzips ``/_stcore/agent/openapi.json`` (with Content-Length) and ``/manifest.json``
#: (chunked) when asked to; the rest are identity.
COMPARED_PATHS = ["/", "JS", "/_stcore/health", "/_stcore/host-config", "/_stcore/agent/openapi.json", "/manifest.json"]


@pytest.mark.parametrize("accept_encoding", [None, "gzip"], ids=["identity", "gzip"])
@pytest.mark.parametrize("path", COMPARED_PATHS)
def test_responses_match_direct_ones(
    streamlit: StreamlitProcess, proxy: ProxyProcess, js_asset: str, path: str, accept_encoding: str | None
) -> None:
    """
    The page, a static asset, the health check and host-config reach the browser through the
    proxy with Streamlit's status, bytes (still gzip-compressed where Streamlit compressed them)
    and caching/encoding headers.
    """
    path = js_asset if path == "JS" else path
    # The same Host both ways: the proxy keeps the client's Host, so Streamlit sees one request.
    headers = [("Host", "app.test:8080"), ("Accept-Encoding", accept_encoding or "identity")]
    direct = fetch(streamlit.port, "GET", path, headers)
    proxied = fetch(proxy.port, "GET", path, headers)
    assert proxied.status == direct.status == 200
    assert proxied.relevant() == direct.relevant()
    assert proxied.cookies() == direct.cookies()
    assert proxied.body == direct.body
    if accept_encoding is None:
        assert proxied.header("content-encoding") is None


def test_gzip_responses_pass_through_compressed(streamlit: StreamlitProcess, proxy: ProxyProcess) -> None:
    """A response Streamlit gzips arrives gzip-encoded, byte for byte, not decoded or re-encoded by the proxy."""
    headers = [("Accept-Encoding", "gzip")]
    for path in ("/_stcore/agent/openapi.json", "/manifest.json"):
        direct = fetch(streamlit.port, "GET", path, headers)
        assert direct.header("content-encoding") == "gzip", f"Streamlit no longer gzips {path}"
        proxied = fetch(proxy.port, "GET", path, headers)
        assert proxied.values("content-encoding") == ["gzip"]
        assert proxied.body == direct.body
        gzip.decompress(proxied.body)


# ------------------------------------------------------------------- 2. HEAD, Range, ETag


def test_head_matches_direct(streamlit: StreamlitProcess, proxy: ProxyProcess, js_asset: str) -> None:
    """HEAD on an asset gives the GET's headers (Content-Length included) and no body, as directly."""
    direct = fetch(streamlit.port, "HEAD", js_asset)
    proxied = fetch(proxy.port, "HEAD", js_asset)
    assert proxied.status == direct.status == 200
    assert proxied.relevant() == direct.relevant()
    assert int(proxied.header("content-length") or 0) > 0
    assert proxied.body == b""
    # The connection is still usable: the proxy did not send a body after the HEAD response.
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("HEAD", js_asset)
        conn.getresponse().read()
        conn.request("GET", "/_stcore/health")
        follow_up = conn.getresponse()
        assert (follow_up.status, follow_up.read()) == (200, b"ok")
    finally:
        conn.close()


def test_range_request_matches_direct(streamlit: StreamlitProcess, proxy: ProxyProcess, js_asset: str) -> None:
    """``Range: bytes=0-99`` gets Streamlit's 206 with the same Content-Range and the same 100 bytes."""
    headers = [("Range", "bytes=0-99")]
    direct = fetch(streamlit.port, "GET", js_asset, headers)
    proxied = fetch(proxy.port, "GET", js_asset, headers)
    assert proxied.status == direct.status == 206
    assert proxied.header("content-range") == direct.header("content-range")
    assert proxied.header("content-range").startswith("bytes 0-99/")
    assert proxied.relevant() == direct.relevant()
    assert proxied.body == direct.body and len(proxied.body) == 100


def test_if_none_match_gives_304(streamlit: StreamlitProcess, proxy: ProxyProcess, js_asset: str) -> None:
    """The ETag from a proxied response revalidates through the proxy: 304, no body, as directly."""
    etag = fetch(proxy.port, "GET", js_asset).header("etag")
    assert etag
    headers = [("If-None-Match", etag)]
    direct = fetch(streamlit.port, "GET", js_asset, headers)
    proxied = fetch(proxy.port, "GET", js_asset, headers)
    assert proxied.status == direct.status == 304
    assert proxied.body == b""
    assert proxied.header("etag") == direct.header("etag") == etag


# -------------------------------------------------------------- 3. big bodies, bounded memory

RSS_LIMIT = 100 * MIB


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_big_download_streams_in_bounded_memory(
    upstream_server: UpstreamServerProcess, upstream_proxy: ProxyProcess, chunked: bool
) -> None:
    """
    A 50 MB response read by a slow client arrives intact while the proxy's memory stays under
    100 MB: the proxy reads from the upstream only as fast as the client takes the data.
    """
    size = 50 * MIB
    proxy = upstream_proxy
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.connect()
    # A small receive buffer so the client, not the kernel, sets the pace.
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    conn.request("GET", f"/big?mb=50&chunked={int(chunked)}")
    response = conn.getresponse()
    assert response.status == 200
    if not chunked:
        assert response.getheader("content-length") == str(size)
    digest = hashlib.sha256()
    received = 0
    peak = proxy.rss_bytes()
    try:
        while True:
            block = response.read(256 * 1024)
            if not block:
                break
            digest.update(block)
            received += len(block)
            peak = max(peak, proxy.rss_bytes())
            time.sleep(0.01)  # the slow reader: ~20 MB/s at most, far slower than loopback
    finally:
        conn.close()
    assert received == size
    assert digest.hexdigest() == big_body_sha256(size)
    assert peak < RSS_LIMIT, f"proxy RSS peaked at {peak / MIB:.1f} MiB"
    # The upstream connection went back to the pool reading: the next request is answered on it.
    again = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    again.request("GET", "/big?mb=1")
    response = again.getresponse()
    assert (response.status, len(response.read())) == (200, MIB)
    again.close()


# ------------------------------------------------------------ 4. client abort releases upstream


def test_client_disconnect_releases_the_upstream_connection(
    upstream_server: UpstreamServerProcess, proxy_factory
) -> None:
    """
    When the browser goes away in the middle of a download, the proxy closes its connection to
    the upstream too, instead of reading the rest for nobody or leaving it open.
    """
    proxy = proxy_factory("--upstream", upstream_server.address)
    before = upstream_server.stats()
    assert proxy.connections_to(upstream_server.port) == 0
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        sock.sendall(b"GET /big?mb=500 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        received = 0
        while received < MIB:
            chunk = sock.recv(65536)
            assert chunk, "proxy closed the connection early"
            received += len(chunk)
        assert wait_until(lambda: proxy.connections_to(upstream_server.port) == 1, 5)
    finally:
        sock.close()
    wait_until(
        lambda: proxy.connections_to(upstream_server.port) == 0,
        10,
        message=lambda: f"proxy still holds {proxy.connections_to(upstream_server.port)} upstream connections",
    )
    after = wait_until(
        lambda: (s := upstream_server.stats())["big_in_progress"] == 0 and s,
        10,
        message="the upstream is still sending the body",
    )
    assert after["aborted_responses"] == before["aborted_responses"] + 1


# ---------------------------------------------------------------------- 5. 502 and 504


def test_502_while_streamlit_is_down_then_200_when_back(proxy_factory) -> None:
    """
    With Streamlit stopped the browser gets a 502 naming the upstream, the proxy logs one line
    saying why, and once Streamlit is back on the same port the next request succeeds.
    """
    with start_streamlit(APPS / "basic_app.py") as streamlit:
        address = f"127.0.0.1:{streamlit.port}"
        proxy = proxy_factory("--upstream", address)
        assert fetch(proxy.port, "GET", "/_stcore/health").status == 200
        streamlit.stop()
        mark = len(proxy.output())
        down = fetch(proxy.port, "GET", "/_stcore/health")
        assert down.status == 502
        assert address.encode() in down.body
        proxy.wait_for_output(re.escape(address), timeout=5, since=mark)
        streamlit.start()
        up = fetch(proxy.port, "GET", "/_stcore/health")
        assert (up.status, up.body) == (200, b"ok")
        log = proxy.output()[mark:]
        reasons = [
            line for line in log.splitlines() if address in line and not re.search(r'"(GET|HEAD) /', line)
        ]
        assert len(reasons) == 1, f"expected one log line about the failure, got:\n{log}"


def test_504_when_upstream_headers_are_late(upstream_server: UpstreamServerProcess, proxy_factory) -> None:
    """An upstream that takes longer than ``--upstream-timeout`` to answer gives 504 after about that long."""
    proxy = proxy_factory("--upstream", upstream_server.address, "--upstream-timeout", "1")
    started = time.monotonic()
    response = fetch(proxy.port, "GET", "/slow?seconds=10")
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert 0.9 <= elapsed < 5, elapsed
    assert upstream_server.address.encode() in response.body
    # A fast request still works on the same proxy.
    assert fetch(proxy.port, "GET", "/slow?seconds=0").status == 200


# ---------------------------------------------------------------------- 6. bad flags


@pytest.mark.parametrize(
    "args",
    [
        ["--proxy-port", "70000"],
        ["--upstream", "ftp://x"],
        ["--listen", "nonsense:foo"],
        ["--no-such-flag"],
    ],
    ids=["port-out-of-range", "ftp-upstream", "bad-endpoint", "unknown-flag"],
)
def test_bad_flags_exit_2_with_one_line(args: list[str]) -> None:
    """A mistyped command line is answered with status 2 and one line naming the problem, never a traceback."""
    result = run_proxy(*args)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 2, result.stdout
    assert len(lines) == 1, result.stdout


@pytest.mark.parametrize("runner", ["twistd", "python -m"])
def test_a_busy_port_ends_start_up_with_one_line_and_status_1(runner: str) -> None:
    """Like nginx's "bind() failed": the address, the reason, exit 1, no traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = None if runner == "twistd" else [sys.executable, "-m", "stproxy"]
        result = run_proxy(
            "--upstream", "127.0.0.1:9", "--listen", f"tcp:{port}:interface=127.0.0.1", command=command
        )
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if "stproxy: error:" in line]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], result.stdout


# ------------------------------------------------------------ 7. python -m stproxy, seed flags


def test_python_m_stproxy_with_seed_flags(streamlit: StreamlitProcess, proxy_factory) -> None:
    """``python -m stproxy --streamlit-port N --proxy-port M`` proxies Streamlit on port M."""
    port = free_port()
    proxy = proxy_factory(
        "--streamlit-port", str(streamlit.port), "--proxy-host", "127.0.0.1", "--proxy-port", str(port),
        command=PYTHON_M_STPROXY,
    )  # fmt: skip
    assert proxy.port == port
    response = fetch(port, "GET", "/_stcore/health")
    assert (response.status, response.body) == (200, b"ok")


def test_python_m_stproxy_reads_environment(streamlit: StreamlitProcess, proxy_factory) -> None:
    """STREAMLIT_HOST, STREAMLIT_PORT, PROXY_HOST and PROXY_PORT configure ``python -m stproxy``."""
    port = free_port()
    env = {
        "STREAMLIT_HOST": "127.0.0.1",
        "STREAMLIT_PORT": str(streamlit.port),
        "PROXY_HOST": "127.0.0.1",
        "PROXY_PORT": str(port),
    }
    proxy = proxy_factory(command=PYTHON_M_STPROXY, env=env)
    assert (proxy.host, proxy.port) == ("127.0.0.1", port)
    response = fetch(port, "GET", "/_stcore/health")
    assert (response.status, response.body) == (200, b"ok")


def test_python_m_stproxy_flags_win_over_environment(streamlit: StreamlitProcess, proxy_factory) -> None:
    """Given both, the flags decide where the proxy listens and which Streamlit it forwards to."""
    port, env_port, dead_port = free_port(), free_port(), free_port()
    env = {
        "STREAMLIT_HOST": "127.0.0.1",
        "STREAMLIT_PORT": str(dead_port),
        "PROXY_HOST": "127.0.0.1",
        "PROXY_PORT": str(env_port),
    }
    proxy = proxy_factory(
        "--streamlit-port", str(streamlit.port), "--proxy-port", str(port), command=PYTHON_M_STPROXY, env=env
    )
    assert proxy.ports == [port]
    response = fetch(port, "GET", "/_stcore/health")
    assert (response.status, response.body) == (200, b"ok")


# ------------------------------------------------------------ 8. what the upstream sees


def test_forwarding_headers_are_set(upstream_proxy: ProxyProcess) -> None:
    """The upstream learns the client's address, scheme and Host, and still gets the client's own Host."""
    info = echo(upstream_proxy, headers=[("Host", "app.test:8443")])
    assert seen(info, "host") == ["app.test:8443"]
    assert seen(info, "x-forwarded-for") == ["127.0.0.1"]
    assert seen(info, "x-forwarded-proto") == ["http"]
    assert seen(info, "x-forwarded-host") == ["app.test:8443"]
    forwarded = seen(info, "forwarded")
    assert len(forwarded) == 1
    assert re.search(r"for=\"?127\.0\.0\.1", forwarded[0]), forwarded
    assert "proto=http" in forwarded[0]


def test_client_x_forwarded_for_is_replaced_by_default(upstream_proxy: ProxyProcess) -> None:
    """An untrusted client cannot forge its address: its X-Forwarded-For is dropped, not passed on."""
    info = echo(upstream_proxy, headers=[("X-Forwarded-For", "6.6.6.6"), ("Forwarded", "for=6.6.6.6")])
    assert seen(info, "x-forwarded-for") == ["127.0.0.1"]
    assert "6.6.6.6" not in json.dumps(seen(info, "forwarded"))


def test_client_x_forwarded_for_is_appended_to_when_trusted(
    upstream_server: UpstreamServerProcess, proxy_factory
) -> None:
    """Behind a trusted proxy (``--trust-forwarded``), the chain it reports is kept and the peer appended."""
    proxy = proxy_factory("--upstream", upstream_server.address, "--trust-forwarded", "127.0.0.1/32")
    info = echo(proxy, headers=[("X-Forwarded-For", "6.6.6.6")])
    assert seen(info, "x-forwarded-for") in (["6.6.6.6, 127.0.0.1"], ["6.6.6.6", "127.0.0.1"])


def test_hop_by_hop_headers_are_not_forwarded(upstream_proxy: ProxyProcess) -> None:
    """Connection, the headers it names, Keep-Alive and Proxy-Authorization stay between client and proxy."""
    info = echo(
        upstream_proxy,
        headers=[
            ("Connection", "close, X-Foo"),
            ("X-Foo", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
            ("X-Kept", "yes"),
        ],
    )
    names = {k.lower() for k, _ in info["headers"]}
    assert not names & {"x-foo", "keep-alive", "proxy-authorization"}, info["headers"]
    assert all("x-foo" not in v.lower() for v in seen(info, "connection"))
    assert seen(info, "x-kept") == ["yes"]


def test_repeated_headers_and_cookies_pass_byte_for_byte(upstream_proxy: ProxyProcess) -> None:
    """Repeated headers keep their order and Cookie its exact bytes (Streamlit's XSRF cookie has ``|``)."""
    cookie = '_streamlit_xsrf=2|abc|def|123; other=a%20b; q="x y"; e=='
    info = echo(
        upstream_proxy,
        headers=[("X-Rep", "a"), ("Cookie", cookie), ("X-Rep", "b , c"), ("Accept", "text/html;q=0.9, */*")],
    )
    assert seen(info, "x-rep") in (["a", "b , c"], ["a, b , c"])
    assert seen(info, "cookie") == [cookie]
    assert seen(info, "accept") == ["text/html;q=0.9, */*"]


def _payload(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("size", [0, 10, 5 * MIB], ids=["0B", "10B", "5MB"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_bodies_arrive_intact(upstream_proxy: ProxyProcess, method: str, size: int, framing: str) -> None:
    """Uploads of any size and framing reach the upstream with the same bytes."""
    payload = _payload(size)
    if framing == "chunked":
        pieces = [payload[i : i + 100_000] for i in range(0, size, 100_000)]
        info = echo(upstream_proxy, method, "/echo/upload", chunks=pieces)
    else:
        info = echo(upstream_proxy, method, "/echo/upload", body=payload)
    assert info["method"] == method
    assert (info["body_length"], info["body_sha256"]) == (size, hashlib.sha256(payload).hexdigest())


def test_query_string_is_forwarded_verbatim(upstream_proxy: ProxyProcess) -> None:
    """The request target reaches the upstream unchanged: no decoding, re-encoding or reordering."""
    target = "/echo/a%2Fb/%7Ec?z=1&a=%2F%20x&c=&d=%E2%9C%93&e=a+b&a=2&flag"
    info = echo(upstream_proxy, "GET", target)
    assert info["target"] == target


@pytest.mark.parametrize(
    "request_line, status",
    [
        (b"GET http://evil.example/ HTTP/1.1", 400),
        (b"CONNECT evil.example:443 HTTP/1.1", 405),
    ],
    ids=["absolute-form", "connect"],
)
def test_requests_for_other_hosts_are_refused(
    upstream_server: UpstreamServerProcess, upstream_proxy: ProxyProcess, request_line: bytes, status: int
) -> None:
    """The proxy is not an open proxy: absolute-form and CONNECT requests never reach the upstream."""
    before = upstream_server.stats()["requests_total"]
    raw = raw_exchange(upstream_proxy.port, request_line + b"\r\nHost: evil.example\r\n\r\n")
    assert status_of(raw) == status
    after = upstream_server.stats()
    # Only the two /stats requests of this test reached the upstream.
    assert after["requests_total"] == before + 1, after["request_lines"][-5:]
    assert not any("evil.example" in line for line in after["request_lines"])
