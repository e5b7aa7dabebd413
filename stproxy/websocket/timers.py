"""
L{ReactorTimer}: the timer Autobahn's factories schedule their connections'
timeouts and auto-pings on, run on the reactor the proxy was given (installed
by L{stproxy._autobahn.useReactorTimer}, which holds the private name).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class ReactorTimer:
    """
    Stands in for the batched timer Autobahn's factories keep in
    C{_batched_timer} (open/close handshake timeouts, auto-ping).

    Autobahn's own batches timers into buckets of whole seconds on the global
    reactor, truncating: a 0.2 s ping interval then fires either at once
    (a ping after every pong) or at the next full second.  This one calls
    C{callLater} on the reactor given, to the millisecond, and its calls may
    be cancelled after they ran.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor

    def call_later(
        self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> _Call:
        return _Call(self._reactor.callLater(delay, func, *args, **kwargs))


class _Call:
    """A delayed call whose C{cancel} is harmless once it ran or was cancelled."""

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()

    def getTime(self) -> float:
        """When the call is due, in the reactor's seconds."""
        return self._call.getTime()


__all__ = ["ReactorTimer"]
