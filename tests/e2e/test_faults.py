"""
Faults with real processes: a real ``twistd -n stproxy`` in front of a real Streamlit, spoken to
by browser-like ``websockets`` clients that speak Streamlit's protobufs (``BackMsg`` up,
``ForwardMsg`` down) as the frontend does.

- Streamlit is SIGKILLed under 50 open sessions: every browser gets 1012, the proxy is left
  holding no socket (its open file descriptors return to what they were), and once Streamlit is
  back on the same port new sessions run the app again.
- A browser stops reading while Streamlit pushes 150 MiB at it: the proxy stops reading
  Streamlit and its memory stays bounded, and the other sessions (and new ones) keep working.
- Streamlit is SIGKILLed while a browser is stalled that way: the browser, reading again, gets
  what Streamlit had sent, then 1012, and the proxy lets go of both connections.

One Streamlit session, on its own and with a rerun, is in ``test_websocket.py``
(``RealStreamlitTests``); the 500 MB push from a ``websockets`` upstream, bounded memory and
all bytes delivered in order, is ``BackpressureTests`` there.  The figures measured here (time
from the kill to the last 1012, the proxy's RSS) are printed, not asserted against a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Callable

from harness import APPS, ProxyProcess, start_streamlit, wait_until
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

#: What the frontend offers: C{streamlit}, then the XSRF token (no session to resume).
PROTOCOLS = ["streamlit", "PLACEHOLDER_AUTH_TOKEN"]
MIB = 2**20

#: An app that writes C{?push=N} text elements of 1 MiB each (random, so nothing compresses or
#: is sent as a cached reference), then a short page.
PUSH_APP = """
import os
import streamlit as st

for i in range(int(st.query_params.get("push", "0"))):
    st.text(f"{i:06d} " + os.urandom(2**19).hex())
st.title("pushed")
"""


# ------------------------------------------------------------------------------------- helpers


def fds(pid: int) -> dict[str, str]:
    """The open file descriptors of process C{pid} and what each points at."""
    result = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            result[name] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass  # closed meanwhile
    return result


def sockets(pid: int) -> int:
    """How many sockets process C{pid} holds (listeners included)."""
    return sum(target.startswith("socket:") for target in fds(pid).values())


def receive_queue(pid: int, port: int) -> int:
    """Bytes waiting unread in C{pid}'s TCP connections to remote C{port} (C{rx_queue} in /proc/net/tcp)."""
    inodes = {target[8:-1] for target in fds(pid).values() if target.startswith("socket:[")}
    total = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    total += int(fields[4].split(":")[1], 16)
    return total


def peak_rss(pid: int) -> int:
    """The most resident memory process C{pid} has had (C{VmHWM}), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def open_session(proxy: ProxyProcess, **options) -> ClientConnection:
    """A browser's C{/_stcore/stream} through the proxy (no compression, no client pings)."""
    return await connect(
        f"ws://127.0.0.1:{proxy.port}/_stcore/stream",
        subprotocols=PROTOCOLS,
        origin=f"http://127.0.0.1:{proxy.port}",
        compression=None,
        ping_interval=None,
        max_size=None,
        open_timeout=30,
        **options,
    )


async def rerun(ws: ClientConnection, query: str = "") -> None:
    """Ask for a run of the script, as the frontend does on load and on every interaction."""
    message = BackMsg(rerun_script=ClientState(query_string=query, page_script_hash=""))
    await ws.send(message.SerializeToString())


async def until_script_finished(ws: ClientConnection, timeout: float = 30) -> list[ForwardMsg]:
    """The ForwardMsgs of one script run, up to and including its C{script_finished}."""
    messages = []
    async with asyncio.timeout(timeout):
        while True:
            message = ForwardMsg()
            message.ParseFromString(await ws.recv())
            messages.append(message)
            if message.WhichOneof("type") == "script_finished":
                assert message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY, message
                return messages


def texts(messages: list[ForwardMsg]) -> list[str]:
    """What the run's C{st.title}/C{st.write}/C{st.text} elements say, in order."""
    result = []
    for message in messages:
        element = message.delta.new_element if message.WhichOneof("type") == "delta" else None
        if element is None:
            continue
        kind = element.WhichOneof("type")
        if kind == "text":
            result.append(element.text.body)
        elif kind in ("heading", "markdown"):
            result.append(getattr(element, kind).body)
    return result


