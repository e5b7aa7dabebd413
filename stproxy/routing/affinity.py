"""
The affinity cookie: which replica a browser's Streamlit session lives on.

Streamlit keeps a session in one process, and every request of that session
(the page, the WebSocket, uploads, C{/media/} files, component assets,
C{st.login}'s C{/auth/*} and C{/oauth2callback}) must reach that process.
nginx's C{sticky cookie} and Traefik's sticky sessions do this for any
backend; this one names the replica by an id every stproxy process derives
from its address (L{stproxy.routing.replica.replicaId}) and signs it with
HMAC-SHA256, so that:

  - a browser cannot choose its replica (a forged value does not verify, and
    is treated as no cookie: the browser is pinned afresh);
  - two stproxy processes given the same secret read each other's cookies,
    so stproxy scales out behind any TCP load balancer with no shared state;
  - the cookie holds nothing about the user.

The signed text includes the route's prefix, so an app's cookie (whose
C{Path} is that prefix) is never taken for another's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Sequence

#: The cookie's name unless C{--affinity-cookie} says otherwise.
DEFAULT_COOKIE = "stproxy_replica"

#: Bytes of HMAC-SHA256 kept in the cookie: 128 bits, as many as a forger
#: would have to guess, in 22 characters.
MAC_BYTES = 16

#: The shortest secret accepted from C{--affinity-secret-file}.
MIN_SECRET_BYTES = 16


def randomSecret() -> bytes:
    """A secret for one process: its cookies verify nowhere else."""
    return os.urandom(32)


class Affinity:
    """
    Signs and reads one route's affinity cookie.

    @ivar name: the cookie's name.
    @ivar path: the route's prefix, the cookie's C{Path}.
    """

    def __init__(self, name: str, secret: bytes, path: str) -> None:
        self.name = name
        self.path = path
        self._secret = secret
        self._prefix = name.encode("ascii") + b"="

    def _mac(self, replica: str) -> str:
        text = f"{self.path}\0{replica}".encode("utf-8")
        digest = hmac.new(self._secret, text, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def value(self, replica: str) -> str:
        """The cookie's value naming C{replica}: the id, a dot, its signature."""
        return f"{replica}.{self._mac(replica)}"

    def verify(self, value: str) -> str | None:
        """The replica id C{value} names, if it was signed under this secret for this route."""
        replica, dot, mac = value.partition(".")
        if not dot or not replica:
            return None
        if hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(replica).encode("ascii")):
            return replica
        return None

    def replicaIn(self, cookieHeaders: Sequence[bytes] | None) -> str | None:
        """
        The replica named by the first of this route's cookies in the
        request's C{Cookie} header lines that verifies.  A browser may send
        several cookies of this name (other paths, an older secret); those
        that do not verify are passed over, not an error.
        """
        return self.read(cookieHeaders)[0]

    def read(self, cookieHeaders: Sequence[bytes] | None) -> tuple[str | None, bool]:
        """
        L{replicaIn}, and whether the request carried a cookie of this name
        at all: one that is there but does not verify (forged, or signed
        under another secret) is re-pinned with a log line, where a browser
        with no cookie is simply pinned.
        """
        present = False
        for line in cookieHeaders or ():
            for pair in line.split(b";"):
                pair = pair.strip()
                if pair.startswith(self._prefix):
                    present = True
                    replica = self.verify(pair[len(self._prefix) :].decode("latin-1"))
                    if replica is not None:
                        return replica, True
        return None, present

    def setCookie(self, replica: str, secure: bool) -> bytes:
        """
        The C{Set-Cookie} value pinning a browser to C{replica}: a session
        cookie (it ends with the browser session, as Streamlit's sessions
        do), for this route's path only, never sent cross-site or to scripts.
        """
        attributes = [f"{self.name}={self.value(replica)}", f"Path={self.path}", "HttpOnly"]
        attributes.append("SameSite=Lax")
        if secure:
            attributes.append("Secure")
        return "; ".join(attributes).encode("ascii")


__all__ = ["Affinity", "DEFAULT_COOKIE", "MAC_BYTES", "MIN_SECRET_BYTES", "randomSecret"]
