"""
Replicas found in DNS (stproxy.routing.discovery): against a fake resolver the test answers
itself on a L{Clock}, what is reported (first answer, changes, zero replicas), what is kept
through DNS failures and how loudly, that lookups never overlap and stop stops them; the parsing
of C{--resolver}; and, once, the real C{twisted.names} client against a loopback DNS server.
"""

from __future__ import annotations

from typing import Any

import pytest
from dns_server import RecordsAuthority, listen
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.names import client, dns
from twisted.names.error import (
    DNSNameError,
    DNSQueryRefusedError,
    DNSQueryTimeoutError,
    DNSServerError,
)
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from stproxy.routing.discovery import DNSDiscovery, dnsResolver, parseServer

NAME = "app.test"
INTERVAL = 5.0


def rr(address: str, name: str = NAME) -> dns.RRHeader:
    """An A or AAAA answer record for C{address}."""
    if ":" in address:
        return dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(address), ttl=0)
    return dns.RRHeader(name, dns.A, payload=dns.Record_A(address), ttl=0)


@implementer(IResolver)
class FakeDNS:
    """Records each A/AAAA query as a Deferred; the test fires them with L{respond}."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, int, Any, Deferred[Any]]] = []
        self.raises: Exception | None = None
        self.cancelled: list[tuple[str, int]] = []

    def _ask(self, name: str, kind: int, timeout: Any) -> Deferred[Any]:
        if self.raises is not None:
            raise self.raises
        d: Deferred[Any] = Deferred(lambda _: self.cancelled.append((name, kind)))
        self.queries.append((name, kind, timeout, d))
        return d

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._ask(name, dns.A, timeout)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._ask(name, dns.AAAA, timeout)

    def respond(self, a: Any = (), aaaa: Any = ()) -> None:
        """
        Fire every pending query: C{a}/C{aaaa} are addresses or records for the answer section,
        or an exception to fail with.
        """
        queries, self.queries = self.queries, []
        for _, kind, _, d in queries:
            answer = a if kind == dns.A else aaaa
            if isinstance(answer, Exception):
                d.errback(answer)
            else:
                d.callback(([rr(x) if isinstance(x, str) else x for x in answer], [], []))

    def answer(self, *addresses: str) -> None:
        """Each address in the answer of its own type (IPv4 in A, IPv6 in AAAA)."""
        self.respond([x for x in addresses if ":" not in x], [x for x in addresses if ":" in x])


def setUp(
    found: Any = None, interval: float = INTERVAL
) -> tuple[Clock, FakeDNS, DNSDiscovery, list[frozenset[str]], list[dict]]:
    clock, fake = Clock(), FakeDNS()
    reports: list[frozenset[str]] = []
    events: list[dict] = []
    discovery = DNSDiscovery(
        clock, NAME, interval, found or reports.append, fake, logObserver=events.append
    )
    return clock, fake, discovery, reports, events


def lines(events: list[dict], level: LogLevel) -> list[dict]:
    return [e for e in events if e["log_level"] == level]


def test_the_first_answer_is_reported() -> None:
    """Started, discovery asks A and AAAA at once and reports every address of both, with one log line."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    assert [(name, kind) for name, kind, _, _ in fake.queries] == [(NAME, dns.A), (NAME, dns.AAAA)]
    fake.answer("10.0.0.2", "10.0.0.1", "fd00::1")
    assert reports == [frozenset({"10.0.0.1", "10.0.0.2", "fd00::1"})]
    [info] = lines(events, LogLevel.info)
    assert info["log_format"] == "Replicas of {name}: {addresses}"
    assert (info["name"], info["addresses"]) == (NAME, "10.0.0.1, 10.0.0.2, fd00::1")


def test_an_unchanged_answer_is_not_reported_again() -> None:
    """The same addresses, even in another order, are neither reported nor logged again."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.answer("10.0.0.1", "10.0.0.2")
    for _ in range(3):
        clock.advance(INTERVAL)
        fake.answer("10.0.0.2", "10.0.0.1")
    assert reports == [frozenset({"10.0.0.1", "10.0.0.2"})]
    assert len(events) == 1


def test_added_and_removed_addresses_are_reported() -> None:
    """A replica that appears, then one that goes, each make a report and a log line with the new set."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.answer("10.0.0.1")
    clock.advance(INTERVAL)
    fake.answer("10.0.0.1", "10.0.0.2")
    clock.advance(INTERVAL)
    fake.answer("10.0.0.2")
    assert reports == [
        frozenset({"10.0.0.1"}),
        frozenset({"10.0.0.1", "10.0.0.2"}),
        frozenset({"10.0.0.2"}),
    ]
    assert [e["addresses"] for e in events] == ["10.0.0.1", "10.0.0.1, 10.0.0.2", "10.0.0.2"]


