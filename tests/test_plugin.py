"""The twistd dropin: shipped in the wheel the Twisted way, and never hidden by a stale cache."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import twisted.plugins

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-m", "twisted"]


def test_twistd_lists_the_plugin() -> None:
    """twistd --help lists stproxy among its commands."""
    result = subprocess.run([*TWISTD, "--help"], capture_output=True, text=True, timeout=60)
    assert "stproxy" in result.stdout


def test_a_stale_dropin_cache_does_not_hide_the_plugin() -> None:
    """A cache written before stproxy was installed (listing nothing) is rebuilt, not trusted."""
    [directory] = [
        Path(p) for p in twisted.plugins.__path__ if (Path(p) / "stproxy_plugin.py").exists()
    ]
    cache = directory / "dropin.cache"
    saved = cache.read_bytes() if cache.exists() else None
    try:
        cache.write_bytes(pickle.dumps({}))
        old = (directory / "stproxy_plugin.py").stat().st_mtime - 3600
        os.utime(cache, (old, old))
        result = subprocess.run([*TWISTD, "--help"], capture_output=True, text=True, timeout=60)
        assert "stproxy" in result.stdout
    finally:
        if saved is None:
            cache.unlink(missing_ok=True)
        else:
            cache.write_bytes(saved)


def test_wheel_ships_the_dropin_without_claiming_the_twisted_namespace(tmp_path: Path) -> None:
    """twisted/plugins/stproxy_plugin.py is in the wheel; no twisted/__init__.py of ours is."""
    # Built from a copy: setuptools builds in the source tree, and a build/ left there by an
    # earlier build could put modules into this wheel that the sources no longer have.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*cache"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("stproxy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/stproxy_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "twisted/plugins/dropin.cache" not in names
    assert "stproxy/tap.py" in names
