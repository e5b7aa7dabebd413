"""
A tiny forward-auth service for the tests, shaped like oauth2-proxy: what ``--forward-auth`` asks,
and where a browser signs in.

In-process, ``AuthService(...)`` holds the sessions and the requests it got; ``.resource()`` is
its twisted.web root (for ``treq.testing.RequestTraversalAgent``) and ``.listen(reactor)`` serves
it on 127.0.0.1 port 0. As a script, ``python tests/auth_service.py [--port N]
[--session VALUE=USER ...]`` prints one JSON line ``{"port": N}`` and serves until killed.

- ``GET /auth``: 200 with ``X-Auth-Request-User``, ``-Email`` and ``-Groups`` when a ``Cookie``
  line holds ``session=VALUE`` of a known session (by default ``valid-alice`` is ``alice``,
  ``alice@example.com``, groups ``admins,staff``); else 401 with ``WWW-Authenticate`` and a
  ``Set-Cookie`` clearing ``session``, as oauth2-proxy does for a stale one.
- ``GET /auth/refresh``: as ``/auth``, and a 2xx also sets ``session=VALUE-refreshed`` (as
  oauth2-proxy refreshes its session cookie).
- ``GET /auth/endless``: as ``/auth``, with a body that never ends.
- ``GET /forbidden``: 403. ``GET /error``: 500. ``GET /slow``: never answers.
- ``GET /signin?rd=URL``: a page (200) with one link per user, to
- ``GET /signin/login?user=NAME&rd=URL``: sets ``session=VALUE; Path=/`` and redirects (302) to
  ``URL``. Cookies are per host, not per port, so a session set here on 127.0.0.1 is sent to a
  proxy on 127.0.0.1 too: what the browser tests rely on.

Every request is recorded (``.requests``: method, target, header lines) for assertions.
"""

from __future__ import annotations

import argparse
import html
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

#: Session cookie value -> user, unless a test gives its own.
SESSIONS = {"valid-alice": "alice"}

#: User -> groups, for the users of SESSIONS.
GROUPS = {"alice": "admins,staff"}


@dataclass(frozen=True)
class Recorded:
    """One request the service got."""

    method: bytes
    uri: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # (lower-case name, value), each line

    def header(self, name: bytes) -> list[bytes]:
        """Every line of header ``name`` (any case), in order."""
        return [value for key, value in self.headers if key == name.lower()]


class AuthService:
    """The service's state: its sessions, and the requests it got."""

    def __init__(
        self, sessions: Mapping[str, str] | None = None, groups: Mapping[str, str] | None = None
    ) -> None:
        self.sessions = dict(SESSIONS if sessions is None else sessions)
        self.groups = dict(GROUPS if groups is None else groups)
        self.requests: list[Recorded] = []

    def resource(self) -> Resource:
        """The service's twisted.web root resource."""
        return _Root(self)

    def site(self) -> Site:
        """A Site serving the service, quiet (no access log)."""
        site = Site(self.resource())
        site.log = lambda request: None  # type: ignore[method-assign]
        site.noisy = False
        return site

    def listen(self, reactor: Any, port: int = 0) -> Listening:
        """Serve on 127.0.0.1 (port 0: any free one); the result says where and stops it."""
        factory = _Tracking(self.site())
        return Listening(reactor.listenTCP(port, factory, interface="127.0.0.1"), factory)

    def userOf(self, cookies: Sequence[bytes]) -> str | None:
        """The user of the first known ``session=`` in the ``Cookie`` lines, or None."""
        for line in cookies:
            for pair in line.split(b";"):
                name, _, value = pair.strip().partition(b"=")
                user = self.sessions.get(value.decode("latin-1")) if name == b"session" else None
                if user is not None:
                    return user
        return None


class Listening:
    """A listening service: its port, and how to stop it once its connections are gone."""

    def __init__(self, port: Any, factory: _Tracking) -> None:
        self._port, self._factory = port, factory
        self.port: int = port.getHost().port
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        """How many connections it has accepted so far."""
        return self._factory.accepted

    def stop(self) -> Deferred[None]:
        """Stop listening and fire once every connection it accepted has closed."""
        stopped: Deferred[Any] = Deferred.fromCoroutine(self._stop())
        return stopped

    async def _stop(self) -> None:
        await self._port.stopListening()
        for connection in list(self._factory.protocols):
            connection.transport.loseConnection()
        await self._factory.idle()


