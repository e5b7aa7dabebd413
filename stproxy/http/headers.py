"""
What headers cross the proxy, in each direction.

Pure functions over L{Headers} and plain values: no requests, no I/O, so every
rule here is tested with tables and properties rather than sockets.

The rules follow RFC 9110 section 7.6.1 (hop-by-hop fields are the
connection's, not the message's) and what nginx, HAProxy and Caddy do with
C{X-Forwarded-*}, C{X-Real-IP} and C{Forwarded} (RFC 7239).
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

#: Fields in which a proxy in front asserts something about the client: its
#: address and port as a CDN or load balancer saw them, the path prefix it
#: stripped, the request an auth service is asked about, the user an
#: authenticating proxy (oauth2-proxy, Authelia, Apache's C{REMOTE_USER}) let
#: in.  Frameworks and apps behind Streamlit believe them, so they pass only
#: from a C{--trust-forwarded} peer; from anyone else each is dropped,
#: whatever its case or how often it repeats.
#: C{X-Real-IP} is not here: stproxy sets it itself (L{forwardingHeaders}).
ASSERTED_BY_PROXIES = frozenset(
    {
        # where the client is
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"true-client-ip",
        b"cf-connecting-ip",
        # what the client asked for; who the client is
        b"x-forwarded-uri",
        b"x-forwarded-method",
        b"x-forwarded-user",
        b"x-forwarded-email",
        b"x-forwarded-groups",
        b"x-forwarded-preferred-username",
        b"x-auth-request-user",
        b"x-auth-request-email",
        b"x-auth-request-groups",
        b"remote-user",
    }
)


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
    return _without(headers, HOP_BY_HOP | {name.lower() for name in extra})


def _without(headers: Headers, drop: frozenset[bytes]) -> Headers:
    """L{withoutHopByHop} for a precomputed C{drop}: the one copy a message's headers get."""
    if headers.hasHeader(b"connection"):
        drop = drop | connectionListed(headers)
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


#: How many peer addresses L{TrustedProxies} remembers the answer for.
_REMEMBERED_PEERS = 4096


