"""
Log output honouring C{--log-level}.

Under twistd the log observer is twistd's to build (from C{--logfile},
C{--syslog}, C{-n}) and a plugin has no say in it, so the level is applied
where stproxy's own events start instead: every stproxy object logs through a
L{Logger} whose observer is a level filter in front of the global publisher,
handed down from L{stproxy.assembly.assemble} like the reactor.  Twisted's own
start-up lines are twistd's business and pass as they are.

C{python -m stproxy} owns its process and filters everything it prints.

C{--log-format json} works the same way: under twistd, stproxy's own events
(listening, access, WebSocket sessions, upstream errors) go as JSON lines to
the process's real standard output instead of to twistd's log, while
Twisted's own lines stay in twistd's text format wherever twistd writes
them; C{python -m stproxy} writes every line as JSON.  Each line is one flat
object: C{time}, C{level}, C{namespace}, C{message} (the rendered text) and
the event's own fields.

Every stproxy observer redacts C{Cookie}, C{Set-Cookie}, C{Authorization}
and C{Proxy-Authorization} values from any text it is given (a raw
handshake in a debug message, say).
"""

from __future__ import annotations

import json
import re
import string
import sys
from datetime import datetime, timezone
from typing import Any, TextIO, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)
from zope.interface import implementer

LOG_FORMATS = ("text", "json")

#: Renders format strings into their parts, to see which fields they show.
_FORMATTER = string.Formatter()

#: How many distinct format strings L{_Redacting} remembers the fields of
#: (log formats are constants in the code; a bound all the same).
_REMEMBERED_FORMATS = 1024

#: A header line (or C{name=value} pair of a header dump) whose value is a secret.
_SECRET = re.compile(
    r"(?im)((?:proxy-)?authorization|(?:set-)?cookie)"
    r"(['\"]?\s*[:=,]\s*\[?\s*(?:b(?=['\"]))?['\"]?)([^\r\n'\"\]]*)"
)


def redact(text: str) -> str:
    """C{text} with the values of credential-bearing headers replaced by C{[redacted]}."""
    return _SECRET.sub(r"\1\2[redacted]", text)


@implementer(ILogObserver)
class _Redacting:
    """Passes events on with secrets removed from their text fields and message."""

    def __init__(self, observer: ILogObserver) -> None:
        self._observer = observer
        self._fields: dict[str, frozenset[str]] = {}

    def __call__(self, event: LogEvent) -> None:
        changed = None
        for key, value in event.items():
            if isinstance(value, str) and _SECRET.search(value):
                if changed is None:
                    changed = dict(event)
                changed[key] = redact(value)
        event = event if changed is None else changed
        if self._rendersOnlyText(event):
            self._observer(event)  # every field it shows was checked above
            return
        text = formatEvent(event)
        if _SECRET.search(text):
            # A secret in a field that is not text (a Headers object, bytes):
            # the event keeps only its redacted rendering.
            event = dict(event, log_format=redact(text).replace("{", "{{").replace("}", "}}"))
        self._observer(event)

    def _rendersOnlyText(self, event: LogEvent) -> bool:
        """
        Whether every field C{event}'s format shows is a string or a number,
        so that nothing but the fields already checked can carry a secret and
        the event need not be rendered here (an access line is, per request).
        """
        fmt = event.get("log_format")
        if not isinstance(fmt, str):
            return False
        fields = self._fields.get(fmt)
        if fields is None:
            try:
                names = {name for _, name, _, _ in _FORMATTER.parse(fmt) if name is not None}
            except ValueError:
                return False
            fields = frozenset(name.split(".")[0].split("[")[0].rstrip("!") for name in names)
            if len(self._fields) < _REMEMBERED_FORMATS:
                self._fields[fmt] = fields
        return all(isinstance(event.get(name), (str, int, float)) for name in fields)


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each event as one flat JSON object per line, for log shippers
    (Twisted's own C{jsonFileLogObserver} writes record-separated events
    with its internal C{log_*} keys, built to be read back by Twisted).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: LogEvent) -> None:
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", ""),
            "message": redact(formatEvent(event) or ""),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = redact(failure.getTraceback())
        for key, value in event.items():
            if (
                not key.startswith(("log_", "_"))
                and key not in record
                and key not in ("format", "message", "time", "system", "isError", "failure", "why")
            ):
                record[key] = redact(value) if isinstance(value, str) else value
        self._stream.write(json.dumps(record, default=repr) + "\n")
        self._stream.flush()


def levelFiltered(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """C{observer}, passing only events at C{level} or above."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


def publisherAt(level: LogLevel, format: str = "text") -> ILogObserver:
    """
    What stproxy objects log to: the global log publisher (C{"text"}) or
    JSON lines on the real standard output (C{"json"}), behind a filter for
    C{level} and the redaction of secrets.
    """
    target: ILogObserver = globalLogPublisher
    if format == "json":
        # None only in a process started without a standard output at all.
        target = JSONLinesObserver(cast(TextIO, sys.__stdout__))
    return levelFiltered(_Redacting(target), level)


def loggerFor(source: object, observer: ILogObserver | None) -> Logger:
    """
    A L{Logger} for C{source} (namespace C{module.Class}, like a class-level
    C{Logger()}) that emits to C{observer}, or to the global publisher when
    C{None}.
    """
    cls = type(source)
    return Logger(f"{cls.__module__}.{cls.__qualname__}", source, observer)


def startLogging(level: LogLevel, stream: TextIO = sys.stdout, format: str = "text") -> None:
    """Send every log event at C{level} or above to C{stream}, as text or JSON lines."""
    observer = JSONLinesObserver(stream) if format == "json" else textFileLogObserver(stream)
    globalLogBeginner.beginLoggingTo(
        [levelFiltered(_Redacting(observer), level)], redirectStandardIO=False
    )
