"""
The TLS edge end to end: a real ``twistd -n stproxy`` (or ``python -m stproxy``) with ``ssl:``
listeners, client certificates, the HTTP→HTTPS redirect and HSTS, an upstream over TLS,
certificate reload and start-up errors, in front of a real Streamlit or the stdlib test
upstream, spoken to with ``curl``, ``openssl s_client`` and a small stdlib ``wss://`` client.

Certificates come from the ``pki`` fixture (``tests/pki.py``); the same checks without
processes are in ``tests/edge/``, ``tests/upstream/test_tls.py`` and ``tests/test_parsetls.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from certs import Issued
from harness import HERE, ProcessOutput, ProxyProcess, StreamlitProcess, run_proxy, start_proxy, wait_until
from pki import PKI, bad_files, der, install

PYTHON_M_STPROXY = [sys.executable, "-m", "stproxy"]
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")


# -------------------------------------------------------------------------------------- helpers


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", *args], capture_output=True, text=True, timeout=timeout)


def https_url(port: int, path: str) -> list[str]:
    """curl arguments for https://localhost:PORT/path with localhost pinned to 127.0.0.1."""
    return ["--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}{path}"]


def s_client(port: int, *args: str) -> subprocess.CompletedProcess:
    """``openssl s_client`` with stdin closed: it handshakes, prints the session and hangs up."""
    command = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=20)


def negotiated(result: subprocess.CompletedProcess) -> tuple[str, str] | None:
    """(protocol, cipher) from s_client's output, or ``None`` if no session was set up."""
    match = re.search(r"New, (TLSv[\d.]+), Cipher is (\S+)", result.stdout)
    return (match.group(1), match.group(2)) if match else None


def headers_of(curl_output: str) -> dict[str, str]:
    """The response headers in ``curl -i`` output (read as text, so lines end in ``\\n``)."""
    lines = curl_output.replace("\r\n", "\n").split("\n\n")[0].split("\n")[1:]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert "content-type" in headers, curl_output
    return headers


def wait_until_reloadable(proxy: ProxyProcess) -> None:
    """
    Wait for the line logged once SIGHUP is handled: under twistd the listeners announce
    themselves before the reactor runs, and a SIGHUP before the handler would end the process.
    """
    proxy.wait_for_output(r"TLS certificate for \S+: .*, valid until")


def wait_for_ports(proxy: ProxyProcess, count: int) -> list[int]:
    return wait_until(lambda: len(proxy.ports) >= count and proxy.ports, 10, message=proxy.output)


class WebSocketClient:
    """A minimal RFC 6455 client on a blocking TLS socket: a handshake, unfragmented frames."""

    def __init__(self, port: int, cafile: str, path: str = "/_stcore/stream", protocols=("streamlit",)) -> None:
        context = ssl.create_default_context(cafile=cafile)
        self.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost"
        )
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"localhost:{port}"
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\nOrigin: https://{host}\r\n\r\n".encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        if self.status == 101:
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            assert self.headers["sec-websocket-accept"] == accept

    @property
    def protocol(self) -> str | None:
        return self.headers.get("sec-websocket-protocol")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed")
        self._buffer += data

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = bytes([0x80 | opcode, 0x80 | length])
        elif length < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> tuple[int, bytes]:
        """The next data frame (opcode, payload); pings are answered, a close raises."""
        while True:
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._take(2), "big")
            elif length == 127:
                length = int.from_bytes(self._take(8), "big")
            payload = self._take(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[:2].hex()} {payload[2:]!r}")
            elif opcode != 0xA:
                return opcode, payload

    def close(self) -> None:
        try:
            self.send(b"\x03\xe8", 0x8)
        except OSError:
            pass
        self.sock.close()


