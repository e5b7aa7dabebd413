"""
The compose files (``deploy/compose.yaml``, ``deploy/compose.tls.yaml``): the services, ports,
health checks, grace periods and certificate mount stproxy needs, and ``docker compose config``
where Docker Compose is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy_files import (
    COMPOSE_FILES,
    DEPLOY,
    as_list,
    compose_duration,
    compose_env,
    endpoint_port,
    flag_value,
    flag_values,
    healthcheck_url,
    load_yaml,
    shutdown_timeout,
)
from harness import PROJECT_ROOT


@pytest.fixture(params=COMPOSE_FILES)
def compose_file(request) -> Path:
    return DEPLOY / request.param


def test_compose_services(compose_file: Path) -> None:
    """Both compose files: the streamlit and proxy services as SEED-README's example has them."""
    (doc,) = load_yaml(compose_file)
    services = doc["services"]
    assert set(services) == {"streamlit", "proxy"}

    streamlit = services["streamlit"]
    assert as_list(streamlit["command"]) == [
        "streamlit", "run", "deploy/demo_app.py",
        "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true",
    ]  # fmt: skip
    assert [str(p) for p in streamlit["expose"]] == ["8501"]
    assert "ports" not in streamlit, "Streamlit is reached through stproxy only"
    assert healthcheck_url(as_list(streamlit["healthcheck"]["test"])) == (8501, "/_stcore/health")

    proxy = services["proxy"]
    env = compose_env(proxy)
    assert env["STREAMLIT_HOST"] == "streamlit"
    assert env.get("STREAMLIT_PORT", "8501") == "8501"
    assert proxy["depends_on"]["streamlit"]["condition"] == "service_healthy"

    command = as_list(proxy["command"])
    admin = flag_value(command, "--admin")
    assert admin is not None, "the health check needs the admin listener"
    assert healthcheck_url(as_list(proxy["healthcheck"]["test"])) == (endpoint_port(admin), "/healthz")
    grace = compose_duration(proxy["stop_grace_period"])
    assert grace > shutdown_timeout(command), "docker would SIGKILL before the drain ends"
    # Docker's default soft descriptor limit (1024) would cap connections at 416.
    assert int(proxy["ulimits"]["nofile"]) >= 65536

    for service in services.values():
        build = service["build"]
        context = (compose_file.parent / build["context"]).resolve()
        assert context == PROJECT_ROOT
        assert (context / build["dockerfile"]).is_file()


def test_compose_plain_ports() -> None:
    """
    The plain compose file publishes the proxy on port 8500 of every interface, through the seed
    variables rather than --listen.
    """
    (doc,) = load_yaml(DEPLOY / "compose.yaml")
    proxy = doc["services"]["proxy"]
    assert [str(p) for p in proxy["ports"]] == ["8500:8500"]
    env = compose_env(proxy)
    assert flag_values(as_list(proxy["command"]), "--listen") == []
    assert (env.get("PROXY_HOST", "0.0.0.0"), env.get("PROXY_PORT", "8500")) == ("0.0.0.0", "8500")


def test_compose_tls() -> None:
    """TLS on the published 443, redirects from 80, certificates from ./certs mounted read-only."""
    (doc,) = load_yaml(DEPLOY / "compose.tls.yaml")
    proxy = doc["services"]["proxy"]
    command = as_list(proxy["command"])
    (listen,) = flag_values(command, "--listen")
    assert listen.startswith("ssl:")
    tls_port = endpoint_port(listen)
    redirect_port = endpoint_port(flag_value(command, "--redirect-http"))

    published = {}  # container port: host port
    for mapping in proxy["ports"]:
        host, container = str(mapping).split(":")[-2:]
        published[int(container)] = int(host)
    # The redirect's Location names the TLS listener's own port: it must be the published one.
    assert published[tls_port] == tls_port == 443
    assert published[redirect_port] == 80
    if tls_port < 1024 or redirect_port < 1024:
        assert str(proxy["sysctls"]["net.ipv4.ip_unprivileged_port_start"]) == "0"

    (volume,) = proxy["volumes"]
    source, target, mode = volume.split(":")
    assert (source, mode) == ("./certs", "ro")
    assert flag_value(command, "--tls-cert") == f"{target}/fullchain.pem"
    assert flag_value(command, "--tls-key") == f"{target}/privkey.pem"


def test_certificates_are_not_committed() -> None:
    """
    The TLS compose file's certificate and key under deploy/certs/ are git-ignored, so a real
    key cannot be committed by mistake.
    """
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("fullchain.pem", "privkey.pem"):
        result = subprocess.run(
            ["git", "check-ignore", "-q", f"deploy/certs/{name}"], cwd=PROJECT_ROOT
        )
        assert result.returncode == 0, f"deploy/certs/{name} is not git-ignored"


def _compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or ``docker-compose``, whichever answers ``version``."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            result = subprocess.run(command + ["version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return command
    return None


def test_compose_config(compose_file: Path) -> None:
    """``docker compose -f FILE config`` (no engine needed) accepts the file."""
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no Docker Compose here: `docker compose` (the CLI plugin) is not installed and"
            " neither is `docker-compose`"
        )
    result = subprocess.run(
        command + ["-f", str(compose_file), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
