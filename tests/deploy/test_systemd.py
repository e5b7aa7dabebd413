"""
The deploy files (``deploy/``): each is read the way its tool reads it and checked against what
stproxy needs, and the parts that can run here do run.

- Compose files and Kubernetes manifests: YAML with the expected services, ports, probes, grace
  periods and Secret mount; ``docker compose config`` and ``kubectl kustomize`` where installed.
- Every stproxy command line in them (Dockerfile CMD, compose, Kubernetes, systemd) is accepted
  by stproxy's own option parser, with the environment each one runs with.
- The systemd units: sandboxing keys, ``systemd-analyze verify`` and ``security``; and stproxy
  with TLS actually runs under the unit's seccomp filters (SystemCallFilter,
  RestrictAddressFamilies, MemoryDenyWriteExecute when set), rebuilt here with libseccomp.
- The Dockerfile: its COPY, its pip-install RUN, its ENTRYPOINT, CMD, ENV and HEALTHCHECK run
  in a fresh virtualenv as the image would run them (no Docker engine needed).

Run as a script (``python tests/test_deploy.py --sandbox ... -- COMMAND``), this file is the
seccomp launcher used by the sandbox test.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import errno
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest
import yaml

from harness import (
    PROJECT_ROOT,
    ProcessOutput,
    free_port,
    start_proxy,
    start_upstream_server,
    wait_until,
)

DEPLOY = PROJECT_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE_FILES = ["compose.yaml", "compose.tls.yaml"]

#: Keys the stproxy unit must set (value ``None``: any value), per the deployment brief.
SANDBOX = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    # MemoryDenyWriteExecute: decided by test_stproxy_runs_under_the_units_seccomp_filters
    # (pyOpenSSL's cffi callbacks need write+execute pages, so it is off for TLS).
    "CapabilityBoundingSet": "",
}


# ------------------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def flag_values(args: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` in ``args`` (``--flag VALUE`` or ``--flag=VALUE``)."""
    values = []
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
    return values


def flag_value(args: list[str], flag: str) -> str | None:
    values = flag_values(args, flag)
    return values[-1] if values else None


def default_shutdown_timeout() -> float:
    from stproxy.tap import Options

    for name, _short, default, _doc in Options.optParameters:
        if name == "shutdown-timeout":
            return float(default)
    raise AssertionError("stproxy has no --shutdown-timeout option")


def shutdown_timeout(args: list[str]) -> float:
    value = flag_value(args, "--shutdown-timeout")
    return float(value) if value is not None else default_shutdown_timeout()


def endpoint_port(description: str) -> int:
    """The port of a ``tcp:PORT[:...]``/``ssl:PORT[:...]`` endpoint description."""
    match = re.match(r"^(?:tcp|ssl):(?:port=)?(\d+)(?::|$)", description)
    assert match, f"not a tcp:/ssl: endpoint with a port: {description!r}"
    return int(match.group(1))


def compose_duration(text: str | int) -> float:
    """Seconds in a compose duration (``45s``, ``1m30s``, ``500ms``)."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def as_list(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def healthcheck_url(command: list[str]) -> tuple[int, str]:
    """The loopback port and path a healthcheck command fetches."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"\s]*)", " ".join(command))
    assert match, f"no http://127.0.0.1:PORT/PATH in the health check {command}"
    return int(match.group(1)), match.group(2)


