"""
Tests for L{stproxy.websocket.relay}: what the two joined legs of a relayed
WebSocket do for each other (messages, closes, lost connections,
backpressure, size limits), in memory on a L{MemoryReactorClock}.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from autobahn.websocket import compress_deflate
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from websocket_memory import Relayed as MemoryRelayed

from stproxy.ops.metrics import DOWNSTREAM, UPSTREAM
from stproxy.testing import FakeBrowser
from stproxy.websocket.valve import HOLD_LIMIT

#: A browser that offers permessage-deflate (FakeBrowserFactory options).
DEFLATE: dict[str, Any] = {
    "perMessageCompressionOffers": [PerMessageDeflateOffer()],
    "perMessageCompressionAccept": PerMessageDeflateResponseAccept,
}


class PongCountingBrowser(FakeBrowser):
    """A fake browser that counts the pongs it reads."""

    pongs = 0

    def onPong(self, payload: bytes) -> None:
        self.pongs += 1


class Relayed(MemoryRelayed):
    """One open relayed WebSocket whose browser counts pongs."""

    browserClass = PongCountingBrowser


def test_messages_cross_both_ways_in_order_with_their_binary_or_text_flag() -> None:
    """A text message stays text and a binary one binary, each way, in the order sent."""
    r = Relayed()
    r.browser.sendMessage(b"\x00\x01", isBinary=True)
    r.browser.sendMessage("caf\u00e9".encode(), isBinary=False)
    r.streamlit.sendMessage(b"delta", isBinary=True)
    r.streamlit.sendMessage(b"{}", isBinary=False)
    r.net.flush()
    assert r.streamlit.messages == [(b"\x00\x01", True), ("caf\u00e9".encode(), False)]
    assert r.browser.messages == [(b"delta", True), (b"{}", False)]


def test_relayed_messages_and_bytes_are_counted_by_direction() -> None:
    """Each relayed message counts once, with its payload size, under its direction."""
    r = Relayed()
    r.browser.sendMessage(b"abc", isBinary=True)
    r.browser.sendMessage(b"de", isBinary=True)
    r.streamlit.sendMessage(b"x" * 10, isBinary=True)
    r.net.flush()
    assert r.sample("stproxy_websocket_messages_total", direction=UPSTREAM) == 2
    assert r.sample("stproxy_websocket_message_bytes_total", direction=UPSTREAM) == 5
    assert r.sample("stproxy_websocket_messages_total", direction=DOWNSTREAM) == 1
    assert r.sample("stproxy_websocket_message_bytes_total", direction=DOWNSTREAM) == 10
    assert (r.browserLeg.relayedMessages, r.upstreamLeg.relayedBytes) == (2, 10)


def test_a_close_from_the_browser_reaches_streamlit_with_its_code_and_reason() -> None:
    """The browser's close code and reason are what Streamlit sees, and the close completes."""
    r = Relayed()
    r.browser.sendClose(4000, "tab closed")
    r.net.flush()
    assert r.streamlit.closed == (True, 4000, "tab closed")
    assert r.browser.closed == (True, 4000, "tab closed")
    assert r.relay.sessions.legs == set()


def test_a_close_from_streamlit_reaches_the_browser_with_its_code_and_reason() -> None:
    """Streamlit's close code and reason are what the browser sees."""
    r = Relayed()
    r.streamlit.sendClose(4001, "session expired")
    r.net.flush()
    assert r.browser.closed == (True, 4001, "session expired")
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 4001
    assert r.relay.sessions.legs == set()


def test_streamlit_lost_without_a_close_gives_the_browser_1012() -> None:
    """Streamlit killed or restarting: the browser is told 1012 so its frontend reconnects."""
    r = Relayed()
    r.streamlit.transport.abortConnection()
    r.net.flush()
    assert r.browser.closed == (True, 1012, "service restart")
    assert r.relay.sessions.legs == set()


def test_the_browser_lost_without_a_close_gives_streamlit_1001() -> None:
    """A browser that vanishes is reported to Streamlit as a page going away."""
    r = Relayed()
    r.browser.transport.abortConnection()
    r.net.flush()
    assert r.streamlit.closed == (True, 1001, "going away")
    assert r.relay.sessions.legs == set()


def test_a_message_from_the_browser_over_max_message_size_closes_both_with_1009() -> None:
    """An oversized message is not relayed; the browser gets 1009 and Streamlit is told the same."""
    r = Relayed(maxMessageSize=1000)
    r.browser.sendMessage(b"x" * 1000, isBinary=True)
    r.browser.sendMessage(b"x" * 1001, isBinary=True)
    r.net.flush()
    r.net.advance(1)  # the close timeout: a failed leg reads no close reply
    assert r.streamlit.messages == [(b"x" * 1000, True)]
    assert r.browser.closed is not None and r.browser.closed[1] == 1009
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1009