async def run_script(ws: ClientConnection, query: str = "") -> list[ForwardMsg]:
    await rerun(ws, query)
    return await until_script_finished(ws)


def settled(proxy: ProxyProcess, listeners: int) -> Callable[[], str]:
    """The message for a wait on the proxy's sockets: what it holds now."""
    return lambda: (
        f"the proxy still holds {sockets(proxy.pid) - listeners} sockets: {fds(proxy.pid)}"
    )


def warm_up(proxy: ProxyProcess) -> int:
    """
    Run one session through the proxy and close it, so what the proxy allocates once (on its
    first relayed session) is there, then wait until it holds nothing but its listener; its
    number of open file descriptors then.
    """

    async def one() -> None:
        async with await open_session(proxy) as ws:
            await run_script(ws)

    listeners = sockets(proxy.pid)
    asyncio.run(one())
    wait_until(lambda: sockets(proxy.pid) == listeners, 10, message=settled(proxy, listeners))
    return len(fds(proxy.pid))


# ------------------------------------------------------------------- Streamlit killed under load


def test_streamlit_killed_under_50_sessions_gives_each_1012_and_leaves_no_socket(
    proxy_factory,
) -> None:
    """
    SIGKILL to Streamlit with 50 sessions open through the proxy closes all 50 browsers with 1012
    "service restart" within a few seconds, the proxy's open fds return to their level before the
    sessions, and once Streamlit is back on the same port a new session runs the app.
    """
    with start_streamlit(APPS / "basic_app.py") as streamlit:
        proxy = proxy_factory("--upstream", f"127.0.0.1:{streamlit.port}")
        before = warm_up(proxy)
        listeners = sockets(proxy.pid)

        async def kill_under_load() -> tuple[list[ClientConnection], float]:
            browsers = await asyncio.gather(*(open_session(proxy) for _ in range(50)))
            runs = await asyncio.gather(*(run_script(ws) for ws in browsers))
            assert all("stproxy basic app" in texts(run) for run in runs)
            assert proxy.connections_to(streamlit.port) == 50
            closed: list[float] = []

            async def watch(ws: ClientConnection) -> None:
                await ws.wait_closed()
                closed.append(time.monotonic())

            watchers = [asyncio.create_task(watch(ws)) for ws in browsers]
            streamlit.process.kill()  # SIGKILL: no close frame from Streamlit
            killed = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*watchers), timeout=5)  # a deadline, not a timing
            return browsers, max(closed) - killed

        browsers, last = asyncio.run(kill_under_load())
        print(
            f"\nStreamlit SIGKILLed under 50 sessions: the last 1012 arrived {last * 1000:.0f} ms after the kill"
        )
        assert {(ws.close_code, ws.close_reason) for ws in browsers} == {(1012, "service restart")}
        wait_until(lambda: len(fds(proxy.pid)) == before, 10, message=settled(proxy, listeners))
        assert proxy.connections_to(streamlit.port) == 0

        port = streamlit.port
        streamlit.stop()  # reaps the killed process
        streamlit.start()
        assert streamlit.port == port

        async def after_restart() -> list[ForwardMsg]:
            async with await open_session(proxy) as ws:
                return await run_script(ws)

        assert "stproxy basic app" in texts(asyncio.run(after_restart()))
        wait_until(lambda: len(fds(proxy.pid)) == before, 10, message=settled(proxy, listeners))
        assert "Traceback" not in proxy.output() and "Unhandled" not in proxy.output(), (
            proxy.output()
        )


# ------------------------------------------------------------------- a browser that stops reading


