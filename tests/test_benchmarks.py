"""The benchmark scripts that are not run in CI at least start: their imports resolve and their options parse."""

from __future__ import annotations

import subprocess
import sys

from harness import PROJECT_ROOT


def test_the_soak_script_prints_its_options() -> None:
    """``benchmarks/soak.py --help`` exits 0 and names --minutes and --quick (the soak itself is not run here)."""
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "soak.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--minutes" in result.stdout and "--quick" in result.stdout
