"""
The authentication flags into configuration (L{stproxy.auth.settings}):
C{--auth} as twisted.cred's L{strcred.AuthOptionMixin} gives it (with the
C{htpasswd} checker factory stproxy installs as a Twisted plugin), forward
auth, client certificates, and the identity headers' names.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import (
    AuthOptionMixin,
    InvalidAuthArgumentString,
    InvalidAuthType,
    UnsupportedInterfaces,
    makeChecker,
)
from twisted.python import usage

from stproxy import parse
from stproxy.auth.forwardauth import DEFAULT_COPY_HEADERS, ForwardAuthSettings
from stproxy.auth.identity import IdentityHeaders
from stproxy.auth.settings import AuthError, AuthSettings
from stproxy.config import ConfigError
from stproxy.routing.settings import RoutingError, normalPrefix


class AuthFlags(AuthOptionMixin, dict[str, Any]):
    """
    The authentication flags of L{stproxy.tap.Options} (a mixin, like
    L{stproxy.parseroutes.RoutingFlags}).  C{--auth} takes user names and
    passwords only: every request answers HTTP Basic.
    """

    supportedInterfaces = [IUsernamePassword]

    optParameters = [
        [
            "auth-max-failures",
            None,
            "10",
            "Failed sign-ins per client address a minute before 429 (with --auth)",
        ],
        [
            "forward-auth",
            None,
            None,
            "Ask this URL about every request, as nginx auth_request (oauth2-proxy's"
            " http://HOST:4180/oauth2/auth); 2xx lets it through",
        ],
        [
            "forward-auth-headers",
            None,
            ",".join(DEFAULT_COPY_HEADERS),
            "Headers of the auth service's 2xx answer copied upstream, comma-separated",
        ],
        [
            "forward-auth-signin",
            None,
            None,
            "Where a browser the auth service answers 401 is sent, with rd= the page it wanted",
        ],
        ["forward-auth-cache", None, "0", "Seconds an allowed cookie is remembered; 0 = never"],
        ["forward-auth-timeout", None, "5", "Seconds the auth service has to answer (then 503)"],
        [
            "client-cert-header",
            None,
            "X-Forwarded-Client-Cert",
            "Header carrying the client certificate's subject (RFC 4514) upstream",
        ],
        ["user-from-cert", None, None, "cn: the verified client certificate's CN is the user"],
        ["user-header", None, "X-Forwarded-User", "Header carrying the user upstream"],
        ["email-header", None, "X-Forwarded-Email", "Header carrying the user's e-mail upstream"],
        ["groups-header", None, "X-Forwarded-Groups", "Header carrying the user's groups upstream"],
    ]

    optFlags = [
        [
            "allow-insecure-auth",
            None,
            "Allow --auth on a plain tcp: listener that is not loopback (passwords in clear)",
        ],
        [
            "print-streamlit-config",
            None,
            "Print the .streamlit/config.toml lines that make st.user read stproxy's headers, and exit",
        ],
    ]

    def opt_auth(self, description: str) -> None:
        """
        Require HTTP Basic sign-in against htpasswd:PATH (bcrypt hashes),
        memory:USER:PASSWORD or file:PATH (see --help-auth); repeatable
        """
        kind = description.split(":", 1)[0]
        try:
            self.addChecker(makeChecker(description))
        except InvalidAuthType:
            raise usage.UsageError(
                f"--auth {kind}: no such method (htpasswd:PATH, memory:..., file:...;"
                " see --help-auth)"
            ) from None
        except UnsupportedInterfaces:
            raise usage.UsageError(f"--auth {kind}: does not check user names and passwords")
        except InvalidAuthArgumentString as e:
            raise usage.UsageError(f"--auth {kind}: {e}") from None

    def opt_forward_auth_passthrough(self, prefix: str) -> None:
        """
        Route this path prefix (e.g. /oauth2/) to the auth service itself,
        unchecked: its sign-in pages and callback; repeatable
        """
        self.setdefault("forward-auth-passthrough", []).append(prefix)


def authSettings(flags: dict[str, Any]) -> AuthSettings:
    """The authentication flags, checked, as one L{AuthSettings}."""
    identity = _identity(flags)
    forward = _forward(flags)
    if forward is not None:
        identity = IdentityHeaders(
            identity.user,
            identity.email,
            identity.groups,
            identity.clientCert,
            forward.copyHeaders,
        )
    userFromCert = flags["user-from-cert"]
    if userFromCert not in (None, "cn"):
        raise ConfigError(f"--user-from-cert {userFromCert}: the only choice is cn")
    try:
        passthrough = tuple(
            normalPrefix(prefix) for prefix in flags.get("forward-auth-passthrough", [])
        )
        return AuthSettings(
            checkers=tuple(flags.get("credCheckers", [])),
            maxFailures=parse.flag("auth-max-failures", flags["auth-max-failures"], _failures),
            allowInsecure=bool(flags["allow-insecure-auth"]),
            forward=forward,
            passthrough=passthrough,
            userFromCert=userFromCert == "cn",
            identity=identity,
        )
    except (AuthError, RoutingError) as e:
        raise ConfigError(str(e)) from None


def _failures(text: str) -> int:
    """C{--auth-max-failures}: a whole number of failed sign-ins, at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError("must be a whole number of failed sign-ins, at least 1")
    return int(text)


def _identity(flags: dict[str, Any]) -> IdentityHeaders:
    names = {}
    for flag in ("user-header", "email-header", "groups-header", "client-cert-header"):
        name = str(flags[flag]).strip()
        if not name.isascii() or not name.replace("-", "").isalnum():
            raise ConfigError(f"--{flag} {name!r}: not a header name")
        names[flag] = name
    return IdentityHeaders(
        names["user-header"],
        names["email-header"],
        names["groups-header"],
        names["client-cert-header"],
    )


def _forward(flags: dict[str, Any]) -> ForwardAuthSettings | None:
    url = flags["forward-auth"]
    if url is None:
        return None
    copy = tuple(h.strip() for h in str(flags["forward-auth-headers"]).split(",") if h.strip())
    try:
        return ForwardAuthSettings(
            url=url,
            copyHeaders=copy,
            signin=flags["forward-auth-signin"],
            cacheSeconds=parse.flag(
                "forward-auth-cache", flags["forward-auth-cache"], parse.nonNegativeSeconds
            ),
            timeout=parse.flag(
                "forward-auth-timeout", flags["forward-auth-timeout"], parse.positiveSeconds
            ),
        )
    except ValueError as e:
        raise ConfigError(f"--forward-auth: {e}") from None


def printStreamlitConfig(settings: AuthSettings) -> None:
    """C{--print-streamlit-config}: the lines, on standard output."""
    sys.stdout.write(settings.identity.streamlitConfig())


__all__ = ["AuthFlags", "authSettings", "printStreamlitConfig"]
