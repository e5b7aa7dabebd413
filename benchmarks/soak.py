"""
Soak: mixed HTTP and WebSocket load through a real ``twistd -n stproxy`` in front of a real
Streamlit that is SIGKILLed and started again on the same port every minute.

    python benchmarks/soak.py [--minutes 10] [--quick]

The load, for the whole run:

- ``--http-clients`` threads (default 4), each on a keep-alive connection (a new one after an
  error), fetching in turn ``/``, ``/_stcore/health`` and a static asset named by the page
  (its body checked against Streamlit's own), with ``--http-pause`` s between requests;
- ``--sessions`` WebSocket sessions (default 6, every other one compressed) speaking Streamlit's protobufs as the frontend
  does: each sends a ``rerun_script`` BackMsg, reads ForwardMsgs up to ``script_finished``,
  checks the run's elements, waits ``--ws-pause`` s and asks again.  A session that is closed
  reconnects with backoff (250 ms to 1 s), offering its last session id as the frontend does.

The app (written to a temporary directory) counts its runs in ``st.session_state`` and writes a
title and ``LINES`` text elements naming the run, so each run's content is known in advance.

A script run is **lost** when it was requested on a session that was not cut by a restart and
its ``script_finished`` never arrived: the session stayed open for ``RUN_TIMEOUT`` s without it,
or was closed (whatever the code) outside a restart window.  A *restart window* runs from the
kill to ``GRACE`` s after the new Streamlit answers ``/_stcore/health``; a session closed inside
one was cut by the restart (the proxy should say 1012).  Elements missing, doubled or out of
order in a finished run (or a run number that does not follow the last on its connection) are
counted as lost too, one per element.

At the end the load stops, every session closes with 1000, and the script waits (up to 60 s)
for the proxy's open file descriptors to come back to what they were before the load.  It
prints one table and exits 1 if anything was lost, the descriptors differ, an HTTP request
failed while Streamlit was up (outside a restart window), or the proxy logged a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import ProxyProcess, StreamlitProcess, free_port, start_proxy, wait_until  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ClientState_pb2 import ClientState  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus  # noqa: E402

LINES = 8
APP = f"""
import streamlit as st

st.session_state.runs = st.session_state.get("runs", 0) + 1
st.title(f"soak run {{st.session_state.runs}}")
for i in range({LINES}):
    st.text(f"run {{st.session_state.runs}} line {{i}}")
"""
ADMIN_RE = r"stproxy admin endpoint on ([0-9.]+):(\d+)"
RUN_TIMEOUT = 30.0
GRACE = 2.0
MIB = 2**20


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def busy_sockets(pid: int) -> int:
    """How many sockets process C{pid} holds that are not listening."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.discard(fields[9])
    return len(inodes)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def expected_texts(run: int) -> list[str]:
    return [f"soak run {run}"] + [f"run {run} line {i}" for i in range(LINES)]


def element_texts(messages: list[ForwardMsg]) -> list[str]:
    result = []
    for message in messages:
        if message.WhichOneof("type") != "delta":
            continue
        element = message.delta.new_element
        kind = element.WhichOneof("type")
        if kind in ("heading", "text"):
            result.append(getattr(element, kind).body)
    return result