def test_a_name_that_does_not_exist_is_zero_replicas() -> None:
    """NXDOMAIN (a Deployment scaled to 0, a Service deleted) reports the empty set, with no warning."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.answer("10.0.0.1")
    clock.advance(INTERVAL)
    fake.respond(DNSNameError(), DNSNameError())
    assert reports == [frozenset({"10.0.0.1"}), frozenset()]
    assert lines(events, LogLevel.warn) == []
    assert events[-1]["addresses"] == "none"


def test_an_answer_without_addresses_is_zero_replicas() -> None:
    """An answer holding only a CNAME (no A or AAAA at all) is reported as no replica."""
    clock, fake, discovery, reports, _ = setUp()
    discovery.start()
    fake.respond([dns.RRHeader(NAME, dns.CNAME, payload=dns.Record_CNAME("gone.test"))])
    assert reports == [frozenset()]


def test_a_cname_is_skipped_and_the_addresses_after_it_taken() -> None:
    """A CNAME in the answer is not an address, but the A records the server put after it are."""
    clock, fake, discovery, reports, _ = setUp()
    discovery.start()
    cname = dns.RRHeader(NAME, dns.CNAME, payload=dns.Record_CNAME("pods.test"))
    fake.respond([cname, rr("10.0.0.5", "pods.test")], [cname])
    assert reports == [frozenset({"10.0.0.5"})]


@pytest.mark.parametrize("aaaa", [[], DNSNameError()], ids=["empty", "nxdomain"])
def test_a_records_count_when_aaaa_has_none(aaaa: Any) -> None:
    """IPv4-only replicas: the A records are reported whether AAAA is empty or says no such name."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.respond(["10.0.0.1", "10.0.0.2"], aaaa)
    assert reports == [frozenset({"10.0.0.1", "10.0.0.2"})]
    assert lines(events, LogLevel.warn) == []


FAILURES = [
    DNSQueryTimeoutError(7),
    TimeoutError("no answer"),
    DNSServerError(dns.Message(rCode=dns.ESERVER)),
    DNSQueryRefusedError(dns.Message(rCode=dns.EREFUSED)),
    ConnectionRefusedError(),
]


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("which", ["A", "AAAA"])
def test_a_failure_keeps_the_set_with_one_warning_per_streak(error: Exception, which: str) -> None:
    """
    A failed A or AAAA query keeps the last set, unreported; a streak of failures warns once,
    the recovery says so, and the next streak warns again.
    """
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.answer("10.0.0.1", "fd00::1")

    def failing() -> None:
        clock.advance(INTERVAL)
        if which == "A":
            fake.respond(error, ["fd00::2"])
        else:
            fake.respond(["10.0.0.2"], error)

    for _ in range(3):
        failing()
    assert reports == [frozenset({"10.0.0.1", "fd00::1"})]
    [warning] = lines(events, LogLevel.warn)
    assert warning["log_format"] == (
        "Looking up replicas of {name} failed ({reason}); keeping {addresses}"
    )
    assert (warning["name"], warning["addresses"]) == (NAME, "10.0.0.1, fd00::1")
    assert warning["reason"] and "\n" not in warning["reason"] and len(warning["reason"]) < 80

    clock.advance(INTERVAL)
    fake.answer("10.0.0.1", "fd00::1")
    assert (
        lines(events, LogLevel.info)[-1]["log_format"]
        == "Looking up replicas of {name} works again"
    )
    failing()
    assert len(lines(events, LogLevel.warn)) == 2
    assert len(reports) == 1


