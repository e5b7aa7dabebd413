"""
``benchmarks/run.py --smoke`` runs end to end, so the side-by-side benchmark cannot rot.

Smoke mode measures for a fraction of a second with tiny sizes, so this checks that every system
(direct, stproxy, ``--workers 2`` when stproxy has it, nginx when installed) ran every workload
and produced its figure, not what the figures are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from harness import PROJECT_ROOT

RUN = PROJECT_ROOT / "benchmarks" / "run.py"


def test_the_benchmark_runs_every_workload_against_every_system(tmp_path: Path) -> None:
    """
    ``run.py --smoke --json FILE`` exits 0, prints the table, and for each system and each
    workload the JSON holds a result without an error whose primary figure is positive.
    """
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(PROJECT_ROOT),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(out.read_text())

    systems = set(doc["systems"])
    assert {"direct", "stproxy"} <= systems, systems
    if shutil.which("nginx"):
        assert "nginx" in systems, systems
    assert sorted(doc["workloads"]) == sorted(doc["primary"]), doc["workloads"]
    assert doc["machine"]["cores"] and doc["machine"]["python"] and doc["date"]

    problems = []
    for workload, metric in doc["primary"].items():
        for system in sorted(systems):
            figures = doc["results"].get(workload, {}).get(system)
            if figures is None:
                problems.append(f"{workload} {system}: did not run")
            elif figures.get("error"):
                problems.append(f"{workload} {system}: {figures['error']}")
            elif not (isinstance(figures.get(metric), (int, float)) and figures[metric] > 0):
                problems.append(f"{workload} {system}: {metric} = {figures.get(metric)!r}")
    assert not problems, "\n".join(problems) + "\n" + result.stdout + result.stderr

    table = result.stdout
    for system in systems:
        assert system in table.splitlines()[2], table
    assert "ws_echo_50c_100B_deflate" in table and "stproxy/direct" in table, table
