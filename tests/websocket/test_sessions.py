"""
Tests for L{stproxy.websocket.sessions}: the relay's register of open
connections and joined sessions, their metrics, their one log event each,
and the graceful close of them all.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from stproxy.config import WebSocketSettings
from stproxy.ops.metrics import DOWNSTREAM, UPSTREAM, Metrics
from stproxy.testing import (
    FakeBrowserFactory,
    FakeStreamlitFactory,
    MemoryNetwork,
    connectBrowser,
    memoryRelay,
)
from stproxy.websocket.relay import RelayLeg
from stproxy.websocket.sessions import Sessions


class Leg(RelayLeg):
    """A relay leg with no Autobahn behind it: a transport, a clock and a record of shutdowns."""

    closeHandshakeTimeout = 1.0

    def __init__(self, clock: MemoryReactorClock, side: str = "browser") -> None:
        self.side = side
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.factory = SimpleNamespace(reactor=clock)
        self.http_request_path = "/_stcore/stream"
        self.shutdowns = 0

    def shutdown(self) -> None:
        self.shutdowns += 1


def setUp() -> tuple[MemoryReactorClock, Metrics, list[dict[str, Any]], Sessions]:
    clock, metrics, events = MemoryReactorClock(), Metrics(), []
    return clock, metrics, events, Sessions(clock, metrics, events.append)


def test_track_and_forget_follow_the_open_connections() -> None:
    """A leg is listed from its connection's start to its end, and only once."""
    clock, _, _, sessions = setUp()
    a, b = Leg(clock), Leg(clock, "upstream")
    sessions.track(a)
    sessions.track(a)
    sessions.track(b)
    assert sessions.legs == {a, b}
    sessions.forget(a)
    sessions.forget(a)
    assert sessions.legs == {b}


def test_started_joins_both_legs_in_one_session_and_binds_their_counters() -> None:
    """Browser messages count as upstream-bound, Streamlit's as downstream-bound; one WebSocket is open."""
    clock, metrics, _, sessions = setUp()
    clock.advance(12)
    browser, upstream = Leg(clock), Leg(clock, "upstream")
    sessions.started(browser, upstream)
    assert browser.session is upstream.session and browser.session is not None
    assert browser.session.started == 12
    assert browser.messageCounter is metrics.relayedMessages[UPSTREAM]
    assert browser.byteCounter is metrics.relayedBytes[UPSTREAM]
    assert upstream.messageCounter is metrics.relayedMessages[DOWNSTREAM]
    assert upstream.byteCounter is metrics.relayedBytes[DOWNSTREAM]
    assert metrics.registry.get_sample_value("stproxy_open_websockets") == 1


def test_a_session_ends_with_one_log_event_carrying_its_fields() -> None:
    """When both legs are gone: one event with path, peer, duration, counts and who closed with what."""
    clock, metrics, events, sessions = setUp()
    browser, upstream = Leg(clock), Leg(clock, "upstream")
    sessions.started(browser, upstream)
    browser.relayedMessages, browser.relayedBytes = 3, 30
    upstream.relayedMessages, upstream.relayedBytes = 5, 500
    clock.advance(2.5)
    session = browser.session
    assert session is not None
    session.closing("browser", 4000)
    session.closing("upstream", 1000)  # only the first side counts
    session.legClosed()
    assert events == []
    session.legClosed()
    [event] = events
    assert event["log_websocket"] is True
    fields = {k: event[k] for k in ("path", "peer", "duration", "closed_by", "close_code")}
    assert fields == {
        "path": "/_stcore/stream",
        "peer": "192.0.2.7",
        "duration": 2.5,
        "closed_by": "browser",
        "close_code": 4000,
    }
    assert (event["messages_to_upstream"], event["bytes_to_upstream"]) == (3, 30)
    assert (event["messages_to_browser"], event["bytes_to_browser"]) == (5, 500)
    assert metrics.registry.get_sample_value("stproxy_open_websockets") == 0
    closed = metrics.registry.get_sample_value("stproxy_websocket_sessions_closed_total", {"code": "4xxx"})
    assert closed == 1