def test_a_message_from_streamlit_over_max_message_size_closes_both_with_1009() -> None:
    """The limit holds the other way too."""
    r = Relayed(maxMessageSize=1000)
    r.streamlit.sendMessage(b"x" * 5000, isBinary=True)
    r.net.flush()
    assert r.browser.messages == []
    assert r.browser.closed is not None and r.browser.closed[1] == 1009
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1009


def test_the_browsers_own_limit_holds_for_what_it_sends_only() -> None:
    """
    Past --ws-max-browser-message-size the browser gets 1009 (and Streamlit
    too), while Streamlit's bigger messages still reach the browser.
    """
    r = Relayed(maxBrowserMessageSize=1000)
    r.streamlit.sendMessage(b"s" * 5000, isBinary=True)
    r.browser.sendMessage(b"x" * 1000, isBinary=True)
    r.net.flush()
    assert r.browser.messages == [(b"s" * 5000, True)]
    assert r.streamlit.messages == [(b"x" * 1000, True)]
    r.browser.sendMessage(b"x" * 1001, isBinary=True)
    r.net.flush()
    r.net.advance(1)  # the close timeout: a failed leg reads no close reply
    assert len(r.streamlit.messages) == 1
    assert r.browser.closed is not None and r.browser.closed[1] == 1009
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1009


class InflationSpy:
    """A zlib decompressor that records how many bytes each call inflated."""

    decompressobj = staticmethod(zlib.decompressobj)

    def __init__(self, inflated: list[int], *args: Any) -> None:
        self._decompressor = self.decompressobj(*args)
        self._inflated = inflated

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out = self._decompressor.decompress(data, max_length)
        self._inflated.append(len(out))
        return out

    @property
    def unconsumed_tail(self) -> bytes:
        return self._decompressor.unconsumed_tail


