"""
The one place a request's identity is decided: the authentication steps
configured (a verified client certificate, HTTP Basic against password
files, an external forward-auth service), run in that order for every HTTP
request and every WebSocket handshake.

Every step must let the request through; the first refusal is the answer
(and the only one that runs its course: a browser refused by Basic auth is
not also sent to the auth service).  The identity is the first step's that
names a user, with what later steps add (an auth service's e-mail and
groups).  A request under a pass-through prefix (the auth service's own
C{/oauth2/} pages, C{--forward-auth-passthrough}) is not checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed

from stproxy.auth.verdict import Verdict, allow, refuse
from stproxy.edge.clientcert import clientCertificateCommonName
from stproxy.http.headers import TrustedProxies

if TYPE_CHECKING:
    from twisted.web.server import Request

    from stproxy.auth.basic import BasicAuth
    from stproxy.auth.forwardauth import ForwardAuth
    from stproxy.ops.metrics import Metrics


class Step(Protocol):
    """One way of authenticating a request."""

    def check(self, request: Request) -> Deferred[Verdict]:
        """The step's decision; never fails (an error is a refusal, often 503)."""


class Gate:
    """The configured steps, in order."""

    def __init__(self, steps: Sequence[Step], passthrough: Sequence[bytes] = ()) -> None:
        """
        @param passthrough: path prefixes no step checks: each one, and the
            paths below it (C{/oauth2} covers C{/oauth2/start}, never
            C{/oauth2-admin}), as the routes that send them to the service.
        """
        self.steps = list(steps)
        self._passthrough = tuple(prefix.rstrip(b"/") for prefix in passthrough)

    def check(self, request: Request) -> Deferred[Verdict]:
        """Run the steps on C{request}; fires with the combined verdict."""
        if self._passesThrough(request.path):
            return succeed(allow("passthrough"))
        return self._from(0, request, allow(""))

    def _passesThrough(self, path: bytes) -> bool:
        return any(path == prefix or path.startswith(prefix + b"/") for prefix in self._passthrough)

    def _from(self, index: int, request: Request, sofar: Verdict) -> Deferred[Verdict]:
        if index == len(self.steps):
            return succeed(sofar)

        def decided(verdict: Verdict) -> Verdict | Deferred[Verdict]:
            if not verdict.allowed:
                return verdict
            return self._from(index + 1, request, _merged(sofar, verdict))

        return self.steps[index].check(request).addCallback(decided)


def _merged(sofar: Verdict, verdict: Verdict) -> Verdict:
    """What an earlier step established, completed (never overridden) by a later one."""
    identity = {**verdict.identity, **sofar.identity}
    method = sofar.method or verdict.method
    return allow(method, identity, sofar.headers + verdict.headers, sofar.cookies + verdict.cookies)


class CertificateUser:
    """
    C{--user-from-cert cn}: the common name of the client certificate the
    TLS listener verified (C{--tls-client-ca}) is the user.  A request with
    no verified certificate naming one (a listener without client
    certificates) is refused with 401: there is nobody to name.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics

    def check(self, request: Request) -> Deferred[Verdict]:
        name = clientCertificateCommonName(request)
        if self._metrics is not None:
            result = "ok" if name else "denied"
            self._metrics.authentications.labels(method="cert", result=result).inc()
        if not name:
            return succeed(refuse("cert", 401, "no verified client certificate names a user"))
        return succeed(allow("cert", {"user": name}))


class BasicStep:
    """HTTP Basic against the C{--auth} checkers (L{BasicAuth})."""

    def __init__(self, basic: BasicAuth, trusted: TrustedProxies = TrustedProxies()) -> None:
        """@param trusted: proxies in front, whose C{X-Forwarded-For} names the client."""
        self._basic = basic
        self._trusted = trusted

    def check(self, request: Request) -> Deferred[Verdict]:
        client = clientOf(request, self._trusted)
        return self._basic.check(request.getHeader(b"authorization"), client)


class ForwardStep:
    """The external auth service (L{ForwardAuth}), asked about the request as it came."""

    def __init__(self, forward: ForwardAuth, trusted: TrustedProxies = TrustedProxies()) -> None:
        """@param trusted: proxies in front, whose C{X-Forwarded-For} names the client."""
        self._forward = forward
        self._trusted = trusted

    def check(self, request: Request) -> Deferred[Verdict]:
        return self._forward.check(
            request.method,
            request.uri,
            request.getHeader(b"host") or b"",
            "https" if request.isSecure() else "http",
            request.requestHeaders.getRawHeaders(b"cookie"),
            isNavigation(request),
            clientOf(request, self._trusted),
        )


def clientOf(request: Request, trusted: TrustedProxies = TrustedProxies()) -> str:
    """
    The client C{request} is from, what failed sign-ins are counted by: its
    peer's address, or, when the peer is a trusted proxy (C{--trust-forwarded}),
    the last address of C{X-Forwarded-For} no trusted proxy holds (as nginx's
    C{real_ip_recursive}): behind a load balancer, one client's failures
    must not throttle everyone.
    """
    peer = getattr(request.getClientAddress(), "host", None)
    if peer is None:
        return "-"
    if peer in trusted:
        chain = b",".join(request.requestHeaders.getRawHeaders(b"x-forwarded-for", []))
        for hop in reversed(chain.split(b",")):
            address = hop.strip().decode("ascii", "replace")
            if address and address not in trusted:
                return address
    return str(peer)


def isNavigation(request: Request) -> bool:
    """
    Whether C{request} is a browser loading a page (which a sign-in page can
    replace), not a script's fetch, a WebSocket or a static file: a GET that
    says C{Sec-Fetch-Mode: navigate}, or, from a browser too old to say, one
    that accepts HTML.
    """
    if request.method != b"GET" or request.getHeader(b"upgrade") is not None:
        return False
    mode = request.getHeader(b"sec-fetch-mode")
    if mode is not None:
        return mode.strip().lower() == b"navigate"
    return b"text/html" in (request.getHeader(b"accept") or b"")


__all__ = ["BasicStep", "CertificateUser", "ForwardStep", "Gate", "Step", "isNavigation"]
