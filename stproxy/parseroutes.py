"""
The routing flags into configuration: C{--upstream} (repeatable),
C{--upstream-dns}, C{--route}, and how replicas are found and pinned
(L{stproxy.routing.settings}), with the one-line errors of L{stproxy.parse}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from stproxy import parse
from stproxy.config import ConfigError
from stproxy.routing.discovery import parseServer
from stproxy.routing.settings import ReplicaSettings, RouteSpec, RoutingError, normalPrefix
from stproxy.upstream.address import UpstreamAddress

#: How C{--route} names an upstream found in DNS.
DNS_SCHEME = "dns:"


class RoutingFlags(dict[str, Any]):
    """
    The routing flags of L{stproxy.tap.Options} (a mixin: C{usage.Options}
    gathers C{optParameters} and C{opt_} methods from every base class).
    """

    optParameters = [
        [
            "discovery-interval",
            None,
            "5",
            "Seconds between DNS lookups of --upstream-dns and --route PREFIX=dns: names",
        ],
        [
            "replica-drain-timeout",
            None,
            "30",
            "Seconds a replica gone from DNS keeps its WebSockets (then 1012, to reconnect elsewhere)",
        ],
        [
            "affinity-cookie",
            None,
            "stproxy_replica",
            "Name of the cookie pinning a browser to a replica",
        ],
        [
            "affinity-secret-file",
            None,
            None,
            "File holding the affinity cookie's HMAC key (16+ bytes), the same for every stproxy"
            " in front of the same replicas [default: random, this process only]",
        ],
        [
            "resolver",
            None,
            None,
            "DNS server for discovery, HOST[:PORT] [default: the nameservers of /etc/resolv.conf]",
        ],
    ]

    def opt_upstream(self, address: str) -> None:
        """
        Streamlit server: HOST:PORT, http://HOST:PORT or https://HOST:PORT;
        repeat for replicas of one app [default: localhost:8501, or
        $STREAMLIT_HOST/$STREAMLIT_PORT]
        """
        self.setdefault("upstream", []).append(address)

    opt_u = opt_upstream

    def opt_upstream_dns(self, name: str) -> None:
        """
        Replicas found in DNS: NAME:PORT, every A/AAAA record of NAME one
        replica, looked up every --discovery-interval (a Kubernetes headless
        Service); repeatable
        """
        self.setdefault("upstream-dns", []).append(name)

    def opt_route(self, route: str) -> None:
        """
        Serve an app under a prefix: PREFIX=UPSTREAM, or PREFIX=dns:NAME:PORT;
        the prefix is kept, for a Streamlit with server.baseUrlPath=PREFIX;
        repeat a PREFIX for its replicas
        """
        self.setdefault("route", []).append(route)


def _address(flag: str, text: str) -> UpstreamAddress:
    try:
        return UpstreamAddress.parse(text)
    except ValueError as e:
        raise ConfigError(f"{flag}: {e}") from None


def _dnsName(flag: str, text: str) -> UpstreamAddress:
    """C{NAME:PORT} (or C{http(s)://NAME:PORT}), a port required: DNS gives no port."""
    address = _address(flag, text)
    if f":{address.port}" not in text:
        raise ConfigError(f"{flag} {text}: give the port, as NAME:PORT")
    return address


def routeSpecs(
    upstreams: list[str],
    dnsNames: list[str],
    routes: list[str],
    seedHost: str | None,
    seedPort: str | None,
    environ: Mapping[str, str],
) -> tuple[RouteSpec, ...]:
    """
    The apps: C{--upstream} and C{--upstream-dns} make replicas of the app
    at C{/}, each C{--route PREFIX=UPSTREAM} a replica of the app at PREFIX
    (C{dns:NAME:PORT} for discovery); with none of them, the seed's
    C{--streamlit-host}/C{--streamlit-port} and environment
    (L{stproxy.parse.upstream}).  Routes keep the order first given.
    """
    if seedHost is not None or seedPort is not None:
        if upstreams or dnsNames or routes:
            raise ConfigError(
                "give either --upstream/--upstream-dns/--route"
                " or --streamlit-host/--streamlit-port, not both"
            )
    byPrefix: dict[str, tuple[list[UpstreamAddress], list[UpstreamAddress]]] = {}

    def replicasOf(prefix: str) -> tuple[list[UpstreamAddress], list[UpstreamAddress]]:
        return byPrefix.setdefault(prefix, ([], []))

    for text in upstreams:
        replicasOf("/")[0].append(_address("--upstream", text))
    for text in dnsNames:
        replicasOf("/")[1].append(_dnsName("--upstream-dns", text))
    for text in routes:
        prefixText, equals, target = text.partition("=")
        if not equals or not target:
            raise ConfigError(f"--route {text}: write PREFIX=UPSTREAM, such as /app=localhost:8501")
        try:
            prefix = normalPrefix(prefixText)
        except RoutingError as e:
            raise ConfigError(f"--route {text}: {e}") from None
        if target.startswith(DNS_SCHEME):
            replicasOf(prefix)[1].append(_dnsName("--route", target[len(DNS_SCHEME) :]))
        else:
            replicasOf(prefix)[0].append(_address("--route", target))
    if not byPrefix:
        address = parse.upstream(None, seedHost, seedPort, environ)
        return (RouteSpec("/", (address,)),)
    specs = []
    for prefix, (static, discovered) in byPrefix.items():
        _noRepeats(prefix, static + discovered)
        specs.append(RouteSpec(prefix, tuple(static), tuple(discovered)))
    return tuple(specs)


def _noRepeats(prefix: str, addresses: list[UpstreamAddress]) -> None:
    seen = set()
    for address in addresses:
        if address in seen:
            raise ConfigError(f"upstream {address} given twice for {prefix}")
        seen.add(address)


def replicaSettings(
    discoveryInterval: str,
    drainTimeout: str,
    cookie: str,
    secretFile: str | None,
    resolver: str | None,
) -> ReplicaSettings:
    """
    C{--discovery-interval}, C{--replica-drain-timeout}, C{--affinity-cookie},
    C{--affinity-secret-file} (read now: a file that cannot be read is a
    start-up error, not a surprise later) and C{--resolver}.
    """
    secret = None
    if secretFile is not None:
        try:
            secret = Path(secretFile).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"--affinity-secret-file {secretFile}: {e.strerror}") from None
    server = None
    if resolver is not None:
        try:
            server = parseServer(resolver)
        except ValueError as e:
            raise ConfigError(f"--resolver {resolver}: {e}") from None
    try:
        return ReplicaSettings(
            discoveryInterval=parse.flag(
                "discovery-interval", discoveryInterval, parse.positiveSeconds
            ),
            drainTimeout=parse.flag(
                "replica-drain-timeout", drainTimeout, parse.nonNegativeSeconds
            ),
            cookie=cookie,
            secret=secret,
            resolver=server,
        )
    except RoutingError as e:
        raise ConfigError(str(e)) from None


__all__ = ["DNS_SCHEME", "RoutingFlags", "replicaSettings", "routeSpecs"]
