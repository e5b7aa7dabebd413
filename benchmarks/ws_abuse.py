"""
What abusive WebSocket clients cost the proxy: memory and the latency of everyone else.

Three kinds of process on loopback: an upstream standing in for Streamlit (the
C{websockets} library: it echoes messages and answers C{GET /_stcore/health}),
the proxy (C{python -m stproxy}, one fresh process per scenario, from the tree
given with C{--tree}, so an older checkout can be measured the same way) and
this script, whose attackers speak raw WebSocket over blocking sockets:

  - C{ping flood}: one client sends C{--pings} pings of 125 bytes (131 bytes
    each on the wire) and never reads its pongs; after 2 s it leaves.  A
    proxy that stops reading it leaves the rest in the client's send buffer:
    the table says how many pings the proxy took.
  - C{deflate bombs}: four clients negotiate permessage-deflate and at once
    each send one frame of 300 MiB of zeros, compressed (about 305 KB).

While each runs, a prober in this process asks every 20 ms, one after the
other, for C{/_stcore/health} over HTTP and for a 16-byte echo over an open
WebSocket, both through the proxy.  Memory is the proxy's resident set
(C{/proc}): before the attack, its peak (C{VmHWM}), and 3 s after the
attackers have gone.

    python benchmarks/ws_abuse.py [--tree PATH] [--pings N] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20

UPSTREAM = r"""
import asyncio
from http import HTTPStatus
from websockets.asyncio.server import serve

def health(connection, request):
    if request.path == "/_stcore/health":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(
        echo, "127.0.0.1", 0, max_size=None, compression=None, process_request=health
    ) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


#: C{python -m stproxy}, saying first which stproxy it runs.
PROXY = r"""
import sys
import stproxy
print("stproxy from", stproxy.__file__, flush=True)
from stproxy.__main__ import main
main(sys.argv[1:])
"""


class Process:
    """A child whose output is read (and kept) as it comes, so it never blocks on a full pipe."""

    def __init__(self, argv: list[str], tree: Path, announce: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree))
        # In the tree's directory: C{python -m} puts the working directory first on sys.path.
        self.child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, cwd=tree
        )
        self.lines: list[str] = []
        found = threading.Event()
        self.port = 0

        def read() -> None:
            assert self.child.stdout is not None
            for line in self.child.stdout:
                self.lines.append(line)
                match = re.search(announce, line)
                if match and not found.is_set():
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError(f"{argv} did not start:\n{''.join(self.lines)}")

    def memory(self, name: str) -> int:
        """VmRSS or VmHWM (the peak) of the child, in bytes."""
        for line in Path(f"/proc/{self.child.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(name)

    def stop(self) -> None:
        self.child.kill()
        self.child.wait()


def frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """A client frame, masked with a zero key (the payload unchanged)."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


def open_raw(port: int, deflate: bool = False) -> socket.socket:
    """A WebSocket client connection through the proxy, its handshake done."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    extensions = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    sock.sendall(
        f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extensions}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"handshake refused: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101") or (deflate and b"permessage-deflate" not in head):
        raise RuntimeError(f"handshake refused: {head!r}")
    return sock


