"""
A test-only HTTP/1.1 upstream for the things Streamlit cannot do cheaply.

Run it as ``python tests/upstream_server.py [--port N] [--tls-cert CERT --tls-key KEY]``: it prints
one JSON line ``{"port": N}`` and serves on 127.0.0.1 until killed, over TLS with the given
certificate if asked (an ``https://`` upstream for the TLS tests). Endpoints:

- ``GET|HEAD /big?mb=N[&chunked=1][&delay_ms=D]``: N MiB of :func:`big_body` (with Content-Length,
  or chunked), written as fast as the client takes it (plus ``D`` ms per 64 KiB block).
- ``GET /slow?seconds=S``: waits S seconds before sending the headers.
- ``ANY /echo...``: JSON with what arrived: method, raw target, path, query, HTTP version,
  headers as ``[name, value]`` pairs in order (repeats kept), body length and sha256.
- ``GET /stats``: JSON counters: ``open_connections`` (excluding the one asking),
  ``connections_total``, ``aborted_responses`` (a write failed because the client went away),
  ``completed_responses``, ``big_in_progress``, ``requests_total`` and the last
  ``request_lines``.
- ``GET /raw/NAME``: the bytes of ``RAW_RESPONSES[NAME]``, exactly, then the connection closes:
  responses no well-behaved server sends (a bad status line, a broken chunk, ...).
- ``GET /headers?n=N``: a 200 with N header fields ``X-Header-00000: value`` and so on.
- ``GET /cut?kb=N[&chunked=1]``: a 1 MiB body (with Content-Length, or chunked) of which only
  N KiB is sent before the connection is closed.

stdlib only (a ``ThreadingHTTPServer``), so it does not share a single line of code with the
Twisted stack it is testing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import ssl
import struct
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BLOCK = 64 * 1024
MIB = 1024 * 1024
_PATTERN = bytes(range(256)) * (BLOCK // 256)


def big_body(total: int):
    """
    Yield ``total`` bytes in blocks of 64 KiB; each block starts with its own index, so a lost,
    repeated or reordered block changes the sha256.
    """
    index = 0
    sent = 0
    while sent < total:
        block = struct.pack(">Q", index) + _PATTERN[8:]
        block = block[: total - sent]
        yield block
        sent += len(block)
        index += 1


def big_body_sha256(total: int) -> str:
    digest = hashlib.sha256()
    for block in big_body(total):
        digest.update(block)
    return digest.hexdigest()


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open_connections = 0
        self.connections_total = 0
        self.aborted_responses = 0
        self.completed_responses = 0
        self.big_in_progress = 0
        self.requests_total = 0
        self.request_lines: deque[str] = deque(maxlen=200)

    def add(self, name: str, delta: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "open_connections": self.open_connections - 1,  # not counting the /stats request's own
                "connections_total": self.connections_total,
                "aborted_responses": self.aborted_responses,
                "completed_responses": self.completed_responses,
                "big_in_progress": self.big_in_progress,
                "requests_total": self.requests_total,
                "request_lines": list(self.request_lines),
            }


STATS = _Stats()

#: What ``GET /raw/NAME`` sends, byte for byte.
RAW_RESPONSES = {
    "status-9999": b"HTTP/1.1 9999 Weird\r\nContent-Length: 2\r\n\r\nhi",
    "status-0": b"HTTP/1.1 0\r\nContent-Length: 2\r\n\r\nhi",
    "status-not-a-number": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nhi",
    "cr-in-reason": b"HTTP/1.1 200 OK\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nhi",
    "bad-chunk-size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n"
    ),
    "connection-listed": (
        b"HTTP/1.1 200 OK\r\nConnection: X-Hop, X-Other\r\nX-Hop: secret\r\nX-Other: 1\r\n"
        b"X-Kept: yes\r\nContent-Length: 2\r\n\r\nhi"
    ),
}
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stproxy-test-upstream/1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, format: str, *args) -> None:  # quiet: the tests read /stats, not logs
        pass

    def handle(self) -> None:
        STATS.add("open_connections")
        STATS.add("connections_total")
        try:
            super().handle()
        except _CLIENT_GONE:
            STATS.add("aborted_responses")
        finally:
            STATS.add("open_connections", -1)

    def parse_request(self) -> bool:
        with STATS.lock:
            STATS.requests_total += 1
            STATS.request_lines.append(self.raw_requestline.decode("latin-1").rstrip("\r\n"))
        return super().parse_request()

    # ------------------------------------------------------------------ helpers

    def _send(self, status: int, body: bytes, content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        STATS.add("completed_responses")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after the chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        head = self.command == "HEAD"
        if path.startswith("/echo"):
            self._echo(head)
        elif path == "/big" and self.command in ("GET", "HEAD"):
            self._big(head)
        elif path == "/slow":
            self._read_body()
            time.sleep(float(self._query().get("seconds", "5")))
            self._send(200, b"slow done\n", "text/plain", head)
        elif path == "/stats":
            self._send(200, json.dumps(STATS.snapshot()).encode(), head=head)
        elif path.startswith("/raw/") and path[5:] in RAW_RESPONSES:
            self.wfile.write(RAW_RESPONSES[path[5:]])
            self.wfile.flush()
            self.close_connection = True
            STATS.add("completed_responses")
        elif path == "/headers":
            self.send_response(200)
            for index in range(int(self._query().get("n", "10000"))):
                self.send_header(f"X-Header-{index:05d}", "value")
            self.send_header("Content-Length", "0")
            self.end_headers()
            STATS.add("completed_responses")
        elif path == "/cut":
            self._cut()
        else:
            self._read_body()
            self._send(404, b"not found\n", "text/plain", head)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _echo(self, head: bool) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        info = {
            "method": self.command,
            "target": self.path,
            "path": split.path,
            "query": split.query,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.raw_items()],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "client": list(self.client_address),
        }
        self._send(200, json.dumps(info).encode(), head=head)

    def _big(self, head: bool) -> None:
        query = self._query()
        total = int(float(query.get("mb", "1")) * MIB)
        chunked = query.get("chunked") == "1"
        delay = float(query.get("delay_ms", "0")) / 1000
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        if head:
            STATS.add("completed_responses")
            return
        STATS.add("big_in_progress")
        try:
            for block in big_body(total):
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
                if delay:
                    time.sleep(delay)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except _CLIENT_GONE:
            STATS.add("aborted_responses")
            self.close_connection = True
            return
        finally:
            STATS.add("big_in_progress", -1)
        STATS.add("completed_responses")


    def _cut(self) -> None:
        """Promise 1 MiB, send N KiB of it, then close: a connection cut in the middle of a body."""
        query = self._query()
        chunked = query.get("chunked") == "1"
        sent = int(query.get("kb", "64")) * 1024
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(MIB))
        self.end_headers()
        data = b"x" * sent
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        self.wfile.flush()
        self.close_connection = True


class TLSServer(ThreadingHTTPServer):
    """
    The same server over TLS. The handshake happens in each connection's own thread (on first
    read), so a client that fails it (as a proxy refusing the certificate does) only ends its
    own connection, quietly.
    """

    tls_context: ssl.SSLContext

    def get_request(self):
        sock, address = super().get_request()
        return self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, *_CLIENT_GONE)):
            super().handle_error(request, client_address)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", help="the private key for --tls-cert")
    args = parser.parse_args(argv)
    ThreadingHTTPServer.allow_reuse_address = True
    if args.tls_cert:
        server = TLSServer(("127.0.0.1", args.port), Handler)
        server.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
