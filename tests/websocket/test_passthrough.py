"""
Tests for L{stproxy.websocket.passthrough}: raw passage, the two legs of a relayed WebSocket
passing data frames on as the bytes they came as while Autobahn keeps the control frames,
in memory on a L{MemoryReactorClock} (the relay's own behaviour, which raw passage must
keep, is in ``test_relay.py``).  Nothing is written into the middle of a frame: the memory
network delivers at most 64 KiB a turn, so a larger message is half passed on between two
turns (L{Relayed.turn}), and what the proxy writes meanwhile must wait for its end.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from twisted.internet.protocol import Protocol
from websocket_memory import Relayed as MemoryRelayed
from websocket_wire import BINARY, CONTINUATION, PING, TEXT, frame, readFrames

from stproxy.config import WebSocketSettings
from stproxy.ops.metrics import DOWNSTREAM, UPSTREAM
from stproxy.testing import (
    FakeBrowser,
    FakeStreamlit,
    FakeStreamlitFactory,
    MemoryNetwork,
    connectBrowser,
    memoryRelay,
)
from stproxy.websocket.passthrough import HELD_LIMIT, passThrough

BIG = 200_000  # more than three turns of the memory network


class Browser(FakeBrowser):
    """A fake browser that records pings and pongs in order with its messages."""

    def connectionMade(self) -> None:
        self.events: list[tuple[str, Any]] = []
        super().connectionMade()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        super().onMessage(payload, isBinary)
        self.events.append(("message", len(payload)))

    def onPing(self, payload: bytes) -> None:
        self.events.append(("ping", payload))
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        self.events.append(("pong", payload))


class Relayed(MemoryRelayed):
    """One open relayed WebSocket whose browser records pings and pongs with its messages."""

    browserClass = Browser


def recordReceived(protocol: Any) -> bytearray:
    """Every byte C{protocol} receives from now on."""
    received = bytearray()
    dataReceived = protocol.dataReceived

    def recording(data: bytes) -> None:
        received.extend(data)
        dataReceived(data)

    protocol.dataReceived = recording
    return received


def test_with_no_extension_both_legs_pass_frames_on_as_they_came() -> None:
    """
    The browser's masked frames reach Streamlit byte for byte, masking key included, and
    Streamlit's unmasked frames reach the browser byte for byte.
    """
    r = Relayed()
    assert r.browserLeg.passthrough is not None and r.upstreamLeg.passthrough is not None
    atStreamlit, atBrowser = recordReceived(r.streamlit), recordReceived(r.browser)
    up = frame(BINARY, b"\x00backmsg") + frame(TEXT, "caf\u00e9".encode())
    r.browser.transport.write(up)
    r.streamlit.sendMessage(b"delta" * 100, isBinary=True)
    r.net.flush()
    assert bytes(atStreamlit) == up
    assert [(f.opcode, f.masked, f.payload) for f in readFrames(atBrowser)] == [
        (BINARY, False, b"delta" * 100)
    ]
    assert r.streamlit.messages == [(b"\x00backmsg", True), ("caf\u00e9".encode(), False)]


def test_a_browser_that_negotiated_deflate_keeps_the_message_path() -> None:
    """With permessage-deflate on the browser leg, messages are relayed (and compressed) as before."""
    r = Relayed(
        compression=True,
        browserOptions={
            "perMessageCompressionOffers": [PerMessageDeflateOffer()],
            "perMessageCompressionAccept": PerMessageDeflateResponseAccept,
        },
    )
    assert r.browserLeg.extensionsInUse
    assert r.browserLeg.passthrough is None and r.upstreamLeg.passthrough is None
    r.browser.sendMessage(b"up" * 1000, isBinary=True)
    r.streamlit.sendMessage(b"down" * 1000, isBinary=True)
    r.net.flush()
    assert r.streamlit.messages == [(b"up" * 1000, True)]
    assert r.browser.messages == [(b"down" * 1000, True)]


def test_a_fragmented_message_passes_as_its_fragments_and_counts_once() -> None:
    """Three fragments reach Streamlit as one message; the metrics count one message of 9 bytes."""
    r = Relayed()
    r.browser.transport.write(
        frame(BINARY, b"abc", fin=False)
        + frame(PING, b"between")
        + frame(CONTINUATION, b"def", fin=False)
        + frame(CONTINUATION, b"ghi")
    )
    r.net.flush()
    assert r.streamlit.messages == [(b"abcdefghi", True)]
    assert r.browser.events == [("pong", b"between")]
    assert r.sample("stproxy_websocket_messages_total", direction=UPSTREAM) == 1
    assert r.sample("stproxy_websocket_message_bytes_total", direction=UPSTREAM) == 9


def test_many_messages_in_one_read_are_all_counted_for_metrics_and_the_session_log() -> None:
    """Fifty messages each way, read at once, count fifty each way, with their bytes, in the log line too."""
    r = Relayed()
    r.browser.transport.write(b"".join(frame(BINARY, b"%02d" % i) for i in range(50)))
    for i in range(50):
        r.streamlit.sendMessage(b"%03d" % i, isBinary=True)
    r.net.flush()
    assert len(r.streamlit.messages) == len(r.browser.messages) == 50
    assert r.sample("stproxy_websocket_messages_total", direction=UPSTREAM) == 50
    assert r.sample("stproxy_websocket_message_bytes_total", direction=DOWNSTREAM) == 150
    r.browser.sendClose(1000)
    r.net.flush()
    [ended] = [e for e in r.events if e.get("log_websocket")]
    assert (ended["messages_to_upstream"], ended["bytes_to_upstream"]) == (50, 100)
    assert (ended["messages_to_browser"], ended["bytes_to_browser"]) == (50, 150)


def test_a_pong_waits_for_the_end_of_a_frame_half_passed_on() -> None:
    """
    A ping from the browser while Streamlit's big message is half passed on is answered
    right after that message, never inside it (the browser would fail the connection).
    """
    r = Relayed()
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.turn()
    r.turn()
    assert r.upstreamLeg.passthrough is not None and r.upstreamLeg.passthrough.openFrameRemaining
    r.browser.sendPing(b"still there?")
    r.turn()
    assert r.browserLeg.heldWrites, "the pong was not held"
    r.net.flush()
    assert r.browser.events == [("message", BIG), ("pong", b"still there?")]
    assert r.browser.closed is None and r.browserLeg.heldWrites is None


def test_a_ping_whose_pong_waits_does_not_stop_reading_its_sender() -> None:
    """One held pong (Streamlit pings every 30 s) stalls nothing: the browser is still read."""
    r = Relayed()
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.turn()
    r.turn()
    r.browser.sendPing(b"1")
    r.browser.sendMessage(b"after the ping", isBinary=True)
    r.turn()
    assert r.browserLeg.heldWrites and r.browserLeg.valve is not None
    assert not r.browserLeg.valve.paused
    assert r.streamlit.messages == [(b"after the ping", True)]


def test_a_ping_flood_whose_pongs_wait_stops_reading_its_sender_until_they_are_out() -> None:
    """
    Past HELD_LIMIT of held pongs the browser is not read (a flood queues no more), and once
    the frame ends the pongs go out, every ping is answered, and reading resumes.
    """
    r = Relayed()
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.turn()
    r.turn()
    for i in range(200):
        r.browser.sendPing(b"%03d" % i + b"p" * 100)
    r.turn()
    assert r.browserLeg.valve is not None and r.browserLeg.valve.paused
    assert r.browserLeg.heldWrites is not None
    assert sum(map(len, r.browserLeg.heldWrites)) <= HELD_LIMIT + 65536
    r.browser.sendMessage(b"after the pings", isBinary=True)
    r.turn()
    assert r.streamlit.messages == []
    r.net.flush()
    assert not r.browserLeg.valve.paused
    assert r.streamlit.messages == [(b"after the pings", True)]
    assert r.browser.events[0] == ("message", BIG)
    assert [p[:3] for kind, p in r.browser.events[1:]] == [b"%03d" % i for i in range(200)]


def test_the_proxys_own_keepalive_ping_is_written_only_between_frames() -> None:
    """An auto-ping due while a frame is half passed on goes out after it."""
    r = Relayed(pingInterval=1, pingTimeout=10)
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.turn()
    r.turn()
    r.net.reactor.advance(1)
    assert r.browserLeg.heldWrites, "the auto-ping was not held"
    r.net.flush()
    assert [kind for kind, _ in r.browser.events] == ["message", "ping"]
    assert r.browser.closed is None


def test_a_close_while_a_frame_is_half_passed_on_follows_the_frame() -> None:
    """
    The browser closes while Streamlit's message is half passed on: the close reply, and the
    end of the TCP connection, wait for the end of that message; Streamlit gets the code.
    """
    r = Relayed()
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.turn()
    r.turn()
    r.browser.sendClose(4000, "tab closed")
    r.net.flush()
    assert r.browser.closed == (True, 4000, "tab closed")
    assert r.streamlit.closed == (True, 4000, "tab closed")
    assert r.relay.sessions.legs == set()


def test_streamlit_lost_in_the_middle_of_a_frame_drops_the_browser_without_a_close_frame() -> None:
    """
    Half a frame has reached the browser when Streamlit's connection is lost: nothing valid
    can follow it, so the browser's connection is closed with no close frame (1006).
    """
    r = Relayed()
    atBrowser = recordReceived(r.browser)
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.turn()
    r.turn()
    r.streamlit.transport.abortConnection()
    r.net.flush()
    assert r.browser.messages == []
    assert r.browser.closed is not None and r.browser.closed[:2] == (False, 1006)
    assert len(atBrowser) < BIG and readFrames(atBrowser) == []
    assert r.relay.sessions.legs == set()


def test_streamlit_lost_between_frames_still_gives_the_browser_1012() -> None:
    """Lost between frames, Streamlit's departure is told to the browser as ever: 1012."""
    r = Relayed()
    r.streamlit.sendMessage(b"s" * BIG, isBinary=True)
    r.net.flush()
    r.streamlit.transport.abortConnection()
    r.net.flush()
    assert r.browser.messages == [(b"s" * BIG, True)]
    assert r.browser.closed == (True, 1012, "service restart")


