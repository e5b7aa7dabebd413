"""
How fast the WebSocket relay is, and what it costs in memory.

Three processes on loopback: an echo server (the C{websockets} library, standing
in for Streamlit's uvicorn), the relay (L{stproxy.websocket.resource.webSocketResource}
on a twisted.web C{Site}, default reactor) and this script, a C{websockets}
client.  Every row is measured twice, straight to the echo server and through
the relay, so the client's own cost shows in the first column.

    python benchmarks/ws_relay.py [--quick]

Prints one table: echo throughput (messages each way per second, all
connections together), round-trip time, and the relay's resident memory (idle,
per idle connection, and the peak while the table ran).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent

ECHO = r"""
import asyncio
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

RELAY = r"""
import sys
from twisted.internet import reactor
from twisted.web.server import Site
from stproxy.http.headers import TrustedProxies
from stproxy.config import WebSocketSettings
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.client import Upstream
from stproxy.websocket.resource import webSocketResource

upstream = Upstream(reactor, UpstreamAddress("http", "127.0.0.1", int(sys.argv[1])))
resource = webSocketResource(upstream, WebSocketSettings(), TrustedProxies())
port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def spawn(script: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


async def echoThroughput(port: int, connections: int, count: int, size: int) -> float:
    """Messages per second each way, with every connection sending flat out."""
    payload = os.urandom(size)

    async def one() -> None:
        async with connect(
            f"ws://127.0.0.1:{port}/_stcore/stream", compression=None, max_size=None
        ) as ws:

            async def send() -> None:
                for _ in range(count):
                    await ws.send(payload)

            sender = asyncio.create_task(send())
            for _ in range(count):
                await ws.recv()
            await sender

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return connections * count / (time.perf_counter() - started)


async def roundTrip(port: int, count: int) -> float:
    """Mean round-trip time of one 100-byte message, in microseconds."""
    async with connect(f"ws://127.0.0.1:{port}/_stcore/stream", compression=None) as ws:
        payload = os.urandom(100)
        for _ in range(100):
            await ws.send(payload)
            await ws.recv()
        started = time.perf_counter()
        for _ in range(count):
            await ws.send(payload)
            await ws.recv()
        return (time.perf_counter() - started) / count * 1e6


async def idleCost(port: int, pid: int, connections: int) -> float:
    """Relay RSS per open, idle connection, in bytes."""
    url = f"ws://127.0.0.1:{port}/_stcore/stream"
    await (await connect(url, compression=None)).close()  # warm up
    before = memory(pid)["VmRSS"]
    sockets = [await connect(url, compression=None) for _ in range(connections)]
    await asyncio.sleep(0.5)  # a measurement: let the relay settle
    after = memory(pid)["VmRSS"]
    await asyncio.gather(*(ws.close() for ws in sockets))
    return (after - before) / connections


async def main(quick: bool) -> None:
    scale = 10 if quick else 1
    echo, echoPort = spawn(ECHO)
    relay, relayPort = spawn(RELAY, str(echoPort))
    try:
        idle = memory(relay.pid)["VmRSS"]
        perConnection = await idleCost(relayPort, relay.pid, 1000 // scale)
        rows = [
            ("1 conn, 100 B", 1, 100_000 // scale, 100),
            ("10 conns, 100 B", 10, 20_000 // scale, 100),
            ("1 conn, 64 KiB", 1, 5_000 // scale, 64 * 1024),
            ("1 conn, 4 MiB", 1, 200 // scale, 4 * 2**20),
        ]
        print(f"{'echo, msgs/s each way':<24}{'direct':>12}{'relayed':>12}")
        for name, connections, count, size in rows:
            direct = await echoThroughput(echoPort, connections, count, size)
            relayed = await echoThroughput(relayPort, connections, count, size)
            print(f"{name:<24}{direct:>12,.0f}{relayed:>12,.0f}")
        direct = await roundTrip(echoPort, 5_000 // scale)
        relayed = await roundTrip(relayPort, 5_000 // scale)
        print(f"{'round trip, µs':<24}{direct:>12,.0f}{relayed:>12,.0f}")
        peak = memory(relay.pid)["VmHWM"]
        print()
        print(f"relay RSS idle          {idle / 2**20:8.1f} MiB")
        print(f"relay RSS per idle conn {perConnection / 1024:8.1f} KiB")
        print(f"relay RSS peak          {peak / 2**20:8.1f} MiB")
    finally:
        relay.kill()
        echo.kill()
        relay.wait()
        echo.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    asyncio.run(main(parser.parse_args().quick))
