"""
The requests stproxy answers itself instead of forwarding, on either leg:
what is refused (L{refusal}, L{validHost}) and how the refusal is answered
and logged (L{refuse}).

The HTTP leg (L{stproxy.http.forward}) and the WebSocket leg
(L{stproxy.websocket.resource}, which adds the upgrade's own rules) share
both, so a request refused on one leg is refused, answered and logged the
same way on the other.
"""

from __future__ import annotations

import ipaddress
import re
from html import escape

from twisted.logger import Logger
from twisted.web.server import Request

#: Methods that could turn stproxy into a tunnel or echo a client's cookies.
REFUSED_METHODS = frozenset({b"CONNECT", b"TRACE"})

#: The Allow header of a 405 (RFC 9110 section 15.5.6): what is forwarded.
ALLOWED_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

#: What a request target may consist of (RFC 3986 characters are a subset):
#: twisted.web lets control bytes and DEL through, the HTTP client refuses them.
_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")

#: C{host[:port]} as a Host header may hold it (RFC 9110 section 7.2): an
#: IPv6 literal in brackets, or a reg-name (which covers IPv4 addresses) of
#: RFC 3986's unreserved characters and percent-escapes.  Its sub-delims are
#: left out: C{,} and C{;} separate the values of X-Forwarded-Host and
#: Forwarded, and no DNS name holds any of them; nor does one begin with
#: C{-} (the redirect listener's rule, now everyone's).  Every character it
#: admits may stand as it is in a URL's authority.
_HOST = re.compile(
    rb"(?P<host>\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?!-)(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})+)(?::[0-9]{1,5})?"
)


def hostName(value: bytes) -> bytes | None:
    """
    The host of C{value}, a Host header (or C{:authority}), without its
    port: a name or an IPv4 address, or an IPv6 address in brackets; or
    C{None} when C{value} is no C{host[:port]}.  Anything else (spaces from
    an obs-folded line, a second host, user info, a path) would reach
    Streamlit, the forwarding headers or a Location as it is.
    """
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    literal = match.group("ipv6")
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return None
    return match.group("host")


def validHost(value: bytes) -> bool:
    """Whether C{value}, a Host header (or C{:authority}), is a C{host[:port]} (see L{hostName})."""
    return hostName(value) is not None


def refusal(request: Request) -> tuple[int, str, str] | None:
    """
    Why C{request} must not be forwarded at all, as (status, title, detail),
    or C{None} when it may be.

    stproxy only ever speaks to its one upstream: a request line naming
    another host (absolute form), a tunnel, or a request whose target host
    is ambiguous never leaves the proxy.  HTTP/1.0 makes Host optional.
    """
    if request.method in REFUSED_METHODS:
        return 405, "Method Not Allowed", "This server does not proxy CONNECT or TRACE."
    if not request.uri.startswith(b"/"):
        return 400, "Bad Request", "Only origin-form request targets (/path) are accepted."
    if not _VISIBLE_ASCII.fullmatch(request.uri):
        return 400, "Bad Request", "The request target holds bytes a URI may not hold."
    hosts = request.requestHeaders.getRawHeaders(b"host", [])
    if len(hosts) > 1 or (not hosts and request.clientproto != b"HTTP/1.0"):
        return 400, "Bad Request", "A request needs exactly one Host header."
    if hosts and not validHost(hosts[0]):
        return 400, "Bad Request", "The Host header is not a host[:port]."
    return None


def refuse(request: Request, log: Logger, status: int, title: str, detail: str) -> bytes:
    """
    Answer C{request} with C{status} and an HTML page naming C{title} and
    C{detail}, and log one event with its C{method}, C{uri}, C{peer},
    C{status} and C{detail} (the line L{stproxy.http.channel} writes for
    the requests it cannot read); returns the page for C{render} to return.

    The reason phrase is C{title}, not twisted.web's table (which has no
    426, so its C{errorPage} writes "426 Unknown Status"); a 405 names the
    methods stproxy forwards in Allow.  What is counted is left to the
    caller's leg.
    """
    if status == 405:
        request.setHeader(b"allow", ALLOWED_METHODS)
    log.info(
        "Refused {method} {uri} from {peer}: {status} {detail}",
        method=request.method.decode("latin-1"),
        uri=request.uri.decode("latin-1"),
        peer=getattr(request.getClientAddress(), "host", "unknown"),
        status=status,
        detail=detail,
    )
    request.setResponseCode(status, title.encode("ascii"))
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    text = escape(f"{status} - {title}"), escape(title), escape(detail)
    page = "<!DOCTYPE html>\n<html><head><title>{}</title></head><body><h1>{}</h1><p>{}</p></body></html>"
    return page.format(*text).encode("utf-8")


__all__ = ["refusal", "refuse", "validHost", "hostName", "REFUSED_METHODS", "ALLOWED_METHODS"]
