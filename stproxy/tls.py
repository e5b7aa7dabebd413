"""
The TLS edge: everything TLS about one proxy, assembled from its options.

  - L{TLSEdge} reads the C{--tls-*}, C{--redirect-http}, C{--hsts} and
    C{--upstream-*} flags and every C{ssl:} listener (L{stproxy.endpoints}),
    loading and checking each certificate (L{stproxy.certificates}) while the
    options are parsed, so a bad file is a one-line usage error, not a traceback;
  - L{TLSService} (L{stproxy.reload}) keeps certificates current: on SIGHUP,
    and when the files change on disk, each listener's certificate is
    reloaded for new handshakes while open connections keep theirs;
  - L{clientCertificateSubject} tells the rest of stproxy who a client
    certificate (C{--tls-client-ca}) was issued to.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import ISSLTransport, IStreamServerEndpoint
from twisted.logger import ILogObserver
from twisted.web.iweb import IPolicyForHTTPS

from stproxy.certificates import MIN_VERSIONS, CertificateError, ServerCertificate
from stproxy.endpoints import (
    SSLDescription,
    checkPlainDescription,
    isSSLDescription,
    listenerEndpoint,
    listeningService,
)
from stproxy.redirect import RedirectToHTTPS
from stproxy.reload import DEFAULT_RELOAD_INTERVAL, TLSService
from stproxy.site import ProxySite
from stproxy.upstreamtls import trustRootFromFile, upstreamPolicy

#: Flags that mean nothing without a TLS listener; given alone they are a mistake.
_NEEDS_TLS_LISTENER = (
    "tls-cert",
    "tls-key",
    "tls-ca",
    "tls-client-ca",
    "redirect-http",
    "redirect-port",
    "hsts",
)


@dataclass
class TLSEdge:
    """
    What the TLS flags and C{ssl:} listeners of one proxy amount to.

    @ivar certificates: the loaded certificate of each C{ssl:} listener, by
        its C{--listen} description.
    @ivar reloadInterval: seconds between checks of the files; 0 = SIGHUP only.
    @ivar redirect: the C{--redirect-http} listen description.
    @ivar redirectPort: the HTTPS port redirects name (C{--redirect-port}),
        when the TLS listener is published on another port than it binds
        (a container's 8443 published as 443); by default the listener's own.
    @ivar hsts: C{Strict-Transport-Security} max-age for TLS responses.
    """

    certificates: dict[str, ServerCertificate] = field(default_factory=dict)
    reloadInterval: float = DEFAULT_RELOAD_INTERVAL
    redirect: str | None = None
    redirectPort: int | None = None
    acmeWebroot: str | None = None
    hsts: int | None = None
    upstreamCA: str | None = None
    upstreamInsecure: bool = False

    @classmethod
    def fromOptions(cls, options: Mapping[str, Any]) -> TLSEdge:
        """
        Check and load everything TLS in parsed options (C{listen} already a
        list of descriptions, C{upstream} an L{UpstreamAddress}).

        @raise ValueError: a one-line message naming the flag and the problem.
        """
        minVersion = str(options.get("tls-min-version") or "1.2")
        if minVersion not in MIN_VERSIONS:
            raise ValueError(f"--tls-min-version {minVersion}: choose 1.2 or 1.3")
        certificates = {}
        for description in options["listen"]:
            if not isSSLDescription(description):
                continue
            try:
                files = SSLDescription.parse(description).files(
                    cert=options.get("tls-cert"),
                    key=options.get("tls-key"),
                    extraChain=options.get("tls-ca"),
                    clientCA=options.get("tls-client-ca"),
                    minVersion=minVersion,
                )
                certificates[description] = ServerCertificate(files)
            except ValueError as e:  # CertificateError included
                raise ValueError(f"--listen {description}: {e}") from None
        if not certificates:
            for name in _NEEDS_TLS_LISTENER:
                if options.get(name) is not None:
                    raise ValueError(f"--{name} needs a TLS listener, such as --listen ssl:8443")
        edge = cls(certificates, redirect=options.get("redirect-http"))
        edge._checkNumbers(options)
        edge._checkRedirect(options.get("acme-webroot"), options.get("redirect-port"))
        edge._checkUpstream(options)
        return edge

    def _checkNumbers(self, options: Mapping[str, Any]) -> None:
        interval = options.get("tls-reload-interval")
        if interval is not None:
            try:
                self.reloadInterval = float(interval)
                if not 0 <= self.reloadInterval < math.inf:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--tls-reload-interval {interval}: must be 0 (off) or a number of seconds"
                ) from None
        hsts = options.get("hsts")
        if hsts is not None:
            if not str(hsts).isdigit():
                raise ValueError(f"--hsts {hsts}: must be a whole number of seconds")
            self.hsts = int(hsts)

    def _checkRedirect(self, acmeWebroot: str | None, port: str | None = None) -> None:
        if port is not None:
            if self.redirect is None:
                raise ValueError("--redirect-port needs --redirect-http")
            if not (str(port).isascii() and str(port).isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"--redirect-port {port}: must be a port number 1-65535")
            self.redirectPort = int(port)
        if self.redirect is not None:
            if isSSLDescription(self.redirect):
                raise ValueError(
                    f"--redirect-http {self.redirect}: must be a plain listener, like tcp:80"
                )
            try:
                checkPlainDescription(self.redirect)
            except ValueError as e:
                raise ValueError(f"--redirect-http {self.redirect}: {e}") from None
        if acmeWebroot is not None:
            if self.redirect is None:
                raise ValueError("--acme-webroot needs --redirect-http (the port 80 listener)")
            if not os.path.isdir(acmeWebroot):
                raise ValueError(f"--acme-webroot {acmeWebroot}: not a directory")
            self.acmeWebroot = acmeWebroot

    def _checkUpstream(self, options: Mapping[str, Any]) -> None:
        self.upstreamCA = options.get("upstream-ca")
        self.upstreamInsecure = bool(options.get("upstream-insecure"))
        upstream = options["upstream"]
        given = {"upstream-ca": self.upstreamCA, "upstream-insecure": self.upstreamInsecure}
        for name, value in given.items():
            if value and not upstream.isTLS:
                raise ValueError(f"--{name} is for an https:// upstream, not {upstream}")
        if self.upstreamCA:
            try:
                trustRootFromFile(self.upstreamCA)
            except CertificateError as e:
                raise ValueError(f"--upstream-ca: {e}") from None

    def endpoint(self, reactor: Any, description: str) -> IStreamServerEndpoint:
        """The endpoint for one C{--listen} description, TLS ones with their certificate."""
        return listenerEndpoint(reactor, description, self.certificates)

    def upstreamPolicy(
        self, address: Any, logObserver: ILogObserver | None = None
    ) -> IPolicyForHTTPS | None:
        """The TLS policy for C{address}, or C{None} if it is plain HTTP."""
        if not address.isTLS:
            return None
        return upstreamPolicy(self.upstreamCA, self.upstreamInsecure, logObserver)

    def services(
        self,
        reactor: Any,
        site: Any,
        listeners: list[Any],
        announce: Callable[[IStreamServerEndpoint, str], Any],
        upstream: str,
        logObserver: ILogObserver | None = None,
    ) -> list[IService]:
        """
        The services to run beside the main listeners: the redirect listener,
        if any, and the L{TLSService} (certificate reload, and SIGHUP handled
        even when there is nothing to reload).

        @param site: the proxy's site (its body limit applies to the redirect too).
        @param listeners: the main listeners' announced endpoints, whose first
            TLS one gives the port redirects point to.
        @param announce: wraps an endpoint so it logs where it listens.
        """
        services: list[IService] = []
        if self.redirect is not None:
            tls = next(e for e in listeners if e.description in self.certificates)

            def httpsPort() -> int | None:
                if self.redirectPort is not None:
                    return self.redirectPort
                return tls.port.getHost().port if tls.port is not None else None

            redirectSite = ProxySite(
                RedirectToHTTPS(httpsPort, self.acmeWebroot),
                reactor,
                maxBodySize=getattr(site, "maxBodySize", 0),
                logObserver=logObserver,
            )
            redirectSite.displayTracebacks = False
            endpoint = announce(
                serverFromString(reactor, self.redirect), f"{self.redirect}, redirecting to HTTPS"
            )
            services.append(listeningService(endpoint, redirectSite, "redirect-http"))
        insecure = upstream if self.upstreamInsecure else None
        services.append(
            TLSService(reactor, self.certificates, self.reloadInterval, logObserver, insecure)
        )
        return services


def peerCertificateSubject(transport: Any) -> str | None:
    """
    The subject (RFC 4514, e.g. C{CN=alice,O=Example}) of the client
    certificate verified on C{transport}'s TLS handshake, or C{None} when it
    is not TLS or no certificate was verified.
    """
    if transport is None or ISSLTransport(transport, None) is None:
        return None
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    chain = getHandle().get_verified_chain(as_cryptography=True)
    if not chain:
        return None
    return str(chain[0].subject.rfc4514_string())


def clientCertificateSubject(request: Any) -> str | None:
    """
    Who the client certificate of C{request}'s connection was issued to
    (RFC 4514 subject), or C{None} without one.

    Only a certificate the listener's C{--tls-client-ca} verified counts, so
    this can name an authenticated user.  Works for WebSocket upgrades too,
    whose channel has already handed its transport to the relay.
    """
    transport = getattr(request, "transport", None)
    if transport is None:
        transport = getattr(getattr(request, "channel", None), "transport", None)
    return peerCertificateSubject(transport)


__all__ = ["TLSEdge", "TLSService", "clientCertificateSubject", "peerCertificateSubject"]
