"""
One HTTP request's way to the replicas (stproxy.routing.forwarding), the retry path: a refused
connection marks the replica down and sends the request, body and all, to another, re-pinning
the browser; a cookieless upload answered 400, or a C{/media/} or C{/component/} file answered
404, is tried on the other replicas and the one that has it is learned; a browser's own replica's
answer, and any other failure, is final.  Then the HTTP leg end to end (ReverseProxyResource in a
ProxySite fed raw bytes): 404 outside every app, 503 for an app with no replica, the Set-Cookie,
502 when every replica refuses, and the spooled body sent again.
"""

from __future__ import annotations

from typing import Any

import pytest
from routing_fakes import ADDRESSES, App, answer, formats, respond
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, DNSLookupError, TCPTimedOutError, TimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from twisted.web.resource import Resource

from stproxy.http.forward import ReverseProxyResource
from stproxy.http.headers import TrustedProxies
from stproxy.http.site import buildSite
from stproxy.routing.forwarding import ReplicaForwarding, uploadSession
from stproxy.routing.replica import DOWN, UP
from stproxy.routing.route import Routes
from stproxy.testing.http import UpstreamRequest

RETRYING = "Retrying {method}"
REPINNED = "Re-pinned a browser"


@pytest.mark.parametrize(
    "relative, session",
    [
        (b"/_stcore/upload_file/abc-123/file-1", "abc-123"),
        (b"/_stcore/upload_file/abc-123", "abc-123"),
        (b"/_stcore/upload_file/", None),
        (b"/_stcore/upload_file//f", None),
        (b"/_stcore/upload_filex/abc/f", None),
        (b"/media/abc.png", None),
        (b"/app/_stcore/upload_file/abc/f", None),
    ],
)
def test_upload_session_is_the_session_id_of_an_upload_path(
    relative: bytes, session: str | None
) -> None:
    """Only a path below the app's /_stcore/upload_file/ names a session, its first segment."""
    assert uploadSession(relative) == session


class Sent:
    """
    One request through a L{ReplicaForwarding} on C{app}'s route, pinned as the HTTP leg pins
    it; C{result} is the response or the failure it ends with.
    """

    def __init__(
        self,
        app: App,
        target: bytes,
        method: bytes = b"GET",
        cookies: list[bytes] | None = None,
        body: bool = False,
        secure: bool = False,
    ) -> None:
        self.app = app
        route = app.route
        relative = route.relative(target.split(b"?", 1)[0])
        self.pin = route.pin(cookies, secure, session=uploadSession(relative))
        assert self.pin is not None
        self.bodies: list[object] = []
        self.forwarding = ReplicaForwarding(
            self.pin,
            method,
            target,
            relative,
            self._body if body else lambda: None,
            secure,
            app.log,
        )
        self.result: Any = None
        sent: Deferred[Any] = self.forwarding.send(Headers({b"host": [b"app.example"]}))
        sent.addBoth(self._done)

    def _body(self) -> object:
        producer = object()
        self.bodies.append(producer)
        return producer

    def _done(self, result: Any) -> None:
        self.result = result

    def pending(self) -> tuple[int, UpstreamRequest]:
        """The replica number and the request waiting there for an answer (only one ever is)."""
        waiting = [
            (number, request)
            for number, address in enumerate(ADDRESSES)
            if address in self.app.upstreams
            for request in self.app.upstreams[address].requests
            if not request.deferred.called
        ]
        assert len(waiting) == 1, waiting
        return waiting[0]

    def refuse(self) -> int:
        """The replica waited on refuses the connection; its number."""
        number, request = self.pending()
        request.fail(ConnectionRefusedError("Connection refused"))
        return number

    def answer(self, code: int) -> tuple[int, Any]:
        """The replica waited on answers C{code}; its number and the response."""
        number, request = self.pending()
        return number, respond(request, code)

    def setCookie(self) -> list[bytes] | None:
        headers = Headers()
        self.forwarding.answering(headers)
        return headers.getRawHeaders(b"set-cookie")

    def named(self) -> str | None:
        cookies = self.setCookie()
        if not cookies:
            return None
        [cookie] = cookies
        return self.app.affinity.replicaIn([cookie.split(b";")[0]])

    def tries(self) -> int:
        return sum(len(u.requests) for u in self.app.upstreams.values())


# ---------------------------------------------------------------------- a refused connection


