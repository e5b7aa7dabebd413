"""
Tests for L{stproxy.websocket.footprint}: what an open relayed WebSocket keeps
in memory (its factories' options on a class, its instance dicts no bigger
than what is its own), and that the legs behave the same for it; in memory
on a L{MemoryReactorClock}.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.testing import MemoryReactorClock

from stproxy._autobahn import HANDSHAKE_STATE, optionNames
from stproxy.config import WebSocketSettings
from stproxy.testing import (
    FakeBrowserFactory,
    FakeStreamlitFactory,
    MemoryNetwork,
    connectBrowser,
    memoryRelay,
)
from stproxy.websocket.browser import BrowserProtocol
from stproxy.websocket.footprint import ClassOptions
from stproxy.websocket.upstream import UpstreamProtocol

#: The most names an instance dict holds in 64 slots (CPython), against 128 before.
SMALL_DICT = 42


def openSession(
    **settings: Any,
) -> tuple[MemoryNetwork, Any, Any, BrowserProtocol, UpstreamProtocol]:
    """A relayed WebSocket in memory, open, one message relayed each way."""
    net = MemoryNetwork()
    streamlit = FakeStreamlitFactory(net.reactor, echo=True)
    relay = memoryRelay(net, streamlit, WebSocketSettings(**settings))
    browser = FakeBrowserFactory(net.reactor).buildProtocol(None)
    browserLeg = connectBrowser(net, relay, browser).server
    net.flush()
    assert browser.opened
    browser.sendMessage(b"echo", isBinary=True)
    net.flush()
    assert browser.messages == [(b"echo", True)]
    return net, relay, browser, browserLeg, relay.upstream.connections[0].client


def test_legs_read_their_factorys_options_from_their_class_and_keep_no_copy() -> None:
    """
    Neither leg carries its own copy of its factory's options; each reads the values its
    factory has (the browser's smaller message limit on the browser leg, say), and is a
    BrowserProtocol or UpstreamProtocol under the same name (log namespaces).
    """
    net, relay, browser, browserLeg, upstreamLeg = openSession(
        maxMessageSize=4096, maxBrowserMessageSize=1024, pingInterval=0
    )
    for leg, cls in ((browserLeg, BrowserProtocol), (upstreamLeg, UpstreamProtocol)):
        assert isinstance(leg, cls) and type(leg).__qualname__ == cls.__qualname__
        assert type(leg).__module__ == cls.__module__
        names = optionNames(type(leg))
        assert not set(names) & set(vars(leg))
        assert {name: getattr(leg, name) for name in names} == {
            name: getattr(leg.factory, name) for name in names
        }
    assert browserLeg.maxMessagePayloadSize == 1024 and upstreamLeg.maxMessagePayloadSize == 4096
    assert browserLeg.perMessageCompressionAccept is relay.perMessageCompressionAccept


def test_an_option_changed_on_the_factory_reaches_only_connections_made_after() -> None:
    """
    As when Autobahn copies them at connectionMade, a connection keeps the options its
    factory had when it was made; one class per set of options, made again on a change.
    """

    class Factory(ClassOptions, WebSocketServerFactory):
        pass

    factory = Factory(reactor=MemoryReactorClock())
    before = factory.buildProtocol(None)
    factory.setProtocolOptions(maxMessagePayloadSize=5, perMessageCompressionAccept=len)
    after = factory.buildProtocol(None)
    assert before.maxMessagePayloadSize == 0 and after.maxMessagePayloadSize == 5
    assert after.perMessageCompressionAccept is len, "a function became a method"
    assert type(factory.buildProtocol(None)) is type(after) is not type(before)
    assert after.factory is factory


def test_an_open_legs_instance_dict_holds_only_its_own() -> None:
    """
    Once open, neither leg keeps the handshake, nor a value its class has already
    (Autobahn's starting state, stproxy's defaults), and its instance dict is a small one.
    """
    net, relay, browser, browserLeg, upstreamLeg = openSession(pingInterval=0)
    for leg in (browserLeg, upstreamLeg):
        state = vars(leg)
        assert not set(HANDSHAKE_STATE) & set(state)
        assert not {"send_queue", "failedByMe", "wasClean", "closeHandshakeTimeoutCall"} & set(
            state
        )
        assert len(state) <= SMALL_DICT, sorted(state)
    assert not {"_accept", "_upstream", "handshake", "_cookies"} & set(vars(browserLeg))
    assert not {"browser", "head"} & set(vars(upstreamLeg))


def test_an_open_session_relays_and_closes_as_before() -> None:
    """Lightened legs still relay both ways, answer pings and pass a close on."""
    net, relay, browser, browserLeg, upstreamLeg = openSession(pingInterval=0)
    streamlit = relay.upstream.connections[0].server
    streamlit.sendMessage("from streamlit".encode())
    browser.sendPing(b"are you there")
    net.flush()
    assert browser.messages[-1] == ("from streamlit".encode(), False)
    browser.sendClose(1000, "bye")
    net.flush()
    assert streamlit.closed == (True, 1000, "bye") and browser.closed is not None


def test_the_frame_readers_of_a_session_have_no_instance_dict() -> None:
    """Raw passage's two readers per session hold their state in slots."""
    net, relay, browser, browserLeg, upstreamLeg = openSession(pingInterval=0)
    for leg in (browserLeg, upstreamLeg):
        assert leg.passthrough is not None and not hasattr(leg.passthrough, "__dict__")