def test_close_all_with_nothing_open_fires_at_once() -> None:
    """A proxy with no WebSocket stops without waiting."""
    _, _, _, sessions = setUp()
    assert sessions.closeAll().called


def test_close_all_fires_once_every_leg_is_gone() -> None:
    """Each leg is asked to shut down; the result waits for the last connection to end."""
    clock, _, _, sessions = setUp()
    a, b = Leg(clock), Leg(clock, "upstream")
    sessions.track(a)
    sessions.track(b)
    done = sessions.closeAll(5)
    assert (a.shutdowns, b.shutdowns) == (1, 1)
    sessions.forget(a)
    assert not done.called
    sessions.forget(b)
    assert done.called


def test_close_all_aborts_connections_still_there_after_the_deadline() -> None:
    """A browser that never takes its close frame is aborted at the deadline, not before."""
    clock, _, _, sessions = setUp()
    leg = Leg(clock)
    sessions.track(leg)
    done = sessions.closeAll(5)
    clock.advance(4.9)
    assert not leg.transport.disconnected
    clock.advance(0.1)
    assert leg.transport.disconnected  # what StringTransport.abortConnection sets
    sessions.forget(leg)  # what the aborted connection's connectionLost does
    assert done.called


def test_close_all_closes_open_relayed_websockets_with_1001_on_both_legs() -> None:
    """In the real relay, the browser and Streamlit both get 1001 and the session ends closed by the proxy."""
    net, events = MemoryNetwork(), []
    streamlit = FakeStreamlitFactory(net.reactor)
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0), events.append)
    browser = FakeBrowserFactory(net.reactor).buildProtocol(None)
    connectBrowser(net, relay, browser)
    net.flush()
    done = relay.sessions.closeAll()
    net.flush()
    assert done.called
    assert browser.closed == (True, 1001, "going away")
    assert streamlit.connections[0].closed == (True, 1001, "going away")
    [ended] = [e for e in events if e.get("log_websocket")]
    assert (ended["closed_by"], ended["close_code"]) == ("proxy", 1001)


def test_a_leg_opening_after_close_all_is_aborted_by_its_deadline() -> None:
    """
    Nothing that connects while the proxy stops can keep the stop waiting
    past its deadline, though it gets a second to be refused.
    """
    clock, _, _, sessions = setUp()
    early, late, last = Leg(clock), Leg(clock), Leg(clock)
    sessions.track(early)
    done = sessions.closeAll(5)
    assert sessions.closing
    clock.advance(1)
    sessions.track(late)
    clock.advance(3.9)
    assert not late.transport.disconnected
    clock.advance(0.1)
    assert early.transport.disconnected and late.transport.disconnected
    sessions.forget(early)
    sessions.forget(late)
    assert done.called
    sessions.track(last)
    clock.advance(0.9)
    assert not last.transport.disconnected
    clock.advance(0.1)
    assert last.transport.disconnected


def test_a_browser_connecting_while_the_proxy_stops_gets_503_and_no_session() -> None:
    """A handshake that arrives after close all is refused before any upstream connection."""
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor)
    relay = memoryRelay(net, streamlit, WebSocketSettings(pingInterval=0))
    first = FakeBrowserFactory(net.reactor).buildProtocol(None)
    connectBrowser(net, relay, first)
    net.flush()
    first.transport.pauseProducing()  # it takes its close frame late
    done = relay.sessions.closeAll(5)
    late = FakeBrowserFactory(net.reactor).buildProtocol(None)
    connectBrowser(net, relay, late)
    net.flush()
    assert late.http_status_line == "HTTP/1.1 503 Service Unavailable"
    assert len(streamlit.connections) == 1
    assert relay.metrics.registry.get_sample_value("stproxy_open_websockets") == 1
    net.advance(5)
    assert done.called and relay.sessions.legs == set()