def test_a_deflate_bomb_is_refused_with_1009_having_inflated_no_more_than_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    30 MB of zeros, 30 KB compressed, from a browser whose limit is 1 MB:
    the browser and Streamlit get 1009, Streamlit no message, and the proxy
    never inflated more than the limit (plus the one byte that proves it).
    """
    inflated: list[int] = []
    r = Relayed(browserOptions=DEFLATE, compression=True, maxBrowserMessageSize=2**20)
    assert r.browserLeg.websocket_extensions_in_use, "permessage-deflate was not negotiated"
    monkeypatch.setattr(
        compress_deflate.zlib, "decompressobj", lambda *args: InflationSpy(inflated, *args)
    )
    r.browser.sendMessage(b"\0" * (30 * 2**20), isBinary=True)
    r.net.flush()
    r.net.advance(1)  # the close timeout: a failed leg reads no close reply
    assert r.browser.closed is not None and r.browser.closed[1] == 1009
    assert r.streamlit.closed is not None and r.streamlit.closed[1] == 1009
    assert r.streamlit.messages == []
    assert inflated and sum(inflated) <= 2**20 + 1
    assert r.relay.sessions.legs == set()


def test_what_a_failed_browser_sends_next_is_neither_parsed_nor_kept() -> None:
    """
    After its 1009 the browser leg processes nothing more (RFC 6455 7.1.7):
    a browser streaming on is not buffered until the close timeout.
    """
    r = Relayed(browserOptions=DEFLATE, compression=True, maxBrowserMessageSize=2**20)
    r.browser.sendMessage(b"\0" * (30 * 2**20), isBinary=True)
    r.net.flush()
    assert r.browserLeg.failedByProxy
    fed: list[int] = []
    r.browserLeg._dataReceived = lambda data: fed.append(len(data))  # type: ignore[method-assign]
    r.browser.transport.write(b"\x82\x7e\x10\x00" + b"\0" * 4096 * 64)
    r.net.flush()
    assert fed == [] and r.browserLeg.valve is not None and r.browserLeg.valve.heldBytes == 0


def test_each_legs_full_transport_holds_back_the_other_leg() -> None:
    """Once joined, a full browser transport holds back the upstream leg, and the reverse."""
    r = Relayed()
    assert r.browserLeg.sendBuffer is not None and r.upstreamLeg.sendBuffer is not None
    assert r.browserLeg.transport.producer is r.browserLeg.sendBuffer
    assert r.upstreamLeg.transport.producer is r.upstreamLeg.sendBuffer
    assert r.browserLeg.transport.streamingProducer
    r.browserLeg.sendBuffer.pauseProducing()
    assert r.upstreamLeg.valve is not None and r.upstreamLeg.valve.paused
    assert r.browserLeg.valve is not None and not r.browserLeg.valve.paused
    r.upstreamLeg.sendBuffer.pauseProducing()
    assert r.browserLeg.valve.paused


def test_a_browser_that_stops_reading_stops_the_proxy_reading_from_streamlit() -> None:
    """
    Backpressure: while the browser reads nothing, the proxy stops reading
    from Streamlit once the browser's transport is full, and everything
    arrives, in order, once the browser reads again.
    """
    r = Relayed()
    r.browser.transport.pauseProducing()
    sent = [bytes([i]) * 30000 for i in range(10)]
    for payload in sent:
        r.streamlit.sendMessage(payload, isBinary=True)
    r.net.flush()
    assert r.upstreamLeg.valve is not None and r.upstreamLeg.valve.paused
    assert not r.upstreamPump.clientIO.reading
    assert r.upstreamPump.serverIO.stream  # left in Streamlit's send buffer
    assert r.browser.messages == []
    r.browser.transport.resumeProducing()
    r.net.flush()
    assert [payload for payload, _ in r.browser.messages] == sent
    assert not r.upstreamLeg.valve.paused and r.upstreamPump.clientIO.reading


def test_streamlit_that_stops_reading_stops_the_proxy_reading_from_the_browser() -> None:
    """Backpressure the other way: a stalled Streamlit pauses reading from the browser."""
    r = Relayed()
    r.streamlit.transport.pauseProducing()
    for i in range(10):
        r.browser.sendMessage(bytes([i]) * 30000, isBinary=True)
    r.net.flush()
    assert r.browserLeg.valve is not None and r.browserLeg.valve.paused
    assert not r.browserPump.serverIO.reading
    r.streamlit.transport.resumeProducing()
    r.net.flush()
    assert len(r.streamlit.messages) == 10
    assert not r.browserLeg.valve.paused


def test_a_browser_that_closes_and_stops_reading_is_aborted_after_the_close_timeout() -> None:
    """
    A browser that sends its close and then reads nothing more would keep
    its connection (and session) for ever; it is aborted a second later.
    """
    r = Relayed()
    r.browser.transport.pauseProducing()
    r.streamlit.sendMessage(b"x" * 100000, isBinary=True)
    r.browser.sendClose(1000)
    r.net.flush()
    assert r.browserLeg in r.relay.sessions.legs  # its reply still waits to be read
    r.net.advance(0.9)
    assert r.browserLeg in r.relay.sessions.legs
    r.net.advance(0.2)
    assert r.browserPump.serverIO.aborted
    assert r.relay.sessions.legs == set()


def stalledStreamlit() -> Relayed:
    """A session whose Streamlit stopped reading, with reading from the browser held back."""
    r = Relayed()
    r.streamlit.transport.pauseProducing()
    r.browser.sendMessage(b"x" * 100000, isBinary=True)
    r.net.flush()
    assert r.browserLeg.valve is not None and r.browserLeg.valve.paused
    return r


def test_a_browser_leaving_while_streamlit_stops_reading_releases_both_legs() -> None:
    """
    Held back because Streamlit is not reading, the browser leg still sees
    the browser's connection end (no pings here); the upstream leg, whose
    close frame Streamlit never reads, is aborted after the close timeout.
    """
    r = stalledStreamlit()
    r.browser.transport.loseConnection()
    r.net.flush()
    assert r.browserLeg not in r.relay.sessions.legs
    assert r.upstreamLeg in r.relay.sessions.legs
    r.net.advance(1)
    assert r.upstreamPump.clientIO.aborted
    assert r.relay.sessions.legs == set()
    [ended] = [e for e in r.events if e.get("log_websocket")]
    assert (ended["closed_by"], ended["close_code"]) == ("browser", 1006)


def test_a_browser_closing_while_streamlit_stops_reading_releases_both_legs() -> None:
    """The same when the browser sends its close frame first and then goes."""
    r = stalledStreamlit()
    r.browser.closeHandshakeTimeout = 0  # it waits for the answer for ever
    r.browser.sendClose(1000)
    r.net.flush()
    r.browser.transport.loseConnection()
    r.net.flush()
    r.net.advance(1)
    assert r.relay.sessions.legs == set()


def test_streamlit_leaving_while_the_browser_stops_reading_releases_both_legs() -> None:
    """The other way: held back by a browser that reads nothing, the upstream leg sees Streamlit go."""
    r = Relayed()
    r.browser.transport.pauseProducing()
    r.streamlit.sendMessage(b"x" * 100000, isBinary=True)
    r.net.flush()
    assert r.upstreamLeg.valve is not None and r.upstreamLeg.valve.paused
    r.streamlit.transport.loseConnection()
    r.net.flush()
    assert r.upstreamLeg not in r.relay.sessions.legs
    r.net.advance(1)
    assert r.relay.sessions.legs == set()


def test_once_one_leg_is_gone_the_other_is_aborted_after_the_close_timeout() -> None:
    """Whatever its close is waiting for, the other leg does not outlive the session by more than that."""
    r = Relayed()
    r.upstreamLeg.closeWith(1000, None)  # its own close, which Streamlit will not answer
    r.streamlit.transport.pauseProducing()
    r.upstreamLeg.stopCloseHandshakeTimer()  # as if Autobahn's own timer were not there
    r.browser.transport.abortConnection()
    r.net.flush()
    assert r.upstreamLeg in r.relay.sessions.legs
    r.net.advance(1)
    assert r.relay.sessions.legs == set()


def pingFlood(r: Relayed, count: int = 20000) -> None:
    """The browser stops reading, then sends C{count} pings of 125 bytes (2.6 MB at 20000)."""
    r.browser.transport.pauseProducing()
    for _ in range(count):
        r.browser.sendPing(b"p" * 125)
    r.net.flush()


def test_a_ping_flood_whose_pongs_are_not_read_is_not_read_either() -> None:
    """
    A browser that pings without reading its pongs gets no more than about
    two reads' worth of them queued (2.5 MB without the bound), and then is
    not read itself: its pings wait in its own send buffer.
    """
    r = Relayed()
    pingFlood(r)
    proxy = r.browserPump.serverIO
    assert proxy.buffered() <= 2 * HOLD_LIMIT, "pongs queued without bound"
    assert r.browserLeg.valve is not None and r.browserLeg.valve.paused
    assert r.browserLeg.valve.heldBytes <= 2 * HOLD_LIMIT
    assert not proxy.reading
    assert r.browserPump.clientIO.stream, "the rest of the pings wait in the browser"


def test_a_ping_flooding_browser_that_leaves_releases_both_legs() -> None:
    """Held back for its pongs, the browser leg still goes when the browser does, and Streamlit is told 1001."""
    r = Relayed()
    pingFlood(r)
    r.browser.transport.abortConnection()
    r.net.flush()
    assert r.relay.sessions.legs == set()
    assert r.streamlit.closed == (True, 1001, "going away")
    assert r.browserLeg.valve is not None and r.browserLeg.valve.heldBytes == 0


def test_held_back_pings_are_all_answered_once_the_browser_reads_again() -> None:
    """No ping goes unanswered: once the browser reads, the rest are read and answered, in order."""
    r = Relayed()
    pingFlood(r, 3000)
    assert r.browser.pongs == 0
    r.browser.transport.resumeProducing()
    r.net.flush()
    assert r.browser.pongs == 3000
    assert r.browserLeg.valve is not None and not r.browserLeg.valve.paused
    r.browser.sendMessage(b"after", isBinary=True)
    r.net.flush()
    assert r.streamlit.messages == [(b"after", True)]


def test_a_browser_behind_streamlits_stream_still_gets_its_messages_through() -> None:
    """Only pongs hold a leg back for its own full transport: a browser that is slow to read still sends."""
    r = Relayed()
    r.browser.transport.pauseProducing()
    for i in range(10):
        r.streamlit.sendMessage(bytes([i]) * 30000, isBinary=True)
    r.browser.sendMessage(b"rerun", isBinary=True)
    r.net.flush()
    assert r.upstreamLeg.valve is not None and r.upstreamLeg.valve.paused
    assert r.streamlit.messages == [(b"rerun", True)]


def test_streamlit_pinging_without_reading_is_not_read_either() -> None:
    """The upstream leg bounds the pongs it queues for Streamlit the same way."""
    r = Relayed()
    r.streamlit.transport.pauseProducing()
    for _ in range(20000):
        r.streamlit.sendPing(b"p" * 125)
    r.net.flush()
    assert r.upstreamPump.clientIO.buffered() <= 2 * HOLD_LIMIT
    assert r.upstreamLeg.valve is not None and r.upstreamLeg.valve.paused
    assert not r.upstreamPump.clientIO.reading