class Prober:
    """Asks for /_stcore/health and a WebSocket echo, in turn, every 20 ms, timing each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.http: list[float] = []
        self.ws: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        payload = os.urandom(16)
        with connect(f"ws://127.0.0.1:{self.port}/_stcore/stream", compression=None) as ws:
            while not self._stop.wait(0.02):
                started = time.perf_counter()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                connection.request("GET", "/_stcore/health")
                connection.getresponse().read()
                connection.close()
                self.http.append(time.perf_counter() - started)
                started = time.perf_counter()
                ws.send(payload)
                ws.recv(timeout=60)
                self.ws.append(time.perf_counter() - started)

    @contextmanager
    def running(self) -> Iterator[Prober]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def ping_flood(port: int, pings: int) -> str:
    """Send up to C{pings} pings without reading a pong; how many the proxy took."""
    sock = open_raw(port)
    sock.settimeout(5)  # the proxy stopped reading: the rest stays here
    batch = frame(0x9, b"p" * 125) * 1000
    sent = 0
    try:
        while sent < pings:
            sock.sendall(batch)
            sent += 1000
    except socket.timeout:
        pass
    time.sleep(2)  # a measurement: what the proxy does with what it took
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with its pongs unread: a reset, as a browser's kernel sends
    return f"{sent:,} pings taken"


def deflate_bombs(port: int, count: int = 4, size: int = 300 * MIB) -> str:
    """C{count} clients each send one frame that inflates to C{size} bytes; the close codes they get."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(size // MIB)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    bomb = frame(0x2, b"".join(parts)[:-4], rsv1=True)
    sockets = [open_raw(port, deflate=True) for _ in range(count)]
    codes: list[str] = []

    def attack(sock: socket.socket) -> None:
        sock.settimeout(60)
        try:
            sock.sendall(bomb)
            head = sock.recv(4)
            codes.append(str(struct.unpack("!H", head[2:4])[0]) if len(head) == 4 else "drop")
        except OSError as e:
            codes.append(type(e).__name__)
        finally:
            sock.close()

    threads = [threading.Thread(target=attack, args=(sock,)) for sock in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return f"{count} x {len(bomb) // 1000} KB: closed {','.join(sorted(codes))}"


def measure(tree: Path, upstream: int, name: str, attack: Callable[[int], str]) -> list[str]:
    """One fresh proxy from C{tree} under one C{attack}: the table's row."""
    proxy = Process(
        [sys.executable, "-c", PROXY, "--upstream", f"127.0.0.1:{upstream}",
         "--listen", "tcp:0:interface=127.0.0.1"],
        tree,
        r"stproxy listening on 127\.0\.0\.1:(\d+)",
    )  # fmt: skip
    loaded = next(line.split()[-1] for line in proxy.lines if line.startswith("stproxy from"))
    if not Path(loaded).is_relative_to(tree.resolve()):
        proxy.stop()
        raise RuntimeError(f"the proxy runs {loaded}, not the tree {tree}")
    try:
        with Prober(proxy.port).running() as warm:
            time.sleep(0.5)  # warm up: the pool, the WebSocket relay
        if not (warm.http and warm.ws):
            raise RuntimeError("the prober got no answer")
        before = proxy.memory("VmRSS")
        with Prober(proxy.port).running() as probe:
            outcome = attack(proxy.port)
        time.sleep(3)  # a measurement: what stays once the attackers have gone
        after, peak = proxy.memory("VmRSS"), proxy.memory("VmHWM")
    finally:
        proxy.stop()

    def ms(samples: list[float]) -> str:
        if not samples:
            return "none"
        return f"{statistics.median(samples) * 1e3:.1f} / {max(samples) * 1e3:.0f}"

    return [
        name,
        outcome,
        f"{before / MIB:.0f}",
        f"{peak / MIB:.0f}",
        f"{after / MIB:.0f}",
        ms(probe.http),
        ms(probe.ws),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the stproxy checkout to run")
    parser.add_argument("--pings", type=int, default=400_000, help="pings in the flood")
    parser.add_argument("--quick", action="store_true", help="a tenth of the pings, one bomb")
    args = parser.parse_args()
    pings = args.pings // 10 if args.quick else args.pings
    bombs = 1 if args.quick else 4
    upstream = Process([sys.executable, "-c", UPSTREAM], ROOT, r"^(\d+)$")
    try:
        rows = [
            measure(args.tree, upstream.port, "ping flood", lambda port: ping_flood(port, pings)),
            measure(
                args.tree, upstream.port, "deflate bombs", lambda port: deflate_bombs(port, bombs)
            ),
        ]
    finally:
        upstream.stop()
    header = ["attack", "outcome", "RSS MiB", "peak", "after", "HTTP ms p50/max", "WS ms p50/max"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"proxy: {args.tree}")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
