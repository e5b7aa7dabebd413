"""
Which client connections and HTTP requests are open, so that stopping the
proxy can wait for them (graceful shutdown) and the metrics can count them.

L{Drain} is told by L{stproxy.http.site.ProxySite} about every HTTP connection and
request.  A connection taken over by the WebSocket relay stops being an HTTP
connection here (the relay's L{stproxy.websocket.RelayResource.closeAll}
ends those).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.logger import ILogObserver

from stproxy.ops.logs import loggerFor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.web.http import HTTPChannel, Request

    from stproxy.ops.metrics import Metrics


class Drain:
    """
    Open HTTP connections and in-flight requests of one site.

    @ivar draining: set once L{drain} was called: new requests are still
        served (a client may already be on a kept-alive connection) but
        their connections close after the response.
    """

    draining = False

    def __init__(
        self,
        reactor: IReactorTime,
        metrics: Metrics,
        logObserver: ILogObserver | None = None,
    ) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self._log = loggerFor(self, logObserver)
        self.connections: set[HTTPChannel] = set()
        #: Each request in flight, and the connection (channel) it came on:
        #: twisted.web deletes C{request.channel} when a request finishes.
        self.requests: dict[Request, HTTPChannel] = {}
        self._idle: list[Deferred[None]] = []
        self._deadline: IDelayedCall | None = None

    # Connections (HTTPChannel instances).
    def connectionOpened(self, channel: HTTPChannel) -> None:
        self.connections.add(channel)
        self._metrics.openConnections.inc()

    def connectionClosed(self, channel: HTTPChannel) -> None:
        if channel in self.connections:
            self.connections.discard(channel)
            self._metrics.openConnections.dec()

    # Requests.
    def requestStarted(self, request: Request, channel: HTTPChannel) -> None:
        self.requests[request] = channel

    def requestEnded(self, request: Request) -> None:
        """C{request} finished, failed or was handed to the WebSocket relay."""
        if request not in self.requests:
            return
        channel = self.requests.pop(request)
        if self.draining:
            if channel is not None and channel.transport is not None and not self._busy(channel):
                # No keep-alive while stopping: close after the response is flushed.
                channel.transport.loseConnection()
            if not self.requests:
                self._done()

    def _busy(self, channel: HTTPChannel) -> bool:
        return any(c is channel for c in self.requests.values())

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Stop keeping connections alive and fire once no request is in
        flight; requests still running after C{timeout} seconds have their
        connections aborted.
        """
        self.draining = True
        for channel in list(self.connections):
            # twisted.web's own list of the requests on a connection holds one
            # from its request line on: a request whose headers or body are
            # still arriving (an upload) is in flight too.
            arriving = [r for r in getattr(channel, "requests", ()) if r not in self.requests]
            for request in arriving:
                self.requests[request] = channel
                request.notifyFinish().addBoth(lambda _, r=request: self.requestEnded(r))
            if channel.transport is not None and not self._busy(channel):
                channel.transport.loseConnection()
        if not self.requests:
            return succeed(None)
        self._log.info(
            "Waiting up to {timeout} s for {count} HTTP request(s) in flight",
            timeout=timeout,
            count=len(self.requests),
        )
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        if self._deadline is None:
            self._deadline = self._reactor.callLater(timeout, self._abort)
        return d

    def _abort(self) -> None:
        self._deadline = None
        self._log.warn(
            "Aborting {count} HTTP request(s) still in flight after the shutdown timeout",
            count=len(self.requests),
        )
        for request, channel in list(self.requests.items()):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
            else:
                del self.requests[request]
        if not self.requests:
            self._done()

    def _done(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)


__all__ = ["Drain"]
