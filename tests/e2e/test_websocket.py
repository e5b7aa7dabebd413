"""
The WebSocket relay through a real C{twistd stproxy}: in front of a C{websockets} child pushing
500 MB to a browser that stops reading, and in front of a real Streamlit
(C{tests/apps/basic_app.py}).

The browser-like clients come from ``tests/websocket_harness.py``.
"""

from __future__ import annotations

import os
import struct
import sys

from autobahn.twisted.websocket import WebSocketClientFactory
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from harness import APPS, start_proxy, start_streamlit
from stproxy._autobahn import ReactorTimer
from websocket_harness import Browser, RawClient, RelayTestCase, observe, openBrowser, upgradeRequest, waitFor


def peakRSS(pid: int) -> int:
    """The most resident memory process C{pid} has had (C{VmHWM})."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class BackpressureTests(RelayTestCase):
    """A real C{twistd stproxy} between a browser that stops reading and a pushing upstream."""

    @defer.inlineCallbacks
    def test_proxy_rss_stays_bounded_while_streamlit_pushes_500_megabytes(self):
        """
        A browser that stops reading while Streamlit tries to push 500 MB
        stalls Streamlit and keeps a real C{twistd stproxy}'s resident memory
        bounded; when it reads again all 500 MB arrive, in order.
        """
        pusher = PusherProcess()
        reactor.spawnProcess(
            pusher, sys.executable, [sys.executable, "-c", PUSHER, "500"], env=os.environ
        )
        self.addCleanup(pusher.stop)
        upstreamPort = yield pusher.listening
        proxy = start_proxy("--upstream", f"127.0.0.1:{upstreamPort}")
        self.addCleanup(proxy.stop)
        baseline = proxy.rss_bytes()
        browser = yield openBrowser(proxy.port, protocols=None)
        self.closeAtEnd(browser)
        browser.transport.pauseProducing()
        yield waitFor(lambda: pusher.sent, what="Streamlit pushing")
        yield observe(1.0)
        self.assertLess(pusher.sent, 100, "Streamlit was not held back")
        self.assertLess(proxy.rss_bytes() - baseline, 64 * 2**20)
        received = []

        def onMessage(payload, isBinary):
            received.append(struct.unpack("!I", payload[:4])[0])

        browser.onMessage = onMessage
        browser.transport.resumeProducing()
        yield waitFor(lambda: len(received) == 500, timeout=40, what="500 MB received")
        self.assertEqual(received, list(range(500)))
        self.assertLess(peakRSS(proxy.pid) - baseline, 100 * 2**20)
        browser.sendClose(1000)
        yield browser.factory.lost
        yield waitFor(lambda: not proxy.connections_to(upstreamPort), what="upstream leg closed")


class StreamlitHost(Browser):
    """A browser on a page served as C{http://app.test:PORT}: that Host, not 127.0.0.1."""

    def sendData(self, data, sync=False, chopsize=None):
        if self.state == self.STATE_CONNECTING and data.startswith(b"GET "):
            data = data.replace(b"Host: 127.0.0.1:", b"Host: app.test:", 1)
        super().sendData(data, sync, chopsize)


class RealStreamlitTests(TestCase):
    """Through a real C{twistd stproxy} to a real Streamlit (C{tests/apps/basic_app.py})."""

    def setUp(self):
        self.streamlit = start_streamlit(APPS / "basic_app.py")
        self.addCleanup(self.streamlit.stop)
        self.proxy = start_proxy("--upstream", f"127.0.0.1:{self.streamlit.port}")
        self.addCleanup(self.proxy.stop)

    def connect(self, origin: str) -> defer.Deferred:
        port = self.proxy.port
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{port}/_stcore/stream",
            protocols=["streamlit", "PLACEHOLDER_AUTH_TOKEN"],
            origin=origin.replace("PORT", str(port)),
        )
        factory.protocol = StreamlitHost
        factory.opened, factory.lost = defer.Deferred(), defer.Deferred()
        factory._batched_timer = ReactorTimer(reactor)
        TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        return factory

    @defer.inlineCallbacks
    def test_a_session_runs_under_a_real_host_name_and_ends_with_1012_when_killed(self):
        """
        With Host and Origin C{app.test:PORT} (not exempt from Streamlit's
        Origin check) the session opens with subprotocol C{streamlit} and the
        app's script runs; when Streamlit is killed the browser gets 1012.
        """
        factory = self.connect("http://app.test:PORT")
        browser = yield factory.opened
        self.assertEqual(browser.response.protocol, "streamlit")
        rerun = BackMsg(rerun_script=ClientState(query_string="", page_script_hash=""))
        browser.sendMessage(rerun.SerializeToString(), isBinary=True)

        def kinds():
            for payload, isBinary in browser.messages:
                message = ForwardMsg()
                message.ParseFromString(payload)
                yield message.WhichOneof("type")

        yield waitFor(lambda: "script_finished" in set(kinds()), what="the script ran")
        self.assertIn("new_session", set(kinds()))
        self.assertTrue(all(isBinary for _, isBinary in browser.messages))
        self.streamlit.process.kill()
        closed = yield factory.lost
        self.assertEqual(closed[1:], (1012, "service restart"))

    @defer.inlineCallbacks
    def test_a_foreign_origin_gets_streamlits_403(self):
        """An Origin that does not match the Host is refused by Streamlit, and so by the proxy."""
        port = self.proxy.port
        raw = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: raw)
        )
        raw.transport.write(
            upgradeRequest(
                port,
                b"Origin: http://evil.example",
                b"Sec-WebSocket-Protocol: streamlit",
                host=b"app.test:%d" % port,
            ).replace(b"?x=1", b"")
        )
        yield raw.lost
        self.assertEqual(raw.received.split(b"\r\n")[0], b"HTTP/1.1 403 Forbidden")

    @defer.inlineCallbacks
    def test_what_streamlit_would_refuse_is_refused_before_reaching_it(self):
        """
        Through the whole proxy: WebSocket version 8 gets 426 naming 13 (the
        relay used to accept it), and two Host lines get 400 rather than one
        joined Host upstream.
        """
        port = self.proxy.port
        answers = []
        for request in (
            upgradeRequest(port, b"Sec-WebSocket-Protocol: streamlit").replace(
                b"Version: 13", b"Version: 8"
            ),
            upgradeRequest(port, b"Sec-WebSocket-Protocol: streamlit", b"Host: app.test"),
        ):
            raw = RawClient()
            yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                protocol.Factory.forProtocol(lambda: raw)
            )
            raw.transport.write(request.replace(b"?x=1", b""))
            yield waitFor(lambda: b"\r\n\r\n" in raw.received, what="an answer")
            answers.append(raw.received.split(b"\r\n\r\n")[0].lower().split(b"\r\n"))
            raw.transport.loseConnection()
            yield raw.lost
        self.assertEqual(answers[0][0], b"http/1.1 426 upgrade required")
        self.assertIn(b"sec-websocket-version: 13", answers[0])
        self.assertEqual(answers[1][0], b"http/1.1 400 bad request")


PUSHER = r"""
import asyncio, os, struct, sys
from websockets.asyncio.server import serve

async def push(ws):
    chunk = os.urandom(2**20 - 4)
    for i in range(int(sys.argv[1])):
        await ws.send(struct.pack("!I", i) + chunk)
        print(i + 1, flush=True)
    await ws.wait_closed()

async def main():
    async with serve(push, "127.0.0.1", 0, max_size=None, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


class PusherProcess(protocol.ProcessProtocol):
    """A websockets server in a child process that pushes N 1 MB messages."""

    def __init__(self):
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()
        self.out = b""
        self.sent = 0

    def outReceived(self, data):
        self.out += data
        lines = self.out.split(b"\n")[:-1]
        if lines and not self.listening.called:
            self.listening.callback(int(lines[0]))
        if len(lines) > 1:
            self.sent = int(lines[-1])

    def processEnded(self, reason):
        self.ended.callback(None)
        if not self.listening.called:
            self.listening.errback(reason)

    def stop(self):
        if not self.ended.called:
            self.transport.signalProcess("KILL")
        return self.ended
