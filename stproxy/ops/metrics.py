"""
What stproxy counts, as Prometheus metrics on a registry of its own.

One L{Metrics} is built per proxy and handed to every component that counts
something, like the log observer: no module-level metric and no use of
C{prometheus_client}'s global C{REGISTRY}, so two proxies in one process (or
a test and a proxy) never share numbers.

The WebSocket relay moves tens of thousands of messages a second, so the
children it touches per message are bound once (L{Metrics.relayedMessages},
L{Metrics.relayedBytes}) and the per-message cost is two C{inc()} calls.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

#: Methods counted under their own label; anything else is "other", so a
#: client inventing methods cannot grow the label set without bound.
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)

#: Browser-to-Streamlit and Streamlit-to-browser, the C{direction} label.
UPSTREAM = "to_upstream"
DOWNSTREAM = "to_browser"


def statusClass(code: int) -> str:
    """C{"2xx"} for 200 and so on: the label for a response status."""
    return f"{code // 100}xx" if 100 <= code <= 599 else "other"


def closeCodeLabel(code: int | None) -> str:
    """
    The label for a WebSocket close code: the codes RFC 6455 and IANA
    register (1000-1015) as they are, C{"3xxx"} and C{"4xxx"} for the
    library and application ranges, C{"other"} for the rest and C{"none"}
    for a close without a code.

    Either peer chooses the code it sends, so a label per code would let
    clients grow the label set by thousands of values.
    """
    if code is None:
        return "none"
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


class Metrics:
    """
    Every stproxy metric, on L{registry}.

    @ivar registry: the L{CollectorRegistry} the admin C{/metrics} serves.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = CollectorRegistry() if registry is None else registry
        self.httpRequests = Counter(
            "stproxy_http_requests",
            "HTTP requests answered, by method and status class",
            ["method", "status_class"],
            registry=registry,
        )
        self.httpDuration = Histogram(
            "stproxy_http_request_duration_seconds",
            "Time from a request's arrival to the last byte of its response",
            registry=registry,
        )
        self.httpReceivedBytes = Counter(
            "stproxy_http_received_bytes",
            "Request body bytes received from clients",
            registry=registry,
        )
        self.httpSentBytes = Counter(
            "stproxy_http_sent_bytes",
            "Response body bytes sent to clients",
            registry=registry,
        )
        self.upstreamConnectErrors = Counter(
            "stproxy_upstream_connect_errors",
            "Upstream connections or requests that failed (HTTP 502, WebSocket 502)",
            registry=registry,
        )
        self.upstreamTimeouts = Counter(
            "stproxy_upstream_timeouts",
            "Upstream requests or handshakes that timed out (504)",
            registry=registry,
        )
        self.openConnections = Gauge(
            "stproxy_open_connections",
            "Client HTTP connections open now (WebSockets are counted apart)",
            registry=registry,
        )
        self.openWebSockets = Gauge(
            "stproxy_open_websockets",
            "Relayed WebSocket sessions open now",
            registry=registry,
        )
        self.webSocketsClosed = Counter(
            "stproxy_websocket_sessions_closed",
            "Relayed WebSocket sessions ended, by the close code of the side that closed"
            " (1000-1015, 3xxx, 4xxx, other or none)",
            ["code"],
            registry=registry,
        )
        messages = Counter(
            "stproxy_websocket_messages",
            "WebSocket messages relayed, by direction",
            ["direction"],
            registry=registry,
        )
        relayedBytes = Counter(
            "stproxy_websocket_message_bytes",
            "WebSocket message payload bytes relayed, by direction",
            ["direction"],
            registry=registry,
        )
        #: Pre-bound children, by direction: the relay's hot path.
        self.relayedMessages = {d: messages.labels(direction=d) for d in (UPSTREAM, DOWNSTREAM)}
        self.relayedBytes = {d: relayedBytes.labels(direction=d) for d in (UPSTREAM, DOWNSTREAM)}
        self.webSocketsRefused = Counter(
            "stproxy_websocket_handshakes_refused",
            "WebSocket handshakes answered with an HTTP error instead of 101, by status"
            " (Streamlit's own refusals, 502/503/504 from the proxy)",
            ["status"],
            registry=registry,
        )
        self.upstreamHealthy = Gauge(
            "stproxy_upstream_healthy",
            "1 while every route has a replica whose health check passes, else 0",
            registry=registry,
        )
        self.clientConnections = Gauge(
            "stproxy_client_connections",
            "Client connections open now on the public listeners, WebSockets included"
            " (what --max-connections caps)",
            registry=registry,
        )
        self.connectionLimit = Gauge(
            "stproxy_connection_limit",
            "The --max-connections in force",
            registry=registry,
        )
        self.connectionsRefused = Counter(
            "stproxy_connections_refused",
            "Client connections answered 503 and closed at once: --max-connections was reached",
            registry=registry,
        )
        replica = ["route", "replica"]
        self.replicaUp = Gauge(
            "stproxy_replica_up",
            "1 while a replica takes new sessions, 0 while it is down or draining",
            replica,
            registry=registry,
        )
        self.replicaSessions = Gauge(
            "stproxy_replica_sessions",
            "WebSocket sessions open now on a replica",
            replica,
            registry=registry,
        )
        self.replicaRequests = Counter(
            "stproxy_replica_requests",
            "HTTP requests sent to a replica (retries included)",
            replica,
            registry=registry,
        )
        self.replicaHealthFailures = Counter(
            "stproxy_replica_health_failures",
            "Health checks of a replica that failed",
            replica,
            registry=registry,
        )
        self.replicaRepins = Counter(
            "stproxy_replica_repins",
            "Browsers moved from the replica their affinity cookie named to another",
            ["route"],
            registry=registry,
        )
        self.authentications = Counter(
            "stproxy_auth",
            "Requests and WebSocket handshakes authenticated, by method (htpasswd, forward,"
            " cert) and result (ok, denied, throttled, error)",
            ["method", "result"],
            registry=registry,
        )
        self.forwardAuthSeconds = Histogram(
            "stproxy_forward_auth_seconds",
            "Time the forward-auth service took to answer",
            registry=registry,
        )
        self.forwardAuthFailures = Counter(
            "stproxy_forward_auth_failures",
            "Forward-auth checks that failed closed (503): the service unreachable, slow,"
            " or answering neither 2xx nor 401",
            registry=registry,
        )
        self._requestChildren: dict[tuple[str, str], Counter] = {}

    def requestDone(self, method: str, code: int, seconds: float, received: int, sent: int) -> None:
        """Count one finished (or abandoned) HTTP request."""
        key = (method if method in _KNOWN_METHODS else "other", statusClass(code))
        child = self._requestChildren.get(key)
        if child is None:
            child = self._requestChildren[key] = self.httpRequests.labels(*key)
        child.inc()
        self.httpDuration.observe(seconds)
        if received:
            self.httpReceivedBytes.inc(received)
        if sent:
            self.httpSentBytes.inc(sent)

    def webSocketClosed(self, code: int | None) -> None:
        """Count one ended WebSocket session, by close code (see L{closeCodeLabel})."""
        self.webSocketsClosed.labels(code=closeCodeLabel(code)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of L{registry} and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["Metrics", "statusClass", "closeCodeLabel", "UPSTREAM", "DOWNSTREAM"]