def test_a_browser_that_stops_reading_holds_no_memory_and_stalls_no_other_session(
    proxy_factory, tmp_path: Path
) -> None:
    """
    While one browser reads nothing and Streamlit pushes 150 MiB at it, the proxy stops reading
    from Streamlit and its memory stays bounded, another session keeps doing round trips and a new
    one opens; read again, the stalled browser gets all 150 messages in order.
    """
    app = tmp_path / "push_app.py"
    app.write_text(PUSH_APP)
    count = 150
    with start_streamlit(app) as streamlit:
        proxy = proxy_factory("--upstream", f"127.0.0.1:{streamlit.port}")
        warm_up(proxy)
        baseline = proxy.rss_bytes()

        async def stall() -> tuple[int, int, list[float]]:
            other = await open_session(proxy)
            # A small queue: the client stops reading its socket after 4 unread messages.
            stalled = await open_session(proxy, max_queue=4)
            await rerun(stalled, f"push={count}")
            # Streamlit has sent far more than the proxy read: the proxy has stopped reading it.
            async with asyncio.timeout(30):
                while receive_queue(proxy.pid, streamlit.port) < 512 * 1024:
                    await asyncio.sleep(0.02)
            round_trips = []
            for _ in range(5):
                started = time.monotonic()
                assert texts(await run_script(other)) == ["pushed"]
                round_trips.append(time.monotonic() - started)
            async with await open_session(proxy) as new:
                assert texts(await run_script(new)) == ["pushed"]
            assert receive_queue(proxy.pid, streamlit.port) >= 512 * 1024, "the stall ended early"
            stalled_rss = proxy.rss_bytes()
            received = texts(await until_script_finished(stalled, timeout=120))
            assert [int(text[:6]) for text in received[:-1]] == list(range(count))
            assert all(len(text) == 7 + MIB for text in received[:-1]) and received[-1] == "pushed"
            await asyncio.gather(stalled.close(), other.close())
            # VmHWM is updated lazily: the RSS sampled while stalled may be higher.
            return stalled_rss, max(peak_rss(proxy.pid), stalled_rss), round_trips

        stalled_rss, peak, round_trips = asyncio.run(stall())
        print(
            f"\nproxy RSS: {baseline / MIB:.1f} MiB before, {stalled_rss / MIB:.1f} MiB while stalled,"
            f" peak {peak / MIB:.1f} MiB for {count} MiB pushed; other session's round trips while"
            f" stalled: {', '.join(f'{t * 1000:.0f}' for t in round_trips)} ms"
        )
        # The bounds of BackpressureTests in test_websocket.py (which pushes 500 MB).
        assert stalled_rss - baseline < 64 * MIB
        assert peak - baseline < 100 * MIB


def test_a_stalled_browser_gets_what_streamlit_sent_before_it_was_killed_then_1012(
    proxy_factory, tmp_path: Path
) -> None:
    """
    SIGKILL to Streamlit while it pushes to a browser that reads nothing: once the browser reads
    again it gets the messages Streamlit had sent, whole and in order, then 1012 (or, when
    Streamlit died in the middle of a frame the proxy was passing on raw, the connection closed
    without a close frame, 1006: no close frame can follow half a frame), and the proxy lets go
    of both connections.
    """
    app = tmp_path / "push_app.py"
    app.write_text(PUSH_APP)
    with start_streamlit(app) as streamlit:
        proxy = proxy_factory("--upstream", f"127.0.0.1:{streamlit.port}")
        before = warm_up(proxy)
        listeners = sockets(proxy.pid)

        async def kill_while_stalled() -> tuple[int, list[str], ClientConnection]:
            stalled = await open_session(proxy, max_queue=4)
            await rerun(stalled, "push=150")
            async with asyncio.timeout(30):
                while receive_queue(proxy.pid, streamlit.port) < 512 * 1024:
                    await asyncio.sleep(0.02)
            streamlit.process.kill()
            streamlit.process.wait()  # its sockets are closed: the proxy's leg to it has ended
            held = sockets(proxy.pid) - listeners
            received = []
            async with asyncio.timeout(30):
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        message = ForwardMsg()
                        message.ParseFromString(await stalled.recv())
                        received.append(message)
            return held, texts(received), stalled

        held, received, browser = asyncio.run(kill_while_stalled())
        print(
            f"\nStreamlit SIGKILLed while a browser read nothing: the proxy held {held} sockets until"
            f" the browser read again; it then read {len(received)} pushed messages and"
            f" {browser.close_code} {browser.close_reason!r}"
        )
        assert received and [int(text[:6]) for text in received] == list(range(len(received)))
        assert all(len(text) == 7 + MIB for text in received)
        assert (browser.close_code, browser.close_reason) in {(1012, "service restart"), (1006, "")}
        wait_until(lambda: len(fds(proxy.pid)) == before, 10, message=settled(proxy, listeners))
        assert "Traceback" not in proxy.output() and "Unhandled" not in proxy.output()
