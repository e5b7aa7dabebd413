"""
A fast loopback upstream for ``benchmarks/run.py``, standing in for Streamlit.

One asyncio process on raw sockets (``asyncio.Protocol``, no HTTP or WebSocket library), so that
it costs as little per request and per frame as Python allows:

- ``GET /static/small``: a fixed 2 KiB JavaScript-like body (Content-Length, keep-alive);
- ``GET /static/big?bytes=N``: N bytes (default 512 MiB) streamed with backpressure, 256 KiB
  writes of a prebuilt buffer, Content-Length set (as Streamlit serves a static file);
- ``GET /_stcore/health``: ``ok``;
- ``GET /_bench/ws``: ``{"open": N}``, the WebSockets open on this upstream (``run.py`` waits for
  a proxy to close its upstream legs after each WebSocket run); ``GET /_bench/reset`` aborts them
  all and answers ``{"closed": N}``;
- ``/_stcore/stream``: a WebSocket that accepts the ``streamlit`` subprotocol and, like Streamlit,
  never accepts an extension (no permessage-deflate).  Binary and text frames are echoed; a text
  frame ``{"push": N, "size": S}`` switches the connection to push mode: N binary frames of S bytes
  (N = 0: until the client goes) written as fast as TCP backpressure allows.

    python benchmarks/upstream.py [--port 0] [--cpus 0]

It prints ``{"port": PORT}`` on one line once it listens, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SMALL_BODY = (b"/* streamlit-like static chunk */\n" + b"x" * 2048)[:2048]
SMALL = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\n"
    b"Cache-Control: no-cache\r\nContent-Length: %d\r\n\r\n" % len(SMALL_BODY)
) + SMALL_BODY
HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
BIG_CHUNK = memoryview(b"a" * (256 * 1024))
DEFAULT_BIG = 512 * 2**20
HIGH_WATER = 256 * 1024

websockets: set[UpstreamProtocol] = set()


def json_response(doc: dict) -> bytes:
    body = json.dumps(doc).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    ) + body


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """A server (unmasked) frame header."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def unmask(payload: bytes, key: bytes) -> bytes:
    if key == b"\0\0\0\0" or not payload:
        return payload
    n = len(payload)
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        n, "little"
    )


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive until an upgrade, then WebSocket frames."""

    def __init__(self) -> None:
        self.buf = b""
        self.ws = False
        self.paused = False
        self.closed = False
        self.big_left = 0  # bytes of a big body still to write
        self.push_left = -1  # frames still to push (0: forever), -1: not pushing
        self.push_blob = b""
        self.push_frames = 0

    # ----------------------------------------------------------------- plumbing
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def connection_lost(self, exc) -> None:
        self.closed = True
        websockets.discard(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.big_left:
            self.pump_big()
        elif self.push_left >= 0:
            self.pump_push()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.ws:
            self.ws_frames()
        elif not self.big_left:
            self.http_requests()

    # ----------------------------------------------------------------- HTTP
    def http_requests(self) -> None:
        out = []
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            buf = buf[end + 4 :]
            line_end = head.find(b"\r\n")
            line = head if line_end < 0 else head[:line_end]
            try:
                _method, target, _version = line.split(b" ", 2)
            except ValueError:
                self.transport.close()
                return
            lower = head.lower()
            if b"content-length:" in lower:
                length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if len(buf) < length:  # wait for the whole body (requests here have none)
                    buf = head + b"\r\n\r\n" + buf
                    break
                buf = buf[length:]
            if target.startswith(b"/static/small"):
                out.append(SMALL)
            elif target.startswith(b"/_stcore/stream") and b"upgrade: websocket" in lower:
                self.buf = buf
                if out:
                    self.transport.write(b"".join(out))
                self.upgrade(head)
                return
            elif target.startswith(b"/static/big"):
                size = DEFAULT_BIG
                if b"bytes=" in target:
                    size = int(target.split(b"bytes=", 1)[1].split(b"&", 1)[0])
                out.append(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % size
                )
                self.transport.write(b"".join(out))
                self.buf = buf
                self.big_left = size
                self.pump_big()
                return
            elif target.startswith(b"/_stcore/health"):
                out.append(HEALTH)
            elif target.startswith(b"/_bench/ws"):
                out.append(json_response({"open": len(websockets)}))
            elif target.startswith(b"/_bench/reset"):
                closed = len(websockets)
                for ws in list(websockets):
                    ws.transport.abort()
                websockets.clear()
                out.append(json_response({"closed": closed}))
            else:
                out.append(NOT_FOUND)
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))

    def pump_big(self) -> None:
        write, closing = self.transport.write, self.transport.is_closing
        while self.big_left and not self.paused and not closing():
            n = min(self.big_left, len(BIG_CHUNK))
            write(BIG_CHUNK if n == len(BIG_CHUNK) else BIG_CHUNK[:n])
            self.big_left -= n
        if not self.big_left and self.buf and not closing():
            self.http_requests()  # a request pipelined behind the download

    # ----------------------------------------------------------------- WebSocket
    def upgrade(self, head: bytes) -> None:
        key = protocols = None
        for raw in head.split(b"\r\n")[1:]:
            name, _, value = raw.partition(b":")
            name = name.strip().lower()
            if name == b"sec-websocket-key":
                key = value.strip()
            elif name == b"sec-websocket-protocol":
                protocols = [p.strip() for p in value.split(b",")]
        if key is None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
        )
        if protocols and b"streamlit" in protocols:
            response += b"Sec-WebSocket-Protocol: streamlit\r\n"
        self.transport.write(response + b"\r\n")
        self.ws = True
        websockets.add(self)
        if self.buf:
            self.ws_frames()

    def ws_frames(self) -> None:
        buf = self.buf
        n = len(buf)
        i = 0
        out = []
        while n - i >= 2:
            b0 = buf[i]
            b1 = buf[i + 1]
            length = b1 & 0x7F
            h = i + 2
            if length == 126:
                if n - i < 4:
                    break
                length = int.from_bytes(buf[h : h + 2], "big")
                h += 2
            elif length == 127:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[h : h + 8], "big")
                h += 8
            if b1 & 0x80:
                key = buf[h : h + 4]
                h += 4
            else:
                key = b"\0\0\0\0"
            if n < h + length:
                break
            payload = unmask(buf[h : h + length], key)
            i = h + length
            opcode = b0 & 0x0F
            if opcode == 1 and payload[:1] == b"{":
                try:
                    command = json.loads(payload)
                except ValueError:
                    command = None
                if isinstance(command, dict) and "push" in command:
                    if out:
                        self.transport.write(b"".join(out))
                        out = []
                    self.start_push(int(command["push"]), int(command.get("size") or 100))
                    continue
            if opcode == 8:  # close: answer with the same code, then close
                out.append(frame_header(8, min(len(payload), 2)) + payload[:2])
                self.transport.write(b"".join(out))
                self.transport.close()
                self.buf = b""
                return
            if opcode == 9:  # ping
                out.append(frame_header(10, len(payload)) + payload)
            elif opcode == 10:  # pong
                pass
            else:  # data or continuation: echo as it came (fragmentation kept)
                out.append(frame_header(opcode, len(payload), bool(b0 & 0x80)) + payload)
        self.buf = buf[i:] if i < n else b""
        if out and not self.closed:
            self.transport.write(b"".join(out))

    def start_push(self, count: int, size: int) -> None:
        frame = frame_header(2, size) + b"b" * size
        per_blob = max(1, 65536 // len(frame))
        if count:
            per_blob = min(per_blob, count)
        self.push_blob = frame * per_blob
        self.push_frames = per_blob
        self.push_left = count
        self.push_last = frame
        self.pump_push()

    def pump_push(self) -> None:
        write, closing = self.transport.write, self.transport.is_closing
        blob, per_blob = self.push_blob, self.push_frames
        # a write to a connection the client has reset fails quietly (no pause_writing): stop
        # at is_closing(), or this loop would spin forever
        while not self.paused and not closing():
            if self.push_left == 0:  # forever
                write(blob)
            elif self.push_left >= per_blob:
                write(blob)
                self.push_left -= per_blob
                if not self.push_left:
                    self.push_left = -1
                    return
            elif self.push_left > 0:
                write(self.push_last * self.push_left)
                self.push_left = -1
                return
            else:
                return


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    await stop
    server.close()
    for ws in list(websockets):
        ws.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpus", default="", help="pin to these CPUs, e.g. 0 or 0,2")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