def http_get(url: str, timeout: float = 5, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_status(url: str) -> int | None:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:
        return None


def make_certificate(directory: Path, cert_name: str, key_name: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for localhost/127.0.0.1, written as ``cert_name``/``key_name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / cert_name, directory / key_name
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


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


# ------------------------------------------------------------------------------------- compose


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

    for service in services.values():
        build = service["build"]
        context = (compose_file.parent / build["context"]).resolve()
        assert context == PROJECT_ROOT
        assert (context / build["dockerfile"]).is_file()


def test_compose_plain_ports() -> None:
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


# ---------------------------------------------------------------------------------- Kubernetes


def k8s_objects() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def container_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for entry in container["ports"]:
        if entry.get("name") == port:
            return entry["containerPort"]
    raise AssertionError(f"no container port named {port!r}")


def check_hardened_pod(pod: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod.get("enableServiceLinks") is False, (
        "service links put STREAMLIT_PORT=tcp://... into the environment"
    )
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])


def check_service_targets(service: dict, deployment: dict) -> dict[int, int]:
    """The Service selects the Deployment's pods; returns {service port: container port}."""
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    return {
        p["port"]: container_port(container, p.get("targetPort", p["port"]))
        for p in service["spec"]["ports"]
    }


def test_kubernetes_streamlit() -> None:
    objects = k8s_objects()
    deployment, service = objects[("Deployment", "streamlit")], objects[("Service", "streamlit")]
    pod = deployment["spec"]["template"]["spec"]
    check_hardened_pod(pod)
    (container,) = pod["containers"]
    assert "--server.port=8501" in container["command"] + container.get("args", [])
    assert check_service_targets(service, deployment) == {8501: 8501}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], container_port(container, get["port"])) == ("/_stcore/health", 8501)
    # Several replicas need every request of a session on one replica (README, "Several Streamlit replicas").
    assert service["spec"]["sessionAffinity"] == "ClientIP"


def test_kubernetes_stproxy() -> None:
    objects = k8s_objects()
    deployment, service = objects[("Deployment", "stproxy")], objects[("Service", "stproxy")]
    pod = deployment["spec"]["template"]["spec"]
    check_hardened_pod(pod)
    (container,) = pod["containers"]
    args = container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}

    # The upstream is the streamlit Service.
    streamlit_service = objects[("Service", "streamlit")]
    assert env["STREAMLIT_HOST"] == streamlit_service["metadata"]["name"]
    assert int(env["STREAMLIT_PORT"]) in {p["port"] for p in streamlit_service["spec"]["ports"]}

    # Listeners: TLS on 8443 and plain HTTP on 8500, both behind the Service.
    listens = flag_values(args, "--listen")
    assert "ssl:8443" in listens and "tcp:8500" in listens
    targets = check_service_targets(service, deployment)
    assert set(targets.values()) == {8443, 8500}

    # Probes on the admin port.
    admin_port = endpoint_port(flag_value(args, "--admin"))
    assert admin_port == 9100
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert (get["path"], container_port(container, get["port"])) == (path, admin_port)

    # SIGTERM comes after preStop; the drain must end before the grace period does.
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep = float(command[1])
    assert 1 <= sleep <= 15
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > sleep + shutdown_timeout(args)

    # The certificate: a kubernetes.io/tls Secret mounted read-only where the flags look.
    cert, key = flag_value(args, "--tls-cert"), flag_value(args, "--tls-key")
    assert (PurePosixPath(cert).name, PurePosixPath(key).name) == ("tls.crt", "tls.key")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(PurePosixPath(cert).parent))
    assert mount["readOnly"] is True and "subPath" not in mount, "subPath mounts never see renewals"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "stproxy-tls"
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o007 == 0 or mode == 0o644  # not world-readable unless Kubernetes' default
    if mode & 0o004 == 0:
        assert pod["securityContext"].get("fsGroup") == pod["securityContext"]["runAsGroup"]


