"""
The configuration of authentication: which steps run (L{stproxy.auth.gate})
and the identity headers they fill (L{stproxy.auth.identity}).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from twisted.cred.checkers import ICredentialsChecker

from stproxy.auth.forwardauth import ForwardAuthSettings
from stproxy.auth.identity import IdentityHeaders
from stproxy.edge.endpoints import endpointKind


class AuthError(ValueError):
    """An authentication setting that cannot work; the message is one line."""


@dataclass(frozen=True)
class AuthSettings:
    """
    @ivar checkers: what C{--auth} gave (twisted.cred checkers of user
        names and passwords: HTTP Basic for every request); none for no
        password check.
    @ivar maxFailures: failed sign-ins per client address a minute before
        429 (C{--auth-max-failures}).
    @ivar allowInsecure: Basic auth on a plain, non-loopback listener.
    @ivar forward: the external auth service, if any.
    @ivar passthrough: path prefixes routed to the auth service itself, unchecked.
    @ivar userFromCert: the verified client certificate's CN is the user.
    @ivar identity: the identity headers' names.
    """

    checkers: tuple[ICredentialsChecker, ...] = field(default=(), repr=False)
    maxFailures: int = 10
    allowInsecure: bool = False
    forward: ForwardAuthSettings | None = None
    passthrough: tuple[str, ...] = ()
    userFromCert: bool = False
    identity: IdentityHeaders = IdentityHeaders()

    def __post_init__(self) -> None:
        if self.maxFailures < 1:
            raise AuthError("--auth-max-failures must be at least 1")
        if self.passthrough and self.forward is None:
            raise AuthError("--forward-auth-passthrough needs --forward-auth")

    @property
    def enabled(self) -> bool:
        """Whether any step checks requests."""
        return bool(self.checkers) or self.forward is not None or self.userFromCert


def insecureListeners(listen: tuple[str, ...]) -> list[str]:
    """
    The listeners where HTTP Basic credentials would cross a network in
    clear: plain C{tcp:} ones on any interface but loopback (C{ssl:} is
    encrypted, C{unix:} never leaves the machine).
    """
    insecure = []
    for description in listen:
        if endpointKind(description) not in ("tcp", "tcp6"):
            continue
        match = _INTERFACE.search(description)
        interface = match.group(1).replace("\\:", ":") if match else ""
        if not _isLoopback(interface):
            insecure.append(description)
    return insecure


_INTERFACE = re.compile(r"(?:^|:)interface=((?:[^:\\]|\\.)*)")


def _isLoopback(interface: str) -> bool:
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False  # no interface (all of them), or a name


__all__ = ["AuthError", "AuthSettings", "insecureListeners"]
