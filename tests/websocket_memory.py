"""
One open relayed WebSocket in memory (a fake browser, the relay, a fake Streamlit, joined by a
L{MemoryNetwork} on a L{MemoryReactorClock}), for the relay's tests and raw passage's
(``tests/websocket/test_relay.py``, ``tests/websocket/test_passthrough.py``).
"""

from __future__ import annotations

from typing import Any

from stproxy.config import WebSocketSettings
from stproxy.testing import (
    FakeBrowser,
    FakeBrowserFactory,
    FakeStreamlit,
    FakeStreamlitFactory,
    MemoryNetwork,
    connectBrowser,
    memoryRelay,
)
from stproxy.websocket.browser import BrowserFactory, BrowserProtocol
from stproxy.websocket.upstream import UpstreamProtocol


class Relayed:
    """
    One open relayed WebSocket: a fake browser (of L{browserClass}), the relay and a fake
    Streamlit (of C{streamlit}, a protocol class, when given).
    """

    browserClass: type[FakeBrowser] = FakeBrowser

    def __init__(
        self, browserOptions: dict[str, Any] | None = None, streamlit: Any = None, **settings: Any
    ) -> None:
        """
        @param browserOptions: the fake browser's Autobahn options (permessage-deflate offers).
        @param settings: the relay's L{WebSocketSettings}; pings off unless given.
        """
        self.net = MemoryNetwork()
        self.events: list[dict[str, Any]] = []
        self.streamlitFactory = FakeStreamlitFactory(self.net.reactor)
        if streamlit is not None:
            self.streamlitFactory.protocol = streamlit
        settings.setdefault("pingInterval", 0)
        self.relay: BrowserFactory = memoryRelay(
            self.net, self.streamlitFactory, WebSocketSettings(**settings), self.events.append
        )
        browserFactory = FakeBrowserFactory(self.net.reactor, **(browserOptions or {}))
        browserFactory.protocol = self.browserClass
        self.browser: Any = browserFactory.buildProtocol(None)
        self.browserPump = connectBrowser(self.net, self.relay, self.browser)
        self.net.flush()
        assert self.browser.opened
        self.streamlit: FakeStreamlit = self.streamlitFactory.connections[0]
        self.browserLeg: BrowserProtocol = self.browserPump.server
        self.upstreamPump = self.relay.upstream.connections[0]
        self.upstreamLeg: UpstreamProtocol = self.upstreamPump.client

    def turn(self) -> None:
        """One turn of the network: at most 64 KiB read on each connection."""
        self.net.pump()

    def sample(self, name: str, **labels: str) -> float | None:
        """A metric's value in the relay's registry."""
        return self.relay.metrics.registry.get_sample_value(name, labels)
