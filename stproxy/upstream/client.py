"""
Where Streamlit is, and the HTTP client that reaches it.

Both legs of the proxy share one L{Upstream}: the HTTP resource asks it for
responses, the WebSocket relay asks it for URLs and endpoints.  Nothing here
knows about browsers; it only knows how to talk to one upstream server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse

from stproxy._twisted import UpstreamConnectionPool
from stproxy.config import Timeouts
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.tls import handshakenTLSEndpoint

if TYPE_CHECKING:
    from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint

    from stproxy.reactor import TCPReactor

#: uvicorn (under Streamlit) drops idle keep-alive connections after 5 s; ours
#: must go first, or a request can be written to a connection being closed.
IDLE_CONNECTION_TIMEOUT = 4.0

#: Idle connections to the upstream kept for the next request (Twisted's
#: C{maxPersistentPerHost}; its default is 2, too few for a page loading its
#: assets over six browser connections).  Not a cap on connections open at
#: once: that bound comes from C{--max-connections}, since a client
#: connection holds at most one upstream connection at a time (its HTTP
#: requests are answered one after another; a WebSocket has one upstream
#: leg), so there are never more than the cap, plus these, plus the health
#: check's (L{stproxy.edge.descriptors}).
POOLED_IDLE_CONNECTIONS = 10

#: The largest response head (status line and headers) read from the
#: upstream, in bytes; past it the response fails and the client gets a 502.
#: Streamlit's heads are under 1 KiB; nginx's default buffer for them is 4 or
#: 8 KiB ("upstream sent too big header").  Twisted's client has no limit.
MAX_RESPONSE_HEAD = 64 * 1024

#: The most response header fields taken from the upstream (then 502): the
#: limit twisted.web puts on a client's request (C{HTTPChannel.maxHeaders}).
MAX_RESPONSE_HEADERS = 500

#: The status codes a final response may have.  Twisted's client has read
#: past any 1xx already (an interim answer is not the response), so one that
#: reaches here, like C{0} or C{9999}, is not HTTP.
VALID_STATUS = range(200, 600)


class Upstream:
    """
    The upstream server together with the connections stproxy keeps to it.

    It owns a persistent L{HTTPConnectionPool}; L{close} drops it, and the
    service hierarchy calls that on shutdown.
    """

    def __init__(
        self,
        reactor: TCPReactor,
        address: UpstreamAddress,
        timeouts: Timeouts = Timeouts(),
        agent: IAgent | None = None,
        tlsPolicy: IPolicyForHTTPS | None = None,
    ) -> None:
        """
        @param agent: the agent requests go through; by default an L{Agent}
            on this upstream's own pool.  Tests pass a fake here.
        @param tlsPolicy: how an C{https} upstream is verified, for both legs
            (L{stproxy.upstream.tls}); by default the platform's trust store
            and the host name, as a browser checks.
        """
        self.reactor = reactor
        self.address = address
        self.timeouts = timeouts
        self.tlsPolicy = tlsPolicy if tlsPolicy is not None else BrowserLikePolicyForHTTPS()
        self._pool = UpstreamConnectionPool(reactor, maxHeadSize=MAX_RESPONSE_HEAD)
        self._pool.maxPersistentPerHost = POOLED_IDLE_CONNECTIONS
        # Twisted infers int from its default (240); the pool passes it to callLater.
        self._pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT  # type: ignore[assignment]
        if agent is None:
            agent = Agent(
                reactor,
                contextFactory=self.tlsPolicy,
                connectTimeout=timeouts.connect,
                pool=self._pool,
            )
        self._agent = agent

    def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: IBodyProducer | None,
    ) -> Deferred[IResponse]:
        """
        Send one request upstream and fire with the response once its headers
        have arrived; the body is left for the caller to stream.

        This goes to the L{Agent} that C{treq.HTTPClient} would wrap, not
        through C{HTTPClient.request}: that method always adds a cookie jar
        (which would hand one user's cookies to the next) and a gzip decoder
        (which appends its own C{Accept-Encoding}, inflates the body and drops
        C{Content-Encoding} and C{Content-Length}), and a proxy must pass all of
        those through untouched.  Everything else treq layers on (redirects,
        buffering) is exactly what a proxy must not do either.

        The response timeout cancels the request if no response headers
        arrive in time; the failure is then L{ResponseTimeout}.  A response
        that is not one a browser may be given (L{checkedResponse}) fails with
        L{InvalidResponse}.
        """
        # maybeDeferred: Agent raises some errors (a URI it refuses) at once.
        d = maybeDeferred(self._agent.request, method, self.address.httpURL(target), headers, body)
        d.addCallback(checkedResponse)
        timedOut: list[bool] = []

        def onTimeout() -> None:
            timedOut.append(True)
            d.cancel()

        call = self.reactor.callLater(self.timeouts.response, onTimeout)

        def done(result: object) -> object:
            if call.active():
                call.cancel()
            if timedOut and isinstance(result, Failure):
                return Failure(ResponseTimeout(self.timeouts.response))
            return result

        return d.addBoth(done)

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint for one new connection to the upstream (the
        WebSocket leg): over TLS, verified by the same policy as the HTTP leg,
        for an C{https} upstream.
        """
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, self.address.host, self.address.port, timeout=self.timeouts.connect
        )
        if self.address.isTLS:
            host = self.address.host.encode("idna")
            creator = self.tlsPolicy.creatorForNetloc(host, self.address.port)
            endpoint = handshakenTLSEndpoint(creator, endpoint)
        return endpoint

    def close(self) -> Deferred[None]:
        """Drop every idle pooled connection; fires when they are closed."""
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


def checkedResponse(response: IResponse) -> IResponse:
    """
    C{response} if its status and number of header fields are those of an
    HTTP response; otherwise its connection is closed (nothing more is read
    from it) and L{InvalidResponse} says why.
    """
    problem = None
    if response.code not in VALID_STATUS:
        problem = f"status {response.code} is not a final HTTP status"
    else:
        fields = sum(len(values) for _, values in response.headers.getAllRawHeaders())
        if fields > MAX_RESPONSE_HEADERS:
            problem = f"{fields} header fields, over {MAX_RESPONSE_HEADERS}"
    if problem is None:
        return response
    discard = _Discard()
    response.deliverBody(discard)
    if discard.transport is not None:  # stopping the body closes its connection
        discard.transport.stopProducing()
    raise InvalidResponse(problem)


class _Discard(Protocol):
    """Takes a response body only to get hold of the connection it comes over."""

    # What Twisted delivers a body through (Protocol says ITransport).
    transport: IPushProducer | None  # type: ignore[assignment]


class InvalidResponse(Exception):
    """The upstream answered with something a browser must not be given."""


class ResponseTimeout(Exception):
    """The upstream accepted the request but sent no response headers in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no response within {seconds:g} s")
        self.seconds = seconds


__all__ = [
    "POOLED_IDLE_CONNECTIONS",
    "MAX_RESPONSE_HEAD",
    "MAX_RESPONSE_HEADERS",
    "InvalidResponse",
    "ResponseTimeout",
    "Upstream",
    "checkedResponse",
]
