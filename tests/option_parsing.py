"""
Command lines parsed the way ``twistd stproxy`` parses them, without exiting on a usage error.

Shared by the tests of the option parsers (``test_tap``, ``test_parse``, ``test_parsetls``,
``upstream/test_address``, ``edge/test_redirect``).
"""

from __future__ import annotations

from stproxy.tap import Options

__all__ = ["parse"]


def parse(*argv: str, environ: dict[str, str] | None = None) -> Options:
    """C{argv} parsed by stproxy's L{Options} with C{environ} (none by default) as the environment."""
    options = Options(environ=environ or {})
    options.exitOnError = False
    options.parseOptions(list(argv))
    return options