def test_a_refused_replica_is_marked_down_and_the_request_goes_to_another() -> None:
    """
    The connection refused: that replica is down at once, the request is sent to another, the
    browser is pinned there (Set-Cookie), and one line says it was retried.
    """
    app = App(count=2)
    sent = Sent(app, b"/media/x.png?v=1")
    refused = sent.refuse()
    other, response = sent.answer(200)
    assert other != refused
    assert sent.result is response
    assert app.replica(refused).state == DOWN and app.replica(other).state == UP
    assert sent.named() == app.replica(other).id
    assert sent.forwarding.where() == str(ADDRESSES[other])
    [retry] = app.logged(RETRYING)
    assert (retry["method"], retry["uri"]) == ("GET", "/media/x.png?v=1")
    assert (retry["replica"], retry["previous"]) == (str(ADDRESSES[other]), str(ADDRESSES[refused]))
    assert "connection failed" in retry["why"]
    [down] = app.logged("is {state}")
    assert down["why"].startswith("connection failed")


@pytest.mark.parametrize("error", [TCPTimedOutError(), TimeoutError()])
def test_a_connection_that_times_out_is_retried_too(error: Exception) -> None:
    """A connect timeout is a ConnectError: nothing was sent, so the request may go elsewhere."""
    app = App(count=2)
    sent = Sent(app, b"/")
    first, request = sent.pending()
    request.fail(error)
    second, response = sent.answer(200)
    assert sent.result is response and first != second
    assert app.replica(first).state == DOWN


def test_the_request_body_is_asked_for_again_for_the_retry() -> None:
    """Each attempt gets a new producer of the body from its start (the body callable, called again)."""
    app = App(count=2)
    sent = Sent(app, b"/_stcore/upload_file/s/f", method=b"PUT", body=True)
    first = sent.pending()[1]
    sent.refuse()
    second = sent.pending()[1]
    assert len(sent.bodies) == 2
    assert (first.bodyProducer, second.bodyProducer) == tuple(sent.bodies)
    assert second.method == b"PUT" and second.uri.endswith(b"/_stcore/upload_file/s/f")


def test_a_pinned_browser_whose_replica_refuses_is_re_pinned() -> None:
    """The browser's own replica refusing: a re-pin line and metric, and a cookie for the new one."""
    app = App(count=2)
    own = app.replica(0)
    sent = Sent(app, b"/", cookies=[app.cookie(own)])
    assert sent.refuse() == 0
    _, response = sent.answer(200)
    assert sent.result is response
    assert own.state == DOWN
    assert sent.named() == app.replica(1).id
    [line] = app.logged(REPINNED)
    assert line["previous"] == own.id and "connection failed" in line["why"]
    assert app.sample("stproxy_replica_repins_total", route="/") == 1


def test_when_every_replica_refuses_the_failure_is_the_answer() -> None:
    """Each replica tried once, each marked down, then the refusal itself propagates (a 502)."""
    app = App(count=3)
    sent = Sent(app, b"/")
    refused = {sent.refuse() for _ in range(3)}
    assert refused == {0, 1, 2}
    assert isinstance(sent.result, Failure) and sent.result.check(ConnectionRefusedError)
    assert all(app.replica(n).state == DOWN for n in range(3))
    assert sent.tries() == 3 and len(app.logged(RETRYING)) == 2


def test_a_failure_other_than_a_connect_error_is_not_retried() -> None:
    """The request may have reached the replica (no response, a timeout): final, and the replica stays up."""
    app = App(count=2)
    sent = Sent(app, b"/_stcore/upload_file/s/f", method=b"PUT")
    number, request = sent.pending()
    request.fail(ResponseNeverReceived([Failure(ConnectionRefusedError())]))
    assert isinstance(sent.result, Failure) and sent.result.check(ResponseNeverReceived)
    assert sent.tries() == 1
    assert app.replica(number).state == UP
    assert app.logged(RETRYING) == []


def test_each_attempt_counts_as_a_request_to_its_replica() -> None:
    """Retries are counted on the replica they went to."""
    app = App(count=2)
    sent = Sent(app, b"/")
    refused = sent.refuse()
    other, _ = sent.answer(200)
    for number in (refused, other):
        assert app.replicaSample("stproxy_replica_requests_total", app.replica(number)) == 1


def test_the_forwarding_runs_on_its_replicas_reactor_and_timeouts() -> None:
    """The exchange's timers are those of the replica's client."""
    app = App(count=1)
    sent = Sent(app, b"/")
    upstream = app.replica(0).upstream
    assert sent.forwarding.reactor is upstream.reactor is app.clock
    assert sent.forwarding.timeouts is upstream.timeouts


