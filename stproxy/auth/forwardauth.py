"""
Forward auth: an external service (oauth2-proxy's C{/oauth2/auth}, Authelia,
Authentik) decides about every request, as for nginx C{auth_request} and
Caddy C{forward_auth}.

The question is a bodiless C{GET} describing the original request in
C{X-Forwarded-Method}, C{-Uri}, C{-Host}, C{-Proto}, C{-For} (and
C{X-Real-IP}, which oauth2-proxy reads), with the browser's C{Cookie} lines
as they came, since the session is in them.  The answer decides:

  - 2xx: through, as whoever the C{copyHeaders} of the answer name; those
    headers go upstream too (Caddy's C{copy_headers}), its C{Set-Cookie} to
    the browser with the response (never with a cached allow).
  - 401: not signed in.  A browser navigating is sent to the sign-in URL
    with where it was going in C{rd=} (nginx's C{error_page 401}); anything
    else (a fetch, the WebSocket handshake), for which a sign-in page means
    nothing, gets the 401 and the service's C{WWW-Authenticate}.  Either
    carries the service's C{Set-Cookie} (oauth2-proxy clears stale ones).
  - 403: signed in, not let in; passed on, as nginx does.
  - anything else, or no answer within C{timeout}: 503 and one warning.  Fail
    closed: with its auth service down, a proxy must not go without auth.

The answer's body is read and dropped so its connection is reused, but no
more than L{MAX_BODY} of it: then the connection is closed.

A page load is dozens of requests, each a round trip, so an allow may be
remembered for C{cacheSeconds}, keyed by a hash of the exact C{Cookie} lines
and host: the session the service judged.  Refusals are never cached (the
user may have just signed in), nor requests without cookies (no session to
key on).  This assumes the answer depends on the session, not the path (so
for oauth2-proxy, not for Authelia's per-path rules), and a session ended at
the service lives on here for up to C{cacheSeconds}: hence off by default.
Cookies are never kept (only the hash) nor logged, nor is C{Set-Cookie}."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence
from urllib.parse import quote, urlsplit

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from stproxy._twisted import UpstreamConnectionPool
from stproxy.auth.verdict import Identity, Verdict, allow, refuse
from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IPushProducer
    from twisted.logger import ILogObserver
    from twisted.web.iweb import IAgent, IResponse

    from stproxy.ops.metrics import Metrics
    from stproxy.reactor import TCPReactor

#: What oauth2-proxy sends with C{--set-xauthrequest}.
DEFAULT_COPY_HEADERS = ("X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups")

#: The most of an answer's body read (and dropped), and of its head taken;
#: and how many decisions are cached at most (the least recently used go first).
MAX_BODY, MAX_HEAD, CACHE_ENTRIES = 64 * 1024, 64 * 1024, 10_000

#: Idle connections kept to the service, and for how long: less than the 5 s
#: after which many servers drop them, so no check meets a closing one.
POOLED_CONNECTIONS, IDLE_CONNECTION_TIMEOUT = 8, 4.0

#: The identity keys (oauth2-proxy's C{X-Auth-Request-KEY} carries one; other
#: services' C{Remote-User}, C{X-Authentik-Username} are found by the word).
_IDENTITY = ("email", "groups", "user")

_CANCELLED = "the check was cancelled"


def _checkURL(what: str, url: str, path: bool = False) -> None:
    parts = urlsplit(url)
    local = path and url.startswith("/") and not url.startswith("//")
    if not (local or parts.scheme in ("http", "https") and parts.hostname):
        raise ValueError(f"{what} must be an http:// or https:// URL, not {url!r}")
    if not url.isascii() or any(c.isspace() for c in url):
        raise ValueError(f"{what} must be ASCII without spaces (percent-encode the rest): {url!r}")


@dataclass(frozen=True)
class ForwardAuthSettings:
    """How to ask the auth service; a bad value raises L{ValueError} at once."""

    url: str  # the service's check URL, http://oauth2-proxy:4180/oauth2/auth
    copyHeaders: tuple[str, ...] = DEFAULT_COPY_HEADERS  # name the user, and go upstream
    signin: str | None = None  # a browser not signed in goes there (rd= added): URL or /PATH
    cacheSeconds: float = 0.0  # how long an allow is remembered per cookie; 0: never
    timeout: float = 5.0  # for the whole answer, or the check fails closed

    def __post_init__(self) -> None:
        _checkURL("the forward auth URL", self.url)
        _checkURL("the sign-in URL", self.signin or "/", path=True)
        if not (self.cacheSeconds >= 0 and self.timeout > 0):
            raise ValueError(f"bad cache time or timeout: {self.cacheSeconds}, {self.timeout}")
        for name in self.copyHeaders:
            if not name.isascii() or not name.replace("-", "").isalnum():
                raise ValueError(f"not a header name: {name!r}")


def identityHeaders(copyHeaders: tuple[str, ...]) -> dict[bytes, str]:
    """
    Which of C{copyHeaders} (lower-case) carries which identity key: oauth2-proxy's
    if listed, else the first ending in C{-KEY}, else the first holding the word
    (C{user}, C{email}, C{group}); a name holding C{email} or C{group} is never the user.
    """
    names = [name.lower() for name in copyHeaders]
    found: dict[bytes, str] = {}
    for index, key in enumerate(_IDENTITY):
        earlier = [other.rstrip("s") for other in _IDENTITY[:index]]
        mine = [n for n in names if key.rstrip("s") in n and not any(w in n for w in earlier)]
        mine.sort(key=lambda n: (n != "x-auth-request-" + key, not n.endswith("-" + key)))
        if mine:  # the sort is stable: the first of equals stays first
            found[mine[0].encode("ascii")] = key
    return found


class ForwardAuth:
    """Asks the auth service about requests (see the module docstring)."""

    def __init__(
        self,
        reactor: TCPReactor,
        settings: ForwardAuthSettings,
        agent: IAgent | None = None,
        logObserver: ILogObserver | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """C{agent}: by default an L{Agent} on a small pool of our own (L{close} drops it)."""
        self.reactor, self.settings, self._metrics = reactor, settings, metrics
        self._log = loggerFor(self, logObserver)
        self._url = settings.url.encode("ascii")
        self._copy = tuple(dict.fromkeys(n.lower().encode("ascii") for n in settings.copyHeaders))
        self._identity = identityHeaders(settings.copyHeaders)
        self._cache: OrderedDict[bytes, tuple[float, Verdict]] = OrderedDict()
        self._pool: UpstreamConnectionPool | None = None
        if agent is None:
            self._pool = UpstreamConnectionPool(reactor, maxHeadSize=MAX_HEAD)
            self._pool.maxPersistentPerHost = POOLED_CONNECTIONS
            # Twisted infers int from its default (240); the pool passes it to callLater.
            self._pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT  # type: ignore[assignment]
            agent = Agent(reactor, connectTimeout=settings.timeout, pool=self._pool)
        self._agent = agent

    def check(
        self,
        method: bytes,
        uri: bytes,
        host: bytes,
        proto: str,
        cookies: Sequence[bytes] | None,
        navigation: bool,
        client: str,
    ) -> Deferred[Verdict]:
        """Ask about one request (C{uri}: as sent); never fails: an error is a 503 verdict."""
        cookies = list(cookies or ())
        key = self._cacheKey(host, cookies)
        if (cached := self._cached(key)) is not None:
            self._count("ok")
            return succeed(cached)
        forwarded = (method, uri, host, *(v.encode("ascii", "replace") for v in (proto, client)))
        names = (b"method", b"uri", b"host", b"proto", b"for")
        headers = Headers({b"x-forwarded-" + n: [v] for n, v in zip(names, forwarded)})
        headers.setRawHeaders(b"x-real-ip", [forwarded[-1]])
        headers.setRawHeaders(b"cookie", cookies)  # no line at all for no cookies
        started = self.reactor.seconds()
        asked: Deferred[IResponse] = maybeDeferred(self._agent.request, b"GET", self._url, headers)
        got = asked.addCallback(_discardBody).addTimeout(
            self.settings.timeout, self.reactor, _timedOut
        )
        url = forwarded[3] + b"://" + host + uri
        decided = got.addCallback(self._decide, key, url, navigation, client)
        return decided.addErrback(self._failed, client).addCallback(self._done, started)

    def close(self) -> Deferred[None]:
        """Forget every cached decision and close the idle connections of our own pool."""
        self._cache.clear()
        return self._pool.closeCachedConnections() if self._pool else succeed(None)

    def _decide(
        self, answer: IResponse, key: bytes | None, url: bytes, navigation: bool, client: str
    ) -> Verdict:
        code, headers = answer.code, answer.headers
        if 200 <= code < 300:
            refreshed = tuple(_fields(headers, b"set-cookie"))
            verdict = allow("forward", self._identityOf(headers), self._copied(headers), refreshed)
            if key is not None:  # kept without the cookies it set
                self._store(key, allow("forward", verdict.identity, verdict.headers))
            return verdict
        if code == 403:
            return refuse("forward", 403, "not allowed in (the auth service answered 403)")
        if code != 401:
            return self._failClosed(f"it answered {code}", client)
        setCookies = _fields(headers, b"set-cookie")
        signin = self.settings.signin
        if navigation and signin:
            location = signin + ("&" if "?" in signin else "?") + "rd=" + quote(url, safe="")
            where = (b"location", location.encode("ascii"))
            return refuse("forward", 302, "not signed in: sent to sign in", where, *setCookies)
        why = "not signed in (the auth service answered 401)"
        return refuse("forward", 401, why, *_fields(headers, b"www-authenticate"), *setCookies)

    def _identityOf(self, headers: Headers) -> Identity:
        """The identity the answer's headers name (groups in several lines are joined)."""
        identity: Identity = {}
        for name, key in self._identity.items():
            raw = [v.decode("utf-8", "replace").strip() for v in headers.getRawHeaders(name, [])]
            if values := [v for v in raw if v]:
                identity[key] = ",".join(values) if key == "groups" else values[0]
        return identity

    def _copied(self, headers: Headers) -> tuple[tuple[bytes, bytes], ...]:
        return tuple(field for name in self._copy for field in _fields(headers, name))

    def _failed(self, failure: Failure, client: str) -> Verdict:
        reasons = getattr(failure.value, "reasons", None)  # Twisted's client wraps its causes
        cause = reasons[0] if reasons else failure
        if cause.check(CancelledError, ConnectingCancelledError):  # by the caller: not a failure
            return refuse("forward", 503, _CANCELLED)
        why = cause.getErrorMessage() or cause.value.__class__.__name__
        if cause.check(TimeoutError):
            why = f"no answer within {self.settings.timeout:g} s"
        return self._failClosed(why, client)

    def _failClosed(self, why: str, client: str) -> Verdict:
        url = self.settings.url
        self._log.warn("Forward auth at {url} failed: {reason}", url=url, reason=why, client=client)
        if self._metrics is not None:
            self._metrics.forwardAuthFailures.inc()
        return refuse("forward", 503, f"the auth service failed: {why}")

    def _done(self, verdict: Verdict, started: float) -> Verdict:
        if verdict.reason != _CANCELLED and self._metrics is not None:
            self._metrics.forwardAuthSeconds.observe(self.reactor.seconds() - started)
            self._count("ok" if verdict.allowed else "error" if verdict.status == 503 else "denied")
        return verdict

    def _count(self, result: str) -> None:
        if metrics := self._metrics:
            metrics.authentications.labels(method="forward", result=result).inc()

    def _cacheKey(self, host: bytes, cookies: list[bytes]) -> bytes | None:
        if self.settings.cacheSeconds <= 0 or not cookies:
            return None
        return hashlib.sha256(b"".join(b"%d:%s" % (len(p), p) for p in (host, *cookies))).digest()

    def _cached(self, key: bytes | None) -> Verdict | None:
        expires, verdict = self._cache.get(key or b"", (0.0, None))
        if key is None or verdict is None or self.reactor.seconds() >= expires:
            self._cache.pop(key or b"", None)
            return None
        self._cache.move_to_end(key)
        return allow("forward", verdict.identity, verdict.headers)

    def _store(self, key: bytes, verdict: Verdict) -> None:
        self._cache[key] = (self.reactor.seconds() + self.settings.cacheSeconds, verdict)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)