class _Tracking(WrappingFactory):
    """Knows its open connections (``protocols``), and says when none is left."""

    noisy = False

    def __init__(self, wrapped: Site) -> None:
        super().__init__(wrapped)
        self._waiting: list[Deferred[None]] = []
        self.accepted = 0

    def registerProtocol(self, p: Any) -> None:
        super().registerProtocol(p)
        self.accepted += 1

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def idle(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.protocols:
            self._waiting.append(d)
        else:
            d.callback(None)
        return d


class _Endless:
    """A pull producer whose body never ends (until the client goes away)."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def resumeProducing(self) -> None:
        self.request.write(b"x" * 16384)

    def stopProducing(self) -> None:
        pass


class _Root(Resource):
    isLeaf = True

    def __init__(self, service: AuthService) -> None:
        super().__init__()
        self.service = service

    def render(self, request: Request) -> bytes | int:
        uri = request.uri or b""
        self.service.requests.append(
            Recorded(
                request.method,
                uri,
                tuple(
                    (name.lower(), value)
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    for value in values
                ),
            )
        )
        path = (request.path or b"").decode("latin-1")
        if path in ("/auth", "/auth/endless", "/auth/refresh"):
            if path == "/auth/refresh":
                request.setHeader(b"set-cookie", b"session=refreshed; Path=/; HttpOnly")
            return self.auth(request, endless=path == "/auth/endless")
        if path == "/forbidden":
            request.setResponseCode(403)
            return b"forbidden\n"
        if path == "/error":
            request.setResponseCode(500)
            return b"broken\n"
        if path == "/slow":
            request.notifyFinish().addErrback(lambda _: None)  # the client gives up
            return NOT_DONE_YET
        if path == "/signin":
            return self.signin(_arg(request, b"rd"))
        if path == "/signin/login":
            return self.login(request, _arg(request, b"user"), _arg(request, b"rd"))
        request.setResponseCode(404)
        return b"not found\n"

    def auth(self, request: Request, endless: bool) -> bytes | int:
        user = self.service.userOf(request.requestHeaders.getRawHeaders(b"cookie", []))
        if user is None:
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer realm="test"')
            request.setHeader(b"set-cookie", b"session=; Path=/; Max-Age=0")
            return b"unauthorized\n"
        request.setResponseCode(200)
        request.setHeader(b"x-auth-request-user", user.encode())
        request.setHeader(b"x-auth-request-email", f"{user}@example.com".encode())
        if groups := self.service.groups.get(user):
            request.setHeader(b"x-auth-request-groups", groups.encode())
        if endless:
            request.notifyFinish().addErrback(lambda _: None)
            request.registerProducer(_Endless(request), False)
            return NOT_DONE_YET
        return b""

    def signin(self, rd: str) -> bytes:
        links = "".join(
            f'<li><a id="login-{html.escape(user)}" href="/signin/login?user={quote(user)}'
            f'&amp;rd={quote(rd, safe="")}">Sign in as {html.escape(user)}</a></li>'
            for user in sorted(set(self.service.sessions.values()))
        )
        return f"<!doctype html><title>Sign in</title><ul>{links}</ul>".encode()

    def login(self, request: Request, user: str, rd: str) -> bytes:
        values = [value for value, name in self.service.sessions.items() if name == user]
        if not values:
            request.setResponseCode(403)
            return b"no such user\n"
        request.setHeader(b"set-cookie", f"session={values[0]}; Path=/".encode())
        request.redirect((rd or "/").encode())
        return b""


def _arg(request: Request, name: bytes) -> str:
    """The first query argument ``name``, as text, or ''."""
    values: list[bytes] = (request.args or {}).get(name) or [b""]
    return values[0].decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--session", action="append", default=[], metavar="VALUE=USER", help="a known session"
    )
    args = parser.parse_args(argv)
    sessions = dict(item.split("=", 1) for item in args.session) or None
    from twisted.internet import reactor

    listening = AuthService(sessions).listen(reactor, args.port)
    print(json.dumps({"port": listening.port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