@dataclass
class Stats:
    """What the clients saw; failures and closes are classified against the restart windows at the end."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    http: Counter = field(default_factory=Counter)  # (path, status or exception name)
    http_events: list[tuple[float, str, str]] = field(default_factory=list)  # failures only
    bad_bodies: int = 0
    ws_opened: int = 0
    ws_refused: Counter = field(default_factory=Counter)  # status or exception name
    ws_closed: Counter = field(default_factory=Counter)  # close code seen by the browser
    close_events: list[tuple[float, int | None, bool]] = field(default_factory=list)
    runs_requested: int = 0
    runs_finished: int = 0
    runs_timed_out: int = 0
    elements_lost: int = 0
    forward_msgs: int = 0
    back_msgs: int = 0
    windows: list[tuple[float, float]] = field(default_factory=list)  # (kill, healthy + GRACE)

    def in_window(self, when: float) -> bool:
        return any(start <= when <= end for start, end in self.windows)


class Soak:
    def __init__(
        self,
        args: argparse.Namespace,
        streamlit: StreamlitProcess,
        proxy: ProxyProcess,
        asset: str,
        asset_body: bytes,
    ) -> None:
        self.args = args
        self.streamlit = streamlit
        self.proxy = proxy
        self.asset = asset
        self.asset_length = len(asset_body)
        self.stats = Stats()
        self.http_stop = threading.Event()
        self.ws_stop = asyncio.Event()
        self.restarts: list[float] = []  # seconds each restart took, kill to healthy
        self.peak_rss = 0  # the proxy's, sampled (its VmHWM lags behind)

    # ------------------------------------------------------------------------------ HTTP

    def http_client(self, index: int) -> None:
        paths = ["/", "/_stcore/health", self.asset]
        connection: http.client.HTTPConnection | None = None
        i = index
        while not self.http_stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=30)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                outcome = str(response.status)
                if response.status == 200 and path == self.asset and len(body) != self.asset_length:
                    with self.stats.lock:
                        self.stats.bad_bodies += 1
                if response.will_close:
                    connection.close()
                    connection = None
            except (http.client.HTTPException, OSError) as e:
                outcome = type(e).__name__
                connection.close()
                connection = None
            with self.stats.lock:
                self.stats.http[path, outcome] += 1
                if outcome != "200":
                    self.stats.http_events.append((time.monotonic(), path, outcome))
            self.http_stop.wait(self.args.http_pause)
        if connection is not None:
            connection.close()

    # ------------------------------------------------------------------------- WebSocket

    async def pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.ws_stop.wait(), seconds)
        except TimeoutError:
            pass

    async def session(self, index: int) -> None:
        """
        One browser tab: connect, run the script over and over, reconnect when closed.  Every
        other session offers permessage-deflate, as browsers do (the proxy accepts it).
        """
        stats = self.stats
        session_id = ""
        while not self.ws_stop.is_set():
            protocols = ["streamlit", "PLACEHOLDER_AUTH_TOKEN"] + (
                [session_id] if session_id else []
            )
            try:
                ws = await connect(
                    f"ws://127.0.0.1:{self.proxy.port}/_stcore/stream",
                    subprotocols=protocols,
                    origin=f"http://127.0.0.1:{self.proxy.port}",
                    compression="deflate" if index % 2 == 0 else None,
                    ping_interval=None,
                    open_timeout=30,
                    max_size=None,
                )
            except InvalidStatus as e:
                stats.ws_refused[str(e.response.status_code)] += 1
                await self.pause(random.uniform(0.25, 1))
                continue
            except (OSError, InvalidHandshake, TimeoutError) as e:
                stats.ws_refused[type(e).__name__] += 1
                await self.pause(random.uniform(0.25, 1))
                continue
            stats.ws_opened += 1
            session_id = await self.runs(ws, session_id)

    async def runs(self, ws: ClientConnection, session_id: str) -> str:
        """Run the script on C{ws} until the soak ends or the session is closed; the session id."""
        stats = self.stats
        last_run = None
        in_flight = False
        try:
            while not self.ws_stop.is_set():
                message = BackMsg(rerun_script=ClientState(query_string="", page_script_hash=""))
                await ws.send(message.SerializeToString())
                stats.back_msgs += 1
                stats.runs_requested += 1
                in_flight = True
                messages = []
                try:
                    async with asyncio.timeout(RUN_TIMEOUT):
                        while not messages or messages[-1].WhichOneof("type") != "script_finished":
                            forward = ForwardMsg()
                            forward.ParseFromString(await ws.recv())
                            stats.forward_msgs += 1
                            messages.append(forward)
                except TimeoutError:
                    stats.runs_timed_out += 1  # the session is still open: lost
                    in_flight = False
                    await ws.close()
                    break
                in_flight = False
                stats.runs_finished += 1
                for forward in messages:
                    if forward.WhichOneof("type") == "new_session":
                        session_id = forward.new_session.initialize.session_id
                got = element_texts(messages)
                match = re.fullmatch(r"soak run (\d+)", got[0]) if got else None
                run = int(match.group(1)) if match else -1
                if last_run is not None and run != last_run + 1:
                    run = last_run + 1
                expected = expected_texts(run)
                stats.elements_lost += sum(1 for a, b in zip(got, expected) if a != b)
                stats.elements_lost += abs(len(got) - len(expected))
                last_run = run
                await self.pause(self.args.ws_pause)
            else:
                await ws.close()  # the soak is over: 1000
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        while True:  # what arrived after the last script_finished (read, and counted)
            try:
                await ws.recv()
            except ConnectionClosed:
                break
            stats.forward_msgs += 1
        stats.ws_closed[ws.close_code] += 1
        stats.close_events.append((time.monotonic(), ws.close_code, in_flight))
        return session_id

    # --------------------------------------------------------------------------- restarts

    async def restarter(self, deadline: float) -> None:
        """SIGKILL Streamlit every C{--restart-every} s and start it again on the same port."""
        while True:
            next_kill = time.monotonic() + self.args.restart_every
            if next_kill >= deadline - 1:
                return
            await asyncio.sleep(next_kill - time.monotonic())
            port = self.streamlit.port
            killed = time.monotonic()
            self.streamlit.process.kill()
            await asyncio.to_thread(self.streamlit.stop)
            await asyncio.to_thread(self.streamlit.start)
            assert self.streamlit.port == port
            healthy = time.monotonic()
            self.restarts.append(healthy - killed)
            self.stats.windows.append((killed, healthy + GRACE))

    async def sample_memory(self) -> None:
        while not self.ws_stop.is_set():
            self.peak_rss = max(self.peak_rss, memory(self.proxy.pid)["VmRSS"])
            await self.pause(0.25)

    async def run(self) -> None:
        seconds = self.args.minutes * 60
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self.http_client, args=(i,), daemon=True)
            for i in range(self.args.http_clients)
        ]
        for thread in threads:
            thread.start()
        sessions = [asyncio.create_task(self.session(i)) for i in range(self.args.sessions)]
        restarts = asyncio.create_task(self.restarter(deadline))
        sampler = asyncio.create_task(self.sample_memory())
        await asyncio.sleep(max(0, deadline - time.monotonic()))
        await restarts
        self.ws_stop.set()
        self.http_stop.set()
        await asyncio.gather(*sessions, sampler)
        for thread in threads:
            await asyncio.to_thread(thread.join)


def metrics(admin: str) -> Counter:
    """The proxy's own counters and gauges from its admin C{/metrics}, by name and labels."""
    text = get(admin + "/metrics").decode()
    pattern = r"^(stproxy_\w+?)(\{[^}]*\})? (\S+)$"
    return Counter(
        {name + labels: float(value) for name, labels, value in re.findall(pattern, text, re.M)}
    )