def rerun_until_script_finished(ws: WebSocketClient) -> list[str]:
    """Ask Streamlit to run the app and collect the message types until the run finishes."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ws.send(BackMsg(rerun_script=ClientState(query_string="", page_script_hash="")).SerializeToString())
    kinds: list[str] = []
    while "script_finished" not in kinds:
        opcode, payload = ws.receive()
        assert opcode == 0x2
        kinds.append(ForwardMsg.FromString(payload).WhichOneof("type"))
    return kinds


def peer_certificate(port: int, cafile: str) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is served (verified against ``cafile``)."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            return sock.getpeercert(binary_form=True)


needs_tools = pytest.mark.skipif(not (OPENSSL and CURL), reason="needs the openssl and curl commands")


# ------------------------------------------------------------- TLS in front of a real Streamlit


@pytest.fixture(scope="module")
def tls_proxy(pki: PKI, streamlit: StreamlitProcess) -> Iterator[ProxyProcess]:
    """``ssl:`` and ``tcp:`` listeners side by side, a redirect listener and HSTS, before Streamlit."""
    proxy = start_proxy(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--redirect-http", "tcp:0:interface=127.0.0.1",
        "--hsts", "31536000",
        "--upstream", f"127.0.0.1:{streamlit.port}",
    )  # fmt: skip
    try:
        wait_for_ports(proxy, 3)
        yield proxy
    finally:
        proxy.stop()


@needs_tools
def test_curl_gets_health_over_https_with_hsts(pki: PKI, tls_proxy: ProxyProcess) -> None:
    """curl trusting only the root CA gets Streamlit's health answer, with HSTS, over TLS."""
    tls_port, plain_port, _ = tls_proxy.ports
    result = curl("-i", "--cacert", pki.ca, *https_url(tls_port, "/_stcore/health"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200"), result.stdout
    assert result.stdout.endswith("ok")
    assert headers_of(result.stdout)["strict-transport-security"] == "max-age=31536000"

    plain = curl("-i", f"http://127.0.0.1:{plain_port}/_stcore/health")
    assert plain.stdout.startswith("HTTP/1.1 200"), plain.stdout
    assert "strict-transport-security" not in headers_of(plain.stdout), "HSTS over plain HTTP"


@needs_tools
def test_old_protocols_are_refused_and_tls13_is_negotiated(pki: PKI, tls_proxy: ProxyProcess) -> None:
    """
    TLS 1.0, 1.1 and static-RSA suites are refused with an alert, TLS 1.3 is chosen when
    offered, and TLS 1.2 gets a forward-secret GCM suite.
    """
    port = tls_proxy.port
    for old in ("-tls1", "-tls1_1"):
        result = s_client(port, old, "-cipher", "DEFAULT@SECLEVEL=0")
        assert negotiated(result) in (None, ("(NONE)", "(NONE)")), result.stdout
        assert "alert protocol version" in result.stderr, result.stderr  # the server said no
    assert negotiated(s_client(port, "-CAfile", pki.ca)) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    protocol, cipher = negotiated(s_client(port, "-tls1_2", "-CAfile", pki.ca))
    assert protocol == "TLSv1.2" and cipher.startswith("ECDHE-") and "GCM" in cipher
    static_rsa = s_client(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA")
    assert negotiated(static_rsa) in (None, ("(NONE)", "(NONE)")), static_rsa.stdout


def test_wss_gets_the_streamlit_subprotocol_from_real_streamlit(pki: PKI, tls_proxy: ProxyProcess) -> None:
    """HTTPS and WSS share the port: the Streamlit stream opens over TLS and the app runs."""
    ws = WebSocketClient(tls_proxy.port, pki.ca, protocols=("streamlit", "PLACEHOLDER_AUTH_TOKEN"))
    try:
        assert ws.status == 101, ws.headers
        assert ws.protocol == "streamlit"
        assert "new_session" in rerun_until_script_finished(ws)
    finally:
        ws.close()


def test_http_listener_redirects_to_https_with_308(tls_proxy: ProxyProcess) -> None:
    """
    A GET or POST on the redirect listener gets a 308 to the same path and query on the HTTPS
    port, without HSTS.
    """
    tls_port, _, redirect_port = tls_proxy.ports
    for method in ("GET", "POST"):
        with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as sock:
            sock.sendall(
                f"{method} /some/page?a=1&b=%20x HTTP/1.1\r\nHost: app.test:{redirect_port}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        head = response.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
        assert head[0] == "HTTP/1.1 308 Permanent Redirect", head
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in head[1:])}
        assert headers["location"] == f"https://app.test:{tls_port}/some/page?a=1&b=%20x"
        assert "strict-transport-security" not in headers


# ------------------------------------------------------------------- client certificates (mTLS)


@pytest.fixture(scope="module")
def mtls_proxy(pki: PKI, streamlit: StreamlitProcess) -> Iterator[ProxyProcess]:
    proxy = start_proxy(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--tls-client-ca", pki.ca, "--tls-min-version", "1.3",
        "--upstream", f"127.0.0.1:{streamlit.port}",
    )  # fmt: skip
    try:
        yield proxy
    finally:
        proxy.stop()


@needs_tools
def test_mtls_accepts_the_client_certificate_and_refuses_others(pki: PKI, mtls_proxy: ProxyProcess) -> None:
    """
    With --tls-client-ca, curl with a certificate from that CA gets through, while one without a
    certificate or with a stranger's is refused during the handshake.
    """
    url = https_url(mtls_proxy.port, "/_stcore/health")
    ok = curl("--cacert", pki.ca, "--cert", str(pki.client.cert_path), "--key", str(pki.client.key_path), *url)
    assert (ok.returncode, ok.stdout) == (0, "ok"), ok.stderr
    for client in ([], ["--cert", str(pki.stranger.cert_path), "--key", str(pki.stranger.key_path)]):
        refused = curl("--cacert", pki.ca, *client, *url)
        assert refused.returncode != 0 and refused.stdout == "", refused
    # Without a certificate the server ends the handshake with an alert (under TLS 1.3 the client
    # only reads it after its side is done, so s_client must stay to read: -ign_eof).
    result = s_client(mtls_proxy.port, "-CAfile", pki.ca, "-ign_eof")
    assert "alert certificate required" in result.stderr, result.stderr


@needs_tools
def test_tls_min_version_13_refuses_tls12(pki: PKI, mtls_proxy: ProxyProcess) -> None:
    """With --tls-min-version 1.3, a TLS 1.2 client is refused with a protocol version alert."""
    result = s_client(mtls_proxy.port, "-tls1_2", "-CAfile", pki.ca)
    assert negotiated(result) in (None, ("(NONE)", "(NONE)")), result.stdout
    assert "alert protocol version" in result.stderr


# ---------------------------------------------------------------------------- upstream over TLS


def start_tls_upstream(issued: Issued) -> tuple[subprocess.Popen, ProcessOutput, int]:
    """``tests/upstream_server.py`` serving HTTPS with ``issued``'s certificate."""
    command = [
        sys.executable, str(HERE / "upstream_server.py"),
        "--tls-cert", str(issued.cert_path), "--tls-key", str(issued.key_path),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output = ProcessOutput(process.stdout)
    match = output.wait_for(r'\{"port": (\d+)\}', 20, alive=lambda: process.poll() is None)
    if match is None:
        process.kill()
        raise RuntimeError(f"upstream_server.py did not start:\n{output.text()}")
    return process, output, int(match.group(1))


@pytest.fixture(scope="module")
def tls_upstreams(pki: PKI) -> Iterator[dict[str, int]]:
    """Two HTTPS test upstreams: one with a certificate for localhost, one naming another host."""
    good = pki.intermediate.issue(pki.directory / "upstream", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    wrong = pki.root.issue(pki.directory / "wrong-upstream", "other.test", dns=["other.test"])
    started = [start_tls_upstream(good), start_tls_upstream(wrong)]
    try:
        yield {"good": started[0][2], "wrong": started[1][2]}
    finally:
        for process, output, _ in started:
            process.terminate()
            process.wait(10)
            output.join()


def fetch_json(url: str, cafile: str) -> dict:
    context = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, timeout=20, context=context) as response:
        return json.load(response)


def test_https_upstream_with_a_private_ca_is_reached_and_told_https(
    pki: PKI, tls_upstreams: dict[str, int], proxy_factory
) -> None:
    """
    Browser →TLS→ stproxy →TLS (verified against --upstream-ca, by host name)→ upstream, and
    the upstream hears that the client came over HTTPS.
    """
    proxy = proxy_factory(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--upstream", f"https://localhost:{tls_upstreams['good']}", "--upstream-ca", pki.ca,
    )  # fmt: skip
    info = fetch_json(f"https://127.0.0.1:{proxy.port}/echo?x=1", pki.ca)
    headers = {name.lower(): value for name, value in info["headers"]}
    assert info["target"] == "/echo?x=1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["forwarded"].endswith("proto=https")


@pytest.mark.parametrize(
    "upstream, trust, why",
    [
        ("wrong", ["--upstream-ca", "CA"], r"IPAddressMismatch\(.*127\.0\.0\.1"),
        ("good", [], r"certificate verify failed"),  # the private CA is not in the platform's store
    ],
    ids=["names-another-host", "untrusted-ca"],
)
def test_https_upstream_failing_verification_is_refused_with_502(
    pki: PKI, tls_upstreams: dict[str, int], proxy_factory, upstream: str, trust: list[str], why: str
) -> None:
    """Both legs refuse an upstream whose certificate fails; the log line says why."""
    trust = [pki.ca if arg == "CA" else arg for arg in trust]
    proxy = proxy_factory("--upstream", f"https://127.0.0.1:{tls_upstreams[upstream]}", *trust)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{proxy.url}/echo", timeout=20)
    assert caught.value.code == 502
    proxy.wait_for_output(r"502 for GET /echo: upstream https://127\.0\.0\.1:\d+ could not be reached: .*" + why)


def test_upstream_insecure_connects_but_logs_what_it_would_have_refused(
    pki: PKI, tls_upstreams: dict[str, int], proxy_factory
) -> None:
    """
    With --upstream-insecure, an upstream whose certificate fails verification is reached, and
    the proxy warns that it is not verifying and why it would have refused.
    """
    proxy = proxy_factory(
        "--upstream", f"https://127.0.0.1:{tls_upstreams['wrong']}", "--upstream-insecure"
    )
    proxy.wait_for_output(r"TLS certificates are NOT verified \(--upstream-insecure\)")
    with urllib.request.urlopen(f"{proxy.url}/echo", timeout=20) as response:
        assert response.status == 200
    proxy.wait_for_output(
        r"TLS certificate would be refused: unable to get issuer cert locally \(CN=other.test.*"
        r"certificate does not name 127\.0\.0\.1.*; connecting anyway"
    )


class RecordingWebSocketUpstream:
    """
    A TLS server in a thread that accepts every WebSocket handshake and records its head; any
    other request (the proxy's health checks) gets a plain 200.
    """

    def __init__(self, issued: Issued) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(issued.cert_path, issued.key_path)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[dict[str, str]] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        try:
            sock = self.context.wrap_socket(raw, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            raw.close()
            return
        lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        if "sec-websocket-key" not in headers:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            sock.close()
            return
        accept = base64.b64encode(
            hashlib.sha1((headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        protocol = headers["sec-websocket-protocol"].split(",")[0].strip()
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: " + protocol.encode() + b"\r\n\r\n"
        )
        self.heads.append(headers)
        self.connections.append(sock)

    def close(self) -> None:
        self.listener.close()
        for sock in self.connections:
            sock.close()


def test_websocket_leg_uses_tls_upstream_and_says_https(pki: PKI, proxy_factory) -> None:
    """The WebSocket leg to an https:// upstream is TLS, verified, and carries proto=https."""
    upstream = RecordingWebSocketUpstream(pki.server)
    try:
        proxy = proxy_factory(
            "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
            "--upstream", f"https://127.0.0.1:{upstream.port}", "--upstream-ca", pki.ca,
        )  # fmt: skip
        ws = WebSocketClient(proxy.port, pki.ca)
        try:
            assert ws.status == 101, (ws.status, proxy.output())
            assert ws.protocol == "streamlit"
        finally:
            ws.close()
        [head] = upstream.heads
        assert head["x-forwarded-proto"] == "https"
        assert head["forwarded"].endswith("proto=https")
    finally:
        upstream.close()


def test_websocket_leg_refuses_an_upstream_naming_another_host_with_502(pki: PKI, proxy_factory) -> None:
    """The WebSocket leg checks the upstream certificate too: 502, and the log says why."""
    wrong = pki.root.issue(pki.directory / "wrong-ws-upstream", "other.test", dns=["other.test"])
    upstream = RecordingWebSocketUpstream(wrong)
    try:
        proxy = proxy_factory(
            "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
            "--upstream", f"https://127.0.0.1:{upstream.port}", "--upstream-ca", pki.ca,
        )  # fmt: skip
        ws = WebSocketClient(proxy.port, pki.ca)
        ws.close()
        assert ws.status == 502
        assert upstream.heads == [], "the handshake must not reach an unverified upstream"
        proxy.wait_for_output(r"WebSocket upstream https://127\.0\.0\.1:\d+ unreachable for .*IPAddressMismatch")
    finally:
        upstream.close()


# --------------------------------------------------------------------------- certificate reload


def test_sighup_reloads_while_an_open_websocket_keeps_relaying(
    pki: PKI, streamlit: StreamlitProcess, tmp_path: Path, proxy_factory
) -> None:
    """
    After the certificate files are replaced and SIGHUP is sent, a new connection gets the new
    certificate while a WebSocket opened before stays open and still relays; a broken
    replacement is refused with a log line and the last good certificate stays.
    """
    live = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    first = der(live)
    proxy = proxy_factory(
        "--listen", "ssl:0:interface=127.0.0.1",
        "--tls-cert", str(live.cert_path), "--tls-key", str(live.key_path),
        "--tls-reload-interval", "0", "--upstream", f"127.0.0.1:{streamlit.port}",
    )  # fmt: skip
    port = proxy.port
    wait_until_reloadable(proxy)
    ws = WebSocketClient(port, pki.ca, protocols=("streamlit", "PLACEHOLDER_AUTH_TOKEN"))
    try:
        assert ws.status == 101
        rerun_until_script_finished(ws)
        renewed = pki.intermediate.issue(tmp_path / "renewed", "localhost", dns=["localhost"], ips=["127.0.0.1"])
        install(renewed, live)
        since = len(proxy.output())
        proxy.signal(signal.SIGHUP)
        proxy.wait_for_output(r"TLS certificate reloaded for ssl:0\S* \(SIGHUP\)", since=since)
        assert peer_certificate(port, pki.ca) == der(renewed) != first
        assert ws.sock.getpeercert(binary_form=True) == first
        assert "script_finished" in rerun_until_script_finished(ws), "the old WebSocket still relays"

        live.key_path.write_bytes(pki.client.key_path.read_bytes())  # a key for another certificate
        since = len(proxy.output())
        proxy.signal(signal.SIGHUP)
        proxy.wait_for_output(r"TLS certificate reload for ssl:0\S* failed \(SIGHUP\).*does not match", since=since)
        assert peer_certificate(port, pki.ca) == der(renewed)
        assert proxy.process.poll() is None
    finally:
        ws.close()


def test_changed_files_are_picked_up_without_a_signal(pki: PKI, tmp_path: Path, proxy_factory) -> None:
    """
    Certificate files replaced on disk are served to new connections within the reload interval,
    without a SIGHUP.
    """
    live = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    proxy = proxy_factory(
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={live.key_path}:certKey={live.cert_path}",
        "--tls-reload-interval", "0.2", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    assert peer_certificate(proxy.port, pki.ca) == der(live)
    renewed = pki.intermediate.issue(tmp_path / "renewed", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    install(renewed, live)
    proxy.wait_for_output(r"TLS certificate reloaded for .* \(files changed\)")
    assert peer_certificate(proxy.port, pki.ca) == der(renewed)


def test_sighup_reloads_under_python_m_stproxy(pki: PKI, tmp_path: Path, proxy_factory) -> None:
    """``python -m stproxy`` handles SIGHUP the same way, and keeps running."""
    live = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    proxy = proxy_factory(
        "--listen", "ssl:0:interface=127.0.0.1",
        "--tls-cert", str(live.cert_path), "--tls-key", str(live.key_path),
        "--tls-reload-interval", "0", "--upstream", "127.0.0.1:9",
        command=PYTHON_M_STPROXY,
    )  # fmt: skip
    renewed = pki.intermediate.issue(tmp_path / "renewed", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    install(renewed, live)
    wait_until_reloadable(proxy)
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_output(r"TLS certificate reloaded for .* \(SIGHUP\)")
    assert peer_certificate(proxy.port, pki.ca) == der(renewed)
    assert proxy.process.poll() is None


# ------------------------------------------------------------------------------ start-up errors


@pytest.mark.parametrize("runner", ["twistd", "python-m"])
@pytest.mark.parametrize("problem", ["missing", "mismatch", "expired", "not-pem"])
def test_bad_certificates_stop_start_up_with_one_line(pki: PKI, tmp_path: Path, problem: str, runner: str) -> None:
    """A missing, mismatched, expired or garbled certificate: one line naming the file, exit 2."""
    files, fragment = bad_files(pki, tmp_path, problem)
    command = PYTHON_M_STPROXY if runner == "python-m" else None
    result = run_proxy(
        "--listen", "ssl:0", "--tls-cert", files.cert, "--tls-key", files.key, command=command
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 2, result.stdout
    assert len(lines) == 1 and fragment in lines[0], result.stdout