def test_a_failure_before_any_answer_reports_nothing() -> None:
    """Until one lookup works nothing is reported (not even an empty set), and then its answer is."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.respond(DNSQueryTimeoutError(1), DNSQueryTimeoutError(2))
    assert reports == []
    assert lines(events, LogLevel.warn)[0]["addresses"] == "none"
    clock.advance(INTERVAL)
    fake.answer("10.0.0.1")
    assert reports == [frozenset({"10.0.0.1"})]


def test_a_resolver_that_raises_is_a_failed_lookup() -> None:
    """A resolver raising instead of failing its Deferred is a failure like any other; the timer goes on."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.answer("10.0.0.1")
    fake.raises = OSError("no socket left")
    clock.advance(INTERVAL)
    assert lines(events, LogLevel.warn)[0]["reason"] == "no socket left"
    fake.raises = None
    clock.advance(INTERVAL)
    fake.answer("10.0.0.2")
    assert reports == [frozenset({"10.0.0.1"}), frozenset({"10.0.0.2"})]


def test_lookups_do_not_overlap() -> None:
    """While a lookup waits for its answer, the timer's next ticks ask nothing more."""
    clock, fake, discovery, reports, _ = setUp()
    discovery.start()
    for _ in range(3):
        clock.advance(INTERVAL)
    assert len(fake.queries) == 2
    fake.answer("10.0.0.1")
    clock.advance(INTERVAL)
    assert len(fake.queries) == 2
    assert reports == [frozenset({"10.0.0.1"})]


def test_each_query_gives_up_within_about_one_interval() -> None:
    """Queries carry Twisted's retries cut to what fits in the interval, so a silent server shows soon."""
    seen = {}
    for interval in (0.5, 5.0, 20.0, 300.0):
        clock, fake, discovery, _, _ = setUp(interval=interval)
        discovery.start()
        seen[interval] = {timeout for _, _, timeout, _ in fake.queries}
    assert seen == {0.5: {(1,)}, 5.0: {(1, 3)}, 20.0: {(1, 3, 11)}, 300.0: {(1, 3, 11, 45)}}


def test_stop_stops_the_timer_and_cancels_the_lookup_in_flight() -> None:
    """After stop() nothing is asked again, the pending queries are cancelled, and nothing is reported or warned of."""
    clock, fake, discovery, reports, events = setUp()
    discovery.start()
    fake.answer("10.0.0.1")
    clock.advance(INTERVAL)
    discovery.stop()
    assert fake.cancelled == [(NAME, dns.A), (NAME, dns.AAAA)]
    fake.queries = []
    clock.advance(INTERVAL * 3)
    assert fake.queries == []
    assert clock.getDelayedCalls() == []
    assert reports == [frozenset({"10.0.0.1"})]
    assert lines(events, LogLevel.warn) == []


def test_an_exception_from_found_is_logged_and_discovery_goes_on() -> None:
    """A consumer that raises gets a logged failure, and later changes still reach it."""
    calls: list[frozenset[str]] = []

    def found(addresses: frozenset[str]) -> None:
        calls.append(addresses)
        raise RuntimeError("consumer broke")

    clock, fake, discovery, _, events = setUp(found=found)
    discovery.start()
    fake.answer("10.0.0.1")
    clock.advance(INTERVAL)
    fake.answer("10.0.0.2")
    assert calls == [frozenset({"10.0.0.1"}), frozenset({"10.0.0.2"})]
    failures = [e for e in events if "log_failure" in e]
    assert [e["log_failure"].check(RuntimeError) for e in failures] == [RuntimeError] * 2
    assert {e["log_format"] for e in failures} == {"Reporting the replicas of {name} failed"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.96.0.10", ("10.96.0.10", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[fd00::a]:5353", ("fd00::a", 5353)),
        ("127.0.0.11:65535", ("127.0.0.11", 65535)),
    ],
)
def test_parse_server_reads_host_and_port(text: str, expected: tuple[str, int]) -> None:
    """C{--resolver} takes an IPv4 or IPv6 address, with a port (IPv6 in brackets then), 53 by default."""
    assert parseServer(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "'' is not an IP address"),
        ("dns.example", "'dns.example' is not an IP address"),
        ("dns.example:53", "'dns.example' is not an IP address"),
        ("::1:53:x", "'::1:53:x' is not an IP address"),
        ("127.0.0.1:", "port '' is not in 1-65535"),
        ("127.0.0.1:0", "port '0' is not in 1-65535"),
        ("127.0.0.1:65536", "port '65536' is not in 1-65535"),
        ("127.0.0.1:dns", "port 'dns' is not in 1-65535"),
        ("127.0.0.1:-1", "port '-1' is not in 1-65535"),
        ("[::1]:", "port '' is not in 1-65535"),
        ("[::1]x", "expected HOST[:PORT] or [IPv6]:PORT"),
        ("[::1", "expected HOST[:PORT] or [IPv6]:PORT"),
        ("[127.0.0.1]:53", "only IPv6 addresses go in brackets"),
    ],
)
def test_parse_server_refuses_anything_else(text: str, reason: str) -> None:
    """Anything but an IP address with an optional port is refused with a one-line reason."""
    with pytest.raises(ValueError) as raised:
        parseServer(text)
    assert str(raised.value) == reason


