"""
The Dockerfiles (``deploy/Dockerfile``, ``deploy/Dockerfile.streamlit``): the image's shape
(base, user, ports, entry point, health check) and what COPY brings in past the ``.dockerignore``.
"""

from __future__ import annotations

import json
import re

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
    healthcheck_url,
    only,
)
from harness import PROJECT_ROOT


def test_dockerfile_shape() -> None:
    """
    The image runs twistd stproxy from a python:3.12-slim base as a numeric non-root user,
    exposes 8500, stops on SIGTERM, logs JSON and checks /healthz on the admin port without curl
    or wget.
    """
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert only(instructions, "FROM") == "python:3.12-slim"
    user = only(instructions, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER (runAsNonRoot can check it)"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert only(instructions, "EXPOSE").split() == ["8500"]
    assert only(instructions, "STOPSIGNAL") == "SIGTERM"
    entrypoint = json.loads(only(instructions, "ENTRYPOINT"))
    assert entrypoint[1:] == ["-n", "--pidfile=", "stproxy"] and entrypoint[0].endswith("/twistd")
    cmd = json.loads(only(instructions, "CMD"))
    assert flag_value(cmd, "--admin") == "tcp:9100:interface=0.0.0.0"
    assert flag_value(cmd, "--log-format") == "json"
    env = dockerfile_env(instructions, BASE_IMAGE_PATH)
    assert (env["STREAMLIT_HOST"], env["STREAMLIT_PORT"], env["PROXY_HOST"], env["PROXY_PORT"]) == (
        "streamlit", "8501", "0.0.0.0", "8500",
    )  # fmt: skip
    healthcheck = only(instructions, "HEALTHCHECK")
    exec_form = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert healthcheck_url(exec_form) == (endpoint_port(flag_value(cmd, "--admin")), "/healthz")
    assert "curl" not in healthcheck and "wget" not in healthcheck


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.streamlit"])
def test_dockerfile_copies_only_whats_needed(name: str) -> None:
    """COPY sources exist, survive the .dockerignore, and bring no tests, VCS data or keys."""
    dockerfile = DEPLOY / name
    patterns = dockerignore_patterns(dockerfile)
    for sources, _dest in copy_instructions(dockerfile):
        for source in sources:
            path = PROJECT_ROOT / source
            assert path.exists(), source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [f for f in files if not dockerignored(str(f.relative_to(PROJECT_ROOT)), patterns)]
            assert kept, f"{source} is entirely excluded by {name}.dockerignore"
            for file in kept:
                relative = str(file.relative_to(PROJECT_ROOT))
                assert not re.search(r"(^|/)(tests|\.git|__pycache__)(/|$)|\.(pem|key|pyc)$", relative), relative
    for never in (".git/config", "tests/deploy/test_dockerfile.py", "deploy/certs/privkey.pem", "build/lib/x.py"):
        assert dockerignored(never, patterns), never
