"""
Log output honouring C{--log-level}.

twistd builds its log observer after the plugin's options are parsed, from
its own options (C{--logfile}, C{--syslog}, C{--nodaemon}); a plugin gets no
say in it.  Its one documented hook is C{--logger}, a factory for the
observer, so L{Options} fills that in (unless the user gave one) with a
factory that builds the very observer twistd would have built and puts a
level filter in front of it.  C{python -m stproxy} owns its process and
starts logging itself with the same filter.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)


def levelFiltered(observer: Any, level: LogLevel) -> ILogObserver:
    """C{observer} (new or legacy style), passing only events at C{level} or above."""
    if not ILogObserver.providedBy(observer):
        observer = LegacyLogObserverWrapper(observer)
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(defaultLogLevel=level)])


def twistdObserverFactory(twistdOptions: Any, level: LogLevel) -> Callable[[], ILogObserver]:
    """
    An observer factory for twistd's C{--logger}: twistd's own choice of
    observer for C{twistdOptions}, filtered to C{level}.
    """

    def factory() -> ILogObserver:
        if sys.platform == "win32":  # pragma: no cover
            from twisted.application.app import AppLogger as Default
        else:
            from twisted.scripts._twistd_unix import UnixAppLogger as Default
        plain = dict(twistdOptions)
        plain["logger"] = None
        return levelFiltered(Default(plain)._getLogObserver(), level)

    return factory


def startLogging(level: LogLevel, stream: TextIO = sys.stdout) -> None:
    """Send every log event at C{level} or above to C{stream}, as text lines."""
    globalLogBeginner.beginLoggingTo(
        [levelFiltered(textFileLogObserver(stream), level)], redirectStandardIO=False
    )
