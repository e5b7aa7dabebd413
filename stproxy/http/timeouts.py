"""
How long a client connection may take over what it sends: the defence
against slow clients ("slowloris") holding connections for nothing.

twisted.web has one timer per connection, reset by every byte received, so
a client sending one byte every 59 s holds a connection for ever, and
nothing bounds how long a request head may take.  stproxy replaces it (the
site sets C{timeOut} to C{None}) with one timer per connection that follows
what the connection is doing:

  - waiting for a request on a kept-alive connection: C{idleTimeout}
    (default 75 s, nginx's C{keepalive_timeout}: longer than a load
    balancer's usual 60 s, so a balancer never reuses a connection stproxy
    is closing; short enough that idle browsers do not fill
    C{--max-connections}).  Then the connection is closed without a word,
    as every server does: nothing was asked;
  - a request head arriving: C{headerTimeout} from its first byte, or from
    the connection's opening for the first request (a TLS handshake
    counts), however often bytes come.  Then 408 if any byte came; a
    connection that sent nothing at all is closed without an answer, since
    browsers open such connections ahead of need and show nothing for them
    (HAProxy's C{http-ignore-probes}, nginx alike);
  - a request body arriving: at least C{minBodyRate} bytes per second on
    average over each C{headerTimeout}-long window, the first starting when
    the head is complete (and at least one byte in each, whatever the rate),
    then 408.  A rate, as Apache's C{mod_reqtimeout} has, rather than nginx's
    "60 s between two reads", which one byte a minute passes: this way a
    connection costs its holder bandwidth, not just a socket.  1 KB/s is
    below any real uplink (2G moves several), and the window forgives the
    stalls of a mobile link;
  - a request being answered, a connection handed to the WebSocket relay,
    a refused one lingering: no timer here.  The upstream exchange has its
    own (C{--upstream-timeout}), WebSockets their pings, lingering its
    bounds in bytes and time, which end in a close.

A close is not the end of a connection: TCP's waits for the client to read
what is left to send, and TLS's also waits for the client's C{close_notify},
which a silent client never sends.  So every close the channel makes (an
idle one, the end of a lingering, an exchange cut short) is aborted if the
connection is not gone L{ABORT_TIMEOUT} seconds later (L{closed}), as
twisted.web's C{abortTimeout} does for its own.  A connection closing after
its response (C{Connection: close}, HTTP/1.0) gets C{idleTimeout} instead,
for the client to read the end of it: twisted.web sets no timer there, and
a client reading nothing held it for ever.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from stproxy.config import ClientLimits

#: What the connection is doing, for L{RequestTimer.phase}.
FIRST, IDLE, HEAD, BODY, OFF, CLOSING = "first", "idle", "head", "body", "off", "closing"

#: Seconds a connection closed for being idle may take to go before it is aborted
#: (twisted.web's C{HTTPChannel.abortTimeout}).
ABORT_TIMEOUT = 15.0


class RequestTimer:
    """
    The one timer of one client connection, following what it is doing
    (see the module docstring); its channel says what happens.

    @ivar phase: one of C{FIRST} (waiting for the first request), C{IDLE},
        C{HEAD}, C{BODY}, C{OFF} (answering, handed over or refused) and
        C{CLOSING} (closed, or closing after its response: waiting to be gone).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        limits: ClientLimits,
        close: Callable[[], None],
        abort: Callable[[], None],
        timedOut: Callable[[str], None],
    ) -> None:
        """
        @param close: closes the connection without a word (idle).
        @param abort: drops it (a close that did not end in time).
        @param timedOut: answers the request being read with a 408 and the
            reason, and closes the connection.
        """
        self._reactor = reactor
        self._limits = limits
        self._close = close
        self._abort = abort
        self._timedOut = timedOut
        self._call: IDelayedCall | None = None
        self._received = 0  # in the current body window
        self._window = max(1, int(limits.minBodyRate * limits.headerTimeout))
        self.phase = OFF

    def connected(self) -> None:
        """The connection is open: its first request head has C{headerTimeout}."""
        self._schedule(FIRST, self._limits.headerTimeout, self._headExpired)

    def requestDone(self) -> None:
        """A response is complete and the connection kept alive: wait for the next request."""
        self._schedule(IDLE, self._limits.idleTimeout, self._idleExpired)

    def closing(self) -> None:
        """A response is complete and the connection closing: the client has C{idleTimeout} to read it."""
        self._schedule(CLOSING, self._limits.idleTimeout, self._abort)

    def closed(self) -> None:
        """
        The connection is being closed: abort it unless gone within
        L{ABORT_TIMEOUT}, or within the deadline L{closing} already set.
        """
        if self.phase != CLOSING:
            self._schedule(CLOSING, ABORT_TIMEOUT, self._abort)

    def received(self, size: int) -> None:
        """C{size} bytes arrived from the client."""
        if self.phase == BODY:
            self._received += size
        elif self.phase == IDLE and size:
            self._schedule(HEAD, self._limits.headerTimeout, self._headExpired)
        elif self.phase == FIRST and size:
            self.phase = HEAD  # the deadline stays where the connection opened

    def headReceived(self) -> None:
        """The head is complete; a body may follow (or L{stop} comes at once)."""
        self._received = 0
        self._schedule(BODY, self._limits.headerTimeout, self._windowEnded)

    def stop(self) -> None:
        """No timer until L{requestDone}: the request is being answered, or the connection is gone."""
        self._schedule(OFF, None, None)

    def _schedule(
        self, phase: str, seconds: float | None, expired: Callable[[], None] | None
    ) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.phase = phase
        if seconds is not None and expired is not None:
            self._call = self._reactor.callLater(seconds, expired)

    def _idleExpired(self) -> None:
        self._call = None
        self._schedule(CLOSING, ABORT_TIMEOUT, self._abort)
        self._close()

    def _headExpired(self) -> None:
        self._call = None
        if self.phase == FIRST:  # not one byte: no request to answer
            self._idleExpired()
            return
        self.stop()
        seconds = self._limits.headerTimeout
        self._timedOut(f"The request head did not arrive within {seconds:g} s.")

    def _windowEnded(self) -> None:
        self._call = None
        if self._received >= self._window:
            self.headReceived()  # the next window
            return
        self.stop()
        rate, seconds = self._limits.minBodyRate, self._limits.headerTimeout
        if rate:
            self._timedOut(f"The request body came slower than {rate} bytes/s over {seconds:g} s.")
        else:
            self._timedOut(f"No byte of the request body came for {seconds:g} s.")


__all__ = ["RequestTimer", "ABORT_TIMEOUT", "FIRST", "IDLE", "HEAD", "BODY", "OFF", "CLOSING"]
