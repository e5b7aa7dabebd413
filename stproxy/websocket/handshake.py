"""
The text of the upstream WebSocket handshake, built from the browser's.

Pure functions over bytes: the browser's request head is re-sent upstream
byte for byte (target, raw C{Host}, cookies, each header line as a line of
its own), with only Autobahn's own key and version lines spliced in.
Autobahn's client would write C{Host: host:port} itself and encode header
values as UTF-8 (TWISTED.md section 4), which Streamlit's Origin check and
byte-exact cookies cannot take.

Behind twisted.web the head is twisted.web's parse (L{receivedHandshake}),
not what Autobahn's C{WebSocketResource} replays to the protocol: that
reconstruction joins repeated lines with commas, so two C{Cookie} lines
would reach Streamlit as one and two C{Host} lines as one odd Host.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from twisted.web.http_headers import Headers

#: Handshake fields the upstream leg writes for itself rather than copying
#: from the browser: its own key, version and (no) extensions, and the Host
#: line it always puts first.  C{Connection}/C{Upgrade} are hop-by-hop.
OWN_HANDSHAKE_FIELDS = (
    b"host",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-accept",
    b"content-length",
)

#: The lines of Autobahn's own client handshake that are kept.
_AUTOBAHN_LINES = (b"sec-websocket-key:", b"sec-websocket-version:")


class BrowserHandshake(NamedTuple):
    """
    The browser's opening handshake as it was received: the request target
    and every header line as bytes, repeated lines kept apart.

    @ivar host: the C{Host} value when there is exactly one Host line, else
        None (the handshake is then refused).
    @ivar added: header lines the proxy adds upstream after the browser's
        forwarding headers are dealt with: who the browser is (L{stproxy.auth}).
    @ivar user: the authenticated user, for the session's log line.
    @ivar cookies: C{Set-Cookie} values the authentication gave for the
        browser (an auth service refreshing its session), for the 101.
    """

    target: bytes
    host: bytes | None
    headers: Headers
    added: tuple[tuple[bytes, bytes], ...] = ()
    user: str | None = None
    cookies: tuple[bytes, ...] = ()


def receivedHandshake(
    target: bytes,
    headers: Headers,
    added: tuple[tuple[bytes, bytes], ...] = (),
    user: str | None = None,
    cookies: tuple[bytes, ...] = (),
) -> BrowserHandshake:
    """
    The handshake twisted.web parsed: C{target} and C{headers} as its
    C{Request} holds them (one value per line received), and what the
    proxy's authentication adds (L{BrowserHandshake.added}, C{cookies}).
    """
    hosts = headers.getRawHeaders(b"host", [])
    host = hosts[0] if len(hosts) == 1 else None
    return BrowserHandshake(target, host, headers, added, user, cookies)


def parseRequestHead(data: bytes) -> BrowserHandshake:
    """
    The handshake in an HTTP request head, as bytes exactly as received
    (Autobahn's own parse decodes them as latin-1, joins repeated lines
    with commas, and its client would send them back UTF-8 encoded).
    """
    lines = data.split(b"\r\n")
    target = lines[0].split()[1]
    headers = Headers()
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers.addRawHeader(name.strip(), value.strip())
    return receivedHandshake(target, headers)


def upstreamRequestHead(target: bytes, host: bytes, headers: Headers) -> bytes:
    """
    The start of the upstream handshake: request line, the browser's C{Host}
    first (exactly as sent, port or no port), the upgrade itself, then every
    header given.  L{spliceHandshake} completes it with Autobahn's key.
    """
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: " + host]
    lines += [b"Upgrade: websocket", b"Connection: Upgrade"]
    for name, values in headers.getAllRawHeaders():
        # One line per line received: a field sent twice (two Cookie
        # lines) is not joined into one.
        lines.extend(name + b": " + value for value in values)
    return b"\r\n".join(lines) + b"\r\n"


def spliceHandshake(head: bytes, generated: bytes) -> bytes:
    """
    Autobahn's client handshake C{generated}, with everything but its key
    and version lines replaced by C{head}.

    Autobahn always writes C{Host: host:port} (TWISTED.md section 4) and
    encodes header values as UTF-8; Streamlit wants the browser's exact Host
    (its Origin check) and cookies must pass byte for byte.
    """
    kept = [
        line + b"\r\n"
        for line in generated.split(b"\r\n")[1:]
        if line.lower().startswith(_AUTOBAHN_LINES)
    ]
    return head + b"".join(kept) + b"\r\n"


def acceptHeaders(cookies: Sequence[bytes]) -> dict[str, list[str]]:
    """
    The extra headers of the browser's 101, for Autobahn: a C{Set-Cookie}
    for each of C{cookies} (an affinity pin's, an auth service's refresh).

    Autobahn writes the values as text, unchecked; a value that is not
    printable ASCII (which no cookie of RFC 6265 is) is left out rather than
    risk a line break in the response.
    """
    values = [c.decode("ascii") for c in cookies if c.isascii() and c.decode("ascii").isprintable()]
    return {"Set-Cookie": values} if values else {}


__all__ = [
    "OWN_HANDSHAKE_FIELDS",
    "BrowserHandshake",
    "acceptHeaders",
    "parseRequestHead",
    "receivedHandshake",
    "upstreamRequestHead",
    "spliceHandshake",
]
