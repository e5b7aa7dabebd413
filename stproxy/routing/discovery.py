"""
Replicas found in DNS: every A and AAAA record of one name, looked up again
on a timer.

Where replicas come and go, the orchestrator's DNS already knows them: a
Kubernetes headless Service answers with one A record per I{ready} pod, and
Docker's embedded DNS with one per container of a scaled Compose service.
So, as nginx re-resolves with C{resolver ... valid=} and Envoy's
C{STRICT_DNS} cluster on its refresh rate, L{DNSDiscovery} asks every
C{interval} seconds and reports the set whenever it changes.  A name that
does not exist, or has no address, is zero replicas (a Deployment scaled to 0).

Any other failure (a timeout, C{SERVFAIL}, a refusal) tells about the DNS
server, not the replicas: the last set is kept, with one warning per streak,
since dropping every replica when DNS hiccups would turn a blip into an outage.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.internet.error import TimeoutError as QueryTimeout
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver
from twisted.names import client, dns
from twisted.names.error import DNSNameError, DomainError
from twisted.python.failure import Failure

from stproxy.ops.logs import loggerFor


class DNSDiscovery:
    """
    Looks C{name} up on a timer, asking C{resolver} (L{dnsResolver}) for A
    and AAAA records, and calls C{found} with the replicas' addresses (IP
    address strings) after the first lookup that works and after every one
    that finds a different set.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        name: str,
        interval: float,
        found: Callable[[frozenset[str]], None],
        resolver: IResolver,
        logObserver: ILogObserver | None = None,
    ) -> None:
        self.name = name
        self._reactor = reactor
        self._interval = interval
        self._found = found
        self._resolver = resolver
        self._log = loggerFor(self, logObserver)
        self._timeout = _timeouts(interval)
        self._reported: frozenset[str] | None = None
        self._failing = False
        self._pending: Deferred[Any] | None = None
        self._timer: LoopingCall | None = None

    def start(self) -> None:
        """Look the name up now and every C{interval} seconds."""
        if self._timer is not None:
            return
        self._timer = LoopingCall(self._lookUp)
        self._timer.clock = self._reactor
        self._timer.start(self._interval, now=True)

    def stop(self) -> None:
        """No more lookups, and none reported: one in flight is cancelled."""
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self._timer = None
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if isinstance(self._resolver, QuietResolver):
            self._resolver.disconnect()

    def _lookUp(self) -> None:
        # A slow DNS server must not pile lookups up: the next tick is skipped.
        if self._pending is not None:
            return
        lookup = DeferredList(
            [
                maybeDeferred(self._resolver.lookupAddress, self.name, self._timeout),
                maybeDeferred(self._resolver.lookupIPV6Address, self.name, self._timeout),
            ],
            consumeErrors=True,
        )
        self._pending = lookup
        lookup.addCallback(self._lookedUp, lookup)
        lookup.addErrback(lambda f: self._log.failure("Looking up {name} broke", f, name=self.name))

    def _lookedUp(self, results: list[tuple[bool, Any]], lookup: Deferred[Any]) -> None:
        if lookup is not self._pending:
            return  # stopped meanwhile
        self._pending = None
        addresses: set[str] = set()
        for success, result in results:
            if success:
                addresses.update(_addresses(result[0]))
            elif not result.check(DNSNameError):
                if not self._failing:
                    self._log.warn(
                        "Looking up replicas of {name} failed ({reason}); keeping {addresses}",
                        name=self.name,
                        reason=_reason(result),
                        addresses=_show(self._reported or frozenset()),
                    )
                self._failing = True
                return
        fresh = frozenset(addresses)
        if self._failing:
            self._failing = False
            self._log.info("Looking up replicas of {name} works again", name=self.name)
        if fresh == self._reported:
            return
        self._reported = fresh
        self._log.info("Replicas of {name}: {addresses}", name=self.name, addresses=_show(fresh))
        try:
            self._found(fresh)
        except Exception:
            self._log.failure("Reporting the replicas of {name} failed", name=self.name)


def dnsResolver(reactor: Any, server: tuple[str, int] | None) -> IResolver:
    """
    A C{twisted.names} resolver asking C{server}, or when C{None} the nameservers
    of C{/etc/resolv.conf} (re-read when it changes); C{reactor} does time, UDP and TCP.
    """
    if server is not None:
        return QuietResolver(servers=[server], reactor=reactor)
    return QuietResolver(resolv="/etc/resolv.conf", reactor=reactor)


class QuietResolver(client.Resolver):
    """
    twisted.names' resolver, asking over TCP.  Over UDP it opens a port per
    query, and Twisted logs three lines for each ("starting on", "Starting
    protocol", "Closed"), which stproxy cannot quiet under twistd: with A
    and AAAA every 5 s, over a hundred thousand lines a day.  A TCP
    connection (kept between lookups while the server allows) logs nothing
    once its factory is quiet, and the DNS servers discovery is for
    (CoreDNS, Docker's embedded DNS) answer over TCP.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.factory is not None  # built by Resolver.__init__
        self.factory.noisy = False
        self._closing: list[Deferred[None]] = []

    def queryUDP(self, queries: Any, timeout: Any = None) -> Any:
        """Over TCP instead (see the class docstring), with the retries' time as one timeout."""
        return self.queryTCP(queries, sum(timeout) if timeout else 10)

    def connectionLost(self, protocol: Any) -> None:
        super().connectionLost(protocol)
        if not self.connections:
            waiting, self._closing = self._closing, []
            for d in waiting:
                d.callback(None)

    def disconnect(self) -> Deferred[None]:
        """Close the connections to the DNS server; fires once they are closed."""
        if not self.connections:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closing.append(closed)
        for protocol in list(self.connections):
            protocol.transport.loseConnection()
        return closed


def parseServer(text: str) -> tuple[str, int]:
    """
    C{HOST[:PORT]} or C{[IPv6]:PORT} as C{(host, port)}, port 53 by default;
    else L{ValueError}, one line for the caller to prefix with the flag.  HOST
    must be an IP address: Twisted sends datagrams to addresses only.
    """
    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("expected HOST[:PORT] or [IPv6]:PORT")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if text.startswith("[") and ip.version != 6:
        raise ValueError("only IPv6 addresses go in brackets")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port {port!r} is not in 1-65535")
    return str(ip), int(port)


def _addresses(answers: Sequence[dns.RRHeader]) -> set[str]:
    """The IP addresses of the A and AAAA records among C{answers} (CNAMEs skipped)."""
    found: set[str] = set()
    for record in answers:
        payload = record.payload
        if isinstance(payload, (dns.Record_A, dns.Record_AAAA)):
            found.add(str(ipaddress.ip_address(payload.address)))
    return found


def _reason(failure: Failure) -> str:
    """What went wrong, short: a DNS error's own text is the whole message it answers."""
    if isinstance(failure.value, (DomainError, QueryTimeout, DeferTimeout)):
        return type(failure.value).__name__
    return failure.getErrorMessage()


def _timeouts(interval: float) -> tuple[int, ...]:
    """
    Twisted's retries for one query, as many as fit in C{interval} (at least
    one): a silent server is noticed within about one interval, not a minute.
    """
    kept: list[int] = []
    for seconds in (1, 3, 11, 45):
        if kept and sum(kept) + seconds > interval:
            break
        kept.append(seconds)
    return tuple(kept)


def _show(addresses: frozenset[str]) -> str:
    return ", ".join(sorted(addresses)) or "none"


__all__ = ["QuietResolver", "DNSDiscovery", "dnsResolver", "parseServer"]