def _timedOut(result: IResponse | Failure, timeout: float) -> IResponse | Failure:
    """Cancelled for taking too long: a failure (however wrapped) is the timeout."""
    return Failure(TimeoutError()) if isinstance(result, Failure) else result


def _fields(headers: Headers, name: bytes) -> list[tuple[bytes, bytes]]:
    """Each of C{headers}' lines named C{name} (lower-case), as a pair."""
    return [(name, value) for value in headers.getRawHeaders(name, [])]


def _discardBody(response: IResponse) -> Deferred[IResponse]:
    """C{response}, once its body is read and dropped (or cut at L{MAX_BODY})."""
    drain = _Drain()
    response.deliverBody(drain)
    return drain.done.addCallback(lambda _: response)


class _Drain(Protocol):
    """Reads a body to its end or L{MAX_BODY}; cancelled (timed out), the status decides."""

    transport: IPushProducer | None  # type: ignore[assignment]  # what a body comes through

    def __init__(self) -> None:
        self.left = MAX_BODY
        self.done: Deferred[None] = Deferred(lambda _: self.stopReading())

    def dataReceived(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            self.stopReading()

    def stopReading(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()
        self.connectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)


__all__ = ["DEFAULT_COPY_HEADERS", "ForwardAuth", "ForwardAuthSettings", "identityHeaders"]
