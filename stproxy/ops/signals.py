"""
A second SIGTERM or SIGINT while stproxy drains ends the process at once,
as operators expect of a stop they repeat (nginx, uvicorn and twistd alike).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable


def exitOnNextSignal(before: Callable[[], object] | None = None) -> None:
    """
    Let the next SIGTERM/SIGINT end the process now (main thread only),
    after calling C{before} (a C{--workers} supervisor kills its workers).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def now(signum: int, frame: FrameType | None) -> None:
        if before is not None:
            before()
        sys.stderr.write(f"stproxy: signal {signum} during shutdown: exiting now\n")
        sys.stderr.flush()
        os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, now)


__all__ = ["exitOnNextSignal"]
