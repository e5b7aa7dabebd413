"""
Certificate reload (stproxy.edge.reload and ServerCertificate.reload): new handshakes get the
new certificate, a broken replacement is refused and the last good one stays, on the reactor's
clock and on SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock

from harness import wait_until
from pki import PKI, files_for, install
from stproxy.edge.certificates import CertificateError, ServerCertificate
from stproxy.edge.reload import TLSService


def test_reload_swaps_the_certificate_for_new_handshakes_only(pki: PKI, tmp_path: Path) -> None:
    """An open connection keeps its certificate; the next handshake gets the new one."""
    first = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"])
    certificate = ServerCertificate(files_for(first))
    old = certificate.serverConnectionForTLS(SimpleNamespace(factory=SimpleNamespace(wrappedFactory=Factory())))
    assert not certificate.changedOnDisk()
    renewed = pki.intermediate.issue(tmp_path / "new", "renewed")
    install(renewed, first)
    assert certificate.changedOnDisk()
    assert certificate.reload().subject == "CN=renewed,O=stproxy tests"
    assert not certificate.changedOnDisk()
    assert old.get_context() is not certificate.current.options.getContext()

    # A key that does not match: refused, and the renewed certificate stays.
    shutil.copy(pki.client.key_path, first.key_path)
    with pytest.raises(CertificateError, match="does not match"):
        certificate.reload()
    assert certificate.current.subject == "CN=renewed,O=stproxy tests"
    assert not certificate.changedOnDisk(), "a failed attempt is not retried until the files change again"


class _Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[tuple] = []

    def callFromThread(self, f, *args) -> None:
        self.fromThread.append((f, args))


def test_reload_service_polls_files_and_handles_sighup(pki: PKI, tmp_path: Path) -> None:
    """
    The service reloads when the files change (on its reactor's clock), logs a failed reload with
    the reason and keeps serving, and while running owns SIGHUP, passing it on to the previous
    handler and putting that back when it stops.
    """
    live = pki.intermediate.issue(tmp_path / "live", "localhost")
    certificate = ServerCertificate(files_for(live))
    reactor, events = _Reactor(), []
    service = TLSService(reactor, {"ssl:8443": certificate}, 5.0, events.append)
    previous_calls = []
    previous = signal.signal(signal.SIGHUP, lambda *args: previous_calls.append(args))
    try:
        service.startService()
        assert "valid until" in events[-1]["log_format"]
        assert signal.getsignal(signal.SIGHUP) == service._onSIGHUP
        install(pki.intermediate.issue(tmp_path / "b", "renewed"), live)
        reactor.advance(5)
        assert certificate.current.subject == "CN=renewed,O=stproxy tests"
        assert events[-1]["log_format"].startswith("TLS certificate reloaded")
        assert events[-1]["why"] == "files changed"

        live.cert_path.write_text("-----BEGIN CERTIFICATE-----\nMIIB")  # half-written
        reactor.advance(5)
        assert events[-1]["log_level"].name == "error"
        assert "no PEM certificate" in events[-1]["reason"]
        assert certificate.current.subject == "CN=renewed,O=stproxy tests"

        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: reactor.fromThread, 5)
        assert reactor.fromThread == [(service.reloadAll, ("SIGHUP",))]
        assert len(previous_calls) == 1, "the earlier SIGHUP handler is chained"
    finally:
        service.stopService()
        restored = signal.getsignal(signal.SIGHUP)
        signal.signal(signal.SIGHUP, previous)
    assert restored is not service._onSIGHUP and restored.__name__ == "<lambda>"
    assert not reactor.getDelayedCalls()
