"""
Fakes for testing stproxy, or a program that embeds it, with no sockets and
no global reactor: everything runs on a L{MemoryReactorClock} the test
advances, and nothing moves until the test says so.  Importing them does not
import C{twisted.internet.reactor}.

  - C{http}: L{FakeUpstreamAgent}, the HTTP leg's upstream, and its
    L{FakeResponse};
  - C{memory}: L{MemoryNetwork}, in-memory connections with TCP's flow control;
  - C{websocket}: the WebSocket relay's two legs in memory (L{MemoryUpstream},
    L{memoryRelay}, L{connectBrowser}, L{connectThroughSite}), against
    L{FakeStreamlitFactory} and L{FakeBrowserFactory}.
"""

from __future__ import annotations

from stproxy.testing.http import BodyTransport, FakeResponse, FakeUpstreamAgent, UpstreamRequest
from stproxy.testing.memory import MemoryNetwork, MemoryTransport
from stproxy.testing.websocket import (
    FakeBrowser,
    FakeBrowserFactory,
    FakeStreamlit,
    FakeStreamlitFactory,
    MemoryUpstream,
    connectBrowser,
    connectThroughSite,
    memoryRelay,
)

__all__ = [
    "BodyTransport",
    "FakeBrowser",
    "FakeBrowserFactory",
    "FakeResponse",
    "FakeStreamlit",
    "FakeStreamlitFactory",
    "FakeUpstreamAgent",
    "MemoryNetwork",
    "MemoryTransport",
    "MemoryUpstream",
    "UpstreamRequest",
    "connectBrowser",
    "connectThroughSite",
    "memoryRelay",
]
