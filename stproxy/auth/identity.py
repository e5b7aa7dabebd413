"""
The headers that tell Streamlit who a request is from, and what Streamlit
must be configured with to read them.

Streamlit (1.49 and later) fills C{st.user} from the request headers named
in its C{server.trustedUserHeaders} option, on the WebSocket handshake, and
believes whoever sent them.  So stproxy removes every copy of these headers
a client sends, on every request and handshake, whether or not any
authentication is configured (a proxy that only adds them would let a
browser that sends its own be anyone), and sets them only from what its own
authentication established.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from twisted.web.http_headers import Headers

from stproxy.auth.verdict import Identity

#: The C{st.user} keys stproxy can fill, in the order they are printed.
KEYS = ("user", "email", "groups")


@dataclass(frozen=True)
class IdentityHeaders:
    """
    The names of the identity headers stproxy manages.

    @ivar user: carries the authenticated user name.
    @ivar email: the user's e-mail address, when the source knows it.
    @ivar groups: the user's groups, comma-separated, when known.
    @ivar clientCert: the verified client certificate's subject (RFC 4514).
    @ivar copied: further headers an auth service's answer names
        (C{--forward-auth-headers}), passed upstream as it gave them.
    """

    user: str = "X-Forwarded-User"
    email: str = "X-Forwarded-Email"
    groups: str = "X-Forwarded-Groups"
    clientCert: str = "X-Forwarded-Client-Cert"
    copied: tuple[str, ...] = ()

    @cached_property
    def managed(self) -> frozenset[bytes]:
        """Every header name stproxy alone may set, lower-case (once: every request asks)."""
        names = (self.user, self.email, self.groups, self.clientCert, *self.copied)
        return frozenset(name.lower().encode("ascii") for name in names)

    def strip(self, headers: Headers) -> None:
        """Remove every managed header from C{headers}, in place, whatever its case or count."""
        for name in self.managed:
            headers.removeHeader(name)

    def upstream(
        self,
        identity: Identity,
        subject: str | None = None,
        extra: tuple[tuple[bytes, bytes], ...] = (),
    ) -> tuple[tuple[bytes, bytes], ...]:
        """
        The headers to add to a request going upstream: C{identity}'s
        fields under their names, the certificate C{subject}, and C{extra}
        (an auth service's own headers), values that cannot be a header line
        (a line break) left out.
        """
        names = {"user": self.user, "email": self.email, "groups": self.groups}
        pairs = [(names[key], identity[key]) for key in KEYS if identity.get(key)]
        if subject is not None:
            pairs.append((self.clientCert, subject))
        added = [(name.encode("ascii"), value.encode("utf-8")) for name, value in pairs]
        added.extend(extra)
        return tuple((name, value) for name, value in added if _isFieldValue(value))

    def streamlitConfig(self) -> str:
        """
        The C{.streamlit/config.toml} lines that make Streamlit read these
        headers into C{st.user}: C{st.user.user}, C{st.user.email} and
        C{st.user.groups}.
        """
        mapping = {self.user: "user", self.email: "email", self.groups: "groups"}
        table = ", ".join(
            f"{json.dumps(name)} = {json.dumps(key)}" for name, key in mapping.items()
        )
        return f"[server]\ntrustedUserHeaders = {{ {table} }}\n"


def _isFieldValue(value: bytes) -> bool:
    return b"\r" not in value and b"\n" not in value and b"\0" not in value


__all__ = ["IdentityHeaders", "KEYS"]