# ------------------------------------------------------------------ the wrong process's answer


def test_a_cookieless_upload_answered_400_is_tried_on_the_others_until_one_takes_it() -> None:
    """
    Streamlit's "Invalid session_id" (400) from a replica without the session: the next one is
    tried, until the one holding it answers 200; the wrong answers are discarded, the body sent
    each time, and the browser pinned to the right replica.
    """
    app = App(count=3)
    sent = Sent(app, b"/_stcore/upload_file/sess-1/file-1", method=b"PUT", body=True)
    first, wrong1 = sent.answer(400)
    second, wrong2 = sent.answer(400)
    third, right = sent.answer(200)
    assert {first, second, third} == {0, 1, 2}
    assert sent.result is right
    assert wrong1.transport.stopped and wrong2.transport.stopped and not right.transport.stopped
    assert len(sent.bodies) == 3
    assert sent.named() == app.replica(third).id
    assert all(app.replica(n).isUp for n in range(3))
    retries = app.logged(RETRYING)
    assert [r["why"] for r in retries] == [
        "answered 400 for /_stcore/upload_file/sess-1/file-1"
    ] * 2
    assert app.logged(REPINNED) == []


def test_the_replica_that_took_an_upload_is_learned_for_its_session() -> None:
    """The next cookieless request of that session goes straight to the replica that took it."""
    app = App(count=3)
    sent = Sent(app, b"/_stcore/upload_file/sess-1/file-1", method=b"PUT", body=True)
    sent.answer(400)
    holder, _ = sent.answer(200)
    assert app.replicas.learned("sess-1") is app.replica(holder)
    for _ in range(3):
        again = Sent(app, b"/_stcore/upload_file/sess-1/file-2", method=b"PUT", body=True)
        assert again.pin.pinned and again.pin.replica is app.replica(holder)
        number, response = again.answer(200)
        assert number == holder and again.result is response
    delete = Sent(app, b"/_stcore/upload_file/sess-1/file-2", method=b"DELETE")
    assert delete.pending()[0] == holder


def test_an_upload_taken_at_once_is_learned_too() -> None:
    """A first try that succeeds teaches the session as well."""
    app = App(count=2)
    sent = Sent(app, b"/_stcore/upload_file/s9/f", method=b"PUT")
    number, _ = sent.answer(204)
    assert app.replicas.learned("s9") is app.replica(number)


def test_an_upload_no_replica_takes_gets_the_last_answer_and_teaches_nothing() -> None:
    """Every replica answered 400: the last 400 goes to the browser; no session is learned."""
    app = App(count=2)
    sent = Sent(app, b"/_stcore/upload_file/lost/f", method=b"PUT")
    sent.answer(400)
    _, last = sent.answer(400)
    assert sent.result is last and not last.transport.stopped
    assert app.replicas.learned("lost") is None
    assert sent.tries() == 2


@pytest.mark.parametrize("target", [b"/media/abc.png", b"/component/my_comp/index.html?x=1"])
def test_a_cookieless_media_or_component_404_is_retried(target: bytes) -> None:
    """A file that lives in one Streamlit process, answered 404 elsewhere: the others are tried."""
    app = App(count=2)
    sent = Sent(app, target)
    first, _ = sent.answer(404)
    second, found = sent.answer(200)
    assert first != second and sent.result is found
    assert sent.named() == app.replica(second).id


def test_the_browsers_own_replicas_404_is_final() -> None:
    """A browser with a valid cookie gets its replica's answer as it is: no retry elsewhere."""
    app = App(count=2)
    sent = Sent(app, b"/media/gone.png", cookies=[app.cookie(app.replica(1))])
    number, notFound = sent.answer(404)
    assert number == 1 and sent.result is notFound and not notFound.transport.stopped
    assert sent.tries() == 1 and sent.setCookie() is None
    assert app.logged(RETRYING) == []


def test_a_learned_sessions_400_is_final() -> None:
    """An upload sent to its learned replica is pinned: a 400 there is not retried."""
    app = App(count=2)
    app.replicas.learn("s1", app.replica(0))
    sent = Sent(app, b"/_stcore/upload_file/s1/f", method=b"PUT")
    number, bad = sent.answer(400)
    assert number == 0 and sent.result is bad and sent.tries() == 1


