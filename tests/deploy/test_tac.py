"""
The ``.tac`` example (``deploy/stproxy.tac``), loaded as ``twistd -y`` loads it, in a child
Python (pytest's own process must stay free of the application it builds).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from harness import PROJECT_ROOT

#: Loads the .tac file from the repository root and prints what its application holds.
LOAD_TAC = textwrap.dedent(
    """
    from twisted.application.service import IService, IServiceCollection, loadApplication
    from stproxy.service import ProxyService

    application = loadApplication("deploy/stproxy.tac", "python")
    [proxy] = list(IServiceCollection(application))
    print("TAC", isinstance(proxy, ProxyService), [e.description for e in proxy.endpoints],
          ", ".join(str(r.address) for route in proxy.routes.routes for r in route.replicas.replicas.values()))
    """
)


def test_tac_file_builds_an_application_around_the_proxy() -> None:
    """deploy/stproxy.tac, as twistd -y loads it, holds the proxy as a service of its application."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_TAC], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "TAC True ['tcp:8500'] http://localhost:8501" in result.stdout