def test_kustomize_renders() -> None:
    """``kubectl apply -k deploy/kubernetes`` renders (``kubectl kustomize`` needs no cluster)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d}
    assert rendered == set(k8s_objects())


# ------------------------------------------------------------------------------------- systemd


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (continuation lines joined)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(unit: dict) -> dict[str, str]:
    """The EnvironmentFile's variables, from its example deploy/stproxy.env."""
    (env_file,) = unit["Service"]["EnvironmentFile"]
    assert env_file.lstrip("-") == "/etc/stproxy/stproxy.env"
    env = {}
    for line in (DEPLOY / "stproxy.env").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def exec_start_args(unit: dict, env: dict[str, str]) -> list[str]:
    """stproxy's arguments from ExecStart, with $VAR expanded as systemd does (split at spaces)."""
    (exec_start,) = unit["Service"]["ExecStart"]
    words = []
    for word in shlex.split(exec_start):
        if re.fullmatch(r"\$\w+", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(word)
    assert words[:4] == ["/opt/stproxy/bin/twistd", "-n", "--pidfile=", "stproxy"]
    return words[4:]


def test_systemd_unit_sandboxing() -> None:
    unit = read_unit(DEPLOY / "stproxy.service")
    service = unit["Service"]
    for key, value in SANDBOX.items():
        assert service.get(key, [None])[-1] == value, f"{key}={value} missing from stproxy.service"
    assert service["SystemCallFilter"][0] == "@system-service"
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["Restart"] == ["on-failure"]
    args = exec_start_args(unit, unit_environment(unit))
    assert float(service["TimeoutStopSec"][0]) > shutdown_timeout(args)
    # No capability is granted that the bounding set does not allow.
    ambient = service.get("AmbientCapabilities", [""])[-1].split()
    assert set(ambient) <= set(service["CapabilityBoundingSet"][-1].split())


def _units_for_verify(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart binaries exist here (verify checks they do)."""
    bindir = Path(sys.executable).parent
    replacements = {
        "/opt/stproxy/bin/twistd": bindir / "twistd",
        "/opt/streamlit/bin/streamlit": bindir / "streamlit",
    }
    units = []
    for name in ("stproxy.service", "streamlit.service"):
        text = (DEPLOY / name).read_text(encoding="utf-8")
        for image_path, local in replacements.items():
            if image_path in text:
                if not local.exists():
                    pytest.skip(f"{local} is not installed")
                text = text.replace(image_path, str(local))
        (tmp_path / name).write_text(text, encoding="utf-8")
        units.append(tmp_path / name)
    return units


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify``: no unknown keys, bad values or missing binaries."""
    tool = _systemd_analyze()
    units = _units_for_verify(tmp_path)
    result = subprocess.run(
        [tool, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and only warns, so the output must be empty too.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0 and any("Failed to" in line and "manager" in line for line in complaints):
        pytest.skip(f"systemd-analyze verify cannot run in this container: {complaints}")
    assert result.returncode == 0 and not complaints, complaints


def test_systemd_analyze_security(tmp_path: Path) -> None:
    """``systemd-analyze security --offline``: the stproxy unit's exposure is low (OK or better)."""
    tool = _systemd_analyze()
    unit = _units_for_verify(tmp_path)[0]
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline is not available: {result.stderr.strip()}")
    assert float(match.group(1)) <= 2.0, result.stdout


# ------------------------------------------------------- the unit's seccomp filters, for real

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_EQ = 4
_SCMP_CMP_MASKED_EQ = 7


def _scmp_act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _libseccomp():
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups (``systemd-analyze syscall-filter``): {"@name": [members]}."""
    output = subprocess.run(
        [_systemd_analyze(), "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand_syscalls(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    for name in names:
        result |= expand_syscalls(groups[name], groups) if name.startswith("@") else {name}
    return result


def _sandbox_main(argv: list[str]) -> None:
    """
    Exec a command under seccomp filters equivalent to the unit's SystemCallFilter=,
    SystemCallErrorNumber=EPERM, RestrictAddressFamilies= and (with --write-xor-execute)
    MemoryDenyWriteExecute=yes
    (as systemd 252 builds them: separate filters, the most restrictive answer wins).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow-file", required=True)
    parser.add_argument("--families", required=True)
    parser.add_argument("--write-xor-execute", action="store_true")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    lib = _libseccomp()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (NoNewPrivileges=yes)
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")

    def rule(ctx: int, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a system call on this architecture
        array = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
        if lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array) != 0:
            raise OSError(f"seccomp_rule_add {name}")

    # 1. The allow list: everything else fails with EPERM.
    allowed = Path(args.allow_file).read_text().split()
    allow = lib.seccomp_init(_scmp_act_errno(errno.EPERM))
    for name in allowed:
        rule(allow, _SCMP_ACT_ALLOW, name)
    # 2. W^X: no mapping both writable and executable; no mprotect to executable.
    wx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    prot_wx = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
    rule(wx, _scmp_act_errno(errno.EPERM), "mmap", (2, _SCMP_CMP_MASKED_EQ, prot_wx, prot_wx))
    for name in ("mprotect", "pkey_mprotect"):
        rule(wx, _scmp_act_errno(errno.EPERM), name, (2, _SCMP_CMP_MASKED_EQ, 0x4, 0x4))
    rule(wx, _scmp_act_errno(errno.EPERM), "shmat", (2, _SCMP_CMP_MASKED_EQ, 0o100000, 0o100000))
    # 3. Address families: socket() in any other family fails with EAFNOSUPPORT.
    families = {getattr(socket, name) for name in args.families.split()}
    af = lib.seccomp_init(_SCMP_ACT_ALLOW)
    for family in range(0, 64):
        if family not in families:
            rule(af, _scmp_act_errno(errno.EAFNOSUPPORT), "socket", (0, _SCMP_CMP_EQ, family, 0))
    # The allow list last: seccomp(2) itself is not on it.
    for ctx in ([wx] if args.write_xor_execute else []) + [af, allow]:
        result = lib.seccomp_load(ctx)
        if result != 0:
            raise OSError(-result, f"seccomp_load: {os.strerror(-result)}")
    os.execv(args.command[0], args.command)


def test_stproxy_runs_under_the_units_seccomp_filters(tmp_path: Path) -> None:
    """
    TLS stproxy (pyOpenSSL's cffi callbacks, Twisted, Autobahn) serves and reloads on SIGHUP
    under the stproxy unit's system call allow list and address-family filter, and W^X when
    the unit sets MemoryDenyWriteExecute=yes.
    """
    lib = _libseccomp()
    if lib is None:
        pytest.skip("libseccomp is not installed")
    service = read_unit(DEPLOY / "stproxy.service")["Service"]
    groups = syscall_groups()
    allowed: set[str] = set()
    for line in service["SystemCallFilter"]:
        if line.startswith("~"):
            allowed -= expand_syscalls(line[1:].split(), groups)
        else:
            allowed |= expand_syscalls(line.split(), groups)
    assert service["SystemCallErrorNumber"] == ["EPERM"]
    write_xor_execute = service.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"
    allow_file = tmp_path / "allowed.txt"
    allow_file.write_text("\n".join(sorted(allowed)))

    cert, key = make_certificate(tmp_path / "tls", "fullchain.pem", "privkey.pem")
    twistd = Path(sys.executable).parent / "twistd"
    probe = subprocess.run(
        [sys.executable, __file__, "--allow-file", str(allow_file), "--families", "AF_INET", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0 and "seccomp_load" in probe.stderr:
        pytest.skip(f"seccomp filters cannot be loaded here: {probe.stderr.strip().splitlines()[-1]}")
    launcher = [
        sys.executable, __file__, "--allow-file", str(allow_file),
        "--families", service["RestrictAddressFamilies"][-1],
        *(["--write-xor-execute"] if write_xor_execute else []), "--", str(twistd),
    ]  # fmt: skip
    upstream = start_upstream_server()
    try:
        proxy = start_proxy(
            "--upstream", upstream.address,
            "--listen", "ssl:0:interface=127.0.0.1",
            "--tls-cert", str(cert), "--tls-key", str(key),
            command=[*launcher, "-n", "--pidfile=", "stproxy"],
        )  # fmt: skip
        try:
            context = ssl.create_default_context(cafile=str(cert))
            url = f"https://127.0.0.1:{proxy.port}/echo/sandboxed"
            status, body = http_get(url, context=context)
            assert status == 200, body
            assert json.loads(body)["path"] == "/echo/sandboxed"
            # ExecReload: SIGHUP reloads the certificate and the proxy goes on serving.
            since = len(proxy.output())
            os.kill(proxy.pid, signal.SIGHUP)
            reloaded = proxy.wait_for_output(r"[^\n]*reload[^\n]*", timeout=10, since=since)
            assert "fail" not in reloaded.group(0), proxy.output()
            assert http_get(url, context=context)[0] == 200
            assert proxy.process.poll() is None, proxy.output()
            assert "Operation not permitted" not in proxy.output(), proxy.output()
        finally:
            code = proxy.stop(timeout=20)
        assert code == 0, proxy.output()
    finally:
        upstream.stop()


# ------------------------------------------------------------------- every stproxy command line


def dockerfile_instructions(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    instructions = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env(instructions: list[tuple[str, str]], base_path: str) -> dict[str, str]:
    """The final image's ENV, ``$PATH``/``${PATH}`` expanded from ``base_path`` and earlier ENV."""
    env = {"PATH": base_path}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                value = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
                env[key] = value
    return env


def only(instructions: list[tuple[str, str]], keyword: str) -> str:
    values = [rest for k, rest in instructions if k == keyword]
    assert len(values) == 1, f"expected one {keyword}, found {len(values)}"
    return values[0]


#: The PATH of the python:*-slim images, which the Dockerfile's ENV PATH extends.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_lines() -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """(where, stproxy arguments, environment) of every stproxy command line in deploy/."""
    instructions = dockerfile_instructions()
    image_env = dockerfile_env(instructions, BASE_IMAGE_PATH)
    seed = {k: v for k, v in image_env.items() if k in ("STREAMLIT_HOST", "STREAMLIT_PORT", "PROXY_HOST", "PROXY_PORT")}
    yield "Dockerfile CMD", json.loads(only(instructions, "CMD")), seed
    for name in COMPOSE_FILES:
        (doc,) = load_yaml(DEPLOY / name)
        proxy = doc["services"]["proxy"]
        yield name, as_list(proxy["command"]), {**seed, **compose_env(proxy)}
    objects = k8s_objects()
    container = objects[("Deployment", "stproxy")]["spec"]["template"]["spec"]["containers"][0]
    yield "kubernetes/stproxy.yaml", container["args"], {**seed, **{e["name"]: e["value"] for e in container["env"]}}
    unit = read_unit(DEPLOY / "stproxy.service")
    env = unit_environment(unit)
    yield "stproxy.service", exec_start_args(unit, env), env
    # The env file's commented TLS example, as if uncommented.
    example = re.search(r"^#\s*STPROXY_ARGS=(.*)$", (DEPLOY / "stproxy.env").read_text(), re.M)
    yield "stproxy.env TLS example", exec_start_args(unit, {**env, "STPROXY_ARGS": example.group(1)}), env


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


# ----------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_shape() -> None:
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


def dockerignore_patterns(dockerfile: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """BuildKit's per-Dockerfile ignore file, as (is_exception, regex) in order."""
    patterns = []
    for line in Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            else:
                regex += fnmatch.translate(pattern[i]).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*")
                i += 1
        patterns.append((exception, re.compile(regex + r"\Z")))
    return patterns


def dockerignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for exception, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not exception
    return ignored


def copy_instructions(dockerfile: Path) -> list[tuple[list[str], str]]:
    copies = []
    for keyword, rest in dockerfile_instructions(dockerfile):
        if keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


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
    for never in (".git/config", "tests/test_deploy.py", "deploy/certs/privkey.pem", "build/lib/x.py"):
        assert dockerignored(never, patterns), never


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


if __name__ == "__main__":
    _sandbox_main(sys.argv[1:])