class TrustedProxies:
    """
    The networks whose own C{X-Forwarded-*}/C{Forwarded}/C{X-Real-IP} and
    L{ASSERTED_BY_PROXIES} headers are believed (not those stproxy sets
    itself: L{stproxy.auth.identity}).

    A peer inside one of them is another proxy in front of stproxy, so its
    forwarding headers are appended to; any other peer's are replaced or
    dropped, so a client cannot forge its address, scheme or identity.
    """

    def __init__(self, networks: Sequence[str] = ()) -> None:
        """
        @param networks: CIDR networks or single addresses.
        @raise ValueError: for anything else.
        """
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._known: dict[str, bool] = {}

    def __contains__(self, address: object) -> bool:
        """
        Asked per request, of the few addresses peers have: answers are kept
        (parsing each time cost more than the forwarding headers), up to
        L{_REMEMBERED_PEERS}, then all forgotten: a flood costs parses, not memory.
        """
        if not self._networks or not isinstance(address, str):
            return False
        known = self._known.get(address)
        if known is None:
            known = self._inside(address)
            if len(self._known) >= _REMEMBERED_PEERS:
                self._known.clear()
            self._known[address] = known
        return known

    def _inside(self, address: str) -> bool:
        try:
            return any(ipaddress.ip_address(address) in n for n in self._networks)
        except ValueError:
            return False

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
    C{X-Forwarded-Host}, C{Forwarded} and C{X-Real-IP} describing C{peer}.

    From a trusted peer, this hop is appended to the chain it sent (and its
    C{-Proto}, C{-Host} and C{X-Real-IP}, which describe the original client,
    are kept, as nginx's realip module would), and so is every field of
    L{ASSERTED_BY_PROXIES}.  From anyone else, any such header the client
    sent is replaced or, where stproxy has nothing to say, dropped: a client
    cannot choose the address, scheme or identity Streamlit sees.
    """
    result = headers.copy()
    isTrusted = peer.address in trusted
    if not isTrusted:
        for name in _SET_FOR_UNTRUSTED:
            result.removeHeader(name)
    _recordHop(result, peer, isTrusted)
    return result


#: What a request from an untrusted peer loses before this hop is recorded:
#: what it may not assert, and the forwarding fields stproxy sets itself.
_SET_FOR_UNTRUSTED = ASSERTED_BY_PROXIES | {b"x-forwarded-for", b"forwarded", b"x-real-ip"}
_SET_FOR_UNTRUSTED |= {b"x-forwarded-proto", b"x-forwarded-host"}


def _recordHop(headers: Headers, peer: Peer, isTrusted: bool) -> None:
    """This hop added to C{headers}, in place; untrusted, they hold no L{_SET_FOR_UNTRUSTED}."""
    proto = b"https" if peer.secure else b"http"
    host = peer.host or b""
    node = peer.address.encode("ascii") if peer.address else b"unknown"
    element = b";".join(
        [b"for=" + _forwardedNode(peer.address)]
        + ([b"host=" + _forwardedValue(host)] if host else [])
        + [b"proto=" + proto]
    )
    if isTrusted:
        chain = headers.getRawHeaders(b"x-forwarded-for", [])
        headers.setRawHeaders(b"x-forwarded-for", [b", ".join([*chain, node])])
        forwarded = headers.getRawHeaders(b"forwarded", [])
        headers.setRawHeaders(b"forwarded", [b", ".join([*forwarded, element])])
        if not headers.hasHeader(b"x-forwarded-proto"):
            headers.setRawHeaders(b"x-forwarded-proto", [proto])
        if host and not headers.hasHeader(b"x-forwarded-host"):
            headers.setRawHeaders(b"x-forwarded-host", [host])
        if not headers.hasHeader(b"x-real-ip"):
            _setRealIP(headers, peer.address)
        return
    headers.setRawHeaders(b"x-forwarded-for", [node])
    headers.setRawHeaders(b"x-forwarded-proto", [proto])
    headers.setRawHeaders(b"forwarded", [element])
    if host:
        headers.setRawHeaders(b"x-forwarded-host", [host])
    _setRealIP(headers, peer.address)


def _setRealIP(headers: Headers, address: str | None) -> None:
    """
    C{X-Real-IP} as nginx sets it: the peer's bare address.  A peer with no
    address (a UNIX socket) gets none rather than a value no app can parse.
    """
    if address:
        headers.setRawHeaders(b"x-real-ip", [address.encode("ascii")])
    else:
        headers.removeHeader(b"x-real-ip")


def requestHeadersForUpstream(headers: Headers, peer: Peer, trusted: TrustedProxies) -> Headers:
    """
    The headers to send upstream for a client request: end-to-end fields
    unchanged (the client's C{Host}, cookies and repeats included), framing
    left to the HTTP client, and this hop recorded in the forwarding headers.

    One copy, filtered as it is made: what the hop-by-hop rules and (from an
    untrusted peer) the forwarding rules drop is never copied.
    """
    isTrusted = peer.address in trusted
    result = _without(headers, _DROP_FROM_TRUSTED if isTrusted else _DROP_FROM_UNTRUSTED)
    _recordHop(result, peer, isTrusted)
    return result


#: What never reaches the upstream from a request, by the peer it came
#: from, and what never reaches the browser from a response.
_DROP_FROM_TRUSTED = HOP_BY_HOP | FRAMING | CONSUMED_BY_PROXY
_DROP_FROM_UNTRUSTED = _DROP_FROM_TRUSTED | _SET_FOR_UNTRUSTED
_DROP_FROM_RESPONSE = HOP_BY_HOP | FRAMING


def responseHeadersForClient(headers: Headers) -> Headers:
    """
    The headers to send the client for an upstream response: everything
    end-to-end as the upstream sent it (C{Set-Cookie} and other repeats
    included); framing is for the proxy's own connection to decide.

    The fields the upstream's C{Connection} names are dropped too: Twisted's
    client keeps that header out of C{response.headers}, and stproxy's pool
    (L{stproxy._twisted.UpstreamConnectionPool}) puts it back for this.
    """
    return _without(headers, _DROP_FROM_RESPONSE)


__all__ = [
    "ASSERTED_BY_PROXIES",
    "HOP_BY_HOP",
    "Peer",
    "TrustedProxies",
    "withoutHopByHop",
    "forwardingHeaders",
    "requestHeadersForUpstream",
    "responseHeadersForClient",
]
