"""
The compose files (``deploy/compose.yaml``, ``deploy/compose.tls.yaml``,
``deploy/compose.replicas.yaml``): the services, ports, health checks, grace periods and
certificate mount stproxy needs, three Streamlit replicas found through Docker's DNS with one
cookie secret, and ``docker compose config`` where Docker Compose is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from deploy_files import (
    ALL_COMPOSE_FILES,
    COMPOSE_FILES,
    COMPOSE_VARIABLES,
    DEPLOY,
    REPLICAS_COMPOSE_FILE,
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


@pytest.fixture(params=ALL_COMPOSE_FILES)
def any_compose_file(request) -> Path:
    return DEPLOY / request.param


def test_compose_services(any_compose_file: Path) -> None:
    """
    Every compose file: the streamlit and proxy services as SEED-README's example has them,
    Streamlit reached through stproxy only, health checks, and a drain within the grace period.
    """
    (doc,) = load_yaml(any_compose_file)
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
        context = (any_compose_file.parent / build["context"]).resolve()
        assert context == PROJECT_ROOT
        assert (context / build["dockerfile"]).is_file()


def test_compose_single_upstream(compose_file: Path) -> None:
    """The one-replica compose files name Streamlit through the seed variables."""
    (doc,) = load_yaml(compose_file)
    env = compose_env(doc["services"]["proxy"])
    assert env["STREAMLIT_HOST"] == "streamlit"
    assert env.get("STREAMLIT_PORT", "8501") == "8501"
    assert flag_values(as_list(doc["services"]["proxy"]["command"]), "--upstream-dns") == []


def test_compose_replicas() -> None:
    """
    The replicas compose file runs three Streamlit containers and stproxy finds them with
    --upstream-dns streamlit:8501 asking Docker's embedded DNS server (127.0.0.11), which
    answers the service name with one A record per container; the proxy is published on 8500.
    """
    (doc,) = load_yaml(DEPLOY / REPLICAS_COMPOSE_FILE)
    streamlit, proxy = doc["services"]["streamlit"], doc["services"]["proxy"]
    assert streamlit["deploy"]["replicas"] == 3
    assert "container_name" not in streamlit, "a fixed name allows one container only"

    command = as_list(proxy["command"])
    (upstream,) = flag_values(command, "--upstream-dns")
    assert upstream == "streamlit:8501"
    assert flag_value(command, "--resolver") in ("127.0.0.11", "127.0.0.11:53")
    assert not {"STREAMLIT_HOST", "STREAMLIT_PORT"} & set(compose_env(proxy))
    assert [str(p) for p in proxy["ports"]] == ["8500:8500"]


def test_compose_replicas_share_secrets() -> None:
    """
    Every Streamlit replica gets the same cookie secret from a variable that has no default
    (a default written in the file would be everyone's secret), and stproxy reads its affinity
    key from a compose secret whose file is git-ignored.
    """
    (doc,) = load_yaml(DEPLOY / REPLICAS_COMPOSE_FILE)
    streamlit, proxy = doc["services"]["streamlit"], doc["services"]["proxy"]
    cookie = compose_env(streamlit)["STREAMLIT_SERVER_COOKIE_SECRET"]
    match = re.fullmatch(r"\$\{(\w+):?\?[^}]*\}", cookie)
    assert match, f"{cookie!r}: not ${{VAR:?message}}, a required variable"
    assert match.group(1) in COMPOSE_VARIABLES

    # Compose mounts a service's secret SOURCE (short form) or {source, target} at
    # /run/secrets/TARGET (TARGET defaults to SOURCE).
    path = PurePosixPath(flag_value(as_list(proxy["command"]), "--affinity-secret-file"))
    assert path.parent == PurePosixPath("/run/secrets")
    mounted = {}  # target: source
    for secret in proxy["secrets"]:
        if isinstance(secret, str):
            secret = {"source": secret}
        mounted[secret.get("target", secret["source"])] = secret["source"]
    assert path.name in mounted, f"no secret is mounted at {path}"
    key_file = doc["secrets"][mounted[path.name]]["file"]
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    relative = (DEPLOY / key_file).resolve().relative_to(PROJECT_ROOT)
    result = subprocess.run(["git", "check-ignore", "-q", str(relative)], cwd=PROJECT_ROOT)
    assert result.returncode == 0, f"{relative} is not git-ignored"


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


def _compose_config(
    compose: list[str], compose_file: Path, environ: dict[str, str]
) -> subprocess.CompletedProcess:
    return subprocess.run(
        compose + ["-f", str(compose_file), "config"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=environ,
        timeout=60,
    )


def _needs_compose() -> list[str]:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no Docker Compose here: `docker compose` (the CLI plugin) is not installed and"
            " neither is `docker-compose`"
        )
    return command


def _without_compose_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}


def test_compose_config(any_compose_file: Path) -> None:
    """
    ``docker compose -f FILE config`` (no engine needed) accepts the file, with the variables
    it requires set as its header says to.
    """
    result = _compose_config(
        _needs_compose(), any_compose_file, {**_without_compose_variables(), **COMPOSE_VARIABLES}
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_replicas_config() -> None:
    """
    Docker Compose's own reading of the replicas file: three streamlit replicas, each with the
    exported cookie secret, and stproxy's --upstream-dns/--resolver/--affinity-secret-file; and
    it refuses to run without the cookie secret rather than fall back on a default.
    """
    compose = _needs_compose()
    compose_file = DEPLOY / REPLICAS_COMPOSE_FILE
    environ = {**_without_compose_variables(), **COMPOSE_VARIABLES}
    result = _compose_config(compose, compose_file, environ)
    assert result.returncode == 0, result.stdout + result.stderr
    (doc,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    streamlit, proxy = doc["services"]["streamlit"], doc["services"]["proxy"]
    assert streamlit["deploy"]["replicas"] == 3
    cookie = compose_env(streamlit)["STREAMLIT_SERVER_COOKIE_SECRET"]
    assert cookie == COMPOSE_VARIABLES["STREAMLIT_COOKIE_SECRET"]
    command = as_list(proxy["command"])
    assert flag_values(command, "--upstream-dns") == ["streamlit:8501"]
    assert flag_value(command, "--resolver") in ("127.0.0.11", "127.0.0.11:53")
    assert flag_value(command, "--affinity-secret-file") is not None

    unset = _compose_config(compose, compose_file, _without_compose_variables())
    assert unset.returncode != 0
    assert "STREAMLIT_COOKIE_SECRET" in unset.stdout + unset.stderr