def joined(counts: Counter) -> str:
    return ", ".join(f"{key}: {n:,}" for key, n in sorted(counts.items(), key=str)) or "0"


def report(
    soak: Soak,
    fds: tuple[int, int],
    rss: tuple[int, int, int],
    relayed: Counter,
    log_errors: list[str],
) -> int:
    """Print the table; the exit status."""
    stats, args, downs = soak.stats, soak.args, soak.restarts
    http_bad = [(t, p, o) for t, p, o in stats.http_events if not stats.in_window(t)]
    cut = sum(1 for when, _, in_flight in stats.close_events if in_flight and stats.in_window(when))
    closed_outside = sum(
        1 for when, _, in_flight in stats.close_events if in_flight and not stats.in_window(when)
    )
    lost = stats.runs_timed_out + closed_outside + stats.elements_lost
    to_browser = relayed['stproxy_websocket_messages_total{direction="to_browser"}']
    to_upstream = relayed['stproxy_websocket_messages_total{direction="to_upstream"}']
    rows = [
        (
            "Streamlit restarts (SIGKILL, then start on the same port)",
            f"{len(downs)}" + (f" (down {min(downs):.1f}–{max(downs):.1f} s)" if downs else ""),
        ),
        ("HTTP requests", f"{sum(stats.http.values()):,}"),
        *(
            (
                f"  GET {path}",
                joined(Counter({o: n for (p, o), n in stats.http.items() if p == path})),
            )
            for path in ("/", "/_stcore/health", soak.asset)
        ),
        ("  not 200 outside restart windows", f"{len(http_bad)}"),
        ("  static bodies of the wrong length", f"{stats.bad_bodies}"),
        ("WebSocket sessions opened", f"{stats.ws_opened:,}"),
        ("  handshakes refused, then retried", joined(stats.ws_refused)),
        ("  closes seen by the browsers, by code", joined(stats.ws_closed)),
        ("script runs requested (rerun_script BackMsgs)", f"{stats.runs_requested:,}"),
        ("  finished (script_finished arrived, every element checked)", f"{stats.runs_finished:,}"),
        ("  cut by a restart (session closed in a restart window)", f"{cut}"),
        (
            "ForwardMsgs relayed by the proxy / read by the browsers",
            f"{to_browser:,.0f} / {stats.forward_msgs:,}",
        ),
        (
            "BackMsgs sent by the browsers / relayed by the proxy",
            f"{stats.back_msgs:,} / {to_upstream:,.0f}",
        ),
        ("LOST on sessions not cut by a restart", f"{lost}"),
        ("  runs without script_finished, session open", f"{stats.runs_timed_out}"),
        ("  runs in flight on sessions closed outside a restart", f"{closed_outside}"),
        ("  elements missing or out of order in finished runs", f"{stats.elements_lost}"),
        (
            "proxy RSS at start / end / peak, MiB",
            f"{rss[0] / MIB:.1f} / {rss[1] / MIB:.1f} / {rss[2] / MIB:.1f}",
        ),
        ("proxy open fds before the load / after it", f"{fds[0]} / {fds[1]}"),
        ("proxy log: tracebacks, unhandled errors", f"{len(log_errors)}"),
    ]
    print(
        f"stproxy soak: {args.minutes:g} min, Streamlit killed every {args.restart_every:g} s;"
        f" {args.http_clients} HTTP clients ({args.http_pause * 1000:g} ms between requests),"
        f" {args.sessions} WebSocket sessions ({args.ws_pause * 1000:g} ms between runs)"
    )
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    for _, path, outcome in http_bad[:10]:
        print(f"  HTTP outside a restart window: GET {path} -> {outcome}")
    for line in log_errors[:10]:
        print(f"  proxy log: {line}")
    failures = [
        f"{lost} lost" if lost else "",
        f"fds {fds[0]} -> {fds[1]}" if fds[0] != fds[1] else "",
        f"{len(http_bad)} HTTP failures while Streamlit was up" if http_bad else "",
        "tracebacks in the proxy log" if log_errors else "",
    ]
    failures = [f for f in failures if f]
    print("result:", f"FAIL ({'; '.join(failures)})" if failures else "PASS")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument(
        "--minutes", type=float, default=10, help="how long the load runs (default 10)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one minute, Streamlit killed every 20 s"
    )
    parser.add_argument(
        "--restart-every", type=float, default=60, help="seconds between kills of Streamlit"
    )
    parser.add_argument("--http-clients", type=int, default=4)
    parser.add_argument(
        "--http-pause", type=float, default=0.05, help="seconds between one client's requests"
    )
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument(
        "--ws-pause", type=float, default=0.2, help="seconds between one session's runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.restart_every = 1, 20

    with tempfile.TemporaryDirectory(prefix="stproxy-soak-") as tmp:
        app = Path(tmp) / "soak_app.py"
        app.write_text(APP)
        streamlit = StreamlitProcess(app, free_port()).start()
        proxy = None
        try:
            proxy = start_proxy(
                "--upstream", f"127.0.0.1:{streamlit.port}",
                "--access-log", str(Path(tmp) / "access.log"),
                "--admin", "tcp:0:interface=127.0.0.1",
                "--health-interval", "3600",
            )  # fmt: skip
            admin = "http://127.0.0.1:" + proxy.wait_for_output(ADMIN_RE).group(2)
            page = get(streamlit.url + "/").decode()
            found = re.search(r"\./(static/css/index\.[^\"']+\.css)", page) or re.search(
                r"\./(static/[^\"']+)", page
            )
            assert found, page
            asset = "/" + found.group(1)
            asset_body = get(streamlit.url + asset)
            fds_before = settle(proxy)
            rss_start = memory(proxy.pid)["VmRSS"]
            before = metrics(admin)
            soak = Soak(args, streamlit, proxy, asset, asset_body)
            asyncio.run(soak.run())
            try:
                wait_until(lambda: fd_count(proxy.pid) == fds_before, 60, interval=0.2)
            except TimeoutError:
                pass
            fds_after = fd_count(proxy.pid)
            mem = memory(proxy.pid)
            relayed = metrics(admin)
            relayed.subtract(before)
            log_errors = [
                line
                for line in proxy.output().splitlines()
                if "Traceback" in line or "Unhandled" in line
            ]
            return report(
                soak,
                (fds_before, fds_after),
                (rss_start, mem["VmRSS"], max(mem["VmHWM"], soak.peak_rss)),
                relayed,
                log_errors,
            )
        except BaseException:
            if proxy is not None:
                print(f"proxy output (tail):\n{proxy.output()[-5000:]}", file=sys.stderr)
            print(f"Streamlit output (tail):\n{streamlit.output()[-3000:]}", file=sys.stderr)
            raise
        finally:
            if proxy is not None:
                proxy.stop()
            streamlit.close()


def settle(proxy: ProxyProcess) -> int:
    """
    One session and one request through the proxy (what it allocates once, on its first
    relayed session, is then there), then wait until it holds only its listeners; its fds then.
    """

    async def one() -> None:
        async with await connect(
            f"ws://127.0.0.1:{proxy.port}/_stcore/stream",
            subprotocols=["streamlit", "PLACEHOLDER_AUTH_TOKEN"],
            origin=f"http://127.0.0.1:{proxy.port}",
        ) as ws:
            await ws.send(BackMsg(rerun_script=ClientState()).SerializeToString())
            while True:
                message = ForwardMsg()
                message.ParseFromString(await ws.recv())
                if message.WhichOneof("type") == "script_finished":
                    return

    asyncio.run(one())
    get(f"http://127.0.0.1:{proxy.port}/_stcore/health")
    wait_until(lambda: busy_sockets(proxy.pid) == 0, 30, interval=0.1)
    return fd_count(proxy.pid)


if __name__ == "__main__":
    sys.exit(main())
