"""
C{python -m stproxy}: the proxy as a plain program, with the seed proxy's
flags and environment variables, built by the same L{makeService} as the
twistd plugin.
"""

from __future__ import annotations

import sys
from typing import Sequence

from stproxy.tap import Options, makeService


def main(argv: Sequence[str] | None = None) -> None:
    """Parse C{argv}, start logging and run the proxy until SIGINT or SIGTERM."""
    options = Options()
    options.parseOptions(list(sys.argv[1:] if argv is None else argv))

    from twisted.internet import reactor

    from stproxy.ops.logs import startLogging

    logging = options.config.logging
    startLogging(logging.level, format=logging.format)
    service = makeService(options)  # on the global reactor, imported above

    service.privilegedStartService()  # binds now: a busy port ends here, in one line
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
