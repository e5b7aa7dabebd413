"""
C{--redirect-http}: a plain-HTTP listener that sends every browser to the
HTTPS origin (nginx's C{return 308 https://$host$request_uri}).

308 rather than 301 keeps the method and body of a form POST.  The host is
the one the browser asked for, the port that of stproxy's TLS listener
(left out when it is 443), the path and query unchanged.  With
C{--acme-webroot}, the one thing answered here instead is an ACME HTTP-01
challenge file, so C{certbot --webroot} renewals work with this listener
on port 80.
"""

from __future__ import annotations

import os
import re
from typing import Callable

from twisted.web.pages import errorPage
from twisted.web.resource import Resource
from twisted.web.server import Request

from stproxy.http.refusal import hostName

ACME_PREFIX = b"/.well-known/acme-challenge/"
_ACME_TOKEN = re.compile(rb"^[A-Za-z0-9_-]+$")


def httpsLocation(host: bytes, port: int | None, target: bytes) -> bytes:
    """
    The HTTPS URL for C{target} (an origin-form path and query) on C{host}
    (a Host header value, whose port is dropped) at C{port}.

    @raise ValueError: if C{host} is not a host name or address (the same
        rule as for every request the proxy forwards,
        L{stproxy.http.refusal.validHost}, whose characters may all stand
        as they are in a URL's authority).
    """
    netloc = hostName(host)
    if netloc is None:
        raise ValueError(f"not a host: {host!r}")
    if port and port != 443:
        netloc += b":%d" % (port,)
    return b"https://" + netloc + target


class RedirectToHTTPS(Resource):
    """Answers every request with a 308 to the same target on the HTTPS origin."""

    isLeaf = True

    def __init__(self, httpsPort: Callable[[], int | None], acmeWebroot: str | None = None) -> None:
        """
        @param httpsPort: the TLS listener's port, asked per request because a
            listener on port 0 only has one once it listens.
        @param acmeWebroot: the C{--webroot-path} given to certbot, whose
            C{.well-known/acme-challenge/} files are served.
        """
        super().__init__()
        self._httpsPort = httpsPort
        self._acmeWebroot = acmeWebroot

    def render(self, request: Request) -> object:
        target = request.uri if request.uri.startswith(b"/") else b"/"
        if self._acmeWebroot and target.startswith(ACME_PREFIX):
            return self._challenge(request, target[len(ACME_PREFIX) :])
        host = request.getHeader(b"host")
        if host is None:
            # HTTP/1.0 needs no Host: name the address the client reached,
            # which a UNIX socket does not have.
            address = getattr(request.getHost(), "host", "")
            host = (f"[{address}]" if ":" in address else address).encode("ascii")
        try:
            location = httpsLocation(host, self._httpsPort(), target)
        except ValueError:
            page = errorPage(400, "Bad Request", "The Host header is not a host name.")
            return page.render(request)
        request.setResponseCode(308)
        request.setHeader(b"location", location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Moved to " + location + b"\n"

    def _challenge(self, request: Request, token: bytes) -> object:
        """The ACME challenge file named C{token}, or 404; never anything else from disk."""
        path = None
        if _ACME_TOKEN.match(token) and request.method in (b"GET", b"HEAD"):
            path = os.path.join(
                self._acmeWebroot or "", ".well-known", "acme-challenge", token.decode("ascii")
            )
        try:
            if path is None:
                raise FileNotFoundError
            with open(path, "rb") as f:
                body = f.read(65536)
        except OSError:
            return errorPage(404, "Not Found", "No such challenge.").render(request)
        request.setHeader(b"content-type", b"text/plain")
        return body


__all__ = ["RedirectToHTTPS", "httpsLocation"]
