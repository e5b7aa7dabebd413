"""
Certificate reload: new handshakes get the new certificate, open connections
(WebSockets included) keep the one they started with.

A reload is asked for by SIGHUP (what C{systemctl reload} and certbot's
deploy hook send) or noticed by polling the files' size, time and inode
every few seconds on the reactor (a renewal that nobody signals).  Each
listener's certificate is rebuilt and checked as at start-up
(L{stproxy.edge.certificates.ServerCertificate.reload}); one that fails logs why
and the previous certificate stays in service.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver

from stproxy.edge.certificates import CertificateError, ServerCertificate
from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from stproxy.reactor import ProxyReactor

#: Seconds between checks of the certificate files for changes.
DEFAULT_RELOAD_INTERVAL = 5.0


class TLSService(Service):
    """
    Keeps each TLS listener's certificate current, and says at start what
    an operator must know: which certificate each listener serves, until
    when, and that upstream verification is off if it is.

    It runs in every proxy, TLS or not, so that SIGHUP never ends one.
    A reload happens on SIGHUP (all listeners) and when a listener's files
    change (polled every C{reloadInterval} seconds on the reactor).  A reload
    that fails (a half-written file, a key that does not match yet) logs why
    and leaves the previous certificate in service; a later change is tried again.
    """

    name = "tls"

    def __init__(
        self,
        reactor: ProxyReactor,
        certificates: Mapping[str, ServerCertificate],
        reloadInterval: float = DEFAULT_RELOAD_INTERVAL,
        logObserver: ILogObserver | None = None,
        insecureUpstream: str | None = None,
    ) -> None:
        self._reactor = reactor
        self.certificates = dict(certificates)
        self.reloadInterval = reloadInterval
        self._insecureUpstream = insecureUpstream
        self._log = loggerFor(self, logObserver)
        self._loop: LoopingCall | None = None
        self._previousHandler: Callable[[int, FrameType | None], Any] | int | None = None
        self._handling = False

    def startService(self) -> None:
        super().startService()
        if self._insecureUpstream:
            self._log.warn(
                "Upstream {upstream} TLS certificates are NOT verified (--upstream-insecure);"
                " every problem found will be logged",
                upstream=self._insecureUpstream,
            )
        if not self.certificates:
            # Nothing to reload, but SIGHUP (systemctl reload, a certbot hook
            # aimed at the wrong unit) must not kill the proxy, as its
            # default action would.
            self._installSIGHUP()
            return
        if self.reloadInterval > 0:
            self._loop = LoopingCall(self.checkFiles)
            self._loop.clock = self._reactor
            self._loop.start(self.reloadInterval, now=False)
        self._installSIGHUP()
        # Logged once reloads are armed: from this line on, SIGHUP reloads.
        for listener, certificate in self.certificates.items():
            self._log.info(
                "TLS certificate for {listener}: {subject}, valid until {notAfter}",
                listener=listener,
                subject=certificate.current.subject,
                notAfter=f"{certificate.current.notAfter:%Y-%m-%d %H:%M} UTC",
            )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._restoreSIGHUP()

    def reloadAll(self, why: str = "SIGHUP") -> None:
        """Reload every listener's certificate, each on its own."""
        if not self.certificates:
            self._log.info("{why}: no TLS certificates to reload", why=why)
        for listener, certificate in self.certificates.items():
            self._reload(listener, certificate, why)

    def checkFiles(self) -> None:
        """Reload the listeners whose files changed since they were last loaded or tried."""
        for listener, certificate in self.certificates.items():
            if certificate.changedOnDisk():
                self._reload(listener, certificate, "files changed")

    def _reload(self, listener: str, certificate: ServerCertificate, why: str) -> None:
        try:
            loaded = certificate.reload()
        except CertificateError as e:
            self._log.error(
                "TLS certificate reload for {listener} failed ({why}); still serving"
                " {subject}: {reason}",
                listener=listener,
                why=why,
                subject=certificate.current.subject,
                reason=str(e),
            )
            return
        self._log.info(
            "TLS certificate reloaded for {listener} ({why}): {subject}, valid until {notAfter}",
            listener=listener,
            why=why,
            subject=loaded.subject,
            notAfter=f"{loaded.notAfter:%Y-%m-%d %H:%M} UTC",
            fingerprint=loaded.fingerprint,
        )

    def _installSIGHUP(self) -> None:
        """
        Handle SIGHUP by reloading, passing it on to any handler already there.

        Python only lets the main thread set signal handlers; elsewhere (an
        embedding program's thread) only the file check reloads.
        """
        mainThread = threading.current_thread() is threading.main_thread()
        if not hasattr(signal, "SIGHUP") or not mainThread:
            self._log.info("Not handling SIGHUP outside the main thread; only polling the files")
            return
        self._previousHandler = signal.signal(signal.SIGHUP, self._onSIGHUP)
        self._handling = True

    def _onSIGHUP(self, signum: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self.reloadAll, "SIGHUP")
        if callable(self._previousHandler):
            self._previousHandler(signum, frame)

    def _restoreSIGHUP(self) -> None:
        """Put the previous handler back, unless someone replaced ours meanwhile."""
        if self._handling and signal.getsignal(signal.SIGHUP) == self._onSIGHUP:
            previous = self._previousHandler
            signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)
        self._handling = False


__all__ = ["DEFAULT_RELOAD_INTERVAL", "TLSService"]
