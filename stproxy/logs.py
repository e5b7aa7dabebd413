"""
Log output honouring C{--log-level}.

Under twistd the log observer is twistd's to build (from C{--logfile},
C{--syslog}, C{-n}) and a plugin has no say in it, so the level is applied
where stproxy's own events start instead: every stproxy object logs through a
L{Logger} whose observer is a level filter in front of the global publisher,
handed down from L{stproxy.tap.makeService} like the reactor.  Twisted's own
start-up lines are twistd's business and pass as they are.

C{python -m stproxy} owns its process and filters everything it prints.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
    globalLogPublisher,
    textFileLogObserver,
)


def levelFiltered(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """C{observer}, passing only events at C{level} or above."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


def publisherAt(level: LogLevel) -> ILogObserver:
    """The global log publisher behind a filter for C{level}: what stproxy objects log to."""
    return levelFiltered(globalLogPublisher, level)


def loggerFor(source: Any, observer: ILogObserver | None) -> Logger:
    """
    A L{Logger} for C{source} (namespace C{module.Class}, like a class-level
    C{Logger()}) that emits to C{observer}, or to the global publisher when
    C{None}.
    """
    cls = type(source)
    return Logger(f"{cls.__module__}.{cls.__qualname__}", source, observer)


def startLogging(level: LogLevel, stream: TextIO = sys.stdout) -> None:
    """Send every log event at C{level} or above to C{stream}, as text lines."""
    globalLogBeginner.beginLoggingTo(
        [levelFiltered(textFileLogObserver(stream), level)], redirectStandardIO=False
    )