def test_a_protocol_error_from_the_browser_closes_both_with_1002() -> None:
    """A frame with an RSV bit and no extension: the browser gets 1002, and so does Streamlit."""
    r = Relayed()
    r.browser.transport.write(frame(BINARY, b"fine") + frame(BINARY, b"bad", rsv=2))
    r.net.flush()
    r.net.advance(1)  # the close timeout: a failed leg reads no close reply
    assert r.streamlit.messages == [(b"fine", True)]
    assert r.browser.closed is not None and r.browser.closed[1] == 1002
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1002


def test_text_from_the_browser_that_is_not_utf8_closes_both_with_1007() -> None:
    """Invalid UTF-8 in a text frame: 1007 to the browser and to Streamlit, none of it relayed."""
    r = Relayed()
    r.browser.transport.write(frame(TEXT, b"ok\xed\xa0\x80"))
    r.net.flush()
    r.net.advance(1)
    assert r.streamlit.messages == []
    assert r.browser.closed is not None and r.browser.closed[1] == 1007
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1007


def test_a_fragmented_message_over_the_limit_closes_both_with_1009() -> None:
    """The fragment that takes a message past the limit is refused: 1009 both ways, no message."""
    r = Relayed(maxBrowserMessageSize=1000)
    r.browser.transport.write(
        frame(BINARY, b"a" * 600, fin=False) + frame(CONTINUATION, b"b" * 600)
    )
    r.net.flush()
    r.net.advance(1)
    assert r.streamlit.messages == []
    assert r.browser.closed is not None and r.browser.closed[1] == 1009
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1009