@pytest.mark.parametrize(
    "target, code",
    [
        (b"/", 404),
        (b"/some/page", 404),
        (b"/media/x.png", 500),
        (b"/media/x.png", 400),
        (b"/_stcore/upload_file/s/f", 404),
        (b"/_stcore/upload_file/s/f", 500),
        (b"/_stcore/health", 503),
    ],
)
def test_other_answers_are_final_even_without_cookie(target: bytes, code: int) -> None:
    """Only the statuses that mean "not this process" for its kind of path are retried."""
    app = App(count=2)
    sent = Sent(app, target)
    _, response = sent.answer(code)
    assert sent.result is response and sent.tries() == 1


def test_a_non_sticky_route_never_retries_a_404() -> None:
    """The one replica of a single --upstream is the browser's own: its 404 stands."""
    app = App(count=1, sticky=False)
    sent = Sent(app, b"/media/x.png")
    _, response = sent.answer(404)
    assert sent.result is response and sent.setCookie() is None


def test_the_one_replica_of_a_single_upstream_is_not_marked_down() -> None:
    """A single --upstream refusing: the failure is the answer, and no state, line or 1012 follows (nowhere else to go)."""
    app = App(count=1, sticky=False)
    sent = Sent(app, b"/")
    sent.refuse()
    assert isinstance(sent.result, Failure) and sent.result.check(ConnectionRefusedError)
    assert app.replica(0).state == UP
    assert app.logged("is {state}") == []


def test_a_refusal_then_a_wrong_process_answer_are_both_retried() -> None:
    """The two retry reasons add up: refused, then 400, then taken by the third replica."""
    app = App(count=3)
    sent = Sent(app, b"/_stcore/upload_file/s/f", method=b"PUT", body=True)
    refused = sent.refuse()
    wrong, _ = sent.answer(400)
    right, response = sent.answer(200)
    assert len({refused, wrong, right}) == 3 and sent.result is response
    assert app.replica(refused).state == DOWN and app.replica(wrong).state == UP
    assert app.replicas.learned("s") is app.replica(right)
    assert len(sent.bodies) == 3, formats(app.events)


# --------------------------------------------------------------------- the HTTP leg end to end


class RoutedProxy:
    """A ProxySite whose HTTP leg routes over C{routes}, fed raw bytes as one client connection."""

    def __init__(self, routes: Routes) -> None:
        self.clock = routes.reactor
        self.site = buildSite(
            ReverseProxyResource(routes, TrustedProxies()), Resource(), self.clock, 0, None
        )
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        self.protocol = self.site.buildProtocol(peer)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.clock.advance(0)

    def output(self) -> bytes:
        return self.transport.value()

    def status(self) -> bytes:
        return self.output().split(b" ", 2)[1]

    def header(self, name: bytes) -> list[bytes]:
        head = self.output().split(b"\r\n\r\n", 1)[0]
        prefix = name.lower() + b": "
        return [
            line[len(prefix) :] for line in head.split(b"\r\n") if line.lower().startswith(prefix)
        ]


def get(path: bytes, *headers: bytes) -> bytes:
    return (
        b"\r\n".join([b"GET " + path + b" HTTP/1.1", b"Host: app.example", *headers]) + b"\r\n\r\n"
    )


def test_a_path_outside_every_app_is_404_and_goes_nowhere() -> None:
    """With apps at /app and /other only, /nowhere is answered 404 by the proxy."""
    app = App(count=2, prefix="/app")
    other = App(count=1, prefix="/other", clock=app.clock)
    proxy = RoutedProxy(Routes([app.route, other.route], app.clock))
    proxy.send(get(b"/nowhere/x"))
    assert proxy.status() == b"404"
    assert b"No app is served at this path." in proxy.output()
    assert all(
        not u.requests for u in list(app.upstreams.values()) + list(other.upstreams.values())
    )


def test_an_app_with_no_replica_is_503() -> None:
    """An app whose discovery found nothing yet: 503 naming the app."""
    app = App(count=0, prefix="/app")
    proxy = RoutedProxy(app.routes)
    proxy.send(get(b"/app/"))
    assert proxy.status() == b"503"
    assert b"The app at /app has no replica." in proxy.output()


