"""
The WebSocket leg's TLS connect to an C{https://} upstream (stproxy.upstream.tls): it succeeds
only once the handshake is done, fails with the handshake's reason, and can be cancelled.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.protocol import Factory


class _FakeTLSEndpoint:
    """Stands for wrapClientTLS(...): hands out the factory, and a Deferred the test fires."""

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.connecting = Deferred()
        self.factory = None

    def connect(self, factory):
        self.factory = factory
        return self.connecting


class _FakeTLSTransport:
    def __init__(self) -> None:
        self.aborted = False
        self.wrappedProtocol = None

    def getPeer(self):
        return "peer"

    def abortConnection(self) -> None:
        self.aborted = True


def _handshaken():
    from twisted.internet.protocol import Protocol

    from stproxy.upstream.tls import _HandshakenEndpoint

    fake = _FakeTLSEndpoint()
    made = []

    class Real(Protocol):
        def connectionMade(self) -> None:
            made.append(self)

    done = _HandshakenEndpoint(fake).connect(Factory.forProtocol(Real))
    return fake, done, made


def test_tls_connect_fires_only_after_the_handshake() -> None:
    """The WebSocket leg's protocol starts (and sends its upgrade) only over a verified connection."""
    fake, done, made = _handshaken()
    placeholder = fake.factory.buildProtocol(None)
    transport = _FakeTLSTransport()
    placeholder.makeConnection(transport)
    fake.connecting.callback(placeholder)
    assert not done.called and made == []
    placeholder.handshakeCompleted()
    [real] = made
    assert done.result is real and transport.wrappedProtocol is real and real.transport is transport


def test_tls_connect_fails_with_the_handshakes_reason() -> None:
    """
    A TLS handshake that fails makes the connect fail with the handshake's error, and the
    protocol is never started.
    """
    from twisted.python.failure import Failure

    fake, done, made = _handshaken()
    placeholder = fake.factory.buildProtocol(None)
    placeholder.makeConnection(_FakeTLSTransport())
    placeholder.connectionLost(Failure(SSL.Error("certificate verify failed")))
    failures = []
    done.addErrback(failures.append)
    assert failures[0].check(SSL.Error) and made == []


def test_cancelling_a_tls_connect_aborts_it_at_any_stage() -> None:
    """
    Cancelling the connect, while TCP connects or during the handshake, fails it with
    CancelledError and aborts any connection made.
    """
    from twisted.internet.defer import CancelledError

    for stage in ("tcp", "handshake"):
        fake, done, made = _handshaken()
        transport = _FakeTLSTransport()
        if stage == "handshake":
            placeholder = fake.factory.buildProtocol(None)
            placeholder.makeConnection(transport)
            fake.connecting.callback(placeholder)
        failures = []
        done.addErrback(failures.append)
        done.cancel()
        assert failures[0].check(CancelledError), stage
        assert transport.aborted == (stage == "handshake")
        if stage == "tcp":
            assert fake.connecting.called  # cancelled (its own CancelledError, handled above)
            fake.connecting.addErrback(lambda f: None)
