"""
The root of stproxy's resource tree: who the request is from (when
authentication is configured), then upgrade or not, whatever the path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from stproxy.auth.identity import IdentityHeaders
from stproxy.auth.verdict import Verdict
from stproxy.edge.clientcert import clientCertificateSubject
from stproxy.http.refusal import refuse
from stproxy.http.request import ProxyRequest
from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from twisted.logger import ILogObserver

    from stproxy.auth.gate import Gate

#: The titles of the answers an authentication step gives in the app's place.
_TITLES = {
    302: "Found",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def isWebSocketUpgrade(request: IRequest) -> bool:
    """Whether C{request} asks to switch to the WebSocket protocol (RFC 6455 section 4.1)."""
    upgrade = request.getHeader(b"upgrade") or b""
    tokens = {token.strip().lower() for token in upgrade.split(b",")}
    return b"websocket" in tokens


class ProxyRoot(Resource):
    """
    Authenticates every request (L{stproxy.auth.gate}), then sends WebSocket
    upgrades to the relay and everything else to the HTTP reverse proxy,
    whatever the path.

    The identity headers stproxy manages (L{IdentityHeaders}) are removed
    from every request first, whatever is configured: only stproxy says who
    a request is from.

    Autobahn's resource is a leaf that takes over every request under its
    path, upgrade or not, so it is only ever asked to render upgrades.
    """

    isLeaf = True

    def __init__(
        self,
        http: IResource,
        webSocket: IResource,
        gate: Gate | None = None,
        identity: IdentityHeaders = IdentityHeaders(),
        logObserver: ILogObserver | None = None,
        clientCertificates: bool = True,
    ) -> None:
        """
        @param gate: the authentication steps; C{None} for none.
        @param identity: the identity headers' names.
        @param clientCertificates: whether a listener verifies client
            certificates (C{--tls-client-ca}), whose subject then goes
            upstream; without a gate and without them, a request carries
            nothing of the proxy's and is not looked at.
        """
        super().__init__()
        self._clientCertificates = clientCertificates
        self._http = http
        self._webSocket = webSocket
        self._gate = gate
        self._identity = identity
        self._log = loggerFor(self, logObserver)

    def render(self, request: Request) -> object:
        self._identity.strip(request.requestHeaders)
        if self._gate is None:
            if self._clientCertificates:
                self._authenticated(request, Verdict())
            return self._dispatch(request)
        decided = self._gate.check(request).addCallback(self._decided, request)
        decided.addErrback(self._broken, request)
        return NOT_DONE_YET

    def _authenticated(self, request: Request, verdict: Verdict) -> None:
        """Record who C{request} is from, and the headers that tell the upstream."""
        if isinstance(request, ProxyRequest):
            subject = clientCertificateSubject(request)
            request.identity = verdict.identity
            request.authCookies = verdict.cookies
            # On the proxy's own answers (a 502 page) too; an upstream's
            # response gets them again beside its own (Exchange).
            for name, value in verdict.cookies:
                request.responseHeaders.addRawHeader(name, value)
            request.upstreamHeaders = self._identity.upstream(
                verdict.identity, subject, verdict.headers
            )

    def _decided(self, verdict: Verdict, request: Request) -> None:
        if request.finished or request.channel is None:
            return  # the client went away while it was being checked
        if not verdict.allowed:
            self._answer(request, verdict)
            return
        self._authenticated(request, verdict)
        _finish(request, self._dispatch(request))

    def _dispatch(self, request: Request) -> object:
        if isWebSocketUpgrade(request) and request.uri.startswith(b"/"):
            result = self._webSocket.render(request)
            if request.channel.transport is None:
                # The connection now belongs to the relay.  (Site.buildProtocol
                # sets the channel's site; HTTPChannel does not declare it.)
                request.channel.site.handedOver(request)  # type: ignore[attr-defined]
            return result
        return self._http.render(request)

    def _answer(self, request: Request, verdict: Verdict) -> None:
        """
        The proxy's own answer: the headers the step gave (C{WWW-Authenticate},
        C{Location}, C{Retry-After}), a short page, and one log line saying
        why (a verdict's reason names no password and no cookie).
        """
        for name, value in verdict.headers:
            request.responseHeaders.addRawHeader(name, value)
        title = _TITLES.get(verdict.status, "Error")
        reason = f"{verdict.method}: {verdict.reason}" if verdict.reason else verdict.method
        body = refuse(request, self._log, verdict.status, title, reason)
        _finish(request, body)

    def _broken(self, failure: Failure, request: Request) -> None:
        self._log.failure("Authenticating {uri} failed", failure, uri=request.uri)
        if not (request.finished or request.channel is None):
            body = refuse(request, self._log, 500, "Internal Server Error", "authentication failed")
            _finish(request, body)


def _finish(request: Request, result: object) -> None:
    """
    Do with a resource's C{render} result what twisted.web does when it
    renders synchronously: write a body it returned (its length, and no
    body for HEAD) and finish; leave a request it answers later alone.
    """
    if result is NOT_DONE_YET or request.finished:
        return
    assert isinstance(result, bytes)
    request.setHeader(b"content-length", b"%d" % (len(result),))
    request.write(b"" if request.method == b"HEAD" else result)
    request.finish()


__all__ = ["ProxyRoot", "isWebSocketUpgrade"]
