"""
Closing a connection the proxy has answered before reading the request to
its end, so that the client reads the answer rather than a reset.

Closing a socket with unread bytes in its receive buffer makes the kernel
send a TCP reset, and a client still sending its body when the reset comes
(Python's C{http.client}, C{requests}, C{curl} without C{Expect}) usually
never reads the 413 already on its way: it reports "connection reset".  So,
as nginx's lingering close does, the answer ends with a FIN where the
transport can half-close (L{stproxy.http.channel}), and what the client
still sends is read and thrown away until it closes the connection itself
(it has read the answer), until the body it declared has all arrived, or
until a bound in bytes or in time is reached; only then is the connection
closed, and aborted if that close does not end in time (a TLS client that
never sends its C{close_notify}: L{stproxy.http.timeouts}).
The bounds keep a client from holding the connection (or the bandwidth) for
longer than it takes to finish an honest upload's last few megabytes.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: At most this many bytes are read and discarded after an answer.
LINGER_BYTES = 8 * 1024 * 1024

#: And for at most this many seconds.
LINGER_SECONDS = 5.0


class Linger:
    """
    What is left to discard on one connection before it is closed.

    @ivar remaining: bytes still to read and discard before closing.
    @ivar done: the connection was closed (or lost); nothing more to do.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        close: Callable[[], None],
        expected: int | None = None,
        seconds: float = LINGER_SECONDS,
    ) -> None:
        """
        @param close: closes the connection (once, when the lingering ends).
        @param expected: how many more bytes the client declared it would
            send (the rest of a C{Content-Length} body), if known.
        @param seconds: the bound in time (the connection cap's refusals
            have a shorter one).
        """
        self._reactor = reactor
        self._close = close
        self._seconds = seconds
        self.remaining = LINGER_BYTES if expected is None else min(expected, LINGER_BYTES)
        self.done = False
        self._started = False
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        """The answer is written: close once the client is done sending, or at the bounds."""
        if self._started or self.done:
            return
        self._started = True
        if self.remaining <= 0:
            self._finish()
        else:
            self._timer = self._reactor.callLater(self._seconds, self._finish)

    def discard(self, size: int) -> None:
        """C{size} more bytes arrived, and were thrown away."""
        self.remaining -= size
        if self._started and self.remaining <= 0:
            self._finish()

    def stop(self) -> None:
        """The connection is gone: stop waiting."""
        self.done = True
        self._cancel()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._cancel()
        self._close()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


__all__ = ["Linger", "LINGER_BYTES", "LINGER_SECONDS"]
