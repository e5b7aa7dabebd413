"""
The stproxy image without a Docker engine: the Dockerfile's COPY and ``RUN pip install``
replayed in a fresh virtualenv, then its ENTRYPOINT, CMD, ENV and HEALTHCHECK run as the image
would run them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from deploy_files import (
    BASE_IMAGE_PATH,
    DEPLOY,
    copy_instructions,
    dockerfile_env,
    dockerfile_instructions,
    dockerignore_patterns,
    dockerignored,
    endpoint_port,
    flag_value,
    http_get,
    http_status,
    only,
    shutdown_timeout,
)
from harness import PROJECT_ROOT, ProcessOutput, free_port, start_upstream_server, wait_until


class Image:
    """The Dockerfile's filesystem, COPY and RUN replayed under ``root`` (``/opt/stproxy`` -> ``root/opt/stproxy``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instructions = dockerfile_instructions()
        self.entrypoint = json.loads(only(self.instructions, "ENTRYPOINT"))
        self.cmd = json.loads(only(self.instructions, "CMD"))
        self.venv = str(PurePosixPath(self.entrypoint[0]).parent.parent)
        self.image_dirs = {self.venv} | {
            "/" + PurePosixPath(dest).parts[1] for _, dest in copy_instructions(DEPLOY / "Dockerfile")
        }

    def host(self, text: str) -> str:
        """``text`` with the image's own directories moved under ``root``."""
        for directory in sorted(self.image_dirs, key=len, reverse=True):
            text = re.sub(rf"(?<![\w/.]){re.escape(directory)}(?=/|\b|$)", str(self.root) + directory, text)
        return text

    def env(self) -> dict[str, str]:
        return {k: self.host(v) for k, v in dockerfile_env(self.instructions, BASE_IMAGE_PATH).items()}

    def build(self, hostbin: Path) -> list[str]:
        """Replay COPY and the pip-install RUN; returns the RUN lines not replayed."""
        patterns = dockerignore_patterns(DEPLOY / "Dockerfile")
        skipped = []
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        for keyword, rest in self.instructions:
            if keyword == "ENV":
                env.update({k: self.host(v) for k, v in dockerfile_env([(keyword, rest)], env["PATH"]).items()})
            elif keyword == "COPY":
                words = [w for w in shlex.split(rest) if not w.startswith("--")]
                *sources, dest = words
                target = Path(self.host(dest))
                for source in sources:
                    path = PROJECT_ROOT / source
                    if path.is_dir():
                        for file in path.rglob("*"):
                            relative = str(file.relative_to(PROJECT_ROOT))
                            if file.is_file() and not dockerignored(relative, patterns):
                                out = target / file.relative_to(path)
                                out.parent.mkdir(parents=True, exist_ok=True)
                                shutil.copy2(file, out)
                    else:
                        out = target / path.name if dest.endswith("/") else target
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, out)
            elif keyword == "RUN":
                if "pip install" not in rest:
                    skipped.append(rest)
                    continue
                # /bin/sh -c, as docker runs it; `python` is the base image's interpreter.
                run_env = {**env, "PATH": f"{hostbin}:{env['PATH']}"}
                result = subprocess.run(
                    ["/bin/sh", "-c", self.host(rest)],
                    env=run_env,
                    cwd=self.root,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
        return skipped


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    """
    The image's filesystem in a fresh virtualenv: the Dockerfile's COPY and pip-install RUN
    replayed (with every dependency from the package index, as the image gets them).
    About 20-30 s, once per test run.
    """
    root = tmp_path_factory.mktemp("image")
    hostbin = tmp_path_factory.mktemp("hostbin")
    python = hostbin / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    image = Image(root)
    skipped = image.build(hostbin)
    assert all(run.startswith(("useradd", "groupadd")) for run in skipped), (
        f"RUN lines this test does not replay: {skipped}"
    )
    return image


def test_image_install(image: Image) -> None:
    """The RUN left an installed (not editable) stproxy, its twistd dropin and plugin cache, and no sources."""
    root = image.root
    assert not (root / "src").exists(), "the RUN should remove the copied sources"
    venv = Path(image.host(image.venv))
    (site,) = venv.glob("lib/python3*/site-packages")
    plugins = site / "twisted" / "plugins"
    assert (plugins / "stproxy_plugin.py").is_file()
    assert (plugins / "dropin.cache").is_file(), "the plugin cache must be built as root at build time"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import stproxy; print(stproxy.__file__)"],
        env={"PATH": image.env()["PATH"]},
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where


def test_image_starts_serves_and_stops(image: Image, tmp_path: Path) -> None:
    """
    ENTRYPOINT + CMD with the image's ENV: admin /healthz and a proxied request work, the
    HEALTHCHECK command passes (and fails once stopped), SIGTERM ends it with status 0, and
    nothing is written to the working directory.
    """
    upstream = start_upstream_server()
    admin_port, proxy_port = free_port(), free_port()
    admin = flag_value(image.cmd, "--admin")
    image_admin_port = endpoint_port(admin)
    cmd = [
        f"tcp:{admin_port}:interface=127.0.0.1" if arg == admin else arg for arg in image.cmd
    ]
    argv = [image.host(a) for a in image.entrypoint] + cmd
    env = {
        **image.env(),
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        # The seed variables, pointed at this test's upstream and a free loopback port.
        "STREAMLIT_HOST": "127.0.0.1",
        "STREAMLIT_PORT": str(upstream.port),
        "PROXY_HOST": "127.0.0.1",
        "PROXY_PORT": str(proxy_port),
    }
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    process = subprocess.Popen(
        argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    output = ProcessOutput(process.stdout)

    healthcheck = only(image.instructions, "HEALTHCHECK")
    check = [
        image.host(a).replace(f"127.0.0.1:{image_admin_port}/", f"127.0.0.1:{admin_port}/")
        for a in json.loads(healthcheck.split(" CMD ", 1)[1])
    ]

    def run_healthcheck() -> int:
        return subprocess.run(check, env=env, cwd=workdir, capture_output=True, timeout=30).returncode

    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"exited with {process.returncode}:\n{output.text()}")
            return http_status(f"http://127.0.0.1:{admin_port}/healthz") == 200

        wait_until(up, 30, interval=0.1, message=lambda: f"no /healthz:\n{output.text()}")
        status, body = http_get(f"http://127.0.0.1:{proxy_port}/echo/from-the-image")
        assert status == 200, body
        assert json.loads(body)["path"] == "/echo/from-the-image"
        assert http_status(f"http://127.0.0.1:{admin_port}/metrics") == 200
        assert run_healthcheck() == 0
        # --log-format json: stproxy's events are JSON lines (twistd's own lines stay text).
        lines = [line for line in output.text().splitlines() if line.strip()]
        assert any(line.startswith("{") for line in lines), output.text()
        for line in lines:
            if line.startswith("{"):
                json.loads(line)

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=shutdown_timeout(image.cmd) + 10)
        assert code == 0, output.text()
        assert time.monotonic() - started < 10, "an idle proxy should stop at once"
        assert run_healthcheck() != 0, "the health check must fail when stproxy is down"
        assert list(workdir.iterdir()) == [], "the image's root filesystem may be read-only"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.join()
        upstream.stop()
