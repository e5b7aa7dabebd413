"""
The configuration of routing: the apps (L{RouteSpec}) and how their
replicas are found, checked, drained and pinned (L{ReplicaSettings}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stproxy.routing.affinity import DEFAULT_COOKIE, MIN_SECRET_BYTES
from stproxy.upstream.address import UpstreamAddress

#: A prefix: C{/}, or path segments of URL-safe characters (what Streamlit's
#: C{server.baseUrlPath} can be) with no empty, C{.} or C{..} segment.
_PREFIX = re.compile(r"/|(/[A-Za-z0-9_~.-]+)+")

#: What a cookie name may be (RFC 6265's token, the common part).
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


class RoutingError(ValueError):
    """A route or replica setting that cannot work; the message is one line."""


def normalPrefix(text: str) -> str:
    """
    C{text} as a prefix: a leading slash, no trailing one (C{app/} is C{/app}).

    @raise RoutingError: if it is not a path stproxy can route on.
    """
    prefix = "/" + text.strip("/")
    if not _PREFIX.fullmatch(prefix) or any(s in (".", "..") for s in prefix.split("/")):
        raise RoutingError(f"{text!r} is not a path prefix such as / or /app")
    return prefix


def overlap(one: str, other: str) -> bool:
    """Whether one prefix's paths include some of the other's (C{/} overlaps all)."""
    if one == "/" or other == "/":
        return True
    return (one + "/").startswith(other + "/") or (other + "/").startswith(one + "/")


@dataclass(frozen=True)
class RouteSpec:
    """
    One app: where it is served, and its replicas.

    @ivar prefix: C{/}, or the path it is served under (C{/app}), which its
        Streamlit has as C{server.baseUrlPath}.
    @ivar upstreams: replicas given by address.
    @ivar discover: names whose every A/AAAA record is a replica, at that
        scheme and port (L{stproxy.routing.discovery}).
    """

    prefix: str
    upstreams: tuple[UpstreamAddress, ...] = ()
    discover: tuple[UpstreamAddress, ...] = ()

    def __post_init__(self) -> None:
        if normalPrefix(self.prefix) != self.prefix:
            raise RoutingError(f"route {self.prefix!r}: write it as {normalPrefix(self.prefix)}")
        if not (self.upstreams or self.discover):
            raise RoutingError(f"route {self.prefix}: no upstream")

    @property
    def sticky(self) -> bool:
        """Whether it can have more than one replica, so browsers are pinned."""
        return bool(self.discover) or len(self.upstreams) > 1

    @property
    def healthPath(self) -> bytes:
        """Streamlit's health check under this prefix."""
        base = "" if self.prefix == "/" else self.prefix
        return f"{base}/_stcore/health".encode("ascii")


def checkRoutes(routes: tuple[RouteSpec, ...]) -> None:
    """@raise RoutingError: if two routes' prefixes overlap."""
    for number, route in enumerate(routes):
        for other in routes[number + 1 :]:
            if overlap(route.prefix, other.prefix):
                raise RoutingError(
                    f"routes {route.prefix} and {other.prefix} overlap: give each app its own"
                    " prefix, none inside another"
                )


@dataclass(frozen=True)
class ReplicaSettings:
    """
    How replicas are found, checked, drained and pinned.

    @ivar discoveryInterval: seconds between DNS lookups of discovered names.
    @ivar drainTimeout: seconds a vanished replica keeps its WebSockets.
    @ivar cookie: the affinity cookie's name.
    @ivar secret: the affinity cookie's HMAC key; C{None} for a random one
        per process (then only this process reads its cookies).
    @ivar resolver: the DNS server discovery asks, as (host, port); C{None}
        for the system's (C{/etc/resolv.conf}).
    """

    discoveryInterval: float = 5.0
    drainTimeout: float = 30.0
    cookie: str = DEFAULT_COOKIE
    secret: bytes | None = field(default=None, repr=False)
    resolver: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if self.discoveryInterval <= 0:
            raise RoutingError("--discovery-interval must be positive")
        if self.drainTimeout < 0:
            raise RoutingError("--replica-drain-timeout must not be negative")
        if not _COOKIE_NAME.fullmatch(self.cookie):
            raise RoutingError(f"--affinity-cookie {self.cookie!r}: not a cookie name")
        if self.secret is not None and len(self.secret) < MIN_SECRET_BYTES:
            raise RoutingError(
                f"--affinity-secret-file: the secret must be at least {MIN_SECRET_BYTES} bytes"
            )


__all__ = [
    "ReplicaSettings",
    "RouteSpec",
    "RoutingError",
    "checkRoutes",
    "normalPrefix",
    "overlap",
]
