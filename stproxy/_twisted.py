"""
Every private Twisted API stproxy uses, and why; nothing else in stproxy
touches one.

Each is pinned by C{tests/test__twisted.py}, which fails loudly (naming the
name) if a Twisted release renames, removes or changes it; C{setup.py} caps
Twisted below the next major version so that such a release is a decision.

  - C{twisted.web.http._GenericHTTPChannelProtocol}: the wrapper that
    C{HTTPFactory.buildProtocol} puts around every L{HTTPChannel} (it is what
    switches a TLS connection to HTTP/2 after ALPN).  C{HTTPFactory} has no
    public hook for the channel class, and stproxy's channel must report to
    its drain, so the site builds the same wrapper around its own channel.
  - C{twisted.web.client._HTTP11ClientFactory} and C{HTTPConnectionPool._factory}:
    the pool's per-connection factory, replaced by a quiet one so that every
    new upstream connection does not log "Starting factory".
  - C{StreamServerEndpointService._raiseSynchronously}: what
    C{twisted.application.strports.service} sets so that a listener that
    cannot bind raises from C{privilegedStartService} instead of being logged
    while the process runs on without it.
  - C{ReactorBase._exitSignal}: twistd re-raises the signal that stopped the
    reactor once it has stopped; after a completed graceful drain stproxy
    clears it, so a SIGTERM ends the process with status 0, as service
    managers expect of a clean stop.
  - C{HTTPFactory._openLogFile}: documented as the override point for where
    an access log goes; stproxy's C{--access-log -} is the process's real
    standard output, which twistd has replaced by its log.
  - C{twisted.internet._sslverify.IOpenSSLTrustRoot}: the interface of
    C{platformTrust()} and C{trustRootFromCertificates()}, for annotations
    (no public module re-exports it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http import HTTPChannel, HTTPFactory, _GenericHTTPChannelProtocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IProtocol


def channelProtocol(channel: HTTPChannel) -> IProtocol:
    """
    The protocol twisted.web's own factory would build around C{channel}
    (C{HTTPFactory.buildProtocol} builds it around a plain L{HTTPChannel}).
    """
    protocol: IProtocol = _GenericHTTPChannelProtocol(channel)
    return protocol


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """An L{HTTPConnectionPool} that does not log "Starting factory" per new connection."""

    _factory = _QuietClientFactory


def raiseBindErrorsAtStart(service: StreamServerEndpointService) -> None:
    """
    Make C{service.privilegedStartService} raise when its endpoint cannot
    listen (a busy port), as C{strports.service} arranges.
    """
    service._raiseSynchronously = True


def forgetExitSignal(reactor: object) -> None:
    """
    Let a process whose reactor was stopped by a signal exit normally: twistd
    would re-raise that signal after the reactor stops.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None  # type: ignore[attr-defined]


class _StandardOutput:
    """
    An access log file that is the process's real standard output (twistd
    replaces C{sys.stdout} with its log), flushed per line and never closed.
    """

    def write(self, line: str) -> None:
        stream = sys.__stdout__
        if stream is not None:
            stream.write(line)
            stream.flush()

    def flush(self) -> None:
        if sys.__stdout__ is not None:
            sys.__stdout__.flush()

    def close(self) -> None:
        pass


class StandardOutputLogMixin:
    """
    Mixed into an L{HTTPFactory} (a L{Site}) before it: a C{logPath} of
    C{"-"} writes the access log to the process's real standard output.
    """

    def _openLogFile(self, path: str | bytes) -> Any:
        if path in ("-", b"-"):
            return _StandardOutput()
        return HTTPFactory._openLogFile(self, path)  # type: ignore[arg-type]


__all__ = [
    "IOpenSSLTrustRoot",
    "QuietConnectionPool",
    "StandardOutputLogMixin",
    "channelProtocol",
    "forgetExitSignal",
    "raiseBindErrorsAtStart",
]
