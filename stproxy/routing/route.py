"""
Which app a request is for, and which replica of it: the routing decision.

An app is served under a prefix (C{--route PREFIX=UPSTREAM}; C{/} for the
one C{--upstream} names), forwarded with the prefix kept to a Streamlit
running with C{server.baseUrlPath} equal to it.  Prefixes never overlap
(L{stproxy.parse}), so at most one route matches a path.

Within the route, L{Route.pin} decides, for one request:

  1. the replica the request's affinity cookie names, while it is up; while
     it is draining, too, for anything but a new WebSocket session (its
     uploads and media still live there);
  2. else, for a request naming a Streamlit session whose replica was
     learned from a retry (a browser that keeps no cookie), that replica;
  3. else the replica a new browser gets (L{ReplicaSet.choose}), with a
     C{Set-Cookie} naming it; a browser whose cookie named a replica that is
     down or gone is re-pinned so, with one log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from twisted.logger import Logger

from stproxy.routing.replica import DRAINING, Replica

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from stproxy.routing.affinity import Affinity
    from stproxy.routing.metrics import ReplicaMetrics
    from stproxy.routing.replicaset import ReplicaSet


@dataclass
class Pin:
    """
    Where one request goes.

    @ivar pinned: the replica is the browser's own (its cookie, or its
        learned session): an answer from it is final, never retried elsewhere.
    @ivar setCookie: the C{Set-Cookie} value to answer with, if the browser
        is to be (re)pinned.
    """

    route: Route
    replica: Replica
    pinned: bool
    setCookie: bytes | None = None


class Route:
    """One app: its prefix, its replicas and its affinity cookie."""

    def __init__(
        self,
        prefix: str,
        replicas: ReplicaSet,
        affinity: Affinity,
        metrics: ReplicaMetrics,
        log: Logger,
        sticky: bool = True,
    ) -> None:
        """
        @param sticky: pin browsers with the affinity cookie; C{False} for an
            app that only ever has one replica (one C{--upstream}, no
            discovery), whose responses then carry no cookie of the proxy's.
        """
        self.prefix = prefix
        self.sticky = sticky
        self.replicas = replicas
        self.affinity = affinity
        self._prefixBytes = prefix.rstrip("/").encode("ascii")
        self._metrics = metrics
        self._log = log

    def matches(self, path: bytes) -> bool:
        """Whether C{path} (no query) is this app's."""
        base = self._prefixBytes
        return not base or path == base or path.startswith(base + b"/")

    def relative(self, path: bytes) -> bytes:
        """C{path} below the prefix: what Streamlit's own routes look like."""
        return path[len(self._prefixBytes) :] or b"/"

    def pin(
        self,
        cookies: Sequence[bytes] | None,
        secure: bool,
        newSession: bool = False,
        session: str | None = None,
    ) -> Pin | None:
        """
        Where a request goes (see the module docstring); C{None} when the
        route has no replica at all.

        @param cookies: the request's C{Cookie} header lines.
        @param secure: whether the browser connection is TLS (the cookie's
            C{Secure} attribute).
        @param newSession: the request opens a WebSocket (a Streamlit session).
        @param session: the Streamlit session id the request names, if any.
        """
        if not self.sticky:
            only = self.replicas.only()
            return None if only is None else Pin(self, only, pinned=True)
        named, present = self.affinity.read(cookies)
        replica = self.replicas.get(named)
        if replica is not None and self._takes(replica, newSession):
            return Pin(self, replica, pinned=True)
        if session is not None and named is None:
            learned = self.replicas.learned(session)
            if learned is not None and self._takes(learned, newSession):
                return Pin(self, learned, True, self.affinity.setCookie(learned.id, secure))
        chosen = self.replicas.choose()
        if chosen is None:
            return None
        if named is not None and chosen.id != named:
            why = "gone" if replica is None else replica.state
            self._repinned(named, chosen, why)
        elif named is None and present:
            self._repinned("(unverified)", chosen, "its cookie's signature does not verify")
        return Pin(self, chosen, False, self.affinity.setCookie(chosen.id, secure))

    def repin(
        self, pin: Pin, tried: Iterable[Replica], secure: bool, why: str, upOnly: bool = False
    ) -> Pin | None:
        """
        Another replica for a request C{pin}'s replica could not take (its
        connection refused, or it has not the session): the next choice of
        the set, never one in C{tried} (with C{upOnly}, never one that is
        down); the browser is re-pinned to it.
        """
        chosen = self.replicas.choose(exclude=tried, upOnly=upOnly)
        if chosen is None:
            return None
        if pin.pinned:
            self._repinned(pin.replica.id, chosen, why)
        return Pin(self, chosen, False, self.affinity.setCookie(chosen.id, secure))

    def _takes(self, replica: Replica, newSession: bool) -> bool:
        return replica.isUp or (replica.state == DRAINING and not newSession)

    def _repinned(self, previous: str, replica: Replica, why: str) -> None:
        self._metrics.repinned(self.prefix)
        self._log.info(
            "Re-pinned a browser of {route} from replica {previous} ({why}) to {replica}",
            route=self.prefix,
            previous=previous,
            why=why,
            replica=f"{replica.id} ({replica.address})",
        )


class Routes:
    """Every app of one proxy, by prefix."""

    def __init__(self, routes: Iterable[Route], reactor: IReactorTime) -> None:
        """@param reactor: what every replica's client runs on."""
        self.routes = list(routes)
        self.reactor = reactor

    def find(self, path: bytes) -> Route | None:
        """The route C{path} (no query) belongs to, if any."""
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    def pinSession(
        self, target: bytes, cookies: Sequence[bytes] | None, secure: bool, protocols: list[str]
    ) -> Pin | int:
        """
        Where a new WebSocket session for C{target} goes (L{Route.pin}),
        resuming the Streamlit session the browser names in its third
        subprotocol on the replica known to hold it, if any; or the status
        that refuses it: 404 for no app there, 503 for an app with no replica.
        """
        route = self.find(target.split(b"?", 1)[0])
        if route is None:
            return 404
        session = protocols[2] if len(protocols) > 2 else None
        pin = route.pin(cookies, secure, newSession=True, session=session)
        return 503 if pin is None else pin

    def ready(self) -> bool:
        """Whether every app has a replica that is up."""
        return all(route.replicas.anyUp for route in self.routes)


__all__ = ["Pin", "Route", "Routes"]
