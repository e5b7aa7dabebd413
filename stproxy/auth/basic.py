"""
The HTTP Basic gate: every request and WebSocket handshake shows a user
name and password that one of the C{--auth} checkers accepts, or gets 401.

The C{Authorization} header is decoded by L{twisted.web.guard}'s
L{BasicCredentialFactory}, and the credentials are offered to each checker
that takes L{IUsernamePassword}, in the order given; the first to accept
them names the user.

Password guessing is slowed per client address: after C{maxFailures} failed
logins within a minute, the address gets 429 with C{Retry-After} (the
seconds until its oldest failure is a minute old) and its passwords are not
even checked.  Checks still running count against the limit too, so a
client cannot start a thousand guesses at once.  A request with no Basic
credentials at all is no guess and does not count.  The table of addresses
forgets each address a minute after its last failure and never holds more
than C{maxAddresses}.

A password appears in no verdict, log event or exception this module makes.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Sequence

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import LoginFailed
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.guard import BasicCredentialFactory

from stproxy.auth.verdict import Verdict, allow, refuse
from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from stproxy.ops.metrics import Metrics

METHOD = "htpasswd"

#: Seconds a failed login counts against its client address.
WINDOW = 60.0

#: Client addresses whose failures are remembered at most (the oldest go first).
MAX_ADDRESSES = 10_000


class _CheckerError(Exception):
    """A checker failed otherwise than by refusing the credentials."""

    def __init__(self, failure: Failure) -> None:
        super().__init__()
        self.failure = failure


class BasicAuth:
    """
    Decides about one request from its C{Authorization} header and client address.

    @param checkers: twisted.cred checkers (from C{--auth}); those that do not
        take L{IUsernamePassword} are ignored.
    @param maxFailures: failed logins a client address may have in a minute
        before it is throttled; 0 for no limit.
    """

    def __init__(
        self,
        checkers: Sequence[ICredentialsChecker],
        reactor: IReactorTime,
        maxFailures: int = 10,
        realm: str = "stproxy",
        logObserver: ILogObserver | None = None,
        metrics: Metrics | None = None,
        maxAddresses: int = MAX_ADDRESSES,
    ) -> None:
        self.checkers = [c for c in checkers if IUsernamePassword in c.credentialInterfaces]
        self._reactor = reactor
        self.maxFailures = maxFailures
        self._maxAddresses = maxAddresses
        self._decoder = BasicCredentialFactory(realm.encode("utf-8"))
        quoted = realm.replace("\\", "\\\\").replace('"', '\\"')
        self.challenge = (
            b"www-authenticate",
            f'Basic realm="{quoted}", charset="UTF-8"'.encode("utf-8"),
        )
        self._log = loggerFor(self, logObserver)
        self._metrics = metrics
        #: Recent failure times by address, least recently failed first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: dict[str, int] = {}

    def check(self, authorization: bytes | None, client: str) -> Deferred[Verdict]:
        """The verdict on a request from C{client} with this C{Authorization} value; never fails."""
        return ensureDeferred(self._check(authorization, client))

    async def _check(self, authorization: bytes | None, client: str) -> Verdict:
        try:
            wait = self._throttled(client)
            if wait is not None:
                self._count("throttled")
                return refuse(
                    METHOD,
                    429,
                    f"too many failed logins from {client}",
                    (b"retry-after", str(wait).encode("ascii")),
                )
            scheme, _, encoded = (authorization or b"").strip().partition(b" ")
            if scheme.lower() != self._decoder.scheme:
                return self._denied("no Basic credentials")
            try:
                credentials = self._decoder.decode(encoded.strip(), None)
            except LoginFailed:
                self._failed(client)
                return self._denied("undecodable Basic credentials")
            user = credentials.username.decode("utf-8", "replace")[:100]
            self._pending[client] = self._pending.get(client, 0) + 1
            try:
                avatar = await self._login(credentials)
            finally:
                self._pending[client] -= 1
                if not self._pending[client]:
                    del self._pending[client]
        except _CheckerError as e:
            self._log.failure("Password check for {user!r} failed", e.failure, user=user)
            self._count("error")
            return refuse(METHOD, 503, f"password check for {user!r} failed")
        except Exception:
            self._log.failure("Basic authentication failed")
            self._count("error")
            return refuse(METHOD, 503, "Basic authentication failed")
        if avatar is None:
            self._failed(client)
            return self._denied(f"wrong user name or password for {user!r}")
        self._count("ok")
        name = avatar.decode("utf-8", "replace") if isinstance(avatar, bytes) else user
        return allow(METHOD, {"user": name})

    async def _login(self, credentials: IUsernamePassword) -> bytes | tuple[()] | None:
        """
        The first avatar ID a checker grants, or None if every checker refuses.

        @raise _CheckerError: if none accepts and one failed unexpectedly.
        """
        error = None
        for checker in self.checkers:
            try:
                return await checker.requestAvatarId(credentials)
            except LoginFailed:
                continue
            except Exception:
                error = error or Failure()
        if error is not None:
            raise _CheckerError(error)
        return None

    def _denied(self, reason: str) -> Verdict:
        self._count("denied")
        return refuse(METHOD, 401, reason, self.challenge)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.authentications.labels(method=METHOD, result=result).inc()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        """C{client}'s failures within the window, forgetting it if there are none."""
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def _throttled(self, client: str) -> int | None:
        """Seconds C{client} must wait before its next attempt is checked, or None."""
        if self.maxFailures <= 0:
            return None
        now = self._reactor.seconds()
        times = self._recent(client, now) or deque()
        if len(times) + self._pending.get(client, 0) < self.maxFailures:
            return None
        if not times:
            return 1
        return max(1, math.ceil(times[0] + WINDOW - now))

    def _failed(self, client: str) -> None:
        """Count a failed login from C{client}."""
        if self.maxFailures <= 0:
            return
        now = self._reactor.seconds()
        # Least recently failed first: forget those whose last failure has left the window.
        while self._failures:
            oldest, times = next(iter(self._failures.items()))
            if times[-1] > now - WINDOW:
                break
            del self._failures[oldest]
        times = self._failures.pop(client, deque(maxlen=self.maxFailures))
        times.append(now)
        self._failures[client] = times
        while len(self._failures) > self._maxAddresses:
            self._failures.popitem(last=False)
        if len(times) == self.maxFailures:
            self._log.warn(
                "Throttling {client}: {count} failed logins in {window:.0f} s",
                client=client,
                count=len(times),
                window=WINDOW,
            )


__all__ = ["MAX_ADDRESSES", "METHOD", "WINDOW", "BasicAuth"]
