"""
Load-generator worker for ``benchmarks/run.py``: one process, asyncio on raw sockets.

``run.py`` starts several of these (one per CPU the load may use) and drives them over stdin and
stdout, one JSON line each way:

1. ``python benchmarks/loadgen.py SPEC`` (SPEC: a JSON object, below) opens its connections and
   prints ``{"ready": true, ...}`` (what the handshakes negotiated, how long they took);
2. ``run.py`` writes ``{"start": T0, "end": T1}`` once every worker is ready (``time.monotonic``
   instants, one clock for all processes); the worker starts its traffic at once, counts what is
   complete between T0 and T1 (before T0 is warm-up) and its own CPU time over the same window,
   then prints ``{"msgs": ..., "bytes": ..., "cpu_s": ..., ...}`` and exits.

Modes (``SPEC["mode"]``):

- ``http``: ``conns`` keep-alive connections, each sending ``GET path`` and the next one as soon
  as the response is complete (HTTP/1.1, Content-Length or chunked); latencies are sampled;
- ``big``: one ``GET path`` read to the end into a 1 MiB buffer (``http.client``); the window is the
  download itself;
- ``rtt``: one WebSocket, one ``size``-byte binary message at a time, echoed by the upstream;
- ``echo``: ``conns`` WebSockets, each keeping ``window`` messages in flight (a new one sent for
  each one that comes back);
- ``push``: ``conns`` WebSockets, each asking the upstream for an endless push of ``size``-byte
  messages;
- ``idle``: ``conns`` WebSockets opened (``batch`` at a time), one echo each, then held; on the go
  line each is asked for one more echo and the result says how many answered.

WebSocket framing is done here (no library): client frames masked with a random key per
connection (a fixed frame is reused, so masking costs nothing per message), payloads the client
does not need skipped without copying, fragmented messages counted once.  ``deflate: true``
offers ``permessage-deflate; client_max_window_bits`` as Chromium does; when the server accepts,
messages are compressed and inflated with zlib as the extension says (context takeover unless
refused), otherwise they travel plain.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import sys
import time
import zlib

MAX_LATENCY_SAMPLES = 20000
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Stats:
    def __init__(self) -> None:
        self.msgs = 0
        self.bytes = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.measuring = False
        self.running = True
        self.error_text = ""


# ----------------------------------------------------------------------------------------- HTTP
class HttpClient(asyncio.Protocol):
    """Keep-alive GETs one after the other on one connection."""

    def __init__(self, stats: Stats, request: bytes, on_lost) -> None:
        self.stats = stats
        self.request = request
        self.on_lost = on_lost  # called when the connection ends while the run goes on
        self.close_after = False  # the last response said Connection: close
        self.in_flight = False
        self.buf = b""
        self.head_done = False
        self.need = 0  # body bytes still expected (Content-Length)
        self.chunked = False
        self.sent_at = 0.0
        self.transport = None
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connected.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.stats.running:
            return
        if exc is not None or self.in_flight:
            self.stats.errors += 1
            self.stats.error_text = f"connection lost with a request in flight: {exc}"
        self.on_lost()  # a new connection takes over (nginx closes after 1000 requests)

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.in_flight = True
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        stats = self.stats
        while True:
            if not self.head_done:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end].lower()
                buf = buf[end + 4 :]
                self.close_after = b"connection: close" in head
                if head[9:12] != b"200":
                    stats.errors += 1
                    stats.error_text = head[:40].decode("latin-1")
                at = head.find(b"content-length:")
                if at >= 0:
                    eol = head.find(b"\r\n", at)
                    self.need = int(head[at + 15 : eol if eol >= 0 else len(head)])
                    self.chunked = False
                elif b"chunked" in head:
                    self.chunked = True
                else:
                    self.need = 0
                    self.chunked = False
                self.head_done = True
            if self.chunked:
                done, buf = self.chunks(buf)
                if not done:
                    break
            else:
                if len(buf) < self.need:
                    break
                buf = buf[self.need :]
            # one response complete
            self.head_done = False
            self.in_flight = False
            if stats.measuring:
                stats.msgs += 1
                if len(stats.latencies) < MAX_LATENCY_SAMPLES:
                    stats.latencies.append(time.perf_counter() - self.sent_at)
            if self.close_after:
                break  # the server closes this connection: on_lost opens the next one
            if stats.running:
                self.send()
        self.buf = buf

    def chunks(self, buf: bytes) -> tuple[bool, bytes]:
        """Consume whole chunks; (True, rest) after the last one, (False, buf) if incomplete."""
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False, buf
            size = int(buf[:eol].split(b";", 1)[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # trailers, usually none
                if end < 0:
                    return False, buf
                return True, buf[end + 4 :]
            if len(buf) < eol + 2 + size + 2:
                return False, buf
            buf = buf[eol + 2 + size + 2 :]


async def run_http(spec: dict, stats: Stats, control) -> dict:
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    request = f"GET {spec['path']} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    clients: list[HttpClient] = []

    async def connect() -> HttpClient:
        _, client = await loop.create_connection(
            lambda: HttpClient(stats, request, on_lost), host, port
        )
        clients.append(client)
        return client

    async def replace() -> None:
        try:
            client = await connect()
        except OSError as e:
            stats.errors += 1
            stats.error_text = f"reconnecting: {e}"
            return
        if stats.running:
            client.send()

    def on_lost() -> None:
        loop.create_task(replace())

    started = time.monotonic()
    for _ in range(spec["conns"]):
        await connect()
    await control.ready({"open_s": time.monotonic() - started})
    go = await control.go()
    for client in list(clients):
        client.send()
    result = await window(stats, go)
    for client in clients:
        client.transport.abort()
    return result


# ------------------------------------------------------------------------------------ WebSocket
def client_frame(opcode: int, payload: bytes, key: bytes, rsv1: bool = False) -> bytes:
    """A masked client frame."""
    n = len(payload)
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0xFF)) + n.to_bytes(8, "big")
    if n:
        mask = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
            n, "little"
        )
    return head + key + payload


class WsClient(asyncio.Protocol):
    """One client WebSocket: the handshake, then frames parsed as they come."""

    def __init__(self, stats: Stats, spec: dict, on_messages) -> None:
        self.stats = stats
        self.spec = spec
        self.on_messages = on_messages  # called with (client, count) after each read
        self.key = os.urandom(4)
        self.open = asyncio.get_running_loop().create_future()
        self.handshake = b""
        self.pending = b""
        self.skip = 0  # payload bytes of the current frame still to skip
        self.skip_fin = False
        self.msg_len = 0
        self.inflate = None  # zlib decompressobj when permessage-deflate is on
        self.deflate = None
        self.reset_deflate = False
        self.compressed: list[bytes] | None = None  # fragments of a compressed message
        self.protocol = ""
        self.extensions = ""
        self.transport = None
        self.sent_at = 0.0
        self.plain_frame = b""

    # ----------------------------------------------------------------- handshake
    def connection_made(self, transport) -> None:
        self.transport = transport
        spec = self.spec
        key = base64.b64encode(os.urandom(16)).decode()
        self.accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        lines = [
            "GET /_stcore/stream HTTP/1.1",
            f"Host: {spec['host']}:{spec['port']}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: streamlit",
            f"Origin: http://{spec['host']}:{spec['port']}",
        ]
        if spec.get("deflate"):
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        elif self.stats.running:
            self.stats.errors += 1
            self.stats.error_text = f"WebSocket lost: {exc}"

    def data_received(self, data: bytes) -> None:
        if not self.open.done():
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.handshake[:end].decode("latin-1")
            rest = self.handshake[end + 4 :]
            self.handshake = b""
            if not head.startswith("HTTP/1.1 101"):
                self.open.set_exception(ConnectionError("handshake refused: " + head[:80]))
                self.transport.abort()
                return
            accept = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "sec-websocket-protocol":
                    self.protocol = value.strip()
                elif name == "sec-websocket-extensions":
                    self.extensions = value.strip()
                elif name == "sec-websocket-accept":
                    accept = value.strip()
            if accept != self.accept:
                self.open.set_exception(ConnectionError(f"bad Sec-WebSocket-Accept {accept!r}"))
                self.transport.abort()
                return
            self.setup_deflate()
            self.plain_frame = client_frame(2, self.spec["payload"], self.key)
            self.open.set_result(None)
            if not rest:
                return
            data = rest
        count = self.feed(data)
        if count:
            self.on_messages(self, count)

    def setup_deflate(self) -> None:
        ext = self.extensions.lower()
        if "permessage-deflate" not in ext:
            return
        params = {}
        for part in ext.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            params[name.strip()] = value.strip().strip('"')
        bits = int(params.get("client_max_window_bits") or 15)
        self.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
        self.reset_deflate = "client_no_context_takeover" in params
        self.inflate = zlib.decompressobj(-15)

    # ----------------------------------------------------------------- sending
    def send_messages(self, count: int) -> None:
        if self.deflate is None:
            self.transport.write(self.plain_frame * count)
            return
        frames = []
        payload, key = self.spec["payload"], self.key
        for _ in range(count):
            flush = zlib.Z_FULL_FLUSH if self.reset_deflate else zlib.Z_SYNC_FLUSH
            data = self.deflate.compress(payload) + self.deflate.flush(flush)
            frames.append(client_frame(2, data[:-4], key, rsv1=True))
        self.transport.write(b"".join(frames))

    def send_text(self, text: str) -> None:
        payload = text.encode()
        if self.deflate is not None:
            data = self.deflate.compress(payload) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
            self.transport.write(client_frame(1, data[:-4], self.key, rsv1=True))
        else:
            self.transport.write(client_frame(1, payload, self.key))

    # ----------------------------------------------------------------- receiving
    def feed(self, data: bytes) -> int:
        """Parse frames; returns how many data messages completed."""
        done = 0
        stats = self.stats
        if self.skip:
            n = len(data)
            if n < self.skip:
                self.skip -= n
                return 0
            data = data[self.skip :]
            self.skip = 0
            if self.skip_fin:
                done += 1
                if stats.measuring:
                    stats.bytes += self.msg_len
        if self.pending:
            data = self.pending + data
            self.pending = b""
        n = len(data)
        i = 0
        while n - i >= 2:
            b0 = data[i]
            b1 = data[i + 1]
            length = b1 & 0x7F
            h = i + 2
            if length >= 126:
                if length == 126:
                    if n - i < 4:
                        break
                    length = int.from_bytes(data[h : h + 2], "big")
                    h += 2
                else:
                    if n - i < 10:
                        break
                    length = int.from_bytes(data[h : h + 8], "big")
                    h += 8
            if b1 & 0x80:  # a masked server frame: not expected; its key is skipped
                h += 4
            opcode = b0 & 0x0F
            if opcode >= 8 or b0 & 0x40 or (opcode == 0 and self.compressed is not None):
                # control frame or compressed data: the payload is needed
                if n < h + length:
                    break
                payload = data[h : h + length]
                i = h + length
                if opcode >= 8:
                    self.control(opcode, payload)
                    continue
                if self.compressed is None:
                    self.compressed = []
                self.compressed.append(payload)
                if b0 & 0x80:
                    message = self.inflate.decompress(b"".join(self.compressed) + b"\0\0\xff\xff")
                    self.compressed = None
                    done += 1
                    if stats.measuring:
                        stats.bytes += len(message)
                continue
            if opcode:
                self.msg_len = 0
            self.msg_len += length
            if n < h + length:  # skip the rest of this payload as it comes
                self.skip = h + length - n
                self.skip_fin = bool(b0 & 0x80)
                i = n
                break
            i = h + length
            if b0 & 0x80:
                done += 1
                if stats.measuring:
                    stats.bytes += self.msg_len
        if i < n:
            self.pending = data[i:]
        if done and stats.measuring:
            stats.msgs += done
        return done

    def control(self, opcode: int, payload: bytes) -> None:
        if opcode == 9:  # ping: pong
            self.transport.write(client_frame(10, payload, self.key))
        elif opcode == 8:  # close
            if self.stats.running:
                self.stats.errors += 1
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.stats.error_text = f"closed by the server with {code}"
            self.transport.close()


async def open_websockets(spec: dict, stats: Stats, on_messages, count: int) -> list[WsClient]:
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    batch = spec.get("batch", 100)
    clients: list[WsClient] = []
    while len(clients) < count:
        pending = []
        for _ in range(min(batch, count - len(clients))):

            async def one() -> WsClient:
                _, client = await loop.create_connection(
                    lambda: WsClient(stats, spec, on_messages), host, port
                )
                await asyncio.wait_for(client.open, 30)
                return client

            pending.append(one())
        clients.extend(await asyncio.gather(*pending))
    if clients and clients[0].protocol != "streamlit":
        raise RuntimeError(f"subprotocol not echoed: {clients[0].protocol!r}")
    return clients


def negotiated(clients: list[WsClient]) -> dict:
    return {
        "extensions": clients[0].extensions if clients else "",
        "deflate": bool(clients and clients[0].deflate is not None),
    }


async def run_ws(spec: dict, stats: Stats, control) -> dict:
    mode = spec["mode"]
    if mode == "rtt":

        def on_messages(client: WsClient, count: int) -> None:
            now = time.perf_counter()
            if stats.measuring and len(stats.latencies) < MAX_LATENCY_SAMPLES * 10:
                stats.latencies.append(now - client.sent_at)
            if stats.running:
                client.sent_at = time.perf_counter()
                client.send_messages(1)

    elif mode == "echo":

        def on_messages(client: WsClient, count: int) -> None:
            if stats.running:
                client.send_messages(count)

    else:

        def on_messages(client: WsClient, count: int) -> None:
            pass

    started = time.monotonic()
    clients = await open_websockets(spec, stats, on_messages, 1 if mode == "rtt" else spec["conns"])
    await control.ready({"open_s": time.monotonic() - started, **negotiated(clients)})
    go = await control.go()
    for client in clients:
        if mode == "rtt":
            client.sent_at = time.perf_counter()
            client.send_messages(1)
        elif mode == "echo":
            client.send_messages(spec.get("window", 16))
        else:
            client.send_text(json.dumps({"push": 0, "size": spec["size"]}))
    result = await window(stats, go)
    for client in clients:
        client.transport.abort()
    return result


async def run_idle(spec: dict, stats: Stats, control) -> dict:
    loop = asyncio.get_running_loop()
    answered: dict[WsClient, asyncio.Future] = {}

    def on_messages(client: WsClient, count: int) -> None:
        future = answered.get(client)
        if future is not None and not future.done():
            future.set_result(None)

    async def echo_all(clients: list[WsClient], timeout: float) -> int:
        answered.clear()
        for client in clients:
            answered[client] = loop.create_future()
            client.send_messages(1)
        done, _ = await asyncio.wait(list(answered.values()), timeout=timeout)
        return len(done)

    started = time.monotonic()
    clients = await open_websockets(spec, stats, on_messages, spec["conns"])
    first = await echo_all(clients, 30)
    await control.ready(
        {"open_s": time.monotonic() - started, "answered": first, **negotiated(clients)}
    )
    await control.go()
    alive = await echo_all(clients, 10)
    stats.running = False
    for client in clients:
        client.transport.abort()
    return {"conns": len(clients), "alive": alive, "open_s": time.monotonic() - started}


# ------------------------------------------------------------------------------------- big GET
async def run_big(spec: dict, stats: Stats, control) -> dict:
    connection = http.client.HTTPConnection(spec["host"], spec["port"], timeout=120)
    connection.connect()
    await control.ready({})
    await control.go()
    buf = memoryview(bytearray(2**20))
    cpu0, t0 = time.process_time(), time.monotonic()
    connection.request("GET", spec["path"])
    response = connection.getresponse()
    total = 0
    while n := response.readinto(buf):
        total += n
    t1 = time.monotonic()
    connection.close()
    result = {"bytes": total, "secs": t1 - t0, "cpu_s": time.process_time() - cpu0}
    if response.status != 200:
        result["error"] = f"HTTP {response.status}"
    elif spec.get("expect") and total != spec["expect"]:
        result["error"] = f"got {total} of {spec['expect']} bytes"
    return result


# -------------------------------------------------------------------------------- the window
async def window(stats: Stats, go: dict) -> dict:
    """Count between go["start"] and go["end"] (monotonic), with this process's CPU time."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, go["start"] - time.monotonic()))
    stats.measuring = True
    stats.msgs = stats.bytes = 0
    stats.latencies.clear()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, go["end"] - loop.time()))
    stats.measuring = False
    cpu1, t1 = time.process_time(), time.monotonic()
    stats.running = False
    latencies = sorted(stats.latencies)
    result = {
        "msgs": stats.msgs,
        "bytes": stats.bytes,
        "secs": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "errors": stats.errors,
    }
    if latencies:
        step = max(1, len(latencies) // 2000)
        result["latencies_us"] = [round(x * 1e6, 1) for x in latencies[::step]]
        result["p50_us"] = latencies[len(latencies) // 2] * 1e6
        result["p99_us"] = latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1e6
    if stats.errors:
        result["error"] = f"{stats.errors} errors, last: {stats.error_text}"
    return result


class Control:
    """The JSON lines to and from run.py."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None

    async def ready(self, info: dict) -> None:
        print(json.dumps({"ready": True, **info}), flush=True)

    async def go(self) -> dict:
        if self.reader is None:
            loop = asyncio.get_running_loop()
            self.reader = asyncio.StreamReader()
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(self.reader), sys.stdin
            )
        line = await self.reader.readline()
        if not line:
            raise SystemExit("run.py went away")
        return json.loads(line)


async def main(spec: dict) -> None:
    stats = Stats()
    control = Control()
    mode = spec["mode"]
    spec["payload"] = payload(spec.get("size", 100))
    runner = {"http": run_http, "big": run_big, "idle": run_idle}.get(mode, run_ws)
    try:
        result = await runner(spec, stats, control)
    except Exception as e:  # noqa: BLE001 - reported to run.py, which shows it in the table
        result = {"error": f"{type(e).__name__}: {e}"[:300]}
    print(json.dumps(result), flush=True)


def payload(size: int) -> bytes:
    """
    The bytes every message carries, protobuf-like.  The same each time: with context takeover,
    deflate shrinks a repeat to a few bytes, the cheap case for a compressor.
    """
    seed = b"\x0a\x12streamlit.element\x12\x08markdown\x1a\x04text\x22" + bytes(range(32, 127))
    return (seed * (size // len(seed) + 1))[:size]


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    if spec.get("cpus"):
        os.sched_setaffinity(0, set(spec["cpus"]))
    asyncio.run(main(spec))