def test_dns_resolver_asks_the_given_server_or_resolv_conf() -> None:
    """With a server, only that server is asked; without, the nameservers of /etc/resolv.conf."""
    clock = Clock()
    given = dnsResolver(clock, ("127.0.0.1", 5353))
    system = dnsResolver(clock, None)
    assert isinstance(given, client.Resolver) and isinstance(system, client.Resolver)
    assert (given.servers, given.resolv) == ([("127.0.0.1", 5353)], None)
    assert (system.servers, system.resolv) == ([], "/etc/resolv.conf")
    assert IResolver.providedBy(given)


class RealServerTests(TestCase):
    """The real twisted.names client and server over loopback UDP, on the global reactor."""

    def test_replicas_are_found_and_followed_through_a_real_dns_server(self) -> Deferred[None]:
        """
        Discovery pointed at a DNS server on 127.0.0.1 reports the A and AAAA records of the
        name, then the new set once the server's records change.
        """
        from twisted.internet import reactor

        records = {NAME: ["127.0.0.2", "127.0.0.3", "::1"]}
        udp, tcp = listen(reactor, RecordsAuthority(lambda: records))
        self.addCleanup(udp.stopListening)
        self.addCleanup(tcp.stopListening)
        resolver = dnsResolver(reactor, ("127.0.0.1", udp.getHost().port))
        reports: list[frozenset[str]] = []
        done: Deferred[None] = Deferred()

        def found(addresses: frozenset[str]) -> None:
            reports.append(addresses)
            if len(reports) == 1:
                records[NAME] = ["127.0.0.4"]
            else:
                discovery.stop()
                done.callback(None)

        discovery = DNSDiscovery(reactor, NAME, 0.05, found, resolver, logObserver=lambda e: None)
        self.addCleanup(self._closed, tcp.factory)
        self.addCleanup(resolver.disconnect)
        self.addCleanup(discovery.stop)
        discovery.start()

        def check(_: None) -> None:
            self.assertEqual(
                reports, [frozenset({"127.0.0.2", "127.0.0.3", "::1"}), frozenset({"127.0.0.4"})]
            )

        return done.addCallback(check)

    test_replicas_are_found_and_followed_through_a_real_dns_server.timeout = 10  # type: ignore[attr-defined]

    def _closed(self, factory: Any) -> Deferred[None]:
        """Fires once the server has seen the resolver's TCP connection go (a clean reactor)."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        def poll() -> Deferred[None] | None:
            if factory.connections:
                return deferLater(reactor, 0.01, poll)
            return None

        return deferLater(reactor, 0, poll)

    def test_lookups_go_over_tcp_and_log_no_port_chatter(self) -> Deferred[None]:
        """
        The resolver asks over TCP: Twisted's per-query UDP port lines ("starting on", "Closed")
        never appear in the global log, however many lookups run.
        """
        from twisted.internet import reactor
        from twisted.logger import globalLogPublisher

        records = {NAME: ["127.0.0.2"]}
        udp, tcp = listen(reactor, RecordsAuthority(lambda: records))
        self.addCleanup(udp.stopListening)
        self.addCleanup(tcp.stopListening)
        resolver = dnsResolver(reactor, ("127.0.0.1", udp.getHost().port))
        seen: list[str] = []

        def observe(event: Any) -> None:
            seen.append(str(event.get("log_format") or event.get("message")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.addCleanup(self._closed, tcp.factory)
        self.addCleanup(resolver.disconnect)

        def check(answers: Any) -> None:
            self.assertTrue(answers[0][0])
            self.assertEqual([line for line in seen if "UDP" in line or "starting on" in line], [])
            self.assertEqual(len(tcp.factory.connections), 1)

        lookups = DeferredList([resolver.lookupAddress(NAME) for _ in range(3)])
        return lookups.addCallback(check)

    test_lookups_go_over_tcp_and_log_no_port_chatter.timeout = 10  # type: ignore[attr-defined]
