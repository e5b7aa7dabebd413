"""
From the TLS flags and the C{ssl:} listeners to L{TLSSettings}, with every
certificate loaded and checked once, so a bad file is a one-line error
naming the flag and the file, never a traceback after start-up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from stproxy.config import ConfigError, TLSSettings
from stproxy.edge.certificates import MIN_VERSIONS, CertificateError, loadServerCertificate
from stproxy.edge.endpoints import SSLDescription, isSSLDescription
from stproxy.parse import plainListener, port
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.tls import trustRootFromFile


@dataclass(frozen=True)
class TLSFlags:
    """The text of every TLS flag, as given (C{None} where not given)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    clientCA: str | None = None
    minVersion: str = "1.2"
    reloadInterval: str = "5"
    redirectHTTP: str | None = None
    redirectPort: str | None = None
    acmeWebroot: str | None = None
    hsts: str | None = None
    upstreamCA: str | None = None
    upstreamInsecure: bool = False

    def needingListener(self) -> list[str]:
        """The flags given that mean nothing without a TLS listener."""
        given = {
            "tls-cert": self.cert,
            "tls-key": self.key,
            "tls-ca": self.ca,
            "tls-client-ca": self.clientCA,
            "redirect-http": self.redirectHTTP,
            "redirect-port": self.redirectPort,
            "hsts": self.hsts,
        }
        return [name for name, value in given.items() if value is not None]


def tlsSettings(flags: TLSFlags, listen: tuple[str, ...], upstream: UpstreamAddress) -> TLSSettings:
    """
    Check and load everything TLS.

    @raise ConfigError: a one-line message naming the flag and the problem.
    """
    if flags.minVersion not in MIN_VERSIONS:
        raise ConfigError(f"--tls-min-version {flags.minVersion}: choose 1.2 or 1.3")
    listeners = {}
    for description in listen:
        if not isSSLDescription(description):
            continue
        try:
            files = SSLDescription.parse(description).files(
                cert=flags.cert,
                key=flags.key,
                extraChain=flags.ca,
                clientCA=flags.clientCA,
                minVersion=flags.minVersion,
            )
            loadServerCertificate(files)
        except ValueError as e:  # CertificateError included
            raise ConfigError(f"--listen {description}: {e}") from None
        listeners[description] = files
    if not listeners:
        for name in flags.needingListener():
            raise ConfigError(f"--{name} needs a TLS listener, such as --listen ssl:8443")
    _checkUpstream(flags, upstream)
    return TLSSettings(
        listeners=listeners,
        reloadInterval=_reloadInterval(flags.reloadInterval),
        redirect=_redirect(flags),
        redirectPort=_redirectPort(flags),
        acmeWebroot=_acmeWebroot(flags),
        hsts=_hsts(flags.hsts),
        upstreamCA=flags.upstreamCA,
        upstreamInsecure=flags.upstreamInsecure,
    )


def _reloadInterval(text: str) -> float:
    try:
        value = float(text)
        if not 0 <= value < math.inf:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"--tls-reload-interval {text}: must be 0 (off) or a number of seconds"
        ) from None
    return value


def _hsts(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise ConfigError(f"--hsts {text}: must be a whole number of seconds")
    return int(text)


def _redirectPort(flags: TLSFlags) -> int | None:
    if flags.redirectPort is None:
        return None
    if flags.redirectHTTP is None:
        raise ConfigError("--redirect-port needs --redirect-http")
    return port(flags.redirectPort, "--redirect-port")


def _redirect(flags: TLSFlags) -> str | None:
    description = flags.redirectHTTP
    if description is None:
        return None
    if isSSLDescription(description):
        raise ConfigError(f"--redirect-http {description}: must be a plain listener, like tcp:80")
    return plainListener("--redirect-http", description)


def _acmeWebroot(flags: TLSFlags) -> str | None:
    webroot = flags.acmeWebroot
    if webroot is None:
        return None
    if flags.redirectHTTP is None:
        raise ConfigError("--acme-webroot needs --redirect-http (the port 80 listener)")
    if not os.path.isdir(webroot):
        raise ConfigError(f"--acme-webroot {webroot}: not a directory")
    return webroot


def _checkUpstream(flags: TLSFlags, upstream: UpstreamAddress) -> None:
    given = {"upstream-ca": flags.upstreamCA, "upstream-insecure": flags.upstreamInsecure}
    for name, value in given.items():
        if value and not upstream.isTLS:
            raise ConfigError(f"--{name} is for an https:// upstream, not {upstream}")
    if flags.upstreamCA:
        try:
            trustRootFromFile(flags.upstreamCA)
        except CertificateError as e:
            raise ConfigError(f"--upstream-ca: {e}") from None


__all__ = ["TLSFlags", "tlsSettings"]
