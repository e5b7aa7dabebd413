"""
Every stproxy command line in ``deploy/`` (Dockerfile CMD, compose, Kubernetes, systemd and the
env file's TLS example) is accepted by stproxy's own option parser, with the environment each
one runs with.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from deploy_files import command_lines, endpoint_port, make_certificate


def parse_with_stproxy(args: list[str], env: dict[str, str], tmp_path: Path) -> Any:
    """
    Parse ``args`` with stproxy's own Options and ``env`` as the environment, certificate paths
    swapped for freshly made files of the same names; the usage error (if any) fails the test.
    """
    from twisted.python import usage

    from stproxy.tap import Options

    cert, key = make_certificate(tmp_path / "tls", "cert.pem", "key.pem")
    swapped = list(args)
    for i, arg in enumerate(swapped[:-1]):
        if arg in ("--tls-cert", "--tls-key"):
            assert PurePosixPath(swapped[i + 1]).is_absolute(), f"{arg} {swapped[i + 1]}: not absolute"
            swapped[i + 1] = str(cert if arg == "--tls-cert" else key)
    options = Options(environ=env)
    options.exitOnError = False
    try:
        options.parseOptions(swapped)
    except usage.UsageError as e:
        pytest.fail(f"stproxy refuses {args} with {env}: {e}")
    return options


@pytest.mark.parametrize("where", [w for w, _, _ in command_lines()])
def test_command_line_is_accepted(where: str, tmp_path: Path) -> None:
    """stproxy's own parser accepts each command line, with the upstream each deploy intends."""
    args, env = next((a, e) for w, a, e in command_lines() if w == where)
    options = parse_with_stproxy(args, env, tmp_path)
    upstream = options.config.upstream
    expected = ("127.0.0.1", 8501) if where.startswith("stproxy.") else ("streamlit", 8501)
    assert (upstream.host, upstream.port) == expected
    assert options.config.operations.admin is not None and endpoint_port(options.config.operations.admin) == 9100
    if where.startswith("stproxy."):
        assert "interface=127.0.0.1" in options.config.operations.admin, "a host's admin listener stays on loopback"
