"""
What an authentication step decides about one request (HTTP or a WebSocket
handshake): let it through as someone, or answer it in the proxy's place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The identity stproxy passes to Streamlit, by key: C{user}, C{email},
#: C{groups} (L{stproxy.auth.identity} names the headers they travel in).
Identity = dict[str, str]


@dataclass(frozen=True)
class Verdict:
    """
    One decision.

    @ivar status: 0 to let the request through; otherwise the status the
        proxy answers with itself (401, 302 to a sign-in page, 429, 503...).
    @ivar identity: who the request is from, when it goes through (may be
        empty: an auth service that names nobody).
    @ivar headers: response headers of the proxy's own answer
        (C{WWW-Authenticate}, C{Location}, C{Retry-After}...), or headers an
        auth service asked to add to the request going upstream.
    @ivar cookies: C{Set-Cookie} lines an auth service sent with its allow,
        for the browser with the response (oauth2-proxy refreshing its
        session; nginx's C{auth_request_set} and C{add_header Set-Cookie}).
    @ivar reason: why, for the one log line a refusal gets; never a
        password or a cookie.
    @ivar method: what decided (C{htpasswd}, C{forward}, C{cert}), for
        metrics and logs.
    """

    status: int = 0
    identity: Identity = field(default_factory=dict)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    reason: str = ""
    method: str = ""
    cookies: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.status == 0


def allow(
    method: str,
    identity: Identity | None = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    cookies: tuple[tuple[bytes, bytes], ...] = (),
) -> Verdict:
    """Let the request through as C{identity}, adding C{headers} to it upstream and C{cookies} to its response."""
    return Verdict(0, dict(identity or {}), headers, method=method, cookies=cookies)


def refuse(method: str, status: int, reason: str, *headers: tuple[bytes, bytes]) -> Verdict:
    """Answer the request with C{status} (and C{headers}) in the proxy's place."""
    return Verdict(status, {}, tuple(headers), reason, method)


__all__ = ["Identity", "Verdict", "allow", "refuse"]
