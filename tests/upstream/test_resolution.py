"""
The upstream's addresses (stproxy.upstream.resolution) against a fake resolver the test answers
itself, on a memory reactor: looked up once and reused, looked up again on the timer, kept through
a failed lookup, and connected to by address, the next one tried when one refuses.
"""

from __future__ import annotations

from fake_resolver import FakeResolver
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from stproxy.upstream.resolution import REFRESH_INTERVAL, ResolvedEndpoint, UpstreamAddresses


def connectedHosts(clock: MemoryReactorClock) -> list[str]:
    return [host for host, *_ in clock.tcpClients]


def setUp(host: str = "app.internal") -> tuple[MemoryReactorClock, FakeResolver, UpstreamAddresses, list[dict]]:
    clock = MemoryReactorClock()
    resolver = FakeResolver()
    events: list[dict] = []
    return clock, resolver, UpstreamAddresses(clock, host, 8501, resolver, logObserver=events.append), events


def connect(clock: MemoryReactorClock, addresses: UpstreamAddresses) -> list[object]:
    results: list[object] = []
    ResolvedEndpoint(clock, addresses, 5).connect(Factory.forProtocol(Protocol)).addBoth(results.append)
    return results


def test_the_name_is_looked_up_once_and_reused_for_every_connection() -> None:
    """Three connections, two of them asked for while the lookup is pending, cost one lookup, and all go to the address."""
    clock, resolver, addresses, _ = setUp()
    connect(clock, addresses)
    connect(clock, addresses)
    assert [(host, port) for _, host, port in resolver.lookups] == [("app.internal", 8501)]
    resolver.answer("10.0.0.7")
    connect(clock, addresses)
    assert resolver.lookups == []
    assert connectedHosts(clock) == ["10.0.0.7"] * 3
    assert [port for _, port, *_ in clock.tcpClients] == [8501] * 3


def test_an_ip_address_is_never_looked_up() -> None:
    """An upstream given as an IPv4 or IPv6 address is connected to as it is, with no resolver at all."""
    clock = MemoryReactorClock()
    for host in ("127.0.0.1", "::1"):
        connect(clock, UpstreamAddresses(clock, host, 8501, None))
    assert connectedHosts(clock) == ["127.0.0.1", "::1"]


def test_the_name_is_looked_up_again_on_the_timer() -> None:
    """Started, the name is looked up at once and every 30 s, and a new address serves the next connection."""
    clock, resolver, addresses, events = setUp()
    addresses.start()
    resolver.answer("10.0.0.7")
    clock.advance(REFRESH_INTERVAL)
    resolver.answer("10.0.0.8")
    connect(clock, addresses)
    assert connectedHosts(clock) == ["10.0.0.8"]
    assert [e.get("addresses") for e in events] == ["10.0.0.8"]
    addresses.stop()
    clock.advance(REFRESH_INTERVAL)
    assert resolver.lookups == []


def test_a_failed_lookup_keeps_the_last_addresses_and_warns_once() -> None:
    """Lookups that fail after one succeeded keep the addresses that worked, with one warning until a lookup works again."""
    clock, resolver, addresses, events = setUp()
    addresses.start()
    resolver.answer("10.0.0.7")
    for _ in range(3):
        clock.advance(REFRESH_INTERVAL)
        resolver.answer()
    connect(clock, addresses)
    assert connectedHosts(clock) == ["10.0.0.7"]
    assert [e["log_level"].name for e in events] == ["warn"]
    assert events[0]["addresses"] == "10.0.0.7"
    clock.advance(REFRESH_INTERVAL)
    resolver.answer("10.0.0.7")
    assert [e["log_level"].name for e in events] == ["warn", "info"]


def test_a_name_that_does_not_resolve_fails_the_connection() -> None:
    """With no address ever found, the connection fails with DNSLookupError naming the host, and the next one looks again."""
    clock, resolver, addresses, _ = setUp()
    results = connect(clock, addresses)
    resolver.answer()
    [result] = results
    assert isinstance(result, Failure) and result.check(DNSLookupError)
    assert "app.internal" in result.getErrorMessage()
    connect(clock, addresses)
    assert len(resolver.lookups) == 1


def test_a_refused_address_is_followed_by_the_next_which_is_then_tried_first() -> None:
    """When the first address refuses, the next is tried, and once it has accepted it is the first tried from then on."""
    clock, resolver, addresses, _ = setUp("localhost")
    results = connect(clock, addresses)
    resolver.answer("::1", "127.0.0.1")
    connector = clock.connectors[0]
    clock.tcpClients[0][2].clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
    assert connectedHosts(clock) == ["::1", "127.0.0.1"]
    clock.tcpClients[1][2].buildProtocol(IPv4Address("TCP", "127.0.0.1", 8501)).makeConnection(StringTransport())
    assert results and not isinstance(results[0], Failure)
    connect(clock, addresses)
    assert connectedHosts(clock)[-1] == "127.0.0.1"
