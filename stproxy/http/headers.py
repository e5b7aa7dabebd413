"""
What headers cross the proxy, in each direction.

Pure functions over L{Headers} and plain values: no requests, no I/O, so every
rule here is tested with tables and properties rather than sockets.

The rules follow RFC 9110 section 7.6.1 (hop-by-hop fields are the
connection's, not the message's) and what nginx, HAProxy and Caddy do with
C{X-Forwarded-*} and C{Forwarded} (RFC 7239).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Sequence

from twisted.web.http_headers import Headers

#: Fields that describe one connection rather than the message; never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Fields the HTTP client computes itself from the body it sends.
FRAMING = frozenset({b"content-length", b"transfer-encoding"})

#: Fields of a request the proxy has already acted on itself: twisted.web
#: answered C{Expect: 100-continue} and read the whole body before the
#: request is forwarded, so the upstream must not wait to be asked for it.
CONSUMED_BY_PROXY = frozenset({b"expect"})


def connectionListed(headers: Headers) -> frozenset[bytes]:
    """The lower-cased field names listed as connection options in C{Connection}."""
    names = set()
    for value in headers.getRawHeaders(b"connection", []):
        for name in value.split(b","):
            name = name.strip().lower()
            if name:
                names.add(name)
    return frozenset(names)


def withoutHopByHop(headers: Headers, extra: Iterable[bytes] = ()) -> Headers:
    """
    A copy of C{headers} without hop-by-hop fields, without any C{Proxy-*}
    field, without the fields C{Connection} names, and without C{extra}.

    Repeated fields keep every value, in order.
    """
    drop = HOP_BY_HOP | connectionListed(headers) | {name.lower() for name in extra}
    result = Headers()
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower in drop or lower.startswith(b"proxy-"):
            continue
        result.setRawHeaders(name, list(values))
    return result


@dataclass(frozen=True)
class Peer:
    """
    The far end of one client connection, as seen by the proxy.

    @ivar address: the client's IP address (or C{None} for a UNIX socket).
    @ivar host: the C{Host} the client asked for, raw.
    @ivar secure: whether the client connection is TLS.
    """

    address: str | None
    host: bytes | None
    secure: bool


class TrustedProxies:
    """
    The networks whose own C{X-Forwarded-*}/C{Forwarded} headers are believed.

    A peer inside one of them is another proxy in front of stproxy, so its
    forwarding headers are appended to; any other peer's are replaced, so a
    client cannot forge its address or scheme.
    """

    def __init__(self, networks: Sequence[str] = ()) -> None:
        """
        @param networks: CIDR networks or single addresses.
        @raise ValueError: for anything else.
        """
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedProxies):
            return NotImplemented
        return self._networks == other._networks

    def __hash__(self) -> int:
        return hash(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"


def _forwardedNode(address: str | None) -> bytes:
    """An RFC 7239 node: IPv6 quoted and bracketed, unknown peers obfuscated."""
    if address is None:
        return b"unknown"
    if ":" in address:
        return b'"[' + address.encode("ascii") + b']"'
    return address.encode("ascii")


def _forwardedValue(token: bytes) -> bytes:
    """An RFC 7239 value: a token as it is, anything else as a quoted string."""
    if token and all(chr(c).isalnum() or chr(c) in "!#$%&'*+-.^_`|~" for c in token):
        return token
    return b'"' + token.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def forwardingHeaders(headers: Headers, peer: Peer, trusted: TrustedProxies) -> Headers:
    """
    A copy of C{headers} with C{X-Forwarded-For}, C{X-Forwarded-Proto},
    C{X-Forwarded-Host} and C{Forwarded} describing C{peer}.

    From a trusted peer, this hop is appended to the chain it sent (and its
    C{-Proto} and C{-Host}, which describe the original client, are kept);
    from anyone else, any such header the client sent is replaced.
    """
    result = headers.copy()
    proto = b"https" if peer.secure else b"http"
    host = peer.host or b""
    node = peer.address.encode("ascii") if peer.address else b"unknown"
    element = b";".join(
        [b"for=" + _forwardedNode(peer.address)]
        + ([b"host=" + _forwardedValue(host)] if host else [])
        + [b"proto=" + proto]
    )
    if peer.address in trusted:
        chain = headers.getRawHeaders(b"x-forwarded-for", [])
        result.setRawHeaders(b"x-forwarded-for", [b", ".join([*chain, node])])
        forwarded = headers.getRawHeaders(b"forwarded", [])
        result.setRawHeaders(b"forwarded", [b", ".join([*forwarded, element])])
        if not headers.hasHeader(b"x-forwarded-proto"):
            result.setRawHeaders(b"x-forwarded-proto", [proto])
        if host and not headers.hasHeader(b"x-forwarded-host"):
            result.setRawHeaders(b"x-forwarded-host", [host])
        return result
    result.setRawHeaders(b"x-forwarded-for", [node])
    result.setRawHeaders(b"x-forwarded-proto", [proto])
    result.setRawHeaders(b"forwarded", [element])
    if host:
        result.setRawHeaders(b"x-forwarded-host", [host])
    else:
        result.removeHeader(b"x-forwarded-host")
    return result


def requestHeadersForUpstream(headers: Headers, peer: Peer, trusted: TrustedProxies) -> Headers:
    """
    The headers to send upstream for a client request: end-to-end fields
    unchanged (the client's C{Host}, cookies and repeats included), framing
    left to the HTTP client, and this hop recorded in the forwarding headers.
    """
    return forwardingHeaders(withoutHopByHop(headers, FRAMING | CONSUMED_BY_PROXY), peer, trusted)


def responseHeadersForClient(headers: Headers) -> Headers:
    """
    The headers to send the client for an upstream response: everything
    end-to-end as the upstream sent it (C{Set-Cookie} and other repeats
    included); framing is for the proxy's own connection to decide.
    """
    return withoutHopByHop(headers, FRAMING)


__all__ = [
    "HOP_BY_HOP",
    "Peer",
    "TrustedProxies",
    "withoutHopByHop",
    "forwardingHeaders",
    "requestHeadersForUpstream",
    "responseHeadersForClient",
]
