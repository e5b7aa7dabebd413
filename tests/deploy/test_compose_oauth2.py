"""
The OpenID Connect example (``deploy/compose.oauth2-proxy.yaml``): oauth2-proxy asked by
stproxy's ``--forward-auth`` as nginx ``auth_request`` would ask it, Streamlit (which believes its
``server.trustedUserHeaders`` from anyone) reachable by stproxy alone, its config file equal to
what ``python -m stproxy --print-streamlit-config`` prints for the file's command line, the app
showing ``st.user``, secrets from the environment only, and ``docker compose config`` where Docker
Compose is installed.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_files import (
    BASE_IMAGE_PATH,
    DEPLOY,
    as_list,
    compose_duration,
    compose_env,
    dockerfile_env,
    dockerfile_instructions,
    endpoint_port,
    flag_value,
    flag_values,
    healthcheck_url,
    load_yaml,
    only,
    shutdown_timeout,
)
from harness import PROJECT_ROOT

COMPOSE_FILE = DEPLOY / "compose.oauth2-proxy.yaml"
STREAMLIT_CONFIG = DEPLOY / "streamlit-identity.toml"
IDENTITY_APP = DEPLOY / "identity_app.py"

#: What the file requires (``${VAR:?...}``), as its header says to export them. The cookie
#: secret is 32 bytes in URL-safe base64, as ``openssl rand -base64 32 | tr -- '+/' '-_'`` makes.
REQUIRED = {
    "OAUTH2_PROXY_OIDC_ISSUER_URL": "https://idp.example.com/realms/example",
    "OAUTH2_PROXY_CLIENT_ID": "streamlit",
    "OAUTH2_PROXY_CLIENT_SECRET": "client-secret-for-the-tests",
    "OAUTH2_PROXY_COOKIE_SECRET": base64.urlsafe_b64encode(bytes(range(32))).decode(),
    "OAUTH2_PROXY_EMAIL_DOMAINS": "example.com",
}
#: What the file lets a user set, with the default it falls back on.
OPTIONAL = {"STPROXY_HOST": "localhost:8500"}

#: The headers oauth2-proxy's --set-xauthrequest puts on /oauth2/auth's 202.
XAUTHREQUEST_HEADERS = {
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
}


# ----------------------------------------------------------------------------------- helpers


def compose() -> dict[str, Any]:
    (doc,) = load_yaml(COMPOSE_FILE)
    return doc


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` (a missing one fails)."""

    def replace(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        value = environ.get(name, "")
        if value:
            return value
        if operator == ":?":
            raise AssertionError(f"{name} is required: {rest}")
        return rest if operator == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", replace, text)


def strings_in(value: Any) -> list[str]:
    """Every string (keys included) in a parsed YAML document: what compose interpolates."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def variables_in(value: Any) -> tuple[set[str], set[str]]:
    """(every variable, the required ones: ``${VAR:?...}`` or ``${VAR?...}``) in a document."""
    texts = strings_in(value)
    used = {name for text in texts for name in re.findall(r"\$\{(\w+)", text)}
    required = {name for text in texts for name in re.findall(r"\$\{(\w+):?\?", text)}
    return used, required


def networks_of(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks") or {}
    return set(networks) if isinstance(networks, (dict, list)) else set()


def service_name_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def image_seed_environment() -> dict[str, str]:
    """The stproxy image's seed variables (its ENV), which the proxy command line runs with."""
    env = dockerfile_env(dockerfile_instructions(), BASE_IMAGE_PATH)
    names = ("STREAMLIT_HOST", "STREAMLIT_PORT", "PROXY_HOST", "PROXY_PORT")
    return {name: env[name] for name in names if name in env}


def proxy_args() -> list[str]:
    return as_list(compose()["services"]["proxy"]["command"])


def parse_with_stproxy(args: list[str]) -> Any:
    """``args`` through stproxy's own Options, in the image's environment; a usage error fails."""
    from twisted.python import usage

    from stproxy.tap import Options

    options = Options(
        environ={**image_seed_environment(), **compose_env(compose()["services"]["proxy"])}
    )
    options.exitOnError = False
    try:
        options.parseOptions(args)
    except usage.UsageError as e:
        pytest.fail(f"stproxy refuses the proxy's command line {args}: {e}")
    return options


def oauth2_proxy_port(service: dict[str, Any]) -> int:
    address = flag_value(as_list(service["command"]), "--http-address")
    assert address is not None, (
        "oauth2-proxy's --http-address is not given (its default is 127.0.0.1)"
    )
    host, _, port = address.rpartition(":")
    assert host in ("0.0.0.0", ""), (
        f"--http-address {address}: not reachable from stproxy's container"
    )
    return int(port)


def secret_bytes(secret: str) -> bytes:
    """
    The key oauth2-proxy makes of a cookie secret (``encryption.SecretBytes``): the URL-safe
    base64 decoding, '=' padding ignored, if that is 16, 24 or 32 bytes; else the text itself.
    """
    text = secret.rstrip("=")
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        valid_base64 = re.fullmatch(r"[A-Za-z0-9_-]*", text) is not None
    except ValueError:
        decoded, valid_base64 = b"", False
    if valid_base64 and len(decoded) in (16, 24, 32):
        return decoded
    return secret.encode()


def header_comment(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------- the file as written


def test_streamlit_is_reachable_through_stproxy_only() -> None:
    """
    Streamlit believes its trusted user headers from anyone who connects, so it publishes no
    port and sits on one internal network shared with stproxy alone; oauth2-proxy, which
    believes stproxy's X-Forwarded-* headers, is on another network shared with stproxy alone
    and publishes nothing either; stproxy is the one published port.
    """
    doc = compose()
    services = doc["services"]
    assert set(services) == {"streamlit", "oauth2-proxy", "proxy"}
    streamlit, oauth2, proxy = services["streamlit"], services["oauth2-proxy"], services["proxy"]

    for name in ("streamlit", "oauth2-proxy"):
        service = services[name]
        assert "ports" not in service, f"{name} must not be published: stproxy alone reaches it"
        assert service.get("network_mode") is None, f"{name} must stay on its compose network"
    assert [str(p) for p in streamlit["expose"]] == ["8501"]

    assert networks_of(streamlit) == {"backend"}
    assert networks_of(oauth2) == {"front"}
    assert networks_of(proxy) == {"front", "backend"}
    members = {
        network: {name for name, service in services.items() if network in networks_of(service)}
        for network in doc["networks"]
    }
    assert members == {"backend": {"streamlit", "proxy"}, "front": {"oauth2-proxy", "proxy"}}
    assert (doc["networks"]["backend"] or {}).get("internal") is True
    # oauth2-proxy reaches the identity provider, and the proxy's port is published, through front.
    assert not (doc["networks"]["front"] or {}).get("internal")

    published = {}  # container port: host port
    for mapping in proxy["ports"]:
        host, container = str(mapping).split(":")[-2:]
        published[int(container)] = int(host)
    (listen,) = flag_values(proxy_args(), "--listen")
    assert published == {endpoint_port(listen): 8500}


def test_proxy_command_line_asks_oauth2_proxy() -> None:
    """
    stproxy's own parser accepts the proxy's command line: Streamlit at streamlit:8501, every
    request checked at the oauth2-proxy service's /oauth2/auth on the port it listens on,
    browsers not signed in sent to /oauth2/start, /oauth2/ routed to oauth2-proxy, and
    oauth2-proxy's --set-xauthrequest headers naming the user. Nothing in front of stproxy is
    trusted to set X-Forwarded-*.
    """
    services = compose()["services"]
    args = proxy_args()
    config = parse_with_stproxy(args).config

    upstream = config.upstream
    assert (upstream.host, upstream.port) == ("streamlit", 8501)
    streamlit_command = as_list(services["streamlit"]["command"])
    assert "--server.port=8501" in streamlit_command

    forward = config.auth.forward
    assert forward is not None, "no --forward-auth"
    host, port = service_name_of(forward.url)
    assert host == "oauth2-proxy" and host in services
    assert port == oauth2_proxy_port(services["oauth2-proxy"])
    assert urlsplit(forward.url).path == "/oauth2/auth"
    assert forward.signin == "/oauth2/start"
    assert config.auth.passthrough == ("/oauth2",)
    assert set(forward.copyHeaders) <= XAUTHREQUEST_HEADERS
    assert "X-Auth-Request-User" in forward.copyHeaders

    assert flag_values(args, "--trust-forwarded") == [], "nothing is in front of stproxy here"
    assert flag_values(args, "--auth") == [], "sign-in is oauth2-proxy's job here"


def test_proxy_service_is_the_house_one() -> None:
    """
    The proxy's health check reaches its admin listener, its grace period outlasts the drain,
    its descriptor limit allows the default connection count, and it starts once Streamlit and
    oauth2-proxy answer their own health checks.
    """
    proxy = compose()["services"]["proxy"]
    args = proxy_args()
    options = parse_with_stproxy(args)
    admin = options.config.operations.admin
    assert admin is not None and healthcheck_url(as_list(proxy["healthcheck"]["test"])) == (
        endpoint_port(admin),
        "/healthz",
    )
    assert compose_duration(proxy["stop_grace_period"]) > shutdown_timeout(args)
    assert int(proxy["ulimits"]["nofile"]) >= 65536
    assert {name: dep["condition"] for name, dep in proxy["depends_on"].items()} == {
        "streamlit": "service_healthy",
        "oauth2-proxy": "service_healthy",
    }


def test_every_container_is_hardened() -> None:
    """
    Every service drops every capability, forbids privilege escalation, has a read-only root
    file system, restarts, and has a health check on its own port; oauth2-proxy's image is a
    pinned release and runs as a non-root user, and Streamlit's $HOME is writable tmpfs.
    """
    services = compose()["services"]
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["read_only"] is True, name
        assert service["restart"] == "unless-stopped", name
        assert "test" in service["healthcheck"], name

    oauth2 = services["oauth2-proxy"]
    assert re.fullmatch(
        r"quay\.io/oauth2-proxy/oauth2-proxy:v\d+\.\d+\.\d+(-alpine)?", oauth2["image"]
    )
    assert str(oauth2["user"]).split(":")[0] not in ("0", "root")
    assert healthcheck_url(as_list(oauth2["healthcheck"]["test"])) == (
        oauth2_proxy_port(oauth2),
        "/ping",
    )

    streamlit = services["streamlit"]
    assert healthcheck_url(as_list(streamlit["healthcheck"]["test"])) == (8501, "/_stcore/health")
    home = dockerfile_env(
        dockerfile_instructions(DEPLOY / "Dockerfile.streamlit"), BASE_IMAGE_PATH
    )["HOME"]
    assert home in streamlit["tmpfs"], "Streamlit writes to $HOME: it must be writable"


def test_oauth2_proxy_answers_as_auth_request_wants() -> None:
    """
    oauth2-proxy runs as nginx's auth_request and Caddy's forward_auth examples have it: the
    OIDC provider, listening beyond loopback, proxying nothing itself (``static://202``),
    naming the user in X-Auth-Request-* headers, believing the proxy's X-Forwarded-* headers;
    and PKCE.
    """
    command = as_list(compose()["services"]["oauth2-proxy"]["command"])
    assert flag_value(command, "--provider") == "oidc"
    assert flag_values(command, "--upstream") == ["static://202"]
    assert flag_value(command, "--set-xauthrequest") == "true"
    assert flag_value(command, "--reverse-proxy") == "true"
    assert flag_value(command, "--code-challenge-method") == "S256"
    assert oauth2_proxy_port(compose()["services"]["oauth2-proxy"]) == 4180


@pytest.mark.parametrize("host", [None, "streamlit.example.com:8443"])
def test_sign_in_comes_back_through_stproxy(host: str | None) -> None:
    """
    The provider sends the browser back to /oauth2/callback on the host browsers use for stproxy
    (localhost:8500 unless STPROXY_HOST says otherwise), which stproxy routes to oauth2-proxy;
    oauth2-proxy then returns to stproxy's absolute rd= URL only on that host (no open redirect).
    The header gives the default redirect URI to register.
    """
    environ = {} if host is None else {"STPROXY_HOST": host}
    expected_host = host or OPTIONAL["STPROXY_HOST"]
    command = [
        interpolate(arg, environ)
        for arg in as_list(compose()["services"]["oauth2-proxy"]["command"])
    ]

    redirect = flag_value(command, "--redirect-url")
    assert redirect == f"http://{expected_host}/oauth2/callback"
    (passthrough,) = parse_with_stproxy(proxy_args()).config.auth.passthrough
    assert urlsplit(redirect).path.startswith(passthrough + "/")
    assert flag_values(command, "--whitelist-domain") == [expected_host]
    if host is None:
        assert f"    {redirect}\n" in header_comment(COMPOSE_FILE) + "\n"


def test_secrets_come_from_the_environment() -> None:
    """
    The provider's settings and the secrets reach oauth2-proxy under the names it reads
    (OAUTH2_PROXY_*), each from the same-named variable with no default (``${VAR:?...}``), never
    on a command line; compose requires exactly those variables, and the header exports each one.
    """
    doc = compose()
    used, required = variables_in(doc)
    assert required == set(REQUIRED)
    assert used == set(REQUIRED) | set(OPTIONAL)

    env = compose_env(doc["services"]["oauth2-proxy"])
    assert set(env) == set(REQUIRED)
    for name, value in env.items():
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value), (
            f"{name}: {value!r} is not ${{{name}:?...}}"
        )
    for service in doc["services"].values():
        command = as_list(service["command"])
        for flag in ("--client-secret", "--cookie-secret"):
            assert flag_values(command, flag) == [], f"{flag} on a command line shows in ps"

    header = header_comment(COMPOSE_FILE)
    exported = set(re.findall(r"^#\s+export (\w+)=", header, re.M))
    assert exported == used, f"the header exports {exported}, the file uses {used}"


def test_the_cookie_secret_recipe_makes_a_valid_secret() -> None:
    """
    The header's command for OAUTH2_PROXY_COOKIE_SECRET makes a secret oauth2-proxy accepts
    (a key of 16, 24 or 32 bytes), and so is the value these tests export.
    """
    assert len(secret_bytes(REQUIRED["OAUTH2_PROXY_COOKIE_SECRET"])) == 32
    assert len(secret_bytes("0123456789abcdef0123456789abcdef0123456789abcdef")) not in (16, 24, 32)

    (recipe,) = re.findall(
        r"export OAUTH2_PROXY_COOKIE_SECRET=\$\((.+)\)\s*$", header_comment(COMPOSE_FILE), re.M
    )
    if shutil.which("openssl") is None or shutil.which("sh") is None:
        pytest.skip("no openssl here to run the header's recipe")
    secrets = {
        subprocess.run(
            ["sh", "-c", recipe], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    }
    assert len(secrets) == 3, "the recipe must make a new secret each time"
    for secret in secrets:
        assert len(secret_bytes(secret)) == 32, secret


# ------------------------------------------------------------------------------ Streamlit's side


def test_streamlit_config_is_what_stproxy_prints() -> None:
    """
    deploy/streamlit-identity.toml, past its comment header, is exactly what ``python -m stproxy``
    prints with the proxy's command line and --print-streamlit-config: Streamlit reads the very
    headers stproxy sets.
    """
    result = subprocess.run(
        [sys.executable, "-m", "stproxy", *proxy_args(), "--print-streamlit-config"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **image_seed_environment()},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout
    assert "trustedUserHeaders" in printed

    text = STREAMLIT_CONFIG.read_text(encoding="utf-8")
    header = header_comment(STREAMLIT_CONFIG)
    assert text.startswith(header)
    body = text[len(header) + 1 :] if header else text
    assert body == printed
    assert tomllib.loads(text) == tomllib.loads(printed)


def test_streamlit_runs_the_app_with_that_config() -> None:
    """
    The streamlit service mounts the config where Streamlit reads it (.streamlit/config.toml in
    the image's working directory) and the identity app where its command runs it, both
    read-only.
    """
    streamlit = compose()["services"]["streamlit"]
    workdir = PurePosixPath(
        only(dockerfile_instructions(DEPLOY / "Dockerfile.streamlit"), "WORKDIR")
    )
    command = as_list(streamlit["command"])
    assert command[:2] == ["streamlit", "run"]

    mounts = {}  # target: (source, mode)
    for volume in streamlit["volumes"]:
        source, target, mode = str(volume).split(":")
        mounts[PurePosixPath(target)] = ((COMPOSE_FILE.parent / source).resolve(), mode)
    assert mounts == {
        workdir / ".streamlit" / "config.toml": (STREAMLIT_CONFIG.resolve(), "ro"),
        workdir / command[2]: (IDENTITY_APP.resolve(), "ro"),
    }


def test_identity_app_shows_every_user_field() -> None:
    """
    The identity app shows each st.user key the Streamlit config fills (user, email, groups)
    as one line, and says the headers are missing when no user arrived.
    """
    from streamlit.testing.v1 import AppTest

    keys = list(
        tomllib.loads(STREAMLIT_CONFIG.read_text())["server"]["trustedUserHeaders"].values()
    )
    user = {"user": "5f0c8d3e-6a41", "email": "alice@example.com", "groups": "admins,staff"}
    assert sorted(keys) == sorted(user)

    app = AppTest.from_file(str(IDENTITY_APP), default_timeout=30)
    app.user = dict(user)
    app.run()
    assert not app.exception
    texts = [element.value for element in app.text]
    for key in keys:
        assert f"{key.capitalize()}: {user[key]}" in texts, texts
    assert not app.warning

    app = AppTest.from_file(str(IDENTITY_APP), default_timeout=30)
    app.user = {}
    app.run()
    assert not app.exception
    assert "User: (none)" in [element.value for element in app.text]
    assert any("trustedUserHeaders" in element.value for element in app.warning)


# ----------------------------------------------------------------------------- Docker Compose


def _compose_command() -> list[str]:
    """``docker compose`` (the plugin) or ``docker-compose``; the test is skipped without either."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            result = subprocess.run(command + ["version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return command
    pytest.skip("no Docker Compose here: neither `docker compose` nor `docker-compose` answers")


def _compose_config(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    names = set(REQUIRED) | set(OPTIONAL)
    clean = {k: v for k, v in os.environ.items() if k not in names}
    return subprocess.run(
        _compose_command() + ["-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**clean, **environ},
        timeout=60,
    )


def test_compose_config_accepts_the_file() -> None:
    """
    ``docker compose config`` (no engine needed) accepts the file with the variables its header
    exports, and its reading matches ours: the values reach oauth2-proxy's environment, the
    redirect URL and allowed host follow STPROXY_HOST, Streamlit publishes nothing and is on
    the internal network only.
    """
    result = _compose_config({**REQUIRED, "STPROXY_HOST": "app.example.com:8443"})
    assert result.returncode == 0, result.stdout + result.stderr
    (doc,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    services = doc["services"]

    oauth2 = services["oauth2-proxy"]
    assert compose_env(oauth2) == REQUIRED
    command = as_list(oauth2["command"])
    assert flag_value(command, "--redirect-url") == "http://app.example.com:8443/oauth2/callback"
    assert flag_values(command, "--whitelist-domain") == ["app.example.com:8443"]
    assert flag_values(command, "--upstream") == ["static://202"]

    streamlit = services["streamlit"]
    assert "ports" not in streamlit
    assert networks_of(streamlit) == {"backend"}
    assert doc["networks"]["backend"]["internal"] is True
    assert as_list(services["proxy"]["command"]) == proxy_args()


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_compose_config_refuses_without_each_variable(name: str) -> None:
    """
    Without any one of the required variables ``docker compose config`` fails and names it,
    rather than start oauth2-proxy with an empty provider setting or secret.
    """
    result = _compose_config({k: v for k, v in REQUIRED.items() if k != name})
    assert result.returncode != 0, f"compose accepted the file without {name}"
    assert name in result.stdout + result.stderr