def test_a_browser_that_stops_reading_holds_back_a_single_huge_frame() -> None:
    """
    Backpressure inside one frame: a 5 MB message to a browser that reads nothing leaves no
    more than about two reads' worth in the proxy; all of it arrives once the browser reads.
    """
    r = Relayed()
    r.browser.transport.pauseProducing()
    payload = bytes(range(256)) * (5 * 2**20 // 256)
    r.streamlit.sendMessage(payload, isBinary=True)
    r.net.flush()
    assert r.upstreamLeg.valve is not None and r.upstreamLeg.valve.paused
    assert r.browserPump.serverIO.buffered() <= 3 * 65536
    assert r.upstreamLeg.valve.heldBytes <= 2 * 65536
    r.browser.transport.resumeProducing()
    r.net.flush()
    assert r.browser.messages == [(payload, True)]


#: Two server frames: "first", and "second" which TCP will cut in two.
FIRST, SECOND = b"\x82\x05first", b"\x82\x06second"


class EagerStreamlit(FakeStreamlit):
    """Writes a frame and a half the moment it accepts: they reach the proxy with the 101."""

    def onOpen(self) -> None:
        self.transport.write(FIRST + SECOND[:4])


def test_what_arrived_with_the_upstreams_101_is_passed_on_first() -> None:
    """
    Bytes Autobahn had read with the handshake, but not parsed (a frame and a half), are
    read by raw passage, first: the half frame ends with the next read, and both count.
    """
    r = Relayed(streamlit=EagerStreamlit)
    assert r.upstreamLeg.passthrough is not None
    r.streamlit.transport.write(SECOND[4:])
    r.net.flush()
    assert r.browser.messages == [(b"first", True), (b"second", True)]
    assert r.sample("stproxy_websocket_messages_total", direction=DOWNSTREAM) == 2


def test_frames_a_client_sent_with_its_handshake_are_passed_on_first() -> None:
    """
    A client that writes frames right behind its upgrade, before the 101: Autobahn holds them
    while the upstream connects; they reach Streamlit once, first, and in order.
    """
    net = MemoryNetwork()
    factory = FakeStreamlitFactory(net.reactor)
    relay = memoryRelay(net, factory, WebSocketSettings(pingInterval=0))
    received: list[bytearray] = []

    class Recording(FakeStreamlit):
        def onOpen(self) -> None:
            received.append(recordReceived(self))

    factory.protocol = Recording
    client = Protocol()
    connectBrowser(net, relay, client)
    early, late = frame(BINARY, b"one") + frame(BINARY, b"two"), frame(BINARY, b"three")
    client.transport.write(
        b"GET /_stcore/stream HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n" + early
    )
    net.flush()
    client.transport.write(late)
    net.flush()
    [streamlit] = factory.connections
    assert streamlit.messages == [(b"one", True), (b"two", True), (b"three", True)]
    assert bytes(received[0]) == early + late, "not passed on as they came"


def test_length_fields_reach_streamlit_with_the_frames() -> None:
    """16- and 64-bit lengths pass through unchanged (the bytes are the browser's)."""
    r = Relayed()
    atStreamlit = recordReceived(r.streamlit)
    sent = frame(BINARY, b"m" * 300) + frame(BINARY, b"l" * 70000)
    r.browser.transport.write(sent)
    r.net.flush()
    assert bytes(atStreamlit) == sent
    assert struct.unpack("!H", sent[2:4]) == (300,)
    assert [len(p) for p, _ in r.streamlit.messages] == [300, 70000]


class StandInLeg:
    """Just what passThrough asks of a leg before it switches it."""

    passthrough = None

    def __init__(self, extensionsInUse: bool = False, betweenMessages: bool = True) -> None:
        self.extensionsInUse, self.betweenMessages = extensionsInUse, betweenMessages

    def takeUnparsed(self) -> bytes:
        raise AssertionError("taken from a leg that stays on the message path")


@pytest.mark.parametrize(
    ("browser", "upstream"),
    [
        (StandInLeg(extensionsInUse=True), StandInLeg()),
        (StandInLeg(), StandInLeg(extensionsInUse=True)),
        (StandInLeg(betweenMessages=False), StandInLeg()),
        (StandInLeg(), StandInLeg(betweenMessages=False)),
    ],
    ids=["browser-extension", "upstream-extension", "browser-mid-message", "upstream-mid-message"],
)
def test_either_leg_with_an_extension_or_mid_message_keeps_both_on_the_message_path(
    browser: StandInLeg, upstream: StandInLeg
) -> None:
    """Both legs switch, or neither: nothing is taken from Autobahn unless both can."""
    assert passThrough(browser, upstream) is False  # type: ignore[arg-type]
    assert browser.passthrough is None and upstream.passthrough is None