def test_a_new_browser_is_answered_with_the_affinity_cookie() -> None:
    """A browser with no cookie gets the page of some replica and a Set-Cookie naming it."""
    app = App(count=2, prefix="/app")
    proxy = RoutedProxy(app.routes)
    proxy.send(get(b"/app/"))
    number, request = [
        (n, r) for n, a in enumerate(ADDRESSES[:2]) for r in app.upstreams[a].requests
    ][0]
    assert request.uri == str(ADDRESSES[number]).encode() + b"/app/"
    answer(request, 200, b"page")
    assert proxy.status() == b"200"
    [cookie] = proxy.header(b"set-cookie")
    assert cookie.endswith(b"; Path=/app; HttpOnly; SameSite=Lax")
    assert app.affinity.replicaIn([cookie.split(b";")[0]]) == app.replica(number).id


def test_a_browser_with_its_cookie_goes_to_its_replica_and_gets_no_new_cookie() -> None:
    """Every request with the cookie goes to the replica it names; nothing is set."""
    app = App(count=2)
    proxy = RoutedProxy(app.routes)
    proxy.send(get(b"/static/app.js", b"Cookie: a=1; " + app.cookie(app.replica(1))))
    assert app.upstreams[ADDRESSES[0]].requests == []
    [request] = app.upstreams[ADDRESSES[1]].requests
    assert request.headers.getRawHeaders(b"cookie") is not None
    answer(request, 200, b"js")
    assert proxy.status() == b"200" and proxy.header(b"set-cookie") == []


def test_every_replica_refusing_is_a_502_naming_the_last() -> None:
    """When no replica can be reached the browser gets 502, as with one upstream."""
    app = App(count=2)
    proxy = RoutedProxy(app.routes)
    proxy.send(get(b"/"))
    for _ in range(2):
        [request] = [r for u in app.upstreams.values() for r in u.requests if not r.deferred.called]
        request.fail(ConnectionRefusedError())
    assert proxy.status() == b"502"
    assert not app.routes.ready()


def bodyOf(producer: IBodyProducer, clock: MemoryReactorClock) -> bytes:
    """What C{producer} writes, run to its end as the HTTP client would."""

    class Consumer:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

    consumer = Consumer()
    producer.startProducing(consumer)
    for _ in range(20):
        clock.advance(0)
    return consumer.data


def put(path: bytes, body: bytes) -> bytes:
    head = [b"PUT " + path + b" HTTP/1.1", b"Host: app.example", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_a_refused_upload_is_sent_again_in_full_to_another_replica() -> None:
    """The spooled body goes to the next replica from its first byte."""
    app = App(count=2)
    proxy = RoutedProxy(app.routes)
    proxy.send(put(b"/_stcore/upload_file/s/f", b"hello world"))
    [first] = [r for u in app.upstreams.values() for r in u.requests]
    first.fail(ConnectionRefusedError())
    [second] = [r for u in app.upstreams.values() for r in u.requests if not r.deferred.called]
    assert second is not first
    assert bodyOf(second.bodyProducer, app.clock) == b"hello world"
    answer(second, 200)
    assert proxy.status() == b"200"


def test_an_upload_answered_400_after_its_body_was_sent_is_sent_again_in_full() -> None:
    """
    The first replica read the whole upload before answering "Invalid session_id": the next
    replica still gets the whole body, and the browser its 200.
    """
    app = App(count=2)
    proxy = RoutedProxy(app.routes)
    proxy.send(put(b"/_stcore/upload_file/s/f", b"hello world"))
    [first] = [r for u in app.upstreams.values() for r in u.requests]
    assert bodyOf(first.bodyProducer, app.clock) == b"hello world"
    answer(first, 400, b"Invalid session_id")
    [second] = [r for u in app.upstreams.values() for r in u.requests if not r.deferred.called]
    assert bodyOf(second.bodyProducer, app.clock) == b"hello world"
    answer(second, 200)
    assert proxy.status() == b"200"


def test_a_name_that_no_longer_resolves_is_retried_too() -> None:
    """A replica given by name whose lookup fails: nothing was sent, so it is marked down and another tried."""
    app = App(count=2)
    sent = Sent(app, b"/")
    first, request = sent.pending()
    request.fail(DNSLookupError("app-1.internal: no address"))
    second, response = sent.answer(200)
    assert sent.result is response and first != second
    assert app.replica(first).state == DOWN


def test_a_wrong_process_answer_is_retried_on_up_replicas_only() -> None:
    """A cookieless 404 for media is tried on the other up replicas, never on one that is down."""
    app = App(count=3)
    app.replica(2).failed("health check: test")
    sent = Sent(app, b"/media/abc.png")
    first, _ = sent.answer(404)
    second, last = sent.answer(404)
    assert {first, second} == {0, 1}
    assert sent.result is last and sent.tries() == 2
