"""
The upstream's IP addresses, looked up when the proxy starts and again on a
timer, and the client endpoint that connects to them.

Twisted's L{HostnameEndpoint} (what an L{Agent} connects with by default)
looks its host name up for every new connection: a C{getaddrinfo} call in a
reactor thread, then the result handed back to the reactor, each time.  Under
load, when the pool has to open connections, that is a thread round trip per
request.  A proxy has one upstream and its address rarely changes, so, as
nginx resolves its C{upstream} servers once and Envoy's C{STRICT_DNS} cluster
re-resolves on a timer, stproxy looks the name up once, keeps the addresses,
and looks again every L{REFRESH_INTERVAL} seconds; connections are opened to
an address, never to a name.  The host I{name} still goes where it matters:
the C{Host} header, the WebSocket URL, and TLS (SNI and the certificate
check: L{stproxy.upstream.client}).

A name that does not resolve fails the connection with L{DNSLookupError} (the
browser's 502 says "host name not found"); a later lookup that fails keeps the
last addresses that worked, with one warning, since a DNS server that hiccups
is no reason to stop forwarding to a server that is still there.  An upstream
given as an IP address is never looked up.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Sequence

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from zope.interface import implementer

from stproxy.ops.logs import loggerFor

#: Seconds between lookups of the upstream's name once the proxy runs: a
#: DNS change (a replica moved, a container restarted with a new address) is
#: followed within this, at the cost of one lookup per interval.
REFRESH_INTERVAL = 30.0

Address = IPv4Address | IPv6Address


class UpstreamAddresses:
    """
    The addresses one host name stands for, looked up at most once at a
    time and kept between lookups.

    The first address is tried first: the resolver's order, until one
    address has accepted a connection (L{connected}); that one then stays
    first, so a C{localhost} that resolves to C{::1} and C{127.0.0.1} for a
    server listening on only one of them costs one refused attempt, not one
    per connection.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        host: str,
        port: int,
        resolver: IHostnameResolver | None,
        interval: float = REFRESH_INTERVAL,
        logObserver: ILogObserver | None = None,
    ) -> None:
        """
        @param resolver: where names are looked up (the reactor's
            C{nameResolver}); may be C{None} when C{host} is an IP address.
        """
        self.host = host
        self.port = port
        self._reactor = reactor
        self._resolver = resolver
        self._interval = interval
        self._log = loggerFor(self, logObserver)
        literal = _literal(host, port)
        self.isLiteral = literal is not None
        self._addresses: list[Address] = [] if literal is None else [literal]
        self._looking = False
        self._waiting: list[Deferred[list[Address]]] = []
        self._failing = False
        self._refresh: LoopingCall | None = None

    def start(self) -> None:
        """Look the name up now and every C{interval} seconds (nothing for an IP address)."""
        if self.isLiteral or self._refresh is not None:
            return
        self._refresh = LoopingCall(self._lookUp)
        self._refresh.clock = self._reactor
        self._refresh.start(self._interval, now=True)

    def stop(self) -> None:
        """No more lookups on the timer."""
        if self._refresh is not None and self._refresh.running:
            self._refresh.stop()
        self._refresh = None

    def addresses(self) -> Deferred[list[Address]]:
        """
        The addresses to try, in order: at once when known, else after a
        lookup, which fails with L{DNSLookupError} when the name has none.
        """
        if self._addresses:
            return succeed(list(self._addresses))
        waiting: Deferred[list[Address]] = Deferred(self._waiting.remove)
        self._waiting.append(waiting)
        self._lookUp()
        return waiting

    def connected(self, address: Address) -> None:
        """C{address} accepted a connection: try it first from now on."""
        if self._addresses and self._addresses[0] != address and address in self._addresses:
            self._addresses.remove(address)
            self._addresses.insert(0, address)

    def _lookUp(self) -> None:
        if self._looking:
            return
        if self._resolver is None:
            self._lookedUp(Failure(DNSLookupError(f"{self.host}: no resolver to look it up")))
            return
        self._looking = True
        receiver = _Collect()
        receiver.done.addBoth(self._lookedUp)
        try:
            self._resolver.resolveHostName(
                receiver, self.host, self.port, [IPv4Address, IPv6Address], "TCP"
            )
        except Exception:
            if not receiver.done.called:
                receiver.done.errback()

    def _lookedUp(self, result: list[Address] | Failure) -> None:
        self._looking = False
        if isinstance(result, Failure) or not result:
            reason = "no address" if not isinstance(result, Failure) else result.getErrorMessage()
            if self._addresses:
                if not self._failing:
                    self._log.warn(
                        "Looking up upstream {host} failed ({reason}); still using {addresses}",
                        host=self.host,
                        reason=reason,
                        addresses=_show(self._addresses),
                    )
                self._failing = True
                return
            failure = Failure(DNSLookupError(f"{self.host}: {reason}"))
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.errback(failure)
            return
        previous = self._addresses
        preferred = previous[0] if previous else None
        fresh = list(dict.fromkeys(result))  # a resolver may repeat one
        if preferred in fresh:
            fresh.remove(preferred)
            fresh.insert(0, preferred)
        self._addresses = fresh
        if self._failing or (previous and set(previous) != set(fresh)):
            self._log.info(
                "Upstream {host} is now at {addresses}", host=self.host, addresses=_show(fresh)
            )
        self._failing = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(list(fresh))


@implementer(IResolutionReceiver)
class _Collect:
    """Gathers what one lookup finds."""

    def __init__(self) -> None:
        self.found: list[Address] = []
        self.done: Deferred[list[Address]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if isinstance(address, (IPv4Address, IPv6Address)):
            self.found.append(address)

    def resolutionComplete(self) -> None:
        if not self.done.called:
            self.done.callback(self.found)


@implementer(IStreamClientEndpoint)
class ResolvedEndpoint:
    """
    Connects to the first of L{UpstreamAddresses} that accepts, by address
    (L{TCP4ClientEndpoint}, L{TCP6ClientEndpoint}); the next is tried only
    when one refuses or times out, as nginx tries an upstream's next address.
    """

    def __init__(self, reactor: IReactorTCP, addresses: UpstreamAddresses, timeout: float) -> None:
        self._reactor = reactor
        self._addresses = addresses
        self._timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        d: Deferred[Any] = self._addresses.addresses()
        d.addCallback(self._tryEach, protocolFactory)
        return d

    def _tryEach(
        self, candidates: Sequence[Address], protocolFactory: IProtocolFactory
    ) -> Deferred[IProtocol]:
        address = candidates[0]
        endpointType = (
            TCP6ClientEndpoint if isinstance(address, IPv6Address) else TCP4ClientEndpoint
        )
        d = endpointType(self._reactor, address.host, address.port, self._timeout).connect(
            protocolFactory
        )

        def connected(protocol: IProtocol) -> IProtocol:
            self._addresses.connected(address)
            return protocol

        def failed(failure: Failure) -> Failure | Deferred[IProtocol]:
            if failure.check(CancelledError) or len(candidates) == 1:
                return failure
            return self._tryEach(candidates[1:], protocolFactory)

        return d.addCallbacks(connected, failed)


def _literal(host: str, port: int) -> Address | None:
    """C{host} as an address if it is an IP address, else C{None}."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def _show(addresses: Sequence[Address]) -> str:
    return ", ".join(a.host for a in addresses)


__all__ = ["REFRESH_INTERVAL", "ResolvedEndpoint", "UpstreamAddresses"]
