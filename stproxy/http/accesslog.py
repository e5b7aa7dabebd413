"""
What is counted and logged once per HTTP request: the metrics, a JSON access
event (C{--log-format json}) and, through twisted.web, the combined-format
line (C{--access-log}).
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import Request as HTTPRequest
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.server import Request
from zope.interface import provider

from stproxy.ops.metrics import Metrics

#: The status logged and counted for a request whose client went away before
#: any answer (nginx's convention; nothing is sent).
CLIENT_CLOSED_REQUEST = 499


class Accounting:
    """
    Counts each finished request in the metrics and, when C{events} is
    given, emits one access event for it.
    """

    def __init__(self, reactor: IReactorTime, metrics: Metrics, events: Logger | None) -> None:
        """@param events: where access events go; C{None} for none (text logs)."""
        self._reactor = reactor
        self._metrics = metrics
        self.events = events

    def requestEnded(self, request: Request, started: float, received: int, aborted: bool) -> None:
        """
        C{request} is finished, or (C{aborted}) its client went away.
        Answers and request bodies are measured in body bytes, as the combined
        log format does.
        """
        duration = self._reactor.seconds() - started
        if aborted and not request.startedWriting:
            # nginx's 499: the client closed the connection before any answer.
            request.code = CLIENT_CLOSED_REQUEST
        method = request.method.decode("latin-1")
        sent = request.sentLength
        self._metrics.requestDone(method, request.code, duration, received, sent)
        if self.events is not None:
            address = request.getClientAddress()
            self.events.info(
                '{peer} "{method} {path}" {status} {bytes} {duration:.3f}s',
                log_access=True,
                peer=getattr(address, "host", "-"),
                method=method,
                path=request.uri.decode("latin-1"),
                status=request.code,
                bytes=sent,
                duration=round(duration, 6),
                user=userOf(request),
                user_agent=(request.getHeader(b"user-agent") or b"").decode("latin-1"),
                completed=not aborted,
            )


def userOf(request: HTTPRequest) -> str | None:
    """The user stproxy authenticated C{request} as (L{stproxy.auth}), if any."""
    identity: dict[str, str] = getattr(request, "identity", {})
    return identity.get("user")


@provider(IAccessLogFormatter)
def combinedLogWithUser(timestamp: str, request: HTTPRequest) -> str:
    """
    twisted.web's combined log line, with the authenticated user in the
    C{remote_user} field (nginx's C{$remote_user}), percent-encoded so that
    a name with a space or a quote cannot shift the fields.
    """
    line: str = combinedLogFormatter(timestamp, request)
    user = userOf(request)
    if user:
        line = line.replace('" - - ', f'" - {quote(user, safe="@.+_-")} ', 1)
    return line


__all__ = ["Accounting", "CLIENT_CLOSED_REQUEST", "combinedLogWithUser", "userOf"]
