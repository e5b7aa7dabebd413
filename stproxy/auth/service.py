"""
Authentication while the proxy runs: password files watched for changes,
and the auth service's connections closed when the proxy stops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from stproxy.auth.htpasswd import HtpasswdChecker

if TYPE_CHECKING:
    from twisted.cred.checkers import ICredentialsChecker
    from twisted.logger import ILogObserver

    from stproxy.auth.forwardauth import ForwardAuth
    from stproxy.reactor import ProxyReactor


class AuthService(Service):
    """Starts and stops what the authentication steps hold."""

    name = "auth"

    def __init__(
        self,
        reactor: ProxyReactor,
        checkers: tuple[ICredentialsChecker, ...],
        forward: ForwardAuth | None,
        logObserver: ILogObserver | None = None,
        reloadInterval: float = 5.0,
    ) -> None:
        """@param reloadInterval: seconds between checks of the password files for changes."""
        self._reactor = reactor
        self._files = [c for c in checkers if isinstance(c, HtpasswdChecker)]
        self._forward = forward
        self._log = logObserver
        self._interval = reloadInterval

    def startService(self) -> None:
        super().startService()
        for checker in self._files:
            checker.start(self._reactor, self._interval, self._log)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for checker in self._files:
            checker.stop()
        return succeed(None) if self._forward is None else self._forward.close()


__all__ = ["AuthService"]
